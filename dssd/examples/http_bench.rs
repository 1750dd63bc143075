//! POST + DELETE pairs per second through dssd, against the library called
//! directly with the calls dssd makes (`dss::wait::acquire` and
//! `dss::token::release`), in the same run, on the same database.
//!
//! ```text
//! http_bench --conninfo STR [--dssd PATH] [--threads 1,8] [--duration S]
//!            [--rounds N] [--warmup S] [--json]
//! ```
//!
//! It starts its own dssd (`--dssd`, default the `dssd` next to this
//! program's directory, i.e. `target/release/dssd`) on a free loopback port
//! with `--conninfo`, and opens one library handle on the same conninfo
//! (both with the library's default pool of 8 connections, unless
//! `PHOBOS_DSS_pool_size` says otherwise). Each client thread of the dssd
//! side keeps one keep-alive HTTP connection and sends `POST
//! /<new name>?lock_timeout=0&lease_timeout=10s` then `DELETE
//! /<name>?id=<id>`; each thread of the library side calls
//! `wait::acquire(Exclusive, name, owner, 10 000 ms, 0)` then
//! `token::release(Lock, name, token)`. Every pair uses a new name and every
//! answer is checked (200, the id, `{}`). The sides alternate, the one going
//! first changing every round (ABBA...), so a drift of the machine weighs on
//! both alike. Prints a table, or with `--json` one JSON document (read by
//! `scripts/bench.sh`).

use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dss::config::Settings;
use dss::handle::Handle;
use dss::token::Space;
use dss::wait::Request;
use serde_json::{Value, json};

const USAGE: &str = "usage: http_bench --conninfo STR [--dssd PATH] [--threads 1,8] \
                     [--duration SECONDS] [--rounds N] [--warmup SECONDS] [--json]";

struct Args {
    conninfo: String,
    dssd: std::path::PathBuf,
    threads: Vec<usize>,
    duration: Duration,
    rounds: usize,
    warmup: Duration,
    json: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("http_bench: {msg}");
    std::process::exit(2)
}

fn seconds(v: &str) -> Duration {
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
        _ => fail(&format!("not a number of seconds: {v:?}")),
    }
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/http_bench -> target/release/dssd
    let default_dssd = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("dssd"))
        .unwrap_or_default();
    let mut a = Args {
        conninfo: std::env::var("PHOBOS_DSS_connect_string").unwrap_or_default(),
        dssd: default_dssd,
        threads: vec![1, 8],
        duration: Duration::from_secs(5),
        rounds: 3,
        warmup: Duration::from_secs(1),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .unwrap_or_else(|| fail(&format!("{what} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--conninfo" => a.conninfo = value("--conninfo"),
            "--dssd" => a.dssd = value("--dssd").into(),
            "--threads" => {
                a.threads = value("--threads")
                    .split(',')
                    .map(|t| match t.trim().parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => fail(&format!("bad thread count {t:?}")),
                    })
                    .collect()
            }
            "--duration" => a.duration = seconds(&value("--duration")),
            "--rounds" => {
                a.rounds = value("--rounds")
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--rounds must be a positive integer"))
            }
            "--warmup" => a.warmup = seconds(&value("--warmup")),
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(&format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.conninfo.is_empty() {
        fail(&format!(
            "no --conninfo (nor PHOBOS_DSS_connect_string)\n{USAGE}"
        ));
    }
    a
}

/// The dssd under test, killed when dropped (and with this process:
/// PR_SET_PDEATHSIG, set from the main thread, which lives to the end).
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dssd: &std::path::Path, conninfo: &str) -> Server {
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| fail(&format!("no free port: {e}")));
            let log =
                std::env::temp_dir().join(format!("http_bench-dssd-{}.log", std::process::id()));
            let mut cmd = Command::new(dssd);
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--conninfo")
                .arg(conninfo)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap_or_else(|e| fail(&e.to_string())));
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", dssd.display())));
            let agent = agent();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "dssd exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if let Ok(r) = agent.get(format!("http://127.0.0.1:{port}/healthz")).call()
                    && r.status() == 200
                {
                    // The request log (one line per request) is not what is
                    // measured, but it is written: it stays on, as deployed.
                    let _ = std::fs::remove_file(&log);
                    return Server { child, port };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    fail("dssd did not answer /healthz within 30 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(&log);
            if !last.to_lowercase().contains("in use") {
                break;
            }
        }
        fail(&format!("dssd did not start: {last}"))
    }

    /// CPU time (user + system) of the dssd process so far.
    fn cpu(&self) -> Duration {
        proc_cpu(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_cpu(pid: u32) -> Duration {
    let mut s = String::new();
    if std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_string(&mut s))
        .is_err()
    {
        return Duration::ZERO;
    }
    // After the command name in parentheses: state is field 3, utime 14,
    // stime 15.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time (user + system, all threads) of this process so far.
fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One keep-alive connection per agent. No ureq timeout: ureq enforces
/// one with a setsockopt before every read and write, which tripled the
/// client's CPU per request; a watchdog ends a round that hangs instead.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

/// Longer than any round may take after its end.
const HANG: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Dssd,
    Library,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Dssd => "dssd",
            Side::Library => "library",
        }
    }
}

/// What one side did in one round.
struct Run {
    pairs: u64,
    elapsed: Duration,
    /// Latency of each pair, in µs.
    lat_us: Vec<u32>,
    dssd_cpu: Duration,
    self_cpu: Duration,
}

/// `threads` threads doing pairs on `side` for `duration`.
fn run(
    side: Side,
    threads: usize,
    duration: Duration,
    h: &Arc<Handle>,
    server: &Server,
    tag: &str,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(threads + 1));
    let base = format!("http://127.0.0.1:{}", server.port);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, start, h, base) = (stop.clone(), start.clone(), h.clone(), base.clone());
            let prefix = format!("bench/{tag}/{}/{t}", side.name());
            let owner = format!("bench:127.0.0.1:{}#{tag}.{t}", 40000 + t);
            std::thread::spawn(move || {
                let agent = agent();
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i: u64 = 0;
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("{prefix}/{i}");
                    let t0 = Instant::now();
                    match side {
                        Side::Dssd => http_pair(&agent, &base, &name),
                        Side::Library => library_pair(&h, &name, &owner),
                    }
                    lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let (cpu0, dcpu0) = (self_cpu(), server.cpu());
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < HANG {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("http_bench: a pair did not end within {HANG:?} of the round's end");
            std::process::exit(1);
        });
    }
    let mut lat_us = Vec::new();
    for w in workers {
        lat_us.extend(
            w.join()
                .unwrap_or_else(|_| fail("a worker thread panicked")),
        );
    }
    // Until the last pair begun ended: every pair counted is in the time.
    let elapsed = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    Run {
        pairs: lat_us.len() as u64,
        elapsed,
        lat_us,
        dssd_cpu: server.cpu().saturating_sub(dcpu0),
        self_cpu: self_cpu().saturating_sub(cpu0),
    }
}

fn http_pair(agent: &ureq::Agent, base: &str, name: &str) {
    let mut r = agent
        .post(format!("{base}/{name}?lock_timeout=0&lease_timeout=10s"))
        .send_empty()
        .unwrap_or_else(|e| fail(&format!("POST /{name}: {e}")));
    let body = r.body_mut().read_to_string().unwrap_or_default();
    if r.status() != 200 {
        fail(&format!("POST /{name}: {} {body}", r.status()));
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let Some(id) = v["id"].as_str() else {
        fail(&format!("POST /{name}: no id in {body}"))
    };
    let mut r = agent
        .delete(format!("{base}/{name}?id={id}"))
        .call()
        .unwrap_or_else(|e| fail(&format!("DELETE /{name}: {e}")));
    let body = r.body_mut().read_to_string().unwrap_or_default();
    if r.status() != 200 || body.trim() != "{}" {
        fail(&format!("DELETE /{name}?id={id}: {} {body}", r.status()));
    }
}

fn library_pair(h: &Handle, name: &str, owner: &str) {
    let token = dss::wait::acquire(h, Request::Exclusive, name, owner, 10_000, 0, &|_| {})
        .unwrap_or_else(|e| fail(&format!("wait::acquire {name}: {e}")));
    dss::token::release(h, Space::Lock, name, token)
        .unwrap_or_else(|e| fail(&format!("token::release {name}: {e}")));
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The sum of a side's rounds.
fn side_json(runs: &[Run]) -> Value {
    let pairs: u64 = runs.iter().map(|r| r.pairs).sum();
    let secs: f64 = runs.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut lat: Vec<u32> = runs.iter().flat_map(|r| r.lat_us.iter().copied()).collect();
    lat.sort_unstable();
    let per_pair = |d: Duration| {
        if pairs == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / pairs as f64
        }
    };
    json!({
        "pairs": pairs,
        "pairs_per_s": if secs > 0.0 { pairs as f64 / secs } else { 0.0 },
        "p50_us": percentile(&lat, 0.50),
        "p99_us": percentile(&lat, 0.99),
        "max_us": lat.last().copied().unwrap_or(0),
        "round_pairs_per_s": runs.iter()
            .map(|r| r.pairs as f64 / r.elapsed.as_secs_f64().max(1e-9))
            .collect::<Vec<_>>(),
        "dssd_cpu_us_per_pair": per_pair(runs.iter().map(|r| r.dssd_cpu).sum()),
        "client_cpu_us_per_pair": per_pair(runs.iter().map(|r| r.self_cpu).sum()),
    })
}

fn main() {
    let args = parse_args();
    let settings =
        Settings::new(&args.conninfo).unwrap_or_else(|e| fail(&format!("conninfo: {}", e.message)));
    let pool_size = settings.pool_size;
    let h =
        Arc::new(Handle::open(settings).unwrap_or_else(|e| fail(&format!("Handle::open: {e}"))));
    let server = Server::start(&args.dssd, &args.conninfo);
    let tag = format!("{}-{}", std::process::id(), {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    if !args.json {
        eprintln!(
            "http_bench: dssd {} on 127.0.0.1:{}; threads {:?}, {} round(s) of {:?} per side, \
             warm-up {:?}",
            args.dssd.display(),
            server.port,
            args.threads,
            args.rounds,
            args.duration,
            args.warmup
        );
    }
    let mut results = Vec::new();
    for &threads in &args.threads {
        if !args.warmup.is_zero() {
            for side in [Side::Dssd, Side::Library] {
                run(
                    side,
                    threads,
                    args.warmup,
                    &h,
                    &server,
                    &format!("{tag}/w{threads}"),
                );
            }
        }
        let (mut dssd_runs, mut lib_runs) = (Vec::new(), Vec::new());
        let mut same_round = Vec::new();
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [Side::Dssd, Side::Library]
            } else {
                [Side::Library, Side::Dssd]
            };
            let mut rates = [0.0f64; 2];
            for side in order {
                let r = run(
                    side,
                    threads,
                    args.duration,
                    &h,
                    &server,
                    &format!("{tag}/{threads}/{round}"),
                );
                let rate = r.pairs as f64 / r.elapsed.as_secs_f64().max(1e-9);
                match side {
                    Side::Dssd => {
                        rates[0] = rate;
                        dssd_runs.push(r)
                    }
                    Side::Library => {
                        rates[1] = rate;
                        lib_runs.push(r)
                    }
                }
                if !args.json {
                    eprintln!(
                        "http_bench: {threads} thread(s), round {}, {}: {rate:.0} pairs/s",
                        round + 1,
                        side.name()
                    );
                }
            }
            if rates[1] > 0.0 {
                same_round.push(rates[0] / rates[1]);
            }
        }
        let (d, l) = (side_json(&dssd_runs), side_json(&lib_runs));
        let ratio =
            d["pairs_per_s"].as_f64().unwrap() / l["pairs_per_s"].as_f64().unwrap().max(1e-9);
        results.push(json!({
            "threads": threads,
            "dssd": d,
            "library": l,
            "ratio": ratio,
            "paired_ratio_median": median(&mut same_round),
        }));
    }
    let doc = json!({
        "program": "dssd/examples/http_bench.rs",
        "duration_s": args.duration.as_secs_f64(),
        "rounds": args.rounds,
        "warmup_s": args.warmup.as_secs_f64(),
        "pool_size": pool_size,
        "results": results,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        return;
    }
    println!(
        "| clients | dssd pairs/s | library pairs/s | dssd ÷ library | same-round | \
         dssd p50 / p99 / max µs | library p50 / p99 / max µs | dssd process CPU µs/pair | \
         client CPU µs/pair dssd / library |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let (d, l) = (&r["dssd"], &r["library"]);
        let lat = |s: &Value| {
            format!(
                "{:.0} / {:.0} / {}",
                s["p50_us"].as_f64().unwrap(),
                s["p99_us"].as_f64().unwrap(),
                s["max_us"]
            )
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {} | {} | {:.1} | {:.1} / {:.1} |",
            r["threads"],
            d["pairs_per_s"].as_f64().unwrap(),
            l["pairs_per_s"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
            r["paired_ratio_median"].as_f64().unwrap(),
            lat(d),
            lat(l),
            d["dssd_cpu_us_per_pair"].as_f64().unwrap(),
            d["client_cpu_us_per_pair"].as_f64().unwrap(),
            l["client_cpu_us_per_pair"].as_f64().unwrap(),
        );
    }
}

//! Proven under faults: several processes contend for two lock ids and a
//! semaphore through the installed C library (tests/fault_worker.c) while
//! the server is crashed, its backends killed, frozen, cut off after a
//! statement was sent, or failed over to a synchronous standby. Every
//! operation goes to a history file; [`check`] reads the histories and
//! fails on:
//! - a double grant: two holds of one id overlapping in real time
//!   (exclusive with anything, shared with exclusive, more semaphore
//!   permits than its capacity); a hold lasts from the return of its grant
//!   to the call of its release, or to the end of its lease (counted from
//!   the call of the acquisition: the database starts it later);
//! - a lost acknowledged lock: a hold that the database no longer shows
//!   (`dss_lock_check` / `dss_lock_holders`, asked before the release, and
//!   the release's own answer) while its holder had not released it and
//!   its lease had not ended;
//! - tokens that do not increase per id in grant order (equal only
//!   between shared holds of one generation);
//! - an unknown outcome (`-ECOMM`) not resolved.
//!
//! Between the library and the server sits a TCP proxy of this test
//! ([`Proxy`]), which can drop the reply to an acquisition or a release.
//! A worker resolves an unknown outcome by asking the same handle until
//! it answers: the library first ends the session it gave up (a statement
//! sent to a frozen server would run when the server resumes), so the
//! answer is final.
//!
//! The worker is built against the installed library when
//! `DSS_TEST_PREFIX` names its prefix (`make test`, `make test-faults`:
//! `build/stage`, through pkg-config), else against this build tree's.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::freeze::{Frozen, children_of};
use common::server::{Pg, as_pg, pg_bin, run};

/// Worker processes per run.
const WORKERS: usize = 4;
/// The workers' `call_timeout_ms`.
const CALL_TIMEOUT_MS: u64 = 1500;
/// Capacity of the workers' semaphore (SEM_CAPACITY in fault_worker.c).
const SEM_CAPACITY: i64 = 2;
/// Taken off every lease end: the two clocks (CLOCK_MONOTONIC here,
/// the database's wall clock there) may drift apart by this much in a run.
const CLOCK_MARGIN_NS: i64 = 50_000_000;

/// Superuser over the Unix socket (setup, probes, faults) and over TCP
/// (the workers); replication for the standby.
const PG_HBA: &str = "\
local all postgres trust
local replication postgres trust
host all postgres 127.0.0.1/32 trust
";

fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

// ------------------------------------------------------------------ checker

/// One hold, as the history shows it.
#[derive(Debug, Clone)]
struct Hold {
    worker: usize,
    kind: char,
    id: String,
    /// Call of the acquisition.
    invoked: i64,
    /// From when it was surely held: the grant's return, or the moment an
    /// unknown outcome was read as held.
    start: i64,
    /// Until when it was surely held: the call of its release, or the end
    /// of its lease if that came first.
    end: i64,
    token: u64,
    /// Last successful check that it was still held.
    checked: Option<i64>,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "worker {} {} hold of {} (token {}, called {}, held {}..{})",
            self.worker, self.kind, self.id, self.token, self.invoked, self.start, self.end
        )
    }
}

#[derive(Debug, Default)]
struct Report {
    holds: Vec<Hold>,
    /// Acquisition calls, and grants per kind.
    attempts: usize,
    grants: BTreeMap<char, usize>,
    /// `-ECOMM` answers, and those resolved.
    unknown: usize,
    resolved: usize,
    /// Failed calls: (acq/chk/rel, errno) and how many.
    errors: BTreeMap<(String, i64), usize>,
    violations: Vec<String>,
}

impl Report {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }
}

fn field<T: std::str::FromStr>(f: &[&str], i: usize, line: &str) -> T {
    f.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad history line (field {i}): {line}"))
}

/// An acquisition whose hold is open.
struct Open {
    kind: char,
    id: String,
    invoked: i64,
    start: i64,
    token: u64,
    /// Lease end (call of the acquisition + ttl - margin), if any.
    lease_end: Option<i64>,
    checked: Option<i64>,
    released: Option<i64>,
}

impl Open {
    /// Whether the lease surely still ran at `t`.
    fn live_at(&self, t: i64) -> bool {
        self.lease_end.is_none_or(|e| t < e)
    }

    fn close(self, worker: usize, r: &mut Report, at: i64) {
        let end = self.lease_end.map_or(self.released.unwrap_or(at), |e| {
            e.min(self.released.unwrap_or(at))
        });
        r.holds.push(Hold {
            worker,
            kind: self.kind,
            id: self.id,
            invoked: self.invoked,
            start: self.start,
            end,
            token: self.token,
            checked: self.checked,
        });
    }
}

const ECOMM: i64 = -(libc::ECOMM as i64);

/// Errors after which the worker asks again (fault_worker.c `transient`).
fn transient(rc: i64) -> bool {
    [
        libc::ECOMM,
        libc::ETIMEDOUT,
        libc::ENOTCONN,
        libc::EROFS,
        libc::EUSERS,
        libc::EIO,
    ]
    .iter()
    .any(|&e| rc == -(e as i64))
}

/// Reads one worker's history into `r`.
fn read_history(worker: usize, text: &str, r: &mut Report) {
    let mut pending: Option<(char, String, i64, u64)> = None;
    let mut open: Option<Open> = None;
    let mut releasing = false;
    let mut last = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rc_at = match f.first().copied() {
            Some("acq") => Some(5),
            Some("chk") => Some(4),
            Some("rel") => Some(5),
            _ => None,
        };
        if let Some(i) = rc_at {
            let rc: i64 = field(&f, i, line);
            if rc != 0 {
                *r.errors.entry((f[0].to_string(), -rc)).or_default() += 1;
            }
        }
        match f.first().copied() {
            Some("acq") => {
                let kind: char = field(&f, 1, line);
                let id = f[2].to_string();
                let (t0, t1, rc): (i64, i64, i64) =
                    (field(&f, 3, line), field(&f, 4, line), field(&f, 5, line));
                let (token, ttl): (u64, i64) = (field(&f, 6, line), field(&f, 7, line));
                last = t1;
                r.attempts += 1;
                assert!(
                    open.is_none(),
                    "worker {worker}: acquisition while holding: {line}"
                );
                let lease_end = (ttl > 0).then(|| t0 + ttl * 1_000_000 - CLOCK_MARGIN_NS);
                if rc == 0 {
                    *r.grants.entry(kind).or_default() += 1;
                    open = Some(Open {
                        kind,
                        id,
                        invoked: t0,
                        start: t1,
                        token,
                        lease_end,
                        checked: None,
                        released: None,
                    });
                } else if rc == ECOMM {
                    r.unknown += 1;
                    pending = Some((kind, id, t0, ttl as u64));
                }
            }
            Some("res") => {
                let (t, held, token): (i64, i64, u64) =
                    (field(&f, 2, line), field(&f, 3, line), field(&f, 4, line));
                last = t;
                let (kind, id, t0, ttl) = pending
                    .take()
                    .unwrap_or_else(|| panic!("worker {worker}: resolution of nothing: {line}"));
                r.resolved += 1;
                if held == 1 {
                    *r.grants.entry(kind).or_default() += 1;
                    open = Some(Open {
                        kind,
                        id,
                        invoked: t0,
                        start: t,
                        token,
                        lease_end: (ttl > 0).then(|| t0 + ttl as i64 * 1_000_000 - CLOCK_MARGIN_NS),
                        checked: None,
                        released: None,
                    });
                }
            }
            Some("chk") => {
                let (c0, c1, rc): (i64, i64, i64) =
                    (field(&f, 2, line), field(&f, 3, line), field(&f, 4, line));
                last = c1;
                let o = open
                    .as_mut()
                    .unwrap_or_else(|| panic!("worker {worker}: check of nothing: {line}"));
                if rc == 0 {
                    o.checked = Some(c0);
                } else if o.live_at(c1) {
                    let what = format!(
                        "lost: worker {worker}'s {} hold of {} (token {}) is not in the \
                         database ({rc}) at {c1}, before its release and lease end",
                        o.kind, o.id, o.token
                    );
                    r.violation(what);
                }
            }
            Some("rel") => {
                let (r0, r1, rc): (i64, i64, i64) =
                    (field(&f, 3, line), field(&f, 4, line), field(&f, 5, line));
                last = r1;
                let o = open
                    .as_mut()
                    .unwrap_or_else(|| panic!("worker {worker}: release of nothing: {line}"));
                if !releasing {
                    o.released = Some(r0);
                    releasing = true;
                }
                if rc == ECOMM {
                    r.unknown += 1;
                } else if !transient(rc) {
                    if rc != 0 && o.live_at(r1) {
                        let what = format!(
                            "lost: worker {worker}'s release of {} {} (token {}) got {rc} \
                             before its lease end",
                            o.kind, o.id, o.token
                        );
                        r.violation(what);
                    }
                    open.take().unwrap().close(worker, r, r1);
                    releasing = false;
                }
            }
            Some("relres") => {
                let (t, held): (i64, i64) = (field(&f, 2, line), field(&f, 3, line));
                last = t;
                r.resolved += 1;
                if held == 0 {
                    let o = open.take().unwrap_or_else(|| {
                        panic!("worker {worker}: resolution of nothing: {line}")
                    });
                    o.close(worker, r, t);
                    releasing = false;
                }
            }
            Some("unres") => {
                r.violation(format!("unresolved: worker {worker}: {line}"));
            }
            _ => panic!("worker {worker}: unknown history line: {line:?}"),
        }
    }
    if pending.is_some() {
        r.violation(format!("unresolved: worker {worker}'s last acquisition"));
    }
    if let Some(o) = open {
        // The worker stopped while holding (it failed): held to its end.
        o.close(worker, r, last);
    }
}

/// Double grants and token order, over every hold of `r`.
fn check_holds(r: &mut Report) {
    let mut by_id: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for h in &r.holds {
        by_id.entry(h.id.clone()).or_default().push(h.clone());
    }
    for (id, holds) in by_id {
        // Sweep: ends before starts at one instant (half-open holds).
        let mut events: Vec<(i64, i32, usize)> = Vec::new();
        for (i, h) in holds.iter().enumerate() {
            if h.end > h.start {
                events.push((h.start, 1, i));
                events.push((h.end, 0, i));
            }
        }
        events.sort();
        let (mut excl, mut shared, mut permits) = (Vec::new(), Vec::new(), 0i64);
        for (t, start, i) in events {
            let h = &holds[i];
            let set = match h.kind {
                'S' => &mut shared,
                'M' => {
                    permits += if start == 1 { 1 } else { -1 };
                    &mut excl
                }
                _ => &mut excl,
            };
            if start == 1 {
                set.push(i);
            } else {
                set.retain(|&j| j != i);
            }
            let double = if h.kind == 'M' {
                permits > SEM_CAPACITY
            } else {
                excl.len() > 1 || (!excl.is_empty() && !shared.is_empty())
            };
            if start == 1 && double {
                let with: Vec<String> = excl
                    .iter()
                    .chain(shared.iter())
                    .map(|&j| holds[j].to_string())
                    .collect();
                r.violation(format!("double grant of {id} at {t}: {}", with.join(" / ")));
            }
        }

        // Tokens: a grant that returned before another was called has a
        // smaller token (equal: two shared holds of one generation).
        let mut sorted = holds.clone();
        sorted.sort_by_key(|h| h.start);
        for later in &sorted {
            for earlier in sorted.iter().take_while(|e| e.start < later.invoked) {
                let ok = earlier.token < later.token
                    || (earlier.token == later.token && earlier.kind == 'S' && later.kind == 'S');
                if !ok {
                    r.violation(format!(
                        "token order of {id}: {earlier} returned before {later} was called"
                    ));
                }
            }
        }
    }
}

/// Reads the histories and checks them.
fn check(histories: &[String]) -> Report {
    let mut r = Report::default();
    for (w, text) in histories.iter().enumerate() {
        read_history(w, text, &mut r);
    }
    check_holds(&mut r);
    r
}

// -------------------------------------------------------------------- proxy

/// One proxied session: the last bytes sent carry a worker's owner name
/// ("fault-<digit>"): an acquisition or a release, not a read.
#[derive(Default)]
struct Session {
    writing: AtomicBool,
}

/// Whether `bytes` hold a worker's owner name (the ids are "fault-lock-N"
/// and "fault-sem").
fn names_an_owner(bytes: &[u8]) -> bool {
    bytes
        .windows(7)
        .any(|w| w.starts_with(b"fault-") && w[6].is_ascii_digit())
}

/// A TCP proxy on 127.0.0.1 in front of a server whose port may change
/// (a restarted cluster gets a new one).
struct Proxy {
    port: u16,
    upstream: Arc<AtomicU16>,
    /// Replies to acquisitions and releases still to drop (the session is
    /// cut at once, both ways).
    drops: Arc<AtomicUsize>,
    /// The listening socket, and whether it was closed ([`Proxy::refuse`]).
    listener: i32,
    refused: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream: Arc::new(AtomicU16::new(upstream)),
            drops: Arc::new(AtomicUsize::new(0)),
            listener: std::os::fd::AsRawFd::as_raw_fd(&listener),
            refused: Arc::new(AtomicBool::new(false)),
        };
        let (up, drops, refused) = (
            proxy.upstream.clone(),
            proxy.drops.clone(),
            proxy.refused.clone(),
        );
        std::thread::spawn(move || {
            loop {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (up, drops) = (up.clone(), drops.clone());
                        std::thread::spawn(move || serve(client, &up, &drops));
                    }
                    Err(_) if refused.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
        });
        proxy
    }

    /// From now on the port refuses connections, as a dead host's does
    /// (libpq tries the next host only when the connection itself fails:
    /// a host that accepts and then closes is not skipped).
    fn refuse(&self) {
        self.refused.store(true, Ordering::SeqCst);
        // SAFETY: the fd is the listener's, open until its thread ends,
        // which this wakes up.
        unsafe { libc::shutdown(self.listener, libc::SHUT_RDWR) };
    }
}

fn serve(client: TcpStream, up: &AtomicU16, drops: &AtomicUsize) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", up.load(Ordering::SeqCst))) else {
        return; // the server is down: the client sees the connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let session = Arc::new(Session::default());
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let s = session.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match c_in.read(&mut buf) {
                Ok(n) if n > 0 => {
                    s.writing.store(names_an_owner(&buf[..n]), Ordering::SeqCst);
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = [0u8; 16384];
    loop {
        match s_in.read(&mut buf) {
            Ok(n) if n > 0 => {
                if session.writing.load(Ordering::SeqCst)
                    && drops
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                        .is_ok()
                {
                    // The reply to an acquisition or release is lost and
                    // the link reset: the statement ran.
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = s_in.shutdown(Shutdown::Both);
                    break;
                }
                // A client that left: keep reading until the backend ends.
                let _ = c_out.write_all(&buf[..n]);
            }
            _ => break,
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
}

// ------------------------------------------------------------------ workers

/// tests/fault_worker.c, built once: against the library installed under
/// `$DSS_TEST_PREFIX` (through its pkg-config file, as a user builds;
/// `make test` and `make test-faults` set it), else against this build
/// tree's header and `libdss.so` (next to this test's own binary).
fn worker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (flags, libdir) = match std::env::var_os("DSS_TEST_PREFIX") {
            Some(prefix) => {
                let pc = Path::new(&prefix).join("lib/pkgconfig");
                let query = |arg: &str| {
                    let out = Command::new("pkg-config")
                        .env("PKG_CONFIG_PATH", &pc)
                        .args([arg, "dss"])
                        .output()
                        .expect("pkg-config runs");
                    assert!(
                        out.status.success(),
                        "pkg-config finds no dss.pc in {}: {}",
                        pc.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    String::from_utf8(out.stdout).unwrap().trim().to_string()
                };
                (
                    query("--cflags").to_string() + " " + &query("--libs"),
                    query("--variable=libdir"),
                )
            }
            None => {
                // target/<profile>/deps/faults-<hash> -> target/<profile>
                let exe = std::env::current_exe().unwrap();
                let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
                assert!(
                    dir.join("libdss.so").exists(),
                    "no libdss.so in {} (cargo builds it with the tests)",
                    dir.display()
                );
                // The library's soname is libdss.so.<major> (build.rs), a
                // link cargo does not make: made here, for the loader.
                let libdir =
                    std::env::temp_dir().join(format!("dss_fault_lib.{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&libdir);
                std::fs::create_dir_all(&libdir).unwrap();
                std::os::unix::fs::symlink(
                    dir.join("libdss.so"),
                    libdir.join(concat!("libdss.so.", env!("CARGO_PKG_VERSION_MAJOR"))),
                )
                .unwrap();
                let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
                (
                    format!("-I{} -L{} -ldss", include.display(), dir.display()),
                    libdir.display().to_string(),
                )
            }
        };
        let out = std::env::temp_dir().join(format!("dss_fault_worker.{}", std::process::id()));
        run(
            "cc fault_worker.c",
            Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&out)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fault_worker.c"))
                .args(flags.split_whitespace())
                .arg(format!("-Wl,-rpath,{libdir}")),
        );
        out
    })
}

struct Workers {
    children: Vec<Child>,
    histories: Vec<PathBuf>,
}

fn start_workers(dir: &Path, conninfo: &str, load: Duration) -> Workers {
    let mut w = Workers {
        children: Vec::new(),
        histories: Vec::new(),
    };
    for i in 0..WORKERS {
        let history = dir.join(format!("history.{i}"));
        let child = Command::new(worker_binary())
            .arg(i.to_string())
            .arg(&history)
            .arg(load.as_millis().to_string())
            .arg((now_ns() as u64 ^ (i as u64 * 7919)).to_string())
            .env("PHOBOS_DSS_connect_string", conninfo)
            .env("PHOBOS_DSS_call_timeout_ms", CALL_TIMEOUT_MS.to_string())
            .env("PHOBOS_DSS_pool_timeout_ms", "1000")
            .env("PHOBOS_CFG_FILE", "/nonexistent")
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fault_worker");
        w.children.push(child);
        w.histories.push(history);
    }
    w
}

impl Workers {
    /// Waits for every worker (each stops on its own after the load);
    /// fails if one failed.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        for (i, c) in self.children.iter_mut().enumerate() {
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    if !status.success() {
                        let history =
                            std::fs::read_to_string(&self.histories[i]).unwrap_or_default();
                        let tail: Vec<&str> = history.lines().rev().take(12).collect();
                        panic!(
                            "worker {i} failed: {status}; its history ends with:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        );
                    }
                    break;
                }
                assert!(Instant::now() < deadline, "worker {i} did not finish");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.histories
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------- faults

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// `pg_ctl stop -m immediate`, then a start: crash recovery.
    Crash,
    /// SIGKILL of a backend serving a worker: the postmaster ends every
    /// session and recovers.
    KillBackend,
    /// Every process of the server stopped (SIGSTOP) for longer than the
    /// call deadline, then SIGCONT.
    Freeze,
    /// Three replies to acquisitions or releases dropped by the proxy,
    /// their sessions reset.
    DropReplies,
}

/// A run's cluster, reached through a proxy.
struct Single {
    pg: Pg,
    proxy: Arc<Proxy>,
}

fn psql_ok(pg: &Pg, sql: &str) -> Option<String> {
    let out = pg.psql_command("dss").arg("-c").arg(sql).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until the server answers again.
fn until_up(pg: &Pg) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql_ok(pg, "SELECT 1").is_none() {
        assert!(Instant::now() < deadline, "the server did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn postmaster(pg: &Pg) -> i32 {
    std::fs::read_to_string(pg.dir.join("data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid in postmaster.pid")
}

/// Injects `fault` and returns once it is over (the server answers again);
/// returns the moment it took effect (server down, frozen, a reply lost):
/// a statement sent after that ran after the fault, or not at all.
fn inject(s: &mut Single, fault: Fault) -> i64 {
    match fault {
        Fault::Crash => {
            run(
                "pg_ctl stop -m immediate",
                as_pg(&pg_bin().join("pg_ctl"))
                    .arg("-D")
                    .arg(s.pg.dir.join("data"))
                    .args(["-m", "immediate", "-w", "stop"]),
            );
            let effect = now_ns();
            s.pg.launch("");
            s.proxy.upstream.store(s.pg.port, Ordering::SeqCst);
            effect
        }
        Fault::KillBackend => {
            let pid = psql_ok(
                &s.pg,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'dss-fault' \
                 ORDER BY state = 'active' DESC, random() LIMIT 1",
            )
            .and_then(|p| p.parse::<i32>().ok())
            .expect("a backend serving a worker");
            // SAFETY: kill has no memory preconditions.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
            let effect = now_ns();
            until_up(&s.pg);
            effect
        }
        Fault::Freeze => {
            let frozen = Frozen::freeze(&s.pg);
            let effect = now_ns();
            std::thread::sleep(Duration::from_millis(CALL_TIMEOUT_MS + 1000));
            drop(frozen);
            until_up(&s.pg);
            effect
        }
        Fault::DropReplies => {
            s.proxy.drops.store(3, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while s.proxy.drops.load(Ordering::SeqCst) > 0 {
                assert!(Instant::now() < deadline, "no reply to drop within 10 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            now_ns()
        }
    }
}

/// Counts of one run, printed and checked; `faults`: when each took effect.
fn report(name: &str, r: &Report, faults: &[i64]) {
    // Holds acknowledged before a fault and found in the database by a
    // check sent after it took effect.
    let across = r
        .holds
        .iter()
        .filter(|h| {
            faults
                .iter()
                .any(|&f| h.start < f && h.checked.is_some_and(|c| c > f))
        })
        .count();
    let grants: usize = r.grants.values().sum();
    // Straight to stderr, not through eprintln!, which the test harness
    // captures: every run's counts show in `cargo test`'s output.
    let _ = writeln!(
        std::io::stderr(),
        "faults run {name}: {} attempts, {grants} grants {:?}, {} faults, \
         {} unknown outcomes ({} resolved), {across} holds checked across a fault, \
         {} violations; failed calls (call, errno): {:?}",
        r.attempts,
        r.grants,
        faults.len(),
        r.unknown,
        r.resolved,
        r.violations.len(),
        r.errors
    );
    for v in r.violations.iter().take(20) {
        eprintln!("  {v}");
    }
    assert!(
        r.violations.is_empty(),
        "{name}: {} violations",
        r.violations.len()
    );
    assert!(grants >= 20, "{name}: only {grants} grants");
    for k in ['X', 'L', 'W', 'S', 'M'] {
        assert!(
            r.grants.get(&k).copied().unwrap_or(0) > 0,
            "{name}: no grant of kind {k}"
        );
    }
    assert!(across > 0, "{name}: no hold was checked across a fault");
}

/// No worker holds anything once all have stopped (each released what it
/// held): nothing was granted behind their back.
fn nothing_left(pg: &Pg) {
    let left = psql_ok(
        pg,
        "SELECT (SELECT count(*) FROM dss.locks WHERE owner LIKE 'fault-%' \
                   AND (expires_at IS NULL OR expires_at > now())) \
              + (SELECT count(*) FROM dss.lock_shares s JOIN dss.locks l \
                   ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen \
                   WHERE (s.expires_at IS NULL OR s.expires_at > now())) \
              + (SELECT count(*) FROM dss.sem_holders WHERE expires_at > now())",
    )
    .expect("the server answers");
    assert_eq!(left, "0", "holds left behind by the workers");
}

/// Load for `load`, with `faults` injected one after the other, each once
/// the previous one is over, `gap` apart.
/// One fault run at a time (each has its cluster, but the load and the
/// faults' timing are measured against a machine they have to themselves).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fault_run(name: &str, faults: &[Fault], load: Duration, gap: Duration) {
    let _serial = serial();
    let pg = Pg::init(&format!("dss-flt-{name}"), PG_HBA, "-c fsync=on");
    let proxy = Arc::new(Proxy::start(pg.port));
    let mut s = Single { pg, proxy };
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=dss user=postgres application_name=dss-fault \
         connect_timeout=2",
        s.proxy.port
    );
    let started = Instant::now();
    let workers = start_workers(&s.pg.dir, &conninfo, load);
    let mut times = Vec::new();
    for &f in faults {
        std::thread::sleep(gap);
        let t0 = now_ns();
        let effect = inject(&mut s, f);
        let t1 = now_ns();
        eprintln!(
            "{name}: {f:?} at {:?}, over in {} ms",
            started.elapsed(),
            (t1 - t0) / 1_000_000
        );
        times.push(effect);
    }
    assert!(
        started.elapsed() < load,
        "{name}: the faults outlasted the load ({:?})",
        started.elapsed()
    );
    let histories = workers.finish();
    let r = check(&histories);
    report(name, &r, &times);
    nothing_left(&s.pg);
}

#[test]
fn crash_recovery() {
    fault_run(
        "crash",
        &[Fault::Crash; 3],
        Duration::from_secs(12),
        Duration::from_millis(1500),
    );
}

#[test]
fn backend_killed() {
    fault_run(
        "kill",
        &[Fault::KillBackend; 3],
        Duration::from_secs(10),
        Duration::from_millis(1500),
    );
}

#[test]
fn server_frozen() {
    fault_run(
        "freeze",
        &[Fault::Freeze; 2],
        Duration::from_secs(14),
        Duration::from_millis(1500),
    );
}

#[test]
fn replies_lost() {
    fault_run(
        "drop",
        &[Fault::DropReplies; 4],
        Duration::from_secs(10),
        Duration::from_millis(1200),
    );
}

#[test]
fn mixed_faults() {
    use Fault::*;
    fault_run(
        "mixed",
        &[
            DropReplies,
            Freeze,
            KillBackend,
            Crash,
            DropReplies,
            Freeze,
            Crash,
        ],
        Duration::from_secs(30),
        Duration::from_millis(1000),
    );
}

// ------------------------------------------------------- the checker's tests

/// Histories from `lines` (one string per worker).
fn checked(workers: &[&str]) -> Report {
    check(&workers.iter().map(|w| w.to_string()).collect::<Vec<_>>())
}

const MS: i64 = 1_000_000;

#[test]
fn checker_accepts_a_clean_history_with_a_lease_taken_over() {
    // Worker 0's lease of 100 ms ends while it sleeps; worker 1 takes the
    // lock over (a larger token); worker 0's late release gets -ETIME.
    let w0 = format!(
        "acq L a {} {} 0 5 100\nrel L a {} {} -62\n",
        0,
        MS,
        300 * MS,
        301 * MS
    );
    let w1 = format!(
        "acq X a {} {} 0 6 0\nchk a {} {} 0\nrel X a {} {} 0\n",
        150 * MS,
        151 * MS,
        160 * MS,
        161 * MS,
        170 * MS,
        171 * MS
    );
    // Two readers of one generation, then a semaphore at its capacity.
    let w2 = format!(
        "acq S b 0 {} 0 9 0\nrel S b {} {} 0\nacq M s 0 {} 0 20 1000\nrel M s {} {} 0\n",
        MS,
        50 * MS,
        51 * MS,
        60 * MS,
        70 * MS,
        71 * MS
    );
    let w3 = format!(
        "acq S b {} {} 0 9 0\nrel S b {} {} 0\nacq M s 0 {} 0 21 1000\nrel M s {} {} 0\n",
        2 * MS,
        3 * MS,
        40 * MS,
        41 * MS,
        60 * MS,
        70 * MS,
        71 * MS
    );
    let r = checked(&[&w0, &w1, &w2, &w3]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.holds.len(), 6);
    assert_eq!(r.grants.values().sum::<usize>(), 6);
}

#[test]
fn checker_finds_a_double_grant() {
    let w0 = format!(
        "acq X a 0 {} 0 5 0\nrel X a {} {} 0\n",
        MS,
        100 * MS,
        101 * MS
    );
    let w1 = format!(
        "acq W a {} {} 0 6 0\nrel W a {} {} 0\n",
        50 * MS,
        51 * MS,
        60 * MS,
        61 * MS
    );
    let r = checked(&[&w0, &w1]);
    assert!(
        r.violations
            .iter()
            .any(|v| v.starts_with("double grant of a")),
        "{:?}",
        r.violations
    );
}

#[test]
fn checker_finds_a_reader_beside_a_writer_and_too_many_permits() {
    let w0 = format!(
        "acq L a 0 {} 0 5 1000\nrel L a {} {} 0\n",
        MS,
        100 * MS,
        101 * MS
    );
    let w1 = format!(
        "acq S a {} {} 0 6 0\nrel S a {} {} 0\n",
        50 * MS,
        51 * MS,
        60 * MS,
        61 * MS
    );
    let sem = |t: i64| {
        format!(
            "acq M s {t} {} 0 {t} 1000\nrel M s {} {} 0\n",
            t + MS,
            200 * MS,
            201 * MS
        )
    };
    let (w2, w3, w4) = (sem(10 * MS), sem(20 * MS), sem(30 * MS));
    let r = checked(&[&w0, &w1, &w2, &w3, &w4]);
    assert!(
        r.violations
            .iter()
            .any(|v| v.starts_with("double grant of a")),
        "{:?}",
        r.violations
    );
    assert!(
        r.violations
            .iter()
            .any(|v| v.starts_with("double grant of s")),
        "{:?}",
        r.violations
    );
}

#[test]
fn checker_counts_a_lease_from_its_call_not_its_return() {
    // The lease (100 ms) was called at 0 and returned at 90 ms: the
    // database started it in between, so it surely ran only until 100 ms
    // (less the clock margin); a take-over at 120 ms is fine.
    let w0 = format!(
        "acq L a 0 {} 0 5 100\nrel L a {} {} -62\n",
        90 * MS,
        500 * MS,
        501 * MS
    );
    let w1 = format!(
        "acq X a {} {} 0 6 0\nrel X a {} {} 0\n",
        119 * MS,
        120 * MS,
        130 * MS,
        131 * MS
    );
    assert!(checked(&[&w0, &w1]).violations.is_empty());
}

#[test]
fn checker_finds_tokens_going_backwards() {
    let w0 = format!(
        "acq X a 0 {} 0 7 0\nrel X a {} {} 0\n",
        MS,
        10 * MS,
        11 * MS
    );
    let w1 = format!(
        "acq X a {} {} 0 6 0\nrel X a {} {} 0\n",
        20 * MS,
        21 * MS,
        30 * MS,
        31 * MS
    );
    let r = checked(&[&w0, &w1]);
    assert!(
        r.violations
            .iter()
            .any(|v| v.starts_with("token order of a")),
        "{:?}",
        r.violations
    );
    // Equal tokens: only for two shared holds.
    let w1 = format!(
        "acq X a {} {} 0 7 0\nrel X a {} {} 0\n",
        20 * MS,
        21 * MS,
        30 * MS,
        31 * MS
    );
    assert!(!checked(&[&w0, &w1]).violations.is_empty());
}

#[test]
fn checker_finds_a_lost_lock() {
    // The check says the plain lock is gone before its release.
    let w0 = format!(
        "acq X a 0 {} 0 5 0\nchk a {} {} -116\nrel X a {} {} -37\n",
        MS,
        5 * MS,
        6 * MS,
        7 * MS,
        8 * MS
    );
    let r = checked(&[&w0]);
    assert_eq!(
        r.violations
            .iter()
            .filter(|v| v.starts_with("lost"))
            .count(),
        2,
        "{:?}",
        r.violations
    );
    // A lease whose release comes after its end may find it gone.
    let w0 = format!(
        "acq L a 0 {} 0 5 100\nrel L a {} {} -62\n",
        MS,
        200 * MS,
        201 * MS
    );
    assert!(checked(&[&w0]).violations.is_empty());
}

#[test]
fn checker_resolves_unknown_outcomes_and_finds_unresolved_ones() {
    // -ECOMM (-70) on the acquisition, read as held at 500 ms; -ECOMM on
    // the release, still held, released again.
    let w0 = format!(
        "acq X a 0 {} -70 0 0\nres a {} 1 5\nrel X a {} {} -70\nrelres a {} 1\nrel X a {} {} 0\n",
        MS,
        500 * MS,
        600 * MS,
        601 * MS,
        700 * MS,
        701 * MS,
        702 * MS
    );
    // Another holder before 500 ms is no double grant: the unknown
    // acquisition is counted from when it was read as held.
    let w1 = format!(
        "acq X a {} {} 0 4 0\nrel X a {} {} 0\n",
        100 * MS,
        101 * MS,
        200 * MS,
        201 * MS
    );
    let r = checked(&[&w0, &w1]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!((r.unknown, r.resolved), (2, 2));
    let hold = r.holds.iter().find(|h| h.token == 5).unwrap();
    assert_eq!((hold.start, hold.end), (500 * MS, 600 * MS));

    let w0 = format!("acq X a 0 {} -70 0 0\nunres a {}\n", MS, 90_000 * MS);
    let r = checked(&[&w0]);
    assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
    assert!(r.violations.iter().all(|v| v.starts_with("unresolved")));
}

// ----------------------------------------------------------------- failover

#[test]
fn failover_to_a_synchronous_standby() {
    let _serial = serial();
    // The standby retries its WAL source every 100 ms, not 5 s: promoted
    // at once.
    let primary = Pg::init(
        "dss-flt-prim",
        PG_HBA,
        "-c fsync=on -c wal_retrieve_retry_interval=100ms",
    );
    let standby = primary.standby("dss-flt-stby");
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while primary.psql(
        "postgres",
        "SELECT string_agg(sync_state, ',') FROM pg_stat_replication",
    ) != "sync"
    {
        assert!(
            Instant::now() < deadline,
            "the standby did not become synchronous"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (pa, pb) = (
        Arc::new(Proxy::start(primary.port)),
        Arc::new(Proxy::start(standby.port)),
    );
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} target_session_attrs=read-write dbname=dss \
         user=postgres application_name=dss-fault connect_timeout=2",
        pa.port, pb.port
    );
    let load = Duration::from_secs(12);
    let started = Instant::now();
    let workers = start_workers(&primary.dir, &conninfo, load);
    std::thread::sleep(Duration::from_secs(4));

    // The primary is killed: its postmaster and every child, SIGKILL.
    let pm = postmaster(&primary);
    let mut pids = children_of(pm);
    pids.push(pm);
    for pid in pids {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pa.refuse();
    let killed = now_ns();
    run(
        "pg_ctl promote",
        as_pg(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(standby.dir.join("data"))
            .args(["-w", "promote"]),
    );
    until_up(&standby);
    assert_eq!(standby.psql("dss", "SELECT pg_is_in_recovery()"), "f");
    let promoted = now_ns();
    eprintln!(
        "failover: primary killed at {:?}, standby promoted {} ms later",
        started.elapsed(),
        (promoted - killed) / 1_000_000
    );
    assert!(started.elapsed() < load, "the failover outlasted the load");

    let histories = workers.finish();
    let r = check(&histories);
    // Held when the primary died, and found on the new primary with the
    // same token by a check sent after the kill.
    let held = r
        .holds
        .iter()
        .filter(|h| h.start < killed && h.end > killed);
    let (held, found) = held.fold((0, 0), |(n, f), h| {
        (
            n + 1,
            f + usize::from(h.checked.is_some_and(|c| c > killed)),
        )
    });
    eprintln!("failover: {held} holds at the kill, {found} found on the new primary");
    assert!(
        found > 0,
        "no hold of the old primary was checked on the new one"
    );
    report("failover", &r, &[killed]);
    // The same handles carry on: every worker was granted locks by the new
    // primary.
    for w in 0..WORKERS {
        let after = r
            .holds
            .iter()
            .filter(|h| h.worker == w && h.start > promoted)
            .count();
        assert!(after > 0, "worker {w} got nothing after the failover");
    }
    nothing_left(&standby);
}

//! dssd tested from outside, as a lockerd client would use it: real dssd
//! processes (`target/release/dssd`, children of this test on free loopback
//! ports, killed at the end), one private PostgreSQL for the whole file
//! (`scripts/pgtmp.sh`; `DSS_TEST_CONNINFO` names an existing database
//! instead), a real HTTP client (ureq, keep-alive), and the library itself
//! (its Rust API and its C ABI) on the same database.
//!
//! Issue 14's list: every route, status and code, in lockerd's check order,
//! with its duration grammar in and out; FIFO handoff with the queue in
//! GET; a waiter cancelled by DELETE; lease expiry and PATCH; HTTP holders
//! and library holders excluding each other; shared locks; a semaphore; two
//! dssd on one database; a restart while a lock is held; bearer auth;
//! /metrics; --max-waiters; the database stopped and started again (on a
//! cluster of that test's own, since stopping the shared one would break
//! the tests running beside it).
//!
//! Nothing sleeps in place of synchronisation: every wait for a state polls
//! with a deadline ([`until`]). The only plain sleep lets a lease's time
//! pass, which is what that test is about.
//!
//! Run: `cargo build --release --workspace && cargo test --release -p
//! dssd`. The logs of the dssd processes are removed at exit, unless
//! `DSSD_TEST_KEEP_LOGS` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DSSD: &str = env!("CARGO_BIN_EXE_dssd");
/// Longest any awaited state may take to show up.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// PostgreSQL: one cluster for the file, more for the outage test.

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dssd/ is inside the repository")
        .to_path_buf()
}

/// Runs `scripts/pgtmp.sh CMD DIR`; fails the test if it fails; returns
/// what it printed (the conninfo, for `start`).
fn pgtmp(cmd: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg(repo_root().join("scripts/pgtmp.sh"))
        .arg(cmd)
        .arg(dir)
        .output()
        .expect("run scripts/pgtmp.sh");
    assert!(
        out.status.success(),
        "pgtmp.sh {cmd} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Clusters started by this process and dssd processes still running, for
/// [`at_exit`].
static CLUSTERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// At exit: every dssd still running is killed, then every cluster is
/// destroyed (in that order, so no dssd sees its database go), and the
/// dssd logs are removed unless `DSSD_TEST_KEEP_LOGS` is set.
extern "C" fn at_exit() {
    for pid in std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)) {
        // SAFETY: kill(2) on a pid of our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    for dir in std::mem::take(&mut *CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner)) {
        let _ = Command::new("sh")
            .arg(repo_root().join("scripts/pgtmp.sh"))
            .arg("destroy")
            .arg(&dir)
            .status();
    }
    if let Some(dir) = LOGDIR.get() {
        if std::env::var_os("DSSD_TEST_KEEP_LOGS").is_some() {
            eprintln!("dssd logs kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn register_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering a plain extern "C" fn.
    ONCE.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
}

/// A fresh, short directory under /tmp (Unix socket paths are short).
fn tempdir(prefix: &str) -> PathBuf {
    let out = Command::new("mktemp")
        .arg("-d")
        .arg(format!("/tmp/{prefix}.XXXXXX"))
        .output()
        .unwrap();
    assert!(out.status.success(), "mktemp");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Starts a new cluster, destroyed at exit (and by [`Destroy`]).
fn new_cluster(prefix: &str) -> (PathBuf, String) {
    register_at_exit();
    let dir = tempdir(prefix);
    CLUSTERS.lock().unwrap().push(dir.clone());
    let conninfo = pgtmp("start", &dir);
    (dir, conninfo)
}

/// The conninfo of the file's database.
fn conninfo() -> &'static str {
    static CONNINFO: OnceLock<String> = OnceLock::new();
    CONNINFO.get_or_init(|| match std::env::var("DSS_TEST_CONNINFO") {
        Ok(c) if !c.is_empty() => c,
        _ => new_cluster("dssd-ht").1,
    })
}

struct Destroy(PathBuf);

impl Drop for Destroy {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg(repo_root().join("scripts/pgtmp.sh"))
            .arg("destroy")
            .arg(&self.0)
            .status();
    }
}

/// A library handle (Rust API) on `conninfo`.
fn handle_on(conninfo: &str) -> dss::handle::Handle {
    let s = dss::config::Settings::new(conninfo).expect("settings");
    dss::handle::Handle::open(s).expect("Handle::open")
}

fn handle() -> &'static dss::handle::Handle {
    static H: OnceLock<dss::handle::Handle> = OnceLock::new();
    H.get_or_init(|| handle_on(conninfo()))
}

// ---------------------------------------------------------------------------
// dssd processes.

/// Every dssd is spawned by this one thread, which lives as long as the
/// process: the children get PR_SET_PDEATHSIG, which fires when the
/// *thread* that forked them ends, so a test thread could not spawn them
/// (and if this process dies hard, its dssd processes die with it).
fn spawn(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("dssd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock().unwrap().send((cmd, reply)).unwrap();
    answer.recv().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start a dssd.
#[derive(Clone, Default)]
struct Opts {
    /// Default: the file's database.
    conninfo: Option<String>,
    token_file: Option<PathBuf>,
    max_waiters: Option<u32>,
    /// Extra environment (PHOBOS_DSS_call_timeout_ms, ...).
    env: Vec<(String, String)>,
    /// Default: a free one.
    port: Option<u16>,
    /// Sent as `Authorization: Bearer` by its client.
    token: Option<String>,
}

/// A running dssd (killed when dropped) and a client for it.
struct Dssd {
    child: Mutex<Option<Child>>,
    pid: u32,
    port: u16,
    log: PathBuf,
    opts: Opts,
    client: Client,
}

/// The directory of the dssd logs (stdout and stderr of each).
static LOGDIR: OnceLock<PathBuf> = OnceLock::new();

fn logdir() -> &'static Path {
    LOGDIR.get_or_init(|| tempdir("dssd-logs"))
}

impl Dssd {
    fn start(opts: Opts) -> Dssd {
        register_at_exit();
        let conninfo = opts
            .conninfo
            .clone()
            .unwrap_or_else(|| conninfo().to_string());
        let mut last = String::new();
        for _ in 0..5 {
            static N: AtomicU64 = AtomicU64::new(0);
            let port = opts.port.unwrap_or_else(free_port);
            let log = logdir().join(format!("dssd-{}.log", N.fetch_add(1, Ordering::Relaxed)));
            let out = std::fs::File::create(&log).unwrap();
            let mut cmd = Command::new(DSSD);
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--conninfo")
                .arg(&conninfo);
            if let Some(f) = &opts.token_file {
                cmd.arg("--token-file").arg(f);
            }
            if let Some(n) = opts.max_waiters {
                cmd.arg("--max-waiters").arg(n.to_string());
            }
            cmd.env_remove("PHOBOS_DSS_connect_string")
                .env("PHOBOS_CFG_FILE", "/nonexistent/phobos.conf")
                .envs(opts.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = spawn(cmd).unwrap_or_else(|e| panic!("cannot run {DSSD}: {e}"));
            let pid = child.id();
            CHILDREN.lock().unwrap().push(pid);
            let client = Client::new(port, opts.token.clone());
            let deadline = Instant::now() + PATIENCE;
            let ready = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Err(format!("dssd exited at start ({status})"));
                }
                if let Ok(r) = client.try_send("GET", "/healthz", None, &[])
                    && r.status == 200
                {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break Err(format!("dssd not healthy within {PATIENCE:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match ready {
                Ok(()) => {
                    return Dssd {
                        child: Mutex::new(Some(child)),
                        pid,
                        port,
                        log,
                        opts,
                        client,
                    };
                }
                Err(why) => {
                    let _ = child.wait();
                    forget_pid(pid);
                    last = format!(
                        "{why}; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    // Only a port taken meanwhile is worth another try.
                    if opts.port.is_some() || !last.to_lowercase().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("dssd did not start: {last}");
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (at most [`PATIENCE`]).
    fn terminate(&self) -> ExitStatus {
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut().expect("dssd is running");
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "dssd did not exit within {PATIENCE:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        *guard = None;
        forget_pid(self.pid);
        status
    }

    /// The same dssd (options, port) started again.
    fn restart(&self) -> Dssd {
        let mut opts = self.opts.clone();
        opts.port = Some(self.port);
        Dssd::start(opts)
    }
}

fn forget_pid(pid: u32) {
    CHILDREN.lock().unwrap().retain(|&p| p != pid);
}

impl Drop for Dssd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
            forget_pid(self.pid);
        }
    }
}

/// The dssd that most tests share (default options).
fn server() -> &'static Dssd {
    static S: OnceLock<Dssd> = OnceLock::new();
    S.get_or_init(|| Dssd::start(Opts::default()))
}

// ---------------------------------------------------------------------------
// HTTP.

#[derive(Clone)]
struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

/// One answer, read whole.
#[derive(Debug)]
struct Resp {
    /// "POST /x?..." for messages.
    what: String,
    status: u16,
    content_type: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.what, self.body))
    }

    fn assert_json_type(&self) {
        assert!(
            self.content_type.starts_with("application/json"),
            "{}: content type {:?}, expected application/json",
            self.what,
            self.content_type
        );
    }

    /// Asserts the status is `status`; returns the JSON body.
    fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: status {} (expected {status}), body {}",
            self.what, self.status, self.body
        );
        self.assert_json_type();
        self.json()
    }

    /// Asserts an error answer: `status`, `{"code": code, "message": "..."}`.
    fn err(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.json().get("code").and_then(Value::as_str)),
            (status, Some(code)),
            "{}: expected {status} {code}, got {} {}",
            self.what,
            self.status,
            self.body
        );
        self.assert_json_type();
        assert!(
            self.json()["message"].is_string(),
            "{}: error body without a message: {}",
            self.what,
            self.body
        );
    }

    /// The `id` of a 200 POST.
    fn id(&self) -> String {
        let body = self.ok(200);
        let id = body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: id is not a JSON string: {}", self.what, self.body))
            .to_string();
        assert_token(&id);
        id
    }
}

/// A holder's id: a positive decimal integer (a fencing token).
fn assert_token(id: &str) {
    assert!(
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !id.starts_with('0')
            && id.parse::<i64>().is_ok(),
        "{id:?} is not a positive decimal int64"
    );
}

/// A waiter's id as GET lists it: `-<ticket>`.
fn ticket_of(id: &str) -> u64 {
    let t = id
        .strip_prefix('-')
        .unwrap_or_else(|| panic!("waiter id {id:?} does not start with '-'"));
    assert_token(t);
    t.parse().unwrap()
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

impl Client {
    fn new(port: u16, token: Option<String>) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            agent: agent(Duration::from_secs(120)),
            token,
        }
    }

    /// A client of its own that gives up on any request after `timeout`.
    fn impatient(&self, timeout: Duration) -> Client {
        let mut c = self.clone();
        c.agent = agent(timeout);
        c
    }

    fn with_token(&self, token: Option<&str>) -> Client {
        let mut c = self.clone();
        c.token = token.map(str::to_string);
        c
    }

    /// `method target` (target: path and query), with a form-urlencoded
    /// body if `form` is given.
    fn try_send(
        &self,
        method: &str,
        target: &str,
        form: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, ureq::Error> {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{target}", self.base));
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut resp = match form {
            Some(f) => self.agent.run(
                b.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(f.as_bytes().to_vec())
                    .unwrap(),
            )?,
            None => self.agent.run(b.body(()).unwrap())?,
        };
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(Resp {
            what: format!("{method} {target}"),
            status: resp.status().as_u16(),
            content_type,
            body: resp.body_mut().read_to_string()?,
        })
    }

    fn send(&self, method: &str, target: &str) -> Resp {
        self.try_send(method, target, None, &[])
            .unwrap_or_else(|e| panic!("{method} {}{target}: {e}", self.base))
    }

    fn post(&self, target: &str) -> Resp {
        self.send("POST", target)
    }
    fn get(&self, target: &str) -> Resp {
        self.send("GET", target)
    }
    fn delete(&self, target: &str) -> Resp {
        self.send("DELETE", target)
    }
    fn patch(&self, target: &str) -> Resp {
        self.send("PATCH", target)
    }

    /// `POST /<name>?lock_timeout=..&lease_timeout=..`, which must be a 200;
    /// its id.
    fn lock(&self, name: &str, lock_timeout: &str, lease_timeout: &str) -> String {
        self.post(&format!(
            "/{name}?lock_timeout={lock_timeout}&lease_timeout={lease_timeout}"
        ))
        .id()
    }

    /// `DELETE /<name>?id=<id>`, which must be a 200 `{}`.
    fn release(&self, name: &str, id: &str) {
        let body = self.delete(&format!("/{name}?id={id}")).ok(200);
        assert_eq!(body, json!({}), "DELETE /{name}?id={id}");
    }

    /// `GET /<name>`: Some(state) if held (200), None if not (404).
    fn state(&self, name: &str) -> Option<Value> {
        let r = self.get(&format!("/{name}"));
        if r.status == 404 {
            r.err(404, "not_found");
            return None;
        }
        Some(r.ok(200))
    }

    fn holder(&self, name: &str) -> Option<String> {
        self.state(name)
            .map(|s| s["locking_id"].as_str().expect("locking_id").to_string())
    }

    /// (id, timeout) of each queued acquirer of a held `name`, in order.
    fn acquirers(&self, name: &str) -> Vec<(String, String)> {
        let Some(st) = self.state(name) else {
            return Vec::new();
        };
        st["acquirers"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /{name}: acquirers is not an array: {st}"))
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().expect("acquirer id string").to_string(),
                    a["timeout"]
                        .as_str()
                        .expect("acquirer timeout string")
                        .to_string(),
                )
            })
            .collect()
    }

    /// Polls GET until `name` has exactly `n` acquirers; returns them.
    fn until_acquirers(&self, name: &str, n: usize) -> Vec<(String, String)> {
        until(&format!("{n} acquirers on {name}"), || {
            let q = self.acquirers(name);
            (q.len() == n).then_some(q)
        })
    }

    /// The request in a thread of its own (for waiters).
    fn spawn(&self, method: &str, target: &str) -> JoinHandle<Resp> {
        let (c, m, t) = (self.clone(), method.to_string(), target.to_string());
        std::thread::spawn(move || c.send(&m, &t))
    }
}

/// Polls `f` until it returns Some (every 10 ms, at most [`PATIENCE`]).
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A lock name no other test uses (lockerd's grammar; slashes inside).
fn name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "ht{}-{}/{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A duration as dssd writes it, which must be lockerd's FormatDuration:
/// "0" (negative), "%.3fs" at 5 s and above, "%.3fms" below.
fn out_duration(s: &str) -> Duration {
    if s == "0" {
        return Duration::ZERO;
    }
    let (num, ms) = match s.strip_suffix("ms") {
        Some(n) => (n, true),
        None => (
            s.strip_suffix('s')
                .unwrap_or_else(|| panic!("duration {s:?} ends neither in ms nor in s")),
            false,
        ),
    };
    let (int, frac) = num
        .split_once('.')
        .unwrap_or_else(|| panic!("duration {s:?} is not %.3f"));
    assert!(
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 3
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "duration {s:?} is not %.3f"
    );
    let v: f64 = num.parse().unwrap();
    if ms {
        assert!(v <= 5000.0, "{s:?}: lockerd writes 5 s and more in seconds");
        Duration::from_secs_f64(v / 1000.0)
    } else {
        assert!(v >= 5.0, "{s:?}: lockerd writes less than 5 s in ms");
        Duration::from_secs_f64(v)
    }
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The C ABI, as a C daemon calls it.

struct CHandle(dss::ffi::dss_handle);

impl CHandle {
    fn open(conninfo: &str) -> CHandle {
        let mut h = CHandle(dss::ffi::dss_handle {
            dh_conn: std::ptr::null_mut(),
        });
        let c = CString::new(conninfo).unwrap();
        assert_eq!(
            dss::ffi::dss_init_conninfo(&mut h.0, c.as_ptr()),
            0,
            "dss_init_conninfo"
        );
        h
    }

    /// dss_lock_status: (rc, owner).
    fn status(&mut self, id: &str) -> (i32, Option<String>) {
        let id = CString::new(id).unwrap();
        let mut owner: *mut libc::c_char = std::ptr::null_mut();
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let rc = dss::ffi::dss_lock_status(&mut self.0, id.as_ptr(), &mut owner, &mut tv);
        if rc != 0 {
            return (rc, None);
        }
        // SAFETY: a NUL-terminated malloc()ed string from the library.
        let s = unsafe { CStr::from_ptr(owner) }
            .to_str()
            .unwrap()
            .to_string();
        // SAFETY: the library says to free() it.
        unsafe { libc::free(owner.cast()) };
        assert!(tv.tv_sec > 0, "a timestamp");
        (0, Some(s))
    }

    fn lock(&mut self, id: &str, owner: &str) -> i32 {
        let (id, owner) = (CString::new(id).unwrap(), CString::new(owner).unwrap());
        dss::ffi::dss_lock(&mut self.0, id.as_ptr(), owner.as_ptr())
    }

    fn lock_lease(&mut self, id: &str, owner: &str, ttl_ms: u64) -> (i32, u64) {
        let (id, owner) = (CString::new(id).unwrap(), CString::new(owner).unwrap());
        let mut token = 0;
        let rc =
            dss::ffi::dss_lock_lease(&mut self.0, id.as_ptr(), owner.as_ptr(), ttl_ms, &mut token);
        (rc, token)
    }

    fn unlock(&mut self, id: &str, owner: &str) -> i32 {
        let (id, owner) = (CString::new(id).unwrap(), CString::new(owner).unwrap());
        dss::ffi::dss_unlock(&mut self.0, id.as_ptr(), owner.as_ptr())
    }
}

impl Drop for CHandle {
    fn drop(&mut self) {
        dss::ffi::dss_fini(&mut self.0);
    }
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn post_get_delete_and_get_all() {
    let c = server().client();
    let n = name("basic");

    let id = c.lock(&n, "0", "10s");
    let st = c.state(&n).expect("held after its POST");
    assert_eq!(st["locking_id"], id, "GET /{n}: {st}");
    let left = out_duration(st["lock_timeout"].as_str().expect("lock_timeout string"));
    assert!(
        left > Duration::from_secs(5) && left <= Duration::from_secs(10),
        "lock_timeout is the holder's remaining lease (10 s): {st}"
    );
    assert_eq!(st["acquirers"], json!([]), "{st}");
    // Extensions.
    assert_eq!(st["mode"], "exclusive", "{st}");
    let owner = st["owner"].as_str().expect("owner string");
    assert!(
        owner.starts_with("http:127.0.0.1:") && owner.contains('#'),
        "default owner is http:<peer address>#<n>, got {owner:?}"
    );
    assert!(!st["locked_at"].is_null(), "locked_at: {st}");
    let holders = st["holders"].as_array().expect("holders array");
    assert_eq!(holders.len(), 1, "{st}");
    assert_eq!(holders[0]["id"], id, "{st}");

    // GET / has it, with the same object.
    let all = c.get("/").ok(200);
    assert_eq!(all[n.as_str()]["locking_id"], id, "GET /: {all}");
    assert_eq!(all[n.as_str()]["acquirers"], json!([]), "GET /: {all}");

    // Each POST is a holder of its own: the same client is refused (408).
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=10s"))
        .err(408, "timeout");

    c.release(&n, &id);
    assert_eq!(c.state(&n), None, "released");
    assert!(c.get("/").ok(200).get(&n).is_none(), "GET / after release");
    c.delete(&format!("/{n}?id={id}")).err(404, "not_found");

    // Below 5 s, the remaining lease is written in ms; ids only grow.
    let id2 = c.lock(&n, "0", "3s");
    assert!(
        id2.parse::<u64>().unwrap() > id.parse::<u64>().unwrap(),
        "{id2} after {id}"
    );
    let st = c.state(&n).unwrap();
    let left = out_duration(st["lock_timeout"].as_str().unwrap());
    assert!(
        left > Duration::from_secs(1) && left <= Duration::from_secs(3),
        "{st}"
    );
    assert!(st["lock_timeout"].as_str().unwrap().ends_with("ms"), "{st}");
    c.release(&n, &id2);

    // owner= names the holder.
    let id3 = c
        .post(&format!(
            "/{n}?lock_timeout=0&lease_timeout=1m&owner=worker-7"
        ))
        .id();
    assert_eq!(c.state(&n).unwrap()["owner"], "worker-7");
    c.release(&n, &id3);
}

#[test]
fn healthz_answers() {
    let r = server().client().get("/healthz");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn lockerd_errors_in_its_check_order() {
    let c = server().client();
    let n = name("codes");
    let held = name("codes-held");
    let held_id = c.lock(&held, "0", "1m");
    let other = 999_999_999_999u64;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        // POST: missing lock, missing lease, invalid lock, invalid lease.
        ("POST", format!("/{n}"), 400, "missing_lock_timeout"),
        (
            "POST",
            format!("/{n}?lease_timeout=1m"),
            400,
            "missing_lock_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=&lease_timeout=1m"),
            400,
            "missing_lock_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=1m"),
            400,
            "missing_lease_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=123a"),
            400,
            "missing_lease_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=1m&lease_timeout="),
            400,
            "missing_lease_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=123a&lease_timeout=1d"),
            400,
            "invalid_lock_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=123a&lease_timeout=1m"),
            400,
            "invalid_lock_timeout",
        ),
        (
            "POST",
            format!("/{n}?lock_timeout=1m&lease_timeout=1d"),
            400,
            "invalid_lease_timeout",
        ),
        // The path first, whatever the parameters.
        ("POST", format!("/{n}/"), 404, "not_found"),
        (
            "POST",
            format!("/{n}/?lock_timeout=1m&lease_timeout=1m"),
            404,
            "not_found",
        ),
        // DELETE: missing id, invalid id, not a holder or waiter.
        ("DELETE", format!("/{n}"), 400, "missing_id"),
        ("DELETE", format!("/{n}?id="), 400, "missing_id"),
        ("DELETE", format!("/{n}?id=123a"), 400, "invalid_id"),
        ("DELETE", format!("/{n}?id=1.5"), 400, "invalid_id"),
        (
            "DELETE",
            format!("/{n}?id=99999999999999999999"),
            400,
            "invalid_id",
        ),
        ("DELETE", format!("/{n}?id={other}"), 404, "not_found"),
        ("DELETE", format!("/{held}?id={other}"), 404, "not_found"),
        ("DELETE", format!("/{n}?id={held_id}"), 404, "not_found"),
        ("DELETE", format!("/{n}/?id=1"), 404, "not_found"),
        // PATCH: missing id, missing lease, invalid id, invalid lease.
        ("PATCH", format!("/{n}?lease_timeout=1m"), 400, "missing_id"),
        ("PATCH", format!("/{n}"), 400, "missing_id"),
        (
            "PATCH",
            format!("/{n}?id=123"),
            400,
            "missing_lease_timeout",
        ),
        (
            "PATCH",
            format!("/{n}?id=123a"),
            400,
            "missing_lease_timeout",
        ),
        (
            "PATCH",
            format!("/{n}?id=123a&lease_timeout=1d"),
            400,
            "invalid_id",
        ),
        (
            "PATCH",
            format!("/{n}?id=123a&lease_timeout=1m"),
            400,
            "invalid_id",
        ),
        (
            "PATCH",
            format!("/{n}?id=123&lease_timeout=1d"),
            400,
            "invalid_lease_timeout",
        ),
        (
            "PATCH",
            format!("/{n}?id=123&lease_timeout=1m"),
            404,
            "not_found",
        ),
        (
            "PATCH",
            format!("/{held}?id={other}&lease_timeout=1m"),
            404,
            "not_found",
        ),
        (
            "PATCH",
            format!("/{n}?id={held_id}&lease_timeout=1m"),
            404,
            "not_found",
        ),
        (
            "PATCH",
            format!("/{n}/?id=1&lease_timeout=1m"),
            404,
            "not_found",
        ),
        // GET: not held, bad path.
        ("GET", format!("/{n}"), 404, "not_found"),
        ("GET", format!("/{n}/"), 404, "not_found"),
    ];
    for (method, target, status, code) in &cases {
        c.send(method, target).err(*status, code);
    }
    // Nothing of that touched the held lock.
    assert_eq!(c.holder(&held).as_deref(), Some(held_id.as_str()));
    assert_eq!(c.state(&n), None);
    c.release(&held, &held_id);
}

#[test]
fn lock_names_follow_lockerd_grammar_plus_dot_colon_at() {
    let c = server().client();
    let base = name("paths");
    for bad in [
        "/".to_string(),
        format!("/{base}/"),
        format!("/{base}//b"),
        format!("/{base}/b/c/"),
        format!("/{base}%C3%B8"),
        format!("/{base}%C3%B8/b"),
        format!("/{base}%20b"),
        format!("/{base}*"),
    ] {
        c.post(&format!("{bad}?lock_timeout=0&lease_timeout=1m"))
            .err(404, "not_found");
        c.delete(&format!("{bad}?id=1")).err(404, "not_found");
        c.patch(&format!("{bad}?id=1&lease_timeout=1m"))
            .err(404, "not_found");
        if bad != "/" {
            c.get(&bad).err(404, "not_found");
        }
    }
    // lockerd's own valid paths, and the three extra characters.
    for good in [
        format!("{base}/a-b"),
        format!("{base}/a-b-c/095"),
        format!("{base}/A_z9"),
        format!("{base}/x.y:z@w"),
    ] {
        let id = c.lock(&good, "0", "1m");
        assert_eq!(c.holder(&good).as_deref(), Some(id.as_str()), "{good}");
        c.release(&good, &id);
    }
    // Leading slashes are stripped, as lockerd does ("//a" is "a").
    let n = format!("{base}/lead");
    let id = c.lock(&format!("/{n}"), "0", "1m");
    assert_eq!(c.holder(&n).as_deref(), Some(id.as_str()), "//{n} is {n}");
    c.release(&n, &id);
}

#[test]
fn duration_grammar_in() {
    let c = server().client();
    // Valid: "0" and \d+(ms|s|m|h), for both parameters.
    for (lock, lease, left_at_least) in [
        ("0", "1m", 50.0),
        ("0ms", "1m", 50.0),
        ("250ms", "10s", 5.0),
        ("10s", "1m", 50.0),
        ("1m", "2h", 7100.0),
        ("2h", "9000ms", 5.0),
        ("0", "500ms", 0.0),
    ] {
        let n = name("dur-ok");
        let id = c.lock(&n, lock, lease);
        let st = c
            .state(&n)
            .unwrap_or_else(|| panic!("lock_timeout={lock} lease_timeout={lease}: not held"));
        let left = out_duration(st["lock_timeout"].as_str().unwrap()).as_secs_f64();
        assert!(left >= left_at_least, "lease_timeout={lease}: {st}");
        c.release(&n, &id);
    }
    // Invalid: no fractions, no compounds, no days, nothing around.
    let n = name("dur-bad");
    for bad in [
        "1d",
        "1m30s",
        "123a",
        "1.5s",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1 s",
        "s",
        "ms",
        "1S",
        "1MS",
        "1sec",
        "0x10s",
        "1e3ms",
        "00",
        "1",
        "\u{0661}s",
    ] {
        let v = enc(bad);
        c.post(&format!("/{n}?lock_timeout={v}&lease_timeout=1m"))
            .err(400, "invalid_lock_timeout");
        c.post(&format!("/{n}?lock_timeout=0&lease_timeout={v}"))
            .err(400, "invalid_lease_timeout");
        c.patch(&format!("/{n}?id=1&lease_timeout={v}"))
            .err(400, "invalid_lease_timeout");
    }
    assert_eq!(c.state(&n), None);
}

#[test]
fn form_body_parameters_as_lockerd_clients_send_them() {
    // lockerd reads parameters with Go's FormValue: a form-urlencoded body
    // for POST and PATCH (its own tests send them so), the query otherwise.
    let c = server().client();
    let n = name("form");
    let r = c
        .try_send(
            "POST",
            &format!("/{n}"),
            Some("lock_timeout=0&lease_timeout=1m"),
            &[],
        )
        .unwrap();
    let id = r.id();
    let r = c
        .try_send(
            "PATCH",
            &format!("/{n}"),
            Some(&format!("id={id}&lease_timeout=2h")),
            &[],
        )
        .unwrap();
    assert_eq!(r.ok(200), json!({}));
    let st = c.state(&n).unwrap();
    assert!(
        out_duration(st["lock_timeout"].as_str().unwrap()) > Duration::from_secs(7000),
        "{st}"
    );
    let r = c
        .try_send("POST", &format!("/{n}"), Some("lease_timeout=1m"), &[])
        .unwrap();
    r.err(400, "missing_lock_timeout");
    c.release(&n, &id);
}

#[test]
fn timeouts_zero_is_one_try_and_waits_end_at_their_deadline() {
    let c = server().client();
    let n = name("timeout");
    let a = c.lock(&n, "0", "1m");
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    assert_eq!(c.acquirers(&n), vec![], "lock_timeout=0 is not queued");

    // The server enforces the wait's deadline (lockerd's shipped binary
    // does not).
    let t = Instant::now();
    c.post(&format!("/{n}?lock_timeout=400ms&lease_timeout=1m"))
        .err(408, "timeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(10),
        "a 400 ms wait took {took:?}"
    );
    assert_eq!(
        c.acquirers(&n),
        vec![],
        "the timed-out waiter left the queue"
    );
    assert_eq!(c.holder(&n).as_deref(), Some(a.as_str()));
    c.release(&n, &a);
}

#[test]
fn fifo_handoff_with_the_queue_in_get() {
    let c = server().client();
    let n = name("fifo");
    let a = c.lock(&n, "0", "1m");
    let b = c.spawn(
        "POST",
        &format!("/{n}?lock_timeout=30s&lease_timeout=10m&owner=b-waiter"),
    );
    let q1 = c.until_acquirers(&n, 1);
    let w = c.spawn(
        "POST",
        &format!("/{n}?lock_timeout=20s&lease_timeout=1m&owner=c-waiter"),
    );
    let q2 = c.until_acquirers(&n, 2);
    assert_eq!(q2[0].0, q1[0].0, "the first waiter stays first: {q2:?}");
    assert!(
        ticket_of(&q2[0].0) < ticket_of(&q2[1].0),
        "tickets in queue order: {q2:?}"
    );
    for ((_, timeout), max) in q2.iter().zip([30, 20]) {
        let t = out_duration(timeout);
        assert!(
            t > Duration::ZERO && t <= Duration::from_secs(max),
            "a waiter's timeout is its remaining wait (at most {max} s): {q2:?}"
        );
    }
    let st = c.state(&n).unwrap();
    assert_eq!(st["locking_id"], a, "{st}");
    let all = c.get("/").ok(200);
    let listed: Vec<&str> = all[n.as_str()]["acquirers"]
        .as_array()
        .unwrap_or_else(|| panic!("GET / lists {n} with its acquirers: {all}"))
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [q2[0].0.as_str(), q2[1].0.as_str()], "GET /: {all}");
    assert!(!b.is_finished() && !w.is_finished(), "both still wait");

    c.release(&n, &a);
    let bid = b.join().unwrap().id();
    assert!(bid.parse::<u64>().unwrap() > a.parse::<u64>().unwrap());
    let st = c.state(&n).unwrap();
    assert_eq!(st["locking_id"], bid, "the first waiter got it: {st}");
    assert_eq!(st["owner"], "b-waiter", "{st}");
    let left = out_duration(st["lock_timeout"].as_str().unwrap());
    assert!(
        left > Duration::from_secs(590),
        "the lease (10m) starts at the grant: {st}"
    );
    let q = c.acquirers(&n);
    assert_eq!(q.len(), 1, "{st}");
    assert_eq!(q[0].0, q2[1].0, "the second waiter is now first: {st}");
    assert!(!w.is_finished(), "the second waiter still waits");

    c.release(&n, &bid);
    let cid = w.join().unwrap().id();
    let st = c.state(&n).unwrap();
    assert_eq!(st["locking_id"], cid, "{st}");
    assert_eq!(st["owner"], "c-waiter", "{st}");
    assert_eq!(st["acquirers"], json!([]), "{st}");
    c.release(&n, &cid);
}

#[test]
fn delete_of_a_waiter_cancels_its_post() {
    let c = server().client();
    let n = name("cancel");
    let a = c.lock(&n, "0", "1m");
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    let q = c.until_acquirers(&n, 1);
    let t = Instant::now();
    c.release(&n, &q[0].0);
    w.join().unwrap().err(408, "timeout");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the cancelled POST answered at once, not at its deadline ({:?})",
        t.elapsed()
    );
    assert_eq!(c.acquirers(&n), vec![]);
    assert_eq!(
        c.holder(&n).as_deref(),
        Some(a.as_str()),
        "the holder keeps it"
    );
    c.delete(&format!("/{n}?id={}", q[0].0))
        .err(404, "not_found");
    c.delete(&format!("/{n}?id=-999999999999"))
        .err(404, "not_found");
    c.release(&n, &a);
}

#[test]
fn a_waiter_whose_client_goes_away_leaves_the_queue() {
    // lockerd releases the ticket of a POST whose client disconnects.
    let c = server().client();
    let n = name("gone");
    let a = c.lock(&n, "0", "1m");
    let impatient = c.impatient(Duration::from_millis(500));
    let r = impatient.try_send(
        "POST",
        &format!("/{n}?lock_timeout=30s&lease_timeout=1m"),
        None,
        &[],
    );
    assert!(r.is_err(), "the client gave up first: {r:?}");
    until("the abandoned waiter to leave the queue", || {
        c.acquirers(&n).is_empty().then_some(())
    });
    // Released, the lock goes to nobody (the abandoned POST must not keep
    // it), and another POST takes it.
    c.release(&n, &a);
    assert_eq!(c.state(&n), None, "nobody holds it after the release");
    let b = c.lock(&n, "0", "1m");
    c.release(&n, &b);
}

#[test]
fn lease_expiry_then_another_post_gets_the_lock() {
    let c = server().client();
    let n = name("expiry");
    let t = Instant::now();
    let a = c.lock(&n, "0", "2s");
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    until("the 2 s lease to end", || {
        c.state(&n).is_none().then_some(())
    });
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "a 2 s lease ended after {:?}",
        t.elapsed()
    );
    let b = c.lock(&n, "0", "1m");
    c.patch(&format!("/{n}?id={a}&lease_timeout=1m"))
        .err(404, "not_found");
    c.delete(&format!("/{n}?id={a}")).err(404, "not_found");
    c.release(&n, &b);

    // A waiter gets the lock when the holder's lease ends (nobody releases).
    let m = name("expiry-wait");
    let t = Instant::now();
    let a = c.lock(&m, "0", "1s");
    let w = c.spawn("POST", &format!("/{m}?lock_timeout=30s&lease_timeout=1m"));
    let wid = w.join().unwrap().id();
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(20),
        "granted {:?} after a 1 s lease",
        t.elapsed()
    );
    assert_ne!(wid, a);
    assert_eq!(c.holder(&m).as_deref(), Some(wid.as_str()));
    c.release(&m, &wid);
}

#[test]
fn patch_resets_the_lease() {
    let c = server().client();
    let n = name("patch");
    let t = Instant::now();
    let id = c.lock(&n, "0", "2s");
    let body = c.patch(&format!("/{n}?id={id}&lease_timeout=1m")).ok(200);
    assert_eq!(body, json!({}));
    let st = c.state(&n).unwrap();
    assert!(
        out_duration(st["lock_timeout"].as_str().unwrap()) > Duration::from_secs(50),
        "{st}"
    );
    // Past the first lease (the passing of time is what is tested), still
    // held.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t.elapsed()));
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    assert_eq!(c.holder(&n).as_deref(), Some(id.as_str()));
    // A reset to now + D, not an addition.
    c.patch(&format!("/{n}?id={id}&lease_timeout=3s")).ok(200);
    let st = c.state(&n).unwrap();
    let left = out_duration(st["lock_timeout"].as_str().unwrap());
    assert!(
        left <= Duration::from_secs(3) && left > Duration::from_secs(1),
        "{st}"
    );
    // Only the holder's id on its own name.
    c.patch(&format!(
        "/{n}?id={}&lease_timeout=1m",
        id.parse::<u64>().unwrap() + 1_000_000
    ))
    .err(404, "not_found");
    let other = name("patch-other");
    c.patch(&format!("/{other}?id={id}&lease_timeout=1m"))
        .err(404, "not_found");
    c.release(&n, &id);
    c.patch(&format!("/{n}?id={id}&lease_timeout=1m"))
        .err(404, "not_found");
}

#[test]
fn http_holders_and_library_holders_exclude_each_other() {
    let c = server().client();
    let mut ch = CHandle::open(conninfo());
    static K: AtomicU64 = AtomicU64::new(0);
    let media = |k: &str| {
        format!(
            "media/{k}{:05}{}",
            K.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        )
    };

    // Held over HTTP: the C daemon sees it and cannot take it.
    let n = media("L");
    let id = c.lock(&n, "0", "1m");
    let owner = c.state(&n).unwrap()["owner"].as_str().unwrap().to_string();
    assert_eq!(
        ch.status(&n),
        (0, Some(owner.clone())),
        "dss_lock_status of {n}"
    );
    assert_eq!(ch.lock(&n, "c-daemon"), -libc::EEXIST, "dss_lock of {n}");
    let info = dss::lock::info(handle(), &n).expect("dss::lock::info");
    assert_eq!(info.token.to_string(), id, "the id is the fencing token");
    dss::lock::check(handle(), &n, info.token).expect("dss_lock_check with the HTTP id");
    c.release(&n, &id);
    assert_eq!(ch.status(&n).0, -libc::ENOLCK, "released over HTTP");

    // Held by the C daemon: POST lock_timeout=0 is refused, GET shows it,
    // and its dss_unlock hands it to an HTTP waiter.
    let m = media("M");
    let (rc, token) = ch.lock_lease(&m, "c-daemon", 60_000);
    assert_eq!(rc, 0, "dss_lock_lease");
    c.post(&format!("/{m}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    let st = c.state(&m).expect("GET of a library-held lock");
    assert_eq!(st["locking_id"], token.to_string(), "{st}");
    assert_eq!(st["owner"], "c-daemon", "{st}");
    let w = c.spawn("POST", &format!("/{m}?lock_timeout=30s&lease_timeout=1m"));
    c.until_acquirers(&m, 1);
    assert_eq!(ch.unlock(&m, "c-daemon"), 0, "dss_unlock");
    let wid = w.join().unwrap().id();
    let (rc, wowner) = ch.status(&m);
    assert_eq!(rc, 0);
    assert!(
        wowner.unwrap().starts_with("http:"),
        "the HTTP waiter holds it"
    );
    c.release(&m, &wid);

    // A library holder released over HTTP by its token.
    let l = media("T");
    let token = dss::lock::lease(handle(), &l, "rust-daemon", 60_000).unwrap();
    c.release(&l, &token.to_string());
    assert_eq!(ch.status(&l).0, -libc::ENOLCK);
}

#[test]
fn shared_mode() {
    let c = server().client();
    let n = name("shared");
    let s1 = c
        .post(&format!("/{n}?lock_timeout=0&lease_timeout=1m&mode=shared"))
        .id();
    let s2 = c
        .post(&format!("/{n}?lock_timeout=0&lease_timeout=1m&mode=shared"))
        .id();
    assert_ne!(s1, s2);
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    let st = c.state(&n).expect("held shared");
    assert_eq!(st["mode"], "shared", "{st}");
    let ids: BTreeSet<&str> = st["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([s1.as_str(), s2.as_str()]), "{st}");
    assert!(
        st["locking_id"] == s1 || st["locking_id"] == s2,
        "locking_id is a holder: {st}"
    );
    assert_eq!(
        dss::lock::lock(handle(), &n, "x", 0).unwrap_err().errno(),
        -libc::EEXIST,
        "the library sees it held"
    );

    // A writer queued: later readers wait behind it (no starvation).
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    c.until_acquirers(&n, 1);
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m&mode=shared"))
        .err(408, "timeout");
    c.release(&n, &s1);
    assert!(!w.is_finished(), "one reader still holds it");
    c.release(&n, &s2);
    let wid = w.join().unwrap().id();
    let st = c.state(&n).unwrap();
    assert_eq!(st["mode"], "exclusive", "{st}");
    assert_eq!(st["locking_id"], wid, "{st}");
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m&mode=shared"))
        .err(408, "timeout");
    c.release(&n, &wid);
}

#[test]
fn semaphore_of_capacity_two() {
    let c = server().client();
    let n = name("sem");
    let s = format!("sem/{n}");
    let q = "lock_timeout=0&lease_timeout=1m&permits=1&capacity=2";
    let p1 = c.post(&format!("/{s}?{q}")).id();
    let p2 = c.post(&format!("/{s}?{q}")).id();
    c.post(&format!("/{s}?{q}")).err(408, "timeout");
    let st = c.state(&s).expect("GET of a semaphore with holders");
    assert_eq!(st["mode"], "semaphore", "{st}");
    let ids: BTreeSet<&str> = st["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([p1.as_str(), p2.as_str()]), "{st}");

    // The lock of the same name is another namespace.
    let l = c.lock(&n, "0", "1m");

    let w = c.spawn(
        "POST",
        &format!("/{s}?lock_timeout=30s&lease_timeout=1m&permits=1&capacity=2"),
    );
    c.until_acquirers(&s, 1);
    c.release(&s, &p1);
    let p3 = w.join().unwrap().id();
    c.post(&format!("/{s}?{q}")).err(408, "timeout");

    c.post(&format!(
        "/{s}?lock_timeout=0&lease_timeout=1m&permits=3&capacity=2"
    ))
    .err(400, "invalid_argument");
    c.post(&format!(
        "/{s}?lock_timeout=0&lease_timeout=1m&permits=1&capacity=3"
    ))
    .err(400, "invalid_argument");
    c.patch(&format!("/{s}?id={p2}&lease_timeout=1h")).ok(200);
    c.release(&s, &p2);
    c.release(&s, &p3);
    assert_eq!(c.state(&s), None);
    c.release(&n, &l);
}

/// A POST by an owner that holds the name already: 409 already_held, at
/// once, whatever its lock_timeout (waiting for itself would be a
/// self-deadlock until the deadline).
fn assert_already_held(target: &str, extra: &str) {
    let c = server().client();
    let q = format!("lease_timeout=1m&owner=me{extra}");
    let id = c.post(&format!("/{target}?lock_timeout=0&{q}")).id();
    c.post(&format!("/{target}?lock_timeout=0&{q}"))
        .err(409, "already_held");
    let t = Instant::now();
    c.post(&format!("/{target}?lock_timeout=10s&{q}"))
        .err(409, "already_held");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "409 at once, not after the wait"
    );
    c.release(target, &id);
}

#[test]
fn already_held_exclusive() {
    assert_already_held(&name("conflict-x"), "");
}

#[test]
fn already_held_shared() {
    assert_already_held(&name("conflict-s"), "&mode=shared");
}

#[test]
fn already_held_semaphore() {
    assert_already_held(
        &format!("sem/{}", name("conflict-sem")),
        "&permits=1&capacity=2",
    );
}

#[test]
fn invalid_arguments() {
    let c = server().client();
    let m = name("badarg");
    let long_owner = "o".repeat(300);
    for q in [
        "lock_timeout=0&lease_timeout=1m&mode=bogus".to_string(),
        format!("lock_timeout=0&lease_timeout=1m&owner={long_owner}"),
    ] {
        c.post(&format!("/{m}?{q}")).err(400, "invalid_argument");
    }
    let s = format!("sem/{m}");
    for q in [
        "permits=0&capacity=2",
        "permits=x&capacity=2",
        "permits=1&capacity=x",
    ] {
        c.post(&format!("/{s}?lock_timeout=0&lease_timeout=1m&{q}"))
            .err(400, "invalid_argument");
    }
    assert_eq!(c.state(&m), None);
    assert_eq!(c.state(&s), None);
}

#[test]
fn two_servers_on_one_database_agree() {
    let one = Dssd::start(Opts::default());
    let two = Dssd::start(Opts::default());
    let (c1, c2) = (one.client(), two.client());
    let n = name("two");

    let a = c1.lock(&n, "0", "1m");
    assert_eq!(
        c2.holder(&n).as_deref(),
        Some(a.as_str()),
        "seen through the other"
    );
    c2.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");

    // A waiter on one, the holder released through the other.
    let w = c1.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    let q = c2.until_acquirers(&n, 1);
    assert_eq!(c1.acquirers(&n)[0].0, q[0].0, "both list the same queue");
    c2.release(&n, &a);
    let b = w.join().unwrap().id();
    assert_eq!(c2.holder(&n).as_deref(), Some(b.as_str()));

    // A waiter on two, cancelled through one.
    let w = c2.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    let q = c1.until_acquirers(&n, 1);
    c1.release(&n, &q[0].0);
    w.join().unwrap().err(408, "timeout");

    // PATCH through two of the hold taken through one.
    c2.patch(&format!("/{n}?id={b}&lease_timeout=1h")).ok(200);
    let st = c1.state(&n).unwrap();
    assert!(
        out_duration(st["lock_timeout"].as_str().unwrap()) > Duration::from_secs(3500),
        "{st}"
    );
    c2.release(&n, &b);
    assert_eq!(c1.state(&n), None);
    assert!(c1.get("/").ok(200).get(&n).is_none());
}

#[test]
fn restart_while_a_lock_is_held() {
    let s = Dssd::start(Opts::default());
    let c = s.client();
    let n = name("restart");
    let id = c.lock(&n, "0", "10m");

    // SIGTERM drains what is in flight: a waiting POST gets an answer.
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=3s&lease_timeout=1m"));
    c.until_acquirers(&n, 1);
    let status = s.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "dssd exits 0 on SIGTERM; log:\n{}",
        s.log()
    );
    let answered = w.join().unwrap();
    assert!(
        [408, 503].contains(&answered.status),
        "the waiter in flight got an answer: {answered:?}"
    );
    assert!(
        s.log().contains("POST"),
        "one log line per request:\n{}",
        s.log()
    );

    let s2 = s.restart();
    let c = s2.client();
    assert_eq!(
        c.holder(&n).as_deref(),
        Some(id.as_str()),
        "held across the restart"
    );
    assert_eq!(c.acquirers(&n), vec![], "no stale waiter");
    c.patch(&format!("/{n}?id={id}&lease_timeout=1h")).ok(200);
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    c.release(&n, &id);
    assert_eq!(c.state(&n), None);
    // Ids keep growing across restarts.
    let id2 = c.lock(&n, "0", "1m");
    assert!(id2.parse::<u64>().unwrap() > id.parse::<u64>().unwrap());
    c.release(&n, &id2);
}

#[test]
fn bearer_token_on_every_route_but_healthz() {
    let dir = tempdir("dssd-tok");
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-Token_1\n").unwrap();
    let s = Dssd::start(Opts {
        token_file: Some(file),
        token: Some("s3cret-Token_1".into()),
        ..Opts::default()
    });
    let good = s.client();
    let n = name("auth");
    let id = good.lock(&n, "0", "1m");

    let none = good.with_token(None);
    let wrong = good.with_token(Some("s3cret-Token_2"));
    let prefix = good.with_token(Some("s3cret"));
    let longer = good.with_token(Some("s3cret-Token_1x"));
    let routes = [
        ("POST", format!("/{n}?lock_timeout=0&lease_timeout=1m")),
        ("GET", format!("/{n}")),
        ("GET", "/".to_string()),
        ("PATCH", format!("/{n}?id={id}&lease_timeout=1m")),
        ("DELETE", format!("/{n}?id={id}")),
        ("GET", "/metrics".to_string()),
    ];
    for (method, target) in &routes {
        for bad in [&none, &wrong, &prefix, &longer] {
            bad.send(method, target).err(401, "unauthorized");
        }
        let basic = none
            .try_send(
                method,
                target,
                None,
                &[("Authorization", "Basic czNjcmV0LVRva2VuXzE=")],
            )
            .unwrap();
        basic.err(401, "unauthorized");
    }
    assert_eq!(
        good.holder(&n).as_deref(),
        Some(id.as_str()),
        "401s changed nothing"
    );
    let healthz = none.get("/healthz");
    assert_eq!(healthz.status, 200, "/healthz is open: {healthz:?}");
    assert_eq!(good.get("/metrics").status, 200);
    good.patch(&format!("/{n}?id={id}&lease_timeout=1m"))
        .ok(200);
    good.get("/").ok(200);
    good.release(&n, &id);
    let _ = std::fs::remove_dir_all(dir);
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format strictly: each line is empty, a comment (`# HELP
/// name text`, `# TYPE name type`, `# ...`) or `name{labels} value
/// [timestamp]`. Returns the samples and the declared types by family.
fn parse_metrics(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    fn is_name(s: &str) -> bool {
        let mut b = s.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
    }
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut w = rest.trim_start().splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    assert!(is_name(name), "TYPE of a bad name: {line:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "unknown type: {line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                (Some("HELP"), Some(name), _) => assert!(is_name(name), "{line:?}"),
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("sample without a value: {line:?}"),
        };
        assert!(is_name(name), "bad metric name: {line:?}");
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut l) = rest.strip_prefix('{') {
            loop {
                l = l.trim_start_matches([',', ' ']);
                if let Some(after) = l.strip_prefix('}') {
                    break after;
                }
                let eq = l
                    .find('=')
                    .unwrap_or_else(|| panic!("label without '=': {line:?}"));
                let key = &l[..eq];
                assert!(is_name(key), "bad label name in {line:?}");
                let v = l[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("unquoted label value: {line:?}"));
                let mut value = String::new();
                let mut chars = v.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line:?}"),
                    }
                };
                labels.insert(key.to_string(), value);
                l = &v[end + 1..];
            }
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<i64>().is_ok(), "bad timestamp in {line:?}");
        }
        assert!(fields.next().is_none(), "trailing fields in {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

/// The family a sample belongs to (histogram and summary suffixes cut).
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
        if let Some(f) = name.strip_suffix(suffix)
            && types.contains_key(f)
        {
            return f;
        }
    }
    name
}

#[test]
fn metrics_in_the_prometheus_text_format() {
    // A server of its own: no other test's requests move its counters.
    let s = Dssd::start(Opts::default());
    let c = s.client();
    let read = || {
        let r = c.get("/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.content_type.starts_with("text/plain"),
            "content type {:?}",
            r.content_type
        );
        parse_metrics(&r.body)
    };
    let requests = |samples: &[Sample], types: &BTreeMap<String, String>| -> f64 {
        samples
            .iter()
            .filter(|s| {
                let f = family(&s.name, types);
                f.contains("request") && types.get(f).map(String::as_str) == Some("counter")
            })
            .map(|s| s.value)
            .sum()
    };
    let grants = |samples: &[Sample], types: &BTreeMap<String, String>| -> f64 {
        samples
            .iter()
            .filter(|s| {
                let f = family(&s.name, types);
                f.contains("grant") && types.get(f).map(String::as_str) == Some("counter")
            })
            .map(|s| s.value)
            .sum()
    };
    let (before, types) = read();
    for s in &before {
        assert!(
            s.name.starts_with("dss_"),
            "metric without the dss_ prefix: {s:?}"
        );
    }
    for name in types.keys() {
        assert!(
            name.starts_with("dss_"),
            "family without the dss_ prefix: {name}"
        );
    }
    let (req0, grant0) = (requests(&before, &types), grants(&before, &types));

    let n = name("metrics");
    let id = c.lock(&n, "0", "1m");
    c.post(&format!("/{n}?lock_timeout=0&lease_timeout=1m"))
        .err(408, "timeout");
    c.get(&format!("/{n}")).ok(200);
    c.release(&n, &id);
    c.get(&format!("/{n}")).err(404, "not_found");
    let id = c.lock(&n, "0", "1m");
    c.release(&n, &id);

    let (after, types) = read();
    let req1 = requests(&after, &types);
    assert!(
        req1 >= req0 + 7.0,
        "request counters grew by {} for 7 requests (families {types:?})",
        req1 - req0
    );
    assert!(
        grants(&after, &types) >= grant0 + 2.0,
        "a lock-grant counter grew by 2 (families {types:?})"
    );
    let statuses: BTreeSet<&str> = after
        .iter()
        .filter(|s| family(&s.name, &types).contains("request"))
        .flat_map(|s| s.labels.values().map(String::as_str))
        .collect();
    for status in ["200", "404", "408"] {
        assert!(
            statuses.contains(status),
            "requests are counted by status: no {status} among {statuses:?}"
        );
    }
    // A wait-time histogram: cumulative buckets ending in +Inf = _count.
    let hist: Vec<&String> = types
        .iter()
        .filter(|(_, t)| t.as_str() == "histogram")
        .map(|(n, _)| n)
        .collect();
    assert!(!hist.is_empty(), "no histogram among {types:?}");
    for h in hist {
        let buckets: Vec<&Sample> = after
            .iter()
            .filter(|s| s.name == format!("{h}_bucket"))
            .collect();
        assert!(!buckets.is_empty(), "{h} has no buckets");
        let inf = buckets
            .iter()
            .find(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"))
            .unwrap_or_else(|| panic!("{h} has no +Inf bucket"));
        let count = after
            .iter()
            .find(|s| s.name == format!("{h}_count") && !s.labels.contains_key("le"))
            .unwrap_or_else(|| panic!("{h} has no _count"));
        assert_eq!(inf.value, count.value, "{h}: +Inf bucket = _count");
    }
}

#[test]
fn max_waiters_bounds_the_waiting_posts() {
    let s = Dssd::start(Opts {
        max_waiters: Some(1),
        ..Opts::default()
    });
    let c = s.client();
    let n = name("maxw");
    let a = c.lock(&n, "0", "1m");
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    let q = c.until_acquirers(&n, 1);
    let t = Instant::now();
    c.post(&format!("/{n}?lock_timeout=30s&lease_timeout=1m"))
        .err(503, "unavailable");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "503 at once ({:?})",
        t.elapsed()
    );
    assert_eq!(c.acquirers(&n).len(), 1, "the refused POST did not queue");
    // The calls that do not wait still work.
    let m = name("maxw-free");
    let b = c.lock(&m, "0", "1m");
    c.get(&format!("/{n}")).ok(200);
    c.release(&m, &b);
    assert!(!w.is_finished());
    // Once the waiter is gone, another may wait.
    c.release(&n, &q[0].0);
    w.join().unwrap().err(408, "timeout");
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=30s&lease_timeout=1m"));
    c.until_acquirers(&n, 1);
    c.release(&n, &a);
    let id = w.join().unwrap().id();
    c.release(&n, &id);
}

#[test]
fn database_stopped_gives_503_within_the_call_deadline_then_recovers() {
    const CALL_MS: u64 = 2000;
    let (dir, conninfo) = new_cluster("dssd-down");
    let _destroy = Destroy(dir.clone());
    let s = Dssd::start(Opts {
        conninfo: Some(conninfo),
        env: vec![
            ("PHOBOS_DSS_call_timeout_ms".into(), CALL_MS.to_string()),
            ("PHOBOS_DSS_pool_timeout_ms".into(), "1000".into()),
        ],
        ..Opts::default()
    });
    let c = s.client();
    let n = name("down");
    let id = c.lock(&n, "0", "10m");
    let w = c.spawn("POST", &format!("/{n}?lock_timeout=60s&lease_timeout=1m"));
    c.until_acquirers(&n, 1);

    pgtmp("stop", &dir);
    let stopped = Instant::now();
    let limit = Duration::from_millis(CALL_MS + 1500);
    let waiter = w.join().unwrap();
    waiter.err(503, "unavailable");
    assert!(
        stopped.elapsed() < limit + Duration::from_millis(CALL_MS),
        "the waiting POST ended {:?} after the stop",
        stopped.elapsed()
    );
    let m = name("down-other");
    let calls = [
        ("POST", format!("/{m}?lock_timeout=0&lease_timeout=1m")),
        ("POST", format!("/{n}?lock_timeout=30s&lease_timeout=1m")),
        ("GET", format!("/{n}")),
        ("GET", "/".to_string()),
        ("PATCH", format!("/{n}?id={id}&lease_timeout=1m")),
        ("DELETE", format!("/{n}?id={id}")),
    ];
    for (method, target) in &calls {
        let t = Instant::now();
        c.send(method, target).err(503, "unavailable");
        assert!(
            t.elapsed() < limit,
            "{method} {target} took {:?}",
            t.elapsed()
        );
    }
    let t = Instant::now();
    let h = c.get("/healthz");
    assert_eq!(h.status, 503, "/healthz with the database down: {h:?}");
    assert!(t.elapsed() < limit, "/healthz took {:?}", t.elapsed());
    // The 400s need no database.
    c.post(&format!("/{n}?lock_timeout=1d&lease_timeout=1m"))
        .err(400, "invalid_lock_timeout");

    pgtmp("start", &dir);
    until("/healthz 200 after the restart", || {
        (c.get("/healthz").status == 200).then_some(())
    });
    assert_eq!(
        c.holder(&n).as_deref(),
        Some(id.as_str()),
        "the lock survived"
    );
    c.release(&n, &id);
    let id2 = c.lock(&n, "0", "1m");
    c.release(&n, &id2);
}

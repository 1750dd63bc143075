//! A private PostgreSQL cluster for the integration tests of one test
//! binary: started on first use with scripts/pgtmp.sh (initdb + pg_ctl,
//! Unix socket only, sql/ applied) and destroyed when the process exits.
//! DSS_TEST_CONNINFO, if set, names an existing database instead. A cluster
//! that cannot be started fails the test: nothing is skipped.

#![allow(dead_code)]

pub mod freeze;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use dss::config::Settings;
use dss::handle::Handle;

pub struct Cluster {
    pub dir: Option<PathBuf>,
    pub conninfo: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pgtmp.sh")
}

/// Runs `scripts/pgtmp.sh CMD DIR`, fails the test if it fails, and
/// returns what it printed (the conninfo, for `start`).
pub fn pgtmp(cmd: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg(script())
        .arg(cmd)
        .arg(dir)
        .output()
        .expect("run scripts/pgtmp.sh");
    assert!(
        out.status.success(),
        "pgtmp.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Stops and removes a cluster, whatever state it is in (for cleanup).
pub fn pgtmp_destroy(dir: &Path) {
    let _ = Command::new("sh")
        .arg(script())
        .arg("destroy")
        .arg(dir)
        .status();
}

extern "C" fn destroy_cluster() {
    if let Some(Cluster { dir: Some(dir), .. }) = CLUSTER.get() {
        pgtmp_destroy(dir);
    }
}

/// Starts (once) and returns the cluster.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        if let Ok(c) = std::env::var("DSS_TEST_CONNINFO") {
            return Cluster {
                dir: None,
                conninfo: c,
            };
        }
        let dir = tempdir("dss-rt");
        let conninfo = pgtmp("start", &dir);
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(destroy_cluster) };
        Cluster {
            dir: Some(dir),
            conninfo,
        }
    })
}

/// A fresh, short directory under /tmp (Unix socket paths are short).
pub fn tempdir(prefix: &str) -> PathBuf {
    let out = Command::new("mktemp")
        .arg("-d")
        .arg(format!("/tmp/{prefix}.XXXXXX"))
        .output()
        .unwrap();
    assert!(out.status.success());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The superuser's conninfo: for the tests' own checks and set-up.
pub fn conninfo() -> String {
    cluster().conninfo.clone()
}

/// The login role of the library's handles in these tests: a member of
/// dss_client and nothing else (sql/0007_roles.sql), as a daemon would be,
/// so every call the tests make proves that grant is enough.
pub const CLIENT_ROLE: &str = "dss_test_client";

/// [`conninfo`] as [`CLIENT_ROLE`] (created once per cluster).
pub fn client_conninfo() -> String {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        client()
            .batch_execute(&format!(
                "DO $$ BEGIN
                     CREATE ROLE {CLIENT_ROLE} LOGIN IN ROLE dss_client;
                 EXCEPTION WHEN duplicate_object THEN NULL;
                 END $$"
            ))
            .unwrap();
    });
    format!("{} user={CLIENT_ROLE}", conninfo())
}

/// A handle on the test database as [`CLIENT_ROLE`], with an
/// application_name of its own so a test can find (and kill) its sessions.
pub fn handle_named(app: &str) -> Handle {
    let s = Settings::new(&format!("{} application_name={app}", client_conninfo())).unwrap();
    Handle::open(s).unwrap()
}

pub fn handle() -> Handle {
    handle_named("libdss-test")
}

/// A plain client, for checking what is in the table behind the library.
pub fn client() -> postgres::Client {
    postgres::Client::connect(&conninfo(), postgres::NoTls).unwrap()
}

/// A session of the library's own client, the one under every call.
pub fn pg_client() -> dss::pq::Connection {
    let s = Settings::new(&conninfo()).unwrap();
    dss::pq::Connection::connect(&s.connect, None).unwrap()
}

/// A new empty database NAME_<pid> on the test cluster (dropped first if a
/// previous run left it); returns its conninfo.
pub fn fresh_database(name: &str) -> String {
    let mut c = client();
    let db = format!("{name}_{}", std::process::id());
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    format!("{} dbname={db}", conninfo())
}

/// A new database (as `fresh_database`) with every migration applied.
pub fn fresh_migrated_database(name: &str) -> String {
    let db = fresh_database(name);
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    for (_, sql) in dss::sql::MIGRATIONS {
        c.batch_execute(sql).unwrap();
    }
    db
}

/// An id no other test uses.
pub fn uid(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}:{}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn errno<T: std::fmt::Debug>(r: dss::error::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

/// Makes the lease of lock `id` expired, as the passing of time would (tests
/// never sleep for that).
pub fn expire_lease(id: &str) {
    let n = client()
        .execute(
            "UPDATE dss.locks SET expires_at = now() - interval '1 millisecond' \
             WHERE id = $1 AND expires_at IS NOT NULL",
            &[&id],
        )
        .unwrap();
    assert_eq!(n, 1, "{id} is a lease");
}

/// Makes key `key` of `bucket` expired, as the passing of time would.
pub fn expire_kv(bucket: &str, key: &str) {
    let n = client()
        .execute(
            "UPDATE dss.kv SET expires_at = now() - interval '1 millisecond' \
             WHERE bucket = $1 AND key = $2",
            &[&bucket, &key],
        )
        .unwrap();
    assert_eq!(n, 1, "{bucket}/{key} exists");
}

/// dssctl, connected to the test cluster through the environment variable
/// (the config file is pointed nowhere so that the host's cannot interfere).
pub fn base() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dssctl"));
    cmd.env("PHOBOS_DSS_connect_string", conninfo())
        .env("PHOBOS_CFG_FILE", "/nonexistent/phobos.conf")
        .env("USER", "cli-tester");
    cmd
}

/// dssctl with `args`, connected with --conninfo only.
pub fn dssctl_on(conninfo: &str, args: &[&str]) -> Output {
    let mut cmd = base();
    cmd.env_remove("PHOBOS_DSS_connect_string")
        .arg("--conninfo")
        .arg(conninfo)
        .args(args);
    cmd.output().expect("run dssctl")
}

/// Blocks until `n` requests are queued on `id` (dss.lock_waiters).
pub fn until_queued(id: &str, n: i64) {
    let mut c = client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queued: i64 = c
            .query_one(
                "SELECT count(*) FROM dss.lock_waiters WHERE id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if queued >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} requests never queued on {id}"
        );
        std::thread::yield_now();
    }
}

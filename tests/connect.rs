//! How the library connects to PostgreSQL, through its public Rust API
//! (`Settings::new` + `Handle::open`, then a lock round trip), against real
//! servers this test binary starts itself.
//!
//! Covered: SCRAM-SHA-256, md5 and cleartext `password` authentication over
//! TCP (a password with spaces and a quote, quoted libpq-style); a wrong
//! password and a missing one; multi-host failover past a missing socket
//! directory and past a refused TCP port; `target_session_attrs=read-write`
//! skipping a read-only server; a server that accepts TCP but never speaks;
//! and no `user=` at all (the OS user name, not a role of the cluster).
//!
//! The clusters (tests/common/server.rs) run with a pg_hba.conf of this
//! file (see [`PG_HBA`]), listening on a Unix socket in a private directory
//! and on 127.0.0.1 at a free port; this file creates the roles `u_scram`,
//! `u_md5` and `u_plain`. One writable
//! cluster is shared by the tests; `target_session_attrs` gets a second,
//! read-only cluster (`default_transaction_read_only = on`) of its own.
//! Every cluster is destroyed at process exit (libc::atexit), whatever the
//! outcome; one that cannot be started fails the test. Nothing is skipped.
//!
//! The tests assume the OS user is not `postgres` (the one role with trust
//! over TCP): the test without `user=` expects a login failure.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use common::server::{
    Destroy, Pg, conninfo_quote, free_port, lock_round_trip, ok, open, open_err, run, sql_literal,
};
use common::uid;
use dss::config::Settings;
use dss::handle::Handle;
use dss::lock;

const SCRAM_PASSWORD: &str = "p a'ss w";
const MD5_PASSWORD: &str = "md5 p'w";
const PLAIN_PASSWORD: &str = "clear text";

/// Trust for the superuser (setup, and the `target_session_attrs` test);
/// one authentication method per test role; nothing for anyone else.
const PG_HBA: &str = "\
local all postgres trust
host all u_scram 127.0.0.1/32 scram-sha-256
host all u_md5 127.0.0.1/32 md5
host all u_plain 127.0.0.1/32 password
host all postgres 127.0.0.1/32 trust
";

// ---------------------------------------------------------------- clusters

/// The test clusters of this file.
trait Start {
    fn start(prefix: &str) -> Pg;
}

impl Start for Pg {
    /// A cluster with our pg_hba.conf and the test roles.
    fn start(prefix: &str) -> Pg {
        let pg = Pg::init(prefix, PG_HBA, "");
        let roles = "u_scram, u_md5, u_plain";
        pg.psql(
            "dss",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE u_scram LOGIN PASSWORD {};
                 SET password_encryption = 'md5';
                 CREATE ROLE u_md5 LOGIN PASSWORD {};
                 SET password_encryption = 'scram-sha-256';
                 CREATE ROLE u_plain LOGIN PASSWORD {};",
                sql_literal(SCRAM_PASSWORD),
                sql_literal(MD5_PASSWORD),
                sql_literal(PLAIN_PASSWORD),
            ),
        );
        pg.grant_library_use(roles);
        // The verifiers really are of the kind each auth method needs.
        assert_eq!(
            pg.psql(
                "postgres",
                "SELECT rolname || ' ' || CASE WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' \
                 WHEN rolpassword LIKE 'md5%' THEN 'md5' ELSE 'other' END \
                 FROM pg_authid WHERE rolname LIKE 'u\\_%' ORDER BY rolname"
            ),
            "u_md5 md5\nu_plain scram\nu_scram scram"
        );
        pg
    }
}

/// The writable cluster the tests share.
fn cluster() -> &'static Pg {
    static CLUSTER: OnceLock<Pg> = OnceLock::new();
    CLUSTER.get_or_init(|| Pg::start("dss-conn"))
}

// ---------------------------------------------------------------- helpers

/// Opens `conninfo` (with an application_name of its own) on the shared
/// cluster, checks the pooled sessions really are `user`'s, and does a lock
/// round trip.
fn login_works(conninfo: &str, user: &str) {
    let pg = cluster();
    let app = uid("app");
    let h = ok(
        &format!("open as {user}"),
        open(&format!("{conninfo} application_name={app}")),
    );
    assert_eq!(
        pg.session_user(&app),
        user,
        "the pooled sessions are {user}'s"
    );
    lock_round_trip(&h, pg);
}

/// Logs in as `user` with `password` over TCP: see [`login_works`].
fn password_login_works(user: &str, password: &str) {
    let conninfo = cluster().tcp(&format!(
        "user={user} password={}",
        conninfo_quote(password)
    ));
    login_works(&conninfo, user);
}

fn hung_open_fails(conninfo: &str, what: &str) {
    let t = Instant::now();
    let (errno, message) = open_err(conninfo);
    eprintln!(
        "{what}: errno {errno} ({}) after {:?}: {message}",
        if errno == -libc::ENOTCONN {
            "-ENOTCONN"
        } else if errno == -libc::ECOMM {
            "-ECOMM"
        } else {
            "?"
        },
        t.elapsed()
    );
    assert!(
        errno == -libc::ENOTCONN || errno == -libc::ECOMM,
        "{what}: errno {errno}: {message}"
    );
    // connect_timeout=1 is 2 s in libpq (its minimum); some slack for a
    // busy machine, far below the test's 30 s hang limit.
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{what}: took {:?}, connect_timeout is 2 s",
        t.elapsed()
    );
}

/// A TCP server on 127.0.0.1 that accepts every connection and never says
/// a word (a frozen or wedged server, as seen from the client), until the
/// value is dropped; then tells how many connections it accepted.
struct Silent {
    port: u16,
    stop: Option<mpsc::Sender<()>>,
    acceptor: Option<std::thread::JoinHandle<usize>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let acceptor = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            loop {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        match stop_rx.recv_timeout(Duration::from_millis(10)) {
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            _ => return held.len(),
                        }
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Silent {
            port,
            stop: Some(stop_tx),
            acceptor: Some(acceptor),
        }
    }

    /// Stops it; the number of connections it accepted.
    fn accepted(mut self) -> usize {
        self.stop.take().unwrap().send(()).unwrap();
        self.acceptor.take().unwrap().join().unwrap()
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn scram_sha_256_password_over_tcp() {
    password_login_works("u_scram", SCRAM_PASSWORD);
}

#[test]
fn md5_password_over_tcp() {
    password_login_works("u_md5", MD5_PASSWORD);
}

#[test]
fn cleartext_password_over_tcp() {
    password_login_works("u_plain", PLAIN_PASSWORD);
}

#[test]
fn wrong_password_is_enotconn_with_the_servers_reason() {
    let pg = cluster();
    let wrong = "Wr0ng-S3cret-xyzzy";
    for user in ["u_scram", "u_md5", "u_plain"] {
        let (errno, message) = open_err(&pg.tcp(&format!("user={user} password={wrong}")));
        eprintln!("wrong password for {user}: {errno}: {message}");
        assert_eq!(errno, -libc::ENOTCONN, "{user}: {message}");
        assert!(
            message.contains("password authentication failed") || message.contains("28P01"),
            "{user}: the server's reason: {message}"
        );
        assert!(
            message.contains(user),
            "{user}: the server names the role: {message}"
        );
        assert!(
            !message.contains(wrong),
            "{user}: password leaked: {message}"
        );
    }
}

#[test]
fn missing_password_is_enotconn() {
    let pg = cluster();
    for user in ["u_scram", "u_md5", "u_plain"] {
        let (errno, message) = open_err(&pg.tcp(&format!("user={user}")));
        eprintln!("no password for {user}: {errno}: {message}");
        assert_eq!(errno, -libc::ENOTCONN, "{user}: {message}");
        assert!(!message.is_empty());
    }
}

#[test]
fn failover_past_a_missing_socket_directory() {
    let p = cluster().port;
    let conninfo = format!(
        "host=/nonexistent-dir-xyz,127.0.0.1 port={p},{p} dbname=dss user=u_scram \
         password={}",
        conninfo_quote(SCRAM_PASSWORD)
    );
    login_works(&conninfo, "u_scram");
}

#[test]
fn failover_past_a_refused_tcp_port() {
    let dead = free_port();
    // Nothing listens on `dead`: the first host refuses.
    assert!(TcpStream::connect(("127.0.0.1", dead)).is_err());
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={dead},{} dbname=dss user=u_md5 password={}",
        cluster().port,
        conninfo_quote(MD5_PASSWORD)
    );
    login_works(&conninfo, "u_md5");
}

#[test]
fn target_session_attrs_read_write_skips_a_read_only_server() {
    let rw = cluster();
    let mut ro = Pg::start("dss-ro");
    let _cleanup = Destroy(ro.dir.clone());
    // A complete dss database, made read-only for every new session.
    ro.stop();
    ro.launch("-c default_transaction_read_only=on");
    assert_eq!(ro.psql("dss", "SHOW transaction_read_only"), "on");
    assert_eq!(rw.psql("dss", "SHOW transaction_read_only"), "off");
    let hosts = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=dss user=postgres",
        ro.port, rw.port
    );

    // Control: without target_session_attrs the read-only server, listed
    // first, is the one used, and a lock cannot be taken there: -EROFS
    // (not -ECOMM, which would read as a network failure). Reads work.
    let h = ok("open", open(&hosts));
    let id = uid("ro");
    match lock::lock(&h, &id, "o", 0) {
        Ok(_) => panic!("a lock was taken on the read-only server"),
        Err(e) => {
            eprintln!("lock on the read-only server: {}: {}", e.errno(), e.message);
            assert_eq!(e.errno(), -libc::EROFS, "{}", e.message);
            assert!(e.message.contains("25006"), "{}", e.message);
        }
    }
    assert_eq!(
        lock::status(&h, &id).map(|_| ()).unwrap_err().errno(),
        -libc::ENOLCK
    );
    drop(h);
    assert_eq!(rw.lock_owner(&id), "");

    // read-write: the writable server, listed second, is the one used.
    let h = ok(
        "open",
        open(&format!("{hosts} target_session_attrs=read-write")),
    );
    let id = uid("rw");
    let owner = uid("owner");
    ok("lock", lock::lock(&h, &id, &owner, 0));
    assert_eq!(
        rw.lock_owner(&id),
        owner,
        "the lock is on the writable server"
    );
    assert_eq!(ro.lock_owner(&id), "");
    lock::unlock(&h, &id, Some(&owner), "connect-test").unwrap();
    assert_eq!(rw.lock_owner(&id), "");
    drop(h);

    // Only the read-only server: no acceptable host.
    let (errno, message) = open_err(&ro.tcp("user=postgres target_session_attrs=read-write"));
    eprintln!("read-write on the read-only server only: {errno}: {message}");
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
}

/// A switchover that first fences the old primary: every session of it
/// turns read-only (`default_transaction_read_only` set and reloaded). With
/// `target_session_attrs=read-write`, the pooled session on it is dropped
/// when it refuses a write, and the call runs on the server that takes
/// writes now; nothing is written on the fenced one.
#[test]
fn a_primary_turned_read_only_is_left_for_the_writable_server() {
    let new_primary = cluster();
    let old_primary = Pg::start("dss-fence");
    let _cleanup = Destroy(old_primary.dir.clone());
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=dss user=postgres \
         target_session_attrs=read-write",
        old_primary.port, new_primary.port
    );
    let mut settings = Settings::new(&conninfo).unwrap();
    settings.pool_size = 1; // one session: the one that gets fenced
    let h = ok("open", Handle::open(settings));
    let owner = uid("owner");
    let before = uid("fence");
    lock::lock(&h, &before, &owner, 0).unwrap();
    assert_eq!(
        old_primary.lock_owner(&before),
        owner,
        "listed first, writable"
    );

    old_primary.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    old_primary.psql("postgres", "SELECT pg_reload_conf()");
    // A backend applies a reload between two statements: wait until the
    // pooled session has (it answers the probe itself).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fenced = h
            .run("probe", |c| {
                let rows = c.pg.query_once("SHOW default_transaction_read_only", &[])?;
                Ok(rows[0].get::<String>(0) == "on")
            })
            .unwrap();
        if fenced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session never saw the reload"
        );
    }

    let after = uid("fence");
    ok("lock after the fence", lock::lock(&h, &after, &owner, 0));
    assert_eq!(
        new_primary.lock_owner(&after),
        owner,
        "taken on the writable server"
    );
    assert_eq!(
        old_primary.lock_owner(&after),
        "",
        "nothing written on the fenced one"
    );
    lock::unlock(&h, &after, Some(&owner), "connect-test").unwrap();
    assert_eq!(new_primary.lock_owner(&after), "");
}

#[test]
fn server_that_never_accepts_fails_within_connect_timeout() {
    // The kernel completes the TCP handshake (backlog); nobody reads.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    hung_open_fails(
        &format!("host=127.0.0.1 port={port} dbname=dss user=u connect_timeout=1"),
        "never accepted",
    );
    drop(listener);
}

#[test]
fn server_that_accepts_but_never_answers_fails_within_connect_timeout() {
    let silent = Silent::start();
    hung_open_fails(
        &format!(
            "host=127.0.0.1 port={} dbname=dss user=u connect_timeout=1",
            silent.port
        ),
        "accepted, never answered",
    );
    assert!(
        silent.accepted() >= 1,
        "the library did connect to the silent server"
    );
}

/// As PQconnectdb does: a host that does not complete the connection
/// within connect_timeout is given up for the next one (libpq 15 has no call
/// for that in its non-blocking API; the library restarts the attempt with
/// the hosts left).
#[test]
fn a_silent_host_is_given_up_for_the_next_after_connect_timeout() {
    let pg = cluster();
    let silent = Silent::start();
    let t = Instant::now();
    let h = ok(
        "open past a silent host",
        open(&format!(
            "host=127.0.0.1,127.0.0.1 port={},{} dbname=dss user=postgres connect_timeout=2",
            silent.port, pg.port
        )),
    );
    let took = t.elapsed();
    eprintln!("silent host, then the server: open took {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "the silent host was tried for connect_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(4500),
        "the next host was tried right after: {took:?}"
    );
    lock_round_trip(&h, pg);
    assert!(silent.accepted() >= 1, "the silent host was tried first");
    // The whole list silent: a failure naming the timeout, after one
    // connect_timeout per host.
    let (a, b) = (Silent::start(), Silent::start());
    let t = Instant::now();
    let (errno, message) = open_err(&format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=dss user=postgres connect_timeout=2",
        a.port, b.port
    ));
    let took = t.elapsed();
    eprintln!("two silent hosts: {errno} after {took:?}: {message}");
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(message.contains("timeout expired"), "{message}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_millis(6500),
        "one connect_timeout per host: {took:?}"
    );
    assert!(
        a.accepted() >= 1 && b.accepted() >= 1,
        "both hosts were tried"
    );
}

#[test]
fn no_user_means_the_os_user() {
    let pg = cluster();
    let me = run("id -un", Command::new("id").arg("-un"));
    assert_ne!(
        me, "postgres",
        "this test needs an OS user that is not a role"
    );
    let (errno, message) = open_err(&pg.tcp(""));
    eprintln!("no user= (OS user {me}): {errno}: {message}");
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(
        message.contains(&format!("\"{me}\"")),
        "the server names user \"{me}\": {message}"
    );
}

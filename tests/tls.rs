//! TLS, and the libpq configuration sources, through the library's public
//! Rust API (`Settings::new` + `Handle::open`, then a lock round trip) and
//! through the `dssctl` binary, against a TLS cluster this test binary
//! starts itself.
//!
//! Covered, in the process: `sslmode=verify-full` (every pooled session
//! encrypted, as `pg_stat_ssl` shows), a host name the server certificate
//! does not name, a root certificate that did not sign it (`verify-ca`),
//! `sslmode=require` without a root certificate, a client certificate
//! (`cert` authentication), `sslmode=disable` refused by pg_hba.conf, and a
//! wrong password over TLS (the server's reason, never the password).
//!
//! Then the libpq configuration sources, which must work exactly as in
//! psql: a password file (`PGPASSFILE`), a service file (`PGSERVICEFILE`,
//! connect string `service=NAME`), `PG*` variables completing a short
//! connect string, and a TLS connect string read from a phobos config file
//! (`PHOBOS_CFG_FILE`). They need environment variables, which this process
//! must never set (the tests run in parallel threads and libpq reads the
//! environment), so each runs `dssctl` in a child process with an
//! environment of its own: no `PG*` or `PHOBOS_*` variable of the outer
//! environment, `HOME` an empty directory. The server log
//! (`log_connections = on`) shows that the child really connected as the
//! expected role, and with TLS where the case uses it. Last, notices: with
//! `client_min_messages = debug5` the server sends DEBUG messages on every
//! statement; `dssctl` prints nothing on stderr, while psql, the control,
//! does.
//!
//! The cluster (tests/common/server.rs) runs with TLS on (a throwaway CA,
//! a server certificate for `localhost` and 127.0.0.1) and the pg_hba.conf
//! of this file ([`PG_HBA`]); this file creates the roles `u_cert` (client
//! certificate), `u_tls` (SCRAM, TLS only) and `u_pass` (SCRAM, TLS or
//! not), and database `dss_noisy` (a copy of `dss` where `u_pass` gets
//! `client_min_messages = debug5`). Host names: `localhost` (in the
//! certificate; /etc/hosts) and `wrong.example` with `hostaddr=127.0.0.1`
//! (not in it; no DNS needed). The cluster is destroyed at process exit,
//! whatever the outcome; one that cannot be started fails the test.
//! Nothing is skipped.
//!
//! libpq 15 finds `~/.pgpass` and `~/.postgresql/` through the password
//! database, not `HOME` (libpq 18 reads `HOME` first): the test without a
//! password file accepts either "no password supplied" or a refused
//! password, so that a `~/.pgpass` of the OS user cannot make it pass or
//! fail wrongly.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use common::server::{
    Pg, Tls, conninfo_quote, lock_round_trip, ok, open, open_err, pg_bin, private_dir, sql_literal,
};
use common::uid;
use dss::lock;

/// u_tls's password: a space, a quote and a `#` (conninfo quoting, and a
/// config-file value taken whole).
const TLS_PASSWORD: &str = "tls p'w#1";
/// u_pass's password: a colon and a backslash (escaped in a password file).
const PASS_PASSWORD: &str = "pa:ss\\w 2";

/// Trust for the superuser (setup, on the Unix socket); per role: a client
/// certificate, SCRAM over TLS only (refused in clear), SCRAM over either.
const PG_HBA: &str = "\
local all postgres trust
hostssl all u_cert 127.0.0.1/32 cert
hostnossl all u_tls 127.0.0.1/32 reject
hostssl all u_tls 127.0.0.1/32 scram-sha-256
host all u_pass 127.0.0.1/32 scram-sha-256
host all postgres 127.0.0.1/32 trust
";

/// The database where u_pass's sessions get every DEBUG message.
const NOISY_DB: &str = "dss_noisy";

// ---------------------------------------------------------------- cluster

struct TlsPg {
    pg: Pg,
    tls: Tls,
}

/// The TLS cluster the tests share.
fn cluster() -> &'static TlsPg {
    static CLUSTER: OnceLock<TlsPg> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let tls = Tls::make("dss-tlsca", "u_cert");
        let pg = Pg::init(
            "dss-tls",
            PG_HBA,
            &format!("{} -c log_connections=on", tls.server_settings()),
        );
        pg.psql(
            "dss",
            &format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE u_cert LOGIN;
                 CREATE ROLE u_tls LOGIN PASSWORD {};
                 CREATE ROLE u_pass LOGIN PASSWORD {};",
                sql_literal(TLS_PASSWORD),
                sql_literal(PASS_PASSWORD),
            ),
        );
        pg.grant_library_use("u_cert, u_tls, u_pass");
        // A copy of dss (schema and grants), made before any test connects
        // to dss (a template must have no other session).
        pg.psql(
            "postgres",
            &format!("CREATE DATABASE {NOISY_DB} TEMPLATE dss"),
        );
        pg.psql(
            "postgres",
            &format!("ALTER ROLE u_pass IN DATABASE {NOISY_DB} SET client_min_messages = 'debug5'"),
        );
        TlsPg { pg, tls }
    })
}

impl TlsPg {
    /// A conninfo for database `dss` on host `localhost` (the name in the
    /// server certificate), plus `extra`.
    fn localhost(&self, extra: &str) -> String {
        format!("host=localhost port={} dbname=dss {extra}", self.pg.port)
    }

    /// u_tls with its password, over `sslmode=verify-full` against our CA.
    fn verify_full(&self, extra: &str) -> String {
        self.localhost(&format!(
            "user=u_tls password={} sslmode=verify-full sslrootcert={} {extra}",
            conninfo_quote(TLS_PASSWORD),
            path_quote(&self.tls.ca),
        ))
    }
}

// ---------------------------------------------------------------- helpers

fn path_quote(p: &Path) -> String {
    conninfo_quote(p.to_str().expect("a UTF-8 path"))
}

/// One server session, as pg_stat_activity and pg_stat_ssl show it.
#[derive(Debug)]
struct Session {
    user: String,
    ssl: bool,
    /// The TLS protocol (`TLSv1.3`), "" without TLS.
    version: String,
    /// The client certificate's subject, "" without one.
    client_dn: String,
}

/// The sessions with application_name `app`.
fn sessions(pg: &Pg, app: &str) -> Vec<Session> {
    let out = pg.psql(
        "postgres",
        &format!(
            "SELECT a.usename, coalesce(s.ssl, false), coalesce(s.version, ''), \
                    coalesce(s.client_dn, '') \
             FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.application_name = {} ORDER BY a.pid",
            sql_literal(app)
        ),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 4, "psql row: {l}");
            Session {
                user: f[0].to_string(),
                ssl: f[1] == "t",
                version: f[2].to_string(),
                client_dn: f[3].to_string(),
            }
        })
        .collect()
}

/// Asserts that there are sessions named `app`, all `user`'s and encrypted
/// with TLS; returns them.
fn all_encrypted(pg: &Pg, app: &str, user: &str) -> Vec<Session> {
    let s = sessions(pg, app);
    assert!(!s.is_empty(), "{app}: no session on the server");
    for x in &s {
        assert_eq!(x.user, user, "{app}: {s:?}");
        assert!(x.ssl, "{app}: a session without TLS: {s:?}");
        assert!(x.version.starts_with("TLSv"), "{app}: protocol: {s:?}");
    }
    s
}

/// The errno and message of an open that must fail, with a name of its own
/// (`app`) so the server can be checked for sessions.
fn refused(conninfo: &str, app: &str) -> (i32, String) {
    let (errno, message) = open_err(&format!("{conninfo} application_name={app}"));
    eprintln!("{app}: errno {errno}: {message}");
    (errno, message)
}

/// Nothing named `app` got in: no session, no login in the server log.
fn nothing_connected(pg: &Pg, app: &str) {
    let s = sessions(pg, app);
    assert!(s.is_empty(), "{app}: sessions on the server: {s:?}");
    let lines = authorized(pg, app);
    assert!(lines.is_empty(), "{app}: logged in: {lines:?}");
}

/// The server log's "connection authorized" lines of application `app`
/// (exactly that name: followed by a space or the end of the line).
fn authorized(pg: &Pg, app: &str) -> Vec<String> {
    let tag = format!("application_name={app}");
    pg.log()
        .lines()
        .filter(|l| l.contains("connection authorized: "))
        .filter(|l| {
            l.match_indices(&tag)
                .any(|(i, _)| matches!(l[i + tag.len()..].chars().next(), None | Some(' ')))
        })
        .map(str::to_string)
        .collect()
}

/// Asserts that the server log shows sessions of `app`, every one logged in
/// as `user` to `db`, with TLS iff `tls`.
fn logged_in(pg: &Pg, app: &str, user: &str, db: &str, tls: bool) {
    let lines = authorized(pg, app);
    assert!(
        !lines.is_empty(),
        "{app}: no \"connection authorized\" line"
    );
    let who = format!("connection authorized: user={user} database={db} application_name={app}");
    for l in &lines {
        assert!(l.contains(&who), "{app}: expected {who:?}, got: {l}");
        assert_eq!(
            l.contains(" SSL enabled (protocol=TLSv"),
            tls,
            "{app}: TLS expected: {tls}: {l}"
        );
    }
}

/// A password file in `dir`, mode 0600 (libpq ignores one others can
/// read): one `host:port:dbname:user:password` line per entry, `:` and `\`
/// escaped.
fn passfile(dir: &Path, entries: &[(&str, u16, &str, &str, &str)]) -> PathBuf {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let text: String = entries
        .iter()
        .map(|(host, port, db, user, pw)| {
            format!(
                "{}:{port}:{}:{}:{}\n",
                esc(host),
                esc(db),
                esc(user),
                esc(pw)
            )
        })
        .collect();
    let path = dir.join("pgpass");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `program` with an environment of its own: no `PG*` or `PHOBOS_*`
/// variable from ours, `HOME` a new empty directory (no ~/.pgpass,
/// ~/.pg_service.conf or ~/.postgresql/ there).
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.as_bytes();
        if k.starts_with(b"PG") || k.starts_with(b"PHOBOS_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", private_dir("dss-home"));
    cmd
}

/// dssctl with [`clean_command`]'s environment, the config file pointed
/// nowhere (a case may point it somewhere), then `env`.
fn dssctl(env: &[(&str, &OsStr)]) -> Command {
    let mut cmd = clean_command(Path::new(env!("CARGO_BIN_EXE_dssctl")));
    cmd.env("PHOBOS_CFG_FILE", "/nonexistent/phobos.conf");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The child's exit code; a child killed by a signal fails the test.
fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| {
        panic!(
            "the child did not exit normally ({}): stdout: {} stderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Takes a lock through the library as the superuser (Unix socket), runs
/// `cmd` + `status <id>`, and asserts exit 0, nothing on stderr and the
/// owner printed. Returns the child's output.
fn status_works(pg: &Pg, mut cmd: Command) -> Output {
    let h = ok("open as postgres", open(&pg.socket("")));
    let id = uid("cfg");
    let owner = uid("owner");
    ok("lock", lock::lock(&h, &id, &owner, 0));
    let out = cmd.arg("status").arg(&id).output().expect("run dssctl");
    ok("unlock", lock::unlock(&h, &id, Some(&owner), "tls-test"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(exit_code(&out), 0, "stdout: {stdout} stderr: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("owner:") && l.trim_end().ends_with(&owner)),
        "the owner is printed: {stdout}"
    );
    out
}

// ------------------------------------------------- TLS, in the process

/// verify-full: the name and the chain check out, and every session of the
/// pool (several, held at once from threads) is encrypted.
#[test]
fn verify_full_encrypts_every_pooled_session() {
    let t = cluster();
    let app = uid("tls-full");
    let h = ok(
        "open",
        open(&t.verify_full(&format!("application_name={app}"))),
    );

    // N calls at once, each holding its pooled session until the sessions
    // have been looked at: N sessions at the same time.
    const N: usize = 3;
    let (in_tx, in_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        // Dropped (on success or unwinding) before the scope joins: the
        // threads then return.
        let mut release = Vec::new();
        for _ in 0..N {
            let (tx, rx) = mpsc::channel::<()>();
            release.push(tx);
            let (h, in_tx) = (&h, in_tx.clone());
            s.spawn(move || {
                ok(
                    "a held call",
                    h.run("hold", |_| {
                        let _ = in_tx.send(());
                        let _ = rx.recv();
                        Ok(())
                    }),
                )
            });
        }
        for i in 0..N {
            in_rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("only {i} of {N} calls got a session"));
        }
        let s = all_encrypted(&t.pg, &app, "u_tls");
        eprintln!("{app}: {s:?}");
        assert!(s.len() >= N, "{N} sessions at once, got {s:?}");
        drop(release);
    });
    lock_round_trip(&h, &t.pg);
    all_encrypted(&t.pg, &app, "u_tls");
}

#[test]
fn verify_full_refuses_a_host_name_not_in_the_certificate() {
    let t = cluster();
    let app = uid("tls-name");
    let conninfo = format!(
        "host=wrong.example hostaddr=127.0.0.1 port={} dbname=dss user=u_tls password={} \
         sslmode=verify-full sslrootcert={}",
        t.pg.port,
        conninfo_quote(TLS_PASSWORD),
        path_quote(&t.tls.ca),
    );
    let (errno, message) = refused(&conninfo, &app);
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(
        message.contains("does not match host name") && message.contains("wrong.example"),
        "libpq's reason: {message}"
    );
    assert!(
        !message.contains(TLS_PASSWORD),
        "password leaked: {message}"
    );
    nothing_connected(&t.pg, &app);
}

#[test]
fn verify_ca_refuses_a_certificate_of_another_ca() {
    let t = cluster();
    let app = uid("tls-ca");
    let conninfo = t.localhost(&format!(
        "user=u_tls password={} sslmode=verify-ca sslrootcert={}",
        conninfo_quote(TLS_PASSWORD),
        path_quote(&t.tls.other_ca),
    ));
    let (errno, message) = refused(&conninfo, &app);
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(
        message.contains("certificate verify failed"),
        "libpq's reason: {message}"
    );
    nothing_connected(&t.pg, &app);
}

/// `require` without a root certificate: encrypted, nothing verified.
#[test]
fn require_encrypts_without_a_root_certificate() {
    let t = cluster();
    let app = uid("tls-require");
    let h = ok(
        "open",
        open(&t.localhost(&format!(
            "user=u_tls password={} sslmode=require application_name={app}",
            conninfo_quote(TLS_PASSWORD)
        ))),
    );
    lock_round_trip(&h, &t.pg);
    all_encrypted(&t.pg, &app, "u_tls");
}

/// `cert` authentication: the role is the client certificate's CN, no
/// password.
#[test]
fn client_certificate_logs_in() {
    let t = cluster();
    let app = uid("tls-cert");
    let h = ok(
        "open",
        open(&t.localhost(&format!(
            "user=u_cert sslmode=verify-full sslrootcert={} sslcert={} sslkey={} \
             application_name={app}",
            path_quote(&t.tls.ca),
            path_quote(&t.tls.client_crt),
            path_quote(&t.tls.client_key),
        ))),
    );
    lock_round_trip(&h, &t.pg);
    assert_eq!(t.pg.session_user(&app), "u_cert");
    for s in all_encrypted(&t.pg, &app, "u_cert") {
        assert_eq!(s.client_dn, "/CN=u_cert", "the client certificate: {s:?}");
    }
}

#[test]
fn no_encryption_is_refused_by_pg_hba() {
    let t = cluster();
    let app = uid("tls-disable");
    let conninfo = t.localhost(&format!(
        "user=u_tls password={} sslmode=disable",
        conninfo_quote(TLS_PASSWORD)
    ));
    let (errno, message) = refused(&conninfo, &app);
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(
        message.contains("pg_hba.conf rejects") && message.contains("no encryption"),
        "the server's reason: {message}"
    );
    nothing_connected(&t.pg, &app);
}

#[test]
fn wrong_password_over_tls_is_the_servers_reason() {
    let t = cluster();
    let app = uid("tls-wrongpw");
    let wrong = "Wr0ng-TLS-S3cret-plugh";
    let conninfo = t.localhost(&format!(
        "user=u_tls password={wrong} sslmode=verify-full sslrootcert={}",
        path_quote(&t.tls.ca)
    ));
    let (errno, message) = refused(&conninfo, &app);
    assert_eq!(errno, -libc::ENOTCONN, "{message}");
    assert!(
        message.contains("password authentication failed") && message.contains("u_tls"),
        "the server's reason: {message}"
    );
    assert!(!message.contains(wrong), "password leaked: {message}");
    assert!(sessions(&t.pg, &app).is_empty());
}

// ------------------------------------- libpq configuration, in dssctl

/// PGPASSFILE: the password comes from the file, for the line of the host
/// as named (127.0.0.1 in clear, localhost over TLS). Without a password
/// file, the same connect strings fail (exit 1).
#[test]
fn password_file() {
    let t = cluster();
    let port = t.pg.port;
    let dir = private_dir("dss-pgpass");
    let file = passfile(
        &dir,
        &[
            ("127.0.0.1", port, "dss", "u_pass", PASS_PASSWORD),
            ("localhost", port, "dss", "u_pass", PASS_PASSWORD),
        ],
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the password file is private");
    let over_tls = format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        path_quote(&t.tls.ca)
    );
    let cases = [
        ("clear", "host=127.0.0.1 sslmode=disable", false),
        ("tls", over_tls.as_str(), true),
    ];
    for (what, host, tls) in cases {
        let conninfo =
            |app: &str| format!("{host} port={port} dbname=dss user=u_pass application_name={app}");

        let app = uid(&format!("pgpass-{what}"));
        let mut cmd = dssctl(&[("PGPASSFILE", file.as_os_str())]);
        cmd.arg("--conninfo").arg(conninfo(&app));
        status_works(&t.pg, cmd);
        logged_in(&t.pg, &app, "u_pass", "dss", tls);

        // No PGPASSFILE, an empty HOME: no password.
        let app = uid(&format!("nopass-{what}"));
        let out = dssctl(&[])
            .arg("--conninfo")
            .arg(conninfo(&app))
            .args(["list", "--json"])
            .output()
            .expect("run dssctl");
        let stderr = text(&out.stderr);
        eprintln!("{app}: exit {:?}: {stderr}", out.status.code());
        assert_eq!(exit_code(&out), 1, "a connection error: {stderr}");
        assert_eq!(text(&out.stdout), "");
        // "no password supplied"; a refused password if the OS user's own
        // ~/.pgpass (found by libpq 15 through getpwuid, not HOME) has a
        // wildcard line.
        assert!(
            stderr.contains("no password supplied")
                || stderr.contains("password authentication failed"),
            "{stderr}"
        );
        assert!(authorized(&t.pg, &app).is_empty(), "{app} logged in");
    }
}

/// PGSERVICEFILE, and a connect string that is only `service=NAME`: host,
/// port, database, role and TLS from the service, the password from a
/// password file.
#[test]
fn service_file() {
    let t = cluster();
    let port = t.pg.port;
    let dir = private_dir("dss-svc");
    let service = "dss_tls_test";
    let services = dir.join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "# a service of the test\n[other]\nhost=127.0.0.1\nuser=nobody\n\n\
             [{service}]\nhost=localhost\nport={port}\ndbname=dss\nuser=u_tls\n\
             sslmode=verify-full\nsslrootcert={}\n",
            t.tls.ca.display()
        ),
    )
    .unwrap();
    let file = passfile(&dir, &[("localhost", port, "dss", "u_tls", TLS_PASSWORD)]);
    let app = uid("service");
    let mut cmd = dssctl(&[
        ("PGSERVICEFILE", services.as_os_str()),
        ("PGPASSFILE", file.as_os_str()),
        ("PGAPPNAME", OsStr::new(&app)),
    ]);
    cmd.arg("--conninfo").arg(format!("service={service}"));
    status_works(&t.pg, cmd);
    logged_in(&t.pg, &app, "u_tls", "dss", true);
}

/// `PG*` variables complete a connect string that names only the database.
#[test]
fn pg_variables_complete_a_short_connect_string() {
    let t = cluster();
    let app = uid("pgvars");
    let port = t.pg.port.to_string();
    let mut cmd = dssctl(&[
        ("PGHOST", OsStr::new("localhost")),
        ("PGPORT", OsStr::new(&port)),
        ("PGUSER", OsStr::new("u_tls")),
        ("PGPASSWORD", OsStr::new(TLS_PASSWORD)),
        ("PGSSLMODE", OsStr::new("verify-full")),
        ("PGSSLROOTCERT", t.tls.ca.as_os_str()),
        ("PGAPPNAME", OsStr::new(&app)),
    ]);
    cmd.arg("--conninfo").arg("dbname=dss");
    status_works(&t.pg, cmd);
    logged_in(&t.pg, &app, "u_tls", "dss", true);
}

/// A TLS connect string from `[dss] connect_string` of the phobos config
/// file, with no `PHOBOS_DSS_connect_string` and no `--conninfo`.
#[test]
fn tls_connect_string_from_the_phobos_config_file() {
    let t = cluster();
    let app = uid("cfgfile");
    let dir = private_dir("dss-cfg");
    let cfg = dir.join("phobos.conf");
    std::fs::write(
        &cfg,
        format!(
            "[other]\nconnect_string = host=nowhere.invalid\n\n\
             [dss]\nconnect_string = {}\n",
            t.verify_full(&format!("application_name={app}"))
        ),
    )
    .unwrap();
    let cmd = dssctl(&[("PHOBOS_CFG_FILE", cfg.as_os_str())]);
    status_works(&t.pg, cmd);
    logged_in(&t.pg, &app, "u_tls", "dss", true);
}

/// The server sends DEBUG messages to u_pass's sessions in dss_noisy (at
/// login and on every statement): dssctl prints none of them, psql with the
/// same connect string does (the control that proves they were sent).
#[test]
fn notices_never_reach_stderr() {
    let t = cluster();
    let app = uid("noisy");
    let conninfo = format!(
        "host=localhost port={} dbname={NOISY_DB} user=u_pass password={} \
         sslmode=verify-full sslrootcert={} application_name={app}",
        t.pg.port,
        conninfo_quote(PASS_PASSWORD),
        path_quote(&t.tls.ca),
    );
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["history", "no-such-lock"],
    ] {
        let out = dssctl(&[])
            .arg("--conninfo")
            .arg(&conninfo)
            .args(args)
            .output()
            .expect("run dssctl");
        assert_eq!(
            exit_code(&out),
            0,
            "dssctl {args:?}: stderr: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "dssctl {args:?}: stderr");
    }
    logged_in(&t.pg, &app, "u_pass", NOISY_DB, true);

    let psql = pg_bin().join("psql");
    let out = clean_command(if psql.exists() {
        psql.as_path()
    } else {
        Path::new("psql")
    })
    .args(["-X", "-A", "-t", "-d"])
    .arg(&conninfo)
    .args(["-c", "SHOW client_min_messages"])
    .output()
    .expect("run psql");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "psql: {stderr}");
    assert_eq!(text(&out.stdout).trim(), "debug5", "the role's setting");
    assert!(
        stderr.lines().any(|l| l.starts_with("DEBUG:")),
        "psql prints the server's DEBUG messages: {stderr}"
    );
}

/// A process that exits right after using the library over TLS exits
/// cleanly: no helper thread of the library is in libpq or OpenSSL when
/// OpenSSL's exit handlers run (they used to be, reconnecting in the
/// background: SIGSEGV, SIGBUS or SIGABRT at exit in about 1 run of 4).
#[test]
fn exiting_after_tls_calls_never_crashes() {
    let t = cluster();
    let conninfo = t.verify_full("");
    let runs = 30;
    let mut crashed = Vec::new();
    for _ in 0..runs {
        let out = dssctl(&[])
            .arg("--conninfo")
            .arg(&conninfo)
            .args(["list", "--json"])
            .output()
            .expect("run dssctl");
        if out.status.code() != Some(0) {
            crashed.push(format!("{}: {}", out.status, text(&out.stderr)));
        }
    }
    assert!(
        crashed.is_empty(),
        "{} of {runs} dssctl runs did not exit 0: {crashed:?}",
        crashed.len()
    );
}

//! PostgreSQL clusters of a test's own, on TCP (127.0.0.1, a free port) and
//! a Unix socket in a private directory, with a `pg_hba.conf` and server
//! settings chosen by the test: for authentication, TLS, failover and
//! frozen-server tests. scripts/pgtmp.sh cannot serve there: it listens on
//! a Unix socket only, with trust for everyone.
//!
//! Each cluster has database `dss` with sql/ applied (as the superuser
//! `postgres`, which has trust on the Unix socket). Clusters are destroyed
//! by [`Destroy`] at the end of a test and, whatever happened, at exit of
//! the process that started them (never of a forked child). One that
//! cannot be started fails the test: nothing is skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use dss::config::Settings;
use dss::handle::Handle;

/// Longest a `Handle::open` may take before the test calls it hung.
pub const OPEN_LIMIT: Duration = Duration::from_secs(30);

/// A running test cluster.
pub struct Pg {
    pub dir: PathBuf,
    pub port: u16,
    /// `-c name=value ...` given to every start.
    settings: String,
}

/// Directories of the clusters started by this process, for [`destroy_all`].
static STARTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The process that registered [`destroy_all`].
static OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn destroy_all() {
    // A forked child that exits must not stop its parent's clusters.
    if OWNER.load(std::sync::atomic::Ordering::SeqCst) != std::process::id() {
        return;
    }
    let dirs = std::mem::take(&mut *STARTED.lock().unwrap_or_else(PoisonError::into_inner));
    for dir in dirs {
        destroy(&dir);
    }
}

/// Stops the server in `dir` (if any) and removes `dir`.
pub fn destroy(dir: &Path) {
    if dir.join("data/postmaster.pid").exists() {
        let _ = as_pg(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .output();
    }
    let _ = std::fs::remove_dir_all(dir);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The directory of initdb, pg_ctl and psql.
pub fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PG_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (/usr/lib/postgresql; apt-get install postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
        .1
}

/// `program`, run as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root).
pub fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `cmd`; fails the test with its output if it fails.
pub fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `'…'` for SQL.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `'…'` for a libpq-style conninfo.
pub fn conninfo_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A fresh private directory under /tmp, readable by the server's user.
pub fn private_dir(prefix: &str) -> PathBuf {
    let dir = PathBuf::from(run(
        "mktemp",
        Command::new("mktemp")
            .arg("-d")
            .arg(format!("/tmp/{prefix}.XXXXXX")),
    ));
    static ATEXIT: Once = Once::new();
    ATEXIT.call_once(|| {
        OWNER.store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(destroy_all) };
    });
    STARTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.clone());
    if is_root() {
        run("chown", Command::new("chown").arg("postgres").arg(&dir));
    }
    dir
}

impl Pg {
    /// initdb in a new directory, `hba` as pg_hba.conf, start with
    /// `settings` (`-c name=value ...`), database `dss` with sql/ applied.
    pub fn init(prefix: &str, hba: &str, settings: &str) -> Pg {
        let dir = private_dir(prefix);
        run(
            "initdb",
            as_pg(&pg_bin().join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8"])
                .arg("--locale=C.UTF-8"),
        );
        // Rewritten in place: the file keeps its owner (postgres).
        std::fs::write(dir.join("data/pg_hba.conf"), hba).unwrap();
        let mut pg = Pg {
            dir,
            port: 0,
            settings: settings.to_string(),
        };
        pg.launch("");
        pg.psql("postgres", "CREATE DATABASE dss");
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_str().unwrap();
                    name.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(".sql")
                })
                .collect();
        files.sort();
        assert!(!files.is_empty(), "no sql/ migrations found");
        for f in &files {
            run(
                &format!("psql -f {}", f.display()),
                pg.psql_command("dss").arg("-f").arg(f),
            );
        }
        pg
    }

    /// Gives `roles` (comma list) what the library needs: membership of
    /// dss_client, as an operator would (README "Roles").
    pub fn grant_library_use(&self, roles: &str) {
        self.psql("dss", &format!("GRANT dss_client TO {roles}"));
    }

    /// Starts the server on a free port (another one if that port was
    /// taken in the meantime), with the cluster's settings and `extra`.
    pub fn launch(&mut self, extra: &str) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let out = as_pg(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -c port={port} \
                     -c unix_socket_directories='{}' -c max_connections=100 \
                     -c fsync=off {} {extra}",
                    self.dir.display(),
                    self.settings
                ))
                .arg("start")
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                self.port = port;
                return;
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed five times:\n{last}");
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`, which
    /// needs `local replication postgres trust` in the primary's hba),
    /// started on a port of its own with the same settings.
    pub fn standby(&self, prefix: &str) -> Pg {
        let dir = private_dir(prefix);
        run(
            "pg_basebackup",
            as_pg(&pg_bin().join("pg_basebackup"))
                .arg("-h")
                .arg(&self.dir)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(dir.join("data")),
        );
        let mut pg = Pg {
            dir,
            port: 0,
            settings: self.settings.clone(),
        };
        pg.launch("");
        pg
    }

    pub fn stop(&self) {
        run(
            "pg_ctl stop",
            as_pg(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
        );
    }

    /// psql as the superuser on the Unix socket, stopping at the first error.
    pub fn psql_command(&self, db: &str) -> Command {
        let psql = pg_bin().join("psql");
        let mut c = Command::new(if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        });
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db]);
        c
    }

    /// Runs `sql` (one or more statements) and returns the output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run(
            &format!("psql -c {sql:?}"),
            self.psql_command(db).arg("-c").arg(sql),
        )
    }

    /// A TCP conninfo for database `dss` on this cluster, plus `extra`.
    pub fn tcp(&self, extra: &str) -> String {
        format!("host=127.0.0.1 port={} dbname=dss {extra}", self.port)
    }

    /// A Unix-socket conninfo for database `dss` as the superuser.
    pub fn socket(&self, extra: &str) -> String {
        format!(
            "host={} port={} dbname=dss user=postgres {extra}",
            self.dir.display(),
            self.port
        )
    }

    /// Owner of lock `id` in this cluster's dss.locks ("" if none).
    pub fn lock_owner(&self, id: &str) -> String {
        self.psql(
            "dss",
            &format!("SELECT owner FROM dss.locks WHERE id = {}", sql_literal(id)),
        )
    }

    /// The role of the session(s) with this application_name.
    pub fn session_user(&self, app: &str) -> String {
        self.psql(
            "postgres",
            &format!(
                "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity \
                 WHERE application_name = {}",
                sql_literal(app)
            ),
        )
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// A cluster of one test, destroyed at its end (and at exit, if it fails).
pub struct Destroy(pub PathBuf);

impl Drop for Destroy {
    fn drop(&mut self) {
        destroy(&self.0);
    }
}

/// `Handle::open` on `conninfo`, in a thread, so that a hang fails the test
/// after [`OPEN_LIMIT`] instead of hanging it. The conninfo itself must be
/// valid (Settings::new succeeds).
pub fn open(conninfo: &str) -> dss::error::Result<Handle> {
    let settings = match Settings::new(conninfo) {
        Ok(s) => s,
        // Not the conninfo: it may hold a password.
        Err(e) => panic!("Settings::new: {} ({})", e.message, e.errno()),
    };
    open_with(settings)
}

/// [`open`] with settings made by the test.
pub fn open_with(settings: Settings) -> dss::error::Result<Handle> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Handle::open(settings));
    });
    match rx.recv_timeout(OPEN_LIMIT) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("Handle::open did not return within {OPEN_LIMIT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("Handle::open panicked"),
    }
}

/// The errno and message of a `Handle::open` that must fail.
pub fn open_err(conninfo: &str) -> (i32, String) {
    match open(conninfo) {
        Ok(_) => panic!("Handle::open succeeded; expected a failure"),
        Err(e) => (e.errno(), e.message),
    }
}

/// lock + unlock through the library, each checked in `pg`'s dss.locks.
pub fn lock_round_trip(h: &Handle, pg: &Pg) {
    let id = super::uid("round-trip");
    let owner = super::uid("owner");
    ok("lock", dss::lock::lock(h, &id, &owner, 0));
    assert_eq!(pg.lock_owner(&id), owner, "the lock is in dss.locks");
    ok("unlock", dss::lock::unlock(h, &id, Some(&owner), "test"));
    assert_eq!(pg.lock_owner(&id), "", "the unlock removed it");
}

/// The value of a library call that must succeed; a failure panics with
/// its message and errno.
pub fn ok<T>(what: &str, r: dss::error::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {} ({})", e.message, e.errno()))
}

/// A throwaway certificate authority and the certificates a TLS test needs,
/// made with `openssl` (EC P-256 keys, valid two days).
pub struct Tls {
    pub dir: PathBuf,
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server presents.
    pub other_ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate for role `client_cn`.
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    /// Makes the CA, a server certificate for `localhost` and 127.0.0.1, and
    /// a client certificate for role `client_cn`, in a new directory (keys
    /// 0600; the server's owned by the server's user).
    pub fn make(prefix: &str, client_cn: &str) -> Tls {
        let dir = private_dir(prefix);
        let f = |name: &str| dir.join(name);
        let openssl = |what: &str, args: &[&str]| {
            run(what, Command::new("openssl").args(args).current_dir(&dir));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "dss-test-ca"), ("other-ca", "dss-other-ca")] {
            let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
            let subj = format!("/CN={cn}");
            let mut args = vec!["req", "-new", "-x509", "-days", "2"];
            args.extend(ec);
            args.extend([
                "-subj",
                &subj,
                "-keyout",
                &key,
                "-out",
                &crt,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl("openssl req (CA)", &args);
        }
        let sign = |name: &str, cn: &str, ext: &str| {
            let (csr, crt, key, extfile) = (
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.key"),
                format!("{name}.ext"),
            );
            std::fs::write(dir.join(&extfile), ext).unwrap();
            let subj = format!("/CN={cn}");
            let mut args = vec!["req", "-new"];
            args.extend(ec);
            args.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
            openssl("openssl req", &args);
            openssl(
                "openssl x509",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                    "-out",
                    &crt,
                ],
            );
        };
        sign(
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        sign("client", client_cn, "extendedKeyUsage=clientAuth\n");
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "other-ca.key", "server.key", "client.key"] {
            std::fs::set_permissions(f(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if is_root() {
            for file in ["server.key", "server.crt", "ca.crt"] {
                run("chown", Command::new("chown").arg("postgres").arg(f(file)));
            }
        }
        Tls {
            ca: f("ca.crt"),
            other_ca: f("other-ca.crt"),
            server_crt: f("server.crt"),
            server_key: f("server.key"),
            client_crt: f("client.crt"),
            client_key: f("client.key"),
            dir,
        }
    }

    /// Server settings (`-c ...`) for TLS with these certificates.
    pub fn server_settings(&self) -> String {
        format!(
            "-c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}' -c ssl_ca_file='{}'",
            self.server_crt.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }
}

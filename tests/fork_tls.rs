//! fork() with TLS sessions open, through the C API as a C daemon uses it:
//! the parent opens a handle (pool of 2 TLS sessions, both live), then
//! three children in turn exit (`exit`, so atexit handlers run), use the
//! inherited handle, or `dss_fini` it. After each one the parent's handle
//! still works on the very same sessions: the same backend pids, no TLS
//! error and no disconnection of them in the server log. A child that wrote
//! on the parent's sessions, sent Terminate or a TLS close_notify on them,
//! or shut their sockets down would end them or make the parent's next
//! call fail ("bad record mac", "decryption failed").
//!
//! One test in this file: it forks, so nothing else may run in the process.
//! The children report by exit status only (no printing, no unwinding
//! across the fork: the body runs under catch_unwind and `_exit`s).
//!
//! The cluster (tests/common/server.rs) has TLS on (a throwaway CA),
//! accepts `postgres` over TCP only with TLS, and logs `[pid] ` before each
//! line and every disconnection; it is destroyed at the end.

mod common;

use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::server::{Destroy, Pg, Tls, sql_literal};
use common::uid;
use dss::ffi::{
    dss_fini, dss_handle, dss_init_conninfo, dss_lock, dss_lock_status, dss_lock_wait, dss_unlock,
};

/// The superuser on the Unix socket (setup, checks); over TCP only with TLS.
const PG_HBA: &str = "\
local all postgres trust
hostssl all postgres 127.0.0.1/32 trust
hostnossl all postgres 127.0.0.1/32 reject
";

/// Server log lines that mean a session of the parent was disturbed.
const BAD_LOG: [&str; 4] = [
    "SSL error",
    "could not receive data from client",
    "unexpected EOF",
    "disconnection:",
];

/// The parent's handle, shared by its threads (and inherited, at the same
/// address, by the children).
#[derive(Clone, Copy)]
struct Shared(*mut dss_handle);
// SAFETY: a dss_handle may be used by any number of threads at once.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn ptr(self) -> *mut dss_handle {
        self.0
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// The owner of lock `id`, by dss_lock_status (Err: its return code).
fn status_owner(h: *mut dss_handle, id: &CStr) -> Result<String, c_int> {
    let mut owner: *mut c_char = ptr::null_mut();
    // SAFETY: a plain C struct, all zeroes is valid.
    let mut at: libc::timeval = unsafe { std::mem::zeroed() };
    let rc = dss_lock_status(h, id.as_ptr(), &mut owner, &mut at);
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: on success, a malloc()ed NUL-terminated copy, ours to free.
    let text = unsafe { CStr::from_ptr(owner) }
        .to_string_lossy()
        .into_owned();
    unsafe { libc::free(owner.cast()) };
    Ok(text)
}

/// Backend pids of the sessions named `app`.
fn sessions(pg: &Pg, app: &str) -> Vec<i32> {
    pg.psql(
        "postgres",
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = {} ORDER BY pid",
            sql_literal(app)
        ),
    )
    .lines()
    .map(|l| l.trim().parse().unwrap())
    .collect()
}

/// Two waits at once on `held` (the parent's lock): a waiter keeps a
/// pooled session for its whole wait, so both sessions of the pool make
/// round trips. Each must time out (-ETIMEDOUT): a broken session would
/// give -ECOMM.
fn use_both_sessions(h: Shared, held: &CStr) {
    let start = Barrier::new(2);
    let rcs: Vec<c_int> = std::thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    dss_lock_wait(
                        h.ptr(),
                        held.as_ptr(),
                        c"waiter".as_ptr(),
                        0,
                        300,
                        ptr::null_mut(),
                    )
                })
            })
            .collect();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        rcs,
        [-libc::ETIMEDOUT, -libc::ETIMEDOUT],
        "both waits ran to their timeout"
    );
}

/// Runs `body` in a child process, which ends with `_exit(body's code)`
/// (1 on a panic); returns the child's pid.
fn spawn_child(body: impl FnOnce() -> c_int) -> libc::pid_t {
    // SAFETY: the child only runs `body` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // Nothing printed by the child: a panic is reported by status.
        std::panic::set_hook(Box::new(|_| {}));
        let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(1);
        // SAFETY: leaves at once, running nothing inherited.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits (at most 60 s) for child `pid`; its exit code (panics if it was
/// killed by a signal or hung).
fn wait_child(what: &str, pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            assert!(
                libc::WIFEXITED(status),
                "{what}: the child did not exit (status {status:#x})"
            );
            return libc::WEXITSTATUS(status);
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("{what}: the child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the parent checks after each child.
struct Parent<'a> {
    pg: &'a Pg,
    app: &'a str,
    h: Shared,
    held: &'a CStr,
    /// Backend pids of the parent's two sessions, before any fork.
    pids: Vec<i32>,
    /// Length of the server log before the first fork.
    log_from: usize,
}

impl Parent<'_> {
    fn still_works(&self, after: &str) {
        // Every pooled session makes round trips, then one at a time.
        use_both_sessions(self.h, self.held);
        assert_eq!(
            status_owner(self.h.ptr(), self.held),
            Ok("parent".to_string()),
            "after {after}: the parent's lock"
        );
        for _ in 0..3 {
            let id = cstr(&uid("fork-tls-parent"));
            assert_eq!(dss_lock(self.h.ptr(), id.as_ptr(), c"p".as_ptr()), 0);
            assert_eq!(dss_unlock(self.h.ptr(), id.as_ptr(), c"p".as_ptr()), 0);
        }

        // The same sessions: none closed or replaced. A child's own
        // sessions (same application_name) end once it has exited.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = sessions(self.pg, self.app);
            for pid in &self.pids {
                assert!(
                    now.contains(pid),
                    "after {after}: session {pid} of the parent is gone: {now:?} (was {:?})",
                    self.pids
                );
            }
            if now == self.pids {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: sessions {now:?}, the parent's are {:?}",
                self.pids
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let log = self.pg.log();
        let bad: Vec<&str> = log
            .get(self.log_from..)
            .unwrap_or("")
            .lines()
            .filter(|l| {
                self.pids.iter().any(|p| l.starts_with(&format!("[{p}] ")))
                    && BAD_LOG.iter().any(|m| l.contains(m))
            })
            .collect();
        // For the record: how the children's own TCP sessions ended.
        let children: Vec<&str> = log
            .get(self.log_from..)
            .unwrap_or("")
            .lines()
            .filter(|l| {
                BAD_LOG.iter().any(|m| l.contains(m))
                    && !l.contains("host=[local]")
                    && !bad.contains(l)
            })
            .collect();
        eprintln!(
            "after {after}: log lines of other TCP sessions since the first fork:\n  {}",
            children.join("\n  ")
        );
        assert!(
            bad.is_empty(),
            "after {after}: the server log shows the parent's sessions disturbed:\n{}",
            bad.join("\n")
        );
        eprintln!(
            "after {after}: the parent's sessions {:?} are intact",
            self.pids
        );
    }
}

#[test]
fn children_exiting_using_or_finishing_an_inherited_tls_handle_leave_the_parent_alone() {
    let tls = Tls::make("dss-ftls-ca", "postgres");
    let _ca = Destroy(tls.dir.clone());
    let pg = Pg::init(
        "dss-ftls",
        PG_HBA,
        &format!(
            "{} -c log_line_prefix='[%p] ' -c log_disconnections=on",
            tls.server_settings()
        ),
    );
    let _cleanup = Destroy(pg.dir.clone());
    assert!(
        pg.log()
            .lines()
            .any(|l| l.starts_with('[') && l.contains("] LOG:")),
        "the server log names the pid of each line"
    );

    // SAFETY: the only test of this process; no other thread reads the
    // environment now.
    unsafe { std::env::set_var("PHOBOS_DSS_pool_size", "2") };
    let app = uid("fork-tls").replace(':', "-");
    let conninfo = cstr(&format!(
        "host=localhost port={} dbname=dss user=postgres sslmode=verify-full sslrootcert={} \
         application_name={app}",
        pg.port,
        tls.ca.display()
    ));
    let mut handle = dss_handle {
        dh_conn: ptr::null_mut(),
    };
    let h = Shared(&mut handle);
    assert_eq!(dss_init_conninfo(h.ptr(), conninfo.as_ptr()), 0, "dss_init");
    let held = cstr(&uid("fork-tls-held"));
    assert_eq!(dss_lock(h.ptr(), held.as_ptr(), c"parent".as_ptr()), 0);
    use_both_sessions(h, &held);
    let pids = sessions(&pg, &app);
    assert_eq!(pids.len(), 2, "both pooled sessions are live: {pids:?}");
    assert_eq!(
        pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name = {} AND ssl",
                sql_literal(&app)
            )
        ),
        "2",
        "both sessions use TLS"
    );
    let parent = Parent {
        pg: &pg,
        app: &app,
        h,
        held: &held,
        pids,
        log_from: pg.log().len(),
    };

    // a. exit(0): atexit handlers run (OpenSSL's among them).
    let child = spawn_child(|| {
        // SAFETY: ends the child.
        unsafe { libc::exit(0) }
    });
    assert_eq!(wait_child("exit", child), 0, "the child that exits");
    parent.still_works("a child that called exit(0)");

    // b. The inherited handle, in the child: its own TLS sessions.
    let own = cstr(&uid("fork-tls-child"));
    let child = spawn_child(|| {
        if dss_lock(h.ptr(), own.as_ptr(), c"child".as_ptr()) != 0 {
            return 10;
        }
        match status_owner(h.ptr(), &own) {
            Ok(owner) if owner == "child" => {}
            Ok(_) => return 12,
            Err(_) => return 11,
        }
        if dss_unlock(h.ptr(), own.as_ptr(), c"child".as_ptr()) != 0 {
            return 13;
        }
        0
    });
    assert_eq!(
        wait_child("use", child),
        0,
        "the child using the handle (10: dss_lock, 11: dss_lock_status, \
         12: wrong owner, 13: dss_unlock failed)"
    );
    let own_text = own.to_str().unwrap();
    assert_eq!(
        pg.psql(
            "dss",
            &format!(
                "SELECT string_agg(event || ' ' || owner, ', ' ORDER BY seq) \
                 FROM dss.lock_history WHERE id = {}",
                sql_literal(own_text)
            )
        ),
        "acquire child, release child",
        "the child's calls reached the database"
    );
    assert_eq!(pg.lock_owner(own_text), "");
    parent.still_works("a child that used the inherited handle");

    // c. dss_fini on the inherited handle, in the child.
    let child = spawn_child(|| {
        dss_fini(h.ptr());
        // SAFETY: the child's copy of the parent's handle struct.
        if !unsafe { (*h.ptr()).dh_conn }.is_null() {
            return 20;
        }
        if dss_lock(h.ptr(), own.as_ptr(), c"child".as_ptr()) != -libc::EINVAL {
            return 21;
        }
        0
    });
    assert_eq!(
        wait_child("fini", child),
        0,
        "the child finishing the handle (20: dh_conn not NULL, 21: handle still usable)"
    );
    parent.still_works("a child that called dss_fini");

    assert_eq!(dss_unlock(h.ptr(), held.as_ptr(), c"parent".as_ptr()), 0);
    dss_fini(h.ptr());
    assert!(handle.dh_conn.is_null());
}

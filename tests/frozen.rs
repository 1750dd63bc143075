//! A server that stops answering: every process of the cluster stopped with
//! SIGSTOP (the kernel still accepts connections and acknowledges what is
//! sent; nothing answers). Over TCP that is the case keepalives and
//! `tcp_user_timeout` cannot catch: only the library's own deadline
//! (`call_timeout_ms`) ends a call.
//!
//! Covered: every kind of call ends with -ECOMM (the statement was sent:
//! outcome unknown) or -ETIMEDOUT (nothing was sent) within call_timeout
//! plus 1 s, `dss_lock_wait` with a 60 s timeout included, and a new
//! handle fails within its connect_timeout plus 1 s; eight threads at once
//! do too; after SIGCONT the same handle works again; and a lock whose
//! outcome was unknown either happened or did not, never half.
//!
//! One cluster of this file (tests/common/server.rs, trust for `postgres`
//! over TCP and the Unix socket), destroyed at process exit. Only its
//! processes are stopped, by pid (the postmaster from `postmaster.pid`, its
//! children from `/proc/*/stat`), and a guard ([`Frozen`]) always sends
//! SIGCONT again, also when a test fails. The tests freeze one at a time
//! ([`serial`]).

mod common;

use std::sync::{Barrier, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use common::freeze::{Frozen, signal_pending};
use common::server::{Pg, ok, open, open_with};
use common::{errno, uid};
use dss::config::Settings;
use dss::handle::Handle;
use dss::{batch, kv, lock, wait};

/// The handles' `call_timeout_ms`.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a call may take while the server is frozen.
const LIMIT: Duration = Duration::from_secs(2);
/// `connect_timeout` of the handle opened while the server is frozen.
const CONNECT_TIMEOUT_S: u64 = 2;
/// Longest the handle may take to work again after SIGCONT.
const RECOVERY: Duration = Duration::from_secs(15);

/// Trust for the superuser on the Unix socket (setup, probes) and over TCP
/// (the handles under test).
const PG_HBA: &str = "\
local all postgres trust
host all postgres 127.0.0.1/32 trust
host all frz_client 127.0.0.1/32 trust
";

fn cluster() -> &'static Pg {
    static CLUSTER: OnceLock<Pg> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let pg = Pg::init("dss-frz", PG_HBA, "");
        // A daemon's role: only a member of dss_client (the fence ends its
        // own sessions' backends, which any role may do).
        pg.psql("dss", "CREATE ROLE frz_client LOGIN IN ROLE dss_client");
        pg
    })
}

/// One freeze at a time: the tests of this file share the cluster.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- helpers

/// A handle on the cluster over TCP, with call_timeout_ms 1 s.
fn handle(app: &str, pool_size: u32) -> Handle {
    handle_as("postgres", app, pool_size)
}

fn handle_as(user: &str, app: &str, pool_size: u32) -> Handle {
    let conninfo = cluster().tcp(&format!("user={user} application_name={app}"));
    let mut settings = Settings::new(&conninfo).unwrap();
    settings.call_timeout = CALL_TIMEOUT;
    settings.pool_timeout = Duration::from_secs(2);
    settings.pool_size = pool_size;
    ok("open", open_with(settings))
}

/// A plain client on the Unix socket, to look behind the library.
fn probe() -> postgres::Client {
    postgres::Client::connect(
        &cluster().socket("application_name=frozen-probe"),
        postgres::NoTls,
    )
    .unwrap()
}

/// Backend pids of the sessions named `app`.
fn backends(app: &str) -> Vec<i32> {
    probe()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&app],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn errno_name(e: i32) -> &'static str {
    match -e {
        libc::ECOMM => "-ECOMM",
        libc::ETIMEDOUT => "-ETIMEDOUT",
        libc::ENOTCONN => "-ENOTCONN",
        libc::ENOLCK => "-ENOLCK",
        _ => "?",
    }
}

/// The errno and message of a call that must fail.
fn failure<T: std::fmt::Debug>(r: dss::error::Result<T>) -> (i32, String) {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => (e.errno(), e.message),
    }
}

/// Runs a call on the frozen server: it must fail with one of `allowed`
/// within `limit`.
fn frozen_call(what: &str, allowed: &[i32], limit: Duration, f: impl FnOnce() -> (i32, String)) {
    let t = Instant::now();
    let (rc, message) = f();
    let took = t.elapsed();
    eprintln!(
        "frozen: {what}: {} ({rc}) in {took:.2?}: {message}",
        errno_name(rc)
    );
    assert!(
        allowed.contains(&rc),
        "{what}: errno {rc}, expected one of {allowed:?}: {message}"
    );
    assert!(took <= limit, "{what} took {took:?} (limit {limit:?})");
}

/// After SIGCONT: runs `f` until it gets an answer from the server. A try
/// that fails with -ECOMM or -ETIMEDOUT (the pool still reconnecting, or
/// still known down) is made again, for at most [`RECOVERY`]; each try
/// ends within [`LIMIT`]. Returns the first answer (success or not).
fn after_resume<T>(
    what: &str,
    mut f: impl FnMut() -> dss::error::Result<T>,
) -> dss::error::Result<T> {
    let start = Instant::now();
    let mut failed = 0;
    loop {
        let t = Instant::now();
        let r = f();
        assert!(t.elapsed() <= LIMIT, "{what} took {:?}", t.elapsed());
        match r {
            Err(e) if e.errno() == -libc::ECOMM || e.errno() == -libc::ETIMEDOUT => {
                if failed == 0 {
                    eprintln!(
                        "after resume: {what}: first try {} in {:.2?}: {}",
                        errno_name(e.errno()),
                        t.elapsed(),
                        e.message
                    );
                }
                failed += 1;
                assert!(
                    start.elapsed() < RECOVERY,
                    "{what} still fails {:?} after SIGCONT ({failed} tries): {e}",
                    start.elapsed()
                );
                // Polling for the pool to reconnect.
                std::thread::sleep(Duration::from_millis(20));
            }
            r => {
                eprintln!(
                    "after resume: {what}: answered after {failed} failed tries, {:.2?}",
                    start.elapsed()
                );
                return r;
            }
        }
    }
}

/// Uses the handle from `threads` threads at once, so that the pool opens
/// several sessions and every statement used below is prepared on them.
/// `held` is a lock held by someone else: a wait on it keeps a session for
/// its whole duration, and the waits overlap.
fn warm(h: &Handle, threads: usize, held: &str) {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let start = &start;
            s.spawn(move || {
                let id = uid("warm");
                let owner = uid("warmer");
                let bucket = uid("warm-bucket");
                start.wait();
                assert_eq!(errno(wait::wait(h, held, &owner, 0, 300)), -libc::ETIMEDOUT);
                for _ in 0..5 {
                    ok("lock", lock::lock(h, &id, &owner, 0));
                    ok("status", lock::status(h, &id));
                    ok("refresh", lock::refresh(h, &id, &owner));
                    ok("unlock", lock::unlock(h, &id, Some(&owner), "warm"));
                    ok("kv set", kv::set(h, &bucket, "k", b"v", 0));
                    ok("kv get", kv::get(h, &bucket, "k"));
                }
            });
        }
    });
}

// ---------------------------------------------------------------- tests

#[test]
fn every_call_ends_within_call_timeout_while_frozen_and_the_handle_recovers() {
    let _serial = serial();
    let pg = cluster();
    let app = uid("frz-calls");
    let h = handle(&app, 8);
    let held = uid("held");
    let keeper = uid("keeper");
    ok("lock held", lock::lock(&h, &held, &keeper, 0));
    warm(&h, 4, &held);
    let sessions = backends(&app);
    eprintln!("pooled sessions before the freeze: {sessions:?}");
    assert!(sessions.len() >= 2, "several sessions: {sessions:?}");
    let bucket = uid("bucket");
    ok("kv set", kv::set(&h, &bucket, "key", b"before", 0));

    let frozen = Frozen::freeze(pg);
    let owner = uid("owner");
    let fresh = uid("fresh");
    let many = [uid("many"), uid("many"), uid("many")];
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let either = [-libc::ECOMM, -libc::ETIMEDOUT];
    frozen_call("lock of a new id", &either, LIMIT, || {
        failure(lock::lock(&h, &fresh, &owner, 0))
    });
    frozen_call("refresh of held", &either, LIMIT, || {
        failure(lock::refresh(&h, &held, &keeper))
    });
    frozen_call("unlock of held", &either, LIMIT, || {
        failure(lock::unlock(&h, &held, Some(&keeper), "frozen-test"))
    });
    frozen_call("status of held", &either, LIMIT, || {
        failure(lock::status(&h, &held))
    });
    frozen_call("forced unlock of held", &either, LIMIT, || {
        failure(lock::unlock(&h, &held, None, "frozen-test"))
    });
    frozen_call("kv set", &either, LIMIT, || {
        failure(kv::set(&h, &bucket, "key", b"during", 0))
    });
    frozen_call("kv get", &either, LIMIT, || {
        failure(kv::get(&h, &bucket, "key"))
    });
    frozen_call("lock_many of 3 ids", &either, LIMIT, || {
        failure(batch::lock_many(&h, &many, &owner, 0))
    });
    frozen_call("wait on held, timeout_ms 60000", &either, LIMIT, || {
        failure(wait::wait(&h, &held, &owner, 0, 60_000))
    });
    let conninfo = pg.tcp(&format!(
        "user=postgres application_name={} connect_timeout={CONNECT_TIMEOUT_S}",
        uid("frz-open")
    ));
    frozen_call(
        "Handle::open with connect_timeout=2",
        &[-libc::ENOTCONN, -libc::ECOMM],
        Duration::from_secs(CONNECT_TIMEOUT_S + 1),
        || failure(open(&conninfo).map(|_| ())),
    );
    drop(frozen);

    // The same handle works again.
    let id = ok(
        "lock after the resume",
        after_resume("lock of a new id", || {
            let id = uid("after");
            lock::lock(&h, &id, &owner, 0).map(|_| id)
        }),
    );
    assert_eq!(pg.lock_owner(&id), owner, "the lock is in dss.locks");
    ok(
        "unlock after the resume",
        lock::unlock(&h, &id, Some(&owner), "frozen-test"),
    );
    assert_eq!(pg.lock_owner(&id), "", "the unlock removed it");
}

#[test]
fn eight_threads_at_once_all_end_within_call_timeout_while_frozen() {
    const THREADS: usize = 8;
    let _serial = serial();
    let pg = cluster();
    let app = uid("frz-8");
    let h = handle(&app, THREADS as u32);
    let held = uid("held8");
    ok("lock held", lock::lock(&h, &held, "keeper", 0));
    warm(&h, THREADS, &held);
    eprintln!("pooled sessions before the freeze: {:?}", backends(&app));

    let frozen = Frozen::freeze(pg);
    let start = Barrier::new(THREADS);
    let results: Vec<(i32, String, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (h, start) = (&h, &start);
                s.spawn(move || {
                    let id = uid("frz8");
                    start.wait();
                    let t = Instant::now();
                    let (rc, message) = failure(lock::lock(h, &id, "o8", 0));
                    (rc, message, t.elapsed())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    drop(frozen);
    for (i, (rc, message, took)) in results.iter().enumerate() {
        eprintln!(
            "frozen: thread {i}: lock: {} in {took:.2?}: {message}",
            errno_name(*rc)
        );
        assert!(
            *rc == -libc::ECOMM || *rc == -libc::ETIMEDOUT,
            "thread {i}: errno {rc}: {message}"
        );
    }
    let longest = results.iter().map(|r| r.2).max().unwrap();
    eprintln!("frozen: longest of the {THREADS} calls: {longest:.2?}");
    assert!(
        longest <= LIMIT,
        "a call took {longest:?} (limit {LIMIT:?})"
    );

    // All eight threads work again, at once.
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (h, start) = (&h, &start);
            s.spawn(move || {
                let owner = uid("o8");
                start.wait();
                let id = ok(
                    "lock after the resume",
                    after_resume(&format!("thread {t}: lock"), || {
                        let id = uid("after8");
                        lock::lock(h, &id, &owner, 0).map(|_| id)
                    }),
                );
                ok("status", lock::status(h, &id));
                ok("unlock", lock::unlock(h, &id, Some(&owner), "frozen-test"));
            });
        }
    });
}

#[test]
fn a_lock_with_an_unknown_outcome_happened_or_not_never_half() {
    let _serial = serial();
    let pg = cluster();
    let app = uid("frz-half");
    // One session: the one the lock is sent on, with LOCK prepared.
    let h = handle(&app, 1);
    let warm_id = uid("warm-half");
    ok("lock", lock::lock(&h, &warm_id, "w", 0));
    ok("status", lock::status(&h, &warm_id));
    ok(
        "unlock",
        lock::unlock(&h, &warm_id, Some("w"), "frozen-test"),
    );
    let sessions = backends(&app);
    assert_eq!(sessions.len(), 1, "one pooled session: {sessions:?}");
    let backend = sessions[0];

    let x = uid("half");
    let owner = uid("owner");
    let frozen = Frozen::freeze(pg);
    frozen_call("lock of X", &[-libc::ECOMM], LIMIT, || {
        failure(lock::lock(&h, &x, &owner, 0))
    });
    drop(frozen);

    // The abandoned session's backend reads what was sent (the statement,
    // then the end of the session; maybe a cancel request arrives): once
    // it has ended and nothing of that name runs, the outcome is final.
    let mut c = probe();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE pid = $1), \
                        count(*) FILTER (WHERE application_name = $2 AND state = 'active' \
                                         AND pid <> pg_backend_pid()) \
                   FROM pg_stat_activity",
                &[&backend, &app],
            )
            .unwrap();
        let (abandoned, active): (i64, i64) = (row.get(0), row.get(1));
        if abandoned == 0 && active == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend {backend} still there ({abandoned}) or {active} active sessions of {app}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let locks: Vec<(String, i64)> = c
        .query("SELECT owner, token FROM dss.locks WHERE id = $1", &[&x])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let history: Vec<(String, String, i64)> = c
        .query(
            "SELECT event, owner, token FROM dss.lock_history WHERE id = $1 ORDER BY seq",
            &[&x],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let happened = match locks.as_slice() {
        [] => {
            assert!(
                history.is_empty(),
                "no lock, but a history for it: {history:?}"
            );
            false
        }
        [(holder, token)] => {
            assert_eq!(holder, &owner, "the lock is the caller's");
            assert_eq!(
                history,
                vec![("acquire".to_string(), owner.clone(), *token)],
                "exactly one acquisition, with the lock's token"
            );
            true
        }
        more => panic!("several rows for one id: {more:?}"),
    };
    eprintln!(
        "the lock sent to the frozen server {}",
        if happened {
            "happened"
        } else {
            "did not happen"
        }
    );

    // The same handle agrees with dss.locks.
    match after_resume("status of X", || lock::status(&h, &x)) {
        Ok(st) => {
            assert!(happened, "status says {st:?}, dss.locks has no row");
            assert_eq!(st.owner, owner);
            ok(
                "unlock X",
                lock::unlock(&h, &x, Some(&owner), "frozen-test"),
            );
        }
        Err(e) => {
            assert_eq!(e.errno(), -libc::ENOLCK, "{e}");
            assert!(!happened, "status says -ENOLCK, dss.locks has the lock");
        }
    }
}

#[test]
fn after_an_unknown_outcome_the_handles_next_call_reads_the_final_one() {
    let _serial = serial();
    let pg = cluster();
    let app = uid("frz-fence");
    // One session, with LOCK prepared on it, as a member of dss_client.
    let h = handle_as("frz_client", &app, 1);
    let warm_id = uid("warm-fence");
    ok("lock", lock::lock(&h, &warm_id, "w", 0));
    ok(
        "unlock",
        lock::unlock(&h, &warm_id, Some("w"), "frozen-test"),
    );
    let sessions = backends(&app);
    assert_eq!(sessions.len(), 1, "one pooled session: {sessions:?}");
    let ghost = sessions[0];

    // The lock is sent to the frozen server: -ECOMM. Then everything runs
    // again but that session's backend, which has the statement unread
    // in its socket: it would run it as soon as it resumes.
    let x = uid("fence");
    let owner = uid("owner");
    let mut frozen = Frozen::freeze(pg);
    frozen_call("lock of X", &[-libc::ECOMM], LIMIT, || {
        failure(lock::lock(&h, &x, &owner, 0))
    });
    frozen.resume_except(ghost);

    // The handle's next call ends that backend first and waits until it
    // is gone: once the stopped backend has the fence's SIGTERM pending,
    // it is let go, and it ends without running the lock (the signal is
    // handled before it reads its socket again). Only then does the status
    // answer: no lock, final. (Letting it go as soon as the fence's query
    // shows in pg_stat_activity, before its pg_terminate_backend ran, let
    // the backend run the lock first: the status then rightly said "held",
    // and the test wrongly failed.)
    let mut c = probe();
    std::thread::scope(|s| {
        let status = s.spawn(|| lock::status(&h, &x));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !signal_pending(ghost, libc::SIGTERM) {
            assert!(
                !status.is_finished(),
                "status answered while the backend with the lock was still stopped: {:?}",
                status.join().unwrap()
            );
            assert!(
                Instant::now() < deadline,
                "no session ended the stopped backend"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            !status.is_finished(),
            "status answered while the backend with the lock was still stopped: {:?}",
            status.join().unwrap()
        );
        drop(frozen);
        let answer = status.join().unwrap();
        assert_eq!(errno(answer), -libc::ENOLCK, "the lock never ran");
    });
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&ghost],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the abandoned backend is gone");
    let rows: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM dss.locks WHERE id = $1) \
                  + (SELECT count(*) FROM dss.lock_history WHERE id = $1)",
            &[&x],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 0,
        "no lock and no history for X: the statement never ran"
    );
    assert_eq!(errno(lock::status(&h, &x)), -libc::ENOLCK);
}

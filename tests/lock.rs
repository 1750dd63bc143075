//! The lock calls against a real PostgreSQL.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use common::*;
use dss::lock;

#[test]
fn lock_refresh_unlock_status_return_codes() {
    let h = handle();
    let id = uid("codes");
    lock::lock(&h, &id, "alice", 0).unwrap();
    assert_eq!(errno(lock::lock(&h, &id, "alice", 0)), -libc::EEXIST);
    assert_eq!(errno(lock::lock(&h, &id, "bob", 0)), -libc::EEXIST);

    let st = lock::status(&h, &id).unwrap();
    assert_eq!(st.owner, "alice");

    std::thread::sleep(Duration::from_millis(20)); // let the clock move
    assert_eq!(errno(lock::refresh(&h, &id, "bob")), -libc::EACCES);
    assert_eq!(lock::status(&h, &id).unwrap(), st, "EACCES changed nothing");
    lock::refresh(&h, &id, "alice").unwrap();
    let st2 = lock::status(&h, &id).unwrap();
    assert!(st2.timestamp > st.timestamp, "refresh moves the timestamp");

    assert_eq!(
        errno(lock::unlock(&h, &id, Some("bob"), "test")),
        -libc::EACCES
    );
    assert_eq!(lock::status(&h, &id).unwrap().owner, "alice");
    lock::unlock(&h, &id, Some("alice"), "test").unwrap();

    assert_eq!(
        errno(lock::unlock(&h, &id, Some("alice"), "test")),
        -libc::ENOLCK
    );
    assert_eq!(errno(lock::unlock(&h, &id, None, "test")), -libc::ENOLCK);
    assert_eq!(errno(lock::refresh(&h, &id, "alice")), -libc::ENOLCK);
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);

    lock::lock(&h, &id, "carol", 0).unwrap();
    lock::unlock(&h, &id, None, "test").unwrap();
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
}

#[test]
fn ids_and_owners_are_opaque_data() {
    let h = handle();
    let mut c = client();
    for (i, nasty) in [
        "x'); DROP TABLE dss.locks; --",
        "$$ dollar $$",
        "back\\slash \"quotes\" ; semicolon",
        "  spaces  ",
        "émoji 🔒 中文",
        "%s %n %x",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("{}{nasty}", uid("opaque"));
        let owner = format!("{nasty}{i}");
        lock::lock(&h, &id, &owner, 0).unwrap();
        assert_eq!(lock::status(&h, &id).unwrap().owner, owner);
        let row = c
            .query_one("SELECT owner FROM dss.locks WHERE id = $1", &[&id])
            .unwrap();
        assert_eq!(row.get::<_, String>(0), owner);
        lock::refresh(&h, &id, &owner).unwrap();
        lock::unlock(&h, &id, Some(&owner), "test").unwrap();
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM dss.locks", &[])
        .unwrap()
        .get(0);
    assert!(n >= 0, "the table survived");
}

#[test]
fn status_timestamp_is_the_database_clock_in_utc() {
    let h = handle();
    let id = uid("ts");
    let before = SystemTime::now();
    lock::lock(&h, &id, "o", 0).unwrap();
    let after = SystemTime::now();
    let ts = lock::status(&h, &id).unwrap().timestamp;
    // Same machine: the database clock is ours, give or take a second.
    assert!(ts + Duration::from_secs(1) >= before && ts <= after + Duration::from_secs(1));

    // A fixed instant written in a DST zone reads back exactly.
    let mut c = client();
    let id2 = uid("ts-fixed");
    c.execute("SET TimeZone = 'America/New_York'", &[]).unwrap();
    c.execute(
        "INSERT INTO dss.locks (id, owner, ts) VALUES ($1::text, 'o', '2021-07-01 12:00:00.123456+02')",
        &[&id2],
    )
    .unwrap();
    let ts = lock::status(&h, &id2).unwrap().timestamp;
    assert_eq!(
        ts.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
        Duration::from_micros(1_625_133_600_123_456)
    );
}

#[test]
fn two_racing_lockers_exactly_one_wins() {
    let a = Arc::new(handle());
    let b = Arc::new(handle());
    for round in 0..100 {
        let id = format!("{}-{round}", uid("race"));
        let barrier = Arc::new(Barrier::new(2));
        let t: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
            .into_iter()
            .map(|(h, who)| {
                let (id, barrier) = (id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    lock::lock(&h, &id, who, 0).map_err(|e| e.errno())
                })
            })
            .collect();
        let results: Vec<_> = t.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert!(results.contains(&Err(-libc::EEXIST)));
    }
}

#[test]
fn one_handle_many_threads_no_lost_update() {
    let h = Arc::new(handle());
    let id = uid("counter");
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let plain = Arc::new(std::sync::Mutex::new(0u64)); // only touched under the dss lock
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (h, id, counter, plain) = (h.clone(), id.clone(), counter.clone(), plain.clone());
            std::thread::spawn(move || {
                let me = format!("t{t}");
                for _ in 0..50 {
                    loop {
                        match lock::lock(&h, &id, &me, 0) {
                            Ok(_) => break,
                            Err(e) if e.errno() == -libc::EEXIST => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // Inside the lock: a read-modify-write that a second
                    // holder would break (try_lock would fail).
                    let mut g = plain.try_lock().expect("two holders at once");
                    *g += 1;
                    drop(g);
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    lock::unlock(&h, &id, Some(&me), "test").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*plain.lock().unwrap(), 400);
}

#[test]
fn sessions_killed_by_the_server_are_replaced_transparently() {
    let app = format!("libdss-kill-{}", std::process::id());
    let h = Arc::new(handle_named(&app));
    // Several pooled connections.
    let ids: Vec<_> = (0..4).map(|i| uid(&format!("kill{i}"))).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let h = h.clone();
            s.spawn(move || {
                for _ in 0..20 {
                    lock::lock(&h, id, "k", 0).unwrap();
                    lock::unlock(&h, id, Some("k"), "test").unwrap();
                }
            });
        }
    });
    let mut c = client();
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the handle had sessions");
    // Wait until the server has really ended them.
    loop {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        std::thread::yield_now();
    }
    // Every call succeeds: dead sessions are detected and replaced, and
    // the lock taken is really there.
    for id in &ids {
        lock::lock(&h, id, "after", 0).unwrap();
        assert_eq!(lock::status(&h, id).unwrap().owner, "after");
        lock::unlock(&h, id, Some("after"), "test").unwrap();
    }
}

#[test]
fn a_closed_connection_is_never_success() {
    // The error of a statement on a dead socket has no SQLSTATE: it must map
    // to -ECOMM (phobos returned 0 here).
    let mut victim = pg_client();
    let pid: i32 = victim.query_once("SELECT pg_backend_pid()", &[]).unwrap()[0].get(0);
    let mut c = client();
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let err = loop {
        match victim.query_once("SELECT 1", &[]) {
            Err(e) => break e,
            Ok(_) => std::thread::yield_now(),
        }
    };
    let e = dss::error::Error::from_pg("test", &err);
    assert_eq!(e.errno(), -libc::ECOMM, "{e}");
    let again = victim.query_once("SELECT 1", &[]).unwrap_err();
    assert!(again.code().is_none());
    assert_eq!(
        dss::error::Error::from_pg("test", &again).errno(),
        -libc::ECOMM
    );
}

#[test]
fn database_length_limits_are_einval() {
    let h = handle();
    let mut c = pg_client();
    let long = "x".repeat(2049);
    let e = c
        .query_once(
            "INSERT INTO dss.locks (id, owner) VALUES ($1, 'o')",
            &[&long],
        )
        .unwrap_err();
    assert_eq!(dss::error::Error::from_pg("t", &e).errno(), -libc::EINVAL);
    let e = c
        .query_once(
            "INSERT INTO dss.locks (id, owner) VALUES ($1, $2)",
            &[&uid("len"), &"o".repeat(257)],
        )
        .unwrap_err();
    assert_eq!(dss::error::Error::from_pg("t", &e).errno(), -libc::EINVAL);
    // The session is still usable after those errors.
    let one: i32 = c.query_once("SELECT 1", &[]).unwrap()[0].get(0);
    assert_eq!(one, 1);
    drop(h);
}

#[test]
fn waiting_too_long_for_a_pooled_connection_is_etimedout() {
    let mut s = dss::config::Settings::new(&conninfo()).unwrap();
    s.pool_size = 1;
    s.pool_timeout = Duration::from_millis(200);
    let h = Arc::new(dss::handle::Handle::open(s).unwrap());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let h = h.clone();
        std::thread::spawn(move || {
            h.run("hold", |_conn| {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
        })
    };
    held_rx.recv().unwrap(); // the only connection is checked out
    let id = uid("timeout");
    let t = std::time::Instant::now();
    assert_eq!(errno(lock::lock(&h, &id, "o", 0)), -libc::ETIMEDOUT);
    assert!(t.elapsed() >= Duration::from_millis(200));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    lock::lock(&h, &id, "o", 0).unwrap();
    lock::unlock(&h, &id, None, "test").unwrap();
}

#[test]
fn init_errors() {
    use dss::config::Settings;
    use dss::handle::Handle;
    let open = |c: &str| Handle::open(Settings::new(c)?).map(|_| ());
    assert_eq!(
        errno(open("host=/nonexistent/dir port=5432 dbname=dss")),
        -libc::ENOTCONN
    );
    assert_eq!(
        errno(open("host=127.0.0.1 port=1 dbname=dss")),
        -libc::ENOTCONN
    );
    let e = open("host=/nonexistent port=5 password=s3cr3tpw").unwrap_err();
    assert!(!e.message.contains("s3cr3tpw"), "{}", e.message);

    // A database without the schema, then with an old version only.
    let other = fresh_database("empty");
    let e = open(&other).unwrap_err();
    assert_eq!(e.errno(), -libc::EPROTO);
    assert!(
        e.message.contains("version 0 found")
            && e.message
                .contains(&format!("version {} expected", dss::sql::SCHEMA_VERSION)),
        "{}",
        e.message
    );
    let mut o = postgres::Client::connect(&other, postgres::NoTls).unwrap();
    o.batch_execute(
        "CREATE SCHEMA dss; CREATE TABLE dss.schema_info (version int PRIMARY KEY, description text, applied_at timestamptz);
         INSERT INTO dss.schema_info VALUES (0, 'old', now())",
    )
    .unwrap();
    assert_eq!(errno(open(&other)), -libc::EPROTO);
}

#[test]
fn init_maps_server_refusals() {
    use dss::config::Settings;
    use dss::handle::Handle;
    let open = |c: &str| Handle::open(Settings::new(c)?).map(|_| ());
    let mut c = client();
    let role = format!("limited_{}", std::process::id());
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"
    ))
    .unwrap();
    // 53300 too many connections (for this role): -EUSERS.
    let e = open(&format!("{} user={role}", conninfo())).unwrap_err();
    assert_eq!(e.errno(), -libc::EUSERS, "{e}");
    // A role that may log in but not read the schema: -EPERM, and the
    // grant that fixes it.
    c.batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .unwrap();
    let e = open(&format!("{} user={role}", conninfo())).unwrap_err();
    assert_eq!(e.errno(), -libc::EPERM, "{e}");
    assert!(e.message.contains("42501"), "{}", e.message);
    assert!(
        e.message.contains(&format!("GRANT dss_client TO {role}")),
        "{}",
        e.message
    );
    // An unknown role: the login is refused, -ENOTCONN.
    let e = open(&format!("{} user=nosuchrole_x", conninfo())).unwrap_err();
    assert_eq!(e.errno(), -libc::ENOTCONN, "{e}");
    c.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}

/// Every call finds its row through the index, whatever the table looked
/// like when the session planned it. A plan made on an empty `dss.locks`
/// is a sequential scan, kept (generic plan) until the next ANALYZE; the
/// table then grows (here 20 000 rows; in production, dead rows of lock
/// churn) and every call would read all of it. The library's sessions run
/// with `enable_seqscan = off` (`dss::sql::SESSION_SETTINGS`): counted in
/// `pg_stat_user_tables`, no call may scan the table.
#[test]
fn calls_read_by_index_even_under_a_plan_made_on_an_empty_table() {
    let db = fresh_migrated_database("seqscan");
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    c.batch_execute("ALTER TABLE dss.locks SET (autovacuum_enabled = false)")
        .unwrap();
    c.batch_execute("VACUUM ANALYZE dss.locks").unwrap();
    // The migrations scanned the table; count from here.
    c.batch_execute("SELECT pg_stat_reset_single_table_counters('dss.locks'::regclass)")
        .unwrap();
    let mut settings = dss::config::Settings::new(&db).unwrap();
    settings.pool_size = 1; // one session: the one whose plans are watched
    let h = dss::handle::Handle::open(settings).unwrap();
    let calls = |round: &str| {
        for i in 0..10 {
            let id = format!("{round}{i}");
            lock::lock(&h, &id, "o", 0).unwrap();
            assert_eq!(lock::status(&h, &id).unwrap().owner, "o");
            lock::refresh(&h, &id, "o").unwrap();
            lock::info(&h, &id).unwrap();
            lock::unlock(&h, &id, Some("o"), "").unwrap();
        }
    };
    calls("empty"); // planned on an empty table; generic plans from the 6th call
    c.batch_execute(
        "INSERT INTO dss.locks (id, owner, token) \
         SELECT 'fill' || g, 'f', g FROM generate_series(1, 20000) AS g",
    )
    .unwrap();
    calls("grown");
    // The library's session reports its counters now, not at exit.
    h.run("flush", |c| {
        c.pg.query_once("SELECT pg_stat_force_next_flush()", &[])
    })
    .unwrap();
    let row = c
        .query_one(
            "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relid = 'dss.locks'::regclass",
            &[],
        )
        .unwrap();
    let (seq, idx): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(seq, 0, "sequential scans of dss.locks ({idx} index scans)");
    assert!(idx >= 80, "{idx} index scans for 100 calls");
}

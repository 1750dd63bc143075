//! Schema 4: the history switch and retention (`dss.settings`, `dssctl
//! history prune`), tokens drawn after the id's bucket lock, and the
//! migration from a schema-3 database that is in use. Each test has a
//! database of its own: settings and the token sequence are per database.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dss::{batch, kv, lock};

fn connect(db: &str) -> postgres::Client {
    postgres::Client::connect(db, postgres::NoTls).unwrap()
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn dssctl(db: &str, args: &[&str]) -> (i32, String, String) {
    let out = dssctl_on(db, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn history_off_writes_no_rows_and_on_writes_them_again() {
    let db = fresh_migrated_database("hist_off");
    let h = server::open(&db).unwrap();
    let mut c = connect(&db);
    let t1 = lock::lock(&h, "a", "me", 0).unwrap();
    lock::unlock(&h, "a", Some("me"), "t").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM dss.lock_history"), 2);

    c.batch_execute("UPDATE dss.settings SET value = 'off' WHERE key = 'history'")
        .unwrap();
    // Every kind of row: acquire, takeover, release, force, clean, batch.
    let t2 = lock::lock(&h, "a", "me", 0).unwrap();
    lock::unlock(&h, "a", Some("me"), "t").unwrap();
    lock::lease(&h, "b", "me", 60_000).unwrap();
    c.batch_execute("UPDATE dss.locks SET expires_at = now() - interval '1 s' WHERE id = 'b'")
        .unwrap();
    let t3 = lock::lock(&h, "b", "you", 0).unwrap();
    lock::unlock(&h, "b", None, "t").unwrap();
    assert!(
        batch::lock_many(&h, &["c", "d"], "me", 0)
            .unwrap()
            .is_none()
    );
    assert_eq!(lock::clean(&h, "me", "t").unwrap(), 2);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM dss.lock_history"),
        2,
        "history off: no new rows"
    );
    assert!(t1 < t2 && t2 < t3, "tokens still increase: {t1} {t2} {t3}");

    c.batch_execute("UPDATE dss.settings SET value = 'on' WHERE key = 'history'")
        .unwrap();
    lock::lock(&h, "a", "me", 0).unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM dss.lock_history"), 3);

    for bad in [
        "UPDATE dss.settings SET value = 'maybe' WHERE key = 'history'",
        "UPDATE dss.settings SET value = 'soon' WHERE key = 'history_retention'",
        "UPDATE dss.settings SET value = '-1 day' WHERE key = 'history_retention'",
        "INSERT INTO dss.settings VALUES ('colour', 'blue')",
    ] {
        let e = c.batch_execute(bad).unwrap_err();
        let code = e.code().map(|s| s.code().to_string());
        assert!(
            matches!(code.as_deref(), Some("22023") | Some("23514")),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM dss.settings WHERE (key, value) IN \
             (('history', 'on'), ('history_retention', '30 days'))"
        ),
        2,
        "refused values change nothing"
    );
}

#[test]
fn prune_deletes_only_what_is_older_than_the_retention() {
    let db = fresh_migrated_database("hist_prune");
    let h = server::open(&db).unwrap();
    let mut c = connect(&db);
    c.batch_execute(
        "INSERT INTO dss.lock_history (at, event, id, owner, token) \
         SELECT now() - interval '40 days', 'acquire', 'old' || g, 'me', g \
           FROM generate_series(1, 25) AS g",
    )
    .unwrap();
    for _ in 0..3 {
        lock::lock(&h, "new", "me", 0).unwrap();
        lock::unlock(&h, "new", Some("me"), "t").unwrap();
    }
    let total = || count(&mut connect(&db), "SELECT count(*) FROM dss.lock_history");
    assert_eq!(total(), 31);

    let dry = lock::prune_history(&h, true, 10).unwrap();
    assert_eq!(
        (dry.retention.as_str(), dry.bounded, dry.rows),
        ("30 days", true, 25)
    );
    assert_eq!(total(), 31, "a dry run deletes nothing");

    let (rc, out, err) = dssctl(&db, &["history", "prune", "--batch", "10"]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("deleted 25 history row(s) older than '30 days'"),
        "{out}"
    );
    assert_eq!(total(), 6);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM dss.lock_history WHERE id <> 'new'"
        ),
        0
    );

    // Retention 0 keeps everything, however old.
    c.batch_execute(
        "UPDATE dss.settings SET value = '0' WHERE key = 'history_retention'; \
         UPDATE dss.lock_history SET at = now() - interval '10 years'",
    )
    .unwrap();
    let kept = lock::prune_history(&h, false, 10).unwrap();
    assert_eq!((kept.bounded, kept.rows), (false, 0));
    assert_eq!(total(), 6);
    // A lock named "prune" is still a history id.
    let (rc, out, err) = dssctl(&db, &["history", "--", "prune"]);
    assert_eq!(rc, 0, "{err}");
    assert!(!out.contains("deleted"), "{out}");
}

/// Pruning walks the table in physical order, batch after batch: old rows
/// spread over many pages between newer ones are all found, the newer ones
/// kept, and a run whose last batch is exactly full ends too.
#[test]
fn prune_walks_past_newer_rows_across_pages() {
    let db = fresh_migrated_database("hist_prune_walk");
    let h = server::open(&db).unwrap();
    let mut c = connect(&db);
    c.batch_execute(
        "INSERT INTO dss.lock_history (at, event, id, owner, token) \
         SELECT CASE WHEN g % 3 = 0 THEN now() ELSE now() - interval '40 days' END, \
                'acquire', 'walk' || g, 'me', g \
           FROM generate_series(1, 3000) AS g",
    )
    .unwrap();
    let pages = count(
        &mut c,
        "SELECT count(DISTINCT (ctid::text::point)[0])::int8 FROM dss.lock_history",
    );
    assert!(pages > 10, "the rows span {pages} pages");
    let pruned = lock::prune_history(&h, false, 50).unwrap();
    assert_eq!(pruned.rows, 2000, "2 000 old rows, in batches of 50");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM dss.lock_history WHERE token % 3 = 0"
        ),
        1000,
        "every newer row kept"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM dss.lock_history"), 1000);
}

/// The token of an acquisition is drawn after the id's bucket lock: an
/// acquisition that has to wait for it gets a token above every one drawn
/// meanwhile (with the draw first, as in schema 3's statements, it would
/// hold an older one).
#[test]
fn a_token_is_drawn_after_the_bucket_lock() {
    let db = fresh_migrated_database("hist_bucket");
    let h = std::sync::Arc::new(server::open(&db).unwrap());
    let mut blocker = connect(&db);
    let mut tx = blocker.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(7235443, hashtext('x') & 4095)",
        &[],
    )
    .unwrap();
    let taker = {
        let h = h.clone();
        std::thread::spawn(move || lock::lock(&h, "x", "me", 0))
    };
    let mut c = connect(&db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity \
          WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' \
            AND query LIKE '%pg_advisory_xact_lock%' AND query LIKE '%dss.locks%'",
    ) == 0
    {
        assert!(
            Instant::now() < deadline,
            "dss_lock never waited for the bucket"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let meanwhile: i64 = c
        .query_one("SELECT nextval('dss.lock_token_seq')", &[])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    let token = taker.join().unwrap().unwrap();
    assert!(
        token > meanwhile as u64,
        "token {token} drawn before the wait (a token {meanwhile} was drawn meanwhile)"
    );
}

fn apply(db: &str, files: &[&str]) {
    let mut c = connect(db);
    for (name, sql) in dss::sql::MIGRATIONS {
        if files.contains(name) {
            c.batch_execute(sql).unwrap();
        }
    }
}

#[test]
fn migrations_from_schema_3_keep_what_is_held() {
    let db = fresh_database("mig_from_3");
    apply(&db, &["0001_locks.sql", "0002_leases.sql", "0003_kv.sql"]);
    let mut c = connect(&db);
    // A schema-3 database in use: a lock, a lease, a waiter, kv rows, history.
    c.batch_execute(
        "SELECT dss.lock_acquire('held', 'a', 0); \
         SELECT dss.lock_acquire('leased', 'b', 600000); \
         SELECT dss.lock_acquire('gone', 'c', 0); \
         DELETE FROM dss.locks WHERE id = 'gone'; \
         INSERT INTO dss.lock_history (event, id, owner, token) \
             SELECT 'release', 'gone', 'c', token FROM dss.lock_history WHERE id = 'gone'; \
         INSERT INTO dss.lock_waiters (id, owner, until) VALUES ('held', 'w', now() + interval '1 h'); \
         INSERT INTO dss.kv (bucket, key, value, version) VALUES ('b', 'k', 'v', nextval('dss.kv_version_seq'))",
    )
    .unwrap();
    let last: i64 = c
        .query_one("SELECT max(token) FROM dss.lock_history", &[])
        .unwrap()
        .get(0);
    let history_before = count(&mut c, "SELECT count(*) FROM dss.lock_history");
    assert_eq!(
        server::open(&db).err().map(|e| e.errno()),
        Some(-libc::EPROTO),
        "a schema-3 database is refused by this library"
    );

    apply(&db, &["0004_fast_path.sql"]);
    assert_eq!(
        server::open(&db).err().map(|e| e.errno()),
        Some(-libc::EPROTO),
        "a schema-4 database is refused by this library"
    );
    apply(&db, &["0005_domains.sql"]);
    assert_eq!(
        server::open(&db).err().map(|e| e.errno()),
        Some(-libc::EPROTO),
        "a schema-5 database is refused by this library"
    );
    apply(&db, &["0006_shared.sql"]);
    // The queued waiter's lock now notifies on release (0006's `waited`).
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM dss.locks WHERE waited AND id = 'held'"
        ),
        1
    );
    assert_eq!(
        server::open(&db).err().map(|e| e.errno()),
        Some(-libc::EPROTO),
        "a schema-6 database is refused by this library"
    );
    apply(&db, &["0007_roles.sql"]);
    assert_eq!(
        server::open(&db).err().map(|e| e.errno()),
        Some(-libc::EPROTO),
        "a schema-7 database is refused by this library"
    );
    apply(&db, &["0008_batch_path.sql"]);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'dss' AND tablename = 'lock_history'"
        ),
        0,
        "the history has no index left"
    );
    // What was there before 0007 is granted to dss_client too.
    client_conninfo(); // creates the role
    let h = server::open(&format!("{db} user={CLIENT_ROLE}")).unwrap();
    assert_eq!(lock::status(&h, "held").unwrap().owner, "a");
    drop(h);
    let h = server::open(&db).unwrap();
    assert_eq!(lock::status(&h, "held").unwrap().owner, "a");
    assert_eq!(errno(lock::lock(&h, "held", "z", 0)), -libc::EEXIST);
    let info = lock::info(&h, "leased").unwrap();
    assert_eq!((info.owner.as_str(), info.ttl_ms), ("b", 600_000));
    assert!(info.expires_in_ms > 0);
    let again = lock::lock(&h, "gone", "d", 0).unwrap();
    assert!(
        again > last as u64,
        "new token {again} above the last one {last}"
    );
    lock::unlock(&h, "held", Some("a"), "t").unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM dss.lock_waiters WHERE owner = 'w'"
        ),
        1
    );
    assert_eq!(kv::get(&h, "b", "k").unwrap().0, b"v");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM dss.lock_history"),
        history_before + 2,
        "history kept, and written"
    );
    assert_eq!(
        count(&mut c, "SELECT max(version)::int8 FROM dss.schema_info"),
        dss::sql::SCHEMA_VERSION as i64
    );
    // The limits hold for any writer, as domains now (0005), same SQLSTATE.
    for bad in [
        format!(
            "INSERT INTO dss.locks (id, owner) VALUES ('{}', 'o')",
            "x".repeat(2049)
        ),
        "INSERT INTO dss.locks (id, owner) VALUES ('', 'o')".to_string(),
        format!(
            "INSERT INTO dss.locks (id, owner) VALUES ('i', '{}')",
            "o".repeat(257)
        ),
        "INSERT INTO dss.locks (id, owner, ttl_ms) VALUES ('i', 'o', -1)".to_string(),
        "UPDATE dss.locks SET ttl_ms = -5 WHERE id = 'leased'".to_string(),
        "INSERT INTO dss.lock_history (event, id, owner, token) VALUES ('bogus', 'i', 'o', 1)"
            .to_string(),
    ] {
        let code = c
            .batch_execute(&bad)
            .unwrap_err()
            .code()
            .map(|s| s.code().to_string());
        assert_eq!(code.as_deref(), Some("23514"), "{bad}");
    }
    let two_k = "x".repeat(2048);
    lock::lock(&h, &two_k, &"o".repeat(256), 0).unwrap();
    lock::unlock(&h, &two_k, Some(&"o".repeat(256)), "t").unwrap();
    let hist: Vec<(String, String)> = lock::history(&h, "gone", 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.owner))
        .collect();
    assert_eq!(
        hist,
        [("acquire", "d"), ("release", "c"), ("acquire", "c")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

//! Leases, fencing tokens, full status, history, cleanup and the SQL
//! fencing function, against a real PostgreSQL.
//!
//! Expiry is never waited for with a sleep: a test that needs an expired
//! lease moves its `expires_at` into the past through a plain client, which
//! is exactly what the passing of time does.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use dss::{batch, lock};

fn history_events(id: &str) -> Vec<(String, String, i64, Option<String>)> {
    client()
        .query(
            "SELECT event, owner, token, actor FROM dss.lock_history WHERE id = $1 ORDER BY seq",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[test]
fn lease_expiry_return_codes() {
    let h = handle();
    let id = uid("lease");
    assert_eq!(
        errno(lock::lease(&h, &id, "a", 0)),
        -libc::EINVAL,
        "a lease needs a ttl"
    );
    assert_eq!(
        errno(lock::lease(&h, &id, "a", lock::MAX_TTL_MS + 1)),
        -libc::EINVAL
    );
    let t1 = lock::lease(&h, &id, "a", 60_000).unwrap();
    let info = lock::info(&h, &id).unwrap();
    assert_eq!(
        (info.owner.as_str(), info.ttl_ms, info.token),
        ("a", 60_000, t1)
    );
    assert!(
        (59_000..=60_000).contains(&info.expires_in_ms),
        "{}",
        info.expires_in_ms
    );
    assert_eq!(info.locked_at, info.refreshed_at);
    assert_eq!(errno(lock::lease(&h, &id, "b", 1000)), -libc::EEXIST);
    lock::refresh(&h, &id, "a").unwrap();
    let refreshed = lock::info(&h, &id).unwrap();
    assert_eq!(refreshed.token, t1, "refresh keeps the token");
    assert!(refreshed.refreshed_at > info.refreshed_at);
    assert_eq!(refreshed.locked_at, info.locked_at);

    // Expired, nobody took it: the holder learns it lost it; for everyone
    // else it is absent.
    expire_lease(&id);
    assert_eq!(errno(lock::refresh(&h, &id, "a")), -libc::ETIME);
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
    assert_eq!(errno(lock::info(&h, &id)), -libc::ENOLCK);
    assert_eq!(errno(lock::refresh(&h, &id, "b")), -libc::ENOLCK);
    assert_eq!(errno(lock::unlock(&h, &id, Some("b"), "t")), -libc::ENOLCK);
    assert_eq!(errno(lock::check(&h, &id, t1)), -libc::ESTALE);

    // Someone else takes it over: the old holder gets EACCES.
    let t2 = lock::lease(&h, &id, "b", 60_000).unwrap();
    assert!(t2 > t1);
    assert_eq!(errno(lock::refresh(&h, &id, "a")), -libc::EACCES);
    assert_eq!(errno(lock::unlock(&h, &id, Some("a"), "t")), -libc::EACCES);
    assert_eq!(errno(lock::check(&h, &id, t1)), -libc::ESTALE);
    lock::check(&h, &id, t2).unwrap();
    assert_eq!(errno(lock::check(&h, &id, u64::MAX)), -libc::ESTALE);

    // Unlocking one's own expired lease: ETIME, and the entry is gone.
    expire_lease(&id);
    assert_eq!(errno(lock::unlock(&h, &id, Some("b"), "t")), -libc::ETIME);
    assert_eq!(errno(lock::unlock(&h, &id, Some("b"), "t")), -libc::ENOLCK);

    // A plain dss_lock takes over an expired lease and never expires.
    lock::lease(&h, &id, "c", 1000).unwrap();
    expire_lease(&id);
    let t3 = lock::lock(&h, &id, "d", 0).unwrap();
    let info = lock::info(&h, &id).unwrap();
    assert_eq!((info.ttl_ms, info.expires_in_ms, info.token), (0, -1, t3));
    // A forced release of an expired lease reads as absent.
    lock::unlock(&h, &id, None, "t").unwrap();
    lock::lease(&h, &id, "e", 1000).unwrap();
    expire_lease(&id);
    assert_eq!(errno(lock::unlock(&h, &id, None, "t")), -libc::ENOLCK);
    assert!(
        client()
            .query_opt("SELECT 1 FROM dss.locks WHERE id = $1", &[&id])
            .unwrap()
            .is_none()
    );

    let events: Vec<_> = history_events(&id)
        .into_iter()
        .map(|(e, o, _, _)| format!("{e}:{o}"))
        .collect();
    assert_eq!(
        events,
        [
            "acquire:a",
            "takeover:b",
            "release:b",
            "acquire:c",
            "takeover:d",
            "force_release:d",
            "acquire:e",
            "force_release:e"
        ],
        "refreshes are not recorded"
    );
}

#[test]
fn many_racers_for_an_expired_lease_exactly_one_wins() {
    let h = Arc::new(handle());
    for round in 0..20 {
        let id = uid("race");
        lock::lease(&h, &id, "old", 1000).unwrap();
        expire_lease(&id);
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let winners: Vec<_> = (0..n)
            .map(|i| {
                let (h, id, barrier) = (h.clone(), id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let me = format!("racer{i}");
                    let r = if i % 2 == 0 {
                        lock::lease(&h, &id, &me, 60_000)
                    } else {
                        lock::lock(&h, &id, &me, 0)
                    };
                    match r {
                        Ok(t) => Some((me, t)),
                        Err(e) => {
                            assert_eq!(e.errno(), -libc::EEXIST, "{}", e.message);
                            None
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let info = lock::info(&h, &id).unwrap();
        assert_eq!((info.owner.clone(), info.token), winners[0].clone());
        let takeovers = history_events(&id)
            .iter()
            .filter(|e| e.0 == "takeover")
            .count();
        assert_eq!(takeovers, 1);
    }
}

#[test]
fn tokens_increase_under_contention() {
    let h = Arc::new(handle());
    let id = uid("tokens");
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (h, id) = (h.clone(), id.clone());
            std::thread::spawn(move || {
                let me = format!("t{i}");
                let mut got = Vec::new();
                while got.len() < 30 {
                    if let Ok(t) = lock::lease(&h, &id, &me, 60_000) {
                        lock::check(&h, &id, t).unwrap();
                        got.push(t);
                        lock::unlock(&h, &id, Some(&me), "t").unwrap();
                    }
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    // The order of acquisitions is the order of the history; tokens must
    // increase along it.
    let by_history: Vec<u64> = history_events(&id)
        .iter()
        .filter(|e| e.0 == "acquire")
        .map(|e| e.2 as u64)
        .collect();
    assert_eq!(by_history.len(), 180);
    assert!(
        by_history.windows(2).all(|w| w[0] < w[1]),
        "tokens not increasing in acquisition order"
    );
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 180, "every acquisition has its own token");
}

#[test]
fn lock_many_is_all_or_nothing() {
    let h = handle();
    let ids: Vec<String> = (0..5).map(|i| uid(&format!("many{i}"))).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    lock::lock(&h, refs[3], "other", 0).unwrap();
    let conflict = batch::lock_many(&h, &refs, "me", 0).unwrap().unwrap();
    assert_eq!(conflict.index, 3);
    assert_eq!(conflict.holder.as_deref(), Some("other"));
    assert_eq!(conflict.error().errno(), -libc::EEXIST);
    assert!(conflict.error().message.contains("other"));
    for (i, id) in refs.iter().enumerate() {
        if i != 3 {
            assert_eq!(errno(lock::status(&h, id)), -libc::ENOLCK, "nothing held");
        }
    }
    // Duplicates are refused before anything is sent.
    let dup = [refs[0], refs[1], refs[0]];
    assert_eq!(errno(batch::lock_many(&h, &dup, "me", 0)), -libc::EINVAL);
    assert_eq!(errno(batch::unlock_many(&h, &dup, "me")), -libc::EINVAL);

    // An expired lease in the batch is taken over.
    lock::unlock(&h, refs[3], None, "t").unwrap();
    lock::lease(&h, refs[3], "other", 1000).unwrap();
    expire_lease(refs[3]);
    assert!(batch::lock_many(&h, &refs, "me", 30_000).unwrap().is_none());
    for id in &refs {
        let info = lock::info(&h, id).unwrap();
        assert_eq!((info.owner.as_str(), info.ttl_ms), ("me", 30_000));
    }
    batch::refresh_many(&h, &refs, "me").unwrap();

    // Unlock/refresh many: as much as possible, first error returned.
    lock::unlock(&h, refs[1], Some("me"), "t").unwrap();
    lock::unlock(&h, refs[4], Some("me"), "t").unwrap();
    lock::lock(&h, refs[4], "other", 0).unwrap();
    assert_eq!(errno(batch::refresh_many(&h, &refs, "me")), -libc::ENOLCK);
    let e = batch::unlock_many(&h, &refs, "me").unwrap_err();
    assert_eq!(e.errno(), -libc::ENOLCK, "first failure is index 1");
    assert!(e.message.contains("index 1"), "{}", e.message);
    for id in [refs[0], refs[2], refs[3]] {
        assert_eq!(
            errno(lock::status(&h, id)),
            -libc::ENOLCK,
            "released anyway"
        );
    }
    assert_eq!(lock::status(&h, refs[4]).unwrap().owner, "other");
    assert_eq!(
        errno(batch::unlock_many(&h, &[refs[4]], "me")),
        -libc::EACCES
    );
    lock::lease(&h, refs[0], "me", 1000).unwrap();
    expire_lease(refs[0]);
    assert_eq!(
        errno(batch::refresh_many(&h, &[refs[0]], "me")),
        -libc::ETIME
    );
    assert_eq!(
        errno(batch::unlock_many(&h, &[refs[0]], "me")),
        -libc::ETIME
    );
    assert!(batch::lock_many(&h, &[], "me", 0).unwrap().is_none());
}

#[test]
fn overlapping_batches_never_deadlock_nor_both_win() {
    let h = Arc::new(handle());
    for round in 0..30 {
        let ids: Vec<String> = (0..40).map(|i| uid(&format!("ov{round}_{i}"))).collect();
        // Two batches sharing the middle ids, in opposite orders.
        let a: Vec<String> = ids[..25].to_vec();
        let mut b: Vec<String> = ids[15..].to_vec();
        b.reverse();
        let barrier = Arc::new(Barrier::new(2));
        let run = |batch_ids: Vec<String>, me: &'static str| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                let refs: Vec<&str> = batch_ids.iter().map(String::as_str).collect();
                barrier.wait();
                batch::lock_many(&h, &refs, me, 0).unwrap().is_none()
            })
        };
        let (ta, tb) = (run(a.clone(), "A"), run(b.clone(), "B"));
        let (wa, wb) = (ta.join().unwrap(), tb.join().unwrap());
        assert!(!(wa && wb), "round {round}: both batches won");
        assert!(wa || wb, "round {round}: one of two batches must win");
        let winner = if wa { (&a, "A") } else { (&b, "B") };
        let held: i64 = client()
            .query_one(
                "SELECT count(*) FROM dss.locks WHERE id = ANY($1) AND owner = $2",
                &[&ids, &winner.1],
            )
            .unwrap()
            .get(0);
        assert_eq!(held as usize, winner.0.len());
        let total: i64 = client()
            .query_one("SELECT count(*) FROM dss.locks WHERE id = ANY($1)", &[&ids])
            .unwrap()
            .get(0);
        assert_eq!(total as usize, winner.0.len(), "the loser holds nothing");
    }
}

#[test]
fn ten_thousand_ids_in_one_call() {
    let h = handle();
    let ids: Vec<String> = (0..10_000).map(|i| uid(&format!("big{i}"))).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    assert!(batch::lock_many(&h, &refs, "bulk", 0).unwrap().is_none());
    let took = t.elapsed();
    let t = std::time::Instant::now();
    batch::refresh_many(&h, &refs, "bulk").unwrap();
    let refresh_took = t.elapsed();
    let t = std::time::Instant::now();
    batch::unlock_many(&h, &refs, "bulk").unwrap();
    eprintln!(
        "10 000 ids: lock_many {took:?}, refresh_many {refresh_took:?}, unlock_many {:?}",
        t.elapsed()
    );
    let left: i64 = client()
        .query_one("SELECT count(*) FROM dss.locks WHERE id = ANY($1)", &[&ids])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // A conflict at the very end still leaves nothing held.
    lock::lock(&h, refs[9_999], "other", 0).unwrap();
    let c = batch::lock_many(&h, &refs, "bulk", 0).unwrap().unwrap();
    assert_eq!(c.index, 9_999);
    let left: i64 = client()
        .query_one("SELECT count(*) FROM dss.locks WHERE id = ANY($1)", &[&ids])
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    // More than the maximum is refused up front.
    let too_many: Vec<String> = (0..batch::MAX_BATCH + 1).map(|i| format!("x{i}")).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert_eq!(errno(batch::lock_many(&h, &refs, "bulk", 0)), -libc::EINVAL);
}

#[test]
fn clean_releases_by_owner_prefix() {
    let h = handle();
    let tag = uid("node");
    let mine: Vec<String> = (0..5).map(|i| format!("{tag}/lock{i}")).collect();
    for (i, id) in mine.iter().enumerate() {
        let owner = format!("{tag}:{}", 100 + i);
        if i == 4 {
            lock::lease(&h, id, &owner, 1000).unwrap();
            expire_lease(id);
        } else {
            lock::lock(&h, id, &owner, 0).unwrap();
        }
    }
    let other = format!("{tag}/other");
    lock::lock(&h, &other, &format!("{tag}x:1"), 0).unwrap();
    assert_eq!(errno(lock::clean(&h, "", "t")), -libc::EINVAL);
    assert_eq!(lock::clean(&h, &format!("{tag}:"), "admin:1").unwrap(), 5);
    assert_eq!(lock::clean(&h, &format!("{tag}:"), "admin:1").unwrap(), 0);
    assert_eq!(lock::status(&h, &other).unwrap().owner, format!("{tag}x:1"));
    let ev = history_events(&mine[0]);
    assert_eq!(ev.last().unwrap().0, "clean");
    assert_eq!(ev.last().unwrap().3.as_deref(), Some("admin:1"));
    // Prefixes are literal: no LIKE wildcards.
    lock::lock(&h, &format!("{tag}/w"), "a%b:1", 0).unwrap();
    assert_eq!(lock::clean(&h, "a_b", "t").unwrap(), 0);
    assert_eq!(lock::clean(&h, "a%", "t").unwrap(), 1);
}

#[test]
fn owner_self_is_host_and_pid() {
    let me = lock::owner_self();
    let (host, pid) = me.rsplit_once(':').unwrap();
    assert!(!host.is_empty());
    assert_eq!(pid, std::process::id().to_string());
}

#[test]
fn fencing_function_inside_a_real_transaction() {
    let h = handle();
    let id = uid("fence");
    let table = format!("media_{}", std::process::id());
    let mut c = client();
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, v text); \
         INSERT INTO {table} VALUES (1, 'start') ON CONFLICT DO NOTHING"
    ))
    .unwrap();
    let write = |c: &mut postgres::Client, token: u64, v: &str| -> u64 {
        c.execute(
            &format!("UPDATE {table} SET v = $1 WHERE id = 1 AND dss_lock_is_held($2, $3)"),
            &[&v, &id, &(token as i64)],
        )
        .unwrap()
    };
    let old = lock::lease(&h, &id, "writer", 60_000).unwrap();
    assert_eq!(write(&mut c, old, "first"), 1);
    expire_lease(&id);
    assert_eq!(
        write(&mut c, old, "late"),
        0,
        "an expired lease cannot write"
    );
    let new = lock::lease(&h, &id, "next", 60_000).unwrap();
    assert_eq!(write(&mut c, old, "stale"), 0, "a stale token cannot write");
    assert_eq!(write(&mut c, new, "second"), 1);

    // While the writer's transaction is open, the lock cannot change hands:
    // a forced release waits for it (here: gives up after 200 ms).
    let mut tx = c.transaction().unwrap();
    assert_eq!(
        tx.execute(
            &format!("UPDATE {table} SET v = 'in tx' WHERE id = 1 AND dss_lock_is_held($1, $2)"),
            &[&id, &(new as i64)],
        )
        .unwrap(),
        1
    );
    let mut other = client();
    other.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let e = other
        .execute("DELETE FROM dss.locks WHERE id = $1", &[&id])
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "55P03", "{e}");
    tx.commit().unwrap();
    let v: String = c
        .query_one(&format!("SELECT v FROM {table} WHERE id = 1"), &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "in tx");
    c.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}

/// Every plan node of an `EXPLAIN (ANALYZE, FORMAT JSON)` result.
fn plan_nodes<'a>(node: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    out.push(node);
    if let Some(children) = node.get("Plans").and_then(|p| p.as_array()) {
        for child in children {
            plan_nodes(child, out);
        }
    }
}

/// The batch statements stay linear whatever the statistics say. On a
/// database whose `dss.locks` was analysed while empty (a daemon's usual
/// state), the generic plan, the one a pooled session settles on after
/// five calls, once joined the locked rows back with a nested loop that
/// rescanned them for every row (1 000 ids: 10⁶ comparisons, 300 ms), and
/// read the waiter queue once per removed row. Each statement runs here on
/// 2 000 ids with that plan, and no part of it may run more than once.
#[test]
fn batch_statements_stay_linear_on_empty_statistics() {
    use dss::sql::lock as q;
    let db = fresh_migrated_database("plans");
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    c.batch_execute(
        "ANALYZE dss.locks; ANALYZE dss.lock_waiters; SET plan_cache_mode = force_generic_plan",
    )
    .unwrap();
    let h = dss::handle::Handle::open(dss::config::Settings::new(&db).unwrap()).unwrap();
    let ids: Vec<String> = (0..2_000).map(|i| format!("p{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let array = format!("'{{{}}}'", ids.join(","));
    let statements = [
        // (name, statement, parameter types, arguments, lock the ids first, held after)
        (
            "refresh_many",
            &q::REFRESH_MANY,
            "text[], text",
            format!("{array}, 'me'"),
            true,
            2_000,
        ),
        (
            "unlock_many",
            &q::UNLOCK_MANY,
            "text[], text",
            format!("{array}, 'me'"),
            false,
            0,
        ),
        (
            "clean",
            &q::CLEAN,
            "text, text",
            "'me', 'test'".to_owned(),
            true,
            0,
        ),
    ];
    for (name, stmt, types, args, lock_first, held_after) in statements {
        if lock_first {
            assert!(batch::lock_many(&h, &refs, "me", 60_000).unwrap().is_none());
        }
        c.batch_execute(&format!("PREPARE s ({types}) AS {}", stmt.text))
            .unwrap();
        let out = c
            .simple_query(&format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE s ({args})"
            ))
            .unwrap();
        let json = out
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut nodes = Vec::new();
        plan_nodes(&plan[0]["Plan"], &mut nodes);
        assert!(nodes.len() > 5, "{name}: {json}");
        for n in nodes {
            let kind = n["Node Type"].as_str().unwrap();
            let loops = n["Actual Loops"].as_u64().unwrap();
            if matches!(kind, "CTE Scan" | "Function Scan")
                || n.get("Relation Name").and_then(|r| r.as_str()) == Some("lock_waiters")
            {
                assert!(loops <= 1, "{name}: {kind} runs {loops} times: {json}");
            }
            let removed = n
                .get("Rows Removed by Join Filter")
                .and_then(|r| r.as_u64())
                .unwrap_or(0);
            assert!(
                removed <= 2_000,
                "{name}: join filter removed {removed} rows: {json}"
            );
        }
        c.batch_execute("DEALLOCATE s").unwrap();
        let held: i64 = c
            .query_one("SELECT count(*) FROM dss.locks WHERE owner = 'me'", &[])
            .unwrap()
            .get(0);
        assert_eq!(held, held_after, "{name} did its work");
    }
}

//! dss_lock_wait against a real PostgreSQL: timeouts, wake-ups, fairness.

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use dss::{lock, wait};

#[test]
fn free_lock_is_taken_at_once_and_held_one_times_out() {
    let h = handle();
    let id = uid("wfree");
    let t = wait::wait(&h, &id, "a", 0, 1000).unwrap();
    assert_eq!(lock::info(&h, &id).unwrap().token, t);
    let start = Instant::now();
    assert_eq!(errno(wait::wait(&h, &id, "b", 0, 300)), -libc::ETIMEDOUT);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1300), "{took:?}");
    assert_eq!(errno(wait::wait(&h, &id, "b", 0, 0)), -libc::ETIMEDOUT);
    assert_eq!(lock::status(&h, &id).unwrap().owner, "a", "unchanged");
    // Nobody is left queued, and the connection went back clean.
    let queued: i64 = client()
        .query_one(
            "SELECT count(*) FROM dss.lock_waiters WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    assert_eq!(
        errno(wait::wait(&h, &id, "b", lock::MAX_TTL_MS + 1, 10)),
        -libc::EINVAL
    );
}

#[test]
fn a_release_wakes_the_waiter_quickly() {
    let h = Arc::new(handle());
    let mut latencies = Vec::new();
    for _ in 0..15 {
        let id = uid("wwake");
        lock::lock(&h, &id, "holder", 0).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (h, id) = (h.clone(), id.clone());
            std::thread::spawn(move || {
                let t = wait::wait(&h, &id, "waiter", 5000, 30_000).unwrap();
                tx.send(Instant::now()).unwrap();
                t
            })
        };
        until_queued(&id, 1);
        let released = Instant::now();
        lock::unlock(&h, &id, Some("holder"), "t").unwrap();
        let got = rx.recv().unwrap();
        let token = waiter.join().unwrap();
        latencies.push(got - released);
        let info = lock::info(&h, &id).unwrap();
        assert_eq!(
            (info.owner.as_str(), info.token, info.ttl_ms),
            ("waiter", token, 5000)
        );
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "wake-up after release: median {median:?}, max {:?}",
        latencies.last().unwrap()
    );
    // The fallback poll starts at 200 ms: a median below it means the
    // notification did the work.
    assert!(median < Duration::from_millis(150), "median {median:?}");
}

/// Every way of releasing a lock wakes its queued waiter, and by a
/// notification (the fallback poll would wake it too, later: a listener on
/// the id's channel tells the two apart): unlock, forced unlock, clean, and
/// unlock_many (whose batch also holds ids nobody waits for).
#[test]
fn every_kind_of_release_notifies_the_waiter() {
    let h = Arc::new(handle());
    for kind in ["unlock", "forced", "clean", "unlock_many"] {
        let id = uid("wkind");
        let owner = uid("node");
        let others = [uid("wkind-other"), uid("wkind-other")];
        let mut listener = pg_client();
        let channel: String = listener
            .query_once("SELECT 'dss_' || md5($1)", &[&id])
            .unwrap()[0]
            .get(0);
        listener
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .unwrap();
        lock::lock(&h, &id, &format!("{owner}:1"), 0).unwrap();
        for other in &others {
            lock::lock(&h, other, &format!("{owner}:1"), 0).unwrap();
        }
        let waiter = {
            let (h, id) = (h.clone(), id.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                wait::wait(&h, &id, "w", 0, 30_000).unwrap();
                start.elapsed()
            })
        };
        until_queued(&id, 1);
        assert!(!listener.wait_notification(Duration::ZERO).unwrap());
        let owner1 = format!("{owner}:1");
        match kind {
            "unlock" => lock::unlock(&h, &id, Some(&owner1), "").unwrap(),
            "forced" => lock::unlock(&h, &id, None, "admin").unwrap(),
            "clean" => assert_eq!(lock::clean(&h, &format!("{owner}:"), "admin").unwrap(), 3),
            _ => dss::batch::unlock_many(&h, &[&others[0], &id, &others[1]], &owner1).unwrap(),
        }
        assert!(
            listener.wait_notification(Duration::from_secs(5)).unwrap(),
            "{kind}: no notification"
        );
        let took = waiter.join().unwrap();
        assert!(took < Duration::from_secs(5), "{kind}: {took:?}");
        assert_eq!(lock::status(&h, &id).unwrap().owner, "w", "{kind}");
        lock::unlock(&h, &id, Some("w"), "").unwrap();
        for other in &others {
            let _ = lock::unlock(&h, other, Some(&owner1), "");
        }
    }
}

#[test]
fn the_end_of_a_lease_wakes_the_waiter() {
    let h = handle();
    let id = uid("wlease");
    lock::lease(&h, &id, "sleepy", 700).unwrap();
    let start = Instant::now();
    wait::wait(&h, &id, "next", 0, 10_000).unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(lock::status(&h, &id).unwrap().owner, "next");
}

#[test]
fn waiters_are_served_in_arrival_order_one_per_release() {
    let h = Arc::new(handle());
    let id = uid("wfifo");
    lock::lock(&h, &id, "holder", 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let (h2, id2, tx) = (h.clone(), id.clone(), tx.clone());
        waiters.push(std::thread::spawn(move || {
            let me = format!("w{i}");
            wait::wait(&h2, &id2, &me, 0, 60_000).unwrap();
            tx.send(me).unwrap();
        }));
        until_queued(&id, i + 1);
    }
    let mut order = Vec::new();
    let mut holder = "holder".to_string();
    for _ in 0..4 {
        lock::unlock(&h, &id, Some(&holder), "t").unwrap();
        holder = rx.recv().unwrap();
        // Exactly one got in: the lock is the new holder's, nobody else
        // reported success.
        assert_eq!(lock::status(&h, &id).unwrap().owner, holder);
        assert!(rx.try_recv().is_err(), "two waiters got in on one release");
        order.push(holder.clone());
    }
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(order, ["w0", "w1", "w2", "w3"]);
}

#[test]
fn a_long_wait_costs_a_handful_of_queries() {
    let h = handle();
    let id = uid("wquiet");
    lock::lock(&h, &id, "holder", 0).unwrap();
    let before = dss::pool::round_trips();
    let start = Instant::now();
    assert_eq!(errno(wait::wait(&h, &id, "w", 0, 10_000)), -libc::ETIMEDOUT);
    let took = start.elapsed();
    let trips = dss::pool::round_trips() - before;
    eprintln!("a {took:?} wait made {trips} round trips");
    assert!(took >= Duration::from_secs(10));
    // Attempts at 0, 0.2, 0.6, 1.4, 3.0, 6.2 and 10 s, LISTEN, leaving the
    // queue, UNLISTEN, and the first preparation of each statement.
    assert!(trips <= 15, "{trips} round trips for one 10 s wait");
}

/// A holder that took the id without the waiter seeing it happen (here a
/// release and a new holder committed at once, behind the library's back):
/// the waiter's next attempt marks the new holder's row, whose release then
/// notifies. Without the mark, that release would send nothing and the
/// waiter would sleep until its next poll.
#[test]
fn a_waiter_marks_every_new_holder() {
    let h = Arc::new(handle());
    let id = uid("wmark");
    lock::lock(&h, &id, "a", 0).unwrap();
    let waiter = {
        let (h, id) = (h.clone(), id.clone());
        std::thread::spawn(move || wait::wait(&h, &id, "w", 0, 30_000).unwrap())
    };
    until_queued(&id, 1);
    let mut c = client();
    c.batch_execute("BEGIN").unwrap();
    c.execute("DELETE FROM dss.locks WHERE id = $1", &[&id])
        .unwrap();
    c.execute(
        "INSERT INTO dss.locks (id, owner, token) VALUES ($1::text, 'b', nextval('dss.lock_token_seq'))",
        &[&id],
    )
    .unwrap();
    c.batch_execute("COMMIT").unwrap();
    // The waiter's poll finds 'b' and marks its row.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marked: bool = c
            .query_one(
                "SELECT waited FROM dss.locks WHERE id = $1 AND owner = 'b'",
                &[&id],
            )
            .unwrap()
            .get(0);
        if marked {
            break;
        }
        assert!(Instant::now() < deadline, "the new holder was never marked");
        std::thread::yield_now();
    }
    let mut listener = pg_client();
    let channel: String = listener
        .query_once("SELECT 'dss_' || md5($1)", &[&id])
        .unwrap()[0]
        .get(0);
    listener
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .unwrap();
    lock::unlock(&h, &id, Some("b"), "").unwrap();
    assert!(
        listener.wait_notification(Duration::from_secs(5)).unwrap(),
        "the release of the new holder did not notify"
    );
    let token = waiter.join().unwrap();
    assert_eq!(lock::info(&h, &id).unwrap().token, token);
    lock::unlock(&h, &id, Some("w"), "").unwrap();
}

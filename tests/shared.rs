//! Shared locks, downgrade and semaphores against a real PostgreSQL.

mod common;

use std::sync::Arc;

use common::*;
use dss::shared::{self, MODE_EXCLUSIVE, MODE_SEMAPHORE, MODE_SHARED};
use dss::{batch, lock, wait};

/// Makes every shared lease of `id` expired, as time would.
fn expire_shares(id: &str) {
    let mut c = client();
    c.execute(
        "UPDATE dss.lock_shares SET expires_at = now() - interval '1 ms' \
         WHERE id = $1 AND expires_at IS NOT NULL",
        &[&id],
    )
    .unwrap();
    c.execute(
        "UPDATE dss.locks SET expires_at = now() - interval '1 ms' \
         WHERE id = $1 AND owner IS NULL AND expires_at IS NOT NULL",
        &[&id],
    )
    .unwrap();
}

fn owners(holders: &[shared::Holder]) -> Vec<(&str, i32)> {
    holders.iter().map(|h| (h.owner.as_str(), h.mode)).collect()
}

#[test]
fn readers_share_and_exclude_writers() {
    let h = handle();
    let id = uid("sh");
    let t1 = shared::lock_shared(&h, &id, "r1", 0, 0).unwrap();
    let t2 = shared::lock_shared(&h, &id, "r2", 60_000, 0).unwrap();
    assert!(t2 > t1);
    assert_eq!(
        errno(shared::lock_shared(&h, &id, "r1", 0, 0)),
        -libc::EALREADY
    );
    // The exclusive calls see the id as held.
    assert_eq!(errno(lock::lock(&h, &id, "w", 0)), -libc::EEXIST);
    assert_eq!(errno(lock::lease(&h, &id, "w", 1000)), -libc::EEXIST);
    assert_eq!(errno(wait::wait(&h, &id, "w", 0, 50)), -libc::ETIMEDOUT);
    let other = uid("sh-other");
    let conflict = batch::lock_many(&h, &[&other, &id], "w", 0).unwrap();
    assert_eq!(conflict.map(|c| c.index), Some(1));
    assert_eq!(errno(lock::status(&h, &other)), -libc::ENOLCK);
    // Exclusive-only calls: no exclusive hold here.
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
    assert_eq!(errno(lock::info(&h, &id)), -libc::ENOLCK);
    assert_eq!(errno(lock::refresh(&h, &id, "r1")), -libc::ENOLCK);
    assert_eq!(errno(lock::unlock(&h, &id, Some("r1"), "")), -libc::ENOLCK);
    assert_eq!(errno(lock::unlock(&h, &id, None, "admin")), -libc::ENOLCK);
    // Tokens of shared holders are live tokens.
    lock::check(&h, &id, t1).unwrap();
    lock::check(&h, &id, t2).unwrap();
    let hs = shared::lock_holders(&h, &id).unwrap();
    assert_eq!(owners(&hs), [("r1", MODE_SHARED), ("r2", MODE_SHARED)]);
    assert_eq!(hs[0].expires_in_ms, -1);
    assert!(hs[1].expires_in_ms > 0);
    assert_eq!((hs[0].token, hs[1].token), (t1, t2));
    shared::refresh_shared(&h, &id, "r2").unwrap();
    assert_eq!(
        errno(shared::refresh_shared(&h, &id, "nobody")),
        -libc::ENOLCK
    );
    shared::unlock_shared(&h, &id, Some("r1"), "").unwrap();
    assert_eq!(errno(lock::check(&h, &id, t1)), -libc::ESTALE);
    assert_eq!(
        errno(shared::unlock_shared(&h, &id, Some("r1"), "")),
        -libc::ENOLCK
    );
    assert_eq!(errno(lock::lock(&h, &id, "w", 0)), -libc::EEXIST);
    shared::unlock_shared(&h, &id, Some("r2"), "").unwrap();
    // The last one out frees the id.
    let tw = lock::lock(&h, &id, "w", 0).unwrap();
    assert!(tw > t2);
    assert_eq!(
        owners(&shared::lock_holders(&h, &id).unwrap()),
        [("w", MODE_EXCLUSIVE)]
    );
    assert_eq!(
        errno(shared::lock_shared(&h, &id, "r3", 0, 0)),
        -libc::EEXIST
    );
    assert_eq!(
        errno(shared::lock_shared(&h, &id, "w", 0, 0)),
        -libc::EALREADY
    );
    assert_eq!(
        errno(shared::lock_shared(&h, &id, "r3", 0, 50)),
        -libc::ETIMEDOUT
    );
    lock::unlock(&h, &id, Some("w"), "").unwrap();
    assert_eq!(errno(shared::lock_holders(&h, &id)), -libc::ENOLCK);
    let events: Vec<String> = lock::history(&h, &id, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            "release",
            "acquire",
            "shared_release",
            "shared_release",
            "shared_acquire",
            "shared_acquire"
        ]
    );
}

#[test]
fn shared_leases_end_on_their_own() {
    let h = handle();
    let id = uid("shlease");
    let t = shared::lock_shared(&h, &id, "r1", 60_000, 0).unwrap();
    expire_shares(&id);
    assert_eq!(errno(lock::check(&h, &id, t)), -libc::ESTALE);
    assert_eq!(errno(shared::lock_holders(&h, &id)), -libc::ENOLCK);
    assert_eq!(errno(shared::refresh_shared(&h, &id, "r1")), -libc::ETIME);
    // Every share ended: the exclusive path takes the id over.
    let tw = lock::lock(&h, &id, "w", 0).unwrap();
    assert!(tw > t);
    assert_eq!(
        errno(shared::unlock_shared(&h, &id, Some("r1"), "")),
        -libc::ETIME,
        "the old share is reported as expired, and removed"
    );
    assert_eq!(
        errno(shared::unlock_shared(&h, &id, Some("r1"), "")),
        -libc::ENOLCK
    );
    lock::unlock(&h, &id, Some("w"), "").unwrap();
    // One share without a lease keeps the id held whatever the others do.
    shared::lock_shared(&h, &id, "forever", 0, 0).unwrap();
    shared::lock_shared(&h, &id, "brief", 60_000, 0).unwrap();
    expire_shares(&id);
    assert_eq!(errno(lock::lock(&h, &id, "w", 0)), -libc::EEXIST);
    assert_eq!(
        owners(&shared::lock_holders(&h, &id).unwrap()),
        [("forever", MODE_SHARED)]
    );
    shared::unlock_shared(&h, &id, None, "admin").unwrap();
    assert_eq!(
        errno(shared::unlock_shared(&h, &id, None, "admin")),
        -libc::ENOLCK
    );
    lock::lock(&h, &id, "w", 0).unwrap();
    lock::unlock(&h, &id, Some("w"), "").unwrap();
}

#[test]
fn downgrade_keeps_the_id_and_lets_readers_in() {
    let h = Arc::new(handle());
    let id = uid("down");
    assert_eq!(errno(shared::downgrade(&h, &id, "w")), -libc::ENOLCK);
    let t = lock::lease(&h, &id, "w", 60_000).unwrap();
    assert_eq!(errno(shared::downgrade(&h, &id, "x")), -libc::EACCES);
    // A reader queued behind the writer joins as soon as it downgrades.
    let reader = {
        let (h, id) = (h.clone(), id.clone());
        std::thread::spawn(move || shared::lock_shared(&h, &id, "r", 0, 30_000).unwrap())
    };
    until_queued(&id, 1);
    let t2 = shared::downgrade(&h, &id, "w").unwrap();
    assert!(t2 > t);
    let tr = reader.join().unwrap();
    assert_eq!(errno(lock::check(&h, &id, t)), -libc::ESTALE);
    lock::check(&h, &id, t2).unwrap();
    let hs = shared::lock_holders(&h, &id).unwrap();
    assert_eq!(owners(&hs), [("w", MODE_SHARED), ("r", MODE_SHARED)]);
    assert!(hs[0].expires_in_ms > 0, "the lease is kept");
    assert_eq!(hs[1].token, tr);
    assert_eq!(errno(shared::downgrade(&h, &id, "w")), -libc::ENOLCK);
    shared::unlock_shared(&h, &id, Some("w"), "").unwrap();
    shared::unlock_shared(&h, &id, Some("r"), "").unwrap();
}

/// A writer queued behind readers gets in after them although readers keep
/// coming; the readers that came after it wait and then enter together.
#[test]
fn no_writer_starvation_and_readers_enter_together() {
    let h = Arc::new(handle());
    let id = uid("fair");
    shared::lock_shared(&h, &id, "r0", 0, 0).unwrap();
    let writer = {
        let (h, id) = (h.clone(), id.clone());
        std::thread::spawn(move || wait::wait(&h, &id, "w", 0, 30_000).unwrap())
    };
    until_queued(&id, 1);
    // A later reader cannot overtake the queued writer.
    assert_eq!(
        errno(shared::lock_shared(&h, &id, "late", 0, 0)),
        -libc::EEXIST
    );
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (h, id) = (h.clone(), id.clone());
            std::thread::spawn(move || {
                shared::lock_shared(&h, &id, &format!("r{}", i + 1), 0, 30_000).unwrap()
            })
        })
        .collect();
    until_queued(&id, 4);
    shared::unlock_shared(&h, &id, Some("r0"), "").unwrap();
    let tw = writer.join().unwrap();
    assert_eq!(
        owners(&shared::lock_holders(&h, &id).unwrap()),
        [("w", MODE_EXCLUSIVE)]
    );
    lock::unlock(&h, &id, Some("w"), "").unwrap();
    let tokens: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(tokens.iter().all(|&t| t > tw));
    let hs = shared::lock_holders(&h, &id).unwrap();
    assert_eq!(hs.len(), 3, "the three readers hold it together");
    shared::unlock_shared(&h, &id, None, "admin").unwrap();
}

#[test]
fn a_semaphore_counts_permits() {
    let h = handle();
    let id = uid("sem");
    for (p, c, ttl) in [(0, 2, 1000), (3, 2, 1000), (1, 0, 1000), (1, 2, 0)] {
        assert_eq!(
            errno(shared::sem_acquire(&h, &id, "a", p, c, ttl, 0)),
            -libc::EINVAL,
            "{p} of {c}, ttl {ttl}"
        );
    }
    let ta = shared::sem_acquire(&h, &id, "a", 1, 3, 60_000, 0).unwrap();
    let tb = shared::sem_acquire(&h, &id, "b", 2, 3, 60_000, 0).unwrap();
    assert!(tb > ta);
    assert_eq!(
        errno(shared::sem_acquire(&h, &id, "c", 1, 3, 60_000, 0)),
        -libc::EEXIST
    );
    assert_eq!(
        errno(shared::sem_acquire(&h, &id, "c", 1, 3, 60_000, 50)),
        -libc::ETIMEDOUT
    );
    assert_eq!(
        errno(shared::sem_acquire(&h, &id, "a", 1, 3, 60_000, 0)),
        -libc::EALREADY
    );
    assert_eq!(
        errno(shared::sem_acquire(&h, &id, "c", 1, 4, 60_000, 0)),
        -libc::EINVAL,
        "another capacity while held"
    );
    // A lock of the same name is another thing.
    lock::lock(&h, &id, "x", 0).unwrap();
    lock::unlock(&h, &id, Some("x"), "").unwrap();
    let hs = shared::sem_holders(&h, &id).unwrap();
    assert_eq!(
        hs.iter()
            .map(|h| (h.owner.as_str(), h.mode, h.permits))
            .collect::<Vec<_>>(),
        [("a", MODE_SEMAPHORE, 1), ("b", MODE_SEMAPHORE, 2)]
    );
    shared::sem_refresh(&h, &id, "a").unwrap();
    assert_eq!(errno(shared::sem_refresh(&h, &id, "z")), -libc::ENOLCK);
    shared::sem_release(&h, &id, Some("b"), "").unwrap();
    assert_eq!(
        errno(shared::sem_release(&h, &id, Some("b"), "")),
        -libc::ENOLCK
    );
    shared::sem_acquire(&h, &id, "c", 2, 3, 60_000, 0).unwrap();
    // An ended lease gives the permits back.
    client()
        .execute(
            "UPDATE dss.sem_holders SET expires_at = now() - interval '1 ms' \
             WHERE id = $1 AND owner = 'a'",
            &[&id],
        )
        .unwrap();
    assert_eq!(errno(shared::sem_refresh(&h, &id, "a")), -libc::ETIME);
    shared::sem_acquire(&h, &id, "d", 1, 3, 60_000, 0).unwrap();
    assert_eq!(
        errno(shared::sem_release(&h, &id, Some("a"), "")),
        -libc::ENOLCK
    );
    shared::sem_release(&h, &id, None, "admin").unwrap();
    assert_eq!(errno(shared::sem_holders(&h, &id)), -libc::ENOLCK);
    // No holders: a new capacity is taken.
    shared::sem_acquire(&h, &id, "e", 5, 5, 60_000, 0).unwrap();
    shared::sem_release(&h, &id, Some("e"), "").unwrap();
}

/// FIFO: a request for 2 permits queued first is not overtaken by a later
/// request for 1, although 1 would fit.
#[test]
fn semaphore_waiters_are_served_in_order() {
    let h = Arc::new(handle());
    let id = uid("semfifo");
    shared::sem_acquire(&h, &id, "a", 1, 2, 60_000, 0).unwrap();
    let big = {
        let (h, id) = (h.clone(), id.clone());
        std::thread::spawn(move || {
            shared::sem_acquire(&h, &id, "big", 2, 2, 60_000, 30_000).unwrap()
        })
    };
    until_queued(&id, 1);
    assert_eq!(
        errno(shared::sem_acquire(&h, &id, "small", 1, 2, 60_000, 0)),
        -libc::EEXIST
    );
    shared::sem_release(&h, &id, Some("a"), "").unwrap();
    big.join().unwrap();
    assert_eq!(shared::sem_holders(&h, &id).unwrap()[0].owner, "big");
    shared::sem_release(&h, &id, Some("big"), "").unwrap();
}

#[test]
fn clean_releases_shares_and_permits() {
    let h = handle();
    let (id, sem) = (uid("cl"), uid("clsem"));
    let prefix = uid("node");
    shared::lock_shared(&h, &id, &format!("{prefix}:1"), 0, 0).unwrap();
    shared::lock_shared(&h, &id, "keep", 0, 0).unwrap();
    shared::sem_acquire(&h, &sem, &format!("{prefix}:1"), 1, 2, 60_000, 0).unwrap();
    assert_eq!(lock::clean(&h, &format!("{prefix}:"), "admin").unwrap(), 2);
    assert_eq!(
        owners(&shared::lock_holders(&h, &id).unwrap()),
        [("keep", MODE_SHARED)]
    );
    assert_eq!(errno(shared::sem_holders(&h, &sem)), -libc::ENOLCK);
    shared::unlock_shared(&h, &id, Some("keep"), "").unwrap();
    lock::lock(&h, &id, "w", 0).unwrap();
    lock::unlock(&h, &id, Some("w"), "").unwrap();
}

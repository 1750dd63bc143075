//! Holds named by token, queues and cancellation (dss::token), against a
//! real PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dss::shared::{self, MODE_EXCLUSIVE, MODE_SEMAPHORE, MODE_SHARED};
use dss::token::{self, Space};
use dss::wait::{self, Request};
use dss::{error::Kind, lock};

fn until_waiters(h: &dss::handle::Handle, space: Space, id: &str, n: usize) -> Vec<token::Waiter> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = token::waiters(h, space, id).unwrap();
        if w.len() >= n {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{n} waiters never queued on {id}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn release_and_refresh_by_token() {
    let h = handle();
    let id = uid("tok");
    let t = lock::lease(&h, &id, "a", 60_000).unwrap();
    assert_eq!(
        errno(token::release(&h, Space::Lock, &id, t + 1)),
        -libc::ENOLCK
    );
    assert_eq!(errno(token::release(&h, Space::Sem, &id, t)), -libc::ENOLCK);
    assert_eq!(
        errno(token::refresh(&h, Space::Lock, &id, t, 0)),
        -libc::EINVAL
    );
    token::refresh(&h, Space::Lock, &id, t, 3_600_000).unwrap();
    let info = lock::info(&h, &id).unwrap();
    assert_eq!(info.ttl_ms, 3_600_000);
    assert!(info.expires_in_ms > 3_500_000);
    token::release(&h, Space::Lock, &id, t).unwrap();
    assert_eq!(errno(lock::status(&h, &id)), -libc::ENOLCK);
    assert_eq!(
        errno(token::release(&h, Space::Lock, &id, t)),
        -libc::ENOLCK
    );
    assert_eq!(
        lock::history(&h, &id, 1).unwrap()[0].event,
        "release",
        "recorded as the owner's release"
    );

    // Shared holds, by token.
    let s1 = shared::lock_shared(&h, &id, "r1", 60_000, 0).unwrap();
    let s2 = shared::lock_shared(&h, &id, "r2", 60_000, 0).unwrap();
    token::refresh(&h, Space::Lock, &id, s1, 1_000).unwrap();
    let hs = shared::lock_holders(&h, &id).unwrap();
    assert!(hs[0].expires_in_ms <= 1_000 && hs[1].expires_in_ms > 50_000);
    token::release(&h, Space::Lock, &id, s2).unwrap();
    assert_eq!(shared::lock_holders(&h, &id).unwrap().len(), 1);
    // The id's lease now ends with r1's shorter one.
    let end: i64 = client()
        .query_one(
            "SELECT (extract(epoch FROM expires_at - now()) * 1000)::int8 FROM dss.locks WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(end <= 1_000, "{end}");
    token::release(&h, Space::Lock, &id, s1).unwrap();
    lock::lock(&h, &id, "w", 0).unwrap();
    lock::unlock(&h, &id, Some("w"), "").unwrap();

    // Semaphore holds, by token; the lock of the same name is unrelated.
    let m = shared::sem_acquire(&h, &id, "s", 1, 2, 60_000, 0).unwrap();
    assert_eq!(
        errno(token::release(&h, Space::Lock, &id, m)),
        -libc::ENOLCK
    );
    token::refresh(&h, Space::Sem, &id, m, 5_000).unwrap();
    assert!(shared::sem_holders(&h, &id).unwrap()[0].expires_in_ms <= 5_000);
    assert!(token::count_held(&h).unwrap().1 >= 1);
    assert!(token::held(&h).unwrap().contains(&(Space::Sem, id.clone())));
    token::release(&h, Space::Sem, &id, m).unwrap();
    assert!(!token::held(&h).unwrap().contains(&(Space::Sem, id.clone())));
}

#[test]
fn queues_are_listed_in_order_and_cancelled() {
    let h = Arc::new(handle());
    let id = uid("tq");
    let t = lock::lock(&h, &id, "holder", 0).unwrap();
    assert!(
        token::held(&h)
            .unwrap()
            .contains(&(Space::Lock, id.clone()))
    );
    let tickets = Arc::new(Mutex::new(Vec::new()));
    let spawn = |owner: &'static str, request: Request, ttl_ms: u64| {
        let (h, id, tickets) = (h.clone(), id.clone(), tickets.clone());
        std::thread::spawn(move || {
            wait::acquire(&h, request, &id, owner, ttl_ms, 30_000, &|t| {
                tickets.lock().unwrap().push((owner, t))
            })
        })
    };
    let w1 = spawn("w1", Request::Exclusive, 0);
    until_waiters(&h, Space::Lock, &id, 1);
    let w2 = spawn("w2", Request::Shared, 0);
    let q = until_waiters(&h, Space::Lock, &id, 2);
    assert_eq!(
        q.iter()
            .map(|w| (w.owner.as_str(), w.mode))
            .collect::<Vec<_>>(),
        [("w1", MODE_EXCLUSIVE), ("w2", MODE_SHARED)]
    );
    assert!(q[0].ticket < q[1].ticket);
    assert!(
        q.iter()
            .all(|w| w.wait_left_ms > 20_000 && w.wait_left_ms <= 30_000)
    );
    assert!(token::waiters(&h, Space::Sem, &id).unwrap().is_empty());
    // The callbacks see the same tickets (each soon after its queueing).
    let deadline = Instant::now() + Duration::from_secs(20);
    while tickets.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the queued callbacks never came");
        std::thread::yield_now();
    }
    let seen = tickets.lock().unwrap().clone();
    assert!(seen.contains(&("w1", q[0].ticket)) && seen.contains(&("w2", q[1].ticket)));
    // Cancel the first: its call ends at once; the second stays queued.
    let start = Instant::now();
    assert_eq!(
        errno(token::cancel(&h, Space::Sem, &id, q[0].ticket)),
        -libc::ENOLCK,
        "the lock's queue, not the semaphore's"
    );
    token::cancel(&h, Space::Lock, &id, q[0].ticket).unwrap();
    let e = w1.join().unwrap().unwrap_err();
    assert_eq!((e.kind, e.errno()), (Kind::Cancelled, -libc::ECANCELED));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        errno(token::cancel(&h, Space::Lock, &id, q[0].ticket)),
        -libc::ENOLCK
    );
    assert_eq!(token::waiters(&h, Space::Lock, &id).unwrap().len(), 1);
    token::release(&h, Space::Lock, &id, t).unwrap();
    let t2 = w2.join().unwrap().unwrap();
    assert_eq!(shared::lock_holders(&h, &id).unwrap()[0].token, t2);
    token::release(&h, Space::Lock, &id, t2).unwrap();

    // A semaphore's queue.
    let m = shared::sem_acquire(&h, &id, "s1", 1, 1, 60_000, 0).unwrap();
    let s2 = spawn(
        "s2",
        Request::Sem {
            permits: 1,
            capacity: 1,
        },
        60_000,
    );
    let q = until_waiters(&h, Space::Sem, &id, 1);
    assert_eq!((q[0].owner.as_str(), q[0].mode), ("s2", MODE_SEMAPHORE));
    token::release(&h, Space::Sem, &id, m).unwrap();
    let m2 = s2.join().unwrap().unwrap();
    token::release(&h, Space::Sem, &id, m2).unwrap();
    assert_eq!(
        errno(wait::acquire(
            &h,
            Request::Sem {
                permits: 2,
                capacity: 1
            },
            &id,
            "x",
            1000,
            0,
            &|_| {}
        )),
        -libc::EINVAL
    );
}

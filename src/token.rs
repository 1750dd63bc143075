//! Holds named by their fencing token instead of their owner, the queue of
//! an id, and cancelling a queued request: what a service whose ids are
//! tokens needs (dssd, lockerd's HTTP API). The statements are in
//! `sql/token.rs`.

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock::{MAX_TTL_MS, no_lock};
use crate::sql::token as q;
use crate::{shared, wait};

/// Lock ids and semaphore ids are separate namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Lock,
    Sem,
}

/// One queued request (dss_lock_wait, dss_lock_shared, dss_sem_acquire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub ticket: u64,
    pub owner: String,
    /// One of `shared::MODE_*`.
    pub mode: i32,
    pub permits: u32,
    /// How long it still waits, at most.
    pub wait_left_ms: i64,
}

fn token_param(id: &str, token: u64) -> Result<i64> {
    i64::try_from(token).map_err(|_| no_lock(id))
}

/// Releases the hold of `id` whose token is `token` (exclusive, shared or,
/// in `Space::Sem`, a semaphore's). `NoLock` if there is none,
/// `LeaseExpired` if it had expired (it is removed all the same).
pub fn release(h: &Handle, space: Space, id: &str, token: u64) -> Result<()> {
    let t = token_param(id, token)?;
    match space {
        Space::Lock => {
            let expired = h.run("release", |c| {
                Ok(c.query_opt(&q::UNLOCK, &[&id, &t])?
                    .map(|row| row.get::<bool>(0)))
            })?;
            match expired {
                Some(false) => Ok(()),
                Some(true) => Err(expired_err(id, token)),
                None => match owner_of(h, &q::SHARE_OWNER, id, t)? {
                    Some(owner) => shared::unlock_shared(h, id, Some(&owner), ""),
                    None => Err(no_hold(id, token)),
                },
            }
        }
        Space::Sem => match owner_of(h, &q::SEM_OWNER, id, t)? {
            Some(owner) => shared::sem_release(h, id, Some(&owner), ""),
            None => Err(no_hold(id, token)),
        },
    }
}

/// Sets the lease of the live hold of `id` with `token` to `ttl_ms` (1 to
/// ten years) from now. `NoLock` / `LeaseExpired` as [`release`].
pub fn refresh(h: &Handle, space: Space, id: &str, token: u64, ttl_ms: u64) -> Result<()> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(Error::invalid(format!(
            "ttl_ms {ttl_ms} is not from 1 to {MAX_TTL_MS}"
        )));
    }
    let (t, ttl) = (token_param(id, token)?, ttl_ms as i64);
    let status: String = match space {
        Space::Lock => {
            let done = h.run("refresh", |c| {
                Ok(c.query_opt(&q::REFRESH, &[&id, &t, &ttl])?.is_some())
            })?;
            if done {
                return Ok(());
            }
            let Some(owner) = owner_of(h, &q::SHARE_OWNER, id, t)? else {
                return Err(no_hold(id, token));
            };
            h.run("refresh", |c| {
                c.query_one(
                    &crate::sql::shared::SHARED_REFRESH,
                    &[&id, &owner, &Some(ttl)],
                )
                .map(|row| row.get(0))
            })?
        }
        Space::Sem => h.run("refresh", |c| {
            c.query_one(&q::SEM_REFRESH, &[&id, &t, &ttl])
                .map(|row| row.get(0))
        })?,
    };
    match status.as_str() {
        "done" => Ok(()),
        "expired" => Err(expired_err(id, token)),
        _ => Err(no_hold(id, token)),
    }
}

fn owner_of(
    h: &Handle,
    query: &'static crate::sql::Query,
    id: &str,
    token: i64,
) -> Result<Option<String>> {
    h.run("owner of token", |c| {
        Ok(c.query_opt(query, &[&id, &token])?
            .map(|row| row.get::<String>(0)))
    })
}

fn no_hold(id: &str, token: u64) -> Error {
    Error::new(
        Kind::NoLock,
        format!("'{id}' has no hold with token {token}"),
    )
}

fn expired_err(id: &str, token: u64) -> Error {
    Error::new(
        Kind::LeaseExpired,
        format!("the lease of token {token} on '{id}' expired"),
    )
}

/// The live queued requests of `id`, in queue order (possibly none).
pub fn waiters(h: &Handle, space: Space, id: &str) -> Result<Vec<Waiter>> {
    let sem = space == Space::Sem;
    let slack = wait::QUEUE_SLACK_MS as i64;
    let rows = h.run("waiters", |c| c.query(&q::WAITERS, &[&id, &sem, &slack]))?;
    Ok(rows
        .iter()
        .map(|row| Waiter {
            ticket: row.get::<i64>(0) as u64,
            owner: row.get(1),
            mode: row.get(2),
            permits: row.get::<i32>(3) as u32,
            wait_left_ms: row.get(4),
        })
        .collect())
}

/// Cancels the queued request `ticket` of `id`: its call ends with
/// `Cancelled` (it is woken at once). `NoLock` if no such request waits.
pub fn cancel(h: &Handle, space: Space, id: &str, ticket: u64) -> Result<()> {
    let sem = space == Space::Sem;
    let t = i64::try_from(ticket).map_err(|_| no_waiter(id, ticket))?;
    let n = h
        .run("cancel", |c| c.query(&q::CANCEL, &[&id, &sem, &t]))?
        .len();
    if n == 0 {
        return Err(no_waiter(id, ticket));
    }
    Ok(())
}

fn no_waiter(id: &str, ticket: u64) -> Error {
    Error::new(
        Kind::NoLock,
        format!("no request {ticket} is queued on '{id}'"),
    )
}

/// Every id with a live hold, locks first, each kind by id.
pub fn held(h: &Handle) -> Result<Vec<(Space, String)>> {
    let rows = h.run("held", |c| c.query(&q::HELD, &[]))?;
    Ok(rows
        .iter()
        .map(|row| {
            let space = if row.get::<bool>(1) {
                Space::Sem
            } else {
                Space::Lock
            };
            (space, row.get::<String>(0))
        })
        .collect())
}

/// How many live holds there are: (lock holds, exclusive and shared;
/// semaphore holds).
pub fn count_held(h: &Handle) -> Result<(u64, u64)> {
    h.run("count held", |c| {
        c.query_one(&q::COUNT_HELD, &[])
            .map(|row| (row.get::<i64>(0) as u64, row.get::<i64>(1) as u64))
    })
}

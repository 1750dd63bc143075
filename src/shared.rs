//! Shared (reader) locks, downgrade and counting semaphores, in safe Rust.
//! The model and its SQL are in `sql/0006_shared.sql` and `sql/shared.rs`;
//! waiting (first come, first served across modes) goes through `wait.rs`
//! like `dss_lock_wait`.

use std::time::SystemTime;

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock::{no_lock, ttl_param};
use crate::pq::Row;
use crate::sql::shared as q;
use crate::wait::{Request, queue};

/// `DSS_MODE_EXCLUSIVE`: a lock held by one owner.
pub const MODE_EXCLUSIVE: i32 = 1;
/// `DSS_MODE_SHARED`: a lock held by any number of owners at once.
pub const MODE_SHARED: i32 = 2;
/// `DSS_MODE_SEMAPHORE`: some of a semaphore's permits.
pub const MODE_SEMAPHORE: i32 = 3;

/// Most permits a semaphore can have.
pub const MAX_PERMITS: u32 = i32::MAX as u32;

/// One live hold of a lock or semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    /// One of the `MODE_*`.
    pub mode: i32,
    /// 1 for locks.
    pub permits: u32,
    pub token: u64,
    pub locked_at: SystemTime,
    /// On the database clock; -1: no lease.
    pub expires_in_ms: i64,
}

fn read_holder(row: &Row) -> Holder {
    Holder {
        owner: row.get(0),
        mode: row.get(1),
        permits: row.get::<i32>(2) as u32,
        token: row.get::<i64>(3) as u64,
        locked_at: row.get(4),
        expires_in_ms: row.get(5),
    }
}

/// Holds `id` shared for `owner` (lease `ttl_ms`, 0: none), waiting up to
/// `timeout_ms` (0: one try, `Exists` if blocked; u64::MAX: forever,
/// otherwise `TimedOut`); returns the token. Blocked while an exclusive
/// holder is live or an exclusive request queued earlier. `Already` if
/// `owner` holds `id`, shared or exclusive.
pub fn lock_shared(h: &Handle, id: &str, owner: &str, ttl_ms: u64, timeout_ms: u64) -> Result<u64> {
    let ttl = ttl_param(ttl_ms)?;
    queue(
        h,
        id,
        owner,
        ttl,
        timeout_ms,
        Request::Shared,
        true,
        &|_| {},
    )?
    .ok_or_else(|| {
        not_granted(
            timeout_ms,
            format!("lock '{id}' is held exclusively, or an exclusive request is queued first"),
        )
    })
}

fn not_granted(timeout_ms: u64, why: String) -> Error {
    if timeout_ms == 0 {
        Error::new(Kind::Exists, why)
    } else {
        Error::new(
            Kind::TimedOut,
            format!("{why}: not granted within {timeout_ms} ms"),
        )
    }
}

/// A status of the release and refresh functions ('done', 'nolock',
/// 'expired') as a result.
fn status(status: &str, what: &str, id: &str, owner: Option<&str>) -> Result<()> {
    let owner = owner.unwrap_or("(any)");
    match status {
        "done" => Ok(()),
        "expired" => Err(Error::new(
            Kind::LeaseExpired,
            format!("cannot {what} '{id}': the lease of '{owner}' expired"),
        )),
        "nolock" => Err(Error::new(
            Kind::NoLock,
            format!("cannot {what} '{id}': '{owner}' holds none of it"),
        )),
        other => Err(Error::new(
            Kind::Communication,
            format!("unexpected answer '{other}' for '{id}'"),
        )),
    }
}

/// Extends `owner`'s shared lease of `id` by its ttl (or only its
/// timestamp). `NoLock` if it holds no share, `LeaseExpired` if it ended.
pub fn refresh_shared(h: &Handle, id: &str, owner: &str) -> Result<()> {
    let s: String = h.run("lock_shared_refresh", |c| {
        c.query_one(&q::SHARED_REFRESH, &[&id, &owner, &None::<i64>])
            .map(|row| row.get(0))
    })?;
    status(&s, "refresh the shared lock", id, Some(owner))
}

/// Releases `owner`'s share of `id`; with `None`, every shared holder's
/// (forced, recorded with `actor`). `NoLock` if there was none;
/// `LeaseExpired` if `owner`'s lease had ended (its row is removed).
pub fn unlock_shared(h: &Handle, id: &str, owner: Option<&str>, actor: &str) -> Result<()> {
    let s: String = h.run("unlock_shared", |c| {
        c.query_one(&q::SHARED_RELEASE, &[&id, &owner, &actor])
            .map(|row| row.get(0))
    })?;
    status(&s, "release the shared lock", id, owner)
}

/// Turns `owner`'s live exclusive hold of `id` into a shared one (same
/// lease), atomically; returns the new token. `NoLock` if `id` is not
/// held exclusively, `NotOwner` if another owner holds it.
pub fn downgrade(h: &Handle, id: &str, owner: &str) -> Result<u64> {
    let (token, why): (Option<i64>, Option<String>) = h.run("lock_downgrade", |c| {
        c.query_one(&q::DOWNGRADE, &[&id, &owner])
            .map(|row| (row.get(0), row.get(1)))
    })?;
    match (token, why.as_deref()) {
        (Some(token), _) => Ok(token as u64),
        (None, Some("notowner")) => Err(Error::new(
            Kind::NotOwner,
            format!("cannot downgrade lock '{id}': another owner than '{owner}' holds it"),
        )),
        _ => Err(Error::new(
            Kind::NoLock,
            format!("cannot downgrade lock '{id}': it is not held exclusively"),
        )),
    }
}

/// The live holders of lock `id` (one exclusive, or the shared ones), by
/// token. `NoLock` if none.
pub fn lock_holders(h: &Handle, id: &str) -> Result<Vec<Holder>> {
    let rows = h.run("lock_holders", |c| c.query(&q::LOCK_HOLDERS, &[&id]))?;
    if rows.is_empty() {
        return Err(no_lock(id));
    }
    Ok(rows.iter().map(read_holder).collect())
}

/// Takes `permits` of semaphore `id` (which has `capacity`) for `owner`,
/// with a lease of `ttl_ms` (mandatory), waiting as [`lock_shared`] does;
/// returns the token. `InvalidArgument` for 0 permits, capacity or ttl,
/// permits above the capacity, or another capacity than the semaphore's
/// while it has holders; `Already` if `owner` holds some of it.
#[allow(clippy::too_many_arguments)]
pub fn sem_acquire(
    h: &Handle,
    id: &str,
    owner: &str,
    permits: u32,
    capacity: u32,
    ttl_ms: u64,
    timeout_ms: u64,
) -> Result<u64> {
    let ttl = sem_args(permits, capacity, ttl_ms)?;
    let request = Request::Sem {
        permits: permits as i32,
        capacity: capacity as i32,
    };
    queue(h, id, owner, ttl, timeout_ms, request, true, &|_| {})?.ok_or_else(|| {
        not_granted(
            timeout_ms,
            format!("semaphore '{id}' has not {permits} free permits for '{owner}', or earlier requests wait"),
        )
    })
}

/// Checks a semaphore request's numbers; the ttl as the database
/// parameter.
pub(crate) fn sem_args(permits: u32, capacity: u32, ttl_ms: u64) -> Result<i64> {
    if capacity == 0 || capacity > MAX_PERMITS {
        return Err(Error::invalid(format!(
            "capacity {capacity} is not from 1 to {MAX_PERMITS}"
        )));
    }
    if permits == 0 || permits > capacity {
        return Err(Error::invalid(format!(
            "permits {permits} is not from 1 to the capacity {capacity}"
        )));
    }
    if ttl_ms == 0 {
        return Err(Error::invalid(
            "ttl_ms is 0 (a permit needs a lease: it would leak when its holder dies)",
        ));
    }
    ttl_param(ttl_ms)
}

/// Renews `owner`'s lease on semaphore `id` by its ttl. `NoLock` if it
/// holds none, `LeaseExpired` if the lease ended.
pub fn sem_refresh(h: &Handle, id: &str, owner: &str) -> Result<()> {
    let s: String = h.run("sem_refresh", |c| {
        c.query_one(&q::SEM_REFRESH, &[&id, &owner])
            .map(|row| row.get(0))
    })?;
    status(&s, "refresh the semaphore", id, Some(owner))
}

/// Gives back `owner`'s permits of semaphore `id`; with `None`, every
/// holder's (forced, recorded with `actor`). As [`unlock_shared`].
pub fn sem_release(h: &Handle, id: &str, owner: Option<&str>, actor: &str) -> Result<()> {
    let s: String = h.run("sem_release", |c| {
        c.query_one(&q::SEM_RELEASE, &[&id, &owner, &actor])
            .map(|row| row.get(0))
    })?;
    status(&s, "release the semaphore", id, owner)
}

/// The live holders of semaphore `id`, by token. `NoLock` if none.
pub fn sem_holders(h: &Handle, id: &str) -> Result<Vec<Holder>> {
    let rows = h.run("sem_holders", |c| c.query(&q::SEM_HOLDERS, &[&id]))?;
    if rows.is_empty() {
        return Err(Error::new(
            Kind::NoLock,
            format!("semaphore '{id}' has no holder"),
        ));
    }
    Ok(rows.iter().map(read_holder).collect())
}

/// A row of `dssctl sem list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemListed {
    pub id: String,
    pub capacity: u32,
    pub owner: String,
    pub permits: u32,
    pub token: u64,
    pub locked_at: SystemTime,
    pub refreshed_at: SystemTime,
    pub ttl_ms: u64,
    pub expires_in_ms: i64,
    pub expired: bool,
}

/// Every semaphore hold whose id starts with `id_prefix`, expired leases
/// included, by id and token.
pub fn sem_list(h: &Handle, id_prefix: &str) -> Result<Vec<SemListed>> {
    let rows = h.run("sem list", |c| c.query(&q::SEM_LIST, &[&id_prefix]))?;
    Ok(rows
        .iter()
        .map(|row| SemListed {
            id: row.get(0),
            capacity: row.get::<i32>(1) as u32,
            owner: row.get(2),
            permits: row.get::<i32>(3) as u32,
            token: row.get::<i64>(4) as u64,
            locked_at: row.get(5),
            refreshed_at: row.get(6),
            ttl_ms: row.get::<i64>(7) as u64,
            expires_in_ms: row.get(8),
            expired: row.get(9),
        })
        .collect())
}

//! The phobos DSS lock calls, in safe Rust. Arguments arrive checked (see
//! `ffi.rs`); each call is one prepared statement on a pooled connection.

use std::time::SystemTime;

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;

/// Longest lock id, in bytes (phobos's `PHO_DSS_MAX_LOCK_ID_LEN`).
pub const MAX_ID_LEN: usize = 2048;
/// Longest owner, in bytes (phobos's `PHO_DSS_MAX_LOCK_OWNER_LEN`).
pub const MAX_OWNER_LEN: usize = 256;

/// Who holds a lock, and since when (taken or last refreshed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub owner: String,
    pub timestamp: SystemTime,
}

/// Takes `id` for `owner`. `Exists` if anyone (`owner` included) holds it.
pub fn lock(h: &Handle, id: &str, owner: &str) -> Result<()> {
    let taken = h.run("dss_lock", |c| c.client.execute(&c.st.lock, &[&id, &owner]))?;
    if taken == 1 {
        Ok(())
    } else {
        Err(Error::new(
            Kind::Exists,
            format!("lock '{id}' is already held"),
        ))
    }
}

/// Sets the timestamp of `id` to now. `NoLock` if absent, `NotOwner` if
/// held by someone else (then nothing changes).
pub fn refresh(h: &Handle, id: &str, owner: &str) -> Result<()> {
    let (done, holder) = h.run("dss_lock_refresh", |c| {
        let row = c.client.query_one(&c.st.refresh, &[&id, &owner])?;
        Ok((row.get::<_, bool>(0), row.get::<_, Option<String>>(1)))
    })?;
    outcome("refresh", id, owner, done, holder)
}

/// Releases `id`. With `Some(owner)`, only if `owner` holds it (`NoLock`,
/// `NotOwner` otherwise); with `None`, whoever holds it (`NoLock` if absent).
pub fn unlock(h: &Handle, id: &str, owner: Option<&str>) -> Result<()> {
    match owner {
        Some(owner) => {
            let (done, holder) = h.run("dss_unlock", |c| {
                let row = c.client.query_one(&c.st.unlock, &[&id, &owner])?;
                Ok((row.get::<_, bool>(0), row.get::<_, Option<String>>(1)))
            })?;
            outcome("unlock", id, owner, done, holder)
        }
        None => {
            let n = h.run("dss_unlock", |c| {
                c.client.execute(&c.st.unlock_force, &[&id])
            })?;
            if n == 1 { Ok(()) } else { Err(no_lock(id)) }
        }
    }
}

/// Who holds `id` and since when. `NoLock` if absent.
pub fn status(h: &Handle, id: &str) -> Result<Status> {
    let row = h.run("dss_lock_status", |c| {
        c.client.query_opt(&c.st.status, &[&id])
    })?;
    match row {
        Some(row) => Ok(Status {
            owner: row.get(0),
            timestamp: row.get(1),
        }),
        None => Err(no_lock(id)),
    }
}

fn no_lock(id: &str) -> Error {
    Error::new(Kind::NoLock, format!("lock '{id}' does not exist"))
}

/// Reads the (done, holder) pair of REFRESH / UNLOCK. `holder` is what the
/// statement's snapshot saw: if it names the caller although nothing was
/// done, the lock went away concurrently, which is `NoLock`.
fn outcome(what: &str, id: &str, owner: &str, done: bool, holder: Option<String>) -> Result<()> {
    match holder {
        _ if done => Ok(()),
        Some(holder) if holder != owner => Err(Error::new(
            Kind::NotOwner,
            format!("cannot {what} lock '{id}': it is held by '{holder}', not '{owner}'"),
        )),
        _ => Err(no_lock(id)),
    }
}

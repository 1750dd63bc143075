//! Batches: several locks in one statement. `lock_many` is all-or-nothing;
//! `refresh_many` and `unlock_many` do as much as they can and report the
//! first failure, in the caller's order (phobos's policy).

use std::collections::HashSet;

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock::{Seen, ttl_param};
use crate::sql::lock as q;

/// Most ids in one batch call.
pub const MAX_BATCH: usize = 100_000;

/// Why `lock_many` took nothing: the first id (in the caller's order) held
/// by someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Position in the caller's array.
    pub index: usize,
    pub id: String,
    /// None if it was released in the meantime.
    pub holder: Option<String>,
}

impl Conflict {
    pub fn error(&self) -> Error {
        let holder = match &self.holder {
            Some(h) => format!("held by '{h}'"),
            None => "held by a concurrent caller".to_string(),
        };
        Error::new(
            Kind::Exists,
            format!(
                "lock '{}' (index {}) is {holder}: no lock of the batch was taken",
                self.id, self.index
            ),
        )
    }
}

/// The items of a batch (`what`: "lock id", "key") must be distinct, and
/// not too many.
pub(crate) fn distinct(items: &[&str], what: &str) -> Result<()> {
    if items.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "{} items in one batch (at most {MAX_BATCH})",
            items.len()
        )));
    }
    let mut seen = HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(*item) {
            return Err(Error::invalid(format!(
                "{what} '{item}' appears twice in the batch (index {i})"
            )));
        }
    }
    Ok(())
}

fn check(ids: &[&str]) -> Result<()> {
    distinct(ids, "lock id")
}

/// Takes every id for `owner` (lease `ttl_ms`, 0: none), or none of them:
/// Ok(None) if all were taken, Ok(Some(conflict)) if nothing was.
pub fn lock_many(h: &Handle, ids: &[&str], owner: &str, ttl_ms: u64) -> Result<Option<Conflict>> {
    let ttl = ttl_param(ttl_ms)?;
    check(ids)?;
    if ids.is_empty() {
        return Ok(None);
    }
    let row = h.run("lock_many", |c| {
        c.query_opt(&q::LOCK_MANY, &[&ids, &owner, &ttl])
    })?;
    Ok(row.map(|row| {
        let index = (row.get::<i64>(0) - 1) as usize;
        Conflict {
            index,
            id: ids[index].to_string(),
            holder: row.get(1),
        }
    }))
}

/// Refreshes every id held by `owner`; the first failure is returned.
pub fn refresh_many(h: &Handle, ids: &[&str], owner: &str) -> Result<()> {
    many(h, "refresh", &q::REFRESH_MANY, ids, owner)
}

/// Releases every id held by `owner`; the first failure is returned.
pub fn unlock_many(h: &Handle, ids: &[&str], owner: &str) -> Result<()> {
    many(h, "unlock", &q::UNLOCK_MANY, ids, owner)
}

fn many(
    h: &Handle,
    what: &str,
    query: &'static crate::sql::Query,
    ids: &[&str],
    owner: &str,
) -> Result<()> {
    check(ids)?;
    if ids.is_empty() {
        return Ok(());
    }
    let failed = h.run(what, |c| {
        c.query_opt(query, &[&ids, &owner])
            .map(|row| row.map(|row| (row.get::<i64>(0), Seen::read(&row, 1))))
    })?;
    match failed {
        None => Ok(()),
        Some((ord, seen)) => {
            let index = (ord - 1) as usize;
            seen.outcome(what, ids[index], owner).map_err(|e| {
                Error::new(
                    e.kind,
                    format!("{} (index {index}; the others were done)", e.message),
                )
            })
        }
    }
}

//! The lock calls on one id, in safe Rust: the phobos four (lock, refresh,
//! unlock, status) plus leases, fencing tokens, full status, cleanup and
//! the operator's views. Arguments arrive checked for shape (see `ffi/`);
//! each call is one prepared statement (see `sql/lock.rs`) on a pooled
//! connection. Waiting is in `wait.rs`, batches in `batch.rs`.

use std::time::SystemTime;

use crate::pq::Row;

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::pool::Conn;
use crate::sql::Query;
use crate::sql::lock as q;

/// Longest lock id, in bytes (phobos's `PHO_DSS_MAX_LOCK_ID_LEN`).
pub const MAX_ID_LEN: usize = 2048;
/// Longest owner, in bytes (phobos's `PHO_DSS_MAX_LOCK_OWNER_LEN`).
pub const MAX_OWNER_LEN: usize = 256;
/// Longest lease, in milliseconds (ten years).
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Who holds a lock, and since when (taken or last refreshed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub owner: String,
    pub timestamp: SystemTime,
}

/// Everything about a live lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub owner: String,
    pub locked_at: SystemTime,
    pub refreshed_at: SystemTime,
    /// 0: never expires.
    pub ttl_ms: u64,
    /// On the database clock; -1: never.
    pub expires_in_ms: i64,
    pub token: u64,
}

/// A row of `dssctl list`: like [`Info`], but expired leases are listed
/// too, and shared holders (one row each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub info: Info,
    pub expired: bool,
    /// `shared::MODE_EXCLUSIVE` or `shared::MODE_SHARED`.
    pub mode: i32,
}

/// A row of `dss.lock_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub at: SystemTime,
    /// acquire, takeover, release, force_release or clean.
    pub event: String,
    pub owner: String,
    pub token: u64,
    /// Who forced it (NULL when the owner acted itself).
    pub actor: Option<String>,
}

/// `ttl_ms` as the database parameter, if in range (0 allowed: no expiry).
pub(crate) fn ttl_param(ttl_ms: u64) -> Result<i64> {
    if ttl_ms > MAX_TTL_MS {
        return Err(Error::invalid(format!(
            "ttl_ms {ttl_ms} is longer than {MAX_TTL_MS} (ten years)"
        )));
    }
    Ok(ttl_ms as i64)
}

/// Takes `id` for `owner`, with a lease of `ttl_ms` (0: never expires), and
/// returns its fencing token. A lock whose lease expired is free: it is
/// taken over in the same statement. `Exists` if anyone (`owner` included)
/// holds it.
pub fn lock(h: &Handle, id: &str, owner: &str, ttl_ms: u64) -> Result<u64> {
    let ttl = ttl_param(ttl_ms)?;
    // A free id: one statement. A held one: HOLDER, then TAKEOVER if its
    // lease expired, and LOCK again if the id changed meanwhile (released:
    // free; renewed: held). Each statement's result is definite, so trying
    // again is safe; the rounds are bounded by a lease that keeps expiring
    // and being released between the statements, which a few rounds make
    // unlikely enough to report as held.
    enum Attempt {
        Taken(i64),
        Held,
        Changed,
    }
    for _ in 0..4 {
        let attempt = h.run("lock", |c| {
            if let Some(row) = c.query_opt(&q::LOCK, &[&id, &owner, &ttl])? {
                return Ok(Attempt::Taken(row.get(0)));
            }
            Ok(match holder(c, id)? {
                Some((_, true)) => c
                    .query_one(&q::TAKEOVER, &[&id, &owner, &ttl])?
                    .get::<Option<i64>>(0)
                    .map_or(Attempt::Changed, Attempt::Taken),
                Some(_) => Attempt::Held,
                None => Attempt::Changed,
            })
        })?;
        match attempt {
            Attempt::Taken(token) => return Ok(token as u64),
            Attempt::Held => break,
            Attempt::Changed => {}
        }
    }
    Err(Error::new(
        Kind::Exists,
        format!("lock '{id}' is already held"),
    ))
}

/// [`lock`] with a lease: `ttl_ms` must be positive.
pub fn lease(h: &Handle, id: &str, owner: &str, ttl_ms: u64) -> Result<u64> {
    if ttl_ms == 0 {
        return Err(Error::invalid(
            "ttl_ms is 0 (a lease needs a duration; use dss_lock for no expiry)",
        ));
    }
    lock(h, id, owner, ttl_ms)
}

/// Sets the timestamp of `id` to now and extends a lease by its ttl.
/// `NoLock` if absent, `NotOwner` if held by someone else, `LeaseExpired` if
/// the caller's lease ran out (nothing changes in those cases).
pub fn refresh(h: &Handle, id: &str, owner: &str) -> Result<()> {
    let seen = h.run("refresh", |c| done_or_why(c, &q::REFRESH, id, owner))?;
    seen.outcome("refresh", id, owner)
}

/// Releases `id`. With `Some(owner)`, only if `owner` holds it (`NoLock`,
/// `NotOwner`, or `LeaseExpired` if its lease ran out: the stale row is
/// removed then); with `None`, whoever holds it (`NoLock` if absent). A
/// forced release is recorded in the history with `actor`.
pub fn unlock(h: &Handle, id: &str, owner: Option<&str>, actor: &str) -> Result<()> {
    match owner {
        Some(owner) => {
            let seen = h.run("unlock", |c| done_or_why(c, &q::UNLOCK, id, owner))?;
            seen.outcome("unlock", id, owner)
        }
        None => {
            let released = h.run("unlock", |c| {
                c.query_one(&q::UNLOCK_FORCE, &[&id, &actor])
                    .map(|row| row.get::<bool>(0))
            })?;
            if released { Ok(()) } else { Err(no_lock(id)) }
        }
    }
}

/// Runs `query` ([`q::REFRESH`], [`q::UNLOCK`]) for `owner` on `id`: its
/// row says it was done; without one nothing changed, and the holder says
/// why.
fn done_or_why(
    c: &mut Conn,
    query: &'static Query,
    id: &str,
    owner: &str,
) -> crate::pq::Result<Seen> {
    Ok(match c.query_opt(query, &[&id, &owner])? {
        Some(row) => Seen::done(row.get(0)),
        None => Seen::not_done(holder(c, id)?),
    })
}

/// (owner, lease expired) of the row of `id`, if any ([`q::HOLDER`]); a
/// None owner: the id is held shared.
fn holder(c: &mut Conn, id: &str) -> crate::pq::Result<Option<(Option<String>, bool)>> {
    Ok(c.query_opt(&q::HOLDER, &[&id])?
        .map(|row| (row.get(0), row.get(1))))
}

/// Who holds `id` and since when (taken or refreshed). `NoLock` if absent
/// or expired.
pub fn status(h: &Handle, id: &str) -> Result<Status> {
    let row = h.run("status", |c| c.query_opt(&q::STATUS, &[&id]))?;
    match row {
        Some(row) => Ok(Status {
            owner: row.get(0),
            timestamp: row.get(1),
        }),
        None => Err(no_lock(id)),
    }
}

/// Everything about `id`. `NoLock` if absent or expired.
pub fn info(h: &Handle, id: &str) -> Result<Info> {
    let row = h.run("info", |c| c.query_opt(&q::INFO, &[&id]))?;
    match row {
        Some(row) => Ok(read_info(&row, 0)),
        None => Err(no_lock(id)),
    }
}

/// Columns (owner, locked_at, ts, ttl_ms, expires_in_ms, token) from `at`.
fn read_info(row: &Row, at: usize) -> Info {
    Info {
        owner: row.get(at),
        locked_at: row.get(at + 1),
        refreshed_at: row.get(at + 2),
        ttl_ms: row.get::<i64>(at + 3) as u64,
        expires_in_ms: row.get(at + 4),
        token: row.get::<i64>(at + 5) as u64,
    }
}

/// Ok if `token` still holds `id` (live); `Stale` otherwise.
pub fn check(h: &Handle, id: &str, token: u64) -> Result<()> {
    let Ok(token_param) = i64::try_from(token) else {
        return Err(stale(id, token));
    };
    let held = h.run("check", |c| {
        c.query_one(&q::CHECK, &[&id, &token_param])
            .map(|row| row.get::<bool>(0))
    })?;
    if held { Ok(()) } else { Err(stale(id, token)) }
}

fn stale(id: &str, token: u64) -> Error {
    Error::new(
        Kind::Stale,
        format!("token {token} does not hold lock '{id}' (released, expired or taken over)"),
    )
}

/// Force-releases every lock whose owner starts with `owner_prefix`
/// (expired leases included), then its shared holds and semaphore permits;
/// returns how many (expired shares and permits not counted). The prefix
/// must not be empty.
pub fn clean(h: &Handle, owner_prefix: &str, actor: &str) -> Result<u64> {
    if owner_prefix.is_empty() {
        return Err(Error::invalid(
            "owner_prefix is empty (it would release every lock; use dssctl to wipe)",
        ));
    }
    let exclusive = h.run("clean", |c| {
        c.query_one(&q::CLEAN, &[&owner_prefix, &actor])
            .map(|row| row.get::<i64>(0) as u64)
    })?;
    let shared = h.run("clean", |c| {
        c.query_one(&crate::sql::shared::CLEAN_SHARED, &[&owner_prefix, &actor])
            .map(|row| row.get::<i64>(0) as u64)
    })?;
    Ok(exclusive + shared)
}

/// Every hold (exclusive, or one per shared holder) whose id and owner
/// start with the given prefixes ("" for all), expired leases included, by
/// id and token.
pub fn list(h: &Handle, id_prefix: &str, owner_prefix: &str) -> Result<Vec<Listed>> {
    let rows = h.run("list", |c| c.query(&q::LIST, &[&id_prefix, &owner_prefix]))?;
    Ok(rows
        .iter()
        .map(|row| Listed {
            id: row.get(0),
            info: read_info(row, 1),
            expired: row.get(7),
            mode: row.get(8),
        })
        .collect())
}

/// The last `limit` history events of `id`, newest first.
pub fn history(h: &Handle, id: &str, limit: u32) -> Result<Vec<Event>> {
    let limit = i64::from(limit);
    let rows = h.run("history", |c| c.query(&q::HISTORY, &[&id, &limit]))?;
    Ok(rows
        .iter()
        .map(|row| Event {
            seq: row.get(0),
            at: row.get(1),
            event: row.get(2),
            owner: row.get(3),
            token: row.get::<i64>(4) as u64,
            actor: row.get(5),
        })
        .collect())
}

/// What [`prune_history`] did, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The `history_retention` setting, as written in `dss.settings`.
    pub retention: String,
    /// False when the retention is 0: everything is kept, nothing pruned.
    pub bounded: bool,
    /// Rows deleted (or, dry run, that would be).
    pub rows: u64,
}

/// Deletes the history rows older than the `history_retention` setting,
/// `batch` rows per transaction, until none is left; with `dry_run` only
/// counts them. Rows written meanwhile are never older than the retention,
/// so this ends.
pub fn prune_history(h: &Handle, dry_run: bool, batch: u32) -> Result<Pruned> {
    let (retention, bounded) = h.run("history prune", |c| {
        c.query_one(&q::HISTORY_RETENTION, &[])
            .map(|row| (row.get::<String>(0), row.get::<bool>(1)))
    })?;
    let mut rows = 0u64;
    if bounded && dry_run {
        rows = h.run("history prune", |c| {
            c.query_one(&q::HISTORY_PRUNABLE, &[&retention])
                .map(|row| row.get::<i64>(0) as u64)
        })?;
    } else if bounded {
        let batch = i64::from(batch.max(1));
        let mut after = "(0,0)".to_string();
        loop {
            let (n, last) = h
                .run("history prune", |c| {
                    c.query_one(&q::HISTORY_PRUNE, &[&retention, &batch, &after])
                        .map(|row| (row.get::<i64>(0), row.get::<Option<String>>(1)))
                })
                .map_err(|e| {
                    Error::needs_owner(e, "pruning the history (dss_client may only append to it)")
                })?;
            rows += n as u64;
            match last {
                Some(last) if n == batch => after = last,
                _ => break,
            }
        }
    }
    Ok(Pruned {
        retention,
        bounded,
        rows,
    })
}

/// The conventional owner name of this process, `"<hostname>:<pid>"`. The
/// host name is read once per process.
pub fn owner_self() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "localhost".to_string()
        }
    });
    format!("{host}:{}", std::process::id())
}

pub(crate) fn no_lock(id: &str) -> Error {
    Error::new(Kind::NoLock, format!("lock '{id}' does not exist"))
}

/// What a refresh or unlock statement saw, in one snapshot: whether it did
/// it, whether the row it removed was an expired lease, the holder it saw
/// (None: absent) and whether that holder's lease had expired.
pub(crate) struct Seen {
    done: bool,
    done_expired: bool,
    holder: Option<String>,
    holder_expired: bool,
}

impl Seen {
    /// Reads the four columns starting at `at`.
    pub(crate) fn read(row: &Row, at: usize) -> Seen {
        Seen {
            done: row.get(at),
            done_expired: row.get(at + 1),
            holder: row.get(at + 2),
            holder_expired: row.get(at + 3),
        }
    }

    /// The caller's own row was acted on (removed, refreshed); `expired`: its
    /// lease had run out.
    pub(crate) fn done(expired: bool) -> Seen {
        Seen {
            done: true,
            done_expired: expired,
            holder: None,
            holder_expired: false,
        }
    }

    /// Nothing was done; `holder`: (owner, expired) of the id's row, if
    /// any. A row held shared (no owner) has no exclusive holder: absent.
    pub(crate) fn not_done(holder: Option<(Option<String>, bool)>) -> Seen {
        let holder = holder.and_then(|(owner, expired)| owner.map(|o| (o, expired)));
        Seen {
            done: false,
            done_expired: false,
            holder_expired: holder.as_ref().is_some_and(|(_, expired)| *expired),
            holder: holder.map(|(owner, _)| owner),
        }
    }

    /// The result for the caller `owner`. An expired lease is free for
    /// everyone but its holder, who learns it lost the lease.
    pub(crate) fn outcome(self, what: &str, id: &str, owner: &str) -> Result<()> {
        let expired = || {
            Error::new(
                Kind::LeaseExpired,
                format!("cannot {what} lock '{id}': the lease of '{owner}' expired"),
            )
        };
        match self.holder {
            _ if self.done && self.done_expired => Err(expired()),
            _ if self.done => Ok(()),
            Some(holder) if holder == owner && self.holder_expired => Err(expired()),
            Some(holder) if holder != owner && !self.holder_expired => Err(Error::new(
                Kind::NotOwner,
                format!("cannot {what} lock '{id}': it is held by '{holder}', not '{owner}'"),
            )),
            // Absent, someone else's expired lease, or gone concurrently.
            _ => Err(no_lock(id)),
        }
    }
}

//! `dss_lock_wait`: blocking until a lock is free, without polling it.
//!
//! A waiter keeps one pooled connection for the whole wait. It tries once
//! (`WAIT_TRY`, which also queues it with a ticket if the lock is held),
//! then LISTENs on the id's channel and sleeps in the socket until:
//! * a release of that id NOTIFYs the channel (unlock, forced unlock,
//!   cleanup, or a waiter ahead giving up): each failed attempt marks the
//!   holder's row (`waited`), and only marked rows notify on release; an
//!   attempt that could not mark it tries again at once;
//! * the current holder's lease runs out (the statement says when);
//! * a fallback timer fires (200 ms after queueing, doubling up to 5 s), in
//!   case a notification was missed (a waiter ahead whose session died);
//! * the caller's deadline passes.
//!
//! Each round trip of a wait is bounded by `call_timeout_ms` on its own
//! ([`Conn::renew_deadline`]); `timeout_ms` bounds the wait for the lock.
//!
//! Fairness: waiters of one id are served in arrival order. An attempt only
//! takes the lock when no live waiter with an earlier ticket exists, so each
//! release lets exactly one waiter in and no waiter is overtaken by a later
//! one. dss_lock(), dss_lock_lease() and dss_lock_many() do not queue (phobos
//! semantics): they take a free lock even while waiters sleep.

use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock::{MAX_TTL_MS, ttl_param};
use crate::pool::Conn;
use crate::sql::lock as q;
use crate::sql::shared as qs;

const FIRST_POLL: Duration = Duration::from_millis(200);
const LONGEST_POLL: Duration = Duration::from_secs(5);
/// Attempts in a row that may follow each other without a sleep.
const MAX_UNARMED: u32 = 8;
/// A waiter's queue entry outlives its deadline by this much, so that it is
/// not purged while making its last attempt.
pub(crate) const QUEUE_SLACK_MS: u64 = 1000;

/// Takes `id` for `owner` (lease `ttl_ms`, 0: none), waiting up to
/// `timeout_ms` (u64::MAX: forever) for it; returns the token. `TimedOut`
/// if the deadline passed first.
pub fn wait(h: &Handle, id: &str, owner: &str, ttl_ms: u64, timeout_ms: u64) -> Result<u64> {
    let ttl = ttl_param(ttl_ms)?;
    match queue(
        h,
        id,
        owner,
        ttl,
        timeout_ms,
        Request::Exclusive,
        false,
        &|_| {},
    )? {
        Some(token) => Ok(token),
        None => Err(Error::new(
            Kind::TimedOut,
            format!("lock '{id}' was not free within {timeout_ms} ms"),
        )),
    }
}

/// What a waiter asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `dss_lock_wait`: [`q::WAIT_TRY`].
    Exclusive,
    /// `dss_lock_shared`: `dss.lock_shared_try`.
    Shared,
    /// `dss_sem_acquire`: `dss.sem_try`.
    Sem { permits: i32, capacity: i32 },
}

impl Request {
    /// The call's name, in messages.
    fn call(self) -> &'static str {
        match self {
            Request::Exclusive => "lock_wait",
            Request::Shared => "lock_shared",
            Request::Sem { .. } => "sem_acquire",
        }
    }
}

/// Takes `request` on `id` for `owner` (lease `ttl_ms`), waiting up to
/// `timeout_ms` in the id's queue, first come, first served; returns the
/// token. `queued(ticket)` is called once the request is queued, before it
/// sleeps: [`crate::token::cancel`] with that ticket (from any thread or
/// process) ends the wait with `Cancelled`. `TimedOut` if not granted in
/// time (also for `timeout_ms` 0 when blocked), `Already` if `owner` holds
/// it, `InvalidArgument` for bad semaphore arguments (as
/// [`crate::shared::sem_acquire`]). For callers that must be able to
/// cancel a wait (dssd).
pub fn acquire(
    h: &Handle,
    request: Request,
    id: &str,
    owner: &str,
    ttl_ms: u64,
    timeout_ms: u64,
    queued: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let ttl = match request {
        Request::Sem { permits, capacity } => {
            crate::shared::sem_args(permits as u32, capacity as u32, ttl_ms)?
        }
        _ => ttl_param(ttl_ms)?,
    };
    match queue(h, id, owner, ttl, timeout_ms, request, false, queued)? {
        Some(token) => Ok(token),
        None => Err(Error::new(
            Kind::TimedOut,
            format!("'{id}' was not granted within {timeout_ms} ms"),
        )),
    }
}

/// Queues for `request` on `id` until granted (the token) or `timeout_ms`
/// passed (None). `once_when_zero`: a `timeout_ms` of 0 is one attempt
/// that does not queue (None if blocked). `Already` / `InvalidArgument` /
/// `Cancelled` when the attempt refuses the request (the owner holds it;
/// another capacity; cancelled). `queued(ticket)` once queued.
#[allow(clippy::too_many_arguments)]
pub(crate) fn queue(
    h: &Handle,
    id: &str,
    owner: &str,
    ttl: i64,
    timeout_ms: u64,
    request: Request,
    once_when_zero: bool,
    queued: &(dyn Fn(u64) + Sync),
) -> Result<Option<u64>> {
    let deadline = Instant::now().checked_add(Duration::from_millis(timeout_ms));
    let queue_ms = if once_when_zero && timeout_ms == 0 {
        0
    } else {
        (timeout_ms.min(MAX_TTL_MS) + QUEUE_SLACK_MS) as i64
    };
    let w = Waiter {
        id,
        owner,
        ttl,
        queue_ms,
        deadline,
        request,
        queued,
    };
    match h.run(request.call(), |c| w.run(c))? {
        Outcome::Taken(token) => Ok(Some(token)),
        Outcome::NotInTime => Ok(None),
        Outcome::Refused(status) => Err(refused(&status, id, owner)),
    }
}

fn refused(status: &str, id: &str, owner: &str) -> Error {
    match status {
        "already" => Error::new(Kind::Already, format!("'{owner}' already holds '{id}'")),
        "capacity" => Error::invalid(format!("semaphore '{id}' has holders and another capacity")),
        "cancelled" => Error::new(
            Kind::Cancelled,
            format!("the request of '{owner}' for '{id}' was cancelled"),
        ),
        other => Error::new(
            Kind::Communication,
            format!("unexpected answer '{other}' for '{id}'"),
        ),
    }
}

struct Waiter<'a> {
    id: &'a str,
    owner: &'a str,
    ttl: i64,
    /// 0: one attempt, not queued.
    queue_ms: i64,
    deadline: Option<Instant>,
    request: Request,
    queued: &'a (dyn Fn(u64) + Sync),
}

type PgResult<T> = crate::pq::Result<T>;

/// What one attempt found.
enum Attempt {
    Taken(u64),
    /// Not taken; ms left on the holder's lease, if it has one, and whether
    /// the release of what blocks it will notify (see `WAIT_TRY`): if not,
    /// the next attempt comes at once.
    Held {
        left_ms: Option<i64>,
        armed: bool,
    },
    /// Refused for good: the attempt's status ('already', 'capacity').
    Refused(String),
}

/// How a whole wait ended.
enum Outcome {
    Taken(u64),
    NotInTime,
    Refused(String),
}

impl Waiter<'_> {
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn attempt(&self, c: &mut Conn, ticket: i64) -> PgResult<(Attempt, Option<i64>, String)> {
        c.renew_deadline();
        let (id, owner, ttl, queue_ms) = (&self.id, &self.owner, &self.ttl, &self.queue_ms);
        let row = match self.request {
            Request::Exclusive => {
                c.query_one(&q::WAIT_TRY, &[id, owner, ttl, &ticket, queue_ms])?
            }
            Request::Shared => {
                c.query_one(&qs::SHARED_TRY, &[id, owner, ttl, &ticket, queue_ms])?
            }
            Request::Sem { permits, capacity } => c.query_one(
                &qs::SEM_TRY,
                &[id, owner, &permits, &capacity, ttl, &ticket, queue_ms],
            )?,
        };
        let status = row.get::<Option<String>>(5);
        let attempt = match (row.get::<Option<i64>>(0), status) {
            (Some(token), _) => Attempt::Taken(token as u64),
            (None, Some(status)) => Attempt::Refused(status),
            (None, None) => Attempt::Held {
                left_ms: row.get(3),
                armed: row.get(4),
            },
        };
        Ok((attempt, row.get(1), row.get(2)))
    }

    /// The whole wait on one connection.
    fn run(&self, c: &mut Conn) -> PgResult<Outcome> {
        let (first, ticket, channel) = self.attempt(c, 0)?;
        match first {
            Attempt::Taken(token) => return Ok(Outcome::Taken(token)),
            Attempt::Refused(status) => return Ok(Outcome::Refused(status)),
            Attempt::Held { .. } if self.queue_ms == 0 => return Ok(Outcome::NotInTime),
            Attempt::Held { .. } => {}
        }
        let ticket = ticket.unwrap_or(0);
        if ticket != 0 {
            (self.queued)(ticket as u64);
        }
        let result = if self.expired() || !valid_channel(&channel) {
            Ok(Outcome::NotInTime)
        } else {
            c.renew_deadline();
            c.simple(&format!("LISTEN \"{channel}\""))
                .and_then(|()| self.queued(c, ticket))
        };
        // Leave the queue (unless the lock was taken, which left it) and stop
        // listening, so the connection goes back to the pool clean. If that
        // fails, the connection is dropped instead; a lock already taken is
        // still reported as taken.
        let taken = matches!(result, Ok(Outcome::Taken(_)));
        let cleanup = (|| {
            c.renew_deadline();
            if !taken {
                c.query(&q::WAIT_LEAVE, &[&ticket])?;
            }
            c.renew_deadline();
            c.simple("UNLISTEN *")
        })();
        if cleanup.is_err() {
            c.broken = true;
        }
        match (result, cleanup) {
            (Ok(Outcome::NotInTime), Err(e)) => Err(e),
            (result, _) => result,
        }
    }

    /// Queued with `ticket` and listening: attempt, sleep, repeat.
    fn queued(&self, c: &mut Conn, ticket: i64) -> PgResult<Outcome> {
        let mut poll = FIRST_POLL;
        let mut unarmed = 0;
        loop {
            let (left_ms, armed) = match self.attempt(c, ticket)?.0 {
                Attempt::Taken(token) => return Ok(Outcome::Taken(token)),
                Attempt::Refused(status) => return Ok(Outcome::Refused(status)),
                Attempt::Held { left_ms, armed } => (left_ms, armed),
            };
            // Not armed: the id changed hands while this attempt ran, and
            // the next one sees the new holder. Tried again at once, a few
            // times in a row at most (then the polls cover it).
            unarmed = if armed { 0 } else { unarmed + 1 };
            let mut sleep = if !armed && unarmed <= MAX_UNARMED {
                Duration::ZERO
            } else {
                poll
            };
            if let Some(ms) = left_ms.filter(|&ms| ms > 0) {
                sleep = sleep.min(Duration::from_millis(ms as u64 + 1));
            }
            if let Some(deadline) = self.deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Outcome::NotInTime);
                }
                sleep = sleep.min(deadline - now);
            }
            // Consumes every notification received (several releases may
            // have sent several).
            let woken = c.pg.wait_notification(sleep)?;
            if !woken && !sleep.is_zero() {
                poll = (poll * 2).min(LONGEST_POLL);
            }
        }
    }
}

/// The channel name comes from the server ('dss_' || md5(id)); it is
/// checked before being put in a LISTEN command.
fn valid_channel(channel: &str) -> bool {
    channel.len() == 36
        && channel.starts_with("dss_")
        && channel[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::valid_channel;

    #[test]
    fn only_md5_channels_are_listened_to() {
        assert!(valid_channel("dss_0123456789abcdef0123456789abcdef"));
        assert!(!valid_channel("dss_0123456789abcdef0123456789abcde\""));
        assert!(!valid_channel("x; DROP TABLE dss.locks"));
    }
}

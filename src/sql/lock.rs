//! The lock statements (tables `dss.locks`, `dss.lock_history`,
//! `dss.lock_waiters`; see `sql/0001_locks.sql` and `sql/0002_leases.sql`).
//!
//! Rules every statement here follows:
//! * One statement per call, so one round trip and one autocommit
//!   transaction. Where a call must tell "absent" from "someone else's" from
//!   "your lease expired", the statement returns what it saw, decided in the
//!   same snapshot as the change: there is no window between check and write.
//! * A lease is live while `expires_at` is NULL or in the future, on the
//!   database clock (`now()`); an expired lease counts as free.
//! * Every acquisition takes a fresh token from `dss.lock_token_seq`,
//!   greater than every earlier token of the id: it draws it after taking
//!   the id's bucket lock (`bucket!`, "Tokens" in `sql/0004_fast_path.sql`).
//! * Acquisitions, releases, forced releases, takeovers and cleanups append
//!   to `dss.lock_history` in the same transaction (refreshes do not); with
//!   the setting `history` 'off', a trigger drops those rows
//!   (`sql/0004_fast_path.sql`).
//! * A statement that removes a lock wakes `dss_lock_wait()` callers of that
//!   id (NOTIFY on channel `dss_<md5 of the id>`), only if the row says a
//!   waiter failed to take it (`waited`, see [`WAIT_TRY`]): NOTIFY serialises
//!   committing transactions, so it is never paid when nobody waits, and the
//!   release reads nothing but the row it deletes.
//! * Statements touching several locks lock their rows in id order, so they
//!   cannot deadlock with each other.
//!
//! A single lock, refresh or unlock returns a row only when it did its work
//! (the pair's hot path reads nothing else); when it did nothing, [`HOLDER`]
//! says why, on the same connection. The batch statements return, per id,
//! the shape `lock::Seen` reads: (done, done_on_expired_lease, holder seen,
//! holder expired).

use postgres_types::Type;

use super::Query;

const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;
const TEXT_ARRAY: Type = Type::TEXT_ARRAY;

/// A lease is live: not expired.
macro_rules! live {
    () => {
        "(expires_at IS NULL OR expires_at > now())"
    };
}

/// The first CTE of every acquisition of $1, taken only while the SQL
/// condition `$may` holds: the id's bucket lock (a transaction advisory
/// lock, see "Tokens" in `sql/0004_fast_path.sql`), taken before any token
/// is drawn. The CTEs below draw tokens only in rows of `bucket`.
macro_rules! bucket {
    ($($may:tt)*) => {
        concat!(
            "bucket AS MATERIALIZED ( \
                SELECT pg_advisory_xact_lock(7235443, hashtext($1) & 4095) WHERE ",
            $($may)*,
            ")"
        )
    };
}

/// CTE `tko`: takes over an expired lease of $1 for $2 with a lease of $3
/// ms (0: none); the new token. Concurrent takers: the row lock lets one
/// win, the others re-check the new lease and skip. `$waited`: the new
/// value of the row's `waited` flag (see [`WAIT_TRY`]).
macro_rules! takeover {
    ($waited:literal) => {
        concat!(
            "tko AS ( \
                UPDATE dss.locks \
                   SET owner = $2, token = nextval('dss.lock_token_seq'), locked_at = now(), \
                       ts = now(), ttl_ms = $3, waited = ",
            $waited,
            ", expires_at = ",
            expiry!("$3"),
            " WHERE id = $1 AND expires_at <= now() AND EXISTS (SELECT 1 FROM bucket) \
                RETURNING token)"
        )
    };
}

/// CTE `ins`: inserts $1 for $2 (lease $3 ms, `waited` flag `$waited`) if
/// free, while `$cond` holds; the new token. ON CONFLICT waits for a
/// concurrent inserter or deleter of the id, then inserts or gives up,
/// without an error and without locking the holder's row.
macro_rules! insert {
    ($waited:literal, $($cond:tt)*) => {
        concat!(
            "ins AS ( \
                INSERT INTO dss.locks (id, owner, token, ttl_ms, waited, expires_at) \
                SELECT $1, $2, nextval('dss.lock_token_seq'), $3, ",
            $waited,
            ", ",
            expiry!("$3"),
            " FROM bucket WHERE ",
            $($cond)*,
            " ON CONFLICT (id) DO NOTHING \
                RETURNING token)"
        )
    };
}

/// CTE `hist`: records the acquisitions of CTE `$from` (column `token`)
/// as `$event`.
macro_rules! record {
    ($event:literal, $from:literal) => {
        concat!(
            "hist AS ( \
                INSERT INTO dss.lock_history (event, id, owner, token) \
                SELECT ",
            $event,
            ", $1, $2, token FROM ",
            $from,
            ")"
        )
    };
}

/// `dss_lock` (ttl 0) and `dss_lock_lease`: $1 id, $2 owner, $3 ttl_ms.
/// One row, the new token, if the id was free; no row if it is held. Then
/// [`HOLDER`] says whether that lease expired, and [`TAKEOVER`] takes it:
/// the common path plans no UPDATE and reads nothing else (a subquery for
/// the holder here cost 8 % of a pair's backend CPU, paid on every success).
/// A failed attempt writes nothing and locks no row.
pub static LOCK: Query = Query {
    text: concat!(
        "WITH ",
        bucket!("true"),
        ", ",
        insert!("false", "true"),
        ", ",
        record!("'acquire'", "ins"),
        " SELECT token FROM ins"
    ),
    params: &[TEXT, TEXT, INT8],
};

/// `dss_lock` after [`HOLDER`] saw an expired lease: $1 id, $2 owner, $3
/// ttl_ms. The new token, NULL if the lease is no longer expired (renewed,
/// taken over or released meanwhile: [`LOCK`] is tried again then).
pub static TAKEOVER: Query = Query {
    text: concat!(
        "WITH ",
        bucket!("true"),
        ", ",
        takeover!("waited"),
        ", ",
        record!("'takeover'", "tko"),
        " SELECT (SELECT token FROM tko)"
    ),
    params: &[TEXT, TEXT, INT8],
};

/// `dss_lock_wait`, one attempt: $1 id, $2 owner, $3 ttl_ms, $4 ticket
/// (0: not queued yet), $5 how long to stay queued (ms).
///
/// Waiters are served in ticket order: the attempt only takes the lock if no
/// live waiter is ahead (a waiter is live while its session exists and its
/// deadline has not passed; dead ones are purged here). A successful
/// attempt leaves the queue; a first failed one (ticket 0) joins it.
///
/// Wake-ups: a release NOTIFYs only if the row it removes has `waited` set.
/// A failed attempt sets it on the holder's row (`flag`) and says whether
/// the release of what blocks it is sure to notify (`armed`): the holder's
/// row carries the flag (set now or before: no update clears it), or a
/// waiter is ahead (a queued waiter's acquisition sets the flag on its own
/// row). Not armed: the holder's row was not visible or went away while
/// flagging it (released, or taken by a statement newer than this one's
/// snapshot), and the caller tries again at once instead of sleeping.
///
/// A queued attempt ($4 <> 0) whose queue entry is gone was cancelled
/// (`token::CANCEL`): it takes nothing and says so.
///
/// Returns (token or NULL, new ticket or NULL, wake-up channel, ms left on
/// the current holder's lease or NULL, armed, status: NULL or
/// 'cancelled').
pub static WAIT_TRY: Query = Query {
    text: concat!(
        "WITH purge AS ( \
            DELETE FROM dss.lock_waiters w \
             WHERE w.id = $1 AND w.ticket <> $4 \
               AND (w.until < now() \
                    OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(w.backend_pid))) \
            RETURNING w.ticket), \
         ahead AS ( \
            SELECT 1 FROM dss.lock_waiters w \
             WHERE w.id = $1 AND w.mode <> 3 AND ($4 = 0 OR w.ticket < $4) \
               AND w.ticket NOT IN (SELECT ticket FROM purge)), \
         cancelled AS ( \
            SELECT 1 WHERE $4 <> 0 \
               AND NOT EXISTS (SELECT 1 FROM dss.lock_waiters w WHERE w.ticket = $4)), \
         ",
        bucket!("NOT EXISTS (SELECT 1 FROM ahead) AND NOT EXISTS (SELECT 1 FROM cancelled)"),
        ", ",
        takeover!("waited OR $4 <> 0"),
        ", ",
        insert!("$4 <> 0", "NOT EXISTS (SELECT 1 FROM tko)"),
        ", \
         got AS ( \
            SELECT token, 'takeover' AS event FROM tko \
            UNION ALL SELECT token, 'acquire' FROM ins), ",
        record!("event", "got"),
        ", \
         done AS ( \
            DELETE FROM dss.lock_waiters WHERE ticket = $4 AND EXISTS (SELECT 1 FROM got)), \
         flag AS ( \
            UPDATE dss.locks SET waited = true \
             WHERE id = $1 AND NOT waited AND NOT EXISTS (SELECT 1 FROM got) \
            RETURNING 1), \
         queue AS ( \
            INSERT INTO dss.lock_waiters (id, owner, until) \
            SELECT $1, $2, now() + $5 * interval '1 millisecond' \
             WHERE $4 = 0 AND NOT EXISTS (SELECT 1 FROM got) \
            RETURNING ticket) \
         SELECT (SELECT token FROM got), (SELECT ticket FROM queue), 'dss_' || md5($1), \
                (SELECT ",
        expires_in_ms!(),
        " FROM dss.locks WHERE id = $1 AND expires_at IS NOT NULL), \
                EXISTS (SELECT 1 FROM flag) OR EXISTS (SELECT 1 FROM ahead) \
                OR EXISTS (SELECT 1 FROM dss.locks WHERE id = $1 AND waited), \
                (SELECT 'cancelled' FROM cancelled)"
    ),
    params: &[TEXT, TEXT, INT8, INT8, INT8],
};

/// `dss_lock_wait`, `dss_lock_shared` or `dss_sem_acquire` giving up: $1
/// ticket. Leaves the queue and wakes the others of that id (or
/// semaphore), since this waiter may have been the one in front.
pub static WAIT_LEAVE: Query = Query {
    text: "DELETE FROM dss.lock_waiters l WHERE ticket = $1 \
           RETURNING pg_notify(CASE WHEN l.mode = 3 THEN dss.sem_channel(l.id) \
                                    ELSE 'dss_' || md5(l.id) END, '')",
    params: &[INT8],
};

/// `dss_lock_refresh`: $1 id, $2 owner. Extends a live lease by its own ttl
/// (a lock without ttl only gets a new timestamp). One row if refreshed,
/// shaped as [`UNLOCK`]'s (expired: never, only a live lease is refreshed);
/// no row if nothing changed, and then [`HOLDER`] says why.
pub static REFRESH: Query = Query {
    text: concat!(
        "UPDATE dss.locks SET ts = now(), expires_at = ",
        expiry!("ttl_ms"),
        " WHERE id = $1 AND owner = $2 AND ",
        live!(),
        " RETURNING false AS expired"
    ),
    params: &[TEXT, TEXT],
};

/// `dss_unlock` with an owner: $1 id, $2 owner. One row (expired) if the
/// owner's lock was removed: an expired lease of that owner is removed too,
/// and reported as such; no row if nothing was removed, and then HOLDER
/// says why (read only on failure: it is not on the pair's hot path).
pub static UNLOCK: Query = Query {
    text: concat!(
        "WITH del AS ( \
            DELETE FROM dss.locks l WHERE l.id = $1 AND l.owner = $2 \
            RETURNING l.token, coalesce(l.expires_at <= now(), false) AS expired, ",
        wake_waiters!(),
        "), \
         hist AS ( \
            INSERT INTO dss.lock_history (event, id, owner, token) \
            SELECT 'release', $1, $2, token FROM del) \
         SELECT expired FROM del"
    ),
    params: &[TEXT, TEXT],
};

/// Why a call on $1 id did nothing ([`LOCK`], [`REFRESH`], [`UNLOCK`]):
/// (owner, expired) of its row, if any; a NULL owner: held shared.
pub static HOLDER: Query = Query {
    text: "SELECT owner, coalesce(expires_at <= now(), false) AS expired FROM dss.locks WHERE id = $1",
    params: &[TEXT],
};

/// `dss_unlock` with a NULL owner (force): $1 id, $2 actor (recorded in the
/// history). True if a live exclusive lock was released (an expired one is
/// removed too, but reads as absent; shared holds are left alone).
pub static UNLOCK_FORCE: Query = Query {
    text: concat!(
        "WITH del AS ( \
            DELETE FROM dss.locks l WHERE l.id = $1 AND l.owner IS NOT NULL \
            RETURNING l.owner, l.token, coalesce(l.expires_at <= now(), false) AS expired, ",
        wake_waiters!(),
        "), \
         hist AS ( \
            INSERT INTO dss.lock_history (event, id, owner, token, actor) \
            SELECT 'force_release', $1, owner, token, $2 FROM del) \
         SELECT EXISTS (SELECT 1 FROM del WHERE NOT expired)"
    ),
    params: &[TEXT, TEXT],
};

/// `dss_lock_status`: $1 id. (owner, ts) of a live exclusive lock; the timestamp
/// travels as a binary timestamptz (microseconds since 2000-01-01 UTC), so
/// no time zone or DST setting on either side can shift it.
pub static STATUS: Query = Query {
    text: concat!(
        "SELECT owner, ts FROM dss.locks WHERE id = $1 AND owner IS NOT NULL AND ",
        live!()
    ),
    params: &[TEXT],
};

/// `dss_lock_info`: $1 id. (owner, locked_at, ts, ttl_ms, expires_in_ms,
/// token) of a live exclusive lock.
pub static INFO: Query = Query {
    text: concat!(
        "SELECT owner, locked_at, ts, ttl_ms, ",
        expires_in_ms!(),
        ", token FROM dss.locks WHERE id = $1 AND owner IS NOT NULL AND ",
        live!()
    ),
    params: &[TEXT],
};

/// `dss_lock_check`: $1 id, $2 token. True if that token holds a live lock,
/// exclusive or shared (a share of the id's current shared row).
pub static CHECK: Query = Query {
    text: concat!(
        "SELECT EXISTS (SELECT 1 FROM dss.locks WHERE id = $1 AND token = $2 \
                         AND owner IS NOT NULL AND ",
        live!(),
        ") OR EXISTS (SELECT 1 FROM dss.lock_shares s \
                        JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen \
                       WHERE s.id = $1 AND s.token = $2 \
                         AND (s.expires_at IS NULL OR s.expires_at > now()))"
    ),
    params: &[TEXT, INT8],
};

/// `dss_lock_many`: $1 ids, $2 owner, $3 ttl_ms. No row: all taken; else
/// (1-based position of the first conflicting id, its holder). See
/// `dss.lock_many` in `sql/0008_batch_path.sql`.
pub static LOCK_MANY: Query = Query {
    text: "SELECT conflict_ord, holder FROM dss.lock_many($1, $2, $3)",
    params: &[TEXT_ARRAY, TEXT, INT8],
};

/// The requested ids with their positions, and their current rows locked
/// in id order (`cur`), for the batch statements below ($1 ids). Their
/// result is the first failure only (`bad`, found with a hashed NOT IN):
/// joining every requested id instead is quadratic, as the planner cannot
/// estimate the CTEs. For the same reason the rows to change are found by
/// `l.id = ANY (ARRAY(SELECT … FROM cur …))` (one array built once, then
/// an index scan), never by joining `cur`: with statistics taken on an
/// empty `dss.locks`, the generic plan of such a join is a nested loop that
/// rescans `cur` for every row (1 000 ids: 300 ms instead of 10).
macro_rules! batch_rows {
    () => {
        "req AS ( \
            SELECT r.id, r.ord FROM unnest($1::text[]) WITH ORDINALITY AS r(id, ord)), \
         cur AS ( \
            SELECT l.id, l.owner, coalesce(l.expires_at <= now(), false) AS expired \
              FROM dss.locks l WHERE l.id = ANY ($1) ORDER BY l.id FOR UPDATE)"
    };
}

/// `dss_lock_refresh_many`: $1 ids, $2 owner. Refreshes every live lease
/// of the owner among them; returns the first failure in the caller's order
/// as (1-based position, then the shape of REFRESH), no row if none.
pub static REFRESH_MANY: Query = Query {
    text: concat!(
        "WITH ",
        batch_rows!(),
        ", upd AS ( \
            UPDATE dss.locks l SET ts = now(), expires_at = ",
        expiry!("l.ttl_ms"),
        " WHERE l.id = ANY (ARRAY( \
                SELECT cur.id FROM cur WHERE cur.owner = $2 AND NOT cur.expired)) \
            RETURNING l.id), \
         bad AS ( \
            SELECT req.ord, req.id FROM req WHERE req.id NOT IN (SELECT id FROM upd) \
             ORDER BY req.ord LIMIT 1) \
         SELECT bad.ord, false, false, cur.owner, coalesce(cur.expired, false) \
           FROM bad LEFT JOIN cur ON cur.id = bad.id"
    ),
    params: &[TEXT_ARRAY, TEXT],
};

/// `dss_unlock_many`: $1 ids, $2 owner. Releases every lock of the owner
/// among them (expired leases too); returns the first failure in the
/// caller's order as (1-based position, then the shape of UNLOCK).
pub static UNLOCK_MANY: Query = Query {
    text: concat!(
        "WITH ",
        batch_rows!(),
        ", del AS ( \
            DELETE FROM dss.locks l \
             WHERE l.id = ANY (ARRAY(SELECT cur.id FROM cur WHERE cur.owner = $2)) \
            RETURNING l.id, l.token, coalesce(l.expires_at <= now(), false) AS expired, ",
        wake_waiters!(),
        "), \
         hist AS ( \
            INSERT INTO dss.lock_history (event, id, owner, token) \
            SELECT 'release', id, $2, token FROM del), \
         bad AS ( \
            SELECT req.ord, req.id FROM req \
             WHERE req.id NOT IN (SELECT id FROM del WHERE NOT expired) \
             ORDER BY req.ord LIMIT 1) \
         SELECT bad.ord, del.id IS NOT NULL, coalesce(del.expired, false), \
                cur.owner, coalesce(cur.expired, false) \
           FROM bad LEFT JOIN cur ON cur.id = bad.id LEFT JOIN del ON del.id = bad.id"
    ),
    params: &[TEXT_ARRAY, TEXT],
};

/// `dss_lock_clean`: $1 owner prefix, $2 actor. Force-releases every lock
/// (expired leases included) whose owner starts with the prefix; returns
/// how many.
pub static CLEAN: Query = Query {
    text: concat!(
        "WITH cur AS ( \
            SELECT id FROM dss.locks WHERE starts_with(owner, $1) ORDER BY id FOR UPDATE), \
         del AS ( \
            DELETE FROM dss.locks l WHERE l.id = ANY (ARRAY(SELECT cur.id FROM cur)) \
            RETURNING l.id, l.owner, l.token, ",
        wake_waiters!(),
        "), \
         hist AS ( \
            INSERT INTO dss.lock_history (event, id, owner, token, actor) \
            SELECT 'clean', id, owner, token, $2 FROM del) \
         SELECT count(*) FROM del"
    ),
    params: &[TEXT, TEXT],
};

/// `dssctl list`: $1 id prefix, $2 owner prefix ('' matches all). Every
/// hold, exclusive and shared, expired leases included: (id, owner,
/// locked_at, ts, ttl_ms, expires_in_ms, token, expired, mode 1 or 2), by
/// id and token.
pub static LIST: Query = Query {
    text: concat!(
        "SELECT id, owner, locked_at, ts, ttl_ms, ",
        expires_in_ms!(),
        ", token, NOT ",
        live!(),
        ", 1::int4 FROM dss.locks \
          WHERE owner IS NOT NULL AND starts_with(id, $1) AND starts_with(owner, $2) \
         UNION ALL \
         SELECT id, owner, locked_at, ts, ttl_ms, ",
        expires_in_ms!(),
        ", token, NOT ",
        live!(),
        ", 2::int4 FROM ( \
            SELECT s.* FROM dss.lock_shares s \
              JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen \
             WHERE starts_with(s.id, $1) AND starts_with(s.owner, $2)) AS sh \
         ORDER BY 1, 7"
    ),
    params: &[TEXT, TEXT],
};

/// `dssctl history`: $1 id, $2 limit. Newest first: (seq, at, event,
/// owner, token, actor).
pub static HISTORY: Query = Query {
    text: "SELECT seq, at, event, owner, token, actor FROM dss.lock_history \
           WHERE id = $1 ORDER BY seq DESC LIMIT $2",
    params: &[TEXT, INT8],
};

/// `dssctl history prune`: the `history_retention` setting (an interval;
/// '30 days' if the row was deleted) and whether it is positive (0: keep
/// everything).
pub static HISTORY_RETENTION: Query = Query {
    text: "SELECT r.value, r.value::interval > interval '0' \
             FROM (SELECT coalesce((SELECT value FROM dss.settings \
                                     WHERE key = 'history_retention'), '30 days') AS value) AS r",
    params: &[],
};

/// `dssctl history prune --dry-run`: $1 retention. How many rows are older.
pub static HISTORY_PRUNABLE: Query = Query {
    text: "SELECT count(*) FROM dss.lock_history WHERE at < now() - $1::interval",
    params: &[TEXT],
};

/// `dssctl history prune`, one batch: $1 retention, $2 batch size, $3 the
/// last row of the previous batch (a ctid, as text; '(0,0)' to start).
/// Deletes the first $2 rows older than the retention that follow $3 in
/// the table's physical order (a TID range scan: the table has no index),
/// and returns how many and the last one's ctid (NULL if none). Each batch
/// is one short transaction holding only the row locks of what it deletes;
/// the batches of one run read the table once.
pub static HISTORY_PRUNE: Query = Query {
    text: "WITH del AS ( \
              DELETE FROM dss.lock_history WHERE ctid = ANY (ARRAY( \
                  SELECT ctid FROM dss.lock_history \
                   WHERE ctid > $3::tid AND at < now() - $1::interval LIMIT $2)) \
              RETURNING ctid) \
           SELECT count(*), max(ctid)::text FROM del",
    params: &[TEXT, INT8, TEXT],
};

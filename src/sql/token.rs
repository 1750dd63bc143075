//! The statements that name a hold by its fencing token instead of its
//! owner, list and cancel queued requests, and count holds (`token.rs`;
//! used by dssd, whose ids are tokens).

use postgres_types::Type;

use super::Query;

const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;
const BOOL: Type = Type::BOOL;

/// Releases the exclusive hold of $1 with token $2: one row (expired) if
/// removed, as `lock::UNLOCK` (history and wake-up alike).
pub static UNLOCK: Query = Query {
    text: concat!(
        "WITH del AS ( \
            DELETE FROM dss.locks l WHERE l.id = $1 AND l.token = $2 AND l.owner IS NOT NULL \
            RETURNING l.owner, l.token, coalesce(l.expires_at <= now(), false) AS expired, ",
        wake_waiters!(),
        "), \
         hist AS ( \
            INSERT INTO dss.lock_history (event, id, owner, token) \
            SELECT 'release', $1, owner, token FROM del) \
         SELECT expired FROM del"
    ),
    params: &[TEXT, INT8],
};

/// Sets the lease of the live exclusive hold of $1 with token $2 to $3 ms
/// from now. One row if done.
pub static REFRESH: Query = Query {
    text: "UPDATE dss.locks SET ts = now(), ttl_ms = $3, \
                  expires_at = now() + $3 * interval '1 millisecond' \
            WHERE id = $1 AND token = $2 AND owner IS NOT NULL \
              AND (expires_at IS NULL OR expires_at > now()) \
           RETURNING 1",
    params: &[TEXT, INT8, INT8],
};

/// The owner of the shared hold of $1 with token $2 (of the id's current
/// shared row or an older one), if any.
pub static SHARE_OWNER: Query = Query {
    text: "SELECT owner FROM dss.lock_shares WHERE id = $1 AND token = $2",
    params: &[TEXT, INT8],
};

/// The owner of the semaphore hold of $1 with token $2, if any.
pub static SEM_OWNER: Query = Query {
    text: "SELECT owner FROM dss.sem_holders WHERE id = $1 AND token = $2",
    params: &[TEXT, INT8],
};

/// Sets the lease of the live semaphore hold of $1 with token $2 to $3 ms
/// from now: 'done', 'expired' or 'nolock'.
pub static SEM_REFRESH: Query = Query {
    text: "WITH upd AS ( \
              UPDATE dss.sem_holders h \
                 SET ts = now(), ttl_ms = $3, expires_at = now() + $3 * interval '1 millisecond' \
               WHERE h.id = $1 AND h.token = $2 AND h.expires_at > now() \
              RETURNING 1) \
           SELECT CASE WHEN EXISTS (SELECT 1 FROM upd) THEN 'done' \
                       WHEN EXISTS (SELECT 1 FROM dss.sem_holders h \
                                     WHERE h.id = $1 AND h.token = $2) THEN 'expired' \
                       ELSE 'nolock' END",
    params: &[TEXT, INT8, INT8],
};

/// The live queued requests of $1 ($2: of the semaphore $1, else of the
/// lock), in queue order: (ticket, owner, mode, permits, ms left of the
/// wait, $3 being the queue's slack over the caller's deadline).
pub static WAITERS: Query = Query {
    text: "SELECT w.ticket, w.owner, w.mode::int4, w.permits, \
                  greatest(0, floor(extract(epoch FROM w.until - now()) * 1000) - $3)::int8 \
             FROM dss.lock_waiters w \
            WHERE w.id = $1 AND (w.mode = 3) = $2 AND w.until > now() \
              AND EXISTS (SELECT 1 FROM pg_stat_get_activity(w.backend_pid)) \
            ORDER BY w.ticket",
    params: &[TEXT, BOOL, INT8],
};

/// Cancels the queued request $3 of $1 ($2 as in [`WAITERS`]): removes it
/// and wakes its caller, which then sees it gone. One row if it was there.
pub static CANCEL: Query = Query {
    text: "DELETE FROM dss.lock_waiters l \
            WHERE l.ticket = $3 AND l.id = $1 AND (l.mode = 3) = $2 \
           RETURNING pg_notify(CASE WHEN l.mode = 3 THEN dss.sem_channel(l.id) \
                                    ELSE 'dss_' || md5(l.id) END, '')",
    params: &[TEXT, BOOL, INT8],
};

/// Every id with a live hold: (id, is a semaphore), by kind and id.
pub static HELD: Query = Query {
    text: "SELECT id, false FROM dss.locks WHERE expires_at IS NULL OR expires_at > now() \
           UNION ALL \
           SELECT DISTINCT id, true FROM dss.sem_holders WHERE expires_at > now() \
           ORDER BY 2, 1",
    params: &[],
};

/// Live holds: (lock holds, exclusive and shared; semaphore holds).
pub static COUNT_HELD: Query = Query {
    text: "SELECT (SELECT count(*) FROM dss.locks \
                    WHERE owner IS NOT NULL AND (expires_at IS NULL OR expires_at > now())) \
                + (SELECT count(*) FROM dss.lock_shares s \
                     JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen \
                    WHERE s.expires_at IS NULL OR s.expires_at > now()), \
                  (SELECT count(*) FROM dss.sem_holders WHERE expires_at > now())",
    params: &[],
};

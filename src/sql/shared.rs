//! The statements of shared locks, downgrade and semaphores (tables
//! `dss.lock_shares`, `dss.sems`, `dss.sem_holders`; the PL/pgSQL functions
//! they call are in `sql/0006_shared.sql`, which explains the model: an id
//! held shared has a `dss.locks` row with a NULL owner, standing for its
//! shared holders).
//!
//! Off the exclusive hot path, these calls lock the id's (or semaphore's)
//! row first and then read what they need in fresh snapshots, which is
//! what PL/pgSQL gives: one round trip, several statements.

use postgres_types::Type;

use super::Query;

const TEXT: Type = Type::TEXT;
const INT4: Type = Type::INT4;
const INT8: Type = Type::INT8;

/// `dss_lock_shared`, one attempt: $1 id, $2 owner, $3 ttl_ms, $4 ticket
/// (0: not queued yet), $5 how long to stay queued (ms; 0: do not queue).
/// Returns the columns of `lock::WAIT_TRY` (token, ticket, channel, ms
/// left, armed), then a status: NULL, 'already' or 'cancelled'.
pub static SHARED_TRY: Query = Query {
    text: "SELECT * FROM dss.lock_shared_try($1, $2, $3, $4, $5)",
    params: &[TEXT, TEXT, INT8, INT8, INT8],
};

/// `dss_lock_shared_refresh`: $1 id, $2 owner, $3 new lease in ms (NULL:
/// its own ttl again). 'done', 'nolock', 'expired'.
pub static SHARED_REFRESH: Query = Query {
    text: "SELECT dss.lock_shared_refresh($1, $2, $3)",
    params: &[TEXT, TEXT, INT8],
};

/// `dss_unlock_shared`: $1 id, $2 owner (NULL: every shared holder), $3
/// actor of a forced release. 'done', 'nolock', 'expired'.
pub static SHARED_RELEASE: Query = Query {
    text: "SELECT dss.lock_shared_release($1, $2, $3)",
    params: &[TEXT, TEXT, TEXT],
};

/// `dss_lock_downgrade`: $1 id, $2 owner. (token, NULL) or (NULL,
/// 'nolock' | 'notowner').
pub static DOWNGRADE: Query = Query {
    text: "SELECT * FROM dss.lock_downgrade($1, $2)",
    params: &[TEXT, TEXT],
};

/// `dss_lock_holders`: $1 id. The live holders, exclusive or shared:
/// (owner, mode, permits, token, locked_at, expires_in_ms), by token.
pub static LOCK_HOLDERS: Query = Query {
    text: concat!(
        "SELECT owner, 1::int4, 1::int4, token, locked_at, ",
        expires_in_ms!(),
        " FROM dss.locks \
          WHERE id = $1 AND owner IS NOT NULL AND (expires_at IS NULL OR expires_at > now()) \
         UNION ALL \
         SELECT owner, 2::int4, 1::int4, token, locked_at, ",
        expires_in_ms!(),
        " FROM ( \
            SELECT s.* FROM dss.lock_shares s \
              JOIN dss.locks l ON l.id = s.id AND l.owner IS NULL AND l.token = s.gen \
             WHERE s.id = $1 AND (s.expires_at IS NULL OR s.expires_at > now())) AS sh \
         ORDER BY 4"
    ),
    params: &[TEXT],
};

/// `dss_sem_acquire`, one attempt: $1 id, $2 owner, $3 permits, $4
/// capacity, $5 ttl_ms, $6 ticket, $7 how long to stay queued (ms; 0: do
/// not queue). The shape of [`SHARED_TRY`]; statuses 'already',
/// 'capacity', 'cancelled'.
pub static SEM_TRY: Query = Query {
    text: "SELECT * FROM dss.sem_try($1, $2, $3, $4, $5, $6, $7)",
    params: &[TEXT, TEXT, INT4, INT4, INT8, INT8, INT8],
};

/// `dss_sem_refresh`: $1 id, $2 owner. Renews a live hold's lease by its
/// ttl: 'done', 'expired' (the hold's lease ended), 'nolock'.
pub static SEM_REFRESH: Query = Query {
    text: "WITH upd AS ( \
              UPDATE dss.sem_holders h \
                 SET ts = now(), expires_at = now() + h.ttl_ms * interval '1 millisecond' \
               WHERE h.id = $1 AND h.owner = $2 AND h.expires_at > now() \
              RETURNING 1) \
           SELECT CASE WHEN EXISTS (SELECT 1 FROM upd) THEN 'done' \
                       WHEN EXISTS (SELECT 1 FROM dss.sem_holders h \
                                     WHERE h.id = $1 AND h.owner = $2) THEN 'expired' \
                       ELSE 'nolock' END",
    params: &[TEXT, TEXT],
};

/// `dss_sem_release`: $1 id, $2 owner (NULL: every holder), $3 actor of a
/// forced release. 'done', 'nolock', 'expired'.
pub static SEM_RELEASE: Query = Query {
    text: "SELECT dss.sem_release($1, $2, $3)",
    params: &[TEXT, TEXT, TEXT],
};

/// `dss_sem_holders`: $1 id. The live holders: (owner, mode, permits,
/// token, locked_at, expires_in_ms), by token.
pub static SEM_HOLDERS: Query = Query {
    text: concat!(
        "SELECT owner, 3::int4, permits, token, locked_at, ",
        expires_in_ms!(),
        " FROM dss.sem_holders WHERE id = $1 AND expires_at > now() ORDER BY token"
    ),
    params: &[TEXT],
};

/// `dss_lock_clean`, for shared holds and permits: $1 owner prefix, $2
/// actor. How many were released.
pub static CLEAN_SHARED: Query = Query {
    text: "SELECT dss.clean_shared($1, $2)",
    params: &[TEXT, TEXT],
};

/// `dssctl sem list`: $1 id prefix. Every semaphore hold, expired leases
/// included: (id, capacity, owner, permits, token, locked_at, ts, ttl_ms,
/// expires_in_ms, expired), by id and token.
pub static SEM_LIST: Query = Query {
    text: concat!(
        "SELECT id, capacity, owner, permits, token, locked_at, ts, ttl_ms, ",
        expires_in_ms!(),
        ", expires_at <= now() FROM ( \
            SELECT h.*, s.capacity FROM dss.sem_holders h JOIN dss.sems s ON s.id = h.id \
             WHERE starts_with(h.id, $1)) AS sh \
         ORDER BY id, token"
    ),
    params: &[TEXT],
};

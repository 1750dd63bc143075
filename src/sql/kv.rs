//! The key-value statements (table `dss.kv`, see `sql/0003_kv.sql`).
//!
//! * $1 is always the bucket, $2 the key (or the keys, as an array).
//! * A row is live while `expires_at` is NULL or in the future (database
//!   clock); an expired row reads as absent everywhere and is overwritten by
//!   the next write of its key.
//! * Each write takes a new version: `greatest(nextval, previous + 1)`. On
//!   the ON CONFLICT path the previous version is read after the row lock,
//!   so versions of a key increase in commit order.
//! * Every statement reaches rows through the primary key (bucket, key):
//!   no call scans the table (`tests/kv.rs` checks the plans, with the
//!   statistics of a table where the bucket looks tiny).

use postgres_types::Type;

use super::Query;

const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;
const BYTEA: Type = Type::BYTEA;
const TEXT_ARRAY: Type = Type::TEXT_ARRAY;
const BYTEA_ARRAY: Type = Type::BYTEA_ARRAY;

/// A row of `dss.kv` (alias `kv`) is live.
macro_rules! live {
    () => {
        "(kv.expires_at IS NULL OR kv.expires_at > now())"
    };
}

/// INSERT ... ON CONFLICT writing `$value` with expiry `$expiry` into
/// ($1, $key) if `$cond` holds.
macro_rules! upsert {
    ($key:literal, $value:literal, [$($expiry:tt)*], $cond:literal) => {
        concat!(
            "INSERT INTO dss.kv AS kv (bucket, key, value, version, expires_at) \
             SELECT $1, ",
            $key,
            ", ",
            $value,
            ", nextval('dss.kv_version_seq'), ",
            $($expiry)*,
            " WHERE ",
            $cond,
            " \
             ON CONFLICT (bucket, key) DO UPDATE \
                SET value = excluded.value, \
                    version = greatest(excluded.version, kv.version + 1), \
                    expires_at = excluded.expires_at, updated_at = now(), \
                    created_at = CASE WHEN ",
            live!(),
            " THEN kv.created_at ELSE now() END"
        )
    };
}

/// `dss_kv_set` / `dss_kv_set_ttl`: $3 value, $4 ttl_ms (0: none). Returns
/// the version written.
pub static SET: Query = Query {
    text: concat!(
        upsert!("$2", "$3", [expiry!("$4")], "true"),
        " RETURNING version"
    ),
    params: &[TEXT, TEXT, BYTEA, INT8],
};

/// `dss_kv_get` / `dss_kv_get_version`: (value, version) of a live key.
pub static GET: Query = Query {
    text: concat!(
        "SELECT value, version FROM dss.kv AS kv WHERE bucket = $1 AND key = $2 AND ",
        live!()
    ),
    params: &[TEXT, TEXT],
};

/// `dss_kv_exists`.
pub static EXISTS: Query = Query {
    text: concat!(
        "SELECT EXISTS (SELECT 1 FROM dss.kv AS kv WHERE bucket = $1 AND key = $2 AND ",
        live!(),
        ")"
    ),
    params: &[TEXT, TEXT],
};

/// `dss_kv_delete` (an expired key is removed too; absent is no error).
pub static DELETE: Query = Query {
    text: "DELETE FROM dss.kv WHERE bucket = $1 AND key = $2",
    params: &[TEXT, TEXT],
};

/// `dss_kv_list_keys` without a prefix: $3 cursor (keys after it; '' from
/// the start), $4 how many rows to read (the caller asks one more than it
/// returns, to know whether there is a next page).
pub static LIST: Query = Query {
    text: concat!(
        "SELECT key FROM dss.kv AS kv WHERE bucket = $1 AND key > $2 AND ",
        live!(),
        " ORDER BY key LIMIT $3"
    ),
    params: &[TEXT, TEXT, INT8],
};

/// `dss_kv_list_keys` with a prefix: as LIST, keys in [$4, $5): $4 the
/// prefix, $5 the smallest string above every key starting with it.
pub static LIST_PREFIX: Query = Query {
    text: concat!(
        "SELECT key FROM dss.kv AS kv WHERE bucket = $1 AND key > $2 \
            AND key >= $4 AND key < $5 AND ",
        live!(),
        " ORDER BY key LIMIT $3"
    ),
    params: &[TEXT, TEXT, INT8, TEXT, TEXT],
};

/// `dss_kv_increment`: $3 delta. The value is a decimal ASCII integer (an
/// absent or expired key counts as 0); a value that is not one fails in
/// `dss.kv_integer` with SQLSTATE 22P02, an overflow with 22003 (both
/// -EINVAL). A live key keeps its expiry. Returns the new integer.
pub static INCREMENT: Query = Query {
    text: concat!(
        "INSERT INTO dss.kv AS kv (bucket, key, value, version) \
         VALUES ($1, $2, convert_to($3::text, 'UTF8'), nextval('dss.kv_version_seq')) \
         ON CONFLICT (bucket, key) DO UPDATE \
            SET value = convert_to((CASE WHEN ",
        live!(),
        " THEN dss.kv_integer(kv.value) ELSE 0 END + $3)::text, 'UTF8'), \
                version = greatest(excluded.version, kv.version + 1), \
                expires_at = CASE WHEN ",
        live!(),
        " THEN kv.expires_at END, \
                created_at = CASE WHEN ",
        live!(),
        " THEN kv.created_at ELSE now() END, \
                updated_at = now() \
         RETURNING convert_from(value, 'UTF8')::int8"
    ),
    params: &[TEXT, TEXT, INT8],
};

/// `dss_kv_cas`: $3 expected version (0: the key must be absent or
/// expired), $4 value. Writes without expiry. Returns the new version, or
/// NULL if the version did not match.
pub static CAS: Query = Query {
    text: concat!(
        "WITH upd AS ( \
            UPDATE dss.kv AS kv SET value = $4, \
                   version = greatest(nextval('dss.kv_version_seq'), kv.version + 1), \
                   expires_at = NULL, updated_at = now() \
             WHERE bucket = $1 AND key = $2 AND $3 <> 0 AND version = $3 AND ",
        live!(),
        " RETURNING version), \
         ins AS ( \
            INSERT INTO dss.kv AS kv (bucket, key, value, version) \
            SELECT $1, $2, $4, nextval('dss.kv_version_seq') WHERE $3 = 0 \
            ON CONFLICT (bucket, key) DO UPDATE \
               SET value = excluded.value, \
                   version = greatest(excluded.version, kv.version + 1), \
                   expires_at = NULL, created_at = now(), updated_at = now() \
             WHERE NOT ",
        live!(),
        " RETURNING version) \
         SELECT coalesce((SELECT version FROM upd), (SELECT version FROM ins))"
    ),
    params: &[TEXT, TEXT, INT8, BYTEA],
};

/// `dss_kv_get_many`: $2 keys. One row per key, in the caller's order:
/// (value or NULL). A scalar subquery per key: one primary-key lookup each,
/// whatever the planner believes about the bucket's size (a join let it
/// pick a nested loop over the whole bucket per key).
pub static GET_MANY: Query = Query {
    text: concat!(
        "SELECT (SELECT kv.value FROM dss.kv AS kv \
                  WHERE kv.bucket = $1 AND kv.key = r.key AND ",
        live!(),
        ") FROM unnest($2::text[]) WITH ORDINALITY AS r(key, ord) ORDER BY r.ord"
    ),
    params: &[TEXT, TEXT_ARRAY],
};

/// `dss_kv_set_many`: $2 keys, $3 values (same length, keys distinct).
/// Rows are written in key order, so concurrent batches cannot deadlock.
pub static SET_MANY: Query = Query {
    text: concat!(
        "INSERT INTO dss.kv AS kv (bucket, key, value, version) \
         SELECT $1, r.key, r.value, nextval('dss.kv_version_seq') \
           FROM unnest($2::text[], $3::bytea[]) AS r(key, value) ORDER BY r.key \
         ON CONFLICT (bucket, key) DO UPDATE \
            SET value = excluded.value, \
                version = greatest(excluded.version, kv.version + 1), \
                expires_at = NULL, updated_at = now(), \
                created_at = CASE WHEN ",
        live!(),
        " THEN kv.created_at ELSE now() END"
    ),
    params: &[TEXT, TEXT_ARRAY, BYTEA_ARRAY],
};

/// `dss_kv_delete_many`: $2 keys. `dss.kv_delete_many` deletes them one
/// primary-key lookup at a time, in key order (so concurrent batches cannot
/// deadlock); see `sql/0003_kv.sql`.
pub static DELETE_MANY: Query = Query {
    text: "SELECT dss.kv_delete_many($1, $2)",
    params: &[TEXT, TEXT_ARRAY],
};

/// `dss_kv_set_fenced`: $3 value, $4 lock id, $5 token. Writes (without
/// expiry) only if the lock is held with that token, checked by
/// `dss_lock_is_held`, which share-locks the lock row until commit: the
/// lock cannot change hands between the check and the write. Returns
/// (held, new version or NULL).
pub static SET_FENCED: Query = Query {
    text: concat!(
        "WITH fence AS (SELECT dss_lock_is_held($4, $5) AS held), \
         w AS (",
        upsert!(
            "$2",
            "$3",
            ["NULL::timestamptz"],
            "(SELECT held FROM fence)"
        ),
        " RETURNING version) \
         SELECT (SELECT held FROM fence), (SELECT version FROM w)"
    ),
    params: &[TEXT, TEXT, BYTEA, TEXT, INT8],
};

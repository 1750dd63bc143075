//! Every SQL statement the library runs, in one place.
//!
//! All of them are parameterised and prepared once per connection (see
//! `pool::Statements`). Each lock call is exactly one statement, so one round
//! trip and one autocommit transaction; where a call must tell "no such lock"
//! from "someone else's lock", that is decided inside the same statement, so
//! there is no window between a check and a write.

/// Schema version this library needs (`dss.schema_info.version`, written by
/// `sql/`). A newer schema is accepted: migrations only add.
pub const SCHEMA_VERSION: i32 = 1;

/// Highest applied migration. A missing table is SQLSTATE 42P01.
pub const SCHEMA_VERSION_QUERY: &str = "SELECT max(version) FROM dss.schema_info";

/// `dss_lock`: $1 id, $2 owner. One row affected: taken; none: already held.
/// ON CONFLICT DO NOTHING waits for a concurrent inserter of the same id and
/// then does nothing if it committed, so exactly one of two callers wins,
/// without an error (and an error line in the server log) for the loser.
pub const LOCK: &str = "INSERT INTO dss.locks (id, owner) VALUES ($1, $2) \
     ON CONFLICT (id) DO NOTHING";

/// `dss_lock_refresh`: $1 id, $2 owner. Returns (refreshed, holder): the
/// holder is read from the statement's snapshot, so when nothing was
/// refreshed it says whether the lock was absent (NULL) or someone else's.
pub const REFRESH: &str = "WITH upd AS ( \
         UPDATE dss.locks SET ts = now() WHERE id = $1 AND owner = $2 RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM upd), (SELECT owner FROM dss.locks WHERE id = $1)";

/// `dss_unlock` with an owner: $1 id, $2 owner. Returns (released, holder),
/// as REFRESH.
pub const UNLOCK: &str = "WITH del AS ( \
         DELETE FROM dss.locks WHERE id = $1 AND owner = $2 RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM del), (SELECT owner FROM dss.locks WHERE id = $1)";

/// `dss_unlock` with a NULL owner (force): $1 id. Rows affected: 0 or 1.
pub const UNLOCK_FORCE: &str = "DELETE FROM dss.locks WHERE id = $1";

/// `dss_lock_status`: $1 id. Returns (owner, ts); the timestamp travels as
/// a binary timestamptz (microseconds since 2000-01-01 UTC), so no time zone
/// or DST setting on either side can shift it.
pub const STATUS: &str = "SELECT owner, ts FROM dss.locks WHERE id = $1";

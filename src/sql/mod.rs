//! Every SQL statement the library runs, in one place: `lock.rs` for the
//! lock calls, `shared.rs` for shared locks and semaphores, `kv.rs` for the
//! key-value store. The schema itself (tables, the few PL/pgSQL functions) is in
//! the numbered migrations under `sql/` at the top of the repository.
//!
//! Each statement is a [`Query`]: its text and parameter types. A connection
//! prepares a query the first time it runs it and keeps the prepared
//! statement for its lifetime (`pool::Conn::prepared`), so a call costs one
//! round trip: Bind/Execute/Sync, never a Parse.

use postgres_types::Type;

/// An expiry for a ttl in milliseconds held by `$p` (a parameter or a
/// column): NULL (never) for 0. Used by the lock and kv statements.
macro_rules! expiry {
    ($p:literal) => {
        concat!(
            "CASE WHEN ",
            $p,
            " > 0 THEN now() + ",
            $p,
            " * interval '1 millisecond' END"
        )
    };
}

/// Milliseconds left on the lease of the row in scope, -1 if none.
macro_rules! expires_in_ms {
    () => {
        "CASE WHEN expires_at IS NULL THEN -1::int8 \
         ELSE greatest(0, floor(extract(epoch FROM expires_at - now()) * 1000))::int8 END"
    };
}

/// RETURNING expression of a statement deleting lock rows `l`: wakes the
/// waiters of each removed id (NOTIFY on its channel) if there are any: a
/// waiter that failed to take an id sets `waited` on its row
/// (`lock::WAIT_TRY`), so the release reads nothing but the row it deletes.
macro_rules! wake_waiters {
    () => {
        "CASE WHEN l.waited THEN pg_notify('dss_' || md5(l.id), '') END"
    };
}

pub mod kv;
pub mod lock;
pub mod shared;
pub mod token;

/// Schema version this library needs (`dss.schema_info.version`, written by
/// `sql/`). A newer schema is accepted: migrations only add.
pub const SCHEMA_VERSION: i32 = 8;

/// Settings of every library session, set once when it is opened
/// ([`session_settings_sql`]; one round trip per session, not per call). `enable_seqscan = off`: every statement here finds its
/// rows through an index (lock id, bucket and key, the waiter queue), but a
/// generic plan made while a table was nearly empty is a sequential scan,
/// and stays one until the next ANALYZE of that table; under lock/unlock
/// churn the table fills with dead rows meanwhile and every call reads all
/// of them (measured with dss_bench: pair 2 to 5 times slower, getting
/// worse by the second). The planner still scans a table when no index can
/// serve the statement (`dss_lock_clean` by owner prefix reads the id index
/// whole). The benchmark's libpq baseline sets the same.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[("enable_seqscan", "off")];

/// [`SESSION_SETTINGS`] as SQL: `SET name = value; …`.
pub fn session_settings_sql() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = {value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Highest applied migration. A missing table is SQLSTATE 42P01.
pub const SCHEMA_VERSION_QUERY: &str = "SELECT max(version) FROM dss.schema_info";

/// What the session's role lacks of the privileges the library needs
/// (`sql/0007_roles.sql`), as `{"INSERT on dss.locks", …}` (empty if
/// nothing), and the session's backend: its pid and its start (µs since the
/// epoch), read once when the session opens; with the start, a pid that a
/// later session reuses is not taken for this one's (the fence).
pub const SESSION_CHECK_QUERY: &str = "SELECT current_user::text, dss.missing_privileges(), \
     pg_backend_pid(), (extract(epoch FROM backend_start) * 1000000)::int8 \
     FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// Ends the backends of sessions given up with a statement maybe in flight
/// ($1 pids, $2 starts, as [`SESSION_CHECK_QUERY`]) and counts those still there.
/// A backend that is told to end while it waits for its client's next
/// message ends without running what it has not read yet; any role may end
/// its own sessions.
pub const FENCE_QUERY: &str = "SELECT count(pg_terminate_backend(a.pid)) \
     FROM pg_stat_activity a \
     JOIN unnest($1::int4[], $2::int8[]) AS f(pid, started) \
       ON a.pid = f.pid \
      AND (extract(epoch FROM a.backend_start) * 1000000)::int8 = f.started";

/// The migrations shipped with this build (`sql/*.sql`), in order, as
/// (file name, text). `dssctl migrate` applies them.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_locks.sql", include_str!("../../sql/0001_locks.sql")),
    ("0002_leases.sql", include_str!("../../sql/0002_leases.sql")),
    ("0003_kv.sql", include_str!("../../sql/0003_kv.sql")),
    (
        "0004_fast_path.sql",
        include_str!("../../sql/0004_fast_path.sql"),
    ),
    (
        "0005_domains.sql",
        include_str!("../../sql/0005_domains.sql"),
    ),
    ("0006_shared.sql", include_str!("../../sql/0006_shared.sql")),
    ("0007_roles.sql", include_str!("../../sql/0007_roles.sql")),
    (
        "0008_batch_path.sql",
        include_str!("../../sql/0008_batch_path.sql"),
    ),
];

/// One parameterised statement. Declared as `static` so that each has one
/// address, which identifies it in a connection's cache of prepared
/// statements.
pub struct Query {
    pub text: &'static str,
    pub params: &'static [Type],
}

impl Query {
    /// The key of this query in a prepared-statement cache.
    pub fn key(&'static self) -> usize {
        self as *const Query as usize
    }
}

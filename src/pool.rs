//! Connections: one PostgreSQL session with its prepared statements, and
//! the pool that hands them out ([`Pool`]), built on `std::sync` only so
//! that it works the same in a process forked after `dss_init` (see
//! `handle.rs`). It connects in a short-lived thread, so that a caller never
//! waits for a connection (name resolution included) past its deadline.
//!
//! The pool does not test a connection with a round trip on checkout. A
//! connection is checked for free ([`Conn::is_stale`]: anything to read on
//! an idle session means the server ended it), and a call whose statement
//! the server says did not run is retried on another connection
//! (`handle.rs`).
//!
//! Every call has a deadline (`call_timeout_ms`), which [`Conn`] carries:
//! waiting for a connection, connecting and each round trip end there.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use postgres_types::ToSql;

use crate::config::Settings;
use crate::error::{Error, Kind, Result};
use crate::pq::{Connection, Row};
use crate::sql::{self, Query};

type PgResult<T> = crate::pq::Result<T>;

thread_local! {
    static ROUND_TRIPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many round trips to the server the calling thread has made through
/// [`Conn`] so far (a statement, a preparation, a simple query each count
/// one; connecting does not). Lets tests and benchmarks check that a call
/// costs what it should.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.with(|n| n.get())
}

fn round_trip() {
    ROUND_TRIPS.with(|n| n.set(n.get() + 1));
}

/// A preparation or a session setting is not the caller's statement: if
/// it timed out or lost the session, the statement surely was not sent.
fn not_the_statement(e: crate::pq::Error) -> crate::pq::Error {
    use crate::pq::Error as E;
    match e {
        E::TimedOut { .. } => E::TimedOut { sent: false },
        E::Lost { message, .. } => E::Lost {
            message,
            sent: false,
        },
        e => e,
    }
}

/// Hashes a [`Query::key`] (an address, unique and fixed) with one
/// multiplication, not SipHash: the cache is looked up on every call.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One database session.
pub struct Conn {
    pub pg: Connection,
    /// Names of the statements prepared on this session, by [`Query::key`].
    prepared: HashMap<usize, CString, BuildHasherDefault<AddressHasher>>,
    /// Set when a call saw this session fail: the pool drops it.
    pub broken: bool,
    /// The session's backend (pid, start; [`sql::SESSION_CHECK_QUERY`]).
    pub backend: (i32, i64),
    /// When the call using the session must be over.
    pub deadline: Instant,
    call_timeout: Duration,
    /// The thread that used the session last ([`Pool`] hands it back to
    /// that thread first).
    last_user: usize,
}

impl Conn {
    /// Connects (within `deadline`, else within connect_timeout per host),
    /// applies the session settings and checks the schema version.
    /// Errors: `NotConnected` (cannot reach or log in), `TooManyUsers`,
    /// `Protocol` (schema missing or too old).
    /// `stop`: set when the pool making it is dropped (the attempt is then
    /// given up).
    pub fn connect(
        settings: &Settings,
        deadline: Option<Instant>,
        stop: Option<&AtomicBool>,
    ) -> Result<Conn> {
        let mut pg =
            Connection::connect_unless(&settings.connect, deadline, stop).map_err(connect_error)?;
        let setup = deadline.unwrap_or_else(|| Instant::now() + settings.call_timeout);
        pg.batch_execute_until(&sql::session_settings_sql(), Some(setup))
            .map_err(connect_error)?;
        let backend = check_session(&mut pg, setup)?;
        Ok(Conn {
            pg,
            prepared: HashMap::default(),
            broken: false,
            backend,
            deadline: Instant::now() + settings.call_timeout,
            call_timeout: settings.call_timeout,
            last_user: 0,
        })
    }

    /// Gives the next round trip a full call_timeout (dss_lock_wait, whose
    /// round trips each have one).
    pub fn renew_deadline(&mut self) {
        self.deadline = Instant::now() + self.call_timeout;
    }

    /// Runs `q`, prepared on this session by a round trip the first time.
    pub fn query(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Vec<Row>> {
        self.run(q, params).map(crate::pq::PgResult::into_rows)
    }

    fn run(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<crate::pq::PgResult> {
        let deadline = Some(self.deadline);
        let name = match self.prepared.get(&q.key()) {
            Some(name) => name,
            None => {
                round_trip();
                let name = CString::new(format!("dss{}", self.prepared.len() + 1))
                    .expect("no NUL in a number");
                let text = CString::new(q.text).expect("no NUL in the library's SQL");
                self.pg
                    .prepare(&name, &text, q.params, deadline)
                    .map_err(not_the_statement)?;
                self.prepared.entry(q.key()).or_insert(name)
            }
        };
        round_trip();
        self.pg.execute(name, q.params, params, deadline)
    }

    /// Exactly one row, or an error that says how many there were.
    pub fn query_one(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Row> {
        self.query_opt(q, params)?.ok_or_else(|| {
            crate::pq::Error::Protocol("the statement returned no row, 1 expected".to_string())
        })
    }

    /// One row or none.
    pub fn query_opt(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Option<Row>> {
        self.run(q, params)?.into_row()
    }

    /// A command without parameters or results (LISTEN, UNLISTEN), by the
    /// simple query protocol.
    pub fn simple(&mut self, sql: &str) -> PgResult<()> {
        round_trip();
        self.pg.batch_execute_until(sql, Some(self.deadline))
    }

    /// True if the session is known to be dead, found without a round trip.
    /// A session that dies just after this check fails the call in a way
    /// `handle::Handle::run` recognises and retries when it can.
    pub fn is_stale(&mut self) -> bool {
        self.broken || self.pg.is_stale()
    }

    fn is_dead(&self) -> bool {
        self.broken || self.pg.is_broken()
    }
}

fn connect_error(e: crate::pq::Error) -> Error {
    let kind = match e.code() {
        Some("53300") => Kind::TooManyUsers,
        _ => Kind::NotConnected,
    };
    let detail = match &e {
        crate::pq::Error::TimedOut { .. } => "no answer within call_timeout_ms".to_string(),
        e => e.to_string(),
    };
    Error::new(kind, format!("cannot connect to PostgreSQL: {detail}"))
}

/// The highest migration applied (`dss.schema_info`), None if the schema
/// is not there yet (undefined table or schema). By the unnamed statement:
/// nothing stays prepared on the session. Also used by `dssctl migrate`.
pub fn schema_version(pg: &mut Connection, deadline: Option<Instant>) -> PgResult<Option<i32>> {
    match pg.query_once_until(sql::SCHEMA_VERSION_QUERY, &[], deadline) {
        Ok(rows) => Ok(rows.first().and_then(|row| row.get(0))),
        Err(e) if matches!(e.code(), Some("42P01" | "3F000")) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks the schema version and the role's grants; returns the session's
/// backend (pid, start), read by the same round trip as the grants.
fn check_session(pg: &mut Connection, deadline: Instant) -> Result<(i32, i64)> {
    let expected = sql::SCHEMA_VERSION;
    let found = schema_version(pg, Some(deadline)).map_err(|e| {
        let err = Error::from_pg("cannot read dss.schema_info", &e);
        if e.code() == Some("42501") {
            not_permitted(&err.message, pg.user().as_deref())
        } else {
            err
        }
    })?;
    match found {
        Some(v) if v >= expected => {}
        _ => {
            return Err(Error::new(
                Kind::Protocol,
                format!(
                    "database schema version {} found, version {expected} expected: \
                     apply the sql/ migrations (psql -v ON_ERROR_STOP=1 -f each file, or make migrate)",
                    found.unwrap_or(0)
                ),
            ));
        }
    }
    let rows = pg
        .query_once_until(sql::SESSION_CHECK_QUERY, &[], Some(deadline))
        .map_err(|e| Error::from_pg("cannot check the role's privileges", &e))?;
    let row = rows.first().ok_or_else(|| {
        Error::new(
            Kind::Protocol,
            "no row for this session in pg_stat_activity",
        )
    })?;
    let role: String = row.get(0);
    let missing: Vec<String> = row.get(1);
    if !missing.is_empty() {
        return Err(not_permitted(
            &format!("role \"{role}\" lacks {}", missing.join(", ")),
            Some(role.as_str()),
        ));
    }
    Ok((row.get(2), row.get(3)))
}

/// `-EPERM` from dss_init: what the role may not do, and the grant that
/// fixes it.
fn not_permitted(what: &str, role: Option<&str>) -> Error {
    Error::new(
        Kind::PermissionDenied,
        format!(
            "{what}: the schema owner must grant the library's role: GRANT dss_client TO {}",
            role.unwrap_or("<login role>")
        ),
    )
}

/// Connection attempts still running in helper threads. Dropping a pool
/// waits until there is none, so that once `dss_fini` returns no thread of
/// the library uses libpq or OpenSSL: a process that exits then cannot
/// crash in OpenSSL's exit handlers while a helper thread is in a TLS
/// handshake (seen with dssctl: SIGSEGV at exit in 1 run of 4 over TLS).
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    none: Condvar,
    /// Set (under `n`) when the pool is dropped: no attempt starts after
    /// that, and attempts running give up.
    closing: AtomicBool,
}

/// One connection attempt counted in its pool's [`InFlight`], holding the
/// pool's state for the attempt's thread; ends when dropped.
struct Ticket(Arc<Shared>);

impl InFlight {
    /// No work starts from now on, and attempts running stop.
    fn close(&self) {
        let _n = self.n.lock().unwrap_or_else(PoisonError::into_inner);
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until no work is in flight, or `bound` passes (an attempt that
    /// does not end: connect_timeout=0 and a frozen server).
    fn wait_none(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut n = self.n.lock().unwrap_or_else(PoisonError::into_inner);
        while *n > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            n = self
                .none
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let f = &self.0.in_flight;
        let mut n = f.n.lock().unwrap_or_else(PoisonError::into_inner);
        *n -= 1;
        if *n == 0 {
            f.none.notify_all();
        }
    }
}

/// Longest a pool's drop waits for its helper threads' libpq work.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How long a checkout may wait: the pool timeout or the call's deadline,
/// whichever comes first (and whether that is the call's).
fn wait_end(pool_timeout: Duration, deadline: Instant) -> (Instant, bool) {
    let pool_end = Instant::now() + pool_timeout;
    if deadline <= pool_end {
        (deadline, true)
    } else {
        (pool_end, false)
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::new(
        Kind::TimedOut,
        format!(
            "no pooled connection became free within {} ms (raise pool_size or pool_timeout_ms)",
            timeout.as_millis()
        ),
    )
}

/// The call's deadline passed before its statement was sent.
fn call_timed_out() -> Error {
    Error::new(
        Kind::TimedOut,
        "call_timeout_ms passed while waiting for a database connection (nothing was sent)",
    )
}

/// A pool of connections on `std::sync` only (no helper thread but the
/// ones that connect, nothing that a `fork()` could leave locked), used in
/// every process.
///
/// A connection goes back to the thread that used it last, when that
/// thread asks again and it is free: a session that stays with one thread
/// keeps its backend's and the client's caches warm. Measured here, a pool
/// that handed sessions round threads (r2d2) cost each call about 2 µs more
/// client time than one session per thread.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    state: Mutex<State>,
    freed: Condvar,
    /// Connecting threads still running.
    in_flight: InFlight,
}

struct State {
    // Boxed: a checkout moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Conn>>,
    total: u32,
    /// Threads waiting in `get` for a connection to come back.
    waiting: u32,
}

/// The calling thread, as a number that no other live thread has: the
/// address of a thread-local.
fn this_thread() -> usize {
    thread_local! {
        static THREAD: u8 = const { 0 };
    }
    THREAD.with(|t| std::ptr::from_ref(t) as usize)
}

impl Shared {
    /// A ticket for a connection attempt, unless the pool is closing.
    fn enter(self: &Arc<Self>) -> Option<Ticket> {
        let f = &self.in_flight;
        let mut n = f.n.lock().unwrap_or_else(PoisonError::into_inner);
        if f.closing.load(Ordering::SeqCst) {
            return None;
        }
        *n += 1;
        Some(Ticket(self.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the state after a connection came back or went away, and
    /// wakes one waiting thread, if any: a condvar notification is a system
    /// call, only paid when some thread waits.
    fn release(&self, st: std::sync::MutexGuard<'_, State>) {
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.freed.notify_one();
        }
    }
}

/// A place in the pool taken for a connection being made: given back if
/// the connection is not made, or made for nobody.
struct Slot(Option<Arc<Shared>>);

impl Slot {
    /// The connection was handed to a caller: the place is its now.
    fn taken(mut self) {
        self.0 = None;
    }

    /// The caller gave up waiting: the connection serves the next call.
    fn keep_idle(mut self, conn: Box<Conn>) {
        if let Some(shared) = self.0.take() {
            let mut st = shared.lock();
            st.idle.push(conn);
            shared.release(st);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            let mut st = shared.lock();
            st.total -= 1;
            shared.release(st);
        }
    }
}

impl Pool {
    /// A pool holding `first` (already connected), or nothing yet.
    pub fn new(settings: &Settings, first: Option<Conn>) -> Pool {
        let total = u32::from(first.is_some());
        Pool {
            shared: Arc::new(Shared {
                settings: settings.clone(),
                state: Mutex::new(State {
                    idle: first.into_iter().map(Box::new).collect(),
                    total,
                    waiting: 0,
                }),
                freed: Condvar::new(),
                in_flight: InFlight::default(),
            }),
        }
    }

    /// A live-looking connection for a call ending at `deadline`: stale ones
    /// found on the way are dropped.
    pub fn checkout(&self, deadline: Instant) -> Result<Checkout<'_>> {
        loop {
            let mut c = self.get(deadline)?;
            if c.is_stale() {
                c.broken = true;
                continue;
            }
            c.deadline = deadline;
            return Ok(c);
        }
    }

    /// The connection this thread used last if it is free, else the one
    /// free the longest, else a new one while there are fewer than
    /// pool_size, else the first one given back before the wait ends.
    fn get(&self, deadline: Instant) -> Result<Checkout<'_>> {
        let shared = &self.shared;
        let (until, call_ends) = wait_end(shared.settings.pool_timeout, deadline);
        let me = this_thread();
        let mut st = shared.lock();
        loop {
            if !st.idle.is_empty() {
                let i = st.idle.iter().rposition(|c| c.last_user == me).unwrap_or(0);
                let conn = st.idle.remove(i);
                return Ok(Checkout {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if st.total < shared.settings.pool_size {
                st.total += 1;
                drop(st);
                return self.connect(Slot(Some(shared.clone())), deadline);
            }
            let now = Instant::now();
            if now >= until {
                return Err(if call_ends {
                    call_timed_out()
                } else {
                    timed_out(shared.settings.pool_timeout)
                });
            }
            st.waiting += 1;
            st = shared
                .freed
                .wait_timeout(st, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            st.waiting -= 1;
        }
    }

    /// Makes a connection in a thread of its own, waiting for it until
    /// `deadline`; one made after that serves the next call.
    fn connect(&self, slot: Slot, deadline: Instant) -> Result<Checkout<'_>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let Some(ticket) = self.shared.enter() else {
            return Err(Error::new(Kind::Communication, "the pool is closed"));
        };
        let spawned = std::thread::Builder::new()
            .name("dss-connect".to_string())
            .spawn(move || {
                // The ticket ends after the connection is handed over or
                // kept idle.
                let shared = &ticket.0;
                let stop = Some(&shared.in_flight.closing);
                let made = Conn::connect(&shared.settings, None, stop).map(Box::new);
                // Nobody waits any more: a connection made serves the next
                // call; a failure gives its place back (the slot's drop).
                if let Err(mpsc::SendError((Ok(conn), slot))) = tx.send((made, slot)) {
                    slot.keep_idle(conn);
                }
            });
        if let Err(e) = spawned {
            // The slot went with the closure and was given back.
            return Err(Error::new(
                Kind::OutOfMemory,
                format!("cannot start a thread to connect: {e}"),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((Ok(conn), slot)) => {
                slot.taken();
                Ok(Checkout {
                    pool: self,
                    conn: Some(conn),
                })
            }
            Ok((Err(e), _slot)) => Err(Error::new(Kind::Communication, e.message)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::new(
                Kind::TimedOut,
                "call_timeout_ms passed while connecting to the database (nothing was sent)",
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::new(
                Kind::Communication,
                "the connecting thread ended without a connection",
            )),
        }
    }
}

impl Drop for Pool {
    /// Waits for connecting threads, then closes the idle connections here
    /// (not in a thread that would still hold the pool).
    fn drop(&mut self) {
        self.shared.in_flight.close();
        self.shared.in_flight.wait_none(DRAIN_LIMIT);
        let idle = std::mem::take(&mut self.shared.lock().idle);
        drop(idle);
    }
}

/// A checked-out connection; goes back to its pool when dropped (or is
/// discarded if marked broken).
pub struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<Box<Conn>>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let shared = &self.pool.shared;
        let mut st = shared.lock();
        // A dead connection is dropped after the lock is released.
        let dead = if conn.is_dead() {
            st.total -= 1;
            Some(conn)
        } else {
            conn.last_user = this_thread();
            st.idle.push(conn);
            None
        };
        shared.release(st);
        drop(dead);
    }
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("checked out")
    }
}

impl std::ops::DerefMut for Checkout<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("checked out")
    }
}

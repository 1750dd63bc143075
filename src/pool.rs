//! Connections: one PostgreSQL session with its prepared statements, and the
//! two pools that hand them out.
//!
//! * [`R2d2Pool`]: an `r2d2` pool of connections, used by the one
//!   process that started r2d2 (see `handle.rs` for why only one).
//! * [`LocalPool`]: a small pool built on `std::sync` only, used in any other
//!   process (after `fork()`), where r2d2's `parking_lot` state and helper
//!   threads cannot be trusted. It connects in a short-lived thread, so that
//!   a caller never waits for a connection (name resolution included) past
//!   its deadline.
//!
//! Neither pool tests a connection with a round trip on checkout. A
//! connection is checked for free ([`Conn::is_stale`]: anything to read on
//! an idle session means the server ended it), and a call whose statement
//! the server says did not run is retried on another connection
//! (`handle.rs`).
//!
//! Every call has a deadline (`call_timeout_ms`), which [`Conn`] carries:
//! waiting for a connection, connecting and each round trip end there.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    /// For a connection made by r2d2's threads: released once it is closed
    /// (declared last: dropped after `pg`).
    ticket: Option<Ticket>,
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
            ticket: None,
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

/// Whether the server was reachable at the last connection attempt, and why
/// not. Lets a call fail fast with `-ECOMM` during an outage instead of
/// waiting the whole pool timeout for a connection that cannot come.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    last_error: Mutex<Option<Error>>,
    /// Connection attempts in progress (a server that does not answer keeps
    /// them there until connect_timeout).
    connecting: AtomicU32,
}

impl Health {
    fn record<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => self.down.store(false, Ordering::SeqCst),
            Err(e) => {
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                self.down.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The last connection error, as it was, if the server is known down.
    fn down_because(&self) -> Option<Error> {
        if !self.down.load(Ordering::SeqCst) {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Libpq work that may still run in a helper thread: connection attempts,
/// and connections made by them until they are closed. Dropping a pool
/// waits until there is none, so that once `dss_fini` returns no thread of
/// the library uses libpq or OpenSSL: a process that exits then cannot
/// crash in OpenSSL's exit handlers while a helper thread is in a TLS
/// handshake (seen with dssctl: SIGSEGV at exit in 1 run of 4 over TLS).
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    none: Condvar,
    /// Set (under `n`) when the pool is dropped: no work starts after
    /// that, and attempts running give up (r2d2 would otherwise retry a
    /// failed attempt for as long as another one keeps its pool alive).
    closing: AtomicBool,
}

/// One piece of [`InFlight`] work; ends when dropped.
pub struct Ticket(Arc<InFlight>);

impl InFlight {
    /// A ticket, unless the pool is closing.
    fn enter(self: &Arc<Self>) -> Option<Ticket> {
        let mut n = self.n.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        *n += 1;
        Some(Ticket(self.clone()))
    }

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
        let mut n = self.0.n.lock().unwrap_or_else(PoisonError::into_inner);
        *n -= 1;
        if *n == 0 {
            self.0.none.notify_all();
        }
    }
}

/// Longest a pool's drop waits for its helper threads' libpq work.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// r2d2's view of how to make and judge a [`Conn`].
pub struct Manager {
    settings: Settings,
    health: Arc<Health>,
    in_flight: Arc<InFlight>,
}

impl r2d2::ManageConnection for Manager {
    /// Boxed: checkouts move it around, a pointer is cheaper to move.
    type Connection = Box<Conn>;
    type Error = Error;

    /// In r2d2's threads, bounded by connect_timeout per host (callers wait
    /// no longer than their own deadline).
    fn connect(&self) -> Result<Box<Conn>> {
        let Some(ticket) = self.in_flight.enter() else {
            return Err(Error::new(Kind::NotConnected, "the pool is closed"));
        };
        self.health.connecting.fetch_add(1, Ordering::SeqCst);
        let stop = Some(&self.in_flight.closing);
        let result = Conn::connect(&self.settings, None, stop).map(|mut c| {
            // Held until the connection is closed, wherever that happens.
            c.ticket = Some(ticket);
            Box::new(c)
        });
        self.health.connecting.fetch_sub(1, Ordering::SeqCst);
        self.health.record(&result);
        result
    }

    /// Only called right after `connect` (test_on_check_out is off), which
    /// has just done round trips of its own.
    fn is_valid(&self, _conn: &mut Box<Conn>) -> Result<()> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut Box<Conn>) -> bool {
        conn.is_dead()
    }
}

/// r2d2 logs background connection errors through `log`; we keep them in
/// [`Health`] instead, for `dss_last_error`.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<Error> for QuietErrors {
    fn handle_error(&self, _error: Error) {}
}

/// How long one slice of a checkout waits before looking at [`Health`].
const CHECKOUT_SLICE: Duration = Duration::from_millis(50);

pub struct R2d2Pool {
    /// Dropped first, then the helper threads' work is waited for.
    pool: std::mem::ManuallyDrop<r2d2::Pool<Manager>>,
    health: Arc<Health>,
    in_flight: Arc<InFlight>,
    timeout: Duration,
}

impl Drop for R2d2Pool {
    fn drop(&mut self) {
        self.in_flight.close();
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.pool) };
        self.in_flight.wait_none(DRAIN_LIMIT);
    }
}

impl R2d2Pool {
    /// Builds the pool and waits for its first connection, which checks the
    /// server and the schema: the errors are those of [`Conn::connect`].
    /// The wait ends with that first attempt (connect_timeout per host).
    pub fn open(settings: &Settings) -> Result<R2d2Pool> {
        let health = Arc::new(Health::default());
        let in_flight = Arc::new(InFlight::default());
        let manager = Manager {
            settings: settings.clone(),
            health: health.clone(),
            in_flight: in_flight.clone(),
        };
        // Helper threads of this handle only: a server that hangs one
        // handle's connection attempts must not starve another handle's.
        let threads = scheduled_thread_pool::ScheduledThreadPool::builder()
            .num_threads(2)
            .thread_name_pattern("dss-r2d2-{}")
            .build();
        // No idle minimum: r2d2 would reconnect in the background after
        // every checkout that empties it, also just before the process
        // exits. Connections are made when a call needs one.
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(settings.pool_timeout)
            .error_handler(Box::new(QuietErrors))
            .thread_pool(Arc::new(threads))
            .build_unchecked(manager);
        let pool = R2d2Pool {
            pool: std::mem::ManuallyDrop::new(pool),
            health,
            in_flight,
            timeout: settings.pool_timeout,
        };
        match pool.wait_until(None) {
            Ok(_first) => Ok(pool),
            Err(Some(e)) => Err(e),
            Err(None) => unreachable!("no deadline"),
        }
    }

    /// Waits for a connection until `deadline` (None: until the server is
    /// known up or down), in slices, looking at [`Health`] between them.
    /// `Err(Some(e))`: the server is known down, `e` is the connection
    /// error; `Err(None)`: the deadline passed.
    fn wait_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<r2d2::PooledConnection<Manager>, Option<Error>> {
        loop {
            if let Some(c) = self.pool.try_get() {
                return Ok(c);
            }
            if let Some(e) = self.health.down_because() {
                return Err(Some(e));
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if now >= d => return Err(None),
                Some(d) => CHECKOUT_SLICE.min(d - now),
                None => CHECKOUT_SLICE,
            };
            if let Ok(c) = self.pool.get_timeout(slice) {
                return Ok(c);
            }
        }
    }

    fn get(&self, deadline: Instant) -> Result<r2d2::PooledConnection<Manager>> {
        let (until, call_ends) = wait_end(self.timeout, deadline);
        match self.wait_until(Some(until)) {
            Ok(c) => Ok(c),
            Err(Some(e)) => Err(Error::new(
                Kind::Communication,
                format!("database unreachable: {}", e.message),
            )),
            Err(None) if call_ends => Err(call_timed_out()),
            // Still waiting for a connection the server does not grant.
            Err(None) if self.health.connecting.load(Ordering::SeqCst) > 0 => Err(Error::new(
                Kind::Communication,
                format!(
                    "the database did not accept a connection within {} ms",
                    self.timeout.as_millis()
                ),
            )),
            Err(None) => Err(timed_out(self.timeout)),
        }
    }
}

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

/// A pool on `std::sync` only, for processes forked from the one running
/// r2d2.
pub struct LocalPool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    state: Mutex<LocalState>,
    freed: Condvar,
    /// Connecting threads still running.
    in_flight: Arc<InFlight>,
}

struct LocalState {
    // Boxed as in r2d2: a checkout moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Conn>>,
    total: u32,
    /// Threads waiting in `get` for a connection to come back.
    waiting: u32,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the state after a connection came back or went away, and
    /// wakes one waiting thread, if any: a condvar notification is a system
    /// call, only paid when some thread waits.
    fn release(&self, st: std::sync::MutexGuard<'_, LocalState>) {
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

impl LocalPool {
    pub fn new(settings: &Settings, first: Option<Conn>) -> LocalPool {
        let total = u32::from(first.is_some());
        LocalPool {
            shared: Arc::new(Shared {
                settings: settings.clone(),
                state: Mutex::new(LocalState {
                    idle: first.into_iter().map(Box::new).collect(),
                    total,
                    waiting: 0,
                }),
                freed: Condvar::new(),
                in_flight: Arc::default(),
            }),
        }
    }

    fn get(&self, deadline: Instant) -> Result<LocalConn<'_>> {
        let shared = &self.shared;
        let (until, call_ends) = wait_end(shared.settings.pool_timeout, deadline);
        let mut st = shared.lock();
        loop {
            if let Some(conn) = st.idle.pop() {
                return Ok(LocalConn {
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
    fn connect(&self, slot: Slot, deadline: Instant) -> Result<LocalConn<'_>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let shared = self.shared.clone();
        let Some(ticket) = shared.in_flight.enter() else {
            return Err(Error::new(Kind::Communication, "the pool is closed"));
        };
        let spawned = std::thread::Builder::new()
            .name("dss-connect".to_string())
            .spawn(move || {
                // Ends after the connection is handed over or kept idle.
                let _ticket = ticket;
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
                Ok(LocalConn {
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

impl Drop for LocalPool {
    /// Waits for connecting threads, then closes the idle connections here
    /// (not in a thread that would still hold the pool).
    fn drop(&mut self) {
        self.shared.in_flight.close();
        self.shared.in_flight.wait_none(DRAIN_LIMIT);
        let idle = std::mem::take(&mut self.shared.lock().idle);
        drop(idle);
    }
}

pub struct LocalConn<'a> {
    pool: &'a LocalPool,
    conn: Option<Box<Conn>>,
}

impl Drop for LocalConn<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let shared = &self.pool.shared;
        let mut st = shared.lock();
        // A dead connection is dropped after the lock is released.
        let dead = if conn.is_dead() {
            st.total -= 1;
            Some(conn)
        } else {
            st.idle.push(conn);
            None
        };
        shared.release(st);
        drop(dead);
    }
}

/// Either kind of pool.
pub enum Pool {
    R2d2(R2d2Pool),
    Local(Box<LocalPool>),
}

/// A checked-out connection; goes back to its pool when dropped (or is
/// discarded if marked broken).
pub enum Checkout<'a> {
    R2d2(r2d2::PooledConnection<Manager>),
    Local(LocalConn<'a>),
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            Checkout::R2d2(c) => c,
            Checkout::Local(c) => c.conn.as_ref().expect("checked out"),
        }
    }
}

impl std::ops::DerefMut for Checkout<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            Checkout::R2d2(c) => c,
            Checkout::Local(c) => c.conn.as_mut().expect("checked out"),
        }
    }
}

impl Pool {
    /// A live-looking connection for a call ending at `deadline`: stale ones
    /// found on the way are dropped.
    pub fn checkout(&self, deadline: Instant) -> Result<Checkout<'_>> {
        loop {
            let mut c = match self {
                Pool::R2d2(p) => Checkout::R2d2(p.get(deadline)?),
                Pool::Local(p) => Checkout::Local(p.get(deadline)?),
            };
            if c.is_stale() {
                c.broken = true;
                continue;
            }
            c.deadline = deadline;
            return Ok(c);
        }
    }
}

//! Connections: one PostgreSQL session with its prepared statements, and the
//! two pools that hand them out.
//!
//! * [`R2d2Pool`]: an `r2d2` pool of connections, used by the one
//!   process that started r2d2 (see `handle.rs` for why only one).
//! * [`LocalPool`]: a small pool built on `std::sync` only, with connections
//!   made in the calling thread; used in any other process (after `fork()`),
//!   where r2d2's `parking_lot` state and helper threads cannot be trusted.
//!
//! Neither pool tests a connection with a round trip on checkout. A
//! connection is checked for free ([`Conn::is_stale`]: a non-blocking read
//! of what the server may have sent while it was idle, e.g. the FATAL of a
//! shutdown), and a call whose statement the server says did not run is
//! retried on another connection (`handle.rs`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use postgres_types::ToSql;

use crate::config::Settings;
use crate::error::{Error, Kind, Result};
use crate::pg::{Client, Row, Statement};
use crate::sql::{self, Query};

type PgResult<T> = crate::pg::Result<T>;

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

/// One database session.
pub struct Conn {
    pub client: Client,
    /// Statements prepared on this session, by [`Query::key`].
    prepared: HashMap<usize, Statement>,
    /// Set when a call saw this session fail: the pool drops it.
    pub broken: bool,
}

impl Conn {
    /// Connects and checks the schema version.
    /// Errors: `NotConnected` (cannot reach or log in), `TooManyUsers`,
    /// `Protocol` (schema missing or too old).
    pub fn connect(pg: &postgres::Config) -> Result<Conn> {
        let mut client =
            Client::connect_with(pg, crate::sql::SESSION_SETTINGS).map_err(connect_error)?;
        check_schema(&mut client)?;
        Ok(Conn {
            client,
            prepared: HashMap::new(),
            broken: false,
        })
    }

    /// `q` prepared on this session: by a Parse round trip the first time,
    /// from the cache afterwards.
    pub fn statement(&mut self, q: &'static Query) -> PgResult<Statement> {
        if let Some(st) = self.prepared.get(&q.key()) {
            return Ok(st.clone());
        }
        round_trip();
        let st = self.client.prepare(q.text, q.params)?;
        self.prepared.insert(q.key(), st.clone());
        Ok(st)
    }

    pub fn query(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Vec<Row>> {
        let st = self.statement(q)?;
        round_trip();
        self.client.query(&st, params)
    }

    /// Exactly one row, or an error that says how many there were.
    fn one(rows: Vec<Row>) -> PgResult<Row> {
        let n = rows.len();
        let mut rows = rows.into_iter();
        match (rows.next(), n) {
            (Some(row), 1) => Ok(row),
            _ => Err(crate::pg::Error::Protocol(format!(
                "the statement returned {n} rows, 1 expected"
            ))),
        }
    }

    pub fn query_one(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Row> {
        Self::one(self.query(q, params)?)
    }

    pub fn query_opt(
        &mut self,
        q: &'static Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Option<Row>> {
        let rows = self.query(q, params)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Self::one(rows).map(Some)
    }

    /// A command without parameters or results (LISTEN, UNLISTEN), by the
    /// simple query protocol.
    pub fn simple(&mut self, sql: &str) -> PgResult<()> {
        round_trip();
        self.client.batch_execute(sql)
    }

    /// True if the session is known to be dead, found without a round trip:
    /// reads what the server sent while the session was idle (a FATAL on
    /// shutdown, or end of file). A session that dies just after this check
    /// fails the call in a way `handle::Handle::run` recognises and retries.
    pub fn is_stale(&mut self) -> bool {
        self.broken || self.client.is_stale()
    }
}

fn connect_error(e: crate::pg::Error) -> Error {
    let kind = match e.code() {
        Some("53300") => Kind::TooManyUsers,
        _ => Kind::NotConnected,
    };
    let detail = match e.as_db() {
        Some(db) => format!("{} (SQLSTATE {})", db.message, db.code),
        None => crate::error::with_causes(&e),
    };
    Error::new(kind, format!("cannot connect to PostgreSQL: {detail}"))
}

/// The highest migration applied (`dss.schema_info`), None if the schema
/// is not there yet (undefined table or schema). By the unnamed statement:
/// nothing stays prepared on the session. Also used by `dssctl migrate`.
pub fn schema_version(client: &mut Client) -> PgResult<Option<i32>> {
    match client.query_once(sql::SCHEMA_VERSION_QUERY, &[]) {
        Ok(rows) => Ok(rows.first().and_then(|row| row.get(0))),
        Err(e) if matches!(e.code(), Some("42P01" | "3F000")) => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_schema(client: &mut Client) -> Result<()> {
    let expected = sql::SCHEMA_VERSION;
    let found =
        schema_version(client).map_err(|e| Error::from_pg("cannot read dss.schema_info", &e))?;
    match found {
        Some(v) if v >= expected => Ok(()),
        _ => Err(Error::new(
            Kind::Protocol,
            format!(
                "database schema version {} found, version {expected} expected: \
                 apply the sql/ migrations (psql -v ON_ERROR_STOP=1 -f each file, or make migrate)",
                found.unwrap_or(0)
            ),
        )),
    }
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
    fn record(&self, result: &Result<Conn>) {
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

/// r2d2's view of how to make and judge a [`Conn`].
pub struct Manager {
    pg: postgres::Config,
    health: Arc<Health>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = Error;

    fn connect(&self) -> Result<Conn> {
        self.health.connecting.fetch_add(1, Ordering::SeqCst);
        let result = Conn::connect(&self.pg);
        self.health.connecting.fetch_sub(1, Ordering::SeqCst);
        self.health.record(&result);
        result
    }

    /// Only called right after `connect` (test_on_check_out is off), which
    /// has just done round trips of its own.
    fn is_valid(&self, _conn: &mut Conn) -> Result<()> {
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
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
    pool: r2d2::Pool<Manager>,
    health: Arc<Health>,
    timeout: Duration,
}

impl R2d2Pool {
    /// Builds the pool and waits for its first connection, which checks the
    /// server and the schema: the errors are those of [`Conn::connect`].
    pub fn open(settings: &Settings) -> Result<R2d2Pool> {
        let health = Arc::new(Health::default());
        let manager = Manager {
            pg: settings.pg.clone(),
            health: health.clone(),
        };
        // Helper threads of this handle only: a server that hangs one
        // handle's connection attempts must not starve another handle's.
        let threads = scheduled_thread_pool::ScheduledThreadPool::builder()
            .num_threads(2)
            .thread_name_pattern("dss-r2d2-{}")
            .build();
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(settings.pool_timeout)
            .error_handler(Box::new(QuietErrors))
            .thread_pool(Arc::new(threads))
            .build_unchecked(manager);
        let pool = R2d2Pool {
            pool,
            health,
            timeout: settings.pool_timeout,
        };
        // Every host may take connect_timeout; then the attempt has failed.
        let per_host = settings
            .pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(crate::config::DEFAULT_CONNECT_TIMEOUT);
        let hosts = settings.pg.get_hosts().len().max(1) as u32;
        let deadline = Instant::now() + per_host * hosts + Duration::from_secs(1);
        match pool.wait_until(deadline) {
            Ok(_first) => Ok(pool),
            Err(Some(e)) => Err(e),
            Err(None) => Err(Error::new(
                Kind::NotConnected,
                "cannot connect to PostgreSQL: no answer within connect_timeout",
            )),
        }
    }

    /// Waits for a connection until `deadline`, in slices, looking at
    /// [`Health`] between them. `Err(Some(e))`: the server is known down,
    /// `e` is the connection error; `Err(None)`: the deadline passed.
    fn wait_until(
        &self,
        deadline: Instant,
    ) -> std::result::Result<r2d2::PooledConnection<Manager>, Option<Error>> {
        loop {
            if let Some(c) = self.pool.try_get() {
                return Ok(c);
            }
            if let Some(e) = self.health.down_because() {
                return Err(Some(e));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(None);
            }
            if let Ok(c) = self.pool.get_timeout(CHECKOUT_SLICE.min(deadline - now)) {
                return Ok(c);
            }
        }
    }

    fn get(&self) -> Result<r2d2::PooledConnection<Manager>> {
        match self.wait_until(Instant::now() + self.timeout) {
            Ok(c) => Ok(c),
            Err(Some(e)) => Err(Error::new(
                Kind::Communication,
                format!("database unreachable: {}", e.message),
            )),
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

fn timed_out(timeout: Duration) -> Error {
    Error::new(
        Kind::TimedOut,
        format!(
            "no pooled connection became free within {} ms (raise pool_size or pool_timeout_ms)",
            timeout.as_millis()
        ),
    )
}

/// A pool on `std::sync` only, for processes forked from the one running
/// r2d2. Connections are made in the calling thread.
pub struct LocalPool {
    pg: postgres::Config,
    size: u32,
    timeout: Duration,
    state: Mutex<LocalState>,
    freed: Condvar,
}

struct LocalState {
    idle: Vec<Conn>,
    total: u32,
    /// Threads waiting in `get` for a connection to come back.
    waiting: u32,
}

impl LocalPool {
    pub fn new(settings: &Settings, first: Option<Conn>) -> LocalPool {
        let total = u32::from(first.is_some());
        LocalPool {
            pg: settings.pg.clone(),
            size: settings.pool_size,
            timeout: settings.pool_timeout,
            state: Mutex::new(LocalState {
                idle: first.into_iter().collect(),
                total,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

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

    fn get(&self) -> Result<LocalConn<'_>> {
        let deadline = Instant::now() + self.timeout;
        let mut st = self.lock();
        loop {
            if let Some(conn) = st.idle.pop() {
                return Ok(LocalConn {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if st.total < self.size {
                st.total += 1;
                drop(st);
                return match Conn::connect(&self.pg) {
                    Ok(conn) => Ok(LocalConn {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        let mut st = self.lock();
                        st.total -= 1;
                        self.release(st);
                        Err(Error::new(Kind::Communication, e.message))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out(self.timeout));
            }
            st.waiting += 1;
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            st.waiting -= 1;
        }
    }
}

pub struct LocalConn<'a> {
    pool: &'a LocalPool,
    conn: Option<Conn>,
}

impl Drop for LocalConn<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut st = self.pool.lock();
        // A dead connection is dropped after the lock is released.
        let dead = if conn.broken || conn.client.is_closed() {
            st.total -= 1;
            Some(conn)
        } else {
            st.idle.push(conn);
            None
        };
        self.pool.release(st);
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
    /// A live-looking connection: stale ones found on the way are dropped.
    pub fn checkout(&self) -> Result<Checkout<'_>> {
        loop {
            let mut c = match self {
                Pool::R2d2(p) => Checkout::R2d2(p.get()?),
                Pool::Local(p) => Checkout::Local(p.get()?),
            };
            if c.is_stale() {
                c.broken = true;
                continue;
            }
            return Ok(c);
        }
    }
}

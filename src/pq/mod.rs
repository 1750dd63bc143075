//! The connection to PostgreSQL: libpq itself (the system's `libpq.so.5`,
//! through `pq-sys`), behind a thin safe wrapper in the style of diesel's
//! `pg/connection/`. Why libpq: a connect string, a service file, a
//! password file, TLS and authentication then behave exactly as they do for
//! phobos and `psql`, maintained with PostgreSQL itself.
//!
//! What this layer adds to libpq, and why:
//! * **Deadlines.** Every exchange runs in non-blocking mode and waits with
//!   `poll()` until a deadline: a frozen server (processes stopped, the
//!   kernel still acknowledging) cannot hold a caller past it. Past the
//!   deadline the session is abandoned; a cancel request is sent from a
//!   thread of its own (`PQcancel` blocks on a frozen server).
//! * **Connecting** is driven with `PQconnectPoll` (so that a notice
//!   processor is in place before the server speaks, and the caller's
//!   deadline holds), with libpq's own `connect_timeout` rule kept: it
//!   bounds each host, and a host that does not answer in time is given up
//!   for the next one, as `PQconnectdb` does.
//! * **Notices** never reach the daemon's stderr (a no-op processor).
//! * **fork():** a session used by a process other than the one that opened
//!   it is never used or closed normally: `PQfinish` would send Terminate
//!   (and a TLS close_notify) on the parent's session, so its socket is
//!   first pointed at `/dev/null` ([`Connection`]'s `Drop`).
//! * **Dead idle sessions** are seen without a round trip: an idle session
//!   with anything to read is over ([`Connection::is_stale`]).
//!
//! libpq sends with `MSG_NOSIGNAL`: no SIGPIPE reaches the daemon. Only
//! functions of libpq 15 (Debian bookworm) are called: `pq-sys` declares
//! newer ones (`PQcancelCreate`…) that would fail to load there.

mod result;

use result::one_line;
pub use result::{DbError, Error, PgResult, Result, Row};

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_types::{IsNull, ToSql, Type};
use pq_sys as ffi;

use crate::handle::current_pid;

/// How to open sessions: the user's conninfo (never printed: it may hold a
/// password), the application name used when it names none, and the
/// library's defaults for what the user left unset.
#[derive(Clone)]
pub struct ConnectParams {
    conninfo: CString,
    fallback_name: CString,
    /// Per host, when the user sets no `connect_timeout` anywhere (conninfo,
    /// `PGCONNECT_TIMEOUT`, service file).
    pub default_connect_timeout: Duration,
    /// For TCP sessions, when the user sets no `tcp_user_timeout`.
    pub default_tcp_user_timeout: Duration,
}

/// Never shows the conninfo: it may hold a password.
impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("conninfo", &"(hidden)")
            .field("fallback_name", &self.fallback_name)
            .finish_non_exhaustive()
    }
}

impl ConnectParams {
    /// Fails only if a string holds a NUL byte.
    pub fn new(conninfo: &str, fallback_name: &str) -> std::result::Result<ConnectParams, String> {
        Ok(ConnectParams {
            conninfo: CString::new(conninfo)
                .map_err(|_| "the connection string contains a NUL byte".to_string())?,
            fallback_name: CString::new(fallback_name)
                .map_err(|_| "the application name contains a NUL byte".to_string())?,
            default_connect_timeout: Duration::from_secs(5),
            default_tcp_user_timeout: Duration::from_secs(5),
        })
    }

    /// The `application_name` sessions get when the conninfo (or
    /// `PGAPPNAME`) gives none.
    pub fn set_fallback_name(&mut self, name: &str) {
        if let Ok(name) = CString::new(name) {
            self.fallback_name = name;
        }
    }
}

/// The options set in `conninfo` (keyword, value), by libpq's own parser
/// (`PQconninfoParse`: keywords and URIs). The error is libpq's message.
pub fn parse_conninfo(conninfo: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let text = CString::new(conninfo)
        .map_err(|_| "the connection string contains a NUL byte".to_string())?;
    let mut err: *mut c_char = ptr::null_mut();
    // SAFETY: a NUL-terminated string; `err` receives NULL or a message
    // to free with PQfreemem.
    let options = unsafe { ffi::PQconninfoParse(text.as_ptr(), &mut err) };
    if options.is_null() {
        if err.is_null() {
            return Err("out of memory".to_string());
        }
        // SAFETY: libpq's NUL-terminated message, freed once.
        let message = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { ffi::PQfreemem(err.cast()) };
        return Err(one_line(&message));
    }
    // SAFETY: a list from libpq, freed once.
    let set = unsafe { options_set(options) };
    unsafe { ffi::PQconninfoFree(options) };
    Ok(set)
}

/// The (keyword, value) pairs with a value in a libpq option list.
///
/// # Safety
/// `list` is a live array from libpq, ended by a NULL keyword.
unsafe fn options_set(list: *const ffi::PQconninfoOption) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: caller's contract; every string is NUL-terminated.
    unsafe {
        while !(*p).keyword.is_null() {
            if !(*p).val.is_null() {
                out.push((
                    CStr::from_ptr((*p).keyword).to_string_lossy().into_owned(),
                    CStr::from_ptr((*p).val).to_string_lossy().into_owned(),
                ));
            }
            p = p.add(1);
        }
    }
    out
}

/// libpq's notice processor for our sessions: notices and warnings are
/// dropped (libpq's default prints them on the daemon's stderr).
unsafe extern "C" fn ignore_notice(_arg: *mut c_void, _message: *const c_char) {}

/// Waits until `fd` has one of `events` or `until` passes (None: no end);
/// returns the events seen, None if the time passed.
fn poll_fd(fd: RawFd, events: i16, until: Option<Instant>) -> io::Result<Option<i16>> {
    loop {
        let ms = match until {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up, so that a short wait is not a busy loop (in
                // u64: a u128 division is a library call, on every wait).
                let ms = left
                    .as_secs()
                    .saturating_mul(1000)
                    .saturating_add(u64::from(left.subsec_nanos().div_ceil(1_000_000)));
                ms.min(i32::MAX as u64) as c_int
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok((n > 0).then_some(p.revents));
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Parameters passed without allocating (the library's statements have at
/// most 5).
const INLINE: usize = 8;
/// Binary format for every parameter.
const BINARY: [c_int; INLINE] = [1; INLINE];

/// How often a connection attempt that may be stopped looks at its flag.
pub const STOP_CHECK: Duration = Duration::from_millis(50);

/// How long after a reply a session is taken as alive without a check.
const FRESH: Duration = Duration::from_millis(10);

/// Scratch buffers over this size are given back after a call (a 64 MiB
/// key-value set must not stay allocated in an idle pooled session).
const KEEP: usize = 1 << 20;

/// One session.
pub struct Connection {
    raw: NonNull<ffi::PGconn>,
    /// The process that opened it: no other may use or close it normally.
    pid: u32,
    fd: RawFd,
    /// OpenSSL's `SSL *` when the session is encrypted (for `SSL_pending`).
    ssl: *mut c_void,
    /// Known dead, or abandoned in the middle of an exchange.
    broken: bool,
    /// A statement was abandoned at its deadline: cancel it on drop.
    cancel: bool,
    /// The conninfo accepts only a writable server
    /// (`target_session_attrs=read-write` or `primary`).
    writable_only: bool,
    last_reply: Instant,
    /// Encoded parameters, reused from call to call.
    buf: BytesMut,
}

// SAFETY: libpq allows a PGconn to move between threads as long as one
// thread uses it at a time, which `&mut self` on every method ensures.
unsafe impl Send for Connection {}

impl Connection {
    /// Opens a session as libpq would with `params` (every keyword, URI,
    /// `PG*` variable, service and password file libpq knows), bounded by
    /// `deadline` (None: only by `connect_timeout`, per host). The session
    /// speaks UTF-8 whatever the user's `client_encoding`.
    pub fn connect(params: &ConnectParams, deadline: Option<Instant>) -> Result<Connection> {
        Self::connect_unless(params, deadline, None)
    }

    /// [`Connection::connect`], given up (within [`STOP_CHECK`]) once `stop`
    /// is set: a pool being dropped stops its helper threads' attempts.
    pub fn connect_unless(
        params: &ConnectParams,
        deadline: Option<Instant>,
        stop: Option<&AtomicBool>,
    ) -> Result<Connection> {
        let mut attempt = Attempt::start(params, &[])?;
        let hosts = Hosts::of(&attempt);
        let per_host = attempt.connect_timeout(params.default_connect_timeout)?;
        let tcp_user_timeout = match attempt.option("tcp_user_timeout") {
            Some(_) => None,
            None => Some(params.default_tcp_user_timeout),
        };
        let mut skipped = vec![false; hosts.len()];
        let mut given_up = String::new();
        loop {
            let (host, port) = match attempt.drive(deadline, per_host, tcp_user_timeout, stop) {
                Ok(None) => return attempt.into_connection(),
                Ok(Some(timed_out)) => timed_out,
                Err(Error::Connect { message, code }) if !given_up.is_empty() => {
                    return Err(Error::Connect {
                        message: format!("{given_up}; {message}"),
                        code,
                    });
                }
                Err(e) => return Err(e),
            };
            // As PQconnectdb: that host did not answer within
            // connect_timeout; go on with the next ones.
            if !given_up.is_empty() {
                given_up.push_str("; ");
            }
            given_up.push_str(&format!(
                "connection to server \"{host}\", port {port} failed: timeout expired"
            ));
            let Some(i) = hosts.index_of(&host, &port, &skipped) else {
                return Err(Error::Connect {
                    message: given_up,
                    code: None,
                });
            };
            skipped[i] = true;
            let Some(rest) = hosts.remaining(&skipped) else {
                return Err(Error::Connect {
                    message: given_up,
                    code: None,
                });
            };
            attempt = Attempt::start(params, &rest)?;
        }
    }

    fn raw(&self) -> *mut ffi::PGconn {
        self.raw.as_ptr()
    }

    /// The role the session logged in as (`PQuser`).
    pub fn user(&self) -> Option<String> {
        // SAFETY: a live PGconn; PQuser returns NULL or a string owned by it.
        let p = unsafe { ffi::PQuser(self.raw()) };
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// True if only a writable server is acceptable to the conninfo.
    pub fn writable_only(&self) -> bool {
        self.writable_only
    }

    /// The session is known to be dead or out of step: it must be dropped.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// True if the idle session is known dead, found without a round trip:
    /// nothing is expected from an idle session (the library does not
    /// listen on idle ones), so anything to read, or a hang-up, means the
    /// server ended it (a FATAL on shutdown, a terminated backend). A
    /// session that answered less than 10 ms ago is taken as alive without
    /// the `poll()`; if it died meanwhile, the call fails like one on a
    /// session that dies just after the check.
    pub fn is_stale(&mut self) -> bool {
        if self.broken {
            return true;
        }
        // SAFETY: a live connection.
        if unsafe { ffi::PQstatus(self.raw()) } != ffi::ConnStatusType::CONNECTION_OK {
            self.broken = true;
            return true;
        }
        if self.last_reply.elapsed() < FRESH {
            return false;
        }
        if !matches!(
            poll_fd(self.fd, libc::POLLIN, Some(Instant::now())),
            Ok(None)
        ) {
            self.broken = true;
        }
        self.broken
    }

    fn error_message(&self) -> String {
        // SAFETY: a live connection; the message is owned by it.
        let text = unsafe { CStr::from_ptr(ffi::PQerrorMessage(self.raw())) };
        one_line(&text.to_string_lossy())
    }

    fn lost(&mut self, sent: bool) -> Error {
        self.broken = true;
        let mut message = self.error_message();
        if message.is_empty() {
            message = "the connection to the server was lost".to_string();
        }
        Error::Lost { message, sent }
    }

    /// The deadline passed with a statement maybe running: the session is
    /// out of step and dropped; its statement is cancelled on drop.
    fn timed_out(&mut self) -> Error {
        self.broken = true;
        self.cancel = true;
        Error::TimedOut { sent: true }
    }

    /// True if OpenSSL holds decrypted bytes that `poll()` cannot see.
    fn tls_pending(&self) -> bool {
        if self.ssl.is_null() {
            return false;
        }
        // SAFETY: the session's own SSL object, alive with the PGconn.
        ssl_pending().is_some_and(|pending| unsafe { pending(self.ssl) } > 0)
    }

    /// Queues a request with `start` and sends it, waiting for the socket
    /// as needed, until `deadline`.
    fn send(
        &mut self,
        deadline: Option<Instant>,
        start: impl FnOnce(*mut ffi::PGconn) -> c_int,
    ) -> Result<()> {
        if self.broken {
            return Err(Error::Lost {
                message: "the connection to the server was lost".to_string(),
                sent: false,
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::TimedOut { sent: false });
        }
        if start(self.raw()) == 0 {
            // Nothing was queued (the session is gone, or out of memory).
            return Err(self.lost(false));
        }
        loop {
            // SAFETY: a live connection.
            match unsafe { ffi::PQflush(self.raw()) } {
                0 => return Ok(()),
                1 => {}
                _ => return Err(self.lost(true)),
            }
            // The server may be waiting for us to read before it reads on.
            match poll_fd(self.fd, libc::POLLIN | libc::POLLOUT, deadline) {
                Ok(None) => return Err(self.timed_out()),
                Ok(Some(ev)) if ev & libc::POLLIN != 0 => {
                    // SAFETY: a live connection.
                    if unsafe { ffi::PQconsumeInput(self.raw()) } == 0 {
                        return Err(self.lost(true));
                    }
                }
                Ok(_) => {}
                Err(_) => return Err(self.lost(true)),
            }
        }
    }

    /// Reads every result of the request in flight, until `deadline`: the
    /// last one, or the first error.
    fn results(&mut self, deadline: Option<Instant>) -> Result<PgResult> {
        let raw = self.raw();
        let mut ok = None;
        let mut error = None;
        loop {
            // SAFETY: a live connection; each result is owned once.
            while unsafe { ffi::PQisBusy(raw) } == 0 {
                let Some(r) = PgResult::from_raw(unsafe { ffi::PQgetResult(raw) }) else {
                    // SAFETY: a live connection.
                    if unsafe { ffi::PQstatus(raw) } != ffi::ConnStatusType::CONNECTION_OK {
                        self.broken = true;
                    } else {
                        self.last_reply = Instant::now();
                    }
                    return match (error, ok) {
                        (Some(e), _) => Err(e),
                        (None, Some(r)) => Ok(r),
                        (None, None) => Err(self.lost(true)),
                    };
                };
                use ffi::ExecStatusType::*;
                match r.status() {
                    PGRES_TUPLES_OK | PGRES_COMMAND_OK | PGRES_EMPTY_QUERY => {
                        if error.is_none() {
                            ok = Some(r);
                        }
                    }
                    PGRES_FATAL_ERROR | PGRES_NONFATAL_ERROR | PGRES_BAD_RESPONSE => {
                        error.get_or_insert_with(|| r.error(true));
                    }
                    other => {
                        // COPY or pipeline states: never asked for.
                        self.broken = true;
                        return Err(Error::Protocol(format!("unexpected result {other:?}")));
                    }
                }
            }
            if !self.tls_pending() {
                match poll_fd(self.fd, libc::POLLIN, deadline) {
                    Ok(None) => return Err(self.timed_out()),
                    Ok(_) => {}
                    Err(_) => return Err(self.lost(true)),
                }
            }
            // A failure shows as a bad status, which ends the wait above
            // with libpq's error result; if not, nothing more will come.
            // SAFETY: a live connection.
            if unsafe { ffi::PQconsumeInput(raw) == 0 && ffi::PQisBusy(raw) != 0 } {
                return Err(self.lost(true));
            }
        }
    }

    /// Gives back a large parameter buffer once a call is over.
    fn trim(&mut self) {
        if self.buf.capacity() > KEEP {
            self.buf = BytesMut::new();
        }
    }

    /// Prepares `sql` as statement `name` with parameter types `types`.
    pub fn prepare(
        &mut self,
        name: &CStr,
        sql: &CStr,
        types: &[Type],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let oids: Vec<ffi::Oid> = types.iter().map(Type::oid).collect();
        self.send(deadline, |raw| {
            // SAFETY: NUL-terminated strings and an array of that length,
            // all copied by libpq.
            unsafe {
                ffi::PQsendPrepare(
                    raw,
                    name.as_ptr(),
                    sql.as_ptr(),
                    oids.len() as c_int,
                    oids.as_ptr(),
                )
            }
        })?;
        self.results(deadline).map(drop)
    }

    /// Runs the prepared statement `name` (parameter types `types`) with
    /// binary parameters and results: one round trip.
    pub fn execute(
        &mut self,
        name: &CStr,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<PgResult> {
        self.send_params(
            deadline,
            types,
            params,
            |raw, n, values, lengths, formats| {
                // SAFETY: arrays of `n` entries and a NUL-terminated name, all
                // copied by libpq before it returns.
                unsafe {
                    ffi::PQsendQueryPrepared(raw, name.as_ptr(), n, values, lengths, formats, 1)
                }
            },
        )?;
        self.results(deadline)
    }

    /// Encodes `params` in binary as `types` say and queues them with
    /// `start(raw, n, values, lengths, formats)`. No allocation for up to
    /// [`INLINE`] parameters (every statement of the library).
    fn send_params(
        &mut self,
        deadline: Option<Instant>,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
        start: impl FnOnce(
            *mut ffi::PGconn,
            c_int,
            *const *const c_char,
            *const c_int,
            *const c_int,
        ) -> c_int,
    ) -> Result<()> {
        let n = params.len();
        if n != types.len() {
            return Err(Error::Protocol(format!(
                "{n} parameters given, {} expected",
                types.len()
            )));
        }
        let mut inline_values = [ptr::null::<c_char>(); INLINE];
        let mut inline_lengths: [c_int; INLINE] = [0; INLINE];
        let (mut many_values, mut many_lengths, many_formats);
        let (values, lengths, formats): (&mut [*const c_char], &mut [c_int], &[c_int]) =
            if n <= INLINE {
                (
                    &mut inline_values[..n],
                    &mut inline_lengths[..n],
                    &BINARY[..n],
                )
            } else {
                many_values = vec![ptr::null(); n];
                many_lengths = vec![0; n];
                many_formats = vec![1; n];
                (&mut many_values, &mut many_lengths, &many_formats)
            };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // Offsets first (the buffer may move while it grows), then pointers.
        for (i, (p, ty)) in params.iter().zip(types).enumerate() {
            let at = buf.len();
            match p.to_sql_checked(ty, &mut buf) {
                Ok(IsNull::Yes) => lengths[i] = -1,
                Ok(IsNull::No) => {
                    lengths[i] = c_int::try_from(buf.len() - at).unwrap_or(c_int::MAX);
                    values[i] = ptr::without_provenance(at);
                }
                Err(e) => {
                    self.buf = buf;
                    return Err(Error::Protocol(format!("cannot encode parameter {i}: {e}")));
                }
            }
        }
        for (value, length) in values.iter_mut().zip(lengths.iter_mut()) {
            if *length < 0 {
                // SQL NULL.
                *value = ptr::null();
                *length = 0;
            } else {
                // SAFETY: an offset within `buf` (an empty value points at
                // its end, never NULL, which would mean SQL NULL).
                *value = unsafe { buf.as_ptr().add(value.addr()) }.cast();
            }
        }
        let sent = self.send(deadline, |raw| {
            start(
                raw,
                n as c_int,
                values.as_ptr(),
                lengths.as_ptr(),
                formats.as_ptr(),
            )
        });
        self.buf = buf;
        self.trim();
        sent
    }

    /// Runs `sql` once, without leaving a statement prepared (the unnamed
    /// one), binary results: for statements a session runs once (the
    /// schema check) and for tests. Parameter types are the server's
    /// inference: one more round trip to learn them when there are any.
    pub fn query_once(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.query_once_until(sql, params, None)
    }

    /// [`Connection::query_once`] bounded by `deadline`.
    pub fn query_once_until(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        deadline: Option<Instant>,
    ) -> Result<Vec<Row>> {
        let sql = CString::new(sql).map_err(|_| Error::Protocol("NUL in SQL".to_string()))?;
        if params.is_empty() {
            self.send(deadline, |raw| {
                // SAFETY: a NUL-terminated string; no parameters.
                unsafe {
                    ffi::PQsendQueryParams(
                        raw,
                        sql.as_ptr(),
                        0,
                        ptr::null(),
                        ptr::null(),
                        ptr::null(),
                        ptr::null(),
                        1,
                    )
                }
            })?;
            return self.results(deadline).map(PgResult::into_rows);
        }
        self.prepare(c"", &sql, &[], deadline)?;
        // SAFETY: describes the unnamed statement just prepared.
        self.send(deadline, |raw| unsafe {
            ffi::PQsendDescribePrepared(raw, c"".as_ptr())
        })?;
        let described = self.results(deadline)?;
        let types: Vec<Type> = (0..params.len())
            .map(|i| Type::from_oid(described.param_type(i)).unwrap_or(Type::TEXT))
            .collect();
        self.execute(c"", &types, params, deadline)
            .map(PgResult::into_rows)
    }

    /// Runs SQL text by the simple query protocol (several statements
    /// allowed, no parameters): LISTEN, UNLISTEN, SET, migrations.
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.batch_execute_until(sql, None)
    }

    /// [`Connection::batch_execute`] bounded by `deadline`.
    pub fn batch_execute_until(&mut self, sql: &str, deadline: Option<Instant>) -> Result<()> {
        let sql = CString::new(sql).map_err(|_| Error::Protocol("NUL in SQL".to_string()))?;
        // SAFETY: a NUL-terminated string, copied by libpq.
        self.send(deadline, |raw| unsafe {
            ffi::PQsendQuery(raw, sql.as_ptr())
        })?;
        self.results(deadline).map(drop)
    }

    /// Waits up to `timeout` for a notification (zero: only looks at what
    /// has arrived). True if at least one came; every one received is
    /// consumed. Losing the session here is `Lost` with `sent`: the call
    /// that waits has run statements before.
    pub fn wait_notification(&mut self, timeout: Duration) -> Result<bool> {
        let until = Instant::now() + timeout;
        let raw = self.raw();
        loop {
            // SAFETY: a live connection.
            if unsafe { ffi::PQconsumeInput(raw) } == 0 {
                return Err(self.lost(true));
            }
            let mut any = false;
            loop {
                // SAFETY: each notification is freed once, with PQfreemem.
                let n = unsafe { ffi::PQnotifies(raw) };
                if n.is_null() {
                    break;
                }
                any = true;
                unsafe { ffi::PQfreemem(n.cast()) };
            }
            if any {
                return Ok(true);
            }
            if self.tls_pending() {
                continue;
            }
            match poll_fd(self.fd, libc::POLLIN, Some(until)) {
                Ok(None) => return Ok(false),
                Ok(_) => {}
                Err(_) => return Err(self.lost(true)),
            }
        }
    }
}

impl Drop for Connection {
    /// In the process that opened it: cancels an abandoned statement (from
    /// another thread) and closes the session (Terminate, sent without
    /// blocking: the session is in non-blocking mode). In any other process
    /// (a forked child), the socket is the parent's session: it is pointed
    /// at /dev/null first, so that nothing reaches the server.
    fn drop(&mut self) {
        if self.pid != current_pid() {
            detach_socket(self.raw());
        } else if self.cancel {
            cancel_in_background(self.raw());
        }
        // SAFETY: ours, finished once.
        unsafe { ffi::PQfinish(self.raw()) }
    }
}

/// Points the session's socket at /dev/null, so that closing it sends
/// nothing on the connection it shares with another process.
fn detach_socket(raw: *mut ffi::PGconn) {
    // SAFETY: a live PGconn; plain descriptor calls.
    unsafe {
        let fd = ffi::PQsocket(raw);
        if fd < 0 {
            return;
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, fd);
            libc::close(null);
        }
    }
}

/// Cancel requests in flight, each in a thread of its own.
static CANCELLING: AtomicUsize = AtomicUsize::new(0);
/// At most this many at once: a frozen server holds each until it resumes.
const MAX_CANCELLING: usize = 8;

/// Asks the server to cancel what the session runs, from a detached
/// thread: `PQcancel` connects and waits for the server to close, which a
/// frozen server never does. Best effort: skipped when too many are
/// already waiting.
fn cancel_in_background(raw: *mut ffi::PGconn) {
    struct Request(NonNull<ffi::PGcancel>);
    // SAFETY: a PGcancel is a self-contained copy of what a cancel needs,
    // used by one thread only.
    unsafe impl Send for Request {}
    impl Request {
        fn run(self) {
            // A send() on a reset socket must not raise SIGPIPE in the
            // daemon: blocked in this thread (PQcancel does not set
            // MSG_NOSIGNAL), and discarded with it.
            // SAFETY: plain signal-mask and libpq calls on our own data.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
                let mut err = [0 as c_char; 256];
                ffi::PQcancel(self.0.as_ptr(), err.as_mut_ptr(), err.len() as c_int);
                ffi::PQfreeCancel(self.0.as_ptr());
            }
            CANCELLING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if CANCELLING.fetch_add(1, Ordering::SeqCst) >= MAX_CANCELLING {
        CANCELLING.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    // SAFETY: a live PGconn; the copy is independent of it.
    let Some(request) = NonNull::new(unsafe { ffi::PQgetCancel(raw) }).map(Request) else {
        CANCELLING.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("dss-cancel".to_string())
        .spawn(move || request.run());
    if spawned.is_err() {
        CANCELLING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// OpenSSL's `SSL_pending`, from the libssl libpq loaded (None if absent).
fn ssl_pending() -> Option<unsafe extern "C" fn(*const c_void) -> c_int> {
    const UNKNOWN: usize = 0;
    const ABSENT: usize = 1;
    // Lock-free (a fork in the middle cannot leave a lock held); looking it
    // up twice is harmless.
    static FN: AtomicUsize = AtomicUsize::new(UNKNOWN);
    let mut f = FN.load(Ordering::Acquire);
    if f == UNKNOWN {
        // SAFETY: dlsym with a NUL-terminated name.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"SSL_pending".as_ptr()) };
        f = if p.is_null() { ABSENT } else { p as usize };
        FN.store(f, Ordering::Release);
    }
    // SAFETY: a function of that signature: int SSL_pending(const SSL *).
    (f != ABSENT).then(|| unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(*const c_void) -> c_int>(f)
    })
}

/// A connection being opened; finished if dropped.
struct Attempt(NonNull<ffi::PGconn>);

impl Drop for Attempt {
    fn drop(&mut self) {
        // SAFETY: ours, finished once (also needed after a failure).
        unsafe { ffi::PQfinish(self.0.as_ptr()) }
    }
}

impl Attempt {
    /// Starts connecting with the user's conninfo, expanded by libpq (so
    /// it overrides our fallback name), then our fixed settings and
    /// `overrides`, which win over it.
    fn start(params: &ConnectParams, overrides: &[(&'static CStr, CString)]) -> Result<Attempt> {
        let mut keys = vec![
            c"fallback_application_name".as_ptr(),
            c"dbname".as_ptr(),
            c"client_encoding".as_ptr(),
        ];
        let mut values = vec![
            params.fallback_name.as_ptr(),
            params.conninfo.as_ptr(),
            c"UTF8".as_ptr(),
        ];
        for (k, v) in overrides {
            keys.push(k.as_ptr());
            values.push(v.as_ptr());
        }
        keys.push(ptr::null());
        values.push(ptr::null());
        // SAFETY: NULL-terminated arrays of NUL-terminated strings, copied.
        let raw = unsafe { ffi::PQconnectStartParams(keys.as_ptr(), values.as_ptr(), 1) };
        let Some(raw) = NonNull::new(raw) else {
            return Err(Error::Connect {
                message: "out of memory".to_string(),
                code: None,
            });
        };
        // SAFETY: a live PGconn. Verbose errors carry the SQLSTATE of a
        // refusal (e.g. 53300), read by `failure`.
        unsafe {
            ffi::PQsetNoticeProcessor(raw.as_ptr(), Some(ignore_notice), ptr::null_mut());
            ffi::PQsetErrorVerbosity(raw.as_ptr(), ffi::PGVerbosity::PQERRORS_VERBOSE);
        }
        let attempt = Attempt(raw);
        if attempt.status() == ffi::ConnStatusType::CONNECTION_BAD {
            return Err(attempt.failure());
        }
        Ok(attempt)
    }

    fn raw(&self) -> *mut ffi::PGconn {
        self.0.as_ptr()
    }

    fn status(&self) -> ffi::ConnStatusType {
        // SAFETY: a live PGconn.
        unsafe { ffi::PQstatus(self.raw()) }
    }

    /// The value libpq settled on for `keyword` (from the conninfo, a
    /// service file, the environment), if any.
    fn option(&self, keyword: &str) -> Option<String> {
        // SAFETY: a live PGconn; the list is freed once.
        unsafe {
            let list = ffi::PQconninfo(self.raw());
            if list.is_null() {
                return None;
            }
            let value = options_set(list)
                .into_iter()
                .find_map(|(k, v)| (k == keyword && !v.is_empty()).then_some(v));
            ffi::PQconninfoFree(list);
            value
        }
    }

    /// The connect_timeout of each host, libpq's way: unset means ours;
    /// zero or less, no limit; under 2 seconds, 2.
    fn connect_timeout(&self, default: Duration) -> Result<Option<Duration>> {
        let Some(text) = self.option("connect_timeout") else {
            return Ok(Some(default));
        };
        match text.trim().parse::<i64>() {
            Ok(s) if s <= 0 => Ok(None),
            Ok(s) => Ok(Some(Duration::from_secs(s.max(2) as u64))),
            Err(_) => Err(Error::Connect {
                message: format!(
                    "invalid integer value \"{text}\" for connection option \"connect_timeout\""
                ),
                code: None,
            }),
        }
    }

    /// The host and port being tried (PQhost, PQport).
    fn host_port(&self) -> (String, String) {
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: libpq's NUL-terminated string.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        // SAFETY: a live PGconn.
        unsafe { (text(ffi::PQhost(self.raw())), text(ffi::PQport(self.raw()))) }
    }

    /// Drives the connection until it is made (Ok(None)), fails, the
    /// caller's `deadline` passes (TimedOut), the host being tried does not
    /// get through within `per_host` (Ok(Some(host, port))), or `stop` is
    /// set.
    fn drive(
        &mut self,
        deadline: Option<Instant>,
        per_host: Option<Duration>,
        tcp_user_timeout: Option<Duration>,
        stop: Option<&AtomicBool>,
    ) -> Result<Option<(String, String)>> {
        use ffi::PostgresPollingStatusType::*;
        // Just after PQconnectStart, as if PQconnectPoll said "writing".
        let mut polled = PGRES_POLLING_WRITING;
        let mut host = None;
        let mut host_deadline = None;
        let mut tuned = -1;
        loop {
            match polled {
                PGRES_POLLING_OK => return Ok(None),
                PGRES_POLLING_FAILED => return Err(self.failure()),
                _ => {}
            }
            // SAFETY: a live PGconn.
            let fd = unsafe { ffi::PQsocket(self.raw()) };
            if let Some(t) = tcp_user_timeout
                && fd >= 0
                && fd != tuned
            {
                tuned = fd;
                set_tcp_user_timeout(fd, t);
            }
            let here = self.host_port();
            if host.as_ref() != Some(&here) {
                host_deadline = per_host.map(|t| Instant::now() + t);
                host = Some(here);
            }
            if fd >= 0 {
                let events = if polled == PGRES_POLLING_READING {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                };
                let mut until = earliest(deadline, host_deadline);
                if stop.is_some() {
                    until = earliest(until, Some(Instant::now() + STOP_CHECK));
                }
                let ready = poll_fd(fd, events, until).map_err(|e| Error::Connect {
                    message: format!("poll: {e}"),
                    code: None,
                })?;
                if ready.is_none() {
                    if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                        return Err(Error::Connect {
                            message: "connection attempt given up: the pool is closed".to_string(),
                            code: None,
                        });
                    }
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(Error::TimedOut { sent: false });
                    }
                    if host_deadline.is_some_and(|d| now >= d) {
                        return Ok(host.take());
                    }
                    // Only a look at `stop`: the attempt goes on.
                    continue;
                }
            }
            // SAFETY: a live PGconn.
            polled = unsafe { ffi::PQconnectPoll(self.raw()) };
        }
    }

    /// Why the attempt failed: libpq's message (without the LOCATION lines
    /// of verbose mode) and the server's SQLSTATE, if it sent one.
    fn failure(&self) -> Error {
        // SAFETY: a live PGconn; the message is owned by it.
        let text = unsafe { CStr::from_ptr(ffi::PQerrorMessage(self.raw())) };
        let (message, code) = strip_verbose(&text.to_string_lossy());
        Error::Connect { message, code }
    }

    /// The made session, in non-blocking mode from now on.
    fn into_connection(self) -> Result<Connection> {
        let writable_only = matches!(
            self.option("target_session_attrs").as_deref(),
            Some("read-write" | "primary")
        );
        let raw = self.0;
        std::mem::forget(self);
        // SAFETY: a live, connected PGconn, owned by the Connection below
        // (which finishes it) from here on.
        unsafe {
            ffi::PQsetErrorVerbosity(raw.as_ptr(), ffi::PGVerbosity::PQERRORS_DEFAULT);
            let c = Connection {
                raw,
                pid: current_pid(),
                fd: ffi::PQsocket(raw.as_ptr()),
                ssl: if ffi::PQsslInUse(raw.as_ptr()) != 0 {
                    ffi::PQsslStruct(raw.as_ptr(), c"OpenSSL".as_ptr())
                } else {
                    ptr::null_mut()
                },
                broken: false,
                cancel: false,
                writable_only,
                last_reply: Instant::now(),
                buf: BytesMut::new(),
            };
            if ffi::PQsetnonblocking(raw.as_ptr(), 1) != 0 {
                return Err(Error::Connect {
                    message: "cannot put the connection in non-blocking mode".to_string(),
                    code: None,
                });
            }
            Ok(c)
        }
    }
}

/// A verbose libpq message as one line without LOCATION lines, each
/// server error written `SEVERITY: message (SQLSTATE XXXXX)`, and the last
/// SQLSTATE (verbose mode writes `SEVERITY:  XXXXX: message`).
fn strip_verbose(text: &str) -> (String, Option<String>) {
    let mut code = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("LOCATION:") {
            continue;
        }
        let mut line = line.to_string();
        if let Some(at) = line.find(":  ") {
            let rest = &line[at + 3..];
            let b = rest.as_bytes();
            if b.len() >= 7
                && b[..5]
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                && &b[5..7] == b": "
            {
                code = Some(rest[..5].to_string());
                line = format!("{}: {} (SQLSTATE {})", &line[..at], &rest[7..], &rest[..5]);
            }
        }
        lines.push(line);
    }
    (one_line(&lines.join("\n")), code)
}

/// Sets TCP_USER_TIMEOUT on a TCP socket (not on a Unix one).
fn set_tcp_user_timeout(fd: RawFd, t: Duration) {
    // SAFETY: getsockname/setsockopt on a descriptor with buffers of the
    // sizes given.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return;
        }
        if !matches!(c_int::from(addr.ss_family), libc::AF_INET | libc::AF_INET6) {
            return;
        }
        let ms = t.as_millis().min(c_int::MAX as u128) as c_int;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        );
    }
}

/// The host, hostaddr and port lists libpq settled on, to give up on one
/// host and go on with the rest (libpq 15 has no call for that).
struct Hosts {
    host: Vec<String>,
    hostaddr: Vec<String>,
    port: Vec<String>,
}

impl Hosts {
    fn of(attempt: &Attempt) -> Hosts {
        let list = |k| {
            attempt
                .option(k)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default()
        };
        Hosts {
            host: list("host"),
            hostaddr: list("hostaddr"),
            port: list("port"),
        }
    }

    fn len(&self) -> usize {
        self.host.len().max(self.hostaddr.len()).max(1)
    }

    fn get(list: &[String], i: usize) -> &str {
        list.get(i).map_or("", String::as_str)
    }

    fn port_of(&self, i: usize) -> &str {
        if self.port.len() == 1 {
            &self.port[0]
        } else {
            Self::get(&self.port, i)
        }
    }

    /// The first host not given up yet that PQhost/PQport name.
    fn index_of(&self, host: &str, port: &str, skipped: &[bool]) -> Option<usize> {
        (0..self.len()).find(|&i| {
            let name = match Self::get(&self.host, i) {
                "" => Self::get(&self.hostaddr, i),
                name => name,
            };
            let p = self.port_of(i);
            !skipped[i] && name == host && (p.is_empty() || p == port)
        })
    }

    /// Overrides naming the hosts not given up yet (None if none is left).
    fn remaining(&self, skipped: &[bool]) -> Option<Vec<(&'static CStr, CString)>> {
        let keep: Vec<usize> = (0..self.len()).filter(|&i| !skipped[i]).collect();
        if keep.is_empty() || self.host.len().max(self.hostaddr.len()) <= 1 {
            return None;
        }
        let join = |list: &[String]| {
            let v: Vec<&str> = keep.iter().map(|&i| Self::get(list, i)).collect();
            CString::new(v.join(",")).unwrap_or_default()
        };
        let mut out = Vec::new();
        if !self.host.is_empty() {
            out.push((c"host", join(&self.host)));
        }
        if !self.hostaddr.is_empty() {
            out.push((c"hostaddr", join(&self.hostaddr)));
        }
        if self.port.len() > 1 {
            out.push((c"port", join(&self.port)));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_messages_give_their_sqlstate() {
        let (m, code) = strip_verbose(
            "connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: FATAL:  53300: too many connections for role \"r\"\nLOCATION:  InitializeSessionUserId, miscinit.c:733\n",
        );
        assert_eq!(code.as_deref(), Some("53300"));
        assert_eq!(
            m,
            "connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: FATAL: too many connections for role \"r\" (SQLSTATE 53300)"
        );
        let (m, code) =
            strip_verbose("could not connect: Connection refused\n\tIs the server running?\n");
        assert_eq!(code, None);
        assert_eq!(
            m,
            "could not connect: Connection refused; Is the server running?"
        );
    }

    #[test]
    fn giving_up_a_host_keeps_the_others() {
        let h = Hosts {
            host: vec!["a".into(), "b".into(), "a".into()],
            hostaddr: vec![],
            port: vec!["1".into(), "2".into(), "3".into()],
        };
        let mut skipped = vec![false; 3];
        assert_eq!(h.index_of("a", "1", &skipped), Some(0));
        assert_eq!(h.index_of("a", "3", &skipped), Some(2));
        assert_eq!(h.index_of("c", "1", &skipped), None);
        skipped[0] = true;
        let rest = h.remaining(&skipped).unwrap();
        assert_eq!(rest[0].1.to_str().unwrap(), "b,a");
        assert_eq!(rest[1].1.to_str().unwrap(), "2,3");
        skipped[1] = true;
        skipped[2] = true;
        assert!(h.remaining(&skipped).is_none());
        let one = Hosts {
            host: vec!["a".into()],
            hostaddr: vec![],
            port: vec!["5432".into()],
        };
        assert_eq!(one.index_of("a", "5432", &[false]), Some(0));
        assert!(one.remaining(&[true]).is_none());
    }
}

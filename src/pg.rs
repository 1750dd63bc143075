//! A small blocking PostgreSQL client: exactly what the library needs, and
//! nothing between the caller and the socket.
//!
//! Why not the `postgres` crate: it drives `tokio-postgres` through a
//! runtime in every call (a channel to a connection task, a reactor turn,
//! several `epoll_wait` per statement). Measured with `dss_bench` and
//! callgrind, that cost 18k instructions and 7-18 µs of client CPU per call,
//! against 3.8k instructions for the same statement through libpq: on a
//! machine shared with the server it was 5-20 % of the throughput. This
//! client writes Bind/Execute/Sync in one `send` and reads the reply with
//! blocking `recv`, like libpq.
//!
//! What it does:
//! * connects like libpq (and `postgres::Config`, which parses the
//!   conninfo): several hosts tried in order (or at random with
//!   `load_balance_hosts=random`), `hostaddr`, Unix sockets, TCP keepalives,
//!   `tcp_user_timeout`, `connect_timeout` bounding the whole attempt
//!   (connect, authentication, startup), `target_session_attrs`;
//! * authentication: trust, cleartext password, md5, SCRAM-SHA-256 (no TLS,
//!   so no channel binding: `channel_binding=require` is refused);
//! * prepared statements with binary parameters and results, through the
//!   `ToSql`/`FromSql` traits of `postgres-types`;
//! * the simple query protocol for LISTEN/UNLISTEN, and notifications;
//! * knowing, without a round trip, whether an idle session is dead
//!   ([`Client::is_stale`]).
//!
//! Every write uses `send(MSG_NOSIGNAL)`: a daemon linking the library must
//! never get SIGPIPE from a server that went away.
//!
//! The wire format itself (message encoding and parsing, SCRAM, md5) is
//! `postgres-protocol`'s.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres::config::{ChannelBinding, Host, LoadBalanceHosts, TargetSessionAttrs};
use postgres_protocol::authentication;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::message::backend::{DataRowBody, ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use postgres_types::{FromSql, ToSql, Type};

pub type Result<T> = std::result::Result<T, Error>;

/// An error reported by the server (ErrorResponse).
#[derive(Debug, Clone)]
pub struct DbError {
    pub severity: String,
    /// SQLSTATE, five characters.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Why a call on a [`Client`] failed.
#[derive(Debug)]
pub enum Error {
    /// The server answered with an error: the session is still usable
    /// unless the severity is FATAL or PANIC.
    Db(Box<DbError>),
    /// A socket error (`what` says during what).
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// The server closed the connection.
    Closed,
    /// The server sent something this client does not expect, or a value
    /// could not be encoded: the session is dropped.
    Protocol(String),
}

impl Error {
    /// The SQLSTATE, for errors reported by the server.
    pub fn code(&self) -> Option<&str> {
        self.as_db().map(|db| db.code.as_str())
    }

    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            Error::Db(db) => Some(db),
            _ => None,
        }
    }

    fn io(what: &'static str, source: io::Error) -> Error {
        Error::Io { what, source }
    }

    fn protocol(what: impl Into<String>) -> Error {
        Error::Protocol(what.into())
    }

    fn db(body: &ErrorResponseBody) -> Error {
        let mut e = DbError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        let mut fields = body.fields();
        while let Ok(Some(f)) = fields.next() {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => e.severity = v,
                b'S' if e.severity.is_empty() => e.severity = v,
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                _ => {}
            }
        }
        Error::Db(Box::new(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Db(db) => write!(f, "{}: {} (SQLSTATE {})", db.severity, db.message, db.code),
            Error::Io { what, .. } => f.write_str(what),
            Error::Closed => f.write_str("the server closed the connection"),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A statement prepared on one session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Statement(Arc<StatementInner>);

#[derive(Debug)]
struct StatementInner {
    name: String,
    params: Vec<Type>,
    columns: Arc<[Type]>,
}

/// One result row, in binary format.
#[derive(Debug)]
pub struct Row {
    body: DataRowBody,
    ranges: Vec<Option<Range<usize>>>,
    columns: Arc<[Type]>,
}

impl Row {
    /// Column `idx` as a `T`. Panics if the column does not exist or its
    /// type cannot be read as `T`: the statements are fixed, so that is a
    /// bug in the library, caught at the C boundary like any panic.
    pub fn get<'a, T: FromSql<'a>>(&'a self, idx: usize) -> T {
        match self.try_get(idx) {
            Ok(v) => v,
            Err(e) => panic!("column {idx}: {e}"),
        }
    }

    pub fn try_get<'a, T: FromSql<'a>>(
        &'a self,
        idx: usize,
    ) -> std::result::Result<T, Box<dyn std::error::Error + Sync + Send>> {
        let ty = self.columns.get(idx).ok_or("no such column")?;
        if !T::accepts(ty) {
            return Err(format!(
                "a {ty} column cannot be read as {}",
                std::any::type_name::<T>()
            )
            .into());
        }
        let raw = self.ranges[idx].clone().map(|r| &self.body.buffer()[r]);
        T::from_sql_nullable(ty, raw)
    }
}

/// The socket: a connected TCP or Unix stream, used through its descriptor.
struct Socket(OwnedFd);

impl Socket {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Sends all of `buf`; never raises SIGPIPE.
    fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // SAFETY: a valid descriptor and a readable buffer of that length.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    /// Reads what is there (blocking until something is), appended to
    /// `into`. Ok(0): end of file.
    fn recv(&self, into: &mut BytesMut) -> io::Result<usize> {
        into.reserve(16 * 1024);
        let spare = into.spare_capacity_mut();
        loop {
            // SAFETY: writes at most spare.len() bytes into the spare
            // capacity; only the bytes received are then marked initialised.
            let n = unsafe { libc::recv(self.fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            // SAFETY: the kernel initialised n bytes of the spare capacity.
            unsafe { into.set_len(into.len() + n) };
            return Ok(n);
        }
    }

    /// Waits until the socket is readable (or closed) for at most
    /// `timeout` (None: forever). True if readable.
    fn readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up so that a short wait is not a busy loop.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let mut p = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
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
            return Ok(n > 0);
        }
    }
}

fn setsockopt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to an int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn secs(d: Duration) -> i32 {
    d.as_secs().clamp(1, i32::MAX as u64) as i32
}

/// How long after a reply a session is taken as alive without a check.
const FRESH: Duration = Duration::from_millis(10);

/// One session.
pub struct Client {
    sock: Socket,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Notifications received and not yet taken, by channel.
    notifications: VecDeque<String>,
    /// Set once the session is known dead or out of step.
    closed: bool,
    /// For naming prepared statements.
    next_statement: u32,
    /// When the last reply ended (ReadyForQuery).
    last_reply: Instant,
}

impl Client {
    /// Connects as `config` says: each host in turn (each bounded by
    /// `connect_timeout`), until one accepts. The error is the last host's.
    pub fn connect(config: &postgres::Config) -> Result<Client> {
        Client::connect_with(config, &[])
    }

    /// As [`Client::connect`], with server settings (name, value) for the
    /// session, sent in the startup message.
    pub fn connect_with(config: &postgres::Config, session: &[(&str, &str)]) -> Result<Client> {
        let hosts = config.get_hosts();
        let addrs = config.get_hostaddrs();
        let n = hosts.len().max(addrs.len());
        if n == 0 {
            return Err(Error::protocol("no host in the connection string"));
        }
        if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
            return Err(Error::protocol(
                "as many hostaddr as host values are needed",
            ));
        }
        let ports = config.get_ports();
        if ports.len() > 1 && ports.len() != n {
            return Err(Error::protocol("as many port as host values are needed"));
        }
        let mut order: Vec<usize> = (0..n).collect();
        if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
            shuffle(&mut order);
        }
        let mut last = None;
        for i in order {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let deadline = config.get_connect_timeout().map(|t| Instant::now() + *t);
            let attempt = match (addrs.get(i), hosts.get(i)) {
                (Some(ip), _) => {
                    Self::connect_tcp(config, session, &[SocketAddr::new(*ip, port)], deadline)
                }
                (None, Some(Host::Tcp(name))) => match (name.as_str(), port).to_socket_addrs() {
                    Ok(list) => {
                        let list: Vec<SocketAddr> = list.collect();
                        Self::connect_tcp(config, session, &list, deadline)
                    }
                    Err(e) => Err(Error::io("cannot resolve the host name", e)),
                },
                (None, Some(Host::Unix(dir))) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    match UnixStream::connect(&path) {
                        Ok(s) => Self::start(Socket(s.into()), config, session, deadline),
                        Err(e) => Err(Error::io("cannot connect to the server's Unix socket", e)),
                    }
                }
                (None, None) => unreachable!("n is the longer list's length"),
            };
            match attempt {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one host was tried"))
    }

    fn connect_tcp(
        config: &postgres::Config,
        session: &[(&str, &str)],
        addrs: &[SocketAddr],
        deadline: Option<Instant>,
    ) -> Result<Client> {
        let mut last = Error::io(
            "cannot resolve the host name",
            io::Error::new(io::ErrorKind::NotFound, "no address"),
        );
        for addr in addrs {
            let stream = match deadline {
                None => TcpStream::connect(addr),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => TcpStream::connect_timeout(addr, left),
                    _ => Err(io::Error::new(io::ErrorKind::TimedOut, "connect_timeout")),
                },
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    last = Error::io("cannot connect to the server", e);
                    continue;
                }
            };
            if let Err(e) = Self::tune_tcp(&stream, config) {
                last = Error::io("cannot set TCP options", e);
                continue;
            }
            match Self::start(Socket(stream.into()), config, session, deadline) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn tune_tcp(stream: &TcpStream, config: &postgres::Config) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let fd = stream.as_raw_fd();
        if let Some(t) = config.get_tcp_user_timeout() {
            let ms = t.as_millis().min(i32::MAX as u128) as i32;
            setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
        }
        if config.get_keepalives() {
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
            let idle = secs(config.get_keepalives_idle());
            setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle)?;
            if let Some(i) = config.get_keepalives_interval() {
                setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(i))?;
            }
            if let Some(n) = config.get_keepalives_retries() {
                let n = n.min(i32::MAX as u32) as i32;
                setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, n)?;
            }
        }
        Ok(())
    }

    /// Startup, authentication and the session checks, all before
    /// `deadline`.
    fn start(
        sock: Socket,
        config: &postgres::Config,
        session: &[(&str, &str)],
        deadline: Option<Instant>,
    ) -> Result<Client> {
        let mut c = Client {
            sock,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            notifications: VecDeque::new(),
            closed: false,
            next_statement: 0,
            last_reply: Instant::now(),
        };
        let user = match config.get_user() {
            Some(u) => u.to_string(),
            None => os_user()?,
        };
        let mut params = vec![("client_encoding", "UTF8"), ("user", user.as_str())];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(o) = config.get_options() {
            params.push(("options", o));
        }
        if let Some(a) = config.get_application_name() {
            params.push(("application_name", a));
        }
        params.extend_from_slice(session);
        frontend::startup_message(params, &mut c.wbuf).map_err(|e| Error::io("startup", e))?;
        c.flush()?;
        c.authenticate(config, &user, deadline)?;
        loop {
            match c.startup_message(deadline)? {
                Message::BackendKeyData(_) | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => return Err(Error::db(&body)),
                _ => return Err(c.unexpected("during startup")),
            }
        }
        let wanted = config.get_target_session_attrs();
        if wanted != TargetSessionAttrs::Any {
            let read_only = c.show("transaction_read_only", deadline)?;
            let (ok, is) = match wanted {
                TargetSessionAttrs::ReadWrite => (read_only.as_deref() == Some("off"), "read-only"),
                _ => (read_only.as_deref() == Some("on"), "not read-only"),
            };
            if !ok {
                return Err(Error::io(
                    "the server does not match target_session_attrs",
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("the server is {is}"),
                    ),
                ));
            }
        }
        Ok(c)
    }

    fn authenticate(
        &mut self,
        config: &postgres::Config,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let password = || {
            config.get_password().ok_or_else(|| {
                Error::io(
                    "the server asks for a password and none was given",
                    io::Error::new(io::ErrorKind::PermissionDenied, "password missing"),
                )
            })
        };
        let no_binding = || match config.get_channel_binding() {
            ChannelBinding::Require => Err(Error::protocol(
                "channel_binding=require: this build has no TLS, so no channel binding",
            )),
            _ => Ok(()),
        };
        match self.startup_message(deadline)? {
            Message::AuthenticationOk => return no_binding(),
            Message::AuthenticationCleartextPassword => {
                no_binding()?;
                frontend::password_message(password()?, &mut self.wbuf)
                    .map_err(|e| Error::io("password", e))?;
            }
            Message::AuthenticationMd5Password(body) => {
                no_binding()?;
                let hash = authentication::md5_hash(user.as_bytes(), password()?, body.salt());
                frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                    .map_err(|e| Error::io("password", e))?;
            }
            Message::AuthenticationSasl(body) => {
                no_binding()?;
                let mut scram_offered = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(|e| Error::io("SASL", e))? {
                    scram_offered |= m == sasl::SCRAM_SHA_256;
                }
                if !scram_offered {
                    return Err(Error::protocol(
                        "the server offers no SASL mechanism we know",
                    ));
                }
                return self.scram(password()?, deadline);
            }
            Message::ErrorResponse(body) => return Err(Error::db(&body)),
            _ => {
                return Err(Error::protocol(
                    "unsupported authentication method (trust, password, md5 and \
                     scram-sha-256 are)",
                ));
            }
        }
        self.expect_auth_ok(deadline, "after the password")
    }

    /// Sends what authentication put in the buffer (if anything) and reads
    /// the server's answer; an ErrorResponse (a wrong password) is the error.
    fn auth_reply(&mut self, deadline: Option<Instant>) -> Result<Message> {
        self.flush()?;
        match self.startup_message(deadline)? {
            Message::ErrorResponse(body) => Err(Error::db(&body)),
            m => Ok(m),
        }
    }

    /// The server's verdict on the credentials: they must be accepted.
    fn expect_auth_ok(&mut self, deadline: Option<Instant>, when: &str) -> Result<()> {
        match self.auth_reply(deadline)? {
            Message::AuthenticationOk => Ok(()),
            _ => Err(self.unexpected(when)),
        }
    }

    fn scram(&mut self, password: &[u8], deadline: Option<Instant>) -> Result<()> {
        let mut scram = ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.wbuf)
            .map_err(|e| Error::io("SASL", e))?;
        let Message::AuthenticationSaslContinue(body) = self.auth_reply(deadline)? else {
            return Err(self.unexpected("during SCRAM"));
        };
        scram
            .update(body.data())
            .map_err(|e| Error::io("SCRAM", e))?;
        frontend::sasl_response(scram.message(), &mut self.wbuf)
            .map_err(|e| Error::io("SASL", e))?;
        let Message::AuthenticationSaslFinal(body) = self.auth_reply(deadline)? else {
            return Err(self.unexpected("during SCRAM"));
        };
        scram
            .finish(body.data())
            .map_err(|e| Error::io("SCRAM: the server's proof is wrong", e))?;
        self.expect_auth_ok(deadline, "after SCRAM")
    }

    /// `SHOW name` by the simple protocol, during startup.
    fn show(&mut self, name: &str, deadline: Option<Instant>) -> Result<Option<String>> {
        frontend::query(&format!("SHOW {name}"), &mut self.wbuf)
            .map_err(|e| Error::io("SHOW", e))?;
        self.flush()?;
        let mut value = None;
        let mut error = None;
        loop {
            match self.startup_message(deadline)? {
                Message::DataRow(body) => {
                    let mut ranges = body.ranges();
                    if let Ok(Some(Some(r))) = ranges.next() {
                        value = Some(String::from_utf8_lossy(&body.buffer()[r]).into_owned());
                    }
                }
                Message::ErrorResponse(body) => error = Some(Error::db(&body)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }

    /// The next message during startup, waiting until `deadline` at most.
    fn startup_message(&mut self, deadline: Option<Instant>) -> Result<Message> {
        loop {
            if let Some(m) = self.parse()? {
                return Ok(m);
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                let ready = self
                    .sock
                    .readable(Some(left))
                    .map_err(|e| self.lost("poll", e))?;
                if !ready {
                    self.closed = true;
                    return Err(Error::io(
                        "the server did not complete the connection within connect_timeout",
                        io::Error::new(io::ErrorKind::TimedOut, "connect_timeout"),
                    ));
                }
            }
            self.fill()?;
        }
    }

    fn unexpected(&mut self, when: &str) -> Error {
        self.closed = true;
        Error::protocol(format!("unexpected message from the server {when}"))
    }

    fn lost(&mut self, what: &'static str, e: io::Error) -> Error {
        self.closed = true;
        Error::io(what, e)
    }

    /// Sends what is in the write buffer.
    fn flush(&mut self) -> Result<()> {
        let r = self.sock.send_all(&self.wbuf);
        self.wbuf.clear();
        r.map_err(|e| self.lost("cannot send to the server", e))
    }

    /// Reads more from the socket (blocking). End of file is an error.
    fn fill(&mut self) -> Result<()> {
        match self.sock.recv(&mut self.rbuf) {
            Ok(0) => {
                self.closed = true;
                Err(Error::Closed)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(self.lost("cannot read from the server", e)),
        }
    }

    /// One complete message from the read buffer, if there is one.
    fn parse(&mut self) -> Result<Option<Message>> {
        Message::parse(&mut self.rbuf).map_err(|e| {
            self.closed = true;
            Error::protocol(format!("malformed message: {e}"))
        })
    }

    /// Messages the server may send at any time: kept (notifications) or
    /// ignored (notices, parameter changes). False for any other message.
    fn asynchronous(&mut self, m: &Message) -> bool {
        match m {
            Message::NotificationResponse(body) => {
                let channel = body.channel().unwrap_or_default().to_string();
                self.notifications.push_back(channel);
                true
            }
            Message::NoticeResponse(_) | Message::ParameterStatus(_) => true,
            _ => false,
        }
    }

    /// The next reply message, blocking; asynchronous ones are absorbed.
    fn reply(&mut self) -> Result<Message> {
        loop {
            while let Some(m) = self.parse()? {
                if !self.asynchronous(&m) {
                    return Ok(m);
                }
            }
            self.fill()?;
        }
    }

    /// Reads replies up to ReadyForQuery, handing each other message to
    /// `f`. The first ErrorResponse is the result; a FATAL one also marks
    /// the session closed.
    fn until_ready(&mut self, mut f: impl FnMut(&mut Self, Message) -> Result<()>) -> Result<()> {
        let mut error = None;
        loop {
            match self.reply()? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    let e = Error::db(&body);
                    if let Some(db) = e.as_db()
                        && matches!(db.severity.as_str(), "FATAL" | "PANIC")
                    {
                        // No ReadyForQuery follows: the server hangs up.
                        self.closed = true;
                        return Err(e);
                    }
                    error.get_or_insert(e);
                }
                m => {
                    if error.is_none()
                        && let Err(e) = f(self, m)
                    {
                        // Replies are left unread: out of step for good.
                        self.closed = true;
                        return Err(e);
                    }
                }
            }
        }
        self.last_reply = Instant::now();
        self.trim();
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Gives back the memory of a large value (up to 64 MiB for the key-value
    /// store) once the reply is read, so that an idle pooled session keeps
    /// a few KiB, not the largest value it ever carried.
    fn trim(&mut self) {
        const KEEP: usize = 1 << 20;
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP {
            self.rbuf = BytesMut::with_capacity(16 * 1024);
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP {
            self.wbuf = BytesMut::with_capacity(1024);
        }
    }

    fn usable(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Prepares `sql` with parameter types `types` (the server infers the
    /// rest): one round trip.
    pub fn prepare(&mut self, sql: &str, types: &[Type]) -> Result<Statement> {
        self.next_statement += 1;
        self.prepare_as(format!("dss{}", self.next_statement), sql, types)
    }

    /// Runs `sql` once, through the unnamed statement (replaced by the next
    /// one, so nothing stays prepared on the server): two round trips. For
    /// statements run once per session, e.g. the schema check.
    pub fn query_once(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let st = self.prepare_as(String::new(), sql, &[])?;
        self.query(&st, params)
    }

    fn prepare_as(&mut self, name: String, sql: &str, types: &[Type]) -> Result<Statement> {
        self.usable()?;
        let enc = |e| Error::protocol(format!("cannot encode: {e}"));
        frontend::parse(&name, sql, types.iter().map(Type::oid), &mut self.wbuf).map_err(enc)?;
        frontend::describe(b'S', &name, &mut self.wbuf).map_err(enc)?;
        frontend::sync(&mut self.wbuf);
        self.flush()?;
        let mut params = Vec::new();
        let mut columns = Vec::new();
        self.until_ready(|c, m| {
            match m {
                Message::ParseComplete | Message::NoData => {}
                Message::ParameterDescription(body) => {
                    let mut oids = body.parameters();
                    while let Some(oid) = oids.next().map_err(|e| c.lost("bad description", e))? {
                        params.push(known_type(oid)?);
                    }
                }
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(f) = fields.next().map_err(|e| c.lost("bad description", e))? {
                        columns.push(known_type(f.type_oid())?);
                    }
                }
                _ => return Err(c.unexpected("while preparing")),
            }
            Ok(())
        })?;
        Ok(Statement(Arc::new(StatementInner {
            name,
            params,
            columns: columns.into(),
        })))
    }

    /// Runs a prepared statement (Bind, Execute, Sync: one round trip) and
    /// returns its rows.
    pub fn query(&mut self, st: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.usable()?;
        let st = &st.0;
        if params.len() != st.params.len() {
            return Err(Error::protocol(format!(
                "{} parameters given, {} expected",
                params.len(),
                st.params.len()
            )));
        }
        let bound = frontend::bind(
            "",
            &st.name,
            Some(1),
            params.iter().zip(&st.params),
            |(p, ty), buf| {
                p.to_sql_checked(ty, buf).map(|n| match n {
                    postgres_types::IsNull::Yes => postgres_protocol::IsNull::Yes,
                    postgres_types::IsNull::No => postgres_protocol::IsNull::No,
                })
            },
            Some(1),
            &mut self.wbuf,
        );
        if let Err(e) = bound {
            // Nothing was sent: the session is still in step.
            self.wbuf.clear();
            let why = match e {
                frontend::BindError::Conversion(e) => e.to_string(),
                frontend::BindError::Serialization(e) => e.to_string(),
            };
            return Err(Error::protocol(format!("cannot encode a parameter: {why}")));
        }
        frontend::execute("", 0, &mut self.wbuf).map_err(|e| Error::io("execute", e))?;
        frontend::sync(&mut self.wbuf);
        self.flush()?;
        let mut rows = Vec::new();
        let columns = &st.columns;
        self.until_ready(|c, m| {
            match m {
                Message::BindComplete
                | Message::CommandComplete(_)
                | Message::EmptyQueryResponse => {}
                Message::DataRow(body) => {
                    let ranges = body
                        .ranges()
                        .collect::<Vec<_>>()
                        .map_err(|e| c.lost("bad row", e))?;
                    if ranges.len() != columns.len() {
                        return Err(c.unexpected("(a row of the wrong width)"));
                    }
                    rows.push(Row {
                        body,
                        ranges,
                        columns: columns.clone(),
                    });
                }
                _ => return Err(c.unexpected("while running a statement")),
            }
            Ok(())
        })?;
        Ok(rows)
    }

    /// Runs commands without parameters or results (LISTEN, UNLISTEN,
    /// SET...) by the simple query protocol.
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.usable()?;
        frontend::query(sql, &mut self.wbuf).map_err(|e| Error::io("query", e))?;
        self.flush()?;
        self.until_ready(|_, _| Ok(()))
    }

    /// Waits up to `timeout` for a notification (zero: only looks at what
    /// has already arrived). True if at least one came; all received are
    /// consumed.
    pub fn wait_notification(&mut self, timeout: Duration) -> Result<bool> {
        self.usable()?;
        let deadline = Instant::now() + timeout;
        loop {
            self.absorb()?;
            if !self.notifications.is_empty() {
                self.notifications.clear();
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = self
                .sock
                .readable(Some(left))
                .map_err(|e| self.lost("poll", e))?;
            if !ready {
                return Ok(false);
            }
            self.fill()?;
        }
    }

    /// Handles every complete message already read while idle: only
    /// asynchronous ones are expected; an error (the FATAL of a shutdown)
    /// or anything else means the session is over.
    fn absorb(&mut self) -> Result<()> {
        while let Some(m) = self.parse()? {
            if self.asynchronous(&m) {
                continue;
            }
            self.closed = true;
            return Err(match m {
                Message::ErrorResponse(body) => Error::db(&body),
                _ => Error::protocol("unexpected message from the server while idle"),
            });
        }
        Ok(())
    }

    /// True if the idle session is known dead, without a round trip: reads
    /// whatever the server sent meanwhile (a FATAL on shutdown, end of
    /// file). A session still marked alive may yet fail on the next call;
    /// callers treat that like any lost connection.
    pub fn is_stale(&mut self) -> bool {
        if self.closed {
            return true;
        }
        // A session that answered a moment ago is taken as alive without
        // the poll() system call (a few % of a call at 30 000 calls/s). If
        // it died meanwhile the call fails like one on a session dying
        // just after the check: retried when the server said so.
        if self.rbuf.is_empty() && self.last_reply.elapsed() < FRESH {
            return false;
        }
        loop {
            if self.absorb().is_err() {
                return true;
            }
            match self.sock.readable(Some(Duration::ZERO)) {
                Ok(false) => return false,
                Ok(true) => {
                    if self.fill().is_err() {
                        return true;
                    }
                }
                Err(_) => {
                    self.closed = true;
                    return true;
                }
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Drop for Client {
    /// Says goodbye (Terminate) if the session is alive; the socket is
    /// closed with the descriptor. Never blocks.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let mut buf = BytesMut::with_capacity(5);
        frontend::terminate(&mut buf);
        // SAFETY: a valid descriptor and buffer.
        unsafe {
            libc::send(
                self.sock.fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            );
        }
    }
}

/// The statements only use built-in types.
fn known_type(oid: u32) -> Result<Type> {
    Type::from_oid(oid).ok_or_else(|| Error::protocol(format!("unknown type oid {oid}")))
}

/// The name of the user running the process, libpq's default `user`.
fn os_user() -> Result<String> {
    let uid = unsafe { libc::geteuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers of the sizes given; `found` points to `pw` or is null.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 || found.is_null() {
        return Err(Error::io(
            "no user= given and the current user has no name",
            io::Error::new(io::ErrorKind::NotFound, "getpwuid_r"),
        ));
    }
    // SAFETY: getpwuid_r filled pw_name with a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Ok(name.to_string_lossy().into_owned())
}

/// Fisher-Yates with a clock-seeded xorshift: enough to spread connections
/// over hosts (`load_balance_hosts=random`).
fn shuffle(v: &mut [usize]) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()) << 32
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

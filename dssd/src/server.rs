//! The HTTP side: one entry point for every request (lockerd dispatches on
//! the method, and the path is the lock name), the lockerd routes with
//! dssd's extensions, `/metrics`, `/healthz`, bearer auth, the request log.
//!
//! Every library call blocks, so each runs on tokio's blocking pool. A
//! POST's wait runs in a task of its own, not in the request's future: when
//! the client goes away the request's future is dropped, and that task then
//! cancels the queued request and releases a lock granted meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use dss::error::{Error, Kind};
use dss::handle::Handle;
use dss::lock::{MAX_ID_LEN, MAX_OWNER_LEN, MAX_TTL_MS};
use dss::shared::{self, Holder, MAX_PERMITS, MODE_EXCLUSIVE, MODE_SEMAPHORE, MODE_SHARED};
use dss::token::{self, Space};
use dss::wait::{self, Request as Want};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::lockerd::{self, Form};
use crate::metrics::Metrics;

/// Largest form body read (Go reads up to 10 MB; nothing dssd takes needs
/// more than a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The id `GET /healthz` asks the status of (any id does).
const HEALTH_ID: &str = "dssd/healthz";

pub struct App {
    pub h: Arc<Handle>,
    /// The bearer token, if `--token-file` was given.
    pub token: Option<Vec<u8>>,
    /// One permit per POST allowed to wait at once.
    pub waiters: Arc<Semaphore>,
    pub max_waiters: usize,
    pub metrics: Metrics,
    /// `<host>.<pid>.<start time>`: with a counter, makes default owners
    /// unique across dssd processes and restarts.
    pub owner_prefix: String,
    pub owner_seq: AtomicU64,
    /// Set once SIGTERM or SIGINT arrived: waiting POSTs give up.
    pub stop: watch::Sender<bool>,
    /// Tasks that may still hold or release a lock (waits of POSTs).
    pub background: AtomicUsize,
}

impl App {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// What a request's path names.
enum Target {
    /// Exactly `/`: `GET /` lists everything.
    Root,
    Metrics,
    Healthz,
    /// A lock (`/<name>`) or a semaphore (`/sem/<name>`).
    Id(Space, String),
    /// Not a name (lockerd's 404).
    Invalid,
}

impl Target {
    fn of(raw_path: &str) -> Target {
        if raw_path == "/" {
            return Target::Root;
        }
        let Some(decoded) = lockerd::percent_decode(raw_path.as_bytes(), false) else {
            return Target::Invalid;
        };
        match lockerd::lock_name(&decoded) {
            None => Target::Invalid,
            Some("metrics") => Target::Metrics,
            Some("healthz") => Target::Healthz,
            Some(name) => match name.strip_prefix("sem/") {
                Some(sem) => Target::Id(Space::Sem, sem.to_string()),
                None => Target::Id(Space::Lock, name.to_string()),
            },
        }
    }

    /// The `route` label of the request metrics.
    fn route(&self) -> &'static str {
        match self {
            Target::Root => "list",
            Target::Metrics => "metrics",
            Target::Healthz => "healthz",
            Target::Id(Space::Lock, _) => "lock",
            Target::Id(Space::Sem, _) => "sem",
            Target::Invalid => "invalid",
        }
    }
}

/// Written to the log after the request line, for 5xx answers.
#[derive(Clone)]
struct Detail(String);

/// Logs the request and counts it when dropped: when answered, or when
/// the client went away first (status 499, as nginx writes it).
struct RequestLog {
    app: Arc<App>,
    peer: SocketAddr,
    method: Method,
    path: String,
    route: &'static str,
    start: Instant,
    status: Option<u16>,
    detail: Option<String>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(499);
        let method = match self.method {
            Method::GET | Method::HEAD | Method::POST | Method::DELETE | Method::PATCH => {
                self.method.as_str()
            }
            _ => "OTHER",
        };
        self.app.metrics.request(self.route, method, status);
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let detail = match &self.detail {
            Some(d) => format!(" {}", serde_json::Value::from(d.as_str())),
            None if self.status.is_none() => " (client went away)".to_string(),
            None => String::new(),
        };
        let level = if status >= 500 { "WARN" } else { "INFO" };
        // Never the query string (ids are credentials) nor any header.
        emit(format!(
            "{} {level} {} {} {} {status} {ms:.1}ms{detail}",
            rfc3339(SystemTime::now(), 3),
            self.peer,
            self.method,
            self.path,
        ));
    }
}

/// Every request comes here.
pub async fn entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    let target = Target::of(&path);
    let mut log = RequestLog {
        app: app.clone(),
        peer,
        method: req.method().clone(),
        path,
        route: target.route(),
        start: Instant::now(),
        status: None,
        detail: None,
    };
    let resp = dispatch(&app, peer, target, req).await;
    log.status = Some(resp.status().as_u16());
    if resp.status().is_server_error() {
        log.detail = resp.extensions().get::<Detail>().map(|d| d.0.clone());
    }
    resp
}

async fn dispatch(app: &Arc<App>, peer: SocketAddr, target: Target, req: Request) -> Response {
    let method = req.method().clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    if let Target::Healthz = target {
        return if is_get {
            healthz(app).await
        } else {
            method_not_allowed("GET, HEAD")
        };
    }
    if let Some(expected) = &app.token
        && !authorized(req.headers(), expected)
    {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid bearer token",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dssd\""),
        );
        return resp;
    }
    let writes = method == Method::POST || method == Method::DELETE || method == Method::PATCH;
    match target {
        Target::Metrics if is_get => metrics(app).await,
        Target::Metrics => method_not_allowed("GET, HEAD"),
        Target::Root if is_get => list(app).await,
        _ if !is_get && !writes => method_not_allowed("GET, HEAD, POST, DELETE, PATCH"),
        Target::Root | Target::Invalid | Target::Healthz => not_found(),
        Target::Id(space, name) => {
            if is_get {
                return inspect_one(app, space, name).await;
            }
            let form = match read_form(req).await {
                Ok(form) => form,
                Err(resp) => return resp,
            };
            if method == Method::POST {
                acquire(app, peer, space, name, form).await
            } else if method == Method::DELETE {
                release(app, space, name, form).await
            } else {
                extend(app, space, name, form).await
            }
        }
    }
}

/// The parameters as Go's FormValue reads them: the query string, plus a
/// form-urlencoded body for POST and PATCH (which wins).
async fn read_form(req: Request) -> Result<Form, Response> {
    let query = req.uri().query().map(str::to_string);
    let reads_body = (req.method() == Method::POST || req.method() == Method::PATCH)
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(lockerd::is_form_content_type);
    let body = if reads_body {
        match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The form body is larger than 64 KiB, or could not be read",
                ));
            }
        }
    } else {
        None
    };
    Ok(Form::new(query.as_deref(), body.as_deref()))
}

/// Writes one log line to stderr in one write(2): never split, never
/// interleaved with another thread's line (eprintln! writes it in pieces).
pub fn emit(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(headers: &HeaderMap, expected: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = value.as_bytes();
    if v.len() < 7 || !v[..6].eq_ignore_ascii_case(b"bearer") || v[6] != b' ' {
        return false;
    }
    let given = v[7..].trim_ascii();
    constant_time_eq(given, expected)
}

/// True if `given == expected`, in a time that depends on the length of
/// `expected` only.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(g ^ e);
    }
    std::hint::black_box(diff) == 0
}

// ---- responses --------------------------------------------------------

fn json(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(status, &json!({"code": code, "message": message}))
}

fn bad_request(code: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn invalid_argument(message: &str) -> Response {
    bad_request("invalid_argument", message)
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "Not found")
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn ok_empty() -> Response {
    json(StatusCode::OK, &json!({}))
}

/// True for the failures that mean the database could not serve the call.
fn is_unavailable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Communication
            | Kind::NotConnected
            | Kind::TimedOut
            | Kind::TooManyUsers
            | Kind::ReadOnly
            | Kind::Io
            | Kind::NoSpace
            | Kind::OutOfMemory
            | Kind::Protocol
    )
}

/// The answer to a library failure that is not the route's own.
fn lib_error(app: &App, e: &Error) -> Response {
    let mut resp = match e.kind {
        Kind::Already => error(StatusCode::CONFLICT, "already_held", &e.message),
        Kind::InvalidArgument => invalid_argument(&e.message),
        k if is_unavailable(k) => {
            app.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e.message)
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "Internal server error",
        ),
    };
    resp.extensions_mut().insert(Detail(e.message.clone()));
    resp
}

fn unavailable(message: &str) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    resp.extensions_mut().insert(Detail(message.to_string()));
    resp
}

/// Runs a blocking library call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> dss::error::Result<T> + Send + 'static,
) -> dss::error::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::new(Kind::Panic, format!("library call failed: {e}"))))
}

// ---- POST -------------------------------------------------------------

/// The state of a POST's queued request, shared by its wait (which learns
/// the ticket) and whoever gives up on it (the client went away, dssd
/// stops): exactly one of them cancels it.
#[derive(Default)]
struct Pending {
    ticket: Option<u64>,
    abandoned: bool,
    cancelled: bool,
}

/// Gives up on a POST's request: cancels it if it is queued already,
/// otherwise the wait cancels it as soon as it is.
fn abandon(app: &Arc<App>, pending: &Arc<Mutex<Pending>>, space: Space, name: &str) {
    let ticket = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.abandoned = true;
        match p.ticket {
            Some(t) if !p.cancelled => {
                p.cancelled = true;
                Some(t)
            }
            _ => None,
        }
    };
    if let Some(ticket) = ticket {
        let (h, name) = (app.h.clone(), name.to_string());
        tokio::task::spawn_blocking(move || token::cancel(&h, space, &name, ticket));
    }
}

fn mode_index(want: Want) -> usize {
    match want {
        Want::Exclusive => 0,
        Want::Shared => 1,
        Want::Sem { .. } => 2,
    }
}

/// A count parameter (permits, capacity): 1 to `MAX_PERMITS`.
fn count(form: &Form, key: &str) -> Result<Option<i32>, String> {
    let v = form.value(key);
    if v.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(v)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PERMITS).contains(n))
        .map(|n| Some(n as i32))
        .ok_or_else(|| format!("{key} must be an integer from 1 to {MAX_PERMITS}"))
}

/// What a POST asks for, from its extension parameters.
/// Err: why not (invalid_argument).
fn wanted(space: Space, form: &Form) -> Result<Want, String> {
    let mode = form.value("mode");
    let (permits, capacity) = (count(form, "permits")?, count(form, "capacity")?);
    match space {
        Space::Lock => {
            if permits.is_some() || capacity.is_some() {
                return Err(String::from(
                    "permits and capacity are for semaphores: POST /sem/<name>",
                ));
            }
            match mode {
                b"" | b"exclusive" => Ok(Want::Exclusive),
                b"shared" => Ok(Want::Shared),
                _ => Err(String::from("mode must be exclusive or shared")),
            }
        }
        Space::Sem => {
            if !mode.is_empty() && mode != b"semaphore" {
                return Err(String::from(
                    "a semaphore has no mode (use permits and capacity)",
                ));
            }
            let Some(capacity) = capacity else {
                return Err(String::from(
                    "missing capacity: a semaphore needs capacity=C (and permits=N, default 1)",
                ));
            };
            Ok(Want::Sem {
                permits: permits.unwrap_or(1),
                capacity,
            })
        }
    }
}

async fn acquire(
    app: &Arc<App>,
    peer: SocketAddr,
    space: Space,
    name: String,
    form: Form,
) -> Response {
    let start = Instant::now();
    // lockerd's checks, in its order.
    let (lock_timeout, lease_timeout) = (form.value("lock_timeout"), form.value("lease_timeout"));
    if lock_timeout.is_empty() {
        return bad_request(
            "missing_lock_timeout",
            "Missing form parameter lock_timeout",
        );
    }
    if lease_timeout.is_empty() {
        return bad_request(
            "missing_lease_timeout",
            "Missing form parameter lease_timeout",
        );
    }
    let Some(wait_ms) = lockerd::parse_duration(lock_timeout) else {
        return bad_request("invalid_lock_timeout", "Invalid lock timeout");
    };
    let lease_ms = match lockerd::parse_duration(lease_timeout) {
        Some(ms) if ms <= MAX_TTL_MS => ms.max(1),
        _ => return bad_request("invalid_lease_timeout", "Invalid lease timeout"),
    };
    // dssd's extensions.
    let want = match wanted(space, &form) {
        Ok(w) => w,
        Err(why) => return invalid_argument(&why),
    };
    let named_owner = !form.value("owner").is_empty();
    let owner = match form.value("owner") {
        b"" => format!(
            "http:{peer}#{}.{}",
            app.owner_prefix,
            app.owner_seq.fetch_add(1, Ordering::Relaxed) + 1
        ),
        given => match std::str::from_utf8(given) {
            Ok(s) if s.len() <= MAX_OWNER_LEN => s.to_string(),
            Ok(_) => {
                return invalid_argument(&format!("owner is longer than {MAX_OWNER_LEN} bytes"));
            }
            Err(_) => return invalid_argument("owner is not UTF-8"),
        },
    };
    if name.len() > MAX_ID_LEN {
        return invalid_argument(&format!("the name is longer than {MAX_ID_LEN} bytes"));
    }
    // A POST that may wait keeps a pooled connection all along.
    let permit = if wait_ms > 0 {
        match app.waiters.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                app.metrics.rejected_waiters.fetch_add(1, Ordering::Relaxed);
                return unavailable(&format!(
                    "too many POSTs are waiting already (--max-waiters {})",
                    app.max_waiters
                ));
            }
        }
    } else {
        None
    };
    let mode = mode_index(want);
    let pending = Arc::new(Mutex::new(Pending::default()));
    let (tx, mut rx) = oneshot::channel::<dss::error::Result<u64>>();
    app.background.fetch_add(1, Ordering::SeqCst);
    {
        let (app, pending, name, owner) =
            (app.clone(), pending.clone(), name.clone(), owner.clone());
        tokio::spawn(wait_task(
            app,
            pending,
            space,
            name,
            owner,
            want,
            lease_ms,
            wait_ms,
            named_owner,
            tx,
            permit,
        ));
    }
    let mut stop = app.stop.subscribe();
    let result = tokio::select! {
        r = &mut rx => r,
        _ = async { drop(stop.wait_for(|s| *s).await) } => {
            abandon(app, &pending, space, &name);
            rx.await
        }
    };
    let result = result.unwrap_or_else(|_| {
        Err(Error::new(
            Kind::Panic,
            "the wait task ended without an answer",
        ))
    });
    match result {
        Ok(token) => {
            app.metrics.grant(mode, start.elapsed());
            json(
                StatusCode::OK,
                &json!({"id": token.to_string(), "owner": owner}),
            )
        }
        Err(e) if e.kind == Kind::Cancelled && app.stopping() => {
            unavailable("dssd is shutting down")
        }
        Err(e)
            if e.kind == Kind::Cancelled
                || (e.kind == Kind::TimedOut
                    && start.elapsed() >= Duration::from_millis(wait_ms)) =>
        {
            app.metrics.timeout(mode);
            error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "Timed out waiting to acquire lock",
            )
        }
        // TimedOut before the lock_timeout: no pooled connection in time.
        Err(e) => lib_error(app, &e),
    }
}

/// The wait of one POST, outside the request's future.
#[allow(clippy::too_many_arguments)]
async fn wait_task(
    app: Arc<App>,
    pending: Arc<Mutex<Pending>>,
    space: Space,
    name: String,
    owner: String,
    want: Want,
    lease_ms: u64,
    wait_ms: u64,
    named_owner: bool,
    mut tx: oneshot::Sender<dss::error::Result<u64>>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let mode = mode_index(want);
    let job = {
        let (app, pending, name) = (app.clone(), pending.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            let queued = |ticket: u64| {
                // A lock_timeout of 0 is queued for an instant too (one
                // try): not a wait.
                if wait_ms > 0 {
                    app.metrics.wait(mode);
                }
                let cancel = {
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    p.ticket = Some(ticket);
                    let cancel = p.abandoned && !p.cancelled;
                    p.cancelled |= cancel;
                    cancel
                };
                if cancel {
                    let _ = token::cancel(&app.h, space, &name, ticket);
                }
            };
            // The exclusive attempt does not tell an owner asking again
            // (it would wait for itself): a named owner is checked first.
            if want == Want::Exclusive
                && named_owner
                && let Ok(holders) = shared::lock_holders(&app.h, &name)
                && holders.iter().any(|x| x.owner == owner)
            {
                return Err(Error::new(
                    Kind::Already,
                    format!("'{owner}' already holds '{name}'"),
                ));
            }
            wait::acquire(&app.h, want, &name, &owner, lease_ms, wait_ms, &queued)
        })
    };
    tokio::pin!(job);
    let result = tokio::select! {
        r = &mut job => r,
        _ = tx.closed() => {
            abandon(&app, &pending, space, &name);
            (&mut job).await
        }
    };
    drop(permit);
    let result =
        result.unwrap_or_else(|e| Err(Error::new(Kind::Panic, format!("wait failed: {e}"))));
    if let Err(Ok(token)) = tx.send(result) {
        // Granted, but nobody is there to learn the id: give it back.
        app.metrics
            .released_abandoned
            .fetch_add(1, Ordering::Relaxed);
        let (h, n) = (app.h.clone(), name.clone());
        let released = blocking(move || token::release(&h, space, &n, token)).await;
        if let Err(e) = released {
            emit(format!(
                "{} WARN the client of a POST on '{name}' went away; releasing the hold it \
                 was granted failed: {}",
                rfc3339(SystemTime::now(), 3),
                e.message
            ));
        }
    }
    app.background.fetch_sub(1, Ordering::SeqCst);
}

// ---- DELETE, PATCH ----------------------------------------------------

/// A failure of release or refresh: lockerd's 404 for no such hold.
fn hold_error(app: &App, e: &Error) -> Response {
    match e.kind {
        Kind::NoLock => not_found(),
        Kind::LeaseExpired => json(
            StatusCode::NOT_FOUND,
            &json!({"code": "not_found", "message": "Not found", "detail": "the lease had expired"}),
        ),
        _ => lib_error(app, e),
    }
}

async fn release(app: &Arc<App>, space: Space, name: String, form: Form) -> Response {
    let id = form.value("id");
    if id.is_empty() {
        return bad_request("missing_id", "Missing form parameter id");
    }
    let Some(id) = lockerd::parse_id(id) else {
        return bad_request("invalid_id", "Invalid ID");
    };
    if id == 0 {
        return not_found();
    }
    let h = app.h.clone();
    let done = blocking(move || {
        if id > 0 {
            token::release(&h, space, &name, id as u64)
        } else {
            // A waiter, as GET shows it: -<ticket>.
            token::cancel(&h, space, &name, id.unsigned_abs())
        }
    })
    .await;
    match done {
        Ok(()) => ok_empty(),
        Err(e) => hold_error(app, &e),
    }
}

async fn extend(app: &Arc<App>, space: Space, name: String, form: Form) -> Response {
    let (id, lease_timeout) = (form.value("id"), form.value("lease_timeout"));
    if id.is_empty() {
        return bad_request("missing_id", "Missing form parameter id");
    }
    if lease_timeout.is_empty() {
        return bad_request(
            "missing_lease_timeout",
            "Missing form parameter lease_timeout",
        );
    }
    let Some(id) = lockerd::parse_id(id) else {
        return bad_request("invalid_id", "Invalid ID");
    };
    let lease_ms = match lockerd::parse_duration(lease_timeout) {
        Some(ms) if ms <= MAX_TTL_MS => ms.max(1),
        _ => return bad_request("invalid_lease_timeout", "Invalid lease timeout"),
    };
    if id <= 0 {
        // Only a holder has a lease (lockerd extends the head only).
        return not_found();
    }
    let h = app.h.clone();
    match blocking(move || token::refresh(&h, space, &name, id as u64, lease_ms)).await {
        Ok(()) => ok_empty(),
        Err(e) => hold_error(app, &e),
    }
}

// ---- GET --------------------------------------------------------------

fn mode_name(mode: i32) -> &'static str {
    match mode {
        MODE_EXCLUSIVE => "exclusive",
        MODE_SHARED => "shared",
        MODE_SEMAPHORE => "semaphore",
        _ => "unknown",
    }
}

/// A remaining lease in lockerd's format; "never" for a hold without one
/// (a C daemon's dss_lock).
fn lease_left(expires_in_ms: i64) -> String {
    if expires_in_ms < 0 {
        "never".to_string()
    } else {
        lockerd::format_duration(expires_in_ms)
    }
}

fn holder_json(holder: &Holder) -> Value {
    json!({
        "id": holder.token.to_string(),
        "owner": holder.owner,
        "mode": mode_name(holder.mode),
        "permits": holder.permits,
        "lock_timeout": lease_left(holder.expires_in_ms),
        "locked_at": rfc3339(holder.locked_at, 6),
    })
}

/// lockerd's object for one name plus dssd's fields; None if not held.
/// Every holder's id is shown: whoever may send this request may use the
/// whole API (loopback by default, or a bearer token), as with lockerd.
fn inspect(h: &Handle, space: Space, name: &str) -> dss::error::Result<Option<Value>> {
    let holders = match space {
        Space::Lock => shared::lock_holders(h, name),
        Space::Sem => shared::sem_holders(h, name),
    };
    let holders = match holders {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => return Ok(None),
        Err(e) if e.kind == Kind::NoLock => return Ok(None),
        Err(e) => return Err(e),
    };
    let waiters = token::waiters(h, space, name)?;
    let first = &holders[0];
    let acquirers: Vec<Value> = waiters
        .iter()
        .map(|w| {
            json!({
                "id": format!("-{}", w.ticket),
                "timeout": lockerd::format_duration(w.wait_left_ms),
                "owner": w.owner,
                "mode": mode_name(w.mode),
                "permits": w.permits,
            })
        })
        .collect();
    let mut object = Map::new();
    object.insert("locking_id".into(), first.token.to_string().into());
    object.insert(
        "lock_timeout".into(),
        lease_left(first.expires_in_ms).into(),
    );
    object.insert("acquirers".into(), acquirers.into());
    object.insert("mode".into(), mode_name(first.mode).into());
    object.insert("owner".into(), first.owner.clone().into());
    object.insert("locked_at".into(), rfc3339(first.locked_at, 6).into());
    object.insert(
        "holders".into(),
        holders.iter().map(holder_json).collect::<Vec<_>>().into(),
    );
    if space == Space::Sem {
        let held: u64 = holders.iter().map(|x| u64::from(x.permits)).sum();
        object.insert("permits_held".into(), held.into());
        if let Some(s) = shared::sem_list(h, name)?.iter().find(|s| s.id == name) {
            object.insert("capacity".into(), s.capacity.into());
        }
    }
    Ok(Some(Value::Object(object)))
}

async fn inspect_one(app: &Arc<App>, space: Space, name: String) -> Response {
    let h = app.h.clone();
    match blocking(move || inspect(&h, space, &name)).await {
        Ok(Some(v)) => json(StatusCode::OK, &v),
        Ok(None) => not_found(),
        Err(e) => lib_error(app, &e),
    }
}

async fn list(app: &Arc<App>) -> Response {
    let h = app.h.clone();
    let all = blocking(move || {
        let mut out = Map::new();
        for (space, id) in token::held(&h)? {
            // Released since `held`: left out.
            if let Some(v) = inspect(&h, space, &id)? {
                let key = match space {
                    Space::Lock => id,
                    Space::Sem => format!("sem/{id}"),
                };
                out.insert(key, v);
            }
        }
        Ok(Value::Object(out))
    })
    .await;
    match all {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => lib_error(app, &e),
    }
}

// ---- operations -------------------------------------------------------

async fn healthz(app: &Arc<App>) -> Response {
    let h = app.h.clone();
    match blocking(move || dss::lock::status(&h, HEALTH_ID)).await {
        Ok(_) => json(StatusCode::OK, &json!({"status": "ok"})),
        Err(e) if e.kind == Kind::NoLock => json(StatusCode::OK, &json!({"status": "ok"})),
        Err(e) => {
            if is_unavailable(e.kind) {
                app.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
            }
            unavailable(&e.message)
        }
    }
}

async fn metrics(app: &Arc<App>) -> Response {
    let h = app.h.clone();
    let held = match blocking(move || token::count_held(&h)).await {
        Ok(counts) => Some(counts),
        Err(e) => {
            if is_unavailable(e.kind) {
                app.metrics.database_errors.fetch_add(1, Ordering::Relaxed);
            }
            None
        }
    };
    let waiting = app.max_waiters - app.waiters.available_permits().min(app.max_waiters);
    let text = app.metrics.render(held, waiting, app.max_waiters);
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

// ---- time -------------------------------------------------------------

/// RFC 3339 in UTC with `digits` (3 or 6) of fractional seconds.
pub fn rfc3339(t: SystemTime, digits: u32) -> String {
    let (secs, micros) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(e) => {
            let d = e.duration();
            let (s, us) = (d.as_secs() as i64, d.subsec_micros());
            if us == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000 - us)
            }
        }
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = match digits {
        6 => format!(".{micros:06}"),
        _ => format!(".{:03}", micros / 1000),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH, 3), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_764_706_500_123_456);
        assert_eq!(rfc3339(t, 6), "2025-12-02T20:15:00.123456Z");
        assert_eq!(rfc3339(t, 3), "2025-12-02T20:15:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap, 3), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, b"s3cret"));
        for (value, ok) in [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("Bearer  s3cret ", true),
            ("Bearer s3cre", false),
            ("Bearer s3cret2", false),
            ("Basic s3cret", false),
            ("Bearer", false),
            ("Bearers3cret", false),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(authorized(&headers, b"s3cret"), ok, "{value}");
        }
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn targets() {
        assert!(matches!(Target::of("/"), Target::Root));
        assert!(matches!(Target::of("//"), Target::Invalid));
        assert!(matches!(Target::of("/metrics"), Target::Metrics));
        assert!(matches!(Target::of("/healthz"), Target::Healthz));
        assert!(matches!(Target::of("/a%2Fb"), Target::Id(Space::Lock, n) if n == "a/b"));
        assert!(matches!(Target::of("/sem/x/y"), Target::Id(Space::Sem, n) if n == "x/y"));
        assert!(matches!(Target::of("/sem"), Target::Id(Space::Lock, n) if n == "sem"));
        assert!(matches!(Target::of("/sem/"), Target::Invalid));
        assert!(matches!(Target::of("/a%zz"), Target::Invalid));
    }
}

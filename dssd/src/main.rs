//! dssd: the libdss locks over HTTP, with lockerd's API
//! (audacious-io/distlock) and its extensions: shared locks, semaphores,
//! owners, fuller GET bodies, `/metrics`, `/healthz`, bearer auth.
//!
//! Where to look:
//! * `lockerd` – lockerd's wire rules (names, durations, ids, parameters).
//! * `server`  – the routes, auth, the request log, waiting POSTs.
//! * `metrics` – the Prometheus text.
//!
//! The locks are the library's: `POST /media/L00042` and a C daemon's
//! `dss_lock(h, "media/L00042", …)` exclude each other, and the ids dssd
//! hands out are fencing tokens, valid across dssd restarts and processes.
//!
//! Exit codes: 0 after SIGTERM/SIGINT (in-flight requests drained), 1 the
//! database or the listening socket failed at start, 2 usage (bad
//! arguments, a bad or empty token file, a bad configuration).

mod lockerd;
mod metrics;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use clap::Parser;
use dss::config::{self, Settings};
use dss::handle::Handle;
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;
use crate::server::{App, rfc3339};

#[derive(Parser)]
#[command(
    name = "dssd",
    version,
    about = "The libdss locks over HTTP (lockerd's API, durable in PostgreSQL)",
    after_help = "Connection: --conninfo, else PHOBOS_DSS_connect_string, else \
                  [dss] connect_string in $PHOBOS_CFG_FILE (default /etc/phobos.conf); \
                  pool_size, pool_timeout_ms and call_timeout_ms are read the same way.\n\
                  Exit codes: 0 stopped by SIGTERM/SIGINT, 1 database or socket failure at \
                  start, 2 usage or configuration error."
)]
struct Cli {
    /// Address and port to listen on (loopback unless told otherwise)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:12000")]
    listen: String,

    /// libpq-style connection string or postgresql:// URI (overrides the
    /// environment and the config file)
    #[arg(long, value_name = "STR")]
    conninfo: Option<String>,

    /// Require `Authorization: Bearer <token>` on every route but /healthz;
    /// the token is the file's content, trimmed of whitespace
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Most POSTs waiting for a lock at once, beyond which POSTs get 503
    /// (default: the pool size minus one, at least 1)
    #[arg(long, value_name = "N")]
    max_waiters: Option<usize>,
}

fn log(level: &str, message: &str) {
    server::emit(format!(
        "{} {level} {message}",
        rfc3339(SystemTime::now(), 3)
    ));
}

/// The bearer token of `--token-file`: its content without surrounding
/// whitespace, never empty.
fn read_token(path: &PathBuf) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(format!(
            "the token file {} is empty: refusing to start without a token",
            path.display()
        ));
    }
    if token.iter().any(|b| !(0x21..0x7f).contains(b)) {
        return Err(format!(
            "the token in {} has spaces, control or non-ASCII characters: an \
             Authorization header cannot carry it",
            path.display()
        ));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            log(
                "WARN",
                &format!(
                    "the token file {} is readable by others than its owner (chmod 600 it)",
                    path.display()
                ),
            );
        }
    }
    Ok(token.to_vec())
}

/// `<host>.<pid>.<start time>`: default owners are
/// `http:<peer>#<this>.<counter>`, unique across hosts, processes and
/// restarts.
fn owner_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{host}.{}.{started}", std::process::id())
}

enum Fail {
    Usage(String),
    Start(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            log("ERROR", &m);
            ExitCode::from(2)
        }
        Err(Fail::Start(m)) => {
            log("ERROR", &m);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    let token = cli
        .token_file
        .as_ref()
        .map(read_token)
        .transpose()
        .map_err(Fail::Usage)?;
    let conninfo = match cli.conninfo {
        Some(c) => c,
        None => config::connect_string_from_environment().map_err(|e| Fail::Usage(e.message))?,
    };
    let mut settings = Settings::new(&conninfo).map_err(|e| Fail::Usage(e.message))?;
    settings.connect.set_fallback_name("dssd");
    let pool_size = settings.pool_size as usize;
    let call_timeout = settings.call_timeout;
    let max_waiters = cli
        .max_waiters
        .unwrap_or_else(|| pool_size.saturating_sub(1).max(1));
    if max_waiters >= pool_size {
        log(
            "WARN",
            &format!(
                "--max-waiters {max_waiters} with pool_size {pool_size}: waiting POSTs may hold \
                 every connection, and other requests then fail with 503 (raise pool_size)"
            ),
        );
    }
    let h = Handle::open(settings)
        .map_err(|e| Fail::Start(format!("cannot open the database: {}", e.message)))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::Start(format!("cannot start the runtime: {e}")))?;
    let (stop, _) = watch::channel(false);
    let app = Arc::new(App {
        h: Arc::new(h),
        token,
        waiters: Arc::new(Semaphore::new(max_waiters)),
        max_waiters,
        metrics: Metrics::default(),
        owner_prefix: owner_prefix(),
        owner_seq: AtomicU64::new(0),
        stop,
        background: AtomicUsize::new(0),
    });
    let served = runtime.block_on(serve(app.clone(), &cli.listen, pool_size, call_timeout));
    // Waits still running (a POST whose client went away releasing what it
    // was granted) get as long as a library call may take.
    runtime.block_on(async {
        let deadline = Instant::now() + call_timeout * 2;
        while app.background.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    runtime.shutdown_timeout(call_timeout);
    served?;
    log("INFO", "stopped");
    Ok(())
}

async fn serve(
    app: Arc<App>,
    listen: &str,
    pool_size: usize,
    call_timeout: Duration,
) -> Result<(), Fail> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fail::Start(format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    log(
        "INFO",
        &format!(
            "dssd {} listening on http://{local} (pool_size {pool_size}, max waiters {}, \
             call_timeout {} ms, bearer auth {})",
            env!("CARGO_PKG_VERSION"),
            app.max_waiters,
            call_timeout.as_millis(),
            if app.token.is_some() { "on" } else { "off" },
        ),
    );
    let router = Router::new()
        .fallback(server::entry)
        .with_state(app.clone());
    let stopping = {
        let app = app.clone();
        async move {
            let signal = stop_signal().await;
            log(
                "INFO",
                &format!("{signal}: draining in-flight requests (a second signal exits at once)"),
            );
            app.stop.send_replace(true);
            tokio::spawn(async {
                let again = stop_signal().await;
                log("WARN", &format!("{again} again: exiting without draining"));
                std::process::exit(1);
            });
        }
    };
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping)
    .await
    .map_err(|e| Fail::Start(format!("the server failed: {e}")))
}

/// Resolves on SIGTERM or SIGINT; their name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            log("WARN", "cannot catch SIGTERM/SIGINT: they will kill dssd");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

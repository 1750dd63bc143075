//! dssctl: the operator's view of the libdss locks and key-value store.
//!
//! Connects the way the library does (`PHOBOS_DSS_connect_string`, else
//! `[dss] connect_string` in `$PHOBOS_CFG_FILE` or `/etc/phobos.conf`),
//! unless `--conninfo` is given. Data goes to stdout, errors to stderr.
//!
//! Exit codes: 0 ok, 1 database or connection error, 2 usage error
//! (checked before connecting: bad arguments, an unreadable `kv set
//! --file`, a value over 64 MiB), 3 no such lock or key.

mod kv;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use dss::config::{self, Settings};
use dss::error::{Error, Kind};
use dss::handle::Handle;
use dss::lock;

const EXIT_DB: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;

#[derive(Parser)]
#[command(
    name = "dssctl",
    version,
    about = "Inspect and manage libdss locks and key-value store in PostgreSQL",
    after_help = "Connection: --conninfo, else PHOBOS_DSS_connect_string, else \
                  [dss] connect_string in $PHOBOS_CFG_FILE (default /etc/phobos.conf).\n\
                  Exit codes: 0 ok, 1 database or connection error, 2 usage error \
                  (before connecting; also an unreadable --file or a value over 64 MiB), \
                  3 no such lock or key."
)]
struct Cli {
    /// libpq-style connection string or postgresql:// URI (overrides the
    /// environment and the config file)
    #[arg(long, global = true, value_name = "STR")]
    conninfo: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every lock, expired leases included (EXPIRES_IN "expired")
    List {
        /// Only ids starting with P
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// Only owners starting with P
        #[arg(long, value_name = "P", default_value = "")]
        owner_prefix: String,
        /// Machine-readable output (an array of objects)
        #[arg(long)]
        json: bool,
    },
    /// Everything about one live lock (exit 3 if absent or expired)
    Status {
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
        /// Machine-readable output (one object)
        #[arg(long)]
        json: bool,
    },
    /// Release a lock whoever holds it (recorded as force_release)
    Unlock {
        /// Required: the holder loses the lock without being told
        #[arg(long)]
        force: bool,
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
    },
    /// Release every lock whose owner starts with a prefix
    #[command(
        long_about = "Release every lock whose owner starts with --owner-prefix \
        (expired leases included), in one statement, recorded as 'clean' events.\n\n\
        --all instead releases every lock of the database: it lists them and \
        force-releases each one in turn (recorded as 'force_release'). That is not \
        atomic: a lock taken while it runs may survive it, and a lock released and \
        taken again between the listing and its release is released too. The count \
        includes expired leases removed."
    )]
    Clean {
        /// Owner prefix (must not be empty: use --all to wipe everything)
        #[arg(
            long,
            value_name = "P",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        owner_prefix: Option<String>,
        /// Release every lock (instead of --owner-prefix)
        #[arg(long)]
        all: bool,
        /// Only list what would be released
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Acquisitions and releases of one lock, newest first; `history prune`
    /// deletes what is older than the retention
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "A lock named 'prune': dssctl history -- prune"
    )]
    History {
        #[command(subcommand)]
        action: Option<HistoryAction>,
        #[arg(value_parser = NonEmptyStringValueParser::new(), required = true)]
        id: Option<String>,
        /// Show at most N events
        #[arg(long, value_name = "N", default_value_t = 50,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Machine-readable output (an array of objects)
        #[arg(long)]
        json: bool,
    },
    /// Apply the SQL migrations shipped with this build (idempotent)
    Migrate {
        /// Show the schema version and the migrations, apply nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Read and write the key-value store (get, set, del, list)
    #[command(
        subcommand_required = true,
        after_help = "Buckets and keys: non-empty UTF-8, at most 1024 bytes. \
                      Values: any bytes, at most 64 MiB.\n\
                      Exit codes: 0 ok, 1 database or connection error, 2 usage error \
                      (before connecting), 3 no such key (kv get)."
    )]
    Kv {
        #[command(subcommand)]
        op: kv::KvCommand,
    },
}

/// Why a command failed, and so the exit code.
enum Failure {
    /// Exit 1: the library's error.
    Db(Error),
    /// Exit 3: no such lock or key.
    NotFound(String),
    /// Exit 2: a usage error found after parsing, before connecting.
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Db(e)
    }
}

type Outcome = Result<String, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    check_usage(&cli);
    match run(cli) {
        Ok(out) => write_stdout(&out),
        Err(Failure::Usage(msg)) => {
            eprintln!("dssctl: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::NotFound(msg)) => {
            eprintln!("dssctl: {msg}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(Failure::Db(e)) => {
            eprintln!("dssctl: {e}");
            if e.kind == Kind::Protocol {
                eprintln!("dssctl: hint: apply the migrations with `dssctl migrate`");
            }
            ExitCode::from(EXIT_DB)
        }
    }
}

/// The usage rules clap's derive cannot express; exits 2 like clap.
fn check_usage(cli: &Cli) {
    let refuse = |sub: &str, msg: String| -> ! {
        let mut cmd = Cli::command();
        cmd.build();
        let sub = cmd
            .find_subcommand_mut(sub)
            .expect("a subcommand of dssctl");
        sub.error(ErrorKind::InvalidValue, msg).exit()
    };
    match &cli.command {
        Command::Unlock { force: false, id } => refuse(
            "unlock",
            format!(
                "refusing to release '{}' without --force: the holder loses the lock \
             without being told (pass --force)",
                output::text(id)
            ),
        ),
        Command::Clean {
            owner_prefix: Some(p),
            ..
        } if p.is_empty() => refuse(
            "clean",
            "--owner-prefix is empty: that would release every lock; \
             pass --all (without --owner-prefix) if that is what you want"
                .to_string(),
        ),
        _ => {}
    }
}

/// What to do once connected.
enum Job {
    Migrate { dry_run: bool },
    Kv(kv::Request),
    Lock(Command),
}

/// Runs the command; returns what goes to stdout.
fn run(cli: Cli) -> Result<Vec<u8>, Failure> {
    // Everything that can be checked without the database, first.
    let job = match cli.command {
        Command::Migrate { dry_run } => Job::Migrate { dry_run },
        Command::Kv { op } => Job::Kv(kv::prepare(op).map_err(Failure::Usage)?),
        other => Job::Lock(other),
    };
    let conninfo = match cli.conninfo {
        Some(c) => c,
        None => config::connect_string_from_environment()?,
    };
    let settings = settings(&conninfo)?;
    if let Job::Migrate { dry_run } = job {
        return migrate(settings, dry_run).map(String::into_bytes);
    }
    let h = Handle::open(settings)?;
    match job {
        Job::Kv(req) => kv::run(&h, req),
        Job::Lock(command) => lock_command(&h, command).map(String::into_bytes),
        Job::Migrate { .. } => unreachable!("handled above"),
    }
}

#[derive(Subcommand)]
enum HistoryAction {
    /// Delete the history older than the `history_retention` setting
    #[command(long_about = "Delete the rows of dss.lock_history older than the \
        history_retention setting (dss.settings, default '30 days'; '0' keeps \
        everything), in batches of --batch rows, each its own short transaction \
        (no table lock; locks and unlocks go on meanwhile). Needs DELETE on \
        dss.lock_history. Run it daily, e.g. from cron:\n\n    \
        17 3 * * * dssctl history prune\n\nor a systemd timer (contrib/).")]
    Prune {
        /// Only count what would be deleted
        #[arg(long)]
        dry_run: bool,
        /// Rows per transaction
        #[arg(long, value_name = "N", default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        batch: u32,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

/// The lock subcommands (everything but migrate and kv).
fn lock_command(h: &Handle, command: Command) -> Outcome {
    match command {
        Command::List {
            prefix,
            owner_prefix,
            json,
        } => {
            let locks = lock::list(h, &prefix, &owner_prefix)?;
            Ok(if json {
                output::json_text(&output::locks_json(&locks))
            } else {
                output::lock_table(&locks)
            })
        }
        Command::Status { id, json } => {
            let info = lock::info(h, &id).map_err(|e| not_found(e, &id))?;
            Ok(if json {
                output::json_text(&output::lock_json(&id, &info, false))
            } else {
                output::lock_block(&id, &info)
            })
        }
        Command::Unlock { id, .. } => {
            lock::unlock(h, &id, None, &actor()).map_err(|e| not_found(e, &id))?;
            Ok(format!("released '{}'\n", output::text(&id)))
        }
        Command::Clean {
            owner_prefix,
            dry_run,
            json,
            ..
        } => clean(h, owner_prefix.as_deref(), dry_run, json),
        Command::History {
            action:
                Some(HistoryAction::Prune {
                    dry_run,
                    batch,
                    json,
                }),
            ..
        } => {
            let p = lock::prune_history(h, dry_run, batch)?;
            Ok(if json {
                output::json_text(&serde_json::json!({
                    "retention": p.retention,
                    "dry_run": dry_run,
                    (if dry_run { "would_delete" } else { "deleted" }): p.rows,
                }))
            } else if !p.bounded {
                format!(
                    "history_retention is '{}': the history is kept whole, nothing pruned\n",
                    output::text(&p.retention)
                )
            } else if dry_run {
                format!(
                    "{} history row(s) older than '{}' would be deleted (dry run: nothing deleted)\n",
                    p.rows,
                    output::text(&p.retention)
                )
            } else {
                format!(
                    "deleted {} history row(s) older than '{}'\n",
                    p.rows,
                    output::text(&p.retention)
                )
            })
        }
        Command::History {
            id, limit, json, ..
        } => {
            let id = id.expect("clap requires the id without a subcommand");
            let events = lock::history(h, &id, limit)?;
            Ok(if json {
                output::json_text(&output::history_json(&events))
            } else {
                output::history_table(&events)
            })
        }
        Command::Migrate { .. } | Command::Kv { .. } => unreachable!("handled by run"),
    }
}

/// The library's settings, named `dssctl` in pg_stat_activity unless the
/// conninfo (or `PGAPPNAME`) names itself.
fn settings(conninfo: &str) -> Result<Settings, Error> {
    let mut settings = Settings::new(conninfo)?;
    settings.connect.set_fallback_name("dssctl");
    Ok(settings)
}

/// `NoLock` is "not found" (exit 3), anything else a database error.
fn not_found(e: Error, id: &str) -> Failure {
    if e.kind == Kind::NoLock {
        Failure::NotFound(format!(
            "no lock '{}' (absent, or its lease expired)",
            output::text(id)
        ))
    } else {
        Failure::Db(e)
    }
}

/// `clean --owner-prefix P` (`prefix` Some, not empty) or `clean --all`.
fn clean(h: &Handle, prefix: Option<&str>, dry_run: bool, json: bool) -> Outcome {
    if dry_run {
        let locks = lock::list(h, "", prefix.unwrap_or(""))?;
        return Ok(if json {
            output::json_text(&output::locks_json(&locks))
        } else {
            format!(
                "{}{} lock(s) would be released (dry run: nothing released)\n",
                output::lock_table(&locks),
                locks.len()
            )
        });
    }
    let actor = actor();
    let released = match prefix {
        Some(p) => lock::clean(h, p, &actor)?,
        None => {
            let mut n = 0u64;
            for l in lock::list(h, "", "")? {
                match lock::unlock(h, &l.id, None, &actor) {
                    Ok(()) => n += 1,
                    // An expired lease is removed but reported as absent;
                    // anything else absent was released by someone else.
                    Err(e) if e.kind == Kind::NoLock => n += u64::from(l.expired),
                    Err(e) => return Err(e.into()),
                }
            }
            n
        }
    };
    Ok(if json {
        output::json_text(&serde_json::json!({ "released": released }))
    } else {
        match prefix {
            Some(p) => format!(
                "released {released} lock(s) whose owner starts with '{}'\n",
                output::text(p)
            ),
            None => format!("released {released} lock(s)\n"),
        }
    })
}

/// `dssctl:<user>@<host>`: who forced a release, for the history.
fn actor() -> String {
    let owner = lock::owner_self();
    let host = owner.rsplit_once(':').map_or(owner.as_str(), |(h, _)| h);
    format!("dssctl:{}@{host}", user_name())
}

/// $USER, else the name of the real uid, else the uid as a number.
fn user_name() -> String {
    if let Ok(u) = std::env::var("USER")
        && !u.is_empty()
    {
        return u;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pw, buf and found are valid for writes and outlive the call;
    // pw's string fields point into buf.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name is a NUL-terminated string inside buf.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    uid.to_string()
}

/// `dssctl migrate`: a plain client (no schema check, the schema may not
/// exist yet) runs every shipped migration in order. Each is one
/// idempotent transaction, so running it again changes nothing.
fn migrate(settings: Settings, dry_run: bool) -> Outcome {
    let mut client = dss::pq::Connection::connect(&settings.connect, None)
        .map_err(|e| Error::from_pg("connect", &e))?;
    let mut out = String::new();
    let before = schema_version(&mut client)?;
    if dry_run {
        out.push_str(&format!("schema version: {}\n", version_text(before)));
        for (name, _) in dss::sql::MIGRATIONS {
            let applied = matches!((file_version(name), before), (Some(f), Some(b)) if f <= b);
            let state = if applied {
                "applied (re-running changes nothing)"
            } else {
                "pending"
            };
            out.push_str(&format!("{name}: {state}\n"));
        }
        out.push_str(&format!(
            "this build needs schema version {} (dry run: nothing applied)\n",
            dss::sql::SCHEMA_VERSION
        ));
        return Ok(out);
    }
    for (name, text) in dss::sql::MIGRATIONS {
        client
            .batch_execute(text)
            .map_err(|e| Error::from_pg(&format!("migration {name}"), &e))?;
        out.push_str(&format!("applied {name}\n"));
    }
    let after = schema_version(&mut client)?;
    out.push_str(&format!("schema version: {}\n", version_text(after)));
    Ok(out)
}

/// `max(version)` of dss.schema_info; None if there is no schema yet.
fn schema_version(client: &mut dss::pq::Connection) -> Result<Option<i32>, Error> {
    dss::pool::schema_version(client, None).map_err(|e| Error::from_pg("schema version", &e))
}

fn version_text(v: Option<i32>) -> String {
    v.map_or("none (no dss schema)".to_string(), |v| v.to_string())
}

/// The version a migration file writes: its leading number.
fn file_version(name: &str) -> Option<i32> {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Writes the command's output; a closed pipe (`dssctl list | head`) is
/// not an error.
fn write_stdout(out: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dssctl: cannot write the output: {e}");
            ExitCode::from(EXIT_DB)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn migration_versions() {
        assert_eq!(file_version("0002_leases.sql"), Some(2));
        assert_eq!(file_version("x.sql"), None);
        let last = dss::sql::MIGRATIONS.last().unwrap().0;
        assert_eq!(file_version(last), Some(dss::sql::SCHEMA_VERSION));
    }
}

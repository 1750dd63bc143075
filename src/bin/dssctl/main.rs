//! dssctl: the operator's view of the libdss locks, semaphores and
//! key-value store.
//!
//! Locks: `list` (every hold: exclusive, or one row per shared holder, with
//! its MODE), `status` (one lock: its exclusive holder, or its shared
//! holders), `unlock --force` (the exclusive holder), `unlock-shared
//! --force` (the shared holders, or one), `clean`, `history`. Semaphores:
//! `sem list`, `sem status`, `sem release --force` (in `sem.rs`). The
//! key-value store: `kv` (in `kv.rs`). The schema: `migrate`. Output formats
//! and the JSON keys are in `output.rs`.
//!
//! Connects the way the library does (`PHOBOS_DSS_connect_string`, else
//! `[dss] connect_string` in `$PHOBOS_CFG_FILE` or `/etc/phobos.conf`),
//! unless `--conninfo` is given. Data goes to stdout, errors to stderr.
//!
//! Exit codes: 0 ok, 1 database or connection error, 2 usage error
//! (checked before connecting: bad arguments, a release without --force,
//! an unreadable `kv set --file`, a value over 64 MiB), 3 no such lock,
//! semaphore hold or key.

mod kv;
mod output;
mod sem;

use std::io::Write;
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use dss::config::{self, Settings};
use dss::error::{Error, Kind};
use dss::handle::Handle;
use dss::lock;
use dss::shared::{self, MODE_SHARED};

const EXIT_DB: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;

#[derive(Parser)]
#[command(
    name = "dssctl",
    version,
    about = "Inspect and manage libdss locks, semaphores and key-value store in PostgreSQL",
    after_help = "Connection: --conninfo, else PHOBOS_DSS_connect_string, else \
                  [dss] connect_string in $PHOBOS_CFG_FILE (default /etc/phobos.conf).\n\
                  Exit codes: 0 ok, 1 database or connection error, 2 usage error \
                  (before connecting; also a release without --force, an unreadable --file \
                  or a value over 64 MiB), 3 no such lock, semaphore hold or key."
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
    /// Every lock, expired leases included (EXPIRES_IN "expired"); one row
    /// per shared holder (MODE "shared")
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
    /// Everything about one live lock, or its shared holders (exit 3 if
    /// absent or expired)
    #[command(long_about = STATUS_HELP)]
    Status {
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
        /// Machine-readable output (one object)
        #[arg(long)]
        json: bool,
    },
    /// Release a lock whoever holds it (recorded as force_release); see
    /// unlock-shared for a lock held shared
    Unlock {
        /// Required: the holder loses the lock without being told
        #[arg(long)]
        force: bool,
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
    },
    /// Release every shared holder of a lock, or OWNER's share only
    /// (recorded as shared_force_release)
    #[command(long_about = UNLOCK_SHARED_HELP)]
    UnlockShared {
        /// Required: the holders lose the lock without being told
        #[arg(long)]
        force: bool,
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        id: String,
        /// Only this holder's share
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        owner: Option<String>,
    },
    /// Release every lock, shared hold and semaphore permit whose owner
    /// starts with a prefix
    #[command(long_about = CLEAN_HELP)]
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
    /// Counting semaphores: list, status, release
    #[command(
        subcommand_required = true,
        after_help = "Exit codes: 0 ok, 1 database or connection error, 2 usage error \
                      (before connecting; also sem release without --force), 3 no such \
                      semaphore hold (sem status, sem release)."
    )]
    Sem {
        #[command(subcommand)]
        op: sem::SemCommand,
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

const STATUS_HELP: &str = "\
Everything about one live lock. Exit 3 if it is absent, or its lease (every
shared lease) expired.

Held exclusively: id, owner, token, locked_at, refreshed_at, ttl, expires_in
(--json: the object of `list --json`, mode \"exclusive\").
Held shared: id, mode, the number of holders, then one row per live holder:
OWNER, TOKEN, LOCKED_AT, EXPIRES_IN (--json: {\"id\", \"mode\": \"shared\",
\"holders\": [{\"owner\", \"token\", \"locked_at\", \"locked_at_us\",
\"expires_in_ms\"}]}, expires_in_ms null for a share without lease).";

const UNLOCK_SHARED_HELP: &str = "\
Release a lock held shared whoever holds it: without OWNER, every shared
holder's share (recorded in the lock history as 'shared_force_release' events,
with dssctl as the actor); with OWNER, only that holder's (recorded as OWNER's
own 'shared_release': the library records no actor for it). --force is
required either way: the holders lose the lock without being told.

Exit 3 if there was nothing to release (not held shared, or only expired
leases, which are removed all the same). A lock held exclusively is released
with `dssctl unlock --force`.";

const CLEAN_HELP: &str = "\
Release every hold whose owner starts with --owner-prefix, expired leases
included: exclusive locks (one statement, recorded as 'clean' events), then
shared holds ('clean') and semaphore permits ('sem_force_release').

--all instead releases everything in the database: it lists the locks and
semaphores and force-releases each exclusive lock, the shared holders of each
lock held shared and the holders of each semaphore in turn (recorded as
'force_release', 'shared_force_release', 'sem_force_release'). That is not
atomic: a hold taken while it runs may survive it, and a lock released and
taken again between the listing and its release is released too.

--dry-run lists what would be released: the table (or JSON) of `list`, with
semaphore holds as rows of MODE \"semaphore\". The counts, \"lock(s)\", are
of holds (each shared holder and semaphore holder counts), expired leases
removed included.";

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
    let refuse = |path: &[&str], msg: String| -> ! {
        let mut cmd = Cli::command();
        cmd.build();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub
                .find_subcommand_mut(name)
                .expect("a subcommand of dssctl");
        }
        sub.error(ErrorKind::InvalidValue, msg).exit()
    };
    match &cli.command {
        Command::Unlock { force: false, id } => refuse(
            &["unlock"],
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
            &["clean"],
            "--owner-prefix is empty: that would release every lock; \
             pass --all (without --owner-prefix) if that is what you want"
                .to_string(),
        ),
        Command::UnlockShared {
            force: false,
            id,
            owner,
        } => refuse(
            &["unlock-shared"],
            refusal(owner.as_deref(), "the share", id, "the lock"),
        ),
        Command::Sem {
            op:
                sem::SemCommand::Release {
                    force: false,
                    id,
                    owner,
                },
        } => refuse(
            &["sem", "release"],
            refusal(owner.as_deref(), "the permits", id, "its permits"),
        ),
        _ => {}
    }
}

/// Why `unlock-shared` or `sem release` refuses to run without --force:
/// every holder of `id`, or `owner` (its `hold`), would lose `what`.
fn refusal(owner: Option<&str>, hold: &str, id: &str, what: &str) -> String {
    let id = output::text(id);
    let (released, who) = match owner {
        None => (format!("'{id}'"), "every holder"),
        Some(o) => (
            format!("{hold} of '{}' in '{id}'", output::text(o)),
            "the holder",
        ),
    };
    format!(
        "refusing to release {released} without --force: {who} loses {what} \
         without being told (pass --force)"
    )
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
        Command::Status { id, json } => Ok(match status(h, &id)? {
            Held::Exclusive(info) if json => output::json_text(&output::lock_json(
                &id,
                &info,
                false,
                shared::MODE_EXCLUSIVE,
            )),
            Held::Exclusive(info) => output::lock_block(&id, &info),
            Held::Shared(holders) if json => output::json_text(&output::shared_json(&id, &holders)),
            Held::Shared(holders) => output::shared_block(&id, &holders),
        }),
        Command::Unlock { id, .. } => match lock::unlock(h, &id, None, &actor()) {
            Ok(()) => Ok(format!("released '{}'\n", output::text(&id))),
            Err(e) if e.kind == Kind::NoLock && held_shared(h, &id) => {
                Err(Failure::NotFound(format!(
                    "lock '{0}' is held shared, not exclusively: nothing released \
                     (release its shared holders with `dssctl unlock-shared --force {0}`)",
                    output::text(&id)
                )))
            }
            Err(e) => Err(not_found(e, &id)),
        },
        Command::UnlockShared { id, owner, .. } => unlock_shared(h, &id, owner.as_deref()),
        Command::Sem { op } => sem::run(h, op),
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

/// What `status` found.
enum Held {
    Exclusive(lock::Info),
    Shared(Vec<shared::Holder>),
}

/// The exclusive holder of `id` (everything about it), else its shared
/// holders. An id that changes hands between the two reads (taken
/// exclusively after the first) is read again.
fn status(h: &Handle, id: &str) -> Result<Held, Failure> {
    for _ in 0..3 {
        match lock::info(h, id) {
            Ok(info) => return Ok(Held::Exclusive(info)),
            Err(e) if e.kind == Kind::NoLock => {}
            Err(e) => return Err(e.into()),
        }
        match shared::lock_holders(h, id) {
            Ok(holders) if holders.iter().all(|x| x.mode == MODE_SHARED) => {
                return Ok(Held::Shared(holders));
            }
            Ok(_) => {} // taken exclusively meanwhile
            Err(e) => return Err(not_found(e, id)),
        }
    }
    lock::info(h, id)
        .map(Held::Exclusive)
        .map_err(|e| not_found(e, id))
}

/// Whether `id` has live shared holders (for a hint: an error reads as no).
fn held_shared(h: &Handle, id: &str) -> bool {
    shared::lock_holders(h, id).is_ok_and(|hs| hs.iter().any(|x| x.mode == MODE_SHARED))
}

/// Whether `id` is held exclusively (for a hint: an error reads as no).
fn held_exclusive(h: &Handle, id: &str) -> bool {
    lock::info(h, id).is_ok()
}

/// `unlock-shared --force ID [OWNER]`: like `unlock --force`, exit 3 when
/// nothing was released (an expired share is removed, but reads as absent).
fn unlock_shared(h: &Handle, id: &str, owner: Option<&str>) -> Outcome {
    match shared::unlock_shared(h, id, owner, &actor()) {
        Ok(()) => Ok(match owner {
            None => format!("released '{}' (every shared holder)\n", output::text(id)),
            Some(o) => format!(
                "released the share of '{}' in '{}'\n",
                output::text(o),
                output::text(id)
            ),
        }),
        Err(e) if matches!(e.kind, Kind::NoLock | Kind::LeaseExpired) => {
            let mut msg = match owner {
                None => format!(
                    "no shared holder of lock '{}' (absent, or every shared lease expired)",
                    output::text(id)
                ),
                Some(o) => format!(
                    "'{}' holds no share of lock '{}' (absent, or its lease expired)",
                    output::text(o),
                    output::text(id)
                ),
            };
            if owner.is_none() && held_exclusive(h, id) {
                msg = format!(
                    "lock '{0}' is held exclusively, not shared: nothing released \
                     (release it with `dssctl unlock --force {0}`)",
                    output::text(id)
                );
            }
            Err(Failure::NotFound(msg))
        }
        Err(e) => Err(e.into()),
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
        let mut locks = lock::list(h, "", prefix.unwrap_or(""))?;
        locks.extend(
            shared::sem_list(h, "")?
                .iter()
                .filter(|s| s.owner.starts_with(prefix.unwrap_or("")))
                .map(output::sem_as_listed),
        );
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
        None => clean_all(h, &actor)?,
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

/// `clean --all`: force-releases every exclusive lock, the shared holders
/// of every lock held shared and the holders of every semaphore, as listed
/// first; returns how many holds, expired leases removed included.
fn clean_all(h: &Handle, actor: &str) -> Result<u64, Failure> {
    // An expired lease is removed but reported as absent; anything else
    // absent was released by someone else.
    fn count(
        released: dss::error::Result<()>,
        holds: usize,
        expired: usize,
    ) -> Result<u64, Failure> {
        match released {
            Ok(()) => Ok(holds as u64),
            Err(e) if e.kind == Kind::NoLock => Ok(expired as u64),
            Err(e) => Err(e.into()),
        }
    }
    let mut n = 0u64;
    let locks = lock::list(h, "", "")?;
    for l in locks.iter().filter(|l| l.mode != MODE_SHARED) {
        n += count(
            lock::unlock(h, &l.id, None, actor),
            1,
            usize::from(l.expired),
        )?;
    }
    // Listed by id: the shared holders of an id are consecutive, and
    // released together.
    let shares: Vec<&lock::Listed> = locks.iter().filter(|l| l.mode == MODE_SHARED).collect();
    for group in shares.chunk_by(|a, b| a.id == b.id) {
        let expired = group.iter().filter(|l| l.expired).count();
        let released = shared::unlock_shared(h, &group[0].id, None, actor);
        n += count(released, group.len(), expired)?;
    }
    let sems = shared::sem_list(h, "")?;
    for group in sems.chunk_by(|a, b| a.id == b.id) {
        let expired = group.iter().filter(|s| s.expired).count();
        let released = shared::sem_release(h, &group[0].id, None, actor);
        n += count(released, group.len(), expired)?;
    }
    Ok(n)
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
        client.batch_execute(text).map_err(|e| {
            Error::needs_owner(
                Error::from_pg(&format!("migration {name}"), &e),
                "applying the migrations",
            )
        })?;
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

//! `dssctl sem`: the counting semaphores (`dss::shared::sem_*`) from the
//! shell: list their holds, show one semaphore, release holds.
//!
//! A semaphore exists while it has holders; its capacity is the one its
//! holders acquired it with. Every permit has a lease, so a hold whose
//! lease ended is listed as expired by `sem list` and counts as free
//! everywhere else.

use clap::Subcommand;
use clap::builder::NonEmptyStringValueParser;
use dss::error::Kind;
use dss::handle::Handle;
use dss::shared::{self, Holder, MODE_SEMAPHORE, SemListed};

use crate::{Failure, Outcome, actor, output};

const RELEASE_HELP: &str = "\
Release the permits of a semaphore whoever holds them: without OWNER, every
holder's (recorded in the lock history as 'sem_force_release' events, with
dssctl as the actor); with OWNER, only that holder's (recorded as OWNER's own
'sem_release': the library records no actor for it). --force is required
either way: the holders lose their permits without being told.

Exit 3 if there was nothing to release (no holder, or only expired leases,
which are removed all the same).";

#[derive(Subcommand)]
pub enum SemCommand {
    /// Every semaphore hold, expired leases included (EXPIRES_IN "expired")
    List {
        /// Only semaphores whose id starts with ID_PREFIX (default: all)
        #[arg(
            value_name = "ID_PREFIX",
            default_value = "",
            hide_default_value = true
        )]
        id_prefix: String,
        /// Machine-readable output (an array of objects)
        #[arg(long)]
        json: bool,
    },
    /// The live holders of one semaphore and the permits they hold of its
    /// capacity (exit 3 if none)
    Status {
        #[arg(value_name = "SEM_ID", value_parser = NonEmptyStringValueParser::new())]
        id: String,
        /// Machine-readable output (one object)
        #[arg(long)]
        json: bool,
    },
    /// Release every holder's permits, or OWNER's only (recorded as
    /// sem_force_release)
    #[command(long_about = RELEASE_HELP)]
    Release {
        /// Required: the holders lose their permits without being told
        #[arg(long)]
        force: bool,
        #[arg(value_name = "SEM_ID", value_parser = NonEmptyStringValueParser::new())]
        id: String,
        /// Only this holder's permits
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        owner: Option<String>,
    },
}

/// Runs a `sem` subcommand; returns what goes to stdout.
pub fn run(h: &Handle, op: SemCommand) -> Outcome {
    match op {
        SemCommand::List { id_prefix, json } => {
            let holds = shared::sem_list(h, &id_prefix)?;
            Ok(if json {
                output::json_text(&output::sems_json(&holds))
            } else {
                output::sem_table(&holds)
            })
        }
        SemCommand::Status { id, json } => {
            let (capacity, holders) = status(h, &id)?;
            Ok(if json {
                output::json_text(&output::sem_json(&id, capacity, &holders))
            } else {
                output::sem_block(&id, capacity, &holders)
            })
        }
        SemCommand::Release { id, owner, .. } => {
            let released = shared::sem_release(h, &id, owner.as_deref(), &actor());
            match (released, owner) {
                (Ok(()), None) => Ok(format!("released '{}' (every holder)\n", output::text(&id))),
                (Ok(()), Some(owner)) => Ok(format!(
                    "released the permits of '{}' in '{}'\n",
                    output::text(&owner),
                    output::text(&id)
                )),
                // An expired lease is removed, but there was nothing left
                // to release: absent, as for `dssctl unlock`.
                (Err(e), owner) if matches!(e.kind, Kind::NoLock | Kind::LeaseExpired) => {
                    Err(Failure::NotFound(match owner {
                        None => no_holder(&id),
                        Some(owner) => format!(
                            "'{}' holds no permit of semaphore '{}' (absent, or its lease expired)",
                            output::text(&owner),
                            output::text(&id)
                        ),
                    }))
                }
                (Err(e), _) => Err(e.into()),
            }
        }
    }
}

fn no_holder(id: &str) -> String {
    format!(
        "no holder of semaphore '{}' (absent, or every lease expired)",
        output::text(id)
    )
}

/// The capacity and live holders of semaphore `id`, read in one statement
/// (`sem_list` is the only call that reports the capacity; its rows of
/// other ids with this prefix, and expired holds, are dropped).
fn status(h: &Handle, id: &str) -> Result<(u32, Vec<Holder>), Failure> {
    let holds: Vec<SemListed> = shared::sem_list(h, id)?
        .into_iter()
        .filter(|s| s.id == id && !s.expired)
        .collect();
    let Some(capacity) = holds.first().map(|s| s.capacity) else {
        return Err(Failure::NotFound(no_holder(id)));
    };
    let holders = holds
        .into_iter()
        .map(|s| Holder {
            owner: s.owner,
            mode: MODE_SEMAPHORE,
            permits: s.permits,
            token: s.token,
            locked_at: s.locked_at,
            expires_in_ms: s.expires_in_ms,
        })
        .collect();
    Ok((capacity, holders))
}

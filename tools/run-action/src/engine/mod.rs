//! Running one action through the Docker Engine API.

use crate::config::RunConfig;
use bollard::models::ContainerStateStatusEnum;
use bollard::Docker;
use docker::state_of;
use prepare::preflight;
use std::path::Path;
use std::time::Duration;
use vault_core::ledger::{Ledger, LedgerError, StartRecord};
use vault_core::{ActionId, ActionResult, ScanLine, Status};

mod docker;
mod finish;
mod prepare;
mod readback;
mod rm;
mod run;
mod spec;
mod supervise;

pub use docker::{connect, connect_engine, engine_of, inspect, is_ours, remove, Engine};
pub use readback::{unapplied, Unapplied};
pub use rm::{rm, RmError};
pub use spec::{container_config, run_dir, ACTION_TARGET, SECRETS_TARGET};

/// How long to wait for the output stream to drain once the container
/// has exited, and for a killed container to be reported stopped.
/// How long an unreachable daemon is waited for after the runner started,
/// before the outcome is given up as unreadable.
const DAEMON_RETURN_LIMIT: Duration = Duration::from_secs(90);
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const KILL_LIMIT: Duration = Duration::from_secs(60);

/// One scan line's run once the daemon answered: what every step (fresh,
/// reattach, collect, supervise, finish) reads.
pub(super) struct Run<'a> {
    scan: &'a ScanLine,
    ctx: &'a Ctx<'a>,
    docker: Docker,
    ledger: Ledger,
}

impl<'a> Run<'a> {
    fn new(scan: &'a ScanLine, ctx: &'a Ctx<'a>, docker: Docker, ledger: Ledger) -> Self {
        Run {
            scan,
            ctx,
            docker,
            ledger,
        }
    }
}

/// Everything one run needs besides the scan line.
pub struct Ctx<'a> {
    pub config: &'a RunConfig,
    pub cache: &'a Path,
    pub dispatcher: &'a str,
}

/// Run (or resume) the action of `scan`. Yields a result, or an error when
/// the run ledger cannot be read (then nothing was started and nothing may
/// be decided: no result line).
pub async fn execute(scan: &ScanLine, ctx: &Ctx<'_>) -> Result<ActionResult, LedgerError> {
    let fail = |status: Status, err: String| {
        vault_core::report("run-action", format_args!("{}: {status}: {err}", scan.id));
        ActionResult::not_run(scan, status, ctx.dispatcher, err)
    };
    let action = match (&scan.spent, scan.valid_action()) {
        (Some(_), _) => None,
        (None, Ok(a)) => Some(a),
        (None, Err(e)) => return Ok(fail(Status::Rejected, format!("invalid action: {e}"))),
    };
    let ledger = Ledger::new(ctx.cache);
    let record = ledger.lookup(&scan.id)?;
    // A fresh run is refused by policy without asking the daemon; a resume
    // (or an id started before) must first look for the container, which
    // may have run already.
    let checked = match action {
        Some(a) if !scan.resume && record.is_none() => match preflight(a, ctx.config) {
            Ok(p) => Some(p),
            Err((status, e)) => return Ok(fail(status, e)),
        },
        _ => None,
    };
    let id = scan.id.as_str();
    let name = scan.id.container_name();
    // What to record when this id must not start (again).
    let spent = |why: String| fail(Status::Abandoned, why);
    let never_again = |r: &StartRecord| {
        format!(
            "this action was {}, and its result is not in the repo: an action id is started at most once (land a new id to run it again)",
            r.describe()
        )
    };
    let (docker, engine) = match connect_engine().await {
        Ok(d) => d,
        Err(e) => {
            return Ok(match (&scan.spent, &record) {
                (Some(why), _) => spent(why.clone()),
                (None, Some(r)) => spent(never_again(r)),
                (None, None) => fail(Status::Error, e),
            })
        }
    };
    let existing = match inspect(&docker, &name).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(fail(
                Status::Error,
                format!("cannot inspect container {name}: {e}"),
            ))
        }
    };
    if let Some(c) = existing {
        if !is_ours(&c, id) {
            return Ok(fail(
                Status::Error,
                format!("a container named {name} exists that run-action did not create; not touching it"),
            ));
        }
        match state_of(&c) {
            Some(ContainerStateStatusEnum::CREATED) => {
                // Created but never started. Its mounts point at the
                // previous run's secrets: it cannot be started as it is.
                if let Err(e) = remove(&docker, &name, true).await {
                    return Ok(fail(
                        Status::Error,
                        format!("cannot remove never-started {name}: {e}"),
                    ));
                }
                if let Some(r) = &record {
                    return Ok(spent(format!(
                        "this action was {}, but the dispatcher stopped before starting the container (removed now); an action id is started at most once (land a new id to run it)",
                        r.describe()
                    )));
                }
            }
            // A container of this id exists: whatever the scan line says,
            // its true outcome is read from it, and nothing starts again.
            Some(
                ContainerStateStatusEnum::EXITED
                | ContainerStateStatusEnum::DEAD
                | ContainerStateStatusEnum::REMOVING,
            ) => return Ok(Run::new(scan, ctx, docker, ledger).collect(c).await),
            _ => {
                let run = Run::new(scan, ctx, docker, ledger);
                return Ok(run.reattach(record.as_ref(), c).await);
            }
        }
    } else if let Some(r) = &record {
        return Ok(spent(never_again(r)));
    }
    let Some(action) = action else {
        return Ok(spent(scan.spent.clone().unwrap_or_default()));
    };
    // A cache written by an earlier version kept its proof of a start in
    // `<cache>/journal/<id>`: it still counts.
    if legacy_journal_started(ctx.cache, id) {
        return Ok(spent(format!(
            "container {name} is gone, but the journal shows it was started: its outcome is lost; not running it a second time"
        )));
    }
    let run = Run::new(scan, ctx, docker, ledger);
    Ok(run.fresh(action, checked, engine).await)
}

/// Whether an earlier version's journal (`<cache>/journal/<id>`) has a
/// `start` line. Never removed by this version.
fn legacy_journal_started(cache: &Path, id: &str) -> bool {
    std::fs::read_to_string(cache.join("journal").join(id))
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("start")))
}

/// Note in the ledger that `id`'s container was never started; a failure
/// to note it only makes a later message less precise.
fn note_not_started(ledger: &Ledger, id: &ActionId, why: &str) {
    if let Err(e) = ledger.add_not_started(id, why) {
        vault_core::report("run-action", format_args!("{id}: warning: {e}"));
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

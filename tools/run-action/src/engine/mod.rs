//! Running one action through the Docker Engine API.

use crate::config::RunConfig;
use bollard::models::ContainerStateStatusEnum;
use bollard::Docker;
use docker::state_of;
use prepare::preflight;
use std::path::Path;
use std::time::Duration;
use vault_core::admit::Admission;
use vault_core::ledger::{Ledger, LedgerError, StartRecord};
use vault_core::{Action, ActionId, ActionResult, ContainerInfo, ScanLine, Status};

mod docker;
mod finish;
mod gateway;
mod prepare;
mod readback;
mod rm;
mod run;
mod spec;
mod supervise;
mod workspace;

pub use docker::{connect, connect_engine, engine_of, inspect, is_ours, remove, Engine};
pub use gateway::{gateway_name, network_name, Attach as GatewayAttach};
pub use readback::{unapplied, Unapplied};
pub use rm::{rm, sweep_workspaces, RmError};
pub use spec::{container_config, run_dir, Binds, ACTION_TARGET, SECRETS_TARGET};
pub use workspace::{checkouts_dir, remove_recorded, sweep, workspace_dir};

/// How long an unreachable daemon is waited for after the runner started,
/// before the outcome is given up as unreadable.
const DAEMON_RETURN_LIMIT: Duration = Duration::from_secs(90);
/// How long to wait for the output stream to drain once the container
/// has exited, and for a killed container to be reported stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const KILL_LIMIT: Duration = Duration::from_secs(60);

/// One scan line's run once the daemon answered: what every step (fresh,
/// reattach, collect, supervise, finish) reads.
pub(super) struct Run<'a> {
    scan: &'a ScanLine,
    /// The scan line's action, validated; `None` for a spent line (which
    /// never starts anything).
    action: Option<&'a Action>,
    ctx: &'a Ctx<'a>,
    docker: Docker,
    ledger: Ledger,
}

/// Everything one run needs besides the scan line.
pub struct Ctx<'a> {
    pub config: &'a RunConfig,
    /// Approval, expiry and the per-secret policy, checked at a first start.
    pub admission: &'a Admission,
    pub cache: &'a Path,
    pub dispatcher: &'a str,
    /// The dispatcher's checkout configuration (`VAULT_CHECKOUT_CONFIG`);
    /// without it an action with a `checkout` is refused.
    pub checkout: Option<&'a vault_core::checkout::CheckoutConfig>,
}

/// Why an action ends without an outcome read from its container: what is
/// recorded (and reported on stderr), by [`execute`] alone.
#[derive(Debug)]
pub(super) struct NotRun {
    status: Status,
    error: String,
    /// The container, when one was created.
    container: Option<ContainerInfo>,
}

impl NotRun {
    fn new(status: Status, error: impl Into<String>) -> Self {
        NotRun {
            status,
            error: error.into(),
            container: None,
        }
    }

    /// `rejected`: it never ran, and never will as it is.
    pub(super) fn rejected(why: impl std::fmt::Display) -> Self {
        NotRun::new(Status::Rejected, why.to_string())
    }

    /// `error`: it never ran, or its exit could not be read.
    pub(super) fn error(error: impl Into<String>) -> Self {
        NotRun::new(Status::Error, error)
    }

    /// `abandoned`: this id must not start (again).
    pub(super) fn abandoned(error: impl Into<String>) -> Self {
        NotRun::new(Status::Abandoned, error)
    }

    /// The reason recorded.
    pub(super) fn why(&self) -> &str {
        &self.error
    }

    pub(super) fn with_container(mut self, container: ContainerInfo) -> Self {
        self.container = Some(container);
        self
    }

    fn record(self, scan: &ScanLine, dispatcher: &str) -> ActionResult {
        let NotRun {
            status,
            error,
            container,
        } = self;
        vault_core::report("run-action", format_args!("{}: {status}: {error}", scan.id));
        let mut r = ActionResult::not_run(scan, status, dispatcher, error);
        r.container = container;
        r
    }
}

/// Why [`execute`] yields no result at all (nothing is decided, so nothing
/// may be recorded: the action stays claimed for the next cycle).
#[derive(Debug, thiserror::Error)]
pub enum NoResult {
    /// The run ledger cannot be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Another run-action of this id holds its code workspace right now.
    #[error("{0}")]
    Busy(String),
}

/// How [`run`] ends when it yields no outcome.
enum Stop {
    /// Recorded as the result.
    NotRun(NotRun),
    /// No result.
    NoResult(NoResult),
}

impl From<NotRun> for Stop {
    fn from(n: NotRun) -> Self {
        Stop::NotRun(n)
    }
}

impl From<LedgerError> for Stop {
    fn from(e: LedgerError) -> Self {
        Stop::NoResult(NoResult::Ledger(e))
    }
}

/// Run (or resume) the action of `scan`. Yields a result, or an error when
/// the run ledger cannot be read (then nothing was started and nothing may
/// be decided: no result line).
pub async fn execute(scan: &ScanLine, ctx: &Ctx<'_>) -> Result<ActionResult, NoResult> {
    match run(scan, ctx).await {
        Ok(r) => Ok(r),
        Err(Stop::NotRun(n)) => Ok(n.record(scan, ctx.dispatcher)),
        Err(Stop::NoResult(e)) => Err(e),
    }
}

/// [`execute`], every end without an outcome an `Err`.
async fn run(scan: &ScanLine, ctx: &Ctx<'_>) -> Result<ActionResult, Stop> {
    // One run-action at a time per code workspace, from before the fetch
    // to after the push: a second one (started by hand, say) would replace
    // the files under the first one's container. The same for a gateway: a
    // second one would remove the first one's before starting its own. The
    // line's action as written decides (a spent line's too, whose gateway
    // may be removed below).
    let raw = scan.action.as_ref();
    let allowlisted = raw.is_some_and(|a| a.network.egress().is_some());
    let exclusive = allowlisted || raw.is_some_and(|a| a.checkout.is_some());
    let _lock = match exclusive {
        true => Some(
            workspace::lock(ctx.cache, &scan.id, "nothing was started or recorded")
                .map_err(Stop::NoResult)?,
        ),
        false => None,
    };
    let outcome = run_locked(scan, ctx).await;
    // An allowlisted action that ends without running (refused, spent,
    // settled): no gateway of it may be left holding its credentials (one
    // a dispatcher that stopped midway left behind, say). Still under the
    // lock, so it is never another run-action's.
    if allowlisted && matches!(outcome, Err(Stop::NotRun(_))) {
        if let Ok(docker) = connect().await {
            if let Err(e) = gateway::remove_all(&docker, scan.id.as_str()).await {
                vault_core::report("run-action", format_args!("{}: warning: {e}", scan.id));
            }
        }
    }
    outcome
}

async fn run_locked(scan: &ScanLine, ctx: &Ctx<'_>) -> Result<ActionResult, Stop> {
    let action = match (&scan.spent, scan.valid_action()) {
        (Some(_), _) => None,
        (None, Ok(a)) => Some(a),
        (None, Err(e)) => return Err(NotRun::rejected(format!("invalid action: {e}")).into()),
    };
    let ledger = Ledger::new(ctx.cache);
    let record = ledger.lookup(&scan.id)?;
    // A fresh run is refused by policy without asking the daemon; a resume
    // (or an id started before) must first look for the container, which
    // may have run already.
    let checked = match action {
        Some(a) if !scan.resume && record.is_none() => Some(preflight(a, scan, ctx)?),
        _ => None,
    };
    let id = scan.id.as_str();
    let name = scan.id.container_name();
    let never_again = |r: &StartRecord| {
        NotRun::abandoned(format!(
            "this action was {}, and its result is not in the repo: an action id is started at most once (land a new id to run it again)",
            r.describe()
        ))
    };
    let (docker, engine) = match connect_engine().await {
        Ok(d) => d,
        Err(e) => {
            return Err(match (&scan.spent, &record) {
                (Some(why), _) => NotRun::abandoned(why.clone()),
                (None, Some(r)) => never_again(r),
                (None, None) => NotRun::error(e),
            }
            .into())
        }
    };
    let existing = inspect(&docker, &name)
        .await
        .map_err(|e| NotRun::error(format!("cannot inspect container {name}: {e}")))?;
    let run = Run {
        scan,
        action,
        ctx,
        docker,
        ledger,
    };
    if let Some(c) = existing {
        if !is_ours(&c, id) {
            return Err(NotRun::error(format!(
                "a container named {name} exists that run-action did not create; not touching it"
            ))
            .into());
        }
        match state_of(&c) {
            Some(ContainerStateStatusEnum::CREATED) => {
                // Created but never started. Its mounts point at the
                // previous run's secrets: it cannot be started as it is.
                remove(&run.docker, &name, true).await.map_err(|e| {
                    NotRun::error(format!("cannot remove never-started {name}: {e}"))
                })?;
                if let Some(r) = &record {
                    return Err(NotRun::abandoned(format!(
                        "this action was {}, but the dispatcher stopped before starting the container (removed now); an action id is started at most once (land a new id to run it)",
                        r.describe()
                    ))
                    .into());
                }
            }
            // A container of this id exists: whatever the scan line says,
            // its true outcome is read from it, and nothing starts again.
            Some(
                ContainerStateStatusEnum::EXITED
                | ContainerStateStatusEnum::DEAD
                | ContainerStateStatusEnum::REMOVING,
            ) => return Ok(run.collect(c).await),
            _ => return Ok(run.reattach(record.as_ref(), c).await),
        }
    } else if let Some(r) = &record {
        return Err(never_again(r).into());
    }
    Ok(run.fresh(checked, engine).await?)
}

/// Note in the ledger that `id`'s container was never started; a failure
/// to note it only makes a later message less precise.
fn note_not_started(ledger: &Ledger, id: &ActionId, why: &str) {
    if let Err(e) = ledger.add_not_started(id, why) {
        vault_core::report("run-action", format_args!("{id}: warning: {e}"));
    }
}

pub use vault_core::time::now_ms;

//! run-action: run one approved action in a locked-down container.
//!
//! Reads ONE scan line ([`vault_core::ScanLine`]) on stdin — the first
//! non-blank line; anything after it is not read. Streams the container's
//! output, every secret value masked ([`mask`]), to stderr as it comes, and
//! prints exactly one [`vault_core::ActionResult`] line on stdout.
//!
//! Exit status: 0 the action succeeded; 5 a result line was printed whose
//! status is not `succeeded`; 1 no result line could be printed (stdin held
//! no line naming a valid id, the run ledger cannot be read, another
//! run-action holds the action's code workspace, or stdout failed); 2 usage.
//!
//! At most once: before a container is created its start is recorded in
//! the run ledger (`<cache>/ledger/<id>.json`, fsynced). An id with a
//! record is never started again: its container, if still there, is
//! collected or re-attached to; if gone, the result is `abandoned` with
//! when and where it was started. A scan line marked `spent` is recorded
//! `abandoned` the same way, without starting anything.
//!
//! `run-action rm <id>` removes the exited container `vault-<id>` and its
//! action file once the result is durably recorded (never its run-ledger
//! record, see [`vault_core::ledger`]): exit 0
//! (also when already gone), 1 refused or failed (a running container, a
//! container run-action did not create), 4 the daemon is unreachable.
//!
//! Secrets: `VAULT_SECRETS_DIR` holds one file per secret (secret-mount
//! makes it). run-action reads the files the action names to learn what to
//! mask, and binds the directory read-only at `/run/secrets`. If the action
//! names no secrets and the variable is unset, there is no `/run/secrets`.

pub mod cli;
pub mod config;
pub mod engine;
pub use vault_mask as mask;
pub mod output;
pub mod policy;

use clap::Parser;
use std::process::ExitCode;
use vault_core::checkout::CheckoutConfig;
use vault_core::jsonl::{self, Writer};
use vault_core::{ActionId, ActionResult, DispatcherId, Exit, ScanLine, Status};

const TOOL: &str = "run-action";

pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    match dispatch(&cli) {
        Ok(exit) => exit.into(),
        Err(e) => vault_core::exit::exit_for(TOOL, &e, Failed::code_of).into(),
    }
}

/// Why run-action ends without printing a result line (`rm`: without
/// removing the container). Reported, and given its exit code, by
/// [`vault_core::exit::exit_for`] alone. Each text is the whole report line:
/// no variant has a source (a [`vault_core::ledger::LedgerError`] already
/// says its cause).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("rm: {0}")]
    RmId(vault_core::NameError),
    #[error("rm {id}: {err}")]
    Rm { id: ActionId, err: engine::RmError },
    #[error("{0}")]
    Dispatcher(vault_core::SettingError),
    #[error("{0}")]
    NoScanLine(String),
    #[error("{id}: {err}")]
    NoResult { id: ActionId, err: engine::NoResult },
    #[error("cannot write the result: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Admission(vault_core::admit::AdmitError),
    #[error("{0}")]
    Checkout(vault_core::checkout::ConfigError),
    #[error("sweep: {0}")]
    Sweep(engine::RmError),
}

impl Failed {
    /// The exit code, where it is not [`Exit::Failure`].
    fn code_of(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
        match e.downcast_ref::<Failed>()? {
            Failed::RmId(_) | Failed::Dispatcher(_) => Some(Exit::Usage),
            Failed::Rm {
                err: engine::RmError::Unreachable(_),
                ..
            }
            | Failed::Sweep(engine::RmError::Unreachable(_)) => Some(Exit::RetryLater),
            _ => None,
        }
    }
}

fn dispatch(cli: &cli::Cli) -> Result<Exit, Failed> {
    let cache = cli
        .cache
        .clone()
        .unwrap_or_else(vault_core::default_cache_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failed::Runtime)?;
    // A checkout config that cannot be used stops the tool before anything
    // is read or run: it never runs as if unset. (`rm` does not read it: a
    // kept workspace carries its own end of retention.)
    let checkout = || match cli.checkout_config.as_deref() {
        Some(p) if !p.as_os_str().is_empty() => {
            CheckoutConfig::load(p).map(Some).map_err(Failed::Checkout)
        }
        _ => Ok(None),
    };
    match &cli.command {
        Some(cli::Command::Rm { id }) => {
            let id = ActionId::parse(id).map_err(Failed::RmId)?;
            return match runtime.block_on(engine::rm(&cache, &id)) {
                Ok(()) => Ok(Exit::Ok),
                Err(err) => Err(Failed::Rm { id, err }),
            };
        }
        Some(cli::Command::Sweep) => {
            let keep = checkout()?.map_or(vault_core::checkout::DEFAULT_KEEP_FAILED_S, |c| {
                c.keep_failed_s
            });
            let retention = std::time::Duration::from_secs(keep);
            return match runtime.block_on(engine::sweep_workspaces(&cache, retention)) {
                Ok(()) => Ok(Exit::Ok),
                Err(err) => Err(Failed::Sweep(err)),
            };
        }
        None => {}
    }
    let checkout = checkout()?;
    let dispatcher = DispatcherId::or_host(cli.run.dispatcher_id.clone())
        .map_err(Failed::Dispatcher)?
        .to_string();
    let config = cli.run.config();
    // A configured check that cannot be applied stops the run here.
    let admission = cli.run.admit.admission().map_err(Failed::Admission)?;
    let result = match read_scan_line(&dispatcher) {
        Ok(scan) => {
            let ctx = engine::Ctx {
                config: &config,
                admission: &admission,
                cache: &cache,
                dispatcher: &dispatcher,
                checkout: checkout.as_ref(),
            };
            match runtime.block_on(engine::execute(&scan, &ctx)) {
                Ok(r) => r,
                Err(err) => return Err(Failed::NoResult { id: scan.id, err }),
            }
        }
        Err(Unusable::Refused(result)) => {
            let why = result.error.as_deref().unwrap_or_default();
            vault_core::report(TOOL, format_args!("{}: rejected: {why}", result.id));
            *result
        }
        Err(Unusable::NoId(message)) => return Err(Failed::NoScanLine(message)),
    };
    // The runtime (and with it any connection) is done before the result
    // is printed.
    drop(runtime);
    print_result(&result)
}

enum Unusable {
    /// The line names a valid id: its refusal is recorded.
    Refused(Box<ActionResult>),
    NoId(String),
}

fn read_scan_line(dispatcher: &str) -> Result<ScanLine, Unusable> {
    let stdin = std::io::stdin().lock();
    let mut reader = jsonl::Reader::<_, ScanLine>::new(stdin);
    match reader.next() {
        None => Err(Unusable::NoId("no scan line on stdin".into())),
        Some(Ok(scan)) => Ok(scan),
        Some(Err(e)) => match ActionResult::refused(&e, dispatcher) {
            Some(r) => Err(Unusable::Refused(Box::new(r))),
            None => Err(Unusable::NoId(format!("invalid scan line on stdin: {e}"))),
        },
    }
}

fn print_result(result: &ActionResult) -> Result<Exit, Failed> {
    let mut out = Writer::new(std::io::stdout().lock());
    match out.write(result) {
        // A closed stdout ends quietly, but no result line was printed.
        Err(e) if jsonl::is_broken_pipe(&e) => Ok(Exit::Failure),
        Err(e) => Err(Failed::Write(e)),
        Ok(()) if result.status == Status::Succeeded => Ok(Exit::Ok),
        Ok(()) => Ok(Exit::NotSucceeded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::RmError;

    #[test]
    fn failures_map_to_their_exit_codes() {
        let code = |e: Failed| vault_core::exit::exit_for(TOOL, &e, Failed::code_of);
        let id = || ActionId::parse("a1").unwrap();
        let bad_id = ActionId::parse("-a").unwrap_err();
        assert_eq!(code(Failed::RmId(bad_id)), Exit::Usage);
        let unreachable = RmError::Unreachable("down".into());
        let rm = |err| Failed::Rm { id: id(), err };
        assert_eq!(code(rm(unreachable)), Exit::RetryLater);
        assert_eq!(code(rm(RmError::Refused("running".into()))), Exit::Failure);
        assert_eq!(code(Failed::NoScanLine("none".into())), Exit::Failure);
        let rm_text = rm(RmError::Failed("cannot remove vault-a1: gone".into())).to_string();
        assert_eq!(rm_text, "rm a1: cannot remove vault-a1: gone");
    }
}

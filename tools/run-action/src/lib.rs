//! run-action: run one approved action in a locked-down container.
//!
//! Reads ONE scan line ([`vault_core::ScanLine`]) on stdin — the first
//! non-blank line; anything after it is not read. Streams the container's
//! output, every secret value masked ([`mask`]), to stderr as it comes, and
//! prints exactly one [`vault_core::ActionResult`] line on stdout.
//!
//! Exit status: 0 the action succeeded; 5 a result line was printed whose
//! status is not `succeeded`; 1 no result line could be printed (stdin held
//! no line naming a valid id, the run ledger cannot be read, or stdout
//! failed); 2 usage.
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
pub mod mask;
pub mod output;
pub mod policy;

use clap::Parser;
use std::process::ExitCode;
use vault_core::jsonl::{self, Writer};
use vault_core::{ActionResult, Exit, ScanLine, Status};

const TOOL: &str = "run-action";

pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    let cache = cli
        .cache
        .clone()
        .unwrap_or_else(vault_core::default_cache_dir);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            vault_core::report(TOOL, format_args!("cannot start the async runtime: {e}"));
            return Exit::Failure.into();
        }
    };
    match cli.command {
        Some(cli::Command::Rm { id }) => {
            let id = match vault_core::ActionId::parse(&id) {
                Ok(id) => id,
                Err(e) => {
                    vault_core::report(TOOL, format_args!("rm: {e}"));
                    return Exit::Usage.into();
                }
            };
            match runtime.block_on(engine::rm(&cache, &id)) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    vault_core::report(TOOL, format_args!("rm {id}: {e}"));
                    match e {
                        engine::RmError::Unreachable(_) => Exit::RetryLater.into(),
                        _ => Exit::Failure.into(),
                    }
                }
            }
        }
        None => {
            let dispatcher = match vault_core::DispatcherId::or_host(cli.run.dispatcher_id.clone())
            {
                Ok(id) => id.to_string(),
                Err(e) => {
                    vault_core::report(TOOL, e);
                    return Exit::Usage.into();
                }
            };
            let config = cli.run.config();
            let result = match read_scan_line(&dispatcher) {
                Ok(scan) => {
                    let ctx = engine::Ctx {
                        config: &config,
                        cache: &cache,
                        dispatcher: &dispatcher,
                    };
                    match runtime.block_on(engine::execute(&scan, &ctx)) {
                        Ok(r) => r,
                        Err(e) => {
                            vault_core::report(TOOL, format_args!("{}: {e}", scan.id));
                            return Exit::Failure.into();
                        }
                    }
                }
                Err(Unusable::Refused(result)) => {
                    let why = result.error.as_deref().unwrap_or_default();
                    vault_core::report(TOOL, format_args!("{}: rejected: {why}", result.id));
                    *result
                }
                Err(Unusable::NoId(message)) => {
                    vault_core::report(TOOL, message);
                    return Exit::Failure.into();
                }
            };
            // The runtime (and with it any connection) is done before the
            // result is printed.
            drop(runtime);
            print_result(&result)
        }
    }
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

fn print_result(result: &ActionResult) -> ExitCode {
    let mut out = Writer::new(std::io::stdout().lock());
    if let Err(e) = out.write(result) {
        if !jsonl::is_broken_pipe(&e) {
            vault_core::report(TOOL, format_args!("cannot write the result: {e}"));
        }
        return Exit::Failure.into();
    }
    if result.status == Status::Succeeded {
        Exit::Ok.into()
    } else {
        Exit::NotSucceeded.into()
    }
}

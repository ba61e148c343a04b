//! `run-action rm <id>`.

use super::docker::{connect, inspect, is_ours, is_running, remove};
use super::spec::run_dir;
use std::path::Path;
use vault_core::ActionId;

/// `run-action rm <id>`: remove the exited container and its files.
pub async fn rm(cache: &Path, id: &ActionId) -> Result<(), RmError> {
    let docker = connect().await.map_err(RmError::Unreachable)?;
    let name = id.container_name();
    let c = inspect(&docker, &name)
        .await
        .map_err(|e| RmError::Unreachable(format!("cannot inspect {name}: {e}")))?;
    if let Some(c) = c {
        if !is_ours(&c, id.as_str()) {
            return Err(RmError::Refused(format!(
                "container {name} was not created by run-action; not removing it"
            )));
        }
        if is_running(&c) {
            return Err(RmError::Refused(format!(
                "container {name} is still running; not removing it"
            )));
        }
        remove(&docker, &name, false)
            .await
            .map_err(|e| RmError::Failed(format!("cannot remove {name}: {e}")))?;
    }
    // The run ledger (and an earlier version's journal) stays: it is the
    // proof that this id was started.
    match std::fs::remove_dir_all(run_dir(cache, id.as_str())) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RmError::Failed(format!(
            "cannot remove the action file: {e}"
        ))),
        _ => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

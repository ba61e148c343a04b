//! `run-action rm <id>`.

use super::docker::{connect, inspect, is_ours, is_running, remove};
use super::spec::run_dir;
use super::workspace::{remove_recorded, sweep, workspace_dir};
use std::path::Path;
use std::time::Duration;
use vault_core::ActionId;

/// `run-action rm <id>`: remove the exited container and its files.
pub async fn rm(cache: &Path, id: &ActionId) -> Result<(), RmError> {
    // Not while a run-action works on the id (its checkout or gateway).
    let _lock = super::workspace::lock(cache, id, "not removing anything of it")
        .map_err(|e| RmError::Refused(e.to_string()))?;
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
    // The gateway of an allowlisted network, if a run left it behind.
    super::gateway::remove_all(&docker, id.as_str())
        .await
        .map_err(RmError::Failed)?;
    // The run ledger (and an earlier version's journal) stays: it is the
    // proof that this id was started.
    match std::fs::remove_dir_all(run_dir(cache, id.as_str())) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(RmError::Failed(format!(
                "cannot remove the action file: {e}"
            )))
        }
        _ => {}
    }
    // Its result is recorded: its code workspace goes too, unless it is
    // kept for inspection (a failed push); kept ones whose time is up go
    // with it.
    remove_recorded(cache, id.as_str()).map_err(|e| {
        RmError::Failed(format!(
            "cannot remove the workspace {}: {e}",
            workspace_dir(cache, id.as_str()).display()
        ))
    })?;
    let (_, failed) = sweep(cache, None, &mut |_| false);
    for f in failed {
        vault_core::report("run-action", format_args!("warning: cannot remove {f}"));
    }
    Ok(())
}

/// `run-action sweep`: remove the code workspaces whose time is up.
pub async fn sweep_workspaces(cache: &Path, retention: Duration) -> Result<(), RmError> {
    // Which workspaces still have a container (then they are not
    // orphans, whatever their age): asked before anything is removed.
    let ids: Vec<String> = std::fs::read_dir(super::workspace::checkouts_dir(cache))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut unreachable = None;
    let mut gone_ids = std::collections::HashSet::new();
    match connect().await {
        Err(e) => unreachable = Some(e),
        Ok(docker) => {
            for id in ids {
                // A name that is no valid id cannot have a container of ours.
                let Ok(valid) = ActionId::parse(&id) else {
                    gone_ids.insert(id);
                    continue;
                };
                let name = valid.container_name();
                match inspect(&docker, &name).await {
                    Ok(None) => {
                        gone_ids.insert(id);
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        unreachable.get_or_insert(format!("cannot inspect {name}: {e}"));
                    }
                }
            }
        }
    }
    let mut gone = |id: &str| gone_ids.contains(id);
    let (removed, failed) = sweep(cache, Some(retention), &mut gone);
    for id in &removed {
        vault_core::report(
            "run-action",
            format_args!("sweep: removed the workspace of {id}"),
        );
    }
    if let Some(f) = failed.first() {
        return Err(RmError::Failed(format!(
            "cannot remove {f} ({} in all)",
            failed.len()
        )));
    }
    match unreachable {
        Some(e) => Err(RmError::Unreachable(format!(
            "{e}; workspaces of unfinished runs were left"
        ))),
        None => Ok(()),
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

//! Building the result from the finished container.

use super::docker::{inspect, is_running, wait_exit};
use super::supervise::Supervised;
use super::{now_ms, Run, DAEMON_RETURN_LIMIT};
use bollard::models::ContainerInspectResponse;
use std::time::Duration;
use vault_core::{ActionResult, ContainerInfo, Status};

pub(super) fn container_info(c: &ContainerInspectResponse) -> Option<ContainerInfo> {
    Some(ContainerInfo {
        id: c.id.clone()?,
        image: c
            .config
            .as_ref()
            .and_then(|cfg| cfg.image.clone())
            .unwrap_or_default(),
        image_id: c.image.clone(),
    })
}

/// What a run left to read the result from.
pub(super) struct Ran {
    pub(super) cid: String,
    pub(super) container: Option<ContainerInfo>,
    pub(super) sup: Supervised,
    /// The timeout that applied (0: none, the container was collected).
    pub(super) timeout_s: u64,
    /// When the container started (ms since the epoch).
    pub(super) started_ms: u64,
    /// The gateway this process started (`None` on a resume: then one is
    /// looked for by name, if the action's network is an allowlist).
    pub(super) gateway: Option<super::gateway::Gateway>,
}

impl Run<'_> {
    /// Build the result from the finished container, read by inspect.
    pub(super) async fn finish(&self, ran: Ran) -> ActionResult {
        let (scan, ctx, docker) = (self.scan, self.ctx, &self.docker);
        let Ran {
            cid,
            container,
            sup,
            timeout_s,
            started_ms,
            gateway,
        } = ran;
        let cid = cid.as_str();
        let mut r = ActionResult::for_scan(scan, Status::Error, ctx.dispatcher);
        r.container = container;
        r.logs = sup.logs;
        // The exit status is the truth, so a daemon that is away (restarting)
        // is waited for, within a bound, rather than reported as an error.
        let mut inspected = None;
        let give_up = tokio::time::Instant::now() + DAEMON_RETURN_LIMIT;
        while tokio::time::Instant::now() < give_up {
            match inspect(docker, cid).await {
                Ok(Some(c)) => {
                    let running = is_running(&c);
                    if running && !sup.timed_out {
                        // The stream broke (daemon restart) while the runner
                        // lives on: wait for its exit again.
                        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                        let _ = tokio::time::timeout(left, wait_exit(docker, cid)).await;
                        inspected = Some(c);
                        continue;
                    }
                    inspected = Some(c);
                    break;
                }
                Ok(None) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        // The runner is done: the gateway's summary is complete.
        let allowlisted = scan
            .action
            .as_ref()
            .is_some_and(|a| a.network.egress().is_some());
        r.egress = match gateway {
            Some(g) => Some(g.conclude(docker, scan.id.as_str()).await),
            None if allowlisted => {
                // A resumed run: the secrets again, to mask what the
                // gateway says.
                let masker = self
                    .action
                    .or(scan.action.as_ref())
                    .and_then(|a| {
                        super::prepare::load_secrets(a, ctx.config.secrets_dir.as_deref()).ok()
                    })
                    .map(|s| super::prepare::masker_for(&s));
                Some(super::gateway::finish(docker, scan.id.as_str(), None, masker).await)
            }
            None => None,
        };
        let now = now_ms();
        let state = inspected.as_ref().and_then(|c| c.state.clone());
        let running = inspected.as_ref().is_some_and(is_running);
        let started = state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(vault_core::time::parse_ms)
            .unwrap_or(started_ms);
        let finished = state
            .as_ref()
            .and_then(|s| s.finished_at.as_deref())
            .and_then(vault_core::time::parse_ms)
            .filter(|f| *f >= started && !running)
            .unwrap_or(now);
        r.started_at = Some(rfc3339_ms(started));
        r.finished_at = Some(rfc3339_ms(finished));
        r.duration_ms = Some(finished.saturating_sub(started));
        let exit_code = state.as_ref().and_then(|s| s.exit_code);
        match (&state, running) {
            (Some(s), false) if exit_code.is_some() => {
                r.exit_code = exit_code;
                r.oom_killed = Some(s.oom_killed.unwrap_or(false));
                r.status = if sup.timed_out {
                    r.error = Some(format!("timed out after {timeout_s} s"));
                    Status::TimedOut
                } else if exit_code == Some(0) {
                    Status::Succeeded
                } else {
                    Status::Failed
                };
            }
            _ => {
                r.status = Status::Error;
                let why = sup
                    .trouble
                    .unwrap_or_else(|| "the container's exit status could not be read".into());
                r.error = Some(format!("{why} (container {cid})"));
            }
        }
        if let Some((a, c)) = self.action.and_then(|a| Some((a, a.checkout.as_ref()?))) {
            super::workspace::conclude(&mut r, a, c, ctx);
        }
        if matches!(r.status, Status::Error) {
            vault_core::report(
                "run-action",
                format_args!("{}: error: {}", scan.id, r.error.as_deref().unwrap_or("")),
            );
        }
        r
    }
}

pub(super) fn rfc3339_ms(ms: u64) -> String {
    vault_core::time::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

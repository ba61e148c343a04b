//! Starting a fresh container, re-attaching to a running one, collecting
//! an exited one.

use super::docker::{attach_options, inspect, is_status, remove, state_of, Engine};
use super::finish::{container_info, Ran};
use super::prepare::{load_secrets, masker_for, preflight, write_action_file};
use super::readback::verify_created;
use super::spec::{container_config, run_dir};
use super::supervise::{deadline_in, Supervised};
use super::{note_not_started, now_ms, NotRun, Run};
use crate::mask::Masker;
use crate::output::OutputSink;
use crate::policy::{self, Limits};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use std::path::Path;
use std::time::Duration;
use vault_core::ledger::{LedgerError, StartRecord};
use vault_core::{ActionResult, ContainerInfo};

impl Run<'_> {
    /// A fresh start, unless this id must not start: a spent line, or one an
    /// earlier version's journal shows started. `checked`: what
    /// [`preflight`] gave already, if it ran (not on a resume).
    pub(super) async fn fresh(
        &self,
        checked: Option<(String, Limits)>,
        engine: Engine,
    ) -> Result<ActionResult, NotRun> {
        let (scan, ctx, docker, ledger) = (self.scan, self.ctx, &self.docker, &self.ledger);
        let Some(action) = self.action else {
            return Err(NotRun::abandoned(scan.spent.clone().unwrap_or_default()));
        };
        let name = scan.id.container_name();
        // A cache written by an earlier version kept its proof of a start in
        // `<cache>/journal/<id>`: it still counts.
        if legacy_journal_started(ctx.cache, scan.id.as_str()) {
            return Err(NotRun::abandoned(format!(
                "container {name} is gone, but the journal shows it was started: its outcome is lost; not running it a second time"
            )));
        }
        let (image, limits) = match checked {
            Some(p) => p,
            None => preflight(action, scan, ctx)?,
        };
        let secrets_dir = ctx.config.secrets_dir.as_deref();
        let secrets = load_secrets(action, secrets_dir).map_err(NotRun::error)?;
        if let Some(rt) = &ctx.config.runtime {
            match docker.info().await {
                Ok(info) if info.runtimes.as_ref().is_some_and(|r| r.contains_key(rt)) => {}
                Ok(_) => {
                    return Err(NotRun::error(format!(
                        "runtime {rt:?} is not registered with dockerd; refusing to run without it"
                    )))
                }
                Err(e) => {
                    return Err(NotRun::error(format!(
                        "cannot query dockerd's runtimes: {e}"
                    )))
                }
            }
        }
        let image_id = match docker.inspect_image(&image).await {
            Ok(i) => i.id,
            Err(e) if is_status(&e, 404) => {
                return Err(NotRun::error(format!(
                    "image {image:?} is not present on the daemon (run-action never pulls)"
                )))
            }
            Err(e) => {
                return Err(NotRun::error(format!(
                    "cannot inspect image {image:?}: {e}"
                )))
            }
        };
        let action_file = write_action_file(ctx.cache, action)
            .map_err(|e| NotRun::error(format!("cannot write the action file: {e}")))?;
        // The code checkout, fetched now: before the start record, so
        // that a fetch that fails leaves the id unspent (see workspace.rs).
        let workspace = match &action.checkout {
            Some(c) => match super::workspace::prepare(action, c, ctx, engine) {
                Ok(m) => Some(m),
                Err(n) => {
                    let _ = std::fs::remove_dir_all(run_dir(ctx.cache, action.id.as_str()));
                    return Err(n);
                }
            },
            None => None,
        };
        // The gateway, for an allowlisted network: also before the start
        // record (a gateway that cannot start leaves the id unspent).
        let mut gateway = match action.network.egress() {
            Some(e) => {
                match super::gateway::start(docker, action, e, &secrets, ctx, engine).await {
                    Ok(g) => Some(g),
                    Err(n) => {
                        let _ = std::fs::remove_dir_all(run_dir(ctx.cache, action.id.as_str()));
                        if action.checkout.is_some() {
                            super::workspace::discard(ctx.cache, action.id.as_str());
                        }
                        return Err(n);
                    }
                }
            }
            None => None,
        };
        // Every way out below before the container started removes it.
        macro_rules! fail {
            ($n:expr) => {{
                let n = $n;
                if let Some(g) = gateway.take() {
                    g.discard(docker, action.id.as_str()).await;
                }
                return Err(n);
            }};
        }
        // Nothing of this run is left behind when the container never starts.
        let cleanup_action_file = || {
            let _ = std::fs::remove_dir_all(run_dir(ctx.cache, action.id.as_str()));
            if action.checkout.is_some() {
                super::workspace::discard(ctx.cache, action.id.as_str());
            }
        };
        let config = container_config(
            action,
            &image,
            &limits,
            ctx,
            super::spec::Binds {
                secrets_dir,
                action_file: &action_file,
                workspace,
                gateway: gateway.as_ref().map(|g| &g.attach),
            },
            engine,
        );
        // What was asked, kept to check what the engine applied.
        let asked = config.clone();
        // The proof of this start, durable before the container exists.
        let record = StartRecord {
            id: scan.id.clone(),
            blob: scan.blob.clone(),
            commit: scan.commit.clone(),
            container: name.clone(),
            container_id: None,
            not_started: None,
            dispatcher: ctx.dispatcher.to_string(),
            started_at: vault_core::time::now_rfc3339(),
        };
        if let Err(e) = ledger.record_start(&record) {
            cleanup_action_file();
            fail!(match e {
                LedgerError::Exists { .. } => NotRun::abandoned(
                    "another run-action recorded a start of this id in the run ledger first; not starting a second one",
                ),
                e => NotRun::error(format!("{e}; nothing was started")),
            });
        }
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let serialized = super::docker::create_lock(engine);
        let created = docker.create_container(Some(opts), config).await;
        drop(serialized);
        let created = match created {
            Ok(c) => c,
            Err(e) if is_status(&e, 409) => {
                fail!(NotRun::error(format!(
                    "container {name} already exists (another run of this action?); not starting a second one"
                )))
            }
            Err(e) => {
                cleanup_action_file();
                fail!(NotRun::error(format!(
                    "cannot create container {name}: {e}"
                )));
            }
        };
        if let Err(e) = ledger.add_container_id(&scan.id, &created.id) {
            // The start record is there already; only a detail is missing.
            vault_core::report("run-action", format_args!("{}: warning: {e}", scan.id));
        }
        let container = ContainerInfo {
            id: created.id.clone(),
            image: image.clone(),
            image_id,
        };
        // Never run weaker than asked: read back what the engine applied (some
        // accept an option and silently ignore it, e.g. rootless Podman on
        // cgroup v1 every resource limit) before anything starts.
        if let Err(why) = verify_created(
            docker,
            &created.id,
            &asked,
            ctx.config.allow_unenforced_limits,
            &scan.id,
        )
        .await
        {
            let removed = match remove(docker, &created.id, true).await {
                Ok(()) => format!("container {name} was removed without being started"),
                Err(e) => format!(
                    "container {name} was never started but could not be removed ({e}); `run-action rm {}` removes it",
                    scan.id
                ),
            };
            cleanup_action_file();
            note_not_started(ledger, &scan.id, &why);
            fail!(NotRun::error(format!("{why}; {removed}")).with_container(container));
        }
        // Attach before start, so that not a byte of a short-lived
        // container's output is missed.
        let stream = match docker
            .attach_container(&created.id, Some(attach_options()))
            .await
        {
            Ok(a) => a.output,
            Err(e) => {
                let _ = remove(docker, &created.id, true).await;
                cleanup_action_file();
                let why = format!("cannot attach to {name}: {e}");
                note_not_started(ledger, &scan.id, &why);
                fail!(NotRun::error(why));
            }
        };
        let started_ms = now_ms();
        let deadline = deadline_in(Duration::from_secs(limits.timeout_s));
        if let Err(e) = docker.start_container(&created.id, None).await {
            // A start that failed on the wire (a client timeout, say) may have
            // started it all the same: then it is supervised like any other.
            let started = matches!(
                inspect(docker, &created.id).await,
                Ok(Some(c)) if !matches!(state_of(&c), Some(ContainerStateStatusEnum::CREATED) | None)
            );
            if !started {
                if action.checkout.is_some() {
                    super::workspace::discard(ctx.cache, action.id.as_str());
                }
                let why = format!("cannot start container {name}: {e}");
                note_not_started(ledger, &scan.id, &why);
                fail!(NotRun::error(why).with_container(container));
            }
        }
        let sink = OutputSink::new(masker_for(&secrets));
        drop(secrets);
        let sup = self
            .supervise(&created.id, Some(stream), sink, deadline)
            .await;
        Ok(self
            .finish(Ran {
                cid: created.id,
                container: Some(container),
                sup,
                timeout_s: limits.timeout_s,
                started_ms,
                gateway,
            })
            .await)
    }

    /// Resume: the container still runs. Attach (there are no logs to replay:
    /// the logging driver is `none`) and wait out the rest of its timeout.
    pub(super) async fn reattach(
        &self,
        record: Option<&StartRecord>,
        c: ContainerInspectResponse,
    ) -> ActionResult {
        let (scan, ctx, docker) = (self.scan, self.ctx, &self.docker);
        let cid = c.id.clone().unwrap_or_else(|| scan.id.container_name());
        // The timeout alone: a resumed action is not refused again by policy.
        // The line's own action, as a spent line's (not validated, so not in
        // `self.action`) still bounds the wait.
        let timeout_s = scan
            .action
            .as_ref()
            .map_or(ctx.config.timeout_s, |a| policy::timeout_s(a, ctx.config));
        let started_ms = c
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(vault_core::time::parse_ms)
            .or_else(|| record.and_then(|r| vault_core::time::parse_ms(&r.started_at)))
            .unwrap_or_else(now_ms);
        let elapsed = Duration::from_millis(now_ms().saturating_sub(started_ms));
        let deadline = deadline_in(Duration::from_secs(timeout_s).saturating_sub(elapsed));
        let secrets = match self.action {
            Some(a) => load_secrets(a, ctx.config.secrets_dir.as_deref()),
            None => Err("the action's secrets were not mounted".to_string()),
        };
        let sink = match secrets {
            Ok(s) => OutputSink::new(masker_for(&s)),
            Err(e) => OutputSink::withheld(
                Masker::new(std::iter::empty()),
                format!("the secret values are not available to mask it ({e})"),
            ),
        };
        let stream = docker
            .attach_container(&cid, Some(attach_options()))
            .await
            .ok()
            .map(|a| a.output);
        let sup = self.supervise(&cid, stream, sink, deadline).await;
        self.finish(Ran {
            container: container_info(&c),
            cid,
            sup,
            timeout_s,
            started_ms,
            gateway: None,
        })
        .await
    }

    /// Resume: the container already exited; its exit code is in inspect.
    pub(super) async fn collect(&self, c: ContainerInspectResponse) -> ActionResult {
        let sup = Supervised {
            timed_out: false,
            logs: None,
            trouble: None,
        };
        self.finish(Ran {
            cid: c
                .id
                .clone()
                .unwrap_or_else(|| self.scan.id.container_name()),
            container: container_info(&c),
            sup,
            timeout_s: 0,
            started_ms: now_ms(),
            gateway: None,
        })
        .await
    }
}

/// Whether an earlier version's journal (`<cache>/journal/<id>`) has a
/// `start` line. Never removed by this version.
fn legacy_journal_started(cache: &Path, id: &str) -> bool {
    std::fs::read_to_string(cache.join("journal").join(id))
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("start")))
}

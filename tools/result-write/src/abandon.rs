//! `result-write --abandon <id> --reason "..."`: an operator settles a stuck
//! claim by recording a final `abandoned` result over it.
//!
//! Refused (exit 1, nothing written):
//! * when this cache's ledger has a start of the id that was not undone:
//!   this host started its container, which may still be running; its own
//!   dispatcher reconciles the claim when it runs again;
//! * when `vault/actions/<id>.result.json` is not a `running` claim;
//! * when the claim is not stuck ([`vault_core::stuck`]), unless `--force`.
//!
//! The decision is a compare-and-swap on the tip it was made on: the commit
//! is pushed on that tip only, and a moved branch means looking again (the
//! claim may have got its result meanwhile: then it is kept, exit 3). It is
//! never spooled: a decision made on an old tip must not land later.

use crate::{cli::Cli, commit_tree, retrying, Attempt, Recorded, Signing};
use anyhow::{bail, Context};
use vault_core::ledger::Ledger;
use vault_core::{jsonl, ActionId, ActionResult, Exit, Status};
use vault_git::{GitError, Ops, Tip};

/// What is at the result path, as far as settling goes.
enum Found {
    /// A claim: the claim, and the action's own `timeout_s`.
    Claim(Box<ActionResult>, Option<u64>),
    /// Already final: its status.
    Final(Status),
}

fn look(repo: &git2::Repository, tip: &Tip<'_>, id: &ActionId) -> anyhow::Result<Found> {
    let name = id.result_file_name();
    let Some(entry) = tip.actions.as_ref().and_then(|t| t.get_name(&name)) else {
        bail!(
            "{id}: there is no claim to settle ({} is absent)",
            id.result_path()
        );
    };
    let blob = repo.find_blob(entry.id())?;
    let result: ActionResult = serde_json::from_slice(blob.content())
        .with_context(|| format!("{id}: {} is not a result", id.result_path()))?;
    if result.status != Status::Running {
        return Ok(Found::Final(result.status));
    }
    let own = match tip
        .actions
        .as_ref()
        .and_then(|t| t.get_name(&id.action_file_name()))
    {
        Some(a) => vault_core::stuck::action_timeout_s(repo.find_blob(a.id())?.content()),
        None => None,
    };
    Ok(Found::Claim(Box::new(result), own))
}

/// Refuse when this cache's ledger has a start of `id` that was not undone:
/// its container may still be running (checked before the repo's lock is
/// taken, so a dispatcher at work is not waited for).
pub(crate) fn refuse_if_started(cache: &std::path::Path, id: &ActionId) -> anyhow::Result<()> {
    if let Some(start) = Ledger::new(cache).lookup(id)? {
        if start.not_started.is_none() {
            bail!(
                "{id}: refused: this host's ledger says it was {}, so its container may still be running; the dispatcher of this host settles its own claim when it runs again",
                start.describe()
            );
        }
    }
    Ok(())
}

pub(crate) fn run(
    cli: &Cli,
    ops: &Ops,
    me: &str,
    signing: &Signing,
    id: &ActionId,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Exit> {
    let reason = cli.reason.as_deref().unwrap_or_default().trim();
    if reason.is_empty() {
        bail!("--abandon needs --reason \"...\": say why, it is recorded");
    }
    let reason = reason.replace(['\n', '\r'], " ");
    let rule = cli.stuck.rule();
    let repo = ops.repo();
    retrying(cli.tries, |attempt| {
        let base = ops.fetch()?;
        let tip = Tip::read(repo, base)?;
        let (claim, own) = match look(repo, &tip, id)? {
            Found::Claim(c, own) => (c, own),
            Found::Final(status) if attempt == 0 => {
                bail!("{id}: there is no claim to settle: it has a {status} result")
            }
            Found::Final(status) => {
                // It got its result while we were settling: that one stands.
                vault_core::report(
                    crate::TOOL,
                    format!(
                        "{id}: it got a {status} result meanwhile; it is kept, nothing written"
                    ),
                );
                return Ok(Attempt::Done(Exit::LostRace));
            }
        };
        let started = claim
            .started_at
            .as_deref()
            .and_then(vault_core::time::parse_ms);
        let now = vault_core::time::now_ms();
        let by = claim.dispatcher.as_deref().unwrap_or("?");
        let at = claim.started_at.as_deref().unwrap_or("an unknown time");
        if !cli.force && !rule.is_stuck(started, own, now) {
            let from = started.map_or_else(
                || "now".to_string(),
                |s| {
                    vault_core::time::rfc3339_secs(
                        i64::try_from(rule.stuck_from_ms(s, own) / 1000).unwrap_or(i64::MAX),
                    )
                },
            );
            bail!(
                "{id}: refused: the claim by dispatcher {by:?} at {at} is not stuck before {from}; check that host first, then give --force to settle it sooner"
            );
        }
        let mut r = ActionResult::new(id.clone(), Status::Abandoned);
        r.action_commit = claim.action_commit.clone();
        r.action_blob = claim.action_blob.clone();
        r.approval = claim.approval.clone();
        r.dispatcher = Some(me.to_string());
        r.started_at = claim.started_at.clone();
        r.finished_at = Some(vault_core::time::now_rfc3339());
        r.duration_ms = Some(0);
        r.error = Some(format!(
            "abandoned by an operator ({me}): {reason}; it was claimed by dispatcher {by:?} at {at} and its outcome is unknown"
        ));
        let bytes = r.to_file_bytes();
        let tree = tip.tree_with(repo, [(id.result_file_name().as_str(), bytes.as_slice())])?;
        let message = format!("vault: {id} abandoned\n\nSettled by an operator: {reason}\n");
        let commit = commit_tree(
            repo,
            me,
            &message,
            &tree,
            &[&tip.commit],
            signing.key.as_ref(),
        )?;
        match ops.push(commit, base) {
            Ok(()) => {
                jsonl::Writer::new(&mut *out).write(&Recorded {
                    id: id.as_str(),
                    status: Status::Abandoned,
                    commit: commit.to_string(),
                })?;
                Ok(Attempt::Done(Exit::Ok))
            }
            Err(e @ GitError::NonFastForward) => Ok(Attempt::Moved(e)),
            Err(e) => Err(e.into()),
        }
    })
}

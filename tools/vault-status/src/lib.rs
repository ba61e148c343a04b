//! vault-status: an operator's view of an ops repo.
//!
//! One row per action of the watched branch's `vault/actions/`:
//!
//! | status | when | age counts from |
//! | --- | --- | --- |
//! | `pending` | an action file, no result file | the commit that landed it |
//! | `running` | a `running` claim, not stuck | the claim's `started_at` |
//! | `stuck` | a claim past its action's timeout + grace + margin ([`vault_core::stuck`]) | the claim's `started_at` |
//! | a final status | a final result that finished within `--since` | its `finished_at` |
//! | `invalid` | a result file that is not a result | — |
//!
//! Finished actions older than `--since` are left out; so are those on the
//! archive branch (moved there `VAULT_ARCHIVE_AFTER_S` after they
//! finished).

pub mod cli;
mod table;

use anyhow::Context;
use clap::Parser;
use git2::{Oid, Repository};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use vault_core::layout::{ACTION_SUFFIX, RESULT_SUFFIX};
use vault_core::stuck::StuckRule;
use vault_core::{jsonl, ActionId, ActionResult, Status};
use vault_git::{Ops, Tip};

const TOOL: &str = "vault-status";

/// One action's row (a JSON line as is; every key always present).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub status: String,
    /// Seconds since `since`.
    pub age_s: Option<u64>,
    /// When the status began (RFC 3339): landed, claimed or finished.
    pub since: Option<String>,
    pub dispatcher: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i64>,
    /// The principal who signed the approving commit, when verified.
    pub approver: Option<String>,
    /// Why: for stuck, invalid, rejected, error, abandoned, timed_out and
    /// failed rows.
    pub reason: Option<String>,
}

pub fn run() -> ExitCode {
    vault_git::defer_ca_bundle();
    let cli = cli::Cli::parse();
    let stdout = std::io::stdout();
    let table = !cli.json && stdout.is_terminal();
    let result = status(&cli).and_then(|rows| {
        let mut out = stdout.lock();
        if table {
            table::write(&mut out, &rows).context("cannot write the table")
        } else {
            let mut w = jsonl::Writer::new(&mut out);
            rows.iter().try_for_each(|r| w.write(r))?;
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => vault_core::exit::exit_for(TOOL, e.as_ref(), vault_git::exit_code).into(),
    }
}

/// The rows `cli` asks for, sorted by id.
pub fn status(cli: &cli::Cli) -> anyhow::Result<Vec<Row>> {
    let cfg = cli.repo.config()?;
    let ops = Ops::from_config(&cfg)?;
    let tip = if cli.cached {
        ops.cached_tip().context(
            "--cached: the cache has no clone of the branch yet (run once without --cached)",
        )?
    } else {
        ops.fetch()?
    };
    let repo = ops.repo();
    let view = View {
        repo,
        tip,
        now_ms: vault_core::time::now_ms(),
        rule: cli.stuck.rule(),
        since_ms: cli.since.saturating_mul(1000),
    };
    let files = view.files(&Tip::read(repo, tip)?)?;
    let mut rows = Vec::new();
    for (id, (action, result)) in files {
        if cli.id.as_ref().is_some_and(|want| want.as_str() != id) {
            continue;
        }
        let Some(row) = view.row(&id, action, result)? else {
            continue;
        };
        if cli.status.is_empty() || cli.status.contains(&row.status) {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// An action's files on the branch: (action blob, result blob).
type Files = BTreeMap<String, (Option<Oid>, Option<Oid>)>;

struct View<'r> {
    repo: &'r Repository,
    tip: Oid,
    now_ms: u64,
    rule: StuckRule,
    since_ms: u64,
}

impl View<'_> {
    fn files(&self, tip: &Tip<'_>) -> anyhow::Result<Files> {
        let mut files = Files::new();
        let Some(actions) = tip.actions.as_ref() else {
            return Ok(files);
        };
        for entry in actions.iter() {
            let Ok(name) = entry.name() else { continue };
            let (stem, is_result) = match name.strip_suffix(RESULT_SUFFIX) {
                Some(stem) => (stem, true),
                None => match name.strip_suffix(ACTION_SUFFIX) {
                    Some(stem) => (stem, false),
                    None => continue,
                },
            };
            if ActionId::parse(stem).is_err() {
                continue;
            }
            let slot = files.entry(stem.to_string()).or_default();
            if is_result {
                slot.1 = Some(entry.id());
            } else {
                slot.0 = Some(entry.id());
            }
        }
        Ok(files)
    }

    fn age(&self, since_ms: Option<u64>) -> Option<u64> {
        since_ms.map(|s| self.now_ms.saturating_sub(s) / 1000)
    }

    fn row(
        &self,
        id: &str,
        action: Option<Oid>,
        result: Option<Oid>,
    ) -> anyhow::Result<Option<Row>> {
        let mut row = Row {
            id: id.to_string(),
            status: String::new(),
            age_s: None,
            since: None,
            dispatcher: None,
            duration_ms: None,
            exit_code: None,
            approver: None,
            reason: None,
        };
        let Some(result) = result else {
            // Pending: aged from the commit that landed its current blob.
            let Some(blob) = action else { return Ok(None) };
            let name = format!("{id}{ACTION_SUFFIX}");
            let landed = vault_git::last_change(self.repo, self.tip, &name, blob)?;
            let secs = self.repo.find_commit(landed)?.committer().when().seconds();
            row.status = "pending".into();
            row.since = Some(vault_core::time::rfc3339_secs(secs));
            row.age_s = self.age(u64::try_from(secs).ok().map(|s| s * 1000));
            return Ok(Some(row));
        };
        let bytes = self.repo.find_blob(result)?.content().to_vec();
        let r = match serde_json::from_slice::<ActionResult>(&bytes) {
            Ok(r) => r,
            Err(e) => {
                row.status = "invalid".into();
                row.reason = Some(format!("{id}{RESULT_SUFFIX} is not a result: {e}"));
                return Ok(Some(row));
            }
        };
        row.dispatcher = r.dispatcher.clone();
        row.duration_ms = r.duration_ms;
        row.exit_code = r.exit_code;
        row.approver = r.approval.as_ref().and_then(|a| a.principal.clone());
        if r.status == Status::Running {
            let started = r.started_at.as_deref().and_then(vault_core::time::parse_ms);
            let own = match action {
                Some(a) => vault_core::stuck::action_timeout_s(self.repo.find_blob(a)?.content()),
                None => None,
            };
            row.since = r.started_at.clone();
            row.age_s = self.age(started);
            if self.rule.is_stuck(started, own, self.now_ms) {
                row.status = "stuck".into();
                row.reason = Some(format!(
                    "claimed by dispatcher {:?} at {}; no result {} s after its timeout ({} s) and grace ({} s) ran out: check that host, then settle it with result-write --abandon",
                    r.dispatcher.as_deref().unwrap_or("?"),
                    r.started_at.as_deref().unwrap_or("an unknown time"),
                    self.rule.margin_s,
                    own.unwrap_or(self.rule.timeout_s),
                    self.rule.grace_s,
                ));
            } else {
                row.status = "running".into();
            }
            return Ok(Some(row));
        }
        let finished = r
            .finished_at
            .as_deref()
            .and_then(vault_core::time::parse_ms);
        if finished.is_none_or(|f| f.saturating_add(self.since_ms) < self.now_ms) {
            return Ok(None);
        }
        row.status = r.status.to_string();
        row.since = r.finished_at.clone();
        row.age_s = self.age(finished);
        row.reason = match (r.status, &r.error, r.exit_code) {
            (_, Some(e), _) => Some(e.clone()),
            (Status::Failed, None, Some(code)) => Some(format!("exited with {code}")),
            _ => None,
        };
        Ok(Some(row))
    }
}

//! vault-scan: fetch the ops repo and print one JSON line per pending action.
//!
//! The watched branch is fetched into a bare cache clone (see `vault_git`)
//! and read from `refs/remotes/origin/<branch>`, never from a working tree.
//! Only the direct entries of `vault/actions/` are read; nothing else of the
//! repo is opened.
//!
//! stdout, one [`vault_core::ScanLine`] per line, sorted by id:
//!
//! ```json
//! {"schema":1,"id":"a","path":"vault/actions/a.json","commit":"<branch sha>","blob":"<file sha>","action":{...}}
//! {"schema":1,"id":"b","path":"vault/actions/b.json","commit":"<sha>","blob":"<sha>","error":"..."}
//! {"schema":1,"id":"c","path":"vault/actions/c.json","commit":"<sha>","blob":"<sha>","action":{...},"resume":true}
//! ```
//!
//! Pending: `<id>.json` without `<id>.result.json`; or with a `running`
//! result whose `dispatcher` is this dispatcher (`"resume": true`). Another
//! dispatcher's `running` claim and every final result are not pending.
//! An error line is printed for an action file that is not valid JSON,
//! whose id differs from its file stem, has an unknown field or a bad
//! secret name, is too large, or is a symlink or submodule entry. A `.json`
//! file whose name is not a valid id, and a result file that cannot be read
//! as a result, are reported on stderr (no line: the action is not run).
//!
//! At most once, whatever is done to the repo ([`history`]): the branch
//! must only move forward from the last tip dispatched from (a rewrite
//! stops the scan until `--accept-rewrite <new tip>`); an id that had a
//! claim or a result in the branch's first-parent history, or has a record
//! in this cache's run ledger (`vault_core::ledger`), and whose result is
//! gone now, gets `"spent": "<when and where>"` on its line (recorded
//! `abandoned`, never run); so does a final result turned back into this
//! dispatcher's `running` claim.
//!
//! Exit: 0 listed (error lines are data), 1 failure (also: the branch does
//! not exist on the remote; the run ledger or the remembered history is
//! unreadable), 2 usage, 4 remote unreachable (nothing printed), 6 the
//! branch was rewritten (nothing printed).

pub mod approve;
pub mod cli;
pub mod history;
pub mod scan;
pub mod treecheck;
pub mod trust;

use clap::Parser;
use git2::{Oid, Repository};
use history::{Seen, SeenIds, State};
use scan::Candidate;
use std::collections::HashMap;
use std::process::ExitCode;
use vault_core::layout::ACTIONS_DIR;
use vault_core::ledger::Ledger;
use vault_core::{jsonl, report, ActionId, Exit};
use vault_git::sig::AllowedSigners;
use vault_git::{Archive, GitError};

const TOOL: &str = "vault-scan";

pub fn run() -> ExitCode {
    vault_git::defer_ca_bundle();
    let cli = cli::Cli::parse();
    match scan_to(&cli, &mut std::io::stdout().lock()) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => vault_core::exit::exit_for(TOOL, e.as_ref(), vault_git::exit_code).into(),
    }
}

/// Fetch, scan, and write the scan lines to `out`.
pub fn scan_to(cli: &cli::Cli, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let cfg = cli.repo.config()?;
    let me = String::from(cfg.dispatcher.clone());
    // Configured checks are loaded first: one that cannot be is an error,
    // never a scan without it.
    cli.admit.admission()?;
    let signers = AllowedSigners::load_if(cli.admit.approval.allowed_signers())?;
    let dispatchers = AllowedSigners::load_if(cli.trust.dispatcher_signers())?;
    let find_approvals = signers.is_some() || cli.admit.approval.approval_ttl_s.is_some();
    let ops = vault_git::Ops::from_config(&cfg)?;
    let ledger = Ledger::new(ops.cache_root());
    ledger.check()?;
    let repo = ops.repo();
    let state = State::new(|name| ops.state_path(name));
    let mut seen = SeenIds::default();
    let mut walked = Walked::default();
    let before = state.last_tip()?;
    // What this host pushed since the last scan (claims, results) moved the
    // cache's tracking ref: learn it before a fetch can move past it.
    if let Some(cached) = ops.cached_tip() {
        walked = advance(
            repo,
            &state,
            &mut seen,
            cached,
            Rewrite::Skip,
            cli.verbose,
            find_approvals,
        )?;
    }
    let commit = ops.fetch_accepting(cli.accept_rewrite.as_deref())?;
    let on_rewrite = if cli.accept_rewrite.is_some() {
        Rewrite::Accept
    } else {
        Rewrite::Refuse
    };
    // Newest first: what the fetched commits did overrides the older.
    let newer = advance(
        repo,
        &state,
        &mut seen,
        commit,
        on_rewrite,
        cli.verbose,
        find_approvals,
    )?;
    walked.introduced.extend(newer.introduced);
    walked.touched.extend(newer.touched);
    walked.gone.extend(newer.gone);
    // Archive pushes come before the watched branch lets go of the files:
    // the archive as fetched now holds what was moved.
    let archive = Archive::read(ops.archive_repo(), ops.archive_tip())?;
    for g in std::mem::take(&mut walked.gone) {
        if !g.archived(&archive) {
            report(TOOL, g.message);
        }
    }
    let Some(tree) = vault_git::actions_tree_id(repo, commit)? else {
        if cli.verbose {
            report(TOOL, format!("{commit} has no vault/actions folder"));
        }
        return Ok(());
    };
    let tree_cache = ops.state_path("scan-tree.json");
    let cached = if cli.no_scan_cache {
        None
    } else {
        scan::cached_candidates(&tree_cache, tree)
    };
    let candidates = match cached {
        Some(c) => c,
        None => {
            let results_path = ops.state_path("scan-results");
            let mut results = if cli.no_scan_cache {
                scan::ResultCache::default()
            } else {
                scan::ResultCache::load(&results_path)
            };
            let c = scan::candidates(repo, tree, &mut results)?;
            // A cache that cannot be written only costs time next run.
            if let Err(e) = results
                .store(&results_path)
                .and_then(|()| scan::store_candidates(&tree_cache, tree, &c))
            {
                report(TOOL, format!("cannot write the scan cache: {e}"));
            }
            c
        }
    };
    let mut candidates = candidates;
    let mut replaces = HashMap::new();
    let mut trust = None;
    if let Some(signers) = dispatchers {
        let store = ops.state_path("trust.json");
        let introduced = std::mem::take(&mut walked.introduced);
        let mut t = trust::Trust::update(repo, signers, store, before, commit, introduced)?;
        let disbelieved = t.disbelieved(tree)?;
        t.save()?;
        if !disbelieved.is_empty() {
            let actions = repo.find_tree(tree)?;
            let mut ambiguous = scan::ambiguities(repo, tree)?;
            candidates.retain(|c| !disbelieved.contains_key(c.key()));
            for (id, d) in &disbelieved {
                report(TOOL, format!("{id}: {}", d.counts_as_absent()));
                let Ok(id) = ActionId::parse(id) else {
                    continue;
                };
                let unclear = ambiguous.remove(&id);
                if let Some(c) = scan::pending_in(&actions, &id, unclear) {
                    candidates.push(c);
                    replaces.insert(id, d.blob.clone());
                }
            }
            candidates.sort_by(|a, b| a.key().cmp(b.key()));
        }
        trust = Some(disbelieved);
    }
    let mut approvals = find_approvals.then(|| {
        let path = ops.state_path("approvals");
        let valid = approve::Since {
            tip: before,
            touched: &walked.touched,
            rewritten: cli.accept_rewrite.is_some(),
        };
        approve::Approvals::new(repo, commit, signers, path, valid)
    });
    // What history says of the ids that could run, in one look-up.
    let asked: Vec<&ActionId> = candidates
        .iter()
        .filter_map(|c| match c {
            Candidate::Pending { id, .. } => Some(id),
            Candidate::Running { id, dispatcher, .. } if *dispatcher == me => Some(id),
            _ => None,
        })
        .collect();
    let history = state.lookup(&asked, &seen)?;
    let mut writer = jsonl::Writer::new(out);
    for c in candidates {
        let (id, kind, oid, resume, ambiguous) = match c {
            Candidate::Pending {
                id,
                kind,
                oid,
                ambiguous,
            } => (id, kind, oid, false, ambiguous),
            Candidate::Running {
                id,
                kind,
                oid,
                dispatcher,
                ambiguous,
            } => {
                if dispatcher != me {
                    if cli.verbose {
                        report(
                            TOOL,
                            format!("{id}: claimed by dispatcher {dispatcher:?}; skipped"),
                        );
                    }
                    continue;
                }
                (id, kind, oid, true, ambiguous)
            }
            Candidate::BadResult { id, reason } => {
                report(
                    TOOL,
                    format!("{}: {reason}; the action is not run", id.result_path()),
                );
                continue;
            }
            Candidate::BadName { name, reason } => {
                report(TOOL, format!("{ACTIONS_DIR}/{name}: {reason}; skipped"));
                continue;
            }
        };
        // With dispatcher signatures on, the history's evidence of a result
        // is set aside only when it is the very commit of the result file
        // not believed; any other evidence stands (never a second run).
        let evidence = history.get(id.as_str()).filter(|(_, c)| {
            let forged = trust.as_ref().and_then(|d| d.get(id.as_str()));
            forged.is_none_or(|d| d.commit != c.to_string())
        });
        let archived = archived_files(&archive, &id)?;
        let mut spent = match archived {
            Some(folder) => Some(format!(
                "this id was used before: its action and result are archived in {folder} on the branch {}: {AGAIN}",
                ops.archive_branch()
            )),
            None => spent_reason(&ledger, evidence, &id, resume, commit)?,
        };
        let mut line = scan::scan_line(repo, commit, id, kind, &oid, resume);
        if let Some(why) = ambiguous {
            let why = format!("the vault/actions tree is ambiguous about this action: {why}");
            if resume {
                // Claimed already: it may have run; its outcome is unknown.
                spent = spent.or(Some(why));
            } else {
                report(TOOL, format!("{}: rejected: {why}", line.id));
                line.action = None;
                line.error = Some(why);
            }
        }
        if let Some(why) = &spent {
            report(TOOL, format!("{}: {why}", line.id));
        }
        line.spent = spent;
        line.replaces = replaces.remove(&line.id);
        if let (Some(a), Some(blob), None) = (&mut approvals, &line.blob, &line.spent) {
            if line.action.is_some() {
                match a.approval(&line.id, blob) {
                    Ok(found) => line.approval = Some(found),
                    // A resumed run was admitted when it started; run-action
                    // checks again if it has to start it afresh.
                    Err(why) if resume => report(TOOL, format!("{}: {why}", line.id)),
                    Err(why) => {
                        report(TOOL, format!("{}: rejected: {why}", line.id));
                        line.action = None;
                        line.error = Some(why);
                    }
                }
            }
        }
        writer.write(&line)?;
    }
    if let Some(a) = approvals {
        // A cache that cannot be written only costs time next run.
        if let Err(e) = a.store() {
            report(TOOL, format!("cannot write the approvals cache: {e}"));
        }
    }
    Ok(())
}

/// (id, result blob) → the newest commit that put it in place.
pub type Introduced = HashMap<(String, Oid), Oid>;

/// What [`advance`]'s walk found.
#[derive(Default)]
pub struct Walked {
    pub introduced: Introduced,
    /// Action file names a walked commit changed.
    pub touched: std::collections::HashSet<Vec<u8>>,
    /// Final results the walked commits deleted or turned back into claims.
    pub gone: Vec<Gone>,
}

/// A final result that vanished from `vault/actions`, to report unless it
/// was archived.
pub struct Gone {
    pub id: String,
    pub blob: Oid,
    /// Deleted (not turned into a claim).
    pub deleted: bool,
    pub message: String,
}

impl Gone {
    /// Moved to the archive branch, byte for byte: no deletion to report.
    fn archived(&self, archive: &Archive<'_>) -> bool {
        let name = format!("{}{}", self.id, vault_core::layout::RESULT_SUFFIX);
        self.deleted
            && archive
                .get(&self.id, &name)
                .is_ok_and(|e| e.is_some_and(|e| e.id() == self.blob))
    }
}

/// What [`advance`] does with a tip that does not descend from the last
/// one dispatched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Refuse it: exit 6.
    Refuse,
    /// The operator accepted it (`--accept-rewrite`).
    Accept,
    /// Leave everything as it is (the fetch decides).
    Skip,
}

/// Learn what the commits since the last tip dispatched from say, and
/// remember `tip`. The fetch has refused a rewritten branch already unless
/// the operator accepted it; the last tip is checked here again.
fn advance(
    repo: &Repository,
    state: &State,
    seen: &mut SeenIds,
    tip: Oid,
    on_rewrite: Rewrite,
    verbose: bool,
    track_actions: bool,
) -> anyhow::Result<Walked> {
    let not_rewritten = || {
        if on_rewrite == Rewrite::Accept {
            report(
                TOOL,
                "--accept-rewrite: the branch was not rewritten; nothing to accept",
            );
        }
    };
    let last = state.last_tip()?;
    let mut gone = Vec::new();
    let stop = match last {
        None => None,
        Some(last) if last == tip => {
            not_rewritten();
            return Ok(Walked::default());
        }
        Some(last) => {
            let forward = vault_git::first_parent_descends(repo, tip, last).map_err(|e| {
                anyhow::anyhow!(
                    "cannot tell whether {tip} descends from {last}, the last tip dispatched from: {}",
                    e.message()
                )
            })?;
            match (forward, on_rewrite) {
                (true, _) => {
                    not_rewritten();
                    Some(last)
                }
                (false, Rewrite::Skip) => return Ok(Walked::default()),
                (false, Rewrite::Refuse) => {
                    return Err(GitError::Rewritten {
                        old: last,
                        new: tip,
                    }
                    .into())
                }
                (false, Rewrite::Accept) => {
                    report(
                        TOOL,
                        format!("accepted the rewrite of the branch from {last} to {tip}; ids seen before stay spent"),
                    );
                    for (id, became, blob) in history::vanished_finals(repo, last, tip, seen)? {
                        gone.push(Gone {
                            message: format!("{id}: its final result {became} by the rewrite from {last} to {tip}; the action is never started again"),
                            deleted: became == "was deleted",
                            id,
                            blob,
                        });
                    }
                    repo.merge_base(tip, last).ok()
                }
            }
        }
    };
    let started = std::time::Instant::now();
    let learned = history::learn(repo, tip, stop, seen, track_actions)?;
    if last.is_none() && verbose {
        report(
            TOOL,
            format!(
                "fresh cache: learned {} ids with a result from {} commits in {} ms",
                seen.len(),
                learned.commits,
                started.elapsed().as_millis()
            ),
        );
    }
    for v in learned.vanished.into_iter().rev() {
        gone.push(Gone {
            message: format!(
                "{}: its final result {} in commit {}; the action is never started again",
                v.id, v.became, v.commit
            ),
            deleted: v.became == "was deleted",
            id: v.id,
            blob: v.blob,
        });
    }
    state.store_seen(seen)?;
    state.save_tip(tip)?;
    Ok(Walked {
        introduced: learned.introduced,
        touched: learned.touched,
        gone,
    })
}

const AGAIN: &str = "an action id runs at most once (land a new id to run it again)";

/// `id`'s folder in `vault/archive` when it holds its action or result
/// file: the id finished before and was archived.
fn archived_files(archive: &Archive<'_>, id: &ActionId) -> anyhow::Result<Option<String>> {
    for name in [id.result_file_name(), id.action_file_name()] {
        if archive.get(id.as_str(), &name)?.is_some() {
            return Ok(Some(vault_core::layout::archive_folder(id.as_str())));
        }
    }
    Ok(None)
}

/// Why `id` must not start: this cache's ledger has a start of it, or the
/// branch's history had a result for it that is gone now.
fn spent_reason(
    ledger: &Ledger,
    seen: Option<&(Seen, Oid)>,
    id: &ActionId,
    resume: bool,
    tip: Oid,
) -> anyhow::Result<Option<String>> {
    if resume {
        // Our own claim: run-action reconciles it with its ledger. Only a
        // claim that replaced a final result is refused here.
        return Ok(match seen {
            Some((Seen::Final, c)) => Some(format!(
                "its final result (seen in commit {c}) was replaced by a running claim: {AGAIN}"
            )),
            _ => None,
        });
    }
    if let Some(r) = ledger.lookup(id)? {
        return Ok(Some(format!(
            "this action was {}, and its result is gone from the repo (tip {tip}): {AGAIN}",
            r.describe()
        )));
    }
    Ok(seen.map(|(how, c)| {
        let what = match how {
            Seen::Claim => "a claim",
            Seen::Final => "a final result",
        };
        format!("this action had {what} in commit {c}, which is gone at the tip {tip}: {AGAIN}")
    }))
}

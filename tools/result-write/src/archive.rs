//! `result-write --archive`: move finished actions out of the watched
//! branch's `vault/actions` onto the archive branch
//! (`vault-archive/<branch>`, `vault/archive/<ab>/<cd>/`), so that the
//! folder every scan and every commit reads holds what is pending, running
//! or recently finished, not the whole history.
//!
//! An id is due when its result file is final, names that id, finished
//! (`finished_at`) at least `--archive-after-s` seconds ago (a final result
//! without a readable `finished_at` counts as old), and the archive holds
//! none of its files or the very same blobs. An id whose archive folder
//! holds a different file of the same name (an id landed again after its
//! first run) stays where it is. With `--dispatcher-signers`, a result no
//! listed dispatcher committed is never archived: vault-scan counts it as
//! absent. At most [`MAX_IDS`] ids move per call.
//!
//! Two pushes, in this order, each a compare-and-swap retried on a moved
//! branch: the archive branch gets the files (blobs unchanged); then one
//! commit on the watched branch removes exactly the files the archive now
//! holds, byte for byte. A crash between the two leaves the files in both
//! places, which the next call finishes.

use crate::{cli::Cli, commit_tree, retrying, Attempt, Signing};
use git2::{Oid, Repository};
use vault_core::layout::{ACTION_SUFFIX, ARCHIVE_DIR, RESULT_SUFFIX};
use vault_core::{ActionId, ActionResult};
use vault_git::{Archive, GitError, Move, Ops, Tip};

/// Ids moved per call at most: each commit stays small however many
/// results are due (the rest go with the next call).
pub const MAX_IDS: usize = 1000;

/// What is due: files to add to the archive, and the names to remove from
/// `vault/actions` (every file of each due id, added now or earlier).
#[derive(Default)]
struct Due {
    add: Vec<Move>,
    remove: Vec<String>,
    ids: Vec<String>,
}

/// The due ids of `tip` against `archive`.
fn due(
    repo: &Repository,
    tip: &Tip<'_>,
    archive: &Archive<'_>,
    keep_ms: u64,
    believe: &mut dyn FnMut(&str, Oid) -> Result<(), String>,
) -> Due {
    let mut due = Due::default();
    let Some(actions) = tip.actions.as_ref() else {
        return due;
    };
    let now = vault_core::time::now_ms();
    for entry in actions.iter() {
        if due.ids.len() >= MAX_IDS {
            break;
        }
        let Ok(name) = entry.name() else { continue };
        let Some(id) = name
            .strip_suffix(RESULT_SUFFIX)
            .and_then(|s| ActionId::parse(s).ok())
        else {
            continue;
        };
        if !vault_git::is_regular_file(&entry) {
            continue;
        }
        let Ok(blob) = repo.find_blob(entry.id()) else {
            continue;
        };
        let Ok(result) = serde_json::from_slice::<ActionResult>(blob.content()) else {
            continue;
        };
        if !result.status.is_final() || result.id != id {
            continue;
        }
        let finished = result
            .finished_at
            .as_deref()
            .and_then(vault_core::time::parse_ms);
        if finished.is_some_and(|t| t.saturating_add(keep_ms) > now) {
            continue;
        }
        let action_name = format!("{id}{ACTION_SUFFIX}");
        let files: Vec<git2::TreeEntry<'_>> = std::iter::once(entry.clone())
            .chain(actions.get_name(&action_name))
            .collect();
        let mut add = Vec::new();
        let mut clash = false;
        for f in &files {
            let fname = f.name().unwrap_or_default();
            match archive.get(id.as_str(), fname) {
                Ok(None) => add.push(Move {
                    id: id.to_string(),
                    name: fname.to_string(),
                    oid: f.id(),
                    mode: f.filemode(),
                }),
                Ok(Some(there)) if there.id() == f.id() => {}
                // Another file of that name (an id landed again), or a
                // folder that cannot be read: left where it is.
                _ => clash = true,
            }
        }
        if clash || believe(name, entry.id()).is_err() {
            continue;
        }
        due.remove.extend(
            files
                .iter()
                .map(|f| f.name().unwrap_or_default().to_string()),
        );
        due.add.extend(add);
        due.ids.push(id.to_string());
    }
    due
}

/// What one call did: the stdout line.
#[derive(serde::Serialize)]
pub(crate) struct Moved {
    /// Ids moved.
    pub archived: usize,
    /// The cap was reached: more may be due (call again soon).
    pub more: bool,
}

/// Archive what is due.
pub(crate) fn run(cli: &Cli, ops: &Ops, me: &str, signing: &Signing) -> anyhow::Result<Moved> {
    let repo = ops.repo();
    let keep_ms = cli.archive_after_s.saturating_mul(1000);
    let branch = ops.archive_branch();
    retrying(cli.tries, |_| {
        let base = ops.fetch()?;
        let tip = Tip::read(repo, base)?;
        let archive_tip = ops.archive_tip();
        let archive = Archive::read(ops.archive_repo(), archive_tip)?;
        let mut believe = |name: &str, blob: Oid| signing.believes(repo, base, name, blob);
        let due = due(repo, &tip, &archive, keep_ms, &mut believe);
        if due.ids.is_empty() {
            return Ok(Attempt::Done(Moved {
                archived: 0,
                more: false,
            }));
        }
        let list: String = due.ids.iter().map(|id| format!("{id}\n")).collect();
        // 1. The archive branch gets the files.
        let held = if due.add.is_empty() {
            archive_tip
        } else {
            let tree = archive.tree_adding(&due.add)?;
            let parents: Vec<&git2::Commit<'_>> = archive.commit.iter().collect();
            let message = format!(
                "vault: archive {} finished action(s) from {}\n\n{list}",
                due.ids.len(),
                ops.branch()
            );
            let commit = commit_tree(
                ops.archive_repo(),
                me,
                &message,
                &tree,
                &parents,
                signing.key.as_ref(),
            )?;
            match ops.push_archive(commit, archive_tip) {
                Ok(()) => Some(commit),
                Err(e @ GitError::NonFastForward) => return Ok(Attempt::Moved(e)),
                Err(e) => return Err(e.into()),
            }
        };
        // 2. The watched branch lets go of exactly those files.
        let tree = {
            let names: Vec<&str> = due.remove.iter().map(String::as_str).collect();
            tip.tree_changing(repo, [], &names)?
        };
        let message = format!(
            "vault: archive {} finished action(s) into {branch}\n\nNow in {ARCHIVE_DIR}/ of {branch} at {}:\n{list}",
            due.ids.len(),
            held.map(|h| h.to_string()).unwrap_or_default()
        );
        let commit = commit_tree(
            repo,
            me,
            &message,
            &tree,
            &[&tip.commit],
            signing.key.as_ref(),
        )?;
        match ops.push(commit, base) {
            Ok(()) => Ok(Attempt::Done(Moved {
                archived: due.ids.len(),
                more: due.ids.len() >= MAX_IDS,
            })),
            Err(e @ GitError::NonFastForward) => Ok(Attempt::Moved(e)),
            Err(e) => Err(e.into()),
        }
    })
}

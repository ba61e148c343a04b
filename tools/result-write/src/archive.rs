//! Moving finished actions out of `vault/actions` into `vault/archive`, in
//! the result commits result-write makes anyway, so that the folder every
//! scan and every commit reads holds what is pending, running or recently
//! finished, not the whole history.
//!
//! An id moves (its `<id>.json` and `<id>.result.json`, blobs unchanged) to
//! `vault/archive/<ab>/<cd>/` ([`vault_core::layout::archive_folder`]) when
//! its result is final, names that id, finished (`finished_at`) at least
//! `--archive-after` seconds ago (a final result without a readable
//! `finished_at` counts as old), and neither file is in the archive
//! already (an id landed again after its first run keeps its second
//! result in `vault/actions`). With `--dispatcher-signers`, a result no
//! listed dispatcher committed is never archived: vault-scan counts it as
//! absent. At most [`MAX_IDS`] ids move per commit.

use git2::Repository;
use vault_core::layout::{ACTION_SUFFIX, RESULT_SUFFIX};
use vault_core::{ActionId, ActionResult};
use vault_git::{Move, Tip};

/// Ids moved per commit at most: a commit stays small however many
/// results are due (the rest go with the next ones).
pub const MAX_IDS: usize = 1000;

/// When a final result becomes due, and which ids are skipped.
pub struct Due<'a> {
    pub now_ms: u64,
    pub after_ms: u64,
    /// File names this commit writes (not moved).
    pub writing: &'a [(String, usize)],
}

/// The entries of `tip`'s `vault/actions` to move into the archive.
/// `believe`: whether a result file may be trusted (see the module doc).
pub fn due(
    repo: &Repository,
    tip: &Tip<'_>,
    when: &Due<'_>,
    believe: &mut dyn FnMut(&str, git2::Oid) -> Result<(), String>,
) -> Vec<Move> {
    let mut moves = Vec::new();
    let Some(actions) = tip.actions.as_ref() else {
        return moves;
    };
    let mut ids = 0;
    for entry in actions.iter() {
        if ids >= MAX_IDS {
            break;
        }
        let Ok(name) = entry.name() else { continue };
        let Some(id) = name
            .strip_suffix(RESULT_SUFFIX)
            .and_then(|s| ActionId::parse(s).ok())
        else {
            continue;
        };
        if !vault_git::is_regular_file(&entry) || when.writing.iter().any(|(w, _)| w == name) {
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
        if finished.is_some_and(|t| t.saturating_add(when.after_ms) > when.now_ms) {
            continue;
        }
        let action_name = format!("{id}{ACTION_SUFFIX}");
        let taken = [name, action_name.as_str()].iter().any(|n| {
            // A folder that cannot be read is no free slot.
            vault_git::archived(tip.archive.as_ref(), id.as_str(), n).map_or(true, |e| e.is_some())
        });
        if taken || believe(name, entry.id()).is_err() {
            continue;
        }
        moves.push(Move {
            id: id.to_string(),
            name: name.to_string(),
            oid: entry.id(),
            mode: entry.filemode(),
        });
        if let Some(action) = actions.get_name(&action_name) {
            moves.push(Move {
                id: id.to_string(),
                name: action_name,
                oid: action.id(),
                mode: action.filemode(),
            });
        }
        ids += 1;
    }
    moves
}

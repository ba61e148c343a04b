//! The first-parent walk that learns what commits did to result files.

use super::{Seen, SeenIds};
use crate::scan::{read_result, ResultState};
use git2::{Oid, Repository};
use std::collections::{HashMap, HashSet};
use vault_core::ActionId;

/// The id of the `vault/actions` tree of `commit`, if any.
fn actions_tree(repo: &Repository, commit: Oid) -> Result<Option<Oid>, git2::Error> {
    vault_git::actions_tree_id(repo, commit).map_err(|e| git2::Error::from_str(&e.to_string()))
}

/// One result file that differs between two `vault/actions` trees.
struct Change {
    id: String,
    old: Option<Oid>,
    new: Option<Oid>,
}

/// The result files of one `vault/actions` tree: id → blob id.
type Results = HashMap<String, Oid>;

/// The direct entries of one `vault/actions` tree that the walk compares.
#[derive(Default)]
struct Entries {
    results: Results,
    /// Action files (`<id>.json`): file name → blob id.
    actions: HashMap<Vec<u8>, Oid>,
}

/// The result files (`<id>.result.json`, direct entries) of the raw tree
/// object `tree` (a commit changes one or two entries of a folder that may
/// hold 200,000: reading the raw object once is far cheaper than libgit2's
/// tree diff). A tree that does not parse past some entry has the ones
/// before it (the scan of the tip refuses such a tree on its own).
fn read_results(
    repo: &Repository,
    tree: Option<Oid>,
    actions: bool,
) -> Result<Entries, git2::Error> {
    let mut out = Entries::default();
    let Some(tree) = tree else {
        return Ok(out);
    };
    let odb = repo.odb()?;
    let obj = odb.read(tree)?;
    let mut rest = obj.data();
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(nul) = rest[sp..].iter().position(|b| *b == 0).map(|n| sp + n) else {
            break;
        };
        let Some(oid) = rest
            .get(nul + 1..nul + 21)
            .and_then(|o| Oid::from_bytes(o).ok())
        else {
            break;
        };
        let (mode, name) = (&rest[..sp], &rest[sp + 1..nul]);
        rest = &rest[nul + 21..];
        if mode == b"40000" {
            continue;
        }
        let result = name.ends_with(vault_core::layout::RESULT_SUFFIX.as_bytes());
        if actions && !result && name.ends_with(vault_core::layout::ACTION_SUFFIX.as_bytes()) {
            out.actions.insert(name.to_vec(), oid);
        }
        if mode == b"160000" {
            continue;
        }
        let stem = name
            .strip_suffix(vault_core::layout::RESULT_SUFFIX.as_bytes())
            .and_then(|s| std::str::from_utf8(s).ok())
            .filter(|s| ActionId::parse(s).is_ok());
        if let Some(stem) = stem {
            out.results.insert(stem.to_string(), oid);
        }
    }
    Ok(out)
}

/// The result files that differ between two trees' [`Results`].
fn changed_results(before: &Results, after: &Results) -> Vec<Change> {
    let mut out: Vec<Change> = after
        .iter()
        .filter(|(id, blob)| before.get(*id) != Some(blob))
        .map(|(id, blob)| Change {
            id: id.clone(),
            old: before.get(id).copied(),
            new: Some(*blob),
        })
        .collect();
    out.extend(
        before
            .iter()
            .filter(|(id, _)| !after.contains_key(*id))
            .map(|(id, blob)| Change {
                id: id.clone(),
                old: Some(*blob),
                new: None,
            }),
    );
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn seen_state(repo: &Repository, blob: Oid) -> Seen {
    match read_result(repo, blob) {
        ResultState::Final => Seen::Final,
        ResultState::Running(_) | ResultState::Invalid(_) => Seen::Claim,
    }
}

/// A final result that a commit deleted or turned back into a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    pub id: String,
    pub became: &'static str,
    pub commit: Oid,
    /// The final result's blob before it vanished.
    pub blob: Oid,
}

/// What [`learn`] found.
#[derive(Debug, Default)]
pub struct Learned {
    pub commits: usize,
    pub vanished: Vec<Vanished>,
    /// Each (id, result blob) a walked commit put in place, with the newest
    /// such commit: the commit that last changed that result file.
    pub introduced: HashMap<(String, Oid), Oid>,
    /// The action files (`<id>.json` names) a walked commit added, changed
    /// or deleted: their approving commit may have changed.
    pub touched: HashSet<Vec<u8>>,
}

/// Note the action files that differ between two trees.
fn note_actions(
    before: &HashMap<Vec<u8>, Oid>,
    after: &HashMap<Vec<u8>, Oid>,
    learned: &mut Learned,
) {
    for (name, blob) in after {
        if before.get(name) != Some(blob) {
            learned.touched.insert(name.clone());
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            learned.touched.insert(name.clone());
        }
    }
}

/// For one change of a result file: note what it became in `seen`, and
/// say how a final result vanished, if it did.
fn note_change(
    repo: &Repository,
    states: &mut HashMap<Oid, Seen>,
    c: &Change,
    at: Oid,
    seen: &mut SeenIds,
) -> Option<&'static str> {
    let mut state = |b: Oid| *states.entry(b).or_insert_with(|| seen_state(repo, b));
    let now = c.new.map(&mut state);
    if let Some(s) = now {
        seen.add(&c.id, s, at);
    }
    let was_final = c.old.is_some_and(|b| state(b) == Seen::Final);
    if !was_final || now == Some(Seen::Final) {
        return None;
    }
    seen.add(&c.id, Seen::Final, at);
    Some(if now.is_none() {
        "was deleted"
    } else {
        "turned back into a running claim"
    })
}

/// Walk the first-parent history from `tip` down to (not including)
/// `stop`, or to the root, and add every result file a commit added or
/// changed in `vault/actions`; list the final results a commit deleted or
/// turned back into a claim.
///
/// `actions`: also note which action files changed ([`Learned::touched`]),
/// for the approvals cache; it costs a map of every action file per tree.
pub fn learn(
    repo: &Repository,
    tip: Oid,
    stop: Option<Oid>,
    seen: &mut SeenIds,
    actions: bool,
) -> Result<Learned, git2::Error> {
    let mut learned = Learned::default();
    let mut states = HashMap::new();
    let mut at = tip;
    let mut new_tree = actions_tree(repo, at)?;
    let mut new_results = read_results(repo, new_tree, actions)?;
    loop {
        if Some(at) == stop {
            break;
        }
        learned.commits += 1;
        let parent = repo.find_commit(at)?.parent_ids().next();
        let old_tree = match parent {
            Some(p) => actions_tree(repo, p)?,
            None => None,
        };
        // Each tree is read once: the parent's results are the next
        // step's child's.
        let old_results = if old_tree == new_tree {
            std::mem::take(&mut new_results)
        } else {
            let old_results = read_results(repo, old_tree, actions)?;
            note_actions(&old_results.actions, &new_results.actions, &mut learned);
            for c in changed_results(&old_results.results, &new_results.results) {
                if let Some(blob) = c.new {
                    learned.introduced.entry((c.id.clone(), blob)).or_insert(at);
                }
                if let (Some(became), Some(blob)) =
                    (note_change(repo, &mut states, &c, at, seen), c.old)
                {
                    learned.vanished.push(Vanished {
                        id: c.id,
                        became,
                        commit: at,
                        blob,
                    });
                }
            }
            old_results
        };
        match parent {
            Some(p) => {
                at = p;
                new_tree = old_tree;
                new_results = old_results;
            }
            None => break,
        }
    }
    Ok(learned)
}

/// A final result at `old` (a tip seen before a rewrite) that is missing,
/// or `running`, at `new`: the id, what it became, its blob at `old`; it is
/// noted as [`Seen::Final`] in `seen`.
pub fn vanished_finals(
    repo: &Repository,
    old: Oid,
    new: Oid,
    seen: &mut SeenIds,
) -> Result<Vec<(String, &'static str, Oid)>, git2::Error> {
    let changes = changed_results(
        &read_results(repo, actions_tree(repo, old)?, false)?.results,
        &read_results(repo, actions_tree(repo, new)?, false)?.results,
    );
    let mut out = Vec::new();
    for c in changes {
        // Only what vanished is noted: what the new tip has is learned by
        // the walk from it.
        let was_final = c.old.is_some_and(|b| seen_state(repo, b) == Seen::Final);
        let now_final = c.new.is_some_and(|b| seen_state(repo, b) == Seen::Final);
        if let (true, false, Some(blob)) = (was_final, now_final, c.old) {
            seen.add(&c.id, Seen::Final, old);
            out.push((
                c.id,
                if c.new.is_none() {
                    "was deleted"
                } else {
                    "turned back into a running claim"
                },
                blob,
            ));
        }
    }
    Ok(out)
}

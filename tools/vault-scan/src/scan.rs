//! Which actions of a `vault/actions` tree are pending, with two caches
//! beside the cache clone that make a repeated scan cheap:
//!
//! * `<key>.scan-tree.json`: the candidates of one `vault/actions` tree id.
//!   A tree id names its whole content, so a changed tree never reuses it.
//! * `<key>.scan-results`: result blob id → what the result says (final,
//!   `running` by whom, unreadable). A blob id names its content, so an
//!   entry never goes stale; entries of results no longer in the tree are
//!   dropped when the file is rewritten.
//!
//! Both are keyed by this tool's version too, so a new build re-reads
//! everything. Action files are always read again (they are few: only the
//! pending ones), so validation never comes from a cache.

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use vault_core::layout::{ACTION_SUFFIX, RESULT_SUFFIX};
use vault_core::{Action, ActionError, ActionId, ScanLine, Status};

/// Result files larger than this are not parsed (a real one is < 1 MiB).
const MAX_RESULT_BYTES: usize = 8 * 1024 * 1024;

const TREE_CACHE_FORMAT: u32 = 2;
const RESULTS_MAGIC: &str = concat!("vault-scan results 1 ", env!("CARGO_PKG_VERSION"), "\n");

/// How the action file is stored in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Blob,
    Symlink,
    Submodule,
}

/// One action file of the tree that may produce output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Candidate {
    /// No result file: pending.
    Pending {
        id: ActionId,
        kind: EntryKind,
        oid: String,
        /// The tree is ambiguous about this id (e.g. two entries of one
        /// name, which `git fsck` refuses): why. It is not run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ambiguous: Option<String>,
    },
    /// A `running` claim by `dispatcher`: pending for that dispatcher only.
    Running {
        id: ActionId,
        kind: EntryKind,
        oid: String,
        dispatcher: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ambiguous: Option<String>,
    },
    /// A result file that cannot be read as one: not pending, but said.
    BadResult { id: ActionId, reason: String },
    /// A `.json` file whose name is not a valid action id.
    BadName { name: String, reason: String },
}

impl Candidate {
    pub fn key(&self) -> &str {
        match self {
            Candidate::Pending { id, .. }
            | Candidate::Running { id, .. }
            | Candidate::BadResult { id, .. } => id.as_str(),
            Candidate::BadName { name, .. } => name,
        }
    }
}

/// What a result blob says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultState {
    Final,
    Running(String),
    Invalid(String),
}

#[derive(Deserialize)]
struct ResultHead {
    status: Status,
    #[serde(default)]
    dispatcher: Option<String>,
}

pub fn read_result(repo: &Repository, oid: Oid) -> ResultState {
    let odb = match repo.odb() {
        Ok(o) => o,
        Err(e) => return ResultState::Invalid(e.message().to_string()),
    };
    match odb.read_header(oid) {
        Ok((size, _)) if size > MAX_RESULT_BYTES => {
            return ResultState::Invalid(format!("{size} bytes is too large for a result"))
        }
        Ok(_) => {}
        Err(e) => return ResultState::Invalid(e.message().to_string()),
    }
    let blob = match repo.find_blob(oid) {
        Ok(b) => b,
        Err(e) => return ResultState::Invalid(e.message().to_string()),
    };
    match serde_json::from_slice::<ResultHead>(blob.content()) {
        Ok(r) if r.status == Status::Running => {
            ResultState::Running(r.dispatcher.unwrap_or_default())
        }
        Ok(_) => ResultState::Final,
        Err(e) => ResultState::Invalid(format!("not a valid result: {e}")),
    }
}

/// The result-blob cache (see the module docs).
#[derive(Default)]
pub struct ResultCache {
    known: HashMap<Oid, ResultState>,
    used: HashMap<Oid, ResultState>,
    dirty: bool,
}

impl ResultCache {
    /// Load the cache file; a missing or malformed one is an empty cache.
    pub fn load(path: &Path) -> ResultCache {
        let known = std::fs::read(path)
            .ok()
            .and_then(|b| parse_results(&b))
            .unwrap_or_default();
        ResultCache {
            known,
            used: HashMap::new(),
            dirty: false,
        }
    }

    fn get(&mut self, repo: &Repository, oid: Oid) -> ResultState {
        let state = match self.known.remove(&oid) {
            Some(s) => s,
            None => {
                self.dirty = true;
                read_result(repo, oid)
            }
        };
        self.used.insert(oid, state.clone());
        state
    }

    /// Write the entries used by this scan, if anything changed.
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        if !self.dirty && self.known.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(RESULTS_MAGIC.len() + self.used.len() * 24);
        out.extend_from_slice(RESULTS_MAGIC.as_bytes());
        for (oid, state) in &self.used {
            let (tag, text) = match state {
                ResultState::Final => (0u8, ""),
                ResultState::Running(d) => (1, d.as_str()),
                ResultState::Invalid(r) => (2, r.as_str()),
            };
            let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
            out.extend_from_slice(oid.as_bytes());
            out.push(tag);
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text);
        }
        write_atomically(path, &out)
    }
}

fn parse_results(bytes: &[u8]) -> Option<HashMap<Oid, ResultState>> {
    let mut rest = bytes.strip_prefix(RESULTS_MAGIC.as_bytes())?;
    let mut map = HashMap::new();
    while !rest.is_empty() {
        if rest.len() < 23 {
            return None;
        }
        let oid = Oid::from_bytes(&rest[..20]).ok()?;
        let tag = rest[20];
        let len = u16::from_le_bytes([rest[21], rest[22]]) as usize;
        rest = &rest[23..];
        if rest.len() < len {
            return None;
        }
        let text = std::str::from_utf8(&rest[..len]).ok()?.to_string();
        rest = &rest[len..];
        let state = match tag {
            0 => ResultState::Final,
            1 => ResultState::Running(text),
            2 => ResultState::Invalid(text),
            _ => return None,
        };
        map.insert(oid, state);
    }
    Some(map)
}

#[derive(Serialize, Deserialize)]
struct TreeCache {
    format: u32,
    version: String,
    tree: String,
    candidates: Vec<Candidate>,
}

/// The candidates of `tree` from the tree cache, if it holds that tree.
pub fn cached_candidates(path: &Path, tree: Oid) -> Option<Vec<Candidate>> {
    let bytes = std::fs::read(path).ok()?;
    let c: TreeCache = serde_json::from_slice(&bytes).ok()?;
    (c.format == TREE_CACHE_FORMAT
        && c.version == env!("CARGO_PKG_VERSION")
        && c.tree == tree.to_string())
    .then_some(c.candidates)
}

pub fn store_candidates(path: &Path, tree: Oid, candidates: &[Candidate]) -> std::io::Result<()> {
    let c = TreeCache {
        format: TREE_CACHE_FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        tree: tree.to_string(),
        candidates: candidates.to_vec(),
    };
    let bytes = serde_json::to_vec(&c).map_err(std::io::Error::other)?;
    write_atomically(path, &bytes)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A `vault/actions` tree that is not dispatched from at all.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the vault/actions tree {tree} is malformed, {problem}: git fsck refuses it, and its entries cannot be looked up reliably; nothing is dispatched until a new commit repairs it")]
    Malformed { tree: Oid, problem: String },
    #[error("cannot read the vault/actions tree: {0}")]
    Git(#[from] git2::Error),
}

/// Walk the `vault/actions` tree (only its direct entries; subdirectories,
/// non-`.json` files and `.keep` are not read) and list the candidates,
/// sorted by name. Only result blobs not in `results` are read.
///
/// The raw tree is checked first ([`crate::treecheck`]): a tree that is
/// damaged, unsorted, or has an entry git refuses that names no action is
/// refused whole; an action whose files are ambiguous (a duplicate name)
/// is listed once, marked `ambiguous`.
pub fn candidates(
    repo: &Repository,
    tree_id: Oid,
    results: &mut ResultCache,
) -> Result<Vec<Candidate>, TreeError> {
    let mut ambiguous = ambiguities(repo, tree_id)?;
    let tree = repo.find_tree(tree_id)?;
    let mut listed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for entry in tree.iter() {
        let name = entry.name_bytes();
        // Action files only: `<id>.json`, not `<id>.result.json`.
        if name.ends_with(RESULT_SUFFIX.as_bytes()) {
            continue;
        }
        let Some(stem) = name.strip_suffix(ACTION_SUFFIX.as_bytes()) else {
            continue;
        };
        let kind = match entry.filemode() {
            0o100644 | 0o100755 => EntryKind::Blob,
            0o120000 => EntryKind::Symlink,
            0o160000 => EntryKind::Submodule,
            _ => continue, // a subdirectory
        };
        let stem = match std::str::from_utf8(stem) {
            Ok(s) => s,
            Err(_) => {
                out.push(Candidate::BadName {
                    name: String::from_utf8_lossy(name).into_owned(),
                    reason: "the file name is not UTF-8".into(),
                });
                continue;
            }
        };
        let id = match ActionId::parse(stem) {
            Ok(id) => id,
            Err(e) => {
                out.push(Candidate::BadName {
                    name: String::from_utf8_lossy(name).into_owned(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let oid = entry.id().to_string();
        let unclear = ambiguous.remove(&id);
        if unclear.is_some() {
            listed.insert(id.clone());
        } else if listed.contains(&id) {
            continue; // the second entry of an ambiguous id: listed once
        }
        let result = tree.get_name(&id.result_file_name());
        let Some(result) = result else {
            out.push(Candidate::Pending {
                id,
                kind,
                oid,
                ambiguous: unclear,
            });
            continue;
        };
        let state = if vault_git::is_regular_file(&result) {
            results.get(repo, result.id())
        } else {
            ResultState::Invalid("the result file is not a regular file".into())
        };
        match state {
            ResultState::Final => {}
            ResultState::Running(dispatcher) => out.push(Candidate::Running {
                id,
                kind,
                oid,
                dispatcher,
                ambiguous: unclear,
            }),
            ResultState::Invalid(reason) => out.push(Candidate::BadResult { id, reason }),
        }
    }
    out.sort_by(|a, b| a.key().cmp(b.key()));
    Ok(out)
}

/// The raw-tree check of `tree_id` ([`crate::treecheck`]): the ids it is
/// ambiguous about, with why; an error for a tree refused whole.
pub fn ambiguities(
    repo: &Repository,
    tree_id: Oid,
) -> Result<HashMap<ActionId, String>, TreeError> {
    let mut ambiguous: HashMap<ActionId, String> = HashMap::new();
    for p in crate::treecheck::check_actions_tree(repo, tree_id)? {
        match &p.id {
            Some(id) if p.check != "treeNotSorted" => {
                ambiguous.entry(id.clone()).or_insert_with(|| p.to_string());
            }
            _ => {
                return Err(TreeError::Malformed {
                    tree: tree_id,
                    problem: p.to_string(),
                })
            }
        }
    }
    Ok(ambiguous)
}

/// The action `id` of the `vault/actions` tree `tree` as pending (its
/// result file aside), if it has an action file; `ambiguous` as
/// [`ambiguities`] says.
pub fn pending_in(
    tree: &git2::Tree<'_>,
    id: &ActionId,
    ambiguous: Option<String>,
) -> Option<Candidate> {
    let entry = tree.get_name(&id.action_file_name())?;
    let kind = match entry.filemode() {
        0o100644 | 0o100755 => EntryKind::Blob,
        0o120000 => EntryKind::Symlink,
        0o160000 => EntryKind::Submodule,
        _ => return None,
    };
    Some(Candidate::Pending {
        id: id.clone(),
        kind,
        oid: entry.id().to_string(),
        ambiguous,
    })
}

/// The scan line of one action file.
pub fn scan_line(
    repo: &Repository,
    commit: Oid,
    id: ActionId,
    kind: EntryKind,
    oid: &str,
    resume: bool,
) -> ScanLine {
    let path = id.action_path();
    let mut line = ScanLine {
        schema: vault_core::scan::SCAN_SCHEMA,
        id,
        path,
        commit: commit.to_string(),
        blob: Some(oid.to_string()),
        action: None,
        error: None,
        resume,
        spent: None,
        approval: None,
        replaces: None,
    };
    let parsed = match kind {
        EntryKind::Symlink => {
            Err("the action file is a symbolic link; an action must be a regular file".to_string())
        }
        EntryKind::Submodule => {
            line.blob = None;
            Err("the action file is a submodule; an action must be a regular file".to_string())
        }
        EntryKind::Blob => read_action(repo, line.id.as_str(), oid),
    };
    match parsed {
        Ok(a) => line.action = Some(a),
        Err(e) => line.error = Some(e.replace(['\n', '\r'], " ")),
    }
    line
}

fn read_action(repo: &Repository, stem: &str, oid: &str) -> Result<Action, String> {
    let oid = Oid::from_str(oid).map_err(|e| e.message().to_string())?;
    let odb = repo.odb().map_err(|e| e.message().to_string())?;
    let (size, _) = odb
        .read_header(oid)
        .map_err(|e| format!("cannot read the action file: {}", e.message()))?;
    if size > vault_core::action::MAX_ACTION_BYTES {
        return Err(ActionError::TooLarge(size).to_string());
    }
    let blob = repo
        .find_blob(oid)
        .map_err(|e| format!("cannot read the action file: {}", e.message()))?;
    Action::from_file_bytes(stem, blob.content()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::ObjectType;

    #[test]
    fn result_cache_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut c = ResultCache::default();
        let a = Oid::hash_object(ObjectType::Blob, b"a").unwrap();
        let b = Oid::hash_object(ObjectType::Blob, b"b").unwrap();
        let d = Oid::hash_object(ObjectType::Blob, b"d").unwrap();
        c.used.insert(a, ResultState::Final);
        c.used.insert(b, ResultState::Running("host-1".into()));
        c.used.insert(d, ResultState::Invalid("bad".into()));
        c.dirty = true;
        c.store(&path).unwrap();
        let back = ResultCache::load(&path);
        assert_eq!(back.known.len(), 3);
        assert_eq!(back.known[&b], ResultState::Running("host-1".into()));
        assert_eq!(back.known[&d], ResultState::Invalid("bad".into()));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(parse_results(&bytes).is_none());
        assert!(parse_results(b"other magic\n").is_none());
    }

    #[test]
    fn tree_cache_is_keyed_by_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let t1 = Oid::hash_object(ObjectType::Tree, b"1").unwrap();
        let t2 = Oid::hash_object(ObjectType::Tree, b"2").unwrap();
        let cands = vec![Candidate::Pending {
            id: ActionId::parse("a").unwrap(),
            kind: EntryKind::Blob,
            oid: t1.to_string(),
            ambiguous: None,
        }];
        store_candidates(&path, t1, &cands).unwrap();
        assert_eq!(cached_candidates(&path, t1), Some(cands));
        assert_eq!(cached_candidates(&path, t2), None);
    }
}

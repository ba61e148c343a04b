//! Reading and building the `vault/actions` tree.

use crate::GitError;
use git2::{Commit, ObjectType, Oid, Repository, Tree};
use std::collections::BTreeMap;
use vault_core::layout::{ACTIONS_DIR, ACTIONS_SUBDIR, ARCHIVE_DIR, ARCHIVE_SUBDIR, VAULT_DIR};

/// The id of the `vault/actions` tree in `commit`'s tree, if it is a tree.
/// Nothing else of the commit's tree is read.
pub fn actions_tree_id(repo: &Repository, commit: Oid) -> Result<Option<Oid>, GitError> {
    let root = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(GitError::git(format!("cannot read commit {commit}")))?;
    let Some(vault) = root.get_name(VAULT_DIR) else {
        return Ok(None);
    };
    if vault.kind() != Some(ObjectType::Tree) {
        return Ok(None);
    }
    let vault = repo
        .find_tree(vault.id())
        .map_err(GitError::git(format!("cannot read the {VAULT_DIR}/ tree")))?;
    Ok(vault
        .get_name(ACTIONS_SUBDIR)
        .filter(|e| e.kind() == Some(ObjectType::Tree))
        .map(|e| e.id()))
}

/// A branch tip to commit on top of: its commit and the trees down to
/// `vault/actions` (`None` where absent).
pub struct Tip<'r> {
    pub commit: Commit<'r>,
    root: Tree<'r>,
    vault: Option<Tree<'r>>,
    pub actions: Option<Tree<'r>>,
    /// `vault/archive`.
    pub archive: Option<Tree<'r>>,
}

/// A `vault/actions` entry to move into the archive, unchanged.
#[derive(Debug, Clone)]
pub struct Move {
    /// The id whose shard it goes to.
    pub id: String,
    /// Its file name (`<id>.json` or `<id>.result.json`).
    pub name: String,
    pub oid: Oid,
    pub mode: i32,
}

/// The entry `name` of `id`'s folder in the `vault/archive` tree.
pub fn archived(
    archive: Option<&Tree<'_>>,
    id: &str,
    name: &str,
) -> Result<Option<git2::TreeEntry<'static>>, GitError> {
    let Some(archive) = archive else {
        return Ok(None);
    };
    let [a, b] = vault_core::layout::archive_shard(id);
    match archive.get_path(std::path::Path::new(&format!("{a}/{b}/{name}"))) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(GitError::git(format!("cannot read {ARCHIVE_DIR}"))(e)),
    }
}

/// `vault/archive` of `commit`'s tree, if it is a folder.
pub fn archive_tree(repo: &Repository, commit: Oid) -> Result<Option<Tree<'_>>, GitError> {
    let root = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(GitError::git(format!("cannot read commit {commit}")))?;
    match root.get_path(std::path::Path::new(ARCHIVE_DIR)) {
        Ok(e) if e.kind() == Some(ObjectType::Tree) => repo
            .find_tree(e.id())
            .map(Some)
            .map_err(GitError::git(format!("cannot read {ARCHIVE_DIR}"))),
        Ok(_) => Ok(None),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(GitError::git(format!("cannot read {ARCHIVE_DIR}"))(e)),
    }
}

impl<'r> Tip<'r> {
    /// Read `base` and its trees; a `vault` or `vault/actions` that is not a
    /// folder is refused.
    pub fn read(repo: &'r Repository, base: Oid) -> Result<Tip<'r>, GitError> {
        let commit = repo
            .find_commit(base)
            .map_err(GitError::git(format!("cannot read commit {base}")))?;
        let root = commit
            .tree()
            .map_err(GitError::git(format!("cannot read the tree of {base}")))?;
        let vault = match root.get_name(VAULT_DIR) {
            None => None,
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(
                repo.find_tree(e.id())
                    .map_err(GitError::git(format!("cannot read {VAULT_DIR}")))?,
            ),
            Some(_) => return Err(GitError::Layout(VAULT_DIR)),
        };
        let actions = match vault.as_ref().and_then(|v| v.get_name(ACTIONS_SUBDIR)) {
            None => None,
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(
                repo.find_tree(e.id())
                    .map_err(GitError::git(format!("cannot read {ACTIONS_DIR}")))?,
            ),
            Some(_) => return Err(GitError::Layout(ACTIONS_DIR)),
        };
        let archive = match vault.as_ref().and_then(|v| v.get_name(ARCHIVE_SUBDIR)) {
            None => None,
            Some(e) if e.kind() == Some(ObjectType::Tree) => Some(
                repo.find_tree(e.id())
                    .map_err(GitError::git(format!("cannot read {ARCHIVE_DIR}")))?,
            ),
            Some(_) => return Err(GitError::Layout(ARCHIVE_DIR)),
        };
        Ok(Tip {
            commit,
            root,
            vault,
            actions,
            archive,
        })
    }

    /// The tip's tree with `files` (name, content) written into
    /// `vault/actions` as regular files, everything else kept.
    pub fn tree_with<'a>(
        &self,
        repo: &'r Repository,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Tree<'r>, GitError> {
        self.tree_moving(repo, files, &[])
    }

    /// [`Tip::tree_with`], and each of `moves` taken out of `vault/actions`
    /// and put, unchanged, into its id's `vault/archive/<ab>/<cd>/`.
    pub fn tree_moving<'a>(
        &self,
        repo: &'r Repository,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        moves: &[Move],
    ) -> Result<Tree<'r>, GitError> {
        let build = || -> Result<Tree<'r>, git2::Error> {
            let mut tb = repo.treebuilder(self.actions.as_ref())?;
            for (name, bytes) in files {
                tb.insert(name, repo.blob(bytes)?, 0o100644)?;
            }
            for m in moves {
                tb.remove(&m.name)?;
            }
            let actions_id = tb.write()?;
            let mut vb = repo.treebuilder(self.vault.as_ref())?;
            vb.insert(ACTIONS_SUBDIR, actions_id, 0o040000)?;
            if !moves.is_empty() {
                vb.insert(ARCHIVE_SUBDIR, self.archive_with(repo, moves)?, 0o040000)?;
            }
            let vault_id = vb.write()?;
            let mut rb = repo.treebuilder(Some(&self.root))?;
            rb.insert(VAULT_DIR, vault_id, 0o040000)?;
            repo.find_tree(rb.write()?)
        };
        build().map_err(GitError::git("cannot build the new tree"))
    }

    /// The `vault/archive` tree with `moves` added: only the shard folders
    /// they land in are rewritten.
    fn archive_with(&self, repo: &'r Repository, moves: &[Move]) -> Result<Oid, git2::Error> {
        // shard → leaf → entries
        let mut shards: BTreeMap<String, BTreeMap<String, Vec<&Move>>> = BTreeMap::new();
        for m in moves {
            let [a, b] = vault_core::layout::archive_shard(&m.id);
            shards.entry(a).or_default().entry(b).or_default().push(m);
        }
        let sub = |tree: Option<&Tree<'r>>, name: &str| -> Result<Option<Tree<'r>>, git2::Error> {
            match tree.and_then(|t| t.get_name(name)) {
                Some(e) if e.kind() == Some(ObjectType::Tree) => repo.find_tree(e.id()).map(Some),
                _ => Ok(None),
            }
        };
        let mut ab = repo.treebuilder(self.archive.as_ref())?;
        for (a, leaves) in shards {
            let a_tree = sub(self.archive.as_ref(), &a)?;
            let mut bb = repo.treebuilder(a_tree.as_ref())?;
            for (b, entries) in leaves {
                let b_tree = sub(a_tree.as_ref(), &b)?;
                let mut lb = repo.treebuilder(b_tree.as_ref())?;
                for m in entries {
                    lb.insert(&m.name, m.oid, m.mode)?;
                }
                bb.insert(&b, lb.write()?, 0o040000)?;
            }
            ab.insert(&a, bb.write()?, 0o040000)?;
        }
        ab.write()
    }
}

/// The first-parent commit from `tip` that put `blob` at
/// `vault/actions/<name>`: the oldest commit of the unbroken run of
/// first-parent commits, ending at `tip`, that all have it there. For an
/// action file that is the commit that approved it (for a merged pull
/// request, the merge); for a result file, the commit that last changed it.
pub fn last_change(repo: &Repository, tip: Oid, name: &str, blob: Oid) -> Result<Oid, GitError> {
    let mut at = repo
        .find_commit(tip)
        .map_err(GitError::git(format!("cannot read commit {tip}")))?;
    loop {
        let Some(parent) = at.parents().next() else {
            return Ok(at.id());
        };
        let there = match actions_tree_id(repo, parent.id())? {
            Some(t) => repo
                .find_tree(t)
                .map_err(GitError::git("cannot read the vault/actions tree"))?
                .get_name(name)
                .map(|e| e.id()),
            None => None,
        };
        if there != Some(blob) {
            return Ok(at.id());
        }
        at = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_in_vault_actions_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t.invalid").unwrap();
        let mut rb = repo.treebuilder(None).unwrap();
        rb.insert("README", repo.blob(b"hi").unwrap(), 0o100644)
            .unwrap();
        let root = repo.find_tree(rb.write().unwrap()).unwrap();
        let base = repo.commit(None, &sig, &sig, "m", &root, &[]).unwrap();
        let tip = Tip::read(&repo, base).unwrap();
        assert!(tip.actions.is_none());
        let tree = tip
            .tree_with(&repo, [("a.result.json", &b"{}"[..])])
            .unwrap();
        assert!(tree.get_name("README").is_some());
        let next = repo
            .commit(None, &sig, &sig, "m", &tree, &[&tip.commit])
            .unwrap();
        let actions = actions_tree_id(&repo, next).unwrap().unwrap();
        let actions = repo.find_tree(actions).unwrap();
        assert!(actions.get_name("a.result.json").is_some());

        let mut rb = repo.treebuilder(None).unwrap();
        rb.insert("vault", repo.blob(b"x").unwrap(), 0o100644)
            .unwrap();
        let bad = repo.find_tree(rb.write().unwrap()).unwrap();
        let bad = repo.commit(None, &sig, &sig, "m", &bad, &[]).unwrap();
        let Err(e @ GitError::Layout(_)) = Tip::read(&repo, bad) else {
            panic!("a vault file is no vault folder");
        };
        assert_eq!(e.to_string(), "\"vault\" on the branch is not a folder");
    }

    #[test]
    fn moves_leave_actions_for_their_shard_and_keep_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t.invalid").unwrap();
        let commit = |tree: &Tree<'_>, parents: &[&Commit<'_>]| {
            repo.commit(None, &sig, &sig, "m", tree, parents).unwrap()
        };
        let empty = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let base = commit(&empty, &[]);
        let tip = Tip::read(&repo, base).unwrap();
        let files = [
            ("a.json", &b"a"[..]),
            ("a.result.json", &b"ra"[..]),
            ("b.json", &b"b"[..]),
        ];
        let first = commit(&tip.tree_with(&repo, files).unwrap(), &[&tip.commit]);
        let moves_of = |tip: &Tip<'_>, id: &str| -> Vec<Move> {
            let actions = tip.actions.as_ref().unwrap();
            [format!("{id}.json"), format!("{id}.result.json")]
                .into_iter()
                .filter_map(|n| actions.get_name(&n).map(|e| (n, e.id(), e.filemode())))
                .map(|(name, oid, mode)| Move {
                    id: id.into(),
                    name,
                    oid,
                    mode,
                })
                .collect()
        };
        let tip = Tip::read(&repo, first).unwrap();
        let moved = tip.tree_moving(&repo, [], &moves_of(&tip, "a")).unwrap();
        let second = commit(&moved, &[&tip.commit]);
        let tip = Tip::read(&repo, second).unwrap();
        let actions = tip.actions.as_ref().unwrap();
        assert!(
            actions.get_name("a.json").is_none() && actions.get_name("a.result.json").is_none()
        );
        assert!(actions.get_name("b.json").is_some());
        let got = archived(tip.archive.as_ref(), "a", "a.result.json")
            .unwrap()
            .unwrap();
        assert_eq!(repo.find_blob(got.id()).unwrap().content(), b"ra");
        // A later move into another shard keeps what the archive held.
        let third = commit(
            &tip.tree_moving(&repo, [], &moves_of(&tip, "b")).unwrap(),
            &[&tip.commit],
        );
        let tip = Tip::read(&repo, third).unwrap();
        assert!(archived(tip.archive.as_ref(), "a", "a.json")
            .unwrap()
            .is_some());
        assert!(archived(tip.archive.as_ref(), "b", "b.json")
            .unwrap()
            .is_some());
        assert!(archived(tip.archive.as_ref(), "b", "b.result.json")
            .unwrap()
            .is_none());
        assert_eq!(tip.actions.as_ref().unwrap().len(), 0);
    }
}

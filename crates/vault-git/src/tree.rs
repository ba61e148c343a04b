//! Reading and building the `vault/actions` tree.

use crate::GitError;
use git2::{Commit, ObjectType, Oid, Repository, Tree};
use vault_core::layout::{ACTIONS_DIR, ACTIONS_SUBDIR, VAULT_DIR};

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
        Ok(Tip {
            commit,
            root,
            vault,
            actions,
        })
    }

    /// The tip's tree with `files` (name, content) written into
    /// `vault/actions` as regular files, everything else kept.
    pub fn tree_with<'a>(
        &self,
        repo: &'r Repository,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Tree<'r>, GitError> {
        self.tree_changing(repo, files, &[])
    }

    /// [`Tip::tree_with`], and the entries named in `remove` taken out of
    /// `vault/actions` (moved to the archive branch).
    pub fn tree_changing<'a>(
        &self,
        repo: &'r Repository,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        remove: &[&str],
    ) -> Result<Tree<'r>, GitError> {
        let build = || -> Result<Tree<'r>, git2::Error> {
            let mut tb = repo.treebuilder(self.actions.as_ref())?;
            for (name, bytes) in files {
                tb.insert(name, repo.blob(bytes)?, 0o100644)?;
            }
            for name in remove {
                tb.remove(name)?;
            }
            let actions_id = tb.write()?;
            let mut vb = repo.treebuilder(self.vault.as_ref())?;
            vb.insert(ACTIONS_SUBDIR, actions_id, 0o040000)?;
            let vault_id = vb.write()?;
            let mut rb = repo.treebuilder(Some(&self.root))?;
            rb.insert(VAULT_DIR, vault_id, 0o040000)?;
            repo.find_tree(rb.write()?)
        };
        build().map_err(GitError::git("cannot build the new tree"))
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
}

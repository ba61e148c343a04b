//! Reading and building the `vault/actions` tree.

use crate::GitError;
use git2::{ObjectType, Oid, Repository};

/// The id of the `vault/actions` tree in `commit`'s tree, if it is a tree.
/// Nothing else of the commit's tree is read.
pub fn actions_tree_id(repo: &Repository, commit: Oid) -> Result<Option<Oid>, GitError> {
    let root = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(GitError::git(format!("cannot read commit {commit}")))?;
    let Some(vault) = root.get_name("vault") else {
        return Ok(None);
    };
    if vault.kind() != Some(ObjectType::Tree) {
        return Ok(None);
    }
    let vault = repo
        .find_tree(vault.id())
        .map_err(GitError::git("cannot read the vault/ tree"))?;
    Ok(vault
        .get_name("actions")
        .filter(|e| e.kind() == Some(ObjectType::Tree))
        .map(|e| e.id()))
}

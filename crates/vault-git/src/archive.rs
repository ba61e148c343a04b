//! The archive branch (`vault-archive/<branch>`): finished actions, moved out
//! of the watched branch's `vault/actions` into
//! `vault/archive/<ab>/<cd>/` of this branch's tree
//! ([`vault_core::layout::archive_shard`]).
//!
//! Why a branch of its own, not a folder of the watched branch: libgit2
//! packs a push by walking the whole tree of the commit it builds on (every
//! subtree read, every blob noted), so a claim on a branch whose tree held
//! 100,000 archived actions cost ten times one on a small tree. On a branch
//! of its own, only the archive's own (batched) pushes walk it.

use crate::GitError;
use git2::{Commit, ObjectType, Oid, Repository, Tree, TreeEntry};
use std::collections::BTreeMap;
use std::path::Path;
use vault_core::layout::{ARCHIVE_DIR, ARCHIVE_SUBDIR, VAULT_DIR};

/// A `vault/actions` entry to archive, unchanged.
#[derive(Debug, Clone)]
pub struct Move {
    /// The id whose shard it goes to.
    pub id: String,
    /// Its file name (`<id>.json` or `<id>.result.json`).
    pub name: String,
    pub oid: Oid,
    pub mode: i32,
}

/// The archive branch at one commit (or absent), with its trees down to
/// `vault/archive`.
pub struct Archive<'r> {
    repo: &'r Repository,
    pub commit: Option<Commit<'r>>,
    root: Option<Tree<'r>>,
    vault: Option<Tree<'r>>,
    archive: Option<Tree<'r>>,
}

fn subtree<'r>(
    repo: &'r Repository,
    parent: Option<&Tree<'r>>,
    name: &str,
    path: &'static str,
) -> Result<Option<Tree<'r>>, GitError> {
    match parent.and_then(|t| t.get_name(name)) {
        None => Ok(None),
        Some(e) if e.kind() == Some(ObjectType::Tree) => {
            repo.find_tree(e.id())
                .map(Some)
                .map_err(GitError::git(format!(
                    "cannot read {path} of the archive branch"
                )))
        }
        Some(_) => Err(GitError::ArchiveLayout(path)),
    }
}

impl<'r> Archive<'r> {
    /// The archive at `tip` (`None`: no archive branch yet). A `vault` or
    /// `vault/archive` there that is not a folder is refused.
    pub fn read(repo: &'r Repository, tip: Option<Oid>) -> Result<Archive<'r>, GitError> {
        let commit = tip
            .map(|t| repo.find_commit(t))
            .transpose()
            .map_err(GitError::git("cannot read the archive branch's tip"))?;
        let root = commit
            .as_ref()
            .map(Commit::tree)
            .transpose()
            .map_err(GitError::git("cannot read the archive branch's tree"))?;
        let vault = subtree(repo, root.as_ref(), VAULT_DIR, VAULT_DIR)?;
        let archive = subtree(repo, vault.as_ref(), ARCHIVE_SUBDIR, ARCHIVE_DIR)?;
        Ok(Archive {
            repo,
            commit,
            root,
            vault,
            archive,
        })
    }

    /// The clone it was read from (the archive's own, which also sees the
    /// watched branch's objects).
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// The entry `name` of `id`'s folder, if the archive holds one.
    pub fn get(&self, id: &str, name: &str) -> Result<Option<TreeEntry<'static>>, GitError> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let [a, b] = vault_core::layout::archive_shard(id);
        match archive.get_path(Path::new(&format!("{a}/{b}/{name}"))) {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(GitError::git(format!("cannot read {ARCHIVE_DIR}"))(e)),
        }
    }

    /// The archive's root tree with `moves` added (an entry of the same
    /// name is replaced); only the folders they land in are rewritten.
    pub fn tree_adding(&self, moves: &[Move]) -> Result<Tree<'r>, GitError> {
        let repo = self.repo;
        // shard → leaf → entries
        let mut shards: BTreeMap<String, BTreeMap<String, Vec<&Move>>> = BTreeMap::new();
        for m in moves {
            let [a, b] = vault_core::layout::archive_shard(&m.id);
            shards.entry(a).or_default().entry(b).or_default().push(m);
        }
        let build = || -> Result<Tree<'r>, git2::Error> {
            let sub = |tree: Option<&Tree<'r>>, name: &str| match tree
                .and_then(|t| t.get_name(name))
            {
                Some(e) if e.kind() == Some(ObjectType::Tree) => repo.find_tree(e.id()).map(Some),
                _ => Ok(None),
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
            let mut vb = repo.treebuilder(self.vault.as_ref())?;
            vb.insert(ARCHIVE_SUBDIR, ab.write()?, 0o040000)?;
            let mut rb = repo.treebuilder(self.root.as_ref())?;
            rb.insert(VAULT_DIR, vb.write()?, 0o040000)?;
            repo.find_tree(rb.write()?)
        };
        build().map_err(GitError::git("cannot build the archive's new tree"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_land_in_their_shard_and_the_archive_keeps_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t.invalid").unwrap();
        let blob = |b: &[u8]| repo.blob(b).unwrap();
        let mv = |id: &str, name: &str, oid: Oid| Move {
            id: id.into(),
            name: name.into(),
            oid,
            mode: 0o100644,
        };
        let empty = Archive::read(&repo, None).unwrap();
        assert!(empty.get("a", "a.json").unwrap().is_none());
        let (a, ra) = (blob(b"a"), blob(b"ra"));
        let tree = empty
            .tree_adding(&[mv("a", "a.json", a), mv("a", "a.result.json", ra)])
            .unwrap();
        let first = repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap();
        let archive = Archive::read(&repo, Some(first)).unwrap();
        assert_eq!(archive.get("a", "a.result.json").unwrap().unwrap().id(), ra);
        let [x, y] = vault_core::layout::archive_shard("a");
        assert!(tree
            .get_path(Path::new(&format!("vault/archive/{x}/{y}/a.json")))
            .is_ok());

        let tree = archive
            .tree_adding(&[mv("b", "b.json", blob(b"b"))])
            .unwrap();
        let parent = repo.find_commit(first).unwrap();
        let second = repo
            .commit(None, &sig, &sig, "m", &tree, &[&parent])
            .unwrap();
        let archive = Archive::read(&repo, Some(second)).unwrap();
        assert_eq!(archive.get("a", "a.json").unwrap().unwrap().id(), a);
        assert!(archive.get("b", "b.json").unwrap().is_some());
        assert!(archive.get("b", "b.result.json").unwrap().is_none());

        let mut rb = repo.treebuilder(None).unwrap();
        rb.insert("vault", blob(b"x"), 0o100644).unwrap();
        let bad = repo.find_tree(rb.write().unwrap()).unwrap();
        let bad = repo.commit(None, &sig, &sig, "m", &bad, &[]).unwrap();
        assert!(matches!(
            Archive::read(&repo, Some(bad)),
            Err(GitError::ArchiveLayout(_))
        ));
    }
}

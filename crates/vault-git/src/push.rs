//! Pushing a new tip, never by force.

use crate::{head_ref, tracking_ref, GitError, Ops};
use git2::{ErrorCode, Oid, PushOptions, RemoteRedirect, Repository};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::Path;

impl Ops {
    /// Move the remote branch from `old` to `new` (a descendant of `old`),
    /// never by force. On success the cache's tracking ref is `new`.
    ///
    /// Errors: [`GitError::NonFastForward`] when the branch is no longer at
    /// `old`; [`GitError::Rejected`] when the server refused the ref for
    /// another reason (e.g. a hook) — the caller may fetch to tell whether
    /// that was a lost race after all; [`GitError::Unreachable`].
    pub fn push(&self, new: Oid, old: Oid) -> Result<(), GitError> {
        self.push_branch(&self.repo, &self.branch, new, Some(old))
    }

    /// [`Ops::push`] to the archive branch ([`Ops::archive_branch`]);
    /// `old` `None`: create it (a branch there already is a lost race).
    pub fn push_archive(&self, new: Oid, old: Option<Oid>) -> Result<(), GitError> {
        self.push_branch(&self.archive, &self.archive_branch(), new, old)
    }

    /// Push `new` from the clone `repo` to `branch`.
    fn push_branch(
        &self,
        repo: &Repository,
        branch: &str,
        new: Oid,
        old: Option<Oid>,
    ) -> Result<(), GitError> {
        match &self.url.local {
            Some(path) => self.push_local(repo, path, branch, new, old)?,
            None => self.push_remote(repo, branch, new, old)?,
        }
        repo.reference(&tracking_ref(branch), new, true, "vault-dispatch: pushed")
            .map_err(GitError::git("cannot update the tracking ref after a push"))?;
        Ok(())
    }

    fn push_remote(
        &self,
        repo: &Repository,
        branch: &str,
        new: Oid,
        old: Option<Oid>,
    ) -> Result<(), GitError> {
        let push_ref = "refs/vault-dispatch/push";
        let dst = head_ref(branch);
        let old = old.unwrap_or(Oid::ZERO_SHA1);
        repo.reference(push_ref, new, true, "vault-dispatch: to push")
            .map_err(GitError::git("cannot create the push ref"))?;
        let moved = Cell::new(false);
        let rejected: RefCell<Option<(String, String)>> = RefCell::new(None);
        let said = RefCell::new(Vec::<u8>::new());
        let result = {
            let mut cb = self.callbacks();
            cb.push_negotiation(|updates| {
                if updates.iter().any(|u| u.src() != old) {
                    moved.set(true);
                    return Err(git2::Error::from_str("the remote branch moved"));
                }
                Ok(())
            });
            cb.push_update_reference(|name, status| {
                if let Some(s) = status {
                    *rejected.borrow_mut() = Some((name.to_string(), s.to_string()));
                }
                Ok(())
            });
            cb.sideband_progress(|data| {
                let mut s = said.borrow_mut();
                if s.len() < 16 * 1024 {
                    s.extend_from_slice(data);
                }
                true
            });
            let mut po = PushOptions::new();
            po.remote_callbacks(cb)
                .follow_redirects(RemoteRedirect::None);
            let mut remote = repo
                .remote_anonymous(self.url.as_git())
                .map_err(|e| self.classify(e))?;
            remote.push(&[format!("{push_ref}:{dst}")], Some(&mut po))
        };
        let _ = repo.find_reference(push_ref).and_then(|mut r| r.delete());
        if moved.get() {
            return Err(GitError::NonFastForward);
        }
        if let Err(e) = result {
            if e.code() == ErrorCode::NotFastForward {
                return Err(GitError::NonFastForward);
            }
            return Err(self.classify(e));
        }
        if let Some((refname, status)) = rejected.into_inner() {
            return Err(GitError::Rejected {
                url: self.url.display(),
                refname,
                status,
                remote: remote_text(&said.into_inner()),
            });
        }
        Ok(())
    }

    fn push_local(
        &self,
        repo: &Repository,
        path: &Path,
        branch: &str,
        new: Oid,
        old: Option<Oid>,
    ) -> Result<(), GitError> {
        let target = Repository::open(path).map_err(|e| self.classify(e))?;
        let dst = head_ref(branch);
        if !target.is_bare() {
            let head = target
                .head()
                .ok()
                .and_then(|h| h.name().ok().map(str::to_string));
            if head.as_deref() == Some(dst.as_str()) {
                return Err(GitError::Config(format!(
                    "{} has {} checked out: serve the ops repo as a bare repo",
                    self.url.display(),
                    self.branch
                )));
            }
        }
        let current = target.refname_to_id(&dst).ok();
        if current != old {
            return Err(GitError::NonFastForward);
        }
        let mut walk = repo
            .revwalk()
            .map_err(GitError::git("cannot walk the new commits"))?;
        walk.push(new)
            .and_then(|()| old.map_or(Ok(()), |o| walk.hide(o)))
            .map_err(GitError::git("cannot walk the new commits"))?;
        let mut pack = repo
            .packbuilder()
            .map_err(GitError::git("cannot pack the new commits"))?;
        pack.insert_walk(&mut walk)
            .map_err(GitError::git("cannot pack the new commits"))?;
        let odb = target.odb().map_err(|e| self.classify(e))?;
        let mut writer = odb.packwriter().map_err(GitError::git(
            "cannot write to the remote's object database",
        ))?;
        let mut write_err = None;
        pack.foreach(|buf| match writer.write_all(buf) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        })
        .map_err(GitError::git("cannot copy the new objects"))?;
        if let Some(e) = write_err {
            return Err(GitError::Io {
                context: "cannot copy the new objects".into(),
                source: e,
            });
        }
        writer
            .commit()
            .map_err(GitError::git("cannot store the new objects in the remote"))?;
        let moved = match old {
            Some(old) => target.reference_matching(&dst, new, true, old, "vault-dispatch: push"),
            None => target.reference(&dst, new, false, "vault-dispatch: push"),
        };
        match moved.map(|_| ()) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Locked | ErrorCode::Exists
                ) =>
            {
                Err(GitError::NonFastForward)
            }
            Err(e) => Err(GitError::git(format!("cannot update {dst}"))(e)),
        }
    }
}

/// What a server printed on the side band, as one short line.
pub(crate) fn remote_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut joined = lines.join(" / ");
    if joined.chars().count() > 1000 {
        joined = joined.chars().take(1000).collect::<String>() + "...";
    }
    format!("; remote said: {joined}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_band_text_is_one_line() {
        assert_eq!(remote_text(b""), "");
        assert_eq!(
            remote_text(b"no pushes today\r\nsecond\n"),
            "; remote said: no pushes today / second"
        );
    }
}

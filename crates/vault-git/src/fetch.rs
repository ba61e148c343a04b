//! Fetching the watched branch (and refusing a rewritten one).

use crate::{head_ref, tracking_ref, GitError, Ops};
use git2::{AutotagOption, Direction, FetchOptions, Oid, RemoteRedirect};

impl Ops {
    /// Fetch the watched branch into `refs/remotes/origin/<branch>` and
    /// return its tip. When the remote tip is already in the cache, nothing
    /// is downloaded. A tip that does not descend from the one last seen
    /// (a force-push, a reset) is [`GitError::Rewritten`] and the tracking
    /// ref stays where it was.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        self.fetch_accepting(None)
    }

    /// [`Ops::fetch`], accepting a rewritten branch when its new tip is
    /// `accept` (a full or abbreviated commit id, 7 hex digits at least).
    pub fn fetch_accepting(&self, accept: Option<&str>) -> Result<Oid, GitError> {
        let want = head_ref(&self.branch);
        let tracking = tracking_ref(&self.branch);
        let mut remote = self
            .repo
            .remote_anonymous(self.url.as_git())
            .map_err(|e| self.classify(e))?;
        let mut conn = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
            .map_err(|e| self.classify(e))?;
        let heads = conn.list().map_err(|e| self.classify(e))?;
        let tip = heads.iter().find(|h| h.name() == want).map(|h| h.oid());
        let archive_want = head_ref(&self.archive_branch());
        let archive = heads
            .iter()
            .find(|h| h.name() == archive_want)
            .map(|h| h.oid());
        let Some(tip) = tip else {
            return Err(GitError::MissingBranch {
                url: self.url.display(),
                branch: self.branch.clone(),
            });
        };
        let cached = self.cached_tip();
        let have =
            cached == Some(tip) || self.repo.find_commit(tip).is_ok_and(|c| c.tree().is_ok());
        if !have {
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(self.callbacks())
                .download_tags(AutotagOption::None)
                .update_fetchhead(false)
                .follow_redirects(RemoteRedirect::None);
            conn.remote()
                .download(&[format!("+{want}:{tracking}")], Some(&mut fo))
                .map_err(|e| self.classify(e))?;
            self.repo.find_commit(tip).map_err(GitError::git(format!(
                "the fetch from {} did not bring commit {tip}",
                self.url.display()
            )))?;
        }
        drop(conn);
        // The archive branch goes into its own clone (see `Ops::archive`),
        // in a second request only when it moved.
        if let Some(a) = archive.filter(|a| self.archive.find_commit(*a).is_err()) {
            let mut remote = self
                .archive
                .remote_anonymous(self.url.as_git())
                .map_err(|e| self.classify(e))?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(self.callbacks())
                .download_tags(AutotagOption::None)
                .update_fetchhead(false)
                .follow_redirects(RemoteRedirect::None);
            let spec = format!("+{archive_want}:{}", tracking_ref(&self.archive_branch()));
            remote
                .download(&[spec], Some(&mut fo))
                .map_err(|e| self.classify(e))?;
            self.archive.find_commit(a).map_err(GitError::git(format!(
                "the fetch from {} did not bring commit {a} of the archive branch",
                self.url.display()
            )))?;
        }
        // Its tracking ref mirrors the remote (absent: removed), so that a
        // push to it compares against what the remote holds.
        self.set_archive_tip(archive)?;
        if let Some(old) = cached.filter(|c| *c != tip) {
            let forward = first_parent_descends(&self.repo, tip, old).map_err(GitError::git(
                format!("cannot tell whether {tip} descends from {old}, the last tip seen"),
            ))?;
            if !forward {
                match accept.map(str::trim) {
                    Some(a)
                        if a.len() >= 7 && tip.to_string().starts_with(&a.to_ascii_lowercase()) => {
                    }
                    Some(a) => {
                        return Err(GitError::AcceptMismatch {
                            given: a.to_string(),
                            tip,
                        })
                    }
                    None => return Err(GitError::Rewritten { old, new: tip }),
                }
            }
        }
        // `download` moves no refs: the tracking ref is still `cached`.
        if cached != Some(tip) {
            self.repo
                .reference(&tracking, tip, true, "vault-dispatch: fetch")
                .map_err(GitError::git(format!("cannot update {tracking}")))?;
        }
        Ok(tip)
    }
}
impl Ops {
    /// The archive branch of the watched branch:
    /// `vault-archive/<branch>` ([`vault_core::layout::ARCHIVE_BRANCH_PREFIX`]).
    pub fn archive_branch(&self) -> String {
        format!(
            "{}{}",
            vault_core::layout::ARCHIVE_BRANCH_PREFIX,
            self.branch
        )
    }

    /// The archive branch's tip as last fetched (or pushed), if the remote
    /// has one. Its history is not guarded like the watched branch's: what
    /// ran is known from the watched branch; the archive only keeps the
    /// files.
    pub fn archive_tip(&self) -> Option<Oid> {
        self.archive
            .refname_to_id(&tracking_ref(&self.archive_branch()))
            .ok()
    }

    fn set_archive_tip(&self, tip: Option<Oid>) -> Result<(), GitError> {
        let name = tracking_ref(&self.archive_branch());
        if self.archive_tip() == tip {
            return Ok(());
        }
        match tip {
            Some(t) => self
                .archive
                .reference(&name, t, true, "vault-dispatch: fetch")
                .map(|_| ()),
            None => self
                .archive
                .find_reference(&name)
                .and_then(|mut r| r.delete()),
        }
        .map_err(GitError::git(format!("cannot update {name}")))
    }
}

/// Whether `old` is on the first-parent chain of `tip` (or is `tip`).
///
/// This, not plain ancestry, is what "the branch only moved forward" means
/// here: every history the tools read (approvals, results, what ran) is the
/// first-parent chain, so a new tip that reaches the old one only through a
/// second parent (a crafted merge whose first parent is some other commit)
/// would let a push choose a different past. Such a tip is a rewrite.
pub fn first_parent_descends(
    repo: &git2::Repository,
    tip: Oid,
    old: Oid,
) -> Result<bool, git2::Error> {
    let mut at = repo.find_commit(tip)?;
    loop {
        if at.id() == old {
            return Ok(true);
        }
        match at.parents().next() {
            Some(p) => at = p,
            None => return Ok(false),
        }
    }
}

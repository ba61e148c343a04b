//! A code repository's workspace: one exact commit fetched into a folder
//! of the dispatcher's cache, its files given to a runner, and what the
//! runner left pushed back as one commit on top of it.
//!
//! ```text
//! <dir>/git    bare repository: the fetched objects, refs/vault/pinned,
//!              refs/vault/result; never mounted into a container
//! <dir>/work   the files of the pinned commit; mounted at checkout.path
//! ```
//!
//! The git directory stays out of the runner's reach, so a run cannot
//! plant configuration (`url.*.insteadOf`, hooks) or rewrite history that
//! the dispatcher's push would then follow. What is pushed is built by the
//! dispatcher: the pinned commit itself when the run changed no file, else
//! one commit whose parent is the pinned commit and whose tree is the
//! workspace's files, exactly as they are (no filters, no ignore rules).

use crate::{callbacks, classify, Credentials, GitError, RepoUrl};
use git2::{
    build::CheckoutBuilder, AutotagOption, Direction, FetchOptions, ObjectType, PushOptions,
    RemoteRedirect, Repository, Signature,
};
use std::cell::{Cell, RefCell};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A commit id, as the workspace's callers name one.
pub use git2::Oid;

const PINNED: &str = "refs/vault/pinned";
const RESULT: &str = "refs/vault/result";
const PUSH_SRC: &str = "refs/vault/push";
const REMOTE_TIP: &str = "refs/vault/remote";
/// Deepest folder nesting, and most files and folders, a checkout may
/// have and a snapshot takes: what a commit expands to, and what a run
/// leaves, is bounded before it is written out (or read, and recursed
/// into).
pub const MAX_DEPTH: usize = 256;
pub const MAX_ENTRIES: u64 = 100_000;

/// What looks at each entry of the workspace before anything else is done
/// with it: first its path alone (`None`: every file, folder, link or
/// special file, before its name can appear in any error), then for a file
/// its bytes and for a link its target (`Some`). An `Err` stops the
/// snapshot.
pub type Inspect<'a> = dyn FnMut(&Path, Option<&[u8]>) -> Result<(), CodeError> + 'a;

/// Bounds on one fetch or push.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap on the bytes received, and on the files of the commit.
    pub max_bytes: u64,
    /// The whole transfer.
    pub timeout: Duration,
}

/// Why a workspace could not be made or pushed. [`CodeError::is_refusal`]
/// tells a refusal of the input (`rejected`) from a failure (`error`).
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("commit {commit} is not in {url}")]
    NotInRepo { commit: Oid, url: String },
    #[error("the checkout is larger than the {limit} bytes allowed ({what})")]
    TooBig { limit: u64, what: String },
    #[error("the checkout has more than the {limit} {what} allowed")]
    TooMany { limit: u64, what: &'static str },
    #[error("commit {commit} has a submodule at {path:?}: submodules are not fetched, so the checkout is refused")]
    Submodule { commit: Oid, path: String },
    #[error("the {what} took longer than the {secs} s allowed")]
    TimedOut { what: &'static str, secs: u64 },
    #[error("the workspace holds {0}, which cannot go into a commit")]
    Unstorable(String),
    #[error("cannot push {refname}: {why}")]
    Push { refname: String, why: String },
    #[error(transparent)]
    Git(#[from] GitError),
}

impl CodeError {
    /// The input asks for something refused (too big, a submodule), as
    /// opposed to something that failed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CodeError::TooBig { .. } | CodeError::TooMany { .. } | CodeError::Submodule { .. }
        )
    }
}

fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> CodeError {
    let f = GitError::git(context);
    move |e| CodeError::Git(f(e))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CodeError {
    let f = GitError::io(context);
    move |e| CodeError::Git(f(e))
}

/// A fetched workspace.
pub struct Workspace {
    dir: PathBuf,
    repo: Repository,
    pinned: Oid,
}

/// How a push ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The remote ref now points at the commit.
    Updated,
    /// It pointed there already (an earlier run of this action pushed it).
    AlreadyThere,
}

impl Workspace {
    /// The workspace at `dir` when it holds `commit` already (a resumed
    /// run re-attaches to it); `None` when there is none, or one for
    /// another commit.
    pub fn open(dir: &Path, commit: Oid) -> Option<Workspace> {
        let repo = Repository::open_bare(dir.join("git")).ok()?;
        let pinned = repo.refname_to_id(PINNED).ok()?;
        (pinned == commit && dir.join("work").is_dir()).then_some(Workspace {
            dir: dir.to_path_buf(),
            repo,
            pinned,
        })
    }

    /// Fetch `commit` from `url` into a fresh workspace at `dir` (anything
    /// there is removed first) and check its files out into `<dir>/work`.
    /// On any error nothing is left at `dir`.
    pub fn fetch(
        dir: &Path,
        url: &RepoUrl,
        creds: &Credentials,
        commit: Oid,
        limits: Limits,
    ) -> Result<Workspace, CodeError> {
        remove(dir).map_err(io(format!("cannot remove {}", dir.display())))?;
        let made = Self::fetch_into(dir, url, creds, commit, limits);
        if made.is_err() {
            let _ = remove(dir);
        }
        made
    }

    fn fetch_into(
        dir: &Path,
        url: &RepoUrl,
        creds: &Credentials,
        commit: Oid,
        limits: Limits,
    ) -> Result<Workspace, CodeError> {
        if url.scheme().as_deref() == Some("https") {
            crate::tls::load_ca_bundle()?;
        }
        set_socket_timeout(limits.timeout);
        // Only the dispatcher's user may look in: the run may have left a
        // secret in the files until they are checked.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io(format!("cannot create {}", dir.display())))?;
        }
        let mut opts = git2::RepositoryInitOptions::new();
        opts.bare(true).mkpath(true).initial_head("vault-unused");
        let repo = Repository::init_opts(dir.join("git"), &opts)
            .map_err(git(format!("cannot create {}", dir.display())))?;
        let deadline = Instant::now() + limits.timeout;
        // The commit itself first (servers that allow it send only what it
        // needs); else a ref the server advertises at that very commit;
        // else every branch and tag, and the commit must be among what came.
        let mut last = None;
        for by_id in [true, false] {
            if Instant::now() > deadline {
                return Err(CodeError::TimedOut {
                    what: "fetch",
                    secs: limits.timeout.as_secs(),
                });
            }
            let specs = if by_id {
                vec![format!("{commit}:{PINNED}")]
            } else {
                advertised_at(&repo, url, creds, commit)
            };
            last = match download(&repo, url, creds, &specs, limits, deadline) {
                Ok(()) => None,
                Err(e @ (CodeError::TooBig { .. } | CodeError::TimedOut { .. })) => return Err(e),
                Err(e) => Some(e),
            };
            if repo.find_commit(commit).is_ok() {
                break;
            }
        }
        if repo.find_commit(commit).is_err() {
            // Asking by id fails on many servers (an id no ref advertises):
            // only the broad fetch's outcome tells.
            return Err(last.unwrap_or(CodeError::NotInRepo {
                commit,
                url: url.display(),
            }));
        }
        repo.reference(PINNED, commit, true, "vault-dispatch: pinned")
            .map_err(git("cannot record the pinned commit"))?;
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(git(format!("cannot read the tree of {commit}")))?;
        check_tree(&repo, &tree, commit, limits.max_bytes)?;
        let work = dir.join("work");
        std::fs::create_dir(&work).map_err(io(format!("cannot create {}", work.display())))?;
        let mut co = CheckoutBuilder::new();
        co.target_dir(&work).force().disable_filters(true);
        repo.checkout_tree(tree.as_object(), Some(&mut co))
            .map_err(git(format!("cannot check {commit} out")))?;
        drop(tree);
        // Drop the refs the broad fetch made: only the pinned commit (and
        // its history) is meant to be there.
        for r in repo
            .references_glob("refs/vault/[ht]*")
            .map_err(git("cannot list refs"))?
            .flatten()
            .filter_map(|r| r.name().ok().map(str::to_string))
            .collect::<Vec<_>>()
        {
            if let Ok(mut r) = repo.find_reference(&r) {
                let _ = r.delete();
            }
        }
        Ok(Workspace {
            dir: dir.to_path_buf(),
            repo,
            pinned: commit,
        })
    }

    /// `<dir>/work`: the files, mounted into the container.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pinned(&self) -> Oid {
        self.pinned
    }

    /// Make the files readable by anyone (directories 0755, files 0644 or
    /// 0755) and, for a writable workspace, owned by `owner` (uid, gid) so
    /// that the runner may change them.
    pub fn hand_over(&self, owner: Option<(u32, u32)>) -> Result<(), CodeError> {
        fn walk(p: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
            let meta = std::fs::symlink_metadata(p)?;
            if let Some((u, g)) = owner {
                std::os::unix::fs::lchown(p, Some(u), Some(g))?;
            }
            if meta.file_type().is_symlink() {
                return Ok(());
            }
            if meta.is_dir() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
                for e in std::fs::read_dir(p)? {
                    walk(&e?.path(), owner)?;
                }
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                let mode = if exec { 0o755 } else { 0o644 };
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
        let work = self.work_dir();
        walk(&work, owner).map_err(io(format!(
            "cannot set the owner and modes of {}",
            work.display()
        )))
    }

    /// The commit to push: the pinned commit when the files are unchanged,
    /// else one new commit on top of it holding the workspace's files. Each
    /// file's bytes (and each link's target) go through `inspect` first; an
    /// `Err` from it stops the snapshot with that error. The commit is kept
    /// in `refs/vault/result`, so a resumed run pushes the same one.
    pub fn snapshot(
        &self,
        max_bytes: u64,
        message: &str,
        inspect: &mut Inspect<'_>,
    ) -> Result<Oid, CodeError> {
        if let Ok(done) = self.repo.refname_to_id(RESULT) {
            return Ok(done);
        }
        let mut walked = Walked::default();
        let work = self.work_dir();
        let tree = self.write_dir(&work, &work, &mut walked, max_bytes, inspect)?;
        let pinned = self
            .repo
            .find_commit(self.pinned)
            .map_err(git("cannot read the pinned commit"))?;
        let tree = match tree {
            Some(t) => t,
            None => empty_tree(&self.repo)?,
        };
        let result = if tree == pinned.tree_id() {
            self.pinned
        } else {
            let tree = self
                .repo
                .find_tree(tree)
                .map_err(git("cannot read the new tree"))?;
            let sig = Signature::now("vault-dispatch", "vault-dispatch@vault-dispatch.invalid")
                .map_err(git("cannot make a signature"))?;
            self.repo
                .commit(None, &sig, &sig, message, &tree, &[&pinned])
                .map_err(git("cannot commit the workspace"))?
        };
        self.repo
            .reference(RESULT, result, true, "vault-dispatch: result")
            .map_err(git("cannot record the result commit"))?;
        Ok(result)
    }

    fn write_dir(
        &self,
        root: &Path,
        dir: &Path,
        walked: &mut Walked,
        max_bytes: u64,
        inspect: &mut Inspect<'_>,
    ) -> Result<Option<Oid>, CodeError> {
        if walked.depth > MAX_DEPTH {
            return Err(CodeError::Unstorable(format!(
                "folders nested deeper than {MAX_DEPTH}"
            )));
        }
        let mut tb = self
            .repo
            .treebuilder(None)
            .map_err(git("cannot build a tree"))?;
        let entries =
            std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
        for e in entries {
            let e = e.map_err(io(format!("cannot read {}", dir.display())))?;
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            // The name first: nothing below may show a path not looked at.
            inspect(&rel, None)?;
            let name = e.file_name();
            if name.to_string_lossy().eq_ignore_ascii_case(".git") {
                return Err(CodeError::Unstorable(format!(
                    "a .git entry at {}",
                    rel.display()
                )));
            }
            let meta = std::fs::symlink_metadata(&path)
                .map_err(io(format!("cannot read {}", path.display())))?;
            let ft = meta.file_type();
            walked.entries += 1;
            if walked.entries > MAX_ENTRIES {
                return Err(CodeError::Unstorable(format!(
                    "more than {MAX_ENTRIES} files and folders"
                )));
            }
            let (oid, mode) = if ft.is_dir() {
                walked.depth += 1;
                let sub = self.write_dir(root, &path, walked, max_bytes, inspect);
                walked.depth -= 1;
                match sub? {
                    Some(t) => (t, 0o040000),
                    None => continue,
                }
            } else if ft.is_symlink() || ft.is_file() {
                walked.bytes += meta.len();
                if walked.bytes > max_bytes {
                    return Err(CodeError::TooBig {
                        limit: max_bytes,
                        what: "the workspace after the run".into(),
                    });
                }
                let bytes = if ft.is_symlink() {
                    use std::os::unix::ffi::OsStrExt;
                    std::fs::read_link(&path)
                        .map_err(io(format!("cannot read {}", path.display())))?
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                } else {
                    std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?
                };
                inspect(&rel, Some(&bytes))?;
                let oid = self.repo.blob(&bytes).map_err(git("cannot store a file"))?;
                let mode = if ft.is_symlink() {
                    0o120000
                } else if meta.permissions().mode() & 0o111 != 0 {
                    0o100755
                } else {
                    0o100644
                };
                (oid, mode)
            } else {
                return Err(CodeError::Unstorable(format!(
                    "a special file at {}",
                    rel.display()
                )));
            };
            tb.insert(&name, oid, mode)
                .map_err(git(format!("cannot add {} to a tree", rel.display())))?;
        }
        if tb.is_empty() {
            return Ok(None);
        }
        tb.write().map(Some).map_err(git("cannot write a tree"))
    }

    /// Push `commit` to `refname` on `url`, never by force: a tag only
    /// when it does not exist yet, a branch only when it exists and
    /// `commit` descends from its tip, checked again at the push itself
    /// (a compare-and-swap against the tip seen). A ref already at
    /// `commit` is [`Pushed::AlreadyThere`].
    pub fn push(
        &self,
        url: &RepoUrl,
        creds: &Credentials,
        commit: Oid,
        refname: &str,
        limits: Limits,
    ) -> Result<Pushed, CodeError> {
        let refused = |why: String| CodeError::Push {
            refname: refname.to_string(),
            why,
        };
        if url.is_local() {
            return Err(refused(
                "pushing to a local (file://) repository is not supported: serve it by git daemon, ssh or https".into(),
            ));
        }
        set_socket_timeout(limits.timeout);
        let deadline = Instant::now() + limits.timeout;
        let current = {
            let mut remote = self
                .repo
                .remote_anonymous(url.as_git())
                .map_err(|e| classify(url, e))?;
            let conn = remote
                .connect_auth(Direction::Fetch, Some(callbacks(creds, url)), None)
                .map_err(|e| classify(url, e))?;
            let found = conn
                .list()
                .map_err(|e| classify(url, e))?
                .iter()
                .find(|h| h.name() == refname)
                .map(|h| h.oid());
            found
        };
        let expected = match current {
            Some(c) if c == commit => return Ok(Pushed::AlreadyThere),
            Some(c) if refname.starts_with("refs/tags/") => {
                return Err(refused(format!(
                    "the tag exists already, at {c} (a tag is never moved)"
                )))
            }
            None if refname.starts_with("refs/heads/") => {
                return Err(refused(
                    "the branch does not exist (a branch is only fast-forwarded, never created)"
                        .into(),
                ))
            }
            None => Oid::ZERO_SHA1,
            Some(tip) => {
                if self.repo.find_commit(tip).is_err() {
                    let specs = [format!("+{refname}:{REMOTE_TIP}")];
                    download(&self.repo, url, creds, &specs, limits, deadline)?;
                }
                let ff = self.repo.find_commit(tip).is_ok()
                    && self
                        .repo
                        .graph_descendant_of(commit, tip)
                        .map_err(git("cannot compare the commits"))?;
                if !ff {
                    return Err(refused(format!(
                        "not a fast-forward: the branch is at {tip}, which {commit} does not descend from (the branch moved since the reviewed commit)"
                    )));
                }
                tip
            }
        };
        self.repo
            .reference(PUSH_SRC, commit, true, "vault-dispatch: to push")
            .map_err(git("cannot create the push ref"))?;
        let moved = Cell::new(None);
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let result = {
            let mut cb = callbacks(creds, url);
            cb.push_negotiation(|updates| {
                if let Some(u) = updates.iter().find(|u| u.src() != expected) {
                    moved.set(Some(u.src()));
                    return Err(git2::Error::from_str("the remote ref moved"));
                }
                Ok(())
            });
            cb.push_update_reference(|_, status| {
                if let Some(s) = status {
                    *rejected.borrow_mut() = Some(s.to_string());
                }
                Ok(())
            });
            let mut po = PushOptions::new();
            po.remote_callbacks(cb)
                .follow_redirects(RemoteRedirect::None);
            let mut remote = self
                .repo
                .remote_anonymous(url.as_git())
                .map_err(|e| classify(url, e))?;
            remote.push(&[format!("{PUSH_SRC}:{refname}")], Some(&mut po))
        };
        if let Some(now) = moved.get() {
            return Err(refused(format!(
                "the remote ref moved to {now} while pushing (lost a race)"
            )));
        }
        if let Err(e) = result {
            return Err(match e.code() {
                git2::ErrorCode::NotFastForward => refused("not a fast-forward".into()),
                _ => CodeError::Git(classify(url, e)),
            });
        }
        if let Some(status) = rejected.into_inner() {
            return Err(refused(format!("the server refused it: {status}")));
        }
        Ok(Pushed::Updated)
    }
}

/// How far a snapshot's walk got.
#[derive(Default)]
struct Walked {
    depth: usize,
    entries: u64,
    bytes: u64,
}

/// The refspecs that bring `commit` when it cannot be asked for by id: the
/// refs the server advertises at it, else every branch and tag (whose
/// whole transfer then counts against the cap).
fn advertised_at(
    repo: &Repository,
    url: &RepoUrl,
    creds: &Credentials,
    commit: Oid,
) -> Vec<String> {
    let at: Vec<String> = repo
        .remote_anonymous(url.as_git())
        .and_then(|mut remote| {
            let conn = remote.connect_auth(Direction::Fetch, Some(callbacks(creds, url)), None)?;
            let names = conn
                .list()?
                .iter()
                .filter(|h| h.oid() == commit)
                .filter(|h| {
                    h.name().starts_with("refs/heads/") || h.name().starts_with("refs/tags/")
                })
                .map(|h| h.name().to_string())
                .collect();
            Ok(names)
        })
        .unwrap_or_default();
    match at.first() {
        Some(name) => vec![format!("+{name}:refs/vault/tip")],
        None => vec![
            "+refs/heads/*:refs/vault/heads/*".to_string(),
            "+refs/tags/*:refs/vault/tags/*".to_string(),
        ],
    }
}

/// One fetch of `specs` into `repo`, within `limits`.
fn download(
    repo: &Repository,
    url: &RepoUrl,
    creds: &Credentials,
    specs: &[String],
    limits: Limits,
    deadline: Instant,
) -> Result<(), CodeError> {
    let too_big = Cell::new(false);
    let late = Cell::new(false);
    let result = {
        let mut cb = callbacks(creds, url);
        cb.transfer_progress(|p| {
            if p.received_bytes() as u64 > limits.max_bytes {
                too_big.set(true);
                return false;
            }
            if Instant::now() > deadline {
                late.set(true);
                return false;
            }
            true
        });
        cb.sideband_progress(|_| {
            let on_time = Instant::now() <= deadline;
            late.set(!on_time);
            on_time
        });
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(cb)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false)
            .follow_redirects(RemoteRedirect::None);
        let mut remote = repo
            .remote_anonymous(url.as_git())
            .map_err(|e| classify(url, e))?;
        remote.fetch(specs, Some(&mut fo), None)
    };
    if too_big.get() {
        return Err(CodeError::TooBig {
            limit: limits.max_bytes,
            what: "the fetch received more".into(),
        });
    }
    if late.get() || Instant::now() > deadline {
        return Err(CodeError::TimedOut {
            what: "fetch",
            secs: limits.timeout.as_secs(),
        });
    }
    result.map_err(|e| CodeError::Git(classify(url, e)))
}

/// Refuse a tree with a submodule, whose files add up to more than
/// `max_bytes`, or that expands (a folder's tree may be reused any number
/// of times) to more than [`MAX_ENTRIES`] files and folders or folders
/// nested more than [`MAX_DEPTH`] deep: checked before anything is written
/// out.
fn check_tree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    commit: Oid,
    max_bytes: u64,
) -> Result<(), CodeError> {
    let odb = repo.odb().map_err(git("cannot open the object database"))?;
    let mut total = 0u64;
    let mut entries = 0u64;
    let mut bad: Option<CodeError> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        entries += 1;
        if entries > MAX_ENTRIES {
            bad = Some(CodeError::TooMany {
                limit: MAX_ENTRIES,
                what: "files and folders",
            });
            return git2::TreeWalkResult::Abort;
        }
        match entry.kind() {
            Some(ObjectType::Tree) if root.matches('/').count() + 1 > MAX_DEPTH => {
                bad = Some(CodeError::TooMany {
                    limit: MAX_DEPTH as u64,
                    what: "levels of nested folders",
                });
                return git2::TreeWalkResult::Abort;
            }
            Some(ObjectType::Commit) => {
                bad = Some(CodeError::Submodule {
                    commit,
                    path: format!("{root}{}", entry.name().unwrap_or("?")),
                });
                return git2::TreeWalkResult::Abort;
            }
            Some(ObjectType::Blob) => {
                let size = odb.read_header(entry.id()).map_or(0, |(n, _)| n as u64);
                total += size;
                if total > max_bytes {
                    bad = Some(CodeError::TooBig {
                        limit: max_bytes,
                        what: format!("the files of {commit}"),
                    });
                    return git2::TreeWalkResult::Abort;
                }
            }
            _ => {}
        }
        git2::TreeWalkResult::Ok
    })
    .or_else(|e| if bad.is_some() { Ok(()) } else { Err(e) })
    .map_err(git("cannot walk the tree"))?;
    bad.map_or(Ok(()), Err)
}

fn empty_tree(repo: &Repository) -> Result<Oid, CodeError> {
    repo.treebuilder(None)
        .and_then(|t| t.write())
        .map_err(git("cannot write the empty tree"))
}

/// Remove `dir` and everything in it; a missing `dir` is fine.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Bound every socket read and connect of libgit2 by `timeout` (at most a
/// minute each): a server that goes silent must not outlive the deadline
/// the progress callbacks check.
fn set_socket_timeout(timeout: Duration) {
    let ms = timeout.as_millis().clamp(1000, 60_000) as i32;
    // SAFETY: libgit2's global options must not change while another git2
    // call runs; run-action makes its git2 calls from one thread, and only
    // between transfers.
    #[allow(unsafe_code)]
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repo with one commit holding `files` (path, bytes, executable).
    fn source(dir: &Path, files: &[(&str, &[u8], bool)]) -> Oid {
        let repo = Repository::init(dir).unwrap();
        for (path, bytes, exec) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "one", &tree, &[])
            .unwrap()
    }

    fn limits(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn fetch_check_snapshot_and_refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let commit = source(
            &src,
            &[
                ("a.txt", b"a\r\n", false),
                ("bin/run", b"#!/bin/sh\n", true),
            ],
        );
        let url = RepoUrl::parse(&format!("file://{}", src.display())).unwrap();
        let dir = tmp.path().join("ws");
        let ws =
            Workspace::fetch(&dir, &url, &Credentials::none(), commit, limits(1 << 20)).unwrap();
        let work = ws.work_dir();
        assert_eq!(
            std::fs::read(work.join("a.txt")).unwrap(),
            b"a\r\n",
            "unfiltered"
        );
        assert!(
            !work.join(".git").exists(),
            "the git dir is not in the files"
        );
        ws.hand_over(None).unwrap();
        let mode = std::fs::metadata(work.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(Workspace::open(&dir, commit).is_some());
        assert!(Workspace::open(&dir, Oid::hash_object(ObjectType::Blob, b"x").unwrap()).is_none());

        // Unchanged files: the pinned commit itself.
        let mut seen = Vec::new();
        let same = ws
            .snapshot(1 << 20, "m", &mut |p: &Path, bytes: Option<&[u8]>| {
                seen.push((p.to_path_buf(), bytes.is_some()));
                Ok(())
            })
            .unwrap();
        assert_eq!(same, commit);
        seen.sort();
        let names: Vec<_> = seen
            .iter()
            .map(|(p, b)| (p.to_str().unwrap(), *b))
            .collect();
        assert_eq!(
            names,
            [
                ("a.txt", false),
                ("a.txt", true),
                ("bin", false),
                ("bin/run", false),
                ("bin/run", true)
            ],
            "every name first, then the bytes of each file"
        );

        // A change: one commit on top, reused when asked again.
        let dir2 = tmp.path().join("ws2");
        let ws =
            Workspace::fetch(&dir2, &url, &Credentials::none(), commit, limits(1 << 20)).unwrap();
        std::fs::write(ws.work_dir().join("new"), b"n").unwrap();
        std::os::unix::fs::symlink("a.txt", ws.work_dir().join("link")).unwrap();
        std::fs::create_dir(ws.work_dir().join("empty")).unwrap();
        let made = ws
            .snapshot(1 << 20, "m", &mut |_: &Path, _: Option<&[u8]>| Ok(()))
            .unwrap();
        assert_ne!(made, commit);
        let c = ws.repo.find_commit(made).unwrap();
        assert_eq!(c.parent_id(0).unwrap(), commit);
        let tree = c.tree().unwrap();
        assert_eq!(tree.get_name("link").unwrap().filemode(), 0o120000);
        assert!(
            tree.get_name("empty").is_none(),
            "git keeps no empty folder"
        );
        assert_eq!(
            ws.snapshot(1, "m", &mut |_: &Path, _: Option<&[u8]>| Ok(()))
                .unwrap(),
            made
        );
        let local_push = ws.push(
            &url,
            &Credentials::none(),
            made,
            "refs/tags/v1",
            limits(1 << 20),
        );
        assert!(matches!(local_push, Err(CodeError::Push { .. })));

        // A .git entry, and an inspector that says no.
        let dir3 = tmp.path().join("ws3");
        let ws =
            Workspace::fetch(&dir3, &url, &Credentials::none(), commit, limits(1 << 20)).unwrap();
        std::fs::create_dir(ws.work_dir().join(".git")).unwrap();
        std::fs::write(ws.work_dir().join(".git/config"), b"x").unwrap();
        let e = ws
            .snapshot(1 << 20, "m", &mut |_: &Path, _: Option<&[u8]>| Ok(()))
            .unwrap_err();
        assert!(matches!(e, CodeError::Unstorable(_)), "{e}");
        std::fs::remove_dir_all(ws.work_dir().join(".git")).unwrap();
        let e = ws
            .snapshot(1 << 20, "m", &mut |p: &Path, _: Option<&[u8]>| {
                Err(CodeError::Unstorable(p.display().to_string()))
            })
            .unwrap_err();
        assert!(matches!(e, CodeError::Unstorable(_)));

        // Too big, and a commit not there: nothing left behind.
        let dir4 = tmp.path().join("ws4");
        let e = Workspace::fetch(&dir4, &url, &Credentials::none(), commit, limits(4))
            .err()
            .unwrap();
        assert!(e.is_refusal(), "{e}");
        assert!(!dir4.exists());
        let absent = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let e = Workspace::fetch(&dir4, &url, &Credentials::none(), absent, limits(1 << 20))
            .err()
            .unwrap();
        assert!(matches!(e, CodeError::NotInRepo { .. }), "{e}");
        assert!(!dir4.exists());
    }

    /// A commit of `tree` (built in `repo`), the tip of a branch of its own.
    fn commit_tree(repo: &Repository, tree: Oid) -> Oid {
        let tree = repo.find_tree(tree).unwrap();
        let sig = Signature::now("t", "t@example.invalid").unwrap();
        let c = repo.commit(None, &sig, &sig, "t", &tree, &[]).unwrap();
        repo.reference(&format!("refs/heads/b{c}"), c, false, "t")
            .unwrap();
        c
    }

    #[test]
    fn a_small_commit_that_expands_to_too_many_files_or_folders_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let repo = Repository::init(&src).unwrap();
        let url = RepoUrl::parse(&format!("file://{}", src.display())).unwrap();
        let blob = repo.blob(b"").unwrap();
        // 400 folders, each the same tree of 400 empty files: a few
        // kilobytes of objects, 160 400 entries once written out.
        let mut tb = repo.treebuilder(None).unwrap();
        for i in 0..400 {
            tb.insert(format!("f{i}"), blob, 0o100644).unwrap();
        }
        let inner = tb.write().unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        for i in 0..400 {
            tb.insert(format!("d{i}"), inner, 0o040000).unwrap();
        }
        let wide = commit_tree(&repo, tb.write().unwrap());
        // Folders nested 300 deep, one empty file at the bottom.
        let mut t = {
            let mut tb = repo.treebuilder(None).unwrap();
            tb.insert("f", blob, 0o100644).unwrap();
            tb.write().unwrap()
        };
        for _ in 0..300 {
            let mut tb = repo.treebuilder(None).unwrap();
            tb.insert("d", t, 0o040000).unwrap();
            t = tb.write().unwrap();
        }
        let deep = commit_tree(&repo, t);
        let dir = tmp.path().join("ws");
        for (commit, why) in [
            (wide, "more than the 100000 files and folders allowed"),
            (deep, "more than the 256 levels of nested folders allowed"),
        ] {
            let e = Workspace::fetch(&dir, &url, &Credentials::none(), commit, limits(1 << 30))
                .err()
                .unwrap();
            assert!(e.is_refusal(), "{e}");
            assert!(e.to_string().contains(why), "{e}");
            assert!(!dir.exists(), "nothing left on disk");
        }
        // Within the caps it is fetched, into a folder only its owner reads.
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("d", inner, 0o040000).unwrap();
        let fine = commit_tree(&repo, tb.write().unwrap());
        let ws = Workspace::fetch(&dir, &url, &Credentials::none(), fine, limits(1 << 30)).unwrap();
        assert_eq!(
            std::fs::read_dir(ws.work_dir().join("d")).unwrap().count(),
            400
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_name_is_inspected_before_it_can_show_up_in_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let commit = source(&src, &[("a.txt", b"a", false)]);
        let url = RepoUrl::parse(&format!("file://{}", src.display())).unwrap();
        let dir = tmp.path().join("ws");
        let ws =
            Workspace::fetch(&dir, &url, &Credentials::none(), commit, limits(1 << 20)).unwrap();
        // A secret as a folder name, with a `.git` entry and a fifo in it:
        // the name is refused before either is looked at.
        let hidden = ws.work_dir().join("s3cret-name");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::create_dir(hidden.join(".git")).unwrap();
        nix::unistd::mkfifo(&hidden.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = ws
            .snapshot(1 << 20, "m", &mut |p: &Path, _: Option<&[u8]>| {
                if p.to_string_lossy().contains("s3cret") {
                    return Err(CodeError::Unstorable(
                        "a secret value (in a file name)".into(),
                    ));
                }
                Ok(())
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the workspace holds a secret value (in a file name), which cannot go into a commit"
        );
    }

    /// An http server at 127.0.0.1 that redirects every request to one at
    /// 127.0.0.2, which asks for a password: the token never reaches the
    /// second one.
    #[test]
    fn a_redirect_to_another_server_gets_no_credential() {
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;
        use std::sync::{Arc, Mutex};
        let Ok(other) = TcpListener::bind("127.0.0.2:0") else {
            panic!("127.0.0.2 is not available on this host");
        };
        let other_port = other.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in other.incoming().flatten() {
                // Every request of the connection (kept alive), each
                // answered: a password is needed.
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    let mut lines = 0;
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        seen2.lock().unwrap().push(line.trim().to_string());
                        line.clear();
                        lines += 1;
                    }
                    line.clear();
                    if lines == 0 {
                        break;
                    }
                    let _ = (&conn).write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            }
        });
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in first.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let mut target = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if target.is_empty() {
                        target = line.split(' ').nth(1).unwrap_or("/").to_string();
                    }
                    line.clear();
                }
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{other_port}{target}\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = (&conn).write_all(reply.as_bytes());
            }
        });
        let tmp = tempfile::tempdir().unwrap();
        let tok = tmp.path().join("tok");
        std::fs::write(&tok, "s3cret-token\n").unwrap();
        let creds = Credentials::load(None, Some(&tok)).unwrap();
        let url = RepoUrl::parse(&format!("http://127.0.0.1:{port}/code.git")).unwrap();
        let commit = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let dir = tmp.path().join("ws");
        let e = Workspace::fetch(&dir, &url, &creds, commit, limits(1 << 20))
            .err()
            .unwrap();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!dir.exists());
        let seen = seen.lock().unwrap();
        assert!(
            !seen
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with("authorization")),
            "the token went to the other server: {seen:?}"
        );
    }
}

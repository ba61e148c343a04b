//! The ops-repo side shared by vault-scan and result-write: a bare cache
//! clone per repo URL, fetch with credentials, and a push that is a
//! compare-and-swap on the watched branch.
//!
//! Layout under the cache directory (`VAULT_CACHE`):
//!
//! ```text
//! <cache>/repos/<key>.git     bare cache clone; only refs/remotes/origin/<branch> is read
//! <cache>/repos/<key>.lock    flock held by a tool for its whole run
//! <cache>/repos/<key>.<name>  small state files of the tools (e.g. the scan cache)
//! <cache>/spool/<key>/        results waiting for the remote (result-write)
//! ```
//!
//! `<key>` is the repo's base name plus 16 hex digits of the SHA-1 of the
//! normalized URL, so two different `VAULT_REPO` values never share a clone.
//!
//! Credentials: ssh uses `--ssh-key` (VAULT_SSH_KEY) or else the ssh-agent;
//! https uses the token in `--token-file` (VAULT_TOKEN_FILE) as the password
//! (user name from the URL, else `x-access-token`). The token is held in a
//! [`secrecy::SecretString`], is never put in a URL, never printed, and is
//! refused over plain `http://`. Redirects are never followed, and a
//! credential is only offered to the server (scheme, host, port) of the
//! configured URL. A code checkout's credentials never use the ssh-agent
//! ([`Credentials::without_agent`]).
//!
//! Pushing to a path or `file://` remote does not go through libgit2's local
//! transport (which updates the remote ref without checking its old value):
//! the objects are copied into the remote's object database and the branch
//! is moved with `git_reference_create_matching`, a real compare-and-swap.
//! Server-side hooks therefore only run for remotes served by git-daemon,
//! ssh or https.

use git2::{CredentialType, ErrorClass, ErrorCode, ObjectType, Oid, RemoteCallbacks, Repository};
use nix::fcntl::{Flock, FlockArg};
use secrecy::ExposeSecret;
use std::fs::File;
use std::path::{Path, PathBuf};
use tls::load_ca_bundle;
use vault_core::RepoConfig;

mod archive;
pub mod code;
mod credentials;
mod fetch;
mod push;
pub mod sig;
mod tls;
mod tree;
mod url;

pub use archive::{Archive, Move};
pub use credentials::Credentials;
pub use fetch::first_parent_descends;
pub use sig::{verify_commit, AllowedSigners, SigningKey, Unverified, Verified};
pub use tls::defer_ca_bundle;
pub use tree::{actions_tree_id, last_change, Tip};
pub use url::RepoUrl;

/// Everything that can go wrong talking to the ops repo. The caller maps
/// [`GitError::is_unreachable`] to "retry later" and the rest to failure.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("branch {branch:?} does not exist on {url}")]
    MissingBranch { url: String, branch: String },
    #[error("authentication to {url} failed: {message}")]
    Auth { url: String, message: String },
    #[error("the TLS certificate of {url} is not trusted ({message}): give the CA that signed it in SSL_CERT_FILE")]
    UntrustedCertificate { url: String, message: String },
    #[error("the ssh host key of {url} is not trusted ({message}): add the server's key to ~/.ssh/known_hosts of the user the tools run as")]
    UnknownHostKey { url: String, message: String },
    #[error("{url} refused the update of {refname}: {status}{remote}")]
    Rejected {
        url: String,
        refname: String,
        status: String,
        /// What the server printed (e.g. a pre-receive hook), prefixed
        /// with `; remote said: `, or empty.
        remote: String,
    },
    #[error("the remote branch moved while pushing (not a fast-forward)")]
    NonFastForward,
    #[error("the branch was rewritten: its tip {new} does not descend from {old}, the last tip seen; nothing is dispatched or recorded until an operator checks the new history and runs `vault-scan --accept-rewrite {new}`")]
    Rewritten { old: Oid, new: Oid },
    #[error("--accept-rewrite {given} does not name the branch's tip {tip}: check the new history again")]
    AcceptMismatch { given: String, tip: Oid },
    #[error("{0}")]
    Config(String),
    /// The branch's tree is not laid out as the contract says: this path
    /// (`vault` or `vault/actions`) is there but not a folder.
    #[error("{0:?} on the branch is not a folder")]
    Layout(&'static str),
    /// The same on the archive branch (`vault` or `vault/archive`).
    #[error("{0:?} on the archive branch is not a folder: the archive cannot be read, so no action is dispatched until a commit there repairs it")]
    ArchiveLayout(&'static str),
    #[error("{context}: {source}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, GitError::Unreachable { .. })
    }

    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
        let context = context.into();
        move |source| GitError::Git { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
        let context = context.into();
        move |source| GitError::Io { context, source }
    }
}

/// The local cache clone of one ops repo, locked for the caller's lifetime.
pub struct Ops {
    repo: Repository,
    /// The archive branch's clone (`<key>.archive.git`), borrowing `repo`'s
    /// objects (alternates). Its commits must stay out of `repo`: a push
    /// from `repo` walks the whole tree of every remote branch tip it has.
    archive: Repository,
    url: RepoUrl,
    branch: String,
    creds: Credentials,
    cache_root: PathBuf,
    key: String,
    _lock: Flock<File>,
}

/// Open the bare repo at `dir`, creating it when absent.
fn open_or_init(dir: &Path) -> Result<Repository, GitError> {
    if dir.join("HEAD").exists() {
        return Repository::open_bare(dir).map_err(GitError::git(format!(
            "cannot open cache clone {}",
            dir.display()
        )));
    }
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(true)
        .mkpath(true)
        .initial_head("vault-dispatch-unused");
    Repository::init_opts(dir, &opts).map_err(GitError::git(format!(
        "cannot create cache clone {}",
        dir.display()
    )))
}

/// Whether a tree entry is a regular file (a blob that is not a symbolic
/// link). libgit2 normalizes modes, so a blob is 100644, 100755 or 120000.
pub fn is_regular_file(entry: &git2::TreeEntry<'_>) -> bool {
    entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000
}

/// The watched branch on the remote: `refs/heads/<branch>`.
pub fn head_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

/// Where the fetched remote branch is kept in the cache clone.
pub fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

impl Ops {
    /// Open (or create) the bare cache clone for `url` under `cache_root`
    /// and take its lock (waiting for another tool of this host to finish).
    pub fn open(
        cache_root: &Path,
        url: RepoUrl,
        branch: &str,
        creds: Credentials,
    ) -> Result<Ops, GitError> {
        let valid_branch = !branch.is_empty()
            && git2::Reference::is_valid_name(&head_ref(branch))
            && !branch.starts_with('-');
        if !valid_branch {
            return Err(GitError::Config(format!("invalid branch name {branch:?}")));
        }
        let scheme = url.scheme();
        if creds.token.is_some() && scheme.as_deref() == Some("http") {
            return Err(GitError::Config(
                "refusing to send a token over plain http://: use https://".into(),
            ));
        }
        if scheme.as_deref() == Some("https") {
            load_ca_bundle()?;
        }
        let key = url.cache_key();
        let repos = cache_root.join("repos");
        std::fs::create_dir_all(&repos).map_err(GitError::io(format!(
            "cannot create cache directory {}",
            repos.display()
        )))?;
        let lock_path = repos.join(format!("{key}.lock"));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(GitError::io(format!("cannot open {}", lock_path.display())))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| GitError::Io {
                context: format!("cannot lock {}", lock_path.display()),
                source: std::io::Error::from(e),
            })?;
        let dir = repos.join(format!("{key}.git"));
        let repo = open_or_init(&dir)?;
        let archive_dir = repos.join(format!("{key}.archive.git"));
        drop(open_or_init(&archive_dir)?);
        let alternates = archive_dir.join("objects/info/alternates");
        let objects = std::fs::canonicalize(dir.join("objects"))
            .map_err(GitError::io(format!("cannot find {}", dir.display())))?;
        let objects = format!("{}\n", objects.display());
        if std::fs::read_to_string(&alternates).ok().as_deref() != Some(objects.as_str()) {
            std::fs::write(&alternates, &objects).map_err(GitError::io(format!(
                "cannot write {}",
                alternates.display()
            )))?;
        }
        // Opened after the alternates are written, so that they are read.
        let archive = Repository::open_bare(&archive_dir).map_err(GitError::git(format!(
            "cannot open cache clone {}",
            archive_dir.display()
        )))?;
        Ok(Ops {
            repo,
            archive,
            url,
            branch: branch.to_string(),
            creds,
            cache_root: cache_root.to_path_buf(),
            key,
            _lock: lock,
        })
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The archive branch's clone: it sees the watched branch's objects
    /// too, not the other way round.
    pub fn archive_repo(&self) -> &Repository {
        &self.archive
    }

    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The cache directory (`VAULT_CACHE`) this clone lives under.
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }

    /// A state file of this repo's cache: `<cache>/repos/<key>.<name>`.
    pub fn state_path(&self, name: &str) -> PathBuf {
        self.cache_root
            .join("repos")
            .join(format!("{}.{name}", self.key))
    }

    /// `<cache>/spool/<key>/`, not created.
    pub fn spool_dir(&self) -> PathBuf {
        self.cache_root.join("spool").join(&self.key)
    }

    /// The fetched branch tip in the cache, if any.
    pub fn cached_tip(&self) -> Option<Oid> {
        self.repo.refname_to_id(&tracking_ref(&self.branch)).ok()
    }

    pub(crate) fn callbacks(&self) -> RemoteCallbacks<'_> {
        callbacks(&self.creds, &self.url)
    }

    pub(crate) fn classify(&self, e: git2::Error) -> GitError {
        classify(&self.url, e)
    }
}

/// Remote callbacks offering `creds` (an ssh key, else the agent when
/// allowed; a token as the https password), each at most once, and only to
/// the server of `url`: a credential asked for another URL (a redirect to
/// another host) is refused.
pub(crate) fn callbacks<'a>(creds: &'a Credentials, url: &RepoUrl) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut attempts = 0u32;
    let expected = url::origin(url.as_git());
    cb.credentials(move |asked, user, allowed| {
        attempts += 1;
        if attempts > 4 {
            return Err(auth_error("the server refused every credential offered"));
        }
        if expected.is_some() && url::origin(asked) != expected {
            return Err(auth_error(
                "a credential was asked for another server than the repo's (a redirect?): refused",
            ));
        }
        if allowed.contains(CredentialType::USERNAME) {
            return git2::Cred::username(user.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = user.unwrap_or("git");
            return match &creds.ssh_key {
                Some(k) => git2::Cred::ssh_key(user, None, k, None),
                None if !creds.agent => Err(auth_error(
                    "the server asks for an ssh key and none is configured for this repo (the ssh-agent is never used for it): give ssh_key",
                )),
                None if attempts <= 1 => git2::Cred::ssh_key_from_agent(user),
                None => Err(auth_error(
                    "the ssh-agent has no accepted key: give --ssh-key (VAULT_SSH_KEY)",
                )),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return match &creds.token {
                Some(t) if attempts <= 1 => git2::Cred::userpass_plaintext(
                    user.unwrap_or("x-access-token"),
                    t.expose_secret(),
                ),
                Some(_) => Err(auth_error("the token was refused")),
                None => Err(auth_error(
                    "the server asks for a password: give --token-file (VAULT_TOKEN_FILE)",
                )),
            };
        }
        Err(auth_error(
            "the server asks for a kind of credential vault-dispatch does not offer",
        ))
    });
    cb
}

/// Sort a libgit2 error about `url` into the kinds the tools act on.
pub(crate) fn classify(url: &RepoUrl, e: git2::Error) -> GitError {
    let shown = url.display();
    let message = e.message().replace(['\n', '\r'], " ");
    if e.code() == ErrorCode::Certificate {
        return if e.class() == ErrorClass::Ssh {
            GitError::UnknownHostKey {
                url: shown,
                message,
            }
        } else {
            GitError::UntrustedCertificate {
                url: shown,
                message,
            }
        };
    }
    if e.code() == ErrorCode::Auth {
        return GitError::Auth {
            url: shown,
            message,
        };
    }
    let unreachable = matches!(
        e.class(),
        ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh | ErrorClass::Http | ErrorClass::Ssl
    ) || (url.is_local() && e.code() == ErrorCode::NotFound);
    if unreachable {
        GitError::Unreachable {
            url: shown,
            message,
        }
    } else {
        GitError::Git {
            context: format!("git operation on {shown} failed"),
            source: e,
        }
    }
}

pub(crate) fn auth_error(msg: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, msg)
}

/// Bound libgit2's memory for a call that walks a large tree (the archive
/// branch's push reads every folder of the archive): no object cache, pack
/// files mapped in 8 MiB windows, 32 MiB mapped at most. Call it before any
/// repository is opened.
pub fn lean_memory() {
    git2::opts::enable_caching(false);
    // SAFETY: libgit2's global options must not change while another git2
    // call runs; the tools call this first, from their one thread.
    #[allow(unsafe_code)]
    unsafe {
        let _ = git2::opts::set_mwindow_size(8 << 20);
        let _ = git2::opts::set_mwindow_mapped_limit(32 << 20);
    }
}

/// `<cache>/spool/<key>/` of the repo `cfg` names, not created; the same
/// folder as [`Ops::spool_dir`], known without taking the repo's lock.
pub fn spool_dir(cfg: &RepoConfig) -> Result<PathBuf, GitError> {
    let key = RepoUrl::parse(&cfg.url)?.cache_key();
    Ok(cfg.cache.join("spool").join(key))
}

impl Ops {
    /// Open the cache clone of the repo `cfg` names (locked).
    pub fn from_config(cfg: &RepoConfig) -> Result<Ops, GitError> {
        let url = RepoUrl::parse(&cfg.url)?;
        let creds = Credentials::load(cfg.ssh_key.as_deref(), cfg.token_file.as_deref())?;
        Ops::open(&cfg.cache, url, &cfg.branch, creds)
    }
}

/// The exit code a [`GitError`] in an error chain means (for
/// [`vault_core::exit::exit_for`]): an unreachable remote is "retry later",
/// a rewritten branch [`Exit::Rewritten`](vault_core::Exit::Rewritten).
pub fn exit_code(e: &(dyn std::error::Error + 'static)) -> Option<vault_core::Exit> {
    use vault_core::Exit;
    match e.downcast_ref::<GitError>()? {
        g if g.is_unreachable() => Some(Exit::RetryLater),
        GitError::Rewritten { .. } => Some(Exit::Rewritten),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_over_plain_http_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "s3cret\n").unwrap();
        let creds = Credentials::load(None, Some(&tok)).unwrap();
        let url = RepoUrl::parse("http://127.0.0.1:1/ops.git").unwrap();
        let err = Ops::open(dir.path(), url, "main", creds)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("plain http"), "{err}");
        assert!(!err.contains("s3cret"));
        std::fs::write(&tok, "  \n").unwrap();
        assert!(Credentials::load(None, Some(&tok)).is_err());
    }
}

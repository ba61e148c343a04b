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
//! refused over plain `http://`.
//!
//! Pushing to a path or `file://` remote does not go through libgit2's local
//! transport (which updates the remote ref without checking its old value):
//! the objects are copied into the remote's object database and the branch
//! is moved with `git_reference_create_matching`, a real compare-and-swap.
//! Server-side hooks therefore only run for remotes served by git-daemon,
//! ssh or https.

use git2::{
    AutotagOption, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions, ObjectType, Oid,
    PushOptions, RemoteCallbacks, Repository,
};
use nix::fcntl::{Flock, FlockArg};
use secrecy::{ExposeSecret, SecretString};
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the CA bundle is, remembered by [`defer_ca_bundle`].
static CA_BUNDLE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Put off reading the CA bundle until an https remote needs it.
///
/// libgit2 parses the system's whole CA bundle when it starts: about 20 ms
/// of CPU in every vault-scan and result-write run, most of their time on a
/// warm cache, though only https remotes use it. Call this first thing in
/// `main`, while the process has one thread and before any other git2 call.
/// It remembers where the bundle is (the same probe git2 makes, so a
/// `SSL_CERT_FILE` the user set is honoured) and points libgit2's start-up
/// load at `/dev/null`; [`Ops::open`] hands the remembered bundle to libgit2
/// for an `https://` remote, so what is trusted does not change. A CA
/// directory (`SSL_CERT_DIR`, hashed) costs nothing at start (OpenSSL reads
/// it per lookup) and is left to git2 as before. Without this call libgit2
/// reads the bundle at start as usual.
pub fn defer_ca_bundle() {
    CA_BUNDLE.get_or_init(|| {
        let file = openssl_probe::probe()
            .cert_file
            .filter(|f| f != Path::new("/dev/null"));
        if file.is_some() {
            std::env::set_var("SSL_CERT_FILE", "/dev/null");
        }
        file
    });
}

/// Give libgit2 the CA bundle [`defer_ca_bundle`] put off. Each tool opens
/// its ops repo once, so this runs at most once a process.
fn load_ca_bundle() -> Result<(), GitError> {
    let Some(Some(file)) = CA_BUNDLE.get() else {
        return Ok(());
    };
    // SAFETY: git2 requires that no other git2 call runs while the
    // certificate locations change; the tools make their git2 calls from
    // one thread, and this runs before their first network call.
    #[allow(unsafe_code)]
    let loaded = unsafe { git2::opts::set_ssl_cert_file(file) };
    loaded.map_err(|e| {
        GitError::Config(format!(
            "cannot load the CA certificates in {}: {}",
            file.display(),
            e.message()
        ))
    })
}

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

    fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
        let context = context.into();
        move |source| GitError::Git { context, source }
    }

    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
        let context = context.into();
        move |source| GitError::Io { context, source }
    }
}

/// The credentials a fetch or push may offer.
pub struct Credentials {
    ssh_key: Option<PathBuf>,
    token: Option<SecretString>,
}

impl Credentials {
    pub fn none() -> Self {
        Credentials {
            ssh_key: None,
            token: None,
        }
    }

    /// Read the token file now (so a missing file is reported before any
    /// network traffic). The token's surrounding white space is dropped.
    pub fn load(ssh_key: Option<&Path>, token_file: Option<&Path>) -> Result<Self, GitError> {
        let token = match token_file {
            None => None,
            Some(p) => {
                let raw = std::fs::read(p).map_err(GitError::io(format!(
                    "cannot read token file {}",
                    p.display()
                )))?;
                let text = String::from_utf8(raw).map_err(|_| {
                    GitError::Config(format!("token file {} is not UTF-8", p.display()))
                })?;
                let token = SecretString::from(text.trim().to_string());
                drop(text);
                if token.expose_secret().is_empty() {
                    return Err(GitError::Config(format!(
                        "token file {} is empty",
                        p.display()
                    )));
                }
                Some(token)
            }
        };
        if let Some(k) = ssh_key {
            if !k.is_file() {
                return Err(GitError::Config(format!(
                    "ssh key {} is not a readable file",
                    k.display()
                )));
            }
        }
        Ok(Credentials {
            ssh_key: ssh_key.map(Path::to_path_buf),
            token,
        })
    }
}

/// A repo URL as given, normalized for libgit2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// What libgit2 is given.
    git: String,
    /// Set for a path or `file://` URL: the remote repo on this host.
    local: Option<PathBuf>,
}

impl RepoUrl {
    /// Accepts a path, `file://`, `git://`, `ssh://`, scp-like
    /// `user@host:path`, `http(s)://`. A relative path is made absolute.
    pub fn parse(raw: &str) -> Result<Self, GitError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(GitError::Config("the repo URL is empty".into()));
        }
        if raw.contains(['\n', '\r', '\0']) {
            return Err(GitError::Config(
                "the repo URL contains a control character".into(),
            ));
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: Some(PathBuf::from(rest)),
            });
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let known = ["git", "ssh", "git+ssh", "ssh+git", "http", "https"];
            if !known.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(GitError::Config(format!(
                    "unsupported repo URL scheme {scheme:?}: use a path, file://, git://, ssh:// or https://"
                )));
            }
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: None,
            });
        }
        let scp_like = !raw.starts_with(['/', '.'])
            && raw
                .split_once(':')
                .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
        if scp_like {
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: None,
            });
        }
        let path = std::path::absolute(raw).map_err(GitError::io(format!(
            "cannot make {raw:?} an absolute path"
        )))?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(RepoUrl {
            git: path.to_string_lossy().into_owned(),
            local: Some(path),
        })
    }

    pub fn as_git(&self) -> &str {
        &self.git
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn scheme(&self) -> Option<String> {
        self.git
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
    }

    /// The URL for messages: a password in the URL is replaced by `***`.
    pub fn display(&self) -> String {
        redact(&self.git)
    }

    /// A directory name unique to this URL.
    pub fn cache_key(&self) -> String {
        let tail = self
            .git
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo")
            .trim_end_matches(".git");
        let mut name: String = tail
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect();
        name = name.trim_start_matches('.').to_string();
        if name.is_empty() {
            name = "repo".into();
        }
        let hash = Oid::hash_object(ObjectType::Blob, self.git.as_bytes())
            .map(|o| o.to_string())
            .unwrap_or_default();
        format!("{name}-{}", &hash[..16.min(hash.len())])
    }
}

fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***{}", &rest[at..]);
            }
        }
    }
    url.to_string()
}

/// The local cache clone of one ops repo, locked for the caller's lifetime.
pub struct Ops {
    repo: Repository,
    url: RepoUrl,
    branch: String,
    creds: Credentials,
    cache_root: PathBuf,
    key: String,
    _lock: Flock<File>,
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
        let repo = if dir.join("HEAD").exists() {
            Repository::open_bare(&dir).map_err(GitError::git(format!(
                "cannot open cache clone {}",
                dir.display()
            )))?
        } else {
            let mut opts = git2::RepositoryInitOptions::new();
            opts.bare(true)
                .mkpath(true)
                .initial_head("vault-dispatch-unused");
            Repository::init_opts(&dir, &opts).map_err(GitError::git(format!(
                "cannot create cache clone {}",
                dir.display()
            )))?
        };
        Ok(Ops {
            repo,
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

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let mut attempts = 0u32;
        let creds = &self.creds;
        cb.credentials(move |_url, user, allowed| {
            attempts += 1;
            if attempts > 4 {
                return Err(auth_error("the server refused every credential offered"));
            }
            if allowed.contains(CredentialType::USERNAME) {
                return git2::Cred::username(user.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::SSH_KEY) {
                let user = user.unwrap_or("git");
                return match &creds.ssh_key {
                    Some(k) => git2::Cred::ssh_key(user, None, k, None),
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

    fn classify(&self, e: git2::Error) -> GitError {
        let url = self.url.display();
        let message = e.message().replace(['\n', '\r'], " ");
        if e.code() == ErrorCode::Certificate {
            return if e.class() == ErrorClass::Ssh {
                GitError::UnknownHostKey { url, message }
            } else {
                GitError::UntrustedCertificate { url, message }
            };
        }
        if e.code() == ErrorCode::Auth {
            return GitError::Auth { url, message };
        }
        let unreachable = matches!(
            e.class(),
            ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh | ErrorClass::Http | ErrorClass::Ssl
        ) || (self.url.is_local() && e.code() == ErrorCode::NotFound);
        if unreachable {
            GitError::Unreachable { url, message }
        } else {
            GitError::Git {
                context: format!("git operation on {url} failed"),
                source: e,
            }
        }
    }

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
        let tip = conn
            .list()
            .map_err(|e| self.classify(e))?
            .iter()
            .find(|h| h.name() == want)
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
                .update_fetchhead(false);
            conn.remote()
                .download(&[format!("+{want}:{tracking}")], Some(&mut fo))
                .map_err(|e| self.classify(e))?;
            self.repo.find_commit(tip).map_err(GitError::git(format!(
                "the fetch from {} did not bring commit {tip}",
                self.url.display()
            )))?;
        }
        drop(conn);
        if let Some(old) = cached.filter(|c| *c != tip) {
            let forward = self
                .repo
                .graph_descendant_of(tip, old)
                .map_err(GitError::git(format!(
                    "cannot tell whether {tip} descends from {old}, the last tip seen"
                )))?;
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

    /// Move the remote branch from `old` to `new` (a descendant of `old`),
    /// never by force. On success the cache's tracking ref is `new`.
    ///
    /// Errors: [`GitError::NonFastForward`] when the branch is no longer at
    /// `old`; [`GitError::Rejected`] when the server refused the ref for
    /// another reason (e.g. a hook) — the caller may fetch to tell whether
    /// that was a lost race after all; [`GitError::Unreachable`].
    pub fn push(&self, new: Oid, old: Oid) -> Result<(), GitError> {
        match &self.url.local {
            Some(path) => self.push_local(path, new, old)?,
            None => self.push_remote(new, old)?,
        }
        self.repo
            .reference(
                &tracking_ref(&self.branch),
                new,
                true,
                "vault-dispatch: pushed",
            )
            .map_err(GitError::git("cannot update the tracking ref after a push"))?;
        Ok(())
    }

    fn push_remote(&self, new: Oid, old: Oid) -> Result<(), GitError> {
        let push_ref = "refs/vault-dispatch/push";
        let dst = head_ref(&self.branch);
        self.repo
            .reference(push_ref, new, true, "vault-dispatch: to push")
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
            po.remote_callbacks(cb);
            let mut remote = self
                .repo
                .remote_anonymous(self.url.as_git())
                .map_err(|e| self.classify(e))?;
            remote.push(&[format!("{push_ref}:{dst}")], Some(&mut po))
        };
        let _ = self
            .repo
            .find_reference(push_ref)
            .and_then(|mut r| r.delete());
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

    fn push_local(&self, path: &Path, new: Oid, old: Oid) -> Result<(), GitError> {
        let target = Repository::open(path).map_err(|e| self.classify(e))?;
        let dst = head_ref(&self.branch);
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
        if current != Some(old) {
            return Err(GitError::NonFastForward);
        }
        let mut walk = self
            .repo
            .revwalk()
            .map_err(GitError::git("cannot walk the new commits"))?;
        walk.push(new)
            .and_then(|()| walk.hide(old))
            .map_err(GitError::git("cannot walk the new commits"))?;
        let mut pack = self
            .repo
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
        let moved = target.reference_matching(&dst, new, true, old, "vault-dispatch: push");
        match moved.map(|_| ()) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) => {
                Err(GitError::NonFastForward)
            }
            Err(e) => Err(GitError::git(format!("cannot update {dst}"))(e)),
        }
    }
}

fn auth_error(msg: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, msg)
}

/// What a server printed on the side band, as one short line.
fn remote_text(raw: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalize_and_keys_differ() {
        let a = RepoUrl::parse("git://127.0.0.1:9418/ops.git").unwrap();
        let b = RepoUrl::parse("git://127.0.0.1:9418/other/ops.git").unwrap();
        assert!(!a.is_local());
        assert_ne!(a.cache_key(), b.cache_key());
        assert!(a.cache_key().starts_with("ops-"), "{}", a.cache_key());
        let p = RepoUrl::parse("relative/ops").unwrap();
        assert!(p.is_local());
        assert!(Path::new(p.as_git()).is_absolute());
        let f = RepoUrl::parse("file:///srv/ops.git").unwrap();
        assert!(f.is_local());
        assert_eq!(f.as_git(), "file:///srv/ops.git");
        let scp = RepoUrl::parse("git@example.invalid:org/ops.git").unwrap();
        assert!(!scp.is_local());
        assert!(RepoUrl::parse("ftp://x/y").is_err());
        assert!(RepoUrl::parse("").is_err());
        assert!(RepoUrl::parse("a\nb").is_err());
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        let u = RepoUrl::parse("https://bob:hunter2@example.invalid/ops.git").unwrap();
        assert_eq!(u.display(), "https://bob:***@example.invalid/ops.git");
        assert!(!u.cache_key().contains("hunter2"));
        let u = RepoUrl::parse("ssh://git@example.invalid/ops.git").unwrap();
        assert_eq!(u.display(), "ssh://git@example.invalid/ops.git");
    }

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

    #[test]
    fn side_band_text_is_one_line() {
        assert_eq!(remote_text(b""), "");
        assert_eq!(
            remote_text(b"no pushes today\r\nsecond\n"),
            "; remote said: no pushes today / second"
        );
    }
}

/// The flags both tools take to find the ops repo (each also read from its
/// environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Ops repo: a path, file://, git://, ssh:// (or user@host:path) or https:// URL
    #[arg(long, env = "VAULT_REPO", value_name = "URL")]
    pub repo: String,
    /// The watched branch
    #[arg(
        long,
        env = "VAULT_BRANCH",
        default_value = "main",
        value_name = "BRANCH"
    )]
    pub branch: String,
    /// Cache directory for the local clone (and result-write's spool)
    /// [default: $XDG_CACHE_HOME/vault-dispatch]
    #[arg(long, env = "VAULT_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// This dispatcher's name, in claims and commits [default: hostname]
    #[arg(long, env = "VAULT_DISPATCHER_ID", value_name = "ID",
          value_parser = vault_core::DispatcherId::from_flag)]
    pub dispatcher_id: Option<vault_core::DispatcherId>,
    /// ssh private key for ssh URLs [default: ask the ssh-agent]
    #[arg(long, env = "VAULT_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// File holding the token for https URLs (sent as the password; never printed)
    #[arg(long, env = "VAULT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The dispatcher id (checked by clap), else the host's name.
    pub fn dispatcher(&self) -> Result<String, GitError> {
        vault_core::DispatcherId::or_host(self.dispatcher_id.clone())
            .map(String::from)
            .map_err(|e| GitError::Config(e.to_string()))
    }

    /// Open the cache clone of the repo these flags name (locked).
    pub fn open(&self) -> Result<Ops, GitError> {
        let url = RepoUrl::parse(&self.repo)?;
        let creds = Credentials::load(
            self.ssh_key
                .as_deref()
                .filter(|p| !p.as_os_str().is_empty()),
            self.token_file
                .as_deref()
                .filter(|p| !p.as_os_str().is_empty()),
        )?;
        let cache = self
            .cache
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(vault_core::default_cache_dir);
        Ops::open(&cache, url, &self.branch, creds)
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

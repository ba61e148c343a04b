//! The command-line flags several tools share, and the plain settings they
//! become: the logic takes [`RepoConfig`], never a clap struct. Behind the
//! `cli` feature, so only the tools pull clap in.

use crate::settings::{DispatcherId, RepoConfig, SettingError};
use clap::Args;
use std::path::PathBuf;

/// The flags both tools take to find the ops repo (each also read from its
/// environment variable).
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// Ops repo: a path, file://, git://, ssh:// (or user@host:path) or https:// URL
    #[arg(long, env = "VAULT_REPO", value_name = "URL")]
    pub repo: String,
    /// The watched branch
    #[arg(long, env = "VAULT_BRANCH", default_value = "main")]
    pub branch: String,
    /// Cache directory for the local clone (and result-write's spool)
    /// [default: $XDG_CACHE_HOME/vault-dispatch]
    #[arg(long, env = "VAULT_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// This dispatcher's name, in claims and commits [default: hostname]
    #[arg(long, env = "VAULT_DISPATCHER_ID", value_name = "ID",
          value_parser = DispatcherId::from_flag)]
    pub dispatcher_id: Option<DispatcherId>,
    /// ssh private key for ssh URLs [default: ask the ssh-agent]
    #[arg(long, env = "VAULT_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// File holding the token for https URLs (sent as the password; never printed)
    #[arg(long, env = "VAULT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The settings these flags give: empty paths count as unset, the cache
    /// defaults to [`crate::default_cache_dir`], the dispatcher id to the
    /// host's name.
    pub fn config(&self) -> Result<RepoConfig, SettingError> {
        Ok(RepoConfig {
            url: self.repo.clone(),
            branch: self.branch.clone(),
            cache: set(&self.cache).unwrap_or_else(crate::default_cache_dir),
            dispatcher: DispatcherId::or_host(self.dispatcher_id.clone())?,
            ssh_key: set(&self.ssh_key),
            token_file: set(&self.token_file),
        })
    }
}

/// The flags of approval checking (vault-scan verifies; secret-mount and
/// run-action require what vault-scan found).
#[derive(Debug, Clone, Args)]
pub struct ApprovalArgs {
    /// Verify approvals: an allowed-signers file (git's
    /// gpg.ssh.allowedSignersFile format); an action runs only if the commit
    /// that approved it is signed by a key listed there
    #[arg(long, env = "VAULT_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Approvals expire: refuse a first start more than this many seconds
    /// after the approving commit
    #[arg(long, env = "VAULT_APPROVAL_TTL_S", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub approval_ttl_s: Option<u64>,
}

/// The admission flags of the tools that hand out secrets or start
/// containers (see [`crate::admit`]).
#[derive(Debug, Clone, Args)]
pub struct AdmitArgs {
    #[command(flatten)]
    pub approval: ApprovalArgs,
    /// Per-secret policy (TOML, on this host): what each secret may be used
    /// with; a secret it does not list is refused
    #[arg(long, env = "VAULT_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// When a claim counts as stuck (see [`crate::stuck`]).
#[derive(Debug, Clone, Args)]
pub struct StuckArgs {
    /// Timeout of an action that sets none, in seconds (as run-action's)
    #[arg(long, env = "VAULT_TIMEOUT_S", value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
    /// Seconds between SIGTERM and SIGKILL at the timeout (as run-action's)
    #[arg(long, env = "VAULT_GRACE_S", value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub grace_s: u64,
    /// A claim is stuck this many seconds after its action's timeout and
    /// grace have run out
    #[arg(long, env = "VAULT_STUCK_MARGIN_S", value_name = "SECONDS",
          default_value_t = crate::stuck::DEFAULT_MARGIN_S)]
    pub stuck_margin_s: u64,
}

impl StuckArgs {
    pub fn rule(&self) -> crate::stuck::StuckRule {
        crate::stuck::StuckRule {
            timeout_s: self.timeout_s,
            grace_s: self.grace_s,
            margin_s: self.stuck_margin_s,
        }
    }
}

fn set(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.clone().filter(|p| !p.as_os_str().is_empty())
}

impl ApprovalArgs {
    /// The allowed-signers file, an empty value counting as unset.
    pub fn allowed_signers(&self) -> Option<PathBuf> {
        set(&self.allowed_signers)
    }
}

impl AdmitArgs {
    /// Load the policy and check the settings agree.
    pub fn admission(&self) -> Result<crate::admit::Admission, crate::admit::AdmitError> {
        crate::admit::Admission::new(
            self.approval.allowed_signers(),
            self.approval.approval_ttl_s,
            set(&self.policy),
        )
    }
}

/// Which results and claims to believe (vault-scan, result-write).
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Believe a result or claim file only if the commit that last changed
    /// it is signed by a dispatcher listed in this allowed-signers file;
    /// any other counts as absent (the action runs, its real result
    /// replaces the file)
    #[arg(long, env = "VAULT_DISPATCHER_SIGNERS", value_name = "FILE")]
    pub dispatcher_signers: Option<PathBuf>,
}

impl TrustArgs {
    /// The dispatcher-signers file, an empty value counting as unset.
    pub fn dispatcher_signers(&self) -> Option<PathBuf> {
        set(&self.dispatcher_signers)
    }
}

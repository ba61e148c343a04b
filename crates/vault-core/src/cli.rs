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
        let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
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

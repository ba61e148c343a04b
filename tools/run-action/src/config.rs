//! What a run is configured with, as plain values: built once from the
//! command line ([`crate::cli::RunArgs::config`]), so that the engine and
//! the policy never see clap.

use std::path::PathBuf;
use std::time::Duration;
use vault_core::RunnerUser;

/// `VAULT_TIMEOUT_S` when unset.
pub const DEFAULT_TIMEOUT_S: u64 = 3600;
/// `VAULT_GRACE_S` when unset.
pub const DEFAULT_GRACE_S: u64 = 10;
/// `VAULT_RUNNER_USER` when unset.
pub const DEFAULT_RUNNER_USER: RunnerUser = RunnerUser {
    uid: 65534,
    gid: 65534,
};
/// `VAULT_MAX_MEMORY_MB` when unset.
pub const DEFAULT_MAX_MEMORY_MB: u64 = 1024;
/// `VAULT_MAX_CPUS` when unset.
pub const DEFAULT_MAX_CPUS: f64 = 2.0;
/// `VAULT_MAX_PIDS` when unset.
pub const DEFAULT_MAX_PIDS: u64 = 256;

/// The settings one run reads (each the value of the flag of that name).
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Image for actions that name none.
    pub runner_image: Option<String>,
    /// Comma-separated image refs (`*` globs) an action may use.
    pub allow_images: String,
    /// Timeout in seconds for actions that set none.
    pub timeout_s: u64,
    /// Upper bound on any action's timeout.
    pub max_timeout_s: Option<u64>,
    /// Between SIGTERM and SIGKILL when an action times out.
    pub grace: Duration,
    /// The uid:gid the runner runs as.
    pub runner_user: RunnerUser,
    /// Caps on an action's resources.
    pub max_memory_mb: u64,
    pub max_cpus: f64,
    pub max_pids: u64,
    /// Whether an action may have `"network": "bridge"`.
    pub allow_bridge: bool,
    /// OCI runtime to run the container under (`None`: the engine's default).
    pub runtime: Option<String>,
    /// Directory holding one file per secret.
    pub secrets_dir: Option<PathBuf>,
    /// Resource limits the engine may leave unenforced.
    pub allow_unenforced_limits: Unenforced,
    /// Comma-separated `host:port` globs an action's `network.allow`
    /// entries must each match.
    pub allow_egress: String,
    /// The network a gateway reaches the allowed hosts through.
    pub egress_network: Option<String>,
    /// The image the gateway (vault-gateway) runs in.
    pub gateway_image: Option<String>,
    /// Trust anchors (PEM) for the gateway's upstream TLS, and added to the
    /// runner's CA bundle.
    pub gateway_roots: PathBuf,
}

/// `VAULT_GATEWAY_ROOTS` when unset: Debian's bundle.
pub const DEFAULT_GATEWAY_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Default for RunConfig {
    /// What the command line gives when no flag or variable is set.
    fn default() -> Self {
        RunConfig {
            runner_image: None,
            allow_images: String::new(),
            timeout_s: DEFAULT_TIMEOUT_S,
            max_timeout_s: None,
            grace: Duration::from_secs(DEFAULT_GRACE_S),
            runner_user: DEFAULT_RUNNER_USER,
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
            max_cpus: DEFAULT_MAX_CPUS,
            max_pids: DEFAULT_MAX_PIDS,
            allow_bridge: false,
            runtime: None,
            secrets_dir: None,
            allow_unenforced_limits: Unenforced::default(),
            allow_egress: String::new(),
            egress_network: None,
            gateway_image: None,
            gateway_roots: PathBuf::from(DEFAULT_GATEWAY_ROOTS),
        }
    }
}

/// A resource limit run-action asks the engine for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `HostConfig.Memory` and `HostConfig.MemorySwap`.
    Memory,
    /// `HostConfig.NanoCpus`.
    Cpus,
    /// `HostConfig.PidsLimit`.
    Pids,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Memory, Limit::Cpus, Limit::Pids];

    /// The name `--allow-unenforced-limits` takes.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Cpus => "cpus",
            Limit::Pids => "pids",
        }
    }
}

/// The limits `--allow-unenforced-limits` names (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unenforced {
    pub memory: bool,
    pub cpus: bool,
    pub pids: bool,
}

impl Unenforced {
    pub fn allows(&self, limit: Limit) -> bool {
        match limit {
            Limit::Memory => self.memory,
            Limit::Cpus => self.cpus,
            Limit::Pids => self.pids,
        }
    }
}

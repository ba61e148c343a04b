//! The settings secret-mount runs with: plain values, built once from the
//! command line (in lib.rs), so the logic never takes a clap struct.

use crate::dir::Placement;
use std::ffi::OsString;
use std::path::PathBuf;
use vault_core::admit::Admission;
use vault_core::{DispatcherId, RunnerUser, SecretName};

/// Wrapper mode (`secret-mount [OPTIONS] -- CMD...`), as given: a missing
/// identity, store or command is refused when the run is prepared.
#[derive(Debug, Clone)]
pub struct WrapConfig {
    /// The secrets to mount (`--names`); `None`: those the scan line on
    /// stdin names.
    pub names: Option<Vec<SecretName>>,
    /// The age identity file (`--identity`, `VAULT_IDENTITY`).
    pub identity: Option<PathBuf>,
    /// The secret store directory (`--secrets`, `VAULT_SECRETS`).
    pub store: Option<PathBuf>,
    /// Who owns the secret files (`--runner-user`).
    pub runner_user: RunnerUser,
    /// This dispatcher's name (`--dispatcher-id`); `None`: the host's name.
    pub dispatcher_id: Option<DispatcherId>,
    /// Most bytes the secrets of one run may add up to (`--size`).
    pub size: u64,
    /// Where this run's directory goes.
    pub placement: Placement,
    /// The command and its arguments (after `--`).
    pub cmd: Vec<OsString>,
    /// The image of actions that name none (`--runner-image`).
    pub runner_image: Option<String>,
    /// The admission checks, or why they cannot be applied (a policy file
    /// that does not parse): then nothing is decrypted.
    pub admission: Result<Admission, String>,
}

//! Shared contract of the vault-dispatch tools.
//!
//! Everything two tools must agree on lives here and nowhere else: the
//! action file ([`action::Action`]), the scan line ([`scan::ScanLine`]),
//! the result ([`result::ActionResult`]), the ops repo's folders and file
//! suffixes ([`layout`]), id and secret-name validation ([`names`]), the settings several tools read ([`settings`]), JSON Lines
//! I/O ([`jsonl`]), the exit-code table ([`exit::Exit`]) and the one-line
//! error report ([`report`]).
//!
//! Wire formats carry a `schema` integer and are only ever extended: readers
//! of the *stream* ignore unknown fields, while the *action file* rejects
//! them (a typo there would silently drop a limit).

pub mod action;
pub mod admit;
pub mod approval;
pub mod checkout;
#[cfg(feature = "cli")]
pub mod cli;
pub mod egress;
pub mod exit;
pub mod glob;
pub mod jsonl;
pub mod layout;
pub mod ledger;
pub mod names;
pub mod result;
pub mod scan;
pub mod secret_policy;
pub mod settings;
pub mod stuck;
pub mod time;
pub mod toml_file;

pub use action::{Action, ActionError, Network, NetworkKind, Resources};
pub use exit::Exit;
pub use names::{ActionId, NameError, SecretName};
pub use result::{ActionResult, ContainerInfo, EgressRecord, Status};
pub use scan::ScanLine;
pub use settings::{DispatcherId, RepoConfig, RunnerUser, SettingError};

/// Print `tool: message` on stderr, the message being the full error chain
/// on one line. Newlines inside a message are folded so that one error is
/// always one line.
pub fn report(tool: &str, message: impl std::fmt::Display) {
    let text = message.to_string().replace(['\n', '\r'], " ");
    eprintln!("{tool}: {text}");
}

/// The cache directory when `VAULT_CACHE` is not set (or empty):
/// `$XDG_CACHE_HOME/vault-dispatch`, else `$HOME/.cache/vault-dispatch`,
/// else `/var/cache/vault-dispatch`; an empty variable counts as unset.
///
/// dispatcher.sh computes the very same default (and exports it as
/// `VAULT_CACHE` to the tools), so a dispatcher and a tool run by hand with
/// one environment share one cache; `dispatcher.sh --help` prints it. Change
/// both together (crates/vault-e2e/tests/deploy_host.rs checks they agree).
pub fn default_cache_dir() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache"));
    base.join("vault-dispatch")
}

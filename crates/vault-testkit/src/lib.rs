//! Test harness for vault-dispatch: the real testbed seen from Rust tests.
//!
//! `scripts/testbed.sh up` starts the parts (dockerd, a git daemon on
//! 127.0.0.1, age, the busybox runner image) and writes an env file; this
//! crate reads it and gives each test its own ops repo, secret store and
//! temp dir. Nothing here is a mock: repos are served by the real git
//! daemon, secrets are encrypted by the real `age` CLI.
//!
//! Tests that need the testbed call [`Testbed::get`], which panics with the
//! command to run when the testbed is not up: a missing bench is a failed
//! test, never a silently skipped one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use tempfile::TempDir;

mod process;
mod repo;
mod secrets;
mod servers;

pub use process::{
    bin, bin_dir, container_events, docker, repo_tool, run, run_with, spawn_fed, unique,
    wait_output, wait_until, Output,
};
pub use repo::{git, How, OpsRepo};
pub use secrets::{ssh_keygen, SecretStore};
pub use servers::{GitDaemon, HttpsGit, SshGit};

/// The running testbed's coordinates.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub dir: PathBuf,
    pub git_base: PathBuf,
    /// `git://127.0.0.1:PORT`; a repo named `x.git` is at `{git_url}/x.git`.
    pub git_url: String,
    /// The busybox runner image, e.g. `vault-runner:test`.
    pub image: String,
    /// Whether dockerd has the `runsc` (gVisor) runtime registered.
    pub runsc: bool,
}

impl Testbed {
    /// The testbed, from `VAULT_TESTBED_*` variables or the env file at
    /// `$VAULT_TESTBED_DIR/env` (default `/tmp/vault-testbed/env`).
    pub fn get() -> Testbed {
        let mut vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("VAULT_TESTBED_"))
            .collect();
        if !vars.contains_key("VAULT_TESTBED_GIT_URL") {
            let dir = vars
                .get("VAULT_TESTBED_DIR")
                .cloned()
                .unwrap_or_else(|| "/tmp/vault-testbed".into());
            let env = Path::new(&dir).join("env");
            let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
                panic!(
                    "the testbed is not up ({} missing): run `scripts/testbed.sh up` as root first",
                    env.display()
                )
            });
            for line in text.lines() {
                if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                    vars.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
            }
        }
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("testbed env lacks {k}: rerun scripts/testbed.sh up"))
        };
        Testbed {
            dir: get("VAULT_TESTBED_DIR").into(),
            git_base: get("VAULT_TESTBED_GIT_BASE").into(),
            git_url: get("VAULT_TESTBED_GIT_URL"),
            image: get("VAULT_TESTBED_IMAGE"),
            runsc: get("VAULT_TESTBED_RUNSC") == "1",
        }
    }
}

//! Shared pieces of the end-to-end tests (`tests/`): a dispatcher site
//! running the real `dispatcher.sh --once`, container creates counted from
//! `docker events`, and process-group kills.

#![allow(clippy::unwrap_used)]

pub mod egress;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vault_testkit::{
    bin_dir, docker, run_with, wait_output, wait_until, Output, SecretStore, TempDir, Testbed,
};

/// Tests that restart dockerd take this exclusively; the others share it.
pub static DOCKERD: RwLock<()> = RwLock::new(());

pub fn shared_dockerd() -> RwLockReadGuard<'static, ()> {
    DOCKERD.read().unwrap_or_else(|e| e.into_inner())
}

pub fn dispatcher_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dispatcher.sh")
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One dispatcher host's view: its cache, mount root and id, pointed at an
/// ops repo and a secret store.
pub struct Site {
    pub tb: Testbed,
    pub url: String,
    pub store: PathBuf,
    pub identity: PathBuf,
    pub cache: TempDir,
    pub mounts: TempDir,
    pub id: String,
    /// More environment for every tool (e.g. `VAULT_ALLOWED_SIGNERS`).
    pub extra_env: Vec<(String, String)>,
}

impl Site {
    pub fn new(tb: &Testbed, url: &str, secrets: &SecretStore, id: &str) -> Site {
        Site {
            tb: tb.clone(),
            url: url.to_string(),
            store: secrets.store(),
            identity: secrets.identity.clone(),
            cache: TempDir::new().unwrap(),
            mounts: TempDir::new().unwrap(),
            id: id.to_string(),
            extra_env: Vec::new(),
        }
    }

    pub fn command(&self) -> Command {
        self.command_with(&["--once"])
    }

    /// dispatcher.sh with these arguments (none: the loop).
    pub fn command_with(&self, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg(dispatcher_sh())
            .args(args)
            .env("VAULT_BIN_DIR", bin_dir())
            .env("VAULT_REPO", &self.url)
            .env("VAULT_BRANCH", "main")
            .env("VAULT_CACHE", self.cache.path())
            .env("VAULT_IDENTITY", &self.identity)
            .env("VAULT_SECRETS", &self.store)
            .env("VAULT_MOUNT_ROOT", self.mounts.path())
            .env("VAULT_RUNNER_IMAGE", &self.tb.image)
            .env("VAULT_ALLOW_IMAGES", &self.tb.image)
            .env("VAULT_DISPATCHER_ID", &self.id)
            .env("VAULT_TIMEOUT_S", "60")
            .env("VAULT_GRACE_S", "2")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn once(&self) -> Output {
        run_with(&mut self.command(), b"", Duration::from_secs(240))
    }

    /// `dispatcher.sh --once` in a process group of its own, so the whole
    /// tree can be killed as a host crash would.
    pub fn spawn(&self) -> Child {
        self.command()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Mount points left under this site's mount root.
    pub fn mounts_left(&self) -> Vec<String> {
        let root = self.mounts.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect()
    }
}

pub fn action(id: &str, secrets: &[&str], script: &str) -> String {
    serde_json::json!({
        "id": id,
        "secrets": secrets,
        "command": ["sh", "-c", script],
        "proposed_by": "e2e",
    })
    .to_string()
}

/// Container creates for `id` seen by dockerd since `since` (unix seconds).
pub fn creates(id: &str, since: u64) -> usize {
    vault_testkit::container_events("create", id, since)
}

pub fn container_state(id: &str) -> Option<String> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{.State.Status}}",
        &format!("vault-{id}"),
    ]);
    (out.code == Some(0)).then(|| out.stdout.trim().to_string())
}

/// Wait for a spawned dispatcher, killing its group if it outlives `limit`.
pub fn finish(child: Child, limit: Duration) -> Output {
    wait_output(child, limit, |pgid| {
        kill_group(pgid);
        panic!("dispatcher.sh still running after {limit:?}");
    })
}

/// kill -9 the whole process group `pgid` (what a host crash is to the
/// tools) and wait until every process of it is gone.
pub fn kill_group(pgid: u32) {
    let pgid = pgid.to_string();
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL -- -{pgid} failed");
    // The tools inherit the dispatcher's lock; it is free once every
    // process of the group is gone, not just the shell.
    wait_until("the killed group to exit", Duration::from_secs(30), || {
        !group_alive(&pgid)
    });
}

/// Whether any process (zombies aside) is still in process group `pgid`.
pub fn group_alive(pgid: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .any(|stat| {
            // "pid (comm) state ppid pgrp ...": comm may hold spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut f = rest.split_whitespace();
            let state = f.next();
            f.nth(1) == Some(pgid) && state != Some("Z")
        })
}

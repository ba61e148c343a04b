//! Secret stores and keys made with the age and ssh-keygen CLIs.

use crate::process::spawn_fed;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// A secret store: a directory of `<NAME>.age` files and the identity that
/// decrypts them, made with the real `age-keygen` and `age` CLIs.
pub struct SecretStore {
    pub dir: TempDir,
    pub identity: PathBuf,
    pub recipient: String,
}

impl SecretStore {
    pub fn new() -> SecretStore {
        let dir = TempDir::new().unwrap();
        let identity = dir.path().join("identity.txt");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(out.status.success(), "age-keygen failed");
        let recipient = Command::new("age-keygen")
            .arg("-y")
            .arg(&identity)
            .output()
            .unwrap();
        let recipient = String::from_utf8(recipient.stdout)
            .unwrap()
            .trim()
            .to_string();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        SecretStore {
            dir,
            identity,
            recipient,
        }
    }

    /// The store directory (`VAULT_SECRETS`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Encrypt `value` to `<store>/<name>.age` with the `age` CLI; the value
    /// goes through stdin, never argv.
    pub fn add(&self, name: &str, value: &[u8]) -> PathBuf {
        self.add_with(name, value, &[])
    }

    /// Like [`add`](Self::add), with extra `age` flags (e.g. `["-a"]` for
    /// armor).
    pub fn add_with(&self, name: &str, value: &[u8], flags: &[&str]) -> PathBuf {
        let path = self.store().join(format!("{name}.age"));
        let mut child = spawn_fed(
            Command::new("age")
                .args(["-r", &self.recipient])
                .args(flags)
                .arg("-o")
                .arg(&path),
            value,
        );
        assert!(child.wait().unwrap().success(), "age failed");
        path
    }
}

impl Default for SecretStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A new ed25519 key pair at `path` and `path.pub`, its private key
/// encrypted with `passphrase` (none when empty); returns `path`.
pub fn ssh_keygen(path: &Path, passphrase: &str) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is needed: run scripts/testbed.sh up");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    path.to_path_buf()
}

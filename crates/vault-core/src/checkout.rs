//! Running an action against an exact commit of a code repository.
//!
//! The action names the commit; the dispatcher fetches it:
//!
//! ```json
//! "checkout": {"repo": "https://git.example/org/lib.git",
//!              "commit": "<40 hex>", "path": "/workspace",
//!              "writable": true, "push": {"ref": "refs/tags/v1.4.0"}}
//! ```
//!
//! Where it may be fetched from, with which credential, and which refs may
//! be pushed are the dispatcher's (`VAULT_CHECKOUT_CONFIG`, a TOML file on
//! the host, [`CheckoutConfig`]), never the action's. An action with a
//! `checkout` while no such file is configured is refused.
//!
//! ```toml
//! max_bytes = 104857600      # cap on the fetched pack and on the checked-out files
//! fetch_timeout_s = 300      # the whole fetch
//! keep_failed_s = 604800     # how long a workspace whose push failed is kept
//!
//! [[repos]]
//! prefix = "https://git.example/org/"   # the action's repo must start with it
//! token_file = "/etc/vault-dispatch/code-token"   # or ssh_key = "…"; or neither
//! push = ["refs/tags/v*"]               # refs an action may push (globs); default none
//! ```

use crate::glob::matches;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the workspace is mounted when the action gives no `path`.
pub const DEFAULT_PATH: &str = "/workspace";
/// `max_bytes` when the file sets none: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// `fetch_timeout_s` when the file sets none.
pub const DEFAULT_FETCH_TIMEOUT_S: u64 = 300;
/// `keep_failed_s` when the file sets none: 7 days.
pub const DEFAULT_KEEP_FAILED_S: u64 = 7 * 86_400;
/// Longest repo URL an action may name.
const MAX_URL_LEN: usize = 1024;
/// Largest checkout configuration file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The action's `checkout` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    pub repo: String,
    /// The full commit id (40 lowercase hex digits): never a branch name.
    pub commit: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
}

fn default_path() -> String {
    DEFAULT_PATH.to_string()
}

/// `checkout.push`: the ref the dispatcher pushes after a successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSpec {
    #[serde(rename = "ref")]
    pub refname: String,
}

/// What is wrong with a `checkout` object (an invalid action: `rejected`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("checkout.repo {0:?} is not a URL with a scheme (git://, ssh://, https://, file://) of at most {MAX_URL_LEN} bytes without control characters, user info or \"..\"")]
    Repo(String),
    #[error("checkout.commit {0:?} is not a full commit id (40 lowercase hex digits)")]
    Commit(String),
    #[error(
        "checkout.path {0:?} is not a plain absolute path outside /run, /proc, /sys, /dev and /tmp"
    )]
    Path(String),
    #[error(
        "checkout.push.ref {0:?} is not a full branch or tag ref (refs/heads/… or refs/tags/…)"
    )]
    Ref(String),
}

impl Checkout {
    /// The checks serde cannot express; the dispatcher's allowlist is
    /// checked later, by run-action ([`CheckoutConfig::repo_for`]).
    pub fn validate(&self) -> Result<(), CheckoutError> {
        if !plain_url(&self.repo) {
            return Err(CheckoutError::Repo(short(&self.repo)));
        }
        let hex = self.commit.len() == 40
            && self
                .commit
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            && self.commit.bytes().any(|c| c != b'0');
        if !hex {
            return Err(CheckoutError::Commit(short(&self.commit)));
        }
        if !plain_mount_path(&self.path) {
            return Err(CheckoutError::Path(short(&self.path)));
        }
        if let Some(p) = &self.push {
            if !valid_push_ref(&p.refname) {
                return Err(CheckoutError::Ref(short(&p.refname)));
            }
        }
        Ok(())
    }
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

/// A URL with a scheme and nothing that could make a prefix match lie:
/// no `..` segment, no user info with a password, no control character,
/// no percent-escape (which could hide either).
fn plain_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let known = ["git", "ssh", "http", "https", "file"];
    url.len() <= MAX_URL_LEN
        && known.contains(&scheme)
        && !rest.is_empty()
        && !url.bytes().any(|c| c.is_ascii_control() || c == b' ')
        && !url.contains(['%', '\\', '?', '#'])
        && !rest
            .split('/')
            .any(|seg| seg == ".." || seg == "." || (seg.contains(':') && seg.contains('@')))
}

/// Absolute, normalized, and not where the dispatcher mounts its own
/// things or the kernel its own.
fn plain_mount_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let plain = path.len() <= 256
        && segs.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        });
    let reserved = ["run", "proc", "sys", "dev", "tmp"];
    plain && !reserved.contains(&segs[0])
}

/// `refs/heads/<name>` or `refs/tags/<name>`, a name git accepts (the
/// subset of `git check-ref-format` that matters here).
pub fn valid_push_ref(r: &str) -> bool {
    let Some(name) = r
        .strip_prefix("refs/heads/")
        .or_else(|| r.strip_prefix("refs/tags/"))
    else {
        return false;
    };
    r.len() <= 256
        && !name.is_empty()
        && !r.contains("..")
        && !r.contains("@{")
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && !seg.ends_with(".lock")
                && seg
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+'))
        })
        && !r.ends_with('.')
}

/// Why the configuration file cannot be used. Like the secret policy, a
/// file that cannot be used stops the tool: it never runs as if unset.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the checkout config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the checkout config {path} is not valid: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// One `[[repos]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoRule {
    /// The action's repo URL must start with this. A prefix that does not
    /// end in `/` matches that URL only (so `…/lib` does not admit
    /// `…/lib-evil`).
    pub prefix: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// Refs (globs) an action may push to such a repo; none by default.
    #[serde(default)]
    pub push: Vec<String>,
}

impl RepoRule {
    fn admits(&self, url: &str) -> bool {
        if self.prefix.ends_with('/') {
            url.starts_with(&self.prefix)
        } else {
            url == self.prefix
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    fetch_timeout_s: Option<u64>,
    #[serde(default)]
    keep_failed_s: Option<u64>,
    #[serde(default)]
    repos: Vec<RepoRule>,
}

/// The dispatcher's checkout configuration (`VAULT_CHECKOUT_CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub fetch_timeout_s: u64,
    pub keep_failed_s: u64,
    pub repos: Vec<RepoRule>,
}

/// Why an action's checkout is refused by the configuration (`rejected`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the action has a checkout but no checkout config is set (VAULT_CHECKOUT_CONFIG): checkouts are refused")]
    NotConfigured,
    #[error("checkout.repo {url:?} is not under any allowed prefix of {config}")]
    Repo { url: String, config: String },
    #[error(
        "checkout.push.ref {refname:?} is not among the refs {config} allows to push to {url:?}"
    )]
    Push {
        refname: String,
        url: String,
        config: String,
    },
}

impl CheckoutConfig {
    /// Read and check the file.
    pub fn load(path: &Path) -> Result<CheckoutConfig, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let file: File = crate::toml_file::load(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            crate::toml_file::TomlFileError::Read(source) => ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
            crate::toml_file::TomlFileError::Invalid(why) => invalid(why),
        })?;
        for (i, r) in file.repos.iter().enumerate() {
            let n = i + 1;
            if !plain_url(&r.prefix) {
                return Err(invalid(format!(
                    "repos #{n}: prefix {:?} is not a URL with a scheme (git://, ssh://, http(s)://, file://)",
                    r.prefix
                )));
            }
            if r.token_file.is_some() && r.ssh_key.is_some() {
                return Err(invalid(format!(
                    "repos #{n}: give token_file or ssh_key, not both"
                )));
            }
            if r.token_file.is_some() && !r.prefix.starts_with("https://") {
                return Err(invalid(format!(
                    "repos #{n}: a token_file is only sent over https:// (prefix {:?})",
                    r.prefix
                )));
            }
            if let Some(p) = r.push.iter().find(|p| p.is_empty()) {
                return Err(invalid(format!("repos #{n}: push pattern {p:?} is empty")));
            }
        }
        let positive = |v: Option<u64>, name: &str, default: u64| match v {
            Some(0) => Err(invalid(format!("{name} must be at least 1"))),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(CheckoutConfig {
            path: path.to_path_buf(),
            max_bytes: positive(file.max_bytes, "max_bytes", DEFAULT_MAX_BYTES)?,
            fetch_timeout_s: positive(
                file.fetch_timeout_s,
                "fetch_timeout_s",
                DEFAULT_FETCH_TIMEOUT_S,
            )?,
            keep_failed_s: file.keep_failed_s.unwrap_or(DEFAULT_KEEP_FAILED_S),
            repos: file.repos,
        })
    }

    /// The first entry admitting the action's repo and, when it pushes,
    /// its ref.
    pub fn repo_for(&self, c: &Checkout) -> Result<&RepoRule, Refusal> {
        let config = self.path.display().to_string();
        let rule = self
            .repos
            .iter()
            .find(|r| r.admits(&c.repo))
            .ok_or_else(|| Refusal::Repo {
                url: c.repo.clone(),
                config: config.clone(),
            })?;
        if let Some(p) = &c.push {
            if !rule.push.iter().any(|pat| matches(pat, &p.refname)) {
                return Err(Refusal::Push {
                    refname: p.refname.clone(),
                    url: c.repo.clone(),
                    config,
                });
            }
        }
        Ok(rule)
    }
}

/// What the result says about the checkout (`"checkout"` in the result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutOutcome {
    pub repo: String,
    /// The commit that was fetched, verified and mounted.
    pub commit: String,
    /// Set once the push succeeded (or was found already done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
    /// The host folder of a workspace kept for inspection, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    #[serde(rename = "ref")]
    pub refname: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub path: String,
    pub until: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn co(repo: &str, commit: &str, path: &str, push: Option<&str>) -> Checkout {
        Checkout {
            repo: repo.into(),
            commit: commit.into(),
            path: path.into(),
            writable: false,
            push: push.map(|r| PushSpec { refname: r.into() }),
        }
    }

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn checkout_fields_are_validated() {
        assert_eq!(
            co("git://h/r.git", C, "/workspace", None).validate(),
            Ok(())
        );
        assert_eq!(
            co("git://h/r.git", C, "/src/app", Some("refs/tags/v1.4.0")).validate(),
            Ok(())
        );
        for repo in [
            "h:r.git",
            "/srv/r.git",
            "ftp://h/r",
            "git://h/a/../b",
            "https://u:pw@h/r",
            "git://h/r%2e%2e",
            "git://h/r\n",
            "",
        ] {
            assert!(
                matches!(
                    co(repo, C, "/w", None).validate(),
                    Err(CheckoutError::Repo(_))
                ),
                "{repo:?}"
            );
        }
        for commit in ["main", &C[..39], &C.to_uppercase(), &"0".repeat(40)] {
            assert!(
                matches!(
                    co("git://h/r", commit, "/w", None).validate(),
                    Err(CheckoutError::Commit(_))
                ),
                "{commit}"
            );
        }
        for path in [
            "workspace",
            "/",
            "/run/secrets",
            "/tmp/x",
            "/a/../run",
            "/a//b",
            "/a/",
            "/proc",
        ] {
            assert!(
                matches!(
                    co("git://h/r", C, path, None).validate(),
                    Err(CheckoutError::Path(_))
                ),
                "{path}"
            );
        }
        for r in [
            "v1.4.0",
            "refs/notes/x",
            "refs/tags/",
            "refs/tags/a..b",
            "refs/heads/.x",
            "refs/heads/x.lock",
            "refs/tags/a b",
            "refs/tags/x.",
        ] {
            assert!(
                matches!(
                    co("git://h/r", C, "/w", Some(r)).validate(),
                    Err(CheckoutError::Ref(_))
                ),
                "{r}"
            );
        }
    }

    #[test]
    fn the_action_json_form() {
        let c: Checkout =
            serde_json::from_str(&format!(r#"{{"repo":"git://h/r","commit":"{C}"}}"#)).unwrap();
        assert_eq!(c.path, DEFAULT_PATH);
        assert!(!c.writable && c.push.is_none());
        let c: Checkout = serde_json::from_str(&format!(
            r#"{{"repo":"git://h/r","commit":"{C}","writable":true,"push":{{"ref":"refs/tags/v1"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.push.unwrap().refname, "refs/tags/v1");
        assert!(serde_json::from_str::<Checkout>(&format!(
            r#"{{"repo":"git://h/r","commit":"{C}","branch":"main"}}"#
        ))
        .is_err());
    }

    fn load(text: &str) -> Result<CheckoutConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkout.toml");
        std::fs::write(&p, text).unwrap();
        CheckoutConfig::load(&p)
    }

    #[test]
    fn config_admits_by_prefix_and_push_pattern() {
        let cfg = load(
            "max_bytes = 1000\n[[repos]]\nprefix = \"git://127.0.0.1:9418/code/\"\npush = [\"refs/tags/v*\"]\n\n[[repos]]\nprefix = \"git://h/exact.git\"\n",
        )
        .unwrap();
        assert_eq!(cfg.max_bytes, 1000);
        assert_eq!(cfg.fetch_timeout_s, DEFAULT_FETCH_TIMEOUT_S);
        assert!(cfg
            .repo_for(&co("git://127.0.0.1:9418/code/a.git", C, "/w", None))
            .is_ok());
        assert!(cfg
            .repo_for(&co(
                "git://127.0.0.1:9418/code/a.git",
                C,
                "/w",
                Some("refs/tags/v2")
            ))
            .is_ok());
        assert!(matches!(
            cfg.repo_for(&co(
                "git://127.0.0.1:9418/code/a.git",
                C,
                "/w",
                Some("refs/heads/main")
            )),
            Err(Refusal::Push { .. })
        ));
        assert!(matches!(
            cfg.repo_for(&co("git://127.0.0.1:9418/codex/a.git", C, "/w", None)),
            Err(Refusal::Repo { .. })
        ));
        assert!(cfg
            .repo_for(&co("git://h/exact.git", C, "/w", None))
            .is_ok());
        assert!(matches!(
            cfg.repo_for(&co("git://h/exact.git2", C, "/w", None)),
            Err(Refusal::Repo { .. })
        ));
        // No push pattern: no push.
        assert!(matches!(
            cfg.repo_for(&co("git://h/exact.git", C, "/w", Some("refs/tags/v1"))),
            Err(Refusal::Push { .. })
        ));
    }

    #[test]
    fn bad_config_files_are_refused() {
        for (text, why) in [
            ("[[repos]]\nprefix = \"h:r\"\n", "prefix"),
            ("bogus = 1\n", "unknown field"),
            ("max_bytes = 0\n", "max_bytes"),
            (
                "[[repos]]\nprefix = \"git://h/\"\ntoken_file = \"/t\"\n",
                "https",
            ),
            (
                "[[repos]]\nprefix = \"https://h/\"\ntoken_file = \"/t\"\nssh_key = \"/k\"\n",
                "not both",
            ),
            ("[[repos]]\nprefix = \"git://h/\"\npush = [\"\"]\n", "empty"),
            ("[[repos]\n", "line 1"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let missing = CheckoutConfig::load(Path::new("/nonexistent/checkout.toml"));
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}

//! The per-secret policy (`VAULT_POLICY`): a TOML file on the dispatcher
//! host, never in the ops repo, saying what each secret may be used with.
//!
//! ```toml
//! [secrets.npm_token]
//! images = ["vault-runner:*", "registry.local/node@sha256:*"]  # required
//! formulas = ["publish"]                 # formula names (globs)
//! commands = [["npm", "publish", "*"]]   # argv patterns, one glob per argument
//! networks = ["none"]                    # default ["none"]; also "bridge", "gateway"
//! inject_hosts = ["api.example.org"]     # hosts (globs) a gateway may send it to
//! max_timeout_s = 600                    # the action must set timeout_s <= this
//! approvers = ["alice@example.com"]      # allowed-signers principals (globs)
//! env = ["NPM_CONFIG_TAG"]               # env names the action may set (default: none)
//! ```
//!
//! While a policy is set it is deny by default: an action naming a secret
//! the policy does not list is refused, and so is one that breaks any rule
//! of any secret it names. An action naming no secret is not constrained.
//! A file that cannot be read or parsed (an unknown key included) is an
//! error: the tools never run as if there were no policy.

use crate::approval::Approval;
use crate::glob::matches;
use crate::{Action, NetworkKind, SecretName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the policy {path} is not valid: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// What one secret may be used with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub images: Vec<String>,
    #[serde(default)]
    pub formulas: Vec<String>,
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    #[serde(default = "none_only")]
    pub networks: Vec<NetworkKind>,
    #[serde(default)]
    pub max_timeout_s: Option<u64>,
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
    /// Names (globs) of the `env` entries an action may set; none when
    /// left out (an env var can redirect where a secret is sent).
    #[serde(default)]
    pub env: Vec<String>,
    /// Hosts (globs) a gateway may add this secret to requests for, when
    /// an action names it under `network.inject`; none when left out.
    #[serde(default)]
    pub inject_hosts: Vec<String>,
}

fn none_only() -> Vec<NetworkKind> {
    vec![NetworkKind::None]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    secrets: BTreeMap<String, Rule>,
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    secrets: BTreeMap<SecretName, Rule>,
}

/// What an action is checked as: its fields plus what the tools resolve.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub action: &'a Action,
    /// The image it runs in: its own, else the runner default.
    pub image: Option<&'a str>,
    pub approval: Option<&'a Approval>,
}

impl Policy {
    /// Read and check the policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let invalid = |why: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let file: File = crate::toml_file::load(path, MAX_POLICY_BYTES).map_err(|e| match e {
            crate::toml_file::TomlFileError::Read(source) => PolicyError::Read {
                path: path.to_path_buf(),
                source,
            },
            crate::toml_file::TomlFileError::Invalid(why) => invalid(why),
        })?;
        let mut secrets = BTreeMap::new();
        for (name, rule) in file.secrets {
            let secret =
                SecretName::parse(&name).map_err(|e| invalid(format!("[secrets.{name}]: {e}")))?;
            if rule.images.is_empty() {
                return Err(invalid(format!(
                    "[secrets.{name}]: images is empty (list the images it may be used with)"
                )));
            }
            if rule.approvers.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(format!(
                    "[secrets.{name}]: approvers is empty (leave it out, or list principals)"
                )));
            }
            secrets.insert(secret, rule);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            secrets,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when a rule restricts approvers (then approvals must be
    /// verified: there is a principal to compare).
    pub fn names_approvers(&self) -> bool {
        self.secrets.values().any(|r| r.approvers.is_some())
    }

    /// Check every secret `u.action` names; the error names the secret and
    /// the rule it breaks.
    pub fn check(&self, u: Use<'_>) -> Result<(), String> {
        for secret in &u.action.secrets {
            let Some(rule) = self.secrets.get(secret) else {
                return Err(format!(
                    "policy: secret {:?} is not listed in {} (deny by default)",
                    secret.as_str(),
                    self.path.display()
                ));
            };
            rule.check(secret, u)
                .map_err(|why| format!("policy: secret {:?}: {why}", secret.as_str()))?;
        }
        Ok(())
    }
}

impl Rule {
    fn check(&self, secret: &SecretName, u: Use<'_>) -> Result<(), String> {
        let a = u.action;
        let image = u
            .image
            .ok_or("the action names no image and there is no runner default")?;
        if !self.images.iter().any(|p| matches(p, image)) {
            return Err(format!("image {image:?} is not in its images"));
        }
        match (&a.formula, &a.command) {
            (Some(f), _) if !self.formulas.iter().any(|p| matches(p, f)) => {
                return Err(format!("formula {f:?} is not in its formulas"));
            }
            (_, Some(argv)) if !self.commands.iter().any(|p| argv_matches(p, argv)) => {
                return Err("the command is not in its commands".into());
            }
            _ => {}
        }
        if let Some(name) = a
            .env
            .keys()
            .find(|k| !self.env.iter().any(|p| matches(p, k)))
        {
            return Err(format!("env {name:?} is not in its env"));
        }
        let injected = a.network.egress().and_then(|e| e.inject.get(secret));
        if let Some(inject) = injected {
            // Never in the runner: what matters is where the gateway sends it.
            if !self.inject_hosts.iter().any(|p| matches(p, &inject.host)) {
                return Err(format!(
                    "injecting it for host {:?} is not in its inject_hosts",
                    inject.host
                ));
            }
        } else if !self.networks.contains(&a.network.kind()) {
            return Err(format!(
                "network {:?} is not in its networks",
                a.network.kind().as_str()
            ));
        }
        if let Some(max) = self.max_timeout_s {
            match a.timeout_s {
                Some(t) if t <= max => {}
                Some(t) => return Err(format!("timeout_s {t} is over its max_timeout_s {max}")),
                None => {
                    return Err(format!(
                        "the action sets no timeout_s; its max_timeout_s is {max}"
                    ))
                }
            }
        }
        if let Some(approvers) = &self.approvers {
            let who = u.approval.and_then(|a| a.principal.as_deref());
            match who {
                Some(p) if approvers.iter().any(|pat| matches(pat, p)) => {}
                Some(p) => return Err(format!("principal {p:?} may not approve it")),
                None => return Err("no verified approver (it names approvers)".into()),
            }
        }
        Ok(())
    }
}

/// One glob per argument, the same number of arguments.
fn argv_matches(pattern: &[String], argv: &[String]) -> bool {
    pattern.len() == argv.len() && pattern.iter().zip(argv).all(|(p, a)| matches(p, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(text: &str) -> Result<Policy, PolicyError> {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        Policy::load(f.path())
    }

    fn action(json: &str) -> Action {
        serde_json::from_str(json).expect("action")
    }

    fn approved(p: &str) -> Approval {
        Approval {
            commit: "c".into(),
            time: "2026-11-23T10:00:00Z".into(),
            principal: Some(p.into()),
            fingerprint: Some("SHA256:x".into()),
        }
    }

    const POLICY: &str = r#"
[secrets.npm_token]
images = ["vault-runner:*"]
formulas = ["publish"]
commands = [["npm", "publish", "*"]]
max_timeout_s = 600
approvers = ["alice@example.com", "*@release.example"]
env = ["NPM_CONFIG_TAG"]

[secrets.db]
images = ["vault-runner:test"]
commands = [["migrate"]]
networks = ["none", "bridge"]
"#;

    fn check(p: &Policy, a: &str, image: Option<&str>, who: Option<&str>) -> Result<(), String> {
        let approval = who.map(approved);
        p.check(Use {
            action: &action(a),
            image,
            approval: approval.as_ref(),
        })
    }

    #[test]
    fn each_rule_admits_and_refuses() {
        let p = load(POLICY).expect("policy");
        let ok = r#"{"id":"a","secrets":["npm_token"],"formula":"publish","timeout_s":60}"#;
        let img = Some("vault-runner:test");
        assert_eq!(check(&p, ok, img, Some("alice@example.com")), Ok(()));
        assert_eq!(check(&p, ok, img, Some("bot@release.example")), Ok(()));
        let e = check(&p, ok, img, Some("mallory@example.com")).unwrap_err();
        assert!(
            e.contains("\"npm_token\"") && e.contains("may not approve"),
            "{e}"
        );
        let e = check(&p, ok, img, None).unwrap_err();
        assert!(e.contains("no verified approver"), "{e}");
        let e = check(&p, ok, Some("busybox"), Some("alice@example.com")).unwrap_err();
        assert!(e.contains("image \"busybox\" is not in its images"), "{e}");
        let e = check(&p, ok, None, Some("alice@example.com")).unwrap_err();
        assert!(e.contains("names no image"), "{e}");
        let other = r#"{"id":"a","secrets":["npm_token"],"formula":"deploy","timeout_s":60}"#;
        let e = check(&p, other, img, Some("alice@example.com")).unwrap_err();
        assert!(e.contains("formula \"deploy\""), "{e}");
        let cmd = r#"{"id":"a","secrets":["npm_token"],"command":["npm","publish","--tag=x"],"timeout_s":60}"#;
        assert_eq!(check(&p, cmd, img, Some("alice@example.com")), Ok(()));
        let extra = r#"{"id":"a","secrets":["npm_token"],"command":["npm","publish","x","y"],"timeout_s":60}"#;
        let e = check(&p, extra, img, Some("alice@example.com")).unwrap_err();
        assert!(e.contains("command is not in its commands"), "{e}");
        let slow = r#"{"id":"a","secrets":["npm_token"],"formula":"publish","timeout_s":601}"#;
        let e = check(&p, slow, img, Some("alice@example.com")).unwrap_err();
        assert!(
            e.contains("timeout_s 601 is over its max_timeout_s 600"),
            "{e}"
        );
        let unset = r#"{"id":"a","secrets":["npm_token"],"formula":"publish"}"#;
        let e = check(&p, unset, img, Some("alice@example.com")).unwrap_err();
        assert!(e.contains("sets no timeout_s"), "{e}");
        let net = r#"{"id":"a","secrets":["npm_token"],"formula":"publish","timeout_s":1,"network":"bridge"}"#;
        let e = check(&p, net, img, Some("alice@example.com")).unwrap_err();
        assert!(e.contains("network \"bridge\""), "{e}");
        let env = r#"{"id":"a","secrets":["npm_token"],"formula":"publish","timeout_s":1,"env":{"NPM_CONFIG_REGISTRY":"https://evil"}}"#;
        let e = check(&p, env, img, Some("alice@example.com")).unwrap_err();
        assert!(
            e.contains("env \"NPM_CONFIG_REGISTRY\" is not in its env"),
            "{e}"
        );
        let tag = r#"{"id":"a","secrets":["npm_token"],"formula":"publish","timeout_s":1,"env":{"NPM_CONFIG_TAG":"next"}}"#;
        assert_eq!(check(&p, tag, img, Some("alice@example.com")), Ok(()));
        let db = r#"{"id":"a","secrets":["db"],"command":["migrate"],"network":"bridge"}"#;
        assert_eq!(check(&p, db, img, None), Ok(()));
        // A formula where the rule lists only commands.
        let dbf = r#"{"id":"a","secrets":["db"],"formula":"migrate"}"#;
        assert!(check(&p, dbf, img, None).is_err());
    }

    #[test]
    fn injection_needs_its_host_and_a_mounted_secret_the_gateway_network() {
        let policy = r#"
[secrets.api]
images = ["vault-runner:*"]
commands = [["call"]]
inject_hosts = ["api.example.org", "*.api.example.net"]

[secrets.db]
images = ["vault-runner:*"]
commands = [["call"]]
networks = ["gateway"]
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, policy).unwrap();
        let p = Policy::load(&path).unwrap();
        let act = |secrets: &str, host: &str| {
            format!(
                r#"{{"id":"a","secrets":[{secrets}],"command":["call"],
                    "network":{{"allow":["{host}:443"],
                    "inject":{{"api":{{"host":"{host}","header":"Authorization","format":"Bearer {{}}"}}}}}}}}"#
            )
        };
        let img = Some("vault-runner:test");
        check(&p, &act(r#""api""#, "api.example.org"), img, None).unwrap();
        check(&p, &act(r#""api""#, "eu.api.example.net"), img, None).unwrap();
        let e = check(&p, &act(r#""api""#, "evil.example.org"), img, None).unwrap_err();
        assert!(
            e.contains("\"evil.example.org\" is not in its inject_hosts"),
            "{e}"
        );
        // A mounted secret in a gateway action: its networks must say so.
        check(&p, &act(r#""api","db""#, "api.example.org"), img, None).unwrap();
        let mounted = r#"{"id":"a","secrets":["api"],"command":["call"],"network":{"allow":["api.example.org:443"]}}"#;
        let e = check(&p, mounted, img, None).unwrap_err();
        assert!(
            e.contains("network \"gateway\" is not in its networks"),
            "{e}"
        );
    }

    #[test]
    fn deny_by_default() {
        let p = load(POLICY).expect("policy");
        let a = r#"{"id":"a","secrets":["db","aws"],"command":["migrate"]}"#;
        let e = check(&p, a, Some("vault-runner:test"), None).unwrap_err();
        assert!(
            e.contains("secret \"aws\" is not listed") && e.contains("deny by default"),
            "{e}"
        );
        let none = r#"{"id":"a","secrets":[],"command":["anything"]}"#;
        assert_eq!(check(&p, none, Some("busybox"), None), Ok(()));
        let empty = load("secrets = {}\n").expect("empty policy");
        let e = check(&empty, a, Some("vault-runner:test"), None).unwrap_err();
        assert!(e.contains("not listed"), "{e}");
    }

    #[test]
    fn a_bad_file_is_one_line_error() {
        for (text, want) in [
            ("[secrets.x\nimages = []", "line 1"),
            (
                "[secrets.x]\nimages = [\"a\"]\nimagez = [\"b\"]\n",
                "line 3",
            ),
            (
                "[secrets.x]\nformulas = [\"a\"]\n",
                "missing field `images`",
            ),
            ("[secrets.x]\nimages = []\n", "images is empty"),
            ("[secrets.\"../x\"]\nimages = [\"a\"]\n", "[secrets.../x]"),
            (
                "[secrets.x]\nimages = [\"a\"]\nnetworks = [\"host\"]\n",
                "line 3",
            ),
            (
                "[secrets.x]\nimages = [\"a\"]\napprovers = []\n",
                "approvers is empty",
            ),
            ("", "missing field `secrets`"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{text:?}: {e}");
            assert!(e.starts_with("the policy "), "{e}");
        }
        let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot read the policy /nonexistent/policy.toml"));
    }
}

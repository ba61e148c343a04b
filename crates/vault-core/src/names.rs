//! Validated names: action ids and secret names.
//!
//! * `<id>`: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`, not ending in `.result`.
//! * `<NAME>`: `^[A-Za-z_][A-Za-z0-9_]{0,63}$`.
//!
//! Both are checked before anything touches the file system, so a name can
//! never carry a path separator, `..`, or a leading dash into a path or argv.

use crate::layout::{ACTIONS_DIR, ACTION_SUFFIX, RESULT_SUFFIX};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid action id {0:?}: want 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
    )]
    BadId(String),
    #[error("invalid action id {0:?}: an id must not end in \".result\"")]
    ResultSuffix(String),
    #[error("invalid secret name {0:?}: want 1-64 of [A-Za-z0-9_], not starting with a digit")]
    BadSecret(String),
}

/// Whether `s` is a shell-style variable name of at most `max` bytes:
/// `[A-Za-z_][A-Za-z0-9_]*` (secret names, and the env names of an action).
pub fn is_var_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    b.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && b.len() <= max
}

/// An action id, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ActionId(String);

impl std::str::FromStr for ActionId {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        ActionId::parse(s)
    }
}

impl ActionId {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok_first = b.first().is_some_and(|c| c.is_ascii_alphanumeric());
        let ok_rest = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !ok_first || !ok_rest || b.len() > 128 {
            return Err(NameError::BadId(truncate(s)));
        }
        if s.ends_with(".result") {
            return Err(NameError::ResultSuffix(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<id>.json`: the action file's name in `vault/actions`.
    pub fn action_file_name(&self) -> String {
        format!("{}{ACTION_SUFFIX}", self.0)
    }

    /// `<id>.result.json`: the result file's name in `vault/actions`.
    pub fn result_file_name(&self) -> String {
        format!("{}{RESULT_SUFFIX}", self.0)
    }

    /// `vault/actions/<id>.json`
    pub fn action_path(&self) -> String {
        format!("{ACTIONS_DIR}/{}", self.action_file_name())
    }

    /// `vault/actions/<id>.result.json`
    pub fn result_path(&self) -> String {
        format!("{ACTIONS_DIR}/{}", self.result_file_name())
    }

    /// The container name: `vault-<id>`.
    pub fn container_name(&self) -> String {
        format!("vault-{}", self.0)
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ActionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ActionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret name, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if !is_var_name(s, 64) {
            return Err(NameError::BadSecret(truncate(s)));
        }
        Ok(Self(s.to_string()))
    }

    /// Parse a comma-separated list (`A,B`), as `--names` takes it. Empty
    /// items are ignored, so `""` is the empty list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, NameError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Self::parse)
            .collect()
    }

    /// The first name of `names` that is there a second time.
    pub fn first_duplicate(names: &[SecretName]) -> Option<&SecretName> {
        let mut seen = std::collections::BTreeSet::new();
        names.iter().find(|n| !seen.insert(n.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Keep error messages one short line even for hostile input.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "publish-1.4.0", "A_b.c-d", "9", &"x".repeat(128)] {
            assert_eq!(ActionId::parse(ok).map(|i| i.0), Ok(ok.to_string()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\n",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(ActionId::parse(bad), Err(NameError::BadId(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            ActionId::parse("x.result"),
            Err(NameError::ResultSuffix("x.result".into()))
        );
    }

    #[test]
    fn paths() {
        let id = ActionId::parse("p-1").unwrap();
        assert_eq!(id.action_path(), "vault/actions/p-1.json");
        assert_eq!(id.result_path(), "vault/actions/p-1.result.json");
        assert_eq!(id.result_file_name(), "p-1.result.json");
        assert_eq!(id.container_name(), "vault-p-1");
    }

    #[test]
    fn secret_names() {
        for ok in ["A", "_", "CLAWHUB_TOKEN", "a1", &"A".repeat(64)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A.B",
            "../A",
            "A/B",
            "A B",
            &"A".repeat(65),
        ] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?}");
        }
        let list = SecretName::parse_list("A, B,,C").unwrap();
        assert_eq!(
            list.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["A", "B", "C"]
        );
        assert!(SecretName::parse_list("").unwrap().is_empty());
        assert!(SecretName::parse_list("A,b-c").is_err());
    }

    #[test]
    fn long_input_error_is_short() {
        let msg = ActionId::parse(&"/".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}

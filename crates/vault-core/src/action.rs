//! The action file, schema 1: `vault/actions/<id>.json`.
//!
//! ```json
//! {
//!   "id": "publish-1.4.0",
//!   "secrets": ["CLAWHUB_TOKEN"],
//!   "formula": "clawhub-publish",
//!   "image": "runner:stable",
//!   "env": {"TAG": "v1.4.0"},
//!   "timeout_s": 900,
//!   "network": "none",
//!   "resources": {"memory_mb": 512, "cpus": 1.0, "pids": 256},
//!   "context": "SKILL.md bumped to 0.3.0",
//!   "tools": ["clawhub"], "model": "sonnet",
//!   "proposed_by": "dev-agent"
//! }
//! ```
//!
//! Exactly one of `formula` / `command`. Unknown fields, at the top level and
//! inside `resources`, are errors: a misspelt limit must not be dropped.

use crate::names::{ActionId, NameError, SecretName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest action file accepted, in bytes. A request is a few hundred bytes;
/// this bounds what a hostile file can make a tool allocate.
pub const MAX_ACTION_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub id: ActionId,
    pub secrets: Vec<SecretName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    None,
    Bridge,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("action file is {0} bytes, larger than the {MAX_ACTION_BYTES} allowed")]
    TooLarge(usize),
    #[error("action file is not valid JSON for schema 1: {0}")]
    Json(#[from] serde_json::Error),
    #[error("action id {id:?} does not match its file name {stem:?}.json")]
    StemMismatch { id: String, stem: String },
    #[error("action names both \"formula\" and \"command\": give exactly one")]
    BothFormulaAndCommand,
    #[error("action names neither \"formula\" nor \"command\": give exactly one")]
    NeitherFormulaNorCommand,
    #[error("action \"command\" is empty")]
    EmptyCommand,
    #[error("action \"formula\" {0:?} is not a plain name")]
    BadFormula(String),
    #[error("action \"{field}\" contains a NUL byte")]
    Nul { field: &'static str },
    #[error("action env name {0:?} is not a valid variable name")]
    BadEnvName(String),
    #[error("action env name {0:?} is reserved for the dispatcher")]
    ReservedEnv(String),
    #[error("action \"timeout_s\" must be at least 1")]
    ZeroTimeout,
    #[error("action \"resources.{0}\" must be positive")]
    BadResource(&'static str),
    #[error("action lists secret {0:?} twice")]
    DuplicateSecret(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

impl Action {
    /// Parse and validate an action file's bytes; `stem` is the file name
    /// without `.json`, which must equal `id`.
    pub fn from_file_bytes(stem: &str, bytes: &[u8]) -> Result<Self, ActionError> {
        if bytes.len() > MAX_ACTION_BYTES {
            return Err(ActionError::TooLarge(bytes.len()));
        }
        // The stem is checked first so that a bad file name is reported as
        // such even when the content is garbage.
        ActionId::parse(stem)?;
        let action: Action = serde_json::from_slice(bytes)?;
        if action.id.as_str() != stem {
            return Err(ActionError::StemMismatch {
                id: action.id.to_string(),
                stem: stem.to_string(),
            });
        }
        action.validate()?;
        Ok(action)
    }

    /// Checks serde cannot express. Also run on actions received on a
    /// stream, so a hand-written scan line gets the same scrutiny.
    pub fn validate(&self) -> Result<(), ActionError> {
        match (&self.formula, &self.command) {
            (Some(_), Some(_)) => return Err(ActionError::BothFormulaAndCommand),
            (None, None) => return Err(ActionError::NeitherFormulaNorCommand),
            (Some(f), None) => {
                let plain = !f.is_empty()
                    && f.len() <= 128
                    && !f.starts_with('-')
                    && f.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
                if !plain {
                    return Err(ActionError::BadFormula(f.chars().take(80).collect()));
                }
            }
            (None, Some(argv)) => {
                if argv.is_empty() {
                    return Err(ActionError::EmptyCommand);
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(ActionError::Nul { field: "command" });
                }
            }
        }
        for (k, v) in &self.env {
            if !crate::names::is_var_name(k, 128) {
                return Err(ActionError::BadEnvName(k.chars().take(80).collect()));
            }
            if k.starts_with("VAULT_") {
                return Err(ActionError::ReservedEnv(k.clone()));
            }
            if v.contains('\0') {
                return Err(ActionError::Nul { field: "env" });
            }
        }
        if self.image.as_deref().is_some_and(|i| i.contains('\0')) {
            return Err(ActionError::Nul { field: "image" });
        }
        if self.timeout_s == Some(0) {
            return Err(ActionError::ZeroTimeout);
        }
        if let Some(r) = &self.resources {
            if r.memory_mb == Some(0) {
                return Err(ActionError::BadResource("memory_mb"));
            }
            if r.pids == Some(0) {
                return Err(ActionError::BadResource("pids"));
            }
            if r.cpus.is_some_and(|c| c.is_nan() || c <= 0.0) {
                return Err(ActionError::BadResource("cpus"));
            }
        }
        if let Some(s) = SecretName::first_duplicate(&self.secrets) {
            return Err(ActionError::DuplicateSecret(s.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stem: &str, json: &str) -> Result<Action, ActionError> {
        Action::from_file_bytes(stem, json.as_bytes())
    }

    const FULL: &str = r#"{
      "id": "publish-1.4.0",
      "secrets": ["CLAWHUB_TOKEN"],
      "formula": "clawhub-publish",
      "image": "runner:stable",
      "env": {"TAG": "v1.4.0"},
      "timeout_s": 900,
      "network": "none",
      "resources": {"memory_mb": 512, "cpus": 1.0, "pids": 256},
      "context": "SKILL.md bumped to 0.3.0",
      "tools": ["clawhub"], "model": "sonnet",
      "proposed_by": "dev-agent"
    }"#;

    #[test]
    fn full_example_from_design_parses_and_round_trips() {
        let a = parse("publish-1.4.0", FULL).unwrap();
        assert_eq!(a.secrets[0].as_str(), "CLAWHUB_TOKEN");
        assert_eq!(a.resources.unwrap().pids, Some(256));
        assert_eq!(a.network, Network::None);
        let again: Action = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, again);
    }

    #[test]
    fn minimal_command_action() {
        let a = parse(
            "x",
            r#"{"id":"x","secrets":[],"command":["sh","-c","true"]}"#,
        )
        .unwrap();
        assert_eq!(a.command.unwrap().len(), 3);
        assert_eq!(a.network, Network::None);
        assert!(a.timeout_s.is_none());
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"timeout":5}"#,
                "unknown field",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"resources":{"mem":1}}"#,
                "unknown field",
            ),
            (
                "x",
                r#"{"id":"y","secrets":[],"command":["a"]}"#,
                "does not match",
            ),
            (
                "x",
                r#"{"id":"x","command":["a"]}"#,
                "missing field `secrets`",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"formula":"f"}"#,
                "exactly one",
            ),
            ("x", r#"{"id":"x","secrets":[]}"#, "exactly one"),
            ("x", r#"{"id":"x","secrets":[],"command":[]}"#, "empty"),
            (
                "x",
                r#"{"id":"x","secrets":["../etc/passwd"],"command":["a"]}"#,
                "invalid secret name",
            ),
            (
                "x",
                r#"{"id":"x","secrets":["A","A"],"command":["a"]}"#,
                "twice",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"formula":"--rm"}"#,
                "plain name",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"network":"host"}"#,
                "unknown variant",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"timeout_s":0}"#,
                "at least 1",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"timeout_s":-1}"#,
                "invalid value",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"env":{"A-B":"1"}}"#,
                "variable name",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"env":{"VAULT_SECRETS_DIR":"/"}}"#,
                "reserved",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"resources":{"cpus":0}}"#,
                "positive",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a\u0000"]}"#,
                "NUL",
            ),
            ("x", r#"not json"#, "not valid JSON"),
            ("x", r#"[]"#, "not valid JSON"),
            ("x", "", "not valid JSON"),
            (
                "x.result",
                r#"{"id":"x.result","secrets":[],"command":["a"]}"#,
                ".result",
            ),
            ("../x", r#"{}"#, "invalid action id"),
        ];
        for (stem, json, want) in cases {
            let err = parse(stem, json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: got {err:?}, want {want:?}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn rejects_oversized() {
        let big = format!(
            r#"{{"id":"x","secrets":[],"command":["a"],"context":"{}"}}"#,
            "a".repeat(MAX_ACTION_BYTES)
        );
        assert!(matches!(parse("x", &big), Err(ActionError::TooLarge(_))));
    }
}

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
//! A key given twice in any object of the file is an error too (JSON leaves
//! it to the reader which one counts, so a reviewer may read the first while
//! serde keeps the last): ambiguous input is rejected, not resolved.

use crate::layout::ACTION_SUFFIX;
use crate::names::{ActionId, NameError, SecretName};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

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
    /// A duplicate name is refused here too (not only by the file check
    /// of [`Action::from_file_bytes`]), so an action read from a stream
    /// cannot carry one either.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_env"
    )]
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
    /// The approval ends at this RFC 3339 time: after it, the action is
    /// not started (`rejected`, approval expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Run against this exact commit of a code repository, fetched by the
    /// dispatcher and mounted at its `path` ([`crate::checkout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<crate::checkout::Checkout>,
}

/// Where the runner's network leads: `"none"` (nowhere), `"bridge"`
/// (Docker's bridge: anywhere), or `{"allow": [...], "inject": {...}}`
/// (only the listed destinations, through a gateway: [`crate::egress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    #[default]
    None,
    Bridge,
    Gateway(crate::egress::Egress),
}

/// What a policy speaks of: [`Network`] without the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    None,
    Bridge,
    Gateway,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::None => "none",
            NetworkKind::Bridge => "bridge",
            NetworkKind::Gateway => "gateway",
        }
    }
}

impl Network {
    pub fn kind(&self) -> NetworkKind {
        match self {
            Network::None => NetworkKind::None,
            Network::Bridge => NetworkKind::Bridge,
            Network::Gateway(_) => NetworkKind::Gateway,
        }
    }

    /// The allowlist, for a gateway network.
    pub fn egress(&self) -> Option<&crate::egress::Egress> {
        match self {
            Network::Gateway(e) => Some(e),
            _ => None,
        }
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::None => s.serialize_str("none"),
            Network::Bridge => s.serialize_str("bridge"),
            Network::Gateway(e) => e.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Network;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""none", "bridge" or {"allow": ["host:port", ...]}"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Network, E> {
                match v {
                    "none" => Ok(Network::None),
                    "bridge" => Ok(Network::Bridge),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Network, A::Error> {
                crate::egress::Egress::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Network::Gateway)
            }
        }
        d.deserialize_any(V)
    }
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
    #[error("action id {id:?} does not match its file name {stem:?}{ACTION_SUFFIX}")]
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
    #[error("action \"not_after\" {0:?} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)")]
    BadNotAfter(String),
    #[error("action \"timeout_s\" must be at least 1")]
    ZeroTimeout,
    #[error("action \"resources.{0}\" must be positive")]
    BadResource(&'static str),
    #[error("action lists secret {0:?} twice")]
    DuplicateSecret(String),
    /// A key given twice in one object of the file. `key` is cut to a
    /// printable length; `path` is where the object is (`env`,
    /// `resources`, `a.b[0]`), empty for the top level.
    #[error("action file has duplicate key {key:?} {}", place(.path))]
    DuplicateKey { key: String, path: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Checkout(#[from] crate::checkout::CheckoutError),
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
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
        check_unique_keys(bytes)?;
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
        if let Some(t) = &self.not_after {
            if crate::time::parse_ms(t).is_none() {
                return Err(ActionError::BadNotAfter(t.chars().take(80).collect()));
            }
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
        if let Some(c) = &self.checkout {
            c.validate()?;
        }
        if let Network::Gateway(e) = &self.network {
            e.validate(&self.secrets)?;
        }
        Ok(())
    }
}

/// Longest key an error message shows, and longest path (in characters).
const MAX_SHOWN_KEY: usize = 64;
const MAX_SHOWN_PATH: usize = 120;

fn place(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {path}")
    }
}

fn shorten(s: &str) -> String {
    shorten_to(s, MAX_SHOWN_KEY)
}

fn shorten_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

/// Walk the whole JSON document and refuse a key that occurs twice in one
/// object, at any depth. Keys are compared after unescaping, so `"a"` and
/// `"\u0061"` are the same key. A document that is not JSON is refused
/// with serde_json's error, as the typed parse would.
fn check_unique_keys(bytes: &[u8]) -> Result<(), ActionError> {
    let mut walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res = AnyValue { walk: &mut walk }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(err) = walk.duplicate {
        return Err(err);
    }
    res.map_err(ActionError::Json)
}

enum Step {
    Key(String),
    Index(usize),
}

#[derive(Default)]
struct Walk {
    /// Where the value being read is: keys (already shortened) and indexes.
    path: Vec<Step>,
    duplicate: Option<ActionError>,
}

impl Walk {
    fn path_text(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                Step::Key(k) if is_plain_key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Key(k) => out.push_str(&format!("[{k:?}]")),
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        shorten_to(&out, MAX_SHOWN_PATH)
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Any JSON value, read only to look at the keys of its objects.
struct AnyValue<'a> {
    walk: &'a mut Walk,
}

impl<'de> DeserializeSeed<'de> for AnyValue<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.walk.path.push(Step::Index(i));
            let more = seq.next_element_seed(AnyValue {
                walk: &mut *self.walk,
            })?;
            self.walk.path.pop();
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                self.walk.duplicate = Some(ActionError::DuplicateKey {
                    key: shorten(&key),
                    path: self.walk.path_text(),
                });
                return Err(de::Error::custom("duplicate key"));
            }
            self.walk.path.push(Step::Key(shorten(&key)));
            seen.insert(key);
            map.next_value_seed(AnyValue {
                walk: &mut *self.walk,
            })?;
            self.walk.path.pop();
        }
        Ok(())
    }
}

/// `env` as a map that refuses a name given twice (serde's map keeps the
/// last one).
fn unique_env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Env;
    impl<'de> Visitor<'de> for Env {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of env names to strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut env = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if env.contains_key(&k) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {:?} in env",
                        shorten(&k)
                    )));
                }
                env.insert(k, v);
            }
            Ok(env)
        }
    }
    d.deserialize_map(Env)
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
                "invalid value: string \"host\"",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"network":{"allow":["a.org"]}}"#,
                "is not host:port",
            ),
            (
                "x",
                r#"{"id":"x","secrets":[],"command":["a"],"network":{"allow":["a.org:443"],"inject":{"T":{"host":"a.org","header":"X-Key"}}}}"#,
                "which \"secrets\" does not list",
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

#[cfg(test)]
mod duplicate_key_tests {
    use super::*;

    fn err(json: &str) -> ActionError {
        Action::from_file_bytes("x", json.as_bytes()).unwrap_err()
    }

    fn dup(json: &str) -> (String, String, String) {
        match err(json) {
            e @ ActionError::DuplicateKey { .. } => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{msg:?}");
                let ActionError::DuplicateKey { key, path } = e else {
                    unreachable!()
                };
                (key, path, msg)
            }
            e => panic!("{json}: want DuplicateKey, got {e:?}"),
        }
    }

    #[test]
    fn duplicate_env_key_is_refused() {
        let (key, path, msg) =
            dup(r#"{"id":"x","secrets":[],"command":["a"],"env":{"TAG":"v1","TAG":"v2"}}"#);
        assert_eq!((key.as_str(), path.as_str()), ("TAG", "env"));
        assert_eq!(msg, r#"action file has duplicate key "TAG" in env"#);
    }

    #[test]
    fn duplicate_top_level_key_is_refused() {
        let (key, path, msg) = dup(r#"{"id":"x","secrets":[],"command":["a"],"command":["b"]}"#);
        assert_eq!((key.as_str(), path.as_str()), ("command", ""));
        assert_eq!(
            msg,
            r#"action file has duplicate key "command" at the top level"#
        );
        // Also a field whose first value is invalid: the duplicate is named.
        let (key, _, _) = dup(r#"{"id":"x","id":"x","secrets":[],"command":["a"]}"#);
        assert_eq!(key, "id");
    }

    #[test]
    fn duplicate_resources_key_is_refused() {
        let (key, path, _) = dup(
            r#"{"id":"x","secrets":[],"command":["a"],"resources":{"pids":1,"memory_mb":5,"pids":9}}"#,
        );
        assert_eq!((key.as_str(), path.as_str()), ("pids", "resources"));
    }

    #[test]
    fn duplicate_in_nested_and_unknown_objects_is_refused() {
        // Found even where the typed parse would fail for another reason,
        // and at any depth, through arrays.
        let (key, path, _) =
            dup(r#"{"id":"x","secrets":[],"command":["a"],"extra":[1,{"a":{"b":1,"b":2}}]}"#);
        assert_eq!((key.as_str(), path.as_str()), ("b", "extra[1].a"));
        let (_, path, msg) = dup(r#"{"we ird\n":{"k":1,"k":2}}"#);
        assert_eq!(path, r#"["we ird\n"]"#);
        assert!(!msg.contains('\n'), "{msg:?}");
    }

    #[test]
    fn escaped_equal_keys_are_duplicates() {
        let (key, path, _) =
            dup(r#"{"id":"x","secrets":[],"command":["a"],"env":{"A":"1","\u0041":"2"}}"#);
        assert_eq!((key.as_str(), path.as_str()), ("A", "env"));
        let (key, path, _) = dup(r#"{"id":"x","secrets":[],"\u0063ommand":["a"],"command":["b"]}"#);
        assert_eq!((key.as_str(), path.as_str()), ("command", ""));
        let (key, _, _) = dup(r#"{"a\/b":1,"a/b":2}"#);
        assert_eq!(key, "a/b");
    }

    #[test]
    fn long_duplicate_key_is_shown_short() {
        let k = "K".repeat(5000);
        let json =
            format!(r#"{{"id":"x","secrets":[],"command":["a"],"env":{{"{k}":"1","{k}":"2"}}}}"#);
        let msg = err(&json).to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        let deep = format!(r#"{{"{k}":{{"{k}":{{"a":1,"a":2}}}}}}"#);
        let msg = err(&deep).to_string();
        assert!(msg.len() < 300, "{} bytes", msg.len());
    }

    #[test]
    fn distinct_keys_in_different_objects_are_fine() {
        let a = Action::from_file_bytes(
            "x",
            br#"{"id":"x","secrets":[],"command":["a"],"env":{"id":"1","A":"2","a":"3"},
                "resources":{"pids":1}}"#,
        )
        .unwrap();
        assert_eq!(a.env.len(), 3);
    }

    #[test]
    fn not_json_is_still_a_json_error() {
        for bad in ["", "not json", r#"{"id":"x"} trailing"#, r#"{"id":"x","#] {
            assert!(matches!(err(bad), ActionError::Json(_)), "{bad:?}");
        }
        // Deep nesting stops at serde_json's depth limit, not the stack.
        let deep = "[".repeat(60_000);
        let msg = err(&deep).to_string();
        assert!(msg.contains("recursion limit"), "{msg}");
    }

    #[test]
    fn duplicate_env_key_is_refused_on_a_stream_too() {
        let e = serde_json::from_str::<Action>(
            r#"{"id":"x","secrets":[],"command":["a"],"env":{"A":"1","A":"2"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(r#"duplicate key "A" in env"#), "{e}");
        let ok = serde_json::from_str::<Action>(
            r#"{"id":"x","secrets":[],"command":["a"],"env":{"A":"1","B":"2"}}"#,
        )
        .unwrap();
        assert_eq!(ok.env.len(), 2);
    }
}

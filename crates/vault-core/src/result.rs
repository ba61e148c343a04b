//! The result, schema 1: `vault/actions/<id>.result.json`, and the result
//! line run-action prints and result-write reads (the same object).
//!
//! ```json
//! {
//!   "schema": 1, "id": "publish-1.4.0",
//!   "status": "running | succeeded | failed | timed_out | rejected | error | abandoned",
//!   "exit_code": 0, "oom_killed": false,
//!   "started_at": "RFC 3339", "finished_at": "RFC 3339", "duration_ms": 1234,
//!   "action_commit": "<sha>", "action_blob": "<sha>",
//!   "dispatcher": "<dispatcher id>",
//!   "container": {"id": "...", "image": "...", "image_id": "sha256:..."},
//!   "logs": "the output's last 64 KiB, every secret value masked",
//!   "error": "human-readable reason, for rejected / error / abandoned"
//! }
//! ```
//!
//! `running` is the claim, pushed before anything runs; every other status
//! is final. Readers ignore unknown fields; writers only ever add fields.

use crate::names::ActionId;
use serde::{Deserialize, Serialize};

pub const RESULT_SCHEMA: u32 = 1;

/// The most output a result's `logs` keeps: the last 64 KiB.
pub const MAX_LOGS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    Error,
    Abandoned,
}

impl Status {
    pub fn is_final(self) -> bool {
        self != Status::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Rejected => "rejected",
            Status::Error => "error",
            Status::Abandoned => "abandoned",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub schema: u32,
    pub id: ActionId,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatcher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who approved the action and in which commit (see
    /// [`crate::approval`]); readers that predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::Approval>,
    /// The code checkout the action ran against ([`crate::checkout`]):
    /// the commit mounted, the ref and commit pushed, a kept workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<crate::checkout::CheckoutOutcome>,
    /// For an action behind a gateway: the destinations it reached and
    /// those refused ([`crate::egress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressRecord>,
}

/// What a gateway saw: `host:port` to a count (tunnels, or requests for a
/// host whose credentials it added), and `error` when its summary could not
/// be read (then the counts are empty and say nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    #[serde(default)]
    pub contacted: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub refused: std::collections::BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionResult {
    /// A result with only the required fields set.
    pub fn new(id: ActionId, status: Status) -> Self {
        Self {
            schema: RESULT_SCHEMA,
            id,
            status,
            exit_code: None,
            oom_killed: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            action_commit: None,
            action_blob: None,
            dispatcher: None,
            container: None,
            logs: None,
            error: None,
            approval: None,
            checkout: None,
            egress: None,
        }
    }

    /// A result for the action of a scan line, carrying its provenance (the
    /// commit and blob it was read from) and who dispatched it.
    pub fn for_scan(scan: &crate::scan::ScanLine, status: Status, dispatcher: &str) -> Self {
        let mut r = Self::new(scan.id.clone(), status);
        r.action_commit = Some(scan.commit.clone());
        r.action_blob = scan.blob.clone();
        r.dispatcher = Some(dispatcher.to_string());
        r.approval = scan.approval.clone();
        r
    }

    /// A final result for an action that never ran (`rejected` or `error`),
    /// carrying the scan line's provenance and the reason.
    pub fn not_run(
        scan: &crate::scan::ScanLine,
        status: Status,
        dispatcher: &str,
        error: impl std::fmt::Display,
    ) -> Self {
        let now = crate::time::now_rfc3339();
        let mut r = Self::for_scan(scan, status, dispatcher);
        r.started_at = Some(now.clone());
        r.finished_at = Some(now);
        r.duration_ms = Some(0);
        r.error = Some(error.to_string().replace(['\n', '\r'], " "));
        r
    }

    /// The result recording a refused scan line, the same whichever tool
    /// refuses it: `rejected`, with the provenance the line still names (id,
    /// commit, blob) and the line error. `None` when the line names no valid
    /// id: there is nothing to record it against.
    pub fn refused(err: &crate::jsonl::LineError, dispatcher: &str) -> Option<Self> {
        let now = crate::time::now_rfc3339();
        let mut r = Self::new(err.id.clone()?, Status::Rejected);
        r.action_commit = err.commit.clone();
        r.action_blob = err.blob.clone();
        r.dispatcher = Some(dispatcher.to_string());
        r.started_at = Some(now.clone());
        r.finished_at = Some(now);
        r.duration_ms = Some(0);
        r.error = Some(refusal_message(err));
        Some(r)
    }

    /// Serialize as the result file's content: pretty JSON with a trailing
    /// newline, so diffs in the ops repo stay readable.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The one-line reason recorded and reported for a refused scan line.
pub fn refusal_message(err: &crate::jsonl::LineError) -> String {
    format!("invalid scan line: {}", err.message).replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_status_names() {
        let mut r = ActionResult::new(ActionId::parse("a").unwrap(), Status::TimedOut);
        r.exit_code = Some(137);
        r.container = Some(ContainerInfo {
            id: "c".into(),
            image: "i".into(),
            image_id: Some("sha256:x".into()),
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""status":"timed_out""#), "{s}");
        assert!(!s.contains("logs"), "absent fields are omitted: {s}");
        let back: ActionResult = serde_json::from_slice(&r.to_file_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn readers_ignore_unknown_fields_but_not_bad_status() {
        let r: ActionResult =
            serde_json::from_str(r#"{"schema":1,"id":"a","status":"failed","later":1}"#).unwrap();
        assert_eq!(r.status, Status::Failed);
        assert!(
            serde_json::from_str::<ActionResult>(r#"{"schema":1,"id":"a","status":"ok"}"#).is_err()
        );
        assert!(serde_json::from_str::<ActionResult>(
            r#"{"schema":1,"id":"../a","status":"failed"}"#
        )
        .is_err());
    }

    #[test]
    fn a_refused_line_keeps_its_provenance() {
        let line = r#"{"id":"a","path":"p","commit":"c0","blob":"b1","action":{"nope":1}}"#;
        let e = crate::jsonl::parse_line::<crate::ScanLine>(1, line).unwrap_err();
        let r = ActionResult::refused(&e, "me").unwrap();
        assert_eq!(r.status, Status::Rejected);
        assert_eq!(r.action_commit.as_deref(), Some("c0"));
        assert_eq!(r.action_blob.as_deref(), Some("b1"));
        assert_eq!(r.dispatcher.as_deref(), Some("me"));
        assert!(r.error.unwrap().starts_with("invalid scan line: "));
        let e = crate::jsonl::parse_line::<crate::ScanLine>(1, "garbage").unwrap_err();
        assert_eq!(ActionResult::refused(&e, "me"), None);
    }

    #[test]
    fn finality() {
        assert!(!Status::Running.is_final());
        for s in [
            Status::Succeeded,
            Status::Failed,
            Status::TimedOut,
            Status::Rejected,
            Status::Error,
            Status::Abandoned,
        ] {
            assert!(s.is_final());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}

//! The scan line: what vault-scan prints, one per pending action, and what
//! secret-mount and run-action read.
//!
//! ```json
//! {"schema":1,"id":"publish-1.4.0","path":"vault/actions/publish-1.4.0.json",
//!  "commit":"<sha>","blob":"<sha>","action":{...}}
//! {"schema":1,"id":"bad","path":"vault/actions/bad.json","commit":"<sha>","error":"..."}
//! {"schema":1,"id":"x","path":"...","commit":"<sha>","blob":"<sha>","action":{...},"resume":true}
//! ```
//!
//! Exactly one of `action` / `error`. `resume` is present (and true) only
//! for this dispatcher's own `running` claim that must be reconciled.
//! `spent` is present when the id was started or recorded before (this
//! cache's run ledger, or the branch's history shows a claim or result
//! that is gone now): it says when and where. secret-mount records such a
//! line `abandoned` without decrypting anything; run-action records it
//! `abandoned` without starting anything (a container of that id that
//! still exists is collected instead).
//! `blob` is the git blob id of the action file (the result's
//! `action_blob`).

use crate::action::Action;
use crate::names::ActionId;
use crate::result::Status;
use serde::{Deserialize, Serialize};

pub const SCAN_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanLine {
    #[serde(default = "schema_one")]
    pub schema: u32,
    pub id: ActionId,
    pub path: String,
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<String>,
    /// The approving commit (and, when verified, its signer): set when
    /// approvals are verified or expire (see [`crate::approval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::Approval>,
    /// The blob of a result file at `<id>.result.json` that vault-scan does
    /// not believe (not committed by a listed dispatcher): result-write may
    /// replace exactly this blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

fn schema_one() -> u32 {
    SCAN_SCHEMA
}

impl ScanLine {
    /// Why this line must not run, and the status to record: `abandoned`
    /// for a spent id, `rejected` for an invalid action.
    pub fn refusal(&self) -> Option<(Status, String)> {
        if let Some(why) = &self.spent {
            return Some((Status::Abandoned, why.clone()));
        }
        self.valid_action().err().map(|why| (Status::Rejected, why))
    }

    /// The action, re-validated, or the reason it cannot run (the scan's own
    /// error, a mismatched id, or a failed check). A spent line is refused
    /// too (see [`ScanLine::refusal`] for the status to record).
    pub fn valid_action(&self) -> Result<&Action, String> {
        if let Some(why) = &self.spent {
            return Err(why.clone());
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let action = self
            .action
            .as_ref()
            .ok_or_else(|| "scan line has neither \"action\" nor \"error\"".to_string())?;
        if action.id != self.id {
            return Err(format!(
                "scan line id {:?} does not match its action's id {:?}",
                self.id.as_str(),
                action.id.as_str()
            ));
        }
        action.validate().map_err(|e| e.to_string())?;
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_and_error_lines() {
        let ok = r#"{"id":"a","path":"vault/actions/a.json","commit":"c","blob":"b",
                    "action":{"id":"a","secrets":["T"],"command":["x"]},"future":true}"#;
        let line: ScanLine = serde_json::from_str(ok).unwrap();
        assert_eq!(line.schema, 1);
        assert!(!line.resume);
        assert_eq!(line.valid_action().unwrap().secrets[0].as_str(), "T");
        let out = serde_json::to_string(&line).unwrap();
        assert!(!out.contains("resume") && !out.contains("error"), "{out}");

        let err = r#"{"id":"b","path":"vault/actions/b.json","commit":"c","error":"bad json"}"#;
        let line: ScanLine = serde_json::from_str(err).unwrap();
        assert_eq!(line.valid_action().unwrap_err(), "bad json");

        let mismatch = r#"{"id":"a","path":"p","commit":"c","action":{"id":"b","secrets":[],"command":["x"]}}"#;
        let line: ScanLine = serde_json::from_str(mismatch).unwrap();
        assert!(line.valid_action().unwrap_err().contains("does not match"));

        let neither = r#"{"id":"a","path":"p","commit":"c"}"#;
        let line: ScanLine = serde_json::from_str(neither).unwrap();
        assert!(line.valid_action().is_err());
    }
}

//! Who approved an action, and when: the first-parent commit of the
//! watched branch that brought the action's current blob onto the branch.
//!
//! vault-scan finds it when approvals are checked (`VAULT_ALLOWED_SIGNERS`)
//! or expire (`VAULT_APPROVAL_TTL_S`), and puts it on the scan line; the
//! result carries it on. `principal` and `fingerprint` are set only when
//! the commit's SSH signature was verified against the allowed signers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving commit.
    pub commit: String,
    /// Its committer time, RFC 3339 UTC.
    pub time: String,
    /// The allowed-signers principal whose key signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// That key's fingerprint, as `ssh-keygen -l` prints it (`SHA256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Approval {
    /// Milliseconds since the epoch of [`Approval::time`], if it parses.
    pub fn time_ms(&self) -> Option<u64> {
        crate::time::parse_ms(&self.time)
    }
}

//! When a `running` claim is stuck: older than its action's timeout, plus
//! the grace run-action gives before SIGKILL, plus a margin for the
//! dispatcher to record the result. Past that, no healthy dispatcher is
//! still working on it: its host died, or its loop stopped. vault-status
//! lists such claims; `result-write --abandon` settles one.

/// The margin added after timeout and grace, by default: five minutes.
pub const DEFAULT_MARGIN_S: u64 = 300;

/// The numbers a claim is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckRule {
    /// The timeout of an action that sets none (`VAULT_TIMEOUT_S`).
    pub timeout_s: u64,
    /// `VAULT_GRACE_S`.
    pub grace_s: u64,
    pub margin_s: u64,
}

impl StuckRule {
    /// The time (ms since the epoch) from which a claim made at
    /// `started_ms` for an action whose own `timeout_s` is `own` is stuck.
    pub fn stuck_from_ms(&self, started_ms: u64, own: Option<u64>) -> u64 {
        let secs = own
            .unwrap_or(self.timeout_s)
            .saturating_add(self.grace_s)
            .saturating_add(self.margin_s);
        started_ms.saturating_add(secs.saturating_mul(1000))
    }

    /// Whether a claim made at `started_ms` (`None`: unknown, so as old as
    /// can be) is stuck at `now_ms`.
    pub fn is_stuck(&self, started_ms: Option<u64>, own: Option<u64>, now_ms: u64) -> bool {
        started_ms.is_none_or(|s| self.stuck_from_ms(s, own) <= now_ms)
    }
}

/// The `timeout_s` an action file asks for, read leniently: a file that does
/// not parse (it is `rejected` anyway) has none.
pub fn action_timeout_s(action_file: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(action_file)
        .ok()?
        .get("timeout_s")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_after_timeout_grace_and_margin() {
        let rule = StuckRule {
            timeout_s: 3600,
            grace_s: 10,
            margin_s: 300,
        };
        let start = 1_000_000;
        assert_eq!(rule.stuck_from_ms(start, None), start + 3_910_000);
        assert_eq!(rule.stuck_from_ms(start, Some(60)), start + 370_000);
        assert!(!rule.is_stuck(Some(start), Some(60), start + 369_999));
        assert!(rule.is_stuck(Some(start), Some(60), start + 370_000));
        assert!(rule.is_stuck(None, None, 0), "an unknown start is old");
        assert_eq!(action_timeout_s(br#"{"id":"a","timeout_s":42}"#), Some(42));
        assert_eq!(action_timeout_s(b"not json"), None);
    }
}

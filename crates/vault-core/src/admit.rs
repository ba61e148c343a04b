//! Admission: the checks made right before an approved action would get its
//! secrets or its container, the same in secret-mount and run-action.
//!
//! Each is off until configured, and once configured enforced (a setting
//! that cannot be applied stops the tool; it never runs without it):
//!
//! * `VAULT_ALLOWED_SIGNERS`: approvals are verified. vault-scan verifies
//!   the approving commit's signature and puts the [`Approval`] on the scan
//!   line; a line without a verified approval is refused here.
//! * `VAULT_APPROVAL_TTL_S`: a first start more than this many seconds
//!   after the approving commit is refused (approval expired).
//! * `VAULT_POLICY`: the per-secret policy ([`crate::secret_policy`]).
//!
//! An action's own `not_after` is always enforced. Expiry applies to a
//! first start only; approval and policy are checked every time secrets
//! are handed out or a container is created.

use crate::approval::Approval;
use crate::secret_policy::{Policy, PolicyError, Use};
use crate::{Action, ScanLine};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the policy {0} restricts approvers, but approvals are not verified: set VAULT_ALLOWED_SIGNERS (--allowed-signers)")]
    ApproversUnverified(PathBuf),
}

/// The admission settings, as each tool's flags give them.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Approvals are verified (`VAULT_ALLOWED_SIGNERS` is set).
    pub verified: bool,
    pub ttl_s: Option<u64>,
    pub policy: Option<Policy>,
}

impl Admission {
    /// Whether any check is configured.
    pub fn configured(&self) -> bool {
        self.verified || self.ttl_s.is_some() || self.policy.is_some()
    }

    /// Load the policy file (if any) and check the settings agree.
    pub fn new(
        allowed_signers: Option<PathBuf>,
        ttl_s: Option<u64>,
        policy: Option<PathBuf>,
    ) -> Result<Admission, AdmitError> {
        let policy = policy.map(|p| Policy::load(&p)).transpose()?;
        if let Some(p) = &policy {
            if p.names_approvers() && allowed_signers.is_none() {
                return Err(AdmitError::ApproversUnverified(p.path().to_path_buf()));
            }
        }
        Ok(Admission {
            verified: allowed_signers.is_some(),
            ttl_s,
            policy,
        })
    }

    /// Whether `action` of `scan` may start (or get its secrets).
    /// `first_start`: nothing of it was started before (only then can an
    /// approval expire); `image`: the image it
    /// would run in; `now_ms`: the time now. The error is the one-line
    /// reason to record it `rejected` with.
    pub fn check(
        &self,
        scan: &ScanLine,
        action: &Action,
        image: Option<&str>,
        first_start: bool,
        now_ms: u64,
    ) -> Result<(), String> {
        let approval = scan.approval.as_ref();
        if self.verified && approval.and_then(|a| a.principal.as_ref()).is_none() {
            return Err("no verified approval on the scan line (VAULT_ALLOWED_SIGNERS is set; vault-scan verifies approvals)".into());
        }
        // A run started before is not expired by the time that passed since.
        if first_start {
            self.check_expiry(action, approval, now_ms)?;
        }
        if let Some(policy) = &self.policy {
            policy.check(Use {
                action,
                image,
                approval,
            })?;
        }
        Ok(())
    }

    fn check_expiry(
        &self,
        action: &Action,
        approval: Option<&Approval>,
        now_ms: u64,
    ) -> Result<(), String> {
        if let Some(t) = &action.not_after {
            // Validated when the action was read: it parses.
            if crate::time::parse_ms(t).is_none_or(|end| now_ms > end) {
                return Err(format!("approval expired: the action's not_after is {t}"));
            }
        }
        if let Some(ttl) = self.ttl_s {
            let Some(a) = approval else {
                return Err("no approval time on the scan line (VAULT_APPROVAL_TTL_S is set; vault-scan finds the approving commit)".into());
            };
            let Some(at) = a.time_ms() else {
                return Err(format!("the approval time {:?} is not a time", a.time));
            };
            if now_ms.saturating_sub(at) > ttl.saturating_mul(1000) {
                return Err(format!(
                    "approval expired: approved by commit {} at {}, more than VAULT_APPROVAL_TTL_S={ttl} s ago",
                    a.commit, a.time
                ));
            }
        }
        Ok(())
    }
}

pub use crate::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(action: &str, approval: Option<Approval>) -> (ScanLine, Action) {
        let a: Action = serde_json::from_str(action).expect("action");
        let line = ScanLine {
            schema: 1,
            id: a.id.clone(),
            path: a.id.action_path(),
            commit: "c".into(),
            blob: None,
            action: Some(a.clone()),
            error: None,
            resume: false,
            spent: None,
            approval,
            replaces: None,
        };
        (line, a)
    }

    fn at(time: &str, principal: Option<&str>) -> Approval {
        Approval {
            commit: "abc".into(),
            time: time.into(),
            principal: principal.map(Into::into),
            fingerprint: None,
        }
    }

    const T0: u64 = 1_795_000_000_000; // 2026-11-18T…Z

    #[test]
    fn off_by_default() {
        let (l, a) = scan(r#"{"id":"a","secrets":["x"],"formula":"f"}"#, None);
        assert_eq!(Admission::default().check(&l, &a, None, true, T0), Ok(()));
    }

    #[test]
    fn verified_approval_required() {
        let adm = Admission {
            verified: true,
            ..Default::default()
        };
        let (l, a) = scan(r#"{"id":"a","secrets":[],"formula":"f"}"#, None);
        let e = adm.check(&l, &a, None, true, T0).unwrap_err();
        assert!(e.contains("no verified approval"), "{e}");
        let (l, a) = scan(
            r#"{"id":"a","secrets":[],"formula":"f"}"#,
            Some(at("2026-11-18T00:00:00Z", None)),
        );
        assert!(adm.check(&l, &a, None, true, T0).is_err());
        let (l, a) = scan(
            r#"{"id":"a","secrets":[],"formula":"f"}"#,
            Some(at("2026-11-18T00:00:00Z", Some("alice"))),
        );
        assert_eq!(adm.check(&l, &a, None, true, T0), Ok(()));
    }

    #[test]
    fn expiry_both_ways() {
        let adm = Admission {
            ttl_s: Some(3600),
            ..Default::default()
        };
        let t = |s: &str| crate::time::parse_ms(s).expect("time");
        let approval = Some(at("2026-11-23T10:00:00Z", None));
        let (l, a) = scan(r#"{"id":"a","secrets":[],"formula":"f"}"#, approval);
        assert_eq!(
            adm.check(&l, &a, None, true, t("2026-11-23T10:59:59Z")),
            Ok(())
        );
        let e = adm
            .check(&l, &a, None, true, t("2026-11-23T11:00:01Z"))
            .unwrap_err();
        assert!(
            e.starts_with("approval expired: approved by commit abc"),
            "{e}"
        );
        // A resumed run is not a first start: it does not expire.
        assert_eq!(
            adm.check(&l, &a, None, false, t("2026-11-24T00:00:00Z")),
            Ok(())
        );
        let (l, a) = scan(r#"{"id":"a","secrets":[],"formula":"f"}"#, None);
        let e = adm.check(&l, &a, None, true, T0).unwrap_err();
        assert!(e.contains("no approval time"), "{e}");

        let off = Admission::default();
        let na = r#"{"id":"a","secrets":[],"formula":"f","not_after":"2026-11-23T12:00:00Z"}"#;
        let (l, a) = scan(na, None);
        assert_eq!(
            off.check(&l, &a, None, true, t("2026-11-23T12:00:00Z")),
            Ok(())
        );
        let e = off
            .check(&l, &a, None, true, t("2026-11-23T12:00:01Z"))
            .unwrap_err();
        assert!(e.contains("not_after is 2026-11-23T12:00:00Z"), "{e}");
    }

    #[test]
    fn approvers_need_verification() {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        std::io::Write::write_all(
            &mut f,
            b"[secrets.x]\nimages = [\"*\"]\nformulas = [\"*\"]\napprovers = [\"a\"]\n",
        )
        .expect("write");
        let e = Admission::new(None, None, Some(f.path().into())).unwrap_err();
        assert!(e.to_string().contains("set VAULT_ALLOWED_SIGNERS"), "{e}");
        assert!(Admission::new(Some("/s".into()), None, Some(f.path().into())).is_ok());
    }
}

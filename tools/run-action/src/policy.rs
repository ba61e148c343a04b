//! Policy: which images an action may use, and the limits it runs under.

use crate::config::RunConfig;
use vault_core::{Action, Network};

/// The limits one action runs under, after capping by policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    pub timeout_s: u64,
    pub bridge: bool,
}

/// Why an action is refused by policy (status `rejected`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("image {0:?} is not allowed by VAULT_ALLOW_IMAGES")]
    Image(String),
    #[error("network \"bridge\" is not allowed by policy (VAULT_ALLOW_BRIDGE)")]
    Bridge,
    #[error("network \"allow\" entry {0:?} is not allowed by policy (VAULT_ALLOW_EGRESS)")]
    Egress(String),
}

/// True when `value` (an image ref, an allowlist entry) matches one of
/// the comma-separated patterns of a setting (`VAULT_ALLOW_IMAGES`,
/// `VAULT_ALLOW_EGRESS`), where `*` matches any run of characters
/// (including `/` and `:`). Values are compared as written: `busybox` does
/// not match `busybox:latest`.
pub fn listed(allow: &str, value: &str) -> bool {
    allow
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| vault_core::glob::matches(p, value))
}

/// The action's timeout (else the default), capped by `--max-timeout-s`.
pub fn timeout_s(action: &Action, cfg: &RunConfig) -> u64 {
    let t = action.timeout_s.unwrap_or(cfg.timeout_s);
    cfg.max_timeout_s.map_or(t, |max| t.min(max))
}

/// The limits for `action`: its own values, each capped by policy; or the
/// policy refusal.
pub fn limits(action: &Action, cfg: &RunConfig) -> Result<Limits, Refusal> {
    let bridge = action.network == Network::Bridge;
    if bridge && !cfg.allow_bridge {
        return Err(Refusal::Bridge);
    }
    if let Some(e) = action.network.egress() {
        if let Some(entry) = e.allow.iter().find(|a| !listed(&cfg.allow_egress, a)) {
            return Err(Refusal::Egress(entry.clone()));
        }
    }
    let r = action.resources.unwrap_or_default();
    let memory_mb = r
        .memory_mb
        .unwrap_or(cfg.max_memory_mb)
        .min(cfg.max_memory_mb);
    let cpus = r.cpus.unwrap_or(cfg.max_cpus).min(cfg.max_cpus);
    let pids = r.pids.unwrap_or(cfg.max_pids).min(cfg.max_pids);
    let timeout_s = timeout_s(action, cfg);
    Ok(Limits {
        memory_bytes: i64::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
        // Docker's own floor is 0.01 CPU.
        nano_cpus: ((cpus * 1e9) as i64).max(10_000_000),
        pids: i64::try_from(pids).unwrap_or(i64::MAX),
        timeout_s,
        bridge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(listed("vault-runner:test", "vault-runner:test"));
        assert!(listed(" a , vault-runner:*", "vault-runner:test"));
        assert!(listed("reg.example/org/*", "reg.example/org/x/y:1"));
        assert!(listed("*", "anything"));
        assert!(listed("a*b*c", "aXXbYYc"));
        assert!(!listed("a*b*c", "aXXbYY"));
        assert!(!listed("", "busybox"));
        assert!(!listed(",,", "busybox"));
        assert!(!listed("busybox", "busybox:latest"));
        assert!(!listed("vault-runner:test", "vault-runner:test2"));
        assert!(!listed("x*", ""));
        let hostile = format!("{}b", "*a".repeat(50));
        assert!(!listed(&hostile, &"a".repeat(5000)));
    }

    fn action(json: &str) -> Action {
        let a: Action = serde_json::from_str(json).unwrap();
        a.validate().unwrap();
        a
    }

    #[test]
    fn limits_are_capped_by_policy() {
        let a = action(
            r#"{"id":"x","secrets":[],"command":["a"],"timeout_s":99999,
                "resources":{"memory_mb":100000,"cpus":64,"pids":100000}}"#,
        );
        let cfg = RunConfig {
            max_timeout_s: Some(60),
            ..RunConfig::default()
        };
        let l = limits(&a, &cfg).unwrap();
        assert_eq!(l.memory_bytes, 1024 * 1024 * 1024);
        assert_eq!(l.nano_cpus, 2_000_000_000);
        assert_eq!(l.pids, 256);
        assert_eq!(l.timeout_s, 60);
        assert!(!l.bridge);

        let a = action(
            r#"{"id":"x","secrets":[],"command":["a"],
                "resources":{"memory_mb":64,"cpus":0.5,"pids":10}}"#,
        );
        let cfg = RunConfig {
            timeout_s: 5,
            ..RunConfig::default()
        };
        let l = limits(&a, &cfg).unwrap();
        assert_eq!(l.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(l.nano_cpus, 500_000_000);
        assert_eq!(l.pids, 10);
        assert_eq!(l.timeout_s, 5);
    }

    #[test]
    fn every_allow_entry_needs_policy() {
        let a = action(
            r#"{"id":"x","secrets":[],"command":["a"],
                "network":{"allow":["api.example.org:443","x.pkg.example.org:443"]}}"#,
        );
        let cfg = RunConfig::default();
        assert_eq!(
            limits(&a, &cfg),
            Err(Refusal::Egress("api.example.org:443".into()))
        );
        let cfg = RunConfig {
            allow_egress: "api.example.org:443, *.pkg.example.org:443".into(),
            ..RunConfig::default()
        };
        assert!(!limits(&a, &cfg).unwrap().bridge);
        let cfg = RunConfig {
            allow_egress: "api.example.org:443,*.pkg.example.org:80".into(),
            ..RunConfig::default()
        };
        assert_eq!(
            limits(&a, &cfg),
            Err(Refusal::Egress("x.pkg.example.org:443".into()))
        );
    }

    #[test]
    fn bridge_needs_policy() {
        let a = action(r#"{"id":"x","secrets":[],"command":["a"],"network":"bridge"}"#);
        let cfg = RunConfig::default();
        assert_eq!(limits(&a, &cfg), Err(Refusal::Bridge));
        let cfg = RunConfig {
            allow_bridge: true,
            ..cfg
        };
        assert!(limits(&a, &cfg).unwrap().bridge);
    }
}

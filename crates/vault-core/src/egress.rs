//! The egress allowlist of an action, and the credentials a gateway adds
//! to its requests (`"network": {"allow": [...], "inject": {...}}`).
//!
//! ```json
//! "secrets": ["API_TOKEN"],
//! "network": {
//!   "allow": ["api.example.org:443", "*.pkg.example.org:443"],
//!   "inject": {"API_TOKEN": {"host": "api.example.org", "header": "Authorization", "format": "Bearer {}"}}
//! }
//! ```
//!
//! * `allow`: the only destinations the runner can reach, each `host:port`.
//!   A host is a lowercase DNS name, `*.` and a name (any host with at
//!   least one more label in front), or a literal IPv4 address.
//! * `inject`: a secret (also named in `secrets`) that is never mounted
//!   into the runner: the gateway adds `header: format` (`{}` replaced by
//!   the secret's value) to every HTTPS request for `host` on a port an
//!   exact (not wildcard) `allow` entry lists for it; there must be one.
//!
//! The runner then sits on an internal network whose only other member
//! is the gateway (run-action's `gateway` module).

use crate::names::SecretName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most entries in `allow`, and most rules in `inject`.
pub const MAX_ALLOW: usize = 64;
pub const MAX_INJECT: usize = 16;
/// Longest `format`, in bytes.
const MAX_FORMAT: usize = 256;

/// `"network": {"allow": [...], "inject": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inject: BTreeMap<SecretName, Inject>,
}

/// How one secret is added to the requests for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    pub host: String,
    pub header: String,
    /// `{}` is replaced by the secret's value; `{}` alone when left out.
    #[serde(default = "bare", skip_serializing_if = "is_bare")]
    pub format: String,
}

fn bare() -> String {
    "{}".to_string()
}

fn is_bare(f: &String) -> bool {
    f == "{}"
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("network \"allow\" is empty: list the host:port destinations, or use \"none\"")]
    EmptyAllow,
    #[error("network \"allow\" has {0} entries; at most {MAX_ALLOW}")]
    TooManyAllow(usize),
    #[error("network \"inject\" has {0} rules; at most {MAX_INJECT}")]
    TooManyInject(usize),
    #[error("network \"allow\" entry {0:?} is not host:port (a lowercase DNS name, *.name or an IPv4 address, and a port 1-65535)")]
    BadAllow(String),
    #[error("network \"allow\" lists {0:?} twice")]
    DuplicateAllow(String),
    #[error("network \"inject\" names secret {0:?}, which \"secrets\" does not list")]
    InjectNotInSecrets(String),
    #[error("network \"inject.{secret}.host\" {host:?} is not a lowercase DNS name")]
    BadInjectHost { secret: String, host: String },
    #[error("network \"inject.{secret}.host\" {host:?} has no exact \"allow\" entry (host:port; a wildcard never carries credentials)")]
    InjectNotAllowed { secret: String, host: String },
    #[error("network \"inject.{secret}.header\" {header:?} is not a header the gateway may set")]
    BadHeader { secret: String, header: String },
    #[error("network \"inject\" sets header {header:?} for {host:?} twice")]
    DuplicateHeader { host: String, header: String },
    #[error("network \"inject.{0}.format\" must contain \"{{}}\" exactly once, no control character, at most {MAX_FORMAT} bytes")]
    BadFormat(String),
}

impl Egress {
    /// Checks the schema cannot express; `secrets` are the action's.
    pub fn validate(&self, secrets: &[SecretName]) -> Result<(), EgressError> {
        if self.allow.is_empty() {
            return Err(EgressError::EmptyAllow);
        }
        if self.allow.len() > MAX_ALLOW {
            return Err(EgressError::TooManyAllow(self.allow.len()));
        }
        if self.inject.len() > MAX_INJECT {
            return Err(EgressError::TooManyInject(self.inject.len()));
        }
        for (i, entry) in self.allow.iter().enumerate() {
            if parse_allow(entry).is_none() {
                return Err(EgressError::BadAllow(cut(entry)));
            }
            if self.allow[..i].contains(entry) {
                return Err(EgressError::DuplicateAllow(cut(entry)));
            }
        }
        let mut seen: Vec<(&str, String)> = Vec::new();
        for (secret, rule) in &self.inject {
            let name = secret.as_str().to_string();
            if !secrets.contains(secret) {
                return Err(EgressError::InjectNotInSecrets(name));
            }
            if !is_dns_name(&rule.host) {
                return Err(EgressError::BadInjectHost {
                    secret: name,
                    host: cut(&rule.host),
                });
            }
            if !self.lists_exactly(&rule.host) {
                return Err(EgressError::InjectNotAllowed {
                    secret: name,
                    host: cut(&rule.host),
                });
            }
            if !settable_header(&rule.header) {
                return Err(EgressError::BadHeader {
                    secret: name,
                    header: cut(&rule.header),
                });
            }
            let header = rule.header.to_ascii_lowercase();
            if seen.iter().any(|(h, n)| *h == rule.host && *n == header) {
                return Err(EgressError::DuplicateHeader {
                    host: rule.host.clone(),
                    header: rule.header.clone(),
                });
            }
            seen.push((&rule.host, header));
            let f = &rule.format;
            if f.len() > MAX_FORMAT
                || f.matches("{}").count() != 1
                || f.chars().any(char::is_control)
            {
                return Err(EgressError::BadFormat(name));
            }
        }
        Ok(())
    }

    /// Whether an `allow` entry names `host` itself (on some port): only
    /// there does a gateway add credentials.
    pub fn lists_exactly(&self, host: &str) -> bool {
        self.allow
            .iter()
            .filter_map(|e| parse_allow(e))
            .any(|(pattern, _)| pattern == host)
    }

    /// Whether `host:port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allow
            .iter()
            .filter_map(|e| parse_allow(e))
            .any(|(pattern, p)| p == port && host_matches(pattern, host))
    }
}

/// `host:port` split, when both parts are well formed.
pub fn parse_allow(entry: &str) -> Option<(&str, u16)> {
    let (host, port) = entry.rsplit_once(':')?;
    if port.is_empty() || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = if host.starts_with("*.") {
        is_dns_name(name) && name.contains('.')
    } else {
        is_dns_name(name) || name.parse::<std::net::Ipv4Addr>().is_ok()
    };
    ok.then_some((host, port))
}

/// `pattern` (a name, `*.name` or an address) covers `host`: equal, or
/// `host` ends in `.name` with at least one label before it.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty()),
        None => pattern == host,
    }
}

/// A lowercase DNS name: dot-separated labels of `a-z0-9-`, 1-63 bytes
/// each, not starting or ending with `-`, at most 253 bytes in all, the
/// last label not all digits (so an IPv4 address is never a name). The
/// gateway checks names with this too.
pub fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// A header name (an HTTP token) the gateway may set: not one that frames
/// or routes the request.
fn settable_header(h: &str) -> bool {
    const RESERVED: [&str; 10] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "accept-encoding",
    ];
    let lower = h.to_ascii_lowercase();
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        && !RESERVED.contains(&lower.as_str())
        && !lower.starts_with("proxy-")
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(json: &str) -> Egress {
        serde_json::from_str(json).unwrap()
    }

    fn names(n: &[&str]) -> Vec<SecretName> {
        n.iter().map(|s| SecretName::parse(s).unwrap()).collect()
    }

    #[test]
    fn allow_entries() {
        assert_eq!(
            parse_allow("api.example.org:443"),
            Some(("api.example.org", 443))
        );
        assert_eq!(
            parse_allow("*.pkg.example.org:443"),
            Some(("*.pkg.example.org", 443))
        );
        assert_eq!(parse_allow("10.0.0.1:8080"), Some(("10.0.0.1", 8080)));
        for bad in [
            "api.example.org",
            "api.example.org:",
            "api.example.org:0",
            "api.example.org:65536",
            "api.example.org:044",
            "API.example.org:443",
            "*.org:443",
            "*:443",
            "a.*.org:443",
            "-a.org:443",
            "a..org:443",
            "[::1]:443",
            "999.1.1.1:80",
            "a.123:80",
            "a b:1",
        ] {
            assert_eq!(parse_allow(bad), None, "{bad}");
        }
    }

    #[test]
    fn wildcards_need_a_label_in_front() {
        assert!(host_matches("*.example.org", "a.example.org"));
        assert!(host_matches("*.example.org", "a.b.example.org"));
        assert!(!host_matches("*.example.org", "example.org"));
        assert!(!host_matches("*.example.org", "aexample.org"));
        assert!(!host_matches("*.example.org", ".example.org"));
        assert!(host_matches("api.example.org", "api.example.org"));
        assert!(!host_matches("api.example.org", "x.api.example.org"));
    }

    #[test]
    fn validation() {
        let ok = egress(
            r#"{"allow":["api.example.org:443","*.pkg.example.org:443"],
                "inject":{"TOKEN":{"host":"api.example.org","header":"Authorization","format":"Bearer {}"}}}"#,
        );
        ok.validate(&names(&["TOKEN"])).unwrap();
        assert!(ok.allows("api.example.org", 443));
        assert!(ok.allows("x.pkg.example.org", 443));
        assert!(!ok.allows("api.example.org", 80));
        assert_eq!(
            ok.validate(&names(&["OTHER"])),
            Err(EgressError::InjectNotInSecrets("TOKEN".into()))
        );
        let e = |json: &str| egress(json).validate(&names(&["TOKEN", "T2"])).unwrap_err();
        assert_eq!(e(r#"{"allow":[]}"#), EgressError::EmptyAllow);
        assert!(matches!(
            e(r#"{"allow":["a.org:1","a.org:1"]}"#),
            EgressError::DuplicateAllow(_)
        ));
        assert!(matches!(
            e(r#"{"allow":["a.org:443"],"inject":{"TOKEN":{"host":"b.org","header":"X-Key"}}}"#),
            EgressError::InjectNotAllowed { .. }
        ));
        // A wildcard entry never carries credentials.
        assert!(matches!(
            e(
                r#"{"allow":["*.a.org:443"],"inject":{"TOKEN":{"host":"api.a.org","header":"X-Key"}}}"#
            ),
            EgressError::InjectNotAllowed { .. }
        ));
        assert!(matches!(
            e(
                r#"{"allow":["*.a.org:443"],"inject":{"TOKEN":{"host":"*.a.org","header":"X-Key"}}}"#
            ),
            EgressError::BadInjectHost { .. }
        ));
        for header in ["Host", "proxy-authorization", "Content-Length", "X Key", ""] {
            let json = format!(
                r#"{{"allow":["a.org:443"],"inject":{{"TOKEN":{{"host":"a.org","header":"{header}"}}}}}}"#
            );
            assert!(
                matches!(e(&json), EgressError::BadHeader { .. }),
                "{header}"
            );
        }
        for format in ["Bearer", "{} {}", "a\\r\\n{}"] {
            let json = format!(
                r#"{{"allow":["a.org:443"],"inject":{{"TOKEN":{{"host":"a.org","header":"X-Key","format":"{format}"}}}}}}"#
            );
            assert!(matches!(e(&json), EgressError::BadFormat(_)), "{format}");
        }
        assert!(matches!(
            e(
                r#"{"allow":["a.org:443"],"inject":{"TOKEN":{"host":"a.org","header":"X-Key"},"T2":{"host":"a.org","header":"x-key"}}}"#
            ),
            EgressError::DuplicateHeader { .. }
        ));
        let bare = egress(
            r#"{"allow":["a.org:443"],"inject":{"TOKEN":{"host":"a.org","header":"X-Key"}}}"#,
        );
        assert_eq!(bare.inject.values().next().unwrap().format, "{}");
        assert!(serde_json::from_str::<Egress>(r#"{"allow":["a.org:1"],"deny":[]}"#).is_err());
    }
}

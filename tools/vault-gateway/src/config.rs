//! The stdin configuration: parsing and validation.
//!
//! Secret values (`inject[].value`, `mask[]`) never appear in an error
//! message: serde's messages quote offending string values, so every
//! double-quoted span of a serde message is redacted before it is shown.

use crate::allow::{AllowEntry, AllowList};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use zeroize::Zeroizing;

/// The only config version this build speaks.
pub const CONFIG_VERSION: u64 = 1;

/// Largest accepted config, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    #[error("reading the config from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("invalid config: {0}")]
    Json(String),
    #[error("unsupported config version {0} (this vault-gateway speaks {CONFIG_VERSION})")]
    Version(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A secret string, zeroized on drop, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(Zeroizing::new(s)))
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInject {
    host: String,
    header: String,
    value: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[allow(dead_code)] // checked before the full parse
    version: u64,
    listen: String,
    port: u16,
    allow: Vec<String>,
    #[serde(default)]
    inject: Vec<RawInject>,
    #[serde(default)]
    mask: Vec<Secret>,
    #[serde(default)]
    roots_pem: Option<String>,
    #[serde(default)]
    lifetime_s: Option<u64>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

/// One credential-injection rule, validated.
#[derive(Clone)]
pub struct InjectRule {
    /// Lowercased DNS name.
    pub host: String,
    pub header: HeaderName,
    pub value: Secret,
}

impl fmt::Debug for InjectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectRule")
            .field("host", &self.host)
            .field("header", &self.header)
            .field("value", &self.value)
            .finish()
    }
}

/// A validated configuration.
///
/// Besides what the JSON can say, a library user (the tests) can pin a
/// `host:port` to a socket address with [`Config::override_address`]; such
/// a destination is connected to directly, skipping DNS and the check that
/// refuses loopback/link-local/listen-subnet addresses. The JSON cannot set
/// this, so the binary never has overrides.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: IpNet,
    pub port: u16,
    pub allow: AllowList,
    pub inject: Vec<InjectRule>,
    pub mask: Vec<Secret>,
    pub roots: Vec<CertificateDer<'static>>,
    /// How long the binary serves after its ready line (`lifetime_s`);
    /// `None`: until a signal.
    pub lifetime: Option<Duration>,
    pub(crate) overrides: HashMap<String, SocketAddr>,
}

impl Config {
    /// Parse and validate the stdin JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(redact(&e)))?;
        match v.version {
            None => return Err(ConfigError::Json("missing field `version`".into())),
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(CONFIG_VERSION) => {}
            Some(serde_json::Value::Number(n)) => return Err(ConfigError::Version(n.to_string())),
            Some(_) => return Err(ConfigError::Json("`version` must be a number".into())),
        }
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(redact(&e)))?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let listen: IpNet = raw
            .listen
            .parse()
            .map_err(|_| invalid(format!("listen {:?} is not a CIDR subnet", raw.listen)))?;
        let mut entries = Vec::with_capacity(raw.allow.len());
        for e in &raw.allow {
            entries
                .push(AllowEntry::parse(e).map_err(|why| invalid(format!("allow {e:?}: {why}")))?);
        }
        let allow = AllowList::new(entries);
        let mut inject: Vec<InjectRule> = Vec::new();
        for (i, r) in raw.inject.into_iter().enumerate() {
            let host = r.host.to_ascii_lowercase();
            if !crate::allow::is_dns_name(&host) {
                return Err(invalid(format!(
                    "inject[{i}].host {:?} is not a DNS name",
                    r.host
                )));
            }
            if ServerName::try_from(host.clone()).is_err() {
                return Err(invalid(format!(
                    "inject[{i}].host {:?} is not a valid TLS server name",
                    r.host
                )));
            }
            let header = HeaderName::from_bytes(r.header.as_bytes()).map_err(|_| {
                invalid(format!(
                    "inject[{i}].header {:?} is not a valid header name",
                    r.header
                ))
            })?;
            if is_forbidden_inject_header(&header) {
                return Err(invalid(format!(
                    "inject[{i}].header {:?} cannot be injected",
                    r.header
                )));
            }
            // Never echo the value: it is the secret.
            if HeaderValue::from_str(r.value.expose()).is_err() || r.value.expose().is_empty() {
                return Err(invalid(format!(
                    "inject[{i}].value is not a valid non-empty header value"
                )));
            }
            if !allow.has_exact_host(&host) {
                return Err(invalid(format!(
                    "inject[{i}].host {host} has no exact allow entry ({host}:<port>); a wildcard entry never carries credentials"
                )));
            }
            if inject.iter().any(|o| o.host == host && o.header == header) {
                return Err(invalid(format!(
                    "inject[{i}]: a second rule for header {header} on host {host}"
                )));
            }
            inject.push(InjectRule {
                host,
                header,
                value: r.value,
            });
        }
        let roots = match &raw.roots_pem {
            Some(pem) => {
                let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(format!("roots_pem: {e}")))?;
                // A system bundle may hold a certificate webpki cannot use;
                // skip those (as rustls-native-certs users do), but not all.
                let mut store = rustls::RootCertStore::empty();
                let (usable, _) = store.add_parsable_certificates(roots.iter().cloned());
                if usable == 0 && !roots.is_empty() {
                    return Err(invalid(
                        "roots_pem holds no usable trust anchor".to_string(),
                    ));
                }
                roots
            }
            None => Vec::new(),
        };
        if !inject.is_empty() && roots.is_empty() {
            return Err(invalid(
                "roots_pem must hold at least one certificate when inject is not empty".into(),
            ));
        }
        if raw.lifetime_s == Some(0) {
            return Err(invalid("lifetime_s must be at least 1".to_string()));
        }
        Ok(Config {
            listen,
            port: raw.port,
            allow,
            inject,
            mask: raw.mask,
            roots,
            lifetime: raw.lifetime_s.map(Duration::from_secs),
            overrides: HashMap::new(),
        })
    }

    /// Connect to `addr` for `host_port` (e.g. `"api.test:443"`), skipping
    /// DNS and the private-address refusal. Library use only (tests).
    pub fn override_address(&mut self, host_port: &str, addr: SocketAddr) {
        self.overrides.insert(host_port.to_ascii_lowercase(), addr);
    }

    /// The inject rules for a CONNECT to `host` (lowercased) on `port`:
    /// none unless an exact allow entry lists `host:port`, so a port that
    /// only a wildcard entry allows gets a plain tunnel.
    pub(crate) fn rules_for_connect(&self, host: &str, port: u16) -> Vec<InjectRule> {
        if self.allow.has_exact(host, port) {
            self.rules_for(host)
        } else {
            Vec::new()
        }
    }

    /// The inject rules for `host` (lowercased), if it is an inject host.
    pub(crate) fn rules_for(&self, host: &str) -> Vec<InjectRule> {
        self.inject
            .iter()
            .filter(|r| r.host == host)
            .cloned()
            .collect()
    }
}

/// Headers that would change framing or routing if injected.
fn is_forbidden_inject_header(h: &HeaderName) -> bool {
    let n = h.as_str();
    n.starts_with("proxy-")
        || matches!(
            n,
            "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
                | "accept-encoding"
        )
}

/// A serde_json error message with every double-quoted span replaced, so a
/// mistyped secret (e.g. `"mask": "s3cr3t"`) is never echoed.
fn redact(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' {
            if in_quote {
                out.push_str("\"<redacted>\"");
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(c);
        }
    }
    if in_quote {
        out.push_str("\"<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "version": 1, "listen": "127.0.0.0/8", "port": 0,
            "allow": ["a.test:443"],
        })
    }

    fn err(v: serde_json::Value) -> String {
        match Config::from_json(v.to_string().as_bytes()) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn version_checked_first() {
        let mut v = base();
        v["version"] = 2.into();
        v["bogus"] = 1.into();
        assert_eq!(
            err(v),
            "unsupported config version 2 (this vault-gateway speaks 1)"
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        let mut v = base();
        v["bogus"] = 1.into();
        assert!(err(v).contains("unknown field `bogus`"));
    }

    #[test]
    fn mistyped_secret_not_echoed() {
        let mut v = base();
        v["mask"] = "hunter2secret".into();
        let e = err(v);
        assert!(!e.contains("hunter2secret"), "{e}");
        let mut v = base();
        v["inject"] =
            serde_json::json!([{"host": "a.test", "header": "X-K", "value": "bad\nvalue-secret"}]);
        v["roots_pem"] = "".into();
        let e = err(v);
        assert!(!e.contains("value-secret"), "{e}");
    }

    #[test]
    fn inject_needs_roots() {
        let mut v = base();
        v["inject"] =
            serde_json::json!([{"host": "a.test", "header": "Authorization", "value": "Bearer x"}]);
        assert!(err(v).contains("roots_pem"));
    }

    #[test]
    fn inject_hosts_need_an_exact_allow_entry() {
        let roots = test_root_pem();
        for allow in [
            serde_json::json!([]),
            serde_json::json!(["*.test:443"]),
            serde_json::json!(["b.test:443", "127.0.0.1:443"]),
        ] {
            let mut v = base();
            v["allow"] = allow.clone();
            v["inject"] = serde_json::json!([{"host": "A.test", "header": "Authorization", "value": "Bearer x"}]);
            v["roots_pem"] = roots.clone().into();
            let e = err(v);
            assert!(
                e.contains("inject[0].host a.test has no exact allow entry"),
                "{allow}: {e}"
            );
            assert!(!e.contains("Bearer x"), "{e}");
        }
        let mut v = base();
        v["allow"] = serde_json::json!(["*.test:443", "a.test:8443"]);
        v["inject"] =
            serde_json::json!([{"host": "a.test", "header": "Authorization", "value": "Bearer x"}]);
        v["roots_pem"] = roots.into();
        let c = Config::from_json(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.rules_for_connect("a.test", 8443).len(), 1);
        assert!(c.rules_for_connect("a.test", 443).is_empty());
        assert!(c.rules_for_connect("b.test", 8443).is_empty());
    }

    /// A self-signed CA certificate, PEM.
    fn test_root_pem() -> String {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .pem()
    }

    #[test]
    fn bad_allow_entries() {
        for e in [
            "a.test", "a.test:0", "a.test:x", "*.:443", "*:443", "a..b:443", ":443",
        ] {
            let mut v = base();
            v["allow"] = serde_json::json!([e]);
            assert!(err(v).contains("allow"), "{e}");
        }
    }

    #[test]
    fn accepts_the_system_bundle() {
        let Ok(pem) = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt") else {
            return;
        };
        let mut v = base();
        v["inject"] =
            serde_json::json!([{"host": "a.test", "header": "Authorization", "value": "Bearer x"}]);
        v["roots_pem"] = pem.into();
        let c = Config::from_json(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.roots.len() > 10);
    }

    #[test]
    fn lifetime() {
        let parse = |v: serde_json::Value| Config::from_json(v.to_string().as_bytes());
        let c = parse(base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lifetime, None);
        let mut v = base();
        v["lifetime_s"] = 1.into();
        let c = parse(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lifetime, Some(Duration::from_secs(1)));
        let mut v = base();
        v["lifetime_s"] = u64::MAX.into();
        let c = parse(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lifetime, Some(Duration::from_secs(u64::MAX)));
        let mut v = base();
        v["lifetime_s"] = 0.into();
        assert_eq!(err(v), "invalid config: lifetime_s must be at least 1");
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("60"),
        ] {
            let mut v = base();
            v["lifetime_s"] = bad.clone();
            assert!(err(v).starts_with("invalid config: "), "{bad}");
        }
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            Config::from_json(&big),
            Err(ConfigError::TooLarge)
        ));
    }
}

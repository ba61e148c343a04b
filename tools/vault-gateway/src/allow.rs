//! The `host:port` allowlist.
//!
//! * `host:port` matches that host (case-insensitive) on that port;
//! * `*.suffix:port` matches any host ending in `.suffix` with at least one
//!   label before it (never `suffix` itself), on that port;
//! * IP literals (`10.0.0.1:443`, `[2001:db8::1]:443`) match only when listed
//!   literally; a wildcard never matches an IP literal.

use std::net::{IpAddr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// The suffix, without the leading `*.`.
    Wildcard(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: HostPattern,
    port: u16,
}

pub use vault_core::egress::is_dns_name;

/// Split `host:port` / `[v6]:port`; the port must be 1..=65535.
pub fn split_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("a port is required (host:port)")?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address must be written in brackets ([addr]:port)");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| "the port is not a number 1-65535")?;
    if port == 0 {
        return Err("the port is not a number 1-65535");
    }
    if host.is_empty() {
        return Err("the host is empty");
    }
    Ok((host, port))
}

/// Parse an IP literal as written in a `host:port` authority.
pub(crate) fn parse_ip(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

impl AllowEntry {
    pub fn parse(s: &str) -> Result<AllowEntry, &'static str> {
        let lower = s.to_ascii_lowercase();
        let (host, port) = split_host_port(&lower)?;
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            if !is_dns_name(suffix) {
                return Err("the part after `*.` is not a DNS name");
            }
            HostPattern::Wildcard(suffix.to_string())
        } else if let Some(ip) = parse_ip(host) {
            HostPattern::Ip(ip)
        } else if is_dns_name(host) {
            HostPattern::Exact(host.to_string())
        } else {
            return Err("the host is neither a DNS name, `*.name` nor an IP literal");
        };
        Ok(AllowEntry { host, port })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match (&self.host, ip) {
            (HostPattern::Ip(a), Some(b)) => *a == b,
            (HostPattern::Ip(_), None) | (_, Some(_)) => false,
            (HostPattern::Exact(h), None) => h == host,
            (HostPattern::Wildcard(suffix), None) => host
                .strip_suffix(suffix.as_str())
                .and_then(|p| p.strip_suffix('.'))
                .is_some_and(|p| !p.is_empty()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    pub fn new(entries: Vec<AllowEntry>) -> AllowList {
        AllowList { entries }
    }

    /// Whether `host` (as requested; compared case-insensitively) on `port`
    /// is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let ip = parse_ip(&host);
        if ip.is_none() && !is_dns_name(&host) {
            return false;
        }
        self.entries.iter().any(|e| e.matches(&host, ip, port))
    }

    /// Whether an exact (not wildcard, not IP) entry lists `host`
    /// (lowercased) on `port`.
    pub fn has_exact(&self, host: &str, port: u16) -> bool {
        self.entries
            .iter()
            .any(|e| e.port == port && matches!(&e.host, HostPattern::Exact(h) if h == host))
    }

    /// Whether an exact entry lists `host` (lowercased) on any port.
    pub fn has_exact_host(&self, host: &str) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(&e.host, HostPattern::Exact(h) if h == host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(e: &[&str]) -> AllowList {
        AllowList::new(
            e.iter()
                .map(|s| AllowEntry::parse(s).unwrap_or_else(|w| panic!("{s}: {w}")))
                .collect(),
        )
    }

    #[test]
    fn exact() {
        let l = list(&["api.example.org:443"]);
        assert!(l.allows("api.example.org", 443));
        assert!(l.allows("API.Example.ORG", 443));
        assert!(!l.allows("api.example.org", 80));
        assert!(!l.allows("x.api.example.org", 443));
        assert!(!l.allows("example.org", 443));
        assert!(!l.allows("api.example.org.", 443));
    }

    #[test]
    fn wildcard() {
        let l = list(&["*.pkg.example.org:443"]);
        assert!(l.allows("a.pkg.example.org", 443));
        assert!(l.allows("a.b.pkg.example.org", 443));
        assert!(l.allows("A.PKG.example.org", 443));
        assert!(!l.allows("pkg.example.org", 443));
        assert!(!l.allows("apkg.example.org", 443));
        assert!(!l.allows(".pkg.example.org", 443));
        assert!(!l.allows("a.pkg.example.org", 80));
        assert!(!l.allows("a.pkg.example.org.evil", 443));
    }

    #[test]
    fn ip_literals_only_when_listed() {
        let l = list(&["*.test:443", "10.1.2.3:443", "[2001:db8::1]:443"]);
        assert!(!l.allows("127.0.0.1", 443));
        assert!(l.allows("10.1.2.3", 443));
        assert!(!l.allows("10.1.2.4", 443));
        assert!(l.allows("[2001:db8::1]", 443));
        assert!(l.allows("[2001:DB8:0::1]", 443));
        assert!(!l.allows("[2001:db8::2]", 443));
    }

    #[test]
    fn exact_entries() {
        let l = list(&["API.test:443", "*.test:8443", "10.1.2.3:443"]);
        assert!(l.has_exact("api.test", 443));
        assert!(!l.has_exact("api.test", 8443));
        assert!(l.allows("api.test", 8443));
        assert!(!l.has_exact("10.1.2.3", 443));
        assert!(l.has_exact_host("api.test"));
        assert!(!l.has_exact_host("x.test"));
    }

    #[test]
    fn entries_need_a_port() {
        assert!(AllowEntry::parse("a.test").is_err());
        assert!(AllowEntry::parse("a.test:0").is_err());
        assert!(AllowEntry::parse("a.test:65536").is_err());
        assert!(AllowEntry::parse("*.test:443").is_ok());
        assert!(AllowEntry::parse("*:443").is_err());
        assert!(AllowEntry::parse("a.*.test:443").is_err());
        assert!(AllowEntry::parse("::1:443").is_err());
        assert!(AllowEntry::parse("[::1]:443").is_ok());
    }
}

//! Per-destination counters for the shutdown summary.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Distinct keys kept per map; the rest are counted under [`OTHER`].
pub const MAX_KEYS: usize = 1000;
/// The key that collects counts beyond [`MAX_KEYS`] distinct keys.
pub const OTHER: &str = "(other)";
/// The key for a requested authority whose host is neither a DNS name nor
/// an IP literal (or whose key would be longer than [`MAX_KEY_BYTES`]).
pub const INVALID: &str = "(invalid)";
/// The longest key kept (a DNS name is at most 253 bytes, plus `:65535`).
pub const MAX_KEY_BYTES: usize = 300;

/// The counter key for a requested `host` (lowercased, IPv6 in brackets)
/// and `port`: `host:port`, or [`INVALID`]. The host comes from the client,
/// so it is never stored (or logged) unless it is a name or an address.
pub fn key(host: &str, port: u16) -> String {
    if crate::allow::is_dns_name(host) || crate::allow::parse_ip(host).is_some() {
        let k = format!("{host}:{port}");
        if k.len() <= MAX_KEY_BYTES {
            return k;
        }
    }
    INVALID.to_string()
}

/// What the gateway did, keyed by the requested `host:port` (lowercased).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub contacted: BTreeMap<String, u64>,
    pub refused: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Stats(Mutex<Summary>);

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    let key = if key.len() > MAX_KEY_BYTES {
        INVALID
    } else {
        key
    };
    let distinct = map.len() - usize::from(map.contains_key(OTHER));
    let key = if map.contains_key(key) || distinct < MAX_KEYS {
        key
    } else {
        OTHER
    };
    let n = map.entry(key.to_string()).or_insert(0);
    *n = n.saturating_add(1);
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Summary> {
        // Counters stay meaningful even if a holder panicked.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contacted(&self, key: &str) {
        bump(&mut self.lock().contacted, key);
    }

    pub fn refused(&self, key: &str) {
        bump(&mut self.lock().refused, key);
    }

    pub fn summary(&self) -> Summary {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_names_or_addresses() {
        assert_eq!(key("api.test", 443), "api.test:443");
        assert_eq!(key("10.1.2.3", 80), "10.1.2.3:80");
        assert_eq!(key("[2001:db8::1]", 443), "[2001:db8::1]:443");
        let long = format!("{}.test", vec!["a".repeat(60); 4].join("."));
        assert!(long.len() <= 253);
        assert_eq!(key(&long, 65535), format!("{long}:65535"));
        for bad in [
            "",
            "a!b.test",
            "under_score.test",
            "a..test",
            "1.2.3.4.5",
            "[not-v6]",
            "[::1",
            "%41.test",
            &"a".repeat(5000),
            &format!("{long}.abcdef"),
        ] {
            assert_eq!(key(bad, 443), INVALID, "{bad}");
        }
    }

    #[test]
    fn never_stores_a_long_key() {
        let s = Stats::default();
        s.refused(&"x".repeat(5000));
        s.contacted(&"y".repeat(MAX_KEY_BYTES + 1));
        s.contacted(&"z".repeat(MAX_KEY_BYTES));
        let sum = s.summary();
        assert_eq!(sum.refused.keys().collect::<Vec<_>>(), [INVALID]);
        assert_eq!(sum.contacted[INVALID], 1);
        assert_eq!(sum.contacted[&"z".repeat(MAX_KEY_BYTES)], 1);
    }

    #[test]
    fn caps_distinct_keys() {
        let s = Stats::default();
        for i in 0..1005 {
            s.refused(&format!("h{i}.test:443"));
        }
        s.refused("h0.test:443");
        s.refused(OTHER);
        let sum = s.summary();
        assert_eq!(sum.refused.len(), MAX_KEYS + 1);
        assert_eq!(sum.refused[OTHER], 6);
        assert_eq!(sum.refused["h0.test:443"], 2);
    }
}

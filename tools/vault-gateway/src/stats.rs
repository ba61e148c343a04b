//! Per-destination counters for the shutdown summary.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Distinct keys kept per map; the rest are counted under [`OTHER`].
pub const MAX_KEYS: usize = 1000;
/// The key that collects counts beyond [`MAX_KEYS`] distinct keys.
pub const OTHER: &str = "(other)";

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

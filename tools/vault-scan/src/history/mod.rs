//! What vault-scan remembers of the watched branch between runs, so that
//! no action runs twice whatever is done to the repo:
//!
//! * `<key>.tip`: the last tip it dispatched from. A new tip that does not
//!   descend from it (a force-push, a reset) is not dispatched from until
//!   an operator accepts it (`--accept-rewrite <sha>`).
//! * `<key>.seen` and `<key>.seen-log`: every action id that ever had a
//!   result file (a `running` claim or a final result) on the branch's
//!   first-parent history, with the commit it was seen in (see [`State`]).
//!   Only ever added to. A fresh cache (no `.tip`) learns it once from the
//!   whole first-parent history; later runs add what the commits since the
//!   last tip brought.
//!
//! An id in `.seen` whose result is gone from the tip is never started
//! again; nor is one whose final result turned back into `running`.

use git2::Oid;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vault_core::ActionId;

/// How far an id got, as seen in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    /// A `running` claim (or an unreadable result file).
    Claim,
    /// A final result.
    Final,
}

impl Seen {
    fn tag(self) -> char {
        match self {
            Seen::Claim => 'c',
            Seen::Final => 'f',
        }
    }
}

/// Ids newly seen with a result (by [`learn`]), not yet stored: for each,
/// how far it got and the commit it was seen in.
#[derive(Debug, Default)]
pub struct SeenIds {
    new: HashMap<String, (Seen, Oid)>,
}

impl SeenIds {
    pub fn len(&self) -> usize {
        self.new.len()
    }

    pub fn is_empty(&self) -> bool {
        self.new.is_empty()
    }

    /// Note `id` as seen at `how` in `commit`; a final result outranks a
    /// claim.
    pub fn add(&mut self, id: &str, how: Seen, commit: Oid) {
        if self.new.get(id).is_some_and(|(k, _)| *k >= how) {
            return;
        }
        self.new.insert(id.to_string(), (how, commit));
    }
}

/// Why the remembered state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path} is corrupt ({why}): it is vault-scan's memory of which actions ever had a result; restore it, or move it aside to relearn it from the branch's history (ids known only from rewritten-away history are then forgotten)")]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the branch history: {0}")]
    Git(#[from] git2::Error),
}

/// The seen-ids store: `<key>.seen`, sorted fixed-size records looked up
/// by binary search (a lookup reads a few dozen bytes, however long the
/// history), and `<key>.seen-log`, the text lines appended since, merged
/// into `.seen` once it holds [`LOG_MERGE_LINES`] lines.
///
/// A `.seen` record is 40 bytes: the first 16 bytes of the SHA-1 of the id
/// (as a git blob), the state (1 claim, 2 final), 3 zero bytes, and the
/// commit id it was seen in. A log line is `c|f <id> <commit>`.
const SEEN_MAGIC: &[u8; 16] = b"vault-seen-v2\0\0\0";
const LOG_MAGIC: &str = "vault-scan seen-log 1";
const RECORD: usize = 40;
pub const LOG_MERGE_LINES: usize = 4096;

fn id_key(id: &str) -> [u8; 16] {
    let h = Oid::hash_object(git2::ObjectType::Blob, id.as_bytes()).unwrap_or(Oid::ZERO_SHA1);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

fn record(key: &[u8; 16], how: Seen, commit: Oid) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..16].copy_from_slice(key);
    r[16] = match how {
        Seen::Claim => 1,
        Seen::Final => 2,
    };
    r[20..].copy_from_slice(commit.as_bytes());
    r
}

fn parse_record(r: &[u8]) -> Option<(Seen, Oid)> {
    let how = match r[16] {
        1 => Seen::Claim,
        2 => Seen::Final,
        _ => return None,
    };
    Some((how, Oid::from_bytes(&r[20..RECORD]).ok()?))
}

/// The state files of one cache clone.
pub struct State {
    tip_path: PathBuf,
    seen_path: PathBuf,
    log_path: PathBuf,
}

impl State {
    /// `<key>.tip`, `<key>.seen` and `<key>.seen-log` beside the cache
    /// clone: `path_of(name)` gives each.
    pub fn new(path_of: impl Fn(&str) -> PathBuf) -> State {
        State {
            tip_path: path_of("tip"),
            seen_path: path_of("seen"),
            log_path: path_of("seen-log"),
        }
    }

    /// The last tip dispatched from; `None` for a fresh cache.
    pub fn last_tip(&self) -> Result<Option<Oid>, StateError> {
        let Some(text) = read_if_present(&self.tip_path)? else {
            return Ok(None);
        };
        Oid::from_str(text.trim())
            .ok()
            .filter(|_| text.trim().len() == 40)
            .map(Some)
            .ok_or_else(|| StateError::Corrupt {
                path: self.tip_path.clone(),
                why: "not a commit id".into(),
            })
    }

    pub fn save_tip(&self, tip: Oid) -> Result<(), StateError> {
        write_durably(&self.tip_path, format!("{tip}\n").as_bytes()).map_err(|source| {
            StateError::Write {
                path: self.tip_path.clone(),
                source,
            }
        })
    }

    fn corrupt(&self, path: &Path, why: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }

    /// The log's lines, checked.
    fn read_log(&self) -> Result<Vec<(String, Seen, Oid)>, StateError> {
        let Some(text) = read_if_present(&self.log_path)? else {
            return Ok(Vec::new());
        };
        let mut lines = text.split('\n');
        if lines.next() != Some(LOG_MAGIC) {
            return Err(self.corrupt(&self.log_path, "unknown format"));
        }
        let mut out = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut w = line.split(' ');
            let parsed = match (w.next(), w.next(), w.next(), w.next()) {
                (Some(tag), Some(id), Some(commit), None) => {
                    let how = match tag {
                        "c" => Some(Seen::Claim),
                        "f" => Some(Seen::Final),
                        _ => None,
                    };
                    how.zip(Oid::from_str(commit).ok())
                        .filter(|_| ActionId::parse(id).is_ok())
                        .map(|(h, c)| (id.to_string(), h, c))
                }
                _ => None,
            };
            let Some(entry) = parsed else {
                return Err(self.corrupt(
                    &self.log_path,
                    format!("line {} is not `c|f <id> <commit>`", n + 2),
                ));
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// Open `.seen` and check its shape; `None` when there is none yet.
    fn open_base(&self) -> Result<Option<(File, u64)>, StateError> {
        let f = match File::open(&self.seen_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.seen_path.clone(),
                    source,
                })
            }
        };
        let rerr = |source| StateError::Read {
            path: self.seen_path.clone(),
            source,
        };
        let len = f.metadata().map_err(rerr)?.len();
        let mut magic = [0u8; 16];
        if len < 16 || (len - 16) % RECORD as u64 != 0 {
            return Err(self.corrupt(&self.seen_path, "its size is not a whole number of records"));
        }
        f.read_exact_at(&mut magic, 0).map_err(rerr)?;
        if &magic != SEEN_MAGIC {
            return Err(self.corrupt(&self.seen_path, "unknown format"));
        }
        Ok(Some((f, (len - 16) / RECORD as u64)))
    }

    /// How far each of `ids` got, as far as history showed (the log, the
    /// sorted store, and `fresh`, what was learned but not stored yet).
    pub fn lookup(
        &self,
        ids: &[&ActionId],
        fresh: &SeenIds,
    ) -> Result<HashMap<String, (Seen, Oid)>, StateError> {
        let mut out: HashMap<String, (Seen, Oid)> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut note = |id: &str, how: Seen, commit: Oid| {
            if out.get(id).is_none_or(|(k, _)| *k < how) {
                out.insert(id.to_string(), (how, commit));
            }
        };
        for id in ids {
            if let Some((how, c)) = fresh.new.get(id.as_str()) {
                note(id.as_str(), *how, *c);
            }
        }
        let wanted: std::collections::HashSet<&str> = ids.iter().map(|i| i.as_str()).collect();
        for (id, how, c) in self.read_log()? {
            if wanted.contains(id.as_str()) {
                note(&id, how, c);
            }
        }
        if let Some((f, n)) = self.open_base()? {
            let rerr = |source| StateError::Read {
                path: self.seen_path.clone(),
                source,
            };
            let mut buf = [0u8; RECORD];
            for id in ids {
                let key = id_key(id.as_str());
                // The first record whose key is >= `key`.
                let (mut lo, mut hi) = (0u64, n);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    f.read_exact_at(&mut buf, 16 + mid * RECORD as u64)
                        .map_err(rerr)?;
                    if buf[..16] < key[..] {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                let mut at = lo;
                while at < n {
                    f.read_exact_at(&mut buf, 16 + at * RECORD as u64)
                        .map_err(rerr)?;
                    if buf[..16] != key[..] {
                        break;
                    }
                    let (how, c) = parse_record(&buf).ok_or_else(|| {
                        self.corrupt(&self.seen_path, "a record has an unknown state")
                    })?;
                    note(id.as_str(), how, c);
                    at += 1;
                }
            }
        }
        Ok(out)
    }

    /// Store what was learned, durably: appended to the log, which is
    /// merged into the sorted store once it is long.
    pub fn store_seen(&self, seen: &mut SeenIds) -> Result<(), StateError> {
        if seen.new.is_empty() {
            return Ok(());
        }
        let werr = |source| StateError::Write {
            path: self.log_path.clone(),
            source,
        };
        let mut entries: Vec<(&String, &(Seen, Oid))> = seen.new.iter().collect();
        entries.sort();
        let mut out = String::new();
        let fresh = !self.log_path.exists();
        if fresh {
            out.push_str(LOG_MAGIC);
            out.push('\n');
        }
        for (id, (how, commit)) in &entries {
            out.push_str(&format!("{} {id} {commit}\n", how.tag()));
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(werr)?;
        f.write_all(out.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        if fresh {
            sync_parent(&self.log_path).map_err(werr)?;
        }
        seen.new.clear();
        let log = self.read_log()?;
        if log.len() >= LOG_MERGE_LINES {
            self.merge(log)?;
        }
        Ok(())
    }

    /// Fold the log into the sorted store, then drop the log. A crash in
    /// between leaves entries in both: harmless.
    fn merge(&self, log: Vec<(String, Seen, Oid)>) -> Result<(), StateError> {
        let mut records: Vec<[u8; RECORD]> = Vec::new();
        if let Some((f, n)) = self.open_base()? {
            let mut all = vec![0u8; n as usize * RECORD];
            f.read_exact_at(&mut all, 16)
                .map_err(|source| StateError::Read {
                    path: self.seen_path.clone(),
                    source,
                })?;
            records.extend(all.chunks_exact(RECORD).map(|c| {
                let mut r = [0u8; RECORD];
                r.copy_from_slice(c);
                r
            }));
        }
        records.extend(log.iter().map(|(id, how, c)| record(&id_key(id), *how, *c)));
        // By key, the final one first: keep one record per key, the
        // furthest state.
        records.sort_by(|a, b| a[..16].cmp(&b[..16]).then(b[16].cmp(&a[16])));
        records.dedup_by(|later, first| later[..16] == first[..16]);
        let mut bytes = Vec::with_capacity(16 + records.len() * RECORD);
        bytes.extend_from_slice(SEEN_MAGIC);
        for r in &records {
            bytes.extend_from_slice(r);
        }
        write_durably(&self.seen_path, &bytes).map_err(|source| StateError::Write {
            path: self.seen_path.clone(),
            source,
        })?;
        std::fs::remove_file(&self.log_path).map_err(|source| StateError::Write {
            path: self.log_path.clone(),
            source,
        })?;
        sync_parent(&self.log_path).map_err(|source| StateError::Write {
            path: self.log_path.clone(),
            source,
        })
    }
}

/// A state file's text; `None` when there is none yet.
fn read_if_present(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

mod walk;
pub use walk::{learn, vanished_finals, Learned, Vanished};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_store_round_trips_merges_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::new(|n| dir.path().join(n));
        assert_eq!(st.last_tip().unwrap(), None);
        let c1 = Oid::from_str(&"1".repeat(40)).unwrap();
        let c2 = Oid::from_str(&"2".repeat(40)).unwrap();
        let ids: Vec<ActionId> = ["a", "b", "zz-1"]
            .iter()
            .map(|i| ActionId::parse(i).unwrap())
            .collect();
        let refs: Vec<&ActionId> = ids.iter().collect();
        assert!(st.lookup(&refs, &SeenIds::default()).unwrap().is_empty());
        let mut seen = SeenIds::default();
        seen.add("a", Seen::Claim, c1);
        seen.add("b", Seen::Final, c1);
        // Not stored yet: still answered.
        assert_eq!(st.lookup(&refs, &seen).unwrap()["b"], (Seen::Final, c1));
        st.store_seen(&mut seen).unwrap();
        assert!(seen.is_empty());
        seen.add("a", Seen::Final, c2);
        seen.add("b", Seen::Claim, c2); // a claim does not lower a final
        st.store_seen(&mut seen).unwrap();
        let got = st.lookup(&refs, &seen).unwrap();
        assert_eq!(got["a"], (Seen::Final, c2));
        assert_eq!(got["b"], (Seen::Final, c1));
        assert!(!got.contains_key("zz-1"));

        // Enough to merge into the sorted store; every id is still found.
        for i in 0..LOG_MERGE_LINES {
            seen.add(&format!("bulk-{i}"), Seen::Final, c1);
        }
        st.store_seen(&mut seen).unwrap();
        assert!(!dir.path().join("seen-log").exists(), "merged");
        let bulk: Vec<ActionId> = [0, 1, 77, LOG_MERGE_LINES - 1]
            .iter()
            .map(|i| ActionId::parse(&format!("bulk-{i}")).unwrap())
            .collect();
        let mut all: Vec<&ActionId> = bulk.iter().collect();
        all.extend(refs.iter().copied());
        let got = st.lookup(&all, &SeenIds::default()).unwrap();
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got["a"], (Seen::Final, c2));
        assert_eq!(got["b"], (Seen::Final, c1));
        assert!(!got.contains_key("zz-1"));

        st.save_tip(c2).unwrap();
        assert_eq!(st.last_tip().unwrap(), Some(c2));
        std::fs::write(dir.path().join("tip"), "zzz\n").unwrap();
        assert!(matches!(st.last_tip(), Err(StateError::Corrupt { .. })));

        std::fs::write(
            dir.path().join("seen-log"),
            format!("{LOG_MAGIC}\nx a 123\n"),
        )
        .unwrap();
        let e = st
            .lookup(&refs, &SeenIds::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("corrupt") && e.contains("move it aside"), "{e}");
        std::fs::remove_file(dir.path().join("seen-log")).unwrap();
        let mut base = std::fs::read(dir.path().join("seen")).unwrap();
        base.pop();
        std::fs::write(dir.path().join("seen"), base).unwrap();
        assert!(st.lookup(&refs, &SeenIds::default()).is_err());
    }
}

//! The run ledger: this cache's durable proof of every container start.
//!
//! One file per action id that was ever started from this cache:
//! `<cache>/ledger/<id>.json`. Its first line is the start record, written
//! (to a temporary file, fsynced, then linked into place, which fails when
//! the name exists, and the folder fsynced) BEFORE the container is
//! created; later lines only add what became known afterwards (the
//! container's id). A record is never rewritten or removed: not by
//! `run-action rm`, not by `secret-mount sweep`, not by `result-write
//! --flush`. An id with a record is never started again, whatever the ops
//! repo says later.
//!
//! ```json
//! {"id":"a","blob":"<sha>","commit":"<sha>","container":"vault-a","dispatcher":"host-1","started_at":"RFC 3339"}
//! {"container_id":"<docker id>"}
//! ```
//!
//! A record that cannot be read or parsed is an error, never "not
//! started": the caller stops and says so.

use crate::names::ActionId;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The folder of the ledger under a cache.
pub fn ledger_dir(cache: &Path) -> PathBuf {
    cache.join("ledger")
}

/// One start, as recorded before the container was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    pub id: ActionId,
    /// The action file's blob id (the scan line's `blob`).
    #[serde(default)]
    pub blob: Option<String>,
    /// The watched branch's commit the action was read from.
    pub commit: String,
    /// The container's name (`vault-<id>`).
    pub container: String,
    /// Filled in from the later lines, once the container was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Filled in from a later line when the container was removed without
    /// being started (e.g. the engine did not apply an option): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_started: Option<String>,
    pub dispatcher: String,
    pub started_at: String,
}

impl StartRecord {
    /// "started at <time> by dispatcher <d> in container <c> (<id>) from
    /// commit <sha>", or "created at ... but never started (<why>)".
    pub fn describe(&self) -> String {
        let cid = self
            .container_id
            .as_deref()
            .map(|c| format!(" ({})", &c[..c.len().min(12)]))
            .unwrap_or_default();
        let place = format!(
            "by dispatcher {:?} in container {}{} from commit {}",
            self.dispatcher, self.container, cid, self.commit
        );
        match &self.not_started {
            Some(why) => format!(
                "created at {} {place} but never started ({why})",
                self.started_at
            ),
            None => format!("started at {} {place}", self.started_at),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the run ledger {path} cannot be read: {source}; fix its permissions or restore it (the dispatcher runs nothing until then)")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the run ledger record {path} is corrupt: {why}; restore it or move it aside after checking that action by hand (the dispatcher runs nothing until then)")]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot write the run ledger record {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the run ledger already has a record for {id}: it was started before")]
    Exists { id: ActionId },
}

/// The ledger of one cache.
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    pub fn new(cache: &Path) -> Ledger {
        Ledger {
            dir: ledger_dir(cache),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &ActionId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Check that the ledger can be read at all: a folder that exists but
    /// cannot be listed, or a file where the folder should be, is an error.
    /// A missing folder is an empty ledger (a fresh cache).
    pub fn check(&self) -> Result<(), LedgerError> {
        match std::fs::read_dir(&self.dir) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LedgerError::Unreadable {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// The start record of `id`, if it was ever started from this cache.
    pub fn lookup(&self, id: &ActionId) -> Result<Option<StartRecord>, LedgerError> {
        let path = self.path(id);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Only "no such file in a readable folder" means "never
                // started"; a folder we cannot search is an error.
                self.check()?;
                return Ok(None);
            }
            Err(source) => return Err(LedgerError::Unreadable { path, source }),
        };
        parse_record(&text, id)
            .map(Some)
            .map_err(|why| LedgerError::Corrupt {
                path: path.clone(),
                why,
            })
    }

    /// Record a start, durably, before the container is created. Fails
    /// with [`LedgerError::Exists`] when `id` has a record already.
    pub fn record_start(&self, rec: &StartRecord) -> Result<(), LedgerError> {
        let path = self.path(&rec.id);
        let werr = |source| LedgerError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(werr)?;
        let mut line = serde_json::to_vec(rec).map_err(|e| werr(io::Error::other(e)))?;
        line.push(b'\n');
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", rec.id, std::process::id()));
        let linked = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&line)?;
            f.sync_all()?;
            // link(2) fails when the name exists: two starts of one id
            // cannot both be recorded.
            std::fs::hard_link(&tmp, &path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(LedgerError::Exists { id: rec.id.clone() })
            }
            Err(e) => return Err(werr(e)),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)
    }

    /// Add the container id to `id`'s record (after the create call).
    pub fn add_container_id(&self, id: &ActionId, container_id: &str) -> Result<(), LedgerError> {
        self.add_detail(id, serde_json::json!({ "container_id": container_id }))
    }

    /// Note in `id`'s record that its container was removed unstarted, and
    /// why. The id stays spent: an id is started at most once, and a
    /// second try of the same approval is a new id.
    pub fn add_not_started(&self, id: &ActionId, why: &str) -> Result<(), LedgerError> {
        self.add_detail(id, serde_json::json!({ "not_started": why }))
    }

    fn add_detail(&self, id: &ActionId, detail: serde_json::Value) -> Result<(), LedgerError> {
        let path = self.path(id);
        let mut line = serde_json::to_vec(&detail).unwrap_or_default();
        line.push(b'\n');
        let res = (|| {
            let mut f = OpenOptions::new().append(true).open(&path)?;
            f.write_all(&line)?;
            f.sync_all()
        })();
        res.map_err(|source| LedgerError::Write { path, source })
    }
}

fn parse_record(bytes: &[u8], id: &ActionId) -> Result<StartRecord, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())?;
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let mut rec: StartRecord =
        serde_json::from_str(first).map_err(|e| format!("its start record is not valid: {e}"))?;
    if &rec.id != id {
        return Err(format!("it records id {:?}", rec.id.as_str()));
    }
    // Later lines only add detail; a torn last line (a crash while adding
    // the container id) takes nothing away from the start record.
    for extra in lines.filter(|l| !l.trim().is_empty()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(extra) {
            if let Some(c) = v.get("container_id").and_then(|c| c.as_str()) {
                rec.container_id = Some(c.to_string());
            }
            if let Some(w) = v.get("not_started").and_then(|c| c.as_str()) {
                rec.not_started = Some(w.to_string());
            }
        }
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> StartRecord {
        StartRecord {
            id: ActionId::parse(id).unwrap(),
            blob: Some("b".repeat(40)),
            commit: "c".repeat(40),
            container: format!("vault-{id}"),
            container_id: None,
            not_started: None,
            dispatcher: "host-1".into(),
            started_at: "2026-11-23T10:00:00Z".into(),
        }
    }

    #[test]
    fn record_lookup_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        let id = ActionId::parse("pay-1").unwrap();
        assert_eq!(l.lookup(&id).unwrap(), None, "a fresh cache");
        l.record_start(&rec("pay-1")).unwrap();
        assert!(matches!(
            l.record_start(&rec("pay-1")),
            Err(LedgerError::Exists { .. })
        ));
        l.add_container_id(&id, "0123456789abcdef0123").unwrap();
        let back = l.lookup(&id).unwrap().unwrap();
        assert_eq!(back.container_id.as_deref(), Some("0123456789abcdef0123"));
        assert!(back.describe().contains("2026-11-23T10:00:00Z"));
        assert!(back.describe().contains("host-1"));
        l.add_not_started(&id, "the engine did not apply the memory limit")
            .unwrap();
        let back = l.lookup(&id).unwrap().unwrap();
        assert!(
            back.describe()
                .contains("but never started (the engine did not apply"),
            "{}",
            back.describe()
        );
        assert_eq!(back.container_id.as_deref(), Some("0123456789abcdef0123"));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(l.dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_or_unreadable_is_an_error_not_never_started() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path());
        let id = ActionId::parse("a").unwrap();
        std::fs::create_dir_all(l.dir()).unwrap();
        std::fs::write(l.path(&id), b"{\"id\":\"a\",\"comm").unwrap();
        let e = l.lookup(&id).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("a.json"), "{e}");
        std::fs::write(l.path(&id), b"").unwrap();
        assert!(l.lookup(&id).is_err(), "an empty record is corrupt");
        // A record for another id under this name is corrupt too.
        let other = serde_json::to_string(&rec("b")).unwrap();
        std::fs::write(l.path(&id), other).unwrap();
        assert!(l.lookup(&id).is_err());
        // A torn detail line does not hide the start.
        let good = serde_json::to_string(&rec("a")).unwrap() + "\n{\"contai";
        std::fs::write(l.path(&id), good).unwrap();
        assert!(l.lookup(&id).unwrap().is_some());
        // A file where the folder should be.
        let dir2 = tempfile::tempdir().unwrap();
        std::fs::write(dir2.path().join("ledger"), b"x").unwrap();
        let l2 = Ledger::new(dir2.path());
        assert!(l2.check().is_err());
        assert!(l2.lookup(&id).is_err());
    }
}

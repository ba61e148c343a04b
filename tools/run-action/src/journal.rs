//! The local journal: `<cache>/journal/<id>`, one line per step, each
//! fsynced BEFORE the step's API call is made:
//!
//! ```text
//! create <unix-ms>
//! start <unix-ms>
//! ```
//!
//! A journal without a `start` line proves the action never started (the
//! start request was never sent), so a resume may run it. A `start` line
//! with no container left means the outcome is lost: `abandoned`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Start,
}

impl Step {
    fn word(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Start => "start",
        }
    }
}

/// What the journal says about one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub created_ms: Option<u64>,
    pub started_ms: Option<u64>,
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(cache: &Path, id: &str) -> Journal {
        Journal {
            path: cache.join("journal").join(id),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the journal; a missing file is the empty state.
    pub fn read(&self) -> io::Result<State> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e),
        };
        let mut st = State::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(word), ms) = (words.next(), words.next()) else {
                continue;
            };
            let ms = ms.and_then(|m| m.parse().ok()).unwrap_or(0);
            match word {
                "create" => st.created_ms = Some(ms),
                "start" => st.started_ms = Some(ms),
                _ => {}
            }
        }
        Ok(st)
    }

    /// Append a step and make it durable (file and directory fsynced).
    pub fn record(&self, step: Step) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let fresh = !self.path.exists();
        std::fs::create_dir_all(dir)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{} {}", step.word(), now_ms())?;
        f.sync_all()?;
        if fresh {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path(), "a-1");
        assert_eq!(j.read().unwrap(), State::default());
        j.record(Step::Create).unwrap();
        let st = j.read().unwrap();
        assert!(st.created_ms.is_some() && st.started_ms.is_none());
        j.record(Step::Start).unwrap();
        assert!(j.read().unwrap().started_ms.is_some());
        assert!(j.path().ends_with("journal/a-1"));
        j.remove().unwrap();
        j.remove().unwrap();
        assert_eq!(j.read().unwrap(), State::default());
    }
}

//! `secret-mount sweep`: the run directories whose owner process is gone.
//! A directory's name says its owner (`<dispatcher>.<pid>.<start ticks>`),
//! so a reused pid is not mistaken for it.

use crate::dir::{io_err, remove_run_dir, DirError, Placement};
use crate::{Failure, TOOL};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use vault_core::{report, Exit};

/// `secret-mount sweep`: sweep every place, report each directory removed
/// and each failure; 1 when something could not be removed, else 0.
pub fn run(places: &[Placement]) -> ExitCode {
    let mut exit = Exit::Ok;
    for place in places {
        let (removed, errors) = sweep(place);
        for path in removed {
            report(TOOL, format!("swept {}", path.display()));
        }
        for e in errors {
            exit = crate::exit_for(&Failure::Sweep(e));
        }
    }
    exit.into()
}

/// Remove every run directory under `place` whose owner process is gone.
/// Returns the removed paths and the first error, having tried them all.
pub fn sweep(place: &Placement) -> (Vec<PathBuf>, Vec<DirError>) {
    let root = match place {
        Placement::Mount { root } => root,
        Placement::InTmpfs { dir } => dir,
    };
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (removed, errors),
        Err(e) => {
            errors.push(io_err("cannot list", root)(e));
            return (removed, errors);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(parse_run_dir_name) else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || owner_alive(pid, start) {
            continue;
        }
        let path = entry.path();
        match remove_run_dir(&path) {
            Ok(()) => removed.push(path),
            Err(e) => errors.push(e),
        }
    }
    (removed, errors)
}

/// `(pid, start)` of a run directory name, if it is one.
pub(crate) fn parse_run_dir_name(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.rsplitn(3, '.');
    let start = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let label = parts.next()?;
    (!label.is_empty()).then_some((pid, start))
}

pub(crate) struct ProcStat {
    pub(crate) state: char,
    pub(crate) start: u64,
}

/// `/proc/<pid>/stat`'s state and start time; `None` when there is no such
/// process.
pub(crate) fn proc_stat(pid: &str) -> io::Result<Option<ProcStat>> {
    let text = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(nix::libc::ESRCH) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    // The command name (field 2) may hold spaces and parentheses: parse
    // from the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let start = fields
        .get(19)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    Ok(Some(ProcStat { state, start }))
}

/// Whether the process that made a run directory is still running.
pub(crate) fn owner_alive(pid: u32, start: u64) -> bool {
    match proc_stat(&pid.to_string()) {
        Ok(Some(s)) => s.start == start && s.state != 'Z' && s.state != 'X',
        Ok(None) => false,
        // Unreadable: assume alive rather than pull secrets from under it.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::run_dir_name;

    #[test]
    fn run_dir_names_round_trip() {
        let name = run_dir_name("host.example/x").unwrap();
        assert!(name.starts_with("host_example_x."), "{name}");
        let (pid, start) = parse_run_dir_name(&name).unwrap();
        assert_eq!(pid, std::process::id());
        assert!(owner_alive(pid, start), "this very process is alive");
        assert!(
            !owner_alive(pid, start + 1),
            "same pid, other start: reused"
        );
        for bad in ["x", "a.b.c", ".1.2", "a.1", "a.-1.2"] {
            assert!(parse_run_dir_name(bad).is_none(), "{bad}");
        }
        assert_eq!(run_dir_name("").unwrap().split('.').count(), 3);
    }
}

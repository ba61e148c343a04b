//! The spool: final results waiting for the remote, one file each under
//! `<cache>/spool/<repo key>/`, written durably (temp file, fsync, rename,
//! fsync of the folder) *before* the push is tried, and removed once the
//! remote holds them (or holds another final result for the same id).
//! Results the server refused are moved to `rejected/` below it: kept, but
//! not retried by every call (an operator moves them back, or re-feeds them).

use std::io::Write;
use std::path::{Path, PathBuf};
use vault_core::ActionResult;

pub fn write(dir: &Path, result: &ActionResult) -> std::io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!(
        "{nanos:020}-{}-{seq:04}-{}.json",
        std::process::id(),
        result.id
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut bytes = serde_json::to_vec(result).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// The spooled files, oldest first (temp files and subfolders are skipped).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") || !e.file_type()?.is_file() {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Move a spooled file aside into `rejected/`.
pub fn reject(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let rejected = dir.join("rejected");
    std::fs::create_dir_all(&rejected)?;
    let to = rejected.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &to)?;
    Ok(to)
}

pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::{ActionId, Status};

    #[test]
    fn spool_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("s");
        assert!(list(&spool).unwrap().is_empty());
        let a = ActionResult::new(ActionId::parse("a").unwrap(), Status::Failed);
        let b = ActionResult::new(ActionId::parse("b").unwrap(), Status::Succeeded);
        let pa = write(&spool, &a).unwrap();
        let pb = write(&spool, &b).unwrap();
        assert_eq!(list(&spool).unwrap(), vec![pa.clone(), pb.clone()]);
        let back: ActionResult = serde_json::from_slice(&std::fs::read(&pb).unwrap()).unwrap();
        assert_eq!(back, b);
        let moved = reject(&spool, &pa).unwrap();
        assert!(moved.exists());
        assert_eq!(list(&spool).unwrap(), vec![pb.clone()]);
        remove(&pb).unwrap();
        remove(&pb).unwrap();
        assert!(list(&spool).unwrap().is_empty());
    }
}

//! The per-run secrets directory: created, filled, sealed read-only, wiped;
//! and the sweep of directories a killed secret-mount left behind.
//!
//! Each run's directory is named `<dispatcher>.<pid>.<start>`, `<start>`
//! being the process's start time in clock ticks since boot
//! (`/proc/<pid>/stat` field 22): the pair names one process for the
//! lifetime of the system, so `sweep` can tell a dead owner from a live one
//! even after the pid was reused.

use crate::store::Secrets;
use crate::sweep::proc_stat;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{FsType, Statfs, TMPFS_MAGIC};
use nix::unistd::{Gid, Uid};
use secrecy::ExposeSecret;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use vault_core::RunnerUser;

/// `statfs` magic of ramfs (not among nix's constants).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is {why}; refusing to put secrets there")]
    Unsafe { path: PathBuf, why: String },
    #[error("cannot mount a tmpfs on {path}: {source}{hint}")]
    Mount {
        path: PathBuf,
        source: nix::Error,
        hint: &'static str,
    },
    #[error(
        "{path} is not on a tmpfs (statfs type {fs_type:#x}); secrets must never touch a \
         disk-backed file system"
    )]
    NotTmpfs { path: PathBuf, fs_type: u64 },
    #[error("{path} has {free} bytes free, the secrets need {need}")]
    NoSpace { path: PathBuf, free: u64, need: u64 },
    #[error("cannot make {path} read-only: {source}")]
    Seal { path: PathBuf, source: nix::Error },
    #[error("cannot unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("cannot read this process's start time: {0}")]
    SelfStat(io::Error),
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> DirError + 'a {
    move |source| DirError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where per-run directories go.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Mount a fresh tmpfs for each run under this root (needs
    /// CAP_SYS_ADMIN in the host's mount namespace).
    Mount { root: PathBuf },
    /// Make each run's directory inside this existing tmpfs directory.
    InTmpfs { dir: PathBuf },
}

/// The name of this process's run directory: `<dispatcher>.<pid>.<start>`.
pub fn run_dir_name(dispatcher: &str) -> Result<String, DirError> {
    let pid = std::process::id();
    let start = proc_stat(&pid.to_string())
        .map_err(DirError::SelfStat)?
        .map(|s| s.start)
        .ok_or_else(|| DirError::SelfStat(io::Error::other("/proc/self/stat is unreadable")))?;
    let mut label: String = dispatcher
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if label.is_empty() {
        label.push_str("secret-mount");
    }
    Ok(format!("{label}.{pid}.{start}"))
}

/// A directory's own safety: a real directory (not a symlink), not writable
/// by others unless sticky (as /dev/shm is).
fn check_parent(path: &Path) -> Result<(), DirError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
    if !meta.file_type().is_dir() {
        return Err(DirError::Unsafe {
            path: path.to_path_buf(),
            why: "not a directory (or a symlink)".into(),
        });
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(DirError::Unsafe {
            path: path.to_path_buf(),
            why: format!(
                "writable by others (mode {:o}) without the sticky bit",
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// A per-run secrets directory. Call [`wipe`](Self::wipe); dropping it
/// without wiping wipes too (reporting failures on stderr).
#[derive(Debug)]
pub struct SecretDir {
    path: PathBuf,
    mounted: bool,
    done: bool,
}

impl SecretDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the directory, write every secret into it (0400, owned by
    /// `user`), and seal it (directory 0500, mount read-only). On any error
    /// what was made is wiped again.
    pub fn create(
        place: &Placement,
        name: &str,
        user: RunnerUser,
        cap: u64,
        secrets: &Secrets,
    ) -> Result<SecretDir, DirError> {
        let mut dir = match place {
            Placement::Mount { root } => Self::mount_fresh(root, name, user, cap, secrets)?,
            Placement::InTmpfs { dir } => Self::make_in_tmpfs(dir, name, secrets)?,
        };
        match dir.fill_and_seal(user, secrets) {
            Ok(()) => Ok(dir),
            Err(e) => dir.discard(e),
        }
    }

    fn mount_fresh(
        root: &Path,
        name: &str,
        user: RunnerUser,
        cap: u64,
        secrets: &Secrets,
    ) -> Result<SecretDir, DirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err("cannot create mount root", root))?;
        let root = fs::canonicalize(root).map_err(io_err("cannot resolve mount root", root))?;
        check_parent(&root)?;
        let path = root.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("cannot create", &path))?;
        let n = secrets.items.len() as u64;
        // The cap was enforced on the plaintext already; the mount's own
        // limit leaves each file its last partial page and no more.
        let size = cap.div_ceil(PAGE) * PAGE + n * PAGE;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let data = format!(
            "mode=0700,uid={},gid={},size={size},nr_inodes={},noswap",
            user.uid,
            user.gid,
            n + 8
        );
        let mounted = mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            flags,
            Some(data.as_str()),
        );
        let result = match mounted {
            Ok(()) => Ok(()),
            Err(nix::Error::EINVAL) => {
                // This kernel's tmpfs has no noswap (before Linux 6.4). A
                // tmpfs that may be swapped out is not acceptable, so use
                // ramfs, which is never swapped; its size is our own check
                // (the plaintext total was bounded by `cap` already).
                vault_core::report(
                    crate::TOOL,
                    "tmpfs here does not take noswap; using ramfs (never swapped, size checked by secret-mount)",
                );
                mount(
                    Some("ramfs"),
                    &path,
                    Some("ramfs"),
                    flags,
                    Some("mode=0700"),
                )
                .map_err(|source| DirError::Mount {
                    path: path.clone(),
                    source,
                    hint: "",
                })
                .and_then(|()| {
                    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))
                        .map_err(io_err("cannot chown", &path))
                })
            }
            Err(source) => Err(DirError::Mount {
                path: path.clone(),
                source,
                hint: if source == nix::Error::EPERM {
                    " (needs CAP_SYS_ADMIN; in an unprivileged container use --in-tmpfs-dir)"
                } else {
                    ""
                },
            }),
        };
        let dir = SecretDir {
            path,
            mounted: is_mountpoint(&root.join(name)),
            done: false,
        };
        match result {
            Ok(()) => Ok(dir),
            Err(e) => dir.discard(e),
        }
    }

    fn make_in_tmpfs(parent: &Path, name: &str, secrets: &Secrets) -> Result<SecretDir, DirError> {
        let parent = fs::canonicalize(parent).map_err(io_err("cannot resolve", parent))?;
        check_parent(&parent)?;
        let path = parent.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("cannot create", &path))?;
        let dir = SecretDir {
            path,
            mounted: false,
            done: false,
        };
        // Checked on the new directory itself: that is where the bytes go.
        let checked = nix::sys::statfs::statfs(&dir.path)
            .map_err(|e| DirError::Io {
                what: "cannot statfs",
                path: dir.path.clone(),
                source: e.into(),
            })
            .and_then(|st| {
                let t = st.filesystem_type();
                if t != TMPFS_MAGIC && t != RAMFS_MAGIC {
                    return Err(DirError::NotTmpfs {
                        path: parent.clone(),
                        fs_type: fs_type_number(t),
                    });
                }
                let need: u64 = secrets
                    .items
                    .iter()
                    .map(|s| (s.value.expose_secret().len() as u64).div_ceil(PAGE) * PAGE)
                    .sum();
                let free = free_bytes(&st);
                // ramfs reports no limit (zero blocks): nothing to check.
                if t != RAMFS_MAGIC && free < need {
                    return Err(DirError::NoSpace {
                        path: parent.clone(),
                        free,
                        need,
                    });
                }
                Ok(())
            });
        match checked {
            Ok(()) => Ok(dir),
            Err(e) => dir.discard(e),
        }
    }

    /// The cleanup of a failed setup: wipe what was made so far (a wipe
    /// that fails too is reported) and give back the setup's error.
    fn discard<T>(mut self, e: DirError) -> Result<T, DirError> {
        if let Err(w) = self.wipe_inner() {
            vault_core::report(crate::TOOL, format!("wipe after failure: {w}"));
        }
        Err(e)
    }

    fn fill_and_seal(&mut self, user: RunnerUser, secrets: &Secrets) -> Result<(), DirError> {
        let chown_needed = |uid: u32, gid: u32| {
            Uid::effective().as_raw() != uid || Gid::effective().as_raw() != gid
        };
        for s in &secrets.items {
            let file = self.path.join(s.name.as_str());
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits())
                .open(&file)
                .map_err(io_err("cannot create", &file))?;
            f.write_all(s.value.expose_secret())
                .map_err(io_err("cannot write", &file))?;
            f.set_permissions(fs::Permissions::from_mode(0o400))
                .map_err(io_err("cannot chmod", &file))?;
            if chown_needed(user.uid, user.gid) {
                std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid)).map_err(io_err(
                    "cannot give the secret file to the runner user",
                    &file,
                ))?;
            }
        }
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o500))
            .map_err(io_err("cannot chmod", &self.path))?;
        if chown_needed(user.uid, user.gid) {
            std::os::unix::fs::chown(&self.path, Some(user.uid), Some(user.gid)).map_err(
                io_err(
                    "cannot give the secrets directory to the runner user",
                    &self.path,
                ),
            )?;
        }
        if self.mounted {
            // A superblock remount (no MS_BIND): every copy of this mount,
            // e.g. one a container got, is read-only too.
            mount(
                None::<&str>,
                &self.path,
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|source| DirError::Seal {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Unlink every file, unmount, remove the directory.
    pub fn wipe(mut self) -> Result<(), DirError> {
        self.wipe_inner()
    }

    fn wipe_inner(&mut self) -> Result<(), DirError> {
        self.done = true;
        remove_run_dir(&self.path)
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.wipe_inner() {
                vault_core::report(crate::TOOL, format!("wipe: {e}"));
            }
        }
    }
}

// The statfs field types differ between libcs (i64, u32, c_ulong...).
#[allow(clippy::unnecessary_cast)]
fn fs_type_number(t: FsType) -> u64 {
    t.0 as u64
}

#[allow(clippy::unnecessary_cast)]
fn free_bytes(st: &Statfs) -> u64 {
    (st.blocks_available() as u64).saturating_mul(st.block_size() as u64)
}

fn is_mountpoint(path: &Path) -> bool {
    let (Ok(me), Some(Ok(up))) = (
        fs::symlink_metadata(path),
        path.parent().map(fs::symlink_metadata),
    ) else {
        return false;
    };
    me.file_type().is_dir() && me.dev() != up.dev()
}

/// Remove a run directory whatever state it is in: every mount on it
/// (made writable, emptied, unmounted), then the directory itself.
pub(crate) fn remove_run_dir(path: &Path) -> Result<(), DirError> {
    let mut guard = 0;
    while is_mountpoint(path) && guard < 16 {
        guard += 1;
        // Read-only since sealing: writable again to unlink (tmpfs pages
        // are freed on unlink; another mount of this tmpfs, say a
        // container's, then sees no file either).
        let _ = mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
        let emptied = empty_dir(path);
        match umount2(path, MntFlags::empty()) {
            // Unmounted and unreferenced: the tmpfs and whatever it still
            // held are gone with it.
            Ok(()) => {}
            Err(nix::Error::EBUSY) => {
                // Something still has it open or as cwd: detach it. Only
                // safe to call done if the files were unlinked.
                umount2(path, MntFlags::MNT_DETACH).map_err(|source| DirError::Unmount {
                    path: path.to_path_buf(),
                    source,
                })?;
                emptied?;
            }
            Err(source) => {
                emptied?;
                return Err(DirError::Unmount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    empty_dir(path)?;
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DirError::Io {
            what: "cannot remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Overwrite a secret file with zeros before it is unlinked, so its pages
/// go back to the kernel without the plaintext. Best effort: unlinking is
/// what matters.
fn zero_fill(path: &Path) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    let Ok(mut f) = fs::OpenOptions::new()
        .write(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits())
        .open(path)
    else {
        return;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return;
    };
    let zeros = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        if f.write_all(&zeros[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
}

/// Unlink everything inside `path` (never following symlinks).
fn empty_dir(path: &Path) -> Result<(), DirError> {
    // Owner write permission back, in case we are not root.
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot list", path)(e)),
    };
    let mut first_err = None;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                first_err.get_or_insert(io_err("cannot list", path)(e));
                continue;
            }
        };
        let p = entry.path();
        let file_type = entry.file_type().ok();
        let removed = if file_type.is_some_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            if file_type.is_some_and(|t| t.is_file()) {
                zero_fill(&p);
            }
            fs::remove_file(&p)
        };
        if let Err(e) = removed {
            if e.kind() != io::ErrorKind::NotFound {
                first_err.get_or_insert(io_err("cannot remove", &p)(e));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

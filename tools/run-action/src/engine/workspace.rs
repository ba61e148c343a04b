//! An action's code checkout: admitted by the dispatcher's checkout config,
//! fetched into `<cache>/checkouts/<id>/` before the start record is
//! written, mounted at `checkout.path`, and after a successful run pushed
//! (with `push`) from there.
//!
//! The fetch comes before the run ledger's start record on purpose: it
//! reads from a remote and changes nothing outside this host, so it may be
//! repeated; until the record is written the id is not spent, and a fetch
//! that fails (a commit not in the repo, too big, unreachable) is recorded
//! as never started, exactly like a missing image. The record still comes
//! before the container is created (§8.1), and a resumed run finds its
//! container's workspace where the container's mount points.

use super::docker::Engine;
use super::prepare::{load_secrets, masker_for};
use super::spec::bind;
use super::{Ctx, NoResult, NotRun};
use bollard::models::Mount;
use nix::fcntl::{Flock, FlockArg};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vault_core::checkout::{Checkout, CheckoutConfig, CheckoutOutcome, Kept, Pushed, Refusal};
use vault_core::{Action, ActionId, ActionResult, Status};
use vault_git::code::{self, CodeError, Limits, Oid, Workspace};
use vault_git::{Credentials, RepoUrl};

/// The marker of a workspace kept for inspection: holds the Unix time
/// (seconds) after which a sweep may remove it.
const KEPT: &str = "kept-until";

/// `<cache>/checkouts`
pub fn checkouts_dir(cache: &Path) -> PathBuf {
    cache.join("checkouts")
}

/// `<cache>/checkouts/<id>`
pub fn workspace_dir(cache: &Path, id: &str) -> PathBuf {
    checkouts_dir(cache).join(id)
}

/// Create `<cache>/checkouts` (and its parents) when absent, and make it
/// mode 0700 either way: a workspace may hold what a run wrote (a secret
/// value included) until it is checked, so only the dispatcher's user may
/// look in. (The runner reaches its workspace through the mount only.)
fn private_checkouts_dir(cache: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = checkouts_dir(cache);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// What the dispatcher allows: the repo's prefix (and its credentials),
/// the push ref. A refusal is `rejected`.
pub(super) fn admit<'c>(
    c: &Checkout,
    cfg: Option<&'c CheckoutConfig>,
) -> Result<&'c vault_core::checkout::RepoRule, NotRun> {
    let cfg = cfg.ok_or_else(|| NotRun::rejected(Refusal::NotConfigured))?;
    let rule = cfg.repo_for(c).map_err(NotRun::rejected)?;
    if c.push.is_some() && c.repo.starts_with("file://") {
        return Err(NotRun::rejected(
            "checkout.push to a file:// repository is not supported (serve it by git daemon, ssh or https)",
        ));
    }
    Ok(rule)
}

fn connect(
    c: &Checkout,
    cfg: Option<&CheckoutConfig>,
) -> Result<(RepoUrl, Credentials, Limits), NotRun> {
    let rule = admit(c, cfg)?;
    let cfg = cfg.ok_or_else(|| NotRun::rejected(Refusal::NotConfigured))?;
    let url =
        RepoUrl::parse(&c.repo).map_err(|e| NotRun::rejected(format!("checkout.repo: {e}")))?;
    // Only the rule's own credential: never the dispatcher's ssh-agent.
    let creds = Credentials::load(rule.ssh_key.as_deref(), rule.token_file.as_deref())
        .map_err(|e| NotRun::error(format!("checkout: the credential for {}: {e}", c.repo)))?
        .without_agent();
    let limits = Limits {
        max_bytes: cfg.max_bytes,
        timeout: Duration::from_secs(cfg.fetch_timeout_s),
    };
    Ok((url, creds, limits))
}

fn pinned(c: &Checkout) -> Result<Oid, NotRun> {
    Oid::from_str(&c.commit)
        .map_err(|e| NotRun::rejected(format!("checkout.commit {:?}: {e}", c.commit)))
}

/// Fetch the action's commit into a fresh workspace and hand it to the
/// runner (owned by it when writable). Returns the mount for the container.
pub(super) fn prepare(
    action: &Action,
    c: &Checkout,
    ctx: &Ctx<'_>,
    engine: Engine,
) -> Result<Mount, NotRun> {
    let (url, creds, limits) = connect(c, ctx.checkout)?;
    private_checkouts_dir(ctx.cache).map_err(|e| {
        NotRun::error(format!(
            "checkout: cannot create {} (mode 0700): {e}",
            checkouts_dir(ctx.cache).display()
        ))
    })?;
    let dir = workspace_dir(ctx.cache, action.id.as_str());
    let ws = Workspace::fetch(&dir, &url, &creds, pinned(c)?, limits).map_err(|e| {
        // The shared credential text names the ops repo's flags.
        let hint = match &e {
            CodeError::Git(vault_git::GitError::Auth { .. }) => {
                " (the credential is the token_file or ssh_key of the repo's entry in the checkout config)"
            }
            _ => "",
        };
        let why = format!("checkout of {} at {}: {e}{hint}", url.display(), c.commit);
        if e.is_refusal() {
            NotRun::rejected(why)
        } else {
            NotRun::error(why)
        }
    })?;
    // Docker runs the runner as VAULT_RUNNER_USER on the host's uids: a
    // writable workspace is given to that uid. Podman maps the service user
    // (who owns the files already) to the runner with keep-id.
    let user = ctx.config.runner_user;
    let owner = (c.writable && engine == Engine::Docker).then_some((user.uid, user.gid));
    if let Err(e) = ws.hand_over(owner) {
        let _ = code::remove(&dir);
        return Err(NotRun::error(format!(
            "checkout: {e}; refusing to run with a workspace the runner cannot use as asked"
        )));
    }
    let mut m = bind(&ws.work_dir(), &c.path);
    m.read_only = Some(!c.writable);
    Ok(m)
}

/// Remove the workspace of an action that did not start.
pub(super) fn discard(cache: &Path, id: &str) {
    let dir = workspace_dir(cache, id);
    if let Err(e) = code::remove(&dir) {
        vault_core::report(
            "run-action",
            format_args!("{id}: warning: cannot remove {}: {e}", dir.display()),
        );
    }
}

/// After the container's outcome is read: record the checkout in the
/// result, and after a successful run push what the workspace holds. A
/// push that fails makes the result `failed`.
///
/// The workspace is kept (until the retention ends) only when the push
/// itself failed after the whole workspace was checked and committed: every
/// name and every byte went through the secret check, nothing was refused.
/// On any other failure (a secret value in a file or a file name, a `.git`
/// entry, a special file, too many files, a credential or a workspace that
/// cannot be read) it is removed at once: a workspace not checked to the
/// end may hold a secret.
///
/// A workspace no push needs is removed as soon as the container's exit is
/// read: whatever a run wrote into it (a secret value included) does not
/// stay on disk until the result is recorded. Only when the exit could not
/// be read (the container may still run) is it left to `run-action rm`.
pub(super) fn conclude(r: &mut ActionResult, action: &Action, c: &Checkout, ctx: &Ctx<'_>) {
    r.checkout = Some(CheckoutOutcome {
        repo: c.repo.clone(),
        commit: c.commit.clone(),
        pushed: None,
        kept: None,
    });
    let exited = r.exit_code.is_some();
    let push = match &c.push {
        Some(p) if r.status == Status::Succeeded => p,
        _ => {
            if exited {
                discard(ctx.cache, action.id.as_str());
            }
            return;
        }
    };
    let dir = workspace_dir(ctx.cache, action.id.as_str());
    let fail = |r: &mut ActionResult, why: String| {
        vault_core::report("run-action", format_args!("{}: failed: {why}", r.id));
        r.status = Status::Failed;
        r.error = Some(why.replace(['\n', '\r'], " "));
    };
    /// How the attempt ended when it did not push.
    enum Failure {
        /// Before the push (nothing checked to the end): remove.
        Before(String),
        /// The push itself, of a commit checked to the end: keep.
        Push(CodeError),
    }
    let attempt = || -> Result<(String, Oid), Failure> {
        let (url, creds, limits) =
            connect(c, ctx.checkout).map_err(|n| Failure::Before(n.why().to_string()))?;
        let pinned = pinned(c).map_err(|n| Failure::Before(n.why().to_string()))?;
        let ws = Workspace::open(&dir, pinned).ok_or_else(|| {
            Failure::Before(format!(
                "there is no workspace of commit {pinned} at {} (removed?)",
                dir.display()
            ))
        })?;
        let secrets = load_secrets(action, ctx.config.secrets_dir.as_deref()).map_err(|e| {
            Failure::Before(format!(
                "the workspace holds secret values it cannot be checked against ({e})"
            ))
        })?;
        let masker = masker_for(&secrets);
        // Whether `bytes` hold a secret value (in any form the masker
        // knows).
        let holds_secret = |bytes: &[u8]| {
            if secrets.is_empty() || bytes.is_empty() {
                return false;
            }
            let mut m = masker.clone();
            let mut out = m.push(bytes);
            out.extend(m.finish());
            out != bytes
        };
        let mut inspect = |path: &Path, bytes: Option<&[u8]>| {
            use std::os::unix::ffi::OsStrExt;
            // The name first: a path holding a secret is never shown.
            if holds_secret(path.as_os_str().as_bytes()) {
                return Err(CodeError::Unstorable(
                    "a secret value (in a file name)".into(),
                ));
            }
            if bytes.is_some_and(holds_secret) {
                return Err(CodeError::Unstorable(format!(
                    "a secret value (in {})",
                    path.display()
                )));
            }
            Ok(())
        };
        let message = format!(
            "vault: {}\n\nRun by vault-dispatch on {}.\n",
            action.id, c.commit
        );
        let commit = ws
            .snapshot(limits.max_bytes, &message, &mut inspect)
            .map_err(|e| Failure::Before(e.to_string()))?;
        drop(secrets);
        let done = ws
            .push(&url, &creds, commit, &push.refname, limits)
            .map_err(Failure::Push)?;
        if done == code::Pushed::AlreadyThere {
            vault_core::report(
                "run-action",
                format_args!(
                    "{}: {} was at {commit} already (pushed by an earlier run of this action)",
                    action.id, push.refname
                ),
            );
        }
        Ok((push.refname.clone(), commit))
    };
    match attempt() {
        Ok((refname, commit)) => {
            if let Some(o) = r.checkout.as_mut() {
                o.pushed = Some(Pushed {
                    refname,
                    commit: commit.to_string(),
                });
            }
        }
        Err(Failure::Before(why)) => {
            discard(ctx.cache, action.id.as_str());
            fail(
                r,
                format!(
                    "nothing was pushed to {}: {why}; the workspace was removed",
                    push.refname
                ),
            );
        }
        Err(Failure::Push(e)) => {
            let until = now_s().saturating_add(
                ctx.checkout
                    .map_or(vault_core::checkout::DEFAULT_KEEP_FAILED_S, |c| {
                        c.keep_failed_s
                    }),
            );
            let kept = keep(&dir, until);
            let until_text =
                vault_core::time::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(until));
            let how = match &kept {
                Ok(()) => format!(
                    "the workspace is kept for inspection at {} until {until_text}",
                    dir.display()
                ),
                Err(k) => format!("the workspace could not be marked as kept ({k})"),
            };
            fail(
                r,
                format!("the push of {} failed: {e}; {how}", push.refname),
            );
            if kept.is_ok() {
                if let Some(o) = r.checkout.as_mut() {
                    o.kept = Some(Kept {
                        path: dir.display().to_string(),
                        until: until_text,
                    });
                }
            }
        }
    }
}

fn keep(dir: &Path, until: u64) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Err(std::io::Error::other("it is gone"));
    }
    std::fs::write(dir.join(KEPT), format!("{until}\n"))
}

fn now_s() -> u64 {
    super::now_ms() / 1000
}

/// When a kept workspace may go (`None`: not kept, or the marker is
/// unreadable, which keeps it).
fn kept_until(dir: &Path) -> Option<Option<u64>> {
    match std::fs::read_to_string(dir.join(KEPT)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(None),
        Ok(t) => Some(t.trim().parse().ok()),
    }
}

/// `<cache>/checkouts/.locks/<id>`: the lock a run-action holds on the
/// workspace of `id` (not a valid id, so never taken for a workspace).
fn lock_path(cache: &Path, id: &str) -> PathBuf {
    checkouts_dir(cache).join(".locks").join(id)
}

/// Take the lock of `id` (its workspace and gateway), or say who has it;
/// `then` says what the caller does not do for want of it.
pub(super) fn lock(
    cache: &Path,
    id: &ActionId,
    then: &str,
) -> Result<Flock<std::fs::File>, NoResult> {
    let path = lock_path(cache, id.as_str());
    let failed = |e: std::io::Error| {
        NoResult::Busy(format!(
            "cannot take the lock {}: {e}; {then}",
            path.display()
        ))
    };
    private_checkouts_dir(cache).map_err(failed)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::errno::Errno::EWOULDBLOCK => NoResult::Busy(format!(
            "another run-action is working on this action's checkout or gateway ({} is locked); {then}",
            path.display()
        )),
        e => failed(std::io::Error::from(e)),
    })
}

/// `run-action rm <id>`: the result is recorded, so the workspace goes,
/// unless it is kept for inspection. Its lock goes either way: the id runs
/// no more.
pub fn remove_recorded(cache: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(lock_path(cache, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let dir = workspace_dir(cache, id);
    if kept_until(&dir).is_some() {
        return Ok(());
    }
    code::remove(&dir)
}

/// Whether a run-action holds the workspace lock of `id` now (a lock file
/// that is not there is held by no one; one that cannot be opened counts
/// as held).
fn lock_held(cache: &Path, id: &str) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .open(lock_path(cache, id))
    {
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
    }
}

/// Remove every kept workspace whose retention ended; with `orphans_older`,
/// also every other workspace older than that for which `gone(id)` says
/// no container exists. A workspace whose lock a run-action holds is
/// skipped. Returns what was removed and what could not be.
pub fn sweep(
    cache: &Path,
    orphans_older: Option<Duration>,
    gone: &mut dyn FnMut(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(checkouts_dir(cache)) else {
        return (removed, failed);
    };
    let now = now_s();
    for e in entries.flatten() {
        let dir = e.path();
        let id = e.file_name().to_string_lossy().into_owned();
        // `.locks` and anything else that is no workspace of an id.
        if id.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let due = match kept_until(&dir) {
            Some(until) => until.is_some_and(|u| u <= now),
            None => orphans_older.is_some_and(|age| {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|el| el >= age);
                old && gone(&id)
            }),
        };
        if due && !lock_held(cache, &id) {
            match code::remove(&dir) {
                Ok(()) => removed.push(id),
                Err(err) => failed.push(format!("{}: {err}", dir.display())),
            }
        }
    }
    (removed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rm_keeps_a_kept_workspace_and_sweeps_it_once_its_time_is_up() {
        let cache = tempfile::tempdir().unwrap();
        let make = |id: &str, until: Option<&str>| {
            let d = workspace_dir(cache.path(), id);
            std::fs::create_dir_all(d.join("work")).unwrap();
            if let Some(u) = until {
                std::fs::write(d.join(KEPT), u).unwrap();
            }
            d
        };
        let plain = make("plain", None);
        let kept = make("kept", Some("99999999999\n"));
        let expired = make("expired", Some("1\n"));
        let unreadable = make("garbled", Some("soon"));
        remove_recorded(cache.path(), "plain").unwrap();
        remove_recorded(cache.path(), "kept").unwrap();
        remove_recorded(cache.path(), "never-there").unwrap();
        assert!(!plain.exists());
        assert!(kept.exists(), "kept for inspection");
        let (removed, failed) = sweep(cache.path(), None, &mut |_| true);
        assert_eq!(removed, ["expired"]);
        assert!(failed.is_empty());
        assert!(!expired.exists() && kept.exists());
        assert!(unreadable.exists(), "a marker it cannot read keeps it");
        // Orphans: only older than the age, and only when their container
        // is gone.
        let orphan = make("orphan", None);
        let (removed, _) = sweep(cache.path(), Some(Duration::from_secs(3600)), &mut |_| true);
        assert!(removed.is_empty() && orphan.exists(), "too young");
        let (removed, _) = sweep(cache.path(), Some(Duration::ZERO), &mut |id| id != "orphan");
        assert!(
            removed.is_empty() && orphan.exists(),
            "its container is there"
        );
        let (removed, _) = sweep(cache.path(), Some(Duration::ZERO), &mut |_| true);
        assert_eq!(removed, ["orphan"]);
    }

    #[test]
    fn one_run_action_at_a_time_per_workspace_and_rm_drops_the_lock() {
        let cache = tempfile::tempdir().unwrap();
        let id = ActionId::parse("a1").unwrap();
        let held = lock(cache.path(), &id, "then").unwrap();
        let busy = lock(cache.path(), &id, "then").err().unwrap();
        assert!(matches!(busy, NoResult::Busy(_)), "{busy}");
        assert!(busy.to_string().contains("another run-action"), "{busy}");
        assert!(lock(cache.path(), &ActionId::parse("a2").unwrap(), "then").is_ok());
        let (removed, failed) = sweep(cache.path(), Some(Duration::ZERO), &mut |_| true);
        assert!(
            removed.is_empty() && failed.is_empty(),
            "the locks are no workspaces"
        );
        // A workspace whose lock is held is never swept, kept or orphan.
        let ws = workspace_dir(cache.path(), "a1");
        std::fs::create_dir_all(ws.join("work")).unwrap();
        std::fs::write(ws.join(KEPT), "1\n").unwrap();
        let (removed, _) = sweep(cache.path(), Some(Duration::ZERO), &mut |_| true);
        assert!(removed.is_empty() && ws.exists(), "{removed:?}");
        drop(held);
        let (removed, _) = sweep(cache.path(), Some(Duration::ZERO), &mut |_| true);
        assert_eq!(removed, ["a1"]);
        assert!(lock(cache.path(), &id, "then").is_ok());
        remove_recorded(cache.path(), "a1").unwrap();
        assert!(!lock_path(cache.path(), "a1").exists());
    }
}

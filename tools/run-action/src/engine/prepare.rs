//! What a fresh run needs before the daemon: policy, secrets (to mask),
//! and the action file.

use super::spec::run_dir;
use super::Ctx;
use super::NotRun;
use crate::mask::{self, Masker, MIN_PATTERN_LEN};
use crate::policy::{self, Limits};
use secrecy::{ExposeSecret, SecretBox};
use std::path::{Path, PathBuf};
use vault_core::Action;
use vault_core::ScanLine;

/// One secret value, as read from the secrets dir.
pub(super) type Secret = SecretBox<Vec<u8>>;

/// The checks that need no daemon: the image (and that policy allows it)
/// and the limits (and that policy allows the network asked for).
pub(super) fn preflight(
    action: &Action,
    scan: &ScanLine,
    ctx: &Ctx<'_>,
) -> Result<(String, Limits), NotRun> {
    let cfg = ctx.config;
    let image = action.image.clone().or_else(|| cfg.runner_image.clone());
    // Approval, expiry and the per-secret policy: this is a first start.
    ctx.admission
        .check(
            scan,
            action,
            image.as_deref(),
            true,
            vault_core::admit::now_ms(),
        )
        .map_err(NotRun::rejected)?;
    let Some(image) = image else {
        return Err(NotRun::error(
            "the action names no image and VAULT_RUNNER_IMAGE is not set",
        ));
    };
    if !policy::listed(&cfg.allow_images, &image) {
        return Err(NotRun::rejected(policy::Refusal::Image(image)));
    }
    let limits = policy::limits(action, cfg).map_err(NotRun::rejected)?;
    if let Some(c) = &action.checkout {
        super::workspace::admit(c, ctx.checkout)?;
    }
    Ok((image, limits))
}

/// Read the named secrets from the secrets dir.
pub(super) fn load_secrets(action: &Action, dir: Option<&Path>) -> Result<Vec<Secret>, String> {
    if action.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let dir = dir.ok_or_else(|| {
        "the action names secrets but VAULT_SECRETS_DIR is not set (run it under secret-mount)"
            .to_string()
    })?;
    let mut out = Vec::new();
    for name in &action.secrets {
        let path = dir.join(name.as_str());
        let value = std::fs::read(&path)
            .map_err(|e| format!("secret {name} is missing from {}: {e}", dir.display()))?;
        if !mask::is_maskable(&value) {
            vault_core::report(
                "run-action",
                format_args!(
                    "warning: secret {name} is shorter than {MIN_PATTERN_LEN} bytes and is not masked"
                ),
            );
        }
        out.push(SecretBox::new(Box::new(value)));
    }
    Ok(out)
}

pub(super) fn masker_for(secrets: &[Secret]) -> Masker {
    Masker::new(secrets.iter().map(|s| s.expose_secret().as_slice()))
}

/// Write the action file for the container, mode 0444, atomically.
pub(super) fn write_action_file(cache: &Path, action: &Action) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = run_dir(cache, action.id.as_str());
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join("action.json");
    let tmp = dir.join(".action.json.tmp");
    let mut bytes = serde_json::to_vec_pretty(action).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, &bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

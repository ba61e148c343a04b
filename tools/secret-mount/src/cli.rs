//! The command line of secret-mount.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use vault_core::{DispatcherId, RunnerUser, SecretName};

/// Decrypt exactly the named secrets into a fresh memory-only directory,
/// run CMD with `VAULT_SECRETS_DIR` pointing at it, then wipe it.
///
/// `secret-mount [OPTIONS] -- CMD...` reads the one scan line on stdin
/// (unless `--names` is given), decrypts the secrets its action names
/// (`.action.secrets`) into memory, mounts a fresh tmpfs of its own (mode 0700,
/// nosuid, nodev, noexec, size-capped, noswap; ramfs where the kernel's
/// tmpfs has no noswap) under the mount root, writes one file per secret
/// (mode 0400, owned by the runner user), makes it read-only, and runs CMD
/// with the same stdin line. Whatever CMD does, and on SIGINT, SIGTERM or
/// SIGHUP (forwarded to CMD), the files are unlinked and the mount is
/// removed. All-or-nothing: one unknown, missing, corrupt, truncated,
/// passphrase-encrypted or symlinked secret and nothing is mounted and CMD
/// never runs.
///
/// With `--in-tmpfs-dir DIR` (for an unprivileged container) nothing is
/// mounted: the per-run directory is made inside DIR, which must be a tmpfs
/// (checked with statfs) that the Docker daemon sees at the same path.
///
/// Exit codes: CMD's own once CMD ran (128+N when a signal N killed it);
/// before that: 5 a result line (status `error`, `rejected`, or
/// `abandoned` for a `spent` line) was printed on stdout for the scan line,
/// 1 failure with no usable scan line, 2 usage.
/// `secret-mount sweep` removes directories left by a killed secret-mount
/// (0 done, 1 something could not be removed).
#[derive(Debug, Parser)]
#[command(name = "secret-mount", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub wrap: WrapArgs,

    #[command(flatten)]
    pub place: PlaceArgs,

    /// The command to run (after `--`); it gets VAULT_SECRETS_DIR
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove the secret directories (and mounts) of secret-mount processes
    /// that are gone, e.g. killed with SIGKILL
    Sweep {
        #[command(flatten)]
        place: PlaceArgs,
    },
}

#[derive(Debug, Args)]
pub struct WrapArgs {
    /// Secrets to mount, comma-separated (default: `.action.secrets` of the
    /// scan line on stdin, which is then passed on to CMD)
    #[arg(long, value_name = "A,B", value_parser = parse_names)]
    pub names: Option<NameList>,

    /// The age identity file: age X25519 identities or an unencrypted SSH
    /// key (ed25519 or RSA)
    #[arg(long, env = "VAULT_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// The secret store: `<NAME>.age` (else `<NAME>.enc`) per secret,
    /// binary or armored
    #[arg(long, env = "VAULT_SECRETS", value_name = "DIR")]
    pub secrets: Option<PathBuf>,

    /// uid:gid owning the secret files (the user the runner runs as); a
    /// bare UID means UID:UID (uid 0 is refused)
    #[arg(
        long,
        env = "VAULT_RUNNER_USER",
        value_name = "UID:GID",
        default_value = "65534:65534"
    )]
    pub runner_user: RunnerUser,

    /// This dispatcher's name, in result lines [default: hostname]
    #[arg(long, env = "VAULT_DISPATCHER_ID", value_name = "ID",
          value_parser = DispatcherId::from_flag)]
    pub dispatcher_id: Option<DispatcherId>,

    /// Most bytes the secrets of one run may add up to (suffix K or M for
    /// KiB or MiB)
    #[arg(
        long,
        env = "VAULT_SECRETS_SIZE",
        value_name = "BYTES",
        default_value = "1M",
        value_parser = parse_size
    )]
    pub size: u64,

    /// The image of actions that name none (as run-action's), checked
    /// against the policy's images
    #[arg(long, env = "VAULT_RUNNER_IMAGE", value_name = "IMAGE")]
    pub runner_image: Option<String>,

    #[command(flatten)]
    pub admit: vault_core::cli::AdmitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PlaceArgs {
    /// Where the per-run tmpfs mounts go (one `<dispatcher>.<pid>.<start>`
    /// directory per run)
    #[arg(
        long,
        env = "VAULT_MOUNT_ROOT",
        value_name = "DIR",
        default_value = "/run/vault-dispatch/secrets"
    )]
    pub mount_root: PathBuf,

    /// Unprivileged mode: mount nothing, make the per-run directory inside
    /// this existing tmpfs directory instead
    #[arg(long, env = "VAULT_SECRETS_TMPFS", value_name = "DIR")]
    pub in_tmpfs_dir: Option<PathBuf>,
}

/// Secret names as given to `--names`, each validated.
#[derive(Debug, Clone)]
pub struct NameList(pub Vec<SecretName>);

fn parse_names(s: &str) -> Result<NameList, String> {
    let names = SecretName::parse_list(s).map_err(|e| e.to_string())?;
    if let Some(n) = SecretName::first_duplicate(&names) {
        return Err(format!("secret {:?} is listed twice", n.as_str()));
    }
    Ok(NameList(names))
}

/// Largest `--size` accepted: the secrets are held in memory twice at most
/// (plaintext buffer and tmpfs page), so keep it modest.
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{s:?}: want a number of bytes, e.g. 65536, 64K or 1M"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: want a number of bytes, e.g. 65536, 64K or 1M"))?;
    let bytes = n
        .checked_mul(mult)
        .filter(|b| (1..=MAX_SIZE).contains(b))
        .ok_or_else(|| format!("{s:?}: want 1 byte to {} MiB", MAX_SIZE >> 20))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "0", "1G", "-1", "M", "1.5M", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    /// The shared vault-core rules, as run-action applies them (issue 12).
    #[test]
    fn runner_user_and_dispatcher_id_use_the_shared_rules() {
        let c = Cli::try_parse_from(["secret-mount", "--runner-user", "1000"]).unwrap();
        assert_eq!(c.wrap.runner_user.to_string(), "1000:1000");
        let root = Cli::try_parse_from(["secret-mount", "--runner-user", "0:0"]);
        let id = Cli::try_parse_from(["secret-mount", "--dispatcher-id", "a>b"]);
        assert!(root.is_err() && id.is_err());
    }

    #[test]
    fn names() {
        assert_eq!(parse_names("A,B").map(|n| n.0.len()), Ok(2));
        assert!(parse_names("A,../B").is_err());
        assert!(parse_names("A,A").is_err());
        assert_eq!(parse_names("").map(|n| n.0.len()), Ok(0));
    }

    #[test]
    fn sweep_and_wrapped_command_parse() {
        let c = Cli::try_parse_from(["secret-mount", "sweep", "--mount-root", "/x"]).unwrap();
        assert!(matches!(c.command, Some(Command::Sweep { .. })));
        let c = Cli::try_parse_from(["secret-mount", "--names", "A", "--", "sweep", "-x"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.cmd, ["sweep", "-x"]);
    }
}

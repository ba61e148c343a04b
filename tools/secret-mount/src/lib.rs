//! secret-mount: decrypt exactly the named secrets into a memory-only
//! directory, run a command with it, wipe it whatever happens.
//!
//! See `secret-mount --help` and docs/CONTRACT.md. The steps, in order, each
//! all-or-nothing:
//!
//! 1. core dumps off (`PR_SET_DUMPABLE` 0): plaintext will be in memory;
//! 2. secret names validated (from `--names` or the scan line on stdin);
//! 3. identity loaded, every secret decrypted into zeroizing memory;
//! 4. the directory made (a fresh noswap tmpfs, or inside an existing
//!    tmpfs directory), filled, sealed read-only;
//! 5. CMD run with `VAULT_SECRETS_DIR`; SIGINT/SIGTERM/SIGHUP forwarded;
//! 6. the directory wiped (unlink, unmount, rmdir) and CMD's code returned.

pub mod cli;
pub mod config;
pub mod dir;
pub mod store;
pub mod sweep;
mod wrap;

use clap::Parser;
use config::WrapConfig;
use dir::Placement;
use std::error::Error;
use std::process::ExitCode;
use vault_core::Exit;

pub const TOOL: &str = "secret-mount";

pub fn run() -> ExitCode {
    // Before anything else: a core dump must never hold decrypted secrets
    // (this also keeps other users' debuggers off the process).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        return exit_for(&Failure::Dumpable(e)).into();
    }
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Sweep { place }) => sweep::run(&sweep_places(place)),
        None => wrap::run(wrap_config(cli.wrap, cli.place, cli.cmd)),
    }
}

/// The flags of wrapper mode as plain settings.
fn wrap_config(
    args: cli::WrapArgs,
    place: cli::PlaceArgs,
    cmd: Vec<std::ffi::OsString>,
) -> WrapConfig {
    WrapConfig {
        names: args.names.map(|list| list.0),
        identity: args.identity,
        store: args.secrets,
        runner_user: args.runner_user,
        dispatcher_id: args.dispatcher_id,
        size: args.size,
        // Unprivileged mode when a tmpfs directory is given.
        placement: match place.in_tmpfs_dir {
            Some(dir) => Placement::InTmpfs { dir },
            None => Placement::Mount {
                root: place.mount_root,
            },
        },
        cmd,
        runner_image: args.runner_image.filter(|i| !i.is_empty()),
        admission: args.admit.admission().map_err(|e| e.to_string()),
    }
}

/// Every place a run directory may have been left in: the mount root, and
/// the tmpfs directory when one is given.
fn sweep_places(place: cli::PlaceArgs) -> Vec<Placement> {
    let mut places = vec![Placement::Mount {
        root: place.mount_root,
    }];
    if let Some(dir) = place.in_tmpfs_dir {
        places.push(Placement::InTmpfs { dir });
    }
    places
}

/// What ends secret-mount with an error exit of its own (not its command's
/// code), besides a [`wrap::Refusal`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("cannot turn core dumps off")]
    Dumpable(#[source] nix::Error),
    #[error("cannot wait for the command")]
    Wait(#[source] std::io::Error),
    #[error("cannot write the result line")]
    ResultLine(#[source] std::io::Error),
    /// The error's own text already says why (no source: said once).
    #[error("sweep: {0}")]
    Sweep(dir::DirError),
}

/// The one error-to-exit mapping: report `err` on stderr (one line) and
/// give its exit code: 2 a usage refusal, 5 a refusal recorded as a result
/// line, else 1.
pub(crate) fn exit_for(err: &(dyn Error + 'static)) -> Exit {
    vault_core::exit::exit_for(TOOL, err, |e| match e.downcast_ref::<wrap::Refusal>()? {
        wrap::Refusal::Usage(_) => Some(Exit::Usage),
        wrap::Refusal::Recorded(_) => Some(Exit::NotSucceeded),
        wrap::Refusal::Plain(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> cli::Cli {
        cli::Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn the_config_is_the_flags_as_plain_values() {
        let c = parse(&["secret-mount", "--names", "A,B", "--size", "4K"]);
        let config = wrap_config(c.wrap, c.place.clone(), vec!["true".into()]);
        let names: Vec<&str> = config.names.iter().flatten().map(|n| n.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(config.size, 4096);
        assert!(matches!(config.placement, Placement::Mount { .. }));
        assert_eq!(sweep_places(c.place).len(), 1);

        let c = parse(&["secret-mount", "--in-tmpfs-dir", "/t", "--mount-root", "/m"]);
        let config = wrap_config(c.wrap, c.place.clone(), Vec::new());
        assert!(matches!(&config.placement, Placement::InTmpfs { dir } if dir.as_os_str() == "/t"));
        // A sweep looks in both places: a run may have used either.
        assert_eq!(sweep_places(c.place).len(), 2);
    }

    #[test]
    fn error_exits() {
        let usage = wrap::Refusal::Usage("u".into());
        assert_eq!(exit_for(&usage), Exit::Usage);
        assert_eq!(exit_for(&wrap::Refusal::Plain("p".into())), Exit::Failure);
        let wait = Failure::Wait(std::io::Error::other("w"));
        assert_eq!(exit_for(&wait), Exit::Failure);
    }
}

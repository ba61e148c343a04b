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
pub mod dir;
pub mod store;
pub mod sweep;
mod wrap;

use clap::Parser;
use std::process::ExitCode;
use vault_core::{report, Exit};

pub const TOOL: &str = "secret-mount";

pub fn run() -> ExitCode {
    // Before anything else: a core dump must never hold decrypted secrets
    // (this also keeps other users' debuggers off the process).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        report(TOOL, format!("cannot turn core dumps off: {e}"));
        return Exit::Failure.into();
    }
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Sweep { place }) => sweep(&place),
        None => wrap::run(cli.wrap, cli.place, cli.cmd),
    }
}

fn sweep(place: &cli::PlaceArgs) -> ExitCode {
    let mut places = vec![dir::Placement::Mount {
        root: place.mount_root.clone(),
    }];
    if let Some(d) = &place.in_tmpfs_dir {
        places.push(dir::Placement::InTmpfs { dir: d.clone() });
    }
    let mut failed = false;
    for p in &places {
        let (removed, errors) = sweep::sweep(p);
        for path in removed {
            report(TOOL, format!("swept {}", path.display()));
        }
        for e in errors {
            report(TOOL, format!("sweep: {e}"));
            failed = true;
        }
    }
    if failed {
        Exit::Failure.into()
    } else {
        Exit::Ok.into()
    }
}

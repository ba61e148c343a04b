//! The command line of vault-scan.

use clap::Parser;

/// Fetch the ops repo and print one JSON line per pending action.
///
/// Reads only `vault/actions/` of the watched branch as fetched from the
/// remote (never a working tree). stdout: one scan line per pending action,
/// sorted by id (see `vault_core::ScanLine`); an `error` line per invalid
/// action file; `"resume": true` on this dispatcher's own `running` claims.
///
/// Exit codes: 0 listed (error lines are data), 1 failure, 2 usage,
/// 4 remote unreachable (nothing printed; retry later), 6 the branch was
/// rewritten (nothing printed until `--accept-rewrite <new tip>`).
#[derive(Debug, Parser)]
#[command(name = "vault-scan", version)]
pub struct Cli {
    #[command(flatten)]
    pub repo: vault_core::cli::RepoArgs,

    /// Also say on stderr which actions are skipped and why (another
    /// dispatcher's claim, an unreadable result file)
    #[arg(long, short)]
    pub verbose: bool,

    /// Ignore (and rebuild) the scan cache kept beside the cache clone
    #[arg(long)]
    pub no_scan_cache: bool,

    /// Accept a rewritten branch (force-push, reset) whose new tip is SHA,
    /// after checking its history by hand; ids seen before stay spent
    #[arg(long, value_name = "SHA")]
    pub accept_rewrite: Option<String>,

    /// (`--policy` is read here too, so that a policy file that does not
    /// parse stops the cycle before anything is claimed.)
    #[command(flatten)]
    pub admit: vault_core::cli::AdmitArgs,

    #[command(flatten)]
    pub trust: vault_core::cli::TrustArgs,
}

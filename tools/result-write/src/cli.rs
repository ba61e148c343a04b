//! The command line of result-write.

use clap::Parser;

/// Record results in the ops repo: write `vault/actions/<id>.result.json`,
/// commit as this dispatcher, push (never by force).
///
/// stdin: result lines (`vault_core::ActionResult`), or with `--claim` scan
/// lines, each becoming a `running` claim. stdout: one line per recorded
/// result, `{"id":"...","status":"...","commit":"<sha holding it>"}`.
///
/// Exit codes: 0 all recorded; 1 failure (a bad input line, the server
/// refused the push); 2 usage; 3 lost race (a claim found another
/// dispatcher's result, or a final result found a different final result:
/// nothing written for it); 4 remote unreachable (final results are
/// spooled and pushed by the next call; a claim is not spooled); 6 the
/// branch was rewritten (its tip does not descend from the last one seen:
/// nothing written, final results stay spooled until an operator runs
/// `vault-scan --accept-rewrite`).
#[derive(Debug, Parser)]
#[command(name = "result-write", version)]
pub struct Cli {
    #[command(flatten)]
    pub repo: vault_core::cli::RepoArgs,

    /// Read scan lines on stdin and write a `running` claim for each
    #[arg(long, conflicts_with = "flush")]
    pub claim: bool,

    /// Only push the results spooled by earlier calls (stdin is not read)
    #[arg(long)]
    pub flush: bool,

    /// Push attempts when the branch moves under us
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub tries: u32,

    /// Settle a stuck claim: record a final `abandoned` result over the
    /// `running` claim of ID (refused unless it is stuck, or with --force;
    /// always refused when this host's ledger says its container may still
    /// run). Stdin is not read
    #[arg(long, value_name = "ID",
          conflicts_with_all = ["claim", "flush", "archive"], requires = "reason")]
    pub abandon: Option<vault_core::ActionId>,

    /// With --abandon: why (recorded in the result's `error`)
    #[arg(long, value_name = "TEXT", requires = "abandon")]
    pub reason: Option<String>,

    /// With --abandon: settle a claim that is not stuck yet
    #[arg(long, requires = "abandon")]
    pub force: bool,

    #[command(flatten)]
    pub stuck: vault_core::cli::StuckArgs,

    /// Move finished actions out of vault/actions onto the archive branch
    /// vault-archive/<branch> (stdin is not read); prints
    /// {"archived":N,"more":BOOL}, more: call again, the cap of 1000 was hit
    #[arg(long, conflicts_with_all = ["claim", "flush"])]
    pub archive: bool,

    /// With --archive: move a finished action once its result's
    /// `finished_at` is this old (0: at once)
    #[arg(long, env = "VAULT_ARCHIVE_AFTER_S", value_name = "SECONDS",
          default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(0..=3_153_600_000))]
    pub archive_after_s: u64,

    /// Sign the claim and result commits with this ssh private key
    /// (ed25519, no passphrase), so that `git verify-commit` accepts them
    #[arg(long, env = "VAULT_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub trust: vault_core::cli::TrustArgs,
}

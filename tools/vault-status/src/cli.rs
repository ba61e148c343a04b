//! The command line of vault-status.

use clap::Parser;

/// List what the dispatchers of an ops repo are doing: pending, running,
/// stuck and recently finished actions.
///
/// Reads `vault/actions/` of the watched branch as fetched from the remote,
/// like vault-scan (a cache clone, no checkout). Needs no secret, no
/// identity and no Docker socket: anyone who may read the repo may run it.
/// stdout: a table on a terminal; JSON Lines with `--json` or when stdout
/// is not a terminal (one object per action: id, status, age_s, since,
/// dispatcher, duration_ms, exit_code, approver, reason).
///
/// A `running` claim is stuck once its action's timeout, the grace and the
/// stuck margin have all run out: no healthy dispatcher is still on it.
/// Settle one with `result-write --abandon <id> --reason "..."`.
///
/// Exit codes: 0 listed, 1 failure, 2 usage, 4 remote unreachable.
#[derive(Debug, Parser)]
#[command(name = "vault-status", version)]
pub struct Cli {
    #[command(flatten)]
    pub repo: vault_core::cli::RepoArgs,

    /// JSON Lines even on a terminal
    #[arg(long)]
    pub json: bool,

    /// Only these statuses (comma-separated): pending, running, stuck,
    /// succeeded, failed, timed_out, rejected, error, abandoned, invalid
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<String>,

    /// Only this action id
    #[arg(long, value_name = "ID")]
    pub id: Option<vault_core::ActionId>,

    /// List finished actions whose result landed this long ago at most:
    /// seconds, or a number with s, m, h or d
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub since: u64,

    /// Read the cache clone as last fetched (no request to the remote)
    #[arg(long)]
    pub cached: bool,

    #[command(flatten)]
    pub stuck: vault_core::cli::StuckArgs,
}

/// The statuses `--status` takes.
pub const STATUSES: &[&str] = &[
    "pending",
    "running",
    "stuck",
    "succeeded",
    "failed",
    "timed_out",
    "rejected",
    "error",
    "abandoned",
    "invalid",
];

fn parse_status(s: &str) -> Result<String, String> {
    let s = s.trim();
    if STATUSES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown status {s:?} (one of {})",
            STATUSES.join(", ")
        ))
    }
}

/// Seconds from `90`, `90s`, `15m`, `24h` or `7d`.
fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age (e.g. 90, 15m, 24h, 7d)"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?} (s, m, h or d)")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("15m"), Ok(900));
        assert_eq!(parse_age("24h"), Ok(86_400));
        assert_eq!(parse_age("7d"), Ok(604_800));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("-1").is_err());
    }
}

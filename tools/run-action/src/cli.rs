//! Command line of run-action. Every flag also reads its environment
//! variable, so one exported environment configures the whole pipeline.

use crate::config::{
    RunConfig, Unenforced, DEFAULT_GATEWAY_ROOTS, DEFAULT_GRACE_S, DEFAULT_MAX_CPUS,
    DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_PIDS, DEFAULT_RUNNER_USER, DEFAULT_TIMEOUT_S,
};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use vault_core::{DispatcherId, RunnerUser};

/// Run one approved action in a locked-down container.
///
/// Reads ONE scan line on stdin, runs the action through the Docker Engine
/// API, streams the container's output (every secret value masked) to
/// stderr and prints exactly one result line on stdout.
///
/// Exit status: 0 the action succeeded; 5 a result line was printed whose
/// status is not `succeeded`; 1 no result line could be printed; 2 usage.
#[derive(Debug, Parser)]
#[command(name = "run-action", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    /// Cache directory: holds the run ledger (`<cache>/ledger/<id>.json`,
    /// never removed) and the per-run action file
    /// (`<cache>/run/<id>/action.json`).
    #[arg(long, env = "VAULT_CACHE", global = true)]
    pub cache: Option<PathBuf>,

    /// Code checkouts (TOML, on this host): the repo URL prefixes an
    /// action's `checkout` may name, each with its credential and the refs
    /// it may push; the size cap, fetch timeout and how long a workspace
    /// whose push failed is kept. Unset: an action with a checkout is
    /// rejected.
    #[arg(
        long,
        env = "VAULT_CHECKOUT_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub checkout_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove the exited container `vault-<id>`, its action file and its
    /// code workspace (unless kept for inspection after a failed push), once
    /// the result is durably recorded (the run-ledger record stays). Refuses
    /// a running container; exits 0 also when it is already gone.
    Rm {
        /// The action id.
        id: String,
    },
    /// Remove code workspaces (`<cache>/checkouts/<id>`) kept for
    /// inspection once their time is up, and those older than the
    /// retention whose container is gone (a run that never got as far as
    /// its result). Exit 0, 1 if one could not be removed, 4 if the daemon
    /// is unreachable (then only kept ones are swept).
    Sweep,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub admit: vault_core::cli::AdmitArgs,

    /// This dispatcher's name, in labels and results [default: hostname].
    #[arg(long, env = "VAULT_DISPATCHER_ID", value_parser = DispatcherId::from_flag)]
    pub dispatcher_id: Option<DispatcherId>,

    /// Image for actions that name none.
    #[arg(long, env = "VAULT_RUNNER_IMAGE")]
    pub runner_image: Option<String>,

    /// Comma-separated image refs (`*` globs) an action may use; empty
    /// refuses every image.
    #[arg(long, env = "VAULT_ALLOW_IMAGES", default_value = "")]
    pub allow_images: String,

    /// Timeout in seconds for actions that set none.
    #[arg(long, env = "VAULT_TIMEOUT_S", default_value_t = DEFAULT_TIMEOUT_S,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,

    /// Upper bound on any action's timeout_s [default: none].
    #[arg(long, env = "VAULT_MAX_TIMEOUT_S",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_timeout_s: Option<u64>,

    /// Seconds between SIGTERM and SIGKILL when an action times out.
    #[arg(long, env = "VAULT_GRACE_S", default_value_t = DEFAULT_GRACE_S,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub grace_s: u64,

    /// uid:gid the runner runs as; a bare UID means UID:UID (uid 0 is
    /// refused).
    #[arg(long, env = "VAULT_RUNNER_USER", default_value_t = DEFAULT_RUNNER_USER)]
    pub runner_user: RunnerUser,

    /// Memory cap in MiB (no swap); an action's memory_mb is capped to it.
    #[arg(long, env = "VAULT_MAX_MEMORY_MB", default_value_t = DEFAULT_MAX_MEMORY_MB,
          value_parser = clap::value_parser!(u64).range(6..))]
    pub max_memory_mb: u64,

    /// CPU cap; an action's cpus is capped to it.
    #[arg(long, env = "VAULT_MAX_CPUS", default_value_t = DEFAULT_MAX_CPUS,
          value_parser = parse_cpus)]
    pub max_cpus: f64,

    /// Process-count cap; an action's pids is capped to it.
    #[arg(long, env = "VAULT_MAX_PIDS", default_value_t = DEFAULT_MAX_PIDS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pids: u64,

    /// Let actions that ask for `"network": "bridge"` have it (otherwise
    /// they are rejected).
    #[arg(long, env = "VAULT_ALLOW_BRIDGE", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_bridge: bool,

    /// OCI runtime to run the container under (e.g. `runsc` for gVisor);
    /// when it is not registered with dockerd the action is not run.
    #[arg(long, env = "VAULT_RUNTIME")]
    pub runtime: Option<String>,

    /// Directory holding one file per secret (set by secret-mount).
    #[arg(long, env = "VAULT_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Resource limits the engine may leave unenforced, comma-separated
    /// from `memory`, `cpus`, `pids` (rootless Podman on a cgroup v1 host
    /// enforces none of them). After create, run-action reads back every
    /// option it asked for; one the engine did not apply means the
    /// container is removed unstarted and the result is `error`, unless it
    /// is a limit named here: then it runs, with a warning on stderr.
    #[arg(long, env = "VAULT_ALLOW_UNENFORCED_LIMITS", value_name = "LIMITS",
          default_value = "", value_parser = parse_unenforced)]
    pub allow_unenforced_limits: Unenforced,

    /// Comma-separated `host:port` patterns (`*` globs) that the entries of
    /// an action's `"network": {"allow": [...]}` must each match; empty
    /// rejects every such action.
    #[arg(
        long,
        env = "VAULT_ALLOW_EGRESS",
        value_name = "PATTERNS",
        default_value = ""
    )]
    pub allow_egress: String,

    /// The Docker network (made by the operator) through which an action's
    /// gateway reaches the hosts its allowlist names. Unset: actions with
    /// an allowlist are not run.
    #[arg(long, env = "VAULT_EGRESS_NETWORK", value_name = "NETWORK")]
    pub egress_network: Option<String>,

    /// The image the per-action gateway runs in: its entrypoint must be
    /// vault-gateway (scripts/gateway-image.sh builds one).
    #[arg(long, env = "VAULT_GATEWAY_IMAGE", value_name = "IMAGE")]
    pub gateway_image: Option<String>,

    /// Certificates (PEM) the gateway trusts for the hosts it adds
    /// credentials for; also added to the runner's CA bundle.
    #[arg(long, env = "VAULT_GATEWAY_ROOTS", value_name = "FILE",
          default_value = DEFAULT_GATEWAY_ROOTS)]
    pub gateway_roots: PathBuf,
}

impl RunArgs {
    /// The run's settings as plain values (all but the dispatcher id, which
    /// the caller resolves: it may fall back to the hostname).
    pub fn config(&self) -> RunConfig {
        RunConfig {
            runner_image: self.runner_image.clone(),
            allow_images: self.allow_images.clone(),
            timeout_s: self.timeout_s,
            max_timeout_s: self.max_timeout_s,
            grace: Duration::from_secs(self.grace_s),
            runner_user: self.runner_user,
            max_memory_mb: self.max_memory_mb,
            max_cpus: self.max_cpus,
            max_pids: self.max_pids,
            allow_bridge: self.allow_bridge,
            runtime: self.runtime.clone(),
            secrets_dir: self.secrets_dir.clone(),
            allow_unenforced_limits: self.allow_unenforced_limits,
            allow_egress: self.allow_egress.clone(),
            egress_network: self.egress_network.clone(),
            gateway_image: self.gateway_image.clone(),
            gateway_roots: self.gateway_roots.clone(),
        }
    }
}

fn parse_unenforced(s: &str) -> Result<Unenforced, String> {
    let mut u = Unenforced::default();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "memory" => u.memory = true,
            "cpus" => u.cpus = true,
            "pids" => u.pids = true,
            _ => {
                return Err(format!(
                    "{word:?} is not a limit: name memory, cpus or pids (comma-separated)"
                ))
            }
        }
    }
    Ok(u)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1024.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of CPUs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limit;
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_give_the_default_config() {
        let cli = Cli::try_parse_from(["run-action"]).unwrap();
        assert_eq!(cli.run.config(), RunConfig::default());
    }

    #[test]
    fn allow_bridge_forms() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["run-action"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|c| c.run.allow_bridge)
        };
        assert!(!parse(&[]).unwrap());
        assert!(parse(&["--allow-bridge"]).unwrap());
        assert!(parse(&["--allow-bridge=1"]).unwrap());
        assert!(!parse(&["--allow-bridge=no"]).unwrap());
        assert!(parse(&["--allow-bridge=maybe"]).is_err());
    }

    #[test]
    fn unenforced_limits() {
        assert_eq!(parse_unenforced(""), Ok(Unenforced::default()));
        let all = parse_unenforced("memory, cpus,pids").unwrap();
        assert!(Limit::ALL.iter().all(|l| all.allows(*l)));
        let mem = parse_unenforced("memory").unwrap();
        assert!(mem.allows(Limit::Memory) && !mem.allows(Limit::Cpus) && !mem.allows(Limit::Pids));
        for bad in ["all", "memory,disk", "Memory", "*"] {
            assert!(parse_unenforced(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runner_user_and_dispatcher_id_use_the_shared_rules() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["run-action"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
        };
        let cli = parse(&["--runner-user", "1000"]).unwrap();
        assert_eq!(
            cli.run.runner_user,
            RunnerUser {
                uid: 1000,
                gid: 1000
            }
        );
        for bad in [&["--runner-user", "0:0"][..], &["--dispatcher-id", "a<b"]] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                clap::error::ErrorKind::ValueValidation
            );
        }
    }
}

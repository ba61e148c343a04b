//! The container spec: everything locked down, and where things are mounted.

use super::docker::Engine;
use super::Ctx;
use crate::policy::Limits;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vault_core::Action;

/// Where the secrets dir is mounted in the container.
pub const SECRETS_TARGET: &str = "/run/secrets";
/// Where the action file is mounted in the container.
pub const ACTION_TARGET: &str = "/run/vault/action.json";

/// `<cache>/run/<id>`: the per-run folder holding the action file.
pub fn run_dir(cache: &Path, id: &str) -> PathBuf {
    cache.join("run").join(id)
}

pub(super) fn bind(source: &Path, target: &str) -> Mount {
    Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// What is bound into the container from the host.
pub struct Binds<'a> {
    /// The secrets folder, read-only at [`SECRETS_TARGET`].
    pub secrets_dir: Option<&'a Path>,
    /// The action file, read-only at [`ACTION_TARGET`].
    pub action_file: &'a Path,
    /// The code workspace at the action's `checkout.path`.
    pub workspace: Option<Mount>,
    /// The gateway, for an allowlisted network: the runner joins its
    /// network only, trusts its CA, and is not given the secrets it adds.
    pub gateway: Option<&'a super::gateway::Attach>,
}

/// The container's configuration: everything locked down.
pub fn container_config(
    action: &Action,
    image: &str,
    limits: &Limits,
    ctx: &Ctx<'_>,
    binds: Binds<'_>,
    engine: Engine,
) -> ContainerCreateBody {
    let Binds {
        secrets_dir,
        action_file,
        workspace,
        gateway,
    } = binds;
    let id = action.id.as_str();
    let labels = HashMap::from([
        ("vault.managed".to_string(), "1".to_string()),
        ("vault.action".to_string(), id.to_string()),
        ("vault.dispatcher".to_string(), ctx.dispatcher.to_string()),
    ]);
    let mut env: Vec<String> = action.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("VAULT_ACTION_ID={id}"));
    if let Some(g) = gateway {
        env.extend(super::gateway::runner_env(g));
    }
    // A formula runs the image's own entrypoint with argv [formula, id]; a
    // command is the whole argv (the image's entrypoint is cleared).
    let (entrypoint, cmd) = match (&action.formula, &action.command) {
        (Some(f), _) => (None, vec![f.clone(), id.to_string()]),
        (None, Some(argv)) => (Some(Vec::new()), argv.clone()),
        (None, None) => (None, Vec::new()),
    };
    let mut mounts = Vec::new();
    match (secrets_dir, gateway) {
        // The secrets the gateway adds never reach the runner: the others
        // are mounted one by one.
        (Some(dir), Some(g)) if !g.hidden.is_empty() => {
            for name in action.secrets.iter().filter(|s| !g.hidden.contains(s)) {
                mounts.push(bind(
                    &dir.join(name.as_str()),
                    &format!("{SECRETS_TARGET}/{}", name.as_str()),
                ));
            }
        }
        (Some(dir), _) => mounts.push(bind(dir, SECRETS_TARGET)),
        (None, _) => {}
    }
    if let Some(g) = gateway {
        mounts.extend(super::gateway::ca_mounts(g));
    }
    mounts.push(bind(action_file, ACTION_TARGET));
    mounts.extend(workspace);
    let mut tmpfs = HashMap::from([(
        "/tmp".to_string(),
        "rw,noexec,nosuid,nodev,size=16m".to_string(),
    )]);
    if engine == Engine::Podman {
        // Podman's compat API gives every read-only container writable,
        // exec-allowed, unbounded tmpfs mounts on /run and /var/tmp unless
        // they are asked for (its containers.conf cannot turn that off):
        // ask for them read-only, so the root stays read-only there too.
        for path in PODMAN_READ_ONLY_TMPFS {
            tmpfs.insert(
                path.to_string(),
                "ro,noexec,nosuid,nodev,size=1m".to_string(),
            );
        }
    }
    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        mounts: Some(mounts),
        memory: Some(limits.memory_bytes),
        memory_swap: Some(limits.memory_bytes),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        network_mode: Some(match gateway {
            Some(g) => g.network.clone(),
            None if limits.bridge => "bridge".into(),
            None => "none".into(),
        }),
        dns: gateway.map(|g| vec![g.ip.clone()]),
        // No IPv6 on a gateway's network: its only way out is the gateway.
        sysctls: gateway.map(|_| {
            HashMap::from([(
                "net.ipv6.conf.all.disable_ipv6".to_string(),
                "1".to_string(),
            )])
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        privileged: Some(false),
        // docker-init as PID 1: signals (the timeout's SIGTERM) reach the
        // action with their default effect, and zombies are reaped.
        init: Some(true),
        runtime: ctx.config.runtime.clone(),
        // Rootless Podman: the runner's uid:gid is the service user on the
        // host, so it reads the 0400 secret files secret-mount wrote as
        // that user (the default mapping makes it an unrelated subuid).
        userns_mode: match engine {
            Engine::Podman => Some(format!(
                "keep-id:uid={},gid={}",
                ctx.config.runner_user.uid, ctx.config.runner_user.gid
            )),
            Engine::Docker => None,
        },
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(ctx.config.runner_user.to_string()),
        env: Some(env),
        cmd: Some(cmd),
        entrypoint,
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(!limits.bridge && gateway.is_none()),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Where Podman mounts a writable tmpfs in a read-only container unless
/// told otherwise.
pub(super) const PODMAN_READ_ONLY_TMPFS: [&str; 2] = ["/run", "/var/tmp"];

/// Docker's default capability set. Podman's inspect does not echo
/// `CapDrop: ["ALL"]`: it lists the default capabilities it dropped.
pub(super) const DEFAULT_CAPS: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

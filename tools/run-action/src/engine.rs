//! Running one action through the Docker Engine API.

use crate::cli::{Limit, RunArgs};
use crate::mask::{self, Masker, MIN_PATTERN_LEN};
use crate::output::OutputSink;
use crate::policy::{self, Limits};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountPoint, MountType,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretBox};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use vault_core::ledger::{Ledger, LedgerError, StartRecord};
use vault_core::{Action, ActionId, ActionResult, ContainerInfo, ScanLine, Status};

/// Where the secrets dir is mounted in the container.
pub const SECRETS_TARGET: &str = "/run/secrets";
/// Where the action file is mounted in the container.
pub const ACTION_TARGET: &str = "/run/vault/action.json";

/// How long to wait for the output stream to drain once the container
/// has exited, and for a killed container to be reported stopped.
/// How long an unreachable daemon is waited for after the runner started,
/// before the outcome is given up as unreadable.
const DAEMON_RETURN_LIMIT: Duration = Duration::from_secs(90);
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const KILL_LIMIT: Duration = Duration::from_secs(60);

/// Everything one run needs besides the scan line.
pub struct Ctx<'a> {
    pub args: &'a RunArgs,
    pub cache: &'a Path,
    pub dispatcher: &'a str,
}

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// One secret value, as read from the secrets dir.
type Secret = SecretBox<Vec<u8>>;

/// Connect as the docker CLI would (`DOCKER_HOST`, else the local socket)
/// and negotiate the API version down to the daemon's.
pub async fn connect() -> Result<Docker, String> {
    connect_engine().await.map(|(docker, _)| docker)
}

/// Where bollard (and the docker CLI) connect without `DOCKER_HOST`.
const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

/// [`connect`], also learning which engine answers, from the one `/version`
/// call the negotiation makes (Podman's takes about 0.6 s: it asks conmon
/// and the OCI runtime for theirs).
pub async fn connect_engine() -> Result<(Docker, Engine), String> {
    let host = std::env::var("DOCKER_HOST").ok();
    let shown = host.clone().unwrap_or_else(|| "the local socket".into());
    let unreachable = |e: DockerError| format!("cannot reach the docker daemon at {shown}: {e}");
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot connect to the docker daemon at {shown}: {e}"))?;
    let version = docker.version().await.map_err(unreachable)?;
    let engine = engine_of(&version);
    let server = version.api_version.as_deref().and_then(|v| {
        let (major, minor) = v.split_once('.')?;
        Some(bollard::ClientVersion {
            major_version: major.parse().ok()?,
            minor_version: minor.parse().ok()?,
        })
    });
    let Some(server) = server else {
        return Err(format!(
            "cannot reach the docker daemon at {shown}: it gave no API version"
        ));
    };
    if server >= docker.client_version() {
        return Ok((docker, engine));
    }
    // Downgrade as negotiate_version would, without asking again; a unix
    // socket (the local one, rootless Podman's) is reconnected at the
    // server's version, other transports negotiate.
    let unix = host
        .as_deref()
        .unwrap_or(LOCAL_SOCKET)
        .starts_with("unix://");
    let docker = if unix {
        let addr = host.unwrap_or_else(|| LOCAL_SOCKET.to_string());
        Docker::connect_with_unix(&addr, 120, &server)
            .map_err(|e| format!("cannot connect to the docker daemon at {shown}: {e}"))?
    } else {
        docker.negotiate_version().await.map_err(unreachable)?
    };
    Ok((docker, engine))
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// Inspect `name`; `Ok(None)` when there is no such container.
pub async fn inspect(
    docker: &Docker,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, DockerError> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when the container carries the labels run-action gives its own.
pub fn is_ours(c: &ContainerInspectResponse, id: &str) -> bool {
    let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
    labels.is_some_and(|l| {
        l.get("vault.managed").map(String::as_str) == Some("1")
            && l.get("vault.action").map(String::as_str) == Some(id)
    })
}

fn state_of(c: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    c.state.as_ref().and_then(|s| s.status)
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// Attach to a container's output streams (stdout and stderr apart).
fn attach_options() -> bollard::query_parameters::AttachContainerOptions {
    AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .build()
}

/// Run (or resume) the action of `scan`. Yields a result, or an error when
/// the run ledger cannot be read (then nothing was started and nothing may
/// be decided: no result line).
pub async fn execute(scan: &ScanLine, ctx: &Ctx<'_>) -> Result<ActionResult, LedgerError> {
    let fail = |status: Status, err: String| {
        vault_core::report("run-action", format_args!("{}: {status}: {err}", scan.id));
        ActionResult::not_run(scan, status, ctx.dispatcher, err)
    };
    let action = match (&scan.spent, scan.valid_action()) {
        (Some(_), _) => None,
        (None, Ok(a)) => Some(a),
        (None, Err(e)) => return Ok(fail(Status::Rejected, format!("invalid action: {e}"))),
    };
    let ledger = Ledger::new(ctx.cache);
    let record = ledger.lookup(&scan.id)?;
    // A fresh run is refused by policy without asking the daemon; a resume
    // (or an id started before) must first look for the container, which
    // may have run already.
    let checked = match action {
        Some(a) if !scan.resume && record.is_none() => match preflight(a, ctx.args) {
            Ok(p) => Some(p),
            Err((status, e)) => return Ok(fail(status, e)),
        },
        _ => None,
    };
    let id = scan.id.as_str();
    let name = scan.id.container_name();
    // What to record when this id must not start (again).
    let spent = |why: String| fail(Status::Abandoned, why);
    let never_again = |r: &StartRecord| {
        format!(
            "this action was {}, and its result is not in the repo: an action id is started at most once (land a new id to run it again)",
            r.describe()
        )
    };
    let (docker, engine) = match connect_engine().await {
        Ok(d) => d,
        Err(e) => {
            return Ok(match (&scan.spent, &record) {
                (Some(why), _) => spent(why.clone()),
                (None, Some(r)) => spent(never_again(r)),
                (None, None) => fail(Status::Error, e),
            })
        }
    };
    let existing = match inspect(&docker, &name).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(fail(
                Status::Error,
                format!("cannot inspect container {name}: {e}"),
            ))
        }
    };
    if let Some(c) = existing {
        if !is_ours(&c, id) {
            return Ok(fail(
                Status::Error,
                format!("a container named {name} exists that run-action did not create; not touching it"),
            ));
        }
        match state_of(&c) {
            Some(ContainerStateStatusEnum::CREATED) => {
                // Created but never started. Its mounts point at the
                // previous run's secrets: it cannot be started as it is.
                if let Err(e) = remove(&docker, &name, true).await {
                    return Ok(fail(
                        Status::Error,
                        format!("cannot remove never-started {name}: {e}"),
                    ));
                }
                if let Some(r) = &record {
                    return Ok(spent(format!(
                        "this action was {}, but the dispatcher stopped before starting the container (removed now); an action id is started at most once (land a new id to run it)",
                        r.describe()
                    )));
                }
            }
            // A container of this id exists: whatever the scan line says,
            // its true outcome is read from it, and nothing starts again.
            Some(
                ContainerStateStatusEnum::EXITED
                | ContainerStateStatusEnum::DEAD
                | ContainerStateStatusEnum::REMOVING,
            ) => return Ok(collect(scan, ctx, &docker, c).await),
            _ => return Ok(reattach(scan, ctx, &docker, record.as_ref(), c).await),
        }
    } else if let Some(r) = &record {
        return Ok(spent(never_again(r)));
    }
    let Some(action) = action else {
        return Ok(spent(scan.spent.clone().unwrap_or_default()));
    };
    // A cache written by an earlier version kept its proof of a start in
    // `<cache>/journal/<id>`: it still counts.
    if legacy_journal_started(ctx.cache, id) {
        return Ok(spent(format!(
            "container {name} is gone, but the journal shows it was started: its outcome is lost; not running it a second time"
        )));
    }
    Ok(run_fresh(scan, action, checked, ctx, &docker, engine, &ledger).await)
}

/// Whether an earlier version's journal (`<cache>/journal/<id>`) has a
/// `start` line. Never removed by this version.
fn legacy_journal_started(cache: &Path, id: &str) -> bool {
    std::fs::read_to_string(cache.join("journal").join(id))
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("start")))
}

/// The checks that need no daemon: the image (and that policy allows it)
/// and the limits (and that policy allows the network asked for).
fn preflight(action: &Action, args: &RunArgs) -> Result<(String, Limits), (Status, String)> {
    let Some(image) = action.image.clone().or_else(|| args.runner_image.clone()) else {
        return Err((
            Status::Error,
            "the action names no image and VAULT_RUNNER_IMAGE is not set".into(),
        ));
    };
    if !policy::image_allowed(&args.allow_images, &image) {
        return Err((Status::Rejected, policy::Refusal::Image(image).to_string()));
    }
    let limits = policy::limits(action, args).map_err(|e| (Status::Rejected, e.to_string()))?;
    Ok((image, limits))
}

/// Read the named secrets from the secrets dir.
fn load_secrets(action: &Action, dir: Option<&Path>) -> Result<Vec<Secret>, String> {
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

fn masker_for(secrets: &[Secret]) -> Masker {
    Masker::new(secrets.iter().map(|s| s.expose_secret().as_slice()))
}

/// Write the action file for the container, mode 0444, atomically.
fn write_action_file(cache: &Path, action: &Action) -> std::io::Result<PathBuf> {
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

/// `<cache>/run/<id>`: the per-run folder holding the action file.
pub fn run_dir(cache: &Path, id: &str) -> PathBuf {
    cache.join("run").join(id)
}

fn bind(source: &Path, target: &str) -> Mount {
    Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The container's configuration: everything locked down.
pub fn container_config(
    action: &Action,
    image: &str,
    limits: &Limits,
    ctx: &Ctx<'_>,
    secrets_dir: Option<&Path>,
    action_file: &Path,
    engine: Engine,
) -> ContainerCreateBody {
    let id = action.id.as_str();
    let labels = HashMap::from([
        ("vault.managed".to_string(), "1".to_string()),
        ("vault.action".to_string(), id.to_string()),
        ("vault.dispatcher".to_string(), ctx.dispatcher.to_string()),
    ]);
    let mut env: Vec<String> = action.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("VAULT_ACTION_ID={id}"));
    // A formula runs the image's own entrypoint with argv [formula, id]; a
    // command is the whole argv (the image's entrypoint is cleared).
    let (entrypoint, cmd) = match (&action.formula, &action.command) {
        (Some(f), _) => (None, vec![f.clone(), id.to_string()]),
        (None, Some(argv)) => (Some(Vec::new()), argv.clone()),
        (None, None) => (None, Vec::new()),
    };
    let mut mounts = Vec::new();
    if let Some(dir) = secrets_dir {
        mounts.push(bind(dir, SECRETS_TARGET));
    }
    mounts.push(bind(action_file, ACTION_TARGET));
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
        network_mode: Some(if limits.bridge { "bridge" } else { "none" }.into()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        privileged: Some(false),
        // docker-init as PID 1: signals (the timeout's SIGTERM) reach the
        // action with their default effect, and zombies are reaped.
        init: Some(true),
        runtime: ctx.args.runtime.clone(),
        // Rootless Podman: the runner's uid:gid is the service user on the
        // host, so it reads the 0400 secret files secret-mount wrote as
        // that user (the default mapping makes it an unrelated subuid).
        userns_mode: match engine {
            Engine::Podman => Some(format!(
                "keep-id:uid={},gid={}",
                ctx.args.runner_user.uid, ctx.args.runner_user.gid
            )),
            Engine::Docker => None,
        },
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(ctx.args.runner_user.to_string()),
        env: Some(env),
        cmd: Some(cmd),
        entrypoint,
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(!limits.bridge),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The engine behind the Docker Engine API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

/// Which engine gave this `/version` answer (Podman lists a component named
/// "Podman Engine").
pub fn engine_of(v: &bollard::models::SystemVersion) -> Engine {
    let podman = v
        .components
        .iter()
        .flatten()
        .any(|c| c.name.eq_ignore_ascii_case("Podman Engine"));
    if podman {
        Engine::Podman
    } else {
        Engine::Docker
    }
}

/// Where Podman mounts a writable tmpfs in a read-only container unless
/// told otherwise.
const PODMAN_READ_ONLY_TMPFS: [&str; 2] = ["/run", "/var/tmp"];

/// Docker's default capability set. Podman's inspect does not echo
/// `CapDrop: ["ALL"]`: it lists the default capabilities it dropped.
const DEFAULT_CAPS: [&str; 14] = [
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

/// One option run-action asked for that the created container lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapplied {
    /// Set for a resource limit (which `--allow-unenforced-limits` may
    /// let run unenforced); `None` for every other option.
    pub limit: Option<Limit>,
    /// What is missing, naming the API field, e.g. "the memory limit
    /// (HostConfig.Memory: asked 1073741824, the engine shows 0)".
    pub what: String,
}

fn cap_name(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
}

fn opt_tokens(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Compare what was asked (`asked`, the create body) with what the engine
/// reports for the created container (`c`). Empty: everything applied.
pub fn unapplied(asked: &ContainerCreateBody, c: &ContainerInspectResponse) -> Vec<Unapplied> {
    let mut out = Vec::new();
    let mut miss = |limit: Option<Limit>, what: String| out.push(Unapplied { limit, what });
    let none = HostConfig::default();
    let want = asked.host_config.as_ref().unwrap_or(&none);
    let got = c.host_config.as_ref().unwrap_or(&none);
    let show = |v: Option<i64>| v.map_or("nothing".to_string(), |v| v.to_string());

    let user = c.config.as_ref().and_then(|c| c.user.clone());
    if asked.user.is_some() && user != asked.user {
        miss(
            None,
            format!(
                "the runner user (Config.User: asked {:?}, the engine shows {:?})",
                asked.user.as_deref().unwrap_or(""),
                user.as_deref().unwrap_or("")
            ),
        );
    }
    for (limit, field, what, w, g) in [
        (
            Limit::Memory,
            "HostConfig.Memory",
            "the memory limit",
            want.memory,
            got.memory,
        ),
        (
            Limit::Memory,
            "HostConfig.MemorySwap",
            "the memory+swap limit",
            want.memory_swap,
            got.memory_swap,
        ),
        (
            Limit::Pids,
            "HostConfig.PidsLimit",
            "the process limit",
            want.pids_limit,
            got.pids_limit,
        ),
    ] {
        if w.is_some() && w != g {
            miss(
                Some(limit),
                format!(
                    "{what} ({field}: asked {}, the engine shows {})",
                    show(w),
                    show(g)
                ),
            );
        }
    }
    if let Some(w) = want.nano_cpus {
        // Podman may carry the limit as a CFS quota per period instead.
        let from_quota = match (got.cpu_quota, got.cpu_period) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some(q.saturating_mul(1_000_000_000) / p),
            _ => None,
        };
        let close = |v: Option<i64>| v.is_some_and(|v| v > 0 && (v - w).abs() <= 1_000_000);
        if !close(got.nano_cpus) && !close(from_quota) {
            miss(
                Some(Limit::Cpus),
                format!(
                    "the CPU limit (HostConfig.NanoCpus: asked {w}, the engine shows {})",
                    show(got.nano_cpus.or(from_quota))
                ),
            );
        }
    }
    if want
        .cap_drop
        .as_ref()
        .is_some_and(|d| d.iter().any(|c| cap_name(c) == "ALL"))
    {
        let dropped: Vec<String> = got.cap_drop.iter().flatten().map(|c| cap_name(c)).collect();
        let all = dropped.iter().any(|c| c == "ALL")
            || DEFAULT_CAPS.iter().all(|d| dropped.iter().any(|c| c == d));
        if !all {
            miss(
                None,
                format!("dropping every capability (HostConfig.CapDrop: asked [\"ALL\"], the engine shows {dropped:?})"),
            );
        }
    }
    let added: Vec<&String> = got.cap_add.iter().flatten().collect();
    if !added.is_empty() {
        miss(
            None,
            format!("no added capability (HostConfig.CapAdd shows {added:?})"),
        );
    }
    let secopt: Vec<String> = got
        .security_opt
        .iter()
        .flatten()
        .map(|o| o.replace(':', "="))
        .collect();
    for o in want.security_opt.iter().flatten() {
        let o = o.replace(':', "=");
        let on = secopt.iter().any(|g| *g == o || *g == format!("{o}=true"));
        if !on {
            miss(
                None,
                format!("{o} (HostConfig.SecurityOpt: the engine shows {secopt:?})"),
            );
        }
    }
    for g in &secopt {
        if g.ends_with("=unconfined") || g == "no-new-privileges=false" {
            miss(
                None,
                format!("the default confinement (HostConfig.SecurityOpt has {g:?})"),
            );
        }
    }
    let flags = [
        (
            "a read-only root file system",
            "HostConfig.ReadonlyRootfs",
            want.readonly_rootfs,
            got.readonly_rootfs,
        ),
        (
            "an init process as PID 1",
            "HostConfig.Init",
            want.init,
            got.init,
        ),
        (
            "an unprivileged container",
            "HostConfig.Privileged",
            want.privileged,
            got.privileged,
        ),
        (
            "no auto-remove",
            "HostConfig.AutoRemove",
            want.auto_remove,
            got.auto_remove,
        ),
    ];
    for (what, field, w, g) in flags {
        // An absent false is false; an absent true is not applied.
        if let Some(w) = w {
            if g.unwrap_or(false) != w {
                miss(
                    None,
                    format!("{what} ({field}: asked {w}, the engine shows {g:?})"),
                );
            }
        }
    }
    if let Some(w) = &want.network_mode {
        let g = got.network_mode.clone().unwrap_or_default();
        let ok = if w == "none" {
            g == "none"
        } else {
            // A bridge asked for: anything but sharing another namespace.
            !(g == "host" || g.starts_with("container:") || g.starts_with("ns:"))
        };
        if !ok {
            miss(
                None,
                format!("the network mode (HostConfig.NetworkMode: asked {w:?}, the engine shows {g:?})"),
            );
        }
    }
    if let Some(w) = want.log_config.as_ref().and_then(|l| l.typ.as_deref()) {
        let g = got
            .log_config
            .as_ref()
            .and_then(|l| l.typ.as_deref())
            .unwrap_or("");
        if g != w {
            miss(
                None,
                format!("the logging driver (HostConfig.LogConfig.Type: asked {w:?}, the engine shows {g:?})"),
            );
        }
    }
    if let Some(w) = &want.runtime {
        let g = got.runtime.as_deref().unwrap_or("");
        if g != w {
            miss(
                None,
                format!(
                    "the OCI runtime (HostConfig.Runtime: asked {w:?}, the engine shows {g:?})"
                ),
            );
        }
    }
    let asked_tmpfs = want.tmpfs.clone().unwrap_or_default();
    let got_tmpfs = got.tmpfs.clone().unwrap_or_default();
    for (path, opts) in &asked_tmpfs {
        match got_tmpfs.get(path) {
            None => miss(
                None,
                format!("the tmpfs on {path} (HostConfig.Tmpfs lacks it)"),
            ),
            Some(g) => {
                let have = opt_tokens(g);
                let lacking: Vec<&str> = opt_tokens(opts)
                    .into_iter()
                    .filter(|t| !have.contains(t))
                    .collect();
                let weaker: Vec<&str> = have
                    .iter()
                    .copied()
                    .filter(|t| matches!(*t, "exec" | "suid" | "dev"))
                    .collect();
                if !lacking.is_empty() || !weaker.is_empty() {
                    miss(
                        None,
                        format!("the tmpfs options on {path} (HostConfig.Tmpfs: asked {opts:?}, the engine shows {g:?})"),
                    );
                }
            }
        }
    }
    for path in got_tmpfs.keys().filter(|p| !asked_tmpfs.contains_key(*p)) {
        miss(
            None,
            format!(
                "a read-only root: the engine added a tmpfs on {path} (HostConfig.Tmpfs: {:?})",
                got_tmpfs[path]
            ),
        );
    }
    let asked_mounts: Vec<&Mount> = want.mounts.iter().flatten().collect();
    let got_mounts: Vec<&MountPoint> = c.mounts.iter().flatten().collect();
    for m in &asked_mounts {
        let target = m.target.as_deref().unwrap_or("");
        let found = got_mounts
            .iter()
            .find(|g| g.destination.as_deref() == Some(target));
        match found {
            None => miss(None, format!("the mount on {target} (Mounts lacks it)")),
            Some(g) if m.read_only == Some(true) && g.rw != Some(false) => miss(
                None,
                format!(
                    "a read-only mount on {target} (Mounts: the engine shows RW {:?})",
                    g.rw
                ),
            ),
            Some(_) => {}
        }
    }
    for g in &got_mounts {
        let dest = g.destination.as_deref().unwrap_or("?");
        if !asked_mounts
            .iter()
            .any(|m| m.target.as_deref() == Some(dest))
        {
            miss(
                None,
                format!("no other mount: the engine added one on {dest} (Mounts: {}, e.g. an image VOLUME or a default volume)", g.source.as_deref().unwrap_or("?")),
            );
        }
    }
    out
}

/// Inspect the created container and compare it with `asked`. `Err`: why
/// it must not start. Unenforced limits the operator allowed are only
/// reported (on stderr).
async fn verify_created(
    docker: &Docker,
    cid: &str,
    asked: &ContainerCreateBody,
    args: &RunArgs,
    id: &ActionId,
) -> Result<(), String> {
    let c = match inspect(docker, cid).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err("the created container vanished before it was checked".into()),
        Err(e) => {
            return Err(format!(
                "cannot read back the created container to check its hardening: {e}"
            ))
        }
    };
    let missing = unapplied(asked, &c);
    let allowed = |u: &Unapplied| {
        u.limit
            .is_some_and(|l| args.allow_unenforced_limits.allows(l))
    };
    let (tolerated, refused): (Vec<&Unapplied>, Vec<&Unapplied>) =
        missing.iter().partition(|u| allowed(u));
    if refused.is_empty() {
        if !tolerated.is_empty() {
            vault_core::report(
                "run-action",
                format_args!(
                    "{id}: warning: the engine did not apply {}: running all the same, as VAULT_ALLOW_UNENFORCED_LIMITS allows",
                    join_what(&tolerated)
                ),
            );
        }
        return Ok(());
    }
    let mut why = format!(
        "the engine did not apply {}: refusing to run weaker than asked",
        join_what(&refused)
    );
    // The whole list to name: those refused and those already allowed.
    let limits: Vec<&str> = {
        let mut l: Vec<Limit> = missing.iter().filter_map(|u| u.limit).collect();
        l.sort();
        l.dedup();
        l.into_iter().map(Limit::name).collect()
    };
    if !limits.is_empty() && refused.iter().all(|u| u.limit.is_some()) {
        why.push_str(&format!(
            " (rootless Podman on a cgroup v1 host cannot enforce resource limits; to run without these anyway, set VAULT_ALLOW_UNENFORCED_LIMITS={}: see docs/deploy/rootless.md)",
            limits.join(",")
        ));
    }
    Err(why)
}

fn join_what(u: &[&Unapplied]) -> String {
    u.iter()
        .map(|u| u.what.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `checked`: what [`preflight`] gave already, if it ran (not on a resume).
async fn run_fresh(
    scan: &ScanLine,
    action: &Action,
    checked: Option<(String, Limits)>,
    ctx: &Ctx<'_>,
    docker: &Docker,
    engine: Engine,
    ledger: &Ledger,
) -> ActionResult {
    let fail = |status: Status, err: String| {
        vault_core::report("run-action", format_args!("{}: {status}: {err}", scan.id));
        ActionResult::not_run(scan, status, ctx.dispatcher, err)
    };
    let (image, limits) = match checked.map_or_else(|| preflight(action, ctx.args), Ok) {
        Ok(p) => p,
        Err((status, e)) => return fail(status, e),
    };
    let secrets_dir = ctx.args.secrets_dir.as_deref();
    let secrets = match load_secrets(action, secrets_dir) {
        Ok(s) => s,
        Err(e) => return fail(Status::Error, e),
    };
    if let Some(rt) = &ctx.args.runtime {
        match docker.info().await {
            Ok(info) if info.runtimes.as_ref().is_some_and(|r| r.contains_key(rt)) => {}
            Ok(_) => {
                return fail(
                    Status::Error,
                    format!(
                        "runtime {rt:?} is not registered with dockerd; refusing to run without it"
                    ),
                )
            }
            Err(e) => {
                return fail(
                    Status::Error,
                    format!("cannot query dockerd's runtimes: {e}"),
                )
            }
        }
    }
    let image_id = match docker.inspect_image(&image).await {
        Ok(i) => i.id,
        Err(e) if is_status(&e, 404) => {
            return fail(
                Status::Error,
                format!("image {image:?} is not present on the daemon (run-action never pulls)"),
            )
        }
        Err(e) => {
            return fail(
                Status::Error,
                format!("cannot inspect image {image:?}: {e}"),
            )
        }
    };
    let action_file = match write_action_file(ctx.cache, action) {
        Ok(p) => p,
        Err(e) => return fail(Status::Error, format!("cannot write the action file: {e}")),
    };
    let cleanup_action_file = || {
        let _ = std::fs::remove_dir_all(run_dir(ctx.cache, action.id.as_str()));
    };
    let config = container_config(
        action,
        &image,
        &limits,
        ctx,
        secrets_dir,
        &action_file,
        engine,
    );
    // What was asked, kept to check what the engine applied.
    let asked = config.clone();
    let name = scan.id.container_name();
    // The proof of this start, durable before the container exists.
    let record = StartRecord {
        id: scan.id.clone(),
        blob: scan.blob.clone(),
        commit: scan.commit.clone(),
        container: name.clone(),
        container_id: None,
        not_started: None,
        dispatcher: ctx.dispatcher.to_string(),
        started_at: vault_core::time::now_rfc3339(),
    };
    match ledger.record_start(&record) {
        Ok(()) => {}
        Err(LedgerError::Exists { .. }) => {
            cleanup_action_file();
            return fail(
                Status::Abandoned,
                "another run-action recorded a start of this id in the run ledger first; not starting a second one".into(),
            );
        }
        Err(e) => {
            cleanup_action_file();
            return fail(Status::Error, format!("{e}; nothing was started"));
        }
    }
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = match docker.create_container(Some(opts), config).await {
        Ok(c) => c,
        Err(e) if is_status(&e, 409) => {
            return fail(
                Status::Error,
                format!("container {name} already exists (another run of this action?); not starting a second one"),
            )
        }
        Err(e) => {
            cleanup_action_file();
            return fail(Status::Error, format!("cannot create container {name}: {e}"));
        }
    };
    if let Err(e) = ledger.add_container_id(&scan.id, &created.id) {
        // The start record is there already; only a detail is missing.
        vault_core::report("run-action", format_args!("{}: warning: {e}", scan.id));
    }
    let container = ContainerInfo {
        id: created.id.clone(),
        image: image.clone(),
        image_id,
    };
    // Never run weaker than asked: read back what the engine applied (some
    // accept an option and silently ignore it, e.g. rootless Podman on
    // cgroup v1 every resource limit) before anything starts.
    if let Err(why) = verify_created(docker, &created.id, &asked, ctx.args, &scan.id).await {
        let removed = match remove(docker, &created.id, true).await {
            Ok(()) => format!("container {name} was removed without being started"),
            Err(e) => format!(
                "container {name} was never started but could not be removed ({e}); `run-action rm {}` removes it",
                scan.id
            ),
        };
        cleanup_action_file();
        note_not_started(ledger, &scan.id, &why);
        let mut r = fail(Status::Error, format!("{why}; {removed}"));
        r.container = Some(container);
        return r;
    }
    // Attach before start, so that not a byte of a short-lived
    // container's output is missed.
    let stream = match docker
        .attach_container(&created.id, Some(attach_options()))
        .await
    {
        Ok(a) => a.output,
        Err(e) => {
            let _ = remove(docker, &created.id, true).await;
            cleanup_action_file();
            let why = format!("cannot attach to {name}: {e}");
            note_not_started(ledger, &scan.id, &why);
            return fail(Status::Error, why);
        }
    };
    let started_ms = now_ms();
    let deadline = deadline_in(Duration::from_secs(limits.timeout_s));
    if let Err(e) = docker.start_container(&created.id, None).await {
        // A start that failed on the wire (a client timeout, say) may have
        // started it all the same: then it is supervised like any other.
        let started = matches!(
            inspect(docker, &created.id).await,
            Ok(Some(c)) if !matches!(state_of(&c), Some(ContainerStateStatusEnum::CREATED) | None)
        );
        if !started {
            let why = format!("cannot start container {name}: {e}");
            note_not_started(ledger, &scan.id, &why);
            let mut r = fail(Status::Error, why);
            r.container = Some(container);
            return r;
        }
    }
    let sink = OutputSink::new(masker_for(&secrets));
    drop(secrets);
    let sup = supervise(
        docker,
        &created.id,
        Some(stream),
        sink,
        deadline,
        ctx.args.grace_s,
    )
    .await;
    finish(
        scan,
        ctx,
        docker,
        &created.id,
        Some(container),
        sup,
        limits.timeout_s,
        started_ms,
    )
    .await
}

/// Now plus `d`; an absurd timeout (`"timeout_s": 18446744073709551615`)
/// is a century, not an overflow.
fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Resume: the container still runs. Attach (there are no logs to replay:
/// the logging driver is `none`) and wait out the rest of its timeout.
async fn reattach(
    scan: &ScanLine,
    ctx: &Ctx<'_>,
    docker: &Docker,
    record: Option<&StartRecord>,
    c: ContainerInspectResponse,
) -> ActionResult {
    let cid = c.id.clone().unwrap_or_else(|| scan.id.container_name());
    // The timeout alone: a resumed action is not refused again by policy.
    let action = scan.action.as_ref();
    let timeout_s = action.map_or(ctx.args.timeout_s, |a| policy::timeout_s(a, ctx.args));
    let started_ms = c
        .state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .and_then(vault_core::time::parse_ms)
        .or_else(|| record.and_then(|r| vault_core::time::parse_ms(&r.started_at)))
        .unwrap_or_else(now_ms);
    let elapsed = Duration::from_millis(now_ms().saturating_sub(started_ms));
    let deadline = deadline_in(Duration::from_secs(timeout_s).saturating_sub(elapsed));
    let secrets = match (action, &scan.spent) {
        (Some(a), None) => load_secrets(a, ctx.args.secrets_dir.as_deref()),
        _ => Err("the action's secrets were not mounted".to_string()),
    };
    let sink = match secrets {
        Ok(s) => OutputSink::new(masker_for(&s)),
        Err(e) => OutputSink::withheld(
            Masker::new(std::iter::empty()),
            format!("the secret values are not available to mask it ({e})"),
        ),
    };
    let stream = docker
        .attach_container(&cid, Some(attach_options()))
        .await
        .ok()
        .map(|a| a.output);
    let sup = supervise(docker, &cid, stream, sink, deadline, ctx.args.grace_s).await;
    let info = container_info(&c);
    finish(scan, ctx, docker, &cid, info, sup, timeout_s, started_ms).await
}

/// Resume: the container already exited; its exit code is in inspect.
async fn collect(
    scan: &ScanLine,
    ctx: &Ctx<'_>,
    docker: &Docker,
    c: ContainerInspectResponse,
) -> ActionResult {
    let cid = c.id.clone().unwrap_or_else(|| scan.id.container_name());
    let sup = Supervised {
        timed_out: false,
        logs: None,
        trouble: None,
    };
    let info = container_info(&c);
    finish(scan, ctx, docker, &cid, info, sup, 0, now_ms()).await
}

fn container_info(c: &ContainerInspectResponse) -> Option<ContainerInfo> {
    Some(ContainerInfo {
        id: c.id.clone()?,
        image: c
            .config
            .as_ref()
            .and_then(|cfg| cfg.image.clone())
            .unwrap_or_default(),
        image_id: c.image.clone(),
    })
}

struct Supervised {
    timed_out: bool,
    logs: Option<String>,
    /// Something went wrong while waiting (e.g. the daemon went away).
    trouble: Option<String>,
}

/// Pump the output, wait for the exit or the deadline (then SIGTERM,
/// `grace_s`, SIGKILL), and drain the output.
async fn supervise(
    docker: &Docker,
    cid: &str,
    stream: Option<OutputStream>,
    mut sink: OutputSink,
    deadline: Instant,
    grace_s: u64,
) -> Supervised {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pump = tokio::spawn(async move {
        if let Some(mut stream) = stream {
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(LogOutput::StdErr { message })) => sink.write_stderr(&message),
                        Some(Ok(out)) => sink.write(&out.into_bytes()),
                        Some(Err(_)) | None => break,
                    },
                    _ = &mut stop_rx => break,
                }
            }
        }
        sink
    });
    let mut timed_out = false;
    let mut trouble = None;
    tokio::select! {
        _ = wait_exit(docker, cid) => {}
        _ = tokio::time::sleep_until(deadline) => {
            timed_out = true;
            let _ = kill(docker, cid, "SIGTERM").await;
            let grace = Duration::from_secs(grace_s);
            if tokio::time::timeout(grace, wait_exit(docker, cid)).await.is_err() {
                let _ = kill(docker, cid, "SIGKILL").await;
                if tokio::time::timeout(KILL_LIMIT, wait_exit(docker, cid)).await.is_err() {
                    trouble = Some("the container did not stop after SIGKILL".to_string());
                }
            }
        }
    }
    // After the exit the stream ends by itself; bound the wait anyway (a
    // wedged daemon must not hang the dispatcher).
    let mut pump = pump;
    let sink = match tokio::time::timeout(DRAIN_LIMIT, &mut pump).await {
        Ok(joined) => joined.ok(),
        Err(_) => {
            let _ = stop_tx.send(());
            pump.await.ok()
        }
    };
    // Only now, with the container gone, flush what the masker held back
    // (this may wait a little for stderr to take the queued output).
    let logs = sink.map(|mut s| s.finish());
    Supervised {
        timed_out,
        logs,
        trouble,
    }
}

/// Resolves once the container is not running. Uses the wait API as the
/// notification only (bollard turns a non-zero exit into an `Err`); the
/// truth is read by inspect afterwards. If the wait call itself fails (the
/// daemon restarted, a client timeout), falls back to polling inspect.
async fn wait_exit(docker: &Docker, cid: &str) {
    loop {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiter = docker.wait_container(cid, Some(opts));
        match waiter.next().await {
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => return,
            _ => {}
        }
        match inspect(docker, cid).await {
            Ok(None) => return,
            Ok(Some(c)) if !is_running(&c) => return,
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn kill(docker: &Docker, cid: &str, signal: &str) -> Result<(), DockerError> {
    let opts = KillContainerOptionsBuilder::default()
        .signal(signal)
        .build();
    docker.kill_container(cid, Some(opts)).await
}

pub async fn remove(docker: &Docker, cid: &str, force: bool) -> Result<(), DockerError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(force)
        .v(true)
        .build();
    match docker.remove_container(cid, Some(opts)).await {
        Err(e) if is_status(&e, 404) => Ok(()),
        other => other,
    }
}

/// Build the result from the finished container, read by inspect.
#[allow(clippy::too_many_arguments)]
async fn finish(
    scan: &ScanLine,
    ctx: &Ctx<'_>,
    docker: &Docker,
    cid: &str,
    container: Option<ContainerInfo>,
    sup: Supervised,
    timeout_s: u64,
    started_ms: u64,
) -> ActionResult {
    let mut r = ActionResult::for_scan(scan, Status::Error, ctx.dispatcher);
    r.container = container;
    r.logs = sup.logs;
    // The exit status is the truth, so a daemon that is away (restarting)
    // is waited for, within a bound, rather than reported as an error.
    let mut inspected = None;
    let give_up = tokio::time::Instant::now() + DAEMON_RETURN_LIMIT;
    while tokio::time::Instant::now() < give_up {
        match inspect(docker, cid).await {
            Ok(Some(c)) => {
                let running = is_running(&c);
                if running && !sup.timed_out {
                    // The stream broke (daemon restart) while the runner
                    // lives on: wait for its exit again.
                    let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                    let _ = tokio::time::timeout(left, wait_exit(docker, cid)).await;
                    inspected = Some(c);
                    continue;
                }
                inspected = Some(c);
                break;
            }
            Ok(None) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let now = now_ms();
    let state = inspected.as_ref().and_then(|c| c.state.clone());
    let running = inspected.as_ref().is_some_and(is_running);
    let started = state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .and_then(vault_core::time::parse_ms)
        .unwrap_or(started_ms);
    let finished = state
        .as_ref()
        .and_then(|s| s.finished_at.as_deref())
        .and_then(vault_core::time::parse_ms)
        .filter(|f| *f >= started && !running)
        .unwrap_or(now);
    r.started_at = Some(rfc3339_ms(started));
    r.finished_at = Some(rfc3339_ms(finished));
    r.duration_ms = Some(finished.saturating_sub(started));
    let exit_code = state.as_ref().and_then(|s| s.exit_code);
    match (&state, running) {
        (Some(s), false) if exit_code.is_some() => {
            r.exit_code = exit_code;
            r.oom_killed = Some(s.oom_killed.unwrap_or(false));
            r.status = if sup.timed_out {
                r.error = Some(format!("timed out after {timeout_s} s"));
                Status::TimedOut
            } else if exit_code == Some(0) {
                Status::Succeeded
            } else {
                Status::Failed
            };
        }
        _ => {
            r.status = Status::Error;
            let why = sup
                .trouble
                .unwrap_or_else(|| "the container's exit status could not be read".into());
            r.error = Some(format!("{why} (container {cid})"));
        }
    }
    if matches!(r.status, Status::Error) {
        vault_core::report(
            "run-action",
            format_args!("{}: error: {}", scan.id, r.error.as_deref().unwrap_or("")),
        );
    }
    r
}

fn rfc3339_ms(ms: u64) -> String {
    vault_core::time::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// `run-action rm <id>`: remove the exited container and its files.
pub async fn rm(cache: &Path, id: &ActionId) -> Result<(), RmError> {
    let docker = connect().await.map_err(RmError::Unreachable)?;
    let name = id.container_name();
    let c = inspect(&docker, &name)
        .await
        .map_err(|e| RmError::Unreachable(format!("cannot inspect {name}: {e}")))?;
    if let Some(c) = c {
        if !is_ours(&c, id.as_str()) {
            return Err(RmError::Refused(format!(
                "container {name} was not created by run-action; not removing it"
            )));
        }
        if is_running(&c) {
            return Err(RmError::Refused(format!(
                "container {name} is still running; not removing it"
            )));
        }
        remove(&docker, &name, false)
            .await
            .map_err(|e| RmError::Failed(format!("cannot remove {name}: {e}")))?;
    }
    // The run ledger (and an earlier version's journal) stays: it is the
    // proof that this id was started.
    match std::fs::remove_dir_all(run_dir(cache, id.as_str())) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RmError::Failed(format!(
            "cannot remove the action file: {e}"
        ))),
        _ => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Note in the ledger that `id`'s container was never started; a failure
/// to note it only makes a later message less precise.
fn note_not_started(ledger: &Ledger, id: &ActionId, why: &str) {
    if let Err(e) = ledger.add_not_started(id, why) {
        vault_core::report("run-action", format_args!("{id}: warning: {e}"));
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What run-action asks for with the default limits.
    fn asked(engine: Engine) -> ContainerCreateBody {
        use clap::Parser;
        let args = crate::cli::Cli::try_parse_from(["run-action"]).unwrap().run;
        let action: Action = serde_json::from_value(json!({
            "id": "a1", "secrets": ["K"], "command": ["true"]
        }))
        .unwrap();
        let limits = policy::limits(&action, &args).unwrap();
        let ctx = Ctx {
            args: &args,
            cache: Path::new("/cache"),
            dispatcher: "d",
        };
        container_config(
            &action,
            "img",
            &limits,
            &ctx,
            Some(Path::new("/secrets/x")),
            Path::new("/cache/run/a1/action.json"),
            engine,
        )
    }

    /// An inspect answer that echoes `asked` the way dockerd does.
    fn applied(asked: &ContainerCreateBody) -> serde_json::Value {
        let hc = serde_json::to_value(asked.host_config.as_ref().unwrap()).unwrap();
        let mounts: Vec<_> = asked
            .host_config
            .as_ref()
            .unwrap()
            .mounts
            .iter()
            .flatten()
            .map(|m| json!({"Type": "bind", "Source": m.source, "Destination": m.target, "RW": false}))
            .collect();
        json!({
            "Id": "c1",
            "Config": {"User": asked.user},
            "HostConfig": hc,
            "Mounts": mounts,
        })
    }

    fn check(asked: &ContainerCreateBody, got: serde_json::Value) -> Vec<Unapplied> {
        let c: ContainerInspectResponse = serde_json::from_value(got).unwrap();
        unapplied(asked, &c)
    }

    #[test]
    fn everything_applied_passes() {
        for engine in [Engine::Docker, Engine::Podman] {
            let a = asked(engine);
            assert_eq!(check(&a, applied(&a)), vec![], "{engine:?}");
        }
    }

    #[test]
    fn podman_gets_keep_id_for_the_runner_user_and_read_only_run() {
        let a = asked(Engine::Podman);
        let hc = a.host_config.as_ref().unwrap();
        assert_eq!(
            hc.userns_mode.as_deref(),
            Some("keep-id:uid=65534,gid=65534")
        );
        let tmpfs = hc.tmpfs.as_ref().unwrap();
        assert!(tmpfs["/run"].starts_with("ro,noexec"), "{tmpfs:?}");
        assert!(tmpfs["/var/tmp"].starts_with("ro,noexec"), "{tmpfs:?}");
        let d = asked(Engine::Docker);
        let hc = d.host_config.as_ref().unwrap();
        assert_eq!(hc.userns_mode, None);
        assert_eq!(hc.tmpfs.as_ref().unwrap().len(), 1);
    }

    /// What rootless Podman 4.3 on cgroup v1 answers (measured): limits
    /// 0, capabilities listed one by one, extra tmpfs options.
    #[test]
    fn podman_on_cgroup_v1_lacks_exactly_the_limits() {
        let a = asked(Engine::Podman);
        let mut got = applied(&a);
        let hc = &mut got["HostConfig"];
        for k in [
            "Memory",
            "MemorySwap",
            "NanoCpus",
            "PidsLimit",
            "CpuQuota",
            "CpuPeriod",
        ] {
            hc[k] = json!(0);
        }
        hc["CapDrop"] = json!(DEFAULT_CAPS);
        hc["CapAdd"] = json!([]);
        hc["UsernsMode"] = json!("private");
        hc["Runtime"] = json!("oci");
        for (path, opts) in hc["Tmpfs"].clone().as_object().unwrap() {
            hc["Tmpfs"][path] = json!(format!("{},rprivate,tmpcopyup", opts.as_str().unwrap()));
        }
        let missing = check(&a, got);
        let limits: Vec<Option<Limit>> = missing.iter().map(|u| u.limit).collect();
        assert_eq!(
            limits,
            [
                Some(Limit::Memory),
                Some(Limit::Memory),
                Some(Limit::Pids),
                Some(Limit::Cpus)
            ],
            "{missing:?}"
        );
        assert!(missing[0].what.contains("HostConfig.Memory"), "{missing:?}");
    }

    #[test]
    fn a_cpu_quota_counts_as_the_cpu_limit() {
        let a = asked(Engine::Podman);
        let mut got = applied(&a);
        got["HostConfig"]["NanoCpus"] = json!(0);
        got["HostConfig"]["CpuQuota"] = json!(200_000);
        got["HostConfig"]["CpuPeriod"] = json!(100_000);
        assert_eq!(check(&a, got), vec![]);
    }

    #[test]
    fn every_weaker_option_is_named() {
        let a = asked(Engine::Docker);
        let base = applied(&a);
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("Config.User", json!({"Config": {"User": "0:0"}})),
            ("CapDrop", json!({"HostConfig": {"CapDrop": []}})),
            ("CapDrop", json!({"HostConfig": {"CapDrop": ["CHOWN"]}})),
            ("CapAdd", json!({"HostConfig": {"CapAdd": ["NET_ADMIN"]}})),
            ("SecurityOpt", json!({"HostConfig": {"SecurityOpt": []}})),
            (
                "SecurityOpt",
                json!({"HostConfig": {"SecurityOpt": ["no-new-privileges", "seccomp=unconfined"]}}),
            ),
            (
                "ReadonlyRootfs",
                json!({"HostConfig": {"ReadonlyRootfs": false}}),
            ),
            ("Init", json!({"HostConfig": {"Init": null}})),
            ("Privileged", json!({"HostConfig": {"Privileged": true}})),
            (
                "NetworkMode",
                json!({"HostConfig": {"NetworkMode": "host"}}),
            ),
            (
                "LogConfig",
                json!({"HostConfig": {"LogConfig": {"Type": "json-file"}}}),
            ),
            (
                "Tmpfs",
                json!({"HostConfig": {"Tmpfs": {"/tmp": "rw,size=16m"}}}),
            ),
            (
                "Tmpfs",
                json!({"HostConfig": {"Tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=16m,exec"}}}),
            ),
            (
                "/run",
                json!({"HostConfig": {"Tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=16m", "/run": "rw"}}}),
            ),
            (
                "/run/secrets",
                json!({"Mounts": [{"Destination": "/run/vault/action.json", "RW": false}]}),
            ),
            (
                "RW",
                json!({"Mounts": [
                {"Destination": "/run/secrets", "RW": true},
                {"Destination": "/run/vault/action.json", "RW": false}]}),
            ),
            (
                "/data",
                json!({"Mounts": [
                {"Destination": "/run/secrets", "RW": false},
                {"Destination": "/run/vault/action.json", "RW": false},
                {"Type": "volume", "Destination": "/data", "RW": true}]}),
            ),
        ];
        for (needle, patch) in cases {
            let mut got = base.clone();
            merge(&mut got, &patch);
            let missing = check(&a, got);
            assert!(
                missing
                    .iter()
                    .any(|u| u.limit.is_none() && u.what.contains(needle)),
                "{patch}: {missing:?}"
            );
        }
    }

    fn merge(into: &mut serde_json::Value, patch: &serde_json::Value) {
        match (into, patch) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(k) {
                        Some(slot) if v.is_object() => merge(slot, v),
                        _ => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }
}

//! Docker Engine API helpers: connecting (and telling Docker from Podman),
//! inspecting, killing and removing containers, and the label checks.

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;

pub(super) type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// Connect as the docker CLI would (`DOCKER_HOST`, else the local socket)
/// and negotiate the API version down to the daemon's.
pub async fn connect() -> Result<Docker, String> {
    connect_engine().await.map(|(docker, _)| docker)
}

/// Podman's service (4.3, Debian bookworm) crashes when two containers with
/// `UsernsMode: keep-id` are created at once: libsubid is not thread-safe
/// (podman#23264, containers/storage#2030). Creates on one Podman socket are
/// therefore serialized: an exclusive lock on `vault-dispatch-create.lock`
/// beside the socket, held for the create call only. `None` for Docker, a
/// non-unix `DOCKER_HOST`, or a lock that cannot be taken (said on stderr:
/// the create goes on, as it would have without the lock).
pub(super) fn create_lock(engine: Engine) -> Option<nix::fcntl::Flock<std::fs::File>> {
    if engine != Engine::Podman {
        return None;
    }
    let host = std::env::var("DOCKER_HOST").ok()?;
    let socket = std::path::Path::new(host.strip_prefix("unix://")?);
    let path = socket.parent()?.join("vault-dispatch-create.lock");
    let warn = |e: &dyn std::fmt::Display| {
        vault_core::report(
            "run-action",
            format_args!(
                "warning: cannot lock {} ({e}); creating without it",
                path.display()
            ),
        )
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| warn(&e))
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| warn(&e))
        .ok()
}

/// Where bollard (and the docker CLI) connect without `DOCKER_HOST`.
pub(super) const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

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

pub(super) fn is_status(e: &DockerError, code: u16) -> bool {
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

pub(super) fn state_of(c: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    c.state.as_ref().and_then(|s| s.status)
}

pub(super) fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// Attach to a container's output streams (stdout and stderr apart).
pub(super) fn attach_options() -> bollard::query_parameters::AttachContainerOptions {
    AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .build()
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

/// Resolves once the container is not running. Uses the wait API as the
/// notification only (bollard turns a non-zero exit into an `Err`); the
/// truth is read by inspect afterwards. If the wait call itself fails (the
/// daemon restarted, a client timeout), falls back to polling inspect.
pub(super) async fn wait_exit(docker: &Docker, cid: &str) {
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

pub(super) async fn kill(docker: &Docker, cid: &str, signal: &str) -> Result<(), DockerError> {
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

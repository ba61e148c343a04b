//! The credential gateway of an action whose network is an allowlist
//! (`"network": {"allow": [...], "inject": {...}}`).
//!
//! One gateway per action, started and removed by run-action:
//! * the network `vault-net-<id>`: internal (no route out), no address for
//!   the host on its bridge (`inhibit_ipv4`: the host's own services are
//!   not reachable from it either), no masquerade;
//! * the container `vault.gw-<id>` (image `VAULT_GATEWAY_IMAGE`, running
//!   vault-gateway) on that network and on `VAULT_EGRESS_NETWORK`, hardened
//!   like the runner, with IP forwarding off in its namespace;
//! * the runner on `vault-net-<id>` only, with `HTTPS_PROXY` pointing at
//!   the gateway and the gateway's CA in its trust bundle.
//!
//! The gateway's configuration, the injected secrets with it, goes over its
//! stdin (never argv, environment or a file); it answers with its address
//! and its CA certificate (the key never leaves it), and, when sent
//! SIGTERM after the runner exited, with what it let through and refused.
//! A gateway per action, rather than one per dispatcher, keeps each
//! action's credentials and CA in a process of their own that lives only
//! as long as the action, and needs no long-running service to deploy.

use super::docker::{attach_options, is_status, kill, remove, Engine, OutputStream};
use super::prepare::Secret;
use super::spec::{bind, run_dir};
use super::{Ctx, NotRun};
use crate::mask::Masker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkConnectRequest,
    NetworkCreateRequest,
};
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use vault_core::egress::Egress;
use vault_core::{Action, EgressRecord, SecretName};
use zeroize::Zeroizing;

/// The port vault-gateway listens on.
pub const GATEWAY_PORT: u16 = 3128;
/// The gateway's CA certificate alone, in the runner.
pub const CA_TARGET: &str = "/run/vault/gateway-ca.pem";
/// The gateway's CA and `VAULT_GATEWAY_ROOTS`, in the runner.
pub const BUNDLE_TARGET: &str = "/run/vault/ca-bundle.pem";
/// How long the gateway may take to say it listens, and to sum up.
const READY_LIMIT: Duration = Duration::from_secs(30);
const SUMMARY_LIMIT: Duration = Duration::from_secs(10);
/// What the gateway runs with.
const GATEWAY_MEMORY: i64 = 256 * 1024 * 1024;
const GATEWAY_PIDS: i64 = 64;
const GATEWAY_USER: &str = "65534:65534";
/// How long the gateway outlives the runner's timeout and grace at most:
/// past that it stops by itself (`lifetime_s`), so that one orphaned by a
/// dispatcher that died does not hold the credentials for ever.
const LIFETIME_MARGIN_S: u64 = 300;
/// Largest roots file read.
/// (vault-gateway reads at most 1 MiB of configuration, roots included.)
const MAX_ROOTS_BYTES: u64 = 900 * 1024;

/// `vault.gw-<id>`: never the name of a runner (`vault-<id>`, and an id
/// starts with a letter or digit), whatever the id.
pub fn gateway_name(id: &str) -> String {
    format!("vault.gw-{id}")
}

/// `vault-net-<id>`.
pub fn network_name(id: &str) -> String {
    format!("vault-net-{id}")
}

/// The host-side bridge device: `vd-` and 12 hex digits of the id's
/// SHA-256 (device names are at most 15 bytes), so that a host firewall can
/// name them all (`vd-+`).
fn bridge_device(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("vd-{hex}")
}

/// What the runner is given to use the gateway.
pub struct Attach {
    /// The internal network the runner joins (its only one).
    pub network: String,
    /// `http://<gateway address>:3128`.
    pub proxy: String,
    /// The gateway's address: also the runner's DNS server, so that the
    /// engine's resolver forwards nothing beyond the internal network (the
    /// gateway answers no DNS; names are resolved by the gateway).
    pub ip: String,
    /// The gateway's CA certificate, and the bundle (it and the roots).
    pub ca_file: PathBuf,
    pub bundle_file: PathBuf,
    /// Secrets the runner must not have: mounted one by one, without these.
    pub hidden: Vec<SecretName>,
}

/// A started gateway.
pub(super) struct Gateway {
    pub(super) attach: Attach,
    watcher: tokio::task::JoinHandle<Result<EgressRecord, String>>,
}

/// Start the gateway of `action` (fresh runs only): its network, its
/// container, its configuration. On `Err` nothing of it is left.
pub(super) async fn start(
    docker: &Docker,
    action: &Action,
    egress: &Egress,
    secrets: &[Secret],
    ctx: &Ctx<'_>,
    engine: Engine,
) -> Result<Gateway, NotRun> {
    let id = action.id.as_str();
    if engine != Engine::Docker {
        return Err(NotRun::error(
            "an allowlisted network needs Docker: run-action does not isolate a gateway network under Podman; not running it without one",
        ));
    }
    let cfg = ctx.config;
    let (Some(egress_net), Some(image)) = (&cfg.egress_network, &cfg.gateway_image) else {
        return Err(NotRun::error(
            "the action's network is an allowlist, but VAULT_EGRESS_NETWORK and VAULT_GATEWAY_IMAGE are not both set",
        ));
    };
    let roots = read_roots(&cfg.gateway_roots).map_err(NotRun::error)?;
    let lifetime_s = crate::policy::timeout_s(action, cfg)
        .saturating_add(cfg.grace.as_secs())
        .saturating_add(LIFETIME_MARGIN_S);
    let config = gateway_config(action, egress, secrets, &roots, lifetime_s)?;
    // Its name as the engine knows it (the setting may be an id), which is
    // what a created container's endpoints are listed by.
    let egress_name = match docker.inspect_network(egress_net, None).await {
        Ok(n) => n.name.unwrap_or_else(|| egress_net.to_string()),
        Err(e) if is_status(&e, 404) => {
            return Err(NotRun::error(format!(
                "the egress network {egress_net:?} (VAULT_EGRESS_NETWORK) does not exist"
            )))
        }
        Err(e) => {
            return Err(NotRun::error(format!(
                "cannot inspect the egress network {egress_net:?}: {e}"
            )))
        }
    };
    if let Err(e) = docker.inspect_image(image).await {
        return Err(NotRun::error(format!(
            "the gateway image {image:?} (VAULT_GATEWAY_IMAGE) is not usable: {e}"
        )));
    }
    // Whatever an earlier, interrupted start of this id left.
    remove_all(docker, id).await.map_err(NotRun::error)?;
    let masker = super::prepare::masker_for(secrets);
    let started = launch(
        docker,
        action,
        image,
        (egress_net, &egress_name),
        (config, &roots),
        ctx,
        masker,
    )
    .await;
    match started {
        Ok(g) => Ok(g),
        Err(why) => {
            if let Err(e) = remove_all(docker, id).await {
                vault_core::report("run-action", format_args!("{id}: warning: {e}"));
            }
            Err(NotRun::error(why))
        }
    }
}

async fn launch(
    docker: &Docker,
    action: &Action,
    image: &str,
    (egress_net, egress_name): (&str, &str),
    (mut config, roots): (GatewayConfig, &str),
    ctx: &Ctx<'_>,
    masker: Masker,
) -> Result<Gateway, String> {
    let id = action.id.as_str();
    let net = network_name(id);
    let subnet = create_network(docker, id, &net).await?;
    let config = config.bytes(&subnet)?;
    let name = gateway_name(id);
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let body = container_config(id, image, &net, ctx.dispatcher);
    let asked = body.clone();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(|e| format!("cannot create the gateway {name}: {e}"))?;
    docker
        .connect_network(
            egress_net,
            NetworkConnectRequest {
                container: name.clone(),
                endpoint_config: Some(EndpointSettings::default()),
            },
        )
        .await
        .map_err(|e| format!("cannot connect the gateway to {egress_net:?}: {e}"))?;
    verify(
        docker,
        &name,
        &asked,
        &[net.as_str(), egress_name],
        ctx.config.allow_unenforced_limits,
    )
    .await?;
    let attach_opts = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker
        .attach_container(&name, Some(attach_opts))
        .await
        .map_err(|e| format!("cannot attach to the gateway {name}: {e}"))?;
    docker
        .start_container(&name, None)
        .await
        .map_err(|e| format!("cannot start the gateway {name}: {e}"))?;
    let mut input = attached.input;
    let mut output = attached.output;
    input
        .write_all(&config)
        .await
        .map_err(|e| format!("cannot configure the gateway {name}: {e}"))?;
    drop(config);
    input
        .shutdown()
        .await
        .map_err(|e| format!("cannot configure the gateway {name}: {e}"))?;
    let ready = tokio::time::timeout(READY_LIMIT, read_ready(&mut output, id, &masker))
        .await
        .map_err(|_| {
            format!(
                "the gateway {name} did not say it was ready within {} s",
                READY_LIMIT.as_secs()
            )
        })??;
    let proxy = format!("http://{}", ready.addr);
    let ip = ready
        .addr
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .unwrap_or_default();
    // The runner is told only the address on the internal network.
    if !addr_in(&ready.addr, &subnet) {
        return Err(format!(
            "the gateway listens on {}, outside its network's {subnet}",
            ready.addr
        ));
    }
    let dir = run_dir(ctx.cache, id);
    let ca_file = dir.join("gateway-ca.pem");
    let bundle_file = dir.join("ca-bundle.pem");
    write_public(&ca_file, ready.ca_pem.as_bytes())?;
    let mut bundle = ready.ca_pem.clone().into_bytes();
    if !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(roots.as_bytes());
    write_public(&bundle_file, &bundle)?;
    let hidden = action
        .network
        .egress()
        .map(|e| e.inject.keys().cloned().collect())
        .unwrap_or_default();
    let watcher = tokio::spawn(watch(output, id.to_string(), Some(masker)));
    Ok(Gateway {
        attach: Attach {
            network: net,
            proxy,
            ip,
            ca_file,
            bundle_file,
            hidden,
        },
        watcher,
    })
}

impl Gateway {
    /// Stop the gateway once the runner is done, and read its summary.
    pub(super) async fn conclude(self, docker: &Docker, id: &str) -> EgressRecord {
        finish(docker, id, Some(self.watcher), None).await
    }

    /// Remove the gateway of a runner that never started.
    pub(super) async fn discard(self, docker: &Docker, id: &str) {
        self.watcher.abort();
        if let Err(e) = remove_all(docker, id).await {
            vault_core::report("run-action", format_args!("{id}: warning: {e}"));
        }
    }
}

/// Stop the gateway of `id`, read what it let through and refused, and
/// remove it and its network. `watcher`: the task reading its output, when
/// this process started it; else (a resumed run) it is attached to now.
pub(super) async fn finish(
    docker: &Docker,
    id: &str,
    watcher: Option<tokio::task::JoinHandle<Result<EgressRecord, String>>>,
    masker: Option<Masker>,
) -> EgressRecord {
    let name = gateway_name(id);
    let watcher = match watcher {
        Some(w) => Some(w),
        None => match docker.attach_container(&name, Some(attach_options())).await {
            Ok(a) => Some(tokio::spawn(watch(a.output, id.to_string(), masker))),
            Err(_) => None,
        },
    };
    let summary = match watcher {
        None => Err("the gateway was gone: what it let through is not known".to_string()),
        Some(w) => {
            if let Err(e) = kill(docker, &name, "SIGTERM").await {
                if !is_status(&e, 404) && !is_status(&e, 409) {
                    vault_core::report(
                        "run-action",
                        format_args!("{id}: warning: cannot stop the gateway {name}: {e}"),
                    );
                }
            }
            match tokio::time::timeout(SUMMARY_LIMIT, w).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("reading the gateway's summary failed: {e}")),
                Err(_) => Err(format!(
                    "the gateway gave no summary within {} s",
                    SUMMARY_LIMIT.as_secs()
                )),
            }
        }
    };
    if let Err(e) = remove_all(docker, id).await {
        vault_core::report("run-action", format_args!("{id}: warning: {e}"));
    }
    summary.unwrap_or_else(|e| EgressRecord {
        error: Some(e),
        ..EgressRecord::default()
    })
}

/// Remove the gateway container and the network of `id`, if there.
pub async fn remove_all(docker: &Docker, id: &str) -> Result<(), String> {
    let name = gateway_name(id);
    match super::docker::inspect(docker, &name).await {
        Ok(Some(c)) => {
            let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
            let ours = labels.is_some_and(|l| {
                l.get("vault.managed").map(String::as_str) == Some("1")
                    && l.get("vault.gateway").map(String::as_str) == Some(id)
            });
            if !ours {
                return Err(format!(
                    "a container named {name} exists that run-action did not create; not touching it"
                ));
            }
            remove(docker, &name, true)
                .await
                .map_err(|e| format!("cannot remove the gateway {name}: {e}"))?;
        }
        Ok(None) => {}
        Err(e) => return Err(format!("cannot inspect {name}: {e}")),
    }
    let net = network_name(id);
    match docker.inspect_network(&net, None).await {
        Ok(n) => {
            let ours = n.labels.as_ref().is_some_and(|l| {
                l.get("vault.managed").map(String::as_str) == Some("1")
                    && l.get("vault.gateway").map(String::as_str) == Some(id)
            });
            if !ours {
                return Err(format!(
                    "a network named {net} exists that run-action did not create; not touching it"
                ));
            }
            match docker.remove_network(&net).await {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(format!("cannot remove the network {net}: {e}")),
            }
        }
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(format!("cannot inspect the network {net}: {e}")),
    }
}

/// Read the created gateway back before it starts: every option asked
/// for applied (as for the runner: only the limits
/// `VAULT_ALLOW_UNENFORCED_LIMITS` names may go unenforced, with a
/// warning), and on exactly its two networks (by name: a container that
/// has not started has no endpoint ids yet).
async fn verify(
    docker: &Docker,
    name: &str,
    asked: &ContainerCreateBody,
    networks: &[&str],
    allow: crate::config::Unenforced,
) -> Result<(), String> {
    let c = match super::docker::inspect(docker, name).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(format!("the gateway {name} vanished before it was checked")),
        Err(e) => return Err(format!("cannot read back the gateway {name}: {e}")),
    };
    for u in super::readback::unapplied(asked, &c) {
        if u.limit.is_some_and(|l| allow.allows(l)) {
            vault_core::report(
                "run-action",
                format_args!(
                    "warning: the engine did not apply {} to the gateway {name}: running all the same, as VAULT_ALLOW_UNENFORCED_LIMITS allows",
                    u.what
                ),
            );
        } else {
            return Err(format!(
                "the engine did not apply {} to the gateway {name}; not running behind it",
                u.what
            ));
        }
    }
    let mut on: Vec<String> = c
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    on.sort();
    let mut want: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
    want.sort();
    if on != want {
        return Err(format!(
            "the gateway {name} is on the networks {on:?}, not exactly {want:?}; not running behind it"
        ));
    }
    Ok(())
}

fn labels(id: &str, dispatcher: Option<&str>) -> HashMap<String, String> {
    let mut l = HashMap::from([
        ("vault.managed".to_string(), "1".to_string()),
        ("vault.gateway".to_string(), id.to_string()),
    ]);
    if let Some(d) = dispatcher {
        l.insert("vault.dispatcher".to_string(), d.to_string());
    }
    l
}

/// Create the internal network and check what Docker made of it: internal,
/// no host address on its bridge, one IPv4 subnet. Returns that subnet.
async fn create_network(docker: &Docker, id: &str, net: &str) -> Result<String, String> {
    let options = HashMap::from([
        (
            "com.docker.network.bridge.name".to_string(),
            bridge_device(id),
        ),
        (
            "com.docker.network.bridge.inhibit_ipv4".to_string(),
            "true".to_string(),
        ),
        (
            "com.docker.network.bridge.enable_ip_masquerade".to_string(),
            "false".to_string(),
        ),
    ]);
    docker
        .create_network(NetworkCreateRequest {
            name: net.to_string(),
            driver: Some("bridge".into()),
            internal: Some(true),
            enable_ipv6: Some(false),
            options: Some(options),
            labels: Some(labels(id, None)),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the network {net}: {e}"))?;
    let n = docker
        .inspect_network(net, None)
        .await
        .map_err(|e| format!("cannot read back the network {net}: {e}"))?;
    let inhibited = n
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.bridge.inhibit_ipv4"))
        .is_some_and(|v| v == "true");
    if n.internal != Some(true) || !inhibited || n.enable_ipv6 == Some(true) {
        return Err(format!(
            "the network {net} is not isolated as asked (internal {:?}, inhibit_ipv4 {inhibited}, IPv6 {:?}); not running behind it",
            n.internal, n.enable_ipv6
        ));
    }
    let subnets: Vec<String> = n
        .ipam
        .and_then(|i| i.config)
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet)
        .filter(|s| s.contains('.'))
        .collect();
    match subnets.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "the network {net} has IPv4 subnets {subnets:?}, not exactly one"
        )),
    }
}

fn container_config(id: &str, image: &str, net: &str, dispatcher: &str) -> ContainerCreateBody {
    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        memory: Some(GATEWAY_MEMORY),
        memory_swap: Some(GATEWAY_MEMORY),
        pids_limit: Some(GATEWAY_PIDS),
        network_mode: Some(net.to_string()),
        sysctls: Some(HashMap::from([
            // Packets sent to it are never passed on between its networks.
            ("net.ipv4.ip_forward".to_string(), "0".to_string()),
            (
                "net.ipv6.conf.all.disable_ipv6".to_string(),
                "1".to_string(),
            ),
        ])),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        init: Some(true),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(GATEWAY_USER.to_string()),
        env: Some(Vec::new()),
        labels: Some(labels(id, Some(dispatcher))),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The configuration vault-gateway reads on stdin; `listen` is filled in
/// once the network exists ([`splice_subnet`]).
fn gateway_config(
    action: &Action,
    egress: &Egress,
    secrets: &[Secret],
    roots: &str,
    lifetime_s: u64,
) -> Result<GatewayConfig, NotRun> {
    let mut inject = Vec::new();
    let mut mask = Vec::new();
    for (name, rule) in &egress.inject {
        let Some(i) = action.secrets.iter().position(|s| s == name) else {
            return Err(NotRun::rejected(format!(
                "network \"inject\" names secret {name}, which \"secrets\" does not list"
            )));
        };
        let Some(secret) = secrets.get(i) else {
            return Err(NotRun::error(format!("secret {name} was not read")));
        };
        let raw = secret.expose_secret();
        let value = raw.trim_ascii();
        let text = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && !v.chars().any(char::is_control));
        let Some(text) = text else {
            return Err(NotRun::error(format!(
                "secret {name} cannot be sent as a header value (empty, not UTF-8, or with a control character)"
            )));
        };
        inject.push(serde_json::json!({
            "host": rule.host,
            "header": rule.header,
            "value": rule.format.replacen("{}", text, 1),
        }));
        mask.push(serde_json::Value::String(text.to_string()));
    }
    Ok(GatewayConfig(serde_json::json!({
        "version": 1,
        "listen": "",
        "port": GATEWAY_PORT,
        "allow": egress.allow,
        "inject": inject,
        "mask": mask,
        "roots_pem": roots,
        "lifetime_s": lifetime_s,
    })))
}

/// vault-gateway's configuration, made (and its secrets checked) before
/// anything is created; its strings are overwritten when it is dropped.
struct GatewayConfig(serde_json::Value);

impl GatewayConfig {
    /// The bytes for its stdin, with `listen`, the one field that needs
    /// the network.
    fn bytes(&mut self, subnet: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        self.0["listen"] = serde_json::Value::String(subnet.to_string());
        serde_json::to_vec(&self.0)
            .map(Zeroizing::new)
            .map_err(|e| format!("cannot write the gateway's configuration: {e}"))
    }
}

/// It holds credentials: never shown.
impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayConfig(<secret>)")
    }
}

impl Drop for GatewayConfig {
    fn drop(&mut self) {
        zeroize_value(std::mem::take(&mut self.0));
    }
}

/// Overwrite every string of a JSON value that held secrets.
fn zeroize_value(v: serde_json::Value) {
    use zeroize::Zeroize;
    match v {
        serde_json::Value::String(mut s) => s.zeroize(),
        serde_json::Value::Array(a) => a.into_iter().for_each(zeroize_value),
        serde_json::Value::Object(o) => o.into_iter().for_each(|(_, v)| zeroize_value(v)),
        _ => {}
    }
}

fn read_roots(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ROOTS_BYTES + 1).read_to_string(&mut s))
        .map_err(|e| {
            format!(
                "cannot read the gateway's trust anchors {} (VAULT_GATEWAY_ROOTS): {e}",
                path.display()
            )
        })?;
    if s.len() as u64 > MAX_ROOTS_BYTES || !s.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "the gateway's trust anchors {} (VAULT_GATEWAY_ROOTS) are not a PEM bundle of at most {MAX_ROOTS_BYTES} bytes",
            path.display()
        ));
    }
    Ok(s)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether `addr` (`ip:port`) is inside `subnet` (`a.b.c.d/n`).
fn addr_in(addr: &str, subnet: &str) -> bool {
    let ip = addr
        .rsplit_once(':')
        .and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok());
    let net = subnet.split_once('/').and_then(|(n, len)| {
        Some((
            n.parse::<std::net::Ipv4Addr>().ok()?,
            len.parse::<u32>().ok()?,
        ))
    });
    match (ip, net) {
        (Some(ip), Some((net, len))) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        _ => false,
    }
}

#[derive(serde::Deserialize)]
struct Ready {
    addr: String,
    ca_pem: String,
}

/// Read the gateway's output up to its `ready` line (stderr passed on).
async fn read_ready(output: &mut OutputStream, id: &str, masker: &Masker) -> Result<Ready, String> {
    let mut lines = Lines {
        masker: Some(masker.clone()),
        ..Lines::default()
    };
    while let Some(item) = output.next().await {
        let item = item.map_err(|e| format!("the gateway's output broke: {e}"))?;
        for line in lines.push(item, id) {
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| format!("the gateway said something unreadable: {e}"))?;
            if let Some(r) = v.get("ready") {
                return serde_json::from_value(r.clone())
                    .map_err(|e| format!("the gateway's ready line is unreadable: {e}"));
            }
            if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                return Err(format!("the gateway refused to start: {e}"));
            }
        }
    }
    Err("the gateway exited before it was ready".to_string())
}

/// Read the gateway's output until its summary (stderr passed on).
/// `masker`: the action's secrets, for the gateway's stderr lines and the
/// summary's keys (the runner chose the host names it asked for: a mounted
/// secret could be one); `None` when they are not at hand, and then
/// neither is passed on.
async fn watch(
    mut output: OutputStream,
    id: String,
    masker: Option<Masker>,
) -> Result<EgressRecord, String> {
    let mut lines = Lines {
        masker: masker.clone(),
        ..Lines::default()
    };
    while let Some(item) = output.next().await {
        let Ok(item) = item else { break };
        for line in lines.push(item, &id) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(s) = v.get("summary") {
                let raw: EgressRecord = serde_json::from_value(s.clone())
                    .map_err(|e| format!("the gateway's summary is unreadable: {e}"))?;
                let Some(m) = &masker else {
                    return Err("the action's secrets were not at hand to mask the gateway's summary; it is not recorded".to_string());
                };
                return Ok(EgressRecord {
                    contacted: masked_keys(m, raw.contacted),
                    refused: masked_keys(m, raw.refused),
                    error: None,
                });
            }
        }
    }
    Err("the gateway stopped without a summary".to_string())
}

/// `text` with every secret form masked.
fn mask_text(m: &Masker, text: &str) -> String {
    let mut m = m.clone();
    let mut out = m.push(text.as_bytes());
    out.extend(m.finish());
    String::from_utf8_lossy(&out).into_owned()
}

fn masked_keys(
    m: &Masker,
    counts: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for (k, n) in counts {
        *out.entry(mask_text(m, &k)).or_insert(0) += n;
    }
    out
}

/// Splits the gateway's stdout into lines; its stderr lines go to ours.
#[derive(Default)]
struct Lines {
    out: Vec<u8>,
    err: Vec<u8>,
    /// Stderr lines are passed on only masked, and not at all without it.
    masker: Option<Masker>,
}

impl Lines {
    fn push(&mut self, item: LogOutput, id: &str) -> Vec<String> {
        match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                self.out.extend_from_slice(&message);
                take_lines(&mut self.out)
            }
            LogOutput::StdErr { message } => {
                self.err.extend_from_slice(&message);
                for line in take_lines(&mut self.err) {
                    if let Some(m) = &self.masker {
                        let line = mask_text(m, &line);
                        vault_core::report("run-action", format_args!("{id}: gateway: {line}"));
                    }
                }
                Vec::new()
            }
            LogOutput::StdIn { .. } => Vec::new(),
        }
    }
}

/// The complete lines at the front of `buf` (bounded: a line longer than
/// 1 MiB is dropped).
fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=i).collect();
        out.push(String::from_utf8_lossy(&line[..i]).trim_end().to_string());
    }
    if buf.len() > 1024 * 1024 {
        buf.clear();
    }
    out
}

/// The runner's mounts of the gateway's CA and bundle.
pub(super) fn ca_mounts(a: &Attach) -> [bollard::models::Mount; 2] {
    [
        bind(&a.ca_file, CA_TARGET),
        bind(&a.bundle_file, BUNDLE_TARGET),
    ]
}

/// The runner's environment for the gateway.
pub(super) fn runner_env(a: &Attach) -> Vec<String> {
    let mut env = Vec::new();
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        env.push(format!("{k}={}", a.proxy));
    }
    env.push("NO_PROXY=".to_string());
    env.push("no_proxy=".to_string());
    for k in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.push(format!("{k}={BUNDLE_TARGET}"));
    }
    env.push(format!("NODE_EXTRA_CA_CERTS={CA_TARGET}"));
    env.push(format!("VAULT_GATEWAY_CA={CA_TARGET}"));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_subnets() {
        assert!(addr_in("172.18.0.2:3128", "172.18.0.0/16"));
        assert!(!addr_in("172.19.0.2:3128", "172.18.0.0/16"));
        assert!(addr_in("10.1.2.3:1", "10.1.2.0/24"));
        assert!(!addr_in("10.1.3.3:1", "10.1.2.0/24"));
        assert!(!addr_in("garbage", "10.1.2.0/24"));
        assert!(!addr_in("10.1.2.3:1", "10.1.2.0/33"));
    }

    #[test]
    fn device_names_fit() {
        let d = bridge_device("a-very-long-action-id-that-goes-on-and-on");
        assert_eq!(d.len(), 15);
        assert!(d.starts_with("vd-"));
        assert_ne!(d, bridge_device("another"));
    }

    #[test]
    fn lines_split_and_bound() {
        let mut b = b"{\"a\":1}\n{\"b\"".to_vec();
        assert_eq!(take_lines(&mut b), vec!["{\"a\":1}".to_string()]);
        b.extend_from_slice(b":2}\r\n");
        assert_eq!(take_lines(&mut b), vec!["{\"b\":2}".to_string()]);
        assert!(b.is_empty());
    }

    #[test]
    fn config_carries_formatted_values_and_no_more() {
        let action: Action = serde_json::from_str(
            r#"{"id":"x","secrets":["A","B"],"command":["c"],
                "network":{"allow":["api.example.org:443"],
                "inject":{"B":{"host":"api.example.org","header":"Authorization","format":"Bearer {}"}}}}"#,
        )
        .unwrap();
        action.validate().unwrap();
        let secrets = vec![
            secrecy::SecretBox::new(Box::new(b"mounted-value".to_vec())),
            secrecy::SecretBox::new(Box::new(b"  injected-value\n".to_vec())),
        ];
        let egress = action.network.egress().unwrap();
        let mut c = gateway_config(&action, egress, &secrets, "ROOTS", 99).unwrap();
        let c = c.bytes("10.0.0.0/24").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["listen"], "10.0.0.0/24");
        assert_eq!(v["lifetime_s"], 99);
        assert_eq!(v["inject"][0]["value"], "Bearer injected-value");
        assert_eq!(v["mask"][0], "injected-value");
        assert!(!String::from_utf8_lossy(&c).contains("mounted-value"));
        let bad = vec![
            secrecy::SecretBox::new(Box::new(b"m".to_vec())),
            secrecy::SecretBox::new(Box::new(b"a\r\nX-Evil: 1".to_vec())),
        ];
        let e = gateway_config(&action, egress, &bad, "ROOTS", 99).unwrap_err();
        assert!(
            e.why().contains("cannot be sent as a header value"),
            "{}",
            e.why()
        );
        assert!(!e.why().contains("Evil"));
    }
}

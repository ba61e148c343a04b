//! The post-create read-back: every option asked for must show in the
//! engine's inspect of the created container.

use super::docker::inspect;
use super::spec::DEFAULT_CAPS;
use crate::config::{Limit, Unenforced};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, Mount, MountPoint,
};
use bollard::Docker;
use vault_core::ActionId;

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

pub(super) fn cap_name(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
}

pub(super) fn opt_tokens(s: &str) -> Vec<&str> {
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
        let ok = match w.as_str() {
            "none" => g == "none",
            // A bridge asked for: anything but sharing another namespace.
            "bridge" => !(g == "host" || g.starts_with("container:") || g.starts_with("ns:")),
            // A gateway's network: that one.
            _ => g == *w,
        };
        if !ok {
            miss(
                None,
                format!("the network mode (HostConfig.NetworkMode: asked {w:?}, the engine shows {g:?})"),
            );
        }
    }
    if let Some(w) = &want.dns {
        let g = got.dns.clone().unwrap_or_default();
        if g != *w {
            miss(
                None,
                format!("the DNS servers (HostConfig.Dns: asked {w:?}, the engine shows {g:?})"),
            );
        }
    }
    for (k, v) in want.sysctls.iter().flatten() {
        let g = got.sysctls.as_ref().and_then(|s| s.get(k));
        if g != Some(v) {
            miss(
                None,
                format!("the sysctl {k}={v} (HostConfig.Sysctls: the engine shows {g:?})"),
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
pub(super) async fn verify_created(
    docker: &Docker,
    cid: &str,
    asked: &ContainerCreateBody,
    allow: Unenforced,
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
    let allowed = |u: &Unapplied| u.limit.is_some_and(|l| allow.allows(l));
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

pub(super) fn join_what(u: &[&Unapplied]) -> String {
    u.iter()
        .map(|u| u.what.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::engine::{container_config, Binds, Ctx, Engine};
    use crate::policy;
    use serde_json::json;
    use std::path::Path;
    use vault_core::Action;

    /// What run-action asks for with the default limits.
    fn asked(engine: Engine) -> ContainerCreateBody {
        let action = json!({"id": "a1", "secrets": ["K"], "command": ["true"]});
        asked_for(action, None, engine)
    }

    /// What run-action asks for `action` (JSON) under the default settings
    /// (any allowlist allowed), behind `gateway` if given.
    fn asked_for(
        action: serde_json::Value,
        gateway: Option<&crate::engine::GatewayAttach>,
        engine: Engine,
    ) -> ContainerCreateBody {
        let config = RunConfig {
            allow_egress: "*".into(),
            ..RunConfig::default()
        };
        let action: Action = serde_json::from_value(action).unwrap();
        action.validate().unwrap();
        let limits = policy::limits(&action, &config).unwrap();
        let admission = vault_core::admit::Admission::default();
        let ctx = Ctx {
            config: &config,
            admission: &admission,
            cache: Path::new("/cache"),
            dispatcher: "d",
            checkout: None,
        };
        container_config(
            &action,
            "img",
            &limits,
            &ctx,
            Binds {
                secrets_dir: Some(Path::new("/secrets/x")),
                action_file: Path::new("/cache/run/a1/action.json"),
                workspace: None,
                gateway,
            },
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

    /// A runner behind a gateway: its network, its environment, the
    /// injected secret left out of its mounts; and every one of those read
    /// back.
    #[test]
    fn a_gateway_runner_is_configured_and_read_back() {
        let attach = crate::engine::GatewayAttach {
            network: "vault-net-a1".into(),
            proxy: "http://10.9.0.2:3128".into(),
            ip: "10.9.0.2".into(),
            ca_file: "/cache/run/a1/gateway-ca.pem".into(),
            bundle_file: "/cache/run/a1/ca-bundle.pem".into(),
            hidden: vec![vault_core::SecretName::parse("T").unwrap()],
        };
        let a = asked_for(
            json!({
                "id": "a1", "secrets": ["K", "T"], "command": ["true"],
                "network": {"allow": ["api.example.org:443"],
                            "inject": {"T": {"host": "api.example.org", "header": "Authorization"}}}
            }),
            Some(&attach),
            Engine::Docker,
        );
        let hc = a.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("vault-net-a1"));
        assert_eq!(a.network_disabled, Some(false));
        let targets: Vec<&str> = hc
            .mounts
            .iter()
            .flatten()
            .filter_map(|m| m.target.as_deref())
            .collect();
        let mut sorted = targets.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "/run/secrets/K",
                "/run/vault/action.json",
                "/run/vault/ca-bundle.pem",
                "/run/vault/gateway-ca.pem",
            ]
        );
        assert!(!targets
            .iter()
            .any(|t| t.contains("/T") || *t == "/run/secrets"));
        assert!(targets.contains(&"/run/secrets/K"));
        assert!(targets.contains(&"/run/vault/ca-bundle.pem"));
        let env = a.env.as_ref().unwrap();
        assert!(env.contains(&"HTTPS_PROXY=http://10.9.0.2:3128".to_string()));
        assert!(env.contains(&"SSL_CERT_FILE=/run/vault/ca-bundle.pem".to_string()));
        assert_eq!(check(&a, applied(&a)), vec![]);
        // Another network, or IPv6 left on: refused.
        let mut got = applied(&a);
        got["HostConfig"]["NetworkMode"] = json!("bridge");
        got["HostConfig"]["Sysctls"] = json!({});
        let missing = check(&a, got);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].what.contains("HostConfig.Sysctls")
                || missing[1].what.contains("HostConfig.Sysctls")
        );
        assert!(
            missing
                .iter()
                .any(|m| m.what.contains("asked \"vault-net-a1\"")),
            "{missing:?}"
        );
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

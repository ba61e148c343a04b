//! An allowlisted network behind a credential gateway, on the real testbed:
//! dispatcher.sh and the built tools, a real dockerd, the gateway image
//! built from the built vault-gateway (scripts/gateway-image.sh), and an
//! upstream HTTPS server with a CA of the test's own, in a container on a
//! network the test makes (an internal one, on a subnet it picks: no
//! packet can leave it). The runner is a busybox image with the host's curl.
//!
//! What the runner could see (its environment, every process's argv, its
//! secrets and files under /run) is printed rot13-encoded, so that the
//! output masking cannot hide a token that is there: the test decodes it.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;
use vault_e2e::egress::*;
use vault_e2e::*;
use vault_testkit::{docker, run_with, unique, wait_until, OpsRepo, SecretStore, Testbed};

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a' + 13) % 26) + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A' + 13) % 26) + b'A') as char,
            '0'..='9' => (((c as u8 - b'0' + 5) % 10) + b'0') as char,
            c => c,
        })
        .collect()
}

/// The runner's script: everything it can see, rot13-encoded, then its
/// requests, each with curl's exit code.
fn probe_script(host_ip: &str, host_port: u16) -> String {
    format!(
        r#"rot() {{ tr 'A-Za-z0-9' 'N-ZA-Mn-za-m5-90-4'; }}
echo "dump-begin $( {{ env; cat /proc/[0-9]*/cmdline; for f in /run/secrets/* /run/vault/*; do echo "== $f"; cat "$f"; done; ls -la /run/secrets; }} 2>&1 | rot | base64 -w0 ) dump-end"
echo "api-begin $(curl -sS -D - -H 'Authorization: Bearer runner-made-this-up' https://api.test.example:8443/echo 2>&1 | rot | base64 -w0) api-end"
curl -sS -o /dev/null https://other.test.example:8443/ 2>&1; echo "other-rc=$?"
curl -sS -o /dev/null https://plain.test.example:8443/tunnel 2>&1; echo "plain-rc=$?"
curl -sS -o /dev/null --noproxy '*' -k --connect-timeout 3 https://{UPSTREAM_IP}:8443/direct 2>&1; echo "direct-rc=$?"
curl -sS -o /dev/null --noproxy '*' --connect-timeout 3 http://{EGRESS_HOST_IP}:{host_port}/ 2>&1; echo "host-rc=$?"
curl -sS -o /dev/null --noproxy '*' --connect-timeout 3 http://{host_ip}:{host_port}/ 2>&1; echo "hostip-rc=$?"
nslookup api.test.example >/dev/null 2>&1; echo "dns-rc=$?"
nslookup example.org >/dev/null 2>&1; echo "dnsout-rc=$?"
echo done"#
    )
}

fn between<'a>(logs: &'a str, begin: &str, end: &str) -> &'a str {
    let i = logs
        .find(begin)
        .unwrap_or_else(|| panic!("{begin} in {logs}"))
        + begin.len();
    let j = logs[i..].find(end).unwrap() + i;
    logs[i..j].trim()
}

fn decode(b64: &str) -> String {
    let out = run_with(
        Command::new("base64").arg("-d"),
        b64.as_bytes(),
        Duration::from_secs(10),
    );
    out.success();
    rot13(&out.stdout)
}

fn rc(logs: &str, name: &str) -> i64 {
    let key = format!("{name}-rc=");
    let i = logs.find(&key).unwrap_or_else(|| panic!("{key} in {logs}")) + key.len();
    logs[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn gateway_gone(id: &str) -> bool {
    let label = format!("label=vault.gateway={id}");
    docker(&["ps", "-aq", "--filter", &label])
        .stdout
        .trim()
        .is_empty()
        && !Command::new("docker")
            .args(["network", "inspect", &format!("vault-net-{id}")])
            .output()
            .unwrap()
            .status
            .success()
}

/// The tests of this file share the upstream's network and names.
static UPSTREAM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    UPSTREAM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A site pointed at the test's egress world.
fn gateway_site(tb: &Testbed, repo: &OpsRepo, secrets: &SecretStore, ca: &std::path::Path) -> Site {
    let mut site = Site::new(tb, &repo.url, secrets, "host-gw");
    site.extra_env = vec![
        (
            "VAULT_ALLOW_IMAGES".into(),
            format!("{},{CLIENT_IMAGE}", tb.image),
        ),
        (
            "VAULT_ALLOW_EGRESS".into(),
            "api.test.example:8443,*.test.example:8443".into(),
        ),
        ("VAULT_EGRESS_NETWORK".into(), EGRESS_NET.into()),
        ("VAULT_GATEWAY_IMAGE".into(), GATEWAY_IMAGE.into()),
        ("VAULT_GATEWAY_ROOTS".into(), ca.display().to_string()),
        ("VAULT_ALLOW_BRIDGE".into(), "1".into()),
    ];
    site
}

/// The dispatcher is killed (the whole process tree, as a host crash would)
/// while the runner works: the next cycle re-attaches to the runner, finds
/// the gateway by name, records its summary, and removes both.
#[test]
fn a_resumed_run_reads_the_summary_of_the_gateway_it_did_not_start() {
    let _g = shared_dockerd();
    let _one = one_at_a_time();
    let tb = Testbed::get();
    let upstream = Upstream::world();
    let ca = upstream.ca();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let token = format!("tok-{}", unique("resume"));
    secrets.add("API_TOKEN", token.as_bytes());
    let site = gateway_site(&tb, &repo, &secrets, &ca);
    let id = unique("gw-resume");
    let mut a: serde_json::Value = serde_json::from_str(&action(
        &id,
        &["API_TOKEN"],
        "curl -sS https://api.test.example:8443/echo; sleep 6; curl -sS -o /dev/null https://other.test.example:8443/; echo finished",
    ))
    .unwrap();
    a["image"] = CLIENT_IMAGE.into();
    a["network"] = serde_json::json!({
        "allow": ["api.test.example:8443"],
        "inject": {"API_TOKEN": {"host": "api.test.example", "header": "Authorization", "format": "Bearer {}"}}
    });
    let since = now_s();
    repo.land_action(&id, &a.to_string());
    let child = site.spawn();
    wait_until(
        "the runner's first request",
        Duration::from_secs(90),
        || upstream.requests().iter().any(|q| q["path"] == "/echo"),
    );
    kill_group(child.id());
    let mut child = child;
    let _ = child.wait();
    assert_eq!(repo.result(&id).unwrap()["status"], "running");

    let out = site.once();
    out.success();
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    // The output after the re-attach (the logging driver keeps none before).
    assert!(r["logs"].as_str().unwrap().contains("finished"), "{r}");
    // Counted by the gateway across both dispatcher processes.
    assert_eq!(r["egress"]["contacted"]["api.test.example:8443"], 1, "{r}");
    assert_eq!(r["egress"]["refused"]["other.test.example:8443"], 1, "{r}");
    assert_eq!(creates(&id, since), 1, "started once");
    assert!(gateway_gone(&id), "the gateway and its network are removed");
    let seen: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|q| q["path"] == "/echo")
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["authorization"], format!("Bearer {token}"));
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(&token), "the token leaked");
    }
}

#[test]
fn only_allowlisted_hosts_are_reached_and_the_token_is_added_outside_the_runner() {
    let _g = shared_dockerd();
    let _one = one_at_a_time();
    let tb = Testbed::get();
    let upstream = Upstream::world();
    let ca = upstream.ca();
    // A host service on every address: the runner must not reach it.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    // The host's own first address (no packet leaves: only the runner tries it).
    let host_ip = sh("hostname -I | tr ' ' '\\n' | grep -m1 '\\.'")
        .stdout
        .trim()
        .to_string();
    assert!(host_ip.parse::<std::net::Ipv4Addr>().is_ok(), "{host_ip:?}");

    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let token = format!("tok-{}", unique("gw"));
    let mounted = format!("mounted-{}", unique("gw"));
    secrets.add("API_TOKEN", token.as_bytes());
    secrets.add("MOUNTED", mounted.as_bytes());
    let site = gateway_site(&tb, &repo, &secrets, &ca);

    let gw = unique("gw");
    let bridge = unique("bridge");
    let refused = unique("gw-policy");
    let mut gw_action: serde_json::Value = serde_json::from_str(&action(
        &gw,
        &["API_TOKEN", "MOUNTED"],
        &probe_script(&host_ip, host_port),
    ))
    .unwrap();
    gw_action["image"] = CLIENT_IMAGE.into();
    gw_action["network"] = serde_json::json!({
        "allow": ["api.test.example:8443", "plain.test.example:8443"],
        "inject": {"API_TOKEN": {"host": "api.test.example", "header": "Authorization", "format": "Bearer {}"}}
    });
    let mut bridge_action: serde_json::Value =
        serde_json::from_str(&action(&bridge, &[], "echo bridge-ran")).unwrap();
    bridge_action["network"] = "bridge".into();
    let mut refused_action: serde_json::Value =
        serde_json::from_str(&action(&refused, &[], "echo must-not-run")).unwrap();
    refused_action["network"] = serde_json::json!({"allow": ["evil.example.org:443"]});
    repo.land_actions(&[
        (gw.as_str(), gw_action.to_string()),
        (bridge.as_str(), bridge_action.to_string()),
        (refused.as_str(), refused_action.to_string()),
    ]);

    let out = site.once();
    out.success();

    // The allowlisted action ran, through its gateway.
    let r = repo.result(&gw).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    let logs = r["logs"].as_str().unwrap();
    // The runner saw neither the token nor its secret file; the dump works
    // (it shows the mounted secret and the gateway settings).
    let seen = decode(between(logs, "dump-begin", "dump-end"));
    assert!(
        !seen.contains(&token),
        "the runner could see the token:\n{seen}"
    );
    assert!(
        seen.contains(&mounted),
        "the dump shows the mounted secret:\n{seen}"
    );
    assert!(seen.contains("HTTPS_PROXY=http://"), "{seen}");
    assert!(seen.contains("== /run/secrets/MOUNTED"), "{seen}");
    assert!(!seen.contains("/run/secrets/API_TOKEN"), "{seen}");
    // The upstream got the real token, in place of the runner's made-up one.
    let reqs = upstream.requests();
    let api: Vec<&serde_json::Value> = reqs.iter().filter(|q| q["path"] == "/echo").collect();
    assert_eq!(api.len(), 1, "{reqs:?}");
    assert_eq!(api[0]["authorization"], format!("Bearer {token}"));
    assert_eq!(api[0]["host"], "api.test.example:8443");
    // Its echo of the token came back masked (body and header).
    let answer = decode(between(logs, "api-begin", "api-end"));
    assert!(answer.contains("200"), "{answer}");
    assert!(!answer.contains(&token), "{answer}");
    assert!(answer.contains("echo-auth=***"), "{answer}");
    assert!(answer.contains("x-echo: ***"), "{answer}");
    // An allowed host without credentials: a plain tunnel, no header added.
    assert_eq!(rc(logs, "plain"), 0, "{logs}");
    let tunnel: Vec<&serde_json::Value> = reqs.iter().filter(|q| q["path"] == "/tunnel").collect();
    assert_eq!(tunnel.len(), 1, "{reqs:?}");
    assert_eq!(tunnel[0]["authorization"], "");
    // A host not on the allowlist, a direct connection, the host itself: no.
    assert_ne!(rc(logs, "other"), 0, "{logs}");
    assert_ne!(rc(logs, "direct"), 0, "{logs}");
    assert_ne!(rc(logs, "host"), 0, "{logs}");
    assert_ne!(rc(logs, "hostip"), 0, "{logs}");
    // No name resolves in the runner (its DNS server is the gateway, which
    // answers none): DNS carries nothing out.
    assert_ne!(rc(logs, "dns"), 0, "{logs}");
    assert_ne!(rc(logs, "dnsout"), 0, "{logs}");
    assert!(
        !reqs
            .iter()
            .any(|q| q["path"] == "/direct" || q["host"] == "other.test.example:8443"),
        "{reqs:?}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host service was reached"
    );
    // What the gateway let through and refused is in the result.
    assert_eq!(r["egress"]["contacted"]["api.test.example:8443"], 1, "{r}");
    assert_eq!(
        r["egress"]["contacted"]["plain.test.example:8443"], 1,
        "{r}"
    );
    assert_eq!(r["egress"]["refused"]["other.test.example:8443"], 1, "{r}");
    // No token anywhere it could be kept.
    for text in [
        &out.stdout,
        &out.stderr,
        &repo
            .show(&format!("vault/actions/{gw}.result.json"))
            .unwrap(),
    ] {
        assert!(!text.contains(&token), "the token leaked");
    }
    assert!(gateway_gone(&gw), "the gateway and its network are removed");

    // "bridge" still runs where policy allows it.
    let r = repo.result(&bridge).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(r["logs"].as_str().unwrap().contains("bridge-ran"), "{r}");
    assert!(r.get("egress").is_none(), "{r}");

    // An allowlist entry policy does not allow: rejected, nothing started.
    let r = repo.result(&refused).expect("result recorded");
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("\"evil.example.org:443\" is not allowed by policy (VAULT_ALLOW_EGRESS)"),
        "{r}"
    );
    assert!(gateway_gone(&refused));
}

/// A gateway and network as a dispatcher that stopped between the
/// gateway's start and the runner's would leave them (made by hand here,
/// with run-action's names and labels).
fn leftover_gateway(id: &str) {
    let label = format!("vault.gateway={id}");
    let net = format!("vault-net-{id}");
    docker(&[
        "network",
        "create",
        "--internal",
        "--label",
        "vault.managed=1",
        "--label",
        &label,
        &net,
    ])
    .success();
    docker(&[
        "run",
        "-d",
        "--name",
        &format!("vault.gw-{id}"),
        "--label",
        "vault.managed=1",
        "--label",
        &label,
        "--network",
        &net,
        &Testbed::get().image,
        "sleep",
        "300",
    ])
    .success();
    assert!(!gateway_gone(id));
}

/// An allowlisted id that ends without running has any gateway of it
/// removed; `run-action rm` removes one too, but not while another
/// run-action holds the id's lock.
#[test]
fn a_gateway_left_behind_is_removed_and_rm_respects_the_lock() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-left");
    site.extra_env = vec![
        ("VAULT_ALLOW_EGRESS".into(), "api.example.org:443".into()),
        ("VAULT_EGRESS_NETWORK".into(), "none".into()),
        ("VAULT_GATEWAY_IMAGE".into(), tb.image.clone()),
    ];
    // Refused by policy (its entry is not in VAULT_ALLOW_EGRESS).
    let id = unique("gw-left");
    leftover_gateway(&id);
    let mut a: serde_json::Value = serde_json::from_str(&action(&id, &[], "true")).unwrap();
    a["network"] = serde_json::json!({"allow": ["other.example.org:443"]});
    repo.land_action(&id, &a.to_string());
    site.once().success();
    assert_eq!(repo.result(&id).unwrap()["status"], "rejected");
    assert!(
        gateway_gone(&id),
        "the leftover gateway and network are removed"
    );

    // run-action rm: refused while the lock is held, then removes it.
    let id = unique("gw-rm");
    leftover_gateway(&id);
    let cache = site.cache.path();
    let locks = cache.join("checkouts/.locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join(&id);
    std::fs::write(&lock, b"").unwrap();
    let rm = |c: &mut Command| {
        run_with(
            c.arg("rm").arg(&id).env("VAULT_CACHE", cache),
            b"",
            Duration::from_secs(60),
        )
    };
    // --no-fork: the lock goes with the process killed below.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    wait_until("flock to hold the lock", Duration::from_secs(10), || {
        !Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    let out = rm(&mut Command::new(vault_testkit::bin("run-action")));
    out.fails_with_code(1);
    assert!(out.stderr.contains("is locked"), "{}", out.stderr);
    assert!(!gateway_gone(&id), "nothing removed under another's lock");
    holder.kill().unwrap();
    let _ = holder.wait();
    rm(&mut Command::new(vault_testkit::bin("run-action"))).success();
    assert!(
        gateway_gone(&id),
        "rm removes the leftover gateway and network"
    );
}

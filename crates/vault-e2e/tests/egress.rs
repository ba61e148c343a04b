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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vault_e2e::*;
use vault_testkit::{docker, run_with, unique, wait_until, OpsRepo, SecretStore, TempDir, Testbed};

/// The test's egress network and where its upstream sits on it.
const EGRESS_NET: &str = "vault-e2e-egress";
const EGRESS_SUBNET: &str = "10.213.77.0/24";
const EGRESS_HOST_IP: &str = "10.213.77.1";
const UPSTREAM_IP: &str = "10.213.77.10";
const UPSTREAM_NAME: &str = "vault-e2e-upstream";
const CLIENT_IMAGE: &str = "vault-runner-curl:e2e";
const GATEWAY_IMAGE: &str = "vault-gateway:e2e";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sh(script: &str) -> vault_testkit::Output {
    run_with(
        Command::new("bash").arg("-c").arg(script),
        b"",
        Duration::from_secs(180),
    )
}

/// The gateway image, from the vault-gateway beside the other tools.
fn build_gateway_image() {
    let bin = vault_testkit::bin("vault-gateway");
    let out = run_with(
        Command::new("bash")
            .arg(root().join("scripts/gateway-image.sh"))
            .arg(&bin)
            .arg(GATEWAY_IMAGE),
        b"",
        Duration::from_secs(120),
    );
    out.success();
}

/// busybox (the testbed's runner root) plus the host's curl and the
/// libraries it links.
fn build_client_image() {
    let script = format!(
        r#"set -euo pipefail
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
bash {testbed} rootfs | tar -C "$root" -x
install -D -m 0755 /usr/bin/curl "$root/usr/bin/curl"
ldd /usr/bin/curl | awk '$2 == "=>" && $3 ~ /^\// {{print $3}} $1 ~ /^\// {{print $1}}' | sort -u |
while read -r lib; do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
tar -C "$root" --owner=0 --group=0 -c . | docker import -c 'ENV PATH=/bin:/usr/bin' - {CLIENT_IMAGE} >/dev/null"#,
        testbed = root().join("scripts/testbed.sh").display()
    );
    sh(&script).success();
}

/// A CA of the test's own and a certificate for the upstream's names.
fn make_certs(dir: &Path) {
    let script = format!(
        r#"set -euo pipefail
cd {dir}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.pem -days 2 -subj /CN=vault-e2e-upstream-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout server.key -out server.csr -subj /CN=api.test.example 2>/dev/null
printf 'subjectAltName=DNS:api.test.example,DNS:other.test.example,DNS:plain.test.example\n' >ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext -out server.pem 2>/dev/null
chmod 0644 server.key"#,
        dir = dir.display()
    );
    sh(&script).success();
}

const UPSTREAM_PY: &str = r#"
import http.server, json, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get('Authorization', '')
        with open('/log/requests.log', 'a') as f:
            f.write(json.dumps({'host': self.headers.get('Host'), 'path': self.path,
                                'authorization': auth}) + '\n')
        body = ('echo-auth=' + auth + '\n').encode()
        self.send_response(200)
        self.send_header('X-Echo', auth)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('0.0.0.0', 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('/certs/server.pem', '/certs/server.key')
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print('listening', flush=True)
srv.serve_forever()
"#;

/// The egress network and the upstream on it; removed on drop.
struct Upstream {
    log: TempDir,
    _certs: TempDir,
}

impl Upstream {
    fn start(certs: TempDir) -> Upstream {
        Upstream::remove();
        let log = TempDir::new().unwrap();
        std::fs::write(certs.path().join("upstream.py"), UPSTREAM_PY).unwrap();
        docker(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            EGRESS_SUBNET,
            "--gateway",
            EGRESS_HOST_IP,
            EGRESS_NET,
        ])
        .success();
        let certs_mount = format!("{}:/certs:ro", certs.path().display());
        let log_mount = format!("{}:/log", log.path().display());
        // Debian's python3 from the host, read-only, in a busybox root.
        docker(&[
            "run",
            "-d",
            "--name",
            UPSTREAM_NAME,
            "--network",
            EGRESS_NET,
            "--ip",
            UPSTREAM_IP,
            "--network-alias",
            "api.test.example",
            "--network-alias",
            "other.test.example",
            "--network-alias",
            "plain.test.example",
            "-v",
            "/usr:/usr:ro",
            "-v",
            "/lib64:/lib64:ro",
            // Where /lib64's loader (a symlink into /lib) and the libraries are.
            "-v",
            "/usr/lib:/lib:ro",
            "-v",
            &certs_mount,
            "-v",
            &log_mount,
            &Testbed::get().image,
            "/usr/bin/python3",
            "/certs/upstream.py",
        ])
        .success();
        wait_until("the upstream to listen", Duration::from_secs(30), || {
            docker(&["logs", UPSTREAM_NAME])
                .stdout
                .contains("listening")
        });
        Upstream { log, _certs: certs }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn remove() {
        let _ = Command::new("docker")
            .args(["rm", "-f", UPSTREAM_NAME])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", EGRESS_NET])
            .output();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        Upstream::remove();
    }
}

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

#[test]
fn only_allowlisted_hosts_are_reached_and_the_token_is_added_outside_the_runner() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    build_gateway_image();
    build_client_image();
    let certs = TempDir::new().unwrap();
    make_certs(certs.path());
    let ca = certs.path().join("ca.pem");
    let upstream = Upstream::start(certs);
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
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-gw");
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

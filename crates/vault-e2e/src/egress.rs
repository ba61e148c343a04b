//! The egress tests' world: a network of the test's own (internal, on a
//! subnet it picks), an upstream HTTPS server on it with a CA of the test's
//! own, the gateway image built from the built vault-gateway, and a runner
//! image with the host's curl. Used by tests/egress.rs and
//! tests/deploy_compose.rs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vault_testkit::{docker, run_with, wait_until, TempDir, Testbed};

/// The test's egress network and where its upstream sits on it.
pub const EGRESS_NET: &str = "vault-e2e-egress";
pub const EGRESS_SUBNET: &str = "10.213.77.0/24";
pub const EGRESS_HOST_IP: &str = "10.213.77.1";
pub const UPSTREAM_IP: &str = "10.213.77.10";
pub const UPSTREAM_NAME: &str = "vault-e2e-upstream";
pub const CLIENT_IMAGE: &str = "vault-runner-curl:e2e";
pub const GATEWAY_IMAGE: &str = "vault-gateway:e2e";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sh(script: &str) -> vault_testkit::Output {
    run_with(
        Command::new("bash").arg("-c").arg(script),
        b"",
        Duration::from_secs(180),
    )
}

/// The gateway image, from the vault-gateway beside the other tools.
pub fn build_gateway_image() {
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
pub fn build_client_image() {
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
pub fn make_certs(dir: &Path) {
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
pub struct Upstream {
    log: TempDir,
    certs: TempDir,
}

impl Upstream {
    pub fn start(certs: TempDir) -> Upstream {
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
        Upstream { log, certs }
    }

    /// The test CA's certificate (what `VAULT_GATEWAY_ROOTS` names).
    pub fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// Everything the egress tests need: both images built from the
    /// current binaries, a CA, the network and the upstream.
    pub fn world() -> Upstream {
        build_gateway_image();
        build_client_image();
        let certs = TempDir::new().unwrap();
        make_certs(certs.path());
        Upstream::start(certs)
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn remove() {
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

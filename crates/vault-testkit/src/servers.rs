//! Git servers on loopback: git daemon, https, ssh.

use crate::process::wait_until;
use crate::secrets::ssh_keygen;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (at most 10 s) until 127.0.0.1:`port` accepts connections
/// (`listening`) or refuses them (`!listening`).
pub(crate) fn wait_for_port(port: u16, listening: bool, what: &str) {
    wait_until(what, Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() == listening
    });
}

/// A `git daemon` of a test's own on 127.0.0.1, which the test can stop
/// (remote down) and start again on the same port (remote up).
pub struct GitDaemon {
    pub base: TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl GitDaemon {
    pub fn start() -> GitDaemon {
        let port = free_port();
        let mut d = GitDaemon {
            base: TempDir::new().unwrap(),
            port,
            child: None,
        };
        d.up();
        d
    }

    /// `git://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}", self.port)
    }

    /// Start serving (again).
    pub fn up(&mut self) {
        if self.child.is_some() {
            return;
        }
        use std::os::unix::process::CommandExt;
        let child = Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                "--export-all",
            ])
            .arg("--enable=receive-pack")
            .arg(format!("--port={}", self.port))
            .arg(format!("--base-path={}", self.base.path().display()))
            .arg(self.base.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, true, "the git daemon to listen");
    }

    /// Stop serving: connections are refused until [`up`](Self::up).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // git daemon forks per connection: end the whole group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
        wait_for_port(self.port, false, "the git daemon to stop");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A smart-HTTP git server over TLS of a test's own on 127.0.0.1
/// (`https-git-server.py`: `git http-backend` behind basic auth), with a
/// fresh self-signed certificate for `127.0.0.1` that no system trusts.
pub struct HttpsGit {
    pub base: TempDir,
    pub port: u16,
    /// The server's certificate (PEM): trust it with `SSL_CERT_FILE`.
    pub ca: PathBuf,
    /// A file holding the one password the server accepts.
    pub token_file: PathBuf,
    child: std::process::Child,
    log: PathBuf,
}

impl HttpsGit {
    pub fn start(token: &str) -> HttpsGit {
        let base = TempDir::new().unwrap();
        let keys = base.path().join("tls");
        std::fs::create_dir_all(&keys).unwrap();
        let (ca, key) = (keys.join("cert.pem"), keys.join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&ca)
            .output()
            .expect("openssl (the CLI) is needed: run scripts/testbed.sh up");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token_file = keys.join("token");
        std::fs::write(&token_file, token).unwrap();
        let log = keys.join("requests.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("https-git-server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(base.path())
            .args([&ca, &key, &token_file])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 is needed: run scripts/testbed.sh up");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("https-git-server.py did not start: {line:?}"));
        HttpsGit {
            base,
            port,
            ca,
            token_file,
            child,
            log,
        }
    }

    /// `https://127.0.0.1:PORT`; a repo `x.git` under `base` is at `{url}/x.git`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// One line per request the server answered: `METHOD PATH STATUS`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `sshd` of a test's own on 127.0.0.1 (run as root, public-key login
/// only) serving the bare repos under `base` as
/// `ssh://root@127.0.0.1:PORT/<absolute path>`, with a fresh host key and
/// a fresh client key it accepts.
pub struct SshGit {
    pub base: TempDir,
    pub port: u16,
    /// The client's private key (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// A `known_hosts` line for the server: `[127.0.0.1]:PORT <type> <key>`.
    pub known_hosts_line: String,
    child: std::process::Child,
}

impl SshGit {
    pub fn start() -> SshGit {
        let base = TempDir::new().unwrap();
        let keys = base.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let host_key = ssh_keygen(&keys.join("host"), "");
        let client_key = ssh_keygen(&keys.join("client"), "");
        let authorized = keys.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let opt = |k: &str, v: &dyn std::fmt::Display| format!("{k}={v}");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", "/dev/null"])
            .args(
                [
                    opt("Port", &port),
                    opt("ListenAddress", &"127.0.0.1"),
                    opt("HostKey", &host_key.display()),
                    opt("AuthorizedKeysFile", &authorized.display()),
                    opt("PidFile", &"none"),
                    opt("StrictModes", &"no"),
                    opt("UsePAM", &"no"),
                    opt("PasswordAuthentication", &"no"),
                    opt("KbdInteractiveAuthentication", &"no"),
                    opt("PermitRootLogin", &"prohibit-password"),
                ]
                .iter()
                .flat_map(|o| ["-o", o.as_str()].map(str::to_string)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server) is needed: run scripts/testbed.sh up");
        wait_for_port(port, true, "sshd to listen");
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        SshGit {
            base,
            port,
            client_key,
            known_hosts_line: format!("[127.0.0.1]:{port} {}", key.join(" ")),
            child,
        }
    }

    /// `ssh://root@127.0.0.1:PORT<path>` of a bare repo under `base`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }
}

impl Drop for SshGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

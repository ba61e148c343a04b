//! Test harness for vault-dispatch: the real testbed seen from Rust tests.
//!
//! `scripts/testbed.sh up` starts the parts (dockerd, a git daemon on
//! 127.0.0.1, age, the busybox runner image) and writes an env file; this
//! crate reads it and gives each test its own ops repo, secret store and
//! temp dir. Nothing here is a mock: repos are served by the real git
//! daemon, secrets are encrypted by the real `age` CLI.
//!
//! Tests that need the testbed call [`Testbed::get`], which panics with the
//! command to run when the testbed is not up: a missing bench is a failed
//! test, never a silently skipped one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// The running testbed's coordinates.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub dir: PathBuf,
    pub git_base: PathBuf,
    /// `git://127.0.0.1:PORT`; a repo named `x.git` is at `{git_url}/x.git`.
    pub git_url: String,
    /// The busybox runner image, e.g. `vault-runner:test`.
    pub image: String,
    /// Whether dockerd has the `runsc` (gVisor) runtime registered.
    pub runsc: bool,
}

impl Testbed {
    /// The testbed, from `VAULT_TESTBED_*` variables or the env file at
    /// `$VAULT_TESTBED_DIR/env` (default `/tmp/vault-testbed/env`).
    pub fn get() -> Testbed {
        let mut vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("VAULT_TESTBED_"))
            .collect();
        if !vars.contains_key("VAULT_TESTBED_GIT_URL") {
            let dir = vars
                .get("VAULT_TESTBED_DIR")
                .cloned()
                .unwrap_or_else(|| "/tmp/vault-testbed".into());
            let env = Path::new(&dir).join("env");
            let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
                panic!(
                    "the testbed is not up ({} missing): run `scripts/testbed.sh up` as root first",
                    env.display()
                )
            });
            for line in text.lines() {
                if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                    vars.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
            }
        }
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("testbed env lacks {k}: rerun scripts/testbed.sh up"))
        };
        Testbed {
            dir: get("VAULT_TESTBED_DIR").into(),
            git_base: get("VAULT_TESTBED_GIT_BASE").into(),
            git_url: get("VAULT_TESTBED_GIT_URL"),
            image: get("VAULT_TESTBED_IMAGE"),
            runsc: get("VAULT_TESTBED_RUNSC") == "1",
        }
    }
}

/// A name unique to this process and call, safe as an action id, repo name
/// or container suffix.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos
    )
}

/// The folder holding the workspace's built binaries: `VAULT_BIN_DIR`, else
/// the `target/<profile>` folder this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VAULT_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test-binary>
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Path of one built tool, e.g. `bin("vault-scan")`.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// What a finished process left.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Assert the exit code, showing both streams on mismatch.
    #[track_caller]
    pub fn fails_with_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.fails_with_code(0)
    }
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Run `cmd` with `stdin` piped in; waits at most `limit`.
pub fn run_with(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_output(child, limit, |pid| {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("{cmd:?} ran longer than {limit:?}");
    });
    let _ = feeder.join();
    out
}

/// Wait for `child` to exit and collect its output (its stdout and stderr
/// are read all the while, so a full pipe never stalls it). Past `limit`,
/// `on_timeout` gets its pid (to kill it; it should panic with the story).
pub fn wait_output(
    child: std::process::Child,
    limit: Duration,
    on_timeout: impl FnOnce(u32),
) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap().into(),
        Err(_) => {
            on_timeout(pid);
            panic!("process {pid} ran longer than {limit:?}");
        }
    }
}

/// `TOOL --repo URL --dispatcher-id ID --cache DIR`: vault-scan or
/// result-write pointed at an ops repo, ready for more arguments.
pub fn repo_tool(tool: &str, url: &str, dispatcher: &str, cache: &Path) -> Command {
    let mut cmd = Command::new(bin(tool));
    cmd.args(["--repo", url, "--dispatcher-id", dispatcher])
        .arg("--cache")
        .arg(cache);
    cmd
}

/// Start `cmd` in the background with `input` written to its stdin, which is
/// then closed. stdout and stderr are as the caller set them on `cmd`.
pub fn spawn_fed(cmd: &mut Command, input: &[u8]) -> std::process::Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// Run `cmd` with `stdin`, at most 120 s.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    run_with(cmd, stdin, Duration::from_secs(120))
}

/// Run a git command, panicking with its stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare ops repo served by the testbed's git daemon, with a scratch clone
/// to commit to it as a merging human would.
pub struct OpsRepo {
    pub bare: PathBuf,
    /// `git://127.0.0.1:PORT/<name>.git`
    pub url: String,
    pub branch: String,
    scratch: TempDir,
}

impl OpsRepo {
    /// A new repo with one commit on `main` holding `README.md` and
    /// `vault/actions/.keep`.
    pub fn new(tb: &Testbed) -> OpsRepo {
        Self::new_in(&tb.git_base, &tb.git_url)
    }

    /// Like [`new`](Self::new), for another git daemon serving `git_base`
    /// at `git_url` (e.g. a [`GitDaemon`] a test stops and starts).
    pub fn new_in(git_base: &Path, git_url: &str) -> OpsRepo {
        let name = format!("{}.git", unique("ops"));
        let bare = git_base.join(&name);
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let scratch = TempDir::new().unwrap();
        let work = scratch.path();
        git(work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "ops repo\n").unwrap();
        std::fs::create_dir_all(work.join("vault/actions")).unwrap();
        std::fs::write(work.join("vault/actions/.keep"), "").unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-qm", "init"]);
        let url = format!("{git_url}/{name}");
        git(work, &["remote", "add", "origin", &url]);
        git(work, &["push", "-q", "origin", "main"]);
        OpsRepo {
            bare,
            url,
            branch: "main".into(),
            scratch,
        }
    }

    /// Commit files (path, content) on top of the remote branch and push;
    /// returns the new commit's sha. `None` content deletes the path.
    pub fn commit(&self, files: &[(&str, Option<&[u8]>)], message: &str) -> String {
        let work = self.scratch.path();
        git(work, &["fetch", "-q", "origin", &self.branch]);
        git(work, &["reset", "-q", "--hard", "FETCH_HEAD"]);
        for (path, content) in files {
            let p = work.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, c).unwrap();
                    git(work, &["add", "--", path]);
                }
                None => {
                    git(work, &["rm", "-q", "--", path]);
                }
            }
        }
        git(work, &["commit", "-qm", message]);
        git(
            work,
            &["push", "-q", "origin", &format!("HEAD:{}", self.branch)],
        );
        git(work, &["rev-parse", "HEAD"])
    }

    /// Land (approve) `vault/actions/<id>.json` with this content.
    pub fn land_action(&self, id: &str, json: &str) -> String {
        self.land_actions(&[(id, json)])
    }

    /// Land (approve) several actions, (id, content) each, in one commit.
    pub fn land_actions<S: AsRef<str>>(&self, actions: &[(&str, S)]) -> String {
        let paths: Vec<String> = actions
            .iter()
            .map(|(id, _)| format!("vault/actions/{id}.json"))
            .collect();
        let files: Vec<(&str, Option<&[u8]>)> = paths
            .iter()
            .zip(actions)
            .map(|(path, (_, json))| (path.as_str(), Some(json.as_ref().as_bytes())))
            .collect();
        let message = match actions {
            [(id, _)] => format!("approve {id}"),
            _ => format!("approve {} actions", actions.len()),
        };
        self.commit(&files, &message)
    }

    /// A file's content on the remote branch, if present.
    pub fn show(&self, path: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(["show", &format!("{}:{}", self.branch, path)])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The result file of `id`, parsed, if present on the remote branch.
    pub fn result(&self, id: &str) -> Option<serde_json::Value> {
        self.show(&format!("vault/actions/{id}.result.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
    }

    /// Commit shas of the remote branch, newest first.
    pub fn log(&self) -> Vec<String> {
        git(&self.bare, &["rev-list", &self.branch])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", &self.branch])
    }

    /// Rewrite the remote branch to `commit` (a force-push: the new tip
    /// need not descend from the old one).
    pub fn force_push(&self, commit: &str) {
        let work = self.scratch.path();
        git(work, &["fetch", "-q", "origin", &self.branch]);
        git(
            work,
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("{commit}:refs/heads/{}", self.branch),
            ],
        );
    }

    /// Land a commit on top of the branch whose `vault/actions` tree is the
    /// raw tree object `raw` (written as is, so it may be one that `git
    /// fsck` refuses, e.g. with two entries of one name). Returns the sha.
    pub fn land_raw_actions_tree(&self, raw: &[u8], message: &str) -> String {
        let bare = &self.bare;
        let hash = |args: &[&str], input: &[u8]| -> String {
            let mut child = Command::new("git")
                .arg("--git-dir")
                .arg(bare)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?} failed");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let actions = hash(
            &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
            raw,
        );
        let vault = hash(
            &["mktree"],
            format!("040000 tree {actions}\tactions\n").as_bytes(),
        );
        let readme = git(bare, &["rev-parse", &format!("{}:README.md", self.branch)]);
        let root = hash(
            &["mktree"],
            format!("100644 blob {readme}\tREADME.md\n040000 tree {vault}\tvault\n").as_bytes(),
        );
        let head = self.head();
        let commit = git(bare, &["commit-tree", &root, "-p", &head, "-m", message]);
        git(
            bare,
            &[
                "update-ref",
                &format!("refs/heads/{}", self.branch),
                &commit,
                &head,
            ],
        );
        commit
    }

    /// Install a server-side hook (e.g. `pre-receive`) with this script.
    pub fn install_hook(&self, name: &str, script: &str) {
        let p = self.bare.join("hooks").join(name);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A secret store: a directory of `<NAME>.age` files and the identity that
/// decrypts them, made with the real `age-keygen` and `age` CLIs.
pub struct SecretStore {
    pub dir: TempDir,
    pub identity: PathBuf,
    pub recipient: String,
}

impl SecretStore {
    pub fn new() -> SecretStore {
        let dir = TempDir::new().unwrap();
        let identity = dir.path().join("identity.txt");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(out.status.success(), "age-keygen failed");
        let recipient = Command::new("age-keygen")
            .arg("-y")
            .arg(&identity)
            .output()
            .unwrap();
        let recipient = String::from_utf8(recipient.stdout)
            .unwrap()
            .trim()
            .to_string();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        SecretStore {
            dir,
            identity,
            recipient,
        }
    }

    /// The store directory (`VAULT_SECRETS`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Encrypt `value` to `<store>/<name>.age` with the `age` CLI; the value
    /// goes through stdin, never argv.
    pub fn add(&self, name: &str, value: &[u8]) -> PathBuf {
        self.add_with(name, value, &[])
    }

    /// Like [`add`](Self::add), with extra `age` flags (e.g. `["-a"]` for
    /// armor).
    pub fn add_with(&self, name: &str, value: &[u8], flags: &[&str]) -> PathBuf {
        let path = self.store().join(format!("{name}.age"));
        let mut child = spawn_fed(
            Command::new("age")
                .args(["-r", &self.recipient])
                .args(flags)
                .arg("-o")
                .arg(&path),
            value,
        );
        assert!(child.wait().unwrap().success(), "age failed");
        path
    }
}

impl Default for SecretStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Run a docker CLI command (for assertions only; the tools use the API).
pub fn docker(args: &[&str]) -> Output {
    run_with(
        Command::new("docker").args(args),
        b"",
        Duration::from_secs(60),
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `done` until it holds; panic with "timed out waiting for `what`"
/// once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (at most 10 s) until 127.0.0.1:`port` accepts connections
/// (`listening`) or refuses them (`!listening`).
fn wait_for_port(port: u16, listening: bool, what: &str) {
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

/// A new ed25519 key pair at `path` and `path.pub`, its private key
/// encrypted with `passphrase` (none when empty); returns `path`.
pub fn ssh_keygen(path: &Path, passphrase: &str) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is needed: run scripts/testbed.sh up");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    path.to_path_buf()
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

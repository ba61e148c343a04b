//! The compose deployment end to end on the real bench: the edge, runner
//! and gateway images built from the shipped `deploy/Dockerfile.edge`,
//! `deploy/runner/Dockerfile` and `deploy/Dockerfile.gateway` by the shipped
//! `docker-compose.yml` (with
//! docker-compose 1.29, Debian bookworm's), the dispatcher brought up with
//! it, an ops repo on the testbed's git daemon and a real age secret.
//!
//! What differs from a user's host, and why:
//! - No registry is reachable here, so `debian:bookworm-slim` is made by
//!   `scripts/base-image.sh` (debootstrap, cached between runs).
//! - The bench's dockerd runs with `--bridge=none`: `.env` sets
//!   `VAULT_BUILD_NETWORK=host` (a documented setting) for the builds'
//!   `apt-get`, and a small override file gives the dispatcher
//!   `network_mode: host` so that it reaches the git daemon on 127.0.0.1.
//!   Nothing else of the shipped file is overridden.
//! - Settings are read from this test's `.env` (`--env-file`), the vault
//!   folder, cache and secrets tmpfs are in a temp dir (`VAULT_HOST_DIR`,
//!   `VAULT_CACHE`, `VAULT_SECRETS_TMPFS`: a tmpfs the test mounts), and the
//!   images get test-only tags, removed at the end with the project
//!   (`down -v`). The base image is kept.
//! - The allowlisted action's upstream is a container on a network the test
//!   makes (`vault_e2e::egress`), with a CA of its own that `.env` names in
//!   `VAULT_GATEWAY_ROOTS`.
//!
//! Needs `docker-compose` on PATH and the release binaries
//! (`cargo build --release --locked`), which the edge image copies.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use vault_e2e::{container_state, creates, now_s, shared_dockerd};
use vault_testkit::{docker, run_with, unique, wait_until, OpsRepo, Output, SecretStore, Testbed};

/// The release binaries the images copy (the edge image the first five,
/// the gateway image vault-gateway).
const TOOLS: [&str; 6] = [
    "vault-scan",
    "secret-mount",
    "run-action",
    "result-write",
    "vault-status",
    "vault-gateway",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Newest modification time of the files under `dir` (recursively).
fn newest(dir: &Path) -> SystemTime {
    let mut best = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return best;
    };
    for e in entries.flatten() {
        let meta = e.metadata().unwrap();
        let t = if meta.is_dir() {
            newest(&e.path())
        } else {
            meta.modified().unwrap()
        };
        best = best.max(t);
    }
    best
}

/// The release binaries the edge image copies: present, and not older than
/// the sources each is built from (a stale binary would test old code).
fn check_release_binaries(root: &Path) {
    for tool in TOOLS {
        let manifest =
            std::fs::read_to_string(root.join("tools").join(tool).join("Cargo.toml")).unwrap();
        let mut sources = newest(&root.join("tools").join(tool).join("src"));
        for dep in ["vault-core", "vault-git", "vault-mask"] {
            if manifest.contains(&format!("\n{dep}.workspace")) {
                sources = sources.max(newest(&root.join("crates").join(dep).join("src")));
            }
        }
        let p = root.join("target/release").join(tool);
        let built = std::fs::metadata(&p)
            .unwrap_or_else(|_| {
                panic!(
                    "{} is missing: the edge image copies the release binaries; run \
                     `cargo build --release --locked` first",
                    p.display()
                )
            })
            .modified()
            .unwrap();
        assert!(
            built >= sources,
            "{} is older than its sources: run `cargo build --release --locked` first",
            p.display()
        );
    }
}

/// The mounted tmpfs (the secrets folder), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs on {} failed", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One compose project: `docker-compose -p NAME --env-file ENV -f <shipped>
/// -f <override>`, torn down (`down -v`, test-tagged images removed) when
/// dropped.
struct Project {
    name: String,
    env_file: PathBuf,
    files: Vec<PathBuf>,
    images: Vec<String>,
    dispatcher_id: String,
}

impl Project {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        // Only what the test means: no VAULT_* or SSL_* of the caller's
        // shell reaches the project (compose passes shell variables on).
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or("/root".into()));
        if let Some(h) = std::env::var_os("DOCKER_HOST") {
            c.env("DOCKER_HOST", h);
        }
        c.args(["--ansi", "never"])
            .args(["-p", &self.name, "--env-file"])
            .arg(&self.env_file);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        c.args(args);
        c
    }

    fn run(&self, args: &[&str], limit: Duration) -> Output {
        let started = Instant::now();
        let out = run_with(&mut self.cmd(args), b"", limit);
        eprintln!(
            "docker-compose {}: exit {:?} in {:.1} s",
            args.join(" "),
            out.code,
            started.elapsed().as_secs_f64()
        );
        out
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let out = self.run(
            &["down", "-v", "--remove-orphans", "--timeout", "5"],
            Duration::from_secs(120),
        );
        if out.code != Some(0) {
            eprintln!("docker-compose down: {}", out.stderr);
        }
        // Action containers a failed run may have left (none on success).
        let left = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=vault.dispatcher={}", self.dispatcher_id),
        ]);
        for id in left.stdout.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        // Only the images this test tagged; the base image stays.
        for image in self.images.iter().filter(|i| i.contains(":compose-test-")) {
            let _ = docker(&["rmi", image]);
        }
    }
}

fn write_env(path: &Path, lines: &[(&str, String)]) {
    let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Every file under `dir` (not following symlinks) whose bytes contain
/// `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            hits.extend(files_containing(&e.path(), needle));
        } else if ft.is_file() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            if contains(&bytes, needle) {
                hits.push(e.path());
            }
        }
    }
    hits
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn compose_deployment_builds_its_images_and_dispatches_with_the_secret_masked() {
    let _g = shared_dockerd();
    let t0 = Instant::now();
    let tb = Testbed::get();
    let root = workspace_root();
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "docker-compose not found: `apt-get install docker-compose` (scripts/testbed.sh up does)"
    );
    check_release_binaries(&root);

    // The base image the Dockerfiles start FROM (cached between runs).
    let started = Instant::now();
    let out = run_with(
        Command::new("bash").arg(root.join("scripts/base-image.sh")),
        b"",
        Duration::from_secs(540),
    );
    out.success();
    eprintln!(
        "scripts/base-image.sh: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The user's side: an ops repo, a secret store, the deployment folder.
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("compose"));
    secrets.add("API_TOKEN", canary.as_bytes());
    let dir = tempfile::TempDir::new().unwrap();
    let base = dir.path();
    let vault = base.join("vault");
    std::fs::create_dir_all(vault.join("secrets")).unwrap();
    std::fs::copy(&secrets.identity, vault.join("identity.txt")).unwrap();
    std::fs::copy(
        secrets.store().join("API_TOKEN.age"),
        vault.join("secrets/API_TOKEN.age"),
    )
    .unwrap();
    let cache = base.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let tmpfs = Tmpfs::mount(&base.join("secrets-tmpfs"));
    let override_file = base.join("bench-network.yml");
    std::fs::write(
        &override_file,
        "# The bench's dockerd has no bridge: the dispatcher shares the host's\n\
         # network to reach the git daemon on 127.0.0.1.\n\
         services:\n  dispatcher:\n    network_mode: host\n",
    )
    .unwrap();

    // The egress side: a network of the test's own with an upstream on it,
    // whose CA the gateway is told to trust (a path inside the container).
    let certs = tempfile::TempDir::new().unwrap();
    vault_e2e::egress::make_certs(certs.path());
    std::fs::copy(certs.path().join("ca.pem"), vault.join("upstream-ca.pem")).unwrap();
    let upstream = vault_e2e::egress::Upstream::start(certs);

    let tag = unique("compose-test");
    let edge_image = format!("vault-dispatch:{tag}");
    let runner_image = format!("vault-runner:{tag}");
    let gateway_image = format!("vault-gateway:{tag}");
    let dispatcher_id = format!("edge-{tag}");
    let mut settings = vec![
        ("VAULT_BUILD_NETWORK", "host".to_string()),
        ("VAULT_EDGE_IMAGE", edge_image.clone()),
        ("VAULT_RUNNER_IMAGE", runner_image.clone()),
        ("VAULT_ALLOW_IMAGES", runner_image.clone()),
        ("VAULT_HOST_DIR", vault.display().to_string()),
        ("VAULT_CACHE", cache.display().to_string()),
        ("VAULT_SECRETS_TMPFS", tmpfs.0.display().to_string()),
        ("VAULT_DISPATCHER_ID", dispatcher_id.clone()),
        ("VAULT_INTERVAL", "2".to_string()),
        ("VAULT_TIMEOUT_S", "120".to_string()),
        ("VAULT_GATEWAY_IMAGE", gateway_image.clone()),
        (
            "VAULT_EGRESS_NETWORK",
            vault_e2e::egress::EGRESS_NET.to_string(),
        ),
        ("VAULT_ALLOW_EGRESS", "api.test.example:8443".to_string()),
        (
            "VAULT_GATEWAY_ROOTS",
            "/etc/vault/upstream-ca.pem".to_string(),
        ),
    ];
    let env_file = base.join(".env");
    // Building needs no VAULT_REPO: it is not in .env yet.
    write_env(&env_file, &settings);
    let project = Project {
        name: format!("vaultcompose{}", std::process::id()),
        env_file: env_file.clone(),
        files: vec![root.join("docker-compose.yml"), override_file.clone()],
        images: vec![
            edge_image.clone(),
            runner_image.clone(),
            gateway_image.clone(),
        ],
        dispatcher_id: dispatcher_id.clone(),
    };

    // `docker compose build`, no service named: all three images.
    let built = project.run(&["build"], Duration::from_secs(600));
    built.success();
    for image in [&edge_image, &runner_image, &gateway_image] {
        docker(&["image", "inspect", image]).success();
    }
    for image in [&runner_image, &gateway_image] {
        let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", image]);
        assert_eq!(user.stdout.trim(), "65534:65534", "{image}");
    }

    // Two approved actions: the runner image's own formula, and a command
    // reading its secret.
    let hello = unique("hello");
    let secret_id = unique("secret");
    let egress_id = unique("egress");
    repo.land_actions(&[
        (
            egress_id.as_str(),
            serde_json::json!({
                "id": egress_id,
                "secrets": ["API_TOKEN"],
                "command": ["sh", "-c", "curl -sS https://api.test.example:8443/echo; echo rc=$?; ls /run/secrets 2>/dev/null || echo no-secrets-mounted"],
                "network": {
                    "allow": ["api.test.example:8443"],
                    "inject": {"API_TOKEN": {"host": "api.test.example", "header": "Authorization", "format": "Bearer {}"}}
                }
            })
            .to_string(),
        ),
        (
            hello.as_str(),
            serde_json::json!({"id": hello, "secrets": [], "formula": "hello"}).to_string(),
        ),
        (
            secret_id.as_str(),
            serde_json::json!({
                "id": secret_id,
                "secrets": ["API_TOKEN"],
                "command": ["sh", "-c", "ls -l /run/secrets; echo token=$(cat /run/secrets/API_TOKEN)"],
            })
            .to_string(),
        ),
    ]);

    settings.push(("VAULT_REPO", repo.url.clone()));
    write_env(&env_file, &settings);
    let since = now_s();
    let started = Instant::now();
    let up = project.run(&["up", "-d"], Duration::from_secs(300));
    up.success();

    let finished = |id: &str| {
        repo.result(id)
            .filter(|r| r["status"] != "running")
            .is_some()
    };
    let logs = || {
        project.run(
            &["logs", "--no-color", "dispatcher"],
            Duration::from_secs(60),
        )
    };
    let limit = Duration::from_secs(180);
    let deadline = Instant::now() + limit;
    while !(finished(&hello) && finished(&secret_id) && finished(&egress_id)) {
        if Instant::now() > deadline {
            let l = logs();
            panic!(
                "no final results after {limit:?}; dispatcher log:\n{}{}",
                l.stdout, l.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The dispatcher removes each container once its result is recorded.
    for id in [&hello, &secret_id, &egress_id] {
        wait_until(
            "the action's container to go",
            Duration::from_secs(60),
            || container_state(id).is_none(),
        );
    }
    eprintln!(
        "up -d to both results recorded: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let r = repo.result(&hello).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["dispatcher"], dispatcher_id.as_str());
    assert_eq!(r["container"]["image"], runner_image.as_str(), "{r}");
    let hello_logs = r["logs"].as_str().unwrap();
    assert!(
        hello_logs.contains(&format!("hello from action {hello}")),
        "{hello_logs}"
    );

    let r = repo.result(&secret_id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["exit_code"], 0);
    let secret_logs = r["logs"].as_str().unwrap();
    assert!(secret_logs.contains("token=***"), "{secret_logs}");
    assert!(secret_logs.contains("API_TOKEN"), "{secret_logs}");
    for id in [&hello, &secret_id, &egress_id] {
        assert_eq!(creates(id, since), 1, "{id} started once");
    }

    // The allowlisted action, through the compose-built gateway: the
    // upstream got the token, the runner only the masked echo.
    let r = repo.result(&egress_id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    let egress_logs = r["logs"].as_str().unwrap();
    assert!(egress_logs.contains("echo-auth=***"), "{egress_logs}");
    assert!(egress_logs.contains("rc=0"), "{egress_logs}");
    assert!(egress_logs.contains("no-secrets-mounted"), "{egress_logs}");
    assert_eq!(r["egress"]["contacted"]["api.test.example:8443"], 1, "{r}");
    let seen: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|q| q["path"] == "/echo")
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["authorization"], format!("Bearer {canary}"));

    // compose never keeps a runner container (scale 0).
    let ps = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.name),
        "--format",
        "{{.Names}} {{.Label \"com.docker.compose.service\"}}",
    ]);
    ps.success();
    let services: Vec<&str> = ps.stdout.lines().collect();
    assert_eq!(services.len(), 1, "only the dispatcher runs: {services:?}");
    assert!(services[0].ends_with(" dispatcher"), "{services:?}");
    let dispatcher_container = services[0].split(' ').next().unwrap().to_string();
    // A setting .env leaves out is unset in the container, not empty.
    let env = docker(&[
        "exec",
        &dispatcher_container,
        "sh",
        "-c",
        "tr '\\0' '\\n' </proc/1/environ",
    ]);
    env.success();
    assert!(env.stdout.contains("VAULT_REPO=git://"), "{}", env.stdout);
    for unset in [
        "VAULT_TOKEN_FILE",
        "VAULT_SSH_KEY",
        "VAULT_BRANCH",
        "SSL_CERT_FILE",
    ] {
        assert!(
            !env.stdout
                .lines()
                .any(|l| l.split('=').next() == Some(unset)),
            "{unset}: {}",
            env.stdout
        );
    }

    // The secret value is in no output, no container log, no file outside
    // the tmpfs, and the tmpfs is empty again.
    let needle = canary.as_bytes();
    let dispatcher_log = logs();
    dispatcher_log.success();
    let log_text = format!("{}{}", dispatcher_log.stdout, dispatcher_log.stderr);
    assert!(log_text.contains("token=***"), "{log_text}");
    assert!(
        !contains(log_text.as_bytes(), needle),
        "secret in the dispatcher's log"
    );
    for out in [&built, &up] {
        assert!(!contains(out.stdout.as_bytes(), needle));
        assert!(!contains(out.stderr.as_bytes(), needle));
    }
    let all_objects = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .unwrap();
    assert!(all_objects.status.success());
    assert!(
        !contains(&all_objects.stdout, needle),
        "secret in the ops repo"
    );
    for place in [
        cache.as_path(),
        vault.as_path(),
        base.join(".env").as_path(),
    ] {
        let hits = files_containing(place, needle);
        assert!(hits.is_empty(), "secret in files: {hits:?}");
    }
    // The edge container's own file system and its state on the daemon.
    let export = Command::new("docker")
        .args(["export", &dispatcher_container])
        .output()
        .unwrap();
    assert!(export.status.success());
    assert!(
        export.stdout.len() > 1_000_000,
        "docker export gave a root fs"
    );
    assert!(
        !contains(&export.stdout, needle),
        "secret in the edge container's file system"
    );
    let full_id = docker(&["inspect", "--format", "{{.Id}}", &dispatcher_container]);
    let state = Path::new("/var/lib/docker/containers").join(full_id.stdout.trim());
    assert!(state.is_dir(), "{}", state.display());
    let hits = files_containing(&state, needle);
    assert!(hits.is_empty(), "secret in the daemon's files: {hits:?}");
    let left: Vec<_> = std::fs::read_dir(&tmpfs.0).unwrap().flatten().collect();
    assert!(left.is_empty(), "the tmpfs is wiped: {left:?}");

    drop(project);
    for image in [&edge_image, &runner_image, &gateway_image] {
        assert_ne!(docker(&["image", "inspect", image]).code, Some(0));
    }
    eprintln!("whole compose test: {:.1} s", t0.elapsed().as_secs_f64());
}

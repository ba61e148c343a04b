//! The whole pipeline on rootless Podman: dispatcher.sh and the four tools
//! run as an unprivileged user (`runuser`, with that user's environment
//! only), against `podman system service` on that user's socket, with
//! secret-mount in its unprivileged mode (`VAULT_SECRETS_TMPFS`, a tmpfs
//! root mounted for the user). No root daemon and no root-owned socket take
//! part: `scripts/rootless.sh up` (as root) sets the bench up and writes
//! `$VAULT_ROOTLESS_DIR/env`; the ops repos are on the testbed's git daemon
//! on 127.0.0.1 (`scripts/testbed.sh up`), spoken to over git:// only.
//!
//! Starts are counted from Podman's own event log (`podman events`, written
//! by libpod in the service), not from what the tools say. Which limits the
//! engine leaves unenforced is measured here too, by a probe container
//! created with the podman CLI.
//!
//! What of `tests/e2e.rs` and `tests/at_most_once.rs` is ported here, and
//! why the rest is not, is listed in docs/deploy/rootless.md ("What CI
//! runs").

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use vault_e2e::{action, dispatcher_sh, kill_group, now_s};
use vault_testkit::{
    bin_dir, run_with, spawn_fed, unique, wait_until, OpsRepo, Output, SecretStore, TempDir,
    Testbed,
};

/// The rootless bench's coordinates (`scripts/rootless.sh up`).
#[derive(Debug, Clone)]
struct Rootless {
    dir: PathBuf,
    user: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    runtime_dir: PathBuf,
    docker_host: String,
    tmpfs: PathBuf,
    image: String,
}

impl Rootless {
    /// From `$VAULT_ROOTLESS_DIR/env` (default `/tmp/vault-rootless/env`);
    /// panics with the command to run when the bench is not up: a missing
    /// bench is a failed test, never a skipped one.
    fn get() -> Rootless {
        let dir =
            std::env::var("VAULT_ROOTLESS_DIR").unwrap_or_else(|_| "/tmp/vault-rootless".into());
        let env = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
            panic!(
                "the rootless bench is not up ({} missing): run `scripts/rootless.sh up` as root first",
                env.display()
            )
        });
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.trim_start_matches("export ").split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            vars.get(&format!("VAULT_ROOTLESS_{k}"))
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "{} lacks VAULT_ROOTLESS_{k}: rerun scripts/rootless.sh up",
                        env.display()
                    )
                })
        };
        Rootless {
            dir: get("DIR").into(),
            user: get("USER"),
            uid: get("UID").parse().unwrap(),
            gid: get("GID").parse().unwrap(),
            home: get("HOME").into(),
            runtime_dir: get("XDG_RUNTIME_DIR").into(),
            docker_host: get("DOCKER_HOST"),
            tmpfs: get("SECRETS_TMPFS").into(),
            image: get("IMAGE"),
        }
    }

    /// `runuser -u USER -- env -i <the user's own environment> PROGRAM`:
    /// nothing of root's environment (a DOCKER_HOST, say) reaches it.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", &self.user, "--", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.user))
            .arg(format!("LOGNAME={}", self.user))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime_dir.display()));
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program);
        c
    }

    /// The podman CLI as the user (for assertions only; the tools use the
    /// API on the user's socket).
    fn podman(&self, args: &[&str]) -> Output {
        let mut c = self.command("podman", &[]);
        c.args(args);
        run_with(&mut c, b"", Duration::from_secs(60))
    }

    /// Podman's own record of `event`s (create, start) of containers
    /// labelled with action `id` since `since` (unix seconds).
    fn events(&self, event: &str, id: &str, since: u64) -> usize {
        let out = self.podman(&[
            "events",
            "--stream=false",
            "--since",
            &since.to_string(),
            "--filter",
            &format!("event={event}"),
            "--filter",
            &format!("label=vault.action={id}"),
            "--format",
            "{{.ID}}",
        ]);
        out.success();
        out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    }

    fn starts(&self, id: &str, since: u64) -> usize {
        self.events("start", id, since)
    }

    fn container_state(&self, id: &str) -> Option<String> {
        let out = self.podman(&[
            "inspect",
            "--format",
            "{{.State.Status}}",
            &format!("vault-{id}"),
        ]);
        (out.code == Some(0)).then(|| out.stdout.trim().to_string())
    }

    /// The limits this engine accepts and leaves unenforced, measured with
    /// a probe container: `memory,cpus,pids` on rootless Podman with
    /// cgroup v1, empty where they apply (cgroup v2 with delegation).
    fn unenforced_limits(&self) -> Vec<&'static str> {
        let name = unique("limit-probe");
        self.podman(&[
            "create",
            "--name",
            &name,
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--cpus",
            "1",
            "--pids-limit",
            "64",
            &self.image,
            "true",
        ])
        .success();
        let out = self.podman(&[
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}} {{.HostConfig.PidsLimit}}",
            &name,
        ]);
        self.podman(&["rm", "-f", &name]).success();
        out.success();
        let v: Vec<i64> = out
            .stdout
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let mut off = Vec::new();
        if v[0] == 0 {
            off.push("memory");
        }
        if v[1] == 0 && v[2] <= 0 {
            off.push("cpus");
        }
        if v[3] == 0 {
            off.push("pids");
        }
        off
    }

    /// The folder of the four tools and dispatcher.sh as the user can run
    /// them: the build's own when the user can reach it, else a copy in
    /// the bench's folder (a checkout under /root is out of its reach).
    fn tools(&self) -> &'static Path {
        static TOOLS: OnceLock<PathBuf> = OnceLock::new();
        TOOLS.get_or_init(|| {
            let built = bin_dir();
            let names = ["vault-scan", "secret-mount", "run-action", "result-write"];
            let mut probe = self.command("sh", &[]);
            probe.arg("-c").arg(format!(
                "cd {} && test -x vault-scan -a -x secret-mount -a -x run-action -a -x result-write -a -r {}",
                built.display(),
                dispatcher_sh().display()
            ));
            let reachable = run_with(&mut probe, b"", Duration::from_secs(30)).code == Some(0);
            if reachable {
                return built;
            }
            use std::os::unix::fs::PermissionsExt;
            let dir = self.dir.join("tools");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            for (from, name) in names
                .iter()
                .map(|n| (built.join(n), *n))
                .chain([(dispatcher_sh(), "dispatcher.sh")])
            {
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::copy(from, &tmp).unwrap();
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::fs::rename(&tmp, dir.join(name)).unwrap();
            }
            dir
        })
    }

    /// dispatcher.sh as the user runs it.
    fn dispatcher_sh(&self) -> PathBuf {
        let copy = self.tools().join("dispatcher.sh");
        if copy.exists() {
            copy
        } else {
            dispatcher_sh()
        }
    }

    /// A folder owned by the user (under a root-made temp dir).
    fn owned_dir(&self, parent: &TempDir, name: &str) -> PathBuf {
        let p = parent.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(parent.path(), Some(self.uid), Some(self.gid)).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }
}

/// One dispatcher host run by the unprivileged user.
struct Site {
    rl: Rootless,
    url: String,
    id: String,
    _root: TempDir,
    cache: PathBuf,
    identity: PathBuf,
    store: PathBuf,
}

impl Site {
    /// A site for the repo at `url`, with a copy of `secrets` the user owns
    /// (the originals are root's, mode 0700).
    fn new(rl: &Rootless, url: &str, secrets: &SecretStore, id: &str) -> Site {
        let root = TempDir::new().unwrap();
        let cache = rl.owned_dir(&root, "cache");
        let keys = rl.owned_dir(&root, "keys");
        let store = rl.owned_dir(&root, "store");
        let identity = keys.join("identity.txt");
        std::fs::copy(&secrets.identity, &identity).unwrap();
        let mut files = vec![identity.clone()];
        for e in std::fs::read_dir(secrets.store()).unwrap() {
            let e = e.unwrap();
            let to = store.join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            files.push(to);
        }
        for f in files {
            std::os::unix::fs::chown(&f, Some(rl.uid), Some(rl.gid)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Site {
            rl: rl.clone(),
            url: url.to_string(),
            id: id.to_string(),
            _root: root,
            cache,
            identity,
            store,
        }
    }

    /// The whole environment the tools get: the user's own, nothing else.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let rl = &self.rl;
        let mut env: Vec<(String, String)> = [
            ("DOCKER_HOST", rl.docker_host.clone()),
            ("VAULT_BIN_DIR", rl.tools().display().to_string()),
            ("VAULT_REPO", self.url.clone()),
            ("VAULT_BRANCH", "main".into()),
            ("VAULT_CACHE", self.cache.display().to_string()),
            ("VAULT_IDENTITY", self.identity.display().to_string()),
            ("VAULT_SECRETS", self.store.display().to_string()),
            ("VAULT_SECRETS_TMPFS", rl.tmpfs.display().to_string()),
            ("VAULT_RUNNER_USER", format!("{}:{}", rl.uid, rl.gid)),
            ("VAULT_RUNNER_IMAGE", rl.image.clone()),
            ("VAULT_ALLOW_IMAGES", rl.image.clone()),
            ("VAULT_DISPATCHER_ID", self.id.clone()),
            ("VAULT_TIMEOUT_S", "60".into()),
            ("VAULT_GRACE_S", "2".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// `dispatcher.sh --once` as the user with `extra` variables.
    fn command(&self, extra: &[(&str, &str)]) -> Command {
        let mut c = self.rl.command("sh", &self.env(extra));
        c.arg(self.rl.dispatcher_sh()).arg("--once");
        c
    }

    fn once(&self, extra: &[(&str, &str)]) -> Output {
        run_with(&mut self.command(extra), b"", Duration::from_secs(240))
    }

    /// `dispatcher.sh --once` in a process group of its own (runuser and
    /// everything under it), to be killed as a host crash would.
    fn spawn(&self, extra: &[(&str, &str)]) -> Child {
        self.command(extra)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Run directories secret-mount left in the user's tmpfs for this site.
    fn secret_dirs_left(&self) -> Vec<String> {
        std::fs::read_dir(&self.rl.tmpfs)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{}.", self.id)))
            .collect()
    }
}

fn bench() -> (Testbed, Rootless) {
    (Testbed::get(), Rootless::get())
}

/// The opt-out for exactly the limits this engine leaves unenforced.
fn opt_out(rl: &Rootless) -> String {
    rl.unenforced_limits().join(",")
}

#[test]
fn the_tools_run_as_the_user_against_its_own_socket_and_no_root_daemon() {
    let (tb, rl) = bench();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&rl, &repo.url, &secrets, "rootless-who");
    let env = site.env(&[]);
    let ask = |script: &str| -> String {
        let mut c = rl.command("sh", &env);
        c.args(["-c", script]);
        let out = run_with(&mut c, b"", Duration::from_secs(30));
        out.success();
        out.stdout.trim().to_string()
    };
    assert_eq!(
        ask("id -u"),
        rl.uid.to_string(),
        "the tools run with the user's uid"
    );
    assert_ne!(rl.uid, 0);
    assert_eq!(ask("echo \"$DOCKER_HOST\""), rl.docker_host);
    assert!(
        rl.docker_host
            .starts_with(&format!("unix://{}/", rl.runtime_dir.display())),
        "the socket is in the user's runtime dir: {}",
        rl.docker_host
    );
    // The socket is the user's own; root's dockerd socket is out of reach.
    let sock = rl.docker_host.trim_start_matches("unix://");
    let meta = std::fs::metadata(sock).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        rl.uid,
        "{sock} is the user's"
    );
    assert_eq!(
        ask("if [ -w /var/run/docker.sock ] || [ -r /var/run/docker.sock ]; then echo reachable; else echo unreachable; fi"),
        "unreachable"
    );
    // The API on that socket is Podman's, served by a process of the user.
    let version = ask(&format!("curl -sS --unix-socket {sock} http://d/version"));
    assert!(version.contains("Podman Engine"), "{version}");
    let servers = socket_holders(Path::new(sock));
    assert!(!servers.is_empty(), "some process serves {sock}");
    for (pid, uids) in servers {
        assert!(
            uids.iter().all(|u| *u == rl.uid),
            "process {pid} holding {sock} runs as {uids:?}, not only as the user"
        );
    }
}

/// The processes holding the listening unix socket at `path`, with their
/// real, effective, saved and file-system uids (from /proc, as root).
fn socket_holders(path: &Path) -> Vec<(String, Vec<u32>)> {
    let path = path.to_string_lossy();
    let inodes: Vec<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(7) == Some(&*path))
        .filter_map(|l| l.split_whitespace().nth(6).map(|i| format!("socket:[{i}]")))
        .collect();
    let mut out = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| inodes.iter().any(|i| t.to_string_lossy() == *i))
        });
        if holds {
            let status =
                std::fs::read_to_string(proc_entry.path().join("status")).unwrap_or_default();
            let uids = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|u| u.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            out.push((pid, uids));
        }
    }
    out
}

#[test]
fn unenforced_limits_are_refused_unstarted_unless_the_operator_allows_exactly_them() {
    let (tb, rl) = bench();
    let unenforced = opt_out(&rl);
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("rootless"));
    secrets.add("API_TOKEN", canary.as_bytes());
    secrets.add("OTHER", b"not-for-this-action");
    let site = Site::new(&rl, &repo.url, &secrets, "rootless-a");
    let since = now_s();
    let script = "ls /run/secrets; echo token=$(cat /run/secrets/API_TOKEN); id -u; cat /run/vault/action.json";

    // (i) No opt-out: recorded `error` naming each unenforced limit, and
    // Podman saw the container created (and checked) but never started.
    let refused = unique("refused");
    repo.land_action(&refused, &action(&refused, &["API_TOKEN"], script));
    let out = site.once(&[]);
    out.success();
    let r = repo.result(&refused).expect("a result recorded");
    if unenforced.is_empty() {
        // A host where Podman enforces the limits (cgroup v2 with
        // delegation): nothing to refuse.
        assert_eq!(r["status"], "succeeded", "{r}");
    } else {
        assert_eq!(r["status"], "error", "{r}");
        let err = r["error"].as_str().unwrap();
        for (limit, field) in [
            ("memory", "HostConfig.Memory"),
            ("cpus", "HostConfig.NanoCpus"),
            ("pids", "HostConfig.PidsLimit"),
        ] {
            assert_eq!(
                err.contains(field),
                unenforced.split(',').any(|l| l == limit),
                "{field} named exactly when unenforced ({unenforced}): {err}"
            );
        }
        assert!(err.contains("refusing to run weaker"), "{err}");
        assert!(
            err.contains(&format!("VAULT_ALLOW_UNENFORCED_LIMITS={unenforced}")),
            "{err}"
        );
        assert_eq!(
            rl.events("create", &refused, since),
            1,
            "created, to be checked"
        );
        assert_eq!(rl.starts(&refused, since), 0, "never started");
        assert_eq!(rl.container_state(&refused), None, "removed");
        assert!(!r.to_string().contains(&canary));
    }

    // (ii) Allowing fewer limits than are unenforced still refuses, naming
    // only those not allowed (and the whole list the opt-out needs).
    if let Some((first, _)) = unenforced.split_once(',') {
        let partial = unique("partial");
        repo.land_action(&partial, &action(&partial, &[], "echo must-not-run"));
        site.once(&[("VAULT_ALLOW_UNENFORCED_LIMITS", first)])
            .success();
        let r = repo.result(&partial).unwrap();
        assert_eq!(r["status"], "error", "{r}");
        let err = r["error"].as_str().unwrap();
        assert!(
            err.contains(&format!("VAULT_ALLOW_UNENFORCED_LIMITS={unenforced}:")),
            "{err}"
        );
        let first_field = match first {
            "memory" => "HostConfig.Memory",
            "cpus" => "HostConfig.NanoCpus",
            _ => "HostConfig.PidsLimit",
        };
        assert!(!err.contains(first_field), "{first} was allowed: {err}");
        assert_eq!(rl.starts(&partial, since), 0, "never started");
    }

    // (iii) Allowing exactly them: it runs once, its secret masked, and the
    // run says on stderr what was not enforced.
    let ok = unique("allowed");
    repo.land_action(&ok, &action(&ok, &["API_TOKEN"], script));
    let out = site.once(&[("VAULT_ALLOW_UNENFORCED_LIMITS", &unenforced)]);
    out.success();
    let r = repo.result(&ok).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}; stderr: {}", out.stderr);
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["dispatcher"], "rootless-a");
    let logs = r["logs"].as_str().unwrap();
    assert!(
        logs.contains("API_TOKEN") && !logs.contains("OTHER"),
        "{logs}"
    );
    assert!(logs.contains("token=***"), "read and masked: {logs}");
    assert!(
        logs.contains(&format!("\n{}\n", rl.uid)),
        "runner uid: {logs}"
    );
    assert!(
        logs.contains("\"proposed_by\""),
        "action file visible: {logs}"
    );
    if !unenforced.is_empty() {
        assert!(
            out.stderr
                .contains(&format!("{ok}: warning: the engine did not apply")),
            "{}",
            out.stderr
        );
    }
    for text in [
        &out.stdout,
        &out.stderr,
        logs,
        &repo
            .show(&format!("vault/actions/{ok}.result.json"))
            .unwrap(),
    ] {
        assert!(!text.contains(&canary), "secret leaked");
    }
    assert_eq!(rl.starts(&ok, since), 1, "started once");
    assert_eq!(rl.container_state(&ok), None, "removed once recorded");
    assert!(
        site.secret_dirs_left().is_empty(),
        "{:?}",
        site.secret_dirs_left()
    );
    // Nothing reached root's dockerd.
    assert_eq!(vault_e2e::creates(&ok, since), 0);
    assert_eq!(vault_e2e::creates(&refused, since), 0);

    let head = repo.head();
    site.once(&[("VAULT_ALLOW_UNENFORCED_LIMITS", &unenforced)])
        .success();
    assert_eq!(repo.head(), head, "a second pass changes nothing");
    assert_eq!(rl.starts(&ok, since), 1);
}

#[test]
fn a_deleted_result_or_a_final_turned_claim_never_runs_again() {
    let (tb, rl) = bench();
    let unenforced = opt_out(&rl);
    let allow = [("VAULT_ALLOW_UNENFORCED_LIMITS", unenforced.as_str())];
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&rl, &repo.url, &secrets, "rootless-b");
    let id = unique("pay");
    let since = now_s();
    repo.land_action(&id, &action(&id, &[], "echo ran"));
    site.once(&allow).success();
    assert_eq!(repo.result(&id).unwrap()["status"], "succeeded");
    assert_eq!(rl.starts(&id, since), 1);

    let path = format!("vault/actions/{id}.result.json");
    repo.commit(&[(&path, None)], "delete the result");
    site.once(&allow).success();
    let r = repo.result(&id).expect("a final result again");
    assert_eq!(r["status"], "abandoned", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("started at") && err.contains("rootless-b"),
        "{err}"
    );
    assert_eq!(rl.starts(&id, since), 1, "never started a second time");

    let claim =
        format!(r#"{{"schema":1,"id":"{id}","status":"running","dispatcher":"rootless-b"}}"#);
    repo.commit(&[(&path, Some(claim.as_bytes()))], "back to running");
    let out = site.once(&allow);
    out.success();
    assert!(
        out.stderr.contains("turned back into a running claim"),
        "{}",
        out.stderr
    );
    assert_eq!(repo.result(&id).unwrap()["status"], "abandoned");
    assert_eq!(rl.starts(&id, since), 1, "never started a second time");
}

#[test]
fn kill_9_of_the_dispatcher_mid_run_never_starts_the_action_twice() {
    let (tb, rl) = bench();
    let unenforced = opt_out(&rl);
    let allow = [("VAULT_ALLOW_UNENFORCED_LIMITS", unenforced.as_str())];
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    secrets.add("TOKEN", b"kill-nine-rootless-secret");
    let site = Site::new(&rl, &repo.url, &secrets, "rootless-c");
    let id = unique("k9");
    let since = now_s();
    repo.land_action(&id, &action(&id, &["TOKEN"], "sleep 10; echo finished"));

    let mut child = site.spawn(&allow);
    wait_until("the container to run", Duration::from_secs(120), || {
        rl.container_state(&id).as_deref() == Some("running")
    });
    kill_group(child.id());
    let _ = child.wait();
    assert_eq!(
        repo.result(&id).unwrap()["status"],
        "running",
        "claimed first"
    );

    // The next cycle re-attaches (or collects) through Podman's API.
    let out = site.once(&allow);
    out.success();
    let r = repo.result(&id).unwrap();
    assert!(
        r["status"] == "succeeded" || r["status"] == "abandoned",
        "recovered or abandoned, never silent: {r}"
    );
    assert_eq!(rl.starts(&id, since), 1, "exactly one start");
    assert!(
        site.secret_dirs_left().is_empty(),
        "swept: {:?}",
        site.secret_dirs_left()
    );
    assert_eq!(rl.container_state(&id), None);
}

#[test]
fn failing_and_unrunnable_actions_and_split_secrets_on_podman() {
    let (tb, rl) = bench();
    let unenforced = opt_out(&rl);
    let allow = [
        ("VAULT_ALLOW_UNENFORCED_LIMITS", unenforced.as_str()),
        // An allowlisted network is refused under Podman, whatever is set.
        ("VAULT_ALLOW_EGRESS", "api.example.org:443"),
        ("VAULT_EGRESS_NETWORK", "podman"),
        ("VAULT_GATEWAY_IMAGE", tb.image.as_str()),
    ];
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}-{}", unique("split"), "x7Qp".repeat(24));
    secrets.add("KEY", canary.as_bytes());
    let site = Site::new(&rl, &repo.url, &secrets, "rootless-d");
    let missing = unique("missing");
    let failing = unique("fails");
    let leaky = unique("leaky");
    let gated = unique("gated");
    let mut gated_action: serde_json::Value =
        serde_json::from_str(&action(&gated, &[], "echo must-not-run")).unwrap();
    gated_action["network"] = serde_json::json!({"allow": ["api.example.org:443"]});
    let half = canary.len() / 2;
    let script = format!(
        "v=$(cat /run/secrets/KEY); \
         printf '%s' \"$(echo \"$v\" | cut -c1-{half})\"; \
         printf '%s' \"$(echo \"$v\" | cut -c{}-)\" >&2; \
         echo; base64 /run/secrets/KEY; echo done",
        half + 1
    );
    let since = now_s();
    repo.land_actions(&[
        (missing.as_str(), action(&missing, &["NOT_THERE"], "true")),
        (failing.as_str(), action(&failing, &[], "echo oops; exit 3")),
        (leaky.as_str(), action(&leaky, &["KEY"], &script)),
        (gated.as_str(), gated_action.to_string()),
    ]);
    let out = site.once(&allow);
    out.success();
    let r = repo.result(&missing).unwrap();
    assert_eq!(r["status"], "error");
    assert!(r["error"].as_str().unwrap().contains("NOT_THERE"), "{r}");
    assert_eq!(rl.events("create", &missing, since), 0);
    let r = repo.result(&gated).unwrap();
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("needs Docker"), "{r}");
    assert_eq!(rl.events("create", &gated, since), 0);
    let r = repo.result(&failing).unwrap();
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert!(r["logs"].as_str().unwrap().contains("oops"));
    assert_eq!(rl.starts(&failing, since), 1);
    let r = repo.result(&leaky).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    let logs = r["logs"].as_str().unwrap();
    assert!(logs.contains("done"), "{logs}");
    let b64 = {
        let mut child = spawn_fed(
            Command::new("base64")
                .arg("--wrap=0")
                .stdout(Stdio::piped()),
            canary.as_bytes(),
        );
        let mut s = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut s).unwrap();
        assert!(child.wait().unwrap().success());
        s.trim().to_string()
    };
    for text in [&out.stdout, &out.stderr, logs] {
        assert!(!text.contains(&canary), "leaked in {text}");
        assert!(!text.contains(&b64[..48]), "base64 leaked in {text}");
    }
}

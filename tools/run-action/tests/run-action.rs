//! run-action against the bench's real dockerd, with the testbed's runner
//! image (busybox, PATH=/bin). Every test uses its own action id, cache
//! dir and secrets dir, and removes its container.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use vault_testkit::{docker, run_with, spawn_fed, unique, wait_until, Output, Testbed};

const BIN: &str = env!("CARGO_BIN_EXE_run-action");

/// One action under test: its id, a cache dir, and cleanup of the
/// container on drop.
struct Case {
    id: String,
    cache: TempDir,
    image: String,
}

impl Case {
    fn new(prefix: &str) -> Case {
        Case {
            id: unique(prefix),
            cache: TempDir::new().unwrap(),
            image: Testbed::get().image.clone(),
        }
    }

    fn name(&self) -> String {
        format!("vault-{}", self.id)
    }

    /// Wait (at most 60 s) until this case's container runs.
    fn wait_running(&self) {
        wait_until("the container to run", Duration::from_secs(60), || {
            docker(&["inspect", "-f", "{{.State.Running}}", &self.name()])
                .stdout
                .trim()
                == "true"
        });
    }

    /// A scan line for `action` (its `id` filled in).
    fn line(&self, mut action: Value, resume: bool) -> String {
        action["id"] = json!(self.id);
        if action.get("secrets").is_none() {
            action["secrets"] = json!([]);
        }
        let mut line = json!({
            "schema": 1, "id": self.id,
            "path": format!("vault/actions/{}.json", self.id),
            "commit": "c0ffee", "blob": "b10b", "action": action,
        });
        if resume {
            line["resume"] = json!(true);
        }
        format!("{line}\n")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("VAULT_SECRETS_DIR")
            .env_remove("VAULT_RUNTIME")
            .env("VAULT_CACHE", self.cache.path())
            .env("VAULT_DISPATCHER_ID", "test-dispatcher")
            .env("VAULT_RUNNER_IMAGE", &self.image)
            .env("VAULT_ALLOW_IMAGES", &self.image)
            .env("VAULT_GRACE_S", "2");
        c
    }

    /// Run with extra flags; returns the output and the parsed result.
    fn run(&self, stdin: &str, flags: &[&str]) -> (Output, Value) {
        let out = self.run_raw(stdin, flags);
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "one result line: {out:?}");
        let r = lines.into_iter().next().unwrap();
        assert_eq!(r["schema"], 1);
        assert_eq!(r["id"], json!(self.id));
        let want = if r["status"] == "succeeded" { 0 } else { 5 };
        out.fails_with_code(want);
        (out, r)
    }

    fn run_raw(&self, stdin: &str, flags: &[&str]) -> Output {
        run_with(
            self.cmd().args(flags),
            stdin.as_bytes(),
            Duration::from_secs(150),
        )
    }

    fn command(&self, script: &str, flags: &[&str]) -> (Output, Value) {
        self.run(
            &self.line(json!({"command": ["sh", "-c", script]}), false),
            flags,
        )
    }

    fn inspect(&self) -> Value {
        let out = docker(&["inspect", &self.name()]);
        out.success();
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
    }

    fn exists(&self) -> bool {
        docker(&["inspect", &self.name()]).code == Some(0)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name()]);
    }
}

/// A secrets dir as secret-mount makes it: one file per secret, mode
/// 0400, owned by the runner uid.
fn secrets_dir(secrets: &[(&str, &[u8])]) -> TempDir {
    let dir = TempDir::new().unwrap();
    for (name, value) in secrets {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    dir
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

fn logs(r: &Value) -> &str {
    r["logs"].as_str().unwrap_or("")
}

#[test]
fn exit_zero_succeeds_with_locked_down_config() {
    let c = Case::new("ok");
    let (out, r) = c.command("echo hello; cat /run/vault/action.json", &[]);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["oom_killed"], false);
    assert_eq!(r["action_commit"], "c0ffee");
    assert_eq!(r["action_blob"], "b10b");
    assert_eq!(r["dispatcher"], "test-dispatcher");
    assert_eq!(r["container"]["image"], json!(c.image));
    assert!(r["container"]["image_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    for k in ["started_at", "finished_at", "duration_ms"] {
        assert!(!r[k].is_null(), "{k}: {r}");
    }
    assert!(r.get("error").is_none(), "{r}");
    let logs = logs(&r);
    assert!(logs.starts_with("hello\n"), "{logs}");
    // The action file, as the container sees it.
    let seen: Value = serde_json::from_str(&logs["hello\n".len()..]).unwrap();
    assert_eq!(seen["id"], json!(c.id));
    assert!(out.stderr.contains("hello\n"), "streamed: {}", out.stderr);

    let i = c.inspect();
    let hc = &i["HostConfig"];
    assert_eq!(i["Config"]["Labels"]["vault.managed"], "1");
    assert_eq!(i["Config"]["Labels"]["vault.action"], json!(c.id));
    assert_eq!(i["Config"]["Labels"]["vault.dispatcher"], "test-dispatcher");
    assert_eq!(i["Config"]["User"], "65534:65534");
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["AutoRemove"], false);
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["LogConfig"]["Type"], "none");
    assert_eq!(hc["Memory"], 1024 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], hc["Memory"]);
    assert_eq!(hc["PidsLimit"], 256);
    assert_eq!(hc["NanoCpus"], 2_000_000_000i64);
    assert!(hc["Tmpfs"]["/tmp"].as_str().unwrap().contains("size=16m"));
    let mounts = i["Mounts"].to_string();
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    assert_eq!(i["State"]["Status"], "exited", "never auto-removed");

    // rm after the result is recorded; again is fine.
    run_with(c.cmd().args(["rm", &c.id]), b"", Duration::from_secs(60)).success();
    assert!(!c.exists());
    assert!(!c.cache.path().join("run").join(&c.id).exists());
    // The proof of the start stays.
    let rec = std::fs::read_to_string(ledger(&c)).unwrap();
    assert!(
        rec.contains(&format!("\"container\":\"vault-{}\"", c.id)),
        "{rec}"
    );
    run_with(c.cmd().args(["rm", &c.id]), b"", Duration::from_secs(60)).success();
}

#[test]
fn exit_three_fails() {
    let c = Case::new("exit3");
    let (_, r) = c.command("echo before; exit 3", &[]);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["oom_killed"], false);
    assert_eq!(logs(&r), "before\n");
}

#[test]
fn kill_nine_reports_137() {
    let c = Case::new("kill9");
    let (_, r) = c.command("kill -9 $$", &[]);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 137);
    assert_eq!(r["oom_killed"], false);
}

#[test]
fn memory_hog_is_oom_killed() {
    let c = Case::new("oom");
    let line = c.line(
        json!({"command": ["tail", "/dev/zero"], "resources": {"memory_mb": 16}}),
        false,
    );
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 137);
    assert_eq!(r["oom_killed"], true);
    assert_eq!(c.inspect()["HostConfig"]["Memory"], 16 * 1024 * 1024);
}

#[test]
fn action_limits_are_capped_by_policy() {
    let c = Case::new("caps");
    let line = c.line(
        json!({"command": ["true"], "resources": {"memory_mb": 4096, "cpus": 8, "pids": 9999}}),
        false,
    );
    let (_, r) = c.run(&line, &["--max-memory-mb", "64", "--max-pids", "20"]);
    assert_eq!(r["status"], "succeeded");
    let hc = c.inspect()["HostConfig"].clone();
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 20);
    assert_eq!(hc["NanoCpus"], 2_000_000_000i64);
}

#[test]
fn fork_bomb_hits_pids_limit_and_ends() {
    let c = Case::new("forkbomb");
    let line = c.line(
        json!({
            "command": ["sh", "-c", "for i in $(seq 1 200); do sleep 60 & done; echo spawned-all"],
            "resources": {"pids": 16}, "timeout_s": 60
        }),
        false,
    );
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_ne!(r["exit_code"], 0);
    let logs = logs(&r);
    assert!(logs.contains("can't fork"), "{logs}");
    assert!(!logs.contains("spawned-all"), "{logs}");

    // A real fork bomb: held at the limit, and ended by the timeout.
    let c = Case::new("forkbomb2");
    let line = c.line(
        json!({
            "command": ["sh", "-c", "b() { b | b & }; b; sleep 30"],
            "resources": {"pids": 32}, "timeout_s": 3
        }),
        false,
    );
    let (_, r) = c.run(&line, &["--grace-s", "1"]);
    assert!(r["status"] == "timed_out" || r["status"] == "failed", "{r}");
    assert_eq!(c.inspect()["State"]["Running"], false);
}

#[test]
fn rootfs_and_secrets_are_read_only() {
    let c = Case::new("ro");
    let dir = secrets_dir(&[("TOKEN", b"ro-secret-value")]);
    let script = "touch /x 2>/dev/null; echo ROOT=$?; \
                  touch /run/secrets/new 2>/dev/null; echo NEW=$?; \
                  (echo x > /run/secrets/TOKEN) 2>/dev/null; echo SEC=$?; \
                  (echo x > /run/vault/action.json) 2>/dev/null; echo ACT=$?; \
                  touch /tmp/ok; echo TMP=$?; \
                  cat /run/secrets/TOKEN >/dev/null; echo READ=$?";
    let line = c.line(
        json!({"command": ["sh", "-c", script], "secrets": ["TOKEN"]}),
        false,
    );
    let (_, r) = c.run(&line, &["--secrets-dir", &arg(dir.path())]);
    let logs = logs(&r);
    for want in ["ROOT=1", "NEW=1", "SEC=1", "ACT=1", "TMP=0", "READ=0"] {
        assert!(logs.contains(want), "{want} in {logs}");
    }
    let mounts = c.inspect()["Mounts"].clone();
    let secrets = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/run/secrets")
        .unwrap();
    assert_eq!(secrets["RW"], false);
    assert_eq!(secrets["Type"], "bind");
}

#[test]
fn capabilities_are_zero_and_no_new_privs() {
    let c = Case::new("capzero");
    let (_, r) = c.command("grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id -u", &[]);
    let logs = logs(&r);
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            logs.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {logs}"
        );
    }
    assert!(logs.contains("NoNewPrivs:\t1"), "{logs}");
    assert!(logs.ends_with("65534\n"), "{logs}");
}

fn interfaces(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_string())
        .filter(|n| !n.is_empty() && !n.contains(' ') && !n.contains('|'))
        .collect()
}

#[test]
fn no_network_unless_bridge_allowed() {
    let c = Case::new("nonet");
    let (_, r) = c.command("cat /proc/net/dev", &[]);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(interfaces(logs(&r)), ["lo"], "{}", logs(&r));

    // Asking for bridge without the policy: rejected, nothing created.
    let c = Case::new("bridge-no");
    let line = c.line(
        json!({"command": ["cat", "/proc/net/dev"], "network": "bridge"}),
        false,
    );
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("bridge"), "{r}");
    assert!(!c.exists());

    let c = Case::new("bridge-yes");
    let line = c.line(
        json!({"command": ["cat", "/proc/net/dev"], "network": "bridge"}),
        false,
    );
    let (_, r) = c.run(&line, &["--allow-bridge"]);
    assert_eq!(r["status"], "succeeded", "{r}");
    // The bench's dockerd runs with --bridge=none, so no eth0 appears;
    // the container is asked for the bridge all the same.
    assert_eq!(c.inspect()["HostConfig"]["NetworkMode"], "bridge");
}

#[test]
fn timeout_sends_term_then_kill() {
    // The process ignores nothing: SIGTERM ends it within the grace.
    let c = Case::new("timeout-term");
    let line = c.line(
        json!({"command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo started; sleep 300 & wait"],
               "timeout_s": 2}),
        false,
    );
    let (_, r) = c.run(&line, &["--grace-s", "20"]);
    assert_eq!(r["status"], "timed_out", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert!(logs(&r).contains("started\ngot-term"), "{r}");
    assert!(r["error"].as_str().unwrap().contains("timed out"));

    // A process that ignores SIGTERM gets SIGKILL after the grace.
    let c = Case::new("timeout-kill");
    let line = c.line(
        json!({"command": ["sh", "-c", "trap '' TERM; sleep 300"], "timeout_s": 2}),
        false,
    );
    let (_, r) = c.run(&line, &["--grace-s", "1"]);
    assert_eq!(r["status"], "timed_out", "{r}");
    assert_eq!(r["exit_code"], 137);
    assert_eq!(c.inspect()["State"]["Running"], false);

    // Output closed early, process still running: the timer still rules.
    let c = Case::new("timeout-closed");
    let line = c.line(
        json!({"command": ["sh", "-c", "echo bye; exec >&- 2>&-; sleep 300"], "timeout_s": 2}),
        false,
    );
    let (_, r) = c.run(&line, &["--grace-s", "1"]);
    assert_eq!(r["status"], "timed_out", "{r}");
    assert_eq!(logs(&r), "bye\n");

    // Policy caps the action's own timeout.
    let c = Case::new("timeout-cap");
    let line = c.line(
        json!({"command": ["sleep", "300"], "timeout_s": 900}),
        false,
    );
    let (_, r) = c.run(&line, &["--max-timeout-s", "1", "--grace-s", "1"]);
    assert_eq!(r["status"], "timed_out", "{r}");
}

#[test]
fn a_ten_ms_container_still_reports_its_code_and_output() {
    for i in 0..3 {
        let c = Case::new(&format!("quick{i}"));
        let (_, r) = c.command("echo quick; exit 7", &[]);
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["exit_code"], 7, "{r}");
        assert_eq!(logs(&r), "quick\n", "{r}");
    }
    let c = Case::new("quick-true");
    let line = c.line(json!({"command": ["true"]}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "succeeded");
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= ch.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn canary_secret_never_leaks() {
    let c = Case::new("canary");
    let canary = format!("canary-{}-\"quoted\"/value", unique("c"));
    let other = format!("second-{}", unique("s"));
    let dir = secrets_dir(&[
        ("TOKEN", format!("{canary}\n").as_bytes()),
        ("OTHER", other.as_bytes()),
    ]);
    // Raw, split across two writes, base64 (whole and inside a longer
    // text), JSON-escaped (by hand: sed), URL-encoded, and the other one.
    let script = r#"
        v=$(cat /run/secrets/TOKEN)
        echo "raw:$v"
        printf 'split:%s' "${v%%-*}"; sleep 0.2; printf '%s\n' "-${v#*-}"
        echo "b64:$(printf %s "$v" | base64 -w0)"
        echo "b64x:$(printf 'xy%sz' "$v" | base64 -w0)"
        echo "json:$(printf %s "$v" | sed 's/["\\/]/\\&/g')"
        echo "url:$(printf %s "$v" | od -An -tx1 -v | tr -d ' \n' | sed 's/../%&/g')"
        echo "other:$(cat /run/secrets/OTHER)" >&2
        echo done
    "#;
    let line = c.line(
        json!({"command": ["sh", "-c", script], "secrets": ["TOKEN", "OTHER"],
               "env": {"PLAIN": "not-secret"}}),
        false,
    );
    let (out, r) = c.run(&line, &["--secrets-dir", &arg(dir.path())]);
    assert_eq!(r["status"], "succeeded", "{r}");
    let logs = logs(&r);
    for prefix in ["raw:", "split:", "b64:", "json:", "url:", "other:"] {
        assert!(
            logs.contains(&format!("{prefix}***")),
            "{prefix} masked in {logs}"
        );
    }
    assert!(logs.contains("b64x:"), "{logs}");
    // stdout and stderr are separate pipes: their order may interleave.
    assert!(logs.contains("done\n"), "{logs}");
    assert!(logs.contains("raw:***\n"), "newline kept: {logs}");
    let forms = [
        canary.clone(),
        other.clone(),
        b64(canary.as_bytes()),
        b64(canary.as_bytes()).trim_end_matches('=').to_string(),
        serde_json::to_string(&canary)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        // The middle of the base64 of "xy<canary>z".
        b64(format!("xy{canary}z").as_bytes())[4..40].to_string(),
    ];
    let inspect = docker(&["inspect", &c.name()]);
    let docker_logs = docker(&["logs", &c.name()]);
    for f in &forms {
        for (what, text) in [
            ("stdout", &out.stdout),
            ("stderr", &out.stderr),
            ("inspect", &inspect.stdout),
            ("docker logs", &docker_logs.stdout),
            ("docker logs stderr", &docker_logs.stderr),
        ] {
            assert!(!text.contains(f.as_str()), "{f} leaked in {what}: {text}");
        }
    }
    assert!(inspect.stdout.contains("PLAIN=not-secret"));
    assert!(
        out.stderr.contains("raw:***"),
        "streamed masked: {}",
        out.stderr
    );
}

#[test]
fn image_policy() {
    let c = Case::new("img-refused");
    let line = c.line(
        json!({"command": ["true"], "image": "busybox:latest"}),
        false,
    );
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(r["error"].as_str().unwrap().contains("not allowed"), "{r}");
    assert!(!c.exists());

    // Empty allow-list: every image refused, the runner image too.
    let c = Case::new("img-empty");
    let line = c.line(json!({"command": ["true"]}), false);
    let (_, r) = c.run(&line, &["--allow-images", ""]);
    assert_eq!(r["status"], "rejected", "{r}");

    // Allowed by a glob, but absent: error, and never pulled.
    let c = Case::new("img-absent");
    let line = c.line(
        json!({"command": ["true"], "image": "vault-absent.invalid/none:nope"}),
        false,
    );
    let (_, r) = c.run(&line, &["--allow-images", "vault-absent.invalid/*"]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("never pulls"), "{r}");

    // No image at all.
    let c = Case::new("img-none");
    let line = c.line(json!({"command": ["true"]}), false);
    let out = run_with(
        c.cmd().env_remove("VAULT_RUNNER_IMAGE"),
        line.as_bytes(),
        Duration::from_secs(60),
    );
    out.fails_with_code(5);
    assert_eq!(out.lines()[0]["status"], "error");
}

#[test]
fn formula_runs_image_entrypoint_with_formula_and_id() {
    let c = Case::new("formula");
    let line = c.line(json!({"formula": "echo", "env": {"TAG": "v1"}}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(logs(&r), format!("{}\n", c.id));
    let i = c.inspect();
    assert_eq!(i["Config"]["Cmd"], json!(["echo", c.id]));
}

#[test]
fn missing_secrets_are_an_error() {
    let c = Case::new("nosecdir");
    let line = c.line(json!({"command": ["true"], "secrets": ["TOKEN"]}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("VAULT_SECRETS_DIR"));
    assert!(!c.exists());

    let dir = secrets_dir(&[("OTHER", b"other-value")]);
    let (_, r) = c.run(&line, &["--secrets-dir", &arg(dir.path())]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("TOKEN"), "{r}");
    assert!(!c.exists());

    // A secrets dir that vanished before create: Docker's Mounts API
    // refuses a missing bind source (Binds would create it).
    let gone = dir.path().join("gone");
    let line = c.line(json!({"command": ["true"]}), false);
    let (_, r) = c.run(&line, &["--secrets-dir", &arg(&gone)]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(!gone.exists());
}

#[test]
fn bad_input() {
    let c = Case::new("bad");
    // The scan's own error: rejected.
    let line = json!({"schema":1,"id":c.id,"path":"p","commit":"c","error":"bad json"});
    let (_, r) = c.run(&format!("{line}\n"), &[]);
    assert_eq!(r["status"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("bad json"));
    // A line that names an id but is not a scan line: rejected.
    let (_, r) = c.run(&format!("{{\"id\":\"{}\",\"what\":1}}\n", c.id), &[]);
    assert_eq!(r["status"], "rejected");
    // A bad secret name: the one refused result of vault-core, as
    // secret-mount prints it, provenance kept.
    let line = c.line(json!({"command": ["true"], "secrets": ["A-B"]}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "rejected");
    assert_eq!(
        (r["action_commit"].as_str(), r["action_blob"].as_str()),
        (Some("c0ffee"), Some("b10b"))
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid scan line: "),
        "{r}"
    );
    // An action that fails validation on the stream.
    let line = c.line(json!({"command": []}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "rejected");
    assert!(!c.exists());
    // Nothing usable: exit 1, no stdout.
    for input in ["", "garbage\n", "{\"id\":\"../x\"}\n"] {
        let out = c.run_raw(input, &[]);
        out.fails_with_code(1);
        assert!(out.stdout.is_empty());
        assert!(out.stderr.starts_with("run-action: "), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    // Usage: root runner refused, --help and --version work.
    c.run_raw("", &["--runner-user", "0:0"]).fails_with_code(2);
    c.run_raw("", &["--runner-user", "0"]).fails_with_code(2);
    let out = c.run_raw("", &["--dispatcher-id", "a<b"]);
    out.fails_with_code(2);
    assert!(
        out.stderr.contains("invalid dispatcher id"),
        "{}",
        out.stderr
    );
    // A bare uid is uid:uid, as secret-mount reads it (no scan line: exit 1).
    c.run_raw("", &["--runner-user", "1000"]).fails_with_code(1);
    assert!(c
        .run_raw("", &["--help"])
        .success()
        .stdout
        .contains("VAULT_ALLOW_IMAGES"));
    assert!(c
        .run_raw("", &["--version"])
        .success()
        .stdout
        .starts_with("run-action "));
}

#[test]
fn daemon_unreachable_is_an_error() {
    let c = Case::new("nodaemon");
    let line = c.line(json!({"command": ["true"]}), false);
    let out = run_with(
        c.cmd()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        line.as_bytes(),
        Duration::from_secs(60),
    );
    out.fails_with_code(5);
    let r = &out.lines()[0];
    assert_eq!(r["status"], "error");
    assert!(
        r["error"].as_str().unwrap().contains("docker daemon"),
        "{r}"
    );
    let out = run_with(
        c.cmd()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["rm", &c.id]),
        b"",
        Duration::from_secs(60),
    );
    out.fails_with_code(4);
    // Policy needs no daemon: a refused image is rejected even so.
    let line = c.line(json!({"command": ["true"], "image": "other:1"}), false);
    let out = run_with(
        c.cmd()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        line.as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(out.lines()[0]["status"], "rejected", "{out:?}");
}

#[test]
fn output_is_capped_in_logs() {
    let c = Case::new("bigout");
    let (out, r) = c.command(
        "seq 1 100000; head -c 9000000 /dev/zero | tr '\\0' x; echo; seq 99999 100000; echo end",
        &[],
    );
    assert_eq!(r["status"], "succeeded");
    let logs = logs(&r);
    assert!(logs.len() <= 64 * 1024, "{}", logs.len());
    assert!(logs.starts_with("[output truncated: "), "{}", &logs[..80]);
    assert!(logs.ends_with("99999\n100000\nend\n"));
    assert!(out.stderr.starts_with("1\n2\n3\n"), "streamed in order");
    // stderr is capped too, with a marker; the tail is in the result only.
    assert!(
        out.stderr
            .contains("[run-action: output truncated after 8388608 bytes"),
        "{}",
        &out.stderr[out.stderr.len().saturating_sub(300)..]
    );
    assert!(out.stderr.len() < 8_388_608 + 1000, "{}", out.stderr.len());
    assert!(!out.stderr.contains("end\n"));
}

/// An earlier version's journal of this case's action.
fn journal(c: &Case) -> PathBuf {
    c.cache.path().join("journal").join(&c.id)
}

/// The run-ledger record of this case's action.
fn ledger(c: &Case) -> PathBuf {
    c.cache.path().join("ledger").join(format!("{}.json", c.id))
}

#[test]
fn resume_collects_an_exited_container() {
    let c = Case::new("res-exited");
    let line = c.line(json!({"command": ["sh", "-c", "echo once; exit 3"]}), false);
    let (_, first) = c.run(&line, &[]);
    assert_eq!(first["exit_code"], 3);
    let started = c.inspect()["State"]["StartedAt"].clone();

    // Not a resume (the claim was lost): the container is collected, not
    // started a second time.
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["container"]["id"], first["container"]["id"]);
    assert_eq!(c.inspect()["State"]["StartedAt"], started, "not run again");

    let resume = c.line(json!({"command": ["sh", "-c", "echo once; exit 3"]}), true);
    let (_, r) = c.run(&resume, &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["container"]["id"], first["container"]["id"]);
    assert_eq!(r["started_at"], first["started_at"]);
    assert_eq!(c.inspect()["State"]["StartedAt"], started, "not run again");
}

#[test]
fn resume_reattaches_to_a_running_container() {
    let c = Case::new("res-running");
    let action = json!({"command": ["sh", "-c", "echo first; sleep 8; echo second; exit 4"]});
    let mut child = spawn_fed(
        c.cmd().stdout(Stdio::null()).stderr(Stdio::null()),
        c.line(action.clone(), false).as_bytes(),
    );
    c.wait_running();
    // The dispatcher dies; the container runs on.
    child.kill().unwrap();
    child.wait().unwrap();
    let rec: Value = serde_json::from_str(
        std::fs::read_to_string(ledger(&c))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["id"], json!(c.id));
    assert_eq!(rec["commit"], "c0ffee");
    assert_eq!(rec["blob"], "b10b");

    let (out, r) = c.run(&c.line(action, true), &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 4);
    assert!(logs(&r).contains("second"), "{r}");
    assert!(out.stderr.contains("second"));
}

#[test]
fn resume_runs_what_provably_never_started() {
    let c = Case::new("res-never");
    std::fs::create_dir_all(journal(&c).parent().unwrap()).unwrap();
    std::fs::write(journal(&c), "create 1\n").unwrap();
    let (_, r) = c.run(&c.line(json!({"command": ["echo", "ran"]}), true), &[]);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(logs(&r), "ran\n");

    // No journal at all (the claim was pushed, then the host died before
    // create): also never started.
    let c = Case::new("res-nojournal");
    let (_, r) = c.run(&c.line(json!({"command": ["echo", "ran"]}), true), &[]);
    assert_eq!(r["status"], "succeeded", "{r}");
}

#[test]
fn resume_abandons_what_started_and_vanished() {
    let c = Case::new("res-gone");
    std::fs::create_dir_all(journal(&c).parent().unwrap()).unwrap();
    std::fs::write(journal(&c), "create 1\nstart 2\n").unwrap();
    let (_, r) = c.run(&c.line(json!({"command": ["echo", "ran"]}), true), &[]);
    assert_eq!(r["status"], "abandoned", "{r}");
    assert!(r["error"].as_str().unwrap().contains("journal"), "{r}");
    assert!(!c.exists(), "never started a second time");
}

#[test]
fn a_started_id_is_never_started_again() {
    // Run once, record, remove the container (as the dispatcher does).
    let c = Case::new("ledger-once");
    let line = c.line(json!({"command": ["echo", "ran"]}), false);
    let (_, first) = c.run(&line, &[]);
    assert_eq!(first["status"], "succeeded");
    run_with(c.cmd().args(["rm", &c.id]), b"", Duration::from_secs(60)).success();
    assert!(!c.exists());

    // The result is deleted from the repo: the same line comes again, and
    // again as our own claim. Neither starts a container.
    for l in [
        line.clone(),
        c.line(json!({"command": ["echo", "ran"]}), true),
    ] {
        let (out, r) = c.run(&l, &[]);
        assert_eq!(r["status"], "abandoned", "{r}");
        let err = r["error"].as_str().unwrap();
        assert!(
            err.contains("started at") && err.contains("test-dispatcher"),
            "{err}"
        );
        assert!(err.contains(&format!("vault-{}", c.id)), "{err}");
        assert!(!out.stderr.contains("ran\n"), "{}", out.stderr);
        assert!(!c.exists(), "never started a second time");
    }
}

#[test]
fn a_spent_line_is_abandoned_without_a_container() {
    let c = Case::new("spent");
    let mut line: Value =
        serde_json::from_str(&c.line(json!({"command": ["echo", "ran"]}), false)).unwrap();
    line["spent"] = json!("this action had a claim in commit 1234, which is gone");
    let (_, r) = c.run(&format!("{line}\n"), &[]);
    assert_eq!(r["status"], "abandoned", "{r}");
    assert!(r["error"].as_str().unwrap().contains("had a claim"), "{r}");
    assert_eq!(r["action_commit"], "c0ffee");
    assert!(!c.exists());
    assert!(!ledger(&c).exists(), "nothing started, nothing recorded");
}

#[test]
fn a_corrupt_ledger_stops_without_a_result() {
    let c = Case::new("ledger-bad");
    std::fs::create_dir_all(ledger(&c).parent().unwrap()).unwrap();
    std::fs::write(ledger(&c), "{\"id\":").unwrap();
    let out = c.run_raw(&c.line(json!({"command": ["echo", "ran"]}), false), &[]);
    out.fails_with_code(1);
    assert!(out.stdout.is_empty(), "no result line: {out:?}");
    assert!(
        out.stderr.contains("corrupt") && out.stderr.contains("ledger"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(!c.exists());
}

#[test]
fn runtime_runsc_or_refuse() {
    let c = Case::new("rt-missing");
    let line = c.line(json!({"command": ["true"]}), false);
    let (_, r) = c.run(&line, &["--runtime", "vault-no-such-runtime"]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("not registered"),
        "{r}"
    );
    assert!(!c.exists());

    if !Testbed::get().runsc {
        eprintln!("runsc not registered on this bench: gVisor run skipped");
        return;
    }
    let c = Case::new("rt-runsc");
    let (_, r) = c.command("dmesg 2>&1 | head -n 3; exit 3", &["--runtime", "runsc"]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(c.inspect()["HostConfig"]["Runtime"], "runsc");
    assert!(logs(&r).contains("gVisor"), "{r}");
}

#[test]
fn rm_refuses_a_running_or_foreign_container() {
    let c = Case::new("rm-running");
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &c.name(),
        "--label",
        "vault.managed=1",
        "--label",
        &format!("vault.action={}", c.id),
        &c.image,
        "sleep",
        "60",
    ]);
    out.success();
    let out = run_with(c.cmd().args(["rm", &c.id]), b"", Duration::from_secs(60));
    out.fails_with_code(1);
    assert!(out.stderr.contains("still running"), "{}", out.stderr);
    assert!(c.exists());

    let f = Case::new("rm-foreign");
    docker(&["create", "--name", &f.name(), &f.image, "true"]).success();
    let out = run_with(f.cmd().args(["rm", &f.id]), b"", Duration::from_secs(60));
    out.fails_with_code(1);
    assert!(f.exists());
    // And run-action will not run over a foreign container either.
    let (_, r) = f.run(&f.line(json!({"command": ["true"]}), true), &[]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(f.exists());

    let out = run_with(f.cmd().args(["rm", "../x"]), b"", Duration::from_secs(60));
    out.fails_with_code(2);
}

#[test]
fn a_missing_executable_fails_with_127() {
    let c = Case::new("noexec");
    let line = c.line(json!({"command": ["/no/such/binary", "x"]}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 127, "{r}");
    assert!(logs(&r).contains("/no/such/binary"), "{r}");
}

#[test]
fn huge_timeout_does_not_overflow() {
    let c = Case::new("hugetimeout");
    let line = c.line(json!({"command": ["true"], "timeout_s": u64::MAX}), false);
    let (_, r) = c.run(&line, &[]);
    assert_eq!(r["status"], "succeeded", "{r}");
}

#[test]
fn reattach_without_secret_values_withholds_output() {
    let c = Case::new("res-withheld");
    let dir = secrets_dir(&[("TOKEN", b"withheld-secret-value")]);
    let action = json!({"command": ["sh", "-c", "sleep 6; cat /run/secrets/TOKEN; exit 2"],
                        "secrets": ["TOKEN"]});
    let mut child = spawn_fed(
        c.cmd()
            .arg("--secrets-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        c.line(action.clone(), false).as_bytes(),
    );
    c.wait_running();
    child.kill().unwrap();
    child.wait().unwrap();
    // Resumed without the secrets dir: nothing to mask with, so nothing
    // is shown; the outcome is still collected.
    let (out, r) = c.run(&c.line(action, true), &[]);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 2);
    assert!(logs(&r).starts_with("[output withheld"), "{r}");
    assert!(!out.stderr.contains("withheld-secret-value"));
    assert!(!out.stdout.contains("withheld-secret-value"));
}

/// Container starts of `id` dockerd reports since `since` (unix seconds):
/// the engine's own count, not what run-action says.
fn starts(id: &str, since: u64) -> usize {
    vault_testkit::container_events("start", id, since)
}

#[test]
fn a_mount_the_engine_adds_is_refused_and_the_container_never_starts() {
    // An image with a VOLUME: dockerd adds a writable volume to the
    // read-only container that run-action never asked for.
    let image = "vault-runner:volume-test";
    let base = Testbed::get().image;
    let tmp = unique("vol-base");
    docker(&["create", "--name", &tmp, &base, "true"]).success();
    docker(&["commit", "-c", "VOLUME [\"/data\"]", &tmp, image]).success();
    docker(&["rm", "-f", &tmp]).success();
    let c = Case {
        id: unique("vol"),
        cache: TempDir::new().unwrap(),
        image: image.to_string(),
    };
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (out, r) = c.command("echo must-not-run > /data/x", &[]);
    assert_eq!(r["status"], "error", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("the engine added one on /data") && err.contains("refusing to run weaker"),
        "{err}"
    );
    assert!(err.contains("removed without being started"), "{err}");
    assert!(!out.stderr.contains("must-not-run"), "{}", out.stderr);
    assert!(!c.exists(), "the created container was removed");
    assert_eq!(starts(&c.id, since), 0, "never started");
    assert!(
        !c.cache.path().join("run").join(&c.id).exists(),
        "the action file was cleaned up"
    );
    // The id is spent all the same: it may not be started later.
    assert!(ledger(&c).exists());
    let _ = docker(&["rmi", image]);
}

#[test]
fn allowing_unenforced_limits_changes_nothing_where_they_are_enforced() {
    let c = Case::new("unenf");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (out, r) = c.command(
        "echo fine",
        &["--allow-unenforced-limits", "memory,cpus,pids"],
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(
        !out.stderr.contains("did not apply"),
        "dockerd applies every limit: no warning: {}",
        out.stderr
    );
    let hc = &c.inspect()["HostConfig"];
    assert_eq!(hc["Memory"], 1024 * 1024 * 1024, "still asked for");
    assert_eq!(hc["PidsLimit"], 256);
    assert_eq!(hc["UsernsMode"], "", "keep-id is for Podman only");
    assert_eq!(starts(&c.id, since), 1);

    // Only the three limits can be named.
    let c = Case::new("unenf-bad");
    let out = c.run_raw(
        &c.line(json!({"command": ["true"]}), false),
        &["--allow-unenforced-limits", "memory,seccomp"],
    );
    out.fails_with_code(2);
    assert!(
        out.stderr.contains("\"seccomp\" is not a limit"),
        "{}",
        out.stderr
    );
    assert!(!c.exists());
}

//! Running the tools: binaries, captured output, time limits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Run a docker CLI command (for assertions only; the tools use the API).
pub fn docker(args: &[&str]) -> Output {
    run_with(
        Command::new("docker").args(args),
        b"",
        Duration::from_secs(60),
    )
}

/// How many container events `event` (e.g. `create`, `start`) dockerd
/// reports for the action `id` (its `vault.action` label) since `since`
/// (unix seconds): the engine's own count, not what the tools say.
pub fn container_events(event: &str, id: &str, since: u64) -> usize {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 1;
    let out = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=container",
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

/// Poll `done` until it holds; panic with "timed out waiting for `what`"
/// once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

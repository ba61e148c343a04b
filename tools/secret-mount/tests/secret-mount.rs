//! secret-mount end to end: the built binary, real age files made by the
//! real `age` CLI, real tmpfs mounts (the tests run as root).

#![allow(clippy::unwrap_used)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vault_core::{ActionResult, Status};
use vault_testkit::{run, run_with, spawn_fed, ssh_keygen, Output, SecretStore, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_secret-mount");

/// One test's world: a secret store and a mount root of its own.
struct Fx {
    store: SecretStore,
    tmp: TempDir,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            store: SecretStore::new(),
            tmp: TempDir::new().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("mounts")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// secret-mount with this fixture's identity, store and mount root,
    /// and no configuration leaking in from the environment.
    fn cmd(&self) -> Command {
        self.cmd_with(&self.store.identity)
    }

    /// Like [`cmd`](Self::cmd), with another identity file.
    fn cmd_with(&self, identity: &Path) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("VAULT_") {
                c.env_remove(k);
            }
        }
        c.arg("--identity")
            .arg(identity)
            .arg("--secrets")
            .arg(self.store.store())
            .arg("--mount-root")
            .arg(self.root())
            .args(["--dispatcher-id", "test-dispatcher"]);
        c
    }

    /// Run secret-mount with `--names` and a `sh -c SCRIPT` command.
    fn run_names(&self, names: &str, script: &str) -> Output {
        run(
            self.cmd()
                .args(["--names", names, "--", "sh", "-c", script]),
            b"",
        )
    }

    /// Nothing left: no run directory under the root, no mount under it.
    #[track_caller]
    fn assert_clean(&self) {
        let root = self.root();
        if root.exists() {
            let left: Vec<_> = std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                left.is_empty(),
                "left behind in {}: {left:?}",
                root.display()
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = root.to_string_lossy().into_owned();
        assert!(
            !mounts.lines().any(|l| l.contains(&root)),
            "a mount is left under {root}"
        );
    }
}

/// A directory of this test's own in /dev/shm (a tmpfs), removed on drop.
struct ShmDir(PathBuf);

impl ShmDir {
    fn new(prefix: &str) -> ShmDir {
        let p = PathBuf::from("/dev/shm").join(vault_testkit::unique(prefix));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        ShmDir(p)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scan_line(id: &str, secrets: &[&str]) -> String {
    serde_json::json!({
        "schema": 1, "id": id, "path": format!("vault/actions/{id}.json"),
        "commit": "c0ffee", "blob": "b10b",
        "action": {"id": id, "secrets": secrets, "command": ["true"]},
    })
    .to_string()
}

/// The one mountinfo line whose mount point is `dir`, split as
/// (mount options, fs type, super options).
fn mount_of(mountinfo: &str, dir: &str) -> Option<(String, String, String)> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        (f.get(4) == Some(&dir)).then(|| (f[5].to_string(), r[0].to_string(), r[2].to_string()))
    })
}

fn wait_for_file(p: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("secret-mount exited ({st}) before its command started");
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mounts_only_the_requested_secrets_with_their_modes_and_owner() {
    let fx = Fx::new();
    fx.store.add("ALPHA", b"alpha-value");
    fx.store.add("BRAVO", b"bravo-value");
    fx.store.add_with("CHARLIE", b"charlie\nvalue\n", &["-a"]);
    let out = run(
        fx.cmd().args([
            "--runner-user",
            "1234:4321",
            "--names",
            "ALPHA,CHARLIE",
            "--",
            "sh",
            "-c",
            r#"cd "$VAULT_SECRETS_DIR" && stat -c '%n %a %u:%g' . * && cat ALPHA && echo '|' && cat CHARLIE"#,
        ]),
        b"",
    );
    out.success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            ". 500 1234:4321",
            "ALPHA 400 1234:4321",
            "CHARLIE 400 1234:4321"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(lines[3..].join("\n"), "alpha-value|\ncharlie\nvalue");
    assert!(!out.stdout.contains("BRAVO"));
    fx.assert_clean();
}

/// `VAULT_RUNNER_USER` means what it means to run-action: a bare UID is
/// UID:UID, uid 0 is refused; the dispatcher id is checked (issue 12).
#[test]
fn runner_user_and_dispatcher_id_follow_the_shared_rules() {
    let fx = Fx::new();
    fx.store.add("ALPHA", b"alpha-value");
    let out = run(
        fx.cmd().env("VAULT_RUNNER_USER", "1000").args([
            "--names",
            "ALPHA",
            "--",
            "sh",
            "-c",
            r#"stat -c '%u:%g' "$VAULT_SECRETS_DIR/ALPHA""#,
        ]),
        b"",
    );
    out.success();
    assert_eq!(out.stdout.trim(), "1000:1000");
    for (user, why) in [("0:0", "root"), ("0", "root"), ("1:x", "UID[:GID]")] {
        let out = run(
            fx.cmd()
                .env("VAULT_RUNNER_USER", user)
                .args(["--names", "ALPHA", "--", "true"]),
            b"",
        );
        out.fails_with_code(2);
        assert!(out.stderr.contains(why), "{user}: {}", out.stderr);
    }
    let mut c = Command::new(BIN);
    c.env_remove("VAULT_DISPATCHER_ID").args([
        "--dispatcher-id",
        "a<b",
        "--names",
        "ALPHA",
        "--",
        "true",
    ]);
    let out = run(&mut c, b"");
    out.fails_with_code(2);
    assert!(
        out.stderr.contains("invalid dispatcher id"),
        "{}",
        out.stderr
    );
    fx.assert_clean();
}

#[test]
fn the_mount_is_a_fresh_noswap_tmpfs_that_refuses_writes() {
    let fx = Fx::new();
    fx.store.add("TOKEN", b"t0ken");
    let out = fx.run_names(
        "TOKEN",
        r#"cat /proc/self/mountinfo; echo "DIR=$VAULT_SECRETS_DIR";
           echo x > "$VAULT_SECRETS_DIR/NEW"; echo x >> "$VAULT_SECRETS_DIR/TOKEN";
           rm -f "$VAULT_SECRETS_DIR/TOKEN"; chmod 644 "$VAULT_SECRETS_DIR/TOKEN";
           mkdir "$VAULT_SECRETS_DIR/d"; test -e "$VAULT_SECRETS_DIR/TOKEN" && echo STILL-THERE"#,
    );
    out.success();
    let dir = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("DIR="))
        .unwrap()
        .to_string();
    assert!(dir.starts_with(&*fx.root().to_string_lossy()), "{dir}");
    let (mnt_opts, fstype, super_opts) = mount_of(&out.stdout, &dir).expect("mounted");
    assert_eq!(fstype, "tmpfs");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(mnt_opts.split(',').any(|x| x == o), "{o} in {mnt_opts}");
    }
    for o in ["ro", "noswap", "mode=700", "uid=65534", "gid=65534"] {
        assert!(super_opts.split(',').any(|x| x == o), "{o} in {super_opts}");
    }
    let size: String = super_opts
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .unwrap()
        .into();
    assert!(
        size.ends_with('k') && size.len() <= 6,
        "size capped: {size}"
    );
    // Root could write anything a mode allows: only a read-only mount
    // stops it.
    assert_eq!(
        out.stderr.matches("Read-only file system").count(),
        5,
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("STILL-THERE"));
    fx.assert_clean();
}

#[test]
fn no_plaintext_in_streams_environment_or_argv() {
    let fx = Fx::new();
    let canary = "canary-7f3a9c1e-do-not-print";
    fx.store.add("CANARY", canary.as_bytes());
    let script = r#"
        tr '\0' '\n' < /proc/self/environ; tr '\0' ' ' < /proc/self/cmdline; echo
        echo "PARENT=$(cat /proc/$PPID/comm)"
        tr '\0' '\n' < /proc/$PPID/environ; tr '\0' ' ' < /proc/$PPID/cmdline; echo
        test -s "$VAULT_SECRETS_DIR/CANARY" && echo PRESENT
        echo oops >&2"#;
    let out = run(
        fx.cmd().args(["--", "sh", "-c", script]),
        format!("{}\n", scan_line("canary-run", &["CANARY"])).as_bytes(),
    );
    out.success();
    assert!(out.stdout.contains("PRESENT"), "{}", out.stdout);
    assert!(out.stdout.contains("PARENT=secret-mount"), "{}", out.stdout);
    assert!(out.stdout.contains("VAULT_SECRETS_DIR="), "{}", out.stdout);
    assert!(!out.stdout.contains(canary), "plaintext on stdout/env/argv");
    assert!(!out.stderr.contains(canary), "plaintext on stderr");

    // A refusal's messages carry names, never values.
    let mut garbage = std::fs::read(fx.store.store().join("CANARY.age")).unwrap();
    garbage.truncate(garbage.len() - 3);
    std::fs::write(fx.store.store().join("CUT.age"), garbage).unwrap();
    let out = fx.run_names("CANARY,CUT", "echo ran");
    out.fails_with_code(1);
    assert!(out.stderr.contains("\"CUT\""), "{}", out.stderr);
    assert!(!out.stderr.contains(canary) && !out.stdout.contains(canary));
    fx.assert_clean();
}

#[test]
fn the_stdin_line_is_passed_on_unchanged_and_names_the_secrets() {
    let fx = Fx::new();
    fx.store.add("ONE", b"1");
    fx.store.add("TWO", b"2");
    fx.store.add("THREE", b"3");
    // Unknown stream fields and spacing must survive: CMD gets the bytes.
    let line = scan_line("pass-on", &["ONE", "THREE"])
        .replace("\"schema\":1", "\"schema\": 1, \"future\": {\"x\": [1]}");
    let input = format!("{line}\n");
    let out = run(
        fx.cmd()
            .args(["--", "sh", "-c", r#"cat; ls "$VAULT_SECRETS_DIR""#]),
        input.as_bytes(),
    );
    out.success();
    assert_eq!(out.stdout, format!("{input}ONE\nTHREE\n"));

    // No secrets at all: an empty directory, and CMD runs.
    let input = format!("{}\n", scan_line("none", &[]));
    let out = run(
        fx.cmd().args([
            "--",
            "sh",
            "-c",
            r#"cat; ls -A "$VAULT_SECRETS_DIR" | wc -l"#,
        ]),
        input.as_bytes(),
    );
    out.success();
    assert_eq!(out.stdout, format!("{input}0\n"));

    // --names: the names come from the flag, CMD gets stdin as it is.
    let out = run(
        fx.cmd().args([
            "--names",
            "TWO",
            "--",
            "sh",
            "-c",
            r#"wc -c; ls "$VAULT_SECRETS_DIR""#,
        ]),
        b"",
    );
    out.success();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "TWO"]
    );
    fx.assert_clean();
}

#[test]
fn cleanup_after_success_and_after_failure_with_the_commands_code() {
    let fx = Fx::new();
    fx.store.add("S", b"s");
    fx.run_names("S", r#"test -f "$VAULT_SECRETS_DIR/S""#)
        .success();
    fx.assert_clean();
    fx.run_names("S", "exit 7").fails_with_code(7);
    fx.assert_clean();
    // CMD killed by a signal: 128+N, as a shell reports it.
    fx.run_names("S", "kill -KILL $$").fails_with_code(137);
    fx.assert_clean();
}

#[test]
fn cleanup_after_sigint_sigterm_and_sighup() {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let fx = Fx::new();
        fx.store.add("S", b"s");
        let marker = fx.path("started");
        let mut child = fx
            .cmd()
            .args(["--names", "S", "--", "sh", "-c"])
            .arg(format!(
                r#"echo "$VAULT_SECRETS_DIR" > {m}.tmp && mv {m}.tmp {m} && exec sleep 60"#,
                m = marker.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = wait_for_file(&marker, &mut child).trim().to_string();
        assert!(Path::new(&dir).join("S").exists());
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        // The signal reached CMD (sleep died of it) and secret-mount
        // reports CMD's end.
        assert_eq!(
            out.status.code(),
            Some(128 + sig as i32),
            "{sig}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!Path::new(&dir).exists(), "{sig}: {dir} left");
        fx.assert_clean();
    }
}

#[test]
fn kill_9_leaves_a_mount_that_sweep_removes_sparing_live_runs() {
    let fx = Fx::new();
    fx.store.add("S", b"s");
    // Each run's CMD writes "<its pid> <secrets dir>" then becomes sleep.
    let start = |tag: &str| -> (Child, String, i32) {
        let marker = fx.path(tag);
        let mut child = fx
            .cmd()
            .args(["--names", "S", "--", "sh", "-c"])
            .arg(format!(
                r#"echo "$$ $VAULT_SECRETS_DIR" > {m}.tmp && mv {m}.tmp {m} && exec sleep 60"#,
                m = marker.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let text = wait_for_file(&marker, &mut child);
        let (pid, dir) = text.trim().split_once(' ').unwrap();
        (child, dir.to_string(), pid.parse().unwrap())
    };
    let (mut victim, victim_dir, victim_sleep) = start("victim");
    let (mut live, live_dir, _) = start("live");

    victim.kill().unwrap(); // SIGKILL: no chance to clean up
    victim.wait().unwrap(); // reaped: no zombie to look alive
    let _ = kill(Pid::from_raw(victim_sleep), Signal::SIGKILL);
    assert!(Path::new(&victim_dir).join("S").exists(), "left behind");

    let out = run(
        Command::new(BIN)
            .arg("sweep")
            .arg("--mount-root")
            .arg(fx.root()),
        b"",
    );
    out.success();
    assert!(
        out.stderr.contains(&format!("swept {victim_dir}")),
        "{}",
        out.stderr
    );
    assert!(!Path::new(&victim_dir).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mount_of(&mounts, &victim_dir).is_none());
    assert!(
        Path::new(&live_dir).join("S").exists(),
        "a live run is spared"
    );
    assert!(mount_of(&mounts, &live_dir).is_some());

    kill(Pid::from_raw(live.id() as i32), Signal::SIGTERM).unwrap();
    live.wait().unwrap();
    fx.assert_clean();
    // Nothing to do is fine too.
    run(
        Command::new(BIN)
            .arg("sweep")
            .arg("--mount-root")
            .arg(fx.root()),
        b"",
    )
    .success();
}

/// An scrypt (passphrase) age file, made with the age library (the CLI
/// needs a terminal for passphrases).
fn scrypt_file(path: &Path, value: &[u8]) {
    let mut r = age::scrypt::Recipient::new(age::secrecy::SecretString::from("pw".to_string()));
    r.set_work_factor(10);
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
    let mut w = enc
        .wrap_output(std::fs::File::create(path).unwrap())
        .unwrap();
    w.write_all(value).unwrap();
    w.finish().unwrap();
}

#[test]
fn all_or_nothing_for_every_kind_of_bad_secret() {
    let fx = Fx::new();
    let good = "good-value-4d2b";
    fx.store.add("GOOD", good.as_bytes());
    let store = fx.store.store();
    let ok_bytes = std::fs::read(store.join("GOOD.age")).unwrap();

    std::fs::write(
        store.join("CORRUPT.age"),
        b"age-encryption.org/v1\nnot really\n",
    )
    .unwrap();
    let mut flipped = ok_bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(store.join("FLIPPED.age"), flipped).unwrap();
    std::fs::write(
        store.join("TRUNCATED.age"),
        &ok_bytes[..ok_bytes.len() - 10],
    )
    .unwrap();
    scrypt_file(&store.join("SCRYPT.age"), b"pw-secret");
    std::os::unix::fs::symlink(store.join("GOOD.age"), store.join("LINKED.age")).unwrap();
    std::fs::create_dir(store.join("ADIR.age")).unwrap();
    let other = SecretStore::new();
    let foreign = other.add("FOREIGN", b"f");
    std::fs::copy(foreign, store.join("FOREIGN.age")).unwrap();

    let cases = [
        ("MISSING", "not in the store"),
        ("CORRUPT", "cannot decrypt"),
        ("FLIPPED", "cannot decrypt"),
        ("TRUNCATED", "cannot decrypt"),
        ("SCRYPT", "passphrase-encrypted (scrypt)"),
        ("LINKED", "is a symlink"),
        ("ADIR", "not a regular file"),
        ("FOREIGN", "not encrypted to this identity"),
    ];
    let marker = fx.path("ran");
    for (bad, why) in cases {
        let script = format!("touch {}", marker.display());
        // The bad one last: everything before it was decrypted, and still
        // nothing is mounted.
        let out = fx.run_names(&format!("GOOD,{bad}"), &script);
        out.fails_with_code(1);
        assert!(out.stdout.is_empty(), "{bad}: {}", out.stdout);
        assert!(
            out.stderr
                .starts_with(&format!("secret-mount: secret \"{bad}\": ")),
            "{bad}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(why),
            "{bad}: want {why:?}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(!out.stderr.contains(good));
        assert!(!marker.exists(), "{bad}: CMD ran");
        fx.assert_clean();
    }

    // The same from a scan line: one `error` result line, exit 5.
    let out = run(
        fx.cmd()
            .args(["--", "sh", "-c", &format!("touch {}", marker.display())]),
        scan_line("bad-secret", &["GOOD", "TRUNCATED"]).as_bytes(),
    );
    out.fails_with_code(5);
    let results = out.lines();
    assert_eq!(results.len(), 1);
    let r: ActionResult = serde_json::from_value(results[0].clone()).unwrap();
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.id.as_str(), "bad-secret");
    assert_eq!(r.action_commit.as_deref(), Some("c0ffee"));
    assert_eq!(r.action_blob.as_deref(), Some("b10b"));
    assert_eq!(r.dispatcher.as_deref(), Some("test-dispatcher"));
    assert!(r.error.unwrap().contains("\"TRUNCATED\""));
    assert!(!marker.exists());
    fx.assert_clean();
}

#[test]
fn invalid_names_are_rejected_before_any_file_is_opened() {
    let fx = Fx::new();
    // Opening a FIFO for reading blocks until a writer comes: if the tool
    // opened the identity or GOOD's file before validating every name, it
    // would hang and run_with would fail the test.
    let fifo = |p: &Path| {
        let st = Command::new("mkfifo").arg(p).status().unwrap();
        assert!(st.success());
    };
    let store = fx.store.store();
    fifo(&store.join("GOOD.age"));
    let id_fifo = fx.path("identity.fifo");
    fifo(&id_fifo);
    let limit = Duration::from_secs(30);
    let mut cmd = fx.cmd_with(&id_fifo);

    let out = run_with(
        cmd.args(["--names", "GOOD,../etc/passwd", "--", "touch"])
            .arg(fx.path("ran")),
        b"",
        limit,
    );
    out.fails_with_code(2);
    assert!(
        out.stderr.contains("invalid secret name \"../etc/passwd\""),
        "{}",
        out.stderr
    );

    let mut cmd = fx.cmd_with(&id_fifo);
    let line = scan_line("bad-names", &["GOOD"]).replace("[\"GOOD\"]", "[\"GOOD\",\"A-B\"]");
    let out = run_with(
        cmd.args(["--", "touch"]).arg(fx.path("ran")),
        line.as_bytes(),
        limit,
    );
    out.fails_with_code(5);
    let r: ActionResult = serde_json::from_value(out.lines()[0].clone()).unwrap();
    assert_eq!(r.status, Status::Rejected);
    // The one refused result of vault-core, as run-action prints it.
    assert_eq!(r.action_commit.as_deref(), Some("c0ffee"));
    assert_eq!(r.action_blob.as_deref(), Some("b10b"));
    let error = r.error.unwrap();
    assert!(error.starts_with("invalid scan line: "), "{error}");
    assert!(error.contains("\"A-B\""));
    assert!(!fx.path("ran").exists());
    fx.assert_clean();
}

#[test]
fn refusals_without_a_secret_problem() {
    let fx = Fx::new();
    let marker = fx.path("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];

    // The scan line carries vault-scan's error: rejected, nothing read.
    let err_line = r#"{"schema":1,"id":"broken","path":"vault/actions/broken.json","commit":"c1","error":"action file is not valid JSON"}"#;
    let out = run(fx.cmd().args(touch), err_line.as_bytes());
    out.fails_with_code(5);
    let r: ActionResult = serde_json::from_value(out.lines()[0].clone()).unwrap();
    assert_eq!((r.status, r.id.as_str()), (Status::Rejected, "broken"));
    assert!(r.error.unwrap().contains("not valid JSON"));
    assert!(out.stderr.starts_with("secret-mount: "), "{}", out.stderr);

    // Not a usable scan line: stderr only, exit 1.
    for input in [
        "",
        "garbage\n",
        "{}\n",
        &format!("{0}\n{0}\n", scan_line("two", &[])),
    ] {
        let out = run(fx.cmd().args(touch), input.as_bytes());
        out.fails_with_code(1);
        assert!(out.stdout.is_empty(), "{input:?}: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{input:?}: {}", out.stderr);
    }

    // Too large for the size cap.
    fx.store.add("BIG", &[b'x'; 3000]);
    fx.store.add("SMALL", b"small");
    let out = run(
        fx.cmd()
            .args(["--size", "2K", "--names", "SMALL,BIG"])
            .args(touch),
        b"",
    );
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("\"BIG\"") && out.stderr.contains("size cap"),
        "{}",
        out.stderr
    );

    // Configuration missing: a usage error.
    let out = run(
        Command::new(BIN).env_remove("VAULT_IDENTITY").args([
            "--secrets",
            "/nonexistent",
            "--names",
            "A",
            "--",
            "true",
        ]),
        b"",
    );
    out.fails_with_code(2);
    assert!(out.stderr.contains("VAULT_IDENTITY"), "{}", out.stderr);
    assert!(!marker.exists());
    fx.assert_clean();
}

#[test]
fn ssh_identities_unencrypted_work_encrypted_fail_fast() {
    let fx = Fx::new();
    let key = fx.path("id_ed25519");
    ssh_keygen(&key, "");
    let mut age = spawn_fed(
        Command::new("age")
            .arg("-R")
            .arg(key.with_extension("pub"))
            .arg("-o")
            .arg(fx.store.store().join("VIA_SSH.age")),
        b"ssh-decrypted",
    );
    assert!(age.wait().unwrap().success());

    let out = run(
        fx.cmd_with(&key).args([
            "--names",
            "VIA_SSH",
            "--",
            "sh",
            "-c",
            r#"cat "$VAULT_SECRETS_DIR/VIA_SSH""#,
        ]),
        b"",
    );
    out.success();
    assert_eq!(out.stdout, "ssh-decrypted");

    let locked = fx.path("id_locked");
    ssh_keygen(&locked, "a passphrase");
    let out = run_with(
        fx.cmd_with(&locked)
            .args(["--names", "VIA_SSH", "--", "touch"])
            .arg(fx.path("ran"))
            .stdin(Stdio::null()),
        b"",
        Duration::from_secs(30),
    );
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("passphrase-protected"),
        "{}",
        out.stderr
    );
    assert!(!fx.path("ran").exists());

    // An identity file that is not one.
    std::fs::write(fx.path("junk"), "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let out = run(
        fx.cmd_with(&fx.path("junk"))
            .args(["--names", "VIA_SSH", "--", "true"]),
        b"",
    );
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("line 1") && !out.stderr.contains("NOTAKEY"),
        "{}",
        out.stderr
    );
    fx.assert_clean();
}

#[test]
fn in_tmpfs_dir_mode_mounts_nothing_and_checks_the_file_system() {
    let fx = Fx::new();
    fx.store.add("S", b"in-tmpfs");
    // /dev/shm is a tmpfs here; a directory of this test's own inside it.
    let shm_dir = ShmDir::new("sm-test");
    let shm = &shm_dir.0;
    let out = run(
        fx.cmd()
            .arg("--in-tmpfs-dir")
            .arg(shm)
            .args(["--names", "S", "--", "sh", "-c"])
            .arg(r#"echo "$VAULT_SECRETS_DIR"; stat -c '%a %u:%g' "$VAULT_SECRETS_DIR" "$VAULT_SECRETS_DIR/S"; cat "$VAULT_SECRETS_DIR/S"; echo; awk -v d="$VAULT_SECRETS_DIR" '$5 == d' /proc/self/mountinfo | wc -l"#),
        b"",
    );
    out.success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&*shm.to_string_lossy()),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[1..4],
        ["500 65534:65534", "400 65534:65534", "in-tmpfs"]
    );
    // Counted at the secrets dir itself: other tests mount in parallel.
    assert_eq!(
        lines[4].trim().parse::<usize>().unwrap(),
        0,
        "no mount made"
    );
    assert_eq!(std::fs::read_dir(shm).unwrap().count(), 0, "wiped");

    // Sweep in this mode: a dead owner's directory goes, others stay.
    let stale = shm.join("host.4294967.1");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("S"), "left").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o500)).unwrap();
    let unrelated = shm.join("not-ours");
    std::fs::create_dir(&unrelated).unwrap();
    let out = run(
        Command::new(BIN)
            .arg("sweep")
            .arg("--mount-root")
            .arg(fx.root())
            .arg("--in-tmpfs-dir")
            .arg(shm),
        b"",
    );
    out.success();
    assert!(!stale.exists(), "{}", out.stderr);
    assert!(unrelated.exists());

    // A directory on disk is refused: nothing written, CMD never runs.
    let disk = fx.path("on-disk");
    std::fs::create_dir(&disk).unwrap();
    assert_ne!(std::fs::metadata(&disk).unwrap().dev(), 0);
    let out = run(
        fx.cmd()
            .arg("--in-tmpfs-dir")
            .arg(&disk)
            .args(["--names", "S", "--", "touch"])
            .arg(fx.path("ran")),
        b"",
    );
    out.fails_with_code(1);
    assert!(out.stderr.contains("not on a tmpfs"), "{}", out.stderr);
    assert!(!fx.path("ran").exists());
    assert_eq!(std::fs::read_dir(&disk).unwrap().count(), 0);
}

/// The edge container's case: no root, no CAP_SYS_ADMIN. secret-mount
/// runs as uid 65534 in --in-tmpfs-dir mode; refuses to pretend it can
/// mount; and is not dumpable (its /proc files belong to root then).
#[test]
fn unprivileged_run_in_a_tmpfs_dir_and_core_dumps_off() {
    let fx = Fx::new();
    fx.store.add("S", b"unprivileged");
    let nobody = 65534;
    let world = TempDir::new().unwrap();
    let copy = |from: &Path, name: &str| {
        let to = world.path().join(name);
        std::fs::copy(from, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(nobody), Some(nobody)).unwrap();
        to
    };
    let identity = copy(&fx.store.identity, "identity.txt");
    let store = world.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(nobody), Some(nobody)).unwrap();
    copy(&fx.store.store().join("S.age"), "store/S.age");
    std::os::unix::fs::chown(world.path(), Some(nobody), Some(nobody)).unwrap();
    let shm_dir = ShmDir::new("sm-nobody");
    let shm = &shm_dir.0;
    std::os::unix::fs::chown(shm, Some(nobody), Some(nobody)).unwrap();

    let as_nobody = |extra: &[&std::ffi::OsStr]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .arg("--identity")
            .arg(&identity)
            .arg("--secrets")
            .arg(&store)
            .arg("--mount-root")
            .arg(world.path().join("mounts"))
            .args(extra)
            .args(["--names", "S", "--", "sh", "-c"])
            .arg(r#"id -u; stat -c %u /proc/$PPID/environ /proc/self/environ; cat "$VAULT_SECRETS_DIR/S""#);
        run(&mut c, b"")
    };
    let out = as_nobody(&["--in-tmpfs-dir".as_ref(), shm.as_os_str()]);
    out.success();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["65534", "0", "65534", "unprivileged"],
        "secret-mount's /proc files are root's: it is not dumpable"
    );
    assert_eq!(std::fs::read_dir(shm).unwrap().count(), 0, "wiped");

    // Without the tmpfs dir it would have to mount: a clear refusal.
    let out = as_nobody(&[]);
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("cannot mount a tmpfs") && out.stderr.contains("--in-tmpfs-dir"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// dockerd sees the mount at the same path, and a container running as the
/// runner user (65534) reads the secret through a read-only bind mount.
#[test]
fn a_container_as_the_runner_user_reads_the_secret() {
    let tb = vault_testkit::Testbed::get();
    let fx = Fx::new();
    fx.store.add("S", b"seen-in-container");
    let out = fx.run_names(
        "S",
        &format!(
            r#"docker run --rm --network none --user 65534:65534 --cap-drop ALL \
                 -v "$VAULT_SECRETS_DIR:/run/secrets:ro" {} \
                 sh -c 'ls /run/secrets; cat /run/secrets/S; echo; echo x > /run/secrets/S || echo refused'"#,
            tb.image
        ),
    );
    out.success();
    assert_eq!(
        out.stdout, "S\nseen-in-container\nrefused\n",
        "{}",
        out.stderr
    );
    fx.assert_clean();
}

#[test]
fn help_and_version() {
    let out = run(Command::new(BIN).arg("--help"), b"");
    out.success();
    for flag in [
        "--names",
        "--identity",
        "--secrets",
        "--runner-user",
        "--dispatcher-id",
        "--mount-root",
        "--size",
        "--in-tmpfs-dir",
        "VAULT_IDENTITY",
        "VAULT_SECRETS_TMPFS",
        "sweep",
    ] {
        assert!(out.stdout.contains(flag), "--help lacks {flag}");
    }
    let out = run(Command::new(BIN).arg("--version"), b"");
    out.success();
    assert!(out.stdout.starts_with("secret-mount "));
    run(Command::new(BIN).arg("--bogus"), b"").fails_with_code(2);
}

#[test]
fn admission_refuses_before_anything_is_decrypted() {
    let fx = Fx::new();
    fx.store.add("PAY", b"pay-secret-value");
    let marker = fx.path("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];
    let policy = fx.path("policy.toml");
    let line = scan_line("pay-1", &["PAY"]);

    // A policy that does not parse: one line naming file and line, exit 1,
    // no result line, nothing mounted or run.
    std::fs::write(&policy, "[secrets.PAY]\nimages = [\"x\"] oops\n").unwrap();
    let out = run(
        fx.cmd().arg("--policy").arg(&policy).args(touch),
        line.as_bytes(),
    );
    out.fails_with_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the policy {} is not valid: line 2",
            policy.display()
        )),
        "{}",
        out.stderr
    );

    // A secret the policy does not list: rejected, named, nothing decrypted.
    std::fs::write(&policy, "[secrets.OTHER]\nimages = [\"*\"]\n").unwrap();
    let out = run(
        fx.cmd().arg("--policy").arg(&policy).args(touch),
        line.as_bytes(),
    );
    out.fails_with_code(5);
    let r: ActionResult = serde_json::from_value(out.lines()[0].clone()).unwrap();
    assert_eq!(r.status, Status::Rejected);
    let error = r.error.unwrap();
    assert!(error.contains("secret \"PAY\" is not listed"), "{error}");

    // A rule broken (the image): rejected, naming the rule.
    std::fs::write(
        &policy,
        "[secrets.PAY]\nimages = [\"vault-runner:*\"]\ncommands = [[\"true\"]]\n",
    )
    .unwrap();
    let base = || {
        let mut c = fx.cmd();
        c.arg("--policy").arg(&policy);
        c
    };
    let out = run(
        base().args(["--runner-image", "busybox"]).args(touch),
        line.as_bytes(),
    );
    out.fails_with_code(5);
    let error = out.lines()[0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("image \"busybox\" is not in its images"),
        "{error}"
    );
    // Within the rules it runs.
    let out = run(
        base()
            .args(["--runner-image", "vault-runner:test"])
            .args(touch),
        line.as_bytes(),
    );
    out.success();
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();

    // Approvals verified but the line carries none: rejected.
    let out = run(
        fx.cmd()
            .args(["--allowed-signers", "/nonexistent"])
            .args(touch),
        line.as_bytes(),
    );
    out.fails_with_code(5);
    let error = out.lines()[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("no verified approval"), "{error}");

    // --names has no action to check: a usage error while any is set.
    for flag in [
        ["--policy", policy.to_str().unwrap()],
        ["--approval-ttl-s", "60"],
        ["--allowed-signers", "/nonexistent"],
    ] {
        let out = run(
            fx.cmd().args(flag).args(["--names", "PAY"]).args(touch),
            b"",
        );
        out.fails_with_code(2);
        assert!(
            out.stderr.contains("--names has no action"),
            "{}",
            out.stderr
        );
    }
    assert!(!marker.exists());
    fx.assert_clean();
}

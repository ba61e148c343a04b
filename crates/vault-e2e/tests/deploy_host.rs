//! The host deployments end to end on the real bench: the shipped systemd
//! unit run by a real systemd, the shipped crontab line run in cron's own
//! environment, and the one env-file format both (and compose) read.
//!
//! Each deployment is installed as docs/deploy/host.md says: the built tools
//! and dispatcher.sh where the unit or crontab looks for them, the settings
//! in an env file made from deploy/env.example, an age identity and store
//! made by the real `age`, an ops repo on the testbed's git daemon. Every
//! install path is read from the shipped files, so a unit or crontab changed
//! into one that does not work fails here.
//!
//! systemd: this machine's PID 1 is not systemd, so the test boots one, the
//! distribution's own `/lib/systemd/systemd`, as PID 1 of fresh pid, mount,
//! uts and cgroup namespaces (cgroup2, in a cgroup of its own), as a
//! container manager would. It starts the shipped unit unchanged and
//! applies all of it itself: EnvironmentFile=, PrivateTmp=, ProtectSystem=,
//! ProtectHome=, RuntimeDirectory=, CacheDirectory=, the capability bounding
//! set, the seccomp filters. Its world is the host's but for: its own `/run`
//! (a tmpfs, as on every systemd host) holding the host's docker socket and
//! `/run/<RuntimeDirectory>` (which the test mounts as a tmpfs on the host,
//! standing in for a systemd host's `/run`), the tools bound at the unit's
//! install folder, an overlay on `/etc` holding the env file, identity,
//! store and the unit folder (`SYSTEMD_UNIT_PATH`: the shipped unit, a
//! stand-in `docker.service` since dockerd already runs, and journald so
//! that `journalctl -u vault-dispatch` works), and one on `/root` (the ssh
//! case's known_hosts). `/var/cache` is the host's: dockerd must find
//! `run/<id>/action.json` there.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vault_e2e::*;
use vault_testkit::{
    bin, bin_dir, run_with, unique, wait_until, OpsRepo, Output, SecretStore, SshGit, TempDir,
    Testbed,
};

const TOOLS: [&str; 4] = ["vault-scan", "secret-mount", "run-action", "result-write"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn shipped(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    run_with(cmd, b"", Duration::from_secs(240))
}

fn write_mode(path: &Path, text: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Install the four built tools and dispatcher.sh into `dir`, 0755.
fn install_tools(dir: &Path, tools: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for t in tools {
        std::fs::copy(bin(t), dir.join(t)).unwrap();
        std::fs::set_permissions(dir.join(t), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::copy(dispatcher_sh(), dir.join("dispatcher.sh")).unwrap();
    std::fs::set_permissions(
        dir.join("dispatcher.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// The first of `paths` that exists (distributions put systemd's files in
/// /lib or /usr/lib).
fn first_existing(paths: &[&str]) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("none of {paths:?} exists: apt-get install systemd"))
}

/// `KEY=value` of a setting line of an env file (`#KEY=value` too when
/// `commented`), if the line is one.
fn setting(line: &str, commented: bool) -> Option<(&str, &str)> {
    let l = if commented {
        line.strip_prefix('#').unwrap_or(line)
    } else {
        line
    };
    let (k, v) = l.split_once('=')?;
    let name_ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    name_ok.then_some((k, v))
}

/// deploy/env.example with `settings` filled in: each one replaces the
/// example's own line (`KEY=...` or `#KEY=...`), which must exist.
fn env_from_example(settings: &[(&str, &str)]) -> String {
    let example = shipped("deploy/env.example");
    let mut used = BTreeSet::new();
    let mut out = String::new();
    for line in example.lines() {
        match setting(line, true).and_then(|(k, _)| settings.iter().find(|(s, _)| *s == k)) {
            Some((k, v)) => {
                used.insert(*k);
                out.push_str(&format!("{k}={v}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (k, _) in settings {
        assert!(used.contains(k), "deploy/env.example does not document {k}");
    }
    out
}

/// The `KEY=value` lines of an env file, as a map.
fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| setting(l, false))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The lines of a systemd unit file, `(section, key, value)`.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "continuation lines are not read by this test: {line}"
            );
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a unit line: {line}"));
            entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
        Unit(entries)
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key)[..] {
            [v] => v,
            ref vs => panic!("the unit has {} {key}= lines in [{section}]", vs.len()),
        }
    }

    fn words(&self, section: &str, key: &str) -> Vec<String> {
        self.all(section, key)
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_string)
            .collect()
    }
}

/// The cgroup2 folder this test runs in (the hybrid layout's
/// /sys/fs/cgroup/unified or the unified /sys/fs/cgroup).
fn own_cgroup2() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).unwrap().to_string())
        })
        .expect("no cgroup2 hierarchy is mounted: the systemd test needs one");
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no cgroup2 line in /proc/self/cgroup");
    Path::new(&mount).join(own.trim_start_matches('/'))
}

/// Remove a cgroup and everything below it, once its processes are gone.
fn remove_cgroup(dir: &Path) {
    fn subdirs(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    subdirs(&e.path(), out);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    for _ in 0..100 {
        if !dir.exists() {
            return;
        }
        let mut all = Vec::new();
        subdirs(dir, &mut all);
        for d in all {
            let _ = std::fs::remove_dir(d);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("could not remove cgroup {}", dir.display());
}

fn is_mount_point(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Run in fresh namespaces by `unshare --fork`: move into the test's cgroup,
/// then unshare the cgroup namespace so that systemd sees that cgroup as its
/// root. $1 cgroup folder, $2 the inner script, the rest its arguments.
const OUTER: &str = r#"set -eu
echo 0 >"$1/cgroup.procs"
inner=$2
shift 2
exec unshare --cgroup -- sh -c "$inner" sh "$@"
"#;

/// The world of the namespace's systemd, then systemd itself. $1 bench
/// folder, $2 the unit's install folder, $3 systemd, then the
/// RuntimeDirectory= names. Everything from the bench is bound before /tmp
/// is covered (the bench may be under /tmp).
const INNER: &str = r#"set -eu
p=$1 bindir=$2 systemd=$3
shift 3
mount -t proc proc /proc
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind "$p/bin" "$bindir"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$p/etc,workdir=$p/etc-work" /etc
mount -t overlay overlay -o "lowerdir=/root,upperdir=$p/root,workdir=$p/root-work" /root
if [ -e /dev/console ]; then mount --bind "$p/console" /dev/console; fi
mkdir -p "$p/hostrun"
mount --rbind /run "$p/hostrun"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
: >/run/docker.sock
mount --bind "$p/hostrun/docker.sock" /run/docker.sock
for d in "$@"; do
    mkdir "/run/$d"
    mount --bind "$p/hostrun/$d" "/run/$d"
done
umount -l "$p/hostrun"
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
exec env -i container=vault-e2e SYSTEMD_UNIT_PATH=/etc/vault-e2e-units "$systemd" --system --unit=vault-e2e.target
"#;

/// A systemd booted in namespaces of its own, and everything the test put
/// on the host for it; all of it is taken down on drop.
struct SystemdHost {
    bench: TempDir,
    outer: Option<Child>,
    init: Option<u32>,
    cgroup: PathBuf,
    /// tmpfs mounts the test made on the host, and whether it made the
    /// folder too.
    host_mounts: Vec<(PathBuf, bool)>,
    /// Folders systemd or the tools make on the host (CacheDirectory=...).
    host_dirs: Vec<PathBuf>,
}

impl SystemdHost {
    fn systemctl(&self, args: &[&str]) -> Output {
        self.in_ns(&["systemctl"], args)
    }

    fn in_ns(&self, cmd: &[&str], args: &[&str]) -> Output {
        let pid = self.init.unwrap().to_string();
        run_with(
            Command::new("nsenter")
                .args(["-t", &pid, "-m", "-p", "--", "env", "-i"])
                .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
                .args(cmd)
                .args(args),
            b"",
            Duration::from_secs(60),
        )
    }

    fn show(&self, prop: &str) -> String {
        self.systemctl(&["show", "-p", prop, "--value", "vault-dispatch.service"])
            .stdout
            .trim()
            .to_string()
    }

    fn journal(&self) -> String {
        let out = self.in_ns(
            &["journalctl"],
            &["-u", "vault-dispatch.service", "-o", "cat", "--no-pager"],
        );
        format!("{}{}", out.stdout, out.stderr)
    }

    /// What went on, for a failure message.
    fn story(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.bench.path().join(name)).unwrap_or_default();
        let mut s = format!(
            "\n--- unshare/systemd output:\n{}\n--- console:\n{}",
            read("unshare.log"),
            read("console")
        );
        if self.init.is_some() {
            let status = self.systemctl(&["status", "--no-pager", "vault-dispatch.service"]);
            s.push_str(&format!(
                "\n--- systemctl status:\n{}{}\n--- journal:\n{}",
                status.stdout,
                status.stderr,
                self.journal()
            ));
        }
        s
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        // SIGKILL of the namespace's PID 1 ends every process in it.
        if let Some(pid) = self.init {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut outer) = self.outer.take() {
            if self.init.is_none() {
                let _ = outer.kill();
            }
            let _ = outer.wait();
        }
        remove_cgroup(&self.cgroup);
        for (m, made) in &self.host_mounts {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
            if *made {
                let _ = std::fs::remove_dir(m);
            }
        }
        for d in &self.host_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// One systemd at a time: both use the unit's host folders.
static SYSTEMD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn systemd_unit_runs_the_action_with_its_secret_under_a_real_systemd() {
    systemd_dispatch(false);
}

/// An ssh remote: the key where env.example puts it, the server's host key
/// in root's known_hosts (HOME, ProtectHome=read-only).
#[test]
fn systemd_unit_reaches_an_ssh_remote_through_roots_known_hosts() {
    systemd_dispatch(true);
}

/// The value deploy/env.example shows for `key` (set or commented out).
fn example_value(key: &str) -> String {
    shipped("deploy/env.example")
        .lines()
        .find_map(|l| setting(l, true).filter(|(k, _)| *k == key))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("deploy/env.example has no {key}"))
}

fn systemd_dispatch(over_ssh: bool) {
    let _g = shared_dockerd();
    let _one = SYSTEMD.lock().unwrap_or_else(|e| e.into_inner());
    let tb = Testbed::get();
    let unit_path = root().join("deploy/vault-dispatch.service");
    let unit_text = shipped("deploy/vault-dispatch.service");
    let unit = Unit::parse(&unit_text);

    // systemd's own reading of the file: not one warning (an unknown key,
    // a bad value, an `export` line are warnings, not errors), and its
    // hardening scored (exposure 0-10, shown x10).
    let verify = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path));
    assert!(
        verify.code == Some(0)
            && verify.stderr.trim().is_empty()
            && verify.stdout.trim().is_empty(),
        "systemd-analyze verify: {verify:?}"
    );
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
        .arg(&unit_path));
    assert_eq!(
        security.code,
        Some(0),
        "exposure over 3.0: {}{}",
        security.stdout,
        security.stderr
    );

    // Where the unit expects things, from its own lines.
    let exec = unit.one("Service", "ExecStart");
    assert!(
        !exec.contains(['"', '\'', '$', '%', '\\']) && !exec.starts_with(['-', '+', '@', '!', ':']),
        "the test reads a plain ExecStart= only: {exec}"
    );
    let script = exec
        .split_whitespace()
        .find(|a| a.ends_with("/dispatcher.sh"))
        .unwrap_or_else(|| panic!("ExecStart= runs no dispatcher.sh: {exec}"));
    let bin_target = Path::new(script).parent().unwrap();
    assert!(
        bin_target.is_dir(),
        "{} (the unit's install folder) must exist on the host",
        bin_target.display()
    );
    let env_file = unit.one("Service", "EnvironmentFile");
    let env_rel = env_file
        .strip_prefix("/etc/")
        .unwrap_or_else(|| panic!("the test installs the env file under /etc only: {env_file}"));
    for req in unit.words("Unit", "Requires") {
        assert_eq!(
            req, "docker.service",
            "the test has a stand-in for docker.service only"
        );
    }
    let runtime = unit.words("Service", "RuntimeDirectory");
    for r in &runtime {
        assert!(!r.contains('/'), "nested RuntimeDirectory= {r}");
    }

    // The ops repo (on the git daemon, or an sshd of the test's own), the
    // secret, the action.
    let ssh = over_ssh.then(SshGit::start);
    let repo = match &ssh {
        Some(s) => OpsRepo::new_in(s.base.path(), &s.base.path().display().to_string()),
        None => OpsRepo::new(&tb),
    };
    let url = match &ssh {
        Some(s) => s.url(&repo.bare),
        None => repo.url.clone(),
    };
    let ssh_key = example_value("VAULT_SSH_KEY");
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("systemd"));
    secrets.add("TOKEN", canary.as_bytes());
    let id = unique("systemd");
    let host_id = unique("systemd-host");
    let since = now_s();
    repo.land_action(
        &id,
        &action(
            &id,
            &["TOKEN"],
            "t=$(cat /run/secrets/TOKEN) && echo token=$t",
        ),
    );

    // The env file, from env.example; identity and store where it says.
    let mut settings = vec![
        ("VAULT_REPO", url.as_str()),
        ("VAULT_RUNNER_IMAGE", tb.image.as_str()),
        ("VAULT_ALLOW_IMAGES", tb.image.as_str()),
        ("VAULT_DISPATCHER_ID", host_id.as_str()),
        ("VAULT_INTERVAL", "2"),
        ("VAULT_TIMEOUT_S", "60"),
    ];
    if over_ssh {
        settings.push(("VAULT_SSH_KEY", ssh_key.as_str()));
    }
    let env_text = env_from_example(&settings);
    let env = env_map(&env_text);
    let under_etc = |key: &str| -> String {
        env[key]
            .strip_prefix("/etc/")
            .unwrap_or_else(|| panic!("the test installs {key} under /etc only: {}", env[key]))
            .to_string()
    };

    let mut host = SystemdHost {
        bench: TempDir::new().unwrap(),
        outer: None,
        init: None,
        cgroup: own_cgroup2().join(unique("vault-e2e-systemd")),
        host_mounts: Vec::new(),
        host_dirs: Vec::new(),
    };
    // The folders systemd makes for the unit, and the cache, on the host:
    // must be new (they are removed afterwards).
    let mut made = Vec::new();
    for (key, base) in [
        ("CacheDirectory", "/var/cache"),
        ("StateDirectory", "/var/lib"),
        ("LogsDirectory", "/var/log"),
    ] {
        made.extend(
            unit.words("Service", key)
                .iter()
                .map(|w| Path::new(base).join(w)),
        );
    }
    made.push(PathBuf::from(&env["VAULT_CACHE"]));
    made.sort();
    made.dedup();
    for d in made {
        assert!(
            !d.exists(),
            "{} exists already (a real deployment, or a killed run of this test: remove it)",
            d.display()
        );
        host.host_dirs.push(d);
    }
    // /run is a tmpfs on a systemd host: a tmpfs stands in for it at each
    // RuntimeDirectory=, on the host, where dockerd looks.
    for r in &runtime {
        let d = Path::new("/run").join(r);
        let fresh = !d.exists();
        if !fresh {
            assert!(
                !is_mount_point(&d) && std::fs::read_dir(&d).unwrap().next().is_none(),
                "{} is in use (a mount or not empty): remove it",
                d.display()
            );
        }
        std::fs::create_dir_all(&d).unwrap();
        let out = run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "mode=0755,size=16m,nosuid,nodev",
                "tmpfs",
            ])
            .arg(&d));
        out.success();
        host.host_mounts.push((d, fresh));
    }

    let bench = host.bench.path().to_path_buf();
    install_tools(&bench.join("bin"), &TOOLS);
    let etc = bench.join("etc");
    write_mode(&etc.join(env_rel), env_text.as_bytes(), 0o600);
    write_mode(
        &etc.join(under_etc("VAULT_IDENTITY")),
        &std::fs::read(&secrets.identity).unwrap(),
        0o600,
    );
    write_mode(
        &etc.join(under_etc("VAULT_SECRETS")).join("TOKEN.age"),
        &std::fs::read(secrets.store().join("TOKEN.age")).unwrap(),
        0o600,
    );
    std::fs::set_permissions(
        etc.join(under_etc("VAULT_SECRETS")),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // /root as the unit sees it: the host's, with a known_hosts of the
    // test's own over it.
    std::fs::create_dir_all(bench.join("root")).unwrap();
    std::fs::create_dir_all(bench.join("root-work")).unwrap();
    if let Some(s) = &ssh {
        write_mode(
            &etc.join(under_etc("VAULT_SSH_KEY")),
            &std::fs::read(&s.client_key).unwrap(),
            0o600,
        );
        let known_hosts = bench.join("root/.ssh/known_hosts");
        let mut lines = std::fs::read_to_string("/root/.ssh/known_hosts").unwrap_or_default();
        lines.push_str(&format!("{}\n", s.known_hosts_line));
        write_mode(&known_hosts, lines.as_bytes(), 0o600);
        std::fs::set_permissions(
            bench.join("root/.ssh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
    }
    let units = etc.join("vault-e2e-units");
    write_mode(
        &units.join("vault-dispatch.service"),
        unit_text.as_bytes(),
        0o644,
    );
    write_mode(
        &units.join("docker.service"),
        b"[Unit]\nDescription=stand-in: the testbed's dockerd runs outside this systemd\n\
          [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
        0o644,
    );
    let journald_socket = first_existing(&[
        "/lib/systemd/system/systemd-journald.socket",
        "/usr/lib/systemd/system/systemd-journald.socket",
    ]);
    std::fs::copy(&journald_socket, units.join("systemd-journald.socket")).unwrap();
    let journald = first_existing(&[
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]);
    write_mode(
        &units.join("systemd-journald.service"),
        format!(
            "[Unit]\nDefaultDependencies=no\nRequires=systemd-journald.socket\n\
             After=systemd-journald.socket\n[Service]\nType=notify\nExecStart={}\n\
             Sockets=systemd-journald.socket\nRuntimeDirectory=systemd/journal\n\
             RuntimeDirectoryPreserve=yes\nStandardOutput=null\n",
            journald.display()
        )
        .as_bytes(),
        0o644,
    );
    write_mode(
        &units.join("vault-e2e.target"),
        b"[Unit]\nDescription=what the test boots\nWants=systemd-journald.service vault-dispatch.service\n",
        0o644,
    );
    // The journal stays in the namespace's /run.
    write_mode(
        &etc.join("systemd/journald.conf.d/vault-e2e.conf"),
        b"[Journal]\nStorage=volatile\n",
        0o644,
    );
    std::fs::create_dir_all(bench.join("etc-work")).unwrap();
    std::fs::write(bench.join("console"), "").unwrap();
    let systemd = first_existing(&["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]);
    std::fs::create_dir(&host.cgroup).unwrap();

    let log = std::fs::File::create(bench.join("unshare.log")).unwrap();
    let outer = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child", "--uts"])
        .args(["--propagation", "private"])
        .args(["--", "sh", "-c", OUTER, "sh"])
        .arg(&host.cgroup)
        .arg(INNER)
        .arg(&bench)
        .arg(bin_target)
        .arg(&systemd)
        .args(&runtime)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let outer_pid = outer.id();
    host.outer = Some(outer);
    // PID 1 of the namespace: unshare's child, once it is systemd.
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.init.is_none() {
        let children =
            std::fs::read_to_string(format!("/proc/{outer_pid}/task/{outer_pid}/children"))
                .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                host.init = Some(pid.parse().unwrap());
                break;
            }
        }
        if let Some(status) = host.outer.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "the namespace ended before systemd ran ({status}){}",
                host.story()
            );
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not start{}",
            host.story()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The unit dispatches the action: its result lands, then its container
    // goes.
    let deadline = Instant::now() + Duration::from_secs(180);
    let result = loop {
        if let Some(r) = repo.result(&id).filter(|r| r["status"] != "running") {
            break r;
        }
        if let Some(status) = host.outer.as_mut().unwrap().try_wait().unwrap() {
            panic!("systemd's namespace ended ({status}){}", host.story());
        }
        let restarts = host.show("NRestarts");
        assert!(
            restarts.is_empty() || restarts == "0",
            "the unit failed and was restarted ({restarts}){}",
            host.story()
        );
        assert!(
            Instant::now() < deadline,
            "no result for {id} after 180 s{}",
            host.story()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(result["status"], "succeeded", "{result}{}", host.story());
    assert_eq!(result["dispatcher"], host_id.as_str());
    let logs = result["logs"].as_str().unwrap();
    assert!(
        logs.contains("token=***"),
        "the secret reached the runner, masked: {logs}"
    );
    wait_until(
        "the container to be removed",
        Duration::from_secs(60),
        || container_state(&id).is_none(),
    );
    assert_eq!(creates(&id, since), 1);
    assert_eq!(host.show("ActiveState"), "active", "{}", host.story());
    assert_eq!(host.show("NRestarts"), "0", "{}", host.story());

    // Stopped as an operator would: the run's secrets folder is gone with
    // the RuntimeDirectory=.
    let stop = host.systemctl(&["stop", "vault-dispatch.service"]);
    assert_eq!(
        stop.code,
        Some(0),
        "systemctl stop: {stop:?}{}",
        host.story()
    );
    assert_eq!(host.show("ActiveState"), "inactive");
    assert_eq!(host.show("Result"), "success", "{}", host.story());
    for (m, _) in &host.host_mounts {
        let left: Vec<_> = std::fs::read_dir(m)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", m.display());
    }

    // The operator's view: `journalctl -u vault-dispatch` has the runner's
    // masked output, never the value.
    let journal = host.journal();
    assert!(journal.contains("token=***"), "journal: {journal}");
    assert!(!journal.contains("Permission denied"), "journal: {journal}");
    let result_file = repo
        .show(&format!("vault/actions/{id}.result.json"))
        .unwrap();
    let console = std::fs::read_to_string(bench.join("console")).unwrap_or_default();
    let unshare_log = std::fs::read_to_string(bench.join("unshare.log")).unwrap_or_default();
    for text in [&journal, &result_file, &console, &unshare_log] {
        assert!(!text.contains(&canary), "the secret leaked: {text}");
    }
}

/// A crontab: its `NAME=value` lines and its entries' commands, read as
/// cron reads them.
struct Crontab {
    vars: Vec<(String, String)>,
    commands: Vec<String>,
}

impl Crontab {
    fn parse(text: &str) -> Crontab {
        let mut vars = Vec::new();
        let mut commands = Vec::new();
        for line in text.lines() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let is_entry = t.starts_with(|c: char| c.is_ascii_digit() || c == '*' || c == '@');
            if !is_entry {
                let (k, v) = t
                    .split_once('=')
                    .unwrap_or_else(|| panic!("neither an entry nor a setting: {line}"));
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                vars.push((k.trim().to_string(), v.to_string()));
                continue;
            }
            // Five time fields (or one @keyword), then the command.
            let fields = if t.starts_with('@') { 1 } else { 5 };
            let mut rest = t;
            for _ in 0..fields {
                let end = rest
                    .find(char::is_whitespace)
                    .unwrap_or_else(|| panic!("no command: {line}"));
                rest = rest[end..].trim_start();
            }
            // cron: the first unescaped % ends the command (the rest is its
            // stdin); \% is a literal %.
            let mut cmd = String::new();
            let mut chars = rest.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'%') => {
                        cmd.push('%');
                        chars.next();
                    }
                    '%' => panic!("the shipped crontab line must not feed stdin: {line}"),
                    c => cmd.push(c),
                }
            }
            commands.push(cmd);
        }
        Crontab { vars, commands }
    }
}

#[test]
fn crontab_line_runs_the_action_in_crons_environment() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let crontab = Crontab::parse(&shipped("deploy/crontab.example"));
    assert_eq!(
        crontab.commands.len(),
        1,
        "one entry: {:?}",
        crontab.commands
    );
    let prefix = TempDir::new().unwrap();
    let p = prefix.path();
    // The test's prefix stands in for the host's install folders: every
    // mention of them in the crontab is pointed there instead.
    let relocations = [
        ("/usr/local/bin", p.join("usr/local/bin")),
        ("/etc/vault-dispatch/", p.join("etc/vault-dispatch/")),
        ("/var/log/", p.join("var/log/")),
    ];
    let relocate = |s: &str| {
        relocations.iter().fold(s.to_string(), |acc, (from, to)| {
            acc.replace(from, &to.to_string_lossy())
        })
    };
    let command = &crontab.commands[0];
    assert_eq!(
        command.matches("/etc/vault-dispatch/env").count(),
        1,
        "the crontab line must read /etc/vault-dispatch/env: {command}"
    );
    std::fs::create_dir_all(p.join("var/log")).unwrap();
    install_tools(&p.join("usr/local/bin"), &TOOLS);

    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("cron"));
    secrets.add("TOKEN", canary.as_bytes());
    let id = unique("cron");
    let since = now_s();
    repo.land_action(
        &id,
        &action(
            &id,
            &["TOKEN"],
            "t=$(cat /run/secrets/TOKEN) && echo token=$t",
        ),
    );
    // The cache and mount root are the test's own (the env.example ones are
    // shared by every deployment of this host).
    let cache = p.join("cache");
    let mounts = p.join("mounts");
    let (identity, store) = (
        secrets.identity.to_string_lossy().into_owned(),
        secrets.store().to_string_lossy().into_owned(),
    );
    let env_text = env_from_example(&[
        ("VAULT_REPO", repo.url.as_str()),
        ("VAULT_IDENTITY", identity.as_str()),
        ("VAULT_SECRETS", store.as_str()),
        ("VAULT_RUNNER_IMAGE", tb.image.as_str()),
        ("VAULT_ALLOW_IMAGES", tb.image.as_str()),
        ("VAULT_DISPATCHER_ID", "cron-host"),
        ("VAULT_TIMEOUT_S", "60"),
        ("VAULT_CACHE", &cache.to_string_lossy()),
        ("VAULT_MOUNT_ROOT", &mounts.to_string_lossy()),
    ]);
    write_mode(
        &p.join("etc/vault-dispatch/env"),
        env_text.as_bytes(),
        0o600,
    );

    // cron's environment: SHELL, PATH, HOME and LOGNAME of the user, then
    // the crontab's own settings; the command runs as `$SHELL -c` in HOME.
    let home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 5 && f[2] == "0").then(|| f[5].to_string())
        })
        .unwrap();
    let mut env: BTreeMap<String, String> = [
        ("SHELL", "/bin/sh".to_string()),
        ("PATH", "/usr/bin:/bin".to_string()),
        ("HOME", home.clone()),
        ("LOGNAME", "root".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in &crontab.vars {
        env.insert(k.clone(), relocate(v));
    }
    let job = || {
        run(Command::new("env")
            .arg("-i")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(&env["SHELL"])
            .arg("-c")
            .arg(relocate(command))
            .current_dir(&home))
    };

    let out = job();
    let log = std::fs::read_to_string(p.join("var/log/vault-dispatch.log")).unwrap_or_default();
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{log}");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "cron would mail this: {out:?}"
    );
    let result = repo.result(&id).expect("result recorded");
    assert_eq!(result["status"], "succeeded", "{result}\nlog:\n{log}");
    assert_eq!(result["dispatcher"], "cron-host");
    let logs = result["logs"].as_str().unwrap();
    assert!(logs.contains("token=***"), "{logs}");
    assert!(
        log.contains("token=***"),
        "the log has the masked stream: {log}"
    );
    assert_eq!(creates(&id, since), 1);
    assert_eq!(container_state(&id), None);
    let result_file = repo
        .show(&format!("vault/actions/{id}.result.json"))
        .unwrap();
    for text in [&log, &result_file, &out.stdout, &out.stderr] {
        assert!(!text.contains(&canary), "the secret leaked: {text}");
    }
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .all(|l| !l.contains(&*mounts.to_string_lossy())),
        "a secrets mount was left"
    );
    // The cache is root's alone (umask 077).
    let mode = std::fs::metadata(cache.join("ledger"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ledger/ mode {mode:o}");

    // The next minute: nothing to do, nothing new.
    let head = repo.head();
    let out = job();
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(repo.head(), head);
    assert_eq!(creates(&id, since), 1);
}

/// `NAME`s of `[env: NAME=...]` in a tool's --help.
fn help_env_names(tool: &str) -> Vec<String> {
    let out = run(Command::new(bin(tool)).arg("--help"));
    out.success();
    out.stdout
        .split("[env: ")
        .skip(1)
        .map(|s| s.split('=').next().unwrap().to_string())
        .collect()
}

#[test]
fn env_example_documents_every_variable_and_systemd_sh_and_compose_read_it_alike() {
    let example = shipped("deploy/env.example");
    // The format all three read alike.
    let forbidden = [
        ' ', '\t', '"', '\'', '$', '`', '\\', ';', '&', '|', '<', '>', '(', ')',
    ];
    let mut documented = BTreeSet::new();
    for line in example.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some((k, v)) = setting(line, true) {
            assert!(
                !v.contains(forbidden) && !v.is_empty(),
                "a value all three parsers read alike has none of {forbidden:?} and is not empty: {line}"
            );
            assert!(documented.insert(k.to_string()), "{k} twice");
        } else {
            assert!(
                line.starts_with('#'),
                "neither a comment nor KEY=value: {line:?}"
            );
            assert!(
                !line
                    .trim_start_matches('#')
                    .trim_start()
                    .starts_with("export "),
                "{line}"
            );
        }
    }
    // Every variable a tool, dispatcher.sh or a library reads.
    let mut needed: BTreeSet<String> = TOOLS.iter().flat_map(|t| help_env_names(t)).collect();
    let script = std::fs::read_to_string(dispatcher_sh()).unwrap();
    needed.extend(
        script
            .split("${")
            .skip(1)
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect::<String>()
            })
            .filter(|n| n.starts_with("VAULT_")),
    );
    needed.extend(["DOCKER_HOST", "SSL_CERT_FILE", "SSL_CERT_DIR"].map(String::from));
    // Set by secret-mount for run-action: named, never a setting.
    assert!(needed.remove("VAULT_SECRETS_DIR"));
    assert!(example.contains("# VAULT_SECRETS_DIR is set by secret-mount"));
    let undocumented: Vec<_> = needed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in deploy/env.example: {undocumented:?}"
    );

    // Every setting on, read by each of the three.
    let all_on: String = example
        .lines()
        .map(|l| match setting(l, true) {
            Some((k, v)) => format!("{k}={v}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let expected = env_map(&all_on);
    assert_eq!(expected.len(), documented.len());
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("env");
    std::fs::write(&file, &all_on).unwrap();
    let keep = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .filter(|(k, _)| expected.contains_key(k))
            .collect()
    };

    // cron: POSIX sh, `set -a; . FILE; set +a`.
    let sh = run(Command::new("env")
        .args(["-i", "/bin/sh", "-c", "set -a; . \"$0\"; set +a; env"])
        .arg(&file));
    sh.success();
    assert_eq!(keep(env_map(&sh.stdout)), expected, "sh: {}", sh.stderr);

    // systemd: EnvironmentFile='s parser (systemd's load_env_file, which the
    // environment.d generator uses too; it prints what it read, and warns
    // about every line it ignores, e.g. `invalid variable name "export X"`).
    std::fs::create_dir_all(dir.path().join("environment.d")).unwrap();
    std::fs::copy(&file, dir.path().join("environment.d/50-vault.conf")).unwrap();
    let generator = first_existing(&[
        "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
        "/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
    ]);
    let sd = run(Command::new("env")
        .arg("-i")
        .arg(format!("XDG_CONFIG_HOME={}", dir.path().display()))
        .arg(&generator));
    sd.success();
    assert!(sd.stderr.is_empty(), "systemd ignored lines: {}", sd.stderr);
    // It prints them for a shell: a value with a shell-special character
    // (`*` here) comes double-quoted, `\` escaping `"` `\` `$` and `` ` ``.
    let unquote = |v: String| match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap() } else { c });
            }
            out
        }
        None => v,
    };
    let from_systemd = env_map(&sd.stdout)
        .into_iter()
        .map(|(k, v)| (k, unquote(v)))
        .collect();
    assert_eq!(keep(from_systemd), expected, "systemd");

    // compose: env_file: (docker-compose 1.29, as the compose deployment).
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok(),
        "docker-compose not found: `apt-get install docker-compose`"
    );
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(
        &compose,
        format!(
            "version: \"3.7\"\nservices:\n  x:\n    image: busybox\n    env_file: {}\n",
            file.display()
        ),
    )
    .unwrap();
    let config = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .arg("config"));
    config.success();
    let json = run_with(
        Command::new("python3").args([
            "-c",
            "import json, sys, yaml; e = yaml.safe_load(sys.stdin)['services']['x']['environment']; \
             print(json.dumps({k: str(v) for k, v in e.items()}))",
        ]),
        config.stdout.as_bytes(),
        Duration::from_secs(60),
    );
    json.success();
    let from_compose: BTreeMap<String, String> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(keep(from_compose), expected, "compose");

    // The unit and the crontab read this very file.
    let unit = Unit::parse(&shipped("deploy/vault-dispatch.service"));
    assert_eq!(
        unit.one("Service", "EnvironmentFile"),
        "/etc/vault-dispatch/env"
    );
    assert!(shipped("deploy/crontab.example").contains(". /etc/vault-dispatch/env;"));
}

#[test]
fn dispatcher_sh_and_the_tools_default_to_the_same_cache() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let t = TempDir::new().unwrap();
    let xdg = t.path().join("xdg");
    let home = t.path().join("home");
    let (xdg, home) = (xdg.to_string_lossy(), home.to_string_lossy());
    // (XDG_CACHE_HOME, HOME) -> the cache both must use. Empty is unset.
    let cases: [(Option<&str>, Option<&str>, String); 5] = [
        (Some(&xdg), Some(&home), format!("{xdg}/vault-dispatch")),
        (
            Some(""),
            Some(&home),
            format!("{home}/.cache/vault-dispatch"),
        ),
        (None, Some(&home), format!("{home}/.cache/vault-dispatch")),
        (None, None, "/var/cache/vault-dispatch".into()),
        (Some(""), Some(""), "/var/cache/vault-dispatch".into()),
    ];
    for (x, h, want) in cases {
        // A private /var/cache, so that the last cases touch nothing of the
        // host's.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /var/cache && \
                 sh \"$0\" --help | sed -n 's/^Cache: \\(.*\\) (default; VAULT_CACHE unset)$/\\1/p' && \
                 vault-scan >/dev/null && ls -d /var/cache/vault-dispatch/repos \"$1\"/repos 2>/dev/null",
            )
            .arg(dispatcher_sh())
            .arg(&want)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir().display()))
            .env("VAULT_REPO", &repo.bare)
            .env("VAULT_DISPATCHER_ID", "cache-check");
        if let Some(x) = x {
            c.env("XDG_CACHE_HOME", x);
        }
        if let Some(h) = h {
            c.env("HOME", h);
        }
        let out = run(&mut c);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(want.as_str()),
            "dispatcher.sh's default, XDG_CACHE_HOME={x:?} HOME={h:?}: {out:?}"
        );
        assert!(
            lines[1..].iter().all(|l| *l == format!("{want}/repos")) && lines.len() >= 2,
            "vault-scan's cache, XDG_CACHE_HOME={x:?} HOME={h:?}: {out:?}"
        );
    }
}

#[test]
fn dispatcher_sh_names_its_tools_and_a_missing_one_stops_it_before_any_claim() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let id = unique("missing-tool");
    repo.land_action(&id, &action(&id, &[], "true"));
    let head = repo.head();
    let t = TempDir::new().unwrap();
    let full = t.path().join("full");
    let partial = t.path().join("partial");
    install_tools(&full, &TOOLS);
    install_tools(&partial, &["vault-scan", "secret-mount", "result-write"]);
    let cache = t.path().join("cache");
    let dispatcher = |bin_dir: Option<&Path>, path: &str, args: &[&str]| {
        let mut c = Command::new("/bin/sh");
        c.arg(dispatcher_sh())
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("VAULT_REPO", &repo.url)
            .env("VAULT_CACHE", &cache)
            .env("VAULT_DISPATCHER_ID", "missing-tool-host");
        if let Some(d) = bin_dir {
            c.env("VAULT_BIN_DIR", d);
        }
        run(&mut c)
    };

    // --help resolves each tool now, from VAULT_BIN_DIR or PATH.
    let help = dispatcher(Some(&full), "/usr/bin:/bin", &["--help"]);
    help.success();
    assert!(help
        .stdout
        .contains(&format!("Tools, from VAULT_BIN_DIR={}:", full.display())));
    for tool in TOOLS {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [tool, &*full.join(tool).to_string_lossy()]),
            "{tool}: {}",
            help.stdout
        );
    }
    let path = format!("{}:/usr/bin:/bin", partial.display());
    let help = dispatcher(None, &path, &["--help"]);
    help.success();
    assert!(
        help.stdout.contains(&format!("Tools, from PATH={path}:")),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["run-action", "missing"]),
        "{}",
        help.stdout
    );
    assert!(help
        .stdout
        .contains(&format!("vault-scan    {}/vault-scan", partial.display())));

    // A missing tool: one line, exit 1, nothing touched (no cache, no
    // claim), from VAULT_BIN_DIR or PATH, once or looping.
    for (bin_dir, path, args) in [
        (
            Some(partial.as_path()),
            "/usr/bin:/bin".to_string(),
            vec!["--once"],
        ),
        (
            None,
            format!("{}:/usr/bin:/bin", partial.display()),
            vec!["--once"],
        ),
        (Some(partial.as_path()), "/usr/bin:/bin".to_string(), vec![]),
    ] {
        let out = dispatcher(bin_dir, &path, &args);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {out:?}");
        assert!(
            lines[0].starts_with("dispatcher.sh: cannot run: not found: run-action (looked in "),
            "{out:?}"
        );
        let looked = match bin_dir {
            Some(d) => format!("VAULT_BIN_DIR={}", d.display()),
            None => format!("PATH={path}"),
        };
        assert!(lines[0].contains(&looked), "{out:?}");
        assert!(!cache.exists(), "the cache was touched");
        assert_eq!(repo.head(), head, "something was claimed");
    }
}

#[test]
fn demo_runs_as_root_as_is_and_tells_anyone_else_in_one_line() {
    // A fresh Debian machine used as root has no sudo.
    let demo = shipped("scripts/demo.sh");
    assert!(
        !demo
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("sudo ")),
        "scripts/demo.sh must not call sudo"
    );
    // Not root: one line, before anything is installed or built.
    let t = TempDir::new().unwrap();
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "bash",
        ])
        .arg(root().join("scripts/demo.sh"))
        .env("VAULT_DEMO_DIR", t.path().join("demo")));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("as root"), "{out:?}");
    assert!(!t.path().join("demo").exists());
}

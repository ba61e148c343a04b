//! A code checkout over ssh never uses the dispatcher's ssh-agent: a real
//! `sshd` on 127.0.0.1 (vault_testkit::SshGit) and a real `ssh-agent`
//! holding the one key the server accepts. With the agent allowed (the ops
//! repo's credentials) the fetch works; with `without_agent` and no key it
//! fails with a clear error. (A file of its own: it sets HOME and
//! SSH_AUTH_SOCK for its whole process.)

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;
use vault_git::code::{Limits, Oid, Workspace};
use vault_git::{Credentials, RepoUrl};
use vault_testkit::{git, SshGit, TempDir};

/// An `ssh-agent` of the test's own, killed (by its pid) when dropped.
struct Agent {
    pid: i32,
    sock: std::path::PathBuf,
    _dir: TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = TempDir::new().unwrap();
        let sock = dir.path().join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&sock)
            .arg("-s")
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-agent: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split(';')
            .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
            .unwrap()
            .parse()
            .unwrap();
        Agent {
            pid,
            sock,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

#[test]
fn a_checkout_over_ssh_without_a_key_never_uses_the_agent() {
    let server = SshGit::start();
    // HOME before any libgit2 call (it reads it once). The only test of
    // this process: nothing else reads HOME or SSH_AUTH_SOCK meanwhile.
    let home = TempDir::new().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/known_hosts"),
        format!("{}\n", server.known_hosts_line),
    )
    .unwrap();
    std::env::set_var("HOME", home.path());
    let bare = server.base.path().join("code.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let work = TempDir::new().unwrap();
    git(work.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(work.path().join("VERSION"), "1\n").unwrap();
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "--no-gpg-sign", "-m", "one"]);
    git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    let commit = Oid::from_str(&git(work.path(), &["rev-parse", "HEAD"])).unwrap();

    let agent = Agent::start();
    let added = Command::new("ssh-add")
        .arg(&server.client_key)
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "ssh-add: {added:?}");
    std::env::set_var("SSH_AUTH_SOCK", &agent.sock);

    let url = RepoUrl::parse(&server.url(&bare)).unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(30),
    };
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("ws");

    // No key, no agent: refused, with the reason, nothing left.
    let e = Workspace::fetch(
        &dir,
        &url,
        &Credentials::none().without_agent(),
        commit,
        limits,
    )
    .err()
    .expect("the agent's key must not be used");
    let text = e.to_string();
    assert!(
        text.contains("none is configured for this repo (the ssh-agent is never used for it)"),
        "{text}"
    );
    assert!(!dir.exists());

    // The control: the same fetch with the agent allowed gets in.
    let ws = Workspace::fetch(&dir, &url, &Credentials::none(), commit, limits).unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.work_dir().join("VERSION")).unwrap(),
        "1\n"
    );

    // With the key itself (a rule's ssh_key), no agent needed.
    let dir2 = tmp.path().join("ws2");
    let keyed = Credentials::load(Some(&server.client_key), None)
        .unwrap()
        .without_agent();
    Workspace::fetch(&dir2, &url, &keyed, commit, limits).unwrap();
}

//! vault-scan and result-write against an ssh remote: a real `sshd` on
//! 127.0.0.1 (vault_testkit::SshGit), public-key login with `--ssh-key`,
//! and the server's host key checked against `~/.ssh/known_hosts` of the
//! user the tools run as (HOME points at a test's own folder).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use vault_testkit::{repo_tool, run, ssh_keygen, OpsRepo, Output, SshGit, TempDir};

const ACTION: &str = r#"{"id":"deploy","secrets":[],"command":["true"]}"#;

/// A served ops repo with `deploy` landed, and a HOME for the tools.
struct Site {
    server: SshGit,
    repo: OpsRepo,
    home: TempDir,
    cache: TempDir,
}

impl Site {
    /// `known`: whether HOME's known_hosts holds the server's host key.
    fn new(known: bool) -> Site {
        let server = SshGit::start();
        let base = server.base.path();
        let repo = OpsRepo::new_in(base, &base.display().to_string());
        repo.land_action("deploy", ACTION);
        let home = TempDir::new().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        if known {
            std::fs::write(
                home.path().join(".ssh/known_hosts"),
                format!("{}\n", server.known_hosts_line),
            )
            .unwrap();
        }
        Site {
            server,
            repo,
            home,
            cache: TempDir::new().unwrap(),
        }
    }

    fn run(&self, tool: &str, key: &Path, args: &[&str], stdin: &str) -> Output {
        let url = self.server.url(&self.repo.bare);
        run(
            repo_tool(tool, &url, "ssh-test", self.cache.path())
                .arg("--ssh-key")
                .arg(key)
                .args(args)
                .env("HOME", self.home.path())
                .env_remove("SSH_AUTH_SOCK"),
            stdin.as_bytes(),
        )
    }
}

#[test]
fn scan_and_record_over_ssh_with_a_key_and_a_known_host() {
    let site = Site::new(true);
    let key = &site.server.client_key;

    let scan = site.run("vault-scan", key, &[], "");
    scan.success();
    let lines = scan.lines();
    assert_eq!(lines.len(), 1, "one pending action: {}", scan.stdout);
    assert_eq!(lines[0]["id"], "deploy");
    assert_eq!(lines[0]["commit"], site.repo.head().as_str());

    let line = scan.stdout.lines().next().unwrap().to_string();
    let claim = site.run("result-write", key, &["--claim"], &line);
    claim.success();
    let recorded = site
        .repo
        .result("deploy")
        .expect("the claim is on the branch");
    assert_eq!(recorded["status"], "running");
    assert_eq!(recorded["dispatcher"], "ssh-test");
    assert_eq!(claim.lines()[0]["commit"], site.repo.head().as_str());

    // The next scan sees the claim over ssh: our own running claim is
    // listed for resuming.
    let again = site.run("vault-scan", key, &[], "");
    again.success();
    let lines = again.lines();
    assert_eq!(lines.len(), 1, "{}", again.stdout);
    assert_eq!(lines[0]["id"], "deploy");
    assert_eq!(lines[0]["resume"], true);
}

#[test]
fn an_unknown_host_key_is_refused() {
    let site = Site::new(false);
    let scan = site.run("vault-scan", &site.server.client_key, &[], "");
    scan.fails_with_code(1);
    assert!(scan.stdout.is_empty(), "nothing listed: {}", scan.stdout);
    assert!(
        scan.stderr.contains("ssh host key of ssh://root@127.0.0.1")
            && scan.stderr.contains("known_hosts"),
        "says why: {}",
        scan.stderr
    );
    assert_eq!(scan.stderr.trim().lines().count(), 1, "{}", scan.stderr);
}

#[test]
fn a_key_the_server_does_not_accept_is_an_authentication_failure() {
    let site = Site::new(true);
    let other = site.home.path().join("other-key");
    ssh_keygen(&other, "");

    let scan = site.run("vault-scan", &other, &[], "");
    scan.fails_with_code(1);
    assert!(scan.stdout.is_empty(), "nothing listed: {}", scan.stdout);
    assert!(
        scan.stderr.contains("authentication to ssh://"),
        "says why: {}",
        scan.stderr
    );
    let claim = site.run(
        "result-write",
        &other,
        &[],
        r#"{"schema":1,"id":"deploy","status":"failed","exit_code":1}"#,
    );
    claim.fails_with_code(1);
    assert!(site.repo.result("deploy").is_none(), "nothing was written");
}

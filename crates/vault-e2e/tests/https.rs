//! vault-scan and result-write against an https remote with a token: a real
//! TLS server on 127.0.0.1 (`git http-backend` behind basic auth, see
//! vault_testkit::HttpsGit) with a self-signed certificate.
//!
//! The tools put off reading the CA bundle until an https remote needs it
//! (vault_git::defer_ca_bundle); these tests show that a certificate the
//! user trusts through `SSL_CERT_FILE` is still used, that one nobody
//! trusts is still refused, and that the token works and is never shown.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use vault_testkit::{repo_tool, run, HttpsGit, OpsRepo, Output, TempDir};

const TOKEN: &str = "tok-3f9a1c77e2d04b6b";
const ACTION: &str = r#"{"id":"deploy","secrets":[],"command":["true"]}"#;

/// How a test's tools reach the server.
struct Remote<'a> {
    server: &'a HttpsGit,
    /// The repo's name under the server's root, e.g. `ops-1.git`.
    name: String,
    /// The only CA bundle the tools may use (None: the system's).
    ca: Option<&'a Path>,
    token_file: &'a Path,
    cache: &'a Path,
}

impl Remote<'_> {
    fn run(&self, tool: &str, args: &[&str], stdin: &str) -> Output {
        let url = format!("{}/{}", self.server.url(), self.name);
        let mut cmd = repo_tool(tool, &url, "https-test", self.cache);
        cmd.arg("--token-file")
            .arg(self.token_file)
            .args(args)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(ca) = self.ca {
            cmd.env("SSL_CERT_FILE", ca)
                .env("SSL_CERT_DIR", self.server.base.path().join("no-such-dir"));
        }
        let out = run(&mut cmd, stdin.as_bytes());
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(TOKEN), "the token was shown: {text}");
        }
        out
    }
}

/// A served ops repo with `deploy` landed.
fn served_repo(server: &HttpsGit) -> (OpsRepo, String) {
    let base = server.base.path();
    let repo = OpsRepo::new_in(base, &base.display().to_string());
    repo.land_action("deploy", ACTION);
    let name = repo.bare.file_name().unwrap().to_str().unwrap().to_string();
    (repo, name)
}

#[test]
fn scan_and_record_over_https_with_a_token_and_a_trusted_certificate() {
    let server = HttpsGit::start(TOKEN);
    let (repo, name) = served_repo(&server);
    let cache = TempDir::new().unwrap();
    let remote = Remote {
        server: &server,
        name,
        ca: Some(&server.ca),
        token_file: &server.token_file,
        cache: cache.path(),
    };

    let scan = remote.run("vault-scan", &[], "");
    scan.success();
    let lines = scan.lines();
    assert_eq!(lines.len(), 1, "one pending action: {}", scan.stdout);
    assert_eq!(lines[0]["id"], "deploy");
    assert_eq!(lines[0]["commit"], repo.head().as_str());

    let line = scan.stdout.lines().next().unwrap().to_string();
    let claim = remote.run("result-write", &["--claim"], &line);
    claim.success();
    let recorded = repo.result("deploy").expect("the claim is on the branch");
    assert_eq!(recorded["status"], "running");
    assert_eq!(recorded["dispatcher"], "https-test");
    assert_eq!(claim.lines()[0]["commit"], repo.head().as_str());

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /") && r.ends_with("git-receive-pack 200")),
        "the claim went through the server's receive-pack: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.ends_with(" 401")),
        "the server asked for the token: {requests:?}"
    );
}

#[test]
fn a_certificate_nobody_trusts_is_refused() {
    let server = HttpsGit::start(TOKEN);
    let (_repo, name) = served_repo(&server);
    let cache = TempDir::new().unwrap();
    let remote = Remote {
        server: &server,
        name,
        ca: None,
        token_file: &server.token_file,
        cache: cache.path(),
    };

    let scan = remote.run("vault-scan", &[], "");
    scan.fails_with_code(1);
    assert!(scan.stdout.is_empty(), "nothing listed: {}", scan.stdout);
    assert!(
        scan.stderr.contains("TLS certificate of https://127.0.0.1")
            && scan.stderr.contains("not trusted"),
        "says why: {}",
        scan.stderr
    );
    assert_eq!(scan.stderr.trim().lines().count(), 1, "{}", scan.stderr);
    assert!(
        server.requests().is_empty(),
        "no request was sent over the untrusted connection: {:?}",
        server.requests()
    );
}

#[test]
fn a_wrong_token_is_an_authentication_failure() {
    let server = HttpsGit::start(TOKEN);
    let (repo, name) = served_repo(&server);
    let cache = TempDir::new().unwrap();
    let wrong = cache.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let remote = Remote {
        server: &server,
        name,
        ca: Some(&server.ca),
        token_file: &wrong,
        cache: cache.path(),
    };

    let scan = remote.run("vault-scan", &[], "");
    scan.fails_with_code(1);
    assert!(
        scan.stderr.contains("authentication") && scan.stderr.contains("token was refused"),
        "says why: {}",
        scan.stderr
    );
    assert!(!scan.stderr.contains("not-the-token"), "{}", scan.stderr);
    assert!(repo.result("deploy").is_none());
}

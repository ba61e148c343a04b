//! Approvals you can verify (issue 13), on the real testbed: the whole
//! pipeline (dispatcher.sh and the four tools), ssh keys from `ssh-keygen`,
//! commits signed by `git` itself (`gpg.format=ssh`).
//!
//! * Signed approvals: each rejection reason, a signed approval that runs
//!   and names its principal; every verdict equals `git verify-commit`'s.
//! * Signed results: a forged result landed beside an action is replaced by
//!   the real one, the action runs once, and the dispatcher's commits pass
//!   `git verify-commit`.
//! * The per-secret policy: deny by default, each rule, approvers, and a
//!   policy file that does not parse.
//! * Expiry: `VAULT_APPROVAL_TTL_S` and `not_after`, both ways.
//!
//! Starts are counted from `docker events`, not from what the tools say.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use vault_e2e::*;
use vault_testkit::{git, ssh_keygen, unique, How, OpsRepo, SecretStore, TempDir, Testbed};

/// Keys and an allowed-signers file in one temporary folder.
struct Keys {
    dir: TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: TempDir::new().unwrap(),
        }
    }

    /// A new ed25519 key named `name`; its private key file.
    fn key(&self, name: &str) -> PathBuf {
        ssh_keygen(&self.dir.path().join(name), "")
    }

    fn public(&self, name: &str) -> String {
        let p = self.dir.path().join(format!("{name}.pub"));
        let text = std::fs::read_to_string(p).unwrap();
        let mut f = text.split_whitespace();
        format!("{} {}", f.next().unwrap(), f.next().unwrap())
    }

    /// `ssh-keygen -lf`'s `SHA256:…` for key `name`.
    fn fingerprint(&self, name: &str) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join(format!("{name}.pub")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// Write an allowed-signers file: (principal, options, key name) lines.
    fn signers(&self, file: &str, lines: &[(&str, &str, &str)]) -> PathBuf {
        let mut text = String::from("# who may approve\n");
        for (who, opts, key) in lines {
            let sep = if opts.is_empty() { "" } else { " " };
            text.push_str(&format!("{who} {opts}{sep}{}\n", self.public(key)));
        }
        let p = self.dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `git verify-commit` of `sha` in the bare repo with `signers`: accepted?
fn git_verifies(repo: &OpsRepo, signers: &Path, sha: &str) -> bool {
    Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args(["verify-commit", sha])
        .output()
        .unwrap()
        .status
        .success()
}

fn act(id: &str, extra: serde_json::Value) -> String {
    let mut a: serde_json::Value = serde_json::from_str(&action(id, &[], "echo ran")).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a.to_string()
}

fn land(repo: &OpsRepo, id: &str, json: &str, how: How<'_>) -> String {
    let path = format!("vault/actions/{id}.json");
    repo.commit_with(
        &[(&path, Some(json.as_bytes()))],
        &format!("approve {id}"),
        &how,
    )
}

fn result_of(id: &str) -> String {
    format!("vault/actions/{id}.result.json")
}

fn status_and_error(repo: &OpsRepo, id: &str) -> (String, String) {
    let r = repo.result(id).unwrap_or_else(|| panic!("{id}: no result"));
    (
        r["status"].as_str().unwrap().to_string(),
        r["error"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn signed_approvals_run_and_every_other_is_rejected_as_git_would() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let keys = Keys::new();
    let alice = keys.key("alice");
    let mallory = keys.key("mallory");
    let old = keys.key("old");
    let files = keys.key("files");
    let signers = keys.signers(
        "allowed_signers",
        &[
            ("alice@example.com", "namespaces=\"git\"", "alice"),
            ("old@example.com", "valid-before=\"20200101\"", "old"),
            ("files@example.com", "namespaces=\"file\"", "files"),
        ],
    );
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env.push((
        "VAULT_ALLOWED_SIGNERS".into(),
        signers.display().to_string(),
    ));
    let since = now_s();

    let ok = unique("signed");
    let by_alice = How {
        key: Some(&alice),
        merge: true,
        ..How::default()
    };
    let ok_commit = land(&repo, &ok, &act(&ok, serde_json::json!({})), by_alice);
    let unsigned = unique("unsigned");
    let unsigned_commit = land(
        &repo,
        &unsigned,
        &act(&unsigned, serde_json::json!({})),
        How::default(),
    );
    let stranger = unique("stranger");
    let stranger_commit = land(
        &repo,
        &stranger,
        &act(&stranger, serde_json::json!({})),
        How {
            key: Some(&mallory),
            ..How::default()
        },
    );
    let expired = unique("expired");
    let expired_commit = land(
        &repo,
        &expired,
        &act(&expired, serde_json::json!({})),
        How {
            key: Some(&old),
            ..How::default()
        },
    );
    let wrong_ns = unique("namespace");
    let wrong_ns_commit = land(
        &repo,
        &wrong_ns,
        &act(&wrong_ns, serde_json::json!({})),
        How {
            key: Some(&files),
            ..How::default()
        },
    );
    // Tampered: alice's signed commit with its message changed afterwards
    // (the signature no longer covers the content), pushed as is.
    let tampered = unique("tampered");
    let signed = land(
        &repo,
        &tampered,
        &act(&tampered, serde_json::json!({})),
        by_alice,
    );
    let raw = git(&repo.bare, &["cat-file", "commit", &signed]);
    let forged = raw.replace(
        &format!("approve {tampered}"),
        &format!("approve {tampered} (edited)"),
    );
    assert_ne!(raw, forged);
    let tampered_commit = hash_commit(&repo, &forged);
    // In place of the signed one (nothing has scanned it yet).
    git(
        &repo.bare,
        &["update-ref", "refs/heads/main", &tampered_commit, &signed],
    );

    // The verdicts git itself gives, for the record.
    let cases = [
        (&ok, &ok_commit, true),
        (&unsigned, &unsigned_commit, false),
        (&stranger, &stranger_commit, false),
        (&expired, &expired_commit, false),
        (&wrong_ns, &wrong_ns_commit, false),
        (&tampered, &tampered_commit, false),
    ];
    for (id, sha, accepted) in &cases {
        assert_eq!(
            git_verifies(&repo, &signers, sha),
            *accepted,
            "{id}: git verify-commit"
        );
    }

    let out = site.once();
    out.success();
    let r = repo.result(&ok).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["approval"]["commit"], ok_commit.as_str(), "{r}");
    assert_eq!(r["approval"]["principal"], "alice@example.com", "{r}");
    assert_eq!(
        r["approval"]["fingerprint"],
        keys.fingerprint("alice").as_str(),
        "{r}"
    );
    assert_eq!(creates(&ok, since), 1);

    for (id, want) in [
        (&unsigned, "unsigned"),
        (&stranger, "unknown key"),
        (&expired, "not valid"),
        (&wrong_ns, "namespace"),
        (&tampered, "bad signature"),
    ] {
        let (status, error) = status_and_error(&repo, id);
        assert_eq!(status, "rejected", "{id}: {error}");
        assert!(
            error.contains("not approved") && error.contains(want),
            "{id}: {error}"
        );
        assert_eq!(creates(id, since), 0, "{id} never started");
    }
}

/// Write a commit object as is; its sha.
fn hash_commit(repo: &OpsRepo, content: &str) -> String {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(content.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_forged_result_is_replaced_by_the_real_one_and_the_action_runs_once() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let keys = Keys::new();
    let dispatcher = keys.key("dispatcher");
    let dispatchers = keys.signers("dispatchers", &[("host-a", "", "dispatcher")]);
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env.extend([
        ("VAULT_SIGNING_KEY".into(), dispatcher.display().to_string()),
        (
            "VAULT_DISPATCHER_SIGNERS".into(),
            dispatchers.display().to_string(),
        ),
    ]);
    let since = now_s();
    let id = unique("forged");
    // The agent lands its action with a made-up outcome beside it.
    let fake = format!(
        r#"{{"schema":1,"id":"{id}","status":"succeeded","dispatcher":"host-a","exit_code":0}}"#
    );
    repo.commit(
        &[
            (
                &format!("vault/actions/{id}.json"),
                Some(act(&id, serde_json::json!({})).as_bytes()),
            ),
            (
                &format!("vault/actions/{id}.result.json"),
                Some(fake.as_bytes()),
            ),
        ],
        "approve with a forged result",
    );
    let out = site.once();
    out.success();
    assert!(
        out.stderr.contains("not signed by a listed dispatcher")
            && out.stderr.contains("counts as absent"),
        "{}",
        out.stderr
    );
    assert_eq!(creates(&id, since), 1, "the approved action ran once");
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(
        r["container"]["id"].is_string(),
        "the real result replaced the fake: {r}"
    );
    // Every commit the dispatcher made is signed, as git sees it.
    let head = repo.head();
    assert!(
        git_verifies(&repo, &dispatchers, &head),
        "the result commit verifies"
    );
    let claim = git(&repo.bare, &["rev-parse", &format!("{head}^")]);
    assert!(
        git_verifies(&repo, &dispatchers, &claim),
        "the claim commit verifies"
    );
    site.once().success();
    assert_eq!(repo.head(), head, "settled: a further pass changes nothing");
    assert_eq!(creates(&id, since), 1);

    // The same forged bytes at two more ids, in one unsigned commit: both
    // count as absent, both run once.
    let (y, z) = (unique("forged-y"), unique("forged-z"));
    let same = br#"{"schema":1,"id":"whatever","status":"succeeded"}"#;
    let (ay, az) = (
        act(&y, serde_json::json!({})),
        act(&z, serde_json::json!({})),
    );
    let (py, pz) = (
        format!("vault/actions/{y}.json"),
        format!("vault/actions/{z}.json"),
    );
    let (ry, rz) = (result_of(&y), result_of(&z));
    repo.commit(
        &[
            (&py, Some(ay.as_bytes())),
            (&pz, Some(az.as_bytes())),
            (&ry, Some(&same[..])),
            (&rz, Some(&same[..])),
        ],
        "two forged results, one blob",
    );
    site.once().success();
    for x in [&y, &z] {
        let (status, error) = status_and_error(&repo, x);
        assert_eq!(status, "succeeded", "{x}: {error}");
        assert_eq!(creates(x, since), 1, "{x}");
    }

    // A real result deleted by an unsigned commit: a fresh dispatcher (no
    // ledger, no history yet) still sees that it ran, and never runs it.
    let head = repo.commit(&[(&result_of(&y), None)], "delete a real result");
    let mut fresh = Site::new(&tb, &repo.url, &secrets, "host-c");
    fresh.extra_env = site.extra_env.clone();
    fresh.once().success();
    let (status, _) = status_and_error(&repo, &y);
    assert_eq!(status, "abandoned");
    assert_eq!(creates(&y, since), 1, "never started again");
    assert_ne!(repo.head(), head);

    // A forged outcome over the real one does not stand either: the id is
    // spent (it ran), so it is recorded abandoned, never run again.
    let fake2 = fake.replace("succeeded", "failed");
    repo.commit(
        &[(
            &format!("vault/actions/{id}.result.json"),
            Some(fake2.as_bytes()),
        )],
        "forge over the real result",
    );
    site.once().success();
    let (status, _) = status_and_error(&repo, &id);
    assert_eq!(status, "abandoned");
    assert!(git_verifies(&repo, &dispatchers, &repo.head()));
    assert_eq!(creates(&id, since), 1);
}

const POLICY: &str = r#"
[secrets.pay_token]
images = ["IMAGE"]
commands = [["sh", "-c", "echo ran"]]
max_timeout_s = 30
approvers = ["alice@example.com"]

[secrets.db_pass]
images = ["registry.example/other:*"]
commands = [["sh", "-c", "*"]]
"#;

#[test]
fn the_secret_policy_denies_by_default_and_names_the_rule() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    secrets.add("pay_token", b"s3cr3t-pay");
    secrets.add("db_pass", b"s3cr3t-db");
    secrets.add("other", b"s3cr3t-other");
    let keys = Keys::new();
    let alice = keys.key("alice");
    let bob = keys.key("bob");
    let signers = keys.signers(
        "allowed_signers",
        &[
            ("alice@example.com", "", "alice"),
            ("bob@example.com", "", "bob"),
        ],
    );
    let policy = keys.path("policy.toml");
    std::fs::write(&policy, POLICY.replace("IMAGE", &tb.image)).unwrap();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env.extend([
        (
            "VAULT_ALLOWED_SIGNERS".into(),
            signers.display().to_string(),
        ),
        ("VAULT_POLICY".into(), policy.display().to_string()),
    ]);
    let since = now_s();
    fn by(key: &Path) -> How<'_> {
        How {
            key: Some(key),
            merge: true,
            ..How::default()
        }
    }
    let cases = [
        (
            "ok",
            "pay_token",
            serde_json::json!({"timeout_s": 20}),
            &alice,
            None,
        ),
        (
            "approver",
            "pay_token",
            serde_json::json!({"timeout_s": 20}),
            &bob,
            Some("principal \"bob@example.com\" may not approve it"),
        ),
        (
            "unlisted",
            "other",
            serde_json::json!({}),
            &alice,
            Some("secret \"other\" is not listed"),
        ),
        (
            "image",
            "db_pass",
            serde_json::json!({}),
            &alice,
            Some("is not in its images"),
        ),
        (
            "timeout",
            "pay_token",
            serde_json::json!({"timeout_s": 31}),
            &alice,
            Some("over its max_timeout_s 30"),
        ),
        (
            "notimeout",
            "pay_token",
            serde_json::json!({}),
            &alice,
            Some("sets no timeout_s"),
        ),
        (
            "network",
            "pay_token",
            serde_json::json!({"timeout_s": 20, "network": "bridge"}),
            &alice,
            Some("network \"bridge\""),
        ),
        (
            "command",
            "pay_token",
            serde_json::json!({"timeout_s": 20, "command": ["sh", "-c", "echo other"]}),
            &alice,
            Some("command is not in its commands"),
        ),
    ];
    let mut ids = Vec::new();
    for (name, secret, extra, key, _) in &cases {
        let id = unique(name);
        let mut a: serde_json::Value =
            serde_json::from_str(&action(&id, &[secret], "echo ran")).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        land(&repo, &id, &a.to_string(), by(key));
        ids.push(id);
    }
    site.once().success();
    for ((name, _, _, _, want), id) in cases.iter().zip(&ids) {
        let (status, error) = status_and_error(&repo, id);
        match want {
            None => {
                assert_eq!(status, "succeeded", "{name}: {error}");
                assert_eq!(creates(id, since), 1, "{name}");
            }
            Some(want) => {
                assert_eq!(status, "rejected", "{name}: {error}");
                assert!(error.starts_with("policy: secret"), "{name}: {error}");
                assert!(error.contains(want), "{name}: {error}");
                assert_eq!(creates(id, since), 0, "{name} never started");
            }
        }
    }

    // A policy that does not parse stops everything: one line naming the
    // file and the line, nothing claimed, nothing started.
    std::fs::write(&policy, "[secrets.pay_token]\nimages = [\"x\"] oops\n").unwrap();
    let late = unique("late");
    land(
        &repo,
        &late,
        &action(&late, &["pay_token"], "echo ran"),
        by(&alice),
    );
    let head = repo.head();
    let out = site.once();
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the policy {} is not valid: line 2",
            policy.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), head, "nothing recorded");
    assert!(repo.result(&late).is_none());
    assert_eq!(creates(&late, since), 0);
}

#[test]
fn approvals_expire_by_ttl_and_by_not_after() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env
        .push(("VAULT_APPROVAL_TTL_S".into(), "3600".into()));
    let since = now_s();
    let stale = unique("stale");
    let two_hours_ago = format!("@{} +0000", now_s() - 7200);
    land(
        &repo,
        &stale,
        &act(&stale, serde_json::json!({})),
        How {
            date: Some(&two_hours_ago),
            ..How::default()
        },
    );
    let fresh = unique("fresh");
    land(
        &repo,
        &fresh,
        &act(&fresh, serde_json::json!({})),
        How::default(),
    );
    let past = unique("past");
    land(
        &repo,
        &past,
        &act(
            &past,
            serde_json::json!({"not_after": "2026-01-01T00:00:00Z"}),
        ),
        How::default(),
    );
    let future = unique("future");
    land(
        &repo,
        &future,
        &act(
            &future,
            serde_json::json!({"not_after": "2099-01-01T00:00:00Z"}),
        ),
        How::default(),
    );
    site.once().success();
    let (status, error) = status_and_error(&repo, &stale);
    assert_eq!(status, "rejected", "{error}");
    assert!(
        error.contains("approval expired") && error.contains("VAULT_APPROVAL_TTL_S=3600"),
        "{error}"
    );
    let (status, error) = status_and_error(&repo, &past);
    assert_eq!(status, "rejected", "{error}");
    assert!(
        error.contains("approval expired: the action's not_after is 2026-01-01T00:00:00Z"),
        "{error}"
    );
    for id in [&fresh, &future] {
        let (status, error) = status_and_error(&repo, id);
        assert_eq!(status, "succeeded", "{id}: {error}");
        let r = repo.result(id).unwrap();
        assert!(r["approval"]["time"].is_string(), "{r}");
    }
    assert_eq!(creates(&stale, since) + creates(&past, since), 0);
    assert_eq!(creates(&fresh, since) + creates(&future, since), 2);
}

/// vault-scan alone, with `signers`, against `repo` (its own cache).
fn scan_with(repo: &OpsRepo, cache: &Path, signers: &Path) -> vault_testkit::Output {
    let mut cmd = vault_testkit::repo_tool("vault-scan", &repo.url, "host-a", cache);
    cmd.env("VAULT_ALLOWED_SIGNERS", signers);
    vault_testkit::run(&mut cmd, b"")
}

#[test]
fn a_withdrawn_approval_re_added_unsigned_is_not_taken_from_the_cache() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let keys = Keys::new();
    let alice = keys.key("alice");
    let signers = keys.signers("allowed_signers", &[("alice@example.com", "", "alice")]);
    let cache = TempDir::new().unwrap();
    let id = unique("withdrawn");
    let json = act(&id, serde_json::json!({}));
    let signed = How {
        key: Some(&alice),
        ..How::default()
    };
    let approving = land(&repo, &id, &json, signed);
    let out = scan_with(&repo, cache.path(), &signers);
    out.success();
    assert_eq!(out.lines()[0]["approval"]["commit"], approving.as_str());
    // Alice withdraws it (signed); the same bytes come back unsigned.
    let path = format!("vault/actions/{id}.json");
    repo.commit_with(&[(&path, None)], "withdraw", &signed);
    let readded = land(&repo, &id, &json, How::default());
    let out = scan_with(&repo, cache.path(), &signers);
    out.success();
    let line = &out.lines()[0];
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "approving commit {readded} is not validly signed: unsigned"
        )),
        "{line}"
    );
}

#[test]
fn a_tip_reaching_the_last_tip_only_through_a_second_parent_is_a_rewrite() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let keys = Keys::new();
    let alice = keys.key("alice");
    let signers = keys.signers("allowed_signers", &[("alice@example.com", "", "alice")]);
    let cache = TempDir::new().unwrap();
    let base = repo.head();
    let first = unique("first");
    land(
        &repo,
        &first,
        &act(&first, serde_json::json!({})),
        How {
            key: Some(&alice),
            ..How::default()
        },
    );
    let seen = repo.head();
    scan_with(&repo, cache.path(), &signers).success();
    // A merge whose first parent is an older commit and whose second parent
    // is the tip seen: it descends from the tip, but its first-parent
    // history (the one approvals and results are read from) does not.
    let tree = git(&repo.bare, &["rev-parse", &format!("{seen}^{{tree}}")]);
    let crafted = git(
        &repo.bare,
        &[
            "commit-tree",
            &tree,
            "-p",
            &base,
            "-p",
            &seen,
            "-m",
            "graft",
        ],
    );
    git(
        &repo.bare,
        &["update-ref", "refs/heads/main", &crafted, &seen],
    );
    let out = scan_with(&repo, cache.path(), &signers);
    out.fails_with_code(6);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains(&crafted), "{}", out.stderr);
}

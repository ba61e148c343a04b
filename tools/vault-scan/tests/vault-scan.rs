//! vault-scan against the testbed's real git daemon.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use vault_core::ScanLine;
use vault_testkit::{bin, git, repo_tool, run, OpsRepo, Output, TempDir, Testbed};

const VALID: &str = r#"{"id":"ID","secrets":["TOKEN"],"command":["true"]}"#;

fn valid(id: &str) -> String {
    VALID.replace("ID", id)
}

fn scan(url: &str, cache: &Path, me: &str) -> Output {
    run(&mut repo_tool("vault-scan", url, me, cache), b"")
}

fn lines(out: &Output) -> Vec<ScanLine> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ids(lines: &[ScanLine]) -> Vec<&str> {
    lines.iter().map(|l| l.id.as_str()).collect()
}

#[test]
fn pending_finished_error_and_resume_lines() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let running =
        |who: &str| format!(r#"{{"schema":1,"id":"x","status":"running","dispatcher":"{who}"}}"#);
    let files = [
        ("vault/actions/a.json".to_string(), valid("a")),
        ("vault/actions/b.json".into(), "{not json".into()),
        ("vault/actions/c.json".into(), valid("other")),
        (
            "vault/actions/d.json".into(),
            valid("d").replace("\"command\"", "\"timeout\":5,\"command\""),
        ),
        (
            "vault/actions/e.json".into(),
            valid("e").replace("TOKEN", "../etc"),
        ),
        ("vault/actions/f.json".into(), valid("f")),
        (
            "vault/actions/f.result.json".into(),
            r#"{"schema":1,"id":"f","status":"succeeded"}"#.into(),
        ),
        ("vault/actions/g.json".into(), valid("g")),
        ("vault/actions/g.result.json".into(), running("me")),
        ("vault/actions/h.json".into(), valid("h")),
        (
            "vault/actions/h.result.json".into(),
            running("someone-else"),
        ),
        ("vault/actions/orphan.result.json".into(), running("me")),
    ];
    let files: Vec<(&str, Option<&[u8]>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_bytes())))
        .collect();
    let head = repo.commit(&files, "land");
    let cache = TempDir::new().unwrap();

    let out = scan(&repo.url, cache.path(), "me");
    out.success();
    let got = lines(&out);
    assert_eq!(ids(&got), ["a", "b", "c", "d", "e", "g"]);
    for l in &got {
        assert_eq!(l.commit, head);
        assert_eq!(l.path, format!("vault/actions/{}.json", l.id));
        let blob = git(&repo.bare, &["rev-parse", &format!("main:{}", l.path)]);
        assert_eq!(l.blob.as_deref(), Some(blob.as_str()));
    }
    assert!(got[0].action.is_some() && got[0].error.is_none() && !got[0].resume);
    let err = |i: usize| got[i].error.clone().unwrap_or_default();
    assert!(err(1).contains("not valid JSON"), "{}", err(1));
    assert!(err(2).contains("does not match"), "{}", err(2));
    assert!(err(3).contains("unknown field"), "{}", err(3));
    assert!(err(4).contains("invalid secret name"), "{}", err(4));
    assert!(
        got[5].resume && got[5].action.is_some(),
        "own claim resumes"
    );

    // Warm (scan cache), same answer; another dispatcher sees no resume line.
    let again = scan(&repo.url, cache.path(), "me");
    again.success();
    assert_eq!(again.stdout, out.stdout);
    let other = lines(scan(&repo.url, cache.path(), "someone-else").success());
    assert_eq!(ids(&other), ["a", "b", "c", "d", "e", "h"]);
    assert!(other[5].resume);

    // A changed tree never reuses the cached answer.
    let head2 = repo.commit(
        &[(
            "vault/actions/a.result.json",
            Some(br#"{"schema":1,"id":"a","status":"failed"}"#),
        )],
        "a done",
    );
    let after = lines(scan(&repo.url, cache.path(), "me").success());
    assert_eq!(ids(&after), ["b", "c", "d", "e", "g"]);
    assert!(after.iter().all(|l| l.commit == head2));
}

#[test]
fn symlink_and_submodule_entries_are_errors() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("real", &valid("real"));
    let work = TempDir::new().unwrap();
    let w = work.path();
    git(w, &["clone", "-q", &repo.url, "."]);
    std::os::unix::fs::symlink("real.json", w.join("vault/actions/link.json")).unwrap();
    git(w, &["add", "vault/actions/link.json"]);
    let head = git(w, &["rev-parse", "HEAD"]);
    git(
        w,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},vault/actions/sub.json"),
        ],
    );
    git(w, &["commit", "-qm", "odd entries"]);
    git(w, &["push", "-q", "origin", "HEAD:main"]);

    let cache = TempDir::new().unwrap();
    let got = lines(scan(&repo.url, cache.path(), "me").success());
    assert_eq!(ids(&got), ["link", "real", "sub"]);
    assert!(got[0].error.as_deref().unwrap().contains("symbolic link"));
    assert!(got[1].action.is_some());
    assert!(got[2].error.as_deref().unwrap().contains("submodule"));
}

#[test]
fn only_direct_json_entries_of_vault_actions_are_read() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let huge = vec![b'{'; 3 * 1024 * 1024];
    let bad_name = valid("x");
    repo.commit(
        &[
            ("vault/actions/ok.json", Some(valid("ok").as_bytes())),
            ("vault/actions/notes.txt", Some(b"not json")),
            ("vault/actions/sub/inner.json", Some(b"{broken")),
            ("vault/actions/sub.d/x.json", Some(valid("x").as_bytes())),
            ("vault/other.json", Some(&huge)),
            ("top.json", Some(b"{broken")),
            ("vault/actions/bad name.json", Some(bad_name.as_bytes())),
        ],
        "noise",
    );
    let cache = TempDir::new().unwrap();
    let out = scan(&repo.url, cache.path(), "me");
    out.success();
    assert_eq!(ids(&lines(&out)), ["ok"]);
    assert!(out.stderr.contains("bad name.json"), "{}", out.stderr);
}

#[test]
fn unpushed_work_is_not_seen() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("landed", &valid("landed"));
    let work = TempDir::new().unwrap();
    let w = work.path();
    git(w, &["clone", "-q", &repo.url, "."]);
    std::fs::write(w.join("vault/actions/committed.json"), valid("committed")).unwrap();
    git(w, &["add", "-A"]);
    git(w, &["commit", "-qm", "not pushed"]);
    std::fs::write(w.join("vault/actions/dirty.json"), valid("dirty")).unwrap();
    std::fs::write(w.join("vault/actions/landed.result.json"), "{}").unwrap();

    let cache = TempDir::new().unwrap();
    let got = lines(scan(&repo.url, cache.path(), "me").success());
    assert_eq!(ids(&got), ["landed"]);
    // Even pointed at the agent's clone, its working tree is not read.
    let local = lines(scan(w.to_str().unwrap(), cache.path(), "me").success());
    assert_eq!(ids(&local), ["committed", "landed"]);
}

#[test]
fn path_file_and_git_urls_agree_and_do_not_share_a_cache() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("one", &valid("one"));
    let cache = TempDir::new().unwrap();
    let path = repo.bare.to_str().unwrap().to_string();
    let file = format!("file://{path}");
    let outs: Vec<String> = [repo.url.as_str(), path.as_str(), file.as_str()]
        .iter()
        .map(|u| scan(u, cache.path(), "me").success().stdout.clone())
        .collect();
    assert_eq!(ids(&lines(&scan(&path, cache.path(), "me"))), ["one"]);
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
    let clones = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".git")
        })
        .count();
    assert_eq!(clones, 3);
}

#[test]
fn unreachable_remote_and_missing_branch() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("one", &valid("one"));
    let cache = TempDir::new().unwrap();
    let gone = format!("{}/{}.git", tb.git_url, vault_testkit::unique("absent"));
    let out = scan(&gone, cache.path(), "me");
    out.fails_with_code(4);
    assert!(out.stdout.is_empty());
    let refused = scan("git://127.0.0.1:1/x.git", cache.path(), "me");
    refused.fails_with_code(4);
    assert!(refused.stdout.is_empty());

    let out = run(
        Command::new(bin("vault-scan"))
            .args(["--repo", &repo.url, "--branch", "nope"])
            .arg("--cache")
            .arg(cache.path()),
        b"",
    );
    out.fails_with_code(1);
    assert!(
        out.stderr.starts_with("vault-scan: ") && out.stderr.contains("\"nope\" does not exist"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn env_vars_configure_and_help_works() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("env", &valid("env"));
    let cache = TempDir::new().unwrap();
    let out = run(
        Command::new(bin("vault-scan"))
            .env("VAULT_REPO", &repo.url)
            .env("VAULT_BRANCH", "main")
            .env("VAULT_CACHE", cache.path())
            .env("VAULT_DISPATCHER_ID", "me"),
        b"",
    );
    assert_eq!(ids(&lines(out.success())), ["env"]);
    let help = run(Command::new(bin("vault-scan")).arg("--help"), b"");
    help.success();
    for flag in [
        "--repo",
        "--branch",
        "--cache",
        "--dispatcher-id",
        "--ssh-key",
        "--token-file",
    ] {
        assert!(help.stdout.contains(flag), "{flag}");
    }
    run(Command::new(bin("vault-scan")).arg("--version"), b"").success();
    run(
        Command::new(bin("vault-scan")).env_remove("VAULT_REPO"),
        b"",
    )
    .fails_with_code(2);
}

#[test]
fn credentials_are_checked_and_the_token_never_printed() {
    let cache = TempDir::new().unwrap();
    let tok = cache.path().join("token");
    std::fs::write(&tok, "tok-sekrit-4242\n").unwrap();
    let with = |url: &str, extra: &[&str]| {
        run(
            repo_tool("vault-scan", url, "me", cache.path()).args(extra),
            b"",
        )
    };
    let tok = tok.to_str().unwrap();
    // Nothing listens on port 1: unreachable, and the token appears nowhere.
    let out = with("https://127.0.0.1:1/ops.git", &["--token-file", tok]);
    out.fails_with_code(4);
    assert!(!out.stderr.contains("sekrit") && !out.stdout.contains("sekrit"));
    let plain = with("http://127.0.0.1:1/ops.git", &["--token-file", tok]);
    plain.fails_with_code(1);
    assert!(plain.stderr.contains("plain http") && !plain.stderr.contains("sekrit"));
    let missing = with(
        "ssh://git@127.0.0.1:1/ops.git",
        &["--ssh-key", "/nonexistent/key"],
    );
    missing.fails_with_code(1);
    assert!(
        missing.stderr.contains("/nonexistent/key"),
        "{}",
        missing.stderr
    );
    let no_file = with(
        "https://127.0.0.1:1/ops.git",
        &["--token-file", "/nonexistent/tok"],
    );
    no_file.fails_with_code(1);
}

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
    // One clone of the watched branch and one of its archive branch each.
    assert_eq!(clones, 6);
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

fn final_result(id: &str) -> String {
    format!(r#"{{"schema":1,"id":"{id}","status":"succeeded"}}"#)
}

fn running_result(id: &str, who: &str) -> String {
    format!(r#"{{"schema":1,"id":"{id}","status":"running","dispatcher":"{who}"}}"#)
}

#[test]
fn a_deleted_result_is_spent_for_this_cache_and_a_fresh_one() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("pay", &valid("pay"));
    let cache = TempDir::new().unwrap();
    assert_eq!(
        ids(&lines(scan(&repo.url, cache.path(), "me").success())),
        ["pay"]
    );
    // Claimed, then recorded (as result-write does), then deleted by a
    // landed commit.
    let path = "vault/actions/pay.result.json";
    repo.commit(
        &[(path, Some(running_result("pay", "me").as_bytes()))],
        "claim",
    );
    repo.commit(&[(path, Some(final_result("pay").as_bytes()))], "result");
    assert!(lines(scan(&repo.url, cache.path(), "me").success()).is_empty());
    let tip = repo.commit(&[(path, None)], "delete the result");

    let out = scan(&repo.url, cache.path(), "me");
    out.success();
    let got = lines(&out);
    assert_eq!(ids(&got), ["pay"]);
    let why = got[0].spent.as_deref().expect("spent");
    assert!(why.contains("final result") && why.contains(&tip), "{why}");
    assert!(
        got[0].valid_action().is_err(),
        "a spent line is not runnable"
    );
    assert!(
        out.stderr.contains("pay: this action had a final result"),
        "{}",
        out.stderr
    );

    // A fresh cache (another host) learns it from the branch's history.
    let fresh = TempDir::new().unwrap();
    let got = lines(scan(&repo.url, fresh.path(), "other-host").success());
    assert_eq!(ids(&got), ["pay"]);
    assert!(got[0].spent.as_deref().unwrap().contains("final result"));

    // A claim alone (the dispatcher died before recording), deleted: spent.
    repo.land_action("claimed", &valid("claimed"));
    let cpath = "vault/actions/claimed.result.json";
    repo.commit(
        &[(cpath, Some(running_result("claimed", "me").as_bytes()))],
        "claim",
    );
    repo.commit(&[(cpath, None)], "drop the claim");
    let fresh = TempDir::new().unwrap();
    let got = lines(scan(&repo.url, fresh.path(), "me").success());
    let claimed = got.iter().find(|l| l.id.as_str() == "claimed").unwrap();
    assert!(
        claimed.spent.as_deref().unwrap().contains("a claim"),
        "{claimed:?}"
    );
}

#[test]
fn a_final_result_turned_back_into_our_claim_is_spent() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("dep", &valid("dep"));
    let path = "vault/actions/dep.result.json";
    repo.commit(&[(path, Some(final_result("dep").as_bytes()))], "result");
    let cache = TempDir::new().unwrap();
    assert!(lines(scan(&repo.url, cache.path(), "me").success()).is_empty());
    repo.commit(
        &[(path, Some(running_result("dep", "me").as_bytes()))],
        "back to running",
    );
    let out = scan(&repo.url, cache.path(), "me");
    out.success();
    assert!(
        out.stderr
            .contains("dep: its final result turned back into a running claim"),
        "{}",
        out.stderr
    );
    let got = lines(&out);
    assert_eq!(ids(&got), ["dep"]);
    assert!(got[0].resume);
    assert!(got[0]
        .spent
        .as_deref()
        .unwrap()
        .contains("replaced by a running claim"));
    // A fresh cache learns the same from history.
    let fresh = TempDir::new().unwrap();
    let got = lines(scan(&repo.url, fresh.path(), "me").success());
    assert!(got[0].spent.is_some());
    // A claim that never was final resumes as before.
    repo.land_action("live", &valid("live"));
    repo.commit(
        &[(
            "vault/actions/live.result.json",
            Some(running_result("live", "me").as_bytes()),
        )],
        "claim",
    );
    let got = lines(scan(&repo.url, cache.path(), "me").success());
    let live = got.iter().find(|l| l.id.as_str() == "live").unwrap();
    assert!(live.resume && live.spent.is_none(), "{live:?}");
}

#[test]
fn a_rewritten_branch_is_not_dispatched_from_until_accepted() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let base = repo.land_action("a", &valid("a"));
    repo.commit(
        &[(
            "vault/actions/a.result.json",
            Some(final_result("a").as_bytes()),
        )],
        "a done",
    );
    let cache = TempDir::new().unwrap();
    let seen = repo.head();
    assert!(lines(scan(&repo.url, cache.path(), "me").success()).is_empty());

    // Force-push: back to before the result, plus a new action.
    repo.force_push(&base);
    let new_tip = repo.land_action("b", &valid("b"));
    let out = scan(&repo.url, cache.path(), "me");
    out.fails_with_code(6);
    assert!(out.stdout.is_empty(), "nothing dispatched: {}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&seen) && out.stderr.contains(&new_tip),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--accept-rewrite"), "{}", out.stderr);
    // Still refused on the next run.
    scan(&repo.url, cache.path(), "me").fails_with_code(6);

    // Accepting another commit is refused.
    let mut cmd = repo_tool("vault-scan", &repo.url, "me", cache.path());
    let wrong = run(cmd.args(["--accept-rewrite", &base]), b"");
    wrong.fails_with_code(1);
    assert!(
        wrong.stderr.contains("does not name the branch's tip"),
        "{}",
        wrong.stderr
    );

    // Accepted: `a`, whose result the rewrite dropped, is spent; `b` runs.
    let mut cmd = repo_tool("vault-scan", &repo.url, "me", cache.path());
    let ok = run(cmd.args(["--accept-rewrite", &new_tip[..12]]), b"");
    ok.success();
    assert!(ok.stderr.contains("accepted the rewrite"), "{}", ok.stderr);
    assert!(
        ok.stderr.contains("a: its final result was deleted"),
        "{}",
        ok.stderr
    );
    let got = lines(&ok);
    assert_eq!(ids(&got), ["a", "b"]);
    assert!(got[0].spent.is_some(), "{:?}", got[0]);
    assert!(got[1].spent.is_none() && got[1].action.is_some());
    // From now on the new history is the one dispatched from.
    scan(&repo.url, cache.path(), "me").success();
}

#[test]
fn an_ambiguous_or_malformed_tree_is_refused() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let blob = |content: &str| -> String {
        let dir = TempDir::new().unwrap();
        let f = dir.path().join("b");
        std::fs::write(&f, content).unwrap();
        git(&repo.bare, &["hash-object", "-w", f.to_str().unwrap()])
    };
    let entry = |mode: &str, name: &str, oid: &str| -> Vec<u8> {
        let mut e = format!("{mode} {name}\0").into_bytes();
        for i in 0..20 {
            e.push(u8::from_str_radix(&oid[2 * i..2 * i + 2], 16).unwrap());
        }
        e
    };
    let first = blob(&valid("dup"));
    let second = blob(&valid("dup").replace("true", "false"));
    let other = blob(&valid("ok"));
    let mut raw = entry("100644", "dup.json", &first);
    raw.extend(entry("100644", "dup.json", &second));
    raw.extend(entry("100644", "ok.json", &other));
    repo.land_raw_actions_tree(&raw, "two dup.json entries");
    let cache = TempDir::new().unwrap();
    let out = scan(&repo.url, cache.path(), "me");
    out.success();
    let got = lines(&out);
    assert_eq!(ids(&got), ["dup", "ok"], "the ambiguous id is listed once");
    let err = got[0].error.as_deref().unwrap();
    assert!(
        err.contains("ambiguous") && err.contains("dup.json"),
        "{err}"
    );
    assert!(got[0].action.is_none());
    assert!(got[1].action.is_some());

    // Unsorted: lookups by name cannot be trusted, so nothing is listed.
    let mut raw = entry("100644", "ok.json", &other);
    raw.extend(entry("100644", "dup.json", &first));
    repo.land_raw_actions_tree(&raw, "unsorted");
    let out = scan(&repo.url, cache.path(), "me");
    out.fails_with_code(1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("malformed") && out.stderr.contains("fsck"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn an_unreadable_ledger_or_memory_stops_the_scan() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.land_action("x", &valid("x"));
    let cache = TempDir::new().unwrap();
    std::fs::write(cache.path().join("ledger"), "not a folder").unwrap();
    let out = scan(&repo.url, cache.path(), "me");
    out.fails_with_code(1);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("run ledger"), "{}", out.stderr);
    std::fs::remove_file(cache.path().join("ledger")).unwrap();
    scan(&repo.url, cache.path(), "me").success();
    // The remembered history, corrupted.
    let seen = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seen"));
    let seen = seen.unwrap_or_else(|| {
        let tip = std::fs::read_dir(cache.path().join("repos"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "tip"))
            .unwrap();
        tip.with_extension("seen")
    });
    std::fs::write(&seen, "garbage\n").unwrap();
    let out = scan(&repo.url, cache.path(), "me");
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("corrupt") && out.stderr.contains("move it aside"),
        "{}",
        out.stderr
    );
}

//! result-write against the testbed's real git daemon.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vault_testkit::{
    git, repo_tool, run, spawn_fed, wait_until, OpsRepo, Output, TempDir, Testbed,
};

const ACTION: &str = r#"{"id":"ID","secrets":[],"command":["true"]}"#;

fn rw(url: &str, cache: &Path, me: &str, args: &[&str], stdin: &str) -> Output {
    run(
        repo_tool("result-write", url, me, cache).args(args),
        stdin.as_bytes(),
    )
}

fn scan_line(repo: &OpsRepo, cache: &Path, id: &str) -> String {
    let out = run(
        &mut repo_tool("vault-scan", &repo.url, "scanner", cache),
        b"",
    );
    out.success();
    out.stdout
        .lines()
        .find(|l| l.contains(&format!("\"id\":\"{id}\"")))
        .unwrap_or_else(|| panic!("{id} not pending: {}", out.stdout))
        .to_string()
}

fn result_line(id: &str, status: &str) -> String {
    format!(r#"{{"schema":1,"id":"{id}","status":"{status}","exit_code":0,"logs":"done"}}"#)
}

#[track_caller]
fn assert_ancestor(repo: &OpsRepo, old: &str, new: &str) {
    let ok = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["merge-base", "--is-ancestor", old, new])
        .status()
        .unwrap()
        .success();
    assert!(ok, "history rewritten: {old} is not an ancestor of {new}");
}

#[test]
fn claim_then_final_is_idempotent_and_never_overwrites() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let landed = repo.land_action("job", &ACTION.replace("ID", "job"));
    let cache = TempDir::new().unwrap();
    let line = scan_line(&repo, cache.path(), "job");

    let out = rw(&repo.url, cache.path(), "disp-a", &["--claim"], &line);
    out.success();
    let claim = repo.result("job").unwrap();
    assert_eq!(claim["status"], "running");
    assert_eq!(claim["dispatcher"], "disp-a");
    let scan: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(claim["action_commit"], scan["commit"]);
    assert_eq!(claim["action_blob"], scan["blob"]);
    let rec = &out.lines()[0];
    let keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["commit", "id", "status"], "the stdout line's fields");
    assert_eq!(rec["id"], "job");
    assert_eq!(rec["status"], "running");
    assert_eq!(rec["commit"], repo.head().as_str());
    let author = git(&repo.bare, &["log", "-1", "--format=%an <%ae>|%cn", "main"]);
    assert_eq!(author, "disp-a <disp-a@vault-dispatch.invalid>|disp-a");
    assert_ancestor(&repo, &landed, &repo.head());

    // Our own claim again: already done, no commit; an error line is not claimed.
    let n = repo.log().len();
    let err_line = format!(
        r#"{{"id":"broken","path":"vault/actions/broken.json","commit":"{landed}","error":"bad json"}}"#
    );
    let skipped = rw(&repo.url, cache.path(), "disp-a", &["--claim"], &err_line);
    skipped.success();
    assert!(skipped.stdout.is_empty() && skipped.stderr.contains("not claimed"));
    assert!(repo.result("broken").is_none());
    rw(&repo.url, cache.path(), "disp-a", &["--claim"], &line).success();
    assert_eq!(repo.log().len(), n);
    // Another dispatcher's claim loses.
    let lost = rw(&repo.url, cache.path(), "disp-b", &["--claim"], &line);
    lost.fails_with_code(3);
    assert!(lost.stdout.is_empty());
    assert_eq!(repo.log().len(), n);

    // The final result replaces the claim; twice makes one commit.
    let claim_head = repo.head();
    let fin = result_line("job", "succeeded");
    rw(&repo.url, cache.path(), "disp-a", &[], &fin).success();
    rw(&repo.url, cache.path(), "disp-a", &[], &fin).success();
    assert_eq!(repo.log().len(), n + 1);
    assert_eq!(repo.result("job").unwrap()["status"], "succeeded");
    assert_ancestor(&repo, &claim_head, &repo.head());

    // A different final result is never written over it; nor is a claim.
    let other = rw(
        &repo.url,
        cache.path(),
        "disp-a",
        &[],
        &result_line("job", "failed"),
    );
    other.fails_with_code(3);
    assert!(other.stderr.contains("kept"), "{}", other.stderr);
    rw(&repo.url, cache.path(), "disp-a", &["--claim"], &line).fails_with_code(3);
    assert_eq!(repo.result("job").unwrap()["status"], "succeeded");
    assert_eq!(repo.log().len(), n + 1);
}

#[test]
fn many_lines_make_one_commit_and_bad_lines_are_reported() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let before = repo.head();
    let input = [
        result_line("r1", "succeeded"),
        "garbage".to_string(),
        result_line("r2", "failed"),
        result_line("../r3", "failed"),
        result_line("r4", "error"),
    ]
    .join("\n");
    let cache = TempDir::new().unwrap();
    let out = rw(&repo.url, cache.path(), "d", &[], &input);
    out.fails_with_code(1);
    assert_eq!(out.lines().len(), 3);
    assert!(
        out.stderr.contains("line 2") && out.stderr.contains("line 4"),
        "{}",
        out.stderr
    );
    assert_eq!(repo.log().len(), 2, "one commit for three results");
    for id in ["r1", "r2", "r4"] {
        assert!(repo.result(id).is_some(), "{id}");
    }
    assert_ancestor(&repo, &before, &repo.head());
}

#[test]
fn concurrent_claims_have_exactly_one_winner() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let ids = ["c1", "c2", "c3", "p1", "p2", "p3"];
    for id in ids {
        repo.land_action(id, &ACTION.replace("ID", id));
    }
    let scan_cache = TempDir::new().unwrap();
    let path = repo.bare.to_str().unwrap().to_string();
    for id in ids {
        let line = scan_line(&repo, scan_cache.path(), id);
        // c*: through the git daemon; p*: a path remote (our own CAS push).
        let url = if id.starts_with('p') {
            &path
        } else {
            &repo.url
        };
        let before = repo.log().len();
        let old_head = repo.head();
        let caches = [TempDir::new().unwrap(), TempDir::new().unwrap()];
        let children: Vec<_> = ["left", "right"]
            .iter()
            .zip(&caches)
            .map(|(me, cache)| {
                let child = spawn_fed(
                    repo_tool("result-write", url, me, cache.path())
                        .arg("--claim")
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped()),
                    line.as_bytes(),
                );
                (me.to_string(), child)
            })
            .collect();
        let mut codes = Vec::new();
        let mut winner = String::new();
        for (me, child) in children {
            let out = child.wait_with_output().unwrap();
            let code = out.status.code();
            if code == Some(0) {
                winner = me;
            }
            codes.push((code, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        let mut just: Vec<_> = codes.iter().map(|c| c.0).collect();
        just.sort();
        assert_eq!(just, [Some(0), Some(3)], "{id}: {codes:?}");
        assert_eq!(repo.log().len(), before + 1, "exactly one claim commit");
        assert_eq!(repo.result(id).unwrap()["dispatcher"], winner.as_str());
        assert_ancestor(&repo, &old_head, &repo.head());
    }
}

#[test]
fn a_refusing_hook_fails_without_losing_the_result() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    repo.install_hook(
        "pre-receive",
        "#!/bin/sh\necho 'no pushes today, says the hook' >&2\nexit 1\n",
    );
    let head = repo.head();
    let cache = TempDir::new().unwrap();
    let out = rw(
        &repo.url,
        cache.path(),
        "d",
        &[],
        &result_line("hooked", "succeeded"),
    );
    out.fails_with_code(1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("no pushes today, says the hook"),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), head);
    let kept: Vec<_> = walk(cache.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/rejected/"))
        .collect();
    assert_eq!(kept.len(), 1, "the refused result is kept: {kept:?}");
    let saved = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(saved.contains("\"hooked\""), "{saved}");

    // A refused claim is a failure too, and nothing is spooled for it.
    let claim = rw(
        &repo.url,
        cache.path(),
        "d",
        &["--claim"],
        &format!(
            r#"{{"id":"c","path":"vault/actions/c.json","commit":"{head}","blob":"{head}","action":{}}}"#,
            ACTION.replace("ID", "c")
        ),
    );
    claim.fails_with_code(1);
    assert_eq!(repo.head(), head);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn remote_down_then_up_delivers_the_spooled_result() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let head = repo.head();
    let cache = TempDir::new().unwrap();
    let away = repo.bare.with_extension("away");
    std::fs::rename(&repo.bare, &away).unwrap();

    let down = rw(
        &repo.url,
        cache.path(),
        "d",
        &[],
        &result_line("later", "failed"),
    );
    let claim = rw(
        &repo.url,
        cache.path(),
        "d",
        &["--claim"],
        &format!(
            r#"{{"id":"cl","path":"vault/actions/cl.json","commit":"{head}","action":{}}}"#,
            ACTION.replace("ID", "cl")
        ),
    );
    std::fs::rename(&away, &repo.bare).unwrap();
    down.fails_with_code(4);
    assert!(down.stderr.contains("spooled"), "{}", down.stderr);
    claim.fails_with_code(4);
    assert_eq!(repo.head(), head);

    let up = rw(&repo.url, cache.path(), "d", &["--flush"], "");
    up.success();
    assert_eq!(up.lines()[0]["id"], "later");
    assert_eq!(repo.result("later").unwrap()["status"], "failed");
    assert!(repo.result("cl").is_none(), "a claim is never spooled");
    assert_ancestor(&repo, &head, &repo.head());
    // Delivered once: the spool is empty now.
    let n = repo.log().len();
    rw(&repo.url, cache.path(), "d", &["--flush"], "").success();
    assert_eq!(repo.log().len(), n);
}

#[test]
fn a_branch_moving_during_the_push_is_retried_without_rewriting() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let marker = TempDir::new().unwrap();
    let armed = marker.path().join("armed");
    let waiting = marker.path().join("waiting");
    std::fs::write(&armed, "").unwrap();
    // The first push waits in the hook until another commit has landed, so
    // its ref update finds the branch moved.
    repo.install_hook(
        "pre-receive",
        &format!(
            "#!/bin/sh\ncat >/dev/null\nif rm {armed} 2>/dev/null; then touch {waiting}; i=0; while [ -e {waiting} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; fi\nexit 0\n",
            armed = armed.display(),
            waiting = waiting.display()
        ),
    );
    let cache = TempDir::new().unwrap();
    let child = spawn_fed(
        repo_tool("result-write", &repo.url, "d", cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        result_line("moved", "succeeded").as_bytes(),
    );
    wait_until("the hook to run", Duration::from_secs(60), || {
        waiting.exists()
    });
    let other = repo.land_action("meanwhile", &ACTION.replace("ID", "meanwhile"));
    std::fs::remove_file(&waiting).unwrap();
    Output::from(child.wait_with_output().unwrap()).success();
    assert_eq!(repo.result("moved").unwrap()["status"], "succeeded");
    assert!(repo.show("vault/actions/meanwhile.json").is_some());
    assert_ancestor(&repo, &other, &repo.head());
}

#[test]
fn a_rewritten_branch_is_not_written_to_and_the_result_stays_spooled() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let before = repo.head();
    repo.land_action("rw", &ACTION.replace("ID", "rw"));
    let cache = TempDir::new().unwrap();
    let line = scan_line(&repo, cache.path(), "rw");
    rw(&repo.url, cache.path(), "disp-a", &["--claim"], &line).success();

    // Force-push the branch back to before the action.
    repo.force_push(&before);
    let out = rw(
        &repo.url,
        cache.path(),
        "disp-a",
        &[],
        &result_line("rw", "succeeded"),
    );
    out.fails_with_code(6);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("rewritten") && out.stderr.contains("stay spooled"),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), before, "nothing written");
    // Still refused by the flush, and kept.
    rw(&repo.url, cache.path(), "disp-a", &["--flush"], "").fails_with_code(6);
    assert_eq!(repo.head(), before);
}

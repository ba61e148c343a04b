//! The archive (docs/CONTRACT.md §2): finished actions leave `vault/actions`
//! for `vault/archive/<ab>/<cd>/` of the archive branch
//! `vault-archive/main`, unchanged, in dispatcher.sh's archive step; the
//! move is no deletion to any dispatcher (this one or a fresh cache); an id
//! found in the archive never runs again, even landed anew; a claim for an
//! archived id loses; a move cut short between its two pushes is finished
//! by the next call. The whole pipeline (dispatcher.sh and the four
//! tools) on the real testbed; starts counted from `docker events`.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use vault_e2e::*;
use vault_testkit::{repo_tool, run, unique, OpsRepo, SecretStore, Testbed};

/// `vault/archive/<ab>/<cd>` of `id`, from coreutils' sha256sum (not the
/// tools' code).
fn archive_folder(id: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", id])
        .output()
        .unwrap();
    let sum = String::from_utf8(out.stdout).unwrap();
    format!("vault/archive/{}/{}", &sum[..2], &sum[2..4])
}

const ARCHIVE: &str = "vault-archive/main";

/// A file on the archive branch of the remote, if present.
fn archived(repo: &OpsRepo, path: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["show", &format!("{ARCHIVE}:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git_out(repo: &OpsRepo, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn finished_actions_move_to_the_archive_and_their_ids_never_run_again() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    for (k, v) in [
        ("VAULT_ARCHIVE_AFTER_S", "0"),
        ("VAULT_ARCHIVE_EVERY_S", "0"),
    ] {
        site.extra_env.push((k.into(), v.into()));
    }
    let (first, second) = (unique("arc-a"), unique("arc-b"));
    let since = now_s();

    repo.land_action(&first, &action(&first, &[], "echo first"));
    site.once().success();
    let first_result = repo
        .show(&format!("vault/actions/{first}.result.json"))
        .expect("the result lands in vault/actions first");
    let first_action = repo.show(&format!("vault/actions/{first}.json")).unwrap();

    // The next cycle's archive step moves the first action.
    repo.land_action(&second, &action(&second, &[], "echo second"));
    let out = site.once();
    out.success();
    let folder = archive_folder(&first);
    assert_eq!(
        repo.result(&first),
        None,
        "moved out of vault/actions: {}",
        out.stderr
    );
    assert_eq!(repo.show(&format!("vault/actions/{first}.json")), None);
    assert_eq!(
        archived(&repo, &format!("{folder}/{first}.result.json")).as_deref(),
        Some(first_result.as_str()),
        "the result is moved unchanged"
    );
    assert_eq!(
        archived(&repo, &format!("{folder}/{first}.json")).as_deref(),
        Some(first_action.as_str())
    );
    assert_eq!(repo.result(&second).unwrap()["status"], "succeeded");
    let message = git_out(&repo, &["log", "-4", "--format=%B", "main"]);
    assert!(
        message.contains(&format!("archive 1 finished action(s) into {ARCHIVE}"))
            && message.contains(&first),
        "{message}"
    );
    assert!(
        !git_out(&repo, &["ls-tree", "-r", "--name-only", "main"]).contains("vault/archive"),
        "the watched branch holds no archive"
    );

    // The move is no deletion: neither this host nor a fresh one says a
    // result vanished.
    let fresh = Site::new(&tb, &repo.url, &secrets, "host-b");
    for out in [site.once(), fresh.once()] {
        out.success();
        assert!(!out.stderr.contains("was deleted"), "{}", out.stderr);
    }

    // Landed again under the same id: never started, recorded abandoned in
    // vault/actions, the archive untouched.
    repo.land_action(&first, &action(&first, &[], "echo again"));
    let out = site.once();
    out.success();
    let r = repo
        .result(&first)
        .unwrap_or_else(|| panic!("no outcome for the re-landed id: {}", out.stderr));
    assert_eq!(r["status"], "abandoned", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("archived in {folder} on the branch {ARCHIVE}")),
        "{err}"
    );
    assert_eq!(creates(&first, since), 1, "never started a second time");
    assert_eq!(
        archived(&repo, &format!("{folder}/{first}.result.json")).as_deref(),
        Some(first_result.as_str())
    );
    // A fresh cache refuses it as well (it has no ledger of it).
    let other = Site::new(&tb, &repo.url, &secrets, "host-c");
    repo.commit(
        &[(&format!("vault/actions/{first}.result.json"), None)],
        "delete the abandoned result",
    );
    let out = other.once();
    out.success();
    assert_eq!(repo.result(&first).unwrap()["status"], "abandoned");
    assert_eq!(creates(&first, since), 1, "never started a second time");

    // That cycle archived the second action; a stale claim of it loses.
    let second_folder = archive_folder(&second);
    assert!(archived(&repo, &format!("{second_folder}/{second}.result.json")).is_some());
    let line = serde_json::json!({
        "schema": 1, "id": second, "path": format!("vault/actions/{second}.json"),
        "commit": repo.head(),
        "action": {"id": second, "secrets": [], "command": ["true"]},
    });
    let head = repo.head();
    let cache = tempfile::tempdir().unwrap();
    let out = run(
        repo_tool("result-write", &repo.url, "host-a", cache.path()).arg("--claim"),
        format!("{line}\n").as_bytes(),
    );
    out.fails_with_code(3);
    assert!(
        out.stderr.contains(&format!(
            "already has a succeeded result in the archive ({second_folder})"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), head, "nothing written");
}

#[test]
fn a_move_cut_short_between_its_two_pushes_is_finished_by_the_next_call() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("cut");
    repo.land_action(&id, &action(&id, &[], "echo cut"));
    site.once().success();
    let result = repo
        .show(&format!("vault/actions/{id}.result.json"))
        .unwrap();

    // The archive branch got the files (as if the first push of a move had
    // landed and the host died before the second).
    let folder = archive_folder(&id);
    let actions = git_out(&repo, &["rev-parse", "main:vault/actions"]);
    let entries = git_out(&repo, &["ls-tree", actions.trim()]);
    let mine: String = entries
        .lines()
        .filter(|l| {
            l.ends_with(&format!("\t{id}.json")) || l.ends_with(&format!("\t{id}.result.json"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(mine.lines().count(), 2, "{entries}");
    let mktree = |input: &str| {
        let out = vault_testkit::run(
            Command::new("git")
                .arg("--git-dir")
                .arg(&repo.bare)
                .arg("mktree"),
            input.as_bytes(),
        );
        out.success();
        out.stdout.trim().to_string()
    };
    let mut tree = mktree(&mine);
    let parts: Vec<&str> = folder.split('/').collect();
    for name in parts.iter().rev() {
        tree = mktree(&format!("040000 tree {tree}\t{name}\n"));
    }
    let commit = git_out(&repo, &["commit-tree", &tree, "-m", "half a move"]);
    git_out(
        &repo,
        &[
            "update-ref",
            &format!("refs/heads/{ARCHIVE}"),
            commit.trim(),
        ],
    );

    // Without VAULT_ARCHIVE_AFTER_S=0 nothing is due yet (kept 7 days).
    let cache = tempfile::tempdir().unwrap();
    let call = |after: &str| {
        let mut cmd = repo_tool("result-write", &repo.url, "host-a", cache.path());
        cmd.args(["--archive", "--archive-after-s", after]);
        run(&mut cmd, b"")
    };
    let head = repo.head();
    call("604800").success();
    assert_eq!(repo.head(), head, "nothing due: nothing written");

    call("0").success();
    assert_eq!(repo.result(&id), None, "the watched branch let go of it");
    assert_eq!(
        git_out(&repo, &["rev-parse", ARCHIVE]).trim(),
        commit.trim(),
        "the archive already held the files: no second archive commit"
    );
    assert_eq!(
        archived(&repo, &format!("{folder}/{id}.result.json")).as_deref(),
        Some(result.as_str())
    );
    let again = repo.head();
    call("0").success();
    assert_eq!(repo.head(), again, "settled");
}

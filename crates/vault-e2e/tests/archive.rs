//! The archive (docs/CONTRACT.md §2): finished actions leave `vault/actions`
//! for `vault/archive/<ab>/<cd>/` in a later result commit, unchanged; the
//! move is no deletion to any dispatcher (this one or a fresh cache); an id
//! found in the archive never runs again, even landed anew; and a claim for
//! an archived id loses. The whole pipeline (dispatcher.sh and the four
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

#[test]
fn finished_actions_move_to_the_archive_and_their_ids_never_run_again() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env
        .push(("VAULT_ARCHIVE_AFTER_S".into(), "0".into()));
    let (first, second) = (unique("arc-a"), unique("arc-b"));
    let since = now_s();

    repo.land_action(&first, &action(&first, &[], "echo first"));
    site.once().success();
    let first_result = repo
        .show(&format!("vault/actions/{first}.result.json"))
        .expect("the result lands in vault/actions first");
    let first_action = repo.show(&format!("vault/actions/{first}.json")).unwrap();

    // The next result commit takes the first action along into the archive.
    repo.land_action(&second, &action(&second, &[], "echo second"));
    let out = site.once();
    out.success();
    let folder = archive_folder(&first);
    assert_eq!(repo.result(&first), None, "moved out of vault/actions");
    assert_eq!(repo.show(&format!("vault/actions/{first}.json")), None);
    assert_eq!(
        repo.show(&format!("{folder}/{first}.result.json"))
            .as_deref(),
        Some(first_result.as_str()),
        "the result is moved unchanged"
    );
    assert_eq!(
        repo.show(&format!("{folder}/{first}.json")).as_deref(),
        Some(first_action.as_str())
    );
    assert_eq!(repo.result(&second).unwrap()["status"], "succeeded");
    let log = Command::new("git")
        .arg("--git-dir")
        .arg(&repo.bare)
        .args(["log", "-1", "--format=%B", "main"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&log.stdout);
    assert!(
        message.contains("archived 1 finished action(s)") && message.contains(&first),
        "{message}"
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
    assert!(err.contains(&format!("archived in {folder}")), "{err}");
    assert_eq!(creates(&first, since), 1, "never started a second time");
    assert_eq!(
        repo.show(&format!("{folder}/{first}.result.json"))
            .as_deref(),
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

    // That commit archived the second action; a stale claim of it loses.
    let second_folder = archive_folder(&second);
    assert!(repo
        .show(&format!("{second_folder}/{second}.result.json"))
        .is_some());
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
            "already has a succeeded result in {second_folder}"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), head, "nothing written");
}

//! Results batched without holding any back (docs/CONTRACT.md §6, "Group
//! commit"): result-write spools a final result before it waits for the
//! repo lock, and the call that holds the lock pushes every spooled result
//! it finds. Real result-write processes against the testbed's git daemon;
//! the lock is held by util-linux `flock` while both calls start.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;
use vault_testkit::{repo_tool, spawn_fed, unique, wait_output, wait_until, OpsRepo, Testbed};

#[test]
fn results_waiting_for_the_lock_land_together_in_one_commit() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let (a, b) = (unique("batch-a"), unique("batch-b"));
    repo.land_actions(&[
        (
            a.as_str(),
            format!(r#"{{"id":"{a}","secrets":[],"command":["true"]}}"#),
        ),
        (
            b.as_str(),
            format!(r#"{{"id":"{b}","secrets":[],"command":["true"]}}"#),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let tool = || {
        let mut c = repo_tool("result-write", &repo.url, "host-a", cache.path());
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // A first call makes the cache clone and its lock file.
    let out = vault_testkit::run(tool().arg("--flush"), b"");
    out.success();
    let lock = std::fs::read_dir(cache.path().join("repos"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("the repo lock file");
    let before = repo.log().len();

    // Another process of this host holds the lock (as a push under way would).
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["-c", "echo held; sleep 3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 5];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut first).unwrap();
    let result = |id: &str| {
        format!(
            r#"{{"schema":1,"id":"{id}","status":"succeeded","exit_code":0,"finished_at":"2026-01-01T00:00:00Z"}}"#
        )
    };
    let calls: Vec<_> = [&a, &b]
        .iter()
        .map(|id| spawn_fed(&mut tool(), format!("{}\n", result(id)).as_bytes()))
        .collect();
    // Both have spooled before the lock is free.
    let spool = cache.path().join("spool");
    wait_until("both results spooled", Duration::from_secs(20), || {
        walk_files(&spool) >= 2
    });
    assert!(holder.wait().unwrap().success());
    let outs: Vec<_> = calls
        .into_iter()
        .map(|c| {
            wait_output(c, Duration::from_secs(60), |_| {
                panic!("result-write still running")
            })
        })
        .collect();
    for (out, id) in outs.iter().zip([&a, &b]) {
        out.success();
        let lines = out.lines();
        assert!(
            lines.iter().any(|l| l["id"] == id.as_str()),
            "each call reports its own result: {}",
            out.stdout
        );
    }
    assert_eq!(repo.log().len(), before + 1, "one commit holds both");
    assert_eq!(repo.result(&a).unwrap()["status"], "succeeded");
    assert_eq!(repo.result(&b).unwrap()["status"], "succeeded");
    assert_eq!(walk_files(&spool), 0, "nothing left in the spool");
}

/// Regular files below `dir` (0 when it does not exist).
fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_files(&p)
            } else {
                usize::from(!p.file_name().unwrap().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

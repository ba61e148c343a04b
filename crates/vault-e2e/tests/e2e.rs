//! The whole system on the real testbed: dispatcher.sh piping the four built
//! tools, a real dockerd, git daemons on 127.0.0.1 and real age files, with
//! the faults a dispatcher host meets: a kill -9 mid-run, the git remote
//! going down, two dispatchers on one repo, dockerd restarting.
//!
//! Starts are counted from `docker events` (container creates carrying the
//! action's label), not from anything the tools say about themselves.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vault_core::time::parse_ms;
use vault_e2e::*;
use vault_testkit::{run_with, unique, wait_until, GitDaemon, OpsRepo, SecretStore, Testbed};

#[test]
fn approved_action_runs_once_with_its_secret_masked_and_a_second_pass_changes_nothing() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("v"));
    secrets.add("API_TOKEN", canary.as_bytes());
    secrets.add("OTHER", b"not-for-this-action");
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("ok");
    let since = now_s();
    repo.land_action(
        &id,
        &action(
            &id,
            &["API_TOKEN"],
            "ls /run/secrets; echo token=$(cat /run/secrets/API_TOKEN); cat /run/vault/action.json",
        ),
    );

    let out = site.once();
    out.success();
    let result = repo.result(&id).expect("result recorded");
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["dispatcher"], "host-a");
    let logs = result["logs"].as_str().unwrap();
    assert!(
        logs.contains("API_TOKEN"),
        "only the named secret is there: {logs}"
    );
    assert!(!logs.contains("OTHER"), "{logs}");
    assert!(
        logs.contains("token=***") || logs.contains("token=*"),
        "{logs}"
    );
    assert!(
        logs.contains("\"proposed_by\"") && logs.contains(id.as_str()),
        "action file visible: {logs}"
    );
    for text in [
        &out.stdout,
        &out.stderr,
        logs,
        &repo
            .show(&format!("vault/actions/{id}.result.json"))
            .unwrap(),
    ] {
        assert!(!text.contains(&canary), "secret leaked");
    }
    assert_eq!(creates(&id, since), 1);
    assert_eq!(
        container_state(&id),
        None,
        "container removed after the result landed"
    );
    assert!(site.mounts_left().is_empty(), "{:?}", site.mounts_left());

    let head = repo.head();
    site.once().success();
    assert_eq!(repo.head(), head, "a second pass changes nothing");
    assert_eq!(creates(&id, since), 1);
}

#[test]
fn invalid_and_unrunnable_actions_get_recorded_results_in_one_cycle() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let bad = unique("bad");
    let missing = unique("missing");
    let failing = unique("fails");
    let since = now_s();
    repo.land_actions(&[
        (
            bad.as_str(),
            format!(r#"{{"id":"{bad}","secrets":[],"command":["true"],"timeout":5}}"#),
        ),
        (&missing, action(&missing, &["NOT_THERE"], "true")),
        (&failing, action(&failing, &[], "echo oops; exit 3")),
    ]);
    let out = site.once();
    out.success();
    let r = repo.result(&bad).expect("rejected recorded");
    assert_eq!(r["status"], "rejected");
    assert!(
        r["error"].as_str().unwrap().contains("unknown field"),
        "{r}"
    );
    let r = repo.result(&missing).expect("error recorded");
    assert_eq!(r["status"], "error");
    assert!(r["error"].as_str().unwrap().contains("NOT_THERE"), "{r}");
    let r = repo.result(&failing).expect("failure recorded");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert!(r["logs"].as_str().unwrap().contains("oops"));
    assert_eq!(creates(&bad, since), 0);
    assert_eq!(creates(&missing, since), 0);
    assert_eq!(creates(&failing, since), 1);
    let head = repo.head();
    site.once().success();
    assert_eq!(repo.head(), head);
}

#[test]
fn kill_9_of_the_dispatcher_mid_run_never_starts_the_action_twice() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    secrets.add("TOKEN", b"kill-nine-secret");
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("k9");
    let since = now_s();
    repo.land_action(&id, &action(&id, &["TOKEN"], "sleep 12; echo finished"));

    let mut child = site.spawn();
    wait_until("the container to run", Duration::from_secs(120), || {
        container_state(&id).as_deref() == Some("running")
    });
    kill_group(child.id());
    let _ = child.wait();
    let claim = repo.result(&id).unwrap();
    assert_eq!(
        claim["status"], "running",
        "the claim was pushed first: {claim}"
    );

    // The next cycle reattaches (or collects) instead of starting again.
    let out = site.once();
    out.success();
    let r = repo.result(&id).unwrap();
    assert!(
        r["status"] == "succeeded" || r["status"] == "abandoned",
        "recovered or abandoned, never silent: {r}"
    );
    assert_eq!(creates(&id, since), 1, "exactly one start");
    assert!(
        site.mounts_left().is_empty(),
        "swept: {:?}",
        site.mounts_left()
    );
    assert_eq!(container_state(&id), None);
}

#[test]
fn git_remote_down_during_result_write_the_result_arrives_later() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let mut daemon = GitDaemon::start();
    let repo = OpsRepo::new_in(daemon.base.path(), &daemon.url());
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("down");
    let since = now_s();
    repo.land_action(&id, &action(&id, &[], "sleep 3; echo made-it"));

    let child = site.spawn();
    wait_until("the container to run", Duration::from_secs(120), || {
        container_state(&id).as_deref() == Some("running")
    });
    daemon.down();
    let out = finish(child, Duration::from_secs(180));
    out.fails_with_code(4);
    daemon.up();
    assert_eq!(repo.result(&id).unwrap()["status"], "running");

    site.once().success();
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(r["logs"].as_str().unwrap().contains("made-it"));
    assert_eq!(creates(&id, since), 1);
    assert_eq!(container_state(&id), None);
}

#[test]
fn two_dispatchers_on_one_repo_start_every_action_exactly_once() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    secrets.add("TOKEN", b"shared-secret-value");
    let a = Site::new(&tb, &repo.url, &secrets, "host-a");
    let b = Site::new(&tb, &repo.url, &secrets, "host-b");
    let ids: Vec<String> = (0..4).map(|_| unique("pair")).collect();
    let since = now_s();
    let actions: Vec<(&str, String)> = ids
        .iter()
        .map(|id| (id.as_str(), action(id, &["TOKEN"], "sleep 1; echo done")))
        .collect();
    repo.land_actions(&actions);

    let (ca, cb) = (a.spawn(), b.spawn());
    let oa = finish(ca, Duration::from_secs(240));
    let ob = finish(cb, Duration::from_secs(240));
    oa.success();
    ob.success();
    for id in &ids {
        let r = repo.result(id).unwrap();
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(creates(id, since), 1, "{id} started once");
    }
    let head = repo.head();
    a.once().success();
    b.once().success();
    assert_eq!(repo.head(), head);
}

#[test]
fn dockerd_restarting_mid_run_neither_hangs_nor_duplicates() {
    let _g = DOCKERD.write().unwrap_or_else(|e| e.into_inner());
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("dockerd");
    let since = now_s();
    repo.land_action(&id, &action(&id, &[], "sleep 20; echo survived"));

    let child = site.spawn();
    wait_until("the container to run", Duration::from_secs(120), || {
        container_state(&id).as_deref() == Some("running")
    });
    // dockerd keeps its event log in memory: count before the restart, and
    // again from the restart on.
    assert_eq!(creates(&id, since), 1);
    let restarted = now_s();
    restart_dockerd(&tb);
    let first = finish(child, Duration::from_secs(180)).stderr;
    // Whatever the first pass made of it, a final result lands within a
    // further pass, and the action was created once.
    if repo
        .result(&id)
        .map(|r| r["status"] == "running")
        .unwrap_or(true)
    {
        site.once();
    }
    let r = repo.result(&id).unwrap();
    // The daemon's shutdown killed the runner: a truthful outcome says it
    // ran and did not finish, never that it succeeded or never started.
    assert!(
        r["status"] == "failed" || r["status"] == "abandoned",
        "final result recorded: {r}; first pass: {first}"
    );
    assert_eq!(
        creates(&id, restarted),
        0,
        "not created again after the restart"
    );
}

fn restart_dockerd(tb: &Testbed) {
    let pidfile = tb.dir.join("docker/dockerd.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .expect("dockerd was started by scripts/testbed.sh (its pid file is missing)");
    let _ = Command::new("kill").arg(pid.trim()).status();
    wait_until("dockerd to stop", Duration::from_secs(60), || {
        !Path::new(&format!("/proc/{}", pid.trim())).exists()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbed.sh");
    let out = run_with(
        Command::new("bash").arg(script).arg("up"),
        b"",
        Duration::from_secs(120),
    );
    out.success();
}

#[test]
fn parallel_dispatch_runs_actions_side_by_side_and_records_each_once() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    secrets.add("TOKEN", b"parallel-secret-value");
    let site = Site::new(&tb, &repo.url, &secrets, "host-par");
    // In the order vault-scan lists them (by id, as strings: `par-…-10`
    // sorts before `par-…-9`), so that the first two are dispatched first.
    let mut ids: Vec<String> = (0..4).map(|_| unique("par")).collect();
    ids.sort();
    let since = now_s();
    // Each action sleeps 3 s; the last one also fails.
    let actions: Vec<(&str, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let script = if i == 3 {
                "sleep 3; exit 7"
            } else {
                "sleep 3; echo done"
            };
            (id.as_str(), action(id, &["TOKEN"], script))
        })
        .collect();
    repo.land_actions(&actions);

    let mut cmd = site.command();
    cmd.env("VAULT_PARALLEL", "2");
    let out = run_with(&mut cmd, b"", Duration::from_secs(240));
    out.success();
    let mut spans = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let r = repo.result(id).unwrap();
        let want = if i == 3 { "failed" } else { "succeeded" };
        assert_eq!(r["status"], want, "{r}");
        assert_eq!(creates(id, since), 1, "{id} started once");
        let ms = |field: &str| {
            let at = r[field].as_str().unwrap();
            parse_ms(at).unwrap_or_else(|| panic!("{field} is not an RFC 3339 time: {at}"))
        };
        spans.push((ms("started_at"), ms("finished_at")));
    }
    // Actions dispatched together ran side by side: the first two overlap
    // for most of their 3 s (one after the other, they would not at all).
    let overlap = spans[0]
        .1
        .min(spans[1].1)
        .saturating_sub(spans[0].0.max(spans[1].0));
    assert!(overlap >= 2000, "the first two ran side by side: {spans:?}");
    assert!(site.mounts_left().is_empty(), "{:?}", site.mounts_left());
    let head = repo.head();
    site.once().success();
    assert_eq!(repo.head(), head, "a second pass changes nothing");
}

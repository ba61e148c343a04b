//! The operator's view (issue 17) on the real testbed: `vault-status` (table
//! and JSON) over pending, running, succeeded, failed, rejected and stuck
//! actions; `result-write --abandon` settling a stuck claim and refusing a
//! fresh one or one whose container still runs; and dispatcher.sh's
//! Prometheus textfile, read by Prometheus' own Python parser, its counters
//! growing across cycles. Starts are counted from `docker events`.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use vault_e2e::*;
use vault_testkit::{
    bin, repo_tool, run, unique, wait_until, OpsRepo, Output, SecretStore, Testbed,
};

fn with_timeout(id: &str, script: &str, timeout_s: u64) -> String {
    let mut a: Value = serde_json::from_str(&action(id, &[], script)).unwrap();
    a["timeout_s"] = timeout_s.into();
    a.to_string()
}

/// A `running` claim by `dispatcher`, made `age_s` seconds ago.
fn claim(repo: &OpsRepo, id: &str, dispatcher: &str, age_s: u64) {
    let started = vault_core::time::rfc3339_secs(i64::try_from(now_s() - age_s).unwrap());
    let body = format!(
        r#"{{"schema":1,"id":"{id}","status":"running","dispatcher":"{dispatcher}","started_at":"{started}"}}"#
    );
    repo.commit(
        &[(
            &format!("vault/actions/{id}.result.json"),
            Some(body.as_bytes()),
        )],
        &format!("claim {id} by hand"),
    );
}

fn status(repo: &OpsRepo, args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = repo_tool("vault-status", &repo.url, "viewer", cache.path());
    cmd.args(args).env("VAULT_GRACE_S", "2");
    run(&mut cmd, b"")
}

fn rows(out: &Output) -> BTreeMap<String, Value> {
    out.lines()
        .into_iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l))
        .collect()
}

#[test]
fn vault_status_lists_pending_running_finished_and_stuck_actions() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let (ok, bad, rej) = (unique("st-ok"), unique("st-fail"), unique("st-rej"));
    let bogus = format!(r#"{{"id":"{rej}","secrets":[],"command":["true"],"bogus":1}}"#);
    repo.land_actions(&[
        (ok.as_str(), action(&ok, &[], "echo fine")),
        (bad.as_str(), action(&bad, &[], "exit 3")),
        (rej.as_str(), bogus),
    ]);
    site.once().success();
    let (busy, stuck, waiting) = (unique("st-run"), unique("st-stuck"), unique("st-pend"));
    repo.land_actions(&[
        (busy.as_str(), with_timeout(&busy, "true", 60)),
        (stuck.as_str(), with_timeout(&stuck, "true", 60)),
        (waiting.as_str(), action(&waiting, &[], "true")),
    ]);
    claim(&repo, &busy, "host-b", 5);
    claim(&repo, &stuck, "host-gone", 7200);

    let out = status(&repo, &["--json"]);
    out.success();
    let all = rows(&out);
    let st = |id: &str| all[id]["status"].as_str().unwrap().to_string();
    assert_eq!(st(&ok), "succeeded");
    assert_eq!(all[&ok]["exit_code"], 0);
    assert_eq!(all[&ok]["dispatcher"], "host-a");
    assert!(all[&ok]["duration_ms"].is_u64());
    assert_eq!(st(&bad), "failed");
    assert_eq!(all[&bad]["exit_code"], 3);
    assert_eq!(all[&bad]["reason"], "exited with 3");
    assert_eq!(st(&rej), "rejected");
    assert!(
        all[&rej]["reason"].as_str().unwrap().contains("bogus"),
        "{}",
        all[&rej]
    );
    assert_eq!(st(&busy), "running");
    assert_eq!(all[&busy]["dispatcher"], "host-b");
    assert!(all[&busy]["age_s"].as_u64().unwrap() < 600);
    assert_eq!(st(&stuck), "stuck");
    let why = all[&stuck]["reason"].as_str().unwrap();
    assert!(
        why.contains("host-gone") && why.contains("result-write --abandon"),
        "{why}"
    );
    assert!(all[&stuck]["age_s"].as_u64().unwrap() >= 7200);
    assert_eq!(st(&waiting), "pending");
    assert!(all[&waiting]["age_s"].as_u64().unwrap() < 600);
    for row in all.values() {
        for key in [
            "id",
            "status",
            "age_s",
            "since",
            "dispatcher",
            "duration_ms",
            "exit_code",
            "approver",
            "reason",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }

    // Filters.
    let only = rows(&status(&repo, &["--status", "stuck"]));
    assert_eq!(only.keys().collect::<Vec<_>>(), [&stuck]);
    let one = rows(&status(&repo, &["--id", &ok]));
    assert_eq!(one.keys().collect::<Vec<_>>(), [&ok]);
    let recent = rows(&status(&repo, &["--since", "0"]));
    assert!(
        !recent.contains_key(&ok),
        "finished before the window: left out"
    );
    assert!(recent.contains_key(&stuck) && recent.contains_key(&waiting));
    status(&repo, &["--status", "sleeping"]).fails_with_code(2);

    // On a terminal: the table (through `script`, which gives it a pty).
    let cache = tempfile::tempdir().unwrap();
    let cmdline = format!(
        "{} --repo {} --cache {} --dispatcher-id viewer",
        bin("vault-status").display(),
        repo.url,
        cache.path().display()
    );
    let out = run(
        Command::new("script").args(["-qec", &cmdline, "/dev/null"]),
        b"",
    );
    out.success();
    let table = out.stdout.replace('\r', "");
    let head = table.lines().next().unwrap();
    for col in [
        "ID",
        "STATUS",
        "AGE",
        "DISPATCHER",
        "DURATION",
        "EXIT",
        "APPROVER",
        "REASON",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let line = table.lines().find(|l| l.starts_with(&stuck)).expect(&table);
    assert!(
        line.contains("stuck") && line.contains("host-gone") && line.contains("2h"),
        "{line}"
    );
    let line = table.lines().find(|l| l.starts_with(&bad)).expect(&table);
    assert!(line.contains("failed") && line.contains(" 3 "), "{line}");
}

#[test]
fn abandon_settles_a_stuck_claim_and_refuses_a_fresh_one_or_a_running_container() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let (gone, fresh) = (unique("ab-gone"), unique("ab-fresh"));
    repo.land_actions(&[
        (gone.as_str(), with_timeout(&gone, "echo never", 60)),
        (fresh.as_str(), with_timeout(&fresh, "echo never", 60)),
    ]);
    claim(&repo, &gone, "host-gone", 7200);
    claim(&repo, &fresh, "host-b", 5);
    let since = now_s();

    // From an operator's machine (its own cache: no ledger of these ids).
    let cache = tempfile::tempdir().unwrap();
    let abandon = |id: &str, extra: &[&str]| {
        let mut cmd = repo_tool("result-write", &repo.url, "operator", cache.path());
        cmd.args(["--abandon", id])
            .args(extra)
            .env("VAULT_GRACE_S", "2");
        run(&mut cmd, b"")
    };
    abandon(&gone, &[]).fails_with_code(2);
    let head = repo.head();
    let out = abandon(&fresh, &["--reason", "looks stuck to me"]);
    out.fails_with_code(1);
    assert!(out.stderr.contains("is not stuck"), "{}", out.stderr);
    assert_eq!(repo.head(), head, "nothing written");

    let out = abandon(&gone, &["--reason", "host-gone was decommissioned"]);
    out.success();
    assert_eq!(out.lines()[0]["status"], "abandoned", "{}", out.stdout);
    let r = repo.result(&gone).unwrap();
    assert_eq!(r["status"], "abandoned");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("host-gone was decommissioned") && err.contains("host-gone"),
        "{err}"
    );
    // Settled: a second call finds nothing to settle.
    abandon(&gone, &["--reason", "again"]).fails_with_code(1);
    // The dispatcher never starts it (nor the claimed one).
    site.once().success();
    assert_eq!(creates(&gone, since), 0, "an abandoned action never starts");
    assert_eq!(repo.result(&gone).unwrap()["status"], "abandoned");

    // --force settles a claim that is not stuck yet.
    abandon(&fresh, &["--reason", "host-b is gone", "--force"]).success();
    assert_eq!(repo.result(&fresh).unwrap()["status"], "abandoned");

    // On the host whose container still runs: refused, even with --force.
    let sleeper = unique("ab-run");
    repo.land_action(&sleeper, &with_timeout(&sleeper, "sleep 6; echo done", 60));
    let child = site.spawn();
    wait_until("the container runs", Duration::from_secs(60), || {
        container_state(&sleeper).as_deref() == Some("running")
    });
    let mut cmd = repo_tool("result-write", &repo.url, "host-a", site.cache.path());
    cmd.args(["--abandon", &sleeper, "--reason", "impatient", "--force"]);
    let out = run(&mut cmd, b"");
    out.fails_with_code(1);
    assert!(
        out.stderr.contains("may still be running"),
        "{}",
        out.stderr
    );
    let out = finish(child, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(repo.result(&sleeper).unwrap()["status"], "succeeded");

    // A claim queued on its host behind another action (one at a time),
    // settled by an operator meanwhile: it is confirmed before it would
    // start, and does not start.
    let (first, queued) = (unique("ab-first"), unique("ab-queued"));
    repo.land_actions(&[
        (first.as_str(), with_timeout(&first, "sleep 5", 60)),
        (queued.as_str(), action(&queued, &[], "echo queued")),
    ]);
    let since = now_s();
    let child = site.spawn();
    wait_until("the first container runs", Duration::from_secs(60), || {
        container_state(&first).as_deref() == Some("running")
    });
    assert_eq!(
        repo.result(&queued).unwrap()["status"],
        "running",
        "claimed in the cycle's batch"
    );
    abandon(&queued, &["--reason", "not wanted after all", "--force"]).success();
    let out = finish(child, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(repo.result(&first).unwrap()["status"], "succeeded");
    assert_eq!(repo.result(&queued).unwrap()["status"], "abandoned");
    assert_eq!(
        creates(&queued, since),
        0,
        "a settled queued claim never starts"
    );
}

/// The metrics file as Prometheus' Python parser reads it: sample (name
/// and labels) → value.
fn parse_metrics(path: &std::path::Path) -> BTreeMap<String, f64> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let out = run(
        Command::new("/usr/bin/python3")
            .args(["-c", PARSE])
            .arg(path),
        b"",
    );
    out.success();
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_metrics_file_parses_as_prometheus_text_and_counts_across_cycles() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault_dispatch.prom");
    site.extra_env
        .push(("VAULT_METRICS_FILE".into(), file.display().to_string()));
    let ids: Vec<String> = ["ok", "fail", "rej", "err", "slow"]
        .iter()
        .map(|k| unique(&format!("m-{k}")))
        .collect();
    let bogus = format!(
        r#"{{"id":"{}","secrets":[],"command":["true"],"bogus":1}}"#,
        ids[2]
    );
    repo.land_actions(&[
        (ids[0].as_str(), action(&ids[0], &[], "echo fine")),
        (ids[1].as_str(), action(&ids[1], &[], "exit 1")),
        (ids[2].as_str(), bogus),
        (
            ids[3].as_str(),
            action(&ids[3], &["NOT_IN_THE_STORE"], "true"),
        ),
        (ids[4].as_str(), with_timeout(&ids[4], "sleep 30", 1)),
    ]);
    let before = now_s();
    site.once().success();
    let m = parse_metrics(&file);
    let p = "vault_dispatch_";
    let get = |m: &BTreeMap<String, f64>, k: &str| {
        *m.get(&format!("{p}{k}"))
            .unwrap_or_else(|| panic!("{p}{k} missing: {m:?}"))
    };
    for status in ["succeeded", "failed", "rejected", "error", "timed_out"] {
        assert_eq!(
            get(&m, &format!("actions_total{{status=\"{status}\"}}")),
            1.0,
            "{status}: {m:?}"
        );
    }
    assert_eq!(get(&m, "actions_total{status=\"abandoned\"}"), 0.0);
    assert_eq!(get(&m, "cycles_total{outcome=\"ok\"}"), 1.0);
    assert!(get(&m, "last_success_timestamp_seconds") >= before as f64);
    assert!(get(&m, "cycle_duration_seconds") > 0.0);
    assert_eq!(get(&m, "action_duration_seconds_count"), 5.0);
    let recorded: f64 = ids
        .iter()
        .map(|id| repo.result(id).unwrap()["duration_ms"].as_f64().unwrap() / 1000.0)
        .sum();
    let sum = get(&m, "action_duration_seconds_sum");
    assert!(
        (sum - recorded).abs() < 0.01,
        "{sum} against the results' {recorded}"
    );
    assert_eq!(get(&m, "action_duration_seconds_bucket{le=\"+Inf\"}"), 5.0);
    assert_eq!(get(&m, "pending_actions"), 0.0);
    assert_eq!(get(&m, "stuck_actions"), 0.0);
    assert_eq!(get(&m, "spool_results"), 0.0);
    assert_eq!(get(&m, "claim_races_lost_total"), 0.0);

    // Second cycle: a deleted result (recorded abandoned), one more success,
    // a stuck claim of another host, an action left pending by a claim race
    // lost is not made here (claims are atomic pushes).
    repo.commit(
        &[(&format!("vault/actions/{}.result.json", ids[0]), None)],
        "delete a result",
    );
    let (again, stuck) = (unique("m-ok2"), unique("m-stuck"));
    repo.land_actions(&[
        (again.as_str(), action(&again, &[], "echo again")),
        (stuck.as_str(), with_timeout(&stuck, "true", 1)),
    ]);
    claim(&repo, &stuck, "host-gone", 3600);
    let first_success = get(&m, "last_success_timestamp_seconds");
    site.once().success();
    let m2 = parse_metrics(&file);
    assert_eq!(
        get(&m2, "actions_total{status=\"succeeded\"}"),
        2.0,
        "{m2:?}"
    );
    assert_eq!(get(&m2, "actions_total{status=\"abandoned\"}"), 1.0);
    assert_eq!(
        get(&m2, "actions_total{status=\"failed\"}"),
        1.0,
        "counters keep their count"
    );
    assert_eq!(get(&m2, "cycles_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(get(&m2, "action_duration_seconds_count"), 7.0);
    assert_eq!(get(&m2, "stuck_actions"), 1.0);
    assert!(get(&m2, "last_success_timestamp_seconds") >= first_success);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        ["vault_dispatch.prom"],
        "replaced by a rename, no temp file left"
    );
}

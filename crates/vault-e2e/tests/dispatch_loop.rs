//! dispatcher.sh's loop and pool on the real testbed: SIGUSR1 starts a
//! cycle at once, and `VAULT_PARALLEL` is a pool (the next action starts as
//! soon as one ends, not when a whole wave has). Order is read from
//! `docker events`, not from what the tools say.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;
use vault_e2e::*;
use vault_testkit::{docker, unique, wait_until, OpsRepo, SecretStore, Testbed};

#[test]
fn sigusr1_starts_a_cycle_at_once() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    // Without a wake, the next cycle would come in ten minutes.
    site.extra_env.push(("VAULT_INTERVAL".into(), "600".into()));
    let mut child = site
        .command_with(&[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first cycle is over once vault-scan remembered a tip.
    let tip_written = || {
        std::fs::read_dir(site.cache.path().join("repos"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "tip"))
            })
            .unwrap_or(false)
    };
    wait_until("the first cycle", Duration::from_secs(60), tip_written);
    std::thread::sleep(Duration::from_millis(500));
    let id = unique("woken");
    repo.land_action(&id, &action(&id, &[], "echo ran"));
    let kill = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_until("the woken cycle to record", Duration::from_secs(60), || {
        repo.result(&id).is_some_and(|r| r["status"] != "running")
    });
    assert_eq!(repo.result(&id).unwrap()["status"], "succeeded");
    let _ = child.kill();
    let _ = child.wait();
}

/// Unix nanoseconds of each `event` of the containers of `ids` since
/// `since`, by id.
fn event_times(event: &str, since: u64, ids: &[&String]) -> Vec<u128> {
    let out = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &now_s().to_string(),
        "--filter",
        &format!("event={event}"),
        "--filter",
        "label=vault.managed=1",
        "--format",
        "{{.TimeNano}} {{index .Actor.Attributes \"vault.action\"}}",
    ]);
    ids.iter()
        .map(|id| {
            out.stdout
                .lines()
                .find_map(|l| {
                    let (t, who) = l.split_once(' ')?;
                    (who == id.as_str()).then(|| t.parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no {event} event of {id}: {}", out.stdout))
        })
        .collect()
}

#[test]
fn a_pool_starts_the_next_action_when_one_ends() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let mut site = Site::new(&tb, &repo.url, &secrets, "host-a");
    site.extra_env.push(("VAULT_PARALLEL".into(), "2".into()));
    let since = now_s();
    // Ids sort in dispatch order: a slow one first, then three quick ones.
    let p = unique("pool");
    let slow = format!("{p}-a");
    let quick: Vec<String> = ["b", "c", "d"].iter().map(|x| format!("{p}-{x}")).collect();
    let mut actions = vec![(slow.clone(), action(&slow, &[], "sleep 8"))];
    for q in &quick {
        actions.push((q.clone(), action(q, &[], "echo quick")));
    }
    let landed: Vec<(&str, &str)> = actions
        .iter()
        .map(|(i, a)| (i.as_str(), a.as_str()))
        .collect();
    repo.land_actions(&landed);
    site.once().success();
    for (id, _) in &actions {
        assert_eq!(repo.result(id).unwrap()["status"], "succeeded", "{id}");
        assert_eq!(creates(id, since), 1, "{id} started once");
    }
    // In waves of two, c and d would wait for the slow a to end; in a pool
    // they run in the other slot while it sleeps.
    let slow_died = event_times("die", since, &[&slow])[0];
    let starts = event_times("start", since, &quick.iter().collect::<Vec<_>>());
    for (q, t) in quick.iter().zip(starts) {
        assert!(t < slow_died, "{q} started after the slow action ended");
    }
}

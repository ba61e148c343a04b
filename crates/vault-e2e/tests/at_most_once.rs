//! At most once, whatever is done to the ops repo, and no secret in any
//! output: the whole pipeline (dispatcher.sh and the four tools) on the
//! real testbed, against someone with push access who deletes a result,
//! turns a final result back into a claim, force-pushes the branch, or
//! lands ambiguous input; and runners that print a secret split across
//! stdout and stderr or as wrapped base64.
//!
//! Starts are counted from `docker events`, not from what the tools say.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;
use vault_e2e::*;
use vault_testkit::{bin, run_with, spawn_fed, unique, OpsRepo, Output, SecretStore, Testbed};

fn result_path(id: &str) -> String {
    format!("vault/actions/{id}.result.json")
}

/// Land `id`, run one cycle, check it succeeded once; returns the commit
/// that landed it.
fn land_and_run(repo: &OpsRepo, site: &Site, id: &str, since: u64) -> String {
    let landed = repo.land_action(id, &action(id, &[], "echo ran"));
    site.once().success();
    let r = repo.result(id).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(creates(id, since), 1);
    landed
}

#[test]
fn a_deleted_result_or_a_final_turned_claim_never_runs_again() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("pay");
    let since = now_s();
    land_and_run(&repo, &site, &id, since);

    // Someone with push access deletes the result.
    repo.commit(&[(&result_path(&id), None)], "delete the result");
    let out = site.once();
    out.success();
    let r = repo.result(&id).expect("a final result again");
    assert_eq!(r["status"], "abandoned", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("started at") && err.contains("host-a"),
        "{err}"
    );
    assert!(err.contains(&format!("vault-{id}")), "{err}");
    assert_eq!(creates(&id, since), 1, "never started a second time");

    // Then replaces the final result with a claim under our own id.
    let claim = format!(r#"{{"schema":1,"id":"{id}","status":"running","dispatcher":"host-a"}}"#);
    repo.commit(
        &[(&result_path(&id), Some(claim.as_bytes()))],
        "back to running",
    );
    let out = site.once();
    out.success();
    assert!(
        out.stderr.contains("turned back into a running claim"),
        "{}",
        out.stderr
    );
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "abandoned", "{r}");
    assert_eq!(creates(&id, since), 1, "never started a second time");
    let head = repo.head();
    site.once().success();
    assert_eq!(repo.head(), head, "settled: a further pass changes nothing");
}

#[test]
fn a_fresh_cache_learns_from_history_that_a_deleted_result_ran() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let a = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("deploy");
    let since = now_s();
    land_and_run(&repo, &a, &id, since);
    repo.commit(&[(&result_path(&id), None)], "delete the result");

    // A second dispatcher with an empty cache (a new host, a wiped disk).
    let b = Site::new(&tb, &repo.url, &secrets, "host-b");
    b.once().success();
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "abandoned", "{r}");
    assert_eq!(r["dispatcher"], "host-b");
    assert!(
        r["error"].as_str().unwrap().contains("had a final result"),
        "{r}"
    );
    assert_eq!(creates(&id, since), 1, "never started a second time");
}

/// `vault-scan` with the site's settings and extra flags.
fn site_scan(site: &Site, flags: &[&str]) -> Output {
    let mut cmd = Command::new(bin("vault-scan"));
    cmd.args(flags)
        .env("VAULT_REPO", &site.url)
        .env("VAULT_CACHE", site.cache.path())
        .env("VAULT_DISPATCHER_ID", &site.id);
    run_with(&mut cmd, b"", Duration::from_secs(120))
}

#[test]
fn a_force_push_that_drops_a_result_is_held_until_accepted_and_never_reruns() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("publish");
    let since = now_s();
    let landed = land_and_run(&repo, &site, &id, since);
    let seen = repo.head();

    // Rewrite the branch to before the result (and land something new).
    repo.force_push(&landed);
    let other = unique("other");
    let tip = repo.land_action(&other, &action(&other, &[], "echo other"));
    let out = site.once();
    out.fails_with_code(6);
    assert!(
        out.stderr.contains(&seen) && out.stderr.contains(&tip),
        "{}",
        out.stderr
    );
    assert_eq!(repo.head(), tip, "nothing recorded");
    assert_eq!(creates(&id, since) + creates(&other, since), 1);
    site.once().fails_with_code(6);

    // The operator checks the new history and accepts it.
    let accepted = site_scan(&site, &["--accept-rewrite", &tip]);
    accepted.success();
    assert!(
        accepted.stderr.contains(&format!(
            "{id}: its final result was deleted by the rewrite"
        )),
        "{}",
        accepted.stderr
    );
    site.once().success();
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "abandoned", "{r}");
    assert!(r["error"].as_str().unwrap().contains("started at"), "{r}");
    assert_eq!(creates(&id, since), 1, "never started a second time");
    assert_eq!(repo.result(&other).unwrap()["status"], "succeeded");
    assert_eq!(creates(&other, since), 1);
}

#[test]
fn a_duplicate_env_key_or_tree_entry_is_rejected_not_resolved() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let since = now_s();

    let dup_env = unique("dupenv");
    repo.land_action(
        &dup_env,
        &format!(
            r#"{{"id":"{dup_env}","secrets":[],"env":{{"TARGET":"staging","TARGET":"production"}},"command":["sh","-c","echo $TARGET"]}}"#
        ),
    );
    site.once().success();
    let r = repo.result(&dup_env).unwrap();
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("duplicate key \"TARGET\""),
        "{r}"
    );
    assert_eq!(creates(&dup_env, since), 0);

    // Two entries named <id>.json: `git show` and the dispatcher could
    // each read another one.
    let dup = unique("duptree");
    let blob = |content: &str| -> Vec<u8> {
        let mut child = spawn_fed(
            Command::new("git")
                .arg("--git-dir")
                .arg(&repo.bare)
                .args(["hash-object", "-w", "--stdin"])
                .stdout(std::process::Stdio::piped()),
            content.as_bytes(),
        );
        let mut hex = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut hex).unwrap();
        assert!(child.wait().unwrap().success());
        (0..20)
            .map(|i| u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    let mut raw = Vec::new();
    for script in ["echo safe", "echo dangerous"] {
        raw.extend_from_slice(format!("100644 {dup}.json\0").as_bytes());
        raw.extend(blob(&action(&dup, &[], script)));
    }
    repo.land_raw_actions_tree(&raw, "two entries of one name");
    let out = site.once();
    out.success();
    let r = repo.result(&dup).unwrap();
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(r["error"].as_str().unwrap().contains("ambiguous"), "{r}");
    assert!(out.stderr.contains("ambiguous"), "{}", out.stderr);
    assert_eq!(creates(&dup, since), 0);
}

/// The base64 of `value` as the `base64` CLI prints it, wrapped at `cols`.
fn wrapped_base64(value: &[u8], cols: usize) -> Vec<String> {
    let mut child = spawn_fed(
        Command::new("base64")
            .arg(format!("--wrap={cols}"))
            .stdout(std::process::Stdio::piped()),
        value,
    );
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert!(child.wait().unwrap().success());
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_secret_split_across_streams_or_wrapped_in_base64_never_leaks() {
    let _g = shared_dockerd();
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    // Long enough that its base64 wraps at 64 and 76 columns.
    let canary = format!("canary-{}-{}", unique("split"), "x7Qp".repeat(24));
    secrets.add("KEY", canary.as_bytes());
    let site = Site::new(&tb, &repo.url, &secrets, "host-a");
    let id = unique("leaky");
    let half = canary.len() / 2;
    let script = format!(
        "v=$(cat /run/secrets/KEY); \
         printf '%s' \"$(echo \"$v\" | cut -c1-{half})\"; \
         printf '%s' \"$(echo \"$v\" | cut -c{}-)\" >&2; \
         echo; base64 /run/secrets/KEY; \
         base64 -w 64 /run/secrets/KEY; \
         base64 /run/secrets/KEY | awk '{{printf \"%s\\r\\n\", $0}}'; \
         base64 -w 64 /run/secrets/KEY | awk '{{printf \"%s\\r\\n\", $0}}'; \
         echo done",
        half + 1
    );
    repo.land_action(&id, &action(&id, &["KEY"], &script));
    let out = site.once();
    out.success();
    let r = repo.result(&id).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    let logs = r["logs"].as_str().unwrap();
    assert!(logs.contains("done"), "the script ran to its end: {logs}");
    let file = repo.show(&result_path(&id)).unwrap();
    let mut needles = vec![canary.clone()];
    for cols in [64, 76] {
        for line in wrapped_base64(canary.as_bytes(), cols) {
            // The last line may be a short tail; the full lines each
            // give away 48 or 57 bytes of the secret.
            if line.len() >= 16 {
                needles.push(line);
            }
        }
    }
    assert!(needles.len() >= 5, "{needles:?}");
    for text in [&out.stdout, &out.stderr, logs, &file] {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "leaked {n:?} in {text}");
        }
    }
}

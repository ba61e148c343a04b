//! The testbed's parts answer: a container runs on its dockerd, a push
//! lands on its git daemon, and age round-trips a secret.

use std::process::Command;
use vault_testkit::{docker, run, OpsRepo, SecretStore, Testbed};

#[test]
fn container_runs_on_the_bench_dockerd() {
    let tb = Testbed::get();
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "65534:65534",
        "--read-only",
        "--cap-drop",
        "ALL",
        &tb.image,
        "sh",
        "-c",
        "id -u; exit 3",
    ]);
    out.fails_with_code(3);
    assert_eq!(out.stdout.trim(), "65534");
}

#[test]
fn push_lands_on_the_bench_git_daemon() {
    let tb = Testbed::get();
    let repo = OpsRepo::new(&tb);
    assert!(repo.url.starts_with("git://127.0.0.1:"), "{}", repo.url);
    let before = repo.log().len();
    let sha = repo.land_action("a1", r#"{"id":"a1","secrets":[],"command":["true"]}"#);
    assert_eq!(repo.head(), sha);
    assert_eq!(repo.log().len(), before + 1);
    assert!(repo
        .show("vault/actions/a1.json")
        .unwrap()
        .contains("\"a1\""));
    assert!(repo.show("vault/actions/nope.json").is_none());
}

#[test]
fn age_round_trips_a_secret() {
    let store = SecretStore::new();
    let path = store.add("TOKEN", b"s3cr3t-value");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!String::from_utf8_lossy(&bytes).contains("s3cr3t-value"));
    let out = run(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&store.identity)
            .arg(&path),
        b"",
    );
    out.success();
    assert_eq!(out.stdout, "s3cr3t-value");
}

//! Actions run against an exact commit of a code repository (`checkout`),
//! on the real testbed: dispatcher.sh and the four tools, a real dockerd,
//! the ops repo on the testbed's git daemon and the code repo on a git
//! daemon of the test's own on 127.0.0.1, the dispatcher's checkout config
//! allowing only that daemon's `code/` folder.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use vault_e2e::*;
use vault_testkit::{
    bin, git, run_with, unique, wait_until, GitDaemon, OpsRepo, SecretStore, Testbed,
};

/// A code repo served by `daemon` at `code/<name>.git`, with a scratch
/// clone to commit to it.
struct CodeRepo {
    url: String,
    bare: PathBuf,
    work: tempfile::TempDir,
}

impl CodeRepo {
    fn new(daemon: &GitDaemon) -> CodeRepo {
        let name = format!("{}.git", unique("lib"));
        let bare = daemon.base.path().join("code").join(&name);
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "-q", "-b", "main"]);
        let url = format!("{}/code/{name}", daemon.url());
        git(work.path(), &["remote", "add", "origin", &url]);
        CodeRepo { url, bare, work }
    }

    /// Commit `files` on `branch` (created from the current commit when
    /// new) and push it; returns the commit id.
    fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let w = self.work.path();
        git(w, &["checkout", "-q", "-B", branch]);
        for (path, text) in files {
            let p = w.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(w, &["add", "-A"]);
        git(
            w,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "--no-gpg-sign",
                "-m",
                message,
            ],
        );
        git(w, &["push", "-q", "origin", branch]);
        git(w, &["rev-parse", "HEAD"])
    }

    /// `git rev-parse` in the served repo (`None`: no such ref).
    fn rev(&self, what: &str) -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.bare)
            .args(["rev-parse", "--verify", "-q", what])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The dispatcher's checkout config: `daemon`'s `code/` folder, tags
/// `v*` and branch `release` pushable.
fn config(dir: &Path, daemon: &GitDaemon) -> PathBuf {
    let p = dir.join("checkout.toml");
    std::fs::write(
        &p,
        format!(
            "max_bytes = 1048576\nfetch_timeout_s = 30\nkeep_failed_s = 3600\n\n[[repos]]\nprefix = \"{}/code/\"\npush = [\"refs/tags/v*\", \"refs/heads/release\"]\n",
            daemon.url()
        ),
    )
    .unwrap();
    p
}

fn checkout_action(
    id: &str,
    secrets: &[&str],
    script: &str,
    checkout: serde_json::Value,
) -> String {
    serde_json::json!({
        "id": id,
        "secrets": secrets,
        "command": ["sh", "-c", script],
        "checkout": checkout,
    })
    .to_string()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if meta.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p);
            }
        }
    }
    hits
}

struct Bench {
    tb: Testbed,
    daemon: GitDaemon,
    code: CodeRepo,
    ops: OpsRepo,
    secrets: SecretStore,
    canary: String,
    site: Site,
    conf_dir: tempfile::TempDir,
}

fn bench() -> Bench {
    let tb = Testbed::get();
    let daemon = GitDaemon::start();
    let code = CodeRepo::new(&daemon);
    let ops = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let canary = format!("canary-{}", unique("tok"));
    secrets.add("TOKEN", canary.as_bytes());
    let conf_dir = tempfile::tempdir().unwrap();
    let mut site = Site::new(&tb, &ops.url, &secrets, "host-co");
    site.extra_env.push((
        "VAULT_CHECKOUT_CONFIG".into(),
        config(conf_dir.path(), &daemon).display().to_string(),
    ));
    Bench {
        tb,
        daemon,
        code,
        ops,
        secrets,
        canary,
        site,
        conf_dir,
    }
}

#[test]
fn the_runner_reads_the_pinned_commit_and_bad_checkouts_never_start() {
    let _g = shared_dockerd();
    let b = bench();
    let reviewed = b.code.commit("main", &[("VERSION", "1.4.0\n")], "v1.4.0");
    // The branch moves on after the review: the run must not see it.
    b.code.commit("main", &[("VERSION", "2.0.0-dev\n")], "next");
    let (read, missing, outside, bad_ref) = (
        unique("co-read"),
        unique("co-missing"),
        unique("co-outside"),
        unique("co-ref"),
    );
    let since = now_s();
    let pin = |repo: &str, commit: &str| serde_json::json!({"repo": repo, "commit": commit});
    let other_url = format!("{}/elsewhere/x.git", b.daemon.url());
    b.ops.land_actions(&[
        (
            read.as_str(),
            checkout_action(
                &read,
                &["TOKEN"],
                "cat /workspace/VERSION; if touch /workspace/x 2>/dev/null; then echo writable; else echo read-only; fi",
                pin(&b.code.url, &reviewed),
            ),
        ),
        (
            missing.as_str(),
            checkout_action(
                &missing,
                &[],
                "echo should-not-run",
                pin(&b.code.url, "0123456789abcdef0123456789abcdef01234567"),
            ),
        ),
        (
            outside.as_str(),
            checkout_action(&outside, &[], "echo should-not-run", pin(&other_url, &reviewed)),
        ),
        (
            bad_ref.as_str(),
            checkout_action(
                &bad_ref,
                &[],
                "echo should-not-run",
                serde_json::json!({"repo": b.code.url, "commit": reviewed, "push": {"ref": "refs/heads/main"}}),
            ),
        ),
    ]);

    let out = b.site.once();
    let r = b.ops.result(&read).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    let logs = r["logs"].as_str().unwrap();
    assert!(logs.contains("1.4.0"), "the reviewed commit's file: {logs}");
    assert!(!logs.contains("2.0.0"), "not the branch's tip: {logs}");
    assert!(logs.contains("read-only"), "mounted read-only: {logs}");
    assert_eq!(r["checkout"]["commit"], reviewed.as_str(), "{r}");
    assert_eq!(r["checkout"]["repo"], b.code.url.as_str());
    assert!(r["checkout"].get("pushed").is_none(), "{r}");
    assert_eq!(creates(&read, since), 1);
    let ws = b.site.cache.path().join("checkouts").join(&read);
    assert!(!ws.exists(), "the workspace went with `run-action rm`");

    let r = b.ops.result(&missing).expect("result recorded");
    assert_eq!(r["status"], "error", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("0123456789abcdef0123456789abcdef01234567 is not in"),
        "{err}"
    );
    assert_eq!(creates(&missing, since), 0, "nothing started");
    assert!(!b
        .site
        .cache
        .path()
        .join("checkouts")
        .join(&missing)
        .exists());
    assert!(
        !b.site
            .cache
            .path()
            .join("ledger")
            .join(format!("{missing}.json"))
            .exists(),
        "a fetch that failed leaves the id unstarted"
    );

    let r = b.ops.result(&outside).expect("result recorded");
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("not under any allowed prefix"),
        "{r}"
    );
    assert_eq!(creates(&outside, since), 0);

    let r = b.ops.result(&bad_ref).expect("result recorded");
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("refs/heads/main"),
        "{r}"
    );
    assert_eq!(creates(&bad_ref, since), 0);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(&b.canary), "secret leaked");
    }
    let _ = (&b.tb, &b.secrets);
}

#[test]
fn a_writable_workspace_is_pushed_as_a_tag_a_lost_race_is_kept_and_a_secret_is_never_pushed() {
    let _g = shared_dockerd();
    let b = bench();
    let reviewed = b.code.commit("main", &[("VERSION", "1.4.0\n")], "v1.4.0");
    b.code.commit("release", &[], "release branch");
    // The release branch moves after the review: a push on top of the
    // reviewed commit loses that race.
    let moved = b
        .code
        .commit("release", &[("HOTFIX", "someone else\n")], "hotfix");
    let (tag, race, leak, scratch) = (
        unique("co-tag"),
        unique("co-race"),
        unique("co-leak"),
        unique("co-scratch"),
    );
    let since = now_s();
    let writable = |push: &str| {
        serde_json::json!({"repo": b.code.url, "commit": reviewed, "path": "/src/lib",
                           "writable": true, "push": {"ref": push}})
    };
    b.ops.land_actions(&[
        (
            tag.as_str(),
            checkout_action(
                &tag,
                &["TOKEN"],
                "cd /src/lib && echo built-$(cat VERSION) > BUILD && mkdir -p dist && echo x > dist/out && echo done",
                writable("refs/tags/v1.4.0"),
            ),
        ),
        (
            race.as_str(),
            checkout_action(
                &race,
                &[],
                "echo mine > /src/lib/CHANGE",
                writable("refs/heads/release"),
            ),
        ),
        (
            leak.as_str(),
            checkout_action(
                &leak,
                &["TOKEN"],
                "cp /run/secrets/TOKEN /src/lib/leak",
                writable("refs/tags/v9.9.9"),
            ),
        ),
        (
            scratch.as_str(),
            checkout_action(
                &scratch,
                &["TOKEN"],
                "cp /run/secrets/TOKEN /workspace/scratch && echo copied",
                serde_json::json!({"repo": b.code.url, "commit": reviewed, "writable": true}),
            ),
        ),
    ]);

    let out = b.site.once();

    // Pushed as a new tag: one commit on top of the reviewed one.
    let r = b.ops.result(&tag).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    let pushed = r["checkout"]["pushed"]["commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r["checkout"]["pushed"]["ref"], "refs/tags/v1.4.0");
    assert_eq!(
        b.code.rev("refs/tags/v1.4.0").as_deref(),
        Some(pushed.as_str())
    );
    assert_eq!(
        b.code.rev(&format!("{pushed}^")).as_deref(),
        Some(reviewed.as_str()),
        "its parent is the reviewed commit"
    );
    assert_eq!(
        git(&b.code.bare, &["show", &format!("{pushed}:BUILD")]),
        "built-1.4.0"
    );
    assert_eq!(
        git(&b.code.bare, &["show", &format!("{pushed}:dist/out")]),
        "x"
    );
    let tree = git(&b.code.bare, &["ls-tree", "-r", "--name-only", &pushed]);
    assert_eq!(
        tree.lines().collect::<Vec<_>>(),
        ["BUILD", "VERSION", "dist/out"],
        "exactly the workspace's files"
    );
    let grep = std::process::Command::new("git")
        .arg("-C")
        .arg(&b.code.bare)
        .args(["grep", "-q", "-F", &b.canary, &pushed])
        .status()
        .unwrap();
    assert!(!grep.success(), "no secret in the pushed tree");
    assert!(!b.site.cache.path().join("checkouts").join(&tag).exists());

    // The lost race: failed, nothing moved, the workspace kept.
    let r = b.ops.result(&race).expect("result recorded");
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 0, "the run itself succeeded");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("not a fast-forward"), "{err}");
    assert_eq!(
        b.code.rev("refs/heads/release").as_deref(),
        Some(moved.as_str())
    );
    let kept = PathBuf::from(r["checkout"]["kept"]["path"].as_str().unwrap());
    assert_eq!(kept, b.site.cache.path().join("checkouts").join(&race));
    assert_eq!(
        std::fs::read_to_string(kept.join("work/CHANGE")).unwrap(),
        "mine\n",
        "kept for inspection after `run-action rm`"
    );
    assert!(r["checkout"]["kept"]["until"].as_str().is_some());

    // A secret copied into the workspace: never pushed, never kept.
    let r = b.ops.result(&leak).expect("result recorded");
    assert_eq!(r["status"], "failed", "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("a secret value (in leak)"), "{err}");
    assert_eq!(b.code.rev("refs/tags/v9.9.9"), None, "not pushed");
    assert!(!b.site.cache.path().join("checkouts").join(&leak).exists());

    // Writable without a push: it ran, and its workspace is gone.
    let r = b.ops.result(&scratch).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(r["logs"].as_str().unwrap().contains("copied"), "{r}");
    assert!(!b
        .site
        .cache
        .path()
        .join("checkouts")
        .join(&scratch)
        .exists());

    // Nothing under the cache holds the secret (only the memory-only
    // secrets folder ever did), nor any output.
    assert!(files_containing(b.site.cache.path(), b.canary.as_bytes()).is_empty());
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(&b.canary), "secret leaked");
    }
    assert_eq!(creates(&tag, since), 1);
    assert_eq!(creates(&race, since), 1);

    // `run-action sweep`: a kept workspace goes once its time is up, and an
    // orphan (no container) once older than the retention (0 s here); the
    // locks folder is no workspace.
    std::fs::write(kept.join("kept-until"), "1\n").unwrap();
    let orphan = b
        .site
        .cache
        .path()
        .join("checkouts")
        .join(unique("co-orphan"));
    std::fs::create_dir_all(orphan.join("work")).unwrap();
    let conf = b.conf_dir.path().join("sweep.toml");
    std::fs::write(&conf, "keep_failed_s = 0\n").unwrap();
    let out = run_with(
        std::process::Command::new(bin("run-action"))
            .arg("sweep")
            .env("VAULT_CACHE", b.site.cache.path())
            .env("VAULT_CHECKOUT_CONFIG", &conf),
        b"",
        Duration::from_secs(60),
    );
    out.success();
    assert!(!kept.exists(), "{}", out.stderr);
    assert!(!orphan.exists(), "{}", out.stderr);
    assert!(b.site.cache.path().join("checkouts/.locks").is_dir());
    let _ = (&b.tb, &b.secrets);
}

/// Every path under `dir` whose name contains `needle`.
fn names_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            hits.push(p.clone());
        }
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            hits.extend(names_containing(&p, needle));
        }
    }
    hits
}

#[test]
fn a_workspace_not_checked_to_the_end_is_removed_and_a_secret_file_name_is_never_pushed_or_shown() {
    let _g = shared_dockerd();
    let b = bench();
    let reviewed = b.code.commit("main", &[("VERSION", "1.4.0\n")], "v1.4.0");
    let (gitdir, named) = (unique("co-gitdir"), unique("co-named"));
    let since = now_s();
    let writable = |push: &str| {
        serde_json::json!({"repo": b.code.url, "commit": reviewed, "writable": true,
                           "push": {"ref": push}})
    };
    b.ops.land_actions(&[
        (
            // The secret sits behind a `.git` entry, which stops the
            // snapshot before the secret check ever reads it.
            gitdir.as_str(),
            checkout_action(
                &gitdir,
                &["TOKEN"],
                "cp /run/secrets/TOKEN /workspace/z && mkdir /workspace/.git && cp /run/secrets/TOKEN /workspace/.git/config",
                writable("refs/tags/v7.0.0"),
            ),
        ),
        (
            named.as_str(),
            checkout_action(
                &named,
                &["TOKEN"],
                "mkdir /workspace/d && touch \"/workspace/d/$(cat /run/secrets/TOKEN)\" && echo made",
                writable("refs/tags/v8.0.0"),
            ),
        ),
    ]);
    let checkouts = b.site.cache.path().join("checkouts");
    let out = b.site.once();

    let r = b.ops.result(&gitdir).expect("result recorded");
    assert_eq!(r["status"], "failed", "{r}\n{}", out.stderr);
    assert_eq!(r["exit_code"], 0, "the run itself succeeded");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("a .git entry at .git"), "{err}");
    assert!(err.contains("the workspace was removed"), "{err}");
    assert!(r["checkout"].get("kept").is_none(), "{r}");
    assert_eq!(b.code.rev("refs/tags/v7.0.0"), None, "not pushed");
    assert!(!checkouts.join(&gitdir).exists(), "not kept");

    let r = b.ops.result(&named).expect("result recorded");
    assert_eq!(r["status"], "failed", "{r}\n{}", out.stderr);
    assert!(r["logs"].as_str().unwrap().contains("made"), "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("a secret value (in a file name)"), "{err}");
    assert!(err.contains("the workspace was removed"), "{err}");
    assert_eq!(b.code.rev("refs/tags/v8.0.0"), None, "not pushed");
    assert!(!checkouts.join(&named).exists(), "not kept");

    // Only the dispatcher's user may look into the workspaces' folder.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&checkouts).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    // Nothing under the cache holds the secret, as bytes or as a name, nor
    // does any output or result.
    assert!(files_containing(b.site.cache.path(), b.canary.as_bytes()).is_empty());
    assert!(names_containing(b.site.cache.path(), &b.canary).is_empty());
    for id in [&gitdir, &named] {
        let text = b
            .ops
            .show(&format!("vault/actions/{id}.result.json"))
            .unwrap();
        assert!(!text.contains(&b.canary), "secret in the result of {id}");
    }
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(&b.canary), "secret leaked");
    }
    assert_eq!(creates(&gitdir, since), 1);
    assert_eq!(creates(&named, since), 1);
    let _ = (&b.tb, &b.secrets);
}

#[test]
fn a_checkout_too_big_or_with_a_submodule_is_rejected_and_leaves_nothing() {
    let _g = shared_dockerd();
    let b = bench();
    let small = b.code.commit("main", &[("README", "small\n")], "small");
    // 2 MiB of incompressible bytes: over the 1 MiB cap of both the fetch
    // and the files.
    let mut noise = Vec::with_capacity(2 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 2 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let w = b.code.work.path();
    git(w, &["checkout", "-q", "-B", "big", &small]);
    std::fs::write(w.join("blob.bin"), &noise).unwrap();
    let big = b.code.commit("big", &[], "big");
    // A gitlink entry, committed as it is (`git add -A` would drop it: there
    // is no folder behind it).
    git(w, &["checkout", "-q", "-B", "sub", &small]);
    git(
        w,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{small},vendor/dep"),
        ],
    );
    git(w, &["commit", "-q", "--no-gpg-sign", "-m", "a submodule"]);
    git(w, &["push", "-q", "origin", "sub"]);
    let sub = git(w, &["rev-parse", "HEAD"]);
    // `small` is no branch tip any more, and this server sends a commit
    // asked for by id: only its objects come, the big branch does not count.
    git(w, &["checkout", "-q", "main"]);
    b.code.commit("main", &[("README", "later\n")], "later");
    git(
        &b.code.bare,
        &["config", "uploadpack.allowReachableSHA1InWant", "true"],
    );
    let (too_big, with_sub, by_id) = (unique("co-big"), unique("co-sub"), unique("co-byid"));
    let since = now_s();
    let pin = |c: &str| serde_json::json!({"repo": b.code.url, "commit": c});
    b.ops.land_actions(&[
        (
            too_big.as_str(),
            checkout_action(&too_big, &[], "true", pin(&big)),
        ),
        (
            with_sub.as_str(),
            checkout_action(&with_sub, &[], "true", pin(&sub)),
        ),
        (
            by_id.as_str(),
            checkout_action(&by_id, &[], "cat /workspace/README", pin(&small)),
        ),
    ]);
    let out = b.site.once();
    for (id, why) in [
        (&too_big, "larger than the 1048576 bytes allowed"),
        (&with_sub, "submodule at \"vendor/dep\""),
    ] {
        let r = b.ops.result(id).expect("result recorded");
        assert_eq!(r["status"], "rejected", "{r}\n{}", out.stderr);
        assert!(r["error"].as_str().unwrap().contains(why), "{r}");
        assert_eq!(creates(id, since), 0, "nothing started");
        assert!(
            !b.site.cache.path().join("checkouts").join(id).exists(),
            "nothing left on disk"
        );
    }
    let r = b.ops.result(&by_id).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(r["logs"].as_str().unwrap().contains("small"), "{r}");
}

#[test]
fn a_resumed_run_reattaches_to_its_workspace_and_pushes_from_it() {
    let _g = shared_dockerd();
    let b = bench();
    let reviewed = b.code.commit("main", &[("VERSION", "3.0.0\n")], "v3");
    let id = unique("co-resume");
    let since = now_s();
    b.ops.land_action(
        &id,
        &checkout_action(
            &id,
            &["TOKEN"],
            "echo before > /workspace/STEP; sleep 8; echo after >> /workspace/STEP",
            serde_json::json!({"repo": b.code.url, "commit": reviewed, "writable": true,
                               "push": {"ref": "refs/tags/v3.0.0"}}),
        ),
    );
    let mut child = b.site.spawn();
    wait_until("the container to run", Duration::from_secs(120), || {
        container_state(&id).as_deref() == Some("running")
    });
    let ws = b.site.cache.path().join("checkouts").join(&id);
    assert!(
        ws.join("work/VERSION").is_file(),
        "fetched before the start"
    );
    kill_group(child.id());
    let _ = child.wait();

    // The next cycle re-attaches to the container, whose mount is that
    // workspace, and pushes what the run left there.
    let out = b.site.once();
    let r = b.ops.result(&id).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    let pushed = r["checkout"]["pushed"]["commit"].as_str().unwrap();
    assert_eq!(b.code.rev("refs/tags/v3.0.0").as_deref(), Some(pushed));
    assert_eq!(
        git(&b.code.bare, &["show", &format!("{pushed}:STEP")]),
        "before\nafter"
    );
    assert_eq!(creates(&id, since), 1, "started once");
    assert!(!ws.exists(), "removed once the result was recorded");
}

#[test]
fn an_https_checkout_uses_the_configured_token_and_never_shows_it() {
    let _g = shared_dockerd();
    let token = format!("tok-{}", unique("https"));
    let server = vault_testkit::HttpsGit::start(&token);
    // The code repo, under the server's root, filled through its path.
    let name = format!("{}.git", unique("code"));
    let bare = server.base.path().join(&name);
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(&bare, &["config", "http.receivepack", "true"]);
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(work.path().join("VERSION"), "5.0.0\n").unwrap();
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "--no-gpg-sign", "-m", "v5"]);
    git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    let reviewed = git(work.path(), &["rev-parse", "HEAD"]);

    let tb = Testbed::get();
    let ops = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let conf_dir = tempfile::tempdir().unwrap();
    let with_token = conf_dir.path().join("with-token.toml");
    std::fs::write(
        &with_token,
        format!(
            "[[repos]]\nprefix = \"{}/\"\ntoken_file = \"{}\"\npush = [\"refs/tags/v*\"]\n",
            server.url(),
            server.token_file.display()
        ),
    )
    .unwrap();
    let without = conf_dir.path().join("without.toml");
    std::fs::write(
        &without,
        format!("[[repos]]\nprefix = \"{}/\"\n", server.url()),
    )
    .unwrap();
    let site = |conf: &Path, host: &str| {
        let mut s = Site::new(&tb, &ops.url, &secrets, host);
        s.extra_env
            .push(("VAULT_CHECKOUT_CONFIG".into(), conf.display().to_string()));
        s.extra_env
            .push(("SSL_CERT_FILE".into(), server.ca.display().to_string()));
        s
    };
    let url = format!("{}/{name}", server.url());
    let (good, denied) = (unique("co-https"), unique("co-noauth"));
    let checkout = serde_json::json!({"repo": url, "commit": reviewed, "writable": true,
                                      "push": {"ref": "refs/tags/v5.0.0"}});
    ops.land_action(
        &denied,
        &checkout_action(
            &denied,
            &[],
            "true",
            serde_json::json!({"repo": url, "commit": reviewed}),
        ),
    );
    let out = site(&without, "host-noauth").once();
    let r = ops.result(&denied).expect("result recorded");
    assert_eq!(r["status"], "error", "{r}\n{}", out.stderr);
    assert!(r["error"].as_str().unwrap().contains("password"), "{r}");

    ops.land_action(
        &good,
        &checkout_action(
            &good,
            &[],
            "cat /workspace/VERSION; date > /workspace/STAMP",
            checkout,
        ),
    );
    let out = site(&with_token, "host-https").once();
    let r = ops.result(&good).expect("result recorded");
    assert_eq!(r["status"], "succeeded", "{r}\n{}", out.stderr);
    assert!(r["logs"].as_str().unwrap().contains("5.0.0"), "{r}");
    let pushed = r["checkout"]["pushed"]["commit"].as_str().unwrap();
    assert_eq!(git(&bare, &["rev-parse", "refs/tags/v5.0.0"]), pushed);
    let result_file = ops
        .show(&format!("vault/actions/{good}.result.json"))
        .unwrap();
    for text in [&out.stdout, &out.stderr, &result_file] {
        assert!(!text.contains(&token), "the token was shown");
    }
    assert!(
        server
            .requests()
            .iter()
            .any(|l| l.contains("git-receive-pack")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn a_server_that_never_answers_is_an_error_within_the_fetch_timeout() {
    let _g = shared_dockerd();
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let tb = Testbed::get();
    let ops = OpsRepo::new(&tb);
    let secrets = SecretStore::new();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("checkout.toml");
    std::fs::write(
        &conf,
        format!("fetch_timeout_s = 3\n[[repos]]\nprefix = \"git://127.0.0.1:{port}/\"\n"),
    )
    .unwrap();
    let mut site = Site::new(&tb, &ops.url, &secrets, "host-silent");
    site.extra_env
        .push(("VAULT_CHECKOUT_CONFIG".into(), conf.display().to_string()));
    let id = unique("co-silent");
    let since = now_s();
    ops.land_action(
        &id,
        &checkout_action(
            &id,
            &[],
            "true",
            serde_json::json!({"repo": format!("git://127.0.0.1:{port}/code.git"),
                               "commit": "0123456789abcdef0123456789abcdef01234567"}),
        ),
    );
    let started = std::time::Instant::now();
    let out = site.once();
    let r = ops.result(&id).expect("result recorded");
    assert_eq!(r["status"], "error", "{r}\n{}", out.stderr);
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("the fetch took longer than the 3 s allowed"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded by the fetch timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(creates(&id, since), 0);
}

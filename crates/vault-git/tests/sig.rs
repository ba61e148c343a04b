//! `vault_git::sig` against the real thing: keys from `ssh-keygen`, commits
//! from `git commit -S`, and every verdict compared with
//! `git -c gpg.ssh.allowedSignersFile=F verify-commit` (exit code, and the
//! principal and fingerprint git prints when it accepts).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vault_git::sig::{verify_commit, AllowedSigners, SigningKey, Unverified, Verified};

/// 2024-05-01 12:00:00 UTC, the committer time of every commit unless a
/// test says otherwise.
const WHEN: &str = "1714564800 +0000";

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        pipe.write_all(data).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let repo = root.join("repo");
        let fx = Fx {
            _tmp: tmp,
            root,
            repo,
        };
        std::fs::create_dir(&fx.repo).unwrap();
        fx.git(&["init", "-q", "-b", "main"], &[], None, "git init");
        fx
    }

    fn git_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("git");
        c.current_dir(&self.repo)
            .env("HOME", &self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", WHEN)
            .env("GIT_COMMITTER_DATE", WHEN)
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .args([
                "-c",
                "user.name=Tester",
                "-c",
                "user.email=tester@example.com",
            ])
            .args(["-c", "commit.gpgsign=false"])
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn git(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>, what: &str) -> String {
        ok(run(&mut self.git_cmd(args, env), stdin), what)
    }

    /// `ssh-keygen -t kind` without passphrase; returns the private key path.
    fn key(&self, name: &str, kind: &str) -> PathBuf {
        self.key_with(name, kind, "")
    }

    fn key_with(&self, name: &str, kind: &str, passphrase: &str) -> PathBuf {
        let path = self.root.join(name);
        let mut c = Command::new("ssh-keygen");
        c.args([
            "-q",
            "-t",
            kind,
            "-N",
            passphrase,
            "-C",
            &format!("{name}@keys"),
        ])
        .arg("-f")
        .arg(&path);
        ok(run(&mut c, None), "ssh-keygen");
        path
    }

    /// `keytype base64 comment` of a key.
    fn public(&self, key: &Path) -> String {
        std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `ssh-keygen -lf key.pub`'s fingerprint.
    fn fingerprint(&self, key: &Path) -> String {
        let mut c = Command::new("ssh-keygen");
        c.arg("-lf").arg(key.with_extension("pub"));
        let out = ok(run(&mut c, None), "ssh-keygen -lf");
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    fn allowed(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// An empty commit on HEAD, signed by `key` with `git commit -S` if
    /// given; `env` may set GIT_COMMITTER_DATE / GIT_AUTHOR_DATE.
    fn commit(&self, msg: &str, key: Option<&Path>, env: &[(&str, &str)]) -> String {
        let mut args = vec!["commit", "-q", "--allow-empty", "-m", msg];
        let signing;
        if let Some(key) = key {
            signing = format!("user.signingkey={}", key.display());
            args = [
                vec!["-c", "gpg.format=ssh", "-c", &signing],
                args,
                vec!["-S"],
            ]
            .concat();
        }
        self.git(&args, env, None, "git commit");
        self.git(&["rev-parse", "HEAD"], &[], None, "rev-parse")
            .trim()
            .to_string()
    }

    /// A commit object written as `text`, returning its id.
    fn write_commit(&self, text: &str) -> String {
        let args = ["hash-object", "-t", "commit", "-w", "--stdin"];
        self.git(&args, &[], Some(text.as_bytes()), "hash-object")
            .trim()
            .to_string()
    }

    fn cat(&self, sha: &str) -> String {
        self.git(&["cat-file", "commit", sha], &[], None, "cat-file")
    }

    /// Our verdict, asserted equal to `git verify-commit`'s; when both
    /// accept, git's principal and fingerprint must be ours too.
    fn verdict(&self, sha: &str, allowed: &Path) -> Result<Verified, Unverified> {
        let signers = AllowedSigners::load(allowed).unwrap();
        let repo = git2::Repository::open(&self.repo).unwrap();
        let ours = verify_commit(&repo, git2::Oid::from_str(sha).unwrap(), &signers);
        let config = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
        let out = run(
            &mut self.git_cmd(&["-c", &config, "verify-commit", sha], &[]),
            None,
        );
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            ours.is_ok(),
            out.status.success(),
            "ours: {ours:?}; git verify-commit said: {said}"
        );
        if let Ok(v) = &ours {
            let good = format!("Good \"git\" signature for {} with ", v.principal);
            assert!(said.contains(&good), "ours: {v:?}; git said: {said}");
            assert!(
                said.contains(&v.fingerprint),
                "ours: {v:?}; git said: {said}"
            );
        }
        ours
    }
}

fn line(principals: &str, options: &str, public: &str) -> String {
    if options.is_empty() {
        format!("{principals} {public}\n")
    } else {
        format!("{principals} {options} {public}\n")
    }
}

#[test]
fn listed_keys_of_each_type_verify() {
    let fx = Fx::new();
    for (i, kind) in ["ed25519", "rsa", "ecdsa"].into_iter().enumerate() {
        let key = fx.key(&format!("k-{kind}"), kind);
        let principal = format!("{kind}-signer@example.com");
        let file = format!("# signers\n{}", line(&principal, "", &fx.public(&key)));
        let allowed = fx.allowed(&format!("allowed-{kind}"), &file);
        let sha = fx.commit(&format!("signed {i}"), Some(&key), &[]);
        let v = fx.verdict(&sha, &allowed).unwrap();
        assert_eq!(v.principal, principal);
        assert_eq!(v.principals, std::slice::from_ref(&principal));
        assert_eq!(v.fingerprint, fx.fingerprint(&key));
        assert_eq!(v.line, 2);
        let want_type = match kind {
            "ed25519" => "ssh-ed25519",
            "rsa" => "ssh-rsa",
            _ => "ecdsa-sha2-nistp256",
        };
        assert_eq!(v.key_type, want_type);
    }
}

#[test]
fn unsigned_unknown_and_tampered_are_refused() {
    let fx = Fx::new();
    let key = fx.key("signer", "ed25519");
    let stranger = fx.key("stranger", "ed25519");
    let allowed = fx.allowed("allowed", &line("me@example.com", "", &fx.public(&key)));

    let unsigned = fx.commit("unsigned", None, &[]);
    assert_eq!(fx.verdict(&unsigned, &allowed), Err(Unverified::Unsigned));
    let repo = git2::Repository::open(&fx.repo).unwrap();
    let signers = AllowedSigners::load(&allowed).unwrap();
    let missing = verify_commit(
        &repo,
        git2::Oid::from_str("1234567890123456789012345678901234567890").unwrap(),
        &signers,
    )
    .unwrap_err();
    assert!(
        matches!(missing, Unverified::Unreadable { .. }),
        "{missing:?}"
    );

    let by_stranger = fx.commit("by a stranger", Some(&stranger), &[]);
    let err = fx.verdict(&by_stranger, &allowed).unwrap_err();
    assert_eq!(
        err,
        Unverified::UnknownKey {
            fingerprint: fx.fingerprint(&stranger)
        }
    );
    assert!(err.to_string().starts_with("unknown key SHA256:"), "{err}");

    let good = fx.commit("the real message", Some(&key), &[]);
    assert!(fx.verdict(&good, &allowed).is_ok());
    let text = fx.cat(&good);
    assert!(text.contains("gpgsig -----BEGIN SSH SIGNATURE-----"));
    let tampered = fx.write_commit(&text.replace("the real message", "the forged message"));
    assert_ne!(tampered, good);
    let err = fx.verdict(&tampered, &allowed).unwrap_err();
    assert!(matches!(err, Unverified::BadSignature { .. }), "{err:?}");
    assert!(err.to_string().starts_with("bad signature"), "{err}");

    // A signature whose base64 is damaged: malformed, not a crash.
    let mangled = fx.write_commit(&text.replacen("\n U1NIU0lH", "\n U1NIU0lX", 1));
    let err = fx.verdict(&mangled, &allowed).unwrap_err();
    assert!(matches!(err, Unverified::BadSignature { .. }), "{err:?}");
}

#[test]
fn key_validity_is_checked_at_the_committer_time() {
    let fx = Fx::new();
    let key = fx.key("signer", "ed25519");
    let public = fx.public(&key);
    // Committed 2024-05-01 12:00:00 UTC; authored two months earlier.
    let env = [("GIT_AUTHOR_DATE", "1709294400 +0000")];
    let sha = fx.commit("timed", Some(&key), &env);
    let cases = [
        // (options, accepted)
        ("valid-before=\"20240401\"", false),
        ("valid-after=\"20240601Z\"", false),
        ("valid-after=\"20240301\",valid-before=\"20240401\"", false),
        ("valid-after=\"20240501\",valid-before=\"20240502Z\"", true),
        ("valid-before=\"20240501120000Z\"", true),
        ("valid-after=\"20240501120000utc\"", true),
        ("valid-after=\"20240501120001Z\"", false),
        ("valid-before=\"20240501115959\"", false),
        ("VALID-BEFORE=\"202405011159\"", false),
    ];
    for (i, (options, accepted)) in cases.into_iter().enumerate() {
        let allowed = fx.allowed(&format!("allowed-{i}"), &line("me@x", options, &public));
        let verdict = fx.verdict(&sha, &allowed);
        assert_eq!(verdict.is_ok(), accepted, "{options}: {verdict:?}");
        if let Err(e) = verdict {
            assert_eq!(
                e,
                Unverified::NotValidAt {
                    fingerprint: fx.fingerprint(&key),
                    time: 1_714_564_800
                }
            );
            assert!(
                e.to_string()
                    .ends_with("not valid at the commit's time 2024-05-01 12:00:00 UTC"),
                "{e}"
            );
        }
    }
}

#[test]
fn namespaces_must_allow_git() {
    let fx = Fx::new();
    let key = fx.key("signer", "ed25519");
    let public = fx.public(&key);
    let sha = fx.commit("ns", Some(&key), &[]);
    let cases = [
        ("namespaces=\"file\"", false),
        ("NameSpaces=\"file,email\"", false),
        ("namespaces=\"git,file\"", true),
        ("namespaces=\"g*\"", true),
        ("namespaces=\"*,!git\"", false),
    ];
    for (i, (options, accepted)) in cases.into_iter().enumerate() {
        let allowed = fx.allowed(&format!("allowed-{i}"), &line("me@x", options, &public));
        let verdict = fx.verdict(&sha, &allowed);
        assert_eq!(verdict.is_ok(), accepted, "{options}: {verdict:?}");
        if let Err(e) = verdict {
            assert!(matches!(e, Unverified::WrongNamespace { .. }), "{e:?}");
            assert!(e.to_string().starts_with("wrong namespace: "), "{e}");
        }
    }
}

/// A commit carrying `signature` (armored text) in its gpgsig header,
/// otherwise as `base` (an unsigned commit's text).
fn with_gpgsig(base: &str, signature: &str) -> String {
    let (headers, message) = base.split_once("\n\n").unwrap();
    let folded = signature.trim_end().replace('\n', "\n ");
    format!("{headers}\ngpgsig {folded}\n\n{message}")
}

#[test]
fn signature_for_another_namespace_and_pgp_are_refused() {
    let fx = Fx::new();
    let key = fx.key("signer", "ed25519");
    let allowed = fx.allowed("allowed", &line("me@x", "", &fx.public(&key)));
    let base = fx.cat(&fx.commit("base", None, &[]));

    // The same bytes git would sign, signed for namespace "file".
    let data = fx.root.join("data");
    std::fs::write(&data, &base).unwrap();
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-Y", "sign", "-n", "file", "-f"])
        .arg(&key)
        .arg(&data);
    ok(run(&mut c, None), "ssh-keygen -Y sign");
    let sig = std::fs::read_to_string(data.with_extension("sig")).unwrap();
    let sha = fx.write_commit(&with_gpgsig(&base, &sig));
    let err = fx.verdict(&sha, &allowed).unwrap_err();
    assert!(matches!(err, Unverified::WrongNamespace { .. }), "{err:?}");
    assert!(err.to_string().contains("\"file\""), "{err}");

    // Signed for "git" the same way: accepted (the splice above is sound).
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-Y", "sign", "-n", "git", "-f"])
        .arg(&key)
        .arg(&data);
    std::fs::remove_file(data.with_extension("sig")).unwrap();
    ok(run(&mut c, None), "ssh-keygen -Y sign");
    let sig = std::fs::read_to_string(data.with_extension("sig")).unwrap();
    let sha = fx.write_commit(&with_gpgsig(&base, &sig));
    assert_eq!(fx.verdict(&sha, &allowed).unwrap().principal, "me@x");

    let pgp =
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n";
    let sha = fx.write_commit(&with_gpgsig(&base, pgp));
    let err = fx.verdict(&sha, &allowed).unwrap_err();
    assert_eq!(err, Unverified::NotSsh { kind: "openpgp" });
    assert_eq!(err.to_string(), "not an SSH signature (openpgp)");
}

#[test]
fn principals_and_multiple_lines_follow_git() {
    let fx = Fx::new();
    let key = fx.key("signer", "ed25519");
    let public = fx.public(&key);
    let sha = fx.commit("principals", Some(&key), &[]);
    let other = fx.public(&fx.key("other", "ed25519"));
    // (file, Some(principal git reports) or None when refused)
    let cases: Vec<(String, Option<&str>)> = vec![
        (line("alice@x,bob@x", "", &public), Some("alice@x")),
        (line("*@example.com", "", &public), Some("*@example.com")),
        (
            line("\"principal with space\"", "", &public),
            Some("principal with space"),
        ),
        (line("!mallory@x,*@x", "", &public), Some("!mallory@x")),
        // Only a negated principal: nothing git can pass to -I matches.
        (line("!nobody@x", "", &public), None),
        // Another key's line first: skipped.
        (
            line("a@x", "", &other) + &line("b@x", "", &public),
            Some("b@x"),
        ),
        // An expired line for the key, then a valid one: git finds the
        // valid one.
        (
            line("old@x", "valid-before=\"20240101Z\"", &public) + &line("new@x", "", &public),
            Some("new@x"),
        ),
        // The first valid line for the key is limited to "file": git takes
        // its principal and finds no line allowing "git" for it...
        (
            line("a@x", "namespaces=\"file\"", &public) + &line("b@x", "", &public),
            None,
        ),
        // ...unless a later line for the same principal allows "git".
        (
            line("a@x", "namespaces=\"file\"", &public) + &line("a@x", "", &public),
            Some("a@x"),
        ),
        (
            line("a@x", "namespaces=\"file\"", &public) + &line("*", "", &public),
            Some("a@x"),
        ),
    ];
    for (i, (file, want)) in cases.into_iter().enumerate() {
        let allowed = fx.allowed(&format!("allowed-{i}"), &file);
        let verdict = fx.verdict(&sha, &allowed);
        assert_eq!(
            verdict.as_ref().map(|v| v.principal.as_str()).ok(),
            want,
            "{file}: {verdict:?}"
        );
    }
}

/// A commit of HEAD's tree on HEAD, signed by `key` through git2.
fn commit_with_our_key(fx: &Fx, key: &SigningKey, msg: &str) -> String {
    let repo = git2::Repository::open(&fx.repo).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    let who = git2::Signature::new(
        "Tester",
        "tester@example.com",
        &git2::Time::new(1_714_564_800, 0),
    )
    .unwrap();
    let buf = repo
        .commit_create_buffer(&who, &who, msg, &head.tree().unwrap(), &[&head])
        .unwrap();
    let content = std::str::from_utf8(&buf).unwrap();
    let signature = key.sign_commit(content).unwrap();
    assert!(signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
    assert!(signature.ends_with("\n-----END SSH SIGNATURE-----"));
    repo.commit_signed(content, &signature, None)
        .unwrap()
        .to_string()
}

#[test]
fn commits_signed_by_our_key_verify_with_git() {
    let fx = Fx::new();
    fx.commit("root", None, &[]);
    for kind in ["ed25519", "ecdsa"] {
        let path = fx.key(&format!("ours-{kind}"), kind);
        let key = SigningKey::load(&path).unwrap();
        assert_eq!(key.fingerprint(), fx.fingerprint(&path));
        assert_eq!(key.public_openssh(), fx.public(&path));
        let debug = format!("{key:?}");
        assert!(
            debug.contains(key.fingerprint()) && !debug.contains("AAAA"),
            "{debug}"
        );

        let allowed = fx.allowed(
            &format!("allowed-{kind}"),
            &line("bot@vault", "namespaces=\"git\"", &key.public_openssh()),
        );
        let sha = commit_with_our_key(&fx, &key, &format!("signed by our {kind} key\n"));
        let v = fx.verdict(&sha, &allowed).unwrap();
        assert_eq!(
            (v.principal.as_str(), v.fingerprint.as_str()),
            ("bot@vault", key.fingerprint())
        );
        // Laid out as git lays out its own signed commits.
        let text = fx.cat(&sha);
        assert!(
            text.contains("\ngpgsig -----BEGIN SSH SIGNATURE-----\n "),
            "{text}"
        );
        assert!(
            text.contains(" -----END SSH SIGNATURE-----\n\nsigned by"),
            "{text}"
        );
    }
}

#[test]
fn signing_keys_that_are_refused() {
    let fx = Fx::new();
    let rsa = fx.key("rsa", "rsa");
    let err = SigningKey::load(&rsa).unwrap_err().to_string();
    assert!(
        err.contains("RUSTSEC-2023-0071") && err.contains("ed25519"),
        "{err}"
    );

    let locked = fx.key_with("locked", "ed25519", "correct horse");
    let err = SigningKey::load(&locked).unwrap_err().to_string();
    assert!(err.contains("passphrase"), "{err}");

    let p384 = fx.root.join("p384");
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f"])
        .arg(&p384);
    ok(run(&mut c, None), "ssh-keygen");
    let err = SigningKey::load(&p384).unwrap_err().to_string();
    assert!(
        err.contains("ecdsa-sha2-nistp384") && err.contains("not supported"),
        "{err}"
    );

    let err = SigningKey::load(&rsa.with_extension("pub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an OpenSSH private key"), "{err}");
    let err = SigningKey::load(&fx.root.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read signing key"), "{err}");
}

#[test]
fn allowed_signers_errors_are_one_line_with_file_and_line() {
    let fx = Fx::new();
    let public = fx.public(&fx.key("k", "ed25519"));
    let cases = [
        (
            line("a@x", "cert-authority", &public),
            "cert-authority is not supported",
        ),
        (
            line("a@x", "namespaces=\"git\",shoe-size=\"9\"", &public),
            "\"shoe-size\" is not supported",
        ),
        (
            line("a@x", "", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI!!!"),
            "invalid ssh-ed25519 key",
        ),
        (
            line("a@x", "valid-after=\"someday\"", &public),
            "not a time",
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let path = fx.allowed(
            &format!("bad-{i}"),
            &format!("# ok\n{}{text}", line("b@x", "", &public)),
        );
        let err = AllowedSigners::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3: ", path.display())), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
    let empty = fx.allowed("empty", "# nobody yet\n\n");
    let err = AllowedSigners::load(&empty).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: lists no signer (only comments and blank lines): add a line `PRINCIPALS KEYTYPE BASE64KEY`", empty.display())
    );
    let err = AllowedSigners::load(&fx.root.join("nope"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read allowed signers file"), "{err}");
    let ok = AllowedSigners::parse(&line("b@x", "", &public)).unwrap();
    assert_eq!(ok.len(), 1);
}

//! Ops repos made with the git CLI.

use crate::process::unique;
use crate::Testbed;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// Run a git command, panicking with its stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How [`OpsRepo::commit_with`] makes its commit.
#[derive(Debug, Default, Clone, Copy)]
pub struct How<'a> {
    /// Sign it (`gpg.format=ssh`) with this private key file.
    pub key: Option<&'a Path>,
    /// Its author and committer date (`GIT_COMMITTER_DATE` syntax).
    pub date: Option<&'a str>,
    /// Commit the files on a side branch (unsigned) and land them as a
    /// `--no-ff` merge made as above, as a forge merges a pull request.
    pub merge: bool,
}

/// A bare ops repo served by the testbed's git daemon, with a scratch clone
/// to commit to it as a merging human would.
pub struct OpsRepo {
    pub bare: PathBuf,
    /// `git://127.0.0.1:PORT/<name>.git`
    pub url: String,
    pub branch: String,
    scratch: TempDir,
}

impl OpsRepo {
    /// A new repo with one commit on `main` holding `README.md` and
    /// `vault/actions/.keep`.
    pub fn new(tb: &Testbed) -> OpsRepo {
        Self::new_in(&tb.git_base, &tb.git_url)
    }

    /// Like [`new`](Self::new), for another git daemon serving `git_base`
    /// at `git_url` (e.g. a [`GitDaemon`] a test stops and starts).
    pub fn new_in(git_base: &Path, git_url: &str) -> OpsRepo {
        let name = format!("{}.git", unique("ops"));
        let bare = git_base.join(&name);
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let scratch = TempDir::new().unwrap();
        let work = scratch.path();
        git(work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "ops repo\n").unwrap();
        std::fs::create_dir_all(work.join("vault/actions")).unwrap();
        std::fs::write(work.join("vault/actions/.keep"), "").unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-qm", "init"]);
        let url = format!("{git_url}/{name}");
        git(work, &["remote", "add", "origin", &url]);
        git(work, &["push", "-q", "origin", "main"]);
        OpsRepo {
            bare,
            url,
            branch: "main".into(),
            scratch,
        }
    }

    /// Commit files (path, content) on top of the remote branch and push;
    /// returns the new commit's sha. `None` content deletes the path.
    pub fn commit(&self, files: &[(&str, Option<&[u8]>)], message: &str) -> String {
        self.commit_with(files, message, &How::default())
    }

    /// [`commit`](Self::commit), made as `how` says: signed, dated, or as
    /// the merge of an unsigned pull-request commit.
    pub fn commit_with(
        &self,
        files: &[(&str, Option<&[u8]>)],
        message: &str,
        how: &How<'_>,
    ) -> String {
        let work = self.scratch.path();
        git(work, &["fetch", "-q", "origin", &self.branch]);
        git(work, &["reset", "-q", "--hard", "FETCH_HEAD"]);
        if how.merge {
            git(work, &["checkout", "-q", "-B", "pr"]);
        }
        self.stage(files);
        let mut args: Vec<String> = Vec::new();
        if let Some(key) = how.key {
            args.extend(["-c".into(), "gpg.format=ssh".into()]);
            args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
        }
        let sign = if how.key.is_some() {
            "-S"
        } else {
            "--no-gpg-sign"
        };
        let run = |extra: &[&str]| {
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            a.extend(extra);
            let mut c = Command::new("git");
            c.arg("-C").arg(work).args(&a);
            for (k, v) in [
                ("GIT_AUTHOR_NAME", "test"),
                ("GIT_AUTHOR_EMAIL", "test@example.invalid"),
                ("GIT_COMMITTER_NAME", "test"),
                ("GIT_COMMITTER_EMAIL", "test@example.invalid"),
            ] {
                c.env(k, v);
            }
            if let Some(d) = how.date {
                c.env("GIT_COMMITTER_DATE", d).env("GIT_AUTHOR_DATE", d);
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "git {a:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if how.merge {
            git(work, &["commit", "-qm", &format!("proposal: {message}")]);
            git(work, &["checkout", "-q", "--detach", "FETCH_HEAD"]);
            run(&["merge", "-q", "--no-ff", sign, "-m", message, "pr"]);
        } else {
            run(&["commit", "-q", sign, "-m", message]);
        }
        git(
            work,
            &["push", "-q", "origin", &format!("HEAD:{}", self.branch)],
        );
        git(work, &["rev-parse", "HEAD"])
    }

    fn stage(&self, files: &[(&str, Option<&[u8]>)]) {
        let work = self.scratch.path();
        for (path, content) in files {
            let p = work.join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, c).unwrap();
                    git(work, &["add", "--", path]);
                }
                None => {
                    git(work, &["rm", "-q", "--", path]);
                }
            }
        }
    }

    /// Land (approve) `vault/actions/<id>.json` with this content.
    pub fn land_action(&self, id: &str, json: &str) -> String {
        self.land_actions(&[(id, json)])
    }

    /// Land (approve) several actions, (id, content) each, in one commit.
    pub fn land_actions<S: AsRef<str>>(&self, actions: &[(&str, S)]) -> String {
        let paths: Vec<String> = actions
            .iter()
            .map(|(id, _)| format!("vault/actions/{id}.json"))
            .collect();
        let files: Vec<(&str, Option<&[u8]>)> = paths
            .iter()
            .zip(actions)
            .map(|(path, (_, json))| (path.as_str(), Some(json.as_ref().as_bytes())))
            .collect();
        let message = match actions {
            [(id, _)] => format!("approve {id}"),
            _ => format!("approve {} actions", actions.len()),
        };
        self.commit(&files, &message)
    }

    /// A file's content on the remote branch, if present.
    pub fn show(&self, path: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(["show", &format!("{}:{}", self.branch, path)])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The result file of `id`, parsed, if present on the remote branch.
    pub fn result(&self, id: &str) -> Option<serde_json::Value> {
        self.show(&format!("vault/actions/{id}.result.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
    }

    /// Commit shas of the remote branch, newest first.
    pub fn log(&self) -> Vec<String> {
        git(&self.bare, &["rev-list", &self.branch])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", &self.branch])
    }

    /// Rewrite the remote branch to `commit` (a force-push: the new tip
    /// need not descend from the old one).
    pub fn force_push(&self, commit: &str) {
        let work = self.scratch.path();
        git(work, &["fetch", "-q", "origin", &self.branch]);
        git(
            work,
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("{commit}:refs/heads/{}", self.branch),
            ],
        );
    }

    /// Land a commit on top of the branch whose `vault/actions` tree is the
    /// raw tree object `raw` (written as is, so it may be one that `git
    /// fsck` refuses, e.g. with two entries of one name). Returns the sha.
    pub fn land_raw_actions_tree(&self, raw: &[u8], message: &str) -> String {
        let bare = &self.bare;
        let hash = |args: &[&str], input: &[u8]| -> String {
            let mut child = Command::new("git")
                .arg("--git-dir")
                .arg(bare)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?} failed");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let actions = hash(
            &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
            raw,
        );
        let vault = hash(
            &["mktree"],
            format!("040000 tree {actions}\tactions\n").as_bytes(),
        );
        let readme = git(bare, &["rev-parse", &format!("{}:README.md", self.branch)]);
        let root = hash(
            &["mktree"],
            format!("100644 blob {readme}\tREADME.md\n040000 tree {vault}\tvault\n").as_bytes(),
        );
        let head = self.head();
        let commit = git(bare, &["commit-tree", &root, "-p", &head, "-m", message]);
        git(
            bare,
            &[
                "update-ref",
                &format!("refs/heads/{}", self.branch),
                &commit,
                &head,
            ],
        );
        commit
    }

    /// Install a server-side hook (e.g. `pre-receive`) with this script.
    pub fn install_hook(&self, name: &str, script: &str) {
        let p = self.bare.join("hooks").join(name);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

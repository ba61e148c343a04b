//! Approvals: which commit approved each action that could run, and, when
//! `--allowed-signers` is set, whose SSH signature it carries.
//!
//! The approving commit of an action is the first-parent commit of the
//! watched branch that brought its current blob onto the branch (for a
//! merged pull request: the merge commit). Its signature is checked like
//! `git verify-commit` with `gpg.ssh.allowedSignersFile`: namespace `git`,
//! a listed key, valid at the commit's committer time.
//!
//! The approving commit of an (id, blob) never changes while the branch
//! only moves forward (a rewrite stops the scan), so it is remembered in
//! `<key>.approvals`; the signature is checked on every scan.

use git2::{Oid, Repository};
use std::collections::HashMap;
use std::path::PathBuf;
use vault_core::approval::Approval;
use vault_core::ActionId;
use vault_git::sig::{verify_commit, AllowedSigners};

const CACHE_MAGIC: &str = concat!("vault-scan approvals 2 ", env!("CARGO_PKG_VERSION"));

/// What happened to the branch since the cache file was written: entries
/// of action files a walked commit touched are dropped (a file deleted and
/// added again has a new approving commit), and the whole file when it was
/// not written at `tip` (the last tip before this scan) or after an
/// accepted rewrite.
pub struct Since<'a> {
    pub tip: Option<Oid>,
    pub touched: &'a std::collections::HashSet<Vec<u8>>,
    pub rewritten: bool,
}

/// Finds and checks approvals for one scan.
pub struct Approvals<'r> {
    repo: &'r Repository,
    tip: Oid,
    signers: Option<AllowedSigners>,
    path: PathBuf,
    known: HashMap<String, Oid>,
    used: HashMap<String, Oid>,
    dirty: bool,
}

impl<'r> Approvals<'r> {
    /// `signers`: verify signatures against it; `None`: only find the
    /// approving commit (for expiry).
    pub fn new(
        repo: &'r Repository,
        tip: Oid,
        signers: Option<AllowedSigners>,
        path: PathBuf,
        since: Since<'_>,
    ) -> Self {
        let loaded = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse_cache(&t))
            .filter(|(at, _)| !since.rewritten && since.tip == Some(*at));
        // Written at another tip than this scan's: write it again.
        let dirty = loaded.as_ref().is_none_or(|(at, _)| *at != tip);
        let mut known = loaded.map(|(_, known)| known).unwrap_or_default();
        known.retain(|key, _| {
            let id = key.split(' ').next().unwrap_or_default();
            let name = format!("{id}{}", vault_core::layout::ACTION_SUFFIX);
            !since.touched.contains(name.as_bytes())
        });
        Approvals {
            repo,
            tip,
            signers,
            path,
            known,
            used: HashMap::new(),
            dirty,
        }
    }

    /// The approval of action `id` at blob `blob`, or why it is not
    /// approved (the line is then recorded `rejected` with it).
    pub fn approval(&mut self, id: &ActionId, blob: &str) -> Result<Approval, String> {
        let key = format!("{id} {blob}");
        let commit = match self.known.get(&key) {
            Some(c) => *c,
            None => {
                let blob = Oid::from_str(blob).map_err(|e| e.message().to_string())?;
                let c = vault_git::last_change(self.repo, self.tip, &id.action_file_name(), blob)
                    .map_err(|e| format!("cannot find the approving commit: {e}"))?;
                self.dirty = true;
                c
            }
        };
        self.used.insert(key, commit);
        let time = self
            .repo
            .find_commit(commit)
            .map(|c| c.committer().when().seconds())
            .map_err(|e| format!("cannot read the approving commit {commit}: {}", e.message()))?;
        let mut approval = Approval {
            commit: commit.to_string(),
            time: vault_core::time::rfc3339_secs(time),
            principal: None,
            fingerprint: None,
        };
        if let Some(signers) = &self.signers {
            let v = verify_commit(self.repo, commit, signers).map_err(|e| {
                format!("not approved: the approving commit {commit} is not validly signed: {e}")
            })?;
            approval.principal = Some(v.principal);
            approval.fingerprint = Some(v.fingerprint);
        }
        Ok(approval)
    }

    /// Remember the approving commits used by this scan.
    pub fn store(&self) -> std::io::Result<()> {
        if !self.dirty && self.used.len() == self.known.len() {
            return Ok(());
        }
        let mut text = format!("{CACHE_MAGIC}\n{}\n", self.tip);
        let mut keys: Vec<_> = self.used.iter().collect();
        keys.sort();
        for (k, c) in keys {
            text.push_str(&format!("{k} {c}\n"));
        }
        crate::scan::write_atomically(&self.path, text.as_bytes())
    }
}

/// The tip the file was written at, and its entries.
fn parse_cache(text: &str) -> Option<(Oid, HashMap<String, Oid>)> {
    let mut lines = text.lines();
    if lines.next()? != CACHE_MAGIC {
        return None;
    }
    let tip = Oid::from_str(lines.next()?).ok()?;
    let mut out = HashMap::new();
    for line in lines {
        let (key, commit) = line.rsplit_once(' ')?;
        out.insert(key.to_string(), Oid::from_str(commit).ok()?);
    }
    Some((tip, out))
}

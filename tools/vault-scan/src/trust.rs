//! Which result and claim files to believe (`--dispatcher-signers`).
//!
//! A result or claim file counts only if the first-parent commit that last
//! changed it is signed by a dispatcher listed in the dispatcher-signers
//! file. Any other one counts as absent: its action is listed as pending,
//! with `"replaces": "<blob>"` so that result-write may overwrite exactly
//! that file. The history's evidence of a result (what spends an id) is set
//! aside only when it is the commit of such a file; any other stands.
//!
//! The commits are learned by the same first-parent walk as the history
//! ([`crate::history::learn`]): `<key>.trust.json` keeps the result files
//! (id, blob) whose last change is not dispatcher-signed (few: only
//! forgeries), the tip it is up to date with, and the digest of the signers
//! file it was judged with. A missing or stale file (another signers file,
//! another tip) is rebuilt once from the whole first-parent history.

use crate::history::{self, SeenIds};
use crate::Introduced;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use vault_git::sig::{verify_commit, AllowedSigners};

const FORMAT: u32 = 3;

/// A result file (id and blob) not to believe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Untrusted {
    pub id: String,
    pub blob: String,
    /// The commit that last changed it (not dispatcher-signed).
    pub commit: String,
    /// Why that commit is not believed.
    pub why: String,
}

impl Untrusted {
    /// The line vault-scan says of it on stderr.
    pub fn counts_as_absent(&self) -> String {
        format!(
            "its result file (blob {}) was last changed by commit {}, which is not signed by a listed dispatcher ({}); it counts as absent",
            self.blob, self.commit, self.why
        )
    }
}

/// Id → the result files of one tree not to believe.
pub type Disbelieved = BTreeMap<String, Untrusted>;

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    signers: String,
    tip: String,
    /// Keyed by `"<id> <blob>"`: one blob may be forged at several ids.
    untrusted: BTreeMap<String, Untrusted>,
    /// What [`Trust::disbelieved`] found in this `vault/actions` tree: a
    /// tree of 200,000 entries is not parsed again while it is unchanged.
    #[serde(default)]
    memo: Option<(String, Disbelieved)>,
}

/// The dispatcher-signed view of one scan.
pub struct Trust<'r> {
    repo: &'r Repository,
    signers: AllowedSigners,
    verdicts: HashMap<Oid, Result<(), String>>,
    file: File,
    store: PathBuf,
}

impl<'r> Trust<'r> {
    /// Bring `<key>.trust` up to `tip`. `before`: the last tip this cache
    /// dispatched from before this scan; `introduced`: what the walk from it
    /// to `tip` found.
    pub fn update(
        repo: &'r Repository,
        signers: AllowedSigners,
        store: PathBuf,
        before: Option<Oid>,
        tip: Oid,
        introduced: Introduced,
    ) -> anyhow::Result<Trust<'r>> {
        let digest = signers.digest().to_string();
        let old: Option<File> = std::fs::read(&store)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|f: &File| {
                f.format == FORMAT
                    && f.signers == digest
                    && Some(f.tip.as_str()) == before.map(|b| b.to_string()).as_deref()
            });
        let mut trust = Trust {
            repo,
            signers,
            verdicts: HashMap::new(),
            file: File {
                format: FORMAT,
                signers: digest,
                tip: tip.to_string(),
                untrusted: BTreeMap::new(),
                memo: None,
            },
            store,
        };
        let introduced = match (old, before) {
            (Some(f), _) => {
                trust.file.untrusted = f.untrusted;
                if introduced.is_empty() {
                    trust.file.memo = f.memo;
                }
                introduced
            }
            // A fresh cache: the walk covered the whole history already.
            (None, None) => introduced,
            (None, Some(_)) => {
                history::learn(repo, tip, None, &mut SeenIds::default(), false)?.introduced
            }
        };
        for ((id, blob), commit) in introduced {
            let key = format!("{id} {blob}");
            match trust.verdict(commit) {
                Ok(()) => {
                    trust.file.untrusted.remove(&key);
                }
                Err(why) => {
                    let u = Untrusted {
                        id,
                        blob: blob.to_string(),
                        commit: commit.to_string(),
                        why,
                    };
                    trust.file.untrusted.insert(key, u);
                }
            }
        }
        Ok(trust)
    }

    /// Remember what this scan learned (before anything is dispatched).
    pub fn save(&self) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(&self.file)?;
        crate::scan::write_atomically(&self.store, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.store.display()))
    }

    /// Whether `commit` is signed by a listed dispatcher, and if not why.
    fn verdict(&mut self, commit: Oid) -> Result<(), String> {
        let (repo, signers) = (self.repo, &self.signers);
        self.verdicts
            .entry(commit)
            .or_insert_with(|| {
                verify_commit(repo, commit, signers)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The result files of the `vault/actions` tree `tree` not to believe.
    pub fn disbelieved(&mut self, tree: Oid) -> anyhow::Result<Disbelieved> {
        if self.file.untrusted.is_empty() {
            return Ok(Disbelieved::new());
        }
        let key = tree.to_string();
        if let Some((t, found)) = &self.file.memo {
            if *t == key {
                return Ok(found.clone());
            }
        }
        let actions = self.repo.find_tree(tree)?;
        let mut out = Disbelieved::new();
        for u in self.file.untrusted.values() {
            let name = format!("{}{}", u.id, vault_core::layout::RESULT_SUFFIX);
            if actions
                .get_name(&name)
                .is_some_and(|e| e.id().to_string() == u.blob)
            {
                out.insert(u.id.clone(), u.clone());
            }
        }
        self.file.memo = Some((key, out.clone()));
        Ok(out)
    }
}

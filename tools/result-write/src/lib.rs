//! result-write: record results in the ops repo.
//!
//! Reads every line on stdin first: result lines ([`vault_core::ActionResult`]),
//! or with `--claim` scan lines ([`vault_core::ScanLine`]), each turned into
//! a `running` claim (`started_at` now, `action_commit` = the scan's
//! `commit`, `action_blob` = its `blob`, `dispatcher` = this dispatcher).
//! Scan lines carrying an `error` are not claimed (a note on stderr).
//!
//! All results of one call (and everything spooled before) go into one
//! commit on the fetched branch tip, authored and committed by
//! `<dispatcher id> <<id>@vault-dispatch.invalid>`, pushed without force.
//! Only `vault/actions/<id>.result.json` is ever written. Finals are spooled
//! before the repo lock is taken, so the call holding it takes them along:
//! a burst of results lands in few commits.
//!
//! `--archive` (stdin not read) moves finished actions onto the archive
//! branch instead (see the `archive` module) and prints
//! `{"archived":N,"more":false}` (`more`: the per-call cap was reached).
//!
//! Per result, against the file already on the branch:
//!
//! | new | already there | outcome |
//! | --- | --- | --- |
//! | any | nothing | written |
//! | `running` | our own `running` claim | already recorded (no commit) |
//! | `running` | anything else | lost race: nothing written, exit 3 |
//! | final | a `running` claim | written |
//! | final | the identical result | already recorded (no commit) |
//! | final | another final (or unreadable) result | kept, nothing written, exit 3 |
//!
//! With nothing at `vault/actions/<id>.result.json` but a result on the
//! archive branch: the identical result is already recorded; a claim loses the
//! race (an id that finished once is never claimed again), unless its scan
//! line is `spent` (nothing starts it; it is recorded `abandoned`); another
//! final result is written in `vault/actions`.
//!
//! A push the remote rejects as non-fast-forward (the branch moved) is a
//! lost compare-and-swap: fetch, decide again on the new tip, retry
//! (`--tries`, jittered backoff). A ref the server refuses for another
//! reason (e.g. a pre-receive hook) is a failure (exit 1); the refused final
//! results are moved to `<cache>/spool/<key>/rejected/` so nothing is lost.
//! An unreachable remote: final results stay spooled and the next call
//! (or `--flush`) pushes them first, exit 4; a claim is never spooled (a
//! claim that was not pushed is no claim), exit 4.
//!
//! stdout, one line per recorded result (also those that were already
//! there, and spooled ones delivered by this call):
//!
//! ```json
//! {"id":"publish-1.4.0","status":"succeeded","commit":"<sha of a branch commit holding it>"}
//! ```
//!
//! Exit: 0 all recorded; 1 failure (bad input line — reported, the other
//! lines still processed — or a refused push); 2 usage; 3 lost race / kept
//! existing result; 4 remote unreachable. When several apply: 1, then 4,
//! then 3.

mod abandon;
mod archive;
pub mod cli;
pub mod spool;

use anyhow::{anyhow, Context};
use clap::Parser;
use git2::{Oid, Repository, Signature};
use serde::Serialize;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use vault_core::{jsonl, report, ActionResult, Exit, ScanLine, Status};
use vault_git::sig::{AllowedSigners, SigningKey};
use vault_git::{Archive, GitError, Ops, Tip};

pub(crate) const TOOL: &str = "result-write";

/// One result to record, and where it is spooled (finals only).
struct Item {
    result: ActionResult,
    bytes: Vec<u8>,
    spooled: Option<PathBuf>,
    /// A claim of a scan line marked `spent`: it never starts anything
    /// (secret-mount and run-action record it `abandoned`), so it may be
    /// claimed even though the id's result is archived.
    spent: bool,
    /// Moved aside into `rejected/` when the server refuses the push: this
    /// call's own results, and spooled ones left for 10 minutes (a call
    /// still waiting for the lock moves its own).
    refusable: bool,
}

/// How long a spooled file waits before any call may move it aside.
const STALE_SPOOL: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Write,
    Already,
    /// Lost race or kept an existing different result: the reason.
    NotWritten(String),
}

/// Signing our commits, and whose commits to believe.
pub(crate) struct Signing {
    key: Option<SigningKey>,
    dispatchers: Option<AllowedSigners>,
}

impl Signing {
    /// Load both before anything is read or written: a configured key or
    /// signers file that cannot be used stops the call.
    fn load(cli: &cli::Cli) -> anyhow::Result<Signing> {
        let key = cli
            .signing_key
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(SigningKey::load)
            .transpose()?;
        let dispatchers = AllowedSigners::load_if(cli.trust.dispatcher_signers())?;
        Ok(Signing { key, dispatchers })
    }
}

impl Signing {
    /// Whether the file `name` (blob `blob`) of `vault/actions` at `base`
    /// may be trusted: always without `--dispatcher-signers`; else only
    /// when the first-parent commit that last changed it is signed by a
    /// listed dispatcher (the error says why not).
    pub(crate) fn believes(
        &self,
        repo: &Repository,
        base: Oid,
        name: &str,
        blob: Oid,
    ) -> Result<(), String> {
        let Some(signers) = &self.dispatchers else {
            return Ok(());
        };
        let commit = match vault_git::last_change(repo, base, name, blob) {
            Ok(c) => c,
            Err(e) => {
                // Never overwrite what cannot be judged.
                report(
                    TOOL,
                    format!(
                        "{name}: cannot tell which commit last changed it ({e}); it is believed"
                    ),
                );
                return Ok(());
            }
        };
        vault_git::sig::verify_commit(repo, commit, signers)
            .map(|_| ())
            .map_err(|e| {
                format!("it was last changed by commit {commit}, which is not signed by a listed dispatcher ({e})")
            })
    }
}

/// The stdout line.
#[derive(Serialize)]
pub(crate) struct Recorded<'a> {
    pub(crate) id: &'a str,
    pub(crate) status: Status,
    pub(crate) commit: String,
}

#[derive(Default)]
struct Tally {
    failed: bool,
    rewritten: bool,
    retry_later: bool,
    lost: bool,
}

impl Tally {
    fn exit(&self) -> Exit {
        if self.rewritten {
            Exit::Rewritten
        } else if self.failed {
            Exit::Failure
        } else if self.retry_later {
            Exit::RetryLater
        } else if self.lost {
            Exit::LostRace
        } else {
            Exit::Ok
        }
    }
}

pub fn run() -> ExitCode {
    vault_git::defer_ca_bundle();
    let cli = cli::Cli::parse();
    let stdin = std::io::stdin();
    match record(&cli, stdin.lock(), &mut std::io::stdout().lock()) {
        Ok(exit) => exit.into(),
        Err(e) => vault_core::exit::exit_for(TOOL, e.as_ref(), vault_git::exit_code).into(),
    }
}

fn read_input(
    cli: &cli::Cli,
    me: &str,
    input: impl BufRead,
    tally: &mut Tally,
) -> Vec<(ActionResult, bool)> {
    let mut out = Vec::new();
    if cli.flush {
        return out;
    }
    if cli.claim {
        for line in jsonl::Reader::<_, ScanLine>::new(input) {
            match line {
                Err(e) => {
                    report(TOOL, format!("{e}"));
                    tally.failed = true;
                }
                Ok(scan) if scan.error.is_some() => {
                    report(
                        TOOL,
                        format!("{}: the scan line is an error line; not claimed", scan.id),
                    );
                }
                Ok(scan) => {
                    let mut r = ActionResult::for_scan(&scan, Status::Running, me);
                    r.started_at = Some(vault_core::time::now_rfc3339());
                    out.push((r, scan.spent.is_some()));
                }
            }
        }
    } else {
        for line in jsonl::Reader::<_, ActionResult>::new(input) {
            match line {
                Err(e) => {
                    report(TOOL, format!("{e}"));
                    tally.failed = true;
                }
                Ok(mut r) => {
                    if r.dispatcher.as_deref().is_none_or(str::is_empty) {
                        r.dispatcher = Some(me.to_string());
                    }
                    out.push((r, false));
                }
            }
        }
    }
    out
}

/// Read the input, record it, write the stdout lines; the exit code.
pub fn record(
    cli: &cli::Cli,
    input: impl BufRead,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Exit> {
    let cfg = cli.repo.config()?;
    let me = String::from(cfg.dispatcher.clone());
    let signing = Signing::load(cli)?;
    if let Some(id) = &cli.abandon {
        abandon::refuse_if_started(&cfg.cache, id)?;
        let ops = Ops::from_config(&cfg)?;
        return abandon::run(cli, &ops, &me, &signing, id, out);
    }
    if cli.archive {
        // Its push walks every folder of the archive (see vault_git::lean_memory).
        vault_git::lean_memory();
        let ops = Ops::from_config(&cfg)?;
        let moved = archive::run(cli, &ops, &me, &signing)?;
        jsonl::Writer::new(out).write(&moved)?;
        return Ok(Exit::Ok);
    }
    let mut tally = Tally::default();
    let fresh = read_input(cli, &me, input, &mut tally);
    // Finals are spooled before the repo lock is taken: a call already
    // holding it (another worker's) takes them along in its commit, so a
    // burst of results lands in few pushes and none waits behind more than
    // the push under way.
    let spool_dir = vault_git::spool_dir(&cfg)?;
    let mut mine = Vec::new();
    for (result, spent) in fresh {
        // Write-ahead: a final result is on disk before any network traffic.
        let spooled = if result.status.is_final() {
            Some(spool::write(&spool_dir, &result).with_context(|| {
                format!(
                    "cannot spool the result of {} in {}",
                    result.id,
                    spool_dir.display()
                )
            })?)
        } else {
            None
        };
        mine.push(Item {
            bytes: result.to_file_bytes(),
            result,
            spooled,
            spent,
            refusable: true,
        });
    }
    let ops = Ops::from_config(&cfg)?;

    let mut items = Vec::new();
    for path in spool::list(&spool_dir)
        .with_context(|| format!("cannot list the spool {}", spool_dir.display()))?
    {
        if mine.iter().any(|i| i.spooled.as_ref() == Some(&path)) {
            continue;
        }
        let stale = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age >= STALE_SPOOL);
        let parsed = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice::<ActionResult>(&b).map_err(Into::into));
        match parsed {
            Ok(result) => items.push(Item {
                bytes: result.to_file_bytes(),
                result,
                spooled: Some(path),
                spent: false,
                refusable: stale,
            }),
            // Delivered (and removed) by another call since it was listed.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {}
            Err(e) => {
                let to = spool::reject(&spool_dir, &path).unwrap_or(path);
                report(
                    TOOL,
                    format!(
                        "spooled file is not a result ({e}); moved to {}",
                        to.display()
                    ),
                );
                tally.failed = true;
            }
        }
    }
    items.extend(mine);
    if items.is_empty() {
        return Ok(tally.exit());
    }

    match deliver(cli, &ops, &me, &items, &signing) {
        Ok((commit, outcomes)) => {
            let mut writer = jsonl::Writer::new(out);
            for (item, outcome) in items.iter().zip(&outcomes) {
                match outcome {
                    Outcome::Write | Outcome::Already => {
                        writer.write(&Recorded {
                            id: item.result.id.as_str(),
                            status: item.result.status,
                            commit: commit.to_string(),
                        })?;
                    }
                    Outcome::NotWritten(why) => {
                        report(TOOL, format!("{}: {why}; nothing written", item.result.id));
                        tally.lost = true;
                    }
                }
                if let Some(p) = &item.spooled {
                    if let Err(e) = spool::remove(p) {
                        report(TOOL, format!("cannot remove {}: {e}", p.display()));
                    }
                }
            }
        }
        Err(e) => {
            let unreachable = e
                .downcast_ref::<GitError>()
                .is_some_and(|g| g.is_unreachable());
            let spooled = items.iter().filter(|i| i.spooled.is_some()).count();
            let claims = items.len() - spooled;
            if unreachable {
                tally.retry_later = true;
                report(
                    TOOL,
                    format!(
                        "{e:#}; {spooled} result(s) spooled in {} for the next call{}",
                        spool_dir.display(),
                        if claims > 0 {
                            "; claims are not spooled"
                        } else {
                            ""
                        }
                    ),
                );
            } else {
                if matches!(
                    e.downcast_ref::<GitError>(),
                    Some(GitError::Rewritten { .. })
                ) {
                    tally.rewritten = true;
                } else {
                    tally.failed = true;
                }
                let refused = matches!(
                    e.downcast_ref::<GitError>(),
                    Some(GitError::Rejected { .. })
                );
                let mut kept = String::new();
                let aside: Vec<&PathBuf> = items
                    .iter()
                    .filter(|i| i.refusable)
                    .filter_map(|i| i.spooled.as_ref())
                    .collect();
                if refused && !aside.is_empty() {
                    for p in &aside {
                        if let Err(m) = spool::reject(&spool_dir, p) {
                            report(TOOL, format!("cannot move {} aside: {m}", p.display()));
                        }
                    }
                    kept = format!(
                        "; {} result(s) kept in {}{}",
                        aside.len(),
                        spool_dir.join("rejected").display(),
                        if aside.len() < spooled {
                            "; the others stay spooled for the calls that wrote them"
                        } else {
                            ""
                        }
                    );
                } else if spooled > 0 {
                    kept = format!("; {spooled} result(s) stay spooled for the next call");
                }
                report(TOOL, format!("{e:#}{kept}"));
            }
        }
    }
    Ok(tally.exit())
}

/// Fetch, decide, commit, push; retry on a moved branch. Returns the commit
/// that holds the recorded results and each item's outcome.
fn deliver(
    cli: &cli::Cli,
    ops: &Ops,
    me: &str,
    items: &[Item],
    trust: &Signing,
) -> anyhow::Result<(Oid, Vec<Outcome>)> {
    let repo = ops.repo();
    retrying(cli.tries, |_| {
        let base = ops.fetch()?;
        let tip = Tip::read(repo, base)?;
        let archive = Archive::read(ops.archive_repo(), ops.archive_tip())?;
        let mut believe = |name: &str, blob: Oid| trust.believes(repo, base, name, blob);
        let (outcomes, writes) = decide(repo, &tip, &archive, me, items, &mut believe);
        if writes.is_empty() {
            return Ok(Attempt::Done((base, outcomes)));
        }
        let commit = make_commit(
            repo,
            &tip,
            me,
            items,
            &outcomes,
            &writes,
            trust.key.as_ref(),
        )?;
        match ops.push(commit, base) {
            Ok(()) => Ok(Attempt::Done((commit, outcomes))),
            Err(e @ GitError::NonFastForward) => Ok(Attempt::Moved(e)),
            Err(e @ GitError::Rejected { .. }) => {
                // A refused ref may still be a lost race: did the branch move?
                if ops.fetch()? == base {
                    return Err(e.into());
                }
                Ok(Attempt::Moved(e))
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// What one compare-and-swap attempt (fetch, decide, commit, push) came to.
pub(crate) enum Attempt<T> {
    Done(T),
    /// The branch moved under the push: look again.
    Moved(GitError),
}

/// Run `attempt` (given its number, from 0) until it is done, at most
/// `tries` times, with a jittered backoff between attempts.
pub(crate) fn retrying<T>(
    tries: u32,
    mut attempt: impl FnMut(u32) -> anyhow::Result<Attempt<T>>,
) -> anyhow::Result<T> {
    let mut last = None;
    for n in 0..tries {
        if n > 0 {
            backoff(n);
        }
        match attempt(n)? {
            Attempt::Done(t) => return Ok(t),
            Attempt::Moved(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "the branch kept moving: gave up after {tries} tries ({})",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

fn backoff(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let base_ms = 40u64 << attempt.min(4);
    let jitter = u64::from(nanos ^ std::process::id()) % base_ms.max(1);
    std::thread::sleep(std::time::Duration::from_millis(base_ms + jitter));
}

/// Each item's outcome, and per file name to write the index of its item.
type Decision = (Vec<Outcome>, Vec<(String, usize)>);

/// What is at `vault/actions/<id>.result.json`.
enum Existing {
    None,
    Result(Box<ActionResult>, Vec<u8>, Option<Oid>),
    Unreadable(String, Oid),
}

fn existing(repo: &Repository, actions: Option<&git2::Tree<'_>>, name: &str) -> Existing {
    let Some(entry) = actions.and_then(|t| t.get_name(name)) else {
        return Existing::None;
    };
    read_existing(repo, &entry)
}

fn read_existing(repo: &Repository, entry: &git2::TreeEntry<'_>) -> Existing {
    let oid = entry.id();
    if !vault_git::is_regular_file(entry) {
        return Existing::Unreadable("it is not a regular file".into(), oid);
    }
    match repo.find_blob(oid) {
        Ok(b) => match serde_json::from_slice::<ActionResult>(b.content()) {
            Ok(r) => Existing::Result(Box::new(r), b.content().to_vec(), Some(oid)),
            Err(e) => Existing::Unreadable(format!("it is not a valid result: {e}"), oid),
        },
        Err(e) => Existing::Unreadable(e.message().to_string(), oid),
    }
}

/// The archived result of `r`'s id, if the archive holds one.
fn archived_result(archive: &Archive<'_>, r: &ActionResult) -> Option<Existing> {
    let name = r.id.result_file_name();
    match archive.get(r.id.as_str(), &name) {
        Ok(Some(entry)) => Some(read_existing(archive.repo(), &entry)),
        Ok(None) => None,
        Err(e) => Some(Existing::Unreadable(e.to_string(), git2::Oid::ZERO_SHA1)),
    }
}

/// Decide each item against the tree at `base` (and the items before it).
/// Returns the outcomes and, per id to write, the index of the item.
fn decide(
    repo: &Repository,
    tip: &Tip<'_>,
    archive: &Archive<'_>,
    me: &str,
    items: &[Item],
    believe: &mut dyn FnMut(&str, Oid) -> Result<(), String>,
) -> Decision {
    let mut pending: HashMap<String, usize> = HashMap::new();
    let mut outcomes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let r = &item.result;
        let name = r.id.result_file_name();
        let current = match pending.get(&name) {
            Some(&j) => Existing::Result(
                Box::new(items[j].result.clone()),
                items[j].bytes.clone(),
                None,
            ),
            None => existing(repo, tip.actions.as_ref(), &name),
        };
        if let (Existing::None, Some(old)) = (&current, archived_result(archive, r)) {
            let same = matches!(&old, Existing::Result(_, bytes, _) if *bytes == item.bytes);
            if same {
                outcomes.push(Outcome::Already);
                continue;
            }
            if r.status == Status::Running && !item.spent {
                // An id that finished once is never claimed again.
                let what = match &old {
                    Existing::Result(old, _, _) => format!("a {} result", old.status),
                    _ => "a result".to_string(),
                };
                outcomes.push(Outcome::NotWritten(format!(
                    "lost the race: it already has {what} in the archive ({})",
                    vault_core::layout::archive_folder(r.id.as_str())
                )));
                continue;
            }
            // An id landed again after its archived run (vault-scan's
            // `spent` line): its claim and `abandoned` result are written
            // in vault/actions.
        }
        // A file in the way that no listed dispatcher committed counts as
        // absent (with --dispatcher-signers; see vault-scan's trust).
        let blob = match &current {
            Existing::Result(_, _, blob) => *blob,
            Existing::Unreadable(_, blob) => Some(*blob),
            Existing::None => None,
        };
        let mut outcome = match current {
            Existing::None => Outcome::Write,
            Existing::Unreadable(why, _) => {
                Outcome::NotWritten(format!("{name} is already there but {why}; it is kept"))
            }
            Existing::Result(old, old_bytes, _) => {
                if r.status == Status::Running {
                    if old.status == Status::Running && old.dispatcher.as_deref() == Some(me) {
                        Outcome::Already
                    } else if old.status == Status::Running {
                        Outcome::NotWritten(format!(
                            "lost the race: claimed by dispatcher {:?}",
                            old.dispatcher.as_deref().unwrap_or("")
                        ))
                    } else {
                        Outcome::NotWritten(format!(
                            "lost the race: it already has a {} result",
                            old.status
                        ))
                    }
                } else if !old.status.is_final() {
                    Outcome::Write
                } else if old_bytes == item.bytes {
                    Outcome::Already
                } else {
                    Outcome::NotWritten(format!(
                        "a {} result is already recorded and is kept (new: {})",
                        old.status, r.status
                    ))
                }
            }
        };
        let in_the_way = matches!(outcome, Outcome::NotWritten(_))
            || (outcome == Outcome::Already && r.status == Status::Running);
        if let (true, Some(blob)) = (in_the_way, blob) {
            if let Err(why) = believe(&name, blob) {
                report(TOOL, format!("{}: replacing {name}: {why}", r.id));
                outcome = Outcome::Write;
            }
        }
        if outcome == Outcome::Write {
            pending.insert(name, i);
        }
        outcomes.push(outcome);
    }
    let mut writes: Vec<(String, usize)> = pending.into_iter().collect();
    writes.sort();
    (outcomes, writes)
}

fn make_commit(
    repo: &Repository,
    tip: &Tip<'_>,
    me: &str,
    items: &[Item],
    outcomes: &[Outcome],
    writes: &[(String, usize)],
    key: Option<&SigningKey>,
) -> anyhow::Result<Oid> {
    let tree = tip.tree_with(
        repo,
        writes
            .iter()
            .map(|(name, i)| (name.as_str(), items[*i].bytes.as_slice())),
    )?;

    let written: Vec<&Item> = items
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| **o == Outcome::Write)
        .map(|(i, _)| i)
        .collect();
    let message = match written.as_slice() {
        [one] => format!("vault: {} {}\n", one.result.id, one.result.status),
        many => {
            let mut m = format!("vault: record {} results\n\n", many.len());
            for i in many {
                m.push_str(&format!("{} {}\n", i.result.id, i.result.status));
            }
            m
        }
    };
    commit_tree(repo, me, &message, &tree, &[&tip.commit], key)
}

/// A commit of `tree` on `parents` by this dispatcher (author and
/// committer), signed with `key` when there is one.
pub(crate) fn commit_tree(
    repo: &Repository,
    me: &str,
    message: &str,
    tree: &git2::Tree<'_>,
    parents: &[&git2::Commit<'_>],
    key: Option<&SigningKey>,
) -> anyhow::Result<Oid> {
    let email: String = me
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let sig = Signature::now(me, &format!("{email}@vault-dispatch.invalid"))
        .context("cannot make the commit signature")?;
    let oid = match key {
        None => repo.commit(None, &sig, &sig, message, tree, parents),
        Some(key) => {
            let buf = repo
                .commit_create_buffer(&sig, &sig, message, tree, parents)
                .context("cannot make the commit")?;
            let content = std::str::from_utf8(&buf).context("the commit is not UTF-8")?;
            let signature = key.sign_commit(content).context("cannot sign the commit")?;
            repo.commit_signed(content, &signature, None)
        }
    }
    .context("cannot create the commit")?;
    Ok(oid)
}

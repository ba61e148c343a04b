//! vault-scan: fetch the ops repo and print one JSON line per pending action.
//!
//! The watched branch is fetched into a bare cache clone (see `vault_git`)
//! and read from `refs/remotes/origin/<branch>`, never from a working tree.
//! Only the direct entries of `vault/actions/` are read; nothing else of the
//! repo is opened.
//!
//! stdout, one [`vault_core::ScanLine`] per line, sorted by id:
//!
//! ```json
//! {"schema":1,"id":"a","path":"vault/actions/a.json","commit":"<branch sha>","blob":"<file sha>","action":{...}}
//! {"schema":1,"id":"b","path":"vault/actions/b.json","commit":"<sha>","blob":"<sha>","error":"..."}
//! {"schema":1,"id":"c","path":"vault/actions/c.json","commit":"<sha>","blob":"<sha>","action":{...},"resume":true}
//! ```
//!
//! Pending: `<id>.json` without `<id>.result.json`; or with a `running`
//! result whose `dispatcher` is this dispatcher (`"resume": true`). Another
//! dispatcher's `running` claim and every final result are not pending.
//! An error line is printed for an action file that is not valid JSON,
//! whose id differs from its file stem, has an unknown field or a bad
//! secret name, is too large, or is a symlink or submodule entry. A `.json`
//! file whose name is not a valid id, and a result file that cannot be read
//! as a result, are reported on stderr (no line: the action is not run).
//!
//! Exit: 0 listed (error lines are data), 1 failure (also: the branch does
//! not exist on the remote), 2 usage, 4 remote unreachable (nothing
//! printed).

pub mod cli;
pub mod scan;

use anyhow::Context;
use clap::Parser;
use scan::Candidate;
use std::process::ExitCode;
use vault_core::{jsonl, report, Exit};

const TOOL: &str = "vault-scan";

pub fn run() -> ExitCode {
    vault_git::defer_ca_bundle();
    let cli = cli::Cli::parse();
    match scan_to(&cli, &mut std::io::stdout().lock()) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => vault_git::exit_for(TOOL, &e).into(),
    }
}

/// Fetch, scan, and write the scan lines to `out`.
pub fn scan_to(cli: &cli::Cli, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let me = cli.repo.dispatcher()?;
    let ops = cli.repo.open()?;
    let commit = ops.fetch()?;
    let repo = ops.repo();
    let Some(tree) = vault_git::actions_tree_id(repo, commit)? else {
        if cli.verbose {
            report(TOOL, format!("{commit} has no vault/actions folder"));
        }
        return Ok(());
    };
    let tree_cache = ops.state_path("scan-tree.json");
    let cached = if cli.no_scan_cache {
        None
    } else {
        scan::cached_candidates(&tree_cache, tree)
    };
    let candidates = match cached {
        Some(c) => c,
        None => {
            let results_path = ops.state_path("scan-results");
            let mut results = if cli.no_scan_cache {
                scan::ResultCache::default()
            } else {
                scan::ResultCache::load(&results_path)
            };
            let c = scan::candidates(repo, tree, &mut results)
                .context("cannot read the vault/actions tree")?;
            // A cache that cannot be written only costs time next run.
            if let Err(e) = results
                .store(&results_path)
                .and_then(|()| scan::store_candidates(&tree_cache, tree, &c))
            {
                report(TOOL, format!("cannot write the scan cache: {e}"));
            }
            c
        }
    };
    let mut writer = jsonl::Writer::new(out);
    for c in candidates {
        let (id, kind, oid, resume) = match c {
            Candidate::Pending { id, kind, oid } => (id, kind, oid, false),
            Candidate::Running {
                id,
                kind,
                oid,
                dispatcher,
            } => {
                if dispatcher != me {
                    if cli.verbose {
                        report(
                            TOOL,
                            format!("{id}: claimed by dispatcher {dispatcher:?}; skipped"),
                        );
                    }
                    continue;
                }
                (id, kind, oid, true)
            }
            Candidate::BadResult { id, reason } => {
                report(
                    TOOL,
                    format!("{}: {reason}; the action is not run", id.result_path()),
                );
                continue;
            }
            Candidate::BadName { name, reason } => {
                report(TOOL, format!("vault/actions/{name}: {reason}; skipped"));
                continue;
            }
        };
        let line = scan::scan_line(repo, commit, id, kind, &oid, resume);
        writer.write(&line)?;
    }
    Ok(())
}

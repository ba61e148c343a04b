//! The exit-code table shared by every tool (documented in README.md).
//!
//! | code | name | meaning |
//! | ---- | ---- | ------- |
//! | 0 | `Ok` | done; for run-action and secret-mount: the action succeeded |
//! | 1 | `Failure` | the tool failed; nothing was recorded by this call |
//! | 2 | `Usage` | bad flags or arguments (clap's own code) |
//! | 3 | `LostRace` | result-write: another dispatcher's result is already there for this `running` claim; nothing written |
//! | 4 | `RetryLater` | a transient failure (remote unreachable, daemon down); the work is kept (e.g. the result spooled) and the next call picks it up |
//! | 5 | `NotSucceeded` | a result line was printed, and its status is not `succeeded` (failed, timed_out, rejected, error, abandoned) |
//! | 6 | `Rewritten` | vault-scan: the watched branch was rewritten (its tip does not descend from the last tip dispatched from); nothing printed until an operator runs `vault-scan --accept-rewrite <new tip>` |
//!
//! secret-mount in wrapper mode exits with its command's code once the
//! command ran.

use std::error::Error;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    LostRace = 3,
    RetryLater = 4,
    NotSucceeded = 5,
    Rewritten = 6,
}

impl Exit {
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// The one mapping from a tool's top-level error to its exit code, with the
/// one-line report on stderr (`tool: what: why`, the whole chain): a closed
/// stdout (`| head`) ends quietly with [`Exit::Ok`]; else the first error in
/// the chain that `code_of` gives a code to decides (e.g. an unreachable
/// remote is [`Exit::RetryLater`]), else [`Exit::Failure`].
pub fn exit_for(
    tool: &str,
    err: &(dyn Error + 'static),
    code_of: impl Fn(&(dyn Error + 'static)) -> Option<Exit>,
) -> Exit {
    if crate::jsonl::is_broken_pipe(err) {
        return Exit::Ok;
    }
    let mut code = None;
    let mut cur = Some(err);
    while let Some(e) = cur {
        code = code.or_else(|| code_of(e));
        cur = e.source();
    }
    let text = chain_text(err);
    crate::report(tool, text);
    code.unwrap_or(Exit::Failure)
}

/// The error and its causes on one line, as anyhow's `{:#}` prints a chain;
/// a cause an error already spells out in its own message is not said twice.
fn chain_text(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(next) = cur {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cur = next.source();
    }
    text
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Exit::Ok,
            Exit::Failure,
            Exit::Usage,
            Exit::LostRace,
            Exit::RetryLater,
            Exit::NotSucceeded,
            Exit::Rewritten,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code() as usize, i);
        }
        assert_eq!(Exit::Usage.code(), 2, "clap exits 2 on usage errors");
    }

    #[test]
    fn errors_map_through_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let busy = Outer(std::io::Error::other("busy"));
        let code_of = |e: &(dyn Error + 'static)| {
            e.downcast_ref::<std::io::Error>().map(|_| Exit::RetryLater)
        };
        assert_eq!(exit_for("t", &busy, code_of), Exit::RetryLater);
        assert_eq!(exit_for("t", &busy, |_| None), Exit::Failure);
        let closed = Outer(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "x"));
        assert_eq!(exit_for("t", &closed, |_| Some(Exit::Usage)), Exit::Ok);
    }

    #[test]
    fn a_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create /c: {0}")]
        struct Says(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let denied = || std::io::Error::other("Permission denied (os error 13)");
        assert_eq!(
            chain_text(&Says(denied())),
            "cannot create /c: Permission denied (os error 13)"
        );
        assert_eq!(
            chain_text(&Outer(denied())),
            "outer: Permission denied (os error 13)"
        );
    }
}

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

    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Exit::Ok,
            1 => Exit::Failure,
            2 => Exit::Usage,
            3 => Exit::LostRace,
            4 => Exit::RetryLater,
            5 => Exit::NotSucceeded,
            6 => Exit::Rewritten,
            _ => return None,
        })
    }
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
    fn codes_round_trip_and_are_distinct() {
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
            assert_eq!(Exit::from_code(i as i32), Some(*e));
        }
        assert_eq!(Exit::from_code(7), None);
        assert_eq!(Exit::Usage.code(), 2, "clap exits 2 on usage errors");
    }
}

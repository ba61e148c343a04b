//! Settings two or more tools share, each a checked type with one rule.
//!
//! A setting read by several tools (from one exported environment) must mean
//! the same to all of them: `VAULT_RUNNER_USER=1000` is accepted or refused
//! by every tool alike, and the dispatcher id a tool puts in labels, result
//! lines and commits is checked by every tool alike. Each tool's clap
//! definition parses these with [`std::str::FromStr`], so a bad value is a
//! usage error (exit 2) in every tool.

use std::fmt;
use std::str::FromStr;

/// Why a shared setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{0:?} is not UID[:GID] (numeric, e.g. 65534:65534 or 1000)")]
    BadUser(String),
    #[error("uid 0 (root) is refused: the runner must not be root")]
    RootUser,
    #[error("invalid dispatcher id {0:?}: want 1-128 printable characters without < or >")]
    BadDispatcher(String),
}

/// The numeric identity the runner runs as (`VAULT_RUNNER_USER`): run-action
/// runs the container as it, secret-mount gives it the secret files.
///
/// Rule: `UID:GID` or a bare `UID` (meaning `UID:UID`), both decimal, below
/// 4294967295 (`-1`, "leave unchanged" to chown); uid 0 is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerUser {
    pub uid: u32,
    pub gid: u32,
}

impl FromStr for RunnerUser {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, SettingError> {
        let (u, g) = s.split_once(':').unwrap_or((s, s));
        let num = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n != u32::MAX && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| SettingError::BadUser(s.chars().take(80).collect()))
        };
        let (uid, gid) = (num(u)?, num(g)?);
        if uid == 0 {
            return Err(SettingError::RootUser);
        }
        Ok(RunnerUser { uid, gid })
    }
}

impl fmt::Display for RunnerUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// This dispatcher's name (`VAULT_DISPATCHER_ID`), in container labels,
/// result lines, claims and commit authors.
///
/// Rule: 1-128 characters, not all white space, no control characters, no
/// `<` or `>` (it becomes a commit author's name). An empty flag means the
/// kernel's hostname ([`DispatcherId::from_flag`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DispatcherId(String);

impl DispatcherId {
    /// The value of `--dispatcher-id`: an empty value means the host's name
    /// (so an exported but empty `VAULT_DISPATCHER_ID` is the default).
    pub fn from_flag(s: &str) -> Result<Self, SettingError> {
        if s.is_empty() {
            Self::host()
        } else {
            s.parse()
        }
    }

    /// The flag's value if given, else the host's name.
    pub fn or_host(flag: Option<Self>) -> Result<Self, SettingError> {
        flag.map_or_else(Self::host, Ok)
    }

    /// The kernel's hostname (else `/etc/hostname`, else `localhost`),
    /// checked by the same rule.
    pub fn host() -> Result<Self, SettingError> {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
            .parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DispatcherId {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, SettingError> {
        let ok = s.chars().count() <= 128
            && !s.trim().is_empty()
            && !s.chars().any(|c| c.is_control() || c == '<' || c == '>');
        if !ok {
            return Err(SettingError::BadDispatcher(s.chars().take(80).collect()));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for DispatcherId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for DispatcherId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for DispatcherId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<DispatcherId> for String {
    fn from(id: DispatcherId) -> String {
        id.0
    }
}

/// Where the ops repo is and how to reach it.
/// What vault-scan and result-write are given (from `cli::RepoArgs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    /// As given: a path, `file://`, `git://`, `ssh://`, `user@host:path` or
    /// `https://`.
    pub url: String,
    pub branch: String,
    pub cache: std::path::PathBuf,
    pub dispatcher: DispatcherId,
    pub ssh_key: Option<std::path::PathBuf>,
    pub token_file: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_user_one_rule() {
        let u = |uid, gid| Ok(RunnerUser { uid, gid });
        assert_eq!("65534:65534".parse(), u(65534, 65534));
        assert_eq!("1000".parse(), u(1000, 1000));
        assert_eq!("1234:0".parse(), u(1234, 0));
        assert_eq!(
            "1000".parse::<RunnerUser>().unwrap().to_string(),
            "1000:1000"
        );
        for root in ["0", "0:0", "0:1000"] {
            assert_eq!(
                root.parse::<RunnerUser>(),
                Err(SettingError::RootUser),
                "{root}"
            );
        }
        for bad in [
            "",
            "nobody",
            "1:x",
            "a:b",
            ":1",
            "1:",
            "-1:1",
            "+5",
            "4294967295:0",
            "1:4294967295",
            "1:2:3",
        ] {
            assert!(
                matches!(bad.parse::<RunnerUser>(), Err(SettingError::BadUser(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dispatcher_id_one_rule() {
        for good in [
            "edge-1",
            "a",
            "host.example.org",
            "with space",
            &"x".repeat(128),
        ] {
            assert_eq!(good.parse::<DispatcherId>().unwrap().as_str(), good);
        }
        for bad in ["", "  ", "a<b", "a>b", "a\nb", "tab\t", &"x".repeat(129)] {
            assert!(bad.parse::<DispatcherId>().is_err(), "{bad:?}");
        }
        let host = DispatcherId::host().unwrap();
        assert_eq!(DispatcherId::from_flag("").unwrap(), host);
        assert_eq!(DispatcherId::or_host(None).unwrap(), host);
        assert_eq!(DispatcherId::from_flag("me").unwrap(), *"me");
    }
}

//! Ops repo URLs: parsing, normalising, redacting, cache keys.

use crate::GitError;
use git2::{ObjectType, Oid};
use std::path::PathBuf;

/// A repo URL as given, normalized for libgit2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// What libgit2 is given.
    git: String,
    /// Set for a path or `file://` URL: the remote repo on this host.
    pub(crate) local: Option<PathBuf>,
}

impl RepoUrl {
    /// Accepts a path, `file://`, `git://`, `ssh://`, scp-like
    /// `user@host:path`, `http(s)://`. A relative path is made absolute.
    pub fn parse(raw: &str) -> Result<Self, GitError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(GitError::Config("the repo URL is empty".into()));
        }
        if raw.contains(['\n', '\r', '\0']) {
            return Err(GitError::Config(
                "the repo URL contains a control character".into(),
            ));
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: Some(PathBuf::from(rest)),
            });
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let known = ["git", "ssh", "git+ssh", "ssh+git", "http", "https"];
            if !known.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(GitError::Config(format!(
                    "unsupported repo URL scheme {scheme:?}: use a path, file://, git://, ssh:// or https://"
                )));
            }
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: None,
            });
        }
        let scp_like = !raw.starts_with(['/', '.'])
            && raw
                .split_once(':')
                .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
        if scp_like {
            return Ok(RepoUrl {
                git: raw.to_string(),
                local: None,
            });
        }
        let path = std::path::absolute(raw).map_err(GitError::io(format!(
            "cannot make {raw:?} an absolute path"
        )))?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(RepoUrl {
            git: path.to_string_lossy().into_owned(),
            local: Some(path),
        })
    }

    pub fn as_git(&self) -> &str {
        &self.git
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    pub(crate) fn scheme(&self) -> Option<String> {
        self.git
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
    }

    /// The URL for messages: a password in the URL is replaced by `***`.
    pub fn display(&self) -> String {
        redact(&self.git)
    }

    /// A directory name unique to this URL.
    pub fn cache_key(&self) -> String {
        let tail = self
            .git
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo")
            .trim_end_matches(".git");
        let mut name: String = tail
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect();
        name = name.trim_start_matches('.').to_string();
        if name.is_empty() {
            name = "repo".into();
        }
        let hash = Oid::hash_object(ObjectType::Blob, self.git.as_bytes())
            .map(|o| o.to_string())
            .unwrap_or_default();
        format!("{name}-{}", &hash[..16.min(hash.len())])
    }
}

/// The server a URL names: scheme and host (with its port when not the
/// scheme's default), lower-cased, without user or path; scp-like
/// `user@host:path` is ssh. `None` for a path or `file://`.
pub(crate) fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => {
            let (host, _) = url.split_once(':')?;
            if host.is_empty() || host.contains('/') {
                return None;
            }
            ("ssh".to_string(), host)
        }
    };
    let scheme = match scheme.as_str() {
        "file" => return None,
        "git+ssh" | "ssh+git" => "ssh".to_string(),
        _ => scheme,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        "ssh" => ":22",
        "git" => ":9418",
        _ => "",
    };
    let host = match host.strip_suffix(default) {
        Some(h) if !default.is_empty() => h.to_string(),
        _ => host,
    };
    Some((scheme, host))
}

pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***{}", &rest[at..]);
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_origin_is_scheme_and_host_only() {
        let o = |u: &str| origin(u).map(|(s, h)| format!("{s}://{h}"));
        assert_eq!(
            o("https://x-access-token@Git.Example.com:443/org/repo.git"),
            o("https://git.example.com/org/other.git/info/refs")
        );
        assert_ne!(
            o("https://git.example.com/r.git"),
            o("https://evil.example/r.git")
        );
        assert_ne!(
            o("https://git.example.com/r.git"),
            o("https://git.example.com:8443/r.git")
        );
        assert_ne!(
            o("https://git.example.com/r.git"),
            o("http://git.example.com/r.git")
        );
        assert_eq!(
            o("git@host.example:org/r.git").as_deref(),
            Some("ssh://host.example")
        );
        assert_eq!(
            o("ssh://git@host.example:22/r").as_deref(),
            Some("ssh://host.example")
        );
        assert_eq!(o("file:///tmp/r"), None);
        assert_eq!(o("/tmp/r"), None);
    }

    #[test]
    fn urls_normalize_and_keys_differ() {
        let a = RepoUrl::parse("git://127.0.0.1:9418/ops.git").unwrap();
        let b = RepoUrl::parse("git://127.0.0.1:9418/other/ops.git").unwrap();
        assert!(!a.is_local());
        assert_ne!(a.cache_key(), b.cache_key());
        assert!(a.cache_key().starts_with("ops-"), "{}", a.cache_key());
        let p = RepoUrl::parse("relative/ops").unwrap();
        assert!(p.is_local());
        assert!(Path::new(p.as_git()).is_absolute());
        let f = RepoUrl::parse("file:///srv/ops.git").unwrap();
        assert!(f.is_local());
        assert_eq!(f.as_git(), "file:///srv/ops.git");
        let scp = RepoUrl::parse("git@example.invalid:org/ops.git").unwrap();
        assert!(!scp.is_local());
        assert!(RepoUrl::parse("ftp://x/y").is_err());
        assert!(RepoUrl::parse("").is_err());
        assert!(RepoUrl::parse("a\nb").is_err());
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        let u = RepoUrl::parse("https://bob:hunter2@example.invalid/ops.git").unwrap();
        assert_eq!(u.display(), "https://bob:***@example.invalid/ops.git");
        assert!(!u.cache_key().contains("hunter2"));
        let u = RepoUrl::parse("ssh://git@example.invalid/ops.git").unwrap();
        assert_eq!(u.display(), "ssh://git@example.invalid/ops.git");
    }
}

//! What a fetch or push may offer: an ssh key (else, unless turned off,
//! the agent) or a token.

use crate::GitError;
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// The credentials a fetch or push may offer.
pub struct Credentials {
    pub(crate) ssh_key: Option<PathBuf>,
    pub(crate) token: Option<SecretString>,
    /// Whether an ssh URL without a key may use the ssh-agent (the ops
    /// repo's own fetch and push); a code checkout never does.
    pub(crate) agent: bool,
}

impl Credentials {
    pub fn none() -> Self {
        Credentials {
            ssh_key: None,
            token: None,
            agent: true,
        }
    }

    /// The same credentials, never falling back to the ssh-agent: an ssh
    /// URL without a key then gets no ssh credential at all.
    pub fn without_agent(mut self) -> Self {
        self.agent = false;
        self
    }

    /// Read the token file now (so a missing file is reported before any
    /// network traffic). The token's surrounding white space is dropped.
    pub fn load(ssh_key: Option<&Path>, token_file: Option<&Path>) -> Result<Self, GitError> {
        let token = match token_file {
            None => None,
            Some(p) => {
                let raw = std::fs::read(p).map_err(GitError::io(format!(
                    "cannot read token file {}",
                    p.display()
                )))?;
                let text = String::from_utf8(raw).map_err(|_| {
                    GitError::Config(format!("token file {} is not UTF-8", p.display()))
                })?;
                let token = SecretString::from(text.trim().to_string());
                drop(text);
                if token.expose_secret().is_empty() {
                    return Err(GitError::Config(format!(
                        "token file {} is empty",
                        p.display()
                    )));
                }
                Some(token)
            }
        };
        if let Some(k) = ssh_key {
            if !k.is_file() {
                return Err(GitError::Config(format!(
                    "ssh key {} is not a readable file",
                    k.display()
                )));
            }
        }
        Ok(Credentials {
            ssh_key: ssh_key.map(Path::to_path_buf),
            token,
            agent: true,
        })
    }
}

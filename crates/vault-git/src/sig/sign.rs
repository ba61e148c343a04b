//! Signing commits as `git commit -S` does with `gpg.format=ssh`: an
//! SSHSIG over the commit object's text, namespace `git`, hash sha512.

use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey};
use std::fmt;
use std::path::Path;

/// An unencrypted OpenSSH private key (ed25519 or ECDSA P-256) that signs
/// commits. Its `Debug` shows only the key type and fingerprint; no error
/// of this module carries key material.
pub struct SigningKey {
    key: PrivateKey,
    fingerprint: String,
}

/// Why a signing key was refused or a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH private key ({reason}): give a key made by ssh-keygen")]
    Parse { path: String, reason: String },
    #[error("{path} is protected by a passphrase, and vault-dispatch does not prompt for one: give a key without a passphrase")]
    Encrypted { path: String },
    #[error("{path} is an RSA key, which is refused for signing: the rsa crate's private-key operations are open to a timing side channel (RUSTSEC-2023-0071, no fixed release); use an ed25519 key (ssh-keygen -t ed25519)")]
    Rsa { path: String },
    #[error("{path} is a {kind} key, which is not supported for signing: use an ed25519 key (ssh-keygen -t ed25519) or ecdsa-sha2-nistp256")]
    Unsupported { path: String, kind: String },
    #[error("cannot sign with key {fingerprint}: {reason}")]
    Sign { fingerprint: String, reason: String },
}

impl SigningKey {
    /// Read an OpenSSH private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let shown = path.display().to_string();
        // read_to_string first, so a missing file is an io error with its
        // own message; the text is wiped when dropped.
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            SigningKeyError::Read {
                path: shown.clone(),
                source,
            }
        })?);
        Self::from_openssh(&text, &shown)
    }

    /// Parse the text of an OpenSSH private key; `name` is what errors
    /// call it.
    pub fn from_openssh(text: &str, name: &str) -> Result<Self, SigningKeyError> {
        let path = name.to_string();
        let key = PrivateKey::from_openssh(text).map_err(|e| SigningKeyError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(SigningKeyError::Encrypted { path });
        }
        match key.algorithm() {
            Algorithm::Ed25519 => {}
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            } => {}
            Algorithm::Rsa { .. } => return Err(SigningKeyError::Rsa { path }),
            other => {
                return Err(SigningKeyError::Unsupported {
                    path,
                    kind: other.as_str().to_string(),
                })
            }
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        Ok(SigningKey { key, fingerprint })
    }

    /// The armored signature (`-----BEGIN SSH SIGNATURE-----` …
    /// `-----END SSH SIGNATURE-----`, no final newline) of a commit object's
    /// text, for `git2::Repository::commit_signed(content, &signature, None)`.
    /// `commit_content` must be exactly the buffer given to `commit_signed`
    /// (e.g. from `Repository::commit_create_buffer`).
    pub fn sign_commit(&self, commit_content: &str) -> Result<String, SigningKeyError> {
        let fail = |e: ssh_key::Error| SigningKeyError::Sign {
            fingerprint: self.fingerprint.clone(),
            reason: e.to_string(),
        };
        let sig = self
            .key
            .sign("git", HashAlg::Sha512, commit_content.as_bytes())
            .map_err(fail)?;
        let pem = sig.to_pem(LineEnding::LF).map_err(fail)?;
        // libgit2 ends the gpgsig header with its own newline; git's own
        // commits have none after the END line either.
        Ok(pem.trim_end().to_string())
    }

    /// The public key as one `authorized_keys` / allowed-signers line
    /// (`ssh-ed25519 AAAA… comment`).
    pub fn public_openssh(&self) -> String {
        self.key
            .public_key()
            .to_openssh()
            .unwrap_or_else(|_| self.fingerprint.clone())
    }

    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `ssh-ed25519` or `ecdsa-sha2-nistp256`.
    pub fn key_type(&self) -> String {
        self.key.algorithm().as_str().to_string()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_type", &self.key.algorithm().as_str())
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

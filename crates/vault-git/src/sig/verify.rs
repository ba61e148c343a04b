//! `verify_commit`: the verdict `git verify-commit` gives with
//! `gpg.format=ssh` and `gpg.ssh.allowedSignersFile`, without running
//! ssh-keygen.
//!
//! What git does (gpg-interface.c, OpenSSH's sshsig.c), and so what this
//! does, with T = the commit's committer time (git's `-Overify-time`):
//!
//! 1. The signature is an SSHSIG for namespace `git`, and verifies.
//! 2. `find-principals`: the FIRST line, in file order, whose key is the
//!    signature's key and that is valid at T (`valid-after` <= T <=
//!    `valid-before`; its `namespaces` are not looked at here).
//! 3. `verify -I P` for each principal P of that line, in order: accepted
//!    if some line (any, in file order) has a principal pattern matching P
//!    (`*`, `?`, `!negation`), the same key, `namespaces` matching `git`
//!    (none = every namespace) and is valid at T. The first P accepted is
//!    [`Verified::principal`].

use super::allowed::{match_list, AllowedSigners, Entry};
use super::time::format_utc;
use git2::{Oid, Repository};
use ssh_key::{HashAlg, PublicKey, SshSig};

/// A commit whose signature git would accept with this allowed-signers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principal git reports ("Good \"git\" signature for PRINCIPAL"):
    /// the first principal of the signer's line that verifies.
    pub principal: String,
    /// Every principal of that line, as written (patterns included).
    pub principals: Vec<String>,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, …
    pub key_type: String,
    /// The allowed-signers line (1-based) that listed the key.
    pub line: usize,
}

/// Why a commit is not verified; `Display` is a short lowercase reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("unsigned")]
    Unsigned,
    #[error("not an SSH signature ({kind})")]
    NotSsh { kind: &'static str },
    #[error("bad signature: {reason}")]
    BadSignature { reason: String },
    #[error("unknown key {fingerprint}")]
    UnknownKey { fingerprint: String },
    #[error("key {fingerprint} not valid at the commit's time {}", format_utc(*time))]
    NotValidAt { fingerprint: String, time: i64 },
    #[error("wrong namespace: {detail}")]
    WrongNamespace { detail: String },
    /// The key's line is valid at the commit's time but none of its
    /// principals is accepted by a line with that key (e.g. every
    /// principal is excluded by a `!pattern`).
    #[error("no principal of allowed signers line {line} accepts key {fingerprint}")]
    NoPrincipal { fingerprint: String, line: usize },
    #[error("cannot read commit {oid}: {message}")]
    Unreadable { oid: Oid, message: String },
}

/// The verdict `git -c gpg.ssh.allowedSignersFile=… verify-commit` gives on
/// `commit`, checked at the commit's committer time.
pub fn verify_commit(
    repo: &Repository,
    commit: Oid,
    signers: &AllowedSigners,
) -> Result<Verified, Unverified> {
    let unreadable = |e: git2::Error| Unverified::Unreadable {
        oid: commit,
        message: e.message().replace(['\n', '\r'], " "),
    };
    let time = repo
        .find_commit(commit)
        .map_err(unreadable)?
        .committer()
        .when()
        .seconds();
    let (armored, data) = match repo.extract_signature(&commit, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(Unverified::Unsigned),
        Err(e) => return Err(unreadable(e)),
    };
    let armored = std::str::from_utf8(&armored).map_err(|_| Unverified::BadSignature {
        reason: "the signature is not text".into(),
    })?;
    let sig = parse_ssh_signature(armored)?;
    let key = PublicKey::from(sig.public_key().clone());
    key.verify("git", &data, &sig)
        .map_err(|e| Unverified::BadSignature {
            reason: e.to_string().to_lowercase(),
        })?;
    decide(signers, &key, time)
}

/// The SSHSIG in a commit's `gpgsig` header, or why it is not one git
/// would take as a valid SSH signature for namespace `git`.
fn parse_ssh_signature(armored: &str) -> Result<SshSig, Unverified> {
    // The prefixes git's gpg-interface.c tells the formats apart by.
    let kind = if armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
        None
    } else if armored.starts_with("-----BEGIN PGP SIGNATURE-----")
        || armored.starts_with("-----BEGIN PGP MESSAGE-----")
    {
        Some("openpgp")
    } else if armored.starts_with("-----BEGIN SIGNED MESSAGE-----") {
        Some("x509")
    } else {
        Some("unknown format")
    };
    if let Some(kind) = kind {
        return Err(Unverified::NotSsh { kind });
    }
    let sig = SshSig::from_pem(armored).map_err(|e| Unverified::BadSignature {
        reason: format!("malformed SSH signature: {}", e.to_string().to_lowercase()),
    })?;
    if sig.namespace() != "git" {
        return Err(Unverified::WrongNamespace {
            detail: format!(
                "the signature is for namespace {:?}, not \"git\"",
                sig.namespace()
            ),
        });
    }
    Ok(sig)
}

fn valid_at(e: &Entry, t: i64) -> bool {
    e.valid_after.is_none_or(|a| t >= a) && e.valid_before.is_none_or(|b| t <= b)
}

fn allows_git(e: &Entry) -> bool {
    e.namespaces
        .as_deref()
        .is_none_or(|ns| match_list("git", ns))
}

/// Steps 2 and 3 of the module doc, for a signature already checked.
fn decide(signers: &AllowedSigners, key: &PublicKey, time: i64) -> Result<Verified, Unverified> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let same_key = |e: &&Entry| e.key.key_data() == key.key_data();
    let entries = &signers.entries;
    if !entries.iter().any(|e| same_key(&e)) {
        return Err(Unverified::UnknownKey { fingerprint });
    }
    let Some(found) = entries.iter().filter(same_key).find(|e| valid_at(e, time)) else {
        return Err(Unverified::NotValidAt { fingerprint, time });
    };
    for principal in &found.principals {
        let accepted = entries.iter().filter(same_key).any(|e| {
            match_list(principal, &e.principals.join(",")) && allows_git(e) && valid_at(e, time)
        });
        if accepted {
            return Ok(Verified {
                principal: principal.clone(),
                principals: found.principals.clone(),
                fingerprint,
                key_type: key.algorithm().as_str().to_string(),
                line: found.line,
            });
        }
    }
    if !allows_git(found) {
        return Err(Unverified::WrongNamespace {
            detail: format!(
                "allowed signers line {} limits key {fingerprint} to namespaces {:?}",
                found.line,
                found.namespaces.as_deref().unwrap_or_default()
            ),
        });
    }
    Err(Unverified::NoPrincipal {
        fingerprint,
        line: found.line,
    })
}

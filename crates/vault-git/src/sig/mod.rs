//! git SSH commit signatures (`gpg.format=ssh`), without ssh-keygen:
//!
//! - [`AllowedSigners`]: git's `gpg.ssh.allowedSignersFile` (ssh-keygen's
//!   ALLOWED SIGNERS format), read strictly: a bad line, an option that is
//!   not enforced (`cert-authority`, unknown ones) or a file without signers
//!   is an error naming `file:line`.
//! - [`verify_commit`]: the verdict `git verify-commit` gives, checked at
//!   the commit's committer time (the time git hands ssh-keygen).
//! - [`SigningKey`]: signs a commit's text as `git commit -S` does, for
//!   `git2::Repository::commit_signed`. ed25519 or ECDSA P-256; RSA and
//!   passphrase-protected keys are refused.
//!
//! Times in `valid-after` / `valid-before`: `YYYYMMDD[HHMM[SS]]`, UTC with a
//! trailing `Z` (or `UTC`); without it ssh-keygen uses local time, so such a
//! time is accepted only where the local zone is UTC (then it is UTC) and
//! refused elsewhere, never read otherwise than ssh-keygen would.
//! `valid-after` <= committer time <= `valid-before`, bounds included.

mod allowed;
mod sign;
mod time;
mod verify;

pub use allowed::{AllowedSigners, SignersError};
pub use sign::{SigningKey, SigningKeyError};
pub use verify::{verify_commit, Unverified, Verified};

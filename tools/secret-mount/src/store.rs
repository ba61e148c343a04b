//! The secret store: the age identity and `<store>/<NAME>.age` files,
//! decrypted into memory only.

use secrecy::{ExposeSecret, SecretBox};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use vault_core::layout::{AGE_SUFFIX, ENC_SUFFIX};
use vault_core::SecretName;
use zeroize::Zeroizing;

/// Largest identity file read: a few keys are a few KiB.
const MAX_IDENTITY_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read identity file {path}: {source}")]
    IdentityRead { path: PathBuf, source: io::Error },
    #[error("identity file {path} is larger than {MAX_IDENTITY_BYTES} bytes")]
    IdentityTooLarge { path: PathBuf },
    #[error(
        "identity file {path} is itself age-encrypted (passphrase-protected); \
         secret-mount never prompts: use an unencrypted identity file"
    )]
    IdentityEncrypted { path: PathBuf },
    #[error(
        "SSH key {path} is passphrase-protected; secret-mount never prompts: \
         use an unencrypted key (ssh-keygen -p -N '')"
    )]
    SshKeyEncrypted { path: PathBuf },
    #[error("SSH key {path} cannot be used by age: {why}")]
    SshKeyUnsupported { path: PathBuf, why: String },
    #[error("identity file {path}: plugin identities (AGE-PLUGIN-...) are not supported")]
    IdentityPlugin { path: PathBuf },
    #[error("identity file {path}: {why}")]
    IdentityInvalid { path: PathBuf, why: String },
    #[error("identity file {path} holds no identity")]
    NoIdentity { path: PathBuf },
    #[error(
        "secret {name:?}: not in the store {store} (no {name}{AGE_SUFFIX} or {name}{ENC_SUFFIX})"
    )]
    Missing { name: String, store: PathBuf },
    #[error("secret {name:?}: {file} is a symlink; refusing to follow it")]
    Symlink { name: String, file: PathBuf },
    #[error("secret {name:?}: {file} is not a regular file")]
    NotAFile { name: String, file: PathBuf },
    #[error("secret {name:?}: cannot open {file}: {source}")]
    Open {
        name: String,
        file: PathBuf,
        source: io::Error,
    },
    #[error(
        "secret {name:?}: {file} is passphrase-encrypted (scrypt); secret-mount never \
         prompts: encrypt it to the identity's recipient instead"
    )]
    Scrypt { name: String, file: PathBuf },
    #[error("secret {name:?}: {file} is not encrypted to this identity")]
    NoMatchingKey { name: String, file: PathBuf },
    #[error("secret {name:?}: cannot decrypt {file} (corrupt or truncated?): {why}")]
    Undecryptable {
        name: String,
        file: PathBuf,
        why: String,
    },
    #[error(
        "secret {name:?}: the secrets add up to more than the size cap of {cap} bytes \
         (raise --size / VAULT_SECRETS_SIZE)"
    )]
    TooLarge { name: String, cap: u64 },
}

/// One decrypted secret. The plaintext is zeroed when dropped.
pub struct Secret {
    pub name: SecretName,
    pub value: SecretBox<Vec<u8>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("len", &self.value.expose_secret().len())
            .finish()
    }
}

/// The decrypted secret set of one run.
#[derive(Debug, Default)]
pub struct Secrets {
    pub items: Vec<Secret>,
}

pub type Identities = Vec<Box<dyn age::Identity>>;

/// Load the identity file: age X25519 identities (one per line, `#`
/// comments) or one unencrypted SSH private key. Never prompts.
pub fn load_identity(path: &Path) -> Result<Identities, StoreError> {
    let read_err = |source| StoreError::IdentityRead {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_IDENTITY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_IDENTITY_BYTES {
        return Err(StoreError::IdentityTooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = trim_ascii_start(&bytes);
    if text.starts_with(b"age-encryption.org/") || text.starts_with(b"-----BEGIN AGE ENCRYPTED") {
        return Err(StoreError::IdentityEncrypted {
            path: path.to_path_buf(),
        });
    }
    if text.starts_with(b"-----BEGIN") {
        return load_ssh(path, &bytes);
    }
    let has_plugin = text
        .split(|b| *b == b'\n')
        .any(|l| trim_ascii_start(l).starts_with(b"AGE-PLUGIN-"));
    if has_plugin {
        return Err(StoreError::IdentityPlugin {
            path: path.to_path_buf(),
        });
    }
    let parsed = age::IdentityFile::from_buffer(&bytes[..]).map_err(|e| {
        StoreError::IdentityInvalid {
            path: path.to_path_buf(),
            // age's message names a line number, never the line.
            why: e.to_string(),
        }
    })?;
    let ids = parsed
        .into_identities()
        .map_err(|e| StoreError::IdentityInvalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if ids.is_empty() {
        return Err(StoreError::NoIdentity {
            path: path.to_path_buf(),
        });
    }
    Ok(ids
        .into_iter()
        .map(|i| -> Box<dyn age::Identity> { i })
        .collect())
}

fn load_ssh(path: &Path, bytes: &[u8]) -> Result<Identities, StoreError> {
    let id =
        age::ssh::Identity::from_buffer(bytes, Some(path.display().to_string())).map_err(|e| {
            StoreError::SshKeyUnsupported {
                path: path.to_path_buf(),
                why: e.to_string(),
            }
        })?;
    match id {
        age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
        age::ssh::Identity::Encrypted(_) => Err(StoreError::SshKeyEncrypted {
            path: path.to_path_buf(),
        }),
        age::ssh::Identity::Unsupported(ref k) => Err(StoreError::SshKeyUnsupported {
            path: path.to_path_buf(),
            why: Unsupported(k).to_string(),
        }),
    }
}

struct Unsupported<'a>(&'a age::ssh::UnsupportedKey);

impl std::fmt::Display for Unsupported<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.display(f, None)
    }
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

/// Decrypt every named secret into memory, in order; the first failure
/// stops everything (all-or-nothing). `cap` bounds the plaintext total.
pub fn decrypt_all(
    store: &Path,
    names: &[SecretName],
    identities: &Identities,
    cap: u64,
) -> Result<Secrets, StoreError> {
    let mut out = Secrets::default();
    let mut used = 0u64;
    for name in names {
        let value = decrypt_one(store, name, identities, cap - used)?;
        used += value.expose_secret().len() as u64;
        out.items.push(Secret {
            name: name.clone(),
            value,
        });
    }
    Ok(out)
}

/// Open `<store>/<NAME>.age`, else `<NAME>.enc`: never through a symlink,
/// never anything but a regular file, never blocking on a FIFO.
fn open_secret(store: &Path, name: &SecretName) -> Result<(File, PathBuf), StoreError> {
    let n = name.as_str();
    for suffix in [AGE_SUFFIX, ENC_SUFFIX] {
        let file = store.join(format!("{n}{suffix}"));
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_CLOEXEC
                    | nix::fcntl::OFlag::O_NOCTTY)
                    .bits(),
            )
            .open(&file);
        match opened {
            Ok(f) => {
                let meta = f.metadata().map_err(|source| StoreError::Open {
                    name: n.to_string(),
                    file: file.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(StoreError::NotAFile {
                        name: n.to_string(),
                        file,
                    });
                }
                return Ok((f, file));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(StoreError::Symlink {
                    name: n.to_string(),
                    file,
                })
            }
            Err(source) => {
                // A dangling symlink is also ELOOP with O_NOFOLLOW; anything
                // else (EACCES, EISDIR...) is reported as it is.
                return Err(StoreError::Open {
                    name: n.to_string(),
                    file,
                    source,
                });
            }
        }
    }
    Err(StoreError::Missing {
        name: n.to_string(),
        store: store.to_path_buf(),
    })
}

fn decrypt_one(
    store: &Path,
    name: &SecretName,
    identities: &Identities,
    budget: u64,
) -> Result<SecretBox<Vec<u8>>, StoreError> {
    let (file, path) = open_secret(store, name)?;
    let n = name.as_str().to_string();
    let undecryptable = |why: String| StoreError::Undecryptable {
        name: n.clone(),
        file: path.clone(),
        why,
    };
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(file))
        .map_err(|e| undecryptable(one_line(&e)))?;
    if decryptor.is_scrypt() {
        return Err(StoreError::Scrypt {
            name: n.clone(),
            file: path.clone(),
        });
    }
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref()))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => StoreError::NoMatchingKey {
                name: n.clone(),
                file: path.clone(),
            },
            other => undecryptable(one_line(&other)),
        })?;
    match read_bounded(reader, budget) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(StoreError::TooLarge {
            name: n.clone(),
            cap: budget,
        }),
        Err(e) => Err(undecryptable(one_line(&e))),
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read everything from `r` into a zeroizing buffer, or `None` when it holds
/// more than `limit` bytes. The buffer grows by copying into a fresh
/// allocation and zeroing the old one, so no stale plaintext copy is left
/// behind in freed memory.
fn read_bounded(mut r: impl Read, limit: u64) -> io::Result<Option<SecretBox<Vec<u8>>>> {
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if (buf.len() + n) as u64 > limit {
            return Ok(None);
        }
        if buf.len() + n > buf.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((buf.len() + n).max(buf.capacity() * 2)));
            bigger.extend_from_slice(&buf);
            buf = bigger; // the old buffer is zeroed as it drops
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Moves the allocation (no copy) into the box that zeroes it on drop.
    let plain = std::mem::take(&mut *buf);
    Ok(Some(SecretBox::new(Box::new(plain))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read() {
        let data = vec![7u8; 20_000];
        let got = read_bounded(&data[..], 20_000).unwrap().unwrap();
        assert_eq!(got.expose_secret(), &data);
        assert!(read_bounded(&data[..], 19_999).unwrap().is_none());
        let empty = read_bounded(&b""[..], 0).unwrap().unwrap();
        assert!(empty.expose_secret().is_empty());
    }

    #[test]
    fn one_line_errors() {
        assert_eq!(one_line(&"a\n b\tc"), "a b c");
    }
}

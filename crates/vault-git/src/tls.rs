//! The CA bundle: read only when an https remote needs it.

use crate::GitError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the CA bundle is, remembered by [`defer_ca_bundle`].
pub(crate) static CA_BUNDLE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Put off reading the CA bundle until an https remote needs it.
///
/// libgit2 parses the system's whole CA bundle when it starts: about 20 ms
/// of CPU in every vault-scan and result-write run, most of their time on a
/// warm cache, though only https remotes use it. Call this first thing in
/// `main`, while the process has one thread and before any other git2 call.
/// It remembers where the bundle is (the same probe git2 makes, so a
/// `SSL_CERT_FILE` the user set is honoured) and points libgit2's start-up
/// load at `/dev/null`; [`Ops::open`] hands the remembered bundle to libgit2
/// for an `https://` remote, so what is trusted does not change. A CA
/// directory (`SSL_CERT_DIR`, hashed) costs nothing at start (OpenSSL reads
/// it per lookup) and is left to git2 as before. Without this call libgit2
/// reads the bundle at start as usual.
pub fn defer_ca_bundle() {
    CA_BUNDLE.get_or_init(|| {
        let file = openssl_probe::probe()
            .cert_file
            .filter(|f| f != Path::new("/dev/null"));
        if file.is_some() {
            std::env::set_var("SSL_CERT_FILE", "/dev/null");
        }
        file
    });
}

/// Give libgit2 the CA bundle [`defer_ca_bundle`] put off. Each tool opens
/// its ops repo once, so this runs at most once a process.
pub(crate) fn load_ca_bundle() -> Result<(), GitError> {
    let Some(Some(file)) = CA_BUNDLE.get() else {
        return Ok(());
    };
    // SAFETY: git2 requires that no other git2 call runs while the
    // certificate locations change; the tools make their git2 calls from
    // one thread, and this runs before their first network call.
    #[allow(unsafe_code)]
    let loaded = unsafe { git2::opts::set_ssl_cert_file(file) };
    loaded.map_err(|e| {
        GitError::Config(format!(
            "cannot load the CA certificates in {}: {}",
            file.display(),
            e.message()
        ))
    })
}

//! The ops repo's layout (docs/CONTRACT.md §2) and the secret store's file
//! names: every folder and suffix the tools agree on, spelled once.
//!
//! ```text
//! vault/actions/<id>.json           the action
//! vault/actions/<id>.result.json    its result
//! vault/archive/<ab>/<cd>/<id>.json         on the archive branch
//!                                           (vault-archive/<branch>): a
//!                                           finished action, moved there
//! vault/archive/<ab>/<cd>/<id>.result.json  its result, moved with it
//! <store>/<NAME>.age                a secret (else <NAME>.enc)
//! ```

/// The ops repo's top folder the tools use.
pub const VAULT_DIR: &str = "vault";

/// The folder of action and result files, inside [`VAULT_DIR`].
pub const ACTIONS_SUBDIR: &str = "actions";

/// The only folder of the ops repo any tool reads or writes:
/// [`VAULT_DIR`]`/`[`ACTIONS_SUBDIR`].
pub const ACTIONS_DIR: &str = "vault/actions";

/// The archive branch of a watched branch `B` is `vault-archive/B`: finished
/// actions move there, out of the watched branch's tree, so that no commit
/// on the watched branch costs more as history grows.
pub const ARCHIVE_BRANCH_PREFIX: &str = "vault-archive/";

/// The folder finished actions are moved to, inside [`VAULT_DIR`] (on the
/// archive branch).
pub const ARCHIVE_SUBDIR: &str = "archive";

/// [`VAULT_DIR`]`/`[`ARCHIVE_SUBDIR`]: `<ab>/<cd>/<id>.json` and
/// `<id>.result.json` below it, where `abcd` are the first four hex digits
/// of the SHA-256 of the id ([`archive_shard`]). 65,536 leaf folders: a
/// million finished actions put about 15 in each, and no folder on the way
/// holds more than 256 entries.
pub const ARCHIVE_DIR: &str = "vault/archive";

/// The two shard folders of `id` in the archive, e.g. `["3f", "a0"]`:
/// the first four hex digits of the SHA-256 of the id's bytes
/// (`printf %s "$id" | sha256sum | cut -c1-4`).
pub fn archive_shard(id: &str) -> [String; 2] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(id.as_bytes());
    [format!("{:02x}", h[0]), format!("{:02x}", h[1])]
}

/// The folder of `id`'s archived files: `vault/archive/<ab>/<cd>`.
pub fn archive_folder(id: &str) -> String {
    let [a, b] = archive_shard(id);
    format!("{ARCHIVE_DIR}/{a}/{b}")
}

/// An action file's name: `<id>.json`.
pub const ACTION_SUFFIX: &str = ".json";

/// A result file's name: `<id>.result.json` (so no id ends in `.result`).
pub const RESULT_SUFFIX: &str = ".result.json";

/// A secret's file in the store: `<NAME>.age`, looked for first.
pub const AGE_SUFFIX: &str = ".age";

/// A secret's file in the store when there is no `.age` one: `<NAME>.enc`.
pub const ENC_SUFFIX: &str = ".enc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_agree() {
        assert_eq!(ACTIONS_DIR, format!("{VAULT_DIR}/{ACTIONS_SUBDIR}"));
        assert!(RESULT_SUFFIX.ends_with(ACTION_SUFFIX));
        assert_eq!(ARCHIVE_DIR, format!("{VAULT_DIR}/{ARCHIVE_SUBDIR}"));
    }

    #[test]
    fn archive_shard_is_the_sha256_prefix() {
        // printf %s publish-1.4.0 | sha256sum
        let [a, b] = archive_shard("publish-1.4.0");
        let sum = "939d";
        assert_eq!(format!("{a}{b}"), sum);
        assert_eq!(
            archive_folder("publish-1.4.0"),
            format!("vault/archive/{}/{}", &sum[..2], &sum[2..])
        );
    }
}

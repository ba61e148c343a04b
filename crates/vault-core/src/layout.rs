//! The ops repo's layout (docs/CONTRACT.md §2) and the secret store's file
//! names: every folder and suffix the tools agree on, spelled once.
//!
//! ```text
//! vault/actions/<id>.json           the action
//! vault/actions/<id>.result.json    its result
//! <store>/<NAME>.age                a secret (else <NAME>.enc)
//! ```

/// The ops repo's top folder the tools use.
pub const VAULT_DIR: &str = "vault";

/// The folder of action and result files, inside [`VAULT_DIR`].
pub const ACTIONS_SUBDIR: &str = "actions";

/// The only folder of the ops repo any tool reads or writes:
/// [`VAULT_DIR`]`/`[`ACTIONS_SUBDIR`].
pub const ACTIONS_DIR: &str = "vault/actions";

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
    }
}

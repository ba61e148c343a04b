//! Reading a small TOML settings file (the policy, the checkout config):
//! at most `max` bytes, and a parse error given as one line with its line
//! number.

use serde::de::DeserializeOwned;
use std::path::Path;

/// Why a settings file could not be used.
#[derive(Debug)]
pub enum TomlFileError {
    /// It could not be read.
    Read(std::io::Error),
    /// It is too big or does not parse as the expected TOML: one line.
    Invalid(String),
}

/// The file at `path`, parsed as `T`.
pub fn load<T: DeserializeOwned>(path: &Path, max: u64) -> Result<T, TomlFileError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(TomlFileError::Read)?
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(TomlFileError::Read)?;
    if text.len() as u64 > max {
        return Err(TomlFileError::Invalid(format!("larger than {max} bytes")));
    }
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!("line {}: ", 1 + text[..s.start].matches('\n').count()))
            .unwrap_or_default();
        TomlFileError::Invalid(format!("{at}{}", e.message().trim().replace('\n', "; ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Small {
        #[allow(dead_code)]
        a: u32,
    }

    #[test]
    fn size_cap_and_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "\n\na = \"x\"\n").unwrap();
        let Err(TomlFileError::Invalid(why)) = load::<Small>(&p, 100) else {
            panic!("a string is no number");
        };
        assert!(why.starts_with("line 3: "), "{why}");
        std::fs::write(&p, "a = 1\n").unwrap();
        assert!(load::<Small>(&p, 100).is_ok());
        let Err(TomlFileError::Invalid(why)) = load::<Small>(&p, 3) else {
            panic!("over the cap");
        };
        assert_eq!(why, "larger than 3 bytes");
        assert!(matches!(
            load::<Small>(&dir.path().join("none"), 100),
            Err(TomlFileError::Read(_))
        ));
    }
}

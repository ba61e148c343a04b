//! git's `gpg.ssh.allowedSignersFile`, in the format of ssh-keygen(1),
//! section ALLOWED SIGNERS:
//!
//! ```text
//! # comment
//! alice@example.com,*@ops.example.com namespaces="git",valid-after="20240101Z" ssh-ed25519 AAAA… comment
//! ```
//!
//! Read as ssh-keygen reads it (OpenSSH's sshsig.c), but strictly: where
//! ssh-keygen logs a bad line and goes on, [`AllowedSigners::load`] fails
//! naming the file and line, and so does every option not enforced here
//! (`cert-authority`, anything unknown): a line is never half-honoured.

use super::time::{local_zone_is_utc, parse_absolute_time};
use ssh_key::{Algorithm, EcdsaCurve, PublicKey};
use std::path::Path;

/// A parsed allowed-signers file: at least one signer.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    pub(crate) entries: Vec<Entry>,
    /// The git blob id of the text these entries were parsed from.
    digest: String,
}

/// One line of the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The principal patterns as written (quotes removed), in order.
    pub(crate) principals: Vec<String>,
    pub(crate) key: PublicKey,
    /// The `namespaces="…"` pattern list; `None` allows every namespace.
    pub(crate) namespaces: Option<String>,
    pub(crate) valid_after: Option<i64>,
    pub(crate) valid_before: Option<i64>,
}

/// Why an allowed-signers file was refused: one line, naming the file (and
/// the line) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("cannot read allowed signers file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: lists no signer (only comments and blank lines): add a line `PRINCIPALS KEYTYPE BASE64KEY`")]
    Empty { file: String },
}

/// The key types whose signatures ssh-key (with this crate's features) can
/// verify; a line with any other type is refused when the file is read.
fn supported(alg: &Algorithm) -> bool {
    match alg {
        Algorithm::Ed25519 | Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256 => true,
        Algorithm::Ecdsa { curve } => *curve == EcdsaCurve::NistP256,
        Algorithm::Rsa { .. } => true,
        _ => false,
    }
}

const SUPPORTED: &str = "ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com";

impl AllowedSigners {
    /// Read and check an allowed-signers file (`gpg.ssh.allowedSignersFile`).
    /// [`load`](Self::load) a file if one is configured.
    pub fn load_if(path: Option<std::path::PathBuf>) -> Result<Option<Self>, SignersError> {
        path.map(|p| Self::load(&p)).transpose()
    }

    pub fn load(path: &Path) -> Result<Self, SignersError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SignersError::Read {
            file: file.clone(),
            source,
        })?;
        parse_named(&file, &text, local_zone_is_utc())
    }

    /// Parse the text of an allowed-signers file; errors name it
    /// `allowed-signers`.
    pub fn parse(text: &str) -> Result<Self, SignersError> {
        parse_named("allowed-signers", text, local_zone_is_utc())
    }

    /// The git blob id of the text read: what the verdicts judged with it
    /// depend on (one read, so it names exactly the text parsed).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// How many signer lines the file has (never 0).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a file without signers is refused when read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub(crate) fn parse_named(
    file: &str,
    text: &str,
    zone_is_utc: bool,
) -> Result<AllowedSigners, SignersError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw, line, zone_is_utc) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(message) => {
                return Err(SignersError::Line {
                    file: file.to_string(),
                    line,
                    message: message.replace(['\n', '\r'], " "),
                })
            }
        }
    }
    if entries.is_empty() {
        return Err(SignersError::Empty {
            file: file.to_string(),
        });
    }
    let digest = git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .map(|o| o.to_string())
        .unwrap_or_default();
    Ok(AllowedSigners { entries, digest })
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The first word of `s` (a `"quoted"` word may hold blanks) and the rest
/// with leading blanks skipped. `s` starts with a non-blank.
fn take_word(s: &str) -> Result<(String, &str), String> {
    if let Some(quoted) = s.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("a quoted principal has no closing quote")?;
        let rest = &quoted[end + 1..];
        if !rest.is_empty() && !rest.starts_with(is_space) {
            return Err("text right after a closing quote".into());
        }
        return Ok((quoted[..end].to_string(), rest.trim_start_matches(is_space)));
    }
    let end = s.find(is_space).unwrap_or(s.len());
    let word = &s[..end];
    if word.contains('"') {
        return Err(format!("unexpected quote in {word:?}"));
    }
    Ok((word.to_string(), s[end..].trim_start_matches(is_space)))
}

/// The options word: up to the first blank outside double quotes (`\"`
/// inside quotes is a quote), as `sshkey_advance_past_options`.
fn take_options(s: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if chars.peek().map(|&(_, n)| n) == Some('"') => {
                chars.next();
            }
            '"' => quoted = !quoted,
            c if is_space(c) && !quoted => {
                return Ok((&s[..i], s[i..].trim_start_matches(is_space)));
            }
            _ => {}
        }
    }
    if quoted {
        return Err("an option value has no closing quote".into());
    }
    Ok((s, ""))
}

fn parse_line(raw: &str, line: usize, zone_is_utc: bool) -> Result<Option<Entry>, String> {
    let s = raw.trim_matches(|c: char| is_space(c) || c == '\r');
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = take_word(s)?;
    if Algorithm::new(&principals).is_ok() && rest.starts_with("AAAA") {
        return Err(format!(
            "the line starts with the key type {principals}: write the signer's principals \
             (e.g. an email address) first"
        ));
    }
    if rest.is_empty() {
        return Err("missing key after the principals".into());
    }
    let principals = split_principals(&principals)?;
    // A word holding `=`, `"` or `,`, or the one flag ssh-keygen knows,
    // is the options; anything else is the key type.
    let (first, after) = take_options(rest)?;
    let is_options =
        first.contains(['=', '"', ',']) || first.to_ascii_lowercase().starts_with("cert-authority");
    let (opts, key_text) = if is_options {
        (parse_options(first, zone_is_utc)?, after)
    } else {
        (Options::default(), rest)
    };
    let key = parse_key(key_text)?;
    Ok(Some(Entry {
        line,
        principals,
        key,
        namespaces: opts.namespaces,
        valid_after: opts.valid_after,
        valid_before: opts.valid_before,
    }))
}

fn split_principals(word: &str) -> Result<Vec<String>, String> {
    if word.is_empty() {
        return Err("empty principal".into());
    }
    word.split(',')
        .map(|p| {
            if p.is_empty() || p == "!" {
                Err(format!("empty principal in {word:?}"))
            } else {
                Ok(p.to_string())
            }
        })
        .collect()
}

/// `KEYTYPE BASE64 [comment]`.
fn parse_key(text: &str) -> Result<PublicKey, String> {
    if text.is_empty() {
        return Err("missing key after the options".into());
    }
    let mut words = text.split(is_space).filter(|w| !w.is_empty());
    let kind = words.next().unwrap_or_default();
    let Some(b64) = words.next() else {
        return Err(format!("missing base64 key after the key type {kind:?}"));
    };
    let alg = Algorithm::new(kind)
        .map_err(|_| format!("{kind:?} is neither a key type nor an option ssh-keygen knows"))?;
    if !supported(&alg) {
        return Err(format!(
            "key type {kind} is not supported; use one of {SUPPORTED}"
        ));
    }
    PublicKey::from_openssh(&format!("{kind} {b64}")).map_err(|e| match e {
        ssh_key::Error::AlgorithmUnknown => {
            format!("the base64 key is not a {kind} key")
        }
        e => format!("invalid {kind} key (bad base64 or key data): {e}"),
    })
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

/// `strncasecmp(opts, name, len) == 0 && opts[len] == '='`, as OpenSSH's
/// `opt_match`: the value after `name=`.
fn opt_match<'a>(opts: &'a str, name: &str) -> Option<&'a str> {
    let head = opts.get(..name.len())?;
    let rest = &opts[name.len()..];
    (head.eq_ignore_ascii_case(name) && rest.starts_with('=')).then(|| &rest[1..])
}

/// A `"quoted"` option value (`\"` is a quote) and what follows it.
fn dequote<'a>(s: &'a str, name: &str) -> Result<(String, &'a str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err(format!("the value of {name} must be in double quotes"));
    };
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if chars.peek().map(|&(_, n)| n) == Some('"') => {
                chars.next();
                value.push('"');
            }
            '"' => return Ok((value, &body[i + 1..])),
            c => value.push(c),
        }
    }
    Err(format!("the value of {name} has no closing quote"))
}

fn parse_options(word: &str, zone_is_utc: bool) -> Result<Options, String> {
    let mut o = Options::default();
    let mut rest = word;
    while !rest.is_empty() {
        if rest.to_ascii_lowercase().starts_with("cert-authority") {
            return Err(
                "option cert-authority is not supported; list each signer's own \
                        key instead of a certificate authority"
                    .into(),
            );
        }
        let (name, value) = if let Some(v) = opt_match(rest, "namespaces") {
            ("namespaces", v)
        } else if let Some(v) = opt_match(rest, "valid-after") {
            ("valid-after", v)
        } else if let Some(v) = opt_match(rest, "valid-before") {
            ("valid-before", v)
        } else {
            let name = rest.split([',', '=']).next().unwrap_or(rest);
            return Err(format!(
                "option {name:?} is not supported; the options enforced are \
                 namespaces=\"…\", valid-after=\"…\" and valid-before=\"…\""
            ));
        };
        let (text, after) = dequote(value, name)?;
        let twice = || format!("option {name} is given twice");
        match name {
            "namespaces" => {
                if o.namespaces.replace(text).is_some() {
                    return Err(twice());
                }
            }
            _ => {
                let t =
                    parse_absolute_time(&text, zone_is_utc).map_err(|e| format!("{name}: {e}"))?;
                let slot = if name == "valid-after" {
                    &mut o.valid_after
                } else {
                    &mut o.valid_before
                };
                if slot.replace(t).is_some() {
                    return Err(twice());
                }
            }
        }
        rest = match after.strip_prefix(',') {
            Some(r) if !r.is_empty() => r,
            None if after.is_empty() => after,
            _ => return Err(format!("unexpected text {after:?} after option {name}")),
        };
    }
    if let (Some(a), Some(b)) = (o.valid_after, o.valid_before) {
        if b <= a {
            return Err("valid-before is not later than valid-after".into());
        }
    }
    Ok(o)
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` any one
/// character; case-sensitive.
pub(crate) fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// OpenSSH's `match_pattern_list` (case-sensitive): true when some pattern
/// matches and no `!negated` pattern does.
pub(crate) fn match_list(s: &str, patterns: &str) -> bool {
    let mut positive = false;
    for p in patterns.split(',') {
        match p.strip_prefix('!') {
            Some(neg) if match_pattern(s, neg) => return false,
            Some(_) => {}
            None => positive |= match_pattern(s, p),
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn one(line: &str) -> Result<Entry, String> {
        parse_named("f", line, true)
            .map(|s| s.entries[0].clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn lines_and_options() {
        let e = one(&format!("a@x,\"b\" {ED} some comment")).unwrap_err();
        assert!(e.starts_with("f:1: "), "{e}");
        let e = one(&format!("  a@x,*@y {ED} some comment  ")).unwrap();
        assert_eq!(e.principals, ["a@x", "*@y"]);
        assert!(e.namespaces.is_none() && e.valid_after.is_none());
        let e = one(&format!(
            "\"principal with space\" NameSpaces=\"git,fi\\\"le\",VALID-AFTER=\"20050407Z\",valid-before=\"20050410\" {ED}"
        ))
        .unwrap();
        assert_eq!(e.principals, ["principal with space"]);
        assert_eq!(e.namespaces.as_deref(), Some("git,fi\"le"));
        assert_eq!(e.valid_after, Some(1_112_832_000));
        assert_eq!(e.valid_before, Some(1_112_832_000 + 3 * 86_400));
        let e = one(&format!("a namespaces=\"with space\" {ED}")).unwrap();
        assert_eq!(e.namespaces.as_deref(), Some("with space"));
        let s = parse_named("f", &format!("# c\n\n\t\n  # c2\na {ED}\r\nb {ED}\n"), true).unwrap();
        assert_eq!(s.entries.iter().map(|e| e.line).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn refusals_name_the_line() {
        let cases = [
            (
                format!("a cert-authority {ED}"),
                "cert-authority is not supported",
            ),
            (
                format!("a Cert-Authority,namespaces=\"git\" {ED}"),
                "cert-authority is not supported",
            ),
            (
                format!("a namespaces=\"git\",no-touch-required {ED}"),
                "\"no-touch-required\" is not supported",
            ),
            (
                format!("a verify-required=\"x\" {ED}"),
                "\"verify-required\" is not supported",
            ),
            (format!("a namespaces=git {ED}"), "double quotes"),
            (format!("a namespaces=\"git {ED}"), "no closing quote"),
            (
                format!("a namespaces=\"git\",namespaces=\"file\" {ED}"),
                "given twice",
            ),
            (format!("a namespaces=\"git\"x {ED}"), "unexpected text"),
            (format!("a namespaces=\"git\", {ED}"), "unexpected text"),
            (format!("a valid-after=\"2005\" {ED}"), "not a time"),
            (
                format!("a valid-after=\"20050410\",valid-before=\"20050407\" {ED}"),
                "not later",
            ),
            (ED.to_string(), "starts with the key type"),
            ("a".to_string(), "missing key"),
            ("a namespaces=\"git\"".to_string(), "missing key"),
            ("a ssh-ed25519".to_string(), "missing base64"),
            (
                "a ssh-ed25519 AAAA!!notbase64".to_string(),
                "invalid ssh-ed25519 key",
            ),
            (
                "a ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti"
                    .to_string(),
                "not a ssh-rsa key",
            ),
            ("a ssh-dss AAAAB3NzaC1kc3M=".to_string(), "not supported"),
            ("a foo AAAA".to_string(), "neither a key type nor an option"),
            (format!("a,,b {ED}"), "empty principal"),
            (format!("\"a {ED}"), "no closing quote"),
        ];
        for (line, want) in cases {
            let text = format!("# first\n{line}\n");
            let err = parse_named("/etc/signers", &text, true)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("/etc/signers:2: "), "{line}: {err}");
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = parse_named("f", "# nothing\n\n", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("f: lists no signer"), "{err}");
        let err = parse_named("f", &format!("a valid-after=\"20050407\" {ED}"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trailing Z"), "{err}");
    }

    #[test]
    fn patterns_as_openssh() {
        assert!(match_pattern("alice@example.com", "*@example.com"));
        assert!(match_pattern("a", "?"));
        assert!(match_pattern("", "*"));
        assert!(!match_pattern("ab", "?"));
        assert!(match_pattern("abcbd", "a*b?"));
        assert!(!match_pattern("Alice", "alice"));
        assert!(match_list("git", "file,git"));
        assert!(match_list("git", "g*"));
        assert!(!match_list("git", ""));
        assert!(!match_list("bob@x", "*@x,!bob@x"));
        assert!(match_list("al@x", "*@x,!bob@x"));
        assert!(!match_list("al@x", "!bob@x"));
    }
}

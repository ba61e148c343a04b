//! The forms of a secret value the masker hides: the value and its lines,
//! trimmed; base64 (embedded at any alignment too); JSON-escaped;
//! URL-encoded.

use super::pattern::Pattern;
use super::{is_maskable, MIN_PATTERN_LEN};
use zeroize::Zeroize;

/// All the forms of one secret value that the masker hides, unordered and
/// possibly repeated ([`Masker::new`](super::Masker::new) orders them and drops repeats).
pub fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    tagged_forms(value).into_iter().map(|p| p.bytes).collect()
}

/// [`forms`], each marked whether it is a base64 form (line breaks inside
/// it are skipped, see [`MIN_WRAP`](super::MIN_WRAP)).
pub(super) fn tagged_forms(value: &[u8]) -> Vec<Pattern> {
    let mut out: Vec<Pattern> = Vec::new();
    if !is_maskable(value) {
        return out;
    }
    let trimmed = value.trim_ascii();
    // Text forms use the value without surrounding whitespace, so that a
    // secret file's trailing newline does not swallow the newline of the
    // line that prints it; whitespace at the edges is not secret.
    let mut text_bases: Vec<&[u8]> = vec![trimmed];
    for line in trimmed.split(|b| *b == b'\n') {
        text_bases.push(line.trim_ascii());
    }
    // Encoded forms are computed from the exact bytes too: base64 of
    // "v\n" shares no suffix with base64 of "v".
    let mut b64_bases = text_bases.clone();
    b64_bases.push(value);
    for line in value.split(|b| *b == b'\n') {
        b64_bases.push(line.strip_suffix(b"\r").unwrap_or(line));
    }
    for base in b64_bases {
        if base.len() < MIN_PATTERN_LEN {
            continue;
        }
        for alphabet in [STANDARD, URL_SAFE] {
            out.push(Pattern::base64(base64(base, alphabet, true)));
            out.push(Pattern::base64(base64(base, alphabet, false)));
            for offset in 0..3 {
                out.push(Pattern::base64(base64_embedded(base, offset, alphabet)));
            }
        }
    }
    for base in text_bases {
        if base.len() < MIN_PATTERN_LEN {
            continue;
        }
        out.push(Pattern::text(base.to_vec()));
        if let Ok(text) = std::str::from_utf8(base) {
            let mut escaped = vec![json_ascii(text)];
            if let Ok(json) = serde_json::to_string(text) {
                escaped.push(json[1..json.len() - 1].to_string());
            }
            for e in escaped {
                // Some encoders also escape `/` (PHP) or `<>&` (Go).
                let html = e
                    .replace('<', "\\u003c")
                    .replace('>', "\\u003e")
                    .replace('&', "\\u0026");
                out.push(Pattern::text(e.replace('/', "\\/").into_bytes()));
                out.push(Pattern::text(html.into_bytes()));
                out.push(Pattern::text(e.into_bytes()));
            }
        }
        for upper in [true, false] {
            out.push(Pattern::text(url_encode(base, upper, false, false)));
            out.push(Pattern::text(url_encode(base, upper, true, false)));
            out.push(Pattern::text(url_encode(base, upper, false, true)));
        }
    }
    out.retain(|p| p.bytes.len() >= MIN_PATTERN_LEN);
    out
}

pub(super) const STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(super) const URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            } else if pad {
                out.push(b'=');
            }
        }
    }
    out
}

/// The base64 characters determined by `data` alone when it sits `offset`
/// bytes (mod 3) into a longer encoded text.
pub(super) fn base64_embedded(data: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(data);
    padded.extend_from_slice(&[0, 0, 0]);
    let enc = base64(&padded, alphabet, false);
    let first_bit = 8 * offset;
    let end_bit = 8 * (offset + data.len());
    let out = enc
        .iter()
        .enumerate()
        .filter(|(j, _)| 6 * j >= first_bit && 6 * j + 6 <= end_bit)
        .map(|(_, c)| *c)
        .collect();
    padded.zeroize();
    out
}

/// JSON string escaping with every non-ASCII character as `\uXXXX`.
fn json_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Percent-encoding: only what RFC 3986 reserves, or (`all`) every byte;
/// `form` writes space as `+`.
fn url_encode(data: &[u8], upper: bool, form: bool, all: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(data.len() * 3);
    for &b in data {
        if !all && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
            out.push(b);
        } else if form && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{mask_chunked, s};

    #[test]
    fn base64_matches_known_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(s(base64(raw.as_bytes(), STANDARD, true)), enc);
            assert_eq!(
                s(base64(raw.as_bytes(), STANDARD, false)),
                enc.trim_end_matches('=')
            );
        }
        assert_eq!(s(base64(&[0xfb, 0xff], URL_SAFE, true)), "-_8=");
        assert_eq!(s(base64(&[0xfb, 0xff], STANDARD, true)), "+/8=");
    }

    #[test]
    fn trailing_newline_and_lines_of_multiline_values() {
        let out = mask_chunked(&[b"tok-12345\n"], b"x tok-12345 y");
        assert_eq!(s(out), "x *** y");
        let key = b"-----BEGIN KEY-----\r\nMIIBOgIBAAJBAK\nsecondline99\n";
        let out = mask_chunked(&[key], b"got: secondline99 and MIIBOgIBAAJBAK.");
        assert_eq!(s(out), "got: *** and ***.");
    }

    #[test]
    fn base64_forms_masked_including_embedded() {
        let secret = b"s3cr3t-value!";
        let std_b64 = s(base64(secret, STANDARD, true));
        let url_b64 = s(base64(b"\xfb\xff\xfe-secret-bytes", URL_SAFE, false));
        let out = mask_chunked(
            &[secret, b"\xfb\xff\xfe-secret-bytes"],
            format!("a {std_b64} b {url_b64} c").as_bytes(),
        );
        assert_eq!(s(out), "a *** b *** c");
        // The value inside a longer base64 text, at each alignment.
        for prefix in ["", "x", "xy"] {
            let mut plain = prefix.as_bytes().to_vec();
            plain.extend_from_slice(secret);
            plain.extend_from_slice(b"tail");
            let enc = base64(&plain, STANDARD, true);
            let out = mask_chunked(&[secret], &enc);
            let out_text = s(out);
            assert!(out_text.contains("***"), "{prefix:?}: {out_text}");
            for frag in [0, 1, 2].map(|o| s(base64_embedded(secret, o, STANDARD))) {
                assert!(!out_text.contains(&frag), "{out_text} holds {frag}");
            }
        }
    }

    #[test]
    fn json_and_url_escaped_forms() {
        let secret = "p\"a\\ss/wörd &x=1";
        let json = serde_json::to_string(secret).unwrap();
        let out = mask_chunked(&[secret.as_bytes()], format!("{{\"t\":{json}}}").as_bytes());
        assert_eq!(s(out), "{\"t\":\"***\"}");
        let ascii = json_ascii(secret);
        assert!(ascii.contains("\\u00f6"), "{ascii}");
        let out = mask_chunked(&[secret.as_bytes()], ascii.as_bytes());
        assert_eq!(s(out), "***");
        let slashed = json[1..json.len() - 1].replace('/', "\\/");
        let out = mask_chunked(&[secret.as_bytes()], slashed.as_bytes());
        assert_eq!(s(out), "***");
        let out = mask_chunked(&[b"a<b>&c"], br"x a\u003cb\u003e\u0026c y");
        assert_eq!(s(out), "x *** y");
        let url = s(url_encode(secret.as_bytes(), true, false, false));
        assert!(url.contains("%22") && url.contains("%C3%B6"), "{url}");
        let all = s(url_encode(secret.as_bytes(), false, false, true));
        assert!(all.starts_with("%70%22"), "{all}");
        for form in [
            url,
            all,
            s(url_encode(secret.as_bytes(), false, false, false)),
            s(url_encode(secret.as_bytes(), true, true, false)),
        ] {
            let out = mask_chunked(&[secret.as_bytes()], format!("?q={form}&").as_bytes());
            assert_eq!(s(out), "?q=***&");
        }
    }

    #[test]
    fn short_values_are_not_patterns() {
        assert!(forms(b"abc").is_empty());
        assert!(forms(b" ab \n").is_empty());
        let out = mask_chunked(&[b"ab"], b"abab");
        assert_eq!(s(out), "abab");
    }
}

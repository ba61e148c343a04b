//! Masking secret values out of a byte stream.
//!
//! For every secret value the masker looks for:
//! * the value with surrounding whitespace trimmed (secret files often end
//!   in a newline the program never prints; whitespace at the edges is not
//!   treated as secret, so it stays visible and lines are not merged);
//! * each line of a multi-line value (trimmed the same way);
//! * its base64 forms: standard and URL-safe alphabet, padded and not, and
//!   the value embedded at any of the three byte alignments of a longer
//!   base64 text (only the characters the value alone determines);
//! * its JSON-string-escaped forms (as serde_json writes it; with every
//!   non-ASCII character as `\uXXXX`; with `/` as `\/`; with `<>&` as
//!   `\u003c`...) and its URL-encoded forms (`%XX` upper- and lower-case,
//!   of the reserved bytes or of every byte, and form encoding with `+`).
//!
//! Every byte covered by any occurrence of any pattern is hidden; a run of
//! hidden bytes becomes one [`MASK`]. Overlapping occurrences of different
//! secrets are therefore hidden whole (longest and shortest alike), and the
//! result does not depend on how the input is split into chunks: the masker
//! keeps the last `longest pattern - 1` bytes back until it has seen enough
//! of what follows them.
//!
//! Patterns shorter than [`MIN_PATTERN_LEN`] bytes are not searched for:
//! masking every two-character string would destroy the output while
//! protecting nothing (a secret that short can be guessed). A secret whose
//! value is that short is reported by name (never by value) on stderr.

use zeroize::Zeroize;

/// What replaces a run of masked bytes.
pub const MASK: &[u8] = b"***";

/// Shortest pattern searched for, in bytes.
pub const MIN_PATTERN_LEN: usize = 4;

/// Whether a secret value is long enough to be masked: at least
/// [`MIN_PATTERN_LEN`] bytes without the whitespace at its edges.
pub fn is_maskable(value: &[u8]) -> bool {
    value.trim_ascii().len() >= MIN_PATTERN_LEN
}

/// All the forms of one secret value that the masker hides, unordered and
/// possibly repeated ([`Masker::new`] orders them and drops repeats).
pub fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
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
            out.push(base64(base, alphabet, true));
            out.push(base64(base, alphabet, false));
            for offset in 0..3 {
                out.push(base64_embedded(base, offset, alphabet));
            }
        }
    }
    for base in text_bases {
        if base.len() < MIN_PATTERN_LEN {
            continue;
        }
        out.push(base.to_vec());
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
                out.push(e.replace('/', "\\/").into_bytes());
                out.push(html.into_bytes());
                out.push(e.into_bytes());
            }
        }
        for upper in [true, false] {
            out.push(url_encode(base, upper, false, false));
            out.push(url_encode(base, upper, true, false));
            out.push(url_encode(base, upper, false, true));
        }
    }
    out.retain(|p| p.len() >= MIN_PATTERN_LEN);
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> Vec<u8> {
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
fn base64_embedded(data: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
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

/// A streaming masker. Feed it chunks with [`push`](Self::push), then
/// [`finish`](Self::finish); each returns the masked bytes now safe to show.
#[derive(Clone)]
pub struct Masker {
    patterns: Vec<Vec<u8>>,
    /// Pattern indexes by first byte.
    by_first: Vec<Vec<usize>>,
    longest: usize,
    /// Bytes not yet emitted; `buf[0]` is at absolute offset `base`.
    buf: Vec<u8>,
    base: u64,
    /// Start positions below this (absolute) have been searched.
    scanned: u64,
    /// Merged hidden intervals `[start, end)` reaching at or past `base`.
    hidden: std::collections::VecDeque<(u64, u64)>,
    in_mask: bool,
}

impl Masker {
    /// A masker for these secret values (every form of each is hidden).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut patterns: Vec<Vec<u8>> = values.into_iter().flat_map(forms).collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        let mut by_first = vec![Vec::new(); 256];
        for (i, p) in patterns.iter().enumerate() {
            by_first[usize::from(p[0])].push(i);
        }
        let longest = patterns.first().map_or(0, Vec::len);
        Masker {
            patterns,
            by_first,
            longest,
            buf: Vec::new(),
            base: 0,
            scanned: 0,
            hidden: Default::default(),
            in_mask: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return chunk.to_vec();
        }
        self.buf.extend_from_slice(chunk);
        let end = self.base + self.buf.len() as u64;
        let ready = (end + 1).saturating_sub(self.longest as u64);
        self.scan_to(ready);
        self.emit_to(ready)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        if self.patterns.is_empty() {
            return Vec::new();
        }
        let end = self.base + self.buf.len() as u64;
        self.scan_to(end);
        self.emit_to(end)
    }

    fn scan_to(&mut self, limit: u64) {
        while self.scanned < limit {
            let i = (self.scanned - self.base) as usize;
            let rest = &self.buf[i..];
            let longest_match = self.by_first[usize::from(rest[0])]
                .iter()
                .map(|&p| &self.patterns[p])
                .find(|p| rest.starts_with(p))
                .map(Vec::len);
            if let Some(len) = longest_match {
                let (s, e) = (self.scanned, self.scanned + len as u64);
                match self.hidden.back_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => self.hidden.push_back((s, e)),
                }
            }
            self.scanned += 1;
        }
    }

    fn emit_to(&mut self, limit: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = self.base;
        while pos < limit {
            while self.hidden.front().is_some_and(|h| h.1 <= pos) {
                self.hidden.pop_front();
            }
            match self.hidden.front() {
                Some(&(s, e)) if s <= pos => {
                    if !self.in_mask {
                        out.extend_from_slice(MASK);
                        self.in_mask = true;
                    }
                    pos = e.min(limit);
                }
                next => {
                    let stop = next.map_or(limit, |h| h.0.min(limit));
                    let from = (pos - self.base) as usize;
                    let to = (stop - self.base) as usize;
                    out.extend_from_slice(&self.buf[from..to]);
                    self.in_mask = false;
                    pos = stop;
                }
            }
        }
        let consumed = (limit - self.base) as usize;
        self.buf[..consumed].zeroize();
        self.buf.drain(..consumed);
        self.base = limit;
        out
    }
}

impl Drop for Masker {
    fn drop(&mut self) {
        for p in &mut self.patterns {
            p.zeroize();
        }
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_all(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
        let mut m = Masker::new(values.iter().copied());
        let mut out = m.push(input);
        out.extend(m.finish());
        out
    }

    /// Mask `input` split into chunks of every size 1..=n; all must agree.
    fn mask_chunked(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
        let whole = mask_all(values, input);
        for size in 1..=input.len().max(1) {
            let mut m = Masker::new(values.iter().copied());
            let mut out = Vec::new();
            for c in input.chunks(size) {
                out.extend(m.push(c));
            }
            out.extend(m.finish());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&whole),
                "chunk size {size}"
            );
        }
        whole
    }

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

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
    fn exact_value_masked_across_every_chunking() {
        let out = mask_chunked(&[b"hunter2-secret"], b"a hunter2-secret b hunter2-secret");
        assert_eq!(s(out), "a *** b ***");
    }

    #[test]
    fn no_patterns_is_identity() {
        let mut m = Masker::new(std::iter::empty());
        assert_eq!(m.push(b"abc"), b"abc");
        assert!(m.finish().is_empty());
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
    fn overlapping_secrets_are_hidden_whole() {
        // Leftmost-first would leave "def" of the longer one visible.
        let out = mask_chunked(&[b"abcd", b"bcdefgh"], b"<abcdefgh>");
        assert_eq!(s(out), "<***>");
        let out = mask_chunked(&[b"abcd", b"cdef"], b"abcdef abcd cdef");
        assert_eq!(s(out), "*** *** ***");
    }

    #[test]
    fn short_values_are_not_patterns() {
        assert!(forms(b"abc").is_empty());
        assert!(forms(b" ab \n").is_empty());
        let out = mask_chunked(&[b"ab"], b"abab");
        assert_eq!(s(out), "abab");
    }

    #[test]
    fn adjacent_occurrences_become_one_mask_even_across_pushes() {
        let mut m = Masker::new([&b"secretvalue"[..]]);
        let mut out = Vec::new();
        for _ in 0..5 {
            out.extend(m.push(b"secretvalue"));
        }
        out.extend(m.finish());
        assert_eq!(s(out), "***");
    }

    /// Random secrets planted in random text, fed in random chunks: the
    /// output never holds a secret and never depends on the chunking.
    #[test]
    fn randomized_chunking_never_leaks() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let secrets: Vec<Vec<u8>> = (0..1 + next(3))
                .map(|_| (0..4 + next(12)).map(|_| b'a' + next(4) as u8).collect())
                .collect();
            let mut input = Vec::new();
            for _ in 0..next(40) {
                if next(3) == 0 {
                    input.extend_from_slice(&secrets[next(secrets.len() as u64) as usize]);
                } else {
                    input.push(b'a' + next(5) as u8);
                }
            }
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let whole = mask_all(&refs, &input);
            let mut m = Masker::new(refs.iter().copied());
            let mut out = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + next(rest.len() as u64) as usize;
                out.extend(m.push(&rest[..n]));
                rest = &rest[n..];
            }
            out.extend(m.finish());
            assert_eq!(out, whole);
            for sec in &secrets {
                assert!(
                    !out.windows(sec.len()).any(|w| w == &sec[..]),
                    "{:?} in {:?}",
                    String::from_utf8_lossy(sec),
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn binary_input_and_lossless_passthrough() {
        let input: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
        let out = mask_chunked(&[b"not-present-xyz"], &input);
        assert_eq!(out, input);
    }
}

//! Matching one form (a base64 form across line breaks), and the set of
//! forms of every secret value.

use super::forms::tagged_forms;
use zeroize::Zeroize;

/// Inside a base64 pattern, a line break (`\n` or `\r\n`) is skipped when it
/// ends a run of at least this many base64 characters (`base64` wraps at 76
/// columns, PEM at 64). Shorter lines are not joined: a line ending in a
/// character or two that happen to begin a pattern must not keep the
/// output behind it waiting for the next line.
pub const MIN_WRAP: usize = 16;

/// One form searched for.
pub(super) struct Pattern {
    pub(super) bytes: Vec<u8>,
    /// A base64 form: line breaks inside an occurrence are skipped.
    pub(super) wrapped: bool,
}

impl Pattern {
    pub(super) fn text(bytes: Vec<u8>) -> Self {
        Pattern {
            bytes,
            wrapped: false,
        }
    }

    pub(super) fn base64(bytes: Vec<u8>) -> Self {
        Pattern {
            bytes,
            wrapped: true,
        }
    }

    /// Whether this pattern occurs at `buf[at..]`, and how many bytes the
    /// occurrence spans. `run0` is the length of the run of base64
    /// characters that ends just before `buf[0]`.
    fn match_at(&self, buf: &[u8], at: usize, run0: usize) -> Found {
        let mut j = at;
        for (k, &c) in self.bytes.iter().enumerate() {
            if k > 0 && self.wrapped {
                let brk = match buf.get(j) {
                    Some(b'\n') => Some(1),
                    Some(b'\r') => match buf.get(j + 1) {
                        Some(b'\n') => Some(2),
                        Some(_) => Some(0),
                        None => None,
                    },
                    _ => Some(0),
                };
                if brk != Some(0) && run_before(buf, j, run0) >= MIN_WRAP {
                    match brk {
                        Some(n) => j += n,
                        None => return Found::NeedMore,
                    }
                }
            }
            match buf.get(j) {
                None => return Found::NeedMore,
                Some(&b) if b == c => j += 1,
                Some(_) => return Found::No,
            }
        }
        Found::Span(j - at)
    }
}

enum Found {
    Span(usize),
    No,
    /// The input ends inside a possible occurrence.
    NeedMore,
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
}

/// Length (capped at [`MIN_WRAP`]) of the run of base64 characters ending
/// just before `buf[j]`; `run0` is the run ending just before `buf[0]`.
pub(super) fn run_before(buf: &[u8], j: usize, run0: usize) -> usize {
    let mut n = 0;
    let mut i = j;
    while i > 0 && n < MIN_WRAP {
        if !is_base64_char(buf[i - 1]) {
            return n;
        }
        n += 1;
        i -= 1;
    }
    if i == 0 {
        (n + run0).min(MIN_WRAP)
    } else {
        n
    }
}

/// The patterns of a set of secret values, shared by every view over them.
pub(super) struct Patterns {
    pub(super) list: Vec<Pattern>,
    /// Pattern indexes by first byte.
    by_first: Vec<Vec<usize>>,
    /// Longest pattern, in bytes (an occurrence spans at most three times
    /// that: one line break of at most two bytes between characters).
    pub(super) longest: usize,
}

impl Patterns {
    pub(super) fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut list: Vec<Pattern> = values.into_iter().flat_map(tagged_forms).collect();
        list.sort_by(|a, b| {
            (b.bytes.len().cmp(&a.bytes.len())).then_with(|| a.bytes.cmp(&b.bytes))
        });
        list.dedup_by(|later, kept| {
            let same = later.bytes == kept.bytes;
            if same {
                kept.wrapped |= later.wrapped;
                later.bytes.zeroize();
            }
            same
        });
        let mut by_first = vec![Vec::new(); 256];
        for (i, p) in list.iter().enumerate() {
            by_first[usize::from(p.bytes[0])].push(i);
        }
        let longest = list.first().map_or(0, |p| p.bytes.len());
        Patterns {
            list,
            by_first,
            longest,
        }
    }

    /// The longest span of an occurrence starting at `buf[at]` (`Some(None)`
    /// when there is none), or `None` when more input could still make one
    /// (unless `finished`: the input ends here).
    pub(super) fn longest_at(
        &self,
        buf: &[u8],
        at: usize,
        run0: usize,
        finished: bool,
    ) -> Option<Option<usize>> {
        let mut best = None;
        for &i in &self.by_first[usize::from(buf[at])] {
            match self.list[i].match_at(buf, at, run0) {
                Found::Span(n) => best = best.max(Some(n)),
                Found::No => {}
                Found::NeedMore if finished => {}
                Found::NeedMore => return None,
            }
        }
        Some(best)
    }
}

impl Drop for Patterns {
    fn drop(&mut self) {
        for p in &mut self.list {
            p.bytes.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::forms::{base64, base64_embedded, STANDARD, URL_SAFE};
    use crate::testing::{contains, mask_all, mask_chunked, prng, s};
    use crate::{Masker, MASK};

    /// `text` broken into lines of `width` bytes, each ended by `eol`
    /// except the last.
    fn wrap(text: &[u8], width: usize, eol: &[u8]) -> Vec<u8> {
        text.chunks(width).collect::<Vec<_>>().join(eol)
    }

    /// Mask `input` whole, in 1-byte chunks and in `rounds` random
    /// chunkings; all must agree.
    fn mask_many_ways(values: &[&[u8]], input: &[u8], seed: u64, rounds: usize) -> Vec<u8> {
        let whole = mask_all(values, input);
        let mut next = prng(seed);
        for round in 0..=rounds {
            let mut m = Masker::new(values.iter().copied());
            let mut out = Vec::new();
            let mut rest = input;
            while !rest.is_empty() {
                let n = if round == 0 {
                    1
                } else {
                    1 + next(rest.len().min(40) as u64) as usize
                };
                out.extend(m.push(&rest[..n]));
                rest = &rest[n..];
            }
            out.extend(m.finish());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&whole),
                "round {round}"
            );
        }
        whole
    }

    #[test]
    fn wrapped_base64_of_the_value_at_76_and_64_columns_lf_and_crlf() {
        let value: Vec<u8> = (0..150u32).map(|i| b'!' + (i * 37 % 93) as u8).collect();
        let mut file = value.clone();
        file.push(b'\n');
        let mut seed = 1;
        // The secret as its file holds it (trailing newline); encoded with
        // and without that newline, as `base64 file` and `printf %s "$v" |
        // base64` would.
        for data in [&value, &file] {
            for alphabet in [STANDARD, URL_SAFE] {
                let enc = base64(data, alphabet, true);
                for width in [76, 64] {
                    for eol in [&b"\n"[..], b"\r\n"] {
                        let mut input = b"out:".to_vec();
                        input.extend_from_slice(eol);
                        let body = wrap(&enc, width, eol);
                        assert!(body.len() > 2 * width, "wraps at least twice");
                        input.extend_from_slice(&body);
                        input.extend_from_slice(eol);
                        input.extend_from_slice(b"done");
                        input.extend_from_slice(eol);
                        seed += 1;
                        let out = mask_many_ways(&[&file], &input, seed, 5);
                        let eol = std::str::from_utf8(eol).unwrap();
                        assert_eq!(
                            s(out),
                            format!("out:{eol}***{eol}done{eol}"),
                            "width {width} eol {eol:?}"
                        );
                    }
                }
            }
        }
    }

    /// The value at every byte offset of a longer wrapped base64 text, so
    /// that the line breaks fall at every position of its encoded form.
    #[test]
    fn wrapped_base64_of_a_value_inside_longer_text_at_every_offset() {
        let secret = b"canary-0123456789-xyz";
        let mut seed = 100;
        for prefix_len in 0..=120usize {
            let mut plain: Vec<u8> = (0..prefix_len).map(|i| (i * 131 % 256) as u8).collect();
            plain.extend_from_slice(secret);
            plain.extend_from_slice(b" and some tail text after it");
            for alphabet in [STANDARD, URL_SAFE] {
                let enc = base64(&plain, alphabet, true);
                for width in [76, 64] {
                    for eol in [&b"\n"[..], b"\r\n"] {
                        let mut input = wrap(&enc, width, eol);
                        input.extend_from_slice(eol);
                        seed += 1;
                        let out = mask_many_ways(&[secret], &input, seed, 1);
                        assert!(contains(&out, MASK), "{}", s(out));
                        let joined: Vec<u8> = out
                            .iter()
                            .copied()
                            .filter(|b| !matches!(b, b'\r' | b'\n'))
                            .collect();
                        for offset in 0..3 {
                            let frag = base64_embedded(secret, offset, alphabet);
                            assert!(
                                !contains(&joined, &frag),
                                "prefix {prefix_len} width {width}: {} holds {}",
                                s(out.clone()),
                                s(frag)
                            );
                        }
                        assert!(out.ends_with(eol));
                    }
                }
            }
        }
    }

    #[test]
    fn line_breaks_join_base64_only_after_a_long_run() {
        // base64("topsecret-value") = "dG9wc2VjcmV0LXZhbHVl".
        let secret = b"topsecret-value";
        assert_eq!(s(base64(secret, STANDARD, true)), "dG9wc2VjcmV0LXZhbHVl");
        let out = mask_chunked(&[secret], b"k: dG9wc2VjcmV0LXZh\r\nbHVl\n");
        assert_eq!(s(out), "k: ***\n");
        // A line of 15 characters is not a wrapped base64 line.
        let input = b"dG9wc2VjcmV0LXZ\nhbHVl\n";
        assert_eq!(mask_chunked(&[secret], input), input);
        // Nor is a break between two lines of text.
        let out = mask_chunked(&[secret], b"topsecret-\nvalue\n");
        assert_eq!(s(out), "topsecret-\nvalue\n");
    }
}

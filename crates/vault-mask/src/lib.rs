//! Masking secret values out of a byte stream.
//!
//! For every secret value the masker looks for:
//! * the value with surrounding whitespace trimmed (secret files often end
//!   in a newline the program never prints; whitespace at the edges is not
//!   treated as secret, so it stays visible and lines are not merged);
//! * each line of a multi-line value (trimmed the same way);
//! * its base64 forms: standard and URL-safe alphabet, padded and not, and
//!   the value embedded at any of the three byte alignments of a longer
//!   base64 text (only the characters the value alone determines); also
//!   wrapped into lines (`base64`'s 76 columns, PEM's 64, any width of at
//!   least [`MIN_WRAP`]) with `\n` or `\r\n` line ends: inside a base64
//!   pattern, a line break that ends a run of at least [`MIN_WRAP`] base64
//!   characters is skipped, so the wrap column does not matter;
//! * its JSON-string-escaped forms (as serde_json writes it; with every
//!   non-ASCII character as `\uXXXX`; with `/` as `\/`; with `<>&` as
//!   `\u003c`...) and its URL-encoded forms (`%XX` upper- and lower-case,
//!   of the reserved bytes or of every byte, and form encoding with `+`).
//!
//! Every byte covered by any occurrence of any pattern is hidden; a run of
//! hidden bytes becomes one [`MASK`]. Overlapping occurrences of different
//! secrets are therefore hidden whole (longest and shortest alike), and the
//! result does not depend on how the input is split into chunks: a byte is
//! shown only once every occurrence that could cover it has been ruled in
//! or out, i.e. the masker holds back exactly the bytes that could still
//! begin an occurrence (at most the longest occurrence, line breaks
//! included), and nothing else.
//!
//! [`InterleavedMasker`] masks two streams (a container's stdout and
//! stderr) written into one log: a byte is hidden when it is covered in its
//! own stream's sequence (a value split around the other stream's output)
//! or in the merged sequence in arrival order (a value split between the
//! two streams). All views look at the raw bytes, never at each other's
//! [`MASK`]s, so a marker can neither create nor break a match.
//!
//! Patterns shorter than [`MIN_PATTERN_LEN`] bytes are not searched for:
//! masking every two-character string would destroy the output while
//! protecting nothing (a secret that short can be guessed). A secret whose
//! value is that short is reported by name (never by value) on stderr.

mod coverage;
mod forms;
mod interleaved;
mod pattern;

pub use forms::forms;
pub use interleaved::{InterleavedMasker, Stream};
pub use pattern::MIN_WRAP;

use coverage::Coverage;
use pattern::Patterns;
use std::sync::Arc;

/// What replaces a run of masked bytes.
pub const MASK: &[u8] = b"***";

/// Shortest pattern searched for, in bytes.
pub const MIN_PATTERN_LEN: usize = 4;

/// Whether a secret value is long enough to be masked: at least
/// [`MIN_PATTERN_LEN`] bytes without the whitespace at its edges.
pub fn is_maskable(value: &[u8]) -> bool {
    value.trim_ascii().len() >= MIN_PATTERN_LEN
}

/// Append a run of `bytes` (shown) or of hidden bytes to `out`; adjacent
/// hidden runs make one [`MASK`].
fn put(out: &mut Vec<u8>, in_mask: &mut bool, hidden: bool, bytes: &[u8]) {
    if hidden {
        if !*in_mask {
            out.extend_from_slice(MASK);
            *in_mask = true;
        }
    } else if !bytes.is_empty() {
        out.extend_from_slice(bytes);
        *in_mask = false;
    }
}

/// A streaming masker. Feed it chunks with [`push`](Self::push), then
/// [`finish`](Self::finish); each returns the masked bytes now safe to show.
#[derive(Clone)]
pub struct Masker {
    cov: Coverage,
    /// Bytes below this have been returned.
    shown: u64,
    in_mask: bool,
}

impl Masker {
    /// A masker for these secret values (every form of each is hidden).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        Masker {
            cov: Coverage::new(Arc::new(Patterns::new(values))),
            shown: 0,
            in_mask: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.cov.pats.list.is_empty() {
            return chunk.to_vec();
        }
        self.cov.push(chunk);
        self.emit()
    }

    pub fn finish(&mut self) -> Vec<u8> {
        if self.cov.pats.list.is_empty() {
            return Vec::new();
        }
        self.cov.finish();
        self.emit()
    }

    fn emit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let limit = self.cov.decided();
        while self.shown < limit {
            let (hidden, until) = self.cov.status(self.shown);
            put(
                &mut out,
                &mut self.in_mask,
                hidden,
                self.cov.bytes(self.shown, until),
            );
            self.shown = until;
        }
        self.cov.release(self.shown);
        out
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{mask_all, mask_chunked, s};
    use super::*;

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

    #[test]
    fn output_is_held_back_only_while_a_match_is_possible() {
        let mut m = Masker::new([&b"topsecret"[..]]);
        assert_eq!(s(m.push(b"a top")), "a ");
        assert_eq!(s(m.push(b"line\n")), "topline\n");
        assert_eq!(s(m.push(b"x topsec")), "x ");
        assert_eq!(s(m.push(b"ret!")), "***!");
        assert_eq!(s(m.finish()), "");
    }
}

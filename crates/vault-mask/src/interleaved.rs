//! Masking two streams (a container's stdout and stderr) merged into one
//! output.

use super::coverage::Coverage;
use super::{put, Masker};
use std::collections::VecDeque;

/// Which of the two streams a chunk comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Output of one stream that arrived at merged offset `at`, its own offset
/// being `off`.
#[derive(Clone, Copy)]
struct Segment {
    stream: usize,
    at: u64,
    off: u64,
    len: u64,
}

/// Output past the first byte not yet shown, beyond which the views of the
/// separate streams are forced to decide (see [`InterleavedMasker`]).
const STALL_LIMIT: u64 = 64 * 1024;

/// Masks two streams merged into one output in arrival order. A byte is
/// hidden when it is covered in the merged sequence or in its own stream's
/// sequence, and shown (in arrival order) only once both have decided.
///
/// A stream that stops in the middle of a possible occurrence would hold
/// back everything after it; once more than [`STALL_LIMIT`] bytes wait, the
/// undecided bytes of each stream are hidden (an over-mask of at most one
/// occurrence's length; the stream's scan goes on, so if the occurrence is
/// completed later, the rest of it is hidden too).
pub struct InterleavedMasker {
    merged: Coverage,
    streams: [Coverage; 2],
    /// Merged output not yet shown, by stream.
    segments: VecDeque<Segment>,
    /// Merged bytes below this have been returned.
    shown: u64,
    in_mask: bool,
    stall_limit: u64,
}

impl InterleavedMasker {
    /// For the secret values of `masker` (a fresh one: its state is not used).
    pub fn new(masker: &Masker) -> Self {
        let pats = masker.cov.pats.clone();
        let stall_limit = STALL_LIMIT + 3 * pats.longest as u64;
        InterleavedMasker {
            merged: Coverage::new(pats.clone()),
            streams: [Coverage::new(pats.clone()), Coverage::new(pats)],
            segments: VecDeque::new(),
            shown: 0,
            in_mask: false,
            stall_limit,
        }
    }

    /// A chunk of `stream`; returns the merged output now safe to show.
    pub fn push(&mut self, stream: Stream, chunk: &[u8]) -> Vec<u8> {
        if self.merged.pats.list.is_empty() {
            return chunk.to_vec();
        }
        if chunk.is_empty() {
            return Vec::new();
        }
        let k = stream as usize;
        match self.segments.back_mut() {
            Some(last) if last.stream == k => last.len += chunk.len() as u64,
            _ => self.segments.push_back(Segment {
                stream: k,
                at: self.merged.end(),
                off: self.streams[k].end(),
                len: chunk.len() as u64,
            }),
        }
        self.merged.push(chunk);
        self.streams[k].push(chunk);
        let mut out = self.emit();
        if self.merged.end() - self.shown > self.stall_limit {
            for s in &mut self.streams {
                s.force();
            }
            out.extend(self.emit());
        }
        out
    }

    /// The end of both streams: the rest of the output.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.merged.pats.list.is_empty() {
            return Vec::new();
        }
        self.merged.finish();
        for s in &mut self.streams {
            s.finish();
        }
        self.emit()
    }

    fn emit(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let limit = self.merged.decided();
        while let Some(seg) = self.segments.front().copied() {
            let p = self.shown;
            let o = seg.off + (p - seg.at);
            let own = &mut self.streams[seg.stream];
            if p >= limit || o >= own.decided() {
                break;
            }
            let (in_merged, merged_until) = self.merged.status(p);
            let (in_own, own_until) = own.status(o);
            let n = (merged_until - p)
                .min(own_until - o)
                .min(seg.at + seg.len - p);
            let hidden = in_merged || in_own;
            put(
                &mut out,
                &mut self.in_mask,
                hidden,
                self.merged.bytes(p, p + n),
            );
            self.shown += n;
            self.streams[seg.stream].release(o + n);
            if self.shown == seg.at + seg.len {
                self.segments.pop_front();
            }
        }
        self.merged.release(self.shown);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Patterns;
    use crate::testing::{contains, prng, s};
    use std::sync::Arc;

    /// Which bytes of `input` the patterns of `values` cover.
    fn covered(values: &[&[u8]], input: &[u8]) -> Vec<bool> {
        let mut cov = Coverage::new(Arc::new(Patterns::new(values.iter().copied())));
        cov.push(input);
        cov.finish();
        (0..input.len() as u64).map(|i| cov.status(i).0).collect()
    }

    /// Runs of hidden bytes as one [`MASK`].
    fn render(input: &[u8], hidden: &[bool]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut in_mask = false;
        for (b, h) in input.iter().zip(hidden) {
            put(&mut out, &mut in_mask, *h, std::slice::from_ref(b));
        }
        out
    }

    fn interleave(values: &[&[u8]], pieces: &[(Stream, &[u8])]) -> Vec<u8> {
        let mut m = InterleavedMasker::new(&Masker::new(values.iter().copied()));
        let mut out = Vec::new();
        for (stream, chunk) in pieces {
            out.extend(m.push(*stream, chunk));
        }
        out.extend(m.finish());
        out
    }

    #[test]
    fn interleaved_value_split_between_streams_is_masked() {
        let secret: &[u8] = b"CANARY-0123456789";
        let out = interleave(
            &[secret],
            &[
                (Stream::Stdout, b"x CANARY-01234"),
                (Stream::Stderr, b"56789 y\n"),
            ],
        );
        assert_eq!(s(out), "x *** y\n");
        // Split around the other stream's output: hidden in its own stream.
        let out = interleave(
            &[secret],
            &[
                (Stream::Stdout, b"x CANARY-01"),
                (Stream::Stderr, b"[err]"),
                (Stream::Stdout, b"23456789 y\n"),
            ],
        );
        assert_eq!(s(out), "x ***[err]*** y\n");
    }

    /// Masking one view and feeding its output (with its `***`) to the next
    /// would break this: stdout's "abcdEFGH" becomes "***", and the merged
    /// view would then see "***ijkl", not "EFGHijkl", and show "ijkl".
    #[test]
    fn interleaved_markers_of_one_view_do_not_break_a_match_in_another() {
        let out = interleave(
            &[b"abcdEFGH", b"EFGHijkl"],
            &[(Stream::Stdout, b"abcdEFGH"), (Stream::Stderr, b"ijkl\n")],
        );
        assert_eq!(s(out), "***\n");
        let out = interleave(
            &[b"abcdEFGH", b"EFGHijkl"],
            &[
                (Stream::Stderr, b"abcd"),
                (Stream::Stdout, b"EFGH"),
                (Stream::Stderr, b"zz\n"),
                (Stream::Stdout, b"ijkl\n"),
            ],
        );
        // "abcdEFGH" in the merged view, "EFGHijkl" in stdout's own: both
        // found, though each overlaps what the other hides.
        assert_eq!(s(out), "***zz\n***\n");
    }

    #[test]
    fn interleaved_line_output_is_not_held_back() {
        let mut m = InterleavedMasker::new(&Masker::new([&b"topsecret"[..]]));
        assert_eq!(s(m.push(Stream::Stdout, b"Starting\n")), "Starting\n");
        assert_eq!(s(m.push(Stream::Stderr, b"warn: a top")), "warn: a ");
        assert_eq!(s(m.push(Stream::Stdout, b"step 2\n")), "");
        assert_eq!(s(m.push(Stream::Stderr, b"\n")), "topstep 2\n\n");
        assert_eq!(s(m.finish()), "");
    }

    /// A stream stopped inside a possible occurrence holds the other back
    /// only up to the limit; then its undecided bytes are hidden, and the
    /// rest of the occurrence is hidden when it comes.
    #[test]
    fn interleaved_stalled_stream_is_decided_after_the_limit() {
        let mut m = InterleavedMasker::new(&Masker::new([&b"topsecret"[..]]));
        let mut out = m.push(Stream::Stdout, b"key: topsec");
        assert_eq!(s(out.clone()), "key: ");
        let line = b"log line\n".repeat(500);
        for _ in 0..40 {
            out.extend(m.push(Stream::Stderr, &line));
        }
        assert!(out.len() > 150_000, "{}", out.len());
        assert!(
            out.starts_with(b"key: ***log line\n"),
            "{}",
            s(out[..40].to_vec())
        );
        out.extend(m.push(Stream::Stdout, b"ret\n"));
        out.extend(m.finish());
        assert!(!contains(&out, b"topsec"));
        assert!(
            out.ends_with(b"log line\n***\n"),
            "{}",
            s(out[out.len() - 40..].to_vec())
        );
    }

    /// Random secrets and text, in random pieces from random streams, in
    /// random chunks: the output is the merged text with every byte hidden
    /// that either view (merged, or the byte's own stream) covers, and no
    /// secret shows.
    #[test]
    fn interleaved_random_pieces_match_both_views() {
        let mut next = prng(0x2545_f491_4f6c_dd1d);
        for _ in 0..300 {
            let secrets: Vec<Vec<u8>> = (0..1 + next(3))
                .map(|_| (0..4 + next(10)).map(|_| b'a' + next(4) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let mut text = Vec::new();
            for _ in 0..next(60) {
                if next(3) == 0 {
                    text.extend_from_slice(&secrets[next(secrets.len() as u64) as usize]);
                } else {
                    text.push(b'a' + next(5) as u8);
                }
            }
            // Arrival order: pieces of random length, each from a stream.
            let mut pieces: Vec<(Stream, &[u8])> = Vec::new();
            let mut rest = &text[..];
            while !rest.is_empty() {
                let n = 1 + next(rest.len().min(8) as u64) as usize;
                let stream = if next(2) == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                pieces.push((stream, &rest[..n]));
                rest = &rest[n..];
            }
            let mut own: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            let mut origin = Vec::new();
            for (stream, piece) in &pieces {
                let k = *stream as usize;
                for &b in *piece {
                    origin.push((k, own[k].len()));
                    own[k].push(b);
                }
            }
            let merged_cov = covered(&refs, &text);
            let own_cov = [covered(&refs, &own[0]), covered(&refs, &own[1])];
            let hidden: Vec<bool> = origin
                .iter()
                .enumerate()
                .map(|(m, &(k, o))| merged_cov[m] || own_cov[k][o])
                .collect();
            // Independent check of the reference: every literal occurrence
            // in either view is hidden.
            for sec in &refs {
                for (i, w) in text.windows(sec.len()).enumerate() {
                    if w == *sec {
                        assert!(hidden[i..i + sec.len()].iter().all(|h| *h));
                    }
                }
            }
            let expected = render(&text, &hidden);
            let out = interleave(&refs, &pieces);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "{:?}",
                pieces
                    .iter()
                    .map(|(k, p)| (*k, String::from_utf8_lossy(p)))
                    .collect::<Vec<_>>()
            );
            for sec in &refs {
                assert!(!contains(&out, sec), "{}", String::from_utf8_lossy(&out));
            }
        }
    }
}

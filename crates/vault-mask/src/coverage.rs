//! Which bytes of one sequence the patterns cover, decided as the input
//! comes.

use super::pattern::{run_before, Patterns};
use std::collections::VecDeque;
use std::sync::Arc;
use zeroize::Zeroize;

/// Add `[s, e)` to intervals kept in order of start, merging overlapping
/// and adjacent ones.
fn add_interval(list: &mut VecDeque<(u64, u64)>, s: u64, e: u64) {
    match list.back_mut() {
        Some(last) if s <= last.1 => last.1 = last.1.max(e),
        _ => list.push_back((s, e)),
    }
}

/// Which bytes of one sequence are covered by an occurrence of a pattern,
/// decided as far as the input allows. Positions are absolute offsets in
/// the sequence.
#[derive(Clone)]
pub(super) struct Coverage {
    pub(super) pats: Arc<Patterns>,
    /// Bytes not yet released; `buf[0]` is at offset `base`.
    buf: Vec<u8>,
    base: u64,
    /// The run of base64 characters ending just before `base` (capped).
    run_at_base: usize,
    /// Every start position below this has been ruled in or out.
    scanned: u64,
    /// Covered intervals `[start, end)`, merged, in order.
    hidden: VecDeque<(u64, u64)>,
    /// Intervals hidden by [`force`](Self::force), merged, in order.
    forced: VecDeque<(u64, u64)>,
    finished: bool,
}

impl Coverage {
    pub(super) fn new(pats: Arc<Patterns>) -> Self {
        Coverage {
            pats,
            buf: Vec::new(),
            base: 0,
            run_at_base: 0,
            scanned: 0,
            hidden: VecDeque::new(),
            forced: VecDeque::new(),
            finished: false,
        }
    }

    pub(super) fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        self.scan();
    }

    /// No more input: what could only have been completed by more is not
    /// an occurrence.
    pub(super) fn finish(&mut self) {
        self.finished = true;
        self.scan();
    }

    fn scan(&mut self) {
        let end = self.end();
        if self.pats.list.is_empty() {
            self.scanned = end;
            return;
        }
        while self.scanned < end {
            let at = (self.scanned - self.base) as usize;
            let found = self
                .pats
                .longest_at(&self.buf, at, self.run_at_base, self.finished);
            let Some(found) = found else { break };
            if let Some(len) = found {
                add_interval(&mut self.hidden, self.scanned, self.scanned + len as u64);
            }
            self.scanned += 1;
        }
    }

    /// Every byte below this is known to be covered or not.
    pub(super) fn decided(&self) -> u64 {
        self.scanned.max(self.forced.back().map_or(0, |f| f.1))
    }

    /// Decide the undecided bytes (those a possible occurrence, not yet
    /// complete, has reached) as covered. Scanning goes on as before, so
    /// an occurrence completed later still hides the rest of itself.
    pub(super) fn force(&mut self) {
        let (from, end) = (self.decided(), self.end());
        if from < end {
            add_interval(&mut self.forced, from, end);
        }
    }

    /// Whether the byte at `pos` (not below the last position asked about,
    /// below [`decided`](Self::decided)) is covered, and where the run of
    /// bytes with that answer ends (at most at `decided`).
    pub(super) fn status(&mut self, pos: u64) -> (bool, u64) {
        let limit = self.decided();
        for list in [&mut self.hidden, &mut self.forced] {
            while list.front().is_some_and(|h| h.1 <= pos) {
                list.pop_front();
            }
        }
        let fronts = [self.hidden.front().copied(), self.forced.front().copied()];
        let covering = fronts
            .iter()
            .flatten()
            .filter(|h| h.0 <= pos)
            .map(|h| h.1)
            .max();
        match covering {
            Some(e) => (true, e.min(limit)),
            None => (
                false,
                fronts.iter().flatten().map(|h| h.0).fold(limit, u64::min),
            ),
        }
    }

    /// The bytes `[from, to)`; `from` must not be below what was released.
    pub(super) fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.base) as usize..(to - self.base) as usize]
    }

    /// Forget the bytes below `upto` (those still needed to scan are kept).
    pub(super) fn release(&mut self, upto: u64) {
        let upto = upto.min(self.scanned);
        if upto <= self.base {
            return;
        }
        let n = (upto - self.base) as usize;
        self.run_at_base = run_before(&self.buf, n, self.run_at_base);
        self.buf[..n].zeroize();
        self.buf.drain(..n);
        self.base = upto;
    }
}

impl Drop for Coverage {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{mask_chunked, s};

    #[test]
    fn overlapping_secrets_are_hidden_whole() {
        // Leftmost-first would leave "def" of the longer one visible.
        let out = mask_chunked(&[b"abcd", b"bcdefgh"], b"<abcdefgh>");
        assert_eq!(s(out), "<***>");
        let out = mask_chunked(&[b"abcd", b"cdef"], b"abcdef abcd cdef");
        assert_eq!(s(out), "*** *** ***");
    }
}

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

use std::collections::VecDeque;
use std::sync::Arc;
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
    tagged_forms(value).into_iter().map(|p| p.bytes).collect()
}

/// [`forms`], each marked whether it is a base64 form (line breaks inside
/// it are skipped, see [`MIN_WRAP`]).
fn tagged_forms(value: &[u8]) -> Vec<Pattern> {
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

/// Inside a base64 pattern, a line break (`\n` or `\r\n`) is skipped when it
/// ends a run of at least this many base64 characters (`base64` wraps at 76
/// columns, PEM at 64). Shorter lines are not joined: a line ending in a
/// character or two that happen to begin a pattern must not keep the
/// output behind it waiting for the next line.
pub const MIN_WRAP: usize = 16;

/// One form searched for.
struct Pattern {
    bytes: Vec<u8>,
    /// A base64 form: line breaks inside an occurrence are skipped.
    wrapped: bool,
}

impl Pattern {
    fn text(bytes: Vec<u8>) -> Self {
        Pattern {
            bytes,
            wrapped: false,
        }
    }

    fn base64(bytes: Vec<u8>) -> Self {
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
fn run_before(buf: &[u8], j: usize, run0: usize) -> usize {
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
struct Patterns {
    list: Vec<Pattern>,
    /// Pattern indexes by first byte.
    by_first: Vec<Vec<usize>>,
    /// Longest pattern, in bytes (an occurrence spans at most three times
    /// that: one line break of at most two bytes between characters).
    longest: usize,
}

impl Patterns {
    fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
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
    fn longest_at(
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
struct Coverage {
    pats: Arc<Patterns>,
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
    fn new(pats: Arc<Patterns>) -> Self {
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

    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        self.scan();
    }

    /// No more input: what could only have been completed by more is not
    /// an occurrence.
    fn finish(&mut self) {
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
    fn decided(&self) -> u64 {
        self.scanned.max(self.forced.back().map_or(0, |f| f.1))
    }

    /// Decide the undecided bytes (those a possible occurrence, not yet
    /// complete, has reached) as covered. Scanning goes on as before, so
    /// an occurrence completed later still hides the rest of itself.
    fn force(&mut self) {
        let (from, end) = (self.decided(), self.end());
        if from < end {
            add_interval(&mut self.forced, from, end);
        }
    }

    /// Whether the byte at `pos` (not below the last position asked about,
    /// below [`decided`](Self::decided)) is covered, and where the run of
    /// bytes with that answer ends (at most at `decided`).
    fn status(&mut self, pos: u64) -> (bool, u64) {
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
    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.base) as usize..(to - self.base) as usize]
    }

    /// Forget the bytes below `upto` (those still needed to scan are kept).
    fn release(&mut self, upto: u64) {
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

    /// A small deterministic PRNG (xorshift): `next(n)` is in `0..n`.
    fn prng(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

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

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
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

    #[test]
    fn output_is_held_back_only_while_a_match_is_possible() {
        let mut m = Masker::new([&b"topsecret"[..]]);
        assert_eq!(s(m.push(b"a top")), "a ");
        assert_eq!(s(m.push(b"line\n")), "topline\n");
        assert_eq!(s(m.push(b"x topsec")), "x ");
        assert_eq!(s(m.push(b"ret!")), "***!");
        assert_eq!(s(m.finish()), "");
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

//! Where the container's output goes: masked, to stderr (capped), and the
//! last [`MAX_LOGS_BYTES`] of it into the result's `logs`. Nothing else
//! keeps it: not the daemon (logging driver `none`), not a file.
//!
//! The container's stdout and stderr arrive interleaved and go out as one
//! stream in arrival order, masked by an [`InterleavedMasker`]: a value is
//! hidden whether it is written whole to one stream, split across writes
//! to one stream with the other's output in between, or split between the
//! two. What goes to stderr and what goes into `logs` are the same bytes.

use crate::mask::{InterleavedMasker, Masker, Stream};
use std::collections::VecDeque;
use std::io::Write;
use vault_core::result::MAX_LOGS_BYTES;

/// Most masked output copied to stderr; after it, one marker line and
/// silence (the stream is still read, masked and kept for `logs`).
pub const MAX_STDERR_BYTES: u64 = 8 * 1024 * 1024;

/// Copies to stderr on a thread of its own, so that a stderr nobody reads
/// can never block the runtime (and with it the timeout's timer). When the
/// reader falls more than [`STDERR_QUEUE`] chunks behind, chunks are
/// dropped and a marker says how much.
struct StderrWriter {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
    dropped: u64,
}

/// Chunks queued for stderr before output is dropped (attach frames are at
/// most 32 KiB, so up to 32 MiB).
const STDERR_QUEUE: usize = 1024;

/// How long the end of a run waits for stderr to take the queued output.
const STDERR_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl StderrWriter {
    fn start(mut err: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(STDERR_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for chunk in rx {
                // A closed stderr must not stop the run: the output is
                // still kept for the result.
                let _ = err.write_all(&chunk);
                let _ = err.flush();
            }
            let _ = done_tx.send(());
        });
        StderrWriter {
            tx: Some(tx),
            done,
            dropped: 0,
        }
    }

    fn send(&mut self, chunk: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        if self.dropped > 0 {
            let note = format!(
                "\n[run-action: {} bytes of output not shown: stderr is not being read fast enough]\n",
                self.dropped
            );
            if tx.try_send(note.into_bytes()).is_err() {
                self.dropped += chunk.len() as u64;
                return;
            }
            self.dropped = 0;
        }
        let len = chunk.len() as u64;
        if tx.try_send(chunk).is_err() {
            self.dropped += len;
        }
    }

    fn close(&mut self) {
        if self.tx.take().is_some() {
            let _ = self.done.recv_timeout(STDERR_FLUSH_LIMIT);
        }
    }
}

pub struct OutputSink {
    /// The runner's stdout and stderr are separate pipes: a value split
    /// across two writes to one of them may have the other's output arrive
    /// between its halves, and a value may be split between them. This
    /// masks each stream on its own and the two merged.
    masker: InterleavedMasker,
    stderr: Option<StderrWriter>,
    stderr_written: u64,
    stderr_cap: u64,
    tail: VecDeque<u8>,
    total: u64,
    /// Set when the secret values are not known: output is dropped.
    withheld: Option<String>,
}

impl OutputSink {
    /// A sink that streams to stderr.
    pub fn new(masker: Masker) -> Self {
        let mut s = Self::quiet(masker);
        s.stderr = Some(StderrWriter::start(Box::new(std::io::stderr())));
        s
    }

    /// A sink that streams to `out` instead of stderr (tests read what a
    /// person would have read on stderr).
    #[cfg(test)]
    fn to_writer(masker: Masker, out: impl Write + Send + 'static) -> Self {
        let mut s = Self::quiet(masker);
        s.stderr = Some(StderrWriter::start(Box::new(out)));
        s
    }

    /// A sink that keeps output only for `logs`.
    pub fn quiet(masker: Masker) -> Self {
        OutputSink {
            masker: InterleavedMasker::new(&masker),
            stderr: None,
            stderr_written: 0,
            stderr_cap: MAX_STDERR_BYTES,
            tail: VecDeque::new(),
            total: 0,
            withheld: None,
        }
    }

    /// A sink that shows nothing: the reason goes into `logs`.
    pub fn withheld(masker: Masker, reason: String) -> Self {
        let mut s = Self::quiet(masker);
        s.withheld = Some(reason);
        s
    }

    pub fn with_stderr_cap(mut self, cap: u64) -> Self {
        self.stderr_cap = cap;
        self
    }

    pub fn write(&mut self, chunk: &[u8]) {
        if self.withheld.is_some() {
            return;
        }
        let masked = self.masker.push(Stream::Stdout, chunk);
        self.emit(&masked);
    }

    /// Like [`write`](Self::write), for the runner's stderr stream.
    pub fn write_stderr(&mut self, chunk: &[u8]) {
        if self.withheld.is_some() {
            return;
        }
        let masked = self.masker.push(Stream::Stderr, chunk);
        self.emit(&masked);
    }

    /// Flush what the masker held back and return the `logs` text.
    pub fn finish(&mut self) -> String {
        if let Some(reason) = &self.withheld {
            return format!("[output withheld: {reason}]");
        }
        let masked = self.masker.finish();
        self.emit(&masked);
        if let Some(w) = &mut self.stderr {
            w.close();
        }
        self.logs()
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.total += bytes.len() as u64;
        if let Some(w) = &mut self.stderr {
            if self.stderr_written < self.stderr_cap {
                let room = (self.stderr_cap - self.stderr_written) as usize;
                let part = &bytes[..bytes.len().min(room)];
                self.stderr_written += part.len() as u64;
                w.send(part.to_vec());
                if self.stderr_written >= self.stderr_cap {
                    w.send(
                        format!(
                            "\n[run-action: output truncated after {} bytes; the result keeps the last {} bytes]\n",
                            self.stderr_cap, MAX_LOGS_BYTES
                        )
                        .into_bytes(),
                    );
                }
            }
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(MAX_LOGS_BYTES);
        self.tail.drain(..excess);
    }

    fn logs(&self) -> String {
        let kept = self.tail.len() as u64;
        let bytes: Vec<u8> = self.tail.iter().copied().collect();
        if kept == self.total {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return cut_front(text, MAX_LOGS_BYTES);
        }
        let marker = format!(
            "[output truncated: {} earlier bytes not kept]\n",
            self.total - kept
        );
        let budget = MAX_LOGS_BYTES - marker.len();
        let start = bytes.len().saturating_sub(budget);
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        format!("{marker}{}", cut_front(text, budget))
    }
}

/// Keep at most the last `max` bytes of `text`, cut at a char boundary.
fn cut_front(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_kept_whole_and_masked() {
        let mut s = OutputSink::quiet(Masker::new([&b"topsecret"[..]]));
        s.write(b"a top");
        s.write(b"secret b\n");
        assert_eq!(s.finish(), "a *** b\n");
    }

    #[test]
    fn a_value_split_around_the_other_streams_output_is_masked() {
        let mut s = OutputSink::quiet(Masker::new([&b"topsecret"[..]]));
        s.write(b"a top");
        s.write_stderr(b"from stderr\n");
        s.write(b"secret b\n");
        let logs = s.finish();
        assert!(!logs.contains("top"), "{logs}");
        assert!(logs.contains("a ***"), "{logs}");
        assert!(logs.contains("from stderr"), "{logs}");
    }

    #[test]
    fn long_output_keeps_tail_with_marker() {
        let mut s = OutputSink::quiet(Masker::new(std::iter::empty()));
        for i in 0..20_000 {
            s.write(format!("line {i}\n").as_bytes());
        }
        let logs = s.finish();
        assert!(logs.len() <= MAX_LOGS_BYTES, "{}", logs.len());
        assert!(logs.starts_with("[output truncated: "), "{}", &logs[..60]);
        assert!(logs.ends_with("line 19999\n"));
    }

    #[test]
    fn logs_stay_within_budget_for_non_utf8() {
        let mut s = OutputSink::quiet(Masker::new(std::iter::empty()));
        s.write(&vec![0xff; 3 * MAX_LOGS_BYTES]);
        let logs = s.finish();
        assert!(logs.len() <= MAX_LOGS_BYTES);
        let mut s = OutputSink::quiet(Masker::new(std::iter::empty()));
        s.write(&vec![0xff; MAX_LOGS_BYTES / 2]);
        assert!(s.finish().len() <= MAX_LOGS_BYTES);
    }

    #[test]
    fn withheld_shows_nothing() {
        let mut s = OutputSink::withheld(Masker::new(std::iter::empty()), "why".into());
        s.write(b"anything");
        assert_eq!(s.finish(), "[output withheld: why]");
    }

    #[test]
    fn stderr_cap_still_keeps_logs() {
        let mut s = OutputSink::quiet(Masker::new(std::iter::empty())).with_stderr_cap(4);
        s.write(b"0123456789");
        assert_eq!(s.finish(), "0123456789");
    }

    /// Collects what the sink would have written to stderr.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    const CANARY: &[u8] = b"CANARY-7d3f0a9e51b2";

    fn capturing() -> (OutputSink, Capture) {
        let cap = Capture::default();
        (
            OutputSink::to_writer(Masker::new([CANARY]), cap.clone()),
            cap,
        )
    }

    #[test]
    fn a_value_split_between_stdout_and_stderr_is_masked_in_logs_and_on_stderr() {
        let (mut s, cap) = capturing();
        s.write(b"x CANARY-7d3f");
        s.write_stderr(b"0a9e51b2 y\n");
        let logs = s.finish();
        assert_eq!(logs, "x *** y\n");
        assert_eq!(cap.text(), logs);
    }

    /// The canary one byte per chunk: alternating streams (a split the
    /// merged view sees), and all on stdout with stderr output between its
    /// bytes (a split stdout's own view sees).
    #[test]
    fn a_value_in_one_byte_chunks_across_streams_never_shows() {
        let (mut s, cap) = capturing();
        s.write(b"a ");
        for (i, b) in CANARY.iter().enumerate() {
            if i % 2 == 0 {
                s.write(std::slice::from_ref(b));
            } else {
                s.write_stderr(std::slice::from_ref(b));
            }
        }
        s.write_stderr(b" b\n");
        let logs = s.finish();
        assert_eq!(logs, "a *** b\n");
        assert_eq!(cap.text(), logs);

        let (mut s, cap) = capturing();
        for b in CANARY {
            s.write(std::slice::from_ref(b));
            s.write_stderr(b".");
        }
        let logs = s.finish();
        assert!(!logs.contains("CANARY"), "{logs}");
        assert_eq!(logs, "***.".repeat(CANARY.len()));
        assert_eq!(cap.text(), logs);
    }

    /// `base64` output of a secret file, in random chunks split between the
    /// streams at random.
    #[test]
    fn wrapped_base64_split_between_streams_is_masked() {
        let secret: Vec<u8> = (0..90u8).map(|i| b'0' + i % 75).collect();
        let mut file = secret.clone();
        file.push(b'\n');
        let enc = base64_std(&file);
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for width in [76, 64] {
            for eol in ["\n", "\r\n"] {
                let lines: Vec<&str> = (0..enc.len())
                    .step_by(width)
                    .map(|i| &enc[i..(i + width).min(enc.len())])
                    .collect();
                let input = format!("key:{eol}{}{eol}end{eol}", lines.join(eol));
                let mut rest = input.as_bytes();
                let cap = Capture::default();
                let mut s = OutputSink::to_writer(Masker::new([&file[..]]), cap.clone());
                while !rest.is_empty() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let n = 1 + (seed % 9) as usize % rest.len();
                    if seed % 2 == 0 {
                        s.write(&rest[..n]);
                    } else {
                        s.write_stderr(&rest[..n]);
                    }
                    rest = &rest[n..];
                }
                let logs = s.finish();
                assert_eq!(logs, format!("key:{eol}***{eol}end{eol}"));
                assert_eq!(cap.text(), logs);
            }
        }
    }

    /// Standard padded base64 (the test's own, to check the masker's).
    fn base64_std(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = c.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - c.len()));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn test_base64_is_base64() {
        assert_eq!(base64_std(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_std(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_std(b"foob"), "Zm9vYg==");
    }

    /// A stream stopped in the middle of a possible occurrence does not
    /// keep the other's output from stderr for long (nor in memory).
    #[test]
    fn a_stalled_stream_does_not_hold_back_the_other() {
        let (mut s, cap) = capturing();
        s.write(b"token: CANARY-7d");
        for _ in 0..100 {
            s.write_stderr(&b"progress line\n".repeat(100));
        }
        assert!(s.total > 100_000, "{}", s.total);
        s.write(b"3f0a9e51b2\n");
        let logs = s.finish();
        let shown = cap.text();
        assert!(
            shown.starts_with("token: ***progress line\n"),
            "{}",
            &shown[..40]
        );
        assert!(shown.ends_with("progress line\n***\n"));
        assert!(!shown.contains("CANARY") && !shown.contains("9e51b2"));
        assert!(logs.ends_with("progress line\n***\n"));
    }
}

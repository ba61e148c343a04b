//! Where the container's output goes: masked, to stderr (capped), and the
//! last [`MAX_LOGS_BYTES`] of it into the result's `logs`. Nothing else
//! keeps it: not the daemon (logging driver `none`), not a file.

use crate::mask::Masker;
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
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(STDERR_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut err = std::io::stderr();
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
    /// One masker per stream: the runner's stdout and stderr are separate
    /// pipes, so a value split across two writes to one of them may have the
    /// other's output arrive between its halves.
    masker: Masker,
    err_masker: Masker,
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
        s.stderr = Some(StderrWriter::start());
        s
    }

    /// A sink that keeps output only for `logs`.
    pub fn quiet(masker: Masker) -> Self {
        OutputSink {
            err_masker: masker.clone(),
            masker,
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
        let masked = self.masker.push(chunk);
        self.emit(&masked);
    }

    /// Like [`write`](Self::write), for the runner's stderr stream.
    pub fn write_stderr(&mut self, chunk: &[u8]) {
        if self.withheld.is_some() {
            return;
        }
        let masked = self.err_masker.push(chunk);
        self.emit(&masked);
    }

    /// Flush what the masker held back and return the `logs` text.
    pub fn finish(&mut self) -> String {
        if let Some(reason) = &self.withheld {
            return format!("[output withheld: {reason}]");
        }
        let masked = self.masker.finish();
        self.emit(&masked);
        let masked = self.err_masker.finish();
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
}

//! JSON Lines: one compact object per line on stdout, flushed per record;
//! a closed stdout (`| head`) ends the tool quietly.

use crate::names::ActionId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, BufRead, Write};

/// Longest line accepted on a stream. A scan line holds one action file
/// (at most 64 KiB) plus a little; a result line holds at most 64 KiB of
/// logs, which JSON escaping can grow up to six-fold.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A line that could not be used. `id` is set when the line at least named
/// a valid action id, so the caller can still record an outcome for it
/// ([`crate::ActionResult::refused`]), with the `commit` and `blob` the line
/// names, if any, as its provenance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_no}: {message}")]
pub struct LineError {
    pub line_no: usize,
    pub id: Option<ActionId>,
    pub commit: Option<String>,
    pub blob: Option<String>,
    pub message: String,
}

impl LineError {
    /// An error about a line that names nothing usable.
    pub fn anonymous(line_no: usize, message: String) -> Self {
        Self {
            line_no,
            id: None,
            commit: None,
            blob: None,
            message,
        }
    }
}

/// Parse one line as `T`; on failure still try to recover the `id` field
/// (and with a valid id, `commit` and `blob`).
pub fn parse_line<T: DeserializeOwned>(line_no: usize, line: &str) -> Result<T, LineError> {
    serde_json::from_str(line).map_err(|e| {
        let mut err = LineError::anonymous(line_no, format!("not a valid record: {e}"));
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return err;
        };
        let field = |k: &str| v.get(k).and_then(|f| f.as_str()).map(str::to_string);
        err.id = field("id").and_then(|s| ActionId::parse(&s).ok());
        if err.id.is_some() {
            err.commit = field("commit");
            err.blob = field("blob");
        }
        err
    })
}

/// Iterate over the non-blank lines of a reader, parsed as `T`. I/O errors
/// and over-long lines are reported as `LineError`s too (with no id), and an
/// I/O error ends the iteration.
pub struct Reader<R, T> {
    input: R,
    line_no: usize,
    done: bool,
    _t: std::marker::PhantomData<T>,
}

impl<R: BufRead, T: DeserializeOwned> Reader<R, T> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            line_no: 0,
            done: false,
            _t: std::marker::PhantomData,
        }
    }
}

impl<R: BufRead, T: DeserializeOwned> Iterator for Reader<R, T> {
    type Item = Result<T, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let mut buf = Vec::new();
            let read = <&mut R as io::Read>::take(&mut self.input, MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf);
            self.line_no += 1;
            let err = |message: String, line_no| LineError::anonymous(line_no, message);
            match read {
                Ok(0) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(err(format!("cannot read input: {e}"), self.line_no)));
                }
                Ok(_) => {}
            }
            if buf.len() > MAX_LINE_BYTES {
                // Skip the rest of the over-long line before reporting it.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    match <&mut R as io::Read>::take(&mut self.input, 1 << 16)
                        .read_until(b'\n', &mut sink)
                    {
                        Ok(0) => break,
                        Ok(_) if sink.ends_with(b"\n") => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                return Some(Err(err(
                    format!("line longer than {MAX_LINE_BYTES} bytes"),
                    self.line_no,
                )));
            }
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim(),
                Err(_) => return Some(Err(err("line is not UTF-8".into(), self.line_no))),
            };
            if text.is_empty() {
                continue;
            }
            return Some(parse_line(self.line_no, text));
        }
    }
}

/// Writes records as JSON Lines, flushing after each.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Write one record. A broken pipe is returned as an error like any
    /// other; use [`is_broken_pipe`] to exit quietly on it.
    pub fn write<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

/// True when `err` (anywhere in its chain) is a closed-pipe write error.
pub fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::ScanLine;

    #[test]
    fn reads_lines_skips_blanks_and_reports_bad_ones() {
        let input = concat!(
            r#"{"id":"a","path":"p","commit":"c","error":"x"}"#,
            "\n\n   \n",
            r#"{"id":"b","path":"p"}"#,
            "\n",
            "garbage\n",
            r#"{"id":"a/b","path":"p"}"#,
        );
        let got: Vec<Result<ScanLine, LineError>> = Reader::new(input.as_bytes()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().id.as_str(), "a");
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.line_no, 4);
        assert_eq!(e.id.as_ref().map(|i| i.as_str()), Some("b"));
        assert!(e.message.contains("missing field"), "{e}");
        assert_eq!((e.commit.as_deref(), e.blob.as_deref()), (None, None));
        assert_eq!(got[2].as_ref().unwrap_err().id, None);
        assert_eq!(
            got[3].as_ref().unwrap_err().id,
            None,
            "an invalid id is not recovered"
        );
    }

    #[test]
    fn provenance_is_recovered_with_a_valid_id_only() {
        let e = parse_line::<ScanLine>(1, r#"{"id":"a","commit":"c0","blob":"b1","schema":"x"}"#)
            .unwrap_err();
        assert_eq!(
            (
                e.id.unwrap().as_str(),
                e.commit.as_deref(),
                e.blob.as_deref()
            ),
            ("a", Some("c0"), Some("b1"))
        );
        let e = parse_line::<ScanLine>(1, r#"{"id":"../a","commit":"c0"}"#).unwrap_err();
        assert_eq!((e.id, e.commit), (None, None));
    }

    #[test]
    fn overlong_and_non_utf8_lines() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(b"\xff\xfe\n");
        input.extend_from_slice(br#"{"id":"ok","path":"p","commit":"c","error":"e"}"#);
        let got: Vec<Result<ScanLine, LineError>> = Reader::new(&input[..]).collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].as_ref().unwrap_err().message.contains("longer than"));
        assert!(got[1].as_ref().unwrap_err().message.contains("UTF-8"));
        assert_eq!(got[2].as_ref().unwrap().id.as_str(), "ok");
    }

    #[test]
    fn writer_is_compact_one_per_line() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.write(&serde_json::json!({"a": [1, 2], "b": "x\ny"}))
            .unwrap();
        w.write(&serde_json::json!({"c": null})).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"a\":[1,2],\"b\":\"x\\ny\"}\n{\"c\":null}\n"
        );
    }

    #[test]
    fn broken_pipe_detection() {
        let e = io::Error::new(io::ErrorKind::BrokenPipe, "closed");
        assert!(is_broken_pipe(&e));
        let e = io::Error::other("other");
        assert!(!is_broken_pipe(&e));
    }
}

//! Supervision: pump the output, enforce the deadline, drain.

use super::docker::{kill, wait_exit, OutputStream};
use super::{Run, DRAIN_LIMIT, KILL_LIMIT};
use crate::output::OutputSink;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

/// Now plus `d`; an absurd timeout (`"timeout_s": 18446744073709551615`)
/// is a century, not an overflow.
pub(super) fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

pub(super) struct Supervised {
    pub(super) timed_out: bool,
    pub(super) logs: Option<String>,
    /// Something went wrong while waiting (e.g. the daemon went away).
    pub(super) trouble: Option<String>,
}

impl Run<'_> {
    /// Pump the output, wait for the exit or the deadline (then SIGTERM,
    /// `grace_s`, SIGKILL), and drain the output.
    pub(super) async fn supervise(
        &self,
        cid: &str,
        stream: Option<OutputStream>,
        mut sink: OutputSink,
        deadline: Instant,
    ) -> Supervised {
        let (docker, grace) = (&self.docker, self.ctx.config.grace);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let pump = tokio::spawn(async move {
            if let Some(mut stream) = stream {
                loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(LogOutput::StdErr { message })) => sink.write_stderr(&message),
                            Some(Ok(out)) => sink.write(&out.into_bytes()),
                            Some(Err(_)) | None => break,
                        },
                        _ = &mut stop_rx => break,
                    }
                }
            }
            sink
        });
        let mut timed_out = false;
        let mut trouble = None;
        tokio::select! {
            _ = wait_exit(docker, cid) => {}
            _ = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                let _ = kill(docker, cid, "SIGTERM").await;
                if tokio::time::timeout(grace, wait_exit(docker, cid)).await.is_err() {
                    let _ = kill(docker, cid, "SIGKILL").await;
                    if tokio::time::timeout(KILL_LIMIT, wait_exit(docker, cid)).await.is_err() {
                        trouble = Some("the container did not stop after SIGKILL".to_string());
                    }
                }
            }
        }
        // After the exit the stream ends by itself; bound the wait anyway (a
        // wedged daemon must not hang the dispatcher).
        let mut pump = pump;
        let sink = match tokio::time::timeout(DRAIN_LIMIT, &mut pump).await {
            Ok(joined) => joined.ok(),
            Err(_) => {
                let _ = stop_tx.send(());
                pump.await.ok()
            }
        };
        // Only now, with the container gone, flush what the masker held back
        // (this may wait a little for stderr to take the queued output).
        let logs = sink.map(|mut s| s.finish());
        Supervised {
            timed_out,
            logs,
            trouble,
        }
    }
}

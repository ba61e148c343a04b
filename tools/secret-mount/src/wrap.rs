//! Wrapper mode: `secret-mount [--names A,B] -- CMD...`.

use crate::config::WrapConfig;
use crate::dir::SecretDir;
use crate::store;
use crate::{Failure, TOOL};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use vault_core::admit::Admission;
use vault_core::jsonl::{self, MAX_LINE_BYTES};
use vault_core::result::refusal_message;
use vault_core::{report, ActionResult, Exit, ScanLine, SecretName, Status};

/// What to mount, and for whom.
struct Request {
    names: Vec<SecretName>,
    /// The scan line, when the names came from one (a refusal is then
    /// recorded as a result line).
    scan: Option<ScanLine>,
    /// The exact stdin bytes to hand CMD; `None`: CMD inherits stdin.
    stdin: Option<Vec<u8>>,
}

/// Why nothing ran; reported (and its exit code chosen) by
/// [`crate::exit_for`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// A usage error (exit 2): nothing read, nothing recorded.
    #[error("{0}")]
    Usage(String),
    /// Nothing to record it against: report only (exit 1).
    #[error("{0}")]
    Plain(String),
    /// Recorded against the scan line: report and print this result
    /// (exit 5).
    #[error("{}", .0.error.as_deref().unwrap_or_default())]
    Recorded(Box<ActionResult>),
}

impl Refusal {
    fn plain(message: impl Into<String>) -> Self {
        Refusal::Plain(message.into())
    }

    /// The refusal of a parsed scan line, or a plain one without it.
    fn of(scan: Option<&ScanLine>, status: Status, message: String, dispatcher: &str) -> Self {
        match scan {
            Some(scan) => Refusal::Recorded(Box::new(ActionResult::not_run(
                scan, status, dispatcher, &message,
            ))),
            None => Refusal::Plain(message),
        }
    }
}

const TERMINATING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

pub fn run(config: WrapConfig) -> ExitCode {
    match prepare(config) {
        Ok(prepared) => run_child(prepared),
        Err(refusal) => refuse(refusal),
    }
}

/// Everything CMD needs, ready: the sealed directory, the signals taken.
struct Prepared {
    program: OsString,
    program_args: Vec<OsString>,
    dir: SecretDir,
    /// The terminating signals and SIGCHLD, blocked; waited for.
    wait_set: SigSet,
    /// A terminating signal that came before CMD started.
    pending: SignalFd,
    /// The exact stdin bytes to hand CMD; `None`: CMD inherits stdin.
    stdin: Option<Vec<u8>>,
    /// What a late refusal (CMD cannot be started) is recorded against.
    scan: Option<ScanLine>,
    dispatcher: String,
}

/// Check the flags, read the request, decrypt and mount: all or nothing.
fn prepare(config: WrapConfig) -> Result<Prepared, Refusal> {
    let WrapConfig {
        names,
        identity,
        store: store_dir,
        runner_user,
        dispatcher_id,
        size,
        placement,
        cmd,
        runner_image,
        admission,
    } = config;
    // A configured check that cannot be applied stops everything.
    let admission = admission.map_err(Refusal::Plain)?;
    let Some(identity) = identity else {
        return Err(Refusal::Usage(
            "no identity: give --identity FILE or set VAULT_IDENTITY".into(),
        ));
    };
    let Some(store_dir) = store_dir else {
        return Err(Refusal::Usage(
            "no secret store: give --secrets DIR or set VAULT_SECRETS".into(),
        ));
    };
    let mut cmd = cmd.into_iter();
    let Some(program) = cmd.next() else {
        return Err(Refusal::Usage(
            "no command: secret-mount [OPTIONS] -- CMD [ARGS...]".into(),
        ));
    };
    let dispatcher = vault_core::DispatcherId::or_host(dispatcher_id)
        .map_err(|e| Refusal::Usage(e.to_string()))?
        .to_string();

    // Every name is validated (by clap or serde) before any file is opened.
    let request = match names {
        Some(_) if admission.configured() => {
            return Err(Refusal::Usage(
                "--names has no action to check approvals, expiry and the policy against: it cannot be used while VAULT_ALLOWED_SIGNERS, VAULT_APPROVAL_TTL_S or VAULT_POLICY is set".into(),
            ))
        }
        Some(names) => Request {
            names,
            scan: None,
            stdin: None,
        },
        None => read_request(&dispatcher, &admission, runner_image.as_deref())?,
    };
    let scan = request.scan.clone();
    let refusal =
        |status: Status, message: String| Refusal::of(scan.as_ref(), status, message, &dispatcher);

    let secrets = store::load_identity(&identity)
        .and_then(|ids| store::decrypt_all(&store_dir, &request.names, &ids, size))
        .map_err(|e| refusal(Status::Error, e.to_string()))?;

    // From here on a signal must not kill us with the secrets mounted: take
    // SIGINT/SIGTERM/SIGHUP (and SIGCHLD) synchronously. Threads spawned
    // later inherit the mask; std resets it in CMD.
    let mut term_set = SigSet::empty();
    for s in TERMINATING {
        term_set.add(s);
    }
    let mut wait_set = term_set;
    wait_set.add(Signal::SIGCHLD);
    wait_set
        .thread_block()
        .map_err(|e| refusal(Status::Error, format!("cannot block signals: {e}")))?;
    let pending = SignalFd::with_flags(&term_set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| refusal(Status::Error, format!("cannot watch signals: {e}")))?;

    let dir = crate::dir::run_dir_name(&dispatcher)
        .and_then(|name| SecretDir::create(&placement, &name, runner_user, size, &secrets));
    // The plaintext now lives in the directory only; zero our copies.
    drop(secrets);
    let dir = dir.map_err(|e| {
        refusal(
            Status::Error,
            format!("cannot create the secrets directory: {e}"),
        )
    })?;
    Ok(Prepared {
        program,
        program_args: cmd.collect(),
        dir,
        wait_set,
        pending,
        stdin: request.stdin,
        scan,
        dispatcher,
    })
}

/// Run CMD with the prepared directory, forward signals, wipe; CMD's code.
fn run_child(p: Prepared) -> ExitCode {
    let Prepared {
        program,
        program_args,
        dir,
        wait_set,
        pending,
        stdin,
        scan,
        dispatcher,
    } = p;
    if let Some(sig) = take_pending(&pending) {
        let wiped = dir.wipe();
        report(
            TOOL,
            format!("{sig} before the command started; nothing ran"),
        );
        if let Err(e) = wiped {
            report(TOOL, format!("wipe: {e}"));
        }
        return ExitCode::from(128u8.wrapping_add(sig as u8));
    }

    let mut command = Command::new(&program);
    command
        .args(&program_args)
        .env("VAULT_SECRETS_DIR", dir.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let wiped = dir.wipe();
            let code = refuse(Refusal::of(
                scan.as_ref(),
                Status::Error,
                format!("cannot run {}: {e}", program.to_string_lossy()),
                &dispatcher,
            ));
            if let Err(w) = wiped {
                report(TOOL, format!("wipe: {w}"));
            }
            return code;
        }
    };
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        // A thread, so a CMD that never reads its stdin cannot stall us; a
        // CMD that exits early makes the write fail (EPIPE), which is fine.
        std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
    }

    let pid = Pid::from_raw(child.id() as i32);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        match wait_set.wait() {
            // The child is reaped only by try_wait above, so until then its
            // pid cannot be reused: forwarding is never misdirected.
            Ok(sig) if sig != Signal::SIGCHLD => {
                let _ = kill(pid, sig);
            }
            _ => {}
        }
    };

    let wiped = dir.wipe();
    if let Err(e) = &wiped {
        report(TOOL, format!("wipe: {e}"));
    }
    match status {
        Ok(st) => {
            let code = st
                .code()
                .or_else(|| st.signal().map(|s| 128 + s))
                .unwrap_or(1);
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        Err(e) => crate::exit_for(&Failure::Wait(e)).into(),
    }
}

/// A terminating signal that arrived since the mask was set, if any.
fn take_pending(fd: &SignalFd) -> Option<Signal> {
    let mut first = None;
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            first.get_or_insert(sig);
        }
    }
    first
}

/// Read the one scan line from stdin and the secret names its action asks
/// for.
fn read_request(
    dispatcher: &str,
    admission: &Admission,
    runner_image: Option<&str>,
) -> Result<Request, Refusal> {
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_LINE_BYTES as u64 + 2)
        .read_to_end(&mut buf)
        .map_err(|e| Refusal::plain(format!("cannot read stdin: {e}")))?;
    if buf.len() > MAX_LINE_BYTES + 1 {
        return Err(Refusal::plain(format!(
            "stdin holds more than one scan line ({MAX_LINE_BYTES} bytes at most)"
        )));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| Refusal::plain("stdin is not UTF-8: want one scan line"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines[..] else {
        return Err(Refusal::plain(format!(
            "stdin must hold exactly one scan line (or use --names), found {} lines",
            lines.len()
        )));
    };
    let scan: ScanLine = match jsonl::parse_line(1, line.trim()) {
        Ok(s) => s,
        // Recorded when the line at least says which action it is, as
        // run-action records it (e.g. a bad secret name).
        Err(e) => {
            return Err(match ActionResult::refused(&e, dispatcher) {
                Some(r) => Refusal::Recorded(Box::new(r)),
                None => Refusal::Plain(refusal_message(&e)),
            })
        }
    };
    // A spent id (started or recorded before) is recorded `abandoned`, an
    // invalid action `rejected`: nothing is decrypted for either.
    if let Some((status, why)) = scan.refusal() {
        let message = format!("action {}: {why}", scan.id);
        return Err(Refusal::of(Some(&scan), status, message, dispatcher));
    }
    let names = match scan.valid_action() {
        Ok(a) => {
            // Approval, expiry and policy, before anything is decrypted (a
            // resumed run does not expire).
            let image = a.image.as_deref().or(runner_image);
            let first = !scan.resume;
            if let Err(why) = admission.check(&scan, a, image, first, vault_core::admit::now_ms()) {
                return Err(Refusal::of(Some(&scan), Status::Rejected, why, dispatcher));
            }
            a.secrets.clone()
        }
        Err(why) => return Err(Refusal::plain(format!("action {}: {why}", scan.id))),
    };
    Ok(Request {
        names,
        scan: Some(scan),
        stdin: Some(buf),
    })
}

/// Report a refusal; with a scan line, also print its result line.
fn refuse(refusal: Refusal) -> ExitCode {
    let exit = crate::exit_for(&refusal);
    let Refusal::Recorded(result) = refusal else {
        return exit.into();
    };
    match jsonl::Writer::new(io::stdout().lock()).write(&result) {
        Ok(()) => exit.into(),
        // Nobody reads the result line: it is not delivered, so this is no
        // "result printed" exit (and no message: the reader is gone).
        Err(e) if jsonl::is_broken_pipe(&e) => Exit::Failure.into(),
        Err(e) => crate::exit_for(&Failure::ResultLine(e)).into(),
    }
}

//! Running a helper program (`systemctl`, `needs-restarting`) with a bounded wait.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The most of a helper's standard output kept; the rest is read and dropped, so that a
/// talkative helper never blocks on a full pipe.
const OUTPUT_MAX: usize = 4096;

/// What a helper that finished within its time printed and how it ended.
#[derive(Debug)]
pub(super) struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// The first [`OUTPUT_MAX`] bytes of its standard output (empty unless captured).
    pub stdout: Vec<u8>,
}

/// Why a helper gave no answer.
#[derive(Debug)]
pub(super) enum RunError {
    /// It could not be started (missing, not executable, ...).
    Spawn(std::io::Error),
    /// It ran past the time allowed: it was killed.
    TimedOut(Duration),
    /// Waiting for it failed.
    Wait(std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "could not be started: {e}"),
            Self::TimedOut(limit) => write!(f, "gave no answer within {limit:?}: it was killed"),
            Self::Wait(e) => write!(f, "could not be waited for: {e}"),
        }
    }
}

/// Runs `command` with no input, waiting at most `timeout`; a helper still running then is
/// killed (`SIGKILL`) and reaped. With `capture`, its standard output is collected (by a reader
/// thread, so a grandchild that keeps the pipe open cannot hold the caller past `timeout`:
/// the thread then lingers until the pipe closes). Standard error is discarded.
pub(super) fn run_bounded(
    command: &mut Command,
    timeout: Duration,
    capture: bool,
) -> Result<Finished, RunError> {
    // A timeout too long for the clock is a year: no helper is waited for longer.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400));
    command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let output = child.stdout.take().map(|mut pipe| {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                match pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = OUTPUT_MAX.saturating_sub(kept.len());
                        kept.extend_from_slice(&buffer[..n.min(room)]);
                    }
                }
            }
            let _ = send.send(kept);
        });
        receive
    });
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::TimedOut(timeout));
            }
            Ok(None) => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
    };
    let stdout = match output {
        None => Vec::new(),
        Some(receive) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // The helper exited: its output is complete once the pipe closes.
            receive
                .recv_timeout(left.max(Duration::from_millis(100)))
                .map_err(|_| RunError::TimedOut(timeout))?
        }
    };
    Ok(Finished { status, stdout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_long_for_the_clock_does_not_panic() {
        let finished = run_bounded(&mut Command::new("true"), Duration::MAX, false);
        assert!(finished.is_ok_and(|f| f.status.success()));
    }
}

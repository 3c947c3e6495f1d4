//! A job's program as a process: its identity once launched, and whether it is still alive.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a launched program: its process id and the process's start time, so that a
/// process id the system reused for another program is not mistaken for it.
///
/// Opaque to the state machine: only equality matters. On Linux the start time is field 22 of
/// `/proc/<pid>/stat` (clock ticks since boot), as
/// [`LinuxSession::program_id`](crate::LinuxSession::program_id) reads it; on Windows, the
/// process's creation time (`GetProcessTimes`). A program identity is meaningful only in the
/// boot its attempt runs in.
///
/// ```
/// use jobstate::ProgramId;
/// let program = ProgramId::new(4242, 1_234_567);
/// assert_eq!(program.pid(), 4242);
/// assert_ne!(program, ProgramId::new(4242, 9_999_999)); // the same pid, reused: not it
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProgramId {
    pid: u32,
    start: u64,
}

impl ProgramId {
    /// The program whose process id is `pid` and whose process started at `start` (in the
    /// platform's units: clock ticks since boot on Linux).
    pub const fn new(pid: u32, start: u64) -> Self {
        Self { pid, start }
    }

    /// The process id.
    pub const fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's start time, in the platform's units.
    pub const fn start(&self) -> u64 {
        self.start
    }
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::core::id::pad_fmt(
            f,
            format_args!("pid {} (started at {})", self.pid, self.start),
        )
    }
}

/// Whether a job's program is alive, as the session reports it
/// ([`SessionContext::program_status`](crate::session::SessionContext::program_status)).
///
/// The ledger asks only about the current boot: after a reboot no program of an earlier boot
/// lives. `Unknown` never lets the ledger conclude anything: a job whose program's fate is
/// unknown waits, visibly, under its run-time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProgramStatus {
    /// The program (or, for a launch that was never recorded, a process of the attempt) is alive.
    /// A process that exited and was not yet reaped counts as alive: its exit status is still to
    /// be collected.
    Alive,
    /// No such process is alive: it ended, and its exit status was never recorded.
    Gone,
    /// The session cannot tell.
    Unknown,
}

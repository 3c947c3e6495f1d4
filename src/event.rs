//! The inputs of the state machine. Each event carries the facts it needs: the time and the boot
//! in which it was observed. The core never reads a clock or the machine.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BootId, RebootKind, Timestamp};

/// Names one attempt of a job: run `run`, attempt `number`. Attempt-scoped events carry it so
/// that a stale or replayed event (from an older attempt) is refused instead of applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The run (1-based).
    pub run: u32,
    /// The attempt within the run (1-based).
    pub number: u32,
}

impl fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {} attempt {}", self.run, self.number)
    }
}

/// Something that happened to a job, observed at `at` in boot `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it was observed (wall clock: it may jump backwards across a reboot, so no ordering
    /// or reboot decision depends on it).
    #[serde(with = "crate::time_serde::timestamp")]
    pub at: Timestamp,
    /// The boot in which it was observed.
    pub boot: BootId,
    /// When it was observed on the boot's monotonic clock (time since the boot began). Only
    /// compared within one boot: the run-time limit is measured on it.
    pub since_boot: Duration,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with the data of each kind of event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// The job was advertised again. (A new job's first advertisement creates it `Queued`.)
    Advertised,
    /// The caller is about to start the program of the queued attempt.
    AttemptStarted,
    /// The program of `attempt` exited with `code`.
    ProgramExited {
        /// The attempt whose program exited.
        attempt: AttemptRef,
        /// Its exit code.
        code: i32,
    },
    /// A shutdown notice was observed. A hint only: it may never arrive, and nothing depends on it.
    ShutdownNoticed,
    /// The agent started in `Event::boot`: recovery reconciles the job against that boot.
    AgentStarted,
    /// A restart is about to happen on behalf of `attempt`: `AwaitingReboot` must be committed
    /// before it does.
    RebootExpected {
        /// The attempt the restart belongs to.
        attempt: AttemptRef,
        /// Soft (the agent will restart) or hard (a restart is already under way).
        kind: RebootKind,
    },
    /// The verification (detection check) after a reboot returned `installed`.
    Verified {
        /// The attempt being verified.
        attempt: AttemptRef,
        /// Whether the result is there.
        installed: bool,
    },
    /// Time passed: the maximum run time is checked (on the boot's monotonic clock).
    Tick,
    /// A cancel request.
    CancelRequested,
    /// A request to run the job again (a new run).
    RerunRequested,
}

/// The name of an [`EventKind`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventName {
    /// [`EventKind::Advertised`].
    Advertised,
    /// [`EventKind::AttemptStarted`].
    AttemptStarted,
    /// [`EventKind::ProgramExited`].
    ProgramExited,
    /// [`EventKind::ShutdownNoticed`].
    ShutdownNoticed,
    /// [`EventKind::AgentStarted`].
    AgentStarted,
    /// [`EventKind::RebootExpected`].
    RebootExpected,
    /// [`EventKind::Verified`].
    Verified,
    /// [`EventKind::Tick`].
    Tick,
    /// [`EventKind::CancelRequested`].
    CancelRequested,
    /// [`EventKind::RerunRequested`].
    RerunRequested,
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding applies to the name, so `{:<16}` aligns columns.
        f.pad(&format!("{self:?}"))
    }
}

impl EventKind {
    /// The event's name.
    pub fn name(&self) -> EventName {
        match self {
            EventKind::Advertised => EventName::Advertised,
            EventKind::AttemptStarted => EventName::AttemptStarted,
            EventKind::ProgramExited { .. } => EventName::ProgramExited,
            EventKind::ShutdownNoticed => EventName::ShutdownNoticed,
            EventKind::AgentStarted => EventName::AgentStarted,
            EventKind::RebootExpected { .. } => EventName::RebootExpected,
            EventKind::Verified { .. } => EventName::Verified,
            EventKind::Tick => EventName::Tick,
            EventKind::CancelRequested => EventName::CancelRequested,
            EventKind::RerunRequested => EventName::RerunRequested,
        }
    }

    /// The attempt the event names, for attempt-scoped events.
    pub fn attempt(&self) -> Option<AttemptRef> {
        match self {
            EventKind::ProgramExited { attempt, .. }
            | EventKind::RebootExpected { attempt, .. }
            | EventKind::Verified { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }
}

//! The inputs of the state machine. Each event carries the facts it needs: the time and the boot
//! in which it was observed. The core never reads a clock or the machine.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::exit_code::ProgramExit;
use crate::core::id::{BootId, JobId};
use crate::core::program::{ProgramId, ProgramStatus};
use crate::core::state::RebootKind;

/// Names one attempt of a job: run `run`, attempt `number`. Attempt-scoped events carry it so
/// that a stale or replayed event (from an older attempt) is refused instead of applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The run (1-based).
    pub run: u32,
    /// The attempt within the run (1-based).
    pub number: u32,
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::core::id::pad_fmt(f, format_args!("run {} attempt {}", self.run, self.number))
    }
}

/// Something that happened to a job, observed at `at` in boot `boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it was observed (wall clock: it may jump backwards across a reboot, so no ordering
    /// or reboot decision depends on it).
    #[serde(with = "crate::core::time_serde::timestamp")]
    pub at: Timestamp,
    /// The boot in which it was observed.
    pub boot: BootId,
    /// When it was observed on the boot's monotonic clock (time since the boot began). Only
    /// compared within one boot: the run-time limit is measured on it.
    pub since_boot: Duration,
    /// What happened.
    pub kind: EventKind,
}

/// What a detection check said about an attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckResult {
    /// The result is there.
    Installed,
    /// The result is not there.
    NotInstalled,
    /// Not yet: another restart is needed to finish (an upgrade that restarts several times).
    NotYet,
}

impl From<bool> for CheckResult {
    /// `true` is [`CheckResult::Installed`], `false` [`CheckResult::NotInstalled`].
    fn from(installed: bool) -> Self {
        if installed {
            CheckResult::Installed
        } else {
            CheckResult::NotInstalled
        }
    }
}

/// What happened, with the data of each kind of event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// The job was offered again. (A new job's first offer creates it `Queued`.)
    ///
    /// Stored and serialized under its former name, `Advertised`: the journal's bytes and the
    /// JSON form are those of format 2.
    #[doc(alias = "advertise", alias = "Advertised")]
    #[serde(rename = "Advertised")]
    Offered,
    /// The job was offered again with a changed spec, which the change carrying this event
    /// records (its state is unchanged). An attempt under way finishes under the spec it
    /// started with; the next attempt, retry or rerun runs under the new one.
    SpecChanged,
    /// The caller is about to start the program of the queued attempt: `Running` is the intent
    /// to launch.
    AttemptStarted,
    /// The program of `attempt` was started, as `program`: the fact that it runs.
    Launched {
        /// The attempt whose program started.
        attempt: AttemptRef,
        /// The program's identity.
        program: ProgramId,
    },
    /// The program of `attempt` could not be started.
    LaunchFailed {
        /// The attempt.
        attempt: AttemptRef,
    },
    /// The program of `attempt` ended: with an exit code, or by a signal.
    ProgramExited {
        /// The attempt whose program exited.
        attempt: AttemptRef,
        /// How it ended.
        exit: ProgramExit,
        /// Whether the operating system said a restart is pending when the exit was recorded
        /// (it matters to a job that [restarts when pending](crate::JobSpec::with_restart_when_pending)).
        restart_pending: bool,
    },
    /// The program of `attempt` is gone without an exit status (the agent that started it died,
    /// or it was killed).
    ProgramLost {
        /// The attempt.
        attempt: AttemptRef,
    },
    /// A shutdown notice was observed. A hint only: it may never arrive, and nothing depends on it.
    ShutdownNoticed,
    /// The agent started in `Event::boot`: recovery reconciles the job against that boot.
    AgentStarted {
        /// Whether the job's program is alive, for a job running in this same boot (the
        /// session's answer; `Unknown` for other jobs).
        program: ProgramStatus,
        /// If the machine restarted since, the job whose restart it was (another job's requested
        /// restart, or a program declared to restart the machine): a reboot that ends this job's
        /// attempt is attributed to it.
        restart_of: Option<JobId>,
    },
    /// A restart is about to happen on behalf of `attempt`: `AwaitingReboot` must be committed
    /// before it does.
    RebootExpected {
        /// The attempt the restart belongs to.
        attempt: AttemptRef,
        /// Soft (the agent will restart) or hard (a restart is already under way).
        kind: RebootKind,
    },
    /// The verification (detection check) of `attempt` said `result`.
    Verified {
        /// The attempt being verified.
        attempt: AttemptRef,
        /// What the check said.
        result: CheckResult,
    },
    /// Time passed: run-time limits, grace windows and restart deadlines are checked (on the
    /// boot's monotonic clock).
    Tick {
        /// Whether the job's program is alive (the session's answer; `Unknown` for jobs that
        /// are not running).
        program: ProgramStatus,
    },
    /// A cancel request.
    CancelRequested,
    /// A request to run the job again (a new run).
    RerunRequested,
    /// An operator's request to end a job that is not completed: it fails, as abandoned.
    AbandonRequested,
}

/// The name of an [`EventKind`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventName {
    /// [`EventKind::Offered`]. (Never stored, so serialized as `Offered`, as it is displayed;
    /// the stored event keeps its name `Advertised`.)
    #[doc(alias = "advertise", alias = "Advertised")]
    Offered,
    /// [`EventKind::SpecChanged`].
    SpecChanged,
    /// [`EventKind::AttemptStarted`].
    AttemptStarted,
    /// [`EventKind::Launched`].
    Launched,
    /// [`EventKind::LaunchFailed`].
    LaunchFailed,
    /// [`EventKind::ProgramExited`].
    ProgramExited,
    /// [`EventKind::ProgramLost`].
    ProgramLost,
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
    /// [`EventKind::AbandonRequested`].
    AbandonRequested,
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
            EventKind::Offered => EventName::Offered,
            EventKind::SpecChanged => EventName::SpecChanged,
            EventKind::AttemptStarted => EventName::AttemptStarted,
            EventKind::Launched { .. } => EventName::Launched,
            EventKind::LaunchFailed { .. } => EventName::LaunchFailed,
            EventKind::ProgramExited { .. } => EventName::ProgramExited,
            EventKind::ProgramLost { .. } => EventName::ProgramLost,
            EventKind::ShutdownNoticed => EventName::ShutdownNoticed,
            EventKind::AgentStarted { .. } => EventName::AgentStarted,
            EventKind::RebootExpected { .. } => EventName::RebootExpected,
            EventKind::Verified { .. } => EventName::Verified,
            EventKind::Tick { .. } => EventName::Tick,
            EventKind::CancelRequested => EventName::CancelRequested,
            EventKind::RerunRequested => EventName::RerunRequested,
            EventKind::AbandonRequested => EventName::AbandonRequested,
        }
    }

    /// The attempt the event names, for attempt-scoped events.
    pub fn attempt(&self) -> Option<AttemptRef> {
        match self {
            EventKind::Launched { attempt, .. }
            | EventKind::LaunchFailed { attempt }
            | EventKind::ProgramExited { attempt, .. }
            | EventKind::ProgramLost { attempt }
            | EventKind::RebootExpected { attempt, .. }
            | EventKind::Verified { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// An agent start with nothing known of programs or of the reboot's owner.
    pub const fn agent_started() -> Self {
        EventKind::AgentStarted {
            program: ProgramStatus::Unknown,
            restart_of: None,
        }
    }

    /// A tick with nothing known of programs.
    pub const fn tick() -> Self {
        EventKind::Tick {
            program: ProgramStatus::Unknown,
        }
    }
}

//! The five states of a job and the data recovery needs in each.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::exit_code::ProgramExit;
use crate::core::id::{BootId, JobId};
use crate::core::program::ProgramId;

/// One attempt: the `number`-th execution of the program within run `run` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The run (1-based): a rerun request starts a new run.
    pub run: u32,
    /// The attempt within the run (1-based): a retry starts a new attempt.
    pub number: u32,
    /// The boot in which the attempt started. Reboot decisions compare boots, never clocks.
    pub boot: BootId,
    /// When the attempt started (wall clock: for people and back-off only).
    #[serde(with = "crate::core::time_serde::timestamp")]
    pub started_at: Timestamp,
    /// When the attempt started on the boot's monotonic clock: the run-time limit is measured
    /// on it, within this boot, so that a wall clock that jumps cannot end an attempt early or
    /// never.
    pub started_since_boot: Duration,
}

/// The kind of restart a job asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RebootKind {
    /// "Restart required" (3010): the agent must restart the machine.
    Soft,
    /// "Restart initiated" (1641): the restart is already under way.
    Hard,
}

/// Who a reboot that the ledger observed is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RebootAttribution {
    /// The job asked for it (soft or hard) and `AwaitingReboot` was committed first.
    RequestedByJob(RebootKind),
    /// The job's program restarted the machine itself (a job declared
    /// [`RebootBehaviour::RestartsMachine`](crate::RebootBehaviour::RestartsMachine)), after its
    /// launch was recorded.
    InitiatedByProgram,
    /// The restart of another job (which asked for it, or whose program restarts the machine)
    /// ended this job's attempt.
    ForJob(JobId),
    /// Nobody asked for it: the machine restarted while a job that never reboots was running.
    Unrelated,
}

/// Why an attempt or a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailureReason {
    /// The program exited with a code that the exit-code policy maps to failure (or to "retry
    /// later" once no attempts are left).
    ExitCode(i32),
    /// A signal ended the program (Unix).
    Signal(i32),
    /// The attempt ran longer than the job's maximum run time.
    TimedOut,
    /// A reboot interrupted a job that does not restart the machine.
    Interrupted(RebootAttribution),
    /// After the reboot, the verification (detection check) said the result is not there.
    NotDetected,
    /// The attempt saw this many reboots without a successful verification, and another restart
    /// was asked for: the reboot-loop bound stopped it.
    RebootLoop {
        /// Reboots observed in the attempt.
        boots: u32,
    },
    /// A cancel request ended the run before it started.
    Cancelled,
    /// The program is gone and its exit status was never recorded (it died with the agent, or
    /// was killed): the attempt ended without a result.
    ProgramLost,
    /// The program could not be started (the agent said so: a missing executable, a refused
    /// `exec`).
    LaunchFailed,
    /// An operator abandoned the job.
    Abandoned,
}

impl FailureReason {
    /// The failure of an attempt whose program ended with `exit`.
    pub(crate) fn of_exit(exit: ProgramExit) -> Self {
        match exit {
            ProgramExit::Code(code) => FailureReason::ExitCode(code),
            ProgramExit::Signal(signal) => FailureReason::Signal(signal),
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::ExitCode(code) => write!(f, "the program exited with code {code}"),
            FailureReason::Signal(signal) => write!(f, "a signal ended the program ({signal})"),
            FailureReason::TimedOut => f.write_str("the attempt exceeded its maximum run time"),
            FailureReason::Interrupted(RebootAttribution::ForJob(job)) => {
                write!(f, "the restart of job {job} interrupted the attempt")
            }
            FailureReason::Interrupted(_) => f.write_str("a reboot interrupted the attempt"),
            FailureReason::NotDetected => {
                f.write_str("the verification after the reboot did not find the result")
            }
            FailureReason::RebootLoop { boots } => write!(
                f,
                "{boots} reboots without a successful verification: refusing yet another restart"
            ),
            FailureReason::Cancelled => f.write_str("cancelled on request"),
            FailureReason::ProgramLost => f.write_str(
                "the program is gone and its exit status was never recorded (it died with the agent, or was killed)",
            ),
            FailureReason::LaunchFailed => f.write_str("the program could not be started"),
            FailureReason::Abandoned => f.write_str("abandoned by an operator"),
        }
    }
}

/// Whether the launch of a running attempt's program is a recorded fact.
///
/// `Running` is committed *before* the program starts (the intent to launch); the launch is
/// committed after it started. A launch never recorded is a program that never ran: no reboot
/// completes its job, and it is launched again as the same attempt when the job may start
/// ([semantics](crate::semantics), "What the agent may never hear").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Launch {
    /// `Running` is committed; the launch is not recorded (yet).
    Pending,
    /// The program was launched, with this identity.
    Recorded(ProgramId),
    /// The launch was not recorded, but there is evidence that the program ran: its exit
    /// arrived, or a process of the attempt was seen alive after an agent restart.
    Observed,
}

impl Launch {
    /// Whether there is evidence that the program ran.
    pub fn happened(&self) -> bool {
        !matches!(self, Launch::Pending)
    }

    /// The recorded program identity, if any.
    pub fn program(&self) -> Option<&ProgramId> {
        match self {
            Launch::Recorded(program) => Some(program),
            _ => None,
        }
    }
}

/// A failing exit of a program declared to restart the machine, or its disappearance, held as
/// provisional: seed 001's wrapper reported failure because it never heard the shutdown that was
/// under way, and a program the agent no longer parents is seen only as gone when it restarts the
/// machine. A reboot within the job's grace window is the program's expected end; a window that
/// closes in the same boot lets the failure stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionalFailure {
    /// How the program ended, or `None` for a program that is gone without an exit status.
    pub exit: Option<ProgramExit>,
    /// When the exit was recorded, on the boot's monotonic clock (the window is measured on it).
    pub since_boot: Duration,
}

/// A termination of the attempt's program, licensed when it passed its maximum run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// When it was licensed (wall clock: for people).
    #[serde(with = "crate::core::time_serde::timestamp")]
    pub at: Timestamp,
    /// When it was licensed, on the boot's monotonic clock: the grace period is measured on it.
    pub since_boot: Duration,
    /// Whether the program, still alive after the grace period, was reported unresponsive.
    pub unresponsive: bool,
}

/// The state of one job. `Completed` and `Failed` are terminal for one run; a completed
/// *mandatory* job is terminal forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting to start attempt `attempt` of run `run`.
    Queued {
        /// The run the next attempt belongs to.
        run: u32,
        /// The number of the next attempt.
        attempt: u32,
        /// Not before this time (back-off after a failure), if set.
        #[serde(with = "crate::core::time_serde::option")]
        not_before: Option<Timestamp>,
        /// Why the previous attempt of this run failed, if one did.
        last_failure: Option<FailureReason>,
        /// The previous attempt of this run, if one started.
        previous: Option<Attempt>,
        /// For a job with a detection check: the previous attempt's result must be checked
        /// before another attempt starts (or the run fails, when no attempts are left). A
        /// wrapper may report failure while the work is done (seed 001); the check, not the
        /// report, decides.
        check_before_retry: bool,
    },
    /// The program of `attempt` is about to start, runs, or ended and its end is not yet decided.
    Running {
        /// The attempt, with the boot it started in.
        attempt: Attempt,
        /// Whether the launch is a recorded fact.
        launch: Launch,
        /// When a shutdown notice was seen during the attempt: a hint, never relied on.
        #[serde(with = "crate::core::time_serde::option")]
        shutdown_notice_at: Option<Timestamp>,
        /// The termination licensed when the attempt passed its maximum run time. The attempt
        /// ends when the program's exit is recorded, or it is known gone, so that no next
        /// attempt starts while it may still run.
        terminate: Option<Termination>,
        /// A failing exit of a program that restarts the machine, within its grace window.
        provisional: Option<ProvisionalFailure>,
    },
    /// A restart is expected; the job finishes when a later boot is observed.
    AwaitingReboot {
        /// The attempt that asked for (or caused) the restart.
        attempt: Attempt,
        /// Who the restart is attributed to.
        cause: RebootAttribution,
        /// The boot in which the wait began.
        requested_in: BootId,
        /// When the wait began (wall clock).
        #[serde(with = "crate::core::time_serde::timestamp")]
        since: Timestamp,
        /// When the wait began on the monotonic clock of `requested_in`: the restart deadline is
        /// measured on it.
        since_boot: Duration,
        /// Which wait for a reboot this is in the attempt (1-based): each has its own status
        /// message.
        wait: u32,
        /// How many times this wait was reported overdue (the restart did not come by its
        /// deadline).
        overdue: u32,
        /// The program's exit code, if it exited before the restart.
        exit: Option<ProgramExit>,
        /// Reboots observed so far in this attempt.
        reboots_seen: u32,
        /// `Some(boot)` once the reboot was observed in `boot` and the verification is awaited.
        verifying_in: Option<BootId>,
    },
    /// The run finished successfully.
    Completed {
        /// The attempt that succeeded.
        attempt: Attempt,
        /// When the completion was recorded.
        #[serde(with = "crate::core::time_serde::timestamp")]
        at: Timestamp,
        /// The program's exit code, if it was seen.
        exit: Option<ProgramExit>,
        /// The reboot the completion went through, if any.
        reboot: Option<RebootAttribution>,
        /// Whether a verification confirmed the result.
        verified: bool,
        /// The program asked for a restart that a job declared as never rebooting did not get.
        restart_suppressed: bool,
    },
    /// The run failed.
    Failed {
        /// The run that failed.
        run: u32,
        /// The last attempt that started, if any did.
        attempt: Option<Attempt>,
        /// When the failure was recorded.
        #[serde(with = "crate::core::time_serde::timestamp")]
        at: Timestamp,
        /// Why.
        reason: FailureReason,
    },
}

/// The name of a [`JobState`] without its data, for messages and matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKind {
    /// [`JobState::Queued`].
    Queued,
    /// [`JobState::Running`].
    Running,
    /// [`JobState::AwaitingReboot`].
    AwaitingReboot,
    /// [`JobState::Completed`].
    Completed,
    /// [`JobState::Failed`].
    Failed,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            StateKind::Queued => "Queued",
            StateKind::Running => "Running",
            StateKind::AwaitingReboot => "AwaitingReboot",
            StateKind::Completed => "Completed",
            StateKind::Failed => "Failed",
        })
    }
}

impl JobState {
    /// The first state of a newly offered job.
    pub const fn initial() -> Self {
        JobState::Queued {
            run: 1,
            attempt: 1,
            not_before: None,
            last_failure: None,
            previous: None,
            check_before_retry: false,
        }
    }

    /// The state's name.
    pub fn kind(&self) -> StateKind {
        match self {
            JobState::Queued { .. } => StateKind::Queued,
            JobState::Running { .. } => StateKind::Running,
            JobState::AwaitingReboot { .. } => StateKind::AwaitingReboot,
            JobState::Completed { .. } => StateKind::Completed,
            JobState::Failed { .. } => StateKind::Failed,
        }
    }

    /// Whether the run is over (`Completed` or `Failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Completed { .. } | JobState::Failed { .. })
    }

    /// The attempt in progress, or the last one of the run, if one started.
    pub fn attempt(&self) -> Option<&Attempt> {
        match self {
            JobState::Queued { previous, .. } => previous.as_ref(),
            JobState::Running { attempt, .. }
            | JobState::AwaitingReboot { attempt, .. }
            | JobState::Completed { attempt, .. } => Some(attempt),
            JobState::Failed { attempt, .. } => attempt.as_ref(),
        }
    }

    /// The run this state belongs to.
    pub fn run(&self) -> u32 {
        match self {
            JobState::Queued { run, .. } | JobState::Failed { run, .. } => *run,
            JobState::Running { attempt, .. }
            | JobState::AwaitingReboot { attempt, .. }
            | JobState::Completed { attempt, .. } => attempt.run,
        }
    }
}

//! The ledger's error type.

use std::fmt;

use crate::core::Timestamp;
use crate::core::exit_code::ProgramExit;
use crate::core::id::JobId;
use crate::core::restart_policy::RestartHold;
use crate::core::state::RebootKind;
use crate::core::transition::TransitionError;
use crate::session::SessionError;
use crate::store::StoreError;

/// What an unfinished job waits for: why a queued job cannot start now
/// ([`Ledger::next_runnable`](crate::Ledger::next_runnable)), or what a running job or a job
/// awaiting a reboot needs next ([`Ledger::waits`](crate::Ledger::waits)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// The job runs only with a user logged on, and nobody is.
    NeedsUser,
    /// The job runs only without a user logged on, and someone is.
    NeedsNoUser,
    /// The job needs a user, or needs none, and who is logged on is unknown.
    UserPresenceUnknown,
    /// The job's detection check must say whether the failed attempt's result is there before
    /// another attempt starts: run it and pass the result to
    /// [`Ledger::verification`](crate::Ledger::verification).
    CheckPending,
    /// The job is backing off after a failed attempt.
    BackingOff {
        /// Not before this time.
        until: Timestamp,
    },
    /// Restarts are exclusive: `job` runs and one of the two may restart the machine.
    Exclusive {
        /// The running job.
        job: JobId,
    },
    /// `job` waits for a restart: nothing starts until it came.
    RestartPending {
        /// The job whose restart is owed.
        job: JobId,
    },
    /// The operating system says a restart is pending, and the job must not start before it
    /// ([`JobSpec::with_wait_for_pending_restart`](crate::JobSpec::with_wait_for_pending_restart)).
    SystemRestartPending,
    /// The job's program runs, under its run-time limit.
    ProgramRunning,
    /// `Running` is committed but the launch was never recorded, and whether a process of the
    /// attempt is alive is unknown: record the launch, or its failure, or the program's end.
    LaunchUnconfirmed,
    /// A program that restarts the machine exited with a failing code, or is gone: a reboot
    /// within the grace window is its expected end; when the window closes, the failure stands.
    FailureProvisional {
        /// How the program ended, or `None` for a program gone without an exit status.
        exit: Option<ProgramExit>,
    },
    /// The program passed its maximum run time and is to be terminated.
    Terminating,
    /// The program is still alive after its termination's grace period; it was reported. The
    /// job waits until it is gone; an operator may abandon it.
    Unresponsive,
    /// A restart is owed (soft: the agent restarts the machine; hard: it is under way).
    Restart {
        /// The kind asked for.
        kind: RebootKind,
        /// How many times it was reported overdue.
        overdue: u32,
    },
    /// The job's restart is held while `job` runs: a restart is never licensed under another
    /// job's program.
    RestartHeld {
        /// The running job.
        job: JobId,
    },
    /// The job's restart is held by its restart policy.
    RestartDeferred {
        /// Why.
        hold: RestartHold,
    },
    /// After the reboot, the job's detection check is awaited: run it and pass the result to
    /// [`Ledger::verification`](crate::Ledger::verification).
    Verification,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NeedsUser => f.write_str("it runs only while a user is logged on, and none is"),
            WaitReason::NeedsNoUser => {
                f.write_str("it runs only while no user is logged on, and one is")
            }
            WaitReason::UserPresenceUnknown => f.write_str(
                "its run condition depends on a logged-on user, and whether one is logged on is unknown",
            ),
            WaitReason::CheckPending => f.write_str(
                "its detection check must first say whether the failed attempt's result is there",
            ),
            WaitReason::BackingOff { until } => {
                write!(f, "it is backing off after a failed attempt until {until}")
            }
            WaitReason::Exclusive { job } => write!(
                f,
                "job {job} runs, and a job that may restart the machine runs alone"
            ),
            WaitReason::RestartPending { job } => {
                write!(f, "job {job} waits for a restart, and nothing starts before it")
            }
            WaitReason::SystemRestartPending => f.write_str(
                "the operating system says a restart is pending, and this job does not start before it",
            ),
            WaitReason::RestartDeferred { hold } => {
                write!(f, "its restart is held by its restart policy: {hold}")
            }
            WaitReason::ProgramRunning => f.write_str("its program runs"),
            WaitReason::LaunchUnconfirmed => f.write_str(
                "its launch was never recorded and whether its program runs is unknown",
            ),
            WaitReason::FailureProvisional { exit: Some(exit) } => write!(
                f,
                "its program ended with {exit} and may be restarting the machine: the failure stands if no reboot comes within the grace window"
            ),
            WaitReason::FailureProvisional { exit: None } => f.write_str(
                "its program is gone and may be restarting the machine: the attempt fails if no reboot comes within the grace window",
            ),
            WaitReason::Terminating => {
                f.write_str("its program passed its maximum run time and is being terminated")
            }
            WaitReason::Unresponsive => f.write_str(
                "its program is still alive after its termination (reported); an operator may abandon the job",
            ),
            WaitReason::Restart {
                kind: RebootKind::Soft,
                overdue,
            } => write!(
                f,
                "it waits for the restart the agent must perform (reported overdue {overdue} times)"
            ),
            WaitReason::Restart {
                kind: RebootKind::Hard,
                overdue,
            } => write!(
                f,
                "it waits for a restart under way (reported overdue {overdue} times)"
            ),
            WaitReason::RestartHeld { job } => {
                write!(f, "its restart is held until job {job} ends")
            }
            WaitReason::Verification => {
                f.write_str("its detection check after the reboot is awaited")
            }
        }
    }
}

/// Why a ledger operation failed. The ledger is as it was and hands out no effect; reopen it
/// after [`StoreError::Conflict`] or a store failure. (After a failed write or sync the store
/// cannot say whether the commit reached the disk: a reopened ledger may show it.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job with this id is known.
    #[error("no job with id {0} is known: offer it first")]
    UnknownJob(JobId),
    /// The state machine refused the event.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The job is queued but may not start now; or a rerun was asked for while the restart its
    /// abandoned attempt owed may still come (`reason`: [`WaitReason::RestartPending`] naming
    /// the job itself).
    #[error("job {job} cannot start now: {reason}; ask again later (next_runnable says when)")]
    NotRunnable {
        /// The job.
        job: JobId,
        /// Why it waits.
        reason: WaitReason,
    },
    /// A rerun was asked for while the program of the job's abandoned attempt still runs (or,
    /// when the session cannot tell, outlived its termination and was never seen gone): a
    /// second attempt never starts beside it.
    #[error(
        "job {job}: the program of its abandoned {attempt} is still running (or the session cannot tell whether the program that outlived its termination went); terminate it, then ask again, or restart the machine"
    )]
    ProgramStillRunning {
        /// The job.
        job: JobId,
        /// The abandoned attempt.
        attempt: crate::core::event::AttemptRef,
    },
    /// A dead letter was to be re-queued or discarded, and no dead letter has this key.
    #[error(
        "status message {0} is not a dead letter (it is pending, delivered, or unknown); Ledger::dead_letters lists them"
    )]
    NotADeadLetter(crate::core::effect::StatusKey),
    /// The store failed or refused the commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A session fact could not be read.
    #[error(transparent)]
    Session(#[from] SessionError),
}

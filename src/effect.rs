//! The outputs of the state machine: what the caller must do after a transition is committed.

use serde::{Deserialize, Serialize};

use crate::{
    AttemptRef, BootId, FailureReason, JobId, RebootAttribution, RebootKind, StateKind, Timestamp,
};

/// Names an attempt of a specific job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    /// The job.
    pub job: JobId,
    /// The run and attempt.
    pub attempt: AttemptRef,
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.job, self.attempt)
    }
}

impl std::fmt::Display for StatusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/run {}/attempt {}/{}",
            self.job, self.run, self.attempt, self.state
        )
    }
}

/// Something the caller must carry out. An effect is licensed by the transition that produced
/// it, which is already durable when the caller sees it; after a crash, recovery licenses again
/// the effects that may have been lost (a restart still owed, a verification still awaited).
///
/// Status messages are not effects: they are committed to the outbox with the transition and
/// delivered by [`Ledger::deliver`](crate::Ledger::deliver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Effect {
    /// Start the program of this attempt now. `Running` is already committed.
    Launch(AttemptId),
    /// Stop the program of this attempt (it exceeded its maximum run time). Do this before any
    /// later attempt of the job is started.
    Terminate(AttemptId),
    /// Restart the machine (when the agent's policy allows). `AwaitingReboot` is already committed.
    ScheduleRestart {
        /// The job that needs the restart.
        job: JobId,
        /// Soft: the agent performs it.
        kind: RebootKind,
    },
    /// Run the job's verification (detection check) and hand its result to the ledger.
    Verify(AttemptId),
}

/// The idempotency key of a status message: a receiver that sees the same key twice drops the
/// second copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatusKey {
    /// The job.
    pub job: JobId,
    /// The run.
    pub run: u32,
    /// The attempt (0 when the run ended before any attempt started, as a cancel does).
    pub attempt: u32,
    /// The state reported.
    pub state: StateKind,
}

/// A status message for the site server: produced by every terminal transition and every entry
/// into `AwaitingReboot`, committed in the same commit as the transition, and delivered at least
/// once from the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Job, run, attempt and state: unique per message.
    pub key: StatusKey,
    /// The program's exit code, if one was seen.
    pub exit_code: Option<i32>,
    /// Why the job failed, for `Failed`.
    pub reason: Option<FailureReason>,
    /// The reboot involved, if any.
    pub reboot: Option<RebootAttribution>,
    /// When the attempt started (wall clock), if one did.
    #[serde(with = "crate::time_serde::option")]
    pub started_at: Option<Timestamp>,
    /// The boot in which the attempt started, if one did. It differs from `boot` when the job
    /// finished across a reboot.
    pub started_in: Option<BootId>,
    /// The boot in which the transition was observed.
    pub boot: BootId,
    /// When the transition was observed.
    #[serde(with = "crate::time_serde::timestamp")]
    pub at: Timestamp,
}

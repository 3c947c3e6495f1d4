//! The outputs of the state machine: what the caller must do after a transition is committed.

use serde::{Deserialize, Serialize};

use crate::{
    AttemptRef, BootId, FailureReason, JobId, ProgramExit, RebootAttribution, RebootKind,
    RestartRelease, StateKind, Timestamp,
};

/// Names an attempt of a specific job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    /// The job.
    pub job: JobId,
    /// The run and attempt.
    pub attempt: AttemptRef,
}

impl AttemptId {
    /// The value of [`ATTEMPT_ENV`](crate::ATTEMPT_ENV) for this attempt's program: the job id,
    /// the run and the attempt number, unambiguous whatever the job id holds.
    ///
    /// ```
    /// use jobstate::{AttemptId, AttemptRef, JobId};
    /// let attempt = AttemptId {
    ///     job: JobId::new("os upgrade").unwrap(),
    ///     attempt: AttemptRef { run: 2, number: 1 },
    /// };
    /// assert_eq!(attempt.env_value(), "2.1:os upgrade");
    /// ```
    pub fn env_value(&self) -> String {
        format!("{}.{}:{}", self.attempt.run, self.attempt.number, self.job)
    }
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::id::pad_fmt(f, format_args!("{} {}", self.job, self.attempt))
    }
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl std::fmt::Display for StatusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wait = WaitSuffix("/wait ", self.wait);
        let overdue = WaitSuffix("/overdue ", self.overdue);
        crate::id::pad_fmt(
            f,
            format_args!(
                "{}/run {}/attempt {}/{}{wait}{overdue}",
                self.job, self.run, self.attempt, self.state
            ),
        )
    }
}

/// `label` and `n`, or nothing when `n` is 0.
struct WaitSuffix(&'static str, u32);

impl std::fmt::Display for WaitSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.1 > 0 {
            write!(f, "{}{}", self.0, self.1)?;
        }
        Ok(())
    }
}

/// Something the caller must carry out. An effect is licensed by the transition that produced
/// it, which is already durable when the caller sees it; after a crash, recovery licenses again
/// the effects that may have been lost (a restart still owed, a verification still awaited).
///
/// Status messages are not effects: they are committed to the outbox with the transition and
/// delivered by [`Ledger::deliver`](crate::Ledger::deliver).
///
/// The enum is exhaustive on purpose: an effect an agent does not carry out is a lost launch,
/// restart or check, so a new kind of effect is a breaking change that makes the compiler point
/// at every agent's `match`. Match every variant; do not add a `_ =>` arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Start the program of this attempt now, then record its launch
    /// ([`Ledger::launched`](crate::Ledger::launched)). `Running` is already committed.
    /// [`Ledger::begin`] hands out the attempt directly; [`Ledger::open`] returns this effect
    /// for an attempt whose launch was never recorded and whose program is known not to run
    /// (it is launched again as the same attempt).
    ///
    /// [`Ledger::begin`]: crate::Ledger::begin
    /// [`Ledger::open`]: crate::Ledger::open
    Launch(AttemptId),
    /// Stop the program of this attempt (it exceeded its maximum run time, or its job was
    /// abandoned). Do this before any later attempt of the job is started.
    Terminate(AttemptId),
    /// Restart the machine now: `AwaitingReboot` is already committed, no other job runs, and
    /// the job's [restart policy](crate::RestartPolicy) allows it.
    ScheduleRestart {
        /// The job that needs the restart.
        job: JobId,
        /// Soft ("restart required"): the agent performs it. Hard ("restart initiated"): it is
        /// already under way; the agent makes sure it happens.
        kind: RebootKind,
        /// Why now: the rule of the restart policy that licensed it.
        when: RestartRelease,
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
    /// For a message about a wait for a reboot (`AwaitingReboot`): which wait of the attempt
    /// (1-based; an upgrade that restarts several times waits several times). 0 otherwise.
    /// (Absent in JSON written before it existed: 0.)
    #[serde(default)]
    pub wait: u32,
    /// 0 for the message of a state itself; `n` for the `n`-th report that something this
    /// state waits for is overdue: a restart that did not come by its deadline
    /// (`AwaitingReboot`), a program still alive after its termination's grace period
    /// (`Running`). Such reports are not terminal. (Absent in JSON written before it existed: 0.)
    #[serde(default)]
    pub overdue: u32,
}

/// A status message for the site server: produced by every terminal transition, every wait for a
/// reboot, every overdue restart and every program that outlives its termination, committed in
/// the same commit as the transition, and delivered at least once from the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Job, run, attempt and state: unique per message.
    pub key: StatusKey,
    /// The program's exit code, if one was seen.
    pub exit: Option<ProgramExit>,
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

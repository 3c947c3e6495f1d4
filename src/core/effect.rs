//! The outputs of the state machine: what the caller must do after a transition is committed.

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::event::AttemptRef;
use crate::core::exit_code::ProgramExit;
use crate::core::id::{BootId, JobId};
use crate::core::restart_policy::RestartRelease;
use crate::core::state::{FailureReason, RebootAttribution, RebootKind, StateKind};

/// Names an attempt of a specific job: the job, its run, and the attempt's number within the
/// run (`attempt.job`, `attempt.run`, `attempt.number`). Within one job an attempt is named by
/// an [`AttemptRef`] (the run and the number): [`AttemptId::attempt_ref`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "AttemptIdForm", into = "AttemptIdForm")]
pub struct AttemptId {
    /// The job.
    pub job: JobId,
    /// The run (1-based).
    pub run: u32,
    /// The attempt within the run (1-based).
    pub number: u32,
}

/// The serde form of an [`AttemptId`]: the job and its [`AttemptRef`] nested, as before the
/// fields were flattened, so that serialized effects keep their shape.
#[derive(Clone, Serialize, Deserialize)]
struct AttemptIdForm {
    job: JobId,
    attempt: AttemptRef,
}

impl From<AttemptIdForm> for AttemptId {
    fn from(form: AttemptIdForm) -> Self {
        AttemptId::new(form.job, form.attempt)
    }
}

impl From<AttemptId> for AttemptIdForm {
    fn from(id: AttemptId) -> Self {
        AttemptIdForm {
            attempt: id.attempt_ref(),
            job: id.job,
        }
    }
}

impl AttemptId {
    /// The attempt `attempt` of `job`.
    pub fn new(job: JobId, attempt: AttemptRef) -> Self {
        AttemptId {
            job,
            run: attempt.run,
            number: attempt.number,
        }
    }

    /// The run and the number, which name the attempt within its job (as events do).
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            run: self.run,
            number: self.number,
        }
    }

    /// The value of [`ATTEMPT_ENV`](crate::session::ATTEMPT_ENV) for this attempt's program: the job id,
    /// the run and the attempt number, unambiguous whatever the job id holds.
    ///
    /// ```
    /// use jobstate::{AttemptId, JobId};
    /// let attempt = AttemptId {
    ///     job: JobId::new("os upgrade").unwrap(),
    ///     run: 2,
    ///     number: 1,
    /// };
    /// assert_eq!(attempt.env_value(), "2.1:os upgrade");
    /// ```
    pub fn env_value(&self) -> String {
        format!("{}.{}:{}", self.run, self.number, self.job)
    }
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::core::id::pad_fmt(f, format_args!("{} {}", self.job, self.attempt_ref()))
    }
}

/// Width, fill, alignment and precision apply to the whole, as to a `str`.
impl std::fmt::Display for StatusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wait = WaitSuffix("/wait ", self.wait);
        let overdue = WaitSuffix("/overdue ", self.overdue);
        crate::core::id::pad_fmt(
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
/// restart or check, so a new kind of effect is a breaking change (a new major version) that
/// makes the compiler point at every agent's `match`. Match every variant; do not add a
/// `_ =>` arm. Every variant, and both kinds of [`ScheduleRestart`](Effect::ScheduleRestart),
/// can come from a [`Ledger`](crate::Ledger) call: none is there only for the pure
/// [`transition`](crate::transition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use = "an effect must be carried out: dropped, it is a launch, termination, restart or check that never happens"]
pub enum Effect {
    /// Start the program of this attempt now, then record its launch
    /// ([`Ledger::launched`](crate::Ledger::launched)). `Running` is already committed.
    /// [`Ledger::begin`] hands out the attempt directly (it consumes this effect);
    /// [`Ledger::open`] returns it for an attempt whose launch was never recorded and whose
    /// program is known not to run, and [`Ledger::program_lost`] for an attempt whose launch
    /// was never recorded (either way it is launched again as the same attempt), when the job
    /// may start now; else the attempt waits, queued, for [`Ledger::begin`].
    ///
    /// [`Ledger::begin`]: crate::Ledger::begin
    /// [`Ledger::open`]: crate::Ledger::open
    /// [`Ledger::program_lost`]: crate::Ledger::program_lost
    Launch(AttemptId),
    /// Stop the program of this attempt (it exceeded its maximum run time, or its job was
    /// abandoned). Do this before any later attempt of the job is started.
    Terminate(AttemptId),
    /// Restart the machine now: `AwaitingReboot` is already committed, no other job runs, and
    /// the job's [restart policy](crate::RestartPolicy) allows it.
    ScheduleRestart {
        /// The job that needs the restart.
        job: JobId,
        /// Soft ("restart required"): the agent performs it. Hard ("restart initiated" by the
        /// job's program): it was already under way, and did not come by its deadline;
        /// [`Ledger::tick`](crate::Ledger::tick) licenses it again when it is reported overdue,
        /// and the agent makes sure it happens. (Only a hard restart that is overdue is ever
        /// handed out: one on time is the program's own, and is never deferred.)
        kind: RebootKind,
        /// Why now: the rule of the restart policy that licensed it.
        when: RestartRelease,
    },
    /// Run the job's verification (detection check) and hand its result to the ledger.
    Verify(AttemptId),
}

/// The effects of one ledger call, in the order to carry them out: every one of them must be
/// carried out, whichever job it belongs to (a restart held while another job ran is licensed by
/// the call that ended that job).
///
/// The type is `#[must_use]`, so an agent cannot drop the effects of a call without a warning,
/// even behind `?`, `.unwrap()` or a function of its own that returns them (a `#[must_use]` on
/// the ledger's methods alone would not fire through `?`). It reads as a slice of [`Effect`]s
/// (`len`, `is_empty`, `iter`, indexing), iterates by value, and compares with a `Vec` or an
/// array of effects.
///
/// ```
/// # use jobstate::*;
/// # use jobstate::session::*;
/// # fn session() -> SessionFacts { SessionFacts {
/// #     boot: BootId::new("b").unwrap(), user: UserPresence::Unknown,
/// #     context: ExecutionContext::Service, notices: NoticeDelivery::NotDelivered,
/// #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
/// #     programs: LivePrograms::Unknown, restart_pending: RestartPending::Unknown } }
/// # fn carry_out(effect: Effect) {}
/// let (mut ledger, effects) = Ledger::open(MemoryStore::new(), session())?;
/// for effect in effects {
///     carry_out(effect); // every one: a dropped effect is a restart or a check that never happens
/// }
/// let effects = ledger.tick()?;
/// assert!(effects.is_empty());
/// # Ok::<(), Error>(())
/// ```
///
/// Dropping them is a warning (`unused_must_use`); in a crate that denies warnings it does not
/// compile:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # use jobstate::*;
/// # use jobstate::session::*;
/// # fn session() -> SessionFacts { SessionFacts {
/// #     boot: BootId::new("b").unwrap(), user: UserPresence::Unknown,
/// #     context: ExecutionContext::Service, notices: NoticeDelivery::NotDelivered,
/// #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
/// #     programs: LivePrograms::Unknown, restart_pending: RestartPending::Unknown } }
/// # fn main() -> Result<(), Error> {
/// let (mut ledger, _recovered) = Ledger::open(MemoryStore::new(), session())?;
/// ledger.tick()?; // error: unused `Effects` that must be used
/// # Ok(()) }
/// ```
///
/// A call whose effects truly do not matter says so: `let _effects = ledger.tick()?;`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[must_use = "effects must be carried out: dropped, they are launches, terminations, restarts or checks that never happen"]
pub struct Effects(Vec<Effect>);

impl Effects {
    /// No effects.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The effects, in order.
    pub fn as_slice(&self) -> &[Effect] {
        &self.0
    }

    /// The effects as a `Vec`, in order.
    pub fn into_vec(self) -> Vec<Effect> {
        self.0
    }
}

impl std::ops::Deref for Effects {
    type Target = [Effect];

    fn deref(&self) -> &[Effect] {
        &self.0
    }
}

impl From<Vec<Effect>> for Effects {
    fn from(effects: Vec<Effect>) -> Self {
        Self(effects)
    }
}

impl From<Effects> for Vec<Effect> {
    fn from(effects: Effects) -> Self {
        effects.0
    }
}

impl FromIterator<Effect> for Effects {
    fn from_iter<I: IntoIterator<Item = Effect>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<Effect> for Effects {
    fn extend<I: IntoIterator<Item = Effect>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Effects {
    type Item = Effect;
    type IntoIter = std::vec::IntoIter<Effect>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Effects {
    type Item = &'a Effect;
    type IntoIter = std::slice::Iter<'a, Effect>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq<Vec<Effect>> for Effects {
    fn eq(&self, other: &Vec<Effect>) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Effects> for Vec<Effect> {
    fn eq(&self, other: &Effects) -> bool {
        *self == other.0
    }
}

impl PartialEq<[Effect]> for Effects {
    fn eq(&self, other: &[Effect]) -> bool {
        self.0 == other
    }
}

impl<const N: usize> PartialEq<[Effect; N]> for Effects {
    fn eq(&self, other: &[Effect; N]) -> bool {
        self.0 == other
    }
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
    /// (`Running`: the `n`-th of the attempt, numbered by the ledger; an attempt whose launch
    /// was never recorded is launched again after a reboot, and may be terminated again). Such reports are not terminal. (Absent in JSON written before it existed: 0.)
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
    #[serde(with = "crate::core::time_serde::option")]
    pub started_at: Option<Timestamp>,
    /// The boot in which the attempt started, if one did. It differs from `boot` when the job
    /// finished across a reboot.
    pub started_in: Option<BootId>,
    /// The boot in which the transition was observed.
    pub boot: BootId,
    /// When the transition was observed.
    #[serde(with = "crate::core::time_serde::timestamp")]
    pub at: Timestamp,
}

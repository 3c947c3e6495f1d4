//! The ledger an agent drives: jobs in a store, transitions committed before their effects.

mod reporting;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::core::Timestamp;
use crate::core::effect::{AttemptId, Effect, Effects, StatusMessage};
use crate::core::event::{AttemptRef, CheckResult, Event, EventKind};
use crate::core::exit_code::ProgramExit;
use crate::core::id::{BootId, JobId};
use crate::core::program::{ProgramId, ProgramStatus};
use crate::core::restart_policy::{RestartPolicy, RestartRelease, Verdict};
use crate::core::spec::{JobSpec, RebootBehaviour};
use crate::core::state::{JobState, RebootAttribution, RebootKind, StateKind};
use crate::core::transition::{Step, transition};
use crate::error::{Error, WaitReason};
use crate::record::{Change, HistoryEntry, JobRecord};
use crate::report::delivery::DeliveryPolicy;
use crate::retention::Retention;
use crate::session::SessionContext;
use crate::store::{Commit, Replay, Revision, Store};

/// How often a job that waits for the system's pending restart asks again: the flag can clear
/// without a boot (an operator removes it) and nothing tells the ledger.
const RESTART_PENDING_RECHECK: Duration = Duration::from_secs(5 * 60);

/// The most job changes in one commit of a call that touches every job (the reconciliation at
/// open, a tick): about a megabyte at most, far below any store's limit for one write.
const MAX_CHANGES_PER_COMMIT: usize = 1024;

/// How often the liveness of a program that an earlier agent process started, or whose job an
/// operator abandoned, is polled: nothing tells the agent of such a program's end.
const ORPHAN_POLL: Duration = Duration::from_secs(10);

/// What offering a job did: the answer of [`Ledger::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[doc(alias = "advertisement", alias = "Advertisement")]
pub enum Offer {
    /// The job was new: it is now queued.
    Queued,
    /// The job was already known with this very spec: nothing changed. An optional completed
    /// or a failed job runs again only on a [`Ledger::rerun`] request.
    AlreadyKnown {
        /// Its current state.
        state: StateKind,
    },
    /// The job was known with another spec: the new one is recorded, and takes effect as
    /// `effect` says. A mandatory job stays mandatory whatever the new spec says.
    SpecChanged {
        /// Its current state (unchanged).
        state: StateKind,
        /// When the new spec takes effect.
        effect: SpecEffect,
        /// The new spec said optional, but the job was mandatory: it stays mandatory.
        kept_mandatory: bool,
    },
    /// The job is a completed mandatory job: it will never run again, whatever spec it was
    /// offered with (nothing is recorded).
    CompletedWillNotRun,
}

/// When a changed spec takes effect ([`Offer::SpecChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecEffect {
    /// Now: no attempt is under way (the job is queued, or its run is finished and a
    /// [`Ledger::rerun`] runs under the new spec).
    Now,
    /// At the next attempt: the attempt under way (running, waiting for its reboot, or whose
    /// check is owed) finishes under the spec it started with, except that a job made
    /// mandatory is mandatory at once.
    NextAttempt,
}

/// How a [`Ledger`] behaves where the agent decides, set at [`Ledger::open_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerOptions {
    /// The restart policy of jobs whose spec names none (default: at once).
    pub restart_policy: RestartPolicy,
    /// How status messages are batched and retried.
    pub delivery: DeliveryPolicy,
    /// How much history the ledger keeps in memory (default: two earlier runs per job, finished
    /// jobs as tombstones from the next open). The store's own retention bounds what it keeps.
    pub retention: Retention,
}

impl LedgerOptions {
    /// Sets the restart policy of jobs whose spec names none.
    #[must_use]
    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart_policy = policy;
        self
    }

    /// Sets how status messages are batched and retried.
    #[must_use]
    pub fn with_delivery(mut self, delivery: DeliveryPolicy) -> Self {
        self.delivery = delivery;
        self
    }

    /// Sets how much history the ledger keeps in memory.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
}

/// What the agent should do next, from [`Ledger::next_runnable`].
///
/// Exhaustive on purpose, as [`Effect`] is: the agent's run loop acts on every variant (a job to
/// begin is work not done if it falls into a `_ =>` arm that sleeps), so a new variant is a
/// breaking change that makes the compiler point at the loop's `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextJob {
    /// This job may start now: call [`Ledger::begin`].
    Run(JobId),
    /// Queued jobs exist, but none may start now; the first one waits for this reason
    /// ([`Ledger::waits`] names what every job waits for).
    Wait {
        /// The first queued job.
        job: JobId,
        /// Why it waits.
        reason: WaitReason,
    },
    /// No job is queued.
    Idle,
}

/// What one unfinished job waits for, from [`Ledger::waits`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobWait {
    /// The job.
    pub job: JobId,
    /// What it waits for.
    pub reason: WaitReason,
    /// When the ledger next needs to be called for it ([`Ledger::tick`], or
    /// [`Ledger::next_runnable`] for a back-off), from the session's clocks now; `None` when
    /// only something outside the ledger ends the wait (a user logging on, a program's exit, a
    /// check's answer, an operator).
    pub wake_after: Option<Duration>,
}

/// The job ledger: the one place an agent records and decides what its jobs do.
///
/// Every mutating call builds an [`Event`] from the session (its time, the boot read at open),
/// runs the pure [`transition`], commits the new state to the store, and only then returns the
/// [`Effect`]s the caller must carry out. If the commit fails, nothing changes and no effect is
/// returned. (A call that changes more jobs than one commit holds, 1,024, commits in several:
/// if a later one fails, the earlier ones stand, and the effects they licensed are handed out
/// by the next [`tick`](Ledger::tick), which [`next_wakeup`](Ledger::next_wakeup) then asks
/// for at once. A call that queues again an attempt whose launch was never recorded and then
/// begins it commits twice too: if the second fails, the attempt stays queued, and
/// [`next_runnable`](Ledger::next_runnable) names it. A call that fails at open, or a call after
/// which the store refuses every commit, is followed by a new open, which licenses again
/// whatever is still owed.)
///
/// # Method groups and call order
///
/// - **Open:** [`Ledger::open`] loads the store and reconciles every unfinished job against the
///   current boot. Carry out the effects it returns first (verifications, owed restarts).
/// - **Inputs from the server:** [`offer`](Ledger::offer),
///   [`rerun`](Ledger::rerun), [`cancel`](Ledger::cancel).
/// - **The run loop:** [`next_runnable`](Ledger::next_runnable), then
///   [`begin`](Ledger::begin) (launch the program only after it returns), then
///   [`launched`](Ledger::launched) with the program's identity as soon as it started (or
///   [`launch_failed`](Ledger::launch_failed)), then the program's
///   [`program_exited`](Ledger::program_exited) (or [`program_lost`](Ledger::program_lost)
///   when it is gone without an exit status); [`expect_reboot`](Ledger::expect_reboot) before
///   any restart the agent starts itself; [`verification`](Ledger::verification) with the result
///   of each [`Effect::Verify`]; [`tick`](Ledger::tick) whenever
///   [`next_wakeup`](Ledger::next_wakeup) says (run-time limits, programs that vanished, grace
///   windows, restart deadlines).
/// - **Operators:** [`abandon`](Ledger::abandon) ends a job that is stuck.
/// - **Effects** from any call may belong to another job: a restart held while another job ran
///   is licensed by the call that ended that job. Carry out every effect every call returns.
/// - **Status:** [`deliver`](Ledger::deliver) on every turn of the loop: pending status messages
///   go to the sink, with back-off after a failure.
/// - **Hints:** [`shutdown_notice`](Ledger::shutdown_notice) when one arrives; nothing depends on it.
/// - **Getters:** [`job`](Ledger::job), [`jobs`](Ledger::jobs), [`history`](Ledger::history),
///   [`outbox`](Ledger::outbox), [`waits`](Ledger::waits), [`next_wakeup`](Ledger::next_wakeup),
///   [`open_report`](Ledger::open_report),
///   [`boot`](Ledger::boot), [`revision`](Ledger::revision), [`session`](Ledger::session).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use jobstate::session::{ExecutionContext, LivePrograms, NoticeDelivery, SessionFacts};
/// use jobstate::*;
///
/// let session = SessionFacts {
///     boot: BootId::new("boot-1").unwrap(),
///     user: UserPresence::NoneLoggedOn,
///     context: ExecutionContext::Service,
///     notices: NoticeDelivery::NotDelivered,
///     now: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
///     since_boot: std::time::Duration::from_secs(60),
///     programs: LivePrograms::Unknown,
///     restart_pending: jobstate::session::RestartPending::Unknown,
/// };
/// let (mut ledger, recovered) = Ledger::open(MemoryStore::new(), session)?;
/// assert!(recovered.is_empty());               // a new store: nothing to carry out first
/// let spec = JobSpec::new(JobId::new("patch-kb123")?);
/// assert_eq!(ledger.offer(spec.clone())?, Offer::Queued);
///
/// let NextJob::Run(job) = ledger.next_runnable() else { panic!("nothing to run") };
/// let attempt = ledger.begin(&job)?;          // Running is durable: launch the program now
/// let effects = ledger.launched(&attempt, ProgramId::new(4242, 1_000))?; // a recorded fact
/// assert!(effects.is_empty());                 // (carry out whatever a call returns)
/// let effects = ledger.program_exited(&attempt, 0)?;
/// assert!(effects.is_empty());                 // nothing left to do...
/// assert_eq!(ledger.outbox().count(), 1);     // ...but a status message to deliver
/// assert_eq!(ledger.offer(spec)?, Offer::CompletedWillNotRun);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Ledger<S: Store, C: SessionContext> {
    store: S,
    session: C,
    boot: BootId,
    revision: Revision,
    /// The jobs and the outbox, as the store acknowledged them.
    state: Replay,
    delivery: DeliveryPolicy,
    /// When each pending message may be offered again. In memory only: after a restart, pending
    /// messages are offered at once.
    schedule: crate::report::delivery::Schedule,
    /// Restarts owed while another job runs (SEMANTICS.md: "Restarts are exclusive"): licensed by
    /// the call that leaves no job running. In memory only: recovery derives them again.
    held_restarts: Vec<(JobId, RebootKind)>,
    /// The restart policy of jobs whose spec names none.
    restart_policy: RestartPolicy,
    /// How much history is kept in memory.
    retention: Retention,
    /// Jobs whose programs an earlier agent process started in this boot: their liveness is
    /// polled, since nothing tells this process of their end.
    orphans: BTreeSet<JobId>,
    /// Jobs an operator abandoned in this boot whose program may still run: while it does, it
    /// stands in the way of a start as a running job would (SEMANTICS.md: "Restarts are
    /// exclusive"); its liveness is polled. In memory only: found again at open.
    abandoned: BTreeSet<JobId>,
    /// Abandoned jobs whose program the agent reported ended (`program_exited`,
    /// `program_lost`): no longer in the way, whatever the session can tell. In memory only: a
    /// finished run records no more changes; after an agent restart the session's answer rules.
    abandoned_gone: BTreeSet<JobId>,
    /// Effects licensed by commits of a call that then failed on a later commit (a call that
    /// changes more jobs than one commit holds): handed out by the next `tick`.
    unreturned: Vec<Effect>,
}

impl<S: Store, C: SessionContext> Ledger<S, C> {
    /// Loads `store` and reconciles every unfinished job against the current boot
    /// ([semantics](crate::semantics): "Reboot truth comes from boot identity"), committing the
    /// result in one batch.
    ///
    /// Returns the ledger and the effects recovery licenses: verifications to run after a
    /// reboot, restarts and terminations still owed, and launches of attempts whose launch was
    /// never recorded and whose program is known not to run. Status messages of jobs that
    /// completed across the reboot are in the outbox: [`deliver`](Ledger::deliver) sends them.
    ///
    /// For a job running in this same boot, the session says whether its program is alive
    /// ([`SessionContext::program_status`]): a program that died with the agent ends its attempt
    /// (a check verifies, or the retry policy applies) instead of leaving the job stuck.
    #[must_use = "the ledger is returned with the effects recovery licenses: carry them out first (a check after a reboot, a restart or termination still owed, a launch never made)"]
    pub fn open(store: S, session: C) -> Result<(Self, Effects), Error> {
        Self::open_with(store, session, LedgerOptions::default())
    }

    /// [`Ledger::open`] with `options` in force from the start: the effects of the reconciliation
    /// at open (a restart owed before the agent restarted, for one) already follow them.
    ///
    /// ```
    /// use jobstate::{Ledger, LedgerOptions, MemoryStore, RestartPolicy};
    /// use jobstate::session::SessionFacts;
    /// # fn session() -> SessionFacts { SessionFacts {
    /// #     boot: jobstate::BootId::new("b").unwrap(), user: jobstate::UserPresence::Unknown,
    /// #     context: jobstate::session::ExecutionContext::Service, notices: jobstate::session::NoticeDelivery::NotDelivered,
    /// #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
    /// #     programs: jobstate::session::LivePrograms::Unknown, restart_pending: jobstate::session::RestartPending::Unknown } }
    /// let options = LedgerOptions::default().with_restart_policy(RestartPolicy::NextNaturalBoot);
    /// let (ledger, effects) = Ledger::open_with(MemoryStore::new(), session(), options)?;
    /// # Ok::<(), jobstate::Error>(())
    /// ```
    #[must_use = "the ledger is returned with the effects recovery licenses: carry them out first (a check after a reboot, a restart or termination still owed, a launch never made)"]
    pub fn open_with(
        store: S,
        session: C,
        options: LedgerOptions,
    ) -> Result<(Self, Effects), Error> {
        Self::open_with_exits(store, session, options, [])
    }

    /// [`Ledger::open_with`] for an agent that holds exit statuses no store has: it reaped a
    /// program, then [`program_exited`](Ledger::program_exited) failed on the store (a store may
    /// refuse every commit after a failed write until it is opened again, as
    /// [`FileStore`](crate::FileStore) does). Each exit is recorded before the reconciliation,
    /// which would otherwise find the program gone and end its attempt without a result
    /// ([semantics](crate::semantics): "A program can vanish"), so that a program that
    /// succeeded is never run again for want of one commit. An exit the store already holds, or
    /// one of an attempt that is no longer running, changes nothing.
    ///
    /// ```
    /// use jobstate::{Ledger, LedgerOptions, MemoryStore, ProgramExit, ProgramId, JobSpec, JobId, StateKind};
    /// use jobstate::session::{LivePrograms, SessionFacts};
    /// # fn session() -> SessionFacts { SessionFacts {
    /// #     boot: jobstate::BootId::new("b").unwrap(), user: jobstate::UserPresence::Unknown,
    /// #     context: jobstate::session::ExecutionContext::Service, notices: jobstate::session::NoticeDelivery::NotDelivered,
    /// #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
    /// #     programs: LivePrograms::Known(Default::default()), restart_pending: jobstate::session::RestartPending::Unknown } }
    /// let store = MemoryStore::new();
    /// let (mut ledger, _) = Ledger::open(store.clone(), session())?;
    /// let job = JobId::new("kb5034441")?;
    /// ledger.offer(JobSpec::new(job.clone()))?;
    /// let attempt = ledger.begin(&job)?;
    /// let _ = ledger.launched(&attempt, ProgramId::new(4242, 7))?;
    /// // The program exits 0; recording it fails on the store, and the agent opens it again.
    /// drop(ledger);
    /// let heard = [(attempt, ProgramExit::Code(0))];
    /// let (ledger, _) = Ledger::open_with_exits(store, session(), LedgerOptions::default(), heard)?;
    /// assert_eq!(ledger.job(&job).unwrap().state().kind(), StateKind::Completed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the ledger is returned with the effects recovery licenses: carry them out first (a check after a reboot, a restart or termination still owed, a launch never made)"]
    pub fn open_with_exits(
        mut store: S,
        session: C,
        options: LedgerOptions,
        exits: impl IntoIterator<Item = (AttemptId, ProgramExit)>,
    ) -> Result<(Self, Effects), Error> {
        crate::observe::call_span!("open");
        let snapshot = store.load()?;
        crate::observe::recovery_findings!(store);
        let boot = session.boot_id()?;
        let mut state =
            Replay::from_snapshot(snapshot.jobs, snapshot.outbox, snapshot.dead_letters)
                .map_err(crate::store::StoreError::from)?;
        state.compact_history(&options.retention);
        let mut ledger = Self {
            store,
            session,
            boot,
            revision: snapshot.revision,
            state,
            delivery: options.delivery,
            schedule: crate::report::delivery::Schedule::default(),
            held_restarts: Vec::new(),
            restart_policy: options.restart_policy,
            retention: options.retention,
            orphans: BTreeSet::new(),
            abandoned: BTreeSet::new(),
            abandoned_gone: BTreeSet::new(),
            unreturned: Vec::new(),
        };
        // Abandoned jobs are finished: found in one walk of every job, here only, before the
        // reconciliation, which may start jobs again.
        ledger.abandoned = ledger
            .state
            .jobs()
            .iter()
            .filter(|r| abandoned_in(r.state(), &ledger.boot))
            .map(|r| r.id().clone())
            .collect();
        let mut heard = Vec::new();
        for (attempt, exit) in exits {
            match ledger.program_exited(&attempt, exit) {
                Ok(effects) => heard.extend(effects),
                // Recorded already (the failed commit was durable after all), or not this
                // attempt's to record any more.
                Err(Error::Transition(_) | Error::UnknownJob(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let restart_of = ledger.restart_owner();
        let reconciling = crate::observe::reconciling(&ledger.state);
        let effects = ledger.apply_each(
            |s| !s.is_terminal(),
            |ledger, record| EventKind::AgentStarted {
                program: ledger.program_status(record, true),
                restart_of: restart_of.clone(),
            },
        )?;
        crate::observe::reconciled(reconciling, &ledger.state, &ledger.boot, &effects);
        let boot = ledger.boot.clone();
        ledger.orphans = ledger
            .state
            .jobs()
            .unfinished()
            .filter(|r| {
                matches!(r.state(), JobState::Running { attempt, launch, .. }
                    if attempt.boot == boot && launch.happened())
            })
            .map(|r| r.id().clone())
            .collect();
        // A termination an abandon licensed is owed while the program runs: the agent may have
        // died before carrying it out, and nothing else ends that program (its job is finished:
        // no run-time limit applies any more).
        let mut effects = Vec::from(effects);
        // The reconciliation licenses again what an exit just licensed (a restart still owed,
        // a check): each once.
        heard.retain(|effect| !effects.contains(effect));
        effects.splice(0..0, heard);
        for job in &ledger.abandoned {
            if let Some(named) = ledger.abandoned_program_alive(ledger.record(job)?) {
                effects.push(Effect::Terminate(AttemptId::new(job.clone(), named)));
            }
        }
        Ok((ledger, effects.into()))
    }

    /// Offers a job: a new id is queued; a known id changes nothing and says what it is.
    /// A completed mandatory job answers [`Offer::CompletedWillNotRun`].
    #[doc(alias = "advertise")]
    pub fn offer(&mut self, spec: JobSpec) -> Result<Offer, Error> {
        crate::observe::call_span!("offer", job = spec.id());
        if let Some(record) = self.state.jobs().get(spec.id()) {
            let event = self.event(EventKind::Offered);
            // Offering a known job is an observation: it never changes the job's state.
            let step = transition(record.spec(), record.state(), &event)?;
            debug_assert!(step.state.is_none());
            let state = record.state().kind();
            let latest = record.latest_spec();
            if state == StateKind::Completed && latest.is_mandatory() {
                return Ok(Offer::CompletedWillNotRun);
            }
            // Mandatory may be added, never removed.
            let kept_mandatory = latest.is_mandatory() && !spec.is_mandatory();
            let mandatory = spec.is_mandatory() || latest.is_mandatory();
            let spec = spec.with_mandatory(mandatory);
            let effect = if record.current_attempt().is_some() {
                SpecEffect::NextAttempt
            } else {
                SpecEffect::Now
            };
            if spec == *latest {
                return Ok(if kept_mandatory {
                    // Only the mandatory flag differed, and it stays: nothing to record; the
                    // spec in force is the one that stays.
                    Offer::SpecChanged {
                        state,
                        effect,
                        kept_mandatory,
                    }
                } else {
                    Offer::AlreadyKnown { state }
                });
            }
            let change = Change {
                job: spec.id().clone(),
                seq: record.seq() + 1,
                spec: Some(Arc::new(spec)),
                event: self.event(EventKind::SpecChanged),
                state: record.state().clone(),
            };
            self.commit(Commit::new(self.revision, vec![change]))?;
            return Ok(Offer::SpecChanged {
                state,
                effect,
                kept_mandatory,
            });
        }
        let change = Change {
            job: spec.id().clone(),
            seq: 1,
            spec: Some(Arc::new(spec)),
            event: self.event(EventKind::Offered),
            state: JobState::initial(),
        };
        self.commit(Commit::new(self.revision, vec![change]))?;
        Ok(Offer::Queued)
    }

    /// The first queued job (in offer order) that may start in the current session, or
    /// why the first queued job must wait.
    pub fn next_runnable(&self) -> NextJob {
        let busy = self.busy();
        let mut first_wait = None;
        for record in self.state.jobs().unfinished() {
            if record.state().kind() != StateKind::Queued {
                continue;
            }
            match self.readiness(record, &busy) {
                Ok(()) => return NextJob::Run(record.id().clone()),
                Err(reason) => {
                    first_wait.get_or_insert((record.id().clone(), reason));
                }
            }
        }
        match first_wait {
            Some((job, reason)) => NextJob::Wait { job, reason },
            None => NextJob::Idle,
        }
    }

    /// Starts the queued attempt of `job`: commits `Running` (with the current boot) and returns
    /// the attempt. Launch the program only after this returns `Ok`, with
    /// [`ATTEMPT_ENV`](crate::session::ATTEMPT_ENV) set to [`AttemptId::env_value`] if your session
    /// looks for it, then record the launch with [`launched`](Ledger::launched).
    #[must_use = "the attempt is the launch to carry out: start its program now, then record it with `launched`"]
    pub fn begin(&mut self, job: &JobId) -> Result<AttemptId, Error> {
        crate::observe::call_span!("begin", job = job);
        let busy = self.busy();
        let record = self.record(job)?;
        if record.state().kind() == StateKind::Queued {
            self.readiness(record, &busy)
                .map_err(|reason| Error::NotRunnable {
                    job: job.clone(),
                    reason,
                })?;
        }
        let effects = self.apply(job, EventKind::AttemptStarted)?;
        match effects.into_iter().next() {
            Some(Effect::Launch(attempt)) => Ok(attempt),
            // `AttemptStarted` either fails or launches.
            _ => Err(Error::Transition(crate::TransitionError::Invalid {
                job: job.clone(),
                state: StateKind::Queued,
                event: crate::EventName::AttemptStarted,
            })),
        }
    }

    /// Records that the program of `attempt` ended: an exit code, mapped by the job's
    /// exit-code policy, or a signal (give it a [`std::process::ExitStatus`] or a
    /// [`ProgramExit`]; a plain `i32` is an exit code). The end of the program of an attempt an
    /// operator abandoned in this boot changes no state (the run is over) but is noted: the
    /// program no longer stands in the way of a start or a rerun, whatever the session can
    /// tell (until the agent restarts).
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn program_exited(
        &mut self,
        attempt: &AttemptId,
        exit: impl Into<ProgramExit>,
    ) -> Result<Effects, Error> {
        crate::observe::call_span!("program_exited", attempt = attempt);
        if self.abandoned_program_ended(attempt) {
            return Ok(Vec::new().into());
        }
        // Asked only for a job that cares: the session may run a helper to answer.
        let restart_pending = self
            .state
            .jobs()
            .get(&attempt.job)
            .is_some_and(|r| r.spec().restart_when_pending())
            && self.session.restart_pending() == crate::session::RestartPending::Pending;
        let kind = EventKind::ProgramExited {
            attempt: attempt.attempt_ref(),
            exit: exit.into(),
            restart_pending,
        };
        self.apply(&attempt.job, kind)
    }

    /// Records that the program of `attempt` started, as `program` (on Linux,
    /// [`LinuxSession::program_id`](crate::LinuxSession::program_id) of the child's pid). Call it
    /// as soon as the program started: until then the launch is not a fact, and a reboot never
    /// completes the job ([semantics](crate::semantics): "A launch is a recorded fact").
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn launched(&mut self, attempt: &AttemptId, program: ProgramId) -> Result<Effects, Error> {
        crate::observe::call_span!("launched", attempt = attempt);
        let kind = EventKind::Launched {
            attempt: attempt.attempt_ref(),
            program,
        };
        self.apply(&attempt.job, kind)
    }

    /// Records that the program of `attempt` could not be started (a missing executable, a
    /// refused `exec`): the attempt fails with
    /// [`FailureReason::LaunchFailed`](crate::FailureReason::LaunchFailed), under the retry
    /// policy.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn launch_failed(&mut self, attempt: &AttemptId) -> Result<Effects, Error> {
        crate::observe::call_span!("launch_failed", attempt = attempt);
        let kind = EventKind::LaunchFailed {
            attempt: attempt.attempt_ref(),
        };
        self.apply(&attempt.job, kind)
    }

    /// Records that the program of `attempt` is gone without an exit status (the agent knows it
    /// died, or killed it and cannot collect its status). A program that ran ended without a
    /// result: with a check, verify; without, the retry policy applies
    /// ([`FailureReason::ProgramLost`](crate::FailureReason::ProgramLost), or `TimedOut` after a
    /// termination). A launch never recorded is launched again as the same attempt
    /// ([`Effect::Launch`]) if the job may start now, else queued until it may. For an attempt
    /// an operator abandoned in this boot it is noted as [`program_exited`](Ledger::program_exited)
    /// notes it.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn program_lost(&mut self, attempt: &AttemptId) -> Result<Effects, Error> {
        crate::observe::call_span!("program_lost", attempt = attempt);
        if self.abandoned_program_ended(attempt) {
            return Ok(Vec::new().into());
        }
        let kind = EventKind::ProgramLost {
            attempt: attempt.attempt_ref(),
        };
        self.apply(&attempt.job, kind)
    }

    /// Commits `AwaitingReboot` for `attempt` before a restart happens. For a soft restart the
    /// returned [`Effect::ScheduleRestart`] licenses the agent to restart the machine; a soft
    /// restart is refused while the attempt's program may still run (record its exit first).
    /// A failure whose grace window closed before this call stands instead (as a `tick` would
    /// have found): the attempt fails, and no restart is licensed.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn expect_reboot(
        &mut self,
        attempt: &AttemptId,
        kind: RebootKind,
    ) -> Result<Effects, Error> {
        crate::observe::call_span!("expect_reboot", attempt = attempt);
        let kind = EventKind::RebootExpected {
            attempt: attempt.attempt_ref(),
            kind,
        };
        self.apply(&attempt.job, kind)
    }

    /// Records what the verification (detection check) of `attempt` said: `true`/`false`, or a
    /// [`CheckResult`] (`NotYet`: another restart is needed, and the job waits for it within
    /// its reboot bound).
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn verification(
        &mut self,
        attempt: &AttemptId,
        result: impl Into<CheckResult>,
    ) -> Result<Effects, Error> {
        crate::observe::call_span!("verification", attempt = attempt);
        let kind = EventKind::Verified {
            attempt: attempt.attempt_ref(),
            result: result.into(),
        };
        self.apply(&attempt.job, kind)
    }

    /// Records a shutdown notice (a hint: nothing depends on it) on every running job.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn shutdown_notice(&mut self) -> Result<Effects, Error> {
        crate::observe::call_span!("shutdown_notice");
        let effects = self.apply_each(
            |s| s.kind() == StateKind::Running,
            |_, _| EventKind::ShutdownNoticed,
        )?;
        Ok(self.with_unreturned(effects))
    }

    /// Checks the deadlines, on the boot's monotonic clock, and what the session says of running
    /// programs: the program of an attempt past its maximum run time must be terminated
    /// ([`Effect::Terminate`]; the attempt ends as timed out when its exit is recorded, or when
    /// it is gone: for a program that restarts the machine, when the grace window that this
    /// opens closes in its boot, a reboot within it being its expected end); a program gone
    /// without an exit status ends its attempt; a failing exit of a program that restarts the
    /// machine stands once its grace window closed; a restart that did
    /// not come by its deadline is licensed again and reported overdue; a terminated program
    /// still alive after its grace period is reported. Call it when
    /// [`next_wakeup`](Ledger::next_wakeup) says.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn tick(&mut self) -> Result<Effects, Error> {
        crate::observe::call_span!("tick");
        let effects = self.apply_each(
            |s| matches!(s.kind(), StateKind::Running | StateKind::AwaitingReboot),
            |ledger, record| EventKind::Tick {
                program: ledger.program_status(record, false),
            },
        )?;
        Ok(self.with_unreturned(effects))
    }

    /// Asks to run `job` again (a new run). Refused for a completed mandatory job, while the
    /// program of an attempt an operator abandoned in this boot still runs
    /// ([`Error::ProgramStillRunning`]), and while the restart that attempt owed may still come
    /// ([`Error::NotRunnable`], until it would have been reported overdue).
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn rerun(&mut self, job: &JobId) -> Result<Effects, Error> {
        crate::observe::call_span!("rerun", job = job);
        let record = self.record(job)?;
        if let Some(attempt) = self.abandoned_program_alive(record) {
            return Err(Error::ProgramStillRunning {
                job: job.clone(),
                attempt,
            });
        }
        // The restart its abandoned attempt owed may still come: a new run would start under
        // it (and end the hold on the others, which is kept only for an abandoned job).
        if self.abandoned_restart_owed(record).is_some() {
            return Err(Error::NotRunnable {
                job: job.clone(),
                reason: WaitReason::RestartPending { job: job.clone() },
            });
        }
        let effects = self.apply(job, EventKind::RerunRequested)?;
        self.abandoned.remove(job);
        self.abandoned_gone.remove(job);
        Ok(effects)
    }

    /// How long the restart that `record`'s attempt was waiting for in this boot when an
    /// operator abandoned it stays in the way: until it would have been reported overdue next
    /// (by the spec that attempt began under). `None` once that is past, or if no restart was
    /// owed in this boot.
    fn abandoned_restart_owed(&self, record: &JobRecord) -> Option<Duration> {
        if !abandoned_in(record.state(), &self.boot) {
            return None;
        }
        // An abandoned job keeps its last run: the state before the abandon is in the history.
        let history = record.history();
        let before = history.len().checked_sub(2).and_then(|i| history.get(i))?;
        let JobState::AwaitingReboot {
            requested_in,
            verifying_in: None,
            since_boot,
            overdue,
            ..
        } = &before.state
        else {
            return None;
        };
        if *requested_in != self.boot {
            return None;
        }
        let limit = record.last_attempt_spec().overdue_after(*overdue);
        let waited = self.session.since_boot().saturating_sub(*since_boot);
        Some(limit.saturating_sub(waited)).filter(|left| !left.is_zero())
    }

    /// Notes that the program of `attempt`, abandoned in this boot, ended (its exit was reaped,
    /// or the agent knows it is gone), if it is such an attempt: it no longer stands in the way
    /// when the session cannot tell. The job's run is finished: nothing is recorded.
    fn abandoned_program_ended(&mut self, attempt: &AttemptId) -> bool {
        let abandoned = self.state.jobs().get(&attempt.job).is_some_and(|record| {
            matches!(
                record.state(),
                JobState::Failed {
                    reason: crate::FailureReason::Abandoned,
                    attempt: Some(a),
                    ..
                } if a.boot == self.boot && a.run == attempt.run && a.number == attempt.number
            )
        });
        if abandoned {
            self.abandoned_gone.insert(attempt.job.clone());
        }
        abandoned
    }

    /// The attempt of `record`, abandoned in this boot, whose program the session says is alive.
    fn abandoned_program_alive(&self, record: &JobRecord) -> Option<AttemptRef> {
        let JobState::Failed {
            reason: crate::FailureReason::Abandoned,
            attempt: Some(abandoned),
            ..
        } = record.state()
        else {
            return None;
        };
        if abandoned.boot != self.boot || self.abandoned_gone.contains(record.id()) {
            return None;
        }
        let named = AttemptRef {
            run: abandoned.run,
            number: abandoned.number,
        };
        // The program's identity, if its launch was recorded, is in the last Running of the
        // history: the abandoned attempt is the last one that ran (nothing follows an abandon
        // but a rerun, and no later attempt began before it).
        let (launch, unresponsive) =
            record.history().iter().rev().find_map(|e| match &e.state {
                JobState::Running {
                    launch, terminate, ..
                } => Some((*launch, terminate.is_some_and(|t| t.unresponsive))),
                _ => None,
            })?;
        let id = AttemptId::new(record.id().clone(), named);
        match self.session.program_status(&id, launch.program()) {
            ProgramStatus::Alive => Some(named),
            // The ledger recorded that it outlived its termination, and nothing since said it
            // went: still there, for all anyone knows (a second attempt never starts beside it).
            ProgramStatus::Unknown if unresponsive => Some(named),
            _ => None,
        }
    }

    /// Cancels a queued job: it fails with [`FailureReason::Cancelled`](crate::FailureReason::Cancelled).
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn cancel(&mut self, job: &JobId) -> Result<Effects, Error> {
        crate::observe::call_span!("cancel", job = job);
        self.apply(job, EventKind::CancelRequested)
    }

    /// An operator ends `job`, which is not completed, whatever it waits for: it fails with
    /// [`FailureReason::Abandoned`](crate::FailureReason::Abandoned) and a status message says
    /// so. A program that may still run is to be terminated ([`Effect::Terminate`]): do so before
    /// any rerun. A completed mandatory job refuses it.
    #[must_use = "the effects must be carried out (a launch, termination, restart or check); dropped, they are lost until recovery licenses them again"]
    pub fn abandon(&mut self, job: &JobId) -> Result<Effects, Error> {
        crate::observe::call_span!("abandon", job = job);
        let effects = self.apply(job, EventKind::AbandonRequested)?;
        if abandoned_in(self.record(job)?.state(), &self.boot) {
            self.abandoned.insert(job.clone());
        }
        Ok(effects)
    }

    /// What every unfinished job waits for, in offer order
    /// ([semantics](crate::semantics): "Every wait is named and bounded or visible"). A queued job
    /// that may start now is not listed.
    pub fn waits(&self) -> Vec<JobWait> {
        let busy = self.busy();
        self.state
            .jobs()
            .unfinished()
            .filter_map(|record| self.wait_of(record, &busy))
            .collect()
    }

    /// How long the agent may sleep before it must call the ledger again, from the session's
    /// clocks now (quinn's `poll_timeout`): the earliest back-off end, run-time limit, grace
    /// window, restart deadline or delivery retry across all jobs ([`waits`](Ledger::waits)
    /// says which). `Some(Duration::ZERO)`: call [`tick`](Ledger::tick) now, and
    /// [`deliver`](Ledger::deliver) when a status message is due (one never offered, say). `None`: nothing is
    /// timed; wake on your own events (a new offer, a program's exit, a user logging
    /// on). A queued job that may start now is found by
    /// [`next_runnable`](Ledger::next_runnable), not here.
    pub fn next_wakeup(&self) -> Option<Duration> {
        if !self.unreturned.is_empty() {
            // Effects a failed call committed but could not hand out: `tick` hands them out.
            return Some(Duration::ZERO);
        }
        let jobs = self.waits().into_iter().filter_map(|w| w.wake_after);
        let now = self.session.now();
        let delivery = if self
            .schedule
            .any_due(self.state.outbox(), now, &self.delivery)
        {
            // A status message due now (one never offered, say, left by a batch's limit).
            Some(Duration::ZERO)
        } else {
            self.schedule
                .next_due(self.state.outbox(), now, &self.delivery)
                .map(|until| wall_until(now, until))
        };
        jobs.chain(delivery).min()
    }

    /// The record of `job`, if known.
    pub fn job(&self, job: &JobId) -> Option<&JobRecord> {
        self.state.jobs().get(job)
    }

    /// Every job, in offer order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.state.jobs().iter()
    }

    /// The transition history of `job`, oldest first.
    pub fn history(&self, job: &JobId) -> Option<&[HistoryEntry]> {
        self.state.jobs().get(job).map(JobRecord::history)
    }

    /// What the store cut off or removed when it was opened (a torn last write, leftovers of an
    /// interrupted compaction): never silent. Log it at start.
    pub fn open_report(&self) -> crate::store::OpenReport {
        self.store.open_report()
    }

    /// The boot the ledger was opened in.
    pub fn boot(&self) -> &BootId {
        &self.boot
    }

    /// The store revision the ledger last committed or loaded.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The session context.
    pub fn session(&self) -> &C {
        &self.session
    }

    /// The session context, to change its facts in tests and simulations: time, users, notices.
    /// The boot is read once, at [`Ledger::open`]: a reboot ends the agent, so to simulate one,
    /// drop the ledger and open a new one with the new boot.
    pub fn session_mut(&mut self) -> &mut C {
        &mut self.session
    }

    /// Gives the store back, ending the ledger.
    pub fn into_store(self) -> S {
        self.store
    }

    fn event(&self, kind: EventKind) -> Event {
        Event {
            at: self.session.now(),
            boot: self.boot.clone(),
            since_boot: self.session.since_boot(),
            kind,
        }
    }

    fn record(&self, job: &JobId) -> Result<&JobRecord, Error> {
        self.state
            .jobs()
            .get(job)
            .ok_or_else(|| Error::UnknownJob(job.clone()))
    }

    /// Which other jobs stand in the way of a start (SEMANTICS.md: "Restarts are exclusive").
    fn busy(&self) -> Busy {
        let mut busy = Busy::default();
        let mut asks_pending = false;
        for record in self.state.jobs().unfinished() {
            asks_pending |= record.state().kind() == StateKind::Queued
                && record.spec().wait_for_pending_restart();
            match record.state() {
                JobState::Running { .. } => {
                    busy.running.get_or_insert_with(|| record.id().clone());
                    if record.spec().reboot() != RebootBehaviour::Never {
                        busy.may_restart.get_or_insert_with(|| record.id().clone());
                    }
                }
                JobState::AwaitingReboot { .. } => {
                    busy.restart_owed.get_or_insert_with(|| record.id().clone());
                }
                _ => {}
            }
        }
        // The program of a job abandoned in this boot may still run: it is in the way as a
        // running job is (a restart it makes would otherwise end, or complete, a job started
        // beside it). The session is asked of each, and they are few.
        for job in &self.abandoned {
            let Some(record) = self.state.jobs().get(job) else {
                continue;
            };
            // A restart owed when it was abandoned may still come (its program may have begun
            // the shutdown, or the agent ordered it): nothing starts beside it until it would
            // have been reported overdue.
            if self.abandoned_restart_owed(record).is_some() {
                busy.restart_owed.get_or_insert_with(|| job.clone());
            }
            if self.abandoned_program_alive(record).is_some() {
                busy.running.get_or_insert_with(|| job.clone());
                // What its program was launched to do: an offer since changes later runs only.
                if record.last_attempt_spec().reboot() != RebootBehaviour::Never {
                    busy.may_restart.get_or_insert_with(|| job.clone());
                }
            }
        }
        busy.system_restart_pending = asks_pending
            && self.session.restart_pending() == crate::session::RestartPending::Pending;
        busy
    }

    fn readiness(&self, record: &JobRecord, busy: &Busy) -> Result<(), WaitReason> {
        let now = self.session.now();
        if let JobState::Queued {
            check_before_retry: true,
            ..
        } = record.state()
        {
            return Err(WaitReason::CheckPending);
        }
        if let JobState::Queued {
            not_before: Some(until),
            ..
        } = record.state()
        {
            // A wait longer than any back-off the policy can set means the clock jumped
            // backwards: the back-off is over, not a day longer.
            let longest = crate::core::spec::add(now, record.spec().retry().max_backoff);
            if now < *until && *until <= longest {
                return Err(WaitReason::BackingOff { until: *until });
            }
        }
        // Nothing starts while a restart is owed or a job that may restart the machine runs;
        // a job that may restart the machine starts only when no other job runs.
        if let Some(job) = &busy.restart_owed {
            return Err(WaitReason::RestartPending { job: job.clone() });
        }
        if record.spec().wait_for_pending_restart() && busy.system_restart_pending {
            return Err(WaitReason::SystemRestartPending);
        }
        let restarts = record.spec().reboot() != RebootBehaviour::Never;
        let blocker = if restarts {
            busy.running.as_ref()
        } else {
            busy.may_restart.as_ref()
        };
        if let Some(job) = blocker {
            return Err(WaitReason::Exclusive { job: job.clone() });
        }
        let presence = self.session.user_presence();
        let condition = record.spec().run_condition();
        if condition.allows(presence) {
            return Ok(());
        }
        Err(match (condition, presence) {
            (_, crate::UserPresence::Unknown) => WaitReason::UserPresenceUnknown,
            (crate::RunCondition::OnlyWithUser, _) => WaitReason::NeedsUser,
            _ => WaitReason::NeedsNoUser,
        })
    }

    /// What `record` waits for, if it is unfinished and not free to start.
    fn wait_of(&self, record: &JobRecord, busy: &Busy) -> Option<JobWait> {
        let since_boot = self.session.since_boot();
        let left = |since: Duration, limit: Duration| {
            limit.saturating_sub(since_boot.saturating_sub(since))
        };
        let spec = record.spec();
        let (reason, wake_after) = match record.state() {
            JobState::Completed { .. } | JobState::Failed { .. } => return None,
            JobState::Queued { .. } => {
                let reason = self.readiness(record, busy).err()?;
                let wake = match &reason {
                    WaitReason::BackingOff { until } => {
                        Some(wall_until(self.session.now(), *until))
                    }
                    // The flag clears without the ledger hearing of it (an operator, a package).
                    WaitReason::SystemRestartPending => Some(RESTART_PENDING_RECHECK),
                    // Nothing tells the agent when an abandoned job's program ends: polled.
                    WaitReason::Exclusive { job } if self.abandoned.contains(job) => {
                        Some(ORPHAN_POLL)
                    }
                    // An abandoned job's restart stays in the way until its deadline.
                    WaitReason::RestartPending { job } if self.abandoned.contains(job) => self
                        .state
                        .jobs()
                        .get(job)
                        .and_then(|r| self.abandoned_restart_owed(r)),
                    _ => None,
                };
                (reason, wake)
            }
            JobState::Running {
                attempt,
                launch,
                terminate,
                provisional,
                ..
            } => match (provisional, terminate) {
                (Some(p), _) => (
                    WaitReason::FailureProvisional { exit: p.exit },
                    Some(left(p.since_boot, spec.failure_grace())),
                ),
                // A program left by an earlier agent process is no child of this one: nothing
                // tells it of the program's end, so its liveness is polled.
                (None, Some(t)) if t.unresponsive => (
                    WaitReason::Unresponsive,
                    self.orphans.contains(record.id()).then_some(ORPHAN_POLL),
                ),
                (None, Some(t)) => {
                    let grace = left(t.since_boot, spec.terminate_grace());
                    let wake = if self.orphans.contains(record.id()) {
                        grace.min(ORPHAN_POLL)
                    } else {
                        grace
                    };
                    (WaitReason::Terminating, Some(wake))
                }
                (None, None) => {
                    let limit = left(attempt.started_since_boot, spec.max_run_time());
                    if !launch.happened() {
                        (WaitReason::LaunchUnconfirmed, Some(limit))
                    } else if self.orphans.contains(record.id()) {
                        (WaitReason::ProgramRunning, Some(limit.min(ORPHAN_POLL)))
                    } else {
                        (WaitReason::ProgramRunning, Some(limit))
                    }
                }
            },
            JobState::AwaitingReboot {
                verifying_in: Some(_),
                ..
            } => (WaitReason::Verification, None),
            JobState::AwaitingReboot {
                cause,
                since_boot: since,
                overdue,
                ..
            } => {
                let kind = match cause {
                    RebootAttribution::RequestedByJob(kind) => *kind,
                    _ => RebootKind::Hard,
                };
                let held = self.held_restarts.iter().any(|(j, _)| j == record.id());
                let overdue_in = left(*since, spec.overdue_after(*overdue));
                let owed = WaitReason::Restart {
                    kind,
                    overdue: *overdue,
                };
                match &busy.running {
                    // Nothing tells the agent when an abandoned job's program ends: polled.
                    Some(job) if held => (
                        WaitReason::RestartHeld { job: job.clone() },
                        Some(if self.abandoned.contains(job) {
                            overdue_in.min(ORPHAN_POLL)
                        } else {
                            overdue_in
                        }),
                    ),
                    _ if held => match self.restart_verdict(record.id(), kind) {
                        Verdict::Hold { hold, wake_after } => (
                            WaitReason::RestartDeferred { hold },
                            Some(wake_after.map_or(overdue_in, |w| w.min(overdue_in))),
                        ),
                        // The policy allows it now: the next call that licenses hands it out.
                        Verdict::Release(_) => (owed, Some(Duration::ZERO)),
                    },
                    _ => (owed, Some(overdue_in)),
                }
            }
        };
        Some(JobWait {
            job: record.id().clone(),
            reason,
            wake_after,
        })
    }

    /// The job whose restart the machine went through since the last agent start, if any: a
    /// restart it asked for, or its program's (for a reboot that ends another job's attempt).
    fn restart_owner(&self) -> Option<JobId> {
        self.state.jobs().unfinished().find_map(|record| {
            let owner = match record.state() {
                JobState::AwaitingReboot {
                    requested_in,
                    verifying_in: None,
                    ..
                } => *requested_in != self.boot,
                JobState::Running {
                    attempt,
                    launch,
                    provisional,
                    ..
                } => {
                    attempt.boot != self.boot
                        && record.spec().reboot() == RebootBehaviour::RestartsMachine
                        && (launch.happened() || provisional.is_some())
                }
                _ => false,
            };
            owner.then(|| record.id().clone())
        })
    }

    /// What the session says of `record`'s program, if it runs in this boot. Only an agent
    /// start asks about a launch that was never recorded (a tick may race a spawn under way).
    fn program_status(&self, record: &JobRecord, at_open: bool) -> ProgramStatus {
        match record.state() {
            JobState::Running {
                attempt, launch, ..
            } if attempt.boot == self.boot && (at_open || launch.happened()) => {
                let id = AttemptId {
                    job: record.id().clone(),
                    run: attempt.run,
                    number: attempt.number,
                };
                self.session.program_status(&id, launch.program())
            }
            _ => ProgramStatus::Unknown,
        }
    }

    /// Licenses restarts last, and only while no other job runs (SEMANTICS.md: "a restart is never
    /// licensed while another job runs"): every `ScheduleRestart` a call produced joins the
    /// held ones, and each held restart still owed is licensed once no other job runs, after
    /// every other effect of the call (a restart ends the agent: what would follow it in the
    /// list would wait for the next boot).
    fn license(&mut self, effects: Vec<Effect>) -> Effects {
        let mut licensed = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Effect::ScheduleRestart { job, kind, .. } => self.hold(job, kind),
                other => licensed.push(other),
            }
        }
        for (job, kind) in std::mem::take(&mut self.held_restarts) {
            let owed = matches!(
                self.state.jobs().get(&job).map(JobRecord::state),
                Some(JobState::AwaitingReboot {
                    verifying_in: None,
                    ..
                })
            );
            // A program an operator abandoned that still runs is another job's, running.
            let another_runs = self
                .state
                .jobs()
                .unfinished()
                .any(|r| *r.id() != job && r.state().kind() == StateKind::Running)
                || self.abandoned.iter().any(|a| {
                    *a != job
                        && self
                            .state
                            .jobs()
                            .get(a)
                            .is_some_and(|r| self.abandoned_program_alive(r).is_some())
                });
            match (owed, another_runs) {
                (false, _) => {} // its wait ended (abandoned, or the reboot came)
                (true, true) => self.held_restarts.push((job, kind)),
                (true, false) => match self.restart_verdict(&job, kind) {
                    Verdict::Release(when) => {
                        licensed.push(Effect::ScheduleRestart { job, kind, when });
                    }
                    Verdict::Hold { .. } => self.held_restarts.push((job, kind)),
                },
            }
        }
        crate::observe::effects(&licensed);
        Effects::from(licensed)
    }

    /// Holds the restart of `job` (once), for `license` to decide.
    fn hold(&mut self, job: JobId, kind: RebootKind) {
        if !self.held_restarts.iter().any(|(j, _)| *j == job) {
            self.held_restarts.push((job, kind));
        }
    }

    /// What the restart policy of `job` says of its owed restart of `kind` now. A hard restart
    /// is under way: not the agent's to defer.
    fn restart_verdict(&self, job: &JobId, kind: RebootKind) -> Verdict {
        let Some(record) = self.state.jobs().get(job) else {
            return Verdict::Release(RestartRelease::AtOnce);
        };
        if kind == RebootKind::Hard {
            return Verdict::Release(RestartRelease::AtOnce);
        }
        let owed_since = match record.state() {
            JobState::AwaitingReboot { since_boot, .. } => *since_boot,
            _ => self.session.since_boot(),
        };
        let owed_for = self.session.since_boot().saturating_sub(owed_since);
        // The latest spec's policy: it says when the agent may restart, not what the attempt
        // means, so a server that changes it is heard at once.
        record
            .latest_spec()
            .restart_policy()
            .unwrap_or(self.restart_policy)
            .decide(self.session.now(), self.session.user_presence(), owed_for)
    }

    /// Sets the restart policy of jobs whose spec names none (by default
    /// [`RestartPolicy::Immediately`]). Restarts already held are decided again at the next
    /// call that licenses effects ([`tick`](Ledger::tick) does).
    pub fn set_restart_policy(&mut self, policy: RestartPolicy) {
        self.restart_policy = policy;
    }

    /// Applies one event to one job and commits the change, if any.
    fn apply(&mut self, job: &JobId, kind: EventKind) -> Result<Effects, Error> {
        let record = self.record(job)?;
        let event = self.event(kind);
        let step = restore_queue(
            record,
            transition(record.spec(), record.state(), &event)?,
            &event,
        );
        let again = step
            .state
            .as_ref()
            .is_some_and(|state| queued_again(record.state(), state));
        if let Some(state) = step.state {
            let change = Change {
                job: job.clone(),
                seq: record.seq() + 1,
                spec: None,
                event,
                state,
            };
            let reports = step
                .report
                .map(|report| numbered(record, report))
                .into_iter()
                .collect();
            self.commit(Commit::new(self.revision, vec![change]).with_reports(reports))?;
            if !matches!(self.record(job)?.state(), JobState::Running { .. }) {
                self.orphans.remove(job);
            }
        }
        let mut effects = self.license(step.effects);
        if again {
            self.start_again(std::slice::from_ref(job), &mut effects)?;
        }
        Ok(effects)
    }

    /// Starts again the attempts of `jobs` that were just queued again because their launch was
    /// never recorded ([semantics](crate::semantics): "A launch is a recorded fact"), each
    /// one that may start now: the same judgement as [`Ledger::begin`]'s (its run condition, no
    /// restart owed, no job in the way), so that a program is never started where a new one
    /// could not be. Its [`Effect::Launch`] joins `effects`. One that may not start waits,
    /// queued, for the agent to begin it when [`Ledger::next_runnable`] names it.
    fn start_again(&mut self, jobs: &[JobId], effects: &mut Effects) -> Result<(), Error> {
        for job in jobs {
            let busy = self.busy();
            let record = self.record(job)?;
            if record.state().kind() != StateKind::Queued || self.readiness(record, &busy).is_err()
            {
                continue;
            }
            let started = self.apply(job, EventKind::AttemptStarted)?;
            effects.extend(Vec::from(started));
        }
        Ok(())
    }

    /// Applies an event (made for each job by `kind`) to every job whose state matches,
    /// committing all changes in one batch.
    fn apply_each(
        &mut self,
        applies: impl Fn(&JobState) -> bool,
        kind: impl Fn(&Self, &JobRecord) -> EventKind,
    ) -> Result<Effects, Error> {
        // Each job's change (if its state changed) with its report, and the effects its step
        // licenses, in job order.
        let mut steps: Vec<(Option<Reported>, Vec<Effect>)> = Vec::new();
        let mut again = Vec::new();
        // Only unfinished jobs: every caller's `applies` excludes finished runs.
        for record in self
            .state
            .jobs()
            .unfinished()
            .filter(|r| applies(r.state()))
        {
            let event = self.event(kind(self, record));
            let step = restore_queue(
                record,
                transition(record.spec(), record.state(), &event)?,
                &event,
            );
            if let Some(state) = step.state {
                if queued_again(record.state(), &state) {
                    again.push(record.id().clone());
                }
                let change = Change {
                    job: record.id().clone(),
                    seq: record.seq() + 1,
                    spec: None,
                    event,
                    state,
                };
                let report = step.report.map(|report| numbered(record, report));
                steps.push((Some((change, report)), step.effects));
            } else {
                steps.push((None, step.effects));
            }
        }
        // Commits of bounded size, however many jobs changed: one commit of every job's change
        // could outgrow what a store accepts in one write (65,000 running upgrades at a new
        // boot), and the agent could then never start again. Each job's change goes with its
        // report; a crash between two commits leaves the rest for the next call to redo. A commit
        // that fails after others succeeded must not lose what they licensed: their effects are
        // kept, and the next `tick` hands them out (`next_wakeup` says to call it now).
        let mut effects = Vec::new();
        let mut steps = steps.into_iter().peekable();
        while steps.peek().is_some() {
            let mut changes = Vec::new();
            let mut reports = Vec::new();
            let mut batch_effects = Vec::new();
            while changes.len() < MAX_CHANGES_PER_COMMIT
                && let Some((change, step_effects)) = steps.next()
            {
                if let Some((change, report)) = change {
                    changes.push(change);
                    reports.extend(report);
                }
                batch_effects.extend(step_effects);
            }
            let ended: Vec<JobId> = changes
                .iter()
                .filter(|c| !matches!(c.state, JobState::Running { .. }))
                .map(|c| c.job.clone())
                .collect();
            if !changes.is_empty()
                && let Err(error) =
                    self.commit(Commit::new(self.revision, changes).with_reports(reports))
            {
                // Restarts join the held ones, decided again by the next call that licenses
                // (the job may be abandoned, or another started, meanwhile); the rest wait for
                // the next tick.
                for effect in effects {
                    match effect {
                        Effect::ScheduleRestart { job, kind, .. } => self.hold(job, kind),
                        other => self.unreturned.push(other),
                    }
                }
                return Err(error);
            }
            effects.extend(batch_effects);
            for job in &ended {
                self.orphans.remove(job);
            }
        }
        let mut effects = self.license(effects);
        self.start_again(&again, &mut effects)?;
        Ok(effects)
    }

    /// `effects`, after the effects an earlier call committed but could not hand out (see
    /// `apply_each`).
    /// Only those the jobs' states still license: a call since may have changed them (an
    /// attempt said lost and launched again must not be terminated by the old licence).
    fn with_unreturned(&mut self, effects: Effects) -> Effects {
        if self.unreturned.is_empty() {
            return effects;
        }
        let mut all = std::mem::take(&mut self.unreturned);
        all.retain(|effect| self.still_licensed(effect));
        all.extend(Vec::from(effects));
        all.into()
    }

    /// Whether the state of `effect`'s job still licenses it: a launch while its attempt runs
    /// with its launch not recorded, a termination while its attempt is being terminated, a
    /// check while its attempt is the one under way or whose check is awaited.
    fn still_licensed(&self, effect: &Effect) -> bool {
        let same = |running: &crate::core::state::Attempt, id: &AttemptId| {
            running.run == id.run && running.number == id.number
        };
        let (Effect::Launch(id) | Effect::Terminate(id) | Effect::Verify(id)) = effect else {
            return true; // restarts are held again instead, and decided by the next call
        };
        let Ok(record) = self.record(&id.job) else {
            return false;
        };
        match (effect, record.state()) {
            (
                Effect::Launch(_),
                JobState::Running {
                    attempt, launch, ..
                },
            ) => same(attempt, id) && !launch.happened(),
            (
                Effect::Terminate(_),
                JobState::Running {
                    attempt,
                    terminate: Some(_),
                    ..
                },
            ) => same(attempt, id),
            (Effect::Verify(_), _) => record.current_attempt().as_ref() == Some(id),
            _ => false,
        }
    }

    /// Commits to the store, then to the ledger's own jobs and outbox: they never hold what the
    /// store did not acknowledge. The commit is checked first, so that a store that would accept
    /// a commit the ledger cannot apply is never asked to.
    fn commit(&mut self, commit: Commit) -> Result<(), Error> {
        self.state
            .check(&commit)
            .map_err(crate::store::StoreError::from)?;
        let observed = crate::observe::before_commit(&self.state, &commit);
        self.revision = self.store.commit(&commit)?;
        self.state
            .apply_checked(&commit)
            .map_err(crate::store::StoreError::from)?;
        self.state.bound_runs(&commit, &self.retention);
        crate::observe::committed(observed, &commit, self.revision);
        Ok(())
    }
}

/// A change, with the status message it reports if any.
type Reported = (Change, Option<StatusMessage>);

/// `report` numbered among its attempt's reports of a program that will not go. `transition`
/// sees only the job's state and reports each with `overdue` 1; an attempt launched again (its
/// launch never recorded, then found after a reboot) may be terminated and reported again, and
/// each report needs a key of its own: the outbox refuses a key it holds, and a receiver drops
/// one it had. Counted in the history of the job's current run, which retention keeps whole.
fn numbered(record: &JobRecord, mut report: StatusMessage) -> StatusMessage {
    if report.key.state == StateKind::Running && report.key.overdue > 0 {
        let (run, number) = (report.key.run, report.key.attempt);
        let mut earlier = 0u32;
        let mut was = false;
        for entry in record.history() {
            let now = matches!(
                &entry.state,
                JobState::Running { attempt, terminate: Some(t), .. }
                    if t.unresponsive && attempt.run == run && attempt.number == number
            );
            if now && !was {
                earlier = earlier.saturating_add(1);
            }
            was = now;
        }
        report.key.overdue = earlier.saturating_add(1);
    }
    report
}

/// Whether `state` is a job abandoned by an operator in `boot` whose attempt had begun (its
/// program may still run).
fn abandoned_in(state: &JobState, boot: &BootId) -> bool {
    matches!(
        state,
        JobState::Failed {
            reason: crate::FailureReason::Abandoned,
            attempt: Some(attempt),
            ..
        } if attempt.boot == *boot
    )
}

/// `step`, or, when it queued again an attempt whose launch was never recorded
/// ([`queued_again`]), that step with what the attempt's queue held before it began put back
/// from the job's history, and the check a restart since then owes
/// ([`requeued`](crate::core::transition::requeued)). The entries since the attempt began are
/// all `Running`; the one before them is its queue (the current run's history is always kept).
fn restore_queue(record: &JobRecord, step: Step, event: &Event) -> Step {
    let (Some(after), JobState::Running { attempt: began, .. }) = (&step.state, record.state())
    else {
        return step;
    };
    if !queued_again(record.state(), after) {
        return step;
    }
    let begun_from = record
        .history()
        .iter()
        .rev()
        .map(|entry| &entry.state)
        .find(|state| !matches!(state, JobState::Running { .. }));
    begun_from
        // Queued again, the attempt runs under the latest spec, as a retry not yet begun does,
        // and is judged by it.
        .and_then(|from| {
            crate::core::transition::requeued(record.latest_spec(), began, from, event)
        })
        .unwrap_or(step)
}

/// Whether a step from `before` to `after` queued an attempt again as itself: its launch was
/// never recorded, so it never ran (a failed attempt is queued as the next one).
fn queued_again(before: &JobState, after: &JobState) -> bool {
    matches!(
        (before, after),
        (
            JobState::Running { attempt: a, launch, .. },
            JobState::Queued { run, attempt, .. },
        ) if !launch.happened() && a.run == *run && a.number == *attempt
    )
}

/// The jobs that stand in the way of a start, found once per query.
#[derive(Default)]
struct Busy {
    /// A running job.
    running: Option<JobId>,
    /// A running job that may restart the machine.
    may_restart: Option<JobId>,
    /// A job waiting for a restart.
    restart_owed: Option<JobId>,
    /// The session says a restart is pending (asked once per query, and only when a queued job
    /// cares: the session may run a helper to answer).
    system_restart_pending: bool,
}

/// The wall-clock time from `now` until `until` (zero if it passed).
fn wall_until(now: Timestamp, until: Timestamp) -> Duration {
    (until - now).to_std().unwrap_or(Duration::ZERO)
}

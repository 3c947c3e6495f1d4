//! The ledger an agent drives: jobs in a store, transitions committed before their effects.

use crate::{
    AttemptId, BootId, Change, Commit, Delivery, DeliveryPolicy, Effect, Error, Event, EventKind,
    HistoryEntry, JobId, JobRecord, JobSpec, JobState, RebootKind, Replay, Revision,
    SessionContext, StateKind, StatusMessage, StatusSink, Store, Timestamp, WaitReason, transition,
};

/// What advertising a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advertisement {
    /// The job was new: it is now queued.
    Queued,
    /// The job was already known and is unchanged (its first spec stands). An optional
    /// completed or a failed job runs again only on a [`Ledger::rerun`] request.
    AlreadyKnown {
        /// Its current state.
        state: StateKind,
    },
    /// The job is a completed mandatory job: it will never run again.
    CompletedWillNotRun,
}

/// What the agent should do next, from [`Ledger::next_runnable`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextJob {
    /// This job may start now: call [`Ledger::begin`].
    Run(JobId),
    /// Queued jobs exist, but none may start now; the first one waits for this reason.
    Wait {
        /// The first queued job.
        job: JobId,
        /// Why it waits.
        reason: WaitReason,
    },
    /// No job is queued.
    Idle,
}

/// The job ledger: the one place an agent records and decides what its jobs do.
///
/// Every mutating call builds an [`Event`] from the session (its time, the boot read at open),
/// runs the pure [`transition`], commits the new state to the store, and only then returns the
/// [`Effect`]s the caller must carry out. If the commit fails, nothing changes and no effect is
/// returned.
///
/// # Method groups and call order
///
/// - **Open:** [`Ledger::open`] loads the store and reconciles every unfinished job against the
///   current boot. Carry out the effects it returns first (verifications, owed restarts).
/// - **Inputs from the server:** [`advertise`](Ledger::advertise),
///   [`rerun`](Ledger::rerun), [`cancel`](Ledger::cancel).
/// - **The run loop:** [`next_runnable`](Ledger::next_runnable), then
///   [`begin`](Ledger::begin) (launch the program only after it returns), then the program's
///   [`program_exited`](Ledger::program_exited); [`expect_reboot`](Ledger::expect_reboot) before
///   any restart the agent starts itself; [`verification`](Ledger::verification) with the result
///   of each [`Effect::Verify`]; [`tick`](Ledger::tick) now and then (run-time limits).
/// - **Status:** [`deliver`](Ledger::deliver) on every turn of the loop: pending status messages
///   go to the sink, with back-off after a failure.
/// - **Hints:** [`shutdown_notice`](Ledger::shutdown_notice) when one arrives; nothing depends on it.
/// - **Getters:** [`job`](Ledger::job), [`jobs`](Ledger::jobs), [`history`](Ledger::history),
///   [`outbox`](Ledger::outbox),
///   [`boot`](Ledger::boot), [`revision`](Ledger::revision), [`session`](Ledger::session).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use jobstate::*;
///
/// let session = SessionFacts {
///     boot: BootId::new("boot-1").unwrap(),
///     user: UserPresence::NoneLoggedOn,
///     context: ExecutionContext::Service,
///     notices: NoticeDelivery::NotDelivered,
///     now: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
///     since_boot: std::time::Duration::from_secs(60),
/// };
/// let (mut ledger, _recovered) = Ledger::open(MemoryStore::new(), session)?;
/// let spec = JobSpec::new(JobId::new("patch-kb123")?);
/// assert_eq!(ledger.advertise(spec.clone())?, Advertisement::Queued);
///
/// let NextJob::Run(job) = ledger.next_runnable() else { panic!("nothing to run") };
/// let attempt = ledger.begin(&job)?;          // Running is durable: launch the program now
/// let effects = ledger.program_exited(&attempt, 0)?;
/// assert!(effects.is_empty());                 // nothing left to do...
/// assert_eq!(ledger.outbox().count(), 1);     // ...but a status message to deliver
/// assert_eq!(ledger.advertise(spec)?, Advertisement::CompletedWillNotRun);
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
    /// Consecutive failed deliveries and the time before which none is tried. In memory only:
    /// after a restart, pending messages are offered at once.
    delivery_failures: u32,
    delivery_not_before: Option<Timestamp>,
}

impl<S: Store, C: SessionContext> Ledger<S, C> {
    /// Loads `store` and reconciles every unfinished job against the current boot (DESIGN.md:
    /// "Reboot truth comes from boot identity"), committing the result in one batch.
    ///
    /// Returns the ledger and the effects recovery licenses: verifications to run after a
    /// reboot, restarts and terminations still owed. Status messages of jobs that completed
    /// across the reboot are in the outbox: [`deliver`](Ledger::deliver) sends them.
    pub fn open(mut store: S, session: C) -> Result<(Self, Vec<Effect>), Error> {
        let snapshot = store.load()?;
        let boot = session.boot_id()?;
        let state = Replay::from_snapshot(snapshot.jobs, snapshot.outbox)
            .map_err(crate::StoreError::from)?;
        let mut ledger = Self {
            store,
            session,
            boot,
            revision: snapshot.revision,
            state,
            delivery: DeliveryPolicy::default(),
            delivery_failures: 0,
            delivery_not_before: None,
        };
        let effects = ledger.apply_to_all(EventKind::AgentStarted, |s| !s.is_terminal())?;
        Ok((ledger, effects))
    }

    /// Advertises a job: a new id is queued; a known id changes nothing and says what it is.
    /// A completed mandatory job answers [`Advertisement::CompletedWillNotRun`].
    pub fn advertise(&mut self, spec: JobSpec) -> Result<Advertisement, Error> {
        if let Some(record) = self.state.jobs().get(spec.id()) {
            let event = self.event(EventKind::Advertised);
            // Advertising a known job is an observation: it never changes the job.
            let step = transition(record.spec(), record.state(), &event)?;
            debug_assert!(step.state.is_none());
            let state = record.state().kind();
            return Ok(
                if state == StateKind::Completed && record.spec().is_mandatory() {
                    Advertisement::CompletedWillNotRun
                } else {
                    Advertisement::AlreadyKnown { state }
                },
            );
        }
        let change = Change {
            job: spec.id().clone(),
            seq: 1,
            spec: Some(spec),
            event: self.event(EventKind::Advertised),
            state: JobState::initial(),
        };
        self.commit(Commit::new(self.revision, vec![change]))?;
        Ok(Advertisement::Queued)
    }

    /// The first queued job (in advertisement order) that may start in the current session, or
    /// why the first queued job must wait.
    pub fn next_runnable(&self) -> NextJob {
        let mut first_wait = None;
        for record in self.state.jobs().iter() {
            if record.state().kind() != StateKind::Queued {
                continue;
            }
            match self.readiness(record) {
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
    /// the attempt. Launch the program only after this returns `Ok`.
    pub fn begin(&mut self, job: &JobId) -> Result<AttemptId, Error> {
        let record = self.record(job)?;
        if record.state().kind() == StateKind::Queued {
            self.readiness(record)
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

    /// Records that the program of `attempt` exited with `code`, mapped by the job's exit-code
    /// policy.
    pub fn program_exited(&mut self, attempt: &AttemptId, code: i32) -> Result<Vec<Effect>, Error> {
        let kind = EventKind::ProgramExited {
            attempt: attempt.attempt,
            code,
        };
        self.apply(&attempt.job, kind)
    }

    /// Commits `AwaitingReboot` for `attempt` before a restart happens. For a soft restart the
    /// returned [`Effect::ScheduleRestart`] licenses the agent to restart the machine.
    pub fn expect_reboot(
        &mut self,
        attempt: &AttemptId,
        kind: RebootKind,
    ) -> Result<Vec<Effect>, Error> {
        let kind = EventKind::RebootExpected {
            attempt: attempt.attempt,
            kind,
        };
        self.apply(&attempt.job, kind)
    }

    /// Records the result of the verification (detection check) of `attempt` after a reboot.
    pub fn verification(
        &mut self,
        attempt: &AttemptId,
        installed: bool,
    ) -> Result<Vec<Effect>, Error> {
        let kind = EventKind::Verified {
            attempt: attempt.attempt,
            installed,
        };
        self.apply(&attempt.job, kind)
    }

    /// Records a shutdown notice (a hint: nothing depends on it) on every running job.
    pub fn shutdown_notice(&mut self) -> Result<Vec<Effect>, Error> {
        self.apply_to_all(EventKind::ShutdownNoticed, |s| {
            s.kind() == StateKind::Running
        })
    }

    /// Checks run-time limits, on the boot's monotonic clock: the program of an attempt past its
    /// maximum run time must be terminated ([`Effect::Terminate`]); the attempt ends as timed out
    /// when its exit is recorded with [`program_exited`](Ledger::program_exited).
    pub fn tick(&mut self) -> Result<Vec<Effect>, Error> {
        self.apply_to_all(EventKind::Tick, |s| s.kind() == StateKind::Running)
    }

    /// Asks to run `job` again (a new run). Refused for a completed mandatory job.
    pub fn rerun(&mut self, job: &JobId) -> Result<Vec<Effect>, Error> {
        self.apply(job, EventKind::RerunRequested)
    }

    /// Cancels a queued job: it fails with [`FailureReason::Cancelled`](crate::FailureReason::Cancelled).
    pub fn cancel(&mut self, job: &JobId) -> Result<Vec<Effect>, Error> {
        self.apply(job, EventKind::CancelRequested)
    }

    /// Hands pending status messages to `sink`, batch by batch, and commits the acknowledgement
    /// of those it accepts (they leave the outbox). The rest stay pending and are offered again
    /// after a back-off computed from the session's time. A sink failure never changes a job's
    /// state; only a store failure is an error.
    ///
    /// Call it from the agent loop whoever is logged on: delivery depends on nothing but the
    /// store and the sink. The back-off is computed from the time the session supplies.
    ///
    /// A store failure while acknowledging returns the error, and the batch (which the sink
    /// has) is offered again after a back-off: receivers drop duplicates by key.
    pub fn deliver<K: StatusSink>(&mut self, sink: &mut K) -> Result<Delivery, Error> {
        let now = self.session.now();
        let mut delivery = Delivery {
            delivered: 0,
            pending: self.state.outbox().len(),
            failure: None,
            retry_at: None,
        };
        if let Some(until) = self.delivery_not_before {
            // A wait longer than the longest back-off means the clock jumped back: it is over.
            let longest = crate::spec::add(now, self.delivery.max_backoff);
            if now < until && until <= longest {
                delivery.retry_at = Some(until);
                return Ok(delivery);
            }
        }
        while !self.state.outbox().is_empty() {
            let batch: Vec<StatusMessage> = self
                .state
                .outbox()
                .iter()
                .take(self.delivery.batch_size.max(1))
                .cloned()
                .collect();
            let (accepted, failure) = match sink.deliver(&batch) {
                Ok(keys) => {
                    // Only keys that were offered count, each once.
                    let mut accepted: Vec<_> = keys
                        .into_iter()
                        .filter(|k| batch.iter().any(|m| &m.key == k))
                        .collect();
                    accepted.sort();
                    accepted.dedup();
                    let failure = (accepted.len() < batch.len()).then(|| {
                        format!(
                            "the sink accepted {} of {} messages",
                            accepted.len(),
                            batch.len()
                        )
                    });
                    (accepted, failure)
                }
                Err(error) => (Vec::new(), Some(error.to_string())),
            };
            if !accepted.is_empty() {
                let count = accepted.len();
                let acknowledged = Commit::new(self.revision, Vec::new()).with_delivered(accepted);
                if let Err(error) = self.commit(acknowledged) {
                    // The sink has them, the store does not know: they will be offered again,
                    // after a back-off rather than on the next turn.
                    self.back_off(now);
                    return Err(error);
                }
                delivery.delivered += count;
            }
            if let Some(failure) = failure {
                delivery.failure = Some(failure);
                delivery.retry_at = Some(self.back_off(now));
                break;
            }
            self.delivery_failures = 0;
            self.delivery_not_before = None;
        }
        delivery.pending = self.state.outbox().len();
        Ok(delivery)
    }

    /// Records a failed delivery and returns when to try again.
    fn back_off(&mut self, now: Timestamp) -> Timestamp {
        self.delivery_failures = self.delivery_failures.saturating_add(1);
        let until = crate::spec::add(now, self.delivery.backoff(self.delivery_failures));
        self.delivery_not_before = Some(until);
        until
    }

    /// The status messages committed and not yet acknowledged, oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &StatusMessage> {
        self.state.outbox().iter()
    }

    /// Sets how [`deliver`](Ledger::deliver) batches and backs off.
    pub fn set_delivery_policy(&mut self, policy: DeliveryPolicy) {
        self.delivery = policy;
    }

    /// The record of `job`, if known.
    pub fn job(&self, job: &JobId) -> Option<&JobRecord> {
        self.state.jobs().get(job)
    }

    /// Every job, in advertisement order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.state.jobs().iter()
    }

    /// The transition history of `job`, oldest first.
    pub fn history(&self, job: &JobId) -> Option<&[HistoryEntry]> {
        self.state.jobs().get(job).map(JobRecord::history)
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

    fn readiness(&self, record: &JobRecord) -> Result<(), WaitReason> {
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
            let longest = crate::spec::add(now, record.spec().retry_policy().max_backoff);
            if now < *until && *until <= longest {
                return Err(WaitReason::BackingOff { until: *until });
            }
        }
        let presence = self.session.user_presence();
        let condition = record.spec().condition();
        if condition.allows(presence) {
            return Ok(());
        }
        Err(match (condition, presence) {
            (_, crate::UserPresence::Unknown) => WaitReason::UserPresenceUnknown,
            (crate::RunCondition::OnlyWithUser, _) => WaitReason::NeedsUser,
            _ => WaitReason::NeedsNoUser,
        })
    }

    /// Applies one event to one job and commits the change, if any.
    fn apply(&mut self, job: &JobId, kind: EventKind) -> Result<Vec<Effect>, Error> {
        let record = self.record(job)?;
        let event = self.event(kind);
        let step = transition(record.spec(), record.state(), &event)?;
        if let Some(state) = step.state {
            let change = Change {
                job: job.clone(),
                seq: record.seq() + 1,
                spec: None,
                event,
                state,
            };
            let reports = step.report.into_iter().collect();
            self.commit(Commit::new(self.revision, vec![change]).with_reports(reports))?;
        }
        Ok(step.effects)
    }

    /// Applies one event to every job whose state matches, committing all changes in one batch.
    fn apply_to_all(
        &mut self,
        kind: EventKind,
        applies: impl Fn(&JobState) -> bool,
    ) -> Result<Vec<Effect>, Error> {
        let event = self.event(kind);
        let mut changes = Vec::new();
        let mut reports = Vec::new();
        let mut effects = Vec::new();
        for record in self.state.jobs().iter().filter(|r| applies(r.state())) {
            let step = transition(record.spec(), record.state(), &event)?;
            if let Some(state) = step.state {
                changes.push(Change {
                    job: record.id().clone(),
                    seq: record.seq() + 1,
                    spec: None,
                    event: event.clone(),
                    state,
                });
            }
            reports.extend(step.report);
            effects.extend(step.effects);
        }
        if !changes.is_empty() {
            self.commit(Commit::new(self.revision, changes).with_reports(reports))?;
        }
        Ok(effects)
    }

    /// Commits to the store, then to the ledger's own jobs and outbox: they never hold what the
    /// store did not acknowledge. The commit is checked first, so that a store that would accept
    /// a commit the ledger cannot apply is never asked to.
    fn commit(&mut self, commit: Commit) -> Result<(), Error> {
        self.state.check(&commit).map_err(crate::StoreError::from)?;
        self.revision = self.store.commit(&commit)?;
        self.state
            .apply_checked(&commit)
            .map_err(crate::StoreError::from)?;
        Ok(())
    }
}

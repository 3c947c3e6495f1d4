//! Property test of the ledger as a state machine (proptest-state-machine).
//!
//! The reference model generates operations over a fixed catalogue of jobs; the system under
//! test is a real `Ledger` over a `MemoryStore` inside a simulated world: programs that run
//! until they exit, are terminated, die in a reboot or with the agent; launches recorded or not;
//! an agent that crashes (the ledger is dropped and reopened, and the old one is kept as a stale
//! writer), with or without killing its programs; reboots with and without a shutdown notice; a
//! clock that jumps backwards; users logging on and off; duplicate offers, rerun, cancel
//! and abandon requests, checks that say "not yet", replayed and out-of-order events (an older
//! attempt's exit while a newer attempt runs).
//!
//! `check_invariants` asserts SEMANTICS.md invariants 1, 3, 4, 5, 6, 7 and 8 (and that a fresh load
//! of the store always equals what the ledger holds: nothing acknowledged is lost).
//!
//! Default: 256 cases of up to 50 steps. `JOBSTATE_PROPTEST_MULTIPLIER=100` runs 100 times more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jobstate::report::{Answers, StatusSink};
use jobstate::session::{LivePrograms, RestartPending, SessionFacts};
use jobstate::store::{JobRecord, Store, StoreError};
use jobstate::{
    AttemptId, AttemptRef, CheckResult, Effect, Effects, Error, JobId, JobSpec, JobState, Ledger,
    MemoryStore, Offer, ProgramExit, ProgramId, RebootBehaviour, RebootKind, RestartPolicy,
    RetryPolicy, RunCondition, StateKind, StatusKey, StatusMessage, TransitionError, UserPresence,
    WaitReason,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use crate::common::*;

/// The catalogue: one of each kind of job an agent meets.
fn catalogue() -> Vec<JobSpec> {
    let quick = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(60),
        multiplier: 2,
        max_backoff: Duration::from_secs(600),
    };
    vec![
        msi_job(job("os-upgrade"))
            .with_reboot(RebootBehaviour::RestartsMachine)
            .with_verify_after_reboot(true)
            .with_max_reboots(2)
            .with_retry(quick),
        msi_job(job("os-upgrade-unverified")).with_reboot(RebootBehaviour::RestartsMachine),
        msi_job(job("msi-patch"))
            .with_reboot(RebootBehaviour::MayRequest)
            .with_restart_when_pending(true)
            .with_run_condition(RunCondition::OnlyWithoutUser)
            .with_max_run_time(Duration::from_secs(1800))
            .with_retry(quick),
        msi_job(job("optional-tool"))
            .with_mandatory(false)
            .with_wait_for_pending_restart(true)
            .with_run_condition(RunCondition::OnlyWithUser)
            .with_max_run_time(Duration::from_secs(900)),
    ]
}

/// How the agent gets from `begin` to the launch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launching {
    /// It spawns the program and records the launch.
    Recorded,
    /// It spawns the program and dies before recording the launch: the program runs.
    Unrecorded,
    /// It dies before spawning the program: nothing runs.
    NeverSpawned,
}

#[derive(Debug, Clone)]
enum Op {
    Offer(usize),
    /// Begin job `i`, then launch it as `Launching` says.
    Begin(usize, Launching),
    Exit(usize, i32),
    ReplayExit(usize, i32),
    /// The exit of an older attempt of job `i` arrives while a newer attempt runs.
    OlderExit(usize),
    /// Job `i`'s program fails (1603), its back-off passes, and its next attempt starts: a
    /// shortcut to states with an older attempt behind the running one.
    FailAndRetry(usize),
    ExpectReboot(usize, RebootKind),
    Verify(usize, CheckResult),
    ShutdownNotice,
    Tick(i64),
    ClockBack(i64),
    SetUser(UserPresence),
    /// The agent dies; with `true` its programs die with it (`KillMode=control-group`).
    Crash(bool),
    /// The agent knows job `i`'s program is gone (it kills it and cannot collect its status).
    Lost(usize),
    /// An operator abandons job `i`.
    Abandon(usize),
    Reboot {
        notice: bool,
    },
    Rerun(usize),
    Cancel(usize),
    StaleWrite(usize),
    /// The agent loop delivers pending status messages.
    Deliver,
    /// The site server will refuse the next `n` deliveries.
    SinkFails(u32),
    /// The site server will reject the first message of each of the next `n` deliveries for
    /// good (a dead letter).
    SinkRejects(u32),
    /// The site server will answer "retry" for every message of the next `n` deliveries.
    SinkRetries(u32),
    /// An operator re-queues the oldest dead letter, or discards it.
    Requeue {
        discard: bool,
    },
    /// The sink accepts a delivery, then the agent dies before committing the acknowledgement.
    CrashAfterDelivery,
    /// The next step of job `i` toward success: offer, begin, exit 0, or a positive check.
    Progress(usize),
    /// Job `i`'s program is killed by a signal (the shutdown's SIGTERM, an OOM kill).
    ExitSignal(usize, i32),
    /// The operating system says a restart is pending, or not (a reboot clears it).
    SetRestartPending(bool),
    /// The server offers again job `i` with a changed spec: made mandatory, another run-time
    /// limit.
    Reoffer(usize),
    /// The agent's default restart policy changes (and is given at every later open).
    SetPolicy(RestartPolicy),
}

struct Reference;

impl ReferenceStateMachine for Reference {
    /// The reference only tracks how many steps were generated; the world is in the SUT.
    type State = ();
    type Transition = Op;

    fn init_state() -> BoxedStrategy<()> {
        Just(()).boxed()
    }

    fn transitions(_: &()) -> BoxedStrategy<Op> {
        let jobs = 0..catalogue().len();
        // Success weighs most, so that most cases reach a completed mandatory job to hold.
        let code = prop_oneof![
            5 => Just(0),
            1 => Just(1707),
            1 => Just(3010),
            1 => Just(1641),
            1 => Just(1618),
            1 => Just(1603)
        ];
        let check = prop_oneof![
            3 => Just(CheckResult::Installed),
            2 => Just(CheckResult::NotInstalled),
            2 => Just(CheckResult::NotYet)
        ];
        prop_oneof![
            3 => jobs.clone().prop_map(Op::Offer),
            4 => (
                jobs.clone(),
                prop_oneof![
                    8 => Just(Launching::Recorded),
                    1 => Just(Launching::Unrecorded),
                    1 => Just(Launching::NeverSpawned)
                ]
            )
                .prop_map(|(j, l)| Op::Begin(j, l)),
            4 => (jobs.clone(), code.clone()).prop_map(|(j, c)| Op::Exit(j, c)),
            1 => (jobs.clone(), code).prop_map(|(j, c)| Op::ReplayExit(j, c)),
            2 => jobs.clone().prop_map(Op::OlderExit),
            2 => jobs.clone().prop_map(Op::FailAndRetry),
            1 => (jobs.clone(), prop_oneof![Just(RebootKind::Soft), Just(RebootKind::Hard)])
                .prop_map(|(j, k)| Op::ExpectReboot(j, k)),
            2 => (jobs.clone(), check).prop_map(|(j, v)| Op::Verify(j, v)),
            1 => Just(Op::ShutdownNotice),
            2 => prop_oneof![1i64..120, 120i64..3000].prop_map(Op::Tick),
            1 => (1i64..600).prop_map(Op::ClockBack),
            1 => prop_oneof![
                Just(UserPresence::LoggedOn),
                Just(UserPresence::NoneLoggedOn),
                Just(UserPresence::Unknown)
            ]
            .prop_map(Op::SetUser),
            2 => any::<bool>().prop_map(Op::Crash),
            1 => jobs.clone().prop_map(Op::Lost),
            1 => jobs.clone().prop_map(Op::Abandon),
            2 => any::<bool>().prop_map(|notice| Op::Reboot { notice }),
            1 => jobs.clone().prop_map(Op::Rerun),
            1 => jobs.clone().prop_map(Op::Cancel),
            1 => jobs.clone().prop_map(Op::StaleWrite),
            3 => Just(Op::Deliver),
            4 => jobs.clone().prop_map(Op::Progress),
            1 => (1u32..4).prop_map(Op::SinkFails),
            1 => (1u32..3).prop_map(Op::SinkRejects),
            1 => (1u32..4).prop_map(Op::SinkRetries),
            1 => any::<bool>().prop_map(|discard| Op::Requeue { discard }),
            1 => Just(Op::CrashAfterDelivery),
            1 => (jobs.clone(), prop_oneof![Just(9), Just(15)])
                .prop_map(|(j, s)| Op::ExitSignal(j, s)),
            1 => any::<bool>().prop_map(Op::SetRestartPending),
            1 => jobs.clone().prop_map(Op::Reoffer),
            1 => prop_oneof![
                Just(RestartPolicy::Immediately),
                Just(RestartPolicy::NextNaturalBoot),
                Just(RestartPolicy::WhenNoUser {
                    at_most: Duration::from_secs(1800)
                }),
                Just(RestartPolicy::Window(
                    jobstate::MaintenanceWindow::new(2, 0, Duration::from_secs(3600))
                        .expect("a valid window")
                )),
            ]
            .prop_map(Op::SetPolicy),
        ]
        .boxed()
    }

    fn apply(state: (), _: &Op) {
        state
    }
}

/// The world around the ledger.
struct World {
    specs: Vec<JobSpec>,
    store: MemoryStore,
    ledger: Option<MemLedger>,
    /// A ledger left over from before the last crash or reboot: a stale writer.
    stale: Option<MemLedger>,
    session: SessionFacts,
    boots: u32,
    /// Programs alive now, by job (invariant 4: at most one each).
    live: HashMap<JobId, AttemptId>,
    /// Verifications licensed and not yet answered.
    verify: HashMap<JobId, AttemptId>,
    /// Every attempt ever launched, for replays.
    launched: Vec<AttemptId>,
    /// Completed mandatory jobs: the run that completed and the launches seen by then.
    tombstones: HashMap<JobId, (u32, usize)>,
    /// The site server.
    server: Server,
    /// Dead letters an operator discarded: reported, never to be delivered.
    discarded: std::collections::HashSet<StatusKey>,
    next_pid: u32,
    /// The agent's default restart policy.
    policy: RestartPolicy,
    /// How much history the ledger keeps: every third case keeps everything, one the default,
    /// one the least (no earlier runs; tombstones at every open), so that invariant 1 is
    /// proven over tombstones too.
    retention: jobstate::store::Retention,
}

/// The site server: refuses deliveries on demand, counts every message it accepts by key.
#[derive(Default)]
struct Server {
    fail_next: u32,
    reject_next: u32,
    retry_next: u32,
    received: HashMap<StatusKey, usize>,
}

impl StatusSink for Server {
    type Error = &'static str;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err("site server unreachable");
        }
        if self.retry_next > 0 {
            self.retry_next -= 1;
            for message in batch {
                answers.retry(&message.key, "HTTP 500");
            }
            return Ok(());
        }
        let mut batch = batch.iter();
        if self.reject_next > 0 {
            self.reject_next -= 1;
            if let Some(first) = batch.next() {
                answers.reject(&first.key, "HTTP 409");
            }
        }
        for message in batch {
            *self.received.entry(message.key.clone()).or_default() += 1;
            answers.accept(&message.key);
        }
        Ok(())
    }
}

static CASES: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
// What the run exercised, so that a vacuous run shows.
static TOMBSTONES: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Completed mandatory jobs found compacted to a tombstone at an agent start.
static COMPACTED_HELD: AtomicU64 = AtomicU64::new(0);
static STALE_REFUSED: AtomicU64 = AtomicU64::new(0);
static REBOOTS_MID_JOB: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static DEAD_LETTERED: AtomicU64 = AtomicU64::new(0);
static REQUEUED: AtomicU64 = AtomicU64::new(0);
static REDELIVERIES_OWED: AtomicU64 = AtomicU64::new(0);
static OLDER_EXITS_REFUSED: AtomicU64 = AtomicU64::new(0);
static LOST_PROGRAMS_ENDED: AtomicU64 = AtomicU64::new(0);
static RELAUNCHES: AtomicU64 = AtomicU64::new(0);
static NOT_YET: AtomicU64 = AtomicU64::new(0);
static ABANDONED: AtomicU64 = AtomicU64::new(0);
static SIGNALLED: AtomicU64 = AtomicU64::new(0);
static SPEC_CHANGES: AtomicU64 = AtomicU64::new(0);
static RESTARTS_DEFERRED: AtomicU64 = AtomicU64::new(0);

impl World {
    fn ledger(&mut self) -> &mut MemLedger {
        self.ledger
            .as_mut()
            .expect("the world always has an open ledger between steps")
    }

    fn id(&self, i: usize) -> JobId {
        self.specs[i].id().clone()
    }

    fn record(&self, i: usize) -> Option<JobRecord> {
        self.ledger
            .as_ref()
            .and_then(|l| l.job(self.specs[i].id()).cloned())
    }

    /// The session as the world is now: which programs are alive, among the rest.
    fn facts(&self) -> SessionFacts {
        SessionFacts {
            programs: LivePrograms::Known(self.live.values().cloned().collect()),
            ..self.session.clone()
        }
    }

    fn sync_session(&mut self) {
        let facts = self.facts();
        *self.ledger().session_mut() = facts;
    }

    fn open(&mut self) {
        let options = jobstate::LedgerOptions::default()
            .with_restart_policy(self.policy)
            .with_retention(self.retention);
        let (ledger, effects) = Ledger::open_with(self.store.clone(), self.facts(), options)
            .unwrap_or_else(|e| panic!("reopening a good store failed: {e}"));
        let compacted = ledger
            .jobs()
            .filter(|r| {
                r.is_tombstone()
                    && r.latest_spec().is_mandatory()
                    && r.state().kind() == StateKind::Completed
            })
            .count();
        COMPACTED_HELD.fetch_add(compacted as u64, Ordering::Relaxed);
        self.ledger = Some(ledger);
        self.carry_out(effects);
    }

    /// Starts a program for `attempt` (after `Running` was committed).
    fn spawn(&mut self, attempt: AttemptId) {
        // Invariant 4: never two attempts of one job running at once.
        assert!(
            !self.live.contains_key(&attempt.job),
            "invariant 4: {attempt:?} launched while {:?} still runs",
            self.live.get(&attempt.job)
        );
        if let Some((run, _)) = self.tombstones.get(&attempt.job) {
            panic!("invariant 1: completed mandatory job (run {run}) launched again: {attempt:?}");
        }
        // Restarts are exclusive: a job that may restart the machine runs alone.
        let restarts = |job: &JobId| {
            self.specs
                .iter()
                .any(|s| s.id() == job && s.reboot() != RebootBehaviour::Never)
        };
        if let Some(other) = self
            .live
            .keys()
            .find(|j| restarts(j) || restarts(&attempt.job))
        {
            panic!("restarts are exclusive: {attempt:?} launched while {other} runs");
        }
        self.launched.push(attempt.clone());
        self.live.insert(attempt.job.clone(), attempt);
    }

    /// Spawns the program and records its launch, or the agent dies on the way.
    fn launch(&mut self, attempt: AttemptId, how: Launching) {
        if how != Launching::NeverSpawned {
            self.spawn(attempt.clone());
        }
        if how == Launching::Recorded {
            self.next_pid += 1;
            let program = ProgramId::new(self.next_pid, u64::from(self.boots));
            let _effects = self
                .call(|l| l.launched(&attempt, program))
                .expect("recording a launch right after it");
        } else {
            // The agent died before recording it (its program, if spawned, lives on).
            self.stale = self.ledger.take();
            self.open();
        }
    }

    fn carry_out(&mut self, effects: Effects) {
        for effect in effects {
            match effect {
                // Recovery launches again an attempt whose launch was never recorded.
                Effect::Launch(attempt) => {
                    RELAUNCHES.fetch_add(1, Ordering::Relaxed);
                    self.launch(attempt, Launching::Recorded);
                }
                // The kill is under way; the program stays live until its exit is delivered
                // (an `Exit` step) or it is lost, and the ledger waits for that before any retry.
                Effect::Terminate(attempt) => {
                    let live = self.live.get(&attempt.job);
                    assert!(
                        live.is_none() || live == Some(&attempt),
                        "terminate of another attempt: {attempt:?}, live {live:?}"
                    );
                }
                Effect::Verify(attempt) => {
                    self.verify.insert(attempt.job.clone(), attempt);
                }
                Effect::ScheduleRestart { job, .. } => {
                    // Never under another job's live program.
                    let others: Vec<&AttemptId> =
                        self.live.values().filter(|a| a.job != job).collect();
                    assert!(
                        others.is_empty(),
                        "a restart for {job} licensed while {others:?} run"
                    );
                }
            }
        }
    }

    /// Runs a ledger call; an error must leave the ledger and the store as they were
    /// (invariant 6), and may not be a store failure (the memory store does not fail here).
    fn call(
        &mut self,
        op: impl FnOnce(&mut MemLedger) -> Result<Effects, Error>,
    ) -> Option<Effects> {
        self.sync_session();
        let before: Vec<JobRecord> = self.ledger().jobs().cloned().collect();
        let records = self.store.records().len();
        match op(self.ledger()) {
            Ok(effects) => {
                self.carry_out(effects.clone());
                Some(effects)
            }
            Err(error) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                let after: Vec<JobRecord> = self.ledger().jobs().cloned().collect();
                assert_eq!(
                    before, after,
                    "invariant 6: a refused call changed the ledger: {error}"
                );
                assert_eq!(
                    records,
                    self.store.records().len(),
                    "a refused call wrote: {error}"
                );
                assert!(
                    matches!(
                        error,
                        Error::Transition(_) | Error::NotRunnable { .. } | Error::UnknownJob(_)
                    ),
                    "unexpected error kind: {error:?}"
                );
                if let Error::Transition(TransitionError::CompletedMandatory { job, .. }) = &error {
                    assert!(self.tombstones.contains_key(job));
                }
                None
            }
        }
    }

    fn current_attempt(&self, i: usize) -> Option<AttemptId> {
        let record = self.record(i)?;
        let a = record.state().attempt()?;
        Some(AttemptId {
            job: record.id().clone(),
            run: a.run,
            number: a.number,
        })
    }

    /// The live program of job `i`, or else of the first job that has one.
    fn some_live(&self, i: usize) -> Option<JobId> {
        let id = self.id(i);
        if self.live.contains_key(&id) {
            return Some(id);
        }
        self.specs
            .iter()
            .map(|s| s.id().clone())
            .find(|j| self.live.contains_key(j))
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Offer(i) => {
                let spec = self.specs[i].clone();
                self.sync_session();
                let answer = self
                    .ledger()
                    .offer(spec)
                    .expect("offering never fails here");
                if self.tombstones.contains_key(&self.id(i)) {
                    assert_eq!(answer, jobstate::Offer::CompletedWillNotRun);
                }
            }
            Op::Begin(i, how) => {
                let id = self.id(i);
                self.sync_session();
                if let Ok(attempt) = self.ledger().begin(&id) {
                    self.launch(attempt, how);
                } else {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Exit(i, code) => {
                // Only a live program can exit; its exit is delivered to the ledger.
                if let Some(attempt) = self.some_live(i).and_then(|id| self.live.remove(&id)) {
                    let _ = self.call(|l| l.program_exited(&attempt, code));
                }
            }
            Op::ReplayExit(i, code) => {
                // An exit replayed for an attempt whose program is gone: always refused.
                let id = self.id(i);
                if self.live.contains_key(&id) {
                    return;
                }
                if let Some(old) = self.launched.iter().rev().find(|a| a.job == id).cloned() {
                    let before = self.ledger().job(&id).map(|r| r.state().clone());
                    let boot = self.ledger().session().boot.clone();
                    let result = self.call(|l| l.program_exited(&old, code));
                    let after = self.ledger().job(&id).map(|r| r.state().clone());
                    // Refused; or, for an attempt an operator abandoned in this boot, only noted
                    // (its program no longer stands in the way): no change, no effect.
                    let noted = matches!(
                        &before,
                        Some(JobState::Failed {
                            reason: jobstate::FailureReason::Abandoned,
                            attempt: Some(a),
                            ..
                        }) if a.boot == boot && a.run == old.run && a.number == old.number
                    ) && after == before
                        && result.as_ref().is_some_and(|e| e.is_empty());
                    assert!(
                        result.is_none() || noted,
                        "a replayed exit of {old:?} was accepted: {before:?} -> {after:?}, {result:?}"
                    );
                }
            }
            Op::OlderExit(i) => {
                // Invariant 4: an older attempt's exit while a newer attempt runs is refused.
                let id = self.id(i);
                let Some(live) = self.live.get(&id).cloned() else {
                    return;
                };
                let older = self
                    .launched
                    .iter()
                    .rfind(|a| a.job == id && a.attempt_ref() < live.attempt_ref())
                    .cloned();
                if let Some(older) = older {
                    let result = self.call(|l| l.program_exited(&older, 0));
                    assert!(
                        result.is_none(),
                        "invariant 4: the exit of {older:?} was accepted while {live:?} runs"
                    );
                    OLDER_EXITS_REFUSED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::FailAndRetry(i) => {
                let id = self.id(i);
                if !self.live.contains_key(&id) {
                    return;
                }
                self.step(Op::Exit(i, 1603));
                if let Some(JobState::Queued {
                    check_before_retry: true,
                    ..
                }) = self.record(i).map(|r| r.state().clone())
                {
                    self.step(Op::Verify(i, CheckResult::NotInstalled));
                }
                // Past a provisional failure's grace window, then past the back-off.
                self.step(Op::Tick(120));
                self.step(Op::Tick(120));
                self.step(Op::Begin(i, Launching::Recorded));
                self.step(Op::OlderExit(i));
            }
            Op::ExpectReboot(i, kind) => {
                if let Some(attempt) = self.current_attempt(i) {
                    let _ = self.call(|l| l.expect_reboot(&attempt, kind));
                }
            }
            Op::Verify(i, result) => {
                let id = self.id(i);
                let attempt = self.verify.remove(&id).or_else(|| self.current_attempt(i));
                if let Some(attempt) = attempt
                    && self.call(|l| l.verification(&attempt, result)).is_some()
                    && result == CheckResult::NotYet
                {
                    NOT_YET.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::ShutdownNotice => {
                let _ = self.call(|l| l.shutdown_notice());
            }
            Op::Tick(m) => {
                // Time passes on both clocks; only the boot clock decides deadlines.
                self.session.now += minutes(m);
                self.session.since_boot += Duration::from_secs(m.unsigned_abs() * 60);
                let _ = self.call(|l| l.tick());
                // Invariant 8: a tick notices every program that is gone.
                let ledger = self.ledger.as_ref().expect("open");
                for record in ledger.jobs() {
                    if let JobState::Running {
                        attempt,
                        launch,
                        provisional: None,
                        ..
                    } = record.state()
                        && attempt.boot == self.session.boot
                        && launch.happened()
                    {
                        assert!(
                            self.live.contains_key(record.id()),
                            "invariant 8: {} is Running after a tick while its program is gone",
                            record.id()
                        );
                    }
                }
            }
            Op::ClockBack(m) => {
                self.session.now -= minutes(m);
            }
            Op::SetUser(user) => {
                self.session.user = user;
            }
            Op::ExitSignal(i, signal) => {
                if let Some(attempt) = self.some_live(i).and_then(|id| self.live.remove(&id))
                    && self
                        .call(|l| l.program_exited(&attempt, ProgramExit::Signal(signal)))
                        .is_some()
                {
                    SIGNALLED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::SetRestartPending(pending) => {
                self.session.restart_pending = if pending {
                    RestartPending::Pending
                } else {
                    RestartPending::NotPending
                };
            }
            Op::Reoffer(i) => {
                let old = self.specs[i].clone();
                let limit = if old.max_run_time() == Duration::from_secs(3600) {
                    Duration::from_secs(1800)
                } else {
                    Duration::from_secs(3600)
                };
                let new = old.clone().with_mandatory(true).with_max_run_time(limit);
                self.sync_session();
                let before = self.record(i);
                let answer = self
                    .ledger()
                    .offer(new.clone())
                    .expect("offering a valid spec");
                let after = self.record(i);
                match before {
                    // A completed mandatory job stays as it is, whatever its new spec.
                    Some(b)
                        if b.spec().is_mandatory() && b.state().kind() == StateKind::Completed =>
                    {
                        assert_eq!(answer, Offer::CompletedWillNotRun);
                        assert_eq!(after.as_ref(), Some(&b));
                    }
                    Some(b) => {
                        assert!(matches!(answer, Offer::SpecChanged { .. }), "{answer:?}");
                        let after = after.expect("still known");
                        assert_eq!(after.state(), b.state(), "a spec change moved the state");
                        assert!(after.spec().is_mandatory(), "made mandatory at once");
                        assert_eq!(after.latest_spec(), &new);
                        SPEC_CHANGES.fetch_add(1, Ordering::Relaxed);
                        self.specs[i] = new;
                    }
                    None => {
                        assert_eq!(answer, Offer::Queued);
                        self.specs[i] = new;
                    }
                }
            }
            Op::SetPolicy(policy) => {
                self.policy = policy;
                self.ledger().set_restart_policy(policy);
            }
            Op::Crash(kills) => {
                // The agent dies; its programs live on, or die with it. The dead ledger is kept
                // as a stale writer.
                if kills {
                    self.live.clear();
                }
                self.stale = self.ledger.take();
                self.open();
                if kills {
                    // Invariant 8: nothing waits for a program that died with the agent.
                    for record in self.ledger.as_ref().expect("open").jobs() {
                        if let JobState::Running {
                            attempt,
                            provisional: None,
                            ..
                        } = record.state()
                        {
                            assert!(
                                self.live.contains_key(record.id())
                                    || attempt.boot != self.session.boot,
                                "invariant 8: {} waits for a program that died with the agent: {:?}",
                                record.id(),
                                record.state()
                            );
                        }
                    }
                }
            }
            Op::Lost(i) => {
                // The agent kills the program and cannot collect its status.
                let id = self.id(i);
                if let Some(attempt) = self.live.remove(&id)
                    && self.call(|l| l.program_lost(&attempt)).is_some()
                {
                    LOST_PROGRAMS_ENDED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Abandon(i) => {
                let id = self.id(i);
                let done = self.tombstones.contains_key(&id);
                if let Some(effects) = self.call(|l| l.abandon(&id)) {
                    assert!(
                        !done,
                        "invariant 1: a completed mandatory job was abandoned"
                    );
                    ABANDONED.fetch_add(1, Ordering::Relaxed);
                    // The operator's agent terminates the program; it is gone.
                    if effects.iter().any(|e| matches!(e, Effect::Terminate(_))) {
                        self.live.remove(&id);
                    }
                    assert_eq!(
                        self.record(i).map(|r| r.state().kind()),
                        Some(StateKind::Failed)
                    );
                }
            }
            Op::Reboot { notice } => {
                if notice {
                    let _ = self.call(|l| l.shutdown_notice());
                }
                let before: Vec<JobRecord> = self.ledger().jobs().cloned().collect();
                self.stale = self.ledger.take();
                self.live.clear();
                self.verify.clear();
                self.boots += 1;
                self.session.boot = boot(&format!("boot-{}", self.boots));
                self.session.since_boot = Duration::from_secs(30); // a new boot's clock
                self.session.restart_pending = RestartPending::NotPending; // the restart came
                self.open();
                if before.iter().any(|r| {
                    matches!(
                        r.state().kind(),
                        StateKind::Running | StateKind::AwaitingReboot
                    )
                }) {
                    REBOOTS_MID_JOB.fetch_add(1, Ordering::Relaxed);
                }
                for record in &before {
                    if record.spec().reboot() == RebootBehaviour::RestartsMachine
                        && let JobState::Running {
                            launch,
                            provisional,
                            ..
                        } = record.state()
                    {
                        let now = self.ledger().job(record.id()).map(|r| r.state().kind());
                        // DESIGN: a recorded launch's reboot is its program's expected end
                        // (verify or complete); a launch never recorded never ran: it is
                        // launched again, as the same attempt.
                        let expected = if !launch.happened() && provisional.is_none() {
                            StateKind::Running
                        } else if record.spec().verify_after_reboot() {
                            StateKind::AwaitingReboot
                        } else {
                            StateKind::Completed
                        };
                        assert_eq!(now, Some(expected), "after a reboot: {:?}", record.state());
                    }
                }
            }
            Op::Rerun(i) => {
                let id = self.id(i);
                let done = self.tombstones.contains_key(&id);
                let result = self.call(|l| l.rerun(&id));
                assert!(
                    !(done && result.is_some()),
                    "invariant 1: a completed mandatory job was rerun"
                );
            }
            Op::Cancel(i) => {
                let id = self.id(i);
                let _ = self.call(|l| l.cancel(&id));
            }
            Op::Deliver => {
                self.sync_session();
                let before: Vec<JobRecord> = self.ledger().jobs().cloned().collect();
                let mut server = std::mem::take(&mut self.server);
                let delivery = self.ledger().deliver(&mut server);
                self.server = server;
                let delivery = delivery.unwrap_or_else(|e| panic!("delivery failed: {e}"));
                assert_eq!(delivery.pending, self.ledger().outbox().count());
                let after: Vec<JobRecord> = self.ledger().jobs().cloned().collect();
                assert_eq!(before, after, "invariant 5: delivery changed a job");
                DELIVERED.fetch_add(delivery.delivered as u64, Ordering::Relaxed);
                DEAD_LETTERED.fetch_add(delivery.dead_lettered as u64, Ordering::Relaxed);
            }
            Op::SinkFails(n) => self.server.fail_next = n,
            Op::SinkRejects(n) => self.server.reject_next = n,
            Op::SinkRetries(n) => self.server.retry_next = n,
            Op::Requeue { discard } => {
                self.sync_session();
                let Some(key) = self
                    .ledger()
                    .dead_letters()
                    .next()
                    .map(|l| l.message.key.clone())
                else {
                    return;
                };
                if discard {
                    let letter = self.ledger().discard(&key).expect("a dead letter");
                    assert_eq!(letter.message.key, key);
                    self.discarded.insert(key);
                } else {
                    self.ledger().requeue(&key).expect("a dead letter");
                    REQUEUED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Progress(i) => {
                let id = self.id(i);
                let step = match self.record(i).map(|r| r.state().clone()) {
                    None => Op::Offer(i),
                    Some(JobState::Queued {
                        check_before_retry: true,
                        ..
                    }) => Op::Verify(i, CheckResult::Installed),
                    Some(JobState::Queued { .. }) => Op::Begin(i, Launching::Recorded),
                    Some(JobState::Running { .. }) if self.live.contains_key(&id) => Op::Exit(i, 0),
                    Some(JobState::AwaitingReboot {
                        verifying_in: Some(_),
                        ..
                    }) => Op::Verify(i, CheckResult::Installed),
                    Some(JobState::AwaitingReboot { .. }) => Op::Reboot { notice: false },
                    _ => return,
                };
                self.step(step);
            }
            Op::CrashAfterDelivery => {
                self.sync_session();
                let pending = self.ledger().outbox().count();
                self.store.fail_next_commits(1);
                let mut server = std::mem::take(&mut self.server);
                let result = self.ledger().deliver(&mut server);
                self.server = server;
                self.store.fail_next_commits(0);
                if pending > 0 && result.is_err() {
                    REDELIVERIES_OWED.fetch_add(1, Ordering::Relaxed);
                }
                self.stale = self.ledger.take();
                self.open();
            }
            Op::StaleWrite(i) => {
                let Some(stale) = self.stale.as_mut() else {
                    return;
                };
                let current = self.ledger.as_ref().map(|l| l.revision());
                if Some(stale.revision()) == current {
                    return; // nothing committed since: that ledger is not stale (yet)
                }
                let records = self.store.records();
                let id = self.specs[i].id().clone();
                let attempts = [
                    stale.begin(&id).err(),
                    stale.rerun(&id).err(),
                    stale.cancel(&id).err(),
                    stale.abandon(&id).err(),
                ];
                for error in attempts.into_iter() {
                    // Every write through a stale ledger is refused: by the store, or by the
                    // state machine or the ledger before it reaches the store (a rerun of a
                    // job abandoned in this boot while its program still runs).
                    let error =
                        error.unwrap_or_else(|| panic!("invariant 4: stale writer accepted"));
                    assert!(
                        matches!(
                            error,
                            Error::Store(StoreError::Conflict { .. })
                                | Error::Transition(_)
                                | Error::NotRunnable { .. }
                                | Error::UnknownJob(_)
                                | Error::ProgramStillRunning { .. }
                        ),
                        "{error:?}"
                    );
                }
                assert_eq!(
                    records,
                    self.store.records(),
                    "invariant 4: a stale writer changed the store"
                );
                STALE_REFUSED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct LedgerTest;

impl StateMachineTest for LedgerTest {
    type SystemUnderTest = World;
    type Reference = Reference;

    fn init_test(_: &()) -> World {
        let case = CASES.fetch_add(1, Ordering::Relaxed);
        let retention = match case % 3 {
            0 => jobstate::store::Retention::keep_all(),
            1 => jobstate::store::Retention::default(),
            _ => {
                let mut least = jobstate::store::Retention::default();
                least.earlier_runs = 0;
                least
            }
        };
        let mut world = World {
            specs: catalogue(),
            store: MemoryStore::new(),
            ledger: None,
            stale: None,
            session: service_session("boot-0"),
            boots: 0,
            live: HashMap::new(),
            verify: HashMap::new(),
            launched: Vec::new(),
            tombstones: HashMap::new(),
            server: Server::default(),
            discarded: Default::default(),
            next_pid: 1000,
            policy: RestartPolicy::Immediately,
            retention,
        };
        world.open();
        world
    }

    fn apply(mut world: World, _: &(), op: Op) -> World {
        STEPS.fetch_add(1, Ordering::Relaxed);
        world.step(op);
        world.note_tombstones();
        world
    }

    fn check_invariants(world: &World, _: &()) {
        let ledger = world.ledger.as_ref().expect("open between steps");
        // Invariant 1: completed mandatory jobs stay completed in the same run, not relaunched.
        for (id, (run, launches)) in &world.tombstones {
            let record = ledger.job(id).expect("a tombstone is never pruned");
            assert_eq!(
                record.state().kind(),
                StateKind::Completed,
                "invariant 1: {id} left Completed"
            );
            assert_eq!(
                record.state().run(),
                *run,
                "invariant 1: {id} started a new run"
            );
            let now = world.launched.iter().filter(|a| &a.job == id).count();
            assert_eq!(
                now, *launches,
                "invariant 1: {id} launched after completion"
            );
        }
        for record in ledger.jobs() {
            let restarts = record.spec().reboot() == RebootBehaviour::RestartsMachine;
            let history = record.history();
            for (at, pair) in history.windows(2).enumerate() {
                let (before, entry) = (&pair[0].state, &pair[1]);
                // Invariant 3, over the whole history: no reboot observation failed a job that
                // restarts the machine, or queued it to run again.
                let rebooted = matches!(entry.event.kind, jobstate::EventKind::AgentStarted { .. })
                    && before.attempt().is_some_and(|a| a.boot != entry.event.boot)
                    && matches!(
                        before.kind(),
                        StateKind::Running | StateKind::AwaitingReboot
                    );
                assert!(
                    !(restarts
                        && rebooted
                        && matches!(entry.state.kind(), StateKind::Failed | StateKind::Queued)
                        && !never_ran_and_left_alone(before, &entry.state)),
                    "invariant 3: {before:?} -> {entry:?}"
                );
                // Invariant 7: completed only on evidence (a reboot after a wait, only for a
                // program that ran).
                if entry.state.kind() == StateKind::Completed
                    && before.kind() != StateKind::Completed
                {
                    let index = at + 1;
                    assert!(
                        completion_evidenced_in_history(record.spec(), history, index),
                        "invariant 7: {} completed without evidence: {before:?} -> {entry:?}",
                        record.id()
                    );
                }
            }
            // Invariant 4: a Running state's attempt is the live program, or no program is live.
            if let JobState::Running { attempt, .. } = record.state()
                && let Some(live) = world.live.get(record.id())
            {
                assert_eq!(
                    live.attempt_ref(),
                    AttemptRef {
                        run: attempt.run,
                        number: attempt.number
                    }
                );
            }
        }
        // Invariant 8: every unfinished job waits visibly, for something named, and with a time
        // bound unless only the outside world can end the wait.
        let waits = ledger.waits();
        for record in ledger.jobs() {
            let wait = waits.iter().find(|w| w.job == *record.id());
            match record.state() {
                JobState::Completed { .. } | JobState::Failed { .. } => {
                    assert!(wait.is_none(), "a finished job waits: {wait:?}");
                }
                JobState::Queued { .. } => {
                    if wait.is_none() {
                        // Not waiting: it may start now, and the run loop is offered a job.
                        assert!(
                            matches!(ledger.next_runnable(), jobstate::NextJob::Run(_)),
                            "invariant 8: {} neither waits nor may start",
                            record.id()
                        );
                    }
                }
                JobState::Running { .. } | JobState::AwaitingReboot { .. } => {
                    let wait = wait.unwrap_or_else(|| {
                        panic!("invariant 8: {} waits for nothing named", record.id())
                    });
                    if matches!(wait.reason, WaitReason::RestartDeferred { .. }) {
                        RESTARTS_DEFERRED.fetch_add(1, Ordering::Relaxed);
                    }
                    let unbounded_ok = matches!(
                        wait.reason,
                        WaitReason::Unresponsive | WaitReason::Verification
                    );
                    assert!(
                        wait.wake_after.is_some() || unbounded_ok,
                        "invariant 8: {} waits without a bound: {wait:?}",
                        record.id()
                    );
                }
            }
        }
        // Invariant 5: every terminal state, every wait for a reboot and every overdue report
        // has exactly one status message, pending in the outbox or received by the server (or
        // both, between a delivery and its acknowledgement), and nothing else is ever sent.
        // From the store's whole history: the ledger may have compacted some away.
        let whole = MemoryStore::from_records(world.store.records())
            .load()
            .expect("the store loads");
        let expected = expected_reports(&whole.jobs);
        let distinct: std::collections::HashSet<_> = expected.iter().collect();
        assert_eq!(
            distinct.len(),
            expected.len(),
            "invariant 5: a state reported twice: {expected:?}"
        );
        let pending: std::collections::HashSet<_> = ledger.outbox().map(|m| &m.key).collect();
        let dead: std::collections::HashSet<_> =
            ledger.dead_letters().map(|l| &l.message.key).collect();
        assert!(
            pending.is_disjoint(&dead),
            "invariant 5: a key both pending and a dead letter"
        );
        for key in &expected {
            assert!(
                pending.contains(key)
                    || dead.contains(key)
                    || world.discarded.contains(key)
                    || world.server.received.contains_key(key),
                "invariant 5: {key} was never reported, nor kept as a dead letter"
            );
        }
        let kept = dead.iter().copied().chain(&world.discarded);
        for key in pending
            .iter()
            .copied()
            .chain(kept)
            .chain(world.server.received.keys())
        {
            assert!(
                distinct.contains(key),
                "invariant 5: {key} reported for no such state"
            );
        }
        // And no key ever entered the outbox twice (even after the first copy was delivered
        // and pruned): count the reports the store ever committed.
        let mut committed: HashMap<StatusKey, usize> = HashMap::new();
        for bytes in world.store.records() {
            if let jobstate::store::Record::Report(message) =
                jobstate::codec::decode(&bytes).expect("decodes")
            {
                *committed.entry(message.key).or_default() += 1;
            }
        }
        for (key, n) in &committed {
            assert_eq!(*n, 1, "invariant 5: {key} committed {n} times");
        }
        // Nothing acknowledged is lost: a fresh load (decoding every record) equals the ledger.
        let loaded = MemoryStore::from_records(world.store.records())
            .load()
            .expect("the store loads");
        let held: Vec<&JobRecord> = ledger.jobs().collect();
        // The ledger may have compacted history away (its retention), never anything else.
        assert!(
            loaded.jobs.len() == held.len()
                && held
                    .iter()
                    .zip(&loaded.jobs)
                    .all(|(h, l)| h.is_compaction_of(l)),
            "store and ledger differ: {:?} {held:?}",
            loaded.jobs
        );
        let outbox: Vec<&StatusMessage> = ledger.outbox().collect();
        assert_eq!(
            loaded.outbox.iter().collect::<Vec<_>>(),
            outbox,
            "store and ledger outbox differ"
        );
        assert_eq!(
            loaded.dead_letters.iter().collect::<Vec<_>>(),
            ledger.dead_letters().collect::<Vec<_>>(),
            "store and ledger dead letters differ"
        );
    }

    /// At the end of a case, a server that accepts everything receives every status message:
    /// at least once, each key.
    fn teardown(mut world: World, _: ()) {
        world.server = Server {
            received: std::mem::take(&mut world.server.received),
            ..Server::default()
        };
        let now = world.session.now + chrono::TimeDelta::days(1);
        world.ledger().session_mut().now = now; // past any back-off
        // An operator re-queues every dead letter: they are delivered like the others.
        let dead: Vec<StatusKey> = world
            .ledger()
            .dead_letters()
            .map(|l| l.message.key.clone())
            .collect();
        for key in &dead {
            world.ledger().requeue(key).expect("re-queued");
        }
        let mut server = std::mem::take(&mut world.server);
        let delivery = world.ledger().deliver(&mut server).expect("final delivery");
        assert_eq!(delivery.pending, 0, "{delivery:?}");
        let _ledger = world.ledger.as_ref().expect("open");
        let whole = MemoryStore::from_records(world.store.records())
            .load()
            .expect("the store loads");
        for key in expected_reports(&whole.jobs) {
            assert!(
                server.received.contains_key(&key) || world.discarded.contains(&key),
                "invariant 5: {key} never delivered"
            );
        }
    }
}

/// The status keys the jobs' histories call for, derived from the states alone: one per
/// terminal state, per wait for a reboot, per overdue report and per unresponsive program.
fn expected_reports(jobs: &[JobRecord]) -> Vec<StatusKey> {
    let mut keys = Vec::new();
    for record in jobs {
        let mut before: Option<&JobState> = None;
        for entry in record.history() {
            // A spec change records a spec, not a transition: it reports nothing.
            if entry.event.kind == jobstate::EventKind::SpecChanged {
                continue;
            }
            let key = |wait: u32, overdue: u32| StatusKey {
                job: record.id().clone(),
                run: entry.state.run(),
                attempt: entry.state.attempt().map_or(0, |a| a.number),
                state: entry.state.kind(),
                wait,
                overdue,
            };
            match (&entry.state, before) {
                (state, _) if state.is_terminal() => keys.push(key(0, 0)),
                (
                    JobState::AwaitingReboot { wait, overdue, .. },
                    Some(JobState::AwaitingReboot {
                        wait: was_wait,
                        overdue: was_overdue,
                        ..
                    }),
                ) if wait == was_wait => {
                    keys.extend((overdue != was_overdue).then(|| key(*wait, *overdue)));
                }
                (JobState::AwaitingReboot { wait, .. }, _) => keys.push(key(*wait, 0)),
                (
                    JobState::Running {
                        terminate: Some(now),
                        ..
                    },
                    Some(JobState::Running { terminate: was, .. }),
                ) if now.unresponsive && !was.is_some_and(|t| t.unresponsive) => {
                    // The n-th of its attempt (one launched again may be reported again).
                    let first = key(0, 1);
                    let earlier = keys
                        .iter()
                        .filter(|k| {
                            StatusKey {
                                overdue: 1,
                                ..(*k).clone()
                            } == first
                        })
                        .count();
                    keys.push(key(0, u32::try_from(earlier).unwrap() + 1));
                }
                _ => {}
            }
            before = Some(&entry.state);
        }
    }
    keys
}

impl World {
    fn note_tombstones(&mut self) {
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        for record in ledger.jobs() {
            if record.spec().is_mandatory() && record.state().kind() == StateKind::Completed {
                let launches = self
                    .launched
                    .iter()
                    .filter(|a| a.job == *record.id())
                    .count();
                self.tombstones
                    .entry(record.id().clone())
                    .or_insert_with(|| {
                        TOMBSTONES.fetch_add(1, Ordering::Relaxed);
                        (record.state().run(), launches)
                    });
            }
        }
    }
}

#[test]
fn ledger_keeps_invariants_under_crashes_reboots_and_replays() {
    let multiplier: u32 = std::env::var("JOBSTATE_PROPTEST_MULTIPLIER")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    let config = Config {
        cases: 256 * multiplier,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &Reference::sequential_strategy(1..=50),
        |(init, ops, seen)| {
            LedgerTest::test_sequential(config.clone(), init, ops, seen);
            Ok(())
        },
    );
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    report_figures(&format!(
        "state machine: {} cases, {} steps run ({} cases required); exercised: {} mandatory jobs \
         completed and then held, {} reboots with a job in flight, {} refused calls, {} stale \
         writes refused, {} older attempts' exits refused, {} status messages delivered, {} \
         crashes before an acknowledgement, {} lost programs ended, {} launches never recorded \
         launched again, {} checks said not yet, {} jobs abandoned, {} programs ended by a \
         signal, {} spec changes recorded, {} restarts held by a policy, {} messages given up \
         on as dead letters, {} re-queued, {} completed mandatory jobs opened as tombstones",
        n(&CASES),
        n(&STEPS),
        256 * multiplier,
        n(&TOMBSTONES),
        n(&REBOOTS_MID_JOB),
        n(&REFUSED),
        n(&STALE_REFUSED),
        n(&OLDER_EXITS_REFUSED),
        n(&DELIVERED),
        n(&REDELIVERIES_OWED),
        n(&LOST_PROGRAMS_ENDED),
        n(&RELAUNCHES),
        n(&NOT_YET),
        n(&ABANDONED),
        n(&SIGNALLED),
        n(&SPEC_CHANGES),
        n(&RESTARTS_DEFERRED),
        n(&DEAD_LETTERED),
        n(&REQUEUED),
        n(&COMPACTED_HELD),
    ));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

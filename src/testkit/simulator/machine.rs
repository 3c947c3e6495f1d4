//! The simulated machine and the agent that runs on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::TimeDelta;

use super::program::{Ends, Run};
use super::store::{CrashPoint, CrashWhen, SimStore};
use super::trace::{Call, End, Happened, Outcome, RebootCause, Trace, TraceLine, final_violations};
use super::{Happening, Program, Rng, Scenario};
use crate::core::Timestamp;
use crate::core::effect::{AttemptId, Effect, StatusKey, StatusMessage};
use crate::core::event::CheckResult;
use crate::core::exit_code::{ExitOutcome, ProgramExit};
use crate::core::id::{BootId, JobId};
use crate::core::presence::UserPresence;
use crate::core::program::ProgramId;
use crate::core::spec::{JobSpec, RebootBehaviour};
use crate::core::state::StateKind;
use crate::error::Error;
use crate::ledger::{Ledger, NextJob};
use crate::report::delivery::StatusSink;
use crate::session::{LivePrograms, NoticeDelivery, SessionFacts};
use crate::store::Store;

/// From power-on to the agent's start (the first boot too).
const AGENT_STARTS_AFTER_BOOT: Duration = Duration::from_secs(60);
/// From the start of a shutdown to the next power-on.
const REBOOT_TAKES: Duration = Duration::from_secs(120);
/// From an agent crash to its restart by the service manager.
const AGENT_RESTARTS_AFTER_CRASH: Duration = Duration::from_secs(5);
/// From a program's exit to the restart it initiated.
const RESTART_AFTER_EXIT: Duration = Duration::from_secs(30);
/// From power-on to the next restart of an upgrade that restarts the machine several times.
const NEXT_PHASE_RESTART: Duration = Duration::from_secs(180);

type SimLedger<S> = Ledger<SimStore<S>, SessionFacts>;

/// What the queue of the world holds.
#[derive(Debug, Clone)]
enum Scheduled {
    /// The server starts offering job `i` of the scenario.
    Offer(usize),
    /// Happening `i` (the scenario's, then the chaos's).
    Happening(usize),
    /// The program with this pid reaches the end of its run.
    ProgramEnds {
        job: JobId,
        pid: u64,
    },
    Shutdown(RebootCause),
    PowerOn,
    AgentStart,
}

#[derive(Debug, Clone)]
struct Process {
    pid: u64,
    attempt: AttemptId,
    run: Run,
}

/// The answer to one ledger call.
enum Answer<T> {
    Ok(T),
    Refused,
    Crashed { committed: bool },
}

/// The site server: receives status messages, fails on demand. In a [`Fleet`](super::Fleet)
/// it forwards to the fleet's shared collector, through the fleet's network.
#[derive(Debug, Default)]
struct SimSink {
    received: Vec<StatusMessage>,
    fail_next: u32,
    down: bool,
    fail_percent: u64,
    rng: Rng,
    failure: Option<String>,
    /// The fleet's network and collector, if the machine is one of a fleet.
    link: Option<super::fleet::Link>,
    /// Simulated time since the run began, when the agent delivers.
    now: Duration,
}

impl StatusSink for SimSink {
    type Error = String;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut crate::report::delivery::Answers,
    ) -> Result<(), String> {
        let failure = if self.down {
            Some("the site server is down".to_string())
        } else if self.fail_next > 0 {
            self.fail_next -= 1;
            Some("the site server refused the delivery (scripted)".to_string())
        } else if self.fail_percent > 0 && self.rng.chance(self.fail_percent) {
            Some("the site server refused the delivery (chaos)".to_string())
        } else {
            None
        };
        let result = match (failure, self.link.as_mut()) {
            (Some(failure), _) => Err(failure),
            (None, Some(link)) => link.exchange(self.now, batch, answers, &mut self.received),
            (None, None) => {
                self.received.extend_from_slice(batch);
                answers.accept_all();
                Ok(())
            }
        };
        if let Err(failure) = &result {
            self.failure = Some(failure.clone());
        }
        result
    }
}

/// A simulated machine with an agent on it, running a [`Scenario`]: the real
/// [`Ledger`](crate::Ledger) over the scenario's store (wrapped in a [`SimStore`]), driven the
/// way an agent drives it.
///
/// The agent: at start it opens the ledger (recovery) and carries out the effects; the site
/// server offers its jobs (again, at every start, unless
/// [`Scenario::reoffer`] says otherwise); then on every turn it delivers pending status
/// messages, ticks, and begins the next job that may run, launching its program: one job at a
/// time, and none while a restart is scheduled (unless [`Scenario::parallel`]). A program's exit
/// is handed to the ledger; an [`Effect::Terminate`] kills the program; an
/// [`Effect::ScheduleRestart`] restarts the machine after the scenario's restart delay; an
/// [`Effect::Verify`] runs the detection check at once. Programs outlive an agent crash, and
/// their exit codes reach the next agent (as a wrapper that records them would); they die with
/// the machine.
///
/// Time moves from event to event: a program's end, a scripted happening, a back-off or a
/// run-time limit running out. Get one with [`Scenario::build`]; most tests only need
/// [`Scenario::run_until_idle`].
pub struct Machine<S: Store> {
    scenario: Scenario<S>,
    happenings: Vec<Happening>,
    store: SimStore<S>,
    ledger: Option<SimLedger<S>>,
    /// An agent that crashes after carrying out the effects of its last call.
    dying: Option<CrashPoint>,
    elapsed: Duration,
    /// The wall clock's offset from `start + elapsed`: jumps accumulate here.
    skew: TimeDelta,
    start: Timestamp,
    boot_began: Duration,
    boots: u32,
    /// The operating system says a restart is pending (a program left the flag), until the
    /// next boot.
    restart_pending: bool,
    boot: BootId,
    machine_up: bool,
    user: UserPresence,
    queue: BTreeMap<(Duration, u64), Scheduled>,
    seq: u64,
    processes: BTreeMap<JobId, Process>,
    next_pid: u64,
    /// Exits that happened while no agent listened: the next agent hears of them.
    pending_exits: Vec<(AttemptId, ProgramExit)>,
    install_on_reboot: BTreeSet<JobId>,
    installed: BTreeSet<JobId>,
    /// Upgrades that restart the machine several times: the restarts still to come.
    continuing: BTreeMap<JobId, u32>,
    /// Checks made so far, per job (the index of a scripted answer).
    checks_made: BTreeMap<JobId, usize>,
    /// Restarts the agent orders that will not happen.
    restarts_to_ignore: u32,
    /// Whether an agent crash kills its programs (systemd's `KillMode=control-group`).
    kills_with_agent: bool,
    launches: BTreeMap<JobId, usize>,
    launch_times: BTreeMap<JobId, Vec<Duration>>,
    programs: BTreeMap<JobId, Program>,
    /// The jobs the server offers (so far), in order.
    catalogue: Vec<JobSpec>,
    offered: BTreeSet<JobId>,
    sink: SimSink,
    delivery_retry: Option<Duration>,
    notice_rng: Rng,
    clock_rng: Rng,
    jitter_rng: Rng,
    trace: Trace,
    violations: Vec<String>,
    kinds: BTreeMap<JobId, StateKind>,
    /// The last transition of each job the store acknowledged.
    acked: BTreeMap<JobId, crate::record::HistoryEntry>,
    tombstones: BTreeMap<JobId, u32>,
    crashes: u32,
    steps: u64,
    end: Option<End>,
}

impl<S: Store> std::fmt::Debug for Machine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("seed", &self.scenario.seed)
            .field("elapsed", &self.elapsed)
            .field("boot", &self.boot)
            .field("agent_up", &self.ledger.is_some())
            .finish_non_exhaustive()
    }
}

fn boot_id(seed: u64, n: u32) -> BootId {
    BootId::new(format!("sim-{seed:016x}-boot-{n}")).unwrap_or_else(|e| panic!("{e}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl<S: Store> Machine<S> {
    pub(super) fn new(scenario: Scenario<S>) -> Self {
        let seed = scenario.seed;
        let mut world = Rng::new(seed);
        let mut crash_rng = world.fork();
        let mut cut_rng = world.fork();
        let mut user_rng = world.fork();
        let mut jump_rng = world.fork();
        let sink_rng = world.fork();
        let notice_rng = world.fork();
        let clock_rng = world.fork();
        let jitter_rng = world.fork();
        let mut kill_rng = world.fork();

        let store = SimStore::new((scenario.create)());
        for point in &scenario.crashes {
            store.crash_at(*point);
        }
        let chaos = scenario.chaos;
        let mut happenings: Vec<(Duration, Happening)> = scenario.happenings.clone();
        if chaos.crashes {
            for _ in 0..crash_rng.below(4) {
                let commit = crash_rng.below(24);
                let when = CrashWhen::ALL[crash_rng.below(3) as usize];
                store.crash_at(CrashPoint { commit, when });
            }
        }
        if chaos.power_cuts {
            for _ in 0..cut_rng.below(3) {
                let at = secs(cut_rng.below(6 * 3600));
                let what = if cut_rng.chance(50) {
                    Happening::PowerCut
                } else {
                    Happening::Reboot
                };
                happenings.push((at, what));
            }
        }
        if chaos.user_sessions {
            let mut times: Vec<u64> = (0..user_rng.below(4))
                .map(|_| user_rng.below(8 * 3600))
                .collect();
            times.sort_unstable();
            let mut on = scenario.user == UserPresence::LoggedOn;
            for at in times {
                on = !on;
                let what = if on {
                    Happening::LogOn
                } else {
                    Happening::LogOff
                };
                happenings.push((secs(at), what));
            }
        }
        let kills_with_agent =
            scenario.programs_die_with_agent || (chaos.kill_mode && kill_rng.chance(50));
        let lost_restart = u32::from(chaos.lost_restarts && kill_rng.chance(50));
        if chaos.clock_jumps && jump_rng.chance(50) {
            let at = secs(jump_rng.below(6 * 3600));
            let by = -TimeDelta::seconds(jump_rng.below(2 * 3600) as i64 + 1);
            happenings.push((at, Happening::ClockJump(by)));
        }

        let boot = boot_id(seed, 1);
        let mut machine = Self {
            happenings: Vec::new(),
            store,
            ledger: None,
            dying: None,
            elapsed: Duration::ZERO,
            skew: TimeDelta::zero(),
            start: chrono::DateTime::from_timestamp(1_795_226_400, 0).unwrap_or_default(),
            boot_began: Duration::ZERO,
            boots: 1,
            restart_pending: false,
            boot: boot.clone(),
            machine_up: true,
            user: scenario.user,
            queue: BTreeMap::new(),
            seq: 0,
            processes: BTreeMap::new(),
            next_pid: 1,
            pending_exits: Vec::new(),
            install_on_reboot: BTreeSet::new(),
            installed: BTreeSet::new(),
            continuing: BTreeMap::new(),
            checks_made: BTreeMap::new(),
            restarts_to_ignore: scenario.ignored_restarts + lost_restart,
            kills_with_agent,
            launches: BTreeMap::new(),
            launch_times: BTreeMap::new(),
            programs: BTreeMap::new(),
            catalogue: Vec::new(),
            offered: BTreeSet::new(),
            sink: SimSink {
                fail_percent: if chaos.sink_failures { 25 } else { 0 },
                rng: sink_rng,
                ..SimSink::default()
            },
            delivery_retry: None,
            notice_rng,
            clock_rng,
            jitter_rng,
            trace: Trace::default(),
            violations: Vec::new(),
            kinds: BTreeMap::new(),
            acked: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            crashes: 0,
            steps: 0,
            end: None,
            scenario,
        };
        machine.note(Happened::Booted { boot });
        for i in 0..machine.scenario.jobs.len() {
            let at = machine.scenario.jobs[i].0;
            machine.schedule(at, Scheduled::Offer(i));
        }
        for (i, (at, what)) in happenings.into_iter().enumerate() {
            machine.happenings.push(what);
            machine.schedule(at, Scheduled::Happening(i));
        }
        machine.schedule(AGENT_STARTS_AFTER_BOOT, Scheduled::AgentStart);
        machine
    }

    // ---- Running ----

    /// Runs until nothing more can happen (or the horizon or step limit is reached) and
    /// returns the outcome.
    pub fn run_until_idle(mut self) -> Outcome {
        let end = self.run(None);
        self.end = end;
        self.finish()
    }

    /// Runs for `duration` of simulated time (less if the horizon or step limit comes first),
    /// then stops, so that a test can look at the ledger or make something happen before
    /// running on.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.elapsed.saturating_add(duration);
        if self.run(Some(until)) == Some(End::Idle) {
            self.elapsed = self.elapsed.max(until);
        }
    }

    /// Makes `what` happen now.
    pub fn happen(&mut self, what: Happening) {
        self.happen_now(what);
        self.settle();
    }

    /// Connects the machine's site server to a fleet's network and collector.
    pub(super) fn connect(&mut self, link: super::fleet::Link) {
        self.sink.link = Some(link);
    }

    /// A handle to the machine's store (the simulated disk).
    pub(super) fn store(&self) -> SimStore<S> {
        self.store.clone()
    }

    /// The agent's ledger, if the agent is running.
    pub fn ledger(&self) -> Option<&Ledger<SimStore<S>, SessionFacts>> {
        self.ledger.as_ref()
    }

    /// The session facts now: boot, user, time on both clocks.
    pub fn facts(&self) -> SessionFacts {
        // A program that exited while no agent listened is alive until its exit is reported, as
        // a zombie is until reaped: its wrapper keeps the status for the next agent.
        let programs = if self.scenario.programs_unknown {
            LivePrograms::Unknown
        } else {
            LivePrograms::Known(
                self.processes
                    .values()
                    .map(|p| p.attempt.clone())
                    .chain(self.pending_exits.iter().map(|(a, _)| a.clone()))
                    .collect(),
            )
        };
        SessionFacts {
            boot: self.boot.clone(),
            user: self.user,
            context: self.scenario.context,
            notices: self.scenario.notices,
            now: self.now(),
            since_boot: self.since_boot(),
            programs,
            restart_pending: if self.restart_pending {
                crate::session::RestartPending::Pending
            } else {
                crate::session::RestartPending::NotPending
            },
        }
    }

    /// Brings the running agent's session facts up to now, in place (a call is made many times a
    /// world: the set of live programs is rebuilt only when it changed).
    fn sync_facts(&mut self) {
        let (now, since_boot) = (self.now(), self.since_boot());
        let unknown = self.scenario.programs_unknown;
        let alive: Vec<&AttemptId> = self
            .processes
            .values()
            .map(|p| &p.attempt)
            .chain(self.pending_exits.iter().map(|(a, _)| a))
            .collect();
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let facts = ledger.session_mut();
        facts.now = now;
        facts.since_boot = since_boot;
        facts.user = self.user;
        facts.restart_pending = if self.restart_pending {
            crate::session::RestartPending::Pending
        } else {
            crate::session::RestartPending::NotPending
        };
        if !unknown {
            let same = matches!(&facts.programs, LivePrograms::Known(set)
                if set.len() == alive.len() && alive.iter().all(|a| set.contains(*a)));
            if !same {
                facts.programs = LivePrograms::Known(alive.into_iter().cloned().collect());
            }
        }
    }

    /// Simulated time since the run began.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Stops here and returns the outcome.
    pub fn finish(mut self) -> Outcome {
        self.settle();
        let (jobs, pending, dead_letters) = match self.store.load_inner() {
            Ok(snapshot) => (snapshot.jobs, snapshot.outbox, snapshot.dead_letters),
            Err(error) => {
                self.violate(format!("the store does not load at the end: {error}"));
                (Vec::new(), Vec::new(), Vec::new())
            }
        };
        if let Some(ledger) = &self.ledger {
            let held: Vec<_> = ledger.jobs().collect();
            // The same jobs, states and specs; either side may have compacted history away.
            let same = held.len() == jobs.len()
                && held
                    .iter()
                    .zip(&jobs)
                    .all(|(h, j)| h.is_compaction_of(j) || j.is_compaction_of(h));
            if !same {
                self.violate("invariant 2: the store and the ledger differ at the end".into());
            }
        }
        for what in final_violations(&jobs, &pending, &self.sink.received, &dead_letters) {
            self.violate(what);
        }
        let outcome = Outcome {
            seed: self.scenario.seed,
            trace: self.trace,
            jobs,
            pending,
            received: self.sink.received,
            launches: self.launches,
            launch_times: self.launch_times,
            violations: self.violations,
            end: self.end.unwrap_or(End::Stopped),
            boots: self.boots,
            crashes: self.crashes,
            elapsed: self.elapsed,
        };
        super::remember(&outcome.trace);
        outcome
    }

    /// Runs until `until` (then returns `None`) or until the run ends.
    fn run(&mut self, until: Option<Duration>) -> Option<End> {
        loop {
            if let Some(end) = self.end {
                return Some(end);
            }
            self.steps += 1;
            if self.steps > self.scenario.max_steps {
                return Some(End::StepLimit);
            }
            if self.agent_up() {
                self.agent_turn();
            }
            self.settle();
            let due = self
                .queue
                .first_key_value()
                .is_some_and(|(k, _)| k.0 <= self.elapsed);
            if due && let Some((_, what)) = self.queue.pop_first() {
                self.handle(what);
                self.settle();
                continue;
            }
            let next = [self.queue.keys().next().map(|k| k.0), self.wakeup()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return Some(End::Idle);
            };
            if let Some(limit) = until
                && next > limit
            {
                self.elapsed = self.elapsed.max(limit);
                return None;
            }
            if next > self.scenario.horizon {
                return Some(End::Horizon);
            }
            self.elapsed = next.max(self.elapsed);
        }
    }

    /// The next time the agent must act although nothing happens in the world: whatever the
    /// ledger's waits say (a back-off, a run-time limit, a grace window, a restart deadline),
    /// or a delivery due again.
    fn wakeup(&self) -> Option<Duration> {
        let ledger = self.ledger.as_ref().filter(|_| self.dying.is_none())?;
        let mut best: Option<Duration> = ledger
            .waits()
            .into_iter()
            .filter_map(|w| w.wake_after)
            .map(|d| self.elapsed + d)
            .min();
        if !self.sink.down
            && ledger.outbox().next().is_some()
            && let Some(retry) = self.delivery_retry
        {
            best = Some(best.map_or(retry, |b| b.min(retry)));
        }
        // Never in the past: something that was due and did not happen would spin.
        best.map(|t| t.max(self.elapsed + Duration::from_secs(1)))
    }

    fn handle(&mut self, what: Scheduled) {
        match what {
            Scheduled::Offer(i) => {
                let (_, spec, program) = self.scenario.jobs[i].clone();
                self.programs.insert(spec.id().clone(), program);
                self.catalogue.push(spec.clone());
                if self.agent_up() {
                    self.offer(spec);
                }
            }
            Scheduled::Happening(i) => {
                let what = self.happenings[i].clone();
                self.happen_now(what);
            }
            Scheduled::ProgramEnds { job, pid } => self.program_ends(job, pid),
            Scheduled::Shutdown(cause) => self.shutdown(cause),
            Scheduled::PowerOn => self.power_on(),
            Scheduled::AgentStart => self.start_agent(),
        }
    }

    fn happen_now(&mut self, what: Happening) {
        match what {
            Happening::PowerCut => self.shutdown(RebootCause::PowerCut),
            Happening::Reboot => self.shutdown(RebootCause::Unrelated),
            Happening::AgentCrash => {
                if self.ledger.is_some() {
                    self.crash(None);
                }
            }
            Happening::LogOn => {
                self.user = UserPresence::LoggedOn;
                self.note(Happened::UserLoggedOn);
            }
            Happening::LogOff => {
                self.user = UserPresence::NoneLoggedOn;
                self.note(Happened::UserLoggedOff);
            }
            Happening::UserUnknown => {
                self.user = UserPresence::Unknown;
                self.note(Happened::UserUnknown);
            }
            Happening::ClockJump(by) => {
                self.skew += by;
                self.note(Happened::ClockJumped { by });
            }
            Happening::SinkFails(n) => {
                self.sink.fail_next = n;
                self.note(Happened::Sink {
                    change: format!("refuses the next {n} deliveries"),
                });
            }
            Happening::SinkDown => {
                self.sink.down = true;
                self.note(Happened::Sink {
                    change: "down".into(),
                });
            }
            Happening::SinkUp => {
                self.sink.down = false;
                self.note(Happened::Sink {
                    change: "up".into(),
                });
            }
            Happening::Rerun(job) => {
                if let Answer::Ok(effects) = self.call(Call::Rerun(job.clone()), |l| l.rerun(&job))
                {
                    self.carry_out(effects);
                }
            }
            Happening::Cancel(job) => {
                if let Answer::Ok(effects) =
                    self.call(Call::Cancel(job.clone()), |l| l.cancel(&job))
                {
                    self.carry_out(effects);
                }
            }
            Happening::Abandon(job) => {
                if let Answer::Ok(effects) =
                    self.call(Call::Abandon(job.clone()), |l| l.abandon(&job))
                {
                    self.carry_out(effects);
                }
            }
        }
    }

    // ---- The agent ----

    fn agent_up(&self) -> bool {
        self.ledger.is_some() && self.dying.is_none()
    }

    fn start_agent(&mut self) {
        if !self.machine_up || self.ledger.is_some() {
            return;
        }
        self.store.revive();
        if let Some(reopen) = self.scenario.reopen.clone()
            && let Err(error) = self.store.reopen(|store| reopen(store))
        {
            if let Answer::Refused = self.after_call::<()>(&Call::Open, Err(Error::Store(error))) {
                self.violate("the agent could not reopen its store".into());
                self.end = Some(End::AgentFailed);
            }
            return;
        }
        // Everything kept: the simulator's checks read whole histories (invariants 2, 3, 5
        // and 7 over every transition ever acknowledged).
        let options = crate::ledger::LedgerOptions::default()
            .with_restart_policy(self.scenario.restart_policy)
            .with_delivery(self.scenario.delivery)
            .with_retention(crate::retention::Retention::keep_all());
        let opened = Ledger::open_with(self.store.clone(), self.facts(), options);
        let effects = match opened {
            Ok((ledger, effects)) => {
                self.ledger = Some(ledger);
                self.note(Happened::AgentStarted);
                self.check_durable();
                match self.after_call(&Call::Open, Ok(effects)) {
                    Answer::Ok(effects) => effects,
                    _ => return,
                }
            }
            Err(error) => {
                if let Answer::Refused = self.after_call::<()>(&Call::Open, Err(error)) {
                    self.violate("the agent could not open its ledger".into());
                    self.end = Some(End::AgentFailed);
                }
                return;
            }
        };
        self.carry_out(effects);
        for (attempt, exit) in std::mem::take(&mut self.pending_exits) {
            self.deliver_exit(attempt, exit);
        }
        for spec in self.catalogue.clone() {
            if self.scenario.reoffer || !self.offered.contains(spec.id()) {
                self.offer(spec);
            }
        }
    }

    fn agent_turn(&mut self) {
        self.deliver();
        if let Answer::Ok(effects) = self.call(Call::Tick, |l| l.tick()) {
            self.carry_out(effects);
        }
        while self.agent_up() {
            if !self.scenario.parallel && (self.restart_scheduled() || self.running()) {
                break; // one job at a time, and none while a restart is coming
            }
            let Some(NextJob::Run(job)) = self.ledger.as_ref().map(|l| l.next_runnable()) else {
                break;
            };
            match self.call(Call::Begin(job.clone()), |l| l.begin(&job)) {
                Answer::Ok(attempt) => self.carry_out(vec![Effect::Launch(attempt)]),
                _ => break,
            }
        }
    }

    fn offer(&mut self, spec: JobSpec) {
        let job = spec.id().clone();
        if let Answer::Ok(answer) = self.call(Call::Offer(job.clone()), |l| l.offer(spec)) {
            self.offered.insert(job.clone());
            self.note(Happened::Offered { job, answer });
        }
    }

    fn deliver(&mut self) {
        if !self.agent_up() {
            return;
        }
        if self
            .ledger
            .as_ref()
            .is_none_or(|l| l.outbox().next().is_none())
        {
            self.delivery_retry = None;
            return;
        }
        self.sync_facts();
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let before = self.sink.received.len();
        self.sink.now = self.elapsed;
        let result = ledger.deliver(&mut self.sink);
        let keys: Vec<StatusKey> = self.sink.received[before..]
            .iter()
            .map(|m| m.key.clone())
            .collect();
        if !keys.is_empty() {
            self.note(Happened::Delivered { keys });
        }
        if let Some(reason) = self.sink.failure.take() {
            self.note(Happened::DeliveryFailed { reason });
        }
        self.delivery_retry = match self.after_call(&Call::Deliver, result) {
            Answer::Ok(delivery) => delivery.retry_at.map(|t| self.wall_to_sim(t)),
            // Ask again shortly: the ledger says when its back-off ends.
            _ => Some(self.elapsed + Duration::from_secs(1)),
        };
    }

    /// Makes one ledger call with the session facts of now.
    fn call<T>(
        &mut self,
        call: Call,
        f: impl FnOnce(&mut SimLedger<S>) -> Result<T, Error>,
    ) -> Answer<T> {
        if !self.agent_up() {
            return Answer::Refused;
        }
        self.sync_facts();
        let Some(ledger) = self.ledger.as_mut() else {
            return Answer::Refused;
        };
        let result = f(ledger);
        self.after_call(&call, result)
    }

    /// Traces the commits of a call and the state changes, and crashes the agent if the call
    /// reached a crash point.
    fn after_call<T>(&mut self, call: &Call, result: Result<T, Error>) -> Answer<T> {
        for (commit, ok) in self.store.take_log() {
            if ok {
                self.note(Happened::Committed {
                    commit,
                    call: call.clone(),
                });
            }
        }
        let crash = self.store.take_crash();
        match result {
            Ok(value) => {
                self.observe();
                match crash {
                    None => Answer::Ok(value),
                    Some(point) if point.when == CrashWhen::AfterCommit => {
                        self.dying = Some(point);
                        Answer::Ok(value)
                    }
                    Some(point) => {
                        self.crash(Some(point));
                        Answer::Crashed {
                            committed: point.when != CrashWhen::BeforeCommit,
                        }
                    }
                }
            }
            Err(error) => match crash {
                Some(point) => {
                    self.crash(Some(point));
                    Answer::Crashed {
                        committed: point.when != CrashWhen::BeforeCommit,
                    }
                }
                None => {
                    self.note(Happened::Refused {
                        call: call.clone(),
                        error: error.to_string(),
                    });
                    Answer::Refused
                }
            },
        }
    }

    fn carry_out(&mut self, effects: impl IntoIterator<Item = Effect>) {
        for effect in effects {
            match effect {
                Effect::Launch(attempt) => self.launch(attempt),
                Effect::Terminate(attempt) => self.terminate(attempt),
                Effect::ScheduleRestart { job, .. } => self.schedule_restart(job),
                Effect::Verify(attempt) => self.verify(attempt),
            }
        }
    }

    fn launch(&mut self, attempt: AttemptId) {
        let job = attempt.job.clone();
        if let Some(run) = self.tombstones.get(&job) {
            self.violate(format!(
                "invariant 1: {job}, a completed mandatory job (run {run}), launched again: {attempt}"
            ));
        }
        if let Some(live) = self.processes.get(&job) {
            let live = live.attempt.clone();
            self.violate(format!(
                "invariant 4: {attempt} launched while {live} still runs"
            ));
        }
        if self.may_restart(&job)
            && let Some(other) = self.processes.keys().find(|j| **j != job)
        {
            let other = other.clone();
            self.violate(format!(
                "restarts are exclusive: {attempt}, which may restart the machine, launched while {other} runs"
            ));
        }
        if let Some(other) = self
            .processes
            .keys()
            .find(|j| **j != job && self.may_restart(j))
        {
            let other = other.clone();
            self.violate(format!(
                "restarts are exclusive: {attempt} launched while {other}, which may restart the machine, runs"
            ));
        }
        let count = self.launches.entry(job.clone()).or_default();
        let index = *count;
        *count += 1;
        self.launch_times
            .entry(job.clone())
            .or_default()
            .push(self.elapsed);
        let mut run = self
            .programs
            .get(&job)
            .cloned()
            .unwrap_or_default()
            .run(index);
        if self.scenario.chaos.jitter {
            let percent = 50 + self.jitter_rng.below(101);
            run.after = run.after * percent as u32 / 100;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        self.note(Happened::Launched {
            attempt: attempt.clone(),
        });
        if run.ends != Ends::Hangs {
            self.schedule(
                self.elapsed + run.after,
                Scheduled::ProgramEnds {
                    job: job.clone(),
                    pid,
                },
            );
        }
        self.processes.insert(
            job,
            Process {
                pid,
                attempt: attempt.clone(),
                run,
            },
        );
        // The launch is a fact once recorded (an agent that dies first leaves it unrecorded).
        let program = ProgramId::new(
            u32::try_from(pid).unwrap_or(u32::MAX),
            u64::from(self.boots),
        );
        let call = Call::Launched(attempt.clone());
        if let Answer::Ok(effects) = self.call(call, |l| l.launched(&attempt, program)) {
            self.carry_out(effects);
        }
    }

    /// Whether `job` is declared as one that may restart the machine.
    fn may_restart(&self, job: &JobId) -> bool {
        self.catalogue
            .iter()
            .find(|s| s.id() == job)
            .is_some_and(|s| s.reboot() != RebootBehaviour::Never)
    }

    fn program_ends(&mut self, job: JobId, pid: u64) {
        let Some(process) = self.processes.get(&job).filter(|p| p.pid == pid) else {
            return;
        };
        match process.run.ends {
            Ends::RestartsMachine => self.shutdown(RebootCause::Program(job)),
            Ends::Exits {
                exit,
                then_restarts,
            } => {
                let Some(process) = self.processes.remove(&job) else {
                    return;
                };
                let success = matches!(
                    self.exit_outcome(&job, exit),
                    ExitOutcome::Success
                        | ExitOutcome::SuccessRestartRequired
                        | ExitOutcome::SuccessRestartInitiated
                );
                let installs = process.run.installs.unwrap_or(success || then_restarts);
                if process.run.leaves_restart_pending {
                    self.restart_pending = true;
                }
                if then_restarts {
                    if installs {
                        self.install_on_reboot.insert(job.clone());
                    }
                    if !self.restart_scheduled() {
                        self.schedule(
                            self.elapsed + RESTART_AFTER_EXIT,
                            Scheduled::Shutdown(RebootCause::Program(job.clone())),
                        );
                    }
                } else if installs {
                    self.installed.insert(job.clone());
                }
                self.note(Happened::Exited {
                    attempt: process.attempt.clone(),
                    exit,
                });
                self.deliver_exit(process.attempt, exit);
            }
            Ends::Hangs => {}
        }
    }

    fn exit_outcome(&self, job: &JobId, exit: ProgramExit) -> ExitOutcome {
        let ProgramExit::Code(code) = exit else {
            return ExitOutcome::Failure;
        };
        self.catalogue.iter().find(|s| s.id() == job).map_or_else(
            || crate::core::exit_code::ExitCodePolicy::default().outcome(code),
            |s| s.exit_codes().outcome(code),
        )
    }

    /// Hands an exit to the agent, or keeps it for the next agent.
    fn deliver_exit(&mut self, attempt: AttemptId, exit: ProgramExit) {
        if !self.agent_up() {
            self.pending_exits.push((attempt, exit));
            return;
        }
        let call = Call::ProgramExited(attempt.clone());
        match self.call(call, |l| l.program_exited(&attempt, exit)) {
            Answer::Ok(effects) => self.carry_out(effects),
            // The exit never reached the store: the next agent hears of it.
            Answer::Crashed { committed: false } => self.pending_exits.push((attempt, exit)),
            _ => {}
        }
    }

    fn terminate(&mut self, attempt: AttemptId) {
        let running = self
            .processes
            .get(&attempt.job)
            .is_some_and(|p| p.attempt == attempt);
        if running {
            self.processes.remove(&attempt.job);
            self.note(Happened::Killed {
                attempt: attempt.clone(),
                was_running: true,
            });
            self.deliver_exit(attempt, super::TERMINATED);
        } else if let Some(i) = self.pending_exits.iter().position(|(a, _)| *a == attempt) {
            // It exited while no agent listened: that exit is its end.
            let (attempt, exit) = self.pending_exits.remove(i);
            self.deliver_exit(attempt, exit);
        } else {
            // Nothing to kill: the program is gone, and no exit status will come. Say so.
            self.note(Happened::Killed {
                attempt: attempt.clone(),
                was_running: false,
            });
            let call = Call::ProgramLost(attempt.clone());
            if let Answer::Ok(effects) = self.call(call, |l| l.program_lost(&attempt)) {
                self.carry_out(effects);
            }
        }
    }

    /// Whether the ledger has a job running.
    fn running(&self) -> bool {
        self.ledger
            .as_ref()
            .is_some_and(|l| l.jobs().any(|r| r.state().kind() == StateKind::Running))
    }

    fn restart_scheduled(&self) -> bool {
        self.queue
            .values()
            .any(|s| matches!(s, Scheduled::Shutdown(_)))
    }

    fn schedule_restart(&mut self, job: JobId) {
        self.note(Happened::RestartScheduled { job: job.clone() });
        if self.restarts_to_ignore > 0 {
            self.restarts_to_ignore -= 1;
            self.note(Happened::RestartDidNotHappen { job });
            return;
        }
        if let Some(other) = self
            .processes
            .values()
            .find(|p| p.attempt.job != job)
            .map(|p| p.attempt.clone())
        {
            self.violate(format!(
                "restarts are exclusive: a restart for {job} licensed while {other} runs"
            ));
        }
        if !self.restart_scheduled() {
            self.schedule(
                self.elapsed + self.scenario.restart_delay,
                Scheduled::Shutdown(RebootCause::Agent(job)),
            );
        }
    }

    fn verify(&mut self, attempt: AttemptId) {
        if !self.agent_up() {
            return; // a dying agent runs no check: the next one is licensed again
        }
        let n = self.checks_made.entry(attempt.job.clone()).or_default();
        let index = *n;
        *n += 1;
        let scripted = self.programs.get(&attempt.job).and_then(|p| p.check(index));
        let result = scripted.unwrap_or_else(|| {
            if self.continuing.contains_key(&attempt.job) {
                CheckResult::NotYet
            } else {
                self.installed.contains(&attempt.job).into()
            }
        });
        self.note(Happened::Verified {
            attempt: attempt.clone(),
            result,
        });
        let call = Call::Verification(attempt.clone());
        if let Answer::Ok(effects) = self.call(call, |l| l.verification(&attempt, result)) {
            self.carry_out(effects);
        }
    }

    /// The agent dies; its programs live on; the service manager restarts it.
    fn crash(&mut self, point: Option<CrashPoint>) {
        self.ledger = None;
        self.dying = None;
        self.crashes += 1;
        self.delivery_retry = None;
        self.note(Happened::AgentCrashed { point });
        if self.kills_with_agent {
            // The service manager stops the agent's whole control group: its programs die with
            // it, and nobody hears their end.
            for (_, process) in std::mem::take(&mut self.processes) {
                self.note(Happened::KilledWithAgent {
                    attempt: process.attempt,
                });
            }
        }
        if self.machine_up {
            self.schedule(
                self.elapsed + AGENT_RESTARTS_AFTER_CRASH,
                Scheduled::AgentStart,
            );
        }
    }

    /// An agent that crashes after carrying out its effects does so now.
    fn settle(&mut self) {
        if let Some(point) = self.dying.take() {
            self.crash(Some(point));
        }
    }

    // ---- The machine ----

    fn shutdown(&mut self, cause: RebootCause) {
        if !self.machine_up {
            return;
        }
        let orderly = cause != RebootCause::PowerCut;
        let lost = self.scenario.chaos.lost_notices && self.notice_rng.chance(50);
        let notice = orderly
            && self.scenario.notices == NoticeDelivery::Delivered
            && self.agent_up()
            && !lost;
        self.note(Happened::ShuttingDown {
            cause: cause.clone(),
            notice,
        });
        if notice
            && let Answer::Ok(effects) = self.call(Call::ShutdownNotice, |l| l.shutdown_notice())
        {
            self.carry_out(effects);
        }
        // An agent that was to crash right after the notice does so now, as the machine stops.
        self.settle();
        // The agent stops with the machine, and every program dies.
        self.ledger = None;
        self.dying = None;
        let initiator = match &cause {
            RebootCause::Program(job) => Some(job.clone()),
            _ => None,
        };
        // An upgrade that restarts the machine several times goes on by itself.
        if let Some(job) = &initiator
            && let Some(left) = self.continuing.get_mut(job)
        {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.continuing.remove(job);
                self.installed.insert(job.clone());
            }
        }
        for (job, process) in std::mem::take(&mut self.processes) {
            if Some(&job) == initiator.as_ref() && process.run.ends == Ends::RestartsMachine {
                if process.run.installs.unwrap_or(true) {
                    if process.run.restarts > 1 {
                        self.continuing.insert(job, process.run.restarts - 1);
                    } else {
                        self.installed.insert(job);
                    }
                }
            } else {
                self.note(Happened::Died {
                    attempt: process.attempt,
                });
            }
        }
        let installs = std::mem::take(&mut self.install_on_reboot);
        self.installed.extend(installs);
        self.pending_exits.clear();
        self.queue.retain(|_, s| {
            !matches!(
                s,
                Scheduled::ProgramEnds { .. } | Scheduled::Shutdown(_) | Scheduled::AgentStart
            )
        });
        self.machine_up = false;
        self.delivery_retry = None;
        self.schedule(self.elapsed + REBOOT_TAKES, Scheduled::PowerOn);
    }

    fn power_on(&mut self) {
        self.boots += 1;
        self.restart_pending = false;
        self.boot_began = self.elapsed;
        self.boot = boot_id(self.scenario.seed, self.boots);
        self.machine_up = true;
        self.note(Happened::Booted {
            boot: self.boot.clone(),
        });
        let mut jump = TimeDelta::zero();
        if let Some(by) = self.scenario.clock_reset {
            jump -= TimeDelta::from_std(by).unwrap_or(TimeDelta::zero());
        }
        if self.scenario.chaos.clock_jumps && self.clock_rng.chance(50) {
            jump -= TimeDelta::seconds(self.clock_rng.below(3 * 3600) as i64 + 1);
        }
        if jump != TimeDelta::zero() {
            self.skew += jump;
            self.note(Happened::ClockJumped { by: jump });
        }
        self.schedule(
            self.elapsed + AGENT_STARTS_AFTER_BOOT,
            Scheduled::AgentStart,
        );
        for job in self.continuing.keys().cloned().collect::<Vec<_>>() {
            self.schedule(
                self.elapsed + NEXT_PHASE_RESTART,
                Scheduled::Shutdown(RebootCause::Program(job)),
            );
        }
    }

    // ---- Checks and bookkeeping ----

    /// After a call: traces state changes, and checks that completed mandatory jobs stay so.
    fn observe(&mut self) {
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        let mut lines = Vec::new();
        let mut broken = Vec::new();
        for record in ledger.jobs() {
            let id = record.id();
            let kind = record.state().kind();
            let last = record.history().last();
            // (Cheap when nothing changed: ids and entries are cloned only on change.)
            if self.acked.get(id).map(|e| e.seq) == last.map(|e| e.seq) {
                continue;
            }
            let before = self.kinds.insert(id.clone(), kind);
            if before != Some(kind) {
                lines.push(Happened::StateChanged {
                    job: id.clone(),
                    from: before,
                    to: kind,
                });
            }
            if let Some(run) = self.tombstones.get(id) {
                if kind != StateKind::Completed || record.state().run() != *run {
                    broken.push(format!(
                        "invariant 1: {id}, completed in run {run}, is now {kind} in run {}",
                        record.state().run()
                    ));
                }
            } else if kind == StateKind::Completed && record.spec().is_mandatory() {
                self.tombstones.insert(id.clone(), record.state().run());
            }
            if let Some(last) = last {
                self.acked.insert(id.clone(), last.clone());
            }
        }
        for line in lines {
            self.note(line);
        }
        for what in broken {
            self.violate(what);
        }
    }

    /// After an agent start: every transition acknowledged before is still there.
    fn check_durable(&mut self) {
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        let mut broken = Vec::new();
        // Recovery may add transitions; those acknowledged before must be there, unchanged.
        for (job, last) in &self.acked {
            let record = ledger.job(job);
            let now = record.and_then(|r| r.history().iter().find(|e| e.seq == last.seq));
            // A store's retention may have compacted it away (the job went on past it), never
            // changed it.
            let compacted = record.is_some_and(|r| last.seq < r.first_seq() && r.seq() >= last.seq);
            if now != Some(last) && !compacted {
                broken.push(format!(
                    "invariant 2: {job}'s acknowledged transition {} is {} after the restart",
                    last.seq,
                    if now.is_some() {
                        "different"
                    } else {
                        "missing"
                    }
                ));
            }
        }
        for what in broken {
            self.violate(what);
        }
    }

    fn violate(&mut self, what: String) {
        self.note(Happened::Violation { what: what.clone() });
        self.violations.push(what);
    }

    fn note(&mut self, what: Happened) {
        self.trace.push(TraceLine {
            at: self.elapsed,
            boot: self.boots,
            what,
        });
    }

    fn schedule(&mut self, at: Duration, what: Scheduled) {
        self.seq += 1;
        self.queue.insert((at, self.seq), what);
    }

    fn now(&self) -> Timestamp {
        let elapsed = TimeDelta::from_std(self.elapsed).unwrap_or(TimeDelta::zero());
        self.start + elapsed + self.skew
    }

    fn since_boot(&self) -> Duration {
        self.elapsed.saturating_sub(self.boot_began)
    }

    /// The simulated time at which the wall clock will show `t` (if it does not jump).
    fn wall_to_sim(&self, t: Timestamp) -> Duration {
        let ahead = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
        self.elapsed + ahead
    }
}

//! What a simulation did: its trace, and the outcome to assert on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::CrashPoint;
use crate::core::effect::{AttemptId, StatusKey, StatusMessage};
use crate::core::id::{BootId, JobId};
use crate::core::spec::RebootBehaviour;
use crate::core::state::{JobState, StateKind};
use crate::ledger::Offer;
use crate::record::JobRecord;

/// The ledger call the agent was making: what a commit (and so a crash point) belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// [`Ledger::open`](crate::Ledger::open): recovery at agent start.
    Open,
    /// [`Ledger::offer`](crate::Ledger::offer).
    #[doc(alias = "advertise")]
    Offer(JobId),
    /// [`Ledger::begin`](crate::Ledger::begin).
    Begin(JobId),
    /// [`Ledger::program_exited`](crate::Ledger::program_exited).
    ProgramExited(AttemptId),
    /// [`Ledger::verification`](crate::Ledger::verification).
    Verification(AttemptId),
    /// [`Ledger::tick`](crate::Ledger::tick).
    Tick,
    /// [`Ledger::shutdown_notice`](crate::Ledger::shutdown_notice).
    ShutdownNotice,
    /// [`Ledger::deliver`](crate::Ledger::deliver): the acknowledgement of delivered messages.
    Deliver,
    /// [`Ledger::rerun`](crate::Ledger::rerun).
    Rerun(JobId),
    /// [`Ledger::cancel`](crate::Ledger::cancel).
    Cancel(JobId),
    /// [`Ledger::launched`](crate::Ledger::launched).
    Launched(AttemptId),
    /// [`Ledger::program_lost`](crate::Ledger::program_lost).
    ProgramLost(AttemptId),
    /// [`Ledger::abandon`](crate::Ledger::abandon).
    Abandon(JobId),
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Open => f.write_str("open (recovery)"),
            Call::Offer(job) => write!(f, "offer {job}"),
            Call::Begin(job) => write!(f, "begin {job}"),
            Call::ProgramExited(attempt) => write!(f, "program_exited {attempt}"),
            Call::Verification(attempt) => write!(f, "verification {attempt}"),
            Call::Tick => f.write_str("tick"),
            Call::ShutdownNotice => f.write_str("shutdown_notice"),
            Call::Deliver => f.write_str("deliver"),
            Call::Rerun(job) => write!(f, "rerun {job}"),
            Call::Cancel(job) => write!(f, "cancel {job}"),
            Call::Launched(attempt) => write!(f, "launched {attempt}"),
            Call::ProgramLost(attempt) => write!(f, "program_lost {attempt}"),
            Call::Abandon(job) => write!(f, "abandon {job}"),
        }
    }
}

/// Why the machine restarted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RebootCause {
    /// The agent restarted it, as an [`Effect::ScheduleRestart`](crate::Effect::ScheduleRestart)
    /// for this job licensed.
    Agent(JobId),
    /// This job's program restarted it.
    Program(JobId),
    /// Someone restarted it (orderly: a shutdown notice may be delivered).
    Unrelated,
    /// The power was cut: no notice, nothing orderly.
    PowerCut,
}

impl fmt::Display for RebootCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebootCause::Agent(job) => write!(f, "the agent, for {job}"),
            RebootCause::Program(job) => write!(f, "the program of {job}"),
            RebootCause::Unrelated => f.write_str("someone else (unrelated)"),
            RebootCause::PowerCut => f.write_str("a power cut"),
        }
    }
}

/// One thing that happened in a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Happened {
    /// The machine booted, with this boot identity.
    Booted {
        /// The new boot identity.
        boot: BootId,
    },
    /// The agent started and its ledger opened (recovery ran).
    AgentStarted,
    /// The agent process died; its programs live on.
    AgentCrashed {
        /// The crash point, or `None` for a crash at a chosen time.
        point: Option<CrashPoint>,
    },
    /// The server offered a job to the agent.
    Offered {
        /// The job.
        job: JobId,
        /// The ledger's answer.
        answer: Offer,
    },
    /// A commit reached the store.
    Committed {
        /// Its number (from 0, over the run): the number crash points use.
        commit: u64,
        /// The call that made it.
        call: Call,
    },
    /// A job changed state (as the agent's ledger sees it after a call).
    StateChanged {
        /// The job.
        job: JobId,
        /// Its state before (`None`: new).
        from: Option<StateKind>,
        /// Its state now.
        to: StateKind,
    },
    /// The agent launched the program of an attempt.
    Launched {
        /// The attempt.
        attempt: AttemptId,
    },
    /// A program exited with a code (delivered to the agent now, or when it next starts).
    Exited {
        /// Its attempt.
        attempt: AttemptId,
        /// How it ended.
        exit: crate::core::exit_code::ProgramExit,
    },
    /// The agent killed the program of an attempt (past its maximum run time).
    Killed {
        /// The attempt.
        attempt: AttemptId,
        /// Whether a program was running (a lost launch leaves none).
        was_running: bool,
    },
    /// A program died because the machine restarted under it.
    Died {
        /// Its attempt.
        attempt: AttemptId,
    },
    /// A program died with the agent (its control group was stopped with it).
    KilledWithAgent {
        /// Its attempt.
        attempt: AttemptId,
    },
    /// The agent ran a job's detection check.
    Verified {
        /// The attempt checked.
        attempt: AttemptId,
        /// What the check said.
        result: crate::core::event::CheckResult,
    },
    /// The agent scheduled a restart that a job needs.
    RestartScheduled {
        /// The job.
        job: JobId,
    },
    /// The restart the agent ordered did not happen.
    RestartDidNotHappen {
        /// The job it was for.
        job: JobId,
    },
    /// The machine is going down.
    ShuttingDown {
        /// Why.
        cause: RebootCause,
        /// Whether the agent received a shutdown notice.
        notice: bool,
    },
    /// The site server received status messages (duplicates included).
    Delivered {
        /// Their keys.
        keys: Vec<StatusKey>,
    },
    /// A delivery to the site server failed.
    DeliveryFailed {
        /// Why.
        reason: String,
    },
    /// The ledger refused a call.
    Refused {
        /// The call.
        call: Call,
        /// The error, as displayed.
        error: String,
    },
    /// A user logged on.
    UserLoggedOn,
    /// The user logged off.
    UserLoggedOff,
    /// Whether a user is logged on became unknown.
    UserUnknown,
    /// The wall clock jumped (negative: backwards), as a reset clock does.
    ClockJumped {
        /// By how much.
        by: chrono::TimeDelta,
    },
    /// The site server's availability changed, or it was told to refuse deliveries.
    Sink {
        /// What changed.
        change: String,
    },
    /// A check of the crate's promises failed (see [`Outcome::violations`]).
    Violation {
        /// What was broken.
        what: String,
    },
}

impl fmt::Display for Happened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Happened::Booted { boot } => write!(f, "machine booted: {boot}"),
            Happened::AgentStarted => f.write_str("agent started"),
            Happened::AgentCrashed { point: Some(p) } => write!(f, "AGENT CRASHED {p}"),
            Happened::AgentCrashed { point: None } => f.write_str("AGENT CRASHED"),
            Happened::Offered { job, answer } => write!(f, "offered {job}: {answer:?}"),
            Happened::Committed { commit, call } => write!(f, "commit #{commit} ({call})"),
            Happened::StateChanged { job, from, to } => match from {
                Some(from) => write!(f, "{job}: {from} -> {to}"),
                None => write!(f, "{job}: new, {to}"),
            },
            Happened::Launched { attempt } => write!(f, "launched {attempt}"),
            Happened::Exited { attempt, exit } => write!(f, "{attempt} ended with {exit}"),
            Happened::Killed {
                attempt,
                was_running,
            } => {
                if *was_running {
                    write!(f, "killed {attempt}")
                } else {
                    write!(f, "kill {attempt}: no such program (its launch was lost)")
                }
            }
            Happened::Died { attempt } => write!(f, "{attempt} died with the machine"),
            Happened::KilledWithAgent { attempt } => write!(f, "{attempt} died with the agent"),
            Happened::Verified { attempt, result } => {
                write!(f, "detection check of {attempt}: {result:?}")
            }
            Happened::RestartScheduled { job } => write!(f, "restart scheduled for {job}"),
            Happened::RestartDidNotHappen { job } => {
                write!(f, "the restart for {job} did not happen")
            }
            Happened::ShuttingDown { cause, notice } => {
                let notice = if *notice {
                    "notice delivered"
                } else {
                    "no notice"
                };
                write!(f, "machine restarting, by {cause}; {notice}")
            }
            Happened::Delivered { keys } => {
                f.write_str("server received:")?;
                for key in keys {
                    write!(f, " [{key}]")?;
                }
                Ok(())
            }
            Happened::DeliveryFailed { reason } => write!(f, "delivery failed: {reason}"),
            Happened::Refused { call, error } => write!(f, "refused {call}: {error}"),
            Happened::UserLoggedOn => f.write_str("user logged on"),
            Happened::UserLoggedOff => f.write_str("user logged off"),
            Happened::UserUnknown => f.write_str("user presence unknown"),
            Happened::ClockJumped { by } => {
                let sign = if *by < chrono::TimeDelta::zero() {
                    "back"
                } else {
                    "forward"
                };
                let s = by.num_seconds().unsigned_abs();
                write!(
                    f,
                    "wall clock jumped {sign} by {}h{:02}m{:02}s",
                    s / 3600,
                    s / 60 % 60,
                    s % 60
                )
            }
            Happened::Sink { change } => write!(f, "site server: {change}"),
            Happened::Violation { what } => write!(f, "VIOLATION: {what}"),
        }
    }
}

/// One line of a [`Trace`]: what happened, when, in which boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Simulated time since the run began (monotonic: the wall clock may jump, this does not).
    pub at: Duration,
    /// The boot (1 for the first).
    pub boot: u32,
    /// What happened.
    pub what: Happened,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.at.as_secs();
        write!(
            f,
            "{:>4}:{:02}:{:02} boot {:<2} {}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.boot,
            self.what
        )
    }
}

/// Everything that happened in a run, in order. Two runs of the same scenario (same seed) give
/// equal traces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<TraceLine>,
}

impl Trace {
    pub(super) fn push(&mut self, line: TraceLine) {
        self.lines.push(line);
    }

    /// The lines, in order.
    pub fn lines(&self) -> &[TraceLine] {
        &self.lines
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The last `n` lines, displayed one per line.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("  ... ({skip} earlier lines)\n"));
        }
        for line in &self.lines[skip..] {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }

    /// The commits made, with the call that made each: every crash point of the run.
    pub fn commits(&self) -> Vec<(u64, Call)> {
        self.lines
            .iter()
            .filter_map(|l| match &l.what {
                Happened::Committed { commit, call } => Some((*commit, call.clone())),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum End {
    /// Nothing more could happen: no program running, nothing scheduled, no job the agent could
    /// start or would wake up for (jobs may still wait, for a user who never logs on).
    Idle,
    /// The simulated time reached the scenario's horizon first.
    Horizon,
    /// The run took the scenario's maximum number of steps first.
    StepLimit,
    /// The agent could not open its ledger for a reason other than a planned crash.
    AgentFailed,
    /// The test stopped the run ([`Machine::finish`](super::Machine::finish)) before it ended.
    Stopped,
}

/// What a run did, to assert on: the trace, the final job records, what the site server
/// received, and what the simulator found broken.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub(super) seed: u64,
    pub(super) trace: Trace,
    pub(super) jobs: Vec<JobRecord>,
    pub(super) pending: Vec<StatusMessage>,
    pub(super) received: Vec<StatusMessage>,
    pub(super) launches: BTreeMap<JobId, usize>,
    pub(super) launch_times: BTreeMap<JobId, Vec<Duration>>,
    pub(super) violations: Vec<String>,
    pub(super) end: End,
    pub(super) boots: u32,
    pub(super) crashes: u32,
    pub(super) elapsed: Duration,
}

impl Outcome {
    /// The seed of the run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Everything that happened.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// How many times the agent launched `job`'s program.
    pub fn launches(&self, job: &JobId) -> usize {
        self.launches.get(job).copied().unwrap_or(0)
    }

    /// When the agent launched `job`'s program, launch by launch (simulated time since the run
    /// began).
    pub fn launch_times(&self, job: &JobId) -> &[Duration] {
        self.launch_times.get(job).map_or(&[], Vec::as_slice)
    }

    /// The final state of `job`, as the store holds it.
    pub fn state(&self, job: &JobId) -> Option<StateKind> {
        self.job(job).map(|r| r.state().kind())
    }

    /// The final record of `job` (spec, state, history), as the store holds it.
    pub fn job(&self, job: &JobId) -> Option<&JobRecord> {
        self.jobs.iter().find(|r| r.id() == job)
    }

    /// Every job's final record, in offer order.
    pub fn jobs(&self) -> &[JobRecord] {
        &self.jobs
    }

    /// The status messages of `job` the site server received, without duplicates (by key), in
    /// the order first received.
    pub fn reports(&self, job: &JobId) -> Vec<&StatusMessage> {
        let mut seen = BTreeSet::new();
        self.received
            .iter()
            .filter(|m| &m.key.job == job && seen.insert(&m.key))
            .collect()
    }

    /// The states of `job` the site server was told of, in order, without duplicates.
    pub fn reported(&self, job: &JobId) -> Vec<StateKind> {
        self.reports(job).iter().map(|m| m.key.state).collect()
    }

    /// How many status messages of `job` the site server received, duplicates included
    /// (delivery is at least once).
    pub fn deliveries(&self, job: &JobId) -> usize {
        self.received.iter().filter(|m| &m.key.job == job).count()
    }

    /// The status messages still in the outbox at the end.
    pub fn pending(&self) -> &[StatusMessage] {
        &self.pending
    }

    /// How many times the machine booted after the first boot.
    pub fn reboots(&self) -> u32 {
        self.boots.saturating_sub(1)
    }

    /// How many times the agent crashed.
    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    /// The simulated time the run took.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Why the run stopped.
    pub fn end(&self) -> End {
        self.end
    }

    /// Whether the run stopped because nothing more could happen.
    pub fn is_idle(&self) -> bool {
        self.end == End::Idle
    }

    /// The crate's [invariants](crate::semantics) that the run broke, checked as it ran:
    /// a completed mandatory job launched again or moved out of `Completed` (1); a transition
    /// the store acknowledged missing after a restart (2); a job declared
    /// [`RebootBehaviour::RestartsMachine`] failed by a reboot (3); two programs of one job
    /// running at once (4); a terminal state or reboot wait without exactly one status message,
    /// neither pending in the outbox, nor received by the site server, nor kept as a dead letter
    /// (given up on, visibly) (5). Empty when all held.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Panics, with the seed, the violations and the end of the trace, if any promise was
    /// broken.
    #[track_caller]
    pub fn assert_invariants(&self) {
        if !self.violations.is_empty() {
            panic!(
                "simulator seed {}: {} violation(s):\n  {}\ntrace (end):\n{}",
                self.seed,
                self.violations.len(),
                self.violations.join("\n  "),
                self.trace.tail(40)
            );
        }
    }
}

/// The status keys the jobs' histories call for: one per terminal state, per wait for a reboot,
/// per overdue report of a wait and per program reported unresponsive (as in the crate's property
/// test).
pub(super) fn expected_reports(jobs: &[JobRecord]) -> Vec<StatusKey> {
    let mut keys = Vec::new();
    for record in jobs {
        let mut before: Option<&JobState> = None;
        for entry in record.history() {
            let key = |wait: u32, overdue: u32| StatusKey {
                job: record.id().clone(),
                run: entry.state.run(),
                attempt: entry.state.attempt().map_or(0, |a| a.number),
                state: entry.state.kind(),
                wait,
                overdue,
            };
            match (&entry.state, before) {
                (s, _) if s.is_terminal() => keys.push(key(0, 0)),
                (
                    JobState::AwaitingReboot { wait, overdue, .. },
                    Some(JobState::AwaitingReboot {
                        wait: w0,
                        overdue: o0,
                        ..
                    }),
                ) if wait == w0 => keys.extend((overdue > o0).then(|| key(*wait, *overdue))),
                (JobState::AwaitingReboot { wait, overdue, .. }, _) => {
                    keys.push(key(*wait, 0));
                    if *overdue > 0 {
                        keys.push(key(*wait, *overdue));
                    }
                }
                (
                    JobState::Running {
                        terminate: Some(t), ..
                    },
                    Some(JobState::Running {
                        terminate: before_t,
                        ..
                    }),
                ) if t.unresponsive && !before_t.is_some_and(|b| b.unresponsive) => {
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
                    keys.push(key(
                        0,
                        u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1),
                    ));
                }
                _ => {}
            }
            before = Some(&entry.state);
        }
    }
    keys
}

/// Invariants 3, 5 and 7 over the final records, what was received, and what was given up on.
pub(super) fn final_violations(
    jobs: &[JobRecord],
    pending: &[StatusMessage],
    received: &[StatusMessage],
    dead_letters: &[crate::report::dead_letter::DeadLetter],
) -> Vec<String> {
    let mut violations = Vec::new();
    for record in jobs {
        let restarts = record.spec().reboot() == RebootBehaviour::RestartsMachine;
        let mut before: Option<&JobState> = None;
        for entry in record.history() {
            if let Some(before) = before {
                if restarts && let Some(what) = reboot_undid(before, entry) {
                    violations.push(format!(
                        "invariant 3: {} (restarts the machine) {what} by a reboot: {:?}",
                        record.id(),
                        entry.state
                    ));
                }
                if entry.state.kind() == StateKind::Completed
                    && !completion_has_evidence(record.spec(), before, entry)
                {
                    violations.push(format!(
                        "invariant 7: {} completed without evidence, by {:?} from {:?}",
                        record.id(),
                        entry.event.kind,
                        before
                    ));
                }
            }
            before = Some(&entry.state);
        }
    }
    let expected = expected_reports(jobs);
    let distinct: BTreeSet<&StatusKey> = expected.iter().collect();
    if distinct.len() != expected.len() {
        violations.push(format!("invariant 5: a state reported twice: {expected:?}"));
    }
    let received_keys: BTreeSet<&StatusKey> = received.iter().map(|m| &m.key).collect();
    let pending_keys: BTreeSet<&StatusKey> = pending.iter().map(|m| &m.key).collect();
    let dead_keys: BTreeSet<&StatusKey> = dead_letters.iter().map(|d| &d.message.key).collect();
    // A job whose earlier history a store's retention compacted away: its older states are not
    // there to match a report against.
    let compacted: BTreeSet<&JobId> = jobs
        .iter()
        .filter(|r| r.first_seq() > 1)
        .map(|r| r.id())
        .collect();
    for key in received_keys
        .iter()
        .chain(pending_keys.iter())
        .chain(dead_keys.iter())
    {
        if !distinct.contains(key) && !compacted.contains(&key.job) {
            violations.push(format!("invariant 5: [{key}] reported for no such state"));
        }
    }
    for key in &distinct {
        if !received_keys.contains(key) && !pending_keys.contains(key) && !dead_keys.contains(key) {
            violations.push(format!(
                "invariant 5: [{key}] is neither pending nor received by the site server \
                 (nor kept as a dead letter)"
            ));
        }
    }
    violations
}

/// What a reboot observed at an agent start did wrong to a job declared to restart the
/// machine, if anything: failed it, or queued it to run again. (An attempt whose launch was
/// never recorded never ran: queued again as the same attempt, it is launched again, no re-run.)
pub(crate) fn reboot_undid(
    before: &JobState,
    entry: &crate::record::HistoryEntry,
) -> Option<&'static str> {
    if !matches!(
        entry.event.kind,
        crate::core::event::EventKind::AgentStarted { .. }
    ) {
        return None;
    }
    let rebooted = before.attempt().is_some_and(|a| a.boot != entry.event.boot)
        && matches!(
            before.kind(),
            StateKind::Running | StateKind::AwaitingReboot
        );
    if !rebooted {
        return None;
    }
    if let (
        JobState::Running {
            attempt,
            launch: crate::core::state::Launch::Pending,
            ..
        },
        JobState::Queued {
            run,
            attempt: number,
            ..
        },
    ) = (before, &entry.state)
        && (*run, *number) == (attempt.run, attempt.number)
    {
        return None;
    }
    match entry.state.kind() {
        StateKind::Failed => Some("failed"),
        StateKind::Queued => Some("queued to run again"),
        _ => None,
    }
}

/// SEMANTICS.md invariant 7: a job is completed only on evidence: an exit code that maps to
/// success, a positive check, or a new boot after a requested restart or after the recorded
/// launch of a program declared to restart the machine.
pub(crate) fn completion_has_evidence(
    spec: &crate::core::spec::JobSpec,
    before: &JobState,
    entry: &crate::record::HistoryEntry,
) -> bool {
    use crate::core::event::{CheckResult, EventKind};
    use crate::core::exit_code::ExitOutcome;
    match &entry.event.kind {
        EventKind::ProgramExited {
            exit: crate::core::exit_code::ProgramExit::Code(code),
            ..
        } => matches!(
            spec.exit_codes().outcome(*code),
            ExitOutcome::Success | ExitOutcome::SuccessRestartRequired
        ),
        EventKind::Verified { result, .. } => *result == CheckResult::Installed,
        EventKind::AgentStarted { .. } => match before {
            JobState::AwaitingReboot {
                requested_in,
                verifying_in: None,
                ..
            } => *requested_in != entry.event.boot,
            JobState::Running {
                attempt,
                launch,
                provisional,
                ..
            } => {
                attempt.boot != entry.event.boot
                    && spec.reboot() == RebootBehaviour::RestartsMachine
                    && (launch.happened() || provisional.is_some())
            }
            _ => false,
        },
        _ => false,
    }
}

//! The pure transition function: `(spec, state, event) -> (new state, effects)`.
//!
//! **Architecture invariant:** nothing in this module does IO or reads a clock. Time and boot
//! identity arrive in the [`Event`]; what must happen in the world leaves as [`Effect`]s.

use std::time::Duration;

use crate::core::effect::{AttemptId, Effect, StatusKey, StatusMessage};
use crate::core::event::{AttemptRef, CheckResult, Event, EventKind, EventName};
use crate::core::exit_code::{ExitOutcome, ProgramExit};
use crate::core::id::{BootId, JobId};
use crate::core::program::{ProgramId, ProgramStatus};
use crate::core::restart_policy::RestartRelease;
use crate::core::spec::{JobSpec, RebootBehaviour};
use crate::core::state::{
    Attempt, FailureReason, JobState, Launch, ProvisionalFailure, RebootAttribution, RebootKind,
    StateKind, Termination,
};

/// The result of applying an event: the new state (`None` when the event changes nothing), the
/// status message the new state produces (to be committed *with* it, in the outbox), and the
/// effects the caller must carry out once both are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a step must be committed (its state and report) and its effects carried out"]
pub struct Step {
    /// The new state, or `None` if the state is unchanged (nothing to commit).
    pub state: Option<JobState>,
    /// The status message of the new state: every terminal state, every wait for a reboot,
    /// every overdue restart and every program that outlives its termination has exactly one.
    pub report: Option<StatusMessage>,
    /// What the caller must do, in order.
    pub effects: Vec<Effect>,
}

impl Step {
    fn unchanged() -> Self {
        Self {
            state: None,
            report: None,
            effects: Vec::new(),
        }
    }

    fn to(state: JobState) -> Self {
        Self {
            state: Some(state),
            report: None,
            effects: Vec::new(),
        }
    }

    fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    fn report(mut self, report: Option<StatusMessage>) -> Self {
        self.report = report;
        self
    }
}

/// An event that the state machine refuses. The job's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The event makes no sense in the job's state (for example an exit code for a queued job).
    #[error(
        "job {job}: event {event} is not valid in state {state}; the job is unchanged (inspect its history to see what it is waiting for)"
    )]
    Invalid {
        /// The job.
        job: JobId,
        /// Its current state.
        state: StateKind,
        /// The refused event.
        event: EventName,
    },
    /// The event names an attempt that is not the job's current one: it is stale or replayed.
    #[error(
        "job {job}: event {event} names {got}, but the job is in state {state} with {}; a stale or replayed event was refused and the job is unchanged",
        current.map_or_else(|| "no attempt in progress".to_string(), |c| c.to_string())
    )]
    StaleAttempt {
        /// The job.
        job: JobId,
        /// Its current state.
        state: StateKind,
        /// The refused event.
        event: EventName,
        /// The attempt the event named.
        got: AttemptRef,
        /// The job's current attempt, if one started.
        current: Option<AttemptRef>,
    },
    /// The event was observed in another boot than the attempt it concerns.
    #[error(
        "job {job}: event {event} was observed in boot {observed} but the attempt belongs to boot {recorded}; reconcile first (reopen the ledger), the job is unchanged"
    )]
    OtherBoot {
        /// The job.
        job: JobId,
        /// The refused event.
        event: EventName,
        /// The boot the job's state belongs to.
        recorded: BootId,
        /// The boot the event was observed in.
        observed: BootId,
    },
    /// A restart was declared while the attempt's program may still run (or never ran): a
    /// restart is never licensed under a live installer, and a reboot completes only a program
    /// that ran.
    #[error(
        "job {job}: a restart for {attempt} cannot be expected while its program may still run or never ran; record the program's exit first (program_exited), the job is unchanged"
    )]
    ExitNotRecorded {
        /// The job.
        job: JobId,
        /// The attempt whose exit is not recorded.
        attempt: AttemptRef,
    },
    /// The event would start a completed mandatory job again, which is never allowed.
    #[error(
        "job {job} is a completed mandatory job: {event} is refused, since such a job never leaves Completed and never runs again; offer a new job id for new work"
    )]
    CompletedMandatory {
        /// The job.
        job: JobId,
        /// The refused event.
        event: EventName,
    },
}

/// The step of an attempt whose launch was never recorded, which [`transition`] queued again
/// as itself (`began`, the attempt as it was `Running`), given the `Queued` state it was begun
/// from (`begun_from`, from the job's history): what that queue held comes back, the failed
/// attempt before it and why it failed. A restart since the attempt began then owes that failed
/// attempt's check before it starts again, as it does for a retry not yet begun
/// (`agent_started`): the restart may have finished the work whose failure was reported (seed
/// 001), and running it again is the seeds' bug. `None` if `begun_from` is not that attempt's
/// queue.
pub(crate) fn requeued(
    spec: &JobSpec,
    began: &Attempt,
    begun_from: &JobState,
    event: &Event,
) -> Option<Step> {
    let JobState::Queued {
        run,
        attempt,
        last_failure,
        previous,
        ..
    } = begun_from
    else {
        return None;
    };
    if (*run, *attempt) != (began.run, began.number) {
        return None;
    }
    let check = match previous {
        Some(failed) if began.boot != event.boot && spec.verify_after_reboot() => Some(failed),
        _ => None,
    };
    let step = Step::to(JobState::Queued {
        run: *run,
        attempt: *attempt,
        not_before: None,
        last_failure: last_failure.clone(),
        previous: previous.clone(),
        check_before_retry: check.is_some(),
    });
    Some(match check {
        Some(failed) => step.effect(Effect::Verify(AttemptId::new(
            spec.id().clone(),
            attempt_ref(failed),
        ))),
        None => step,
    })
}

/// Applies `event` to a job in `state` under `spec`.
///
/// Pure: the same inputs always give the same output. An event that changes nothing returns
/// `Step { state: None, .. }`; an event that is not valid returns a [`TransitionError`] and the
/// caller keeps the old state.
///
/// One step needs more than the state: an attempt whose launch was never recorded is queued
/// again as itself, and `Running` does not hold what its queue held (the failed attempt before
/// it, why that failed), so this function queues it without them. The
/// [`Ledger`](crate::Ledger) puts them back from the job's history, and after a restart asks for
/// that failed attempt's check before the retry starts again (seed 001: the restart may have
/// finished the work). Prefer the ledger; a caller that drives `transition` itself must do the
/// same.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use jobstate::{transition, BootId, Event, EventKind, JobId, JobSpec, JobState, StateKind};
///
/// let spec = JobSpec::new(JobId::new("patch").unwrap());
/// let boot = BootId::new("boot-1").unwrap();
/// let at = Utc.with_ymd_and_hms(2026, 11, 21, 3, 0, 0).unwrap();
/// let since_boot = std::time::Duration::from_secs(42); // the boot's monotonic clock
/// let start = Event { at, boot: boot.clone(), since_boot, kind: EventKind::AttemptStarted };
///
/// let step = transition(&spec, &JobState::initial(), &start).unwrap();
/// let running = step.state.unwrap();
/// assert_eq!(running.kind(), StateKind::Running);
/// assert_eq!(step.effects.len(), 1); // Effect::Launch: start the program now
/// ```
#[must_use = "the step's new state and report must be committed, then its effects carried out; dropped, the event is lost"]
pub fn transition(
    spec: &JobSpec,
    state: &JobState,
    event: &Event,
) -> Result<Step, TransitionError> {
    let t = Transitioner { spec, state, event };
    if let JobState::Completed { .. } = state
        && spec.is_mandatory()
    {
        return t.completed_mandatory();
    }
    match &event.kind {
        // A spec change changes no state: the change that records it carries the new spec.
        EventKind::Offered | EventKind::SpecChanged => Ok(Step::unchanged()),
        EventKind::AttemptStarted => t.attempt_started(),
        EventKind::Launched { attempt, program } => t.launched(*attempt, *program),
        EventKind::LaunchFailed { attempt } => t.launch_failed(*attempt),
        EventKind::ProgramExited {
            attempt,
            exit,
            restart_pending,
        } => t.program_exited(*attempt, *exit, *restart_pending),
        EventKind::ProgramLost { attempt } => t.program_lost(*attempt),
        EventKind::ShutdownNoticed => Ok(t.shutdown_noticed()),
        EventKind::AgentStarted {
            program,
            restart_of,
        } => Ok(t.agent_started(*program, restart_of.as_ref())),
        EventKind::RebootExpected { attempt, kind } => t.reboot_expected(*attempt, *kind),
        EventKind::Verified { attempt, result } => t.verified(*attempt, *result),
        EventKind::Tick { program } => Ok(t.tick(*program)),
        EventKind::CancelRequested => t.cancel(),
        EventKind::RerunRequested => t.rerun(),
        EventKind::AbandonRequested => t.abandon(),
    }
}

struct Transitioner<'a> {
    spec: &'a JobSpec,
    state: &'a JobState,
    event: &'a Event,
}

/// The kind of restart the agent is licensed to make for a wait caused by `cause`: the one the
/// job asked for, else (a restart its program initiated, that did not come) a hard one.
fn restart_kind(cause: &RebootAttribution) -> RebootKind {
    match cause {
        RebootAttribution::RequestedByJob(kind) => *kind,
        _ => RebootKind::Hard,
    }
}

impl Transitioner<'_> {
    fn job(&self) -> JobId {
        self.spec.id().clone()
    }

    fn attempt_id(&self, attempt: &Attempt) -> AttemptId {
        AttemptId::new(self.job(), attempt_ref(attempt))
    }

    fn invalid<T>(&self) -> Result<T, TransitionError> {
        Err(TransitionError::Invalid {
            job: self.job(),
            state: self.state.kind(),
            event: self.event.kind.name(),
        })
    }

    /// The current state with `change` applied to a copy of it.
    fn modified(&self, change: impl FnOnce(&mut JobState)) -> JobState {
        let mut state = self.state.clone();
        change(&mut state);
        state
    }

    /// Time elapsed since `since` on the boot's monotonic clock (zero if the clock reads less).
    fn elapsed_since(&self, since: Duration) -> Duration {
        self.event.since_boot.saturating_sub(since)
    }

    /// A completed mandatory job is a tombstone: observations change nothing, requests that
    /// would move it are refused.
    fn completed_mandatory(&self) -> Result<Step, TransitionError> {
        match self.event.kind {
            EventKind::Offered
            | EventKind::ShutdownNoticed
            | EventKind::AgentStarted { .. }
            | EventKind::Tick { .. } => Ok(Step::unchanged()),
            _ => Err(TransitionError::CompletedMandatory {
                job: self.job(),
                event: self.event.kind.name(),
            }),
        }
    }

    /// Checks that an attempt-scoped event names the current attempt of a job still in progress.
    fn current(&self, named: AttemptRef) -> Result<&Attempt, TransitionError> {
        match self.state.attempt() {
            Some(a) if attempt_ref(a) == named && !self.state.is_terminal() => Ok(a),
            // The named attempt is the last one, but it is over: a replay.
            Some(a) if attempt_ref(a) == named => self.invalid(),
            other => Err(TransitionError::StaleAttempt {
                job: self.job(),
                state: self.state.kind(),
                event: self.event.kind.name(),
                got: named,
                current: other.map(attempt_ref),
            }),
        }
    }

    fn same_boot(&self, recorded: &BootId) -> Result<(), TransitionError> {
        if *recorded == self.event.boot {
            Ok(())
        } else {
            Err(TransitionError::OtherBoot {
                job: self.job(),
                event: self.event.kind.name(),
                recorded: recorded.clone(),
                observed: self.event.boot.clone(),
            })
        }
    }

    /// The current attempt named by an event about its program: current, and of this boot (a
    /// program lives only in the boot its attempt started in).
    fn running(&self, named: AttemptRef) -> Result<&Attempt, TransitionError> {
        let attempt = self.current(named)?;
        self.same_boot(&attempt.boot)?;
        Ok(attempt)
    }

    /// The status message of `state`: its own (`overdue` 0), or its `overdue`-th overdue report.
    fn report(
        &self,
        state: &JobState,
        exit: Option<ProgramExit>,
        reason: Option<FailureReason>,
        overdue: u32,
    ) -> StatusMessage {
        let (reboot, wait) = match state {
            JobState::AwaitingReboot { cause, wait, .. } => (Some(cause.clone()), *wait),
            JobState::Completed { reboot, .. } => (reboot.clone(), 0),
            JobState::Failed {
                reason: FailureReason::Interrupted(by),
                ..
            } => (Some(by.clone()), 0),
            _ => (None, 0),
        };
        StatusMessage {
            key: StatusKey {
                job: self.job(),
                run: state.run(),
                attempt: state.attempt().map_or(0, |a| a.number),
                state: state.kind(),
                wait,
                overdue,
            },
            exit,
            reason,
            reboot,
            started_at: state.attempt().map(|a| a.started_at),
            started_in: state.attempt().map(|a| a.boot.clone()),
            boot: self.event.boot.clone(),
            at: self.event.at,
        }
    }

    fn complete(
        &self,
        attempt: &Attempt,
        exit: Option<ProgramExit>,
        reboot: Option<RebootAttribution>,
        verified: bool,
        restart_suppressed: bool,
    ) -> Step {
        let state = JobState::Completed {
            attempt: attempt.clone(),
            at: self.event.at,
            exit,
            reboot,
            verified,
            restart_suppressed,
        };
        let report = self.report(&state, exit, None, 0);
        Step::to(state).report(Some(report))
    }

    /// The run fails, for good (a rerun request may start a new one).
    fn fail_run(
        &self,
        run: u32,
        attempt: Option<&Attempt>,
        reason: FailureReason,
        exit: Option<ProgramExit>,
    ) -> Step {
        let state = JobState::Failed {
            run,
            attempt: attempt.cloned(),
            at: self.event.at,
            reason: reason.clone(),
        };
        let report = self.report(&state, exit, Some(reason), 0);
        Step::to(state).report(Some(report))
    }

    /// The attempt failed: queue the next one after a back-off, or fail the run when no
    /// attempts are left. A job with a detection check is retried (or failed) only after the
    /// check says the result is not there: the failure may be a wrapper's misjudgement (seed
    /// 001), or a program lost with the agent may have finished its work.
    fn fail_attempt(
        &self,
        attempt: &Attempt,
        reason: FailureReason,
        exit: Option<ProgramExit>,
    ) -> Step {
        let retry = self.spec.retry();
        let check = self.spec.verify_after_reboot() && may_have_succeeded(&reason);
        let attempts_left = attempt.number < retry.max_attempts.max(1);
        let next = attempt.number.checked_add(1);
        match next {
            Some(next) if check || attempts_left => {
                let step = Step::to(JobState::Queued {
                    run: attempt.run,
                    attempt: next,
                    not_before: Some(retry.not_before(attempt.number, self.event.at)),
                    last_failure: Some(reason),
                    previous: Some(attempt.clone()),
                    check_before_retry: check,
                });
                if check {
                    step.effect(Effect::Verify(self.attempt_id(attempt)))
                } else {
                    step
                }
            }
            _ => self.fail_run(attempt.run, Some(attempt), reason, exit),
        }
    }

    /// Enters wait number `wait` for a reboot. A soft request licenses the agent to restart the
    /// machine. Every wait has its own status message.
    fn await_reboot(
        &self,
        attempt: &Attempt,
        cause: RebootAttribution,
        exit: Option<ProgramExit>,
        reboots_seen: u32,
        wait: u32,
    ) -> Step {
        let soft = cause == RebootAttribution::RequestedByJob(RebootKind::Soft);
        let state = JobState::AwaitingReboot {
            attempt: attempt.clone(),
            cause,
            requested_in: self.event.boot.clone(),
            since: self.event.at,
            since_boot: self.event.since_boot,
            wait,
            overdue: 0,
            exit,
            reboots_seen,
            verifying_in: None,
        };
        let report = self.report(&state, exit, None, 0);
        let step = Step::to(state).report(Some(report));
        if soft {
            step.effect(Effect::ScheduleRestart {
                job: self.job(),
                kind: RebootKind::Soft,
                when: RestartRelease::AtOnce,
            })
        } else {
            step
        }
    }

    /// The attempt's launch was never recorded and no process of it runs: it never ran. It is
    /// queued again as the same attempt (no retry is spent), not launched here: whether it may
    /// start now (its run condition, no restart owed, no job in the way) is the ledger's to
    /// judge, as for any start. The ledger starts it again at once when it may, and its clocks
    /// start anew then.
    /// What its queue held before it began (the failed attempt before it, and why that failed)
    /// is not in `Running`: the ledger puts it back from the job's history ([`requeued`]).
    fn relaunch(&self, attempt: &Attempt) -> Step {
        Step::to(JobState::Queued {
            run: attempt.run,
            attempt: attempt.number,
            not_before: None,
            last_failure: None,
            previous: None,
            check_before_retry: false,
        })
    }

    fn attempt_started(&self) -> Result<Step, TransitionError> {
        let JobState::Queued {
            run,
            attempt,
            check_before_retry: false,
            ..
        } = self.state
        else {
            return self.invalid();
        };
        let attempt = Attempt {
            run: *run,
            number: *attempt,
            boot: self.event.boot.clone(),
            started_at: self.event.at,
            started_since_boot: self.event.since_boot,
        };
        let launch = Effect::Launch(self.attempt_id(&attempt));
        Ok(Step::to(JobState::Running {
            attempt,
            launch: Launch::Pending,
            shutdown_notice_at: None,
            terminate: None,
            provisional: None,
        })
        .effect(launch))
    }

    fn launched(&self, named: AttemptRef, program: ProgramId) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Running {
                launch: Launch::Pending | Launch::Observed,
                provisional: None,
                ..
            } => {
                self.running(named)?;
                Ok(Step::to(self.modified(|s| {
                    if let JobState::Running { launch, .. } = s {
                        *launch = Launch::Recorded(program);
                    }
                })))
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn launch_failed(&self, named: AttemptRef) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Running {
                launch: Launch::Pending,
                provisional: None,
                ..
            } => {
                let attempt = self.running(named)?;
                Ok(self.fail_attempt(attempt, FailureReason::LaunchFailed, None))
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn program_exited(
        &self,
        named: AttemptRef,
        exit: ProgramExit,
        restart_pending: bool,
    ) -> Result<Step, TransitionError> {
        // A signal is never looked up in the exit-code table: it fails the attempt with its
        // own reason, and the retry policy applies.
        let outcome = match exit {
            ProgramExit::Code(code) => self.spec.exit_codes().outcome(code),
            ProgramExit::Signal(_) => ExitOutcome::Failure,
        };
        // On Unix a program says "restart required" by leaving the system's flag behind.
        let outcome = match outcome {
            ExitOutcome::Success if restart_pending && self.spec.restart_when_pending() => {
                ExitOutcome::SuccessRestartRequired
            }
            other => other,
        };
        let failure = FailureReason::of_exit(exit);
        let restarts = self.spec.reboot() == RebootBehaviour::RestartsMachine;
        match self.state {
            JobState::Running {
                terminate,
                provisional: None,
                ..
            } => {
                let attempt = self.running(named)?;
                if terminate.is_some() {
                    // The program was terminated for exceeding its run time: whatever its code,
                    // the attempt timed out, and only now may another one start. But a program
                    // that restarts the machine may be exiting because the restart is under way
                    // (seed 001): as for any failing exit of such a program, a reboot within
                    // the grace window is its expected end, and a window that closes in this
                    // boot lets the timeout stand.
                    if restarts && !self.spec.failure_grace().is_zero() {
                        return Ok(self.provisional(Some(exit)));
                    }
                    return Ok(self.fail_attempt(attempt, FailureReason::TimedOut, Some(exit)));
                }
                Ok(match outcome {
                    ExitOutcome::Success => self.complete(attempt, Some(exit), None, false, false),
                    ExitOutcome::SuccessRestartRequired
                        if self.spec.reboot() == RebootBehaviour::Never =>
                    {
                        self.complete(attempt, Some(exit), None, false, true)
                    }
                    ExitOutcome::SuccessRestartRequired => self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(RebootKind::Soft),
                        Some(exit),
                        0,
                        1,
                    ),
                    ExitOutcome::SuccessRestartInitiated => self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(RebootKind::Hard),
                        Some(exit),
                        0,
                        1,
                    ),
                    // Seed 001: a wrapper reports failure because it never hears the shutdown
                    // that is under way. For a program that restarts the machine, the failure
                    // is provisional: a reboot within the grace window is its expected end.
                    // (The exit itself proves that the program ran.)
                    ExitOutcome::RetryLater | ExitOutcome::Failure
                        if restarts && !self.spec.failure_grace().is_zero() =>
                    {
                        self.provisional(Some(exit))
                    }
                    ExitOutcome::RetryLater | ExitOutcome::Failure => {
                        self.fail_attempt(attempt, failure, Some(exit))
                    }
                })
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn program_lost(&self, named: AttemptRef) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Running { .. } => {
                self.running(named)?;
                Ok(self.program_gone())
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    /// The program of a running attempt is gone, in the attempt's boot, and its exit was never
    /// recorded. A launch never recorded never ran: launch it again. A program that ran ended
    /// without a result: with a check, verify; without, the retry policy (SEMANTICS.md, "A program
    /// can vanish"). After a termination, that is the attempt's timed-out end.
    fn program_gone(&self) -> Step {
        let JobState::Running {
            attempt,
            launch,
            terminate,
            provisional,
            ..
        } = self.state
        else {
            return Step::unchanged();
        };
        if provisional.is_some() {
            // It exited: its end is the grace window's to decide.
            return Step::unchanged();
        }
        // A program that restarts the machine and is gone may be restarting it: as with a
        // failing exit, a reboot within the grace window is its expected end (after a
        // termination too; the window closing in this boot then ends the attempt timed out).
        let restarting = launch.happened()
            && self.spec.reboot() == RebootBehaviour::RestartsMachine
            && !self.spec.failure_grace().is_zero();
        if !launch.happened() {
            // It never ran: launched again as the same attempt, no retry spent, even after a
            // termination (terminated again, it is reported under a key of its own).
            return self.relaunch(attempt);
        }
        if terminate.is_some() && !restarting {
            // Its termination was licensed: the attempt is over.
            return self.fail_attempt(attempt, FailureReason::TimedOut, None);
        }
        if restarting {
            return self.provisional(None);
        }
        self.fail_attempt(attempt, FailureReason::ProgramLost, None)
    }

    /// The running attempt's program ended (with `exit`, or vanished): its failure is
    /// provisional, a reboot within the spec's grace window its expected end. (An exit proves
    /// that the program ran: a launch not yet recorded is then a fact.)
    fn provisional(&self, exit: Option<ProgramExit>) -> Step {
        Step::to(self.modified(|s| {
            if let JobState::Running {
                launch,
                provisional,
                ..
            } = s
            {
                if !launch.happened() {
                    *launch = Launch::Observed;
                }
                *provisional = Some(ProvisionalFailure {
                    exit,
                    since_boot: self.event.since_boot,
                });
            }
        }))
    }

    /// A provisional failure whose grace window has closed in its boot: the failure stands.
    fn provisional_closed(&self) -> Option<Step> {
        let JobState::Running {
            attempt,
            terminate,
            provisional: Some(p),
            ..
        } = self.state
        else {
            return None;
        };
        if self.elapsed_since(p.since_boot) < self.spec.failure_grace() {
            return Some(Step::unchanged());
        }
        // After a termination the attempt timed out, whatever its exit said.
        let reason = match (terminate, p.exit) {
            (Some(_), _) => FailureReason::TimedOut,
            (None, Some(exit)) => FailureReason::of_exit(exit),
            (None, None) => FailureReason::ProgramLost,
        };
        Some(self.fail_attempt(attempt, reason, p.exit))
    }

    fn shutdown_noticed(&self) -> Step {
        match self.state {
            JobState::Running {
                attempt,
                shutdown_notice_at: None,
                ..
            } if attempt.boot == self.event.boot => Step::to(self.modified(|s| {
                if let JobState::Running {
                    shutdown_notice_at, ..
                } = s
                {
                    *shutdown_notice_at = Some(self.event.at);
                }
            })),
            _ => Step::unchanged(),
        }
    }

    /// Recovery: reconcile the job against the boot the agent started in (SEMANTICS.md, "Reboot
    /// truth comes from boot identity" and "What the agent may never hear").
    fn agent_started(&self, program: ProgramStatus, restart_of: Option<&JobId>) -> Step {
        let boot = &self.event.boot;
        match self.state {
            // The check before a retry is still owed: license it again (it may have been lost).
            JobState::Queued {
                check_before_retry: true,
                previous: Some(attempt),
                ..
            } => Step::unchanged().effect(Effect::Verify(self.attempt_id(attempt))),
            // A retry is queued, but the machine restarted since the failed attempt began: a check
            // that said "not there" before the restart (while an upgrade was still finishing)
            // says nothing about now. Owe the check again before any retry (seed 001's wrapper,
            // whose failure report and a restart both came before the work was done).
            JobState::Queued {
                check_before_retry: false,
                previous: Some(attempt),
                ..
            } if attempt.boot != *boot && self.spec.verify_after_reboot() => {
                let state = self.modified(|s| {
                    if let JobState::Queued {
                        check_before_retry, ..
                    } = s
                    {
                        *check_before_retry = true;
                    }
                });
                Step::to(state).effect(Effect::Verify(self.attempt_id(attempt)))
            }
            JobState::Queued { .. } | JobState::Completed { .. } | JobState::Failed { .. } => {
                Step::unchanged()
            }
            // Same boot: the agent restarted, the machine did not. Nothing about reboots may be
            // concluded; what the session says of the program decides.
            JobState::Running { attempt, .. } if attempt.boot == *boot => {
                self.running_after_agent_restart(program)
            }
            JobState::Running {
                attempt,
                launch,
                provisional,
                ..
            } => {
                if let Some(p) = provisional {
                    // A failing exit, then a reboot within the window (or the agent never saw
                    // it close): the program's expected end.
                    return self.reboot_observed(
                        attempt,
                        RebootAttribution::InitiatedByProgram,
                        p.exit,
                        1,
                    );
                }
                if !launch.happened() {
                    // Never launched: no reboot completes it, and no reboot fails it or spends a
                    // retry (invariant 3), even after a termination: it is queued again, as the
                    // same attempt. (Terminated again, it is reported under a key of its own:
                    // the ledger numbers an attempt's unresponsive reports.)
                    return self.relaunch(attempt);
                }
                match self.spec.reboot() {
                    RebootBehaviour::RestartsMachine => self.reboot_observed(
                        attempt,
                        RebootAttribution::InitiatedByProgram,
                        None,
                        1,
                    ),
                    RebootBehaviour::Never | RebootBehaviour::MayRequest => {
                        let by = match restart_of {
                            Some(job) if job != self.spec.id() => {
                                RebootAttribution::ForJob(job.clone())
                            }
                            _ => RebootAttribution::Unrelated,
                        };
                        self.fail_attempt(attempt, FailureReason::Interrupted(by), None)
                    }
                }
            }
            JobState::AwaitingReboot {
                attempt,
                cause,
                requested_in,
                exit,
                reboots_seen,
                verifying_in,
                overdue,
                ..
            } => match verifying_in {
                // Verification still owed in this boot: license it again (it may have been lost).
                Some(v) if v == boot => {
                    Step::unchanged().effect(Effect::Verify(self.attempt_id(attempt)))
                }
                // Another boot while the check was still owed: counted, and the check licensed
                // again. Never failed here, past the bound or not: a reboot never fails a job
                // that restarts the machine (invariant 3), and this job asked for no restart.
                // The reboot-loop bound ends a job that asks for another one (`another_reboot`,
                // on a check's "not yet"); a check that never answers is a named wait
                // (`Verification`) that an operator can end.
                Some(_) => {
                    let state = self.modified(|s| {
                        if let JobState::AwaitingReboot {
                            reboots_seen,
                            verifying_in,
                            ..
                        } = s
                        {
                            *reboots_seen = reboots_seen.saturating_add(1);
                            *verifying_in = Some(boot.clone());
                        }
                    });
                    Step::to(state).effect(Effect::Verify(self.attempt_id(attempt)))
                }
                // No reboot yet: a soft restart is still owed by the agent, and so is any
                // restart that was reported overdue (the agent was licensed to make it itself:
                // the licence may have been lost with the agent that held it).
                None if requested_in == boot => {
                    if *cause == RebootAttribution::RequestedByJob(RebootKind::Soft) || *overdue > 0
                    {
                        Step::unchanged().effect(Effect::ScheduleRestart {
                            job: self.job(),
                            kind: restart_kind(cause),
                            when: RestartRelease::AtOnce,
                        })
                    } else {
                        Step::unchanged()
                    }
                }
                None => self.reboot_observed(
                    attempt,
                    cause.clone(),
                    *exit,
                    reboots_seen.saturating_add(1),
                ),
            },
        }
    }

    /// A running attempt found by an agent that restarted in the attempt's boot.
    fn running_after_agent_restart(&self, program: ProgramStatus) -> Step {
        let JobState::Running {
            attempt,
            launch,
            terminate,
            ..
        } = self.state
        else {
            return Step::unchanged();
        };
        if let Some(step) = self.provisional_closed() {
            return step;
        }
        // A termination still owed is licensed again (it may have been lost).
        let relicense = |step: Step| match terminate {
            Some(_) => step.effect(Effect::Terminate(self.attempt_id(attempt))),
            None => step,
        };
        match program {
            ProgramStatus::Gone => self.program_gone(),
            // Not recorded, but a process of the attempt lives: it was launched.
            ProgramStatus::Alive if !launch.happened() => relicense(Step::to(self.modified(|s| {
                if let JobState::Running { launch, .. } = s {
                    *launch = Launch::Observed;
                }
            }))),
            ProgramStatus::Alive | ProgramStatus::Unknown => relicense(Step::unchanged()),
        }
    }

    /// A reboot was observed for a job that expected it: verify if asked, else complete.
    fn reboot_observed(
        &self,
        attempt: &Attempt,
        cause: RebootAttribution,
        exit: Option<ProgramExit>,
        reboots_seen: u32,
    ) -> Step {
        if !self.spec.verify_after_reboot() {
            return self.complete(attempt, exit, Some(cause), false, false);
        }
        let verify = Effect::Verify(self.attempt_id(attempt));
        if let JobState::AwaitingReboot { .. } = self.state {
            // The same wait goes on: its report was made when it began.
            let state = self.modified(|s| {
                if let JobState::AwaitingReboot {
                    reboots_seen: seen,
                    verifying_in,
                    ..
                } = s
                {
                    *seen = reboots_seen;
                    *verifying_in = Some(self.event.boot.clone());
                }
            });
            return Step::to(state).effect(verify);
        }
        let state = JobState::AwaitingReboot {
            attempt: attempt.clone(),
            cause,
            requested_in: attempt.boot.clone(),
            since: self.event.at,
            since_boot: attempt.started_since_boot,
            wait: 1,
            overdue: 0,
            exit,
            reboots_seen,
            verifying_in: Some(self.event.boot.clone()),
        };
        let report = self.report(&state, exit, None, 0);
        Step::to(state).report(Some(report)).effect(verify)
    }

    fn reboot_expected(
        &self,
        named: AttemptRef,
        kind: RebootKind,
    ) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Running { provisional, .. } => {
                let attempt = self.running(named)?;
                // A restart is never licensed under a live installer, and a reboot completes only
                // a program that ran: the exit (a provisional failure) must be recorded first.
                let Some(provisional) = provisional else {
                    return Err(TransitionError::ExitNotRecorded {
                        job: self.job(),
                        attempt: named,
                    });
                };
                // A window that closed before this call lets the failure stand, whether or not a
                // tick saw it close: the outcome follows the event's time, not the agent's ticks.
                if self.elapsed_since(provisional.since_boot) >= self.spec.failure_grace()
                    && let Some(closed) = self.provisional_closed()
                {
                    return Ok(closed);
                }
                let exit = provisional.exit;
                Ok(self.await_reboot(attempt, RebootAttribution::RequestedByJob(kind), exit, 0, 1))
            }
            // The reboot happened but the result still needs one more: bounded.
            JobState::AwaitingReboot {
                verifying_in: Some(v),
                reboots_seen,
                exit,
                wait,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(v)?;
                Ok(self.another_reboot(
                    attempt,
                    RebootAttribution::RequestedByJob(kind),
                    *exit,
                    *reboots_seen,
                    *wait,
                ))
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    /// Another wait for a reboot after `reboots_seen` reboots, or the reboot-loop bound.
    fn another_reboot(
        &self,
        attempt: &Attempt,
        cause: RebootAttribution,
        exit: Option<ProgramExit>,
        reboots_seen: u32,
        wait: u32,
    ) -> Step {
        if reboots_seen >= self.spec.max_reboots() {
            let reason = FailureReason::RebootLoop {
                boots: reboots_seen,
            };
            return self.fail_run(attempt.run, Some(attempt), reason, exit);
        }
        self.await_reboot(attempt, cause, exit, reboots_seen, wait.saturating_add(1))
    }

    fn verified(&self, named: AttemptRef, result: CheckResult) -> Result<Step, TransitionError> {
        // A job that never restarts the machine waits for no restart: "not yet" is "not there".
        let result = match (result, self.spec.reboot()) {
            (CheckResult::NotYet, RebootBehaviour::Never) => CheckResult::NotInstalled,
            _ => result,
        };
        match self.state {
            JobState::Queued {
                check_before_retry: true,
                last_failure,
                ..
            } => {
                let attempt = self.current(named)?;
                let exit = match last_failure {
                    Some(FailureReason::ExitCode(code)) => Some(ProgramExit::Code(*code)),
                    Some(FailureReason::Signal(signal)) => Some(ProgramExit::Signal(*signal)),
                    _ => None,
                };
                Ok(match result {
                    CheckResult::Installed => self.complete(attempt, exit, None, true, false),
                    CheckResult::NotInstalled
                        if attempt.number >= self.spec.retry().max_attempts.max(1) =>
                    {
                        let reason = last_failure.clone().unwrap_or(FailureReason::NotDetected);
                        self.fail_run(attempt.run, Some(attempt), reason, exit)
                    }
                    CheckResult::NotInstalled => Step::to(self.modified(|s| {
                        if let JobState::Queued {
                            check_before_retry, ..
                        } = s
                        {
                            *check_before_retry = false;
                        }
                    })),
                    // The failed attempt's work needs a restart to finish: wait for it.
                    CheckResult::NotYet => self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(RebootKind::Soft),
                        exit,
                        0,
                        1,
                    ),
                })
            }
            JobState::AwaitingReboot {
                verifying_in: Some(v),
                cause,
                exit,
                reboots_seen,
                wait,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(v)?;
                Ok(match result {
                    CheckResult::Installed => {
                        self.complete(attempt, *exit, Some(cause.clone()), true, false)
                    }
                    // After a reboot the attempt is never re-run (SEMANTICS.md): the check decides,
                    // and "not there" fails the run. A rerun request may start a new one.
                    CheckResult::NotInstalled => self.fail_run(
                        attempt.run,
                        Some(attempt),
                        FailureReason::NotDetected,
                        *exit,
                    ),
                    // An upgrade that restarts several times: wait for the next reboot. A
                    // program that restarts the machine does it itself; others ask the agent.
                    CheckResult::NotYet => {
                        let cause = match self.spec.reboot() {
                            RebootBehaviour::RestartsMachine => {
                                RebootAttribution::InitiatedByProgram
                            }
                            _ => RebootAttribution::RequestedByJob(RebootKind::Soft),
                        };
                        self.another_reboot(attempt, cause, *exit, *reboots_seen, *wait)
                    }
                })
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    /// Time passed (on the boot's monotonic clock, in the attempt's boot only): run-time limits,
    /// programs that vanished, grace windows and restart deadlines.
    fn tick(&self, program: ProgramStatus) -> Step {
        match self.state {
            JobState::Running {
                attempt,
                launch,
                terminate,
                ..
            } if attempt.boot == self.event.boot => {
                if let Some(step) = self.provisional_closed() {
                    return step;
                }
                // A launch never recorded may be a spawn under way: only an agent restart may
                // conclude that it never ran.
                let gone = program == ProgramStatus::Gone && launch.happened();
                if gone {
                    return self.program_gone();
                }
                match terminate {
                    Some(t)
                        if !t.unresponsive
                            && self.elapsed_since(t.since_boot) >= self.spec.terminate_grace() =>
                    {
                        // Still there after its grace period: reported; it waits, visibly,
                        // until it is gone or an operator abandons the job.
                        let state = self.modified(|s| {
                            if let JobState::Running {
                                terminate: Some(t), ..
                            } = s
                            {
                                t.unresponsive = true;
                            }
                        });
                        // Overdue 1: the first report of this attempt's program that will not
                        // go; the ledger numbers a later one (an attempt launched again).
                        let report = self.report(&state, None, None, 1);
                        Step::to(state).report(Some(report))
                    }
                    Some(_) => Step::unchanged(),
                    None if self.elapsed_since(attempt.started_since_boot)
                        >= self.spec.max_run_time() =>
                    {
                        let state = self.modified(|s| {
                            if let JobState::Running { terminate, .. } = s {
                                *terminate = Some(Termination {
                                    at: self.event.at,
                                    since_boot: self.event.since_boot,
                                    unresponsive: false,
                                });
                            }
                        });
                        Step::to(state).effect(Effect::Terminate(self.attempt_id(attempt)))
                    }
                    None => Step::unchanged(),
                }
            }
            JobState::AwaitingReboot {
                cause,
                requested_in,
                since_boot,
                overdue,
                exit,
                verifying_in: None,
                ..
            } if *requested_in == self.event.boot => {
                // Deadlines at 1, 3, 7, 15, ... times the restart deadline: the interval doubles.
                if self.elapsed_since(*since_boot) < self.spec.overdue_after(*overdue) {
                    return Step::unchanged();
                }
                let overdue = overdue.saturating_add(1);
                let state = self.modified(|s| {
                    if let JobState::AwaitingReboot { overdue: o, .. } = s {
                        *o = overdue;
                    }
                });
                let report = self.report(&state, *exit, None, overdue);
                Step::to(state)
                    .report(Some(report))
                    .effect(Effect::ScheduleRestart {
                        job: self.job(),
                        kind: restart_kind(cause),
                        when: RestartRelease::AtOnce,
                    })
            }
            _ => Step::unchanged(),
        }
    }

    fn cancel(&self) -> Result<Step, TransitionError> {
        let JobState::Queued { run, previous, .. } = self.state else {
            return self.invalid();
        };
        Ok(self.fail_run(*run, previous.as_ref(), FailureReason::Cancelled, None))
    }

    /// An operator ends a job that is not completed (SEMANTICS.md: "An operator can always end a
    /// stuck job"). A program that may still run is to be terminated.
    fn abandon(&self) -> Result<Step, TransitionError> {
        let reason = FailureReason::Abandoned;
        match self.state {
            JobState::Completed { .. } | JobState::Failed { .. } => self.invalid(),
            JobState::Queued { run, previous, .. } => {
                Ok(self.fail_run(*run, previous.as_ref(), reason, None))
            }
            JobState::Running {
                attempt,
                provisional,
                ..
            } => {
                let step = self.fail_run(attempt.run, Some(attempt), reason, None);
                Ok(match provisional {
                    Some(_) => step, // it exited, or is gone, already
                    None => step.effect(Effect::Terminate(self.attempt_id(attempt))),
                })
            }
            JobState::AwaitingReboot { attempt, exit, .. } => {
                Ok(self.fail_run(attempt.run, Some(attempt), reason, *exit))
            }
        }
    }

    fn rerun(&self) -> Result<Step, TransitionError> {
        match self.state {
            // Completed mandatory jobs never get here: see `completed_mandatory`.
            JobState::Completed { .. } | JobState::Failed { .. } => {
                // A run number at its maximum (only a damaged store holds one) cannot grow.
                let Some(run) = self.state.run().checked_add(1) else {
                    return self.invalid();
                };
                Ok(Step::to(JobState::Queued {
                    run,
                    attempt: 1,
                    not_before: None,
                    last_failure: None,
                    previous: None,
                    check_before_retry: false,
                }))
            }
            _ => self.invalid(),
        }
    }
}

/// Whether an attempt that failed for `reason` may have done its work anyway, so that a
/// detection check must decide before it is retried or the run fails.
fn may_have_succeeded(reason: &FailureReason) -> bool {
    !matches!(
        reason,
        FailureReason::NotDetected
            | FailureReason::LaunchFailed
            | FailureReason::Abandoned
            | FailureReason::Cancelled
            | FailureReason::RebootLoop { .. }
    )
}

fn attempt_ref(attempt: &Attempt) -> AttemptRef {
    AttemptRef {
        run: attempt.run,
        number: attempt.number,
    }
}

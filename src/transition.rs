//! The pure transition function: `(spec, state, event) -> (new state, effects)`.
//!
//! **Architecture invariant:** nothing in this module does IO or reads a clock. Time and boot
//! identity arrive in the [`Event`]; what must happen in the world leaves as [`Effect`]s.

use crate::{
    Attempt, AttemptId, AttemptRef, BootId, Effect, Event, EventKind, EventName, ExitOutcome,
    FailureReason, JobId, JobSpec, JobState, RebootAttribution, RebootBehaviour, RebootKind,
    StateKind, StatusKey, StatusMessage,
};

/// The result of applying an event: the new state (`None` when the event changes nothing), the
/// status message the new state produces (to be committed *with* it, in the outbox), and the
/// effects the caller must carry out once both are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The new state, or `None` if the state is unchanged (nothing to commit).
    pub state: Option<JobState>,
    /// The status message of the new state: every terminal state and every entry into
    /// `AwaitingReboot` has exactly one.
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
    /// The event would start a completed mandatory job again, which is never allowed.
    #[error(
        "job {job} is a completed mandatory job: {event} would run it again, which is never allowed; advertise a new job id for new work"
    )]
    CompletedMandatory {
        /// The job.
        job: JobId,
        /// The refused event.
        event: EventName,
    },
}

/// Applies `event` to a job in `state` under `spec`.
///
/// Pure: the same inputs always give the same output. An event that changes nothing returns
/// `Step { state: None, .. }`; an event that is not valid returns a [`TransitionError`] and the
/// caller keeps the old state.
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
        EventKind::Advertised => Ok(Step::unchanged()),
        EventKind::AttemptStarted => t.attempt_started(),
        EventKind::ProgramExited { attempt, code } => t.program_exited(*attempt, *code),
        EventKind::ShutdownNoticed => Ok(t.shutdown_noticed()),
        EventKind::AgentStarted => Ok(t.agent_started()),
        EventKind::RebootExpected { attempt, kind } => t.reboot_expected(*attempt, *kind),
        EventKind::Verified { attempt, installed } => t.verified(*attempt, *installed),
        EventKind::Tick => Ok(t.tick()),
        EventKind::CancelRequested => t.cancel(),
        EventKind::RerunRequested => t.rerun(),
    }
}

struct Transitioner<'a> {
    spec: &'a JobSpec,
    state: &'a JobState,
    event: &'a Event,
}

impl Transitioner<'_> {
    fn job(&self) -> JobId {
        self.spec.id().clone()
    }

    fn attempt_id(&self, attempt: &Attempt) -> AttemptId {
        AttemptId {
            job: self.job(),
            attempt: attempt_ref(attempt),
        }
    }

    fn invalid<T>(&self) -> Result<T, TransitionError> {
        Err(TransitionError::Invalid {
            job: self.job(),
            state: self.state.kind(),
            event: self.event.kind.name(),
        })
    }

    /// A completed mandatory job is a tombstone: observations change nothing, requests that
    /// would move it are refused.
    fn completed_mandatory(&self) -> Result<Step, TransitionError> {
        match self.event.kind {
            EventKind::Advertised
            | EventKind::ShutdownNoticed
            | EventKind::AgentStarted
            | EventKind::Tick => Ok(Step::unchanged()),
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

    fn report(
        &self,
        state: &JobState,
        exit_code: Option<i32>,
        reason: Option<FailureReason>,
    ) -> StatusMessage {
        let reboot = match state {
            JobState::AwaitingReboot { cause, .. } => Some(*cause),
            JobState::Completed { reboot, .. } => *reboot,
            JobState::Failed {
                reason: FailureReason::Interrupted(by),
                ..
            } => Some(*by),
            _ => None,
        };
        StatusMessage {
            key: StatusKey {
                job: self.job(),
                run: state.run(),
                attempt: state.attempt().map_or(0, |a| a.number),
                state: state.kind(),
            },
            exit_code,
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
        exit_code: Option<i32>,
        reboot: Option<RebootAttribution>,
        verified: bool,
        restart_suppressed: bool,
    ) -> Step {
        let state = JobState::Completed {
            attempt: attempt.clone(),
            at: self.event.at,
            exit_code,
            reboot,
            verified,
            restart_suppressed,
        };
        let report = self.report(&state, exit_code, None);
        Step::to(state).report(Some(report))
    }

    /// The attempt failed: queue the next one after a back-off, or fail the run when no
    /// attempts are left. A job with a detection check is retried only after the check says the
    /// result is not there: the failure may be a wrapper's misjudgement (seed 001).
    fn fail_attempt(
        &self,
        attempt: &Attempt,
        reason: FailureReason,
        exit_code: Option<i32>,
    ) -> Step {
        let retry = self.spec.retry_policy();
        if attempt.number < retry.max_attempts.max(1) {
            let check = self.spec.verifies_after_reboot() && reason != FailureReason::NotDetected;
            let step = Step::to(JobState::Queued {
                run: attempt.run,
                attempt: attempt.number + 1,
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
        } else {
            let state = JobState::Failed {
                run: attempt.run,
                attempt: Some(attempt.clone()),
                at: self.event.at,
                reason: reason.clone(),
            };
            let report = self.report(&state, exit_code, Some(reason));
            Step::to(state).report(Some(report))
        }
    }

    /// Enters `AwaitingReboot`. A soft request licenses the agent to restart the machine; the
    /// report is produced once per attempt (its key would be the same on a second entry).
    fn await_reboot(
        &self,
        attempt: &Attempt,
        cause: RebootAttribution,
        exit_code: Option<i32>,
        reboots_seen: u32,
        first_entry: bool,
    ) -> Step {
        let state = JobState::AwaitingReboot {
            attempt: attempt.clone(),
            cause,
            requested_in: self.event.boot.clone(),
            since: self.event.at,
            exit_code,
            reboots_seen,
            verifying_in: None,
        };
        let report = first_entry.then(|| self.report(&state, exit_code, None));
        let mut step = Step::to(state).report(report);
        if cause == RebootAttribution::RequestedByJob(RebootKind::Soft) {
            step = step.effect(Effect::ScheduleRestart {
                job: self.job(),
                kind: RebootKind::Soft,
            });
        }
        step
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
            shutdown_notice_at: None,
            terminate_requested_at: None,
        })
        .effect(launch))
    }

    fn program_exited(&self, named: AttemptRef, code: i32) -> Result<Step, TransitionError> {
        let outcome = self.spec.exit_code_policy().outcome(code);
        match self.state {
            JobState::Running {
                terminate_requested_at,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(&attempt.boot)?;
                if terminate_requested_at.is_some() {
                    // The program was terminated for exceeding its run time: whatever its code,
                    // the attempt timed out, and only now may another one start.
                    return Ok(self.fail_attempt(attempt, FailureReason::TimedOut, Some(code)));
                }
                Ok(match outcome {
                    ExitOutcome::Success => self.complete(attempt, Some(code), None, false, false),
                    ExitOutcome::SuccessRestartRequired
                        if self.spec.reboot_behaviour() == RebootBehaviour::Never =>
                    {
                        self.complete(attempt, Some(code), None, false, true)
                    }
                    ExitOutcome::SuccessRestartRequired => self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(RebootKind::Soft),
                        Some(code),
                        0,
                        true,
                    ),
                    ExitOutcome::SuccessRestartInitiated => self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(RebootKind::Hard),
                        Some(code),
                        0,
                        true,
                    ),
                    ExitOutcome::RetryLater | ExitOutcome::Failure => {
                        self.fail_attempt(attempt, FailureReason::ExitCode(code), Some(code))
                    }
                })
            }
            // The agent committed the wait before the program exited: record the code. For a job
            // that restarts the machine, the restart decides, not the code (seed 001's wrapper
            // reported failure for an upgrade that was restarting the machine); for others a
            // failure still fails the attempt. The program lives only in the boot its attempt
            // started in: after any reboot, an exit of it is a replay.
            JobState::AwaitingReboot {
                exit_code: None,
                verifying_in: None,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(&attempt.boot)?;
                let restarts = self.spec.reboot_behaviour() == RebootBehaviour::RestartsMachine;
                Ok(match outcome {
                    ExitOutcome::RetryLater | ExitOutcome::Failure if !restarts => {
                        self.fail_attempt(attempt, FailureReason::ExitCode(code), Some(code))
                    }
                    _ => {
                        let mut state = self.state.clone();
                        if let JobState::AwaitingReboot { exit_code, .. } = &mut state {
                            *exit_code = Some(code);
                        }
                        Step::to(state)
                    }
                })
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn shutdown_noticed(&self) -> Step {
        match self.state {
            JobState::Running {
                attempt,
                shutdown_notice_at: None,
                terminate_requested_at,
            } if attempt.boot == self.event.boot => Step::to(JobState::Running {
                attempt: attempt.clone(),
                shutdown_notice_at: Some(self.event.at),
                terminate_requested_at: *terminate_requested_at,
            }),
            _ => Step::unchanged(),
        }
    }

    /// Recovery: reconcile the job against the boot the agent started in (DESIGN.md, "Reboot
    /// truth comes from boot identity").
    fn agent_started(&self) -> Step {
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
            } if attempt.boot != *boot && self.spec.verifies_after_reboot() => {
                let mut state = self.state.clone();
                if let JobState::Queued {
                    check_before_retry, ..
                } = &mut state
                {
                    *check_before_retry = true;
                }
                Step::to(state).effect(Effect::Verify(self.attempt_id(attempt)))
            }
            JobState::Queued { .. } | JobState::Completed { .. } | JobState::Failed { .. } => {
                Step::unchanged()
            }
            // Same boot: the agent restarted, the machine did not. Nothing may be concluded;
            // the program may still be running, so it is not started again either. A
            // termination still owed is licensed again (it may have been lost).
            JobState::Running {
                attempt,
                terminate_requested_at,
                ..
            } if attempt.boot == *boot => match terminate_requested_at {
                Some(_) => Step::unchanged().effect(Effect::Terminate(self.attempt_id(attempt))),
                None => Step::unchanged(),
            },
            JobState::Running { attempt, .. } => match self.spec.reboot_behaviour() {
                RebootBehaviour::RestartsMachine => {
                    self.reboot_observed(attempt, RebootAttribution::InitiatedByProgram, None, 1)
                }
                RebootBehaviour::Never | RebootBehaviour::MayRequest => self.fail_attempt(
                    attempt,
                    FailureReason::Interrupted(RebootAttribution::Unrelated),
                    None,
                ),
            },
            JobState::AwaitingReboot {
                attempt,
                cause,
                requested_in,
                exit_code,
                reboots_seen,
                verifying_in,
                ..
            } => match verifying_in {
                // Verification still owed in this boot: license it again (it may have been lost).
                Some(v) if v == boot => {
                    Step::unchanged().effect(Effect::Verify(self.attempt_id(attempt)))
                }
                Some(_) => {
                    let mut state = self.state.clone();
                    if let JobState::AwaitingReboot {
                        reboots_seen,
                        verifying_in,
                        ..
                    } = &mut state
                    {
                        *reboots_seen = reboots_seen.saturating_add(1);
                        *verifying_in = Some(boot.clone());
                    }
                    Step::to(state).effect(Effect::Verify(self.attempt_id(attempt)))
                }
                // No reboot yet: a soft restart is still owed by the agent.
                None if requested_in == boot => {
                    if *cause == RebootAttribution::RequestedByJob(RebootKind::Soft) {
                        Step::unchanged().effect(Effect::ScheduleRestart {
                            job: self.job(),
                            kind: RebootKind::Soft,
                        })
                    } else {
                        Step::unchanged()
                    }
                }
                None => self.reboot_observed(
                    attempt,
                    *cause,
                    *exit_code,
                    reboots_seen.saturating_add(1),
                ),
            },
        }
    }

    /// A reboot was observed for a job that expected it: verify if asked, else complete.
    fn reboot_observed(
        &self,
        attempt: &Attempt,
        cause: RebootAttribution,
        exit_code: Option<i32>,
        reboots_seen: u32,
    ) -> Step {
        if !self.spec.verifies_after_reboot() {
            return self.complete(attempt, exit_code, Some(cause), false, false);
        }
        let entering = self.state.kind() != StateKind::AwaitingReboot;
        let state = JobState::AwaitingReboot {
            attempt: attempt.clone(),
            cause,
            requested_in: attempt.boot.clone(),
            since: self.event.at,
            exit_code,
            reboots_seen,
            verifying_in: Some(self.event.boot.clone()),
        };
        let report = entering.then(|| self.report(&state, exit_code, None));
        Step::to(state)
            .report(report)
            .effect(Effect::Verify(self.attempt_id(attempt)))
    }

    fn reboot_expected(
        &self,
        named: AttemptRef,
        kind: RebootKind,
    ) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Running { .. } => {
                let attempt = self.current(named)?;
                self.same_boot(&attempt.boot)?;
                Ok(self.await_reboot(
                    attempt,
                    RebootAttribution::RequestedByJob(kind),
                    None,
                    0,
                    true,
                ))
            }
            // The reboot happened but the result still needs one more: bounded.
            JobState::AwaitingReboot {
                verifying_in: Some(v),
                reboots_seen,
                exit_code,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(v)?;
                if *reboots_seen >= self.spec.reboot_limit() {
                    let state = JobState::Failed {
                        run: attempt.run,
                        attempt: Some(attempt.clone()),
                        at: self.event.at,
                        reason: FailureReason::RebootLoop {
                            boots: *reboots_seen,
                        },
                    };
                    let reason = FailureReason::RebootLoop {
                        boots: *reboots_seen,
                    };
                    let report = self.report(&state, *exit_code, Some(reason));
                    Ok(Step::to(state).report(Some(report)))
                } else {
                    Ok(self.await_reboot(
                        attempt,
                        RebootAttribution::RequestedByJob(kind),
                        *exit_code,
                        *reboots_seen,
                        false,
                    ))
                }
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn verified(&self, named: AttemptRef, installed: bool) -> Result<Step, TransitionError> {
        match self.state {
            JobState::Queued {
                check_before_retry: true,
                last_failure,
                ..
            } => {
                let attempt = self.current(named)?;
                Ok(if installed {
                    let exit_code = match last_failure {
                        Some(FailureReason::ExitCode(code)) => Some(*code),
                        _ => None,
                    };
                    self.complete(attempt, exit_code, None, true, false)
                } else {
                    let mut state = self.state.clone();
                    if let JobState::Queued {
                        check_before_retry, ..
                    } = &mut state
                    {
                        *check_before_retry = false;
                    }
                    Step::to(state)
                })
            }
            JobState::AwaitingReboot {
                verifying_in: Some(v),
                cause,
                exit_code,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(v)?;
                Ok(if installed {
                    self.complete(attempt, *exit_code, Some(*cause), true, false)
                } else {
                    // After a reboot the attempt is never re-run (DESIGN.md): the check decides,
                    // and "not there" fails the run. A rerun request may start a new one.
                    let reason = FailureReason::NotDetected;
                    let state = JobState::Failed {
                        run: attempt.run,
                        attempt: Some(attempt.clone()),
                        at: self.event.at,
                        reason: reason.clone(),
                    };
                    let report = self.report(&state, *exit_code, Some(reason));
                    Step::to(state).report(Some(report))
                })
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    /// The run-time limit, measured on the boot's monotonic clock and only within the boot the
    /// attempt started in: the wall clock cannot end an attempt early, or never.
    fn tick(&self) -> Step {
        if let JobState::Running {
            attempt,
            shutdown_notice_at,
            terminate_requested_at: None,
        } = self.state
        {
            let elapsed = self
                .event
                .since_boot
                .saturating_sub(attempt.started_since_boot);
            if attempt.boot == self.event.boot && elapsed >= self.spec.run_time_limit() {
                let terminate = Effect::Terminate(self.attempt_id(attempt));
                return Step::to(JobState::Running {
                    attempt: attempt.clone(),
                    shutdown_notice_at: *shutdown_notice_at,
                    terminate_requested_at: Some(self.event.at),
                })
                .effect(terminate);
            }
        }
        Step::unchanged()
    }

    fn cancel(&self) -> Result<Step, TransitionError> {
        let JobState::Queued { run, previous, .. } = self.state else {
            return self.invalid();
        };
        let state = JobState::Failed {
            run: *run,
            attempt: previous.clone(),
            at: self.event.at,
            reason: FailureReason::Cancelled,
        };
        let report = self.report(&state, None, Some(FailureReason::Cancelled));
        Ok(Step::to(state).report(Some(report)))
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

fn attempt_ref(attempt: &Attempt) -> AttemptRef {
    AttemptRef {
        run: attempt.run,
        number: attempt.number,
    }
}

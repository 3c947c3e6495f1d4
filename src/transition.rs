//! The pure transition function: `(spec, state, event) -> (new state, effects)`.
//!
//! **Architecture invariant:** nothing in this module does IO or reads a clock. Time and boot
//! identity arrive in the [`Event`]; what must happen in the world leaves as [`Effect`]s.

use crate::{
    Attempt, AttemptId, AttemptRef, BootId, Effect, Event, EventKind, EventName, ExitOutcome,
    FailureReason, JobId, JobSpec, JobState, RebootAttribution, RebootBehaviour, RebootKind,
    StateKind, StatusKey, StatusMessage, spec,
};

/// The result of applying an event: the new state (`None` when the event changes nothing) and
/// the effects the caller must carry out once the new state is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The new state, or `None` if the state is unchanged (nothing to commit).
    pub state: Option<JobState>,
    /// What the caller must do, in order.
    pub effects: Vec<Effect>,
}

impl Step {
    fn unchanged() -> Self {
        Self {
            state: None,
            effects: Vec::new(),
        }
    }

    fn to(state: JobState) -> Self {
        Self {
            state: Some(state),
            effects: Vec::new(),
        }
    }

    fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
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
/// let start = Event { at, boot: boot.clone(), kind: EventKind::AttemptStarted };
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
    ) -> Effect {
        let reboot = match state {
            JobState::AwaitingReboot { cause, .. } => Some(*cause),
            JobState::Completed { reboot, .. } => *reboot,
            JobState::Failed {
                reason: FailureReason::Interrupted(by),
                ..
            } => Some(*by),
            _ => None,
        };
        Effect::Report(StatusMessage {
            key: StatusKey {
                job: self.job(),
                run: state.run(),
                attempt: state.attempt().map_or(0, |a| a.number),
                state: state.kind(),
            },
            exit_code,
            reason,
            reboot,
            boot: self.event.boot.clone(),
            at: self.event.at,
        })
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
        Step::to(state).effect(report)
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
                check_before_retry: check.then(|| attempt.clone()),
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
            Step::to(state).effect(report)
        }
    }

    /// Enters `AwaitingReboot`. A soft request licenses the agent to restart the machine; the
    /// report is sent once per attempt (its key would be the same on a second entry).
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
        let mut step = Step::to(state);
        step.effects.extend(report);
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
            check_before_retry: None,
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
        };
        let launch = Effect::Launch(self.attempt_id(&attempt));
        Ok(Step::to(JobState::Running {
            attempt,
            shutdown_notice_at: None,
        })
        .effect(launch))
    }

    fn program_exited(&self, named: AttemptRef, code: i32) -> Result<Step, TransitionError> {
        let outcome = self.spec.exit_code_policy().outcome(code);
        match self.state {
            JobState::Running { .. } => {
                let attempt = self.current(named)?;
                self.same_boot(&attempt.boot)?;
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
            // The agent committed the wait before the program exited: record the code, and a
            // failure still fails the attempt. The program lives only in the boot its attempt
            // started in: after any reboot, an exit of it is a replay.
            JobState::AwaitingReboot {
                exit_code: None,
                verifying_in: None,
                ..
            } => {
                let attempt = self.current(named)?;
                self.same_boot(&attempt.boot)?;
                Ok(match outcome {
                    ExitOutcome::RetryLater | ExitOutcome::Failure => {
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
            } if attempt.boot == self.event.boot => Step::to(JobState::Running {
                attempt: attempt.clone(),
                shutdown_notice_at: Some(self.event.at),
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
                check_before_retry: Some(attempt),
                ..
            } => Step::unchanged().effect(Effect::Verify(self.attempt_id(attempt))),
            JobState::Queued { .. } | JobState::Completed { .. } | JobState::Failed { .. } => {
                Step::unchanged()
            }
            // Same boot: the agent restarted, the machine did not. Nothing may be concluded;
            // the program may still be running, so it is not started again either.
            JobState::Running { attempt, .. } if attempt.boot == *boot => Step::unchanged(),
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
                        *reboots_seen += 1;
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
                None => self.reboot_observed(attempt, *cause, *exit_code, reboots_seen + 1),
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
        let mut step = Step::to(state);
        step.effects.extend(report);
        step.effect(Effect::Verify(self.attempt_id(attempt)))
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
                    Ok(Step::to(state).effect(report))
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
                run,
                attempt: next,
                not_before,
                last_failure,
                check_before_retry: Some(_),
            } => {
                let attempt = self.current(named)?;
                Ok(if installed {
                    let exit_code = match last_failure {
                        Some(FailureReason::ExitCode(code)) => Some(*code),
                        _ => None,
                    };
                    self.complete(attempt, exit_code, None, true, false)
                } else {
                    Step::to(JobState::Queued {
                        run: *run,
                        attempt: *next,
                        not_before: *not_before,
                        last_failure: last_failure.clone(),
                        check_before_retry: None,
                    })
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
                    self.fail_attempt(attempt, FailureReason::NotDetected, *exit_code)
                })
            }
            _ => {
                self.current(named)?;
                self.invalid()
            }
        }
    }

    fn tick(&self) -> Step {
        if let JobState::Running { attempt, .. } = self.state {
            let deadline = spec::add(attempt.started_at, self.spec.run_time_limit());
            // A reboot not yet reconciled, or a clock that jumped backwards, never times out.
            if attempt.boot == self.event.boot && self.event.at >= deadline {
                let terminate = Effect::Terminate(self.attempt_id(attempt));
                return self
                    .fail_attempt(attempt, FailureReason::TimedOut, None)
                    .effect(terminate);
            }
        }
        Step::unchanged()
    }

    fn cancel(&self) -> Result<Step, TransitionError> {
        let JobState::Queued {
            run,
            check_before_retry,
            ..
        } = self.state
        else {
            return self.invalid();
        };
        let state = JobState::Failed {
            run: *run,
            attempt: check_before_retry.clone(),
            at: self.event.at,
            reason: FailureReason::Cancelled,
        };
        let report = self.report(&state, None, Some(FailureReason::Cancelled));
        Ok(Step::to(state).effect(report))
    }

    fn rerun(&self) -> Result<Step, TransitionError> {
        match self.state {
            // Completed mandatory jobs never get here: see `completed_mandatory`.
            JobState::Completed { .. } | JobState::Failed { .. } => {
                Ok(Step::to(JobState::Queued {
                    run: self.state.run() + 1,
                    attempt: 1,
                    not_before: None,
                    last_failure: None,
                    check_before_retry: None,
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

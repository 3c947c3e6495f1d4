//! Bounded exhaustive check: every sequence of events up to depth `JOBSTATE_EXHAUSTIVE_DEPTH`
//! (default 8) for one job, over the whole event alphabet (stale attempts and runs, launches
//! recorded or failed, lost programs, every check answer, agent starts in three boots with the
//! program alive, gone or unknown, restart requests, ticks, operators' requests), for six job
//! specs (every reboot behaviour, with and without a check, mandatory and optional). Asserts on
//! every transition SEMANTICS.md invariants 1, 3, 4, 6, 7 and 8.
//!
//! Identical (state, boot, depth) subtrees are explored once and their sequence counts reused:
//! the invariants are properties of single transitions from reachable states, so checking each
//! distinct subtree once checks every sequence through it.
//!
//! The reboot-loop bound is 1 reboot and the retry policy 2 attempts, so that depth 8 reaches
//! the bound on a second attempt (begin, exit 1603, "not there", begin, exit 3010, new boot,
//! "not yet": 7 events) and a completed mandatory job's tombstone after two attempts.

use std::collections::HashMap;
use std::time::Duration;

use jobstate::{
    AttemptRef, BootId, CheckResult, Effect, Event, EventKind, FailureReason, JobSpec, JobState,
    ProgramId, ProgramStatus, RebootBehaviour, RebootKind, RetryPolicy, StateKind, TransitionError,
    transition,
};

use crate::common::*;

const BOOTS: [&str; 3] = ["boot-0", "boot-1", "boot-2"];
const CODES: [i32; 5] = [0, 3010, 1641, 1618, 1603];
/// Far in the future on both clocks: past every run-time limit, grace window and deadline.
const FAR: i64 = 48 * 60;

fn depth_limit() -> u32 {
    std::env::var("JOBSTATE_EXHAUSTIVE_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(8)
}

/// The alphabet, given the current attempt (for attempt-scoped events) and the depth (time):
/// (boot index if the event changes the boot, the event, its minute).
fn alphabet(state: &JobState, depth: u32) -> Vec<(Option<usize>, EventKind, i64)> {
    let current = state
        .attempt()
        .map_or(AttemptRef { run: 1, number: 1 }, |a| AttemptRef {
            run: a.run,
            number: a.number,
        });
    // An older attempt of this run, and an attempt of an older run.
    let stale = AttemptRef {
        run: current.run,
        number: current.number.saturating_sub(1).max(1),
    };
    let stale_run = AttemptRef {
        run: current.run.saturating_sub(1).max(1),
        number: current.number,
    };
    let minute = i64::from(depth);
    let now = |kind| (None, kind, minute);
    let mut events = vec![
        now(EventKind::Offered),
        now(EventKind::AttemptStarted),
        now(EventKind::Launched {
            attempt: current,
            program: ProgramId::new(100 + depth, 1),
        }),
        now(EventKind::LaunchFailed { attempt: current }),
        now(EventKind::ProgramExited {
            attempt: stale,
            exit: jobstate::ProgramExit::Code(0),
            restart_pending: false,
        }),
        now(EventKind::ProgramExited {
            attempt: stale_run,
            exit: jobstate::ProgramExit::Code(0),
            restart_pending: false,
        }),
        now(EventKind::ProgramLost { attempt: current }),
        now(EventKind::ShutdownNoticed),
        now(EventKind::RebootExpected {
            attempt: current,
            kind: RebootKind::Soft,
        }),
        now(EventKind::RebootExpected {
            attempt: current,
            kind: RebootKind::Hard,
        }),
        now(EventKind::RebootExpected {
            attempt: stale,
            kind: RebootKind::Soft,
        }),
        now(EventKind::Verified {
            attempt: stale,
            result: CheckResult::Installed,
        }),
        // Later events are earlier: a clock that jumps backwards.
        (None, EventKind::tick(), FAR),
        now(EventKind::Tick {
            program: ProgramStatus::Gone,
        }),
        now(EventKind::CancelRequested),
        now(EventKind::RerunRequested),
        now(EventKind::AbandonRequested),
    ];
    for result in [
        CheckResult::Installed,
        CheckResult::NotInstalled,
        CheckResult::NotYet,
    ] {
        events.push(now(EventKind::Verified {
            attempt: current,
            result,
        }));
    }
    for code in CODES {
        events.push(now(EventKind::ProgramExited {
            attempt: current,
            exit: jobstate::ProgramExit::Code(code),
            restart_pending: false,
        }));
    }
    // A success after which the system says a restart is pending, and a program killed by the
    // shutdown's SIGTERM.
    events.push(now(EventKind::ProgramExited {
        attempt: current,
        exit: jobstate::ProgramExit::Code(0),
        restart_pending: true,
    }));
    events.push(now(EventKind::ProgramExited {
        attempt: current,
        exit: jobstate::ProgramExit::Signal(15),
        restart_pending: false,
    }));
    for b in 0..BOOTS.len() {
        for program in [ProgramStatus::Gone, ProgramStatus::Unknown] {
            events.push((
                Some(b),
                EventKind::AgentStarted {
                    program,
                    restart_of: None,
                },
                minute,
            ));
        }
    }
    // An agent restart in the same boot that finds the program alive.
    events.push(now(EventKind::AgentStarted {
        program: ProgramStatus::Alive,
        restart_of: None,
    }));
    events
}

struct Explorer {
    spec: JobSpec,
    depth: u32,
    boots: Vec<BootId>,
    memo: HashMap<(String, usize, u32), u64>,
    transitions_checked: u64,
    stuck_checked: u64,
    reboot_bound_reached: u64,
    bound_on_second_attempt: u64,
    tombstones: u64,
}

impl Explorer {
    fn event(&self, boot: usize, kind: EventKind, minute: i64) -> Event {
        Event {
            at: t0() + minutes(minute),
            boot: self.boots[boot].clone(),
            // The boot clock moves with the wall clock here: FAR is far ahead on both, and
            // later events are behind it on both (the core must not trust either to grow).
            since_boot: Duration::from_secs(minute.unsigned_abs() * 60),
            kind,
        }
    }

    /// Returns the number of event sequences of length 1..=remaining starting here.
    fn explore(&mut self, state: &JobState, boot: usize, depth: u32) -> u64 {
        if depth == self.depth {
            return 0;
        }
        let key = (serde_json::to_string(state).unwrap(), boot, depth);
        if let Some(&n) = self.memo.get(&key) {
            return n;
        }
        self.check_not_stuck(state, boot, depth);
        let mut sequences = 0;
        for (new_boot, kind, minute) in alphabet(state, depth) {
            let boot_now = new_boot.unwrap_or(boot);
            let event = self.event(boot_now, kind, minute);
            self.transitions_checked += 1;
            let next = match transition(&self.spec, state, &event) {
                Ok(step) => {
                    self.check(state, &event, &step.state, &step.effects);
                    step.state.unwrap_or_else(|| state.clone())
                }
                Err(error) => {
                    self.check_refusal(state, &event, &error);
                    state.clone()
                }
            };
            sequences += 1 + self.explore(&next, boot_now, depth + 1);
        }
        self.memo.insert(key, sequences);
        sequences
    }

    fn context(&self, before: &JobState, event: &Event, after: &Option<JobState>) -> String {
        format!(
            "spec {:?}\nstate {before:?}\nevent {event:?}\nafter {after:?}",
            self.spec
        )
    }

    fn check(
        &mut self,
        before: &JobState,
        event: &Event,
        after: &Option<JobState>,
        effects: &[Effect],
    ) {
        let spec = &self.spec;
        let context =
            || format!("spec {spec:?}\nstate {before:?}\nevent {event:?}\nafter {after:?}");
        let new = after.as_ref().unwrap_or(before);
        // Invariant 1: a completed mandatory job never leaves Completed, never starts again.
        if before.kind() == StateKind::Completed && spec.is_mandatory() {
            assert!(
                after.is_none(),
                "invariant 1: completed mandatory job moved\n{}",
                context()
            );
            assert_eq!(
                launches(effects),
                0,
                "invariant 1: completed job launched\n{}",
                context()
            );
        }
        if new.kind() == StateKind::Completed
            && before.kind() != StateKind::Completed
            && spec.is_mandatory()
        {
            self.tombstones += 1;
        }
        // Invariant 3: a reboot never fails a job that restarts the machine, and never queues it
        // to run again (an attempt whose launch was never recorded never ran: it is queued again
        // as the same attempt, no re-run).
        let rebooted = matches!(event.kind, EventKind::AgentStarted { .. })
            && before.attempt().is_some_and(|a| a.boot != event.boot)
            && matches!(
                before.kind(),
                StateKind::Running | StateKind::AwaitingReboot
            );
        if spec.reboot() == RebootBehaviour::RestartsMachine && rebooted {
            assert!(
                !matches!(new.kind(), StateKind::Failed | StateKind::Queued)
                    || never_ran_and_left_alone(before, new),
                "invariant 3: a reboot failed or re-queued a RestartsMachine job\n{}",
                context()
            );
        }
        // Invariant 4: a launch comes only from starting a queued attempt (an attempt whose
        // launch was never recorded is queued again as itself, and started again by the ledger
        // as any queued attempt is).
        if launches(effects) > 0 {
            let start =
                event.kind == EventKind::AttemptStarted && before.kind() == StateKind::Queued;
            assert!(
                start,
                "invariant 4: a launch from anything but a start\n{}",
                context()
            );
        }
        // Invariant 7: completed only on evidence.
        if new.kind() == StateKind::Completed && before.kind() != StateKind::Completed {
            assert!(
                completion_has_evidence(spec, before, event),
                "invariant 7: completed without evidence\n{}",
                context()
            );
        }
        if let JobState::Failed {
            reason: FailureReason::RebootLoop { .. },
            attempt: Some(attempt),
            ..
        } = new
            && before.kind() != StateKind::Failed
        {
            self.reboot_bound_reached += 1;
            if attempt.number >= 2 {
                self.bound_on_second_attempt += 1;
            }
        }
        // Events naming another attempt than the current one are never applied.
        if let Some(named) = event.kind.attempt() {
            let current = before.attempt().map(|a| AttemptRef {
                run: a.run,
                number: a.number,
            });
            assert_eq!(
                Some(named),
                current,
                "invariant 4: an event of another attempt was applied\n{}",
                context()
            );
        }
    }

    /// Invariant 6: a refusal is typed and names the event.
    fn check_refusal(&self, before: &JobState, event: &Event, error: &TransitionError) {
        let message = error.to_string();
        assert!(
            message.contains(&event.kind.name().to_string()) || message.contains("program_exited"),
            "{message}\n{}",
            self.context(before, event, &None)
        );
    }

    /// Invariant 8: every unfinished state ends or waits visibly. An operator can always end it;
    /// a running program that is gone is noticed by a tick; a running program is bounded by its
    /// run-time limit; a restart that does not come is reported overdue.
    fn check_not_stuck(&mut self, state: &JobState, boot: usize, depth: u32) {
        if state.is_terminal() {
            return;
        }
        self.stuck_checked += 1;
        let abandon = self.event(boot, EventKind::AbandonRequested, i64::from(depth));
        let step = transition(&self.spec, state, &abandon)
            .unwrap_or_else(|e| panic!("invariant 8: abandon refused: {e}\nstate {state:?}"));
        assert!(
            matches!(
                step.state,
                Some(JobState::Failed {
                    reason: FailureReason::Abandoned,
                    ..
                })
            ) && step.report.is_some(),
            "invariant 8: abandon did not fail and report {state:?}: {step:?}"
        );
        let in_boot = state.attempt().is_some_and(|a| a.boot == self.boots[boot]);
        let far = self.event(
            boot,
            EventKind::tick(),
            FAR + i64::from(depth) * 60 * 24 * 365,
        );
        match state {
            JobState::Running {
                launch,
                terminate,
                provisional,
                ..
            } if in_boot => {
                // (A provisional failure's program exited: its grace window bounds it.)
                if launch.happened() && provisional.is_none() {
                    let gone = self.event(
                        boot,
                        EventKind::Tick {
                            program: ProgramStatus::Gone,
                        },
                        i64::from(depth),
                    );
                    let step = transition(&self.spec, state, &gone).unwrap();
                    assert!(
                        step.state.is_some(),
                        "invariant 8: a gone program went unnoticed: {state:?}"
                    );
                }
                if !terminate.is_some_and(|t| t.unresponsive) {
                    let step = transition(&self.spec, state, &far).unwrap();
                    assert!(
                        step.state.is_some(),
                        "invariant 8: a running attempt has no time bound: {state:?}"
                    );
                }
            }
            JobState::AwaitingReboot {
                verifying_in: None,
                requested_in,
                ..
            } if *requested_in == self.boots[boot] => {
                let step = transition(&self.spec, state, &far).unwrap();
                assert!(
                    step.report.is_some()
                        && step
                            .effects
                            .iter()
                            .any(|e| matches!(e, Effect::ScheduleRestart { .. })),
                    "invariant 8: a restart that never comes is not reported overdue: {state:?}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn every_sequence_keeps_invariants_1_3_4_6_7_8() {
    let depth = depth_limit();
    let retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let base = |name: &str, behaviour| {
        msi_job(job(name))
            .with_reboot(behaviour)
            .with_max_reboots(1)
            .with_retry(retry)
    };
    let specs = [
        base("patch", RebootBehaviour::Never),
        base("kb-patch", RebootBehaviour::MayRequest).with_restart_when_pending(true),
        base("kb-patch-checked", RebootBehaviour::MayRequest).with_verify_after_reboot(true),
        base("upgrade", RebootBehaviour::RestartsMachine),
        base("upgrade-checked", RebootBehaviour::RestartsMachine)
            .with_verify_after_reboot(true)
            .with_restart_when_pending(true),
        base("optional-upgrade", RebootBehaviour::RestartsMachine).with_mandatory(false),
    ];
    let mut total = (0u64, 0usize, 0u64, 0u64, 0u64, 0u64);
    let mut second = 0u64;
    for spec in specs {
        let mut explorer = Explorer {
            spec,
            depth,
            boots: BOOTS.iter().map(|b| boot(b)).collect(),
            memo: HashMap::new(),
            transitions_checked: 0,
            stuck_checked: 0,
            reboot_bound_reached: 0,
            bound_on_second_attempt: 0,
            tombstones: 0,
        };
        total.0 += explorer.explore(&JobState::initial(), 0, 0);
        total.1 += explorer.memo.len();
        total.2 += explorer.transitions_checked;
        total.3 += explorer.stuck_checked;
        total.4 += explorer.reboot_bound_reached;
        total.5 += explorer.tombstones;
        second += explorer.bound_on_second_attempt;
    }
    let (sequences, nodes, transitions, stuck, bound, tombstones) = total;
    let alphabet = alphabet(&JobState::initial(), 0).len() as u64;
    let expected: u64 = (1..=depth).map(|d| alphabet.pow(d)).sum::<u64>() * 6;
    assert_eq!(sequences, expected, "every sequence is counted once");
    assert!(bound > 0, "the reboot-loop bound was never reached");
    assert!(
        second > 0 || depth < 7,
        "the reboot-loop bound was never reached on a second attempt"
    );
    assert!(tombstones > 0, "no mandatory job was ever completed");
    report_figures(&format!(
        "exhaustive: {sequences} event sequences up to depth {depth} checked ({alphabet} events, \
         6 job specs, {nodes} distinct (state, boot, depth) nodes, {transitions} transitions \
         evaluated, {stuck} unfinished states checked for a way out, the reboot-loop bound \
         reached {bound} times ({second} on a second attempt), {tombstones} mandatory \
         completions)"
    ));
}

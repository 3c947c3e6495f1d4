//! Bounded exhaustive check: every sequence of events up to depth 8 for one mandatory job, over
//! the whole event alphabet, boots from a small set, and both reboot behaviours that restart
//! (with and without verification). Asserts DESIGN.md invariants 1 and 3 on every transition.
//!
//! Identical (state, boot, depth) subtrees are explored once and their sequence counts reused:
//! the invariants are properties of single transitions from reachable states, so checking each
//! distinct subtree once checks every sequence through it.

use std::collections::HashMap;

use jobstate::{
    AttemptRef, BootId, Effect, Event, EventKind, JobSpec, JobState, RebootBehaviour, RebootKind,
    RetryPolicy, StateKind, transition,
};

use crate::common::*;

const DEPTH: u32 = 8;
const BOOTS: [&str; 3] = ["boot-0", "boot-1", "boot-2"];
const CODES: [i32; 5] = [0, 3010, 1641, 1618, 1603];

/// The alphabet, given the current attempt (for attempt-scoped events) and the depth (time).
fn alphabet(state: &JobState, depth: u32) -> Vec<(Option<usize>, EventKind, i64)> {
    let current = state
        .attempt()
        .map_or(AttemptRef { run: 1, number: 1 }, |a| AttemptRef {
            run: a.run,
            number: a.number,
        });
    let stale = AttemptRef {
        run: current.run,
        number: current.number.saturating_sub(1).max(1),
    };
    let minute = i64::from(depth);
    let mut events = vec![
        (None, EventKind::Advertised, minute),
        (None, EventKind::AttemptStarted, minute),
        (None, EventKind::ShutdownNoticed, minute),
        // Far in the future: past any run-time limit. Later events are earlier: a clock that
        // jumps backwards.
        (None, EventKind::Tick, 48 * 60),
        (None, EventKind::CancelRequested, minute),
        (None, EventKind::RerunRequested, minute),
        (
            None,
            EventKind::RebootExpected {
                attempt: current,
                kind: RebootKind::Soft,
            },
            minute,
        ),
        (
            None,
            EventKind::RebootExpected {
                attempt: current,
                kind: RebootKind::Hard,
            },
            minute,
        ),
        (
            None,
            EventKind::Verified {
                attempt: current,
                installed: true,
            },
            minute,
        ),
        (
            None,
            EventKind::Verified {
                attempt: current,
                installed: false,
            },
            minute,
        ),
        (
            None,
            EventKind::ProgramExited {
                attempt: stale,
                code: 0,
            },
            minute,
        ),
    ];
    for code in CODES {
        events.push((
            None,
            EventKind::ProgramExited {
                attempt: current,
                code,
            },
            minute,
        ));
    }
    for b in 0..BOOTS.len() {
        events.push((Some(b), EventKind::AgentStarted, minute));
    }
    events
}

struct Explorer {
    spec: JobSpec,
    boots: Vec<BootId>,
    memo: HashMap<(String, usize, u32), u64>,
    transitions_checked: u64,
}

impl Explorer {
    /// Returns the number of event sequences of length 1..=remaining starting here.
    fn explore(&mut self, state: &JobState, boot: usize, depth: u32) -> u64 {
        if depth == DEPTH {
            return 0;
        }
        let key = (serde_json::to_string(state).unwrap(), boot, depth);
        if let Some(&n) = self.memo.get(&key) {
            return n;
        }
        let mut sequences = 0;
        for (new_boot, kind, minute) in alphabet(state, depth) {
            let boot_now = new_boot.unwrap_or(boot);
            let event = Event {
                at: t0() + minutes(minute),
                boot: self.boots[boot_now].clone(),
                // The boot clock moves with the wall clock here: Tick is far ahead on both,
                // and later events are behind it on both.
                since_boot: std::time::Duration::from_secs(minute.unsigned_abs() * 60),
                kind: kind.clone(),
            };
            self.transitions_checked += 1;
            let next = match transition(&self.spec, state, &event) {
                Ok(step) => {
                    self.check(state, &event, &step.state, &step.effects);
                    step.state.unwrap_or_else(|| state.clone())
                }
                Err(_) => state.clone(),
            };
            sequences += 1 + self.explore(&next, boot_now, depth + 1);
        }
        self.memo.insert(key, sequences);
        sequences
    }

    fn check(
        &self,
        before: &JobState,
        event: &Event,
        after: &Option<JobState>,
        effects: &[Effect],
    ) {
        let context = || {
            format!(
                "spec {:?}\nstate {before:?}\nevent {event:?}\nafter {after:?}",
                self.spec
            )
        };
        // Invariant 1: a completed mandatory job never leaves Completed, never starts again.
        if before.kind() == StateKind::Completed {
            assert!(
                after.is_none(),
                "invariant 1: completed mandatory job moved\n{}",
                context()
            );
            assert!(
                launches(effects) == 0,
                "invariant 1: completed job launched\n{}",
                context()
            );
        }
        // Invariant 3: a reboot never turns a job that restarts the machine into Failed.
        if self.spec.reboot_behaviour() == RebootBehaviour::RestartsMachine
            && event.kind == EventKind::AgentStarted
        {
            let failed = after
                .as_ref()
                .is_some_and(|s| s.kind() == StateKind::Failed);
            assert!(
                !failed,
                "invariant 3: a reboot failed a RestartsMachine job\n{}",
                context()
            );
        }
        // Launches come only from starting a queued attempt.
        if launches(effects) > 0 {
            assert_eq!(event.kind, EventKind::AttemptStarted, "{}", context());
            assert_eq!(before.kind(), StateKind::Queued, "{}", context());
        }
    }
}

#[test]
fn every_sequence_up_to_depth_8_keeps_invariants_1_and_3() {
    let mut total_sequences = 0u64;
    let mut total_states = 0usize;
    let mut total_transitions = 0u64;
    for behaviour in [
        RebootBehaviour::MayRequest,
        RebootBehaviour::RestartsMachine,
    ] {
        for verify in [false, true] {
            let spec = JobSpec::new(job("mandatory-upgrade"))
                .mandatory(true)
                .reboot(behaviour)
                .verify_after_reboot(verify)
                .max_reboots(2)
                .retry(RetryPolicy {
                    max_attempts: 2,
                    ..RetryPolicy::default()
                });
            let mut explorer = Explorer {
                spec,
                boots: BOOTS.iter().map(|b| boot(b)).collect(),
                memo: HashMap::new(),
                transitions_checked: 0,
            };
            total_sequences += explorer.explore(&JobState::initial(), 0, 0);
            total_states += explorer.memo.len();
            total_transitions += explorer.transitions_checked;
        }
    }
    let alphabet = alphabet(&JobState::initial(), 0).len() as u64;
    let expected: u64 = (1..=DEPTH).map(|d| alphabet.pow(d)).sum::<u64>() * 4;
    assert_eq!(total_sequences, expected, "every sequence is counted once");
    report_figures(&format!(
        "exhaustive: {total_sequences} event sequences up to depth {DEPTH} checked \
         ({alphabet} events, 4 job specs, {total_states} distinct (state, boot, depth) nodes, \
         {total_transitions} transitions evaluated)"
    ));
}

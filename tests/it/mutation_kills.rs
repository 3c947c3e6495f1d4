//! Tests that kill the mutants cargo-mutants found surviving in `src/core/transition.rs`,
//! `src/ledger.rs` and `src/record.rs` with this binary alone. Each pins one rule of SEMANTICS.md
//! that no other test checked closely enough for a broken core to fail it. The command (the
//! slow store modules skipped; `--test-tool nextest` with `--max-fail=1:immediate` so that a
//! caught mutant does not wait for the exhaustive check):
//!
//! ```text
//! cargo mutants --test-tool nextest --all-features --jobs 2 --timeout 300 \
//!   --file src/core/transition.rs --file src/ledger.rs --file src/record.rs \
//!   -- --test it --max-fail=1:immediate \
//!   -- --skip file_store --skip conformance --skip linux_session
//! ```

use std::time::Duration;

use jobstate::report::{Answers, StatusSink};
use jobstate::session::{LivePrograms, SessionFacts};
use jobstate::store::{Change, Commit, JobTable, Replay, ReplayError, Revision, Store};
use jobstate::{
    Attempt, AttemptId, AttemptRef, Effect, Error, Event, EventKind, EventName, FailureReason,
    JobSpec, JobState, Launch, Ledger, MemoryStore, ProgramId, RebootAttribution, RebootBehaviour,
    RebootKind, RetryPolicy, StateKind, StatusMessage, TransitionError, WaitReason, transition,
};

use crate::common::*;

fn open(store: &MemoryStore, boot_name: &str) -> MemLedger {
    Ledger::open(store.clone(), service_session(boot_name))
        .unwrap()
        .0
}

/// Begins the job's queued attempt and records its launch, as an agent does.
fn start(ledger: &mut MemLedger, spec: &JobSpec) -> AttemptId {
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
    attempt
}

fn state(ledger: &MemLedger, spec: &JobSpec) -> JobState {
    ledger.job(spec.id()).unwrap().state().clone()
}

/// A sink that is down: every delivery fails.
struct Down;

impl StatusSink for Down {
    type Error = std::io::Error;
    fn deliver(
        &mut self,
        _batch: &[StatusMessage],
        _answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        Err(std::io::Error::other("server unreachable"))
    }
}

// SEMANTICS.md "Every wait is named and bounded or visible": a delivery retry is a wake-up.
#[test]
fn next_wakeup_includes_the_delivery_retry_while_messages_are_pending() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("patch"));
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert_eq!(
        ledger.next_wakeup(),
        Some(Duration::ZERO),
        "a message never offered is due now"
    );
    let delivery = ledger.deliver(&mut Down).unwrap();
    assert_eq!(delivery.pending, 1);
    let retry_at = delivery.retry_at.expect("a failed delivery is retried");
    let wait = (retry_at - ledger.session().now).to_std().unwrap();
    assert!(wait > Duration::ZERO);
    assert_eq!(ledger.next_wakeup(), Some(wait));
    // Once delivered, the retry is no longer a reason to wake.
    ledger.session_mut().now = retry_at;
    take_reports(&mut ledger);
    assert_eq!(ledger.next_wakeup(), None);
}

// SEMANTICS.md, Persistence: "commits carry a revision so that stale writers are refused".
#[test]
fn the_ledger_reports_the_revision_it_committed() {
    let mut store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("patch"));
    ledger.offer(spec.clone()).unwrap();
    start(&mut ledger, &spec);
    let revision = ledger.revision();
    assert_eq!(revision, store.load().unwrap().revision);
    assert_ne!(revision, Revision::default());
    assert!(matches!(state(&ledger, &spec), JobState::Running { .. }));
}

fn session_with(boot_name: &str, alive: &[&AttemptId]) -> SessionFacts {
    SessionFacts {
        programs: LivePrograms::Known(alive.iter().map(|a| (*a).clone()).collect()),
        restart_pending: jobstate::session::RestartPending::Unknown,
        ..service_session(boot_name)
    }
}

// SEMANTICS.md "Every observed reboot is attributed": unrelated when nobody asked for it.
#[test]
fn a_reboot_nobody_asked_for_is_unrelated_for_every_job_that_never_reboots() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let first = msi_job(job("first"));
    let second = msi_job(job("second"));
    ledger.offer(first.clone()).unwrap();
    ledger.offer(second.clone()).unwrap();
    start(&mut ledger, &first);
    start(&mut ledger, &second);
    drop(ledger); // the machine restarts, unasked
    let ledger = open(&store, "b");
    for spec in [&first, &second] {
        match state(&ledger, spec) {
            JobState::Queued {
                last_failure: Some(FailureReason::Interrupted(by)),
                ..
            } => assert_eq!(by, RebootAttribution::Unrelated, "{}", spec.id()),
            other => panic!("{}: expected a queued retry, got {other:?}", spec.id()),
        }
    }
}

// SEMANTICS.md "A program can vanish": a program an earlier agent process started stays polled.
#[test]
fn a_program_found_alive_after_an_agent_restart_stays_polled_once_its_launch_is_recorded() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("patch")).with_max_run_time(Duration::from_secs(3600));
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    drop(ledger); // the agent dies between the spawn and the launch record
    let (mut ledger, effects) =
        Ledger::open(store.clone(), session_with("a", &[&attempt])).unwrap();
    assert!(effects.is_empty(), "never a second program beside it");
    let polled = |ledger: &MemLedger| {
        let wait = ledger
            .waits()
            .into_iter()
            .find(|w| w.job == *spec.id())
            .unwrap();
        assert_eq!(wait.reason, WaitReason::ProgramRunning);
        wait.wake_after
    };
    let before = polled(&ledger);
    assert!(before.unwrap() < Duration::from_secs(60), "{before:?}");
    let _effects = ledger.launched(&attempt, ProgramId::new(77, 1)).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            launch: Launch::Recorded(_),
            ..
        }
    ));
    assert_eq!(polled(&ledger), before, "still an orphan: still polled");
}

// SEMANTICS.md invariant 4 (one attempt at a time): only an attempt in progress is current.
#[test]
fn current_attempt_is_none_for_a_finished_or_idle_job() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("patch"));
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let current = |ledger: &MemLedger| ledger.job(spec.id()).unwrap().current_attempt();
    assert_eq!(current(&ledger), Some(attempt.clone()));
    let _effects = ledger.program_exited(&attempt, 1603).unwrap(); // a retry is queued, nothing to check
    assert!(matches!(state(&ledger, &spec), JobState::Queued { .. }));
    assert_eq!(
        current(&ledger),
        None,
        "a queued retry has no attempt in progress"
    );
    ledger.session_mut().now += chrono::TimeDelta::days(1);
    let second = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&second, 0).unwrap();
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
    assert_eq!(current(&ledger), None, "a finished job has none");
}

fn offered(spec: &JobSpec) -> Change {
    Change {
        job: spec.id().clone(),
        seq: 1,
        spec: Some(spec.clone().into()),
        event: Event {
            at: t0(),
            boot: boot("a"),
            since_boot: Duration::ZERO,
            kind: EventKind::Offered,
        },
        state: JobState::initial(),
    }
}

fn then(previous: &Change, kind: EventKind, state: JobState) -> Change {
    Change {
        seq: previous.seq + 1,
        spec: None,
        event: Event {
            kind,
            ..previous.event.clone()
        },
        state,
        ..previous.clone()
    }
}

// SEMANTICS.md invariant 6 (out-of-sequence changes refused): checked across the whole commit.
#[test]
fn a_commit_is_checked_as_a_whole_before_anything_is_applied() {
    let spec = msi_job(job("patch"));
    let create = offered(&spec);
    let attempt = Attempt {
        run: 1,
        number: 1,
        boot: boot("a"),
        started_at: t0(),
        started_since_boot: Duration::ZERO,
    };
    let running = then(
        &create,
        EventKind::AttemptStarted,
        JobState::Running {
            attempt: attempt.clone(),
            launch: Launch::Pending,
            shutdown_notice_at: None,
            terminate: None,
            provisional: None,
        },
    );
    let completed = then(
        &running,
        EventKind::ProgramExited {
            attempt: AttemptRef { run: 1, number: 1 },
            exit: jobstate::ProgramExit::Code(0),
            restart_pending: false,
        },
        JobState::Completed {
            attempt,
            at: t0(),
            exit: Some(jobstate::ProgramExit::Code(0)),
            reboot: None,
            verified: false,
            restart_suppressed: false,
        },
    );
    let table = JobTable::default();
    table
        .check_all(&[create.clone(), running.clone(), completed.clone()])
        .unwrap();
    // A gap inside the commit.
    assert!(matches!(
        table.check_all(&[create.clone(), completed.clone()]),
        Err(ReplayError::OutOfSequence {
            expected: 2,
            found: 3,
            ..
        })
    ));
    // Anything after a completed mandatory job, inside the same commit.
    let after = then(&completed, EventKind::RerunRequested, JobState::initial());
    assert!(matches!(
        table.check_all(&[create.clone(), running.clone(), completed.clone(), after]),
        Err(ReplayError::NotATransition { seq: 4, .. })
    ));
    // The same through `Replay::check`, which every store calls before it writes.
    let replay = Replay::default();
    let commit = Commit::new(Revision(0), vec![create.clone(), completed]);
    assert!(replay.check(&commit).is_err());
    assert!(replay.jobs().is_empty(), "nothing applied");
    let mut store = MemoryStore::new();
    assert!(store.commit(&commit).is_err());
    assert!(store.records().is_empty());
    assert!(
        store
            .commit(&Commit::new(Revision(0), vec![create.clone(), running]))
            .is_ok()
    );
}

// SEMANTICS.md invariant 6 ("loses nothing"): a table that holds a job is not empty.
#[test]
fn a_table_with_a_job_is_not_empty() {
    let mut table = JobTable::default();
    assert!(table.is_empty());
    table.apply(offered(&msi_job(job("patch")))).unwrap();
    assert!(!table.is_empty());
    assert_eq!(table.len(), 1);
}

// SEMANTICS.md invariant 6: a replay for a finished attempt is Invalid in its state, not stale.
#[test]
fn a_replayed_exit_of_a_finished_attempt_is_invalid_in_its_state_not_stale() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("patch")).with_retry(RetryPolicy::none());
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Failed);
    match ledger.program_exited(&attempt, 0) {
        Err(Error::Transition(TransitionError::Invalid { state, event, .. })) => {
            assert_eq!(state, StateKind::Failed);
            assert_eq!(event, EventName::ProgramExited);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Another attempt's event is the stale one.
    let other = AttemptId {
        run: 1,
        number: 2,
        ..attempt
    };
    assert!(matches!(
        ledger.program_exited(&other, 0),
        Err(Error::Transition(TransitionError::StaleAttempt { .. }))
    ));
}

// SEMANTICS.md "A launch is a recorded fact": relaunched as the same attempt, its clocks anew.
#[test]
fn a_relaunched_attempt_starts_its_clocks_anew() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    drop(ledger); // the agent dies before the spawn; the machine restarts
    let mut later = session_with("b", &[]);
    later.now = t0() + chrono::TimeDelta::hours(5);
    later.since_boot = Duration::from_secs(30);
    let (ledger, effects) = Ledger::open(store, later.clone()).unwrap();
    assert_eq!(effects, vec![Effect::Launch(attempt.clone())]);
    match state(&ledger, &spec) {
        JobState::Running {
            attempt: a,
            launch: Launch::Pending,
            ..
        } => {
            assert_eq!((a.run, a.number), (1, 1), "the same attempt");
            assert_eq!(a.boot, boot("b"));
            assert_eq!(a.started_at, later.now);
            assert_eq!(a.started_since_boot, later.since_boot);
        }
        other => panic!("expected Running, got {other:?}"),
    }
}

// SEMANTICS.md "A failure reported as the machine goes down is provisional": only if it restarts;
// and no restart may be expected before the exit is recorded.
#[test]
fn a_failure_exit_fails_a_may_request_job_and_is_provisional_only_for_one_that_restarts() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    let spec = msi_job(job("msi")).with_reboot(RebootBehaviour::MayRequest);
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    assert!(matches!(
        ledger.expect_reboot(&attempt, RebootKind::Hard),
        Err(Error::Transition(TransitionError::ExitNotRecorded { .. }))
    ));
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    match state(&ledger, &spec) {
        JobState::Queued {
            last_failure: Some(FailureReason::ExitCode(1603)),
            attempt: 2,
            ..
        } => {}
        other => panic!("expected a queued retry after exit 1603, got {other:?}"),
    }
    // For a program that restarts the machine, the same exit is provisional; once the agent
    // says the restart is under way, a later exit of that attempt is a replay.
    let spec = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    ledger.offer(spec.clone()).unwrap();
    ledger.session_mut().now += chrono::TimeDelta::days(1);
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            provisional: Some(_),
            ..
        }
    ));
    let _effects = ledger.expect_reboot(&attempt, RebootKind::Hard).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::AwaitingReboot {
            exit: Some(jobstate::ProgramExit::Code(1603)),
            ..
        }
    ));
    assert!(matches!(
        ledger.program_exited(&attempt, 0),
        Err(Error::Transition(TransitionError::Invalid { .. }))
    ));
}

// SEMANTICS.md "Reboot truth comes from boot identity": a notice in another boot is not about it.
#[test]
fn a_shutdown_notice_from_another_boot_changes_nothing() {
    let spec = msi_job(job("patch"));
    let running = JobState::Running {
        attempt: Attempt {
            run: 1,
            number: 1,
            boot: boot("a"),
            started_at: t0(),
            started_since_boot: Duration::ZERO,
        },
        launch: Launch::Recorded(ProgramId::new(7, 1)),
        shutdown_notice_at: None,
        terminate: None,
        provisional: None,
    };
    let notice = |boot_name: &str| Event {
        at: t0(),
        boot: boot(boot_name),
        since_boot: Duration::from_secs(5),
        kind: EventKind::ShutdownNoticed,
    };
    let step = transition(&spec, &running, &notice("b")).unwrap();
    assert_eq!(step.state, None);
    let step = transition(&spec, &running, &notice("a")).unwrap();
    assert!(matches!(
        step.state,
        Some(JobState::Running {
            shutdown_notice_at: Some(_),
            ..
        })
    ));
}

// SEMANTICS.md "Every observed reboot is attributed": ForJob names another job, never itself.
#[test]
fn a_job_is_never_interrupted_by_its_own_restart() {
    let spec = msi_job(job("msi")).with_reboot(RebootBehaviour::MayRequest);
    let running = JobState::Running {
        attempt: Attempt {
            run: 1,
            number: 1,
            boot: boot("a"),
            started_at: t0(),
            started_since_boot: Duration::ZERO,
        },
        launch: Launch::Recorded(ProgramId::new(7, 1)),
        shutdown_notice_at: None,
        terminate: None,
        provisional: None,
    };
    let started = |restart_of: &str| Event {
        at: t0(),
        boot: boot("b"),
        since_boot: Duration::from_secs(5),
        kind: EventKind::AgentStarted {
            program: jobstate::ProgramStatus::Unknown,
            restart_of: Some(job(restart_of)),
        },
    };
    let interrupted_by = |restart_of: &str| match transition(&spec, &running, &started(restart_of))
        .unwrap()
        .state
    {
        Some(JobState::Queued {
            last_failure: Some(FailureReason::Interrupted(by)),
            ..
        }) => by,
        other => panic!("expected a queued retry, got {other:?}"),
    };
    assert_eq!(interrupted_by("msi"), RebootAttribution::Unrelated);
    assert_eq!(
        interrupted_by("os-upgrade"),
        RebootAttribution::ForJob(job("os-upgrade"))
    );
}

// SEMANTICS.md "Reboot truth comes from boot identity": run-time limits use the attempt's boot.
#[test]
fn a_tick_in_another_boot_never_times_an_attempt_out() {
    let spec = msi_job(job("patch")).with_max_run_time(Duration::from_secs(3600));
    let running = JobState::Running {
        attempt: Attempt {
            run: 1,
            number: 1,
            boot: boot("a"),
            started_at: t0(),
            started_since_boot: Duration::from_secs(10),
        },
        launch: Launch::Recorded(ProgramId::new(7, 1)),
        shutdown_notice_at: None,
        terminate: None,
        provisional: None,
    };
    let tick = |boot_name: &str| Event {
        at: t0(),
        boot: boot(boot_name),
        since_boot: Duration::from_secs(2 * 3600),
        kind: EventKind::Tick {
            program: jobstate::ProgramStatus::Gone,
        },
    };
    let step = transition(&spec, &running, &tick("b")).unwrap();
    assert_eq!(step.state, None);
    assert!(step.effects.is_empty(), "{:?}", step.effects);
    // In its own boot, the same tick finds the program gone: the attempt ends.
    let step = transition(&spec, &running, &tick("a")).unwrap();
    assert!(matches!(
        step.state,
        Some(JobState::Queued {
            last_failure: Some(FailureReason::ProgramLost),
            ..
        })
    ));
}

// SEMANTICS.md invariant 6: "a damaged tail that recovery cuts off is reported to the caller, never
// silent" — through the ledger too.
#[test]
fn the_ledger_passes_on_what_the_store_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    {
        let store = jobstate::FileStore::open(&state).unwrap();
        let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
        assert!(ledger.open_report().is_clean());
        ledger.offer(msi_job(job("patch"))).unwrap();
    }
    // A torn last write: a few bytes of a frame that never completed.
    let journal = state.join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 7]);
    std::fs::write(&journal, bytes).unwrap();
    let store = jobstate::FileStore::open(&state).unwrap();
    let (ledger, _) = Ledger::open(store, service_session("a")).unwrap();
    let report = ledger.open_report();
    assert!(!report.is_clean(), "{report}");
    assert_eq!(report.cut.len(), 1, "{report}");
    assert!(
        ledger.job(&job("patch")).is_some(),
        "nothing acknowledged lost"
    );
}

// SEMANTICS.md "Every wait is named and bounded": a program an earlier agent process started stays
// polled whatever else happens to its job (here a shutdown notice recorded on it).
#[test]
fn an_orphan_stays_polled_after_a_change_that_keeps_it_running() {
    let store = MemoryStore::new();
    let spec = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let alive = SessionFacts {
        programs: LivePrograms::Known([attempt].into_iter().collect()),
        restart_pending: jobstate::session::RestartPending::Unknown,
        ..service_session("a")
    };
    let (mut ledger, _) = Ledger::open(store, alive).unwrap();
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(10)));
    let _effects = ledger.shutdown_notice().unwrap();
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(10)));
}

// SEMANTICS.md "Restarts are exclusive" and commit-before-effect: a restart ends the agent, so it is
// handed out after every other effect of the call.
#[test]
fn restarts_come_after_every_other_effect_of_a_call() {
    let store = MemoryStore::new();
    let kb = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let checked = msi_job(job("checked")).with_verify_after_reboot(true);
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    // "kb" is offered first; "checked" fails (a check owed), then "kb" asks for a restart:
    // both wait in this boot.
    ledger.offer(kb.clone()).unwrap();
    ledger.offer(checked.clone()).unwrap();
    let failed = start(&mut ledger, &checked);
    let _effects = ledger.program_exited(&failed, 1603).unwrap();
    let attempt = start(&mut ledger, &kb);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    drop(ledger);
    // An agent restart licenses both again: the check first, the restart last.
    let (_, effects) = Ledger::open(store, service_session("a")).unwrap();
    assert_eq!(
        effects,
        vec![
            Effect::Verify(failed),
            Effect::ScheduleRestart {
                job: kb.id().clone(),
                kind: RebootKind::Soft,
                when: jobstate::RestartRelease::AtOnce,
            }
        ]
    );
}

// ---- The second cargo-mutants run (after the review's fixes) ----

// SEMANTICS.md "A launch is a recorded fact": an exit proves a launch that was never recorded, and
// never erases the identity of one that was.
#[test]
fn a_provisional_failure_keeps_the_launch_it_proves_or_knows() {
    let spec = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap(); // never recorded
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            launch: Launch::Observed,
            provisional: Some(_),
            ..
        }
    ));
    let recorded = msi_job(job("os-upgrade-2")).with_reboot(RebootBehaviour::RestartsMachine);
    ledger.offer(recorded.clone()).unwrap();
    ledger.session_mut().now += chrono::TimeDelta::days(1);
    let _effects = ledger.abandon(spec.id()).unwrap();
    let attempt = start(&mut ledger, &recorded);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(matches!(
        state(&ledger, &recorded),
        JobState::Running {
            launch: Launch::Recorded(_),
            provisional: Some(_),
            ..
        }
    ));
}

// SEMANTICS.md "Reboot truth comes from boot identity": a retry queued in this very boot owes no
// check again after an agent restart (and a job without a check never owes one).
#[test]
fn an_agent_restart_in_the_same_boot_owes_no_check_again() {
    for with_check in [false, true] {
        let store = MemoryStore::new();
        let spec = msi_job(job("kb")).with_verify_after_reboot(with_check);
        let mut ledger = open(&store, "a");
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        let _effects = ledger.program_exited(&attempt, 1603).unwrap();
        if with_check {
            let _effects = ledger.verification(&attempt, false).unwrap();
        }
        let queued = state(&ledger, &spec);
        drop(ledger);
        let (ledger, effects) = Ledger::open(store, service_session("a")).unwrap();
        assert!(effects.is_empty(), "{effects:?}");
        assert_eq!(state(&ledger, &spec), queued);
    }
}

// SEMANTICS.md "A reboot loop is bounded" and "Verify (if the job asks for a detection check)": a
// second reboot while the check is awaited counts, and the check is then answered in the new
// boot (not refused as from another boot).
#[test]
fn a_second_reboot_while_verifying_counts_and_the_check_answers_in_the_new_boot() {
    let store = MemoryStore::new();
    let spec = msi_job(job("os-upgrade"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let (ledger, effects) = Ledger::open(store.clone(), service_session("b")).unwrap();
    assert_eq!(effects, vec![Effect::Verify(attempt.clone())]);
    drop(ledger); // the check never ran: the machine restarted again
    let (mut ledger, effects) = Ledger::open(store, service_session("c")).unwrap();
    assert_eq!(effects, vec![Effect::Verify(attempt.clone())]);
    match state(&ledger, &spec) {
        JobState::AwaitingReboot {
            reboots_seen: 2,
            verifying_in: Some(v),
            ..
        } => assert_eq!(v, boot("c")),
        other => panic!("{other:?}"),
    }
    let _effects = ledger.verification(&attempt, true).unwrap();
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
}

// SEMANTICS.md "A launch is a recorded fact": an agent restart that finds a recorded program alive
// changes nothing (its identity is kept).
#[test]
fn a_recorded_program_found_alive_changes_nothing() {
    let store = MemoryStore::new();
    let spec = msi_job(job("patch"));
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let before = ledger.history(spec.id()).unwrap().len();
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, session_with("a", &[&attempt])).unwrap();
    assert!(effects.is_empty());
    assert_eq!(ledger.history(spec.id()).unwrap().len(), before);
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            launch: Launch::Recorded(_),
            ..
        }
    ));
}

// SEMANTICS.md "A reported failure is not believed over a detection check": when the check says
// the work is there, the completion keeps the program's exit code.
#[test]
fn a_check_that_finds_the_work_keeps_the_exit_code() {
    let spec = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    let _effects = ledger.verification(&attempt, true).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Completed {
            exit: Some(jobstate::ProgramExit::Code(1603)),
            verified: true,
            ..
        }
    ));
}

// SEMANTICS.md "A restart can fail to come ... within the spec's deadline": measured in the boot
// the wait began in; a tick in another boot (before any reconciliation) concludes nothing.
#[test]
fn a_tick_in_another_boot_never_reports_a_restart_overdue() {
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let attempt = Attempt {
        run: 1,
        number: 1,
        boot: boot("a"),
        started_at: t0(),
        started_since_boot: Duration::ZERO,
    };
    let waiting = JobState::AwaitingReboot {
        attempt,
        cause: RebootAttribution::RequestedByJob(RebootKind::Soft),
        requested_in: boot("a"),
        since: t0(),
        since_boot: Duration::ZERO,
        wait: 1,
        overdue: 0,
        exit: Some(jobstate::ProgramExit::Code(3010)),
        reboots_seen: 0,
        verifying_in: None,
    };
    let tick = |boot_name: &str| Event {
        at: t0(),
        boot: boot(boot_name),
        since_boot: Duration::from_secs(2 * 3600),
        kind: EventKind::tick(),
    };
    let step = transition(&spec, &waiting, &tick("b")).unwrap();
    assert_eq!(step.state, None);
    assert!(step.report.is_none() && step.effects.is_empty());
    let step = transition(&spec, &waiting, &tick("a")).unwrap();
    assert!(step.report.is_some(), "in its own boot it is overdue");
}

// SEMANTICS.md "A reported failure is not believed over a detection check": only a failure that
// may hide a success owes the check; a program that never started did nothing to check.
#[test]
fn a_launch_that_failed_owes_no_check() {
    let spec = msi_job(job("kb")).with_verify_after_reboot(true);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    assert!(ledger.launch_failed(&attempt).unwrap().is_empty());
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            check_before_retry: false,
            last_failure: Some(FailureReason::LaunchFailed),
            ..
        }
    ));
}

/// A store holding `jobs`, each created and then `Running` (launched) in boot "a": two jobs
/// running at once, as only a store written by something else than this ledger holds.
fn running_in_boot_a(jobs: &[(&JobSpec, Launch)]) -> MemoryStore {
    let mut store = MemoryStore::new();
    let mut changes = Vec::new();
    for (spec, launch) in jobs {
        let create = offered(spec);
        let running = JobState::Running {
            attempt: Attempt {
                run: 1,
                number: 1,
                boot: boot("a"),
                started_at: t0(),
                started_since_boot: Duration::ZERO,
            },
            launch: *launch,
            shutdown_notice_at: None,
            terminate: None,
            provisional: None,
        };
        let second = then(&create, EventKind::AttemptStarted, running);
        changes.extend([create, second]);
    }
    store.commit(&Commit::new(Revision(0), changes)).unwrap();
    store
}

// SEMANTICS.md "A reboot that ends another job's attempt is attributed to the job whose restart it
// was": also when that job's program restarted the machine itself (its launch recorded).
#[test]
fn a_reboot_by_a_running_upgrade_is_attributed_to_it() {
    let upgrade = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let patch = msi_job(job("patch"));
    let recorded = Launch::Recorded(ProgramId::new(1, 1));
    for (launch, owner) in [
        (recorded, true),
        (Launch::Observed, true),
        (Launch::Pending, false),
    ] {
        let store = running_in_boot_a(&[(&upgrade, launch), (&patch, recorded)]);
        let (ledger, _) = Ledger::open(store, service_session("b")).unwrap();
        let by = match state(&ledger, &patch) {
            JobState::Queued {
                last_failure: Some(FailureReason::Interrupted(by)),
                ..
            } => by,
            other => panic!("{other:?}"),
        };
        let expected = if owner {
            RebootAttribution::ForJob(upgrade.id().clone())
        } else {
            // A program that never ran restarted nothing.
            RebootAttribution::Unrelated
        };
        assert_eq!(by, expected, "{launch:?}");
    }
}

// SEMANTICS.md "A launch is a recorded fact ... in the same boot only when no process of that
// attempt is alive": the session is asked about programs of this boot only, and a tick never
// asks about a launch that was never recorded (a spawn may be under way; the question is a scan
// of every process on Linux).
#[test]
fn the_session_is_asked_only_about_programs_that_may_run_in_this_boot() {
    let patch = msi_job(job("patch"));
    let recorded = Launch::Recorded(ProgramId::new(1, 1));
    // Another boot: nothing of it runs; the session is not asked.
    let store = running_in_boot_a(&[(&patch, recorded)]);
    let session = Counting::new(service_session("b"));
    let (ledger, _) = Ledger::open(store, session).unwrap();
    assert_eq!(ledger.session().programs_asked.get(), 0);
    // The same boot: asked at open, for a recorded launch and for one never recorded.
    let store = running_in_boot_a(&[(&patch, Launch::Pending)]);
    let session = Counting::new(service_session("a"));
    let (mut ledger, _) = Ledger::open(store, session).unwrap();
    assert_eq!(ledger.session().programs_asked.get(), 1);
    // A tick does not ask about the launch never recorded.
    let _effects = ledger.tick().unwrap();
    assert_eq!(ledger.session().programs_asked.get(), 1);
}

// ---- The third cargo-mutants run ----

// SEMANTICS.md invariant 6: a stored change that creates a job under another job's spec is refused
// (the memory store loads what it committed without replaying: these are the checks every other
// store's replay relies on).
#[test]
fn the_job_table_refuses_what_no_ledger_writes_and_gives_back_what_it_holds() {
    let patch = msi_job(job("patch"));
    let other = msi_job(job("other"));
    let mut table = JobTable::default();
    // A change creating "patch" with the spec of "other".
    let mismatched = Change {
        spec: Some(other.clone().into()),
        ..offered(&patch)
    };
    assert!(matches!(
        table.check(&mismatched),
        Err(ReplayError::SpecMismatch { .. })
    ));
    assert!(matches!(
        table.apply(mismatched),
        Err(ReplayError::SpecMismatch { .. })
    ));
    assert!(table.is_empty());
    // A change that does not follow on is refused by `check` as by `apply`.
    let create = offered(&patch);
    let mut gap = then(&create, EventKind::AttemptStarted, JobState::initial());
    gap.seq = 3;
    table.apply(create).unwrap();
    assert!(matches!(
        table.check(&gap),
        Err(ReplayError::OutOfSequence { .. })
    ));
    table.apply(offered(&other)).unwrap();
    assert_eq!(table.len(), 2);
    let records = table.into_records();
    assert_eq!(
        records.iter().map(|r| r.id().as_str()).collect::<Vec<_>>(),
        ["patch", "other"]
    );
    let again = JobTable::from_records(records).unwrap();
    assert_eq!(again.len(), 2);
}

// SEMANTICS.md "Every observed reboot is attributed": the failure's status message says which
// reboot interrupted the attempt.
#[test]
fn an_interrupted_run_reports_the_reboot_that_ended_it() {
    let store = MemoryStore::new();
    let spec = msi_job(job("patch")).with_retry(RetryPolicy::none());
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    start(&mut ledger, &spec);
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    let reports = take_reports(&mut ledger);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].key.state, StateKind::Failed);
    assert_eq!(reports[0].reboot, Some(RebootAttribution::Unrelated));
}

// SEMANTICS.md "Every wait is named": a restart already under way (hard) is waited for as such,
// not as held, even beside a running job (only a store written by something else holds both).
#[test]
fn a_hard_restart_beside_a_running_job_is_not_held() {
    let upgrade = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let patch = msi_job(job("patch"));
    let store = running_in_boot_a(&[(&patch, Launch::Recorded(ProgramId::new(1, 1)))]);
    let mut ledger = open(&store, "a");
    ledger.offer(upgrade.clone()).unwrap();
    // Started beside it by something else than this ledger: written to the store directly.
    let attempt = Attempt {
        run: 1,
        number: 1,
        boot: boot("a"),
        started_at: t0(),
        started_since_boot: Duration::ZERO,
    };
    let record = ledger.job(upgrade.id()).unwrap();
    let waiting = Change {
        job: upgrade.id().clone(),
        seq: record.seq() + 1,
        spec: None,
        event: record.history()[0].event.clone(),
        state: JobState::AwaitingReboot {
            attempt,
            cause: RebootAttribution::RequestedByJob(RebootKind::Hard),
            requested_in: boot("a"),
            since: t0(),
            since_boot: Duration::ZERO,
            wait: 1,
            overdue: 0,
            exit: Some(jobstate::ProgramExit::Code(1641)),
            reboots_seen: 0,
            verifying_in: None,
        },
    };
    let mut raw = store.clone();
    raw.commit(&Commit::new(ledger.revision(), vec![waiting]))
        .unwrap();
    drop(ledger);
    let ledger = open(&store, "a");
    let wait = ledger
        .waits()
        .into_iter()
        .find(|w| w.job == *upgrade.id())
        .unwrap();
    assert_eq!(
        wait.reason,
        WaitReason::Restart {
            kind: RebootKind::Hard,
            overdue: 0
        }
    );
}

// SEMANTICS.md "Restarts are exclusive": a restart licensed again while it is held (its deadline
// passed) is still one restart when it is released.
#[test]
fn a_restart_held_twice_is_released_once() {
    let checked = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let patch = msi_job(job("patch"));
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(checked.clone()).unwrap();
    let failed = start(&mut ledger, &checked);
    let _effects = ledger.program_exited(&failed, 1603).unwrap();
    ledger.offer(patch.clone()).unwrap();
    let running = start(&mut ledger, &patch);
    ledger.session_mut().programs = LivePrograms::Known([running.clone()].into_iter().collect());
    assert!(
        ledger
            .verification(&failed, jobstate::CheckResult::NotYet)
            .unwrap()
            .is_empty()
    );
    // The restart deadline passes while it is held: licensed again, still held.
    ledger.session_mut().since_boot += Duration::from_secs(3600);
    assert!(ledger.tick().unwrap().is_empty());
    let effects = ledger.program_exited(&running, 0).unwrap();
    assert_eq!(
        effects,
        vec![Effect::ScheduleRestart {
            job: checked.id().clone(),
            kind: RebootKind::Soft,
            when: jobstate::RestartRelease::AtOnce,
        }]
    );
}

// SEMANTICS.md "same boot as recorded: the agent restarted, the machine did not": an agent restart
// while the check is awaited licenses the check again and counts no reboot.
#[test]
fn an_agent_restart_while_verifying_counts_no_reboot() {
    let store = MemoryStore::new();
    let spec = msi_job(job("os-upgrade"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let (ledger, _) = Ledger::open(store.clone(), service_session("b")).unwrap();
    let verifying = state(&ledger, &spec);
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, service_session("b")).unwrap();
    assert_eq!(effects, vec![Effect::Verify(attempt)]);
    assert_eq!(state(&ledger, &spec), verifying);
    assert!(matches!(
        verifying,
        JobState::AwaitingReboot {
            reboots_seen: 1,
            ..
        }
    ));
}

// ---- The fourth cargo-mutants run ----

// SEMANTICS.md "Status reporting: a delivery failure is retried later": the delivery policy given
// at open is the one in force (its back-off), beside the restart policy given with it.
#[test]
fn the_delivery_policy_given_at_open_is_in_force() {
    let delivery = jobstate::report::DeliveryPolicy {
        initial_backoff: Duration::from_secs(7),
        ..Default::default()
    };
    let options = jobstate::LedgerOptions::default()
        .with_restart_policy(jobstate::RestartPolicy::NextNaturalBoot)
        .with_delivery(delivery);
    assert_eq!(options.delivery, delivery);
    assert_eq!(
        options.restart_policy,
        jobstate::RestartPolicy::NextNaturalBoot
    );
    let (mut ledger, _) =
        Ledger::open_with(MemoryStore::new(), service_session("a"), options).unwrap();
    let spec = msi_job(job("patch"));
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    let failed = ledger.deliver(&mut Down).unwrap();
    assert_eq!(
        failed.retry_at,
        Some(ledger.session().now + chrono::TimeDelta::seconds(7))
    );
}

// SEMANTICS.md "A reported failure is not believed over a detection check": a program ended by a
// signal keeps its signal through the check, in the state and in the status message, whether
// the check finds the work (completed) or not on the last attempt (failed).
#[test]
fn a_check_after_a_signal_keeps_the_signal_in_the_state_and_its_report() {
    let signal = Some(jobstate::ProgramExit::Signal(9));
    for (found, retry) in [(true, RetryPolicy::default()), (false, RetryPolicy::none())] {
        let spec = msi_job(job("kb"))
            .with_reboot(RebootBehaviour::MayRequest)
            .with_verify_after_reboot(true)
            .with_retry(retry);
        let mut ledger = open(&MemoryStore::new(), "a");
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        let _effects = ledger
            .program_exited(&attempt, jobstate::ProgramExit::Signal(9))
            .unwrap();
        assert!(matches!(
            state(&ledger, &spec),
            JobState::Queued {
                check_before_retry: true,
                ..
            }
        ));
        let _effects = ledger.verification(&attempt, found).unwrap();
        let after = state(&ledger, &spec);
        match &after {
            JobState::Completed { exit, .. } => {
                assert!(found);
                assert_eq!(*exit, signal);
            }
            JobState::Failed {
                reason: FailureReason::Signal(9),
                ..
            } => assert!(!found),
            other => panic!("found {found}: {other:?}"),
        }
        let reports = take_reports(&mut ledger);
        assert_eq!(reports.len(), 1, "found {found}");
        assert_eq!(reports[0].key.state, after.kind());
        assert_eq!(reports[0].exit, signal, "found {found}");
    }
}

// ---- A second run, on the core changed since 40606a3 (2026-12-03, `--in-diff`) ----
//
// git diff 40606a3 HEAD -- src/core/transition.rs src/ledger.rs src/record.rs > core.diff
// cargo mutants --test-tool nextest --all-features --jobs 1 --timeout 300 --in-diff core.diff \
//   --file src/core/transition.rs --file src/ledger.rs --file src/record.rs \
//   -- --test it --max-fail=1:immediate \
//   -- --skip file_store --skip conformance --skip linux_session

fn wait_of(ledger: &MemLedger, spec: &JobSpec) -> jobstate::JobWait {
    ledger
        .waits()
        .into_iter()
        .find(|w| w.job == *spec.id())
        .unwrap_or_else(|| panic!("{} waits for nothing", spec.id()))
}

// SEMANTICS.md "Every wait is named and bounded or visible ... so an agent sleeps until then
// instead of polling": a job kept out by a running job (not an abandoned one, whose end nobody
// reports) waits for that job's exit, which the agent hears; nothing is polled for it, and the
// agent's next wake-up is the running job's run-time limit. The same after the agent restarts
// in the same boot: only a job an operator abandoned in this boot is taken at open for one whose
// program's end nobody reports. (Mutants: `wait_of`'s guard `self.abandoned.contains(job)`
// replaced with `true`, so every exclusive wait polled; `abandoned_in` replaced with `true`, so
// every job found at open counted as abandoned.)
#[test]
fn a_job_kept_out_by_a_running_job_is_not_polled() {
    for agent_restarts in [false, true] {
        let store = MemoryStore::new();
        let patch = msi_job(job("patch")).with_max_run_time(Duration::from_secs(3600));
        let upgrade = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
        let mut ledger = open(&store, "a");
        ledger.offer(patch.clone()).unwrap();
        ledger.offer(upgrade.clone()).unwrap();
        if agent_restarts {
            drop(ledger); // the machine does not restart
            ledger = open(&store, "a");
        }
        start(&mut ledger, &patch);
        let wait = wait_of(&ledger, &upgrade);
        assert_eq!(
            wait.reason,
            WaitReason::Exclusive {
                job: patch.id().clone()
            }
        );
        assert_eq!(
            wait.wake_after, None,
            "agent restarts: {agent_restarts}: {wait:?}"
        );
        assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(3600)));
    }
}

// `JobRecord::is_compaction_of` (public: how a store's conformance tests compare what a store
// holds with what was committed to it) holds for the same job only: two jobs offered alike at
// the same moment have equal histories, and neither is the other; nor is the same job before a
// change a compaction of it after. (Mutants: the function replaced with `true`; its first and
// last two `&&` replaced with `||`. Its callers, the store conformance and file store tests, are
// not in this run.)
#[test]
fn a_record_is_a_compaction_only_of_its_own_job() {
    let mut ledger = open(&MemoryStore::new(), "a");
    let first = msi_job(job("first"));
    let second = msi_job(job("second"));
    ledger.offer(first.clone()).unwrap();
    ledger.offer(second.clone()).unwrap();
    let a = ledger.job(first.id()).unwrap();
    let b = ledger.job(second.id()).unwrap();
    assert_eq!(a.history(), b.history(), "the two histories are alike");
    assert!(a.is_compaction_of(a));
    assert!(!a.is_compaction_of(b));
    assert!(!b.is_compaction_of(a));
    // The same job earlier is not a compaction of it later: its history is a start, not an end.
    let earlier = a.clone();
    start(&mut ledger, &first);
    let later = ledger.job(first.id()).unwrap();
    assert!(later.is_compaction_of(later));
    assert!(!earlier.is_compaction_of(later));
}

// SEMANTICS.md: the program of a job abandoned in this boot stands in the way of a start "as a
// running job's does", judged by what it was launched to do. The spec that matters is the one
// in force when the attempt first went `Running`, even when a spec change (recorded while it
// ran, itself a `Running` entry) and its launch come after that. Here the upgrade is re-offered
// as one that never restarts the machine while its program runs, then abandoned: the program,
// launched to restart the machine, still keeps the patch out. (Mutant:
// `JobRecord::last_attempt_spec`'s guard `(attempt.run, attempt.number) == (run, number)`
// replaced with `false`, so the walk back stopped at the attempt's last-but-one `Running` entry
// and took the spec offered while it ran.)
#[test]
fn an_abandoned_program_is_judged_by_the_spec_it_was_launched_under() {
    let store = MemoryStore::new();
    let up = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let patch = msi_job(job("patch"));
    let mut ledger = open(&store, "a");
    ledger.offer(up.clone()).unwrap();
    ledger.offer(patch.clone()).unwrap();
    let attempt = start(&mut ledger, &up);
    // Re-offered while it runs: no longer restarting (for a later run).
    let _ = ledger
        .offer(msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::Never))
        .unwrap();
    assert!(matches!(state(&ledger, &up), JobState::Running { .. }));
    ledger.session_mut().programs = LivePrograms::Known([attempt.clone()].into());
    let _effects = ledger.abandon(up.id()).unwrap();
    // The program ignores its termination and still runs: the patch waits for it.
    let wait = wait_of(&ledger, &patch);
    assert_eq!(
        wait.reason,
        WaitReason::Exclusive {
            job: up.id().clone()
        },
        "the patch may start beside the abandoned upgrade's live program: {wait:?}"
    );
}

//! The rules of SEMANTICS.md, one test each, through the ledger.

use std::time::Duration;

use jobstate::store::{Store, StoreError};
use jobstate::{
    AttemptId, Effect, Error, ExitCodePolicy, ExitOutcome, FailureReason, JobSpec, JobState,
    Ledger, MemoryStore, NextJob, Offer, ProgramId, RebootAttribution, RebootBehaviour, RebootKind,
    RetryPolicy, RunCondition, StateKind, TransitionError, UserPresence, WaitReason,
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
    let _effects = ledger
        .launched(&attempt, ProgramId::new(4242, u64::from(attempt.number)))
        .unwrap();
    attempt
}

fn state(ledger: &MemLedger, spec: &JobSpec) -> JobState {
    ledger.job(spec.id()).unwrap().state().clone()
}

#[test]
fn exit_codes_follow_the_windows_installer_conventions() {
    for (code, expected) in [
        (0, StateKind::Completed),
        (1707, StateKind::Completed),
        (3010, StateKind::AwaitingReboot),
        (1641, StateKind::AwaitingReboot),
        (1618, StateKind::Queued),
        (1603, StateKind::Queued),
    ] {
        let store = MemoryStore::new();
        let mut ledger = open(&store, "a");
        let spec = msi_job(job("msi")).with_reboot(RebootBehaviour::MayRequest);
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        let effects = ledger.program_exited(&attempt, code).unwrap();
        assert_eq!(state(&ledger, &spec).kind(), expected, "exit code {code}");
        let restart = effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. }));
        assert_eq!(
            restart,
            code == 3010,
            "only a soft restart is scheduled by the agent ({code})"
        );
    }
}

#[test]
fn custom_exit_code_table() {
    let policy = ExitCodePolicy::new(ExitOutcome::Failure).with_code(2, ExitOutcome::Success);
    let spec = msi_job(job("tool"))
        .with_exit_codes(policy)
        .with_retry(RetryPolicy::none());
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::ExitCode(0),
            ..
        }
    ));
}

#[test]
fn soft_restart_is_owed_until_a_new_boot_is_seen() {
    let store = MemoryStore::new();
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert_eq!(
        take_reports(&mut ledger)[0].key.state,
        StateKind::AwaitingReboot
    );
    drop(ledger);

    // The agent restarted before restarting the machine: the restart is licensed again.
    let (ledger, effects) = Ledger::open(store.clone(), service_session("a")).unwrap();
    assert!(matches!(
        effects.as_slice(),
        [Effect::ScheduleRestart {
            kind: RebootKind::Soft,
            ..
        }]
    ));
    assert_eq!(state(&ledger, &spec).kind(), StateKind::AwaitingReboot);
    drop(ledger);

    let (mut ledger, effects) = Ledger::open(store, service_session("b")).unwrap();
    assert!(effects.is_empty());
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Completed {
            reboot: Some(RebootAttribution::RequestedByJob(RebootKind::Soft)),
            exit: Some(jobstate::ProgramExit::Code(3010)),
            ..
        }
    ));
    assert_eq!(take_reports(&mut ledger).len(), 1);
}

#[test]
fn a_job_that_never_reboots_suppresses_a_requested_restart() {
    let spec = msi_job(job("tool")).with_reboot(RebootBehaviour::Never);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. }))
    );
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Completed {
            restart_suppressed: true,
            ..
        }
    ));
}

#[test]
fn retry_later_backs_off_then_runs_then_exhausts_attempts() {
    let spec = msi_job(job("busy")).with_retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_secs(300),
        ..RetryPolicy::default()
    });
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    assert!(
        ledger.program_exited(&attempt, 1618).unwrap().is_empty(),
        "a retry is not reported"
    );
    let until = t0() + minutes(5);
    assert_eq!(
        ledger.next_runnable(),
        NextJob::Wait {
            job: spec.id().clone(),
            reason: WaitReason::BackingOff { until }
        }
    );
    assert!(matches!(
        ledger.begin(spec.id()),
        Err(Error::NotRunnable { .. })
    ));

    ledger.session_mut().now = until;
    assert_eq!(ledger.next_runnable(), NextJob::Run(spec.id().clone()));
    let second = start(&mut ledger, &spec);
    assert_eq!(second.number, 2);
    let _effects = ledger.program_exited(&second, 1603).unwrap();
    assert_eq!(
        take_reports(&mut ledger)[0].reason,
        Some(FailureReason::ExitCode(1603))
    );
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::ExitCode(1603),
            ..
        }
    ));
}

#[test]
fn a_clock_reset_backwards_does_not_extend_back_off() {
    let spec = msi_job(job("busy"));
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1618).unwrap();
    // The clock is reset a year back: the recorded back-off lies further ahead than any
    // back-off the policy can set, so it is over.
    ledger.session_mut().now = t0() - chrono::TimeDelta::days(365);
    assert_eq!(ledger.next_runnable(), NextJob::Run(spec.id().clone()));
}

#[test]
fn maximum_run_time_is_measured_on_the_boot_clock_never_the_wall_clock() {
    let spec = msi_job(job("hang")).with_max_run_time(Duration::from_secs(600));
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let started = ledger.session().since_boot;

    // NTP moves the wall clock a year forward, then a year back: nothing times out.
    ledger.session_mut().now = t0() + chrono::TimeDelta::days(365);
    assert!(ledger.tick().unwrap().is_empty());
    ledger.session_mut().now = t0() - chrono::TimeDelta::days(365);
    assert!(ledger.tick().unwrap().is_empty());
    ledger.session_mut().since_boot = started + Duration::from_secs(599);
    assert!(ledger.tick().unwrap().is_empty());

    // Ten minutes on the boot clock: the program must be terminated. The attempt stays
    // Running until its exit is recorded, so no next attempt can start beside it.
    ledger.session_mut().since_boot = started + Duration::from_secs(600);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            terminate: Some(_),
            ..
        }
    ));
    assert!(ledger.tick().unwrap().is_empty(), "asked once per ledger");
    assert!(ledger.begin(spec.id()).is_err());
    drop(ledger);

    // The agent crashed before killing it: the termination is licensed again.
    let mut session = service_session("a");
    session.since_boot = started + Duration::from_secs(700);
    let (mut ledger, effects) = Ledger::open(store, session).unwrap();
    assert_eq!(effects, vec![Effect::Terminate(attempt.clone())]);

    // The killed program's exit ends the attempt as timed out, whatever its code.
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            attempt: 2,
            last_failure: Some(FailureReason::TimedOut),
            ..
        }
    ));
    assert!(matches!(
        ledger.program_exited(&attempt, 0),
        Err(Error::Transition(TransitionError::Invalid { .. }))
    ));
}

#[test]
fn run_conditions_wait_and_say_why() {
    let with_user = msi_job(job("needs-user")).with_run_condition(RunCondition::OnlyWithUser);
    let without = msi_job(job("needs-no-user")).with_run_condition(RunCondition::OnlyWithoutUser);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(with_user.clone()).unwrap();
    ledger.offer(without.clone()).unwrap();

    // Nobody logged on: the first job waits, the second runs.
    assert_eq!(ledger.next_runnable(), NextJob::Run(without.id().clone()));
    match ledger.begin(with_user.id()) {
        Err(Error::NotRunnable {
            reason: WaitReason::NeedsUser,
            ..
        }) => {}
        other => panic!("expected NotRunnable(NeedsUser), got {other:?}"),
    }
    ledger.session_mut().user = UserPresence::LoggedOn;
    assert_eq!(ledger.next_runnable(), NextJob::Run(with_user.id().clone()));
    assert!(matches!(
        ledger.begin(without.id()),
        Err(Error::NotRunnable {
            reason: WaitReason::NeedsNoUser,
            ..
        })
    ));
    ledger.session_mut().user = UserPresence::Unknown;
    assert_eq!(
        ledger.next_runnable(),
        NextJob::Wait {
            job: with_user.id().clone(),
            reason: WaitReason::UserPresenceUnknown
        }
    );
}

#[test]
fn rerun_and_cancel() {
    let mandatory = msi_job(job("mandatory"));
    let optional = msi_job(job("optional")).with_mandatory(false);
    let mut ledger = open(&MemoryStore::new(), "a");
    for spec in [&mandatory, &optional] {
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, spec);
        let _effects = ledger.program_exited(&attempt, 0).unwrap();
    }
    assert!(matches!(
        ledger.rerun(mandatory.id()),
        Err(Error::Transition(
            TransitionError::CompletedMandatory { .. }
        ))
    ));
    assert_eq!(
        ledger.offer(optional.clone()).unwrap(),
        Offer::AlreadyKnown {
            state: StateKind::Completed
        }
    );
    let _effects = ledger.rerun(optional.id()).unwrap();
    assert!(matches!(
        state(&ledger, &optional),
        JobState::Queued {
            run: 2,
            attempt: 1,
            ..
        }
    ));

    take_reports(&mut ledger);
    let _effects = ledger.cancel(optional.id()).unwrap();
    let sent = take_reports(&mut ledger);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key.state, StateKind::Failed);
    assert!(matches!(
        state(&ledger, &optional),
        JobState::Failed {
            reason: FailureReason::Cancelled,
            ..
        }
    ));
    assert!(
        ledger.cancel(optional.id()).is_err(),
        "a failed job cannot be cancelled again"
    );
    let _effects = ledger.rerun(optional.id()).unwrap();
    assert!(matches!(
        state(&ledger, &optional),
        JobState::Queued { run: 3, .. }
    ));
}

#[test]
fn verification_that_fails_retries_and_the_reboot_loop_is_bounded() {
    let store = MemoryStore::new();
    let spec = msi_job(job("feature-update"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true)
        .with_max_reboots(2);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);

    // Each boot, the pending-reboot check says "restart again".
    let mut boots = 0;
    let (failed, reported) = loop {
        boots += 1;
        let (mut ledger, effects) =
            Ledger::open(store.clone(), service_session(&format!("b{boots}"))).unwrap();
        assert!(
            effects.contains(&Effect::Verify(attempt.clone())),
            "{effects:?}"
        );
        let effects = ledger.expect_reboot(&attempt, RebootKind::Soft).unwrap();
        if state(&ledger, &spec).kind() == StateKind::Failed {
            break (effects, take_reports(&mut ledger));
        }
        assert!(boots < 10, "the reboot loop must be bounded");
    };
    assert_eq!(boots, 2);
    assert!(failed.is_empty(), "no restart is licensed: {failed:?}");
    let last = reported.last().unwrap();
    assert_eq!(last.reason, Some(FailureReason::RebootLoop { boots: 2 }));

    // After a reboot, a verification that says "not installed" fails the run: the attempt is
    // never re-run after a reboot (SEMANTICS.md); a rerun request may start a new run.
    let store = MemoryStore::new();
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    let _effects = ledger.verification(&attempt, false).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::NotDetected,
            ..
        }
    ));
    assert_eq!(
        take_reports(&mut ledger).last().unwrap().key.state,
        StateKind::Failed
    );
}

#[test]
fn same_boot_agent_restart_concludes_nothing_about_a_running_job() {
    let store = MemoryStore::new();
    let spec = msi_job(job("upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    start(&mut ledger, &spec);
    let before = state(&ledger, &spec);
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, service_session("a")).unwrap();
    assert!(
        effects.is_empty(),
        "no relaunch, no completion: {effects:?}"
    );
    assert_eq!(state(&ledger, &spec), before);
}

#[test]
fn a_shutdown_notice_is_recorded_but_decides_nothing() {
    let store = MemoryStore::new();
    let spec = msi_job(job("upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    start(&mut ledger, &spec);
    assert!(ledger.shutdown_notice().unwrap().is_empty());
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            shutdown_notice_at: Some(_),
            ..
        }
    ));
    drop(ledger);
    // With a notice or without, the same boot rule decides.
    let (ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
}

#[test]
fn a_stale_writer_is_refused_and_changes_nothing() {
    let store = MemoryStore::new();
    let spec = msi_job(job("upgrade"));
    let mut first = open(&store, "a");
    first.offer(spec.clone()).unwrap();
    let mut second = open(&store, "a"); // a second agent process
    let attempt = start(&mut second, &spec);

    let before = store.records();
    match first.begin(spec.id()) {
        Err(Error::Store(StoreError::Conflict { .. })) => {}
        other => panic!("expected a stale-writer conflict, got {other:?}"),
    }
    assert_eq!(store.records(), before, "the refused commit wrote nothing");
    assert_eq!(
        first.job(spec.id()).unwrap().state().kind(),
        StateKind::Queued,
        "the stale ledger is unchanged"
    );
    let _effects = second.program_exited(&attempt, 0).unwrap();
}

#[test]
fn a_failed_commit_changes_nothing_and_hands_out_no_effect() {
    let store = MemoryStore::new();
    let spec = msi_job(job("upgrade"));
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    store.fail_next_commits(1);
    assert!(matches!(
        ledger.begin(spec.id()),
        Err(Error::Store(StoreError::Io { .. }))
    ));
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Queued);
    let attempt = start(&mut ledger, &spec);
    assert_eq!(attempt.number, 1);
    // And what was acknowledged is what a fresh load sees.
    let mut reader = store.clone();
    let loaded = reader.load().unwrap();
    assert_eq!(
        loaded.jobs[0].state(),
        ledger.job(spec.id()).unwrap().state()
    );
}

#[test]
fn history_is_ordered_by_sequence_and_tells_the_story() {
    let store = MemoryStore::new();
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    drop(ledger);
    let mut session = service_session("b");
    session.now = t0() - minutes(600); // a reset clock does not reorder history
    let (ledger, _) = Ledger::open(store, session).unwrap();
    let history = ledger.history(spec.id()).unwrap();
    let kinds: Vec<_> = history.iter().map(|e| e.state.kind()).collect();
    assert_eq!(
        kinds,
        [
            StateKind::Queued,
            StateKind::Running, // the intent to launch
            StateKind::Running, // the launch, a recorded fact
            StateKind::AwaitingReboot,
            StateKind::Completed
        ]
    );
    assert!(
        history
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
}

#[test]
fn a_check_that_finds_nothing_releases_the_retry() {
    let spec = msi_job(job("agent-upgrade")).with_verify_after_reboot(true);
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(matches!(
        ledger.begin(spec.id()),
        Err(Error::NotRunnable {
            reason: WaitReason::CheckPending,
            ..
        })
    ));
    assert!(ledger.verification(&attempt, false).unwrap().is_empty());
    ledger.session_mut().now = t0() + minutes(60); // past the back-off
    assert_eq!(ledger.begin(spec.id()).unwrap().number, 2);
}

#[test]
fn a_status_message_is_committed_with_its_transition_before_any_effect() {
    let store = MemoryStore::new();
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert!(matches!(
        effects.as_slice(),
        [Effect::ScheduleRestart { .. }]
    ));
    // The agent is killed by the restart before it delivers anything: the message is durable.
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    let sent = take_reports(&mut ledger);
    let states: Vec<_> = sent.iter().map(|m| m.key.state).collect();
    assert_eq!(states, [StateKind::AwaitingReboot, StateKind::Completed]);
}

#[test]
fn a_wrapper_that_reports_failure_after_the_restart_began_does_not_rerun_the_upgrade() {
    // Review finding: a RestartsMachine job with no detection check whose wrapper exits with a
    // failure (seed 001); the agent knows the restart is under way and commits the wait.
    let store = MemoryStore::new();
    let spec = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    // No restart may be expected before the exit is recorded.
    assert!(ledger.expect_reboot(&attempt, RebootKind::Hard).is_err());
    let _effects = ledger.program_exited(&attempt, 1).unwrap();
    let _effects = ledger.expect_reboot(&attempt, RebootKind::Hard).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::AwaitingReboot {
            exit: Some(jobstate::ProgramExit::Code(1)),
            ..
        }
    ));
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, service_session("b")).unwrap();
    assert!(effects.is_empty());
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
}

#[test]
fn cancel_after_a_failed_attempt_reports_that_attempt() {
    let spec = msi_job(job("tool"));
    let mut ledger = open(&MemoryStore::new(), "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    let _effects = ledger.cancel(spec.id()).unwrap();
    let sent = take_reports(&mut ledger);
    assert_eq!(sent[0].key.attempt, 1);
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            attempt: Some(_),
            reason: FailureReason::Cancelled,
            ..
        }
    ));
}

/// Found by the long property run: after a reboot and a further restart request, the dead
/// program's exit code was accepted as if it were still running.
#[test]
fn an_exit_replayed_after_a_reboot_is_refused_even_after_a_new_restart_request() {
    let store = MemoryStore::new();
    let spec = msi_job(job("os-upgrade"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let mut ledger = open(&store, "a");
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    let _effects = ledger.expect_reboot(&attempt, RebootKind::Soft).unwrap();
    let before = state(&ledger, &spec);
    assert!(matches!(
        ledger.program_exited(&attempt, 1603),
        Err(Error::Transition(
            TransitionError::OtherBoot { .. } | TransitionError::Invalid { .. }
        ))
    ));
    assert_eq!(state(&ledger, &spec), before);
}

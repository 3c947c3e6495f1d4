//! The two field reports (`shared/seeds/`) and the service pack that the first one says behaves,
//! each told step by step through the ledger, the way an agent drives it.

use jobstate::session::{ExecutionContext, SessionFacts};
use jobstate::{
    Effect, FailureReason, JobSpec, JobState, Ledger, MemoryStore, NextJob, Offer, ProgramId,
    RebootAttribution, RebootBehaviour, RunCondition, StateKind, UserPresence,
};

use crate::common::*;

/// Three more agent restarts (one of them in a new boot) with the server offering again the job
/// each time: nothing is launched, the job stays completed. Returns launches seen.
fn restart_and_reoffer_three_times(
    store: &MemoryStore,
    session: &SessionFacts,
    spec: &JobSpec,
) -> usize {
    let mut launched = 0;
    for (i, boot_name) in ["same-boot-restart", "same-boot-restart", "boot-c"]
        .iter()
        .enumerate()
    {
        let mut s = session.clone();
        if *boot_name == "boot-c" {
            s.boot = boot("boot-c");
        }
        s.now = session.now + minutes(10 * (i as i64 + 1));
        let (mut ledger, effects) = Ledger::open(store.clone(), s).unwrap();
        launched += launches(&effects);
        assert!(effects.is_empty(), "{effects:?}");
        assert!(
            take_reports(&mut ledger).is_empty(),
            "a completed job is reported once, not on every start"
        );
        assert_eq!(
            ledger.offer(spec.clone()).unwrap(),
            Offer::CompletedWillNotRun
        );
        assert_eq!(ledger.next_runnable(), NextJob::Idle);
        assert!(ledger.begin(spec.id()).is_err());
        assert_eq!(
            ledger.job(spec.id()).unwrap().state().kind(),
            StateKind::Completed
        );
    }
    launched
}

/// Seed 000 (Q158644): a Windows NT 4.0 upgrade sent as a system background task, no user logged
/// on. The upgrade restarts the machine itself. SMS 1.2 never recorded completion, so the upgrade
/// ran forever. Here completion is recorded at the next agent start, from the boot identity.
#[test]
fn seed_000_background_upgrade_with_no_user_completes_once() {
    let store = MemoryStore::new();
    let upgrade = msi_job(job("winnt40-upgrade"))
        .with_mandatory(true)
        .with_run_condition(RunCondition::Always) // a system background task
        .with_reboot(RebootBehaviour::RestartsMachine);
    let mut session = service_session("boot-a");
    session.context = ExecutionContext::BackgroundTask;
    assert_eq!(session.user, UserPresence::NoneLoggedOn);

    // Boot A: the agent starts, the server offers the upgrade.
    let (mut ledger, effects) = Ledger::open(store.clone(), session.clone()).unwrap();
    assert!(effects.is_empty());
    assert_eq!(ledger.offer(upgrade.clone()).unwrap(), Offer::Queued);

    // Nobody is logged on, and the job runs whether or not a user is: it is runnable.
    assert_eq!(ledger.next_runnable(), NextJob::Run(upgrade.id().clone()));
    let attempt = ledger.begin(upgrade.id()).unwrap();
    let mut launched = 1; // Running (with boot A) is durable; the agent launches the program,
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap(); // and records that it runs.
    match ledger.job(upgrade.id()).unwrap().state() {
        JobState::Running { attempt: a, .. } => assert_eq!(a.boot, boot("boot-a")),
        other => panic!("expected Running, got {other:?}"),
    }

    // The upgrade restarts the machine: no exit code, no notice. The agent simply dies.
    drop(ledger);

    // Boot B: still nobody logged on. The wall clock was reset an hour backwards.
    session.boot = boot("boot-b");
    session.now -= minutes(60);
    let (mut ledger, effects) = Ledger::open(store.clone(), session.clone()).unwrap();
    launched += launches(&effects);
    let job = ledger.job(upgrade.id()).unwrap();
    match job.state() {
        JobState::Completed {
            attempt: a, reboot, ..
        } => {
            assert_eq!(
                a.boot,
                boot("boot-a"),
                "the attempt that completed started in boot A"
            );
            assert_eq!(*reboot, Some(RebootAttribution::InitiatedByProgram));
        }
        other => panic!("expected Completed after the reboot, got {other:?}"),
    }
    // The completion status was committed with the completion, and is delivered with nobody
    // logged on (SMS 1.2 never reported it, so the server sent the job again, forever).
    assert_eq!(ledger.session().user, UserPresence::NoneLoggedOn);
    assert!(effects.is_empty(), "{effects:?}");
    let sent = take_reports(&mut ledger);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key.state, StateKind::Completed);
    assert_eq!(sent[0].key.job, *upgrade.id());
    assert_eq!(sent[0].boot, boot("boot-b"));
    assert_eq!(ledger.session().user, UserPresence::NoneLoggedOn);
    assert_eq!(attempt.number, 1);

    // The server offers it again: it will not run.
    assert_eq!(
        ledger.offer(upgrade.clone()).unwrap(),
        Offer::CompletedWillNotRun
    );
    assert_eq!(ledger.next_runnable(), NextJob::Idle);
    drop(ledger);

    launched += restart_and_reoffer_three_times(&store, &session, &upgrade);
    assert_eq!(launched, 1, "the upgrade's program started exactly once");
}

/// Seed 001 (Q164887): the wrapper that runs the upgrade waits for a shutdown message, but in a
/// service it never receives one, so it marks the mandatory job failed and the agent runs it
/// again. Here no message is needed: `Running` was committed with boot A; boot B proves the
/// reboot; the detection check confirms the upgrade.
#[test]
fn seed_001_service_never_hears_the_shutdown_and_still_completes_once() {
    let store = MemoryStore::new();
    let upgrade = msi_job(job("winnt40-upgrade-ntencap"))
        .with_mandatory(true)
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let session = service_session("boot-a");
    assert_eq!(session.context, ExecutionContext::Service);

    let (mut ledger, _) = Ledger::open(store.clone(), session.clone()).unwrap();
    ledger.offer(upgrade.clone()).unwrap();
    let attempt = ledger.begin(upgrade.id()).unwrap();
    let mut launched = 1;
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();

    // The machine restarts. The service receives no shutdown message: `shutdown_notice` is
    // never called. The agent is killed mid-flight.
    drop(ledger);

    let mut after = session.clone();
    after.boot = boot("boot-b");
    let (mut ledger, effects) = Ledger::open(store.clone(), after.clone()).unwrap();
    launched += launches(&effects);
    // The reboot is the program's expected end, not a failure: verify it.
    assert_eq!(effects, vec![Effect::Verify(attempt.clone())]);
    let sent = take_reports(&mut ledger);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key.state, StateKind::AwaitingReboot);
    let record = ledger.job(upgrade.id()).unwrap();
    assert!(
        matches!(record.state(), JobState::AwaitingReboot { verifying_in: Some(b), cause: RebootAttribution::InitiatedByProgram, .. } if *b == boot("boot-b")),
        "{:?}",
        record.state()
    );
    assert!(
        record
            .history()
            .iter()
            .all(|e| e.state.kind() != StateKind::Failed),
        "never marked failed"
    );

    // The detection check: the new OS is there.
    assert!(ledger.verification(&attempt, true).unwrap().is_empty());
    let sent = take_reports(&mut ledger);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key.state, StateKind::Completed);
    assert!(matches!(
        ledger.job(upgrade.id()).unwrap().state(),
        JobState::Completed { verified: true, .. }
    ));
    drop(ledger);

    launched += restart_and_reoffer_three_times(&store, &after, &upgrade);
    assert_eq!(launched, 1, "the upgrade's program started exactly once");
}

/// Seed 001 exactly as reported: the wrapper *marks the job failed* (a failing exit code reaches
/// the agent) and then the machine restarts. For a program that restarts the machine, a failing
/// exit is provisional: the reboot within the grace window is its expected end. With a check,
/// the check decides after the reboot.
/// Also on Unix, where the wrapper does not exit with 1603 but is killed by the shutdown's
/// SIGTERM: a signal is as provisional as a failing code for a program that restarts the machine.
#[test]
fn seed_001_wrapper_reports_failure_yet_the_upgrade_is_not_run_again() {
    let exits = [
        jobstate::ProgramExit::Code(1603),
        jobstate::ProgramExit::Signal(15),
    ];
    for (with_check, exit) in [true, false]
        .into_iter()
        .flat_map(|c| exits.map(|e| (c, e)))
    {
        let store = MemoryStore::new();
        let upgrade = msi_job(job("winnt40-upgrade-ntencap"))
            .with_reboot(RebootBehaviour::RestartsMachine)
            .with_verify_after_reboot(with_check);
        let session = service_session("boot-a");
        let (mut ledger, _) = Ledger::open(store.clone(), session.clone()).unwrap();
        ledger.offer(upgrade.clone()).unwrap();
        let attempt = ledger.begin(upgrade.id()).unwrap();
        let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
        let mut launched = 1;

        // Ntencap never hears the shutdown and exits with a failure code (1603), moments
        // before the machine goes down (on Unix: the shutdown's SIGTERM kills the wrapper).
        let effects = ledger.program_exited(&attempt, exit).unwrap();
        assert!(effects.is_empty(), "no retry, no check yet: {effects:?}");
        assert!(take_reports(&mut ledger).is_empty(), "no failure reported");
        let waits = ledger.waits();
        assert_eq!(waits.len(), 1);
        assert_eq!(
            waits[0].reason,
            jobstate::WaitReason::FailureProvisional { exit: Some(exit) }
        );
        assert_eq!(
            waits[0].wake_after,
            Some(std::time::Duration::from_secs(600))
        );
        assert!(
            ledger.begin(upgrade.id()).is_err(),
            "no retry in the window"
        );
        // 30 seconds later, winnt32 restarts the machine.
        ledger.session_mut().since_boot += std::time::Duration::from_secs(30);
        assert!(ledger.tick().unwrap().is_empty());
        drop(ledger);

        let mut after = session.clone();
        after.boot = boot("boot-b");
        let (mut ledger, effects) = Ledger::open(store.clone(), after.clone()).unwrap();
        launched += launches(&effects);
        if with_check {
            assert_eq!(effects, vec![Effect::Verify(attempt.clone())]);
            assert!(
                ledger.begin(upgrade.id()).is_err(),
                "no retry before the check"
            );
            assert!(ledger.verification(&attempt, true).unwrap().is_empty());
        } else {
            assert!(effects.is_empty(), "{effects:?}");
        }
        let reported: Vec<StateKind> = take_reports(&mut ledger)
            .iter()
            .map(|m| m.key.state)
            .collect();
        assert_eq!(reported.last(), Some(&StateKind::Completed), "{reported:?}");
        assert!(!reported.contains(&StateKind::Failed));
        assert!(
            matches!(
                ledger.job(upgrade.id()).unwrap().state(),
                JobState::Completed {
                    exit: Some(e),
                    reboot: Some(RebootAttribution::InitiatedByProgram),
                    verified,
                    ..
                } if *verified == with_check && *e == exit
            ),
            "{:?}",
            ledger.job(upgrade.id()).unwrap().state()
        );
        drop(ledger);

        launched += restart_and_reoffer_three_times(&store, &after, &upgrade);
        assert_eq!(launched, 1, "the upgrade's program started exactly once");
    }
}

/// Seed 001's failure code when no restart follows: the grace window closes in the same boot and
/// the failure stands (the retry policy applies; with a check, the check decides first).
#[test]
fn a_failure_with_no_restart_within_the_grace_window_stands() {
    for with_check in [false, true] {
        let store = MemoryStore::new();
        let upgrade = msi_job(job("os-upgrade"))
            .with_reboot(RebootBehaviour::RestartsMachine)
            .with_verify_after_reboot(with_check);
        let (mut ledger, _) = Ledger::open(store, service_session("boot-a")).unwrap();
        ledger.offer(upgrade.clone()).unwrap();
        let attempt = ledger.begin(upgrade.id()).unwrap();
        let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
        let _effects = ledger.program_exited(&attempt, 1603).unwrap();
        let exited = ledger.session().since_boot;
        ledger.session_mut().since_boot = exited + std::time::Duration::from_secs(599);
        assert!(ledger.tick().unwrap().is_empty());
        assert_eq!(
            ledger.job(upgrade.id()).unwrap().state().kind(),
            StateKind::Running
        );
        ledger.session_mut().since_boot = exited + std::time::Duration::from_secs(600);
        let effects = ledger.tick().unwrap();
        match ledger.job(upgrade.id()).unwrap().state() {
            JobState::Queued {
                attempt: 2,
                last_failure: Some(FailureReason::ExitCode(1603)),
                check_before_retry,
                ..
            } => {
                assert_eq!(*check_before_retry, with_check);
                assert_eq!(effects.len(), usize::from(with_check));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}

/// The service pack of seed 000's "more information": same background task, no restart. It
/// behaved under SMS 1.2 too; it must behave here.
#[test]
fn service_pack_without_restart_completes_once() {
    let store = MemoryStore::new();
    let sp = msi_job(job("winnt40-sp3"))
        .with_mandatory(true)
        .with_reboot(RebootBehaviour::Never);
    let session = service_session("boot-a");

    let (mut ledger, _) = Ledger::open(store.clone(), session.clone()).unwrap();
    ledger.offer(sp.clone()).unwrap();
    let attempt = ledger.begin(sp.id()).unwrap();
    assert!(ledger.program_exited(&attempt, 0).unwrap().is_empty());
    let sent = take_reports(&mut ledger);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].exit, Some(jobstate::ProgramExit::Code(0)));
    assert!(matches!(
        ledger.job(sp.id()).unwrap().state(),
        JobState::Completed {
            reboot: None,
            exit: Some(jobstate::ProgramExit::Code(0)),
            ..
        }
    ));
    drop(ledger);

    assert_eq!(restart_and_reoffer_three_times(&store, &session, &sp), 0);
}

/// The same service pack, interrupted by a reboot nobody asked for: the attempt is retried, not
/// completed, and the reboot is attributed as unrelated.
#[test]
fn service_pack_interrupted_by_unrelated_reboot_is_retried() {
    let store = MemoryStore::new();
    let sp = msi_job(job("winnt40-sp3")).with_reboot(RebootBehaviour::Never);
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("boot-a")).unwrap();
    ledger.offer(sp.clone()).unwrap();
    let attempt = ledger.begin(sp.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
    drop(ledger);
    let (ledger, _) = Ledger::open(store, service_session("boot-b")).unwrap();
    assert!(matches!(
        ledger.job(sp.id()).unwrap().state(),
        JobState::Queued {
            attempt: 2,
            last_failure: Some(FailureReason::Interrupted(RebootAttribution::Unrelated)),
            ..
        }
    ));
}

/// Seed 001's upgrade, with a check, whose wrapper reports failure and whose restart is slower
/// than the grace window: the failure stands, and the owed check, made too early (the upgrade
/// is still finishing), says "not installed". Returns the ledger, the spec and the attempt.
fn seed_001_checked_too_early(store: &MemoryStore) -> (MemLedger, JobSpec, jobstate::AttemptId) {
    let upgrade = msi_job(job("winnt40-upgrade-ntencap"))
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_verify_after_reboot(true);
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("boot-a")).unwrap();
    ledger.offer(upgrade.clone()).unwrap();
    let attempt = ledger.begin(upgrade.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
    assert!(ledger.program_exited(&attempt, 1).unwrap().is_empty());
    ledger.session_mut().since_boot += upgrade.failure_grace();
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Verify(attempt.clone())]
    );
    let _effects = ledger.verification(&attempt, false).unwrap();
    (ledger, upgrade, attempt)
}

/// Seed 001 with slow timing (found by the simulator): the wrapper reports failure, the
/// upgrade takes longer than the grace window to restart the machine, so the failure stands and
/// the agent runs the owed check *before* the restart; it says "not installed". After the
/// restart the check is owed again, says "installed", and the upgrade is not run a second time.
#[test]
fn seed_001_check_made_before_the_restart_is_made_again_after_it() {
    let store = MemoryStore::new();
    let (ledger, upgrade, attempt) = seed_001_checked_too_early(&store);
    drop(ledger); // the upgrade restarts the machine

    let (mut ledger, effects) = Ledger::open(store, service_session("boot-b")).unwrap();
    assert_eq!(
        effects,
        vec![Effect::Verify(attempt.clone())],
        "the check is owed again"
    );
    assert!(ledger.begin(upgrade.id()).is_err(), "no retry before it");
    let _effects = ledger.verification(&attempt, true).unwrap();
    assert_eq!(
        ledger.job(upgrade.id()).unwrap().state().kind(),
        StateKind::Completed
    );
    let launches = ledger
        .history(upgrade.id())
        .unwrap()
        .iter()
        .filter(|e| e.event.kind == jobstate::EventKind::AttemptStarted)
        .count();
    assert_eq!(launches, 1);
}

/// Seed 001 with one more step before the restart: the wrapper reports failure, the grace
/// window closes before the (slow) shutdown, the check made then says "not there" (the
/// upgrade is still finishing), and after the back-off the agent begins the retry, attempt 2:
/// `Running` is committed, and the agent dies before the launch is recorded (the shutdown that
/// the upgrade started is what kills it). The machine restarts and the upgrade is done.
///
/// Had attempt 2 not begun, the ledger owes the check again after the reboot before any retry
/// (seeds.rs `seed_001_check_made_before_the_restart_is_made_again_after_it`: "a check that
/// said 'not there' before the restart says nothing about now"). Because attempt 2's
/// `Running` was committed, the reconciliation queues it again as itself with no earlier
/// attempt (`previous: None`) and launches it at once: the OS upgrade runs a second time,
/// with no check, right after the reboot that finished the first run.
///
/// DESIGN.md, "The problem, from the field" (seed 001): "at the next agent start the agent runs
/// the same package again"; "What the agent may never hear": none of these rules "may leave a
/// job wrongly completed, run twice"; invariant 3: a reboot "never queues it to run again"
/// (its allowance, a launch never recorded, is "launched again as the same attempt" — that
/// attempt never ran, but the job's work did, in attempt 1).
#[test]
fn seed_001_a_retry_begun_just_before_the_restart_is_not_launched_before_the_check() {
    let store = MemoryStore::new();
    let (mut ledger, upgrade, first) = seed_001_checked_too_early(&store);
    // The back-off passes; the retry begins; the agent dies before it records the launch.
    ledger.session_mut().now += chrono::TimeDelta::minutes(2);
    ledger.session_mut().since_boot += std::time::Duration::from_secs(120);
    assert_eq!(ledger.next_runnable(), NextJob::Run(upgrade.id().clone()));
    let second = ledger.begin(upgrade.id()).unwrap();
    assert_eq!(second.number, 2);
    drop(ledger); // the upgrade's own restart

    let (ledger, effects) = Ledger::open(store, service_session("boot-b")).unwrap();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Launch(_))),
        "the upgrade runs again right after the reboot that finished it, unchecked: {effects:?} \
         ({:?})",
        ledger.job(upgrade.id()).unwrap().state()
    );
    assert!(
        effects.contains(&Effect::Verify(first.clone())),
        "the check is owed again before any retry: {effects:?}"
    );
}

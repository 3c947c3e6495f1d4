//! What the agent may never hear (SEMANTICS.md): a launch, a program's exit after the agent died,
//! a wrapper's failure report as the machine goes down, a restart that never comes, another
//! job's restart, a check that says "not yet". One story per case, through the ledger, each
//! ending as SEMANTICS.md says: no false completion, no second launch, no job stuck without a bound
//! or a visible wait.

use std::collections::BTreeSet;
use std::time::Duration;

use jobstate::session::{LivePrograms, SessionFacts};
use jobstate::{
    AttemptId, CheckResult, Effect, Error, FailureReason, JobSpec, JobState, Launch, Ledger,
    MemoryStore, NextJob, ProgramId, RebootAttribution, RebootBehaviour, RebootKind, RetryPolicy,
    StateKind, StatusMessage, TransitionError, WaitReason,
};

use crate::common::*;

fn upgrade() -> JobSpec {
    msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine)
}

fn session(boot_name: &str, alive: &[&AttemptId]) -> SessionFacts {
    SessionFacts {
        programs: LivePrograms::Known(alive.iter().map(|a| (*a).clone()).collect()),
        restart_pending: jobstate::session::RestartPending::Unknown,
        ..service_session(boot_name)
    }
}

fn keys(reports: &[StatusMessage]) -> Vec<String> {
    reports.iter().map(|m| m.key.to_string()).collect()
}

/// Starts `spec`, whose program then will not go: an operator abandons it, and its
/// termination is licensed while the session says the program is alive.
fn abandoned_alive(ledger: &mut MemLedger, spec: &JobSpec) -> AttemptId {
    let attempt = start(ledger, spec);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    assert_eq!(
        ledger.abandon(spec.id()).unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    attempt
}

fn wait_of(ledger: &MemLedger, spec: &JobSpec) -> Option<jobstate::JobWait> {
    ledger.waits().into_iter().find(|w| w.job == *spec.id())
}

// ---- 2. A launch that never happened is never completed ----

#[test]
fn a_launch_never_recorded_is_never_completed_by_a_reboot_and_runs_once() {
    let store = MemoryStore::new();
    let spec = upgrade();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("boot-a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    // The agent dies before it spawns the program. Then the machine restarts.
    drop(ledger);
    let (mut ledger, effects) = Ledger::open(store.clone(), session("boot-b", &[])).unwrap();
    assert_eq!(
        effects,
        vec![Effect::Launch(attempt.clone())],
        "the same attempt"
    );
    match state(&ledger, &spec) {
        JobState::Running {
            attempt: a,
            launch: Launch::Pending,
            ..
        } => assert_eq!(a.boot, boot("boot-b"), "its clocks start in the new boot"),
        other => panic!("expected Running in boot b, got {other:?}"),
    }
    assert!(
        take_reports(&mut ledger).is_empty(),
        "no Completed for a program that never ran"
    );
    // Now it runs, and restarts the machine: that reboot completes it.
    let _effects = ledger.launched(&attempt, ProgramId::new(1, 2)).unwrap();
    drop(ledger);
    let (mut ledger, effects) = Ledger::open(store, session("boot-c", &[])).unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
    assert_eq!(
        keys(&take_reports(&mut ledger)),
        ["os-upgrade/run 1/attempt 1/Completed"]
    );
    let launches = ledger
        .history(spec.id())
        .unwrap()
        .iter()
        .filter(|e| matches!(e.event.kind, jobstate::EventKind::Launched { .. }))
        .count();
    assert_eq!(launches, 1);
}

#[test]
fn in_the_same_boot_a_launch_never_recorded_is_relaunched_only_when_nothing_of_it_runs() {
    let spec = upgrade();
    for (alive, expected) in [
        (Some(true), "observed"),
        (Some(false), "relaunched"),
        (None, "unknown"),
    ] {
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), service_session("boot-a")).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        drop(ledger); // the agent dies around the spawn
        let facts = match alive {
            Some(true) => session("boot-a", &[&attempt]),
            Some(false) => session("boot-a", &[]),
            None => service_session("boot-a"),
        };
        let (ledger, effects) = Ledger::open(store.clone(), facts).unwrap();
        let launch = match state(&ledger, &spec) {
            JobState::Running { launch, .. } => launch,
            other => panic!("{other:?}"),
        };
        match expected {
            "observed" => {
                assert!(effects.is_empty(), "never a second program beside it");
                assert_eq!(launch, Launch::Observed);
                assert_eq!(
                    wait_of(&ledger, &spec).unwrap().reason,
                    WaitReason::ProgramRunning
                );
            }
            "relaunched" => {
                assert_eq!(effects, vec![Effect::Launch(attempt.clone())]);
                assert_eq!(launch, Launch::Pending);
            }
            _ => {
                assert!(effects.is_empty());
                assert_eq!(launch, Launch::Pending);
                let wait = wait_of(&ledger, &spec).unwrap();
                assert_eq!(wait.reason, WaitReason::LaunchUnconfirmed);
                assert!(wait.wake_after.is_some(), "bounded by the run-time limit");
            }
        }
    }
}

#[test]
fn a_launch_is_recorded_once_and_only_for_the_current_attempt_in_its_boot() {
    let spec = upgrade();
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    assert!(matches!(
        ledger.launched(&attempt, ProgramId::new(1, 1)),
        Err(Error::Transition(TransitionError::Invalid { .. }))
    ));
    let mut stale = attempt.clone();
    stale.number = 2;
    assert!(matches!(
        ledger.launch_failed(&stale),
        Err(Error::Transition(TransitionError::StaleAttempt { .. }))
    ));
    // A failed spawn fails the attempt under the retry policy, and never waits for a reboot.
    let spec2 = msi_job(job("patch"));
    ledger.offer(spec2.clone()).unwrap();
    let mut ledger = {
        let _effects = ledger.program_exited(&attempt, 0).unwrap();
        ledger
    };
    let attempt2 = ledger.begin(spec2.id()).unwrap();
    let _effects = ledger.launch_failed(&attempt2).unwrap();
    assert!(matches!(
        state(&ledger, &spec2),
        JobState::Queued {
            attempt: 2,
            last_failure: Some(FailureReason::LaunchFailed),
            check_before_retry: false,
            ..
        }
    ));
}

// ---- 3. A program that died with the agent ----

#[test]
fn a_program_that_died_with_the_agent_ends_its_attempt_instead_of_sticking() {
    for with_check in [false, true] {
        let store = MemoryStore::new();
        let spec = msi_job(job("kb-patch"))
            .with_reboot(RebootBehaviour::MayRequest)
            .with_verify_after_reboot(with_check);
        let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        // systemd's KillMode=control-group: the agent and its program die together.
        drop(ledger);
        let (mut ledger, effects) = Ledger::open(store.clone(), session("a", &[])).unwrap();
        match state(&ledger, &spec) {
            JobState::Queued {
                attempt: 2,
                last_failure: Some(FailureReason::ProgramLost),
                check_before_retry,
                ..
            } => {
                assert_eq!(check_before_retry, with_check);
                assert_eq!(effects.len(), usize::from(with_check));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        if with_check {
            // The program had in fact succeeded: the check says so, and nothing runs again.
            let _effects = ledger.verification(&attempt, true).unwrap();
            assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
        } else {
            assert!(matches!(
                ledger.next_runnable(),
                NextJob::Wait {
                    reason: WaitReason::BackingOff { .. },
                    ..
                }
            ));
        }
    }
}

#[test]
fn a_tick_notices_a_program_that_is_gone_and_an_agent_can_say_so() {
    let spec = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session("a", &[])).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    // Alive: nothing happens.
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    assert!(ledger.tick().unwrap().is_empty());
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Running);
    // Gone (no exit status): the attempt ends as lost.
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    let _effects = ledger.tick().unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            last_failure: Some(FailureReason::ProgramLost),
            ..
        }
    ));

    // The explicit call, for an agent that knows its program is gone.
    let spec = msi_job(job("tool")).with_retry(RetryPolicy::none());
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_lost(&attempt).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::ProgramLost,
            ..
        }
    ));
    let reports = take_reports(&mut ledger);
    assert_eq!(reports[0].reason, Some(FailureReason::ProgramLost));
}

#[test]
fn a_terminated_program_that_will_not_go_is_reported_and_an_operator_can_abandon_the_job() {
    let spec = msi_job(job("hang")).with_max_run_time(Duration::from_secs(600));
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    let t = ledger.session().since_boot;
    ledger.session_mut().since_boot = t + Duration::from_secs(600);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    assert_eq!(
        wait_of(&ledger, &spec).unwrap().reason,
        WaitReason::Terminating
    );
    // Still alive after the grace period (5 minutes): reported once, then it waits visibly.
    ledger.session_mut().since_boot = t + Duration::from_secs(600 + 299);
    let _effects = ledger.tick().unwrap();
    assert!(take_reports(&mut ledger).is_empty());
    ledger.session_mut().since_boot = t + Duration::from_secs(600 + 300);
    let _effects = ledger.tick().unwrap();
    assert_eq!(
        keys(&take_reports(&mut ledger)),
        ["hang/run 1/attempt 1/Running/overdue 1"]
    );
    ledger.session_mut().since_boot = t + Duration::from_secs(3 * 3600);
    let _effects = ledger.tick().unwrap();
    assert!(take_reports(&mut ledger).is_empty(), "reported once");
    let wait = wait_of(&ledger, &spec).unwrap();
    assert_eq!(wait.reason, WaitReason::Unresponsive);
    assert!(
        ledger.begin(spec.id()).is_err(),
        "never a second attempt beside it"
    );
    // The operator's way out.
    assert_eq!(
        ledger.abandon(spec.id()).unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::Abandoned,
            ..
        }
    ));
    assert_eq!(
        keys(&take_reports(&mut ledger)),
        ["hang/run 1/attempt 1/Failed"]
    );
    assert!(wait_of(&ledger, &spec).is_none());
    // And once gone after a termination, a program's attempt ends as timed out.
    let spec = msi_job(job("slow")).with_max_run_time(Duration::from_secs(60));
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    ledger.session_mut().since_boot += Duration::from_secs(61);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    let _effects = ledger.tick().unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            last_failure: Some(FailureReason::TimedOut),
            ..
        }
    ));
}

#[test]
fn abandon_ends_any_unfinished_job_but_never_a_completed_one() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
    let done = msi_job(job("done"));
    ledger.offer(done.clone()).unwrap();
    let attempt = start(&mut ledger, &done);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert!(matches!(
        ledger.abandon(done.id()),
        Err(Error::Transition(
            TransitionError::CompletedMandatory { .. }
        ))
    ));
    let optional = msi_job(job("optional")).with_mandatory(false);
    ledger.offer(optional.clone()).unwrap();
    let attempt = start(&mut ledger, &optional);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert!(ledger.abandon(optional.id()).is_err());
    let queued = msi_job(job("queued"));
    ledger.offer(queued.clone()).unwrap();
    assert!(ledger.abandon(queued.id()).unwrap().is_empty());
    assert!(ledger.abandon(queued.id()).is_err(), "already ended");
    let waiting = msi_job(job("waiting")).with_reboot(RebootBehaviour::MayRequest);
    ledger.offer(waiting.clone()).unwrap();
    let attempt = start(&mut ledger, &waiting);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert!(ledger.abandon(waiting.id()).unwrap().is_empty());
    let reports = take_reports(&mut ledger);
    assert_eq!(
        reports
            .iter()
            .filter(|m| m.reason == Some(FailureReason::Abandoned))
            .count(),
        2
    );
}

// ---- 4. A restart that never comes ----

#[test]
fn a_restart_that_never_comes_is_licensed_again_and_reported_overdue() {
    for (code, kind) in [(3010, RebootKind::Soft), (1641, RebootKind::Hard)] {
        let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
        let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        let effects = ledger.program_exited(&attempt, code).unwrap();
        assert_eq!(effects.len(), usize::from(kind == RebootKind::Soft));
        let t = ledger.session().since_boot;
        let wait = wait_of(&ledger, &spec).unwrap();
        assert_eq!(wait.reason, WaitReason::Restart { kind, overdue: 0 });
        assert_eq!(wait.wake_after, Some(Duration::from_secs(3600)));
        assert_eq!(take_reports(&mut ledger).len(), 1);
        let mut overdue = Vec::new();
        // Thirty days in the same boot: reported overdue at 1, 3, 7, 15, 31, ... hours.
        for hour in 1..=720u64 {
            ledger.session_mut().since_boot = t + Duration::from_secs(hour * 3600);
            let effects = ledger.tick().unwrap();
            if !effects.is_empty() {
                assert_eq!(
                    effects,
                    vec![Effect::ScheduleRestart {
                        job: spec.id().clone(),
                        kind,
                        when: jobstate::RestartRelease::AtOnce,
                    }]
                );
                overdue.push(hour);
            }
        }
        assert_eq!(overdue, [1, 3, 7, 15, 31, 63, 127, 255, 511]);
        let reported = take_reports(&mut ledger);
        assert_eq!(reported.len(), overdue.len());
        assert_eq!(
            reported[0].key.to_string(),
            "kb/run 1/attempt 1/AwaitingReboot/wait 1/overdue 1"
        );
        assert!(
            reported
                .iter()
                .all(|m| m.key.state == StateKind::AwaitingReboot)
        );
        assert_eq!(
            state(&ledger, &spec).kind(),
            StateKind::AwaitingReboot,
            "never completed"
        );
        // Only a new boot completes it.
        let store = ledger.into_store();
        let (ledger, _) = Ledger::open(store, service_session("b")).unwrap();
        assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
    }
}

// ---- 5. Restarts are exclusive ----

#[test]
fn a_job_that_may_restart_the_machine_runs_alone() {
    let first = upgrade();
    let second = msi_job(job("second-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let patch = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    for spec in [&first, &second, &patch] {
        ledger.offer(spec.clone()).unwrap();
    }
    assert_eq!(ledger.next_runnable(), NextJob::Run(first.id().clone()));
    let attempt = start(&mut ledger, &first);
    // Nothing starts while it runs.
    for spec in [&second, &patch] {
        assert!(matches!(
            ledger.begin(spec.id()),
            Err(Error::NotRunnable {
                reason: WaitReason::Exclusive { .. },
                ..
            })
        ));
    }
    assert!(matches!(ledger.next_runnable(), NextJob::Wait { .. }));
    // Nor while its restart is owed.
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert_eq!(
        wait_of(&ledger, &patch).unwrap().reason,
        WaitReason::RestartPending {
            job: first.id().clone()
        }
    );
    // A job that never restarts does not block another that never restarts, but it blocks one
    // that may.
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    let other = msi_job(job("other-patch"));
    for spec in [&patch, &other, &second] {
        ledger.offer(spec.clone()).unwrap();
    }
    start(&mut ledger, &patch);
    assert_eq!(ledger.next_runnable(), NextJob::Run(other.id().clone()));
    start(&mut ledger, &other);
    assert_eq!(
        wait_of(&ledger, &second).unwrap().reason,
        WaitReason::Exclusive {
            job: patch.id().clone()
        }
    );
}

#[test]
fn a_restart_is_held_while_another_job_runs_and_a_reboot_is_attributed_to_its_owner() {
    let store = MemoryStore::new();
    let checked = msi_job(job("kb-checked"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let patch = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(checked.clone()).unwrap();
    let failed = start(&mut ledger, &checked);
    assert_eq!(
        ledger.program_exited(&failed, 1603).unwrap(),
        vec![Effect::Verify(failed.clone())]
    );
    // The check is owed; meanwhile another job starts (it never restarts the machine).
    ledger.offer(patch.clone()).unwrap();
    let running = start(&mut ledger, &patch);
    // The check says the failed attempt's work needs a restart: the restart is held.
    let effects = ledger.verification(&failed, CheckResult::NotYet).unwrap();
    assert!(
        effects.is_empty(),
        "no restart under another job's program: {effects:?}"
    );
    assert_eq!(
        wait_of(&ledger, &checked).unwrap().reason,
        WaitReason::RestartHeld {
            job: patch.id().clone()
        }
    );
    drop(ledger);
    // An agent restart re-derives the hold.
    let facts = session("a", &[&running]);
    let (mut ledger, effects) = Ledger::open(store.clone(), facts).unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    // The other job ends: the held restart is licensed by that very call.
    let effects = ledger.program_exited(&running, 0).unwrap();
    assert_eq!(
        effects,
        vec![Effect::ScheduleRestart {
            job: checked.id().clone(),
            kind: RebootKind::Soft,
            when: jobstate::RestartRelease::AtOnce,
        }]
    );

    // Had the machine restarted while the other job ran, its attempt is attributed to the job
    // whose restart it was.
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(checked.clone()).unwrap();
    let failed = start(&mut ledger, &checked);
    let _effects = ledger.program_exited(&failed, 1603).unwrap();
    ledger.offer(patch.clone()).unwrap();
    start(&mut ledger, &patch);
    let _effects = ledger.verification(&failed, CheckResult::NotYet).unwrap();
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, service_session("b")).unwrap();
    assert_eq!(effects, vec![Effect::Verify(failed.clone())]);
    assert!(matches!(
        state(&ledger, &patch),
        JobState::Queued {
            last_failure: Some(FailureReason::Interrupted(RebootAttribution::ForJob(ref j))),
            ..
        } if j == checked.id()
    ));
}

#[test]
fn a_restart_is_never_expected_before_the_exit_is_recorded() {
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let before = state(&ledger, &spec);
    let error = ledger
        .expect_reboot(&attempt, RebootKind::Soft)
        .unwrap_err();
    assert!(matches!(
        error,
        Error::Transition(TransitionError::ExitNotRecorded { .. })
    ));
    assert!(error.to_string().contains("program_exited"), "{error}");
    assert_eq!(state(&ledger, &spec), before);
    // Nor a hard one: a reboot completes only a program that ran and whose end is recorded.
    assert!(matches!(
        ledger.expect_reboot(&attempt, RebootKind::Hard),
        Err(Error::Transition(TransitionError::ExitNotRecorded { .. }))
    ));
    // Before the launch was recorded, even less (a job that never ran is never completed).
    let upgrade = upgrade();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    ledger.offer(upgrade.clone()).unwrap();
    let never_ran = ledger.begin(upgrade.id()).unwrap();
    assert!(ledger.expect_reboot(&never_ran, RebootKind::Hard).is_err());
    // After a provisional failure of a program that restarts the machine, the agent may say the
    // restart is under way.
    let _effects = ledger.launched(&never_ran, ProgramId::new(5, 5)).unwrap();
    let _effects = ledger.program_exited(&never_ran, 1603).unwrap();
    assert!(
        ledger
            .expect_reboot(&never_ran, RebootKind::Hard)
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&ledger, &upgrade).kind(), StateKind::AwaitingReboot);
}

// ---- 6. A check may say "not yet" ----

#[test]
fn an_upgrade_that_restarts_several_times_waits_for_each_restart_within_its_bound() {
    let spec = upgrade().with_verify_after_reboot(true).with_max_reboots(3);
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("b0")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    let mut reported = Vec::new();
    for n in 1..=3 {
        let (mut ledger, effects) =
            Ledger::open(store.clone(), service_session(&format!("b{n}"))).unwrap();
        assert_eq!(effects, vec![Effect::Verify(attempt.clone())]);
        let answer = if n < 3 {
            CheckResult::NotYet
        } else {
            CheckResult::Installed
        };
        // The program restarts the machine by itself: nothing is licensed.
        assert!(ledger.verification(&attempt, answer).unwrap().is_empty());
        reported.extend(keys(&take_reports(&mut ledger)));
    }
    assert_eq!(
        reported,
        [
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 1",
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 2",
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 3",
            "os-upgrade/run 1/attempt 1/Completed",
        ]
    );

    // One more "not yet" than the bound allows: the reboot loop is stopped.
    let spec = upgrade().with_verify_after_reboot(true).with_max_reboots(2);
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("b0")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger);
    for n in 1..=2 {
        let (mut ledger, _) =
            Ledger::open(store.clone(), service_session(&format!("b{n}"))).unwrap();
        let _effects = ledger.verification(&attempt, CheckResult::NotYet).unwrap();
        if n == 2 {
            assert!(matches!(
                state(&ledger, &spec),
                JobState::Failed {
                    reason: FailureReason::RebootLoop { boots: 2 },
                    ..
                }
            ));
        }
    }

    // A job whose program asks the agent for its restarts: "not yet" licenses another one.
    let spec = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("b0")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("b1")).unwrap();
    assert_eq!(
        ledger.verification(&attempt, CheckResult::NotYet).unwrap(),
        vec![Effect::ScheduleRestart {
            job: spec.id().clone(),
            kind: RebootKind::Soft,
            when: jobstate::RestartRelease::AtOnce,
        }]
    );
}

#[test]
fn a_failed_last_attempt_with_a_check_is_checked_before_the_run_fails() {
    let spec = msi_job(job("kb"))
        .with_verify_after_reboot(true)
        .with_retry(RetryPolicy::none());
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    assert_eq!(
        ledger.program_exited(&attempt, 1603).unwrap(),
        vec![Effect::Verify(attempt.clone())]
    );
    assert!(
        ledger.begin(spec.id()).is_err(),
        "no attempts left, and a check owed"
    );
    let _effects = ledger.verification(&attempt, false).unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Failed {
            reason: FailureReason::ExitCode(1603),
            ..
        }
    ));
}

// ---- 7. The next wake-up ----

#[test]
fn next_wakeup_is_the_earliest_deadline_across_all_jobs() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    assert_eq!(ledger.next_wakeup(), None, "nothing timed");
    // A running program under a 2-hour limit.
    let long = msi_job(job("long"));
    ledger.offer(long.clone()).unwrap();
    start(&mut ledger, &long);
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(7200)));
    // A queued job backing off for a minute (it failed: its retry comes first).
    let flaky = msi_job(job("flaky"));
    ledger.offer(flaky.clone()).unwrap();
    let attempt = start(&mut ledger, &flaky);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(60)));
    let waits = ledger.waits();
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(matches!(waits[1].reason, WaitReason::BackingOff { .. }));
    // Time passes: the back-off is over (the job may start: it no longer waits), and the
    // running program's limit is 30 minutes closer.
    ledger.session_mut().now += chrono::TimeDelta::minutes(30);
    ledger.session_mut().since_boot += Duration::from_secs(1800);
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(5400)));
    assert_eq!(ledger.next_runnable(), NextJob::Run(flaky.id().clone()));
}

// ---- Found by review ----

/// An orphaned upgrade (its agent crashed, the program lived on) is seen only as gone when it
/// restarts the machine: as a failing exit, that is provisional, and the reboot completes it.
#[test]
fn an_orphaned_upgrade_that_vanishes_and_restarts_the_machine_runs_once() {
    let store = MemoryStore::new();
    let spec = upgrade();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    drop(ledger); // the agent crashes; the program lives on
    let (mut ledger, effects) = Ledger::open(store.clone(), session("a", &[&attempt])).unwrap();
    assert!(effects.is_empty());
    // The program is gone a moment before the reset: provisional, not a retry.
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    let _effects = ledger.tick().unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            provisional: Some(jobstate::ProvisionalFailure { exit: None, .. }),
            ..
        }
    ));
    assert_eq!(
        wait_of(&ledger, &spec).unwrap().reason,
        WaitReason::FailureProvisional { exit: None }
    );
    drop(ledger);
    let (ledger, effects) = Ledger::open(store.clone(), session("b", &[])).unwrap();
    assert!(effects.is_empty(), "never launched again: {effects:?}");
    assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);

    // No reboot within the window: the attempt ends as lost, under the retry policy.
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store, session("a", &[])).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_lost(&attempt).unwrap();
    ledger.session_mut().since_boot += spec.failure_grace();
    let _effects = ledger.tick().unwrap();
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            last_failure: Some(FailureReason::ProgramLost),
            ..
        }
    ));
}

/// Lets `attempt` of `spec`, whose program stays alive, pass its run-time limit (terminated)
/// and its termination's grace (reported unresponsive).
fn hang_past_termination(ledger: &mut MemLedger, spec: &JobSpec, attempt: &AttemptId) {
    ledger.session_mut().since_boot += spec.max_run_time() + Duration::from_secs(1);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    ledger.session_mut().since_boot += spec.terminate_grace();
    let _effects = ledger.tick().unwrap();
}

/// A launch never recorded that passed its run-time limit and was reported unresponsive, found
/// gone (after a reboot, or by an agent restart in its boot): it never ran ("A launch is a
/// recorded fact"), so it is launched again as itself, no retry spent, and a reboot neither
/// fails it nor spends a retry (invariant 3). (After a reboot it once was launched again, and
/// when it hung again its second unresponsive report had the first one's key: the store refused
/// the commit as a duplicate, and every `tick` failed from then on, so that no other job's
/// run-time limit was handled again; a receiver that had the first report would have dropped
/// the second as a copy. In its boot it spent a retry instead, or failed an upgrade with none
/// left.) Its reports of a program that will not go are numbered, and the ledger goes on. For a
/// job with retries and for an OS upgrade with none left, its launch recorded the second time or
/// not.
#[test]
fn a_terminated_launch_never_recorded_is_launched_again_and_no_report_key_repeats() {
    let patch = msi_job(job("hang"));
    let upgrade = upgrade().with_retry(RetryPolicy::none());
    for (spec, record_launch, found_in) in [
        (patch.clone(), true, "b"),
        (upgrade.clone(), false, "b"),
        (patch, true, "a"),
        (upgrade, false, "a"),
    ] {
        let spec = spec.with_max_run_time(Duration::from_secs(60));
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let first = ledger.begin(spec.id()).unwrap(); // spawned; the launch is never recorded
        hang_past_termination(&mut ledger, &spec, &first);
        let mut reported = keys(&take_reports(&mut ledger));
        let key = |n: u32| format!("{}/run 1/attempt 1/Running/overdue {n}", spec.id());
        assert_eq!(reported, [key(1)]);
        let since_boot = ledger.session().since_boot;
        drop(ledger);

        // The machine restarts (or only the agent, and nothing of the attempt runs): the same
        // attempt is launched again, its clocks anew.
        let facts = match found_in {
            "a" => SessionFacts {
                since_boot,
                ..session("a", &[])
            },
            _ => session("b", &[]),
        };
        let (mut ledger, effects) = Ledger::open(store, facts).unwrap();
        assert_eq!(effects, vec![Effect::Launch(first.clone())], "{found_in}");
        match state(&ledger, &spec) {
            JobState::Running {
                attempt,
                terminate: None,
                ..
            } => assert_eq!(attempt.boot, boot(found_in)),
            other => panic!("{other:?}"),
        }
        if record_launch {
            let _effects = ledger.launched(&first, ProgramId::new(77, 1)).unwrap();
        }
        // It hangs again; another job runs beside it.
        let other = msi_job(job("other")).with_max_run_time(Duration::from_secs(600));
        ledger.offer(other.clone()).unwrap();
        let beside = if record_launch {
            let beside = start(&mut ledger, &other);
            ledger.session_mut().programs =
                LivePrograms::Known(BTreeSet::from([first.clone(), beside.clone()]));
            Some(beside)
        } else {
            None // an upgrade runs alone
        };
        hang_past_termination(&mut ledger, &spec, &first);
        reported.extend(keys(&take_reports(&mut ledger)));
        assert_eq!(reported, [key(1), key(2)]);
        // The ledger goes on: the other job's run-time limit is handled.
        if let Some(beside) = beside {
            ledger.session_mut().since_boot += Duration::from_secs(600);
            assert_eq!(ledger.tick().unwrap(), vec![Effect::Terminate(beside)]);
        }
    }
}

/// A launch never recorded is launched again only when the job may start, as any start: its run
/// condition holds. A job that may run only while a user is logged on began while one was; the
/// agent died between the spawn and its record; at the next boot the agent starts before anyone
/// logs on. The attempt waits, queued as itself, and runs (the same attempt) once a user is
/// there.
#[test]
fn a_launch_never_recorded_is_launched_again_only_when_the_run_condition_holds() {
    use jobstate::{RunCondition, UserPresence};
    let store = MemoryStore::new();
    let spec = msi_job(job("user-app")).with_run_condition(RunCondition::OnlyWithUser);
    let logged_on = SessionFacts {
        user: UserPresence::LoggedOn,
        ..service_session("a")
    };
    let (mut ledger, _) = Ledger::open(store.clone(), logged_on).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    drop(ledger); // the agent dies before the launch is recorded; then the machine restarts

    let nobody = session("b", &[]);
    assert_eq!(nobody.user, UserPresence::NoneLoggedOn);
    let (mut ledger, effects) = Ledger::open(store, nobody).unwrap();
    assert!(effects.is_empty(), "nobody is logged on: {effects:?}");
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            attempt: 1,
            last_failure: None,
            ..
        }
    ));
    assert_eq!(
        ledger.next_runnable(),
        NextJob::Wait {
            job: spec.id().clone(),
            reason: WaitReason::NeedsUser
        }
    );
    ledger.session_mut().user = UserPresence::LoggedOn;
    assert_eq!(ledger.next_runnable(), NextJob::Run(spec.id().clone()));
    let again = ledger.begin(spec.id()).unwrap();
    assert_eq!(again, attempt, "the same attempt: no retry is spent");
    match state(&ledger, &spec) {
        JobState::Running { attempt: a, .. } => assert_eq!(a.boot, boot("b")),
        other => panic!("{other:?}"),
    }
}

/// And only when nothing stands in its way: no restart owed. A job with a check (`retry`) failed
/// and waits for its check; meanwhile a job that never restarts (`tool`) begins, and the agent
/// dies between its spawn and the record. The check says "not yet": `retry` now owes a restart,
/// held while `tool` runs. The agent restarts in the same boot and nothing of `tool` runs: its
/// attempt waits, queued, the restart is licensed, and `tool` runs (the same attempt) after it.
#[test]
fn a_launch_never_recorded_is_not_launched_again_while_a_restart_is_owed() {
    let store = MemoryStore::new();
    let retry = msi_job(job("retry"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let tool = msi_job(job("tool"));
    let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    ledger.offer(retry.clone()).unwrap();
    ledger.offer(tool.clone()).unwrap();
    let first = start(&mut ledger, &retry);
    let effects = ledger.program_exited(&first, 1603).unwrap();
    assert_eq!(effects, vec![Effect::Verify(first.clone())]);
    let tool_attempt = ledger.begin(tool.id()).unwrap(); // its launch is never recorded
    let effects = ledger.verification(&first, CheckResult::NotYet).unwrap();
    assert!(effects.is_empty(), "held while tool runs: {effects:?}");
    assert_eq!(state(&ledger, &retry).kind(), StateKind::AwaitingReboot);
    drop(ledger);

    let (ledger, effects) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    assert!(
        !effects.contains(&Effect::Launch(tool_attempt.clone())),
        "no program starts while a restart is owed: {effects:?}"
    );
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::ScheduleRestart { job, kind: RebootKind::Soft, .. } if job == retry.id()
        )),
        "nothing runs now: the restart is licensed: {effects:?}"
    );
    assert!(matches!(
        state(&ledger, &tool),
        JobState::Queued { attempt: 1, .. }
    ));
    assert_eq!(
        ledger.next_runnable(),
        NextJob::Wait {
            job: tool.id().clone(),
            reason: WaitReason::RestartPending {
                job: retry.id().clone()
            }
        }
    );
    drop(ledger);
    // The restart comes; the check now says installed; `tool` runs, as the same attempt.
    let (mut ledger, effects) = Ledger::open(store, session("b", &[])).unwrap();
    assert_eq!(effects, vec![Effect::Verify(first.clone())]);
    let _effects = ledger.verification(&first, CheckResult::Installed).unwrap();
    assert_eq!(state(&ledger, &retry).kind(), StateKind::Completed);
    assert_eq!(ledger.next_runnable(), NextJob::Run(tool.id().clone()));
    assert_eq!(ledger.begin(tool.id()).unwrap(), tool_attempt);
}

/// Seed 001 after a run-time limit: an OS upgrade runs past its maximum run time, and the
/// ledger licenses `Terminate`. Before the agent gets to it, the upgrade reaches its restart:
/// the wrapper, which never hears the shutdown, exits with 1603, and the machine restarts within
/// the grace window. The failure is provisional as after any failing exit of a program that
/// restarts the machine (SEMANTICS.md, "A failure reported as the machine goes down is
/// provisional"): the reboot is its expected end. (It was taken as a timeout at once, and the
/// upgrade queued to run again.) When the window closes in its boot instead, the attempt
/// timed out: that was the termination's doing, whatever the exit said.
#[test]
fn an_exit_after_a_termination_is_provisional_for_a_program_that_restarts_the_machine() {
    for reboot_in_window in [true, false] {
        let store = MemoryStore::new();
        let spec = upgrade().with_max_run_time(Duration::from_secs(3600));
        let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let attempt = start(&mut ledger, &spec);
        ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
        ledger.session_mut().since_boot += Duration::from_secs(3600);
        assert_eq!(
            ledger.tick().unwrap(),
            vec![Effect::Terminate(attempt.clone())]
        );
        let effects = ledger.program_exited(&attempt, 1603).unwrap();
        assert!(effects.is_empty(), "{effects:?}");
        assert!(matches!(
            state(&ledger, &spec),
            JobState::Running {
                provisional: Some(_),
                terminate: Some(_),
                ..
            }
        ));
        if reboot_in_window {
            ledger.session_mut().since_boot += Duration::from_secs(30);
            drop(ledger);
            let (ledger, effects) = Ledger::open(store, session("b", &[])).unwrap();
            assert!(effects.is_empty(), "{effects:?}");
            assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
            assert_eq!(ledger.next_runnable(), NextJob::Idle, "never run again");
        } else {
            ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
            ledger.session_mut().since_boot += spec.failure_grace();
            let _effects = ledger.tick().unwrap();
            assert!(matches!(
                state(&ledger, &spec),
                JobState::Queued {
                    attempt: 2,
                    last_failure: Some(FailureReason::TimedOut),
                    ..
                }
            ));
        }
    }
}

/// An operator abandons a job whose program will not go, then asks for a rerun: refused while
/// that program runs (never a second attempt beside it), accepted once it is gone.
#[test]
fn a_rerun_waits_for_the_abandoned_program_to_go() {
    let spec = msi_job(job("tool")).with_mandatory(false);
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.abandon(spec.id()).unwrap();
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    assert!(matches!(
        ledger.rerun(spec.id()),
        Err(Error::ProgramStillRunning { .. })
    ));
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    let _effects = ledger.rerun(spec.id()).unwrap();
    assert_eq!(ledger.next_runnable(), NextJob::Run(spec.id().clone()));
}

/// A job declared never to restart the machine waits for no restart: its check's "not yet" is
/// "not there", and no restart is licensed.
#[test]
fn not_yet_means_not_there_for_a_job_that_never_restarts() {
    let spec = msi_job(job("patch")).with_verify_after_reboot(true);
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(
        ledger
            .verification(&attempt, CheckResult::NotYet)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Queued {
            check_before_retry: false,
            ..
        }
    ));
}

/// A restart that did not come and was reported overdue was licensed to the agent, which may
/// restart the machine itself. If the agent restarts before it does (a crash, an update), the
/// open in the same boot licenses it again: a hard restart too, not only a soft one. (It licensed
/// only a soft one: the machine then waited for the next overdue deadline, 16 hours later here,
/// weeks later after a month, with every other job waiting behind the owed restart.) A hard
/// restart not yet overdue is still the installer's own: nothing is licensed.
#[test]
fn an_overdue_restart_is_licensed_again_after_an_agent_restart() {
    let spec = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = start(&mut ledger, &spec);
    // The installer says it initiated the restart (1641); the restart never comes.
    assert!(ledger.program_exited(&attempt, 1641).unwrap().is_empty());
    drop(ledger);
    let (mut ledger, effects) = Ledger::open(store.clone(), service_session("a")).unwrap();
    assert!(
        effects.is_empty(),
        "not overdue: the installer's own restart: {effects:?}"
    );
    let t = ledger.session().since_boot;
    let mut licensed_at = Vec::new();
    for hour in 1..=15u64 {
        ledger.session_mut().since_boot = t + Duration::from_secs(hour * 3600);
        let effects = ledger.tick().unwrap();
        if effects.iter().any(|e| {
            matches!(
                e,
                Effect::ScheduleRestart {
                    kind: RebootKind::Hard,
                    ..
                }
            )
        }) {
            licensed_at.push(hour);
        }
    }
    assert_eq!(licensed_at, [1, 3, 7, 15]);
    // The agent dies before it restarts the machine, and starts again in the same boot.
    let since_boot = ledger.session().since_boot + Duration::from_secs(60);
    drop(ledger);
    let facts = SessionFacts {
        since_boot,
        ..service_session("a")
    };
    let (ledger, effects) = Ledger::open(store, facts).unwrap();
    assert_eq!(state(&ledger, &spec).kind(), StateKind::AwaitingReboot);
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::ScheduleRestart { job, kind: RebootKind::Hard, .. } if job == spec.id()
        )),
        "the overdue restart is licensed again: {effects:?}"
    );
}

/// An operator abandons an OS upgrade whose program will not go after its termination; the
/// program still runs. A second job that may restart the machine must not start beside it
/// (SEMANTICS.md, "Restarts are exclusive"): the first installer's restart would complete it on
/// a reboot that was not its own. (It started at once, and was then completed by that reboot.)
/// It waits, named, polled, and starts once the abandoned program is gone.
#[test]
fn nothing_that_may_restart_starts_beside_an_abandoned_program_still_alive() {
    let first = upgrade().with_max_run_time(Duration::from_secs(600));
    let second = msi_job(job("feature-update")).with_reboot(RebootBehaviour::RestartsMachine);
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(first.clone()).unwrap();
    ledger.offer(second.clone()).unwrap();
    let attempt = start(&mut ledger, &first);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    ledger.session_mut().since_boot += Duration::from_secs(600);
    let _effects = ledger.tick().unwrap();
    ledger.session_mut().since_boot += first.terminate_grace();
    let _effects = ledger.tick().unwrap();
    assert_eq!(
        wait_of(&ledger, &first).unwrap().reason,
        WaitReason::Unresponsive
    );
    let _effects = ledger.abandon(first.id()).unwrap();
    let blocked = NextJob::Wait {
        job: second.id().clone(),
        reason: WaitReason::Exclusive {
            job: first.id().clone(),
        },
    };
    assert_eq!(ledger.next_runnable(), blocked);
    assert!(matches!(
        ledger.begin(second.id()),
        Err(Error::NotRunnable { .. })
    ));
    let wait = wait_of(&ledger, &second).unwrap();
    assert!(
        wait.wake_after
            .is_some_and(|d| d <= Duration::from_secs(60)),
        "polled: nothing tells the agent of the abandoned program's end: {wait:?}"
    );
    // The same after an agent restart in this boot.
    let programs = ledger.session().programs.clone();
    drop(ledger);
    let facts = SessionFacts {
        programs,
        ..service_session("a")
    };
    let (mut ledger, _) = Ledger::open(store, facts).unwrap();
    assert_eq!(ledger.next_runnable(), blocked);
    // The abandoned program ends: the second upgrade may start.
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    assert_eq!(ledger.next_runnable(), NextJob::Run(second.id().clone()));
}

/// A memory store whose commit after the next one fails, once armed.
struct SecondCommitFails {
    inner: MemoryStore,
    armed: std::rc::Rc<std::cell::Cell<bool>>,
}

impl jobstate::store::Store for SecondCommitFails {
    fn load(&mut self) -> Result<jobstate::store::Snapshot, jobstate::store::StoreError> {
        self.inner.load()
    }
    fn commit(
        &mut self,
        commit: &jobstate::store::Commit,
    ) -> Result<jobstate::store::Revision, jobstate::store::StoreError> {
        let result = self.inner.commit(commit);
        if self.armed.replace(false) {
            self.inner.fail_next_commits(1);
        }
        result
    }
}

/// A tick that changes more jobs than one commit holds (1,024) commits in several. When a later
/// commit fails (a full disk for a moment), the call fails, but the earlier commits stand: the
/// terminations they licensed are handed out by the next tick, which `next_wakeup` asks for at
/// once. (They were lost: those jobs carried a termination no caller was told to carry out, and
/// only an agent restart would have licensed it again; their programs ran on past their limit.)
/// Found in review.
#[test]
fn a_tick_that_fails_half_way_loses_no_termination() {
    let store = MemoryStore::new();
    let armed = std::rc::Rc::new(std::cell::Cell::new(false));
    let wrapped = SecondCommitFails {
        inner: store.clone(),
        armed: armed.clone(),
    };
    let (mut ledger, _) = Ledger::open(wrapped, service_session("a")).unwrap();
    let mut attempts = Vec::new();
    for n in 0..1025u32 {
        let spec =
            msi_job(job(&format!("patch-{n:04}"))).with_max_run_time(Duration::from_secs(600));
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        let _effects = ledger
            .launched(&attempt, ProgramId::new(1000 + n, 1))
            .unwrap();
        attempts.push(attempt);
    }
    // Every program runs past its limit; the tick's second commit fails.
    ledger.session_mut().since_boot += Duration::from_secs(600);
    armed.set(true);
    assert!(ledger.tick().is_err());
    assert_eq!(ledger.next_wakeup(), Some(Duration::ZERO), "call tick now");
    // The next tick hands out the 1,024 committed terminations and makes the last one.
    let effects = ledger.tick().unwrap();
    let terminated: Vec<&AttemptId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Terminate(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(terminated, attempts.iter().collect::<Vec<_>>());
    assert!(ledger.tick().unwrap().is_empty(), "each handed out once");
}

/// The same with checks: every program with a check is gone, so each attempt's check is owed
/// (`Effect::Verify`); the tick's second commit fails. The next tick hands out the 1,024
/// committed checks, each while its job still waits for it, once.
#[test]
fn a_tick_that_fails_half_way_loses_no_check() {
    let store = MemoryStore::new();
    let armed = std::rc::Rc::new(std::cell::Cell::new(false));
    let wrapped = SecondCommitFails {
        inner: store.clone(),
        armed: armed.clone(),
    };
    let (mut ledger, _) = Ledger::open(wrapped, session("a", &[])).unwrap();
    let mut attempts = Vec::new();
    for n in 0..1025u32 {
        let spec = msi_job(job(&format!("kb-{n:04}"))).with_verify_after_reboot(true);
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        let _effects = ledger
            .launched(&attempt, ProgramId::new(1000 + n, 1))
            .unwrap();
        attempts.push(attempt);
    }
    // Every program is gone without an exit status; the tick's second commit fails.
    armed.set(true);
    assert!(ledger.tick().is_err());
    let effects = ledger.tick().unwrap();
    let checked: Vec<&AttemptId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Verify(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(checked, attempts.iter().collect::<Vec<_>>());
    assert!(ledger.tick().unwrap().is_empty(), "each handed out once");
}

/// A tick whose commit fails decides the held restarts again on its way out and keeps those it
/// releases for the next tick: but what it keeps is handed out whatever happened meanwhile. A
/// soft restart held while a user is logged on is released as the user logs off by a tick whose
/// commit fails (a full disk for a moment); an operator then abandons the job, so no restart is
/// owed and another job starts; the next tick hands out the abandoned job's restart while that
/// job runs ("a restart is never licensed while another job runs"). Found in review.
#[test]
fn a_restart_kept_by_a_failed_tick_is_not_handed_out_after_its_job_was_abandoned() {
    let store = MemoryStore::new();
    let kb = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_restart_policy(Some(jobstate::RestartPolicy::WhenNoUser {
            at_most: Duration::from_secs(8 * 3600),
        }));
    let patch = msi_job(job("patch"));
    let mut facts = session("a", &[]);
    facts.user = jobstate::UserPresence::LoggedOn;
    let (mut ledger, _) = Ledger::open(store.clone(), facts).unwrap();
    ledger.offer(kb.clone()).unwrap();
    ledger.offer(patch.clone()).unwrap();
    let attempt = start(&mut ledger, &kb);
    let effects = ledger.program_exited(&attempt, 3010).unwrap();
    assert!(
        effects.is_empty(),
        "held while a user is logged on: {effects:?}"
    );
    // The user logs off as the restart becomes overdue; the tick's commit fails.
    ledger.session_mut().user = jobstate::UserPresence::NoneLoggedOn;
    ledger.session_mut().since_boot += kb.restart_deadline() + Duration::from_secs(1);
    store.fail_next_commits(1);
    assert!(ledger.tick().is_err());
    // An operator ends the job; nothing is owed any more, and the other job starts.
    let _effects = ledger.abandon(kb.id()).unwrap();
    assert_eq!(ledger.next_runnable(), NextJob::Run(patch.id().clone()));
    let running = start(&mut ledger, &patch);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([running]));
    let effects = ledger.tick().unwrap();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. })),
        "a restart licensed for an abandoned job while another job runs: {effects:?}"
    );
}

/// The jobs abandoned in this boot are found at open only after the reconciliation, which may
/// start jobs again: a launch never recorded is launched again at open beside an abandoned
/// job's live program that may restart the machine, though no call after the open would start
/// it there. The first agent process could not tell which programs lived (its session said
/// "unknown"); the second one can. Found in review.
#[test]
fn an_agent_restart_launches_nothing_beside_an_abandoned_program_still_alive() {
    let store = MemoryStore::new();
    let kb = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let patch = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    ledger.offer(kb.clone()).unwrap();
    ledger.offer(patch.clone()).unwrap();
    let stuck = start(&mut ledger, &kb);
    let _effects = ledger.abandon(kb.id()).unwrap();
    // Its program lives on, but this session cannot tell: the other job begins, and the agent
    // dies before its launch is recorded.
    assert_eq!(ledger.next_runnable(), NextJob::Run(patch.id().clone()));
    let _attempt = ledger.begin(patch.id()).unwrap();
    drop(ledger);

    // The agent restarts in the same boot; the abandoned program still runs, the other never
    // started.
    let (ledger, effects) = Ledger::open(store, session("a", &[&stuck])).unwrap();
    assert_eq!(
        launches(&effects),
        0,
        "launched beside a live program that may restart the machine: {effects:?}"
    );
    assert_eq!(
        ledger.next_runnable(),
        NextJob::Wait {
            job: patch.id().clone(),
            reason: WaitReason::Exclusive {
                job: kb.id().clone()
            }
        }
    );
}

/// The same through `program_lost` (found in review): a launch never recorded, terminated past
/// its run-time limit, then said gone by the agent in its boot. It never ran: an OS upgrade with
/// no retry left is launched again as the same attempt, not failed.
#[test]
fn a_terminated_launch_never_recorded_said_lost_is_launched_again_not_failed() {
    let spec = upgrade()
        .with_retry(RetryPolicy::none())
        .with_max_run_time(Duration::from_secs(60));
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session("a", &[])).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap(); // its launch is never recorded
    ledger.session_mut().since_boot += Duration::from_secs(61);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    let effects = ledger.program_lost(&attempt).unwrap();
    assert_eq!(effects, vec![Effect::Launch(attempt.clone())]);
    assert!(matches!(
        state(&ledger, &spec),
        JobState::Running {
            terminate: None,
            ..
        }
    ));
}

/// A retry whose launch was never recorded is queued again as itself with what its queue held:
/// the failed attempt before it and why it failed. So a restart since that attempt began owes
/// the check first, as it does for a retry not yet begun: the restart may have finished the
/// work that the failed attempt's report denied (seed 001), and running it again is the seeds'
/// bug.
#[test]
fn a_retry_never_launched_owes_the_check_after_a_restart_as_a_queued_retry_does() {
    let spec = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    for begun in [false, true] {
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let first = start(&mut ledger, &spec);
        let effects = ledger.program_exited(&first, 1603).unwrap();
        assert_eq!(effects, vec![Effect::Verify(first.clone())]);
        let _ = ledger
            .verification(&first, CheckResult::NotInstalled)
            .unwrap();
        let second = if begun {
            // The retry begins; the agent dies before its launch is recorded.
            ledger.session_mut().now += chrono::TimeDelta::hours(1);
            ledger.session_mut().since_boot += Duration::from_secs(3600);
            Some(ledger.begin(spec.id()).unwrap())
        } else {
            None
        };
        drop(ledger); // then the machine restarts

        let (mut ledger, effects) = Ledger::open(store, session("b", &[])).unwrap();
        assert_eq!(
            effects,
            vec![Effect::Verify(first.clone())],
            "begun: {begun}: the check first, no launch"
        );
        match state(&ledger, &spec) {
            JobState::Queued {
                attempt: 2,
                previous: Some(previous),
                last_failure: Some(FailureReason::ExitCode(1603)),
                check_before_retry: true,
                ..
            } => assert_eq!(previous.boot, boot("a")),
            other => panic!("begun: {begun}: {other:?}"),
        }
        let _ = ledger.verification(&first, CheckResult::Installed).unwrap();
        assert_eq!(state(&ledger, &spec).kind(), StateKind::Completed);
        assert!(second.is_none_or(|s| s.number == 2));
    }

    // In its own boot no restart came since the retry began: it is begun again at once, its
    // queue's failure kept.
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let first = start(&mut ledger, &spec);
    let _ = ledger.program_exited(&first, 1603).unwrap();
    let _ = ledger
        .verification(&first, CheckResult::NotInstalled)
        .unwrap();
    ledger.session_mut().now += chrono::TimeDelta::hours(1);
    ledger.session_mut().since_boot += Duration::from_secs(3600);
    let second = ledger.begin(spec.id()).unwrap();
    drop(ledger);
    let (ledger, effects) = Ledger::open(store, session("a", &[])).unwrap();
    assert_eq!(effects, vec![Effect::Launch(second)]);
    let history = ledger.job(spec.id()).unwrap().history();
    let requeued = &history[history.len() - 2].state;
    assert!(
        matches!(
            requeued,
            JobState::Queued {
                attempt: 2,
                previous: Some(_),
                last_failure: Some(FailureReason::ExitCode(1603)),
                check_before_retry: false,
                ..
            }
        ),
        "{requeued:?}"
    );
}

/// An operator abandons a job whose program still runs: the call licenses its termination.
/// The agent dies before it carries the termination out, and restarts in the same boot: the
/// program still runs, and the open licenses its termination again. (It did not: nothing
/// bounded the program any more, its job being finished; every job that may restart the
/// machine waited behind it for good, and the operator had no call left that ends it: abandon
/// is refused on a failed job, rerun while it runs.)
///
/// DESIGN.md, "What drives it": "Outputs are the new state plus the effects the caller must
/// carry out"; SEMANTICS.md, "Effects": "They are licensed by a commit that has already reached
/// the store, so an agent that crashes after the commit finds the job in a state that accounts
/// for the effect" and `Ledger::open`: "the effects recovery licenses: ... restarts and
/// terminations still owed"; DESIGN.md invariant 8: nothing the agent fails to hear "leaves a
/// job waiting without a bound, an overdue report, or an operator's way out".
#[test]
fn a_termination_licensed_by_abandon_is_licensed_again_after_an_agent_crash() {
    let store = MemoryStore::new();
    let kb = msi_job(job("kb"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_max_run_time(Duration::from_secs(600));
    let next = msi_job(job("next")).with_reboot(RebootBehaviour::MayRequest);
    let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    ledger.offer(kb.clone()).unwrap();
    ledger.offer(next.clone()).unwrap();
    let attempt = abandoned_alive(&mut ledger, &kb);
    // The agent dies before it terminated the program.
    drop(ledger);
    let (mut ledger, effects) = Ledger::open(store, session("a", &[&attempt])).unwrap();
    assert_eq!(state(&ledger, &kb).kind(), StateKind::Failed);
    // Long after: the program still runs, the other job still waits behind it.
    ledger.session_mut().since_boot += Duration::from_secs(24 * 3600);
    let later = ledger.tick().unwrap();
    let terminations: Vec<&Effect> = effects
        .iter()
        .chain(later.iter())
        .filter(|e| matches!(e, Effect::Terminate(a) if *a == attempt))
        .collect();
    assert!(
        !terminations.is_empty(),
        "the termination the abandon licensed was lost with the agent; the program runs on \
         unbounded and `next` waits {:?} for good",
        ledger.next_runnable()
    );
}

/// A program past its run-time limit is terminated, will not go, and is reported unresponsive;
/// the agent restarts in the same boot (the program is now an orphan: nothing tells this agent
/// process of its end, which is why the ledger polls the liveness of orphans, `ORPHAN_POLL`).
/// Later the program does go. But for an unresponsive program `waits` says `wake_after: None`
/// and `next_wakeup` says nothing is timed: an agent that sleeps as `next_wakeup` says never
/// calls `tick`, the attempt never ends although its program is gone, and a job that may
/// restart the machine waits behind it for good.
///
/// DESIGN.md, "What the agent may never hear": "After a `Terminate`, a program that is gone
/// ends the same way"; "Every wait is named and bounded or visible. A caller can ask what each
/// job waits for and when the ledger next needs to be called (...), so that an agent sleeps
/// instead of polling"; invariant 8 ("nothing the agent fails to hear (... an exit ...)
/// leaves a job waiting without a bound").
#[test]
fn an_orphaned_unresponsive_program_that_goes_is_polled() {
    let store = MemoryStore::new();
    let hang = msi_job(job("hang")).with_max_run_time(Duration::from_secs(600));
    let next = msi_job(job("next")).with_reboot(RebootBehaviour::MayRequest);
    let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    ledger.offer(hang.clone()).unwrap();
    ledger.offer(next.clone()).unwrap();
    let attempt = start(&mut ledger, &hang);
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::from([attempt.clone()]));
    ledger.session_mut().since_boot += Duration::from_secs(600);
    assert_eq!(
        ledger.tick().unwrap(),
        vec![Effect::Terminate(attempt.clone())]
    );
    ledger.session_mut().since_boot += Duration::from_secs(300);
    let _effects = ledger.tick().unwrap(); // reported unresponsive
    let since_boot = ledger.session().since_boot;
    drop(ledger);

    // The agent restarts in the same boot; the program still runs, then goes.
    let facts = SessionFacts {
        since_boot,
        ..session("a", &[&attempt])
    };
    let (mut ledger, _effects) = Ledger::open(store, facts).unwrap();
    ledger.session_mut().programs = LivePrograms::Known(BTreeSet::new());
    let wake = ledger.next_wakeup();
    assert!(
        wake.is_some(),
        "nothing is timed (waits: {:?}): the agent sleeps until an outside event, and `hang`, \
         whose program is gone, stays {:?} with `next` behind it",
        ledger.waits(),
        state(&ledger, &hang).kind()
    );
    // What a tick at that time would find: the attempt ends, `next` may start.
    ledger.session_mut().since_boot += wake.unwrap();
    let _effects = ledger.tick().unwrap();
    assert_ne!(state(&ledger, &hang).kind(), StateKind::Running);
}

/// A tick over more jobs than one commit holds fails on its second commit; the terminations
/// its first commit licensed are kept and handed out by the next tick. Meanwhile one of those
/// attempts, whose launch was never recorded, is said gone by the agent (`program_lost`): it
/// never ran, so it is launched again as the same attempt, its termination cleared. The next
/// tick then hands out the kept `Terminate` for that attempt id, which now names the program
/// just launched again: the agent kills a program whose attempt no committed state says is
/// terminating, and the attempt ends as lost (a retry spent).
///
/// DESIGN.md, "What drives it": outputs are "the effects the caller must carry out" of the
/// committed new state; SEMANTICS.md, "Effects": "They are licensed by a commit that has
/// already reached the store" (here: by a state the store has since replaced); invariant 4:
/// "a stale writer (an older attempt ...) cannot overwrite a newer state".
#[test]
fn a_termination_kept_by_a_failed_tick_is_not_handed_out_after_its_attempt_was_launched_again() {
    let store = MemoryStore::new();
    let armed = std::rc::Rc::new(std::cell::Cell::new(false));
    let wrapped = SecondCommitFails {
        inner: store.clone(),
        armed: armed.clone(),
    };
    let facts = SessionFacts {
        programs: LivePrograms::Unknown,
        ..service_session("a")
    };
    let (mut ledger, _) = Ledger::open(wrapped, facts).unwrap();
    let mut attempts = Vec::new();
    for n in 0..1025u32 {
        let spec =
            msi_job(job(&format!("patch-{n:04}"))).with_max_run_time(Duration::from_secs(600));
        ledger.offer(spec.clone()).unwrap();
        attempts.push(ledger.begin(spec.id()).unwrap()); // launches not recorded yet
    }
    ledger.session_mut().since_boot += Duration::from_secs(600);
    armed.set(true);
    assert!(ledger.tick().is_err(), "the second commit fails");
    // The agent learns that the first one's program never started: launched again.
    let first = attempts[0].clone();
    let relaunch = ledger.program_lost(&first).unwrap();
    assert_eq!(relaunch, vec![Effect::Launch(first.clone())]);
    let _effects = ledger.launched(&first, ProgramId::new(7000, 9)).unwrap();
    let effects = ledger.tick().unwrap();
    let job_state = ledger.job(&first.job).unwrap().state().clone();
    assert!(
        !(effects.contains(&Effect::Terminate(first.clone()))
            && matches!(
                job_state,
                JobState::Running {
                    terminate: None,
                    ..
                }
            )),
        "the relaunched program is terminated by a stale licence: {job_state:?}"
    );
}

/// An operator abandons a running OS upgrade whose program will not go (it restarts the machine
/// itself, any moment). The server then re-offers the upgrade with a spec that no longer says it
/// restarts the machine (the new spec is for a rerun, not for the program already running). The
/// program of the abandoned attempt was launched as one that restarts the machine and still runs:
/// nothing may start beside it (SEMANTICS: "The program of a job an operator abandoned in this
/// boot stands in the way of a start, as a running job's does").
#[test]
fn abandoned_upgrade_still_blocks_after_its_spec_drops_restarts_machine() {
    let store = MemoryStore::new();
    let up = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let patch = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(store, session("boot-a", &[])).unwrap();
    ledger.offer(up.clone()).unwrap();
    ledger.offer(patch.clone()).unwrap();
    let attempt = start(&mut ledger, &up);
    ledger.session_mut().programs = LivePrograms::Known([attempt.clone()].into());
    assert!(matches!(ledger.next_runnable(), NextJob::Wait { .. }));
    let _effects = ledger.abandon(up.id()).unwrap();
    // The upgrade's program ignores the termination: it still runs, and blocks the patch.
    assert!(matches!(ledger.next_runnable(), NextJob::Wait { .. }));
    // The server's new spec: no longer restarting (for a later run).
    let _ = ledger
        .offer(msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::Never))
        .unwrap();
    // The program launched as a machine-restarting upgrade still runs: the patch must wait.
    let next = ledger.next_runnable();
    assert!(
        matches!(next, NextJob::Wait { .. }),
        "the patch may start beside the abandoned upgrade's live program: {next:?}"
    );
}

/// A job's check is owed after a failed attempt (it may restart the machine); meanwhile an
/// ordinary job starts, hangs, and an operator abandons it: its program ignores the termination
/// and still runs. The check then says "not yet": the job needs a restart. DESIGN: "a restart
/// is never licensed while another job runs"; SEMANTICS: the program of a job abandoned in this
/// boot stands in the way "as a running job's does" (the ledger's own model asserts that no
/// `ScheduleRestart` is ever handed out under another job's live program). The restart is
/// held. (It was licensed at once, under the abandoned job's live program.)
#[test]
fn no_restart_is_licensed_under_an_abandoned_program_still_alive() {
    let store = MemoryStore::new();
    let checked = msi_job(job("kb-checked"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_verify_after_reboot(true);
    let patch = msi_job(job("patch"));
    let (mut ledger, _) = Ledger::open(store, session("a", &[])).unwrap();
    ledger.offer(checked.clone()).unwrap();
    let failed = start(&mut ledger, &checked);
    assert_eq!(
        ledger.program_exited(&failed, 1603).unwrap(),
        vec![Effect::Verify(failed.clone())]
    );
    ledger.offer(patch.clone()).unwrap();
    let _hung = abandoned_alive(&mut ledger, &patch);
    // The program will not go: it still runs, and stands in the way of a start.
    let effects = ledger
        .verification(&failed, jobstate::CheckResult::NotYet)
        .unwrap();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. })),
        "a restart licensed under the abandoned job's live program: {effects:?}"
    );
}

/// An upgrade's wrapper reports failure (1603): the failure is provisional for the spec's grace
/// window (10 minutes). The window closes in this boot; the agent has not ticked yet. Then the
/// restart is declared for the attempt (`expect_reboot`, hard: "a restart is already under
/// way"), and the machine restarts. DESIGN: "a window that closes in the same boot lets the
/// failure stand"; invariant 7 (Completed only on evidence). The same facts, with the same
/// times, end the attempt failed when a tick came between: the outcome may not depend on when
/// the agent happened to call `tick` (the core gets the time in every event). (The upgrade was
/// completed, on a reboot two hours after its failure stood.)
#[test]
fn a_restart_declared_after_the_grace_window_closed_does_not_complete_the_failed_upgrade() {
    let store = MemoryStore::new();
    let up = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
    ledger.offer(up.clone()).unwrap();
    let attempt = start(&mut ledger, &up);
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    assert!(matches!(
        state(&ledger, &up),
        JobState::Running {
            provisional: Some(_),
            ..
        }
    ));
    ledger.session_mut().since_boot += Duration::from_secs(2 * 3600);
    ledger.session_mut().now += minutes(120);
    // The window closed long ago: a tick now would let the failure stand. Without one:
    let declared = ledger.expect_reboot(&attempt, jobstate::RebootKind::Hard);
    drop(ledger);
    let (ledger, _) = Ledger::open(store, session("b", &[])).unwrap();
    assert_ne!(
        state(&ledger, &up).kind(),
        StateKind::Completed,
        "completed on a reboot after its failure stood (expect_reboot answered {declared:?})"
    );
}

/// Fix 1 judges the owed check by the spec the never-launched retry began under
/// (`record.spec()`, the started-under spec while `Running`), but the queue it returns to runs
/// under the latest spec, and a retry not yet begun is judged by the latest spec too
/// (`agent_started` on `Queued`). The server adds a detection check while the retry is
/// `Running` (its launch not yet recorded); the machine restarts. A retry still queued owes the
/// failed attempt's check (control, passes); the retry begun is launched at once under the new
/// spec, its check skipped: the upgrade the restart may have finished runs again. The CHANGELOG
/// entry promises "as a queued retry does".
///
/// DESIGN.md, "What the agent may never hear": a launch never recorded "never ran"; none of
/// these "may leave a job ... run twice"; "Specs change": "a rerun ... runs under the latest
/// spec" (and the queued retry here is judged by it).
#[test]
fn a_retry_never_launched_owes_the_check_a_spec_changed_since_asks_for_as_a_queued_retry_does() {
    let old = msi_job(job("kb")).with_reboot(RebootBehaviour::MayRequest);
    let new = old.clone().with_verify_after_reboot(true);
    for begun in [false, true] {
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), session("a", &[])).unwrap();
        ledger.offer(old.clone()).unwrap();
        let first = start(&mut ledger, &old);
        let effects = ledger.program_exited(&first, 1603).unwrap();
        assert!(effects.is_empty(), "no check under the old spec");
        ledger.session_mut().now += chrono::TimeDelta::hours(1);
        ledger.session_mut().since_boot += Duration::from_secs(3600);
        if begun {
            // The retry begins under the old spec; the server then adds a check; the agent
            // dies before the retry's launch is recorded.
            let _second = ledger.begin(old.id()).unwrap();
        }
        let _offer = ledger.offer(new.clone()).unwrap();
        drop(ledger); // the machine restarts

        let (ledger, effects) = Ledger::open(store, session("b", &[])).unwrap();
        let state = ledger.job(old.id()).unwrap().state().clone();
        assert_eq!(
            effects,
            vec![Effect::Verify(first.clone())],
            "begun: {begun}: the failed attempt's check first, no launch; state {state:?}"
        );
    }
}

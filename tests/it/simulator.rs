//! The simulator (`testkit::simulator`): its world behaves as scripted, it is deterministic (the
//! same seed gives the same trace), its crash points cover every commit, and the ledger keeps
//! its promises in it, at every crash point and in randomized worlds.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jobstate::testkit::simulator::{
    Call, Chaos, CrashPoint, CrashWhen, End, Happened, Happening, Outcome, Program, RebootCause,
    Scenario, TERMINATED, check, check_seeds,
};
use jobstate::{
    CheckResult, EventKind, FailureReason, FileStore, JobSpec, JobState, ProgramExit,
    RebootAttribution, RebootBehaviour, RetryPolicy, RunCondition, StateKind,
};

use crate::common::*;

fn minutes_d(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

fn upgrade() -> JobSpec {
    msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine)
}

fn verified_upgrade() -> JobSpec {
    upgrade().with_verify_after_reboot(true)
}

fn installer() -> JobSpec {
    msi_job(job("msi-installer")).with_reboot(RebootBehaviour::MayRequest)
}

fn service_pack() -> JobSpec {
    msi_job(job("service-pack"))
}

fn count(outcome: &Outcome, pred: impl Fn(&Happened) -> bool) -> usize {
    outcome
        .trace()
        .lines()
        .iter()
        .filter(|l| pred(&l.what))
        .count()
}

// ---- The two field reports ----

#[test]
fn seed_000_background_upgrade_with_nobody_logged_on_runs_once_and_is_reported() {
    let outcome = Scenario::new(0x000)
        .background_task()
        .no_user()
        .job(upgrade(), Program::restarts_machine())
        .run_until_idle();
    outcome.assert_invariants();
    assert!(outcome.is_idle());
    let id = upgrade().id().clone();
    assert_eq!(outcome.launches(&id), 1);
    assert_eq!(outcome.reported(&id), [StateKind::Completed]);
    assert_eq!(outcome.reboots(), 1);
    // The server offered it again after the reboot: the ledger refused to run it.
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::Offered {
                answer: jobstate::Offer::CompletedWillNotRun,
                ..
            }
        )),
        1
    );
    let reports = outcome.reports(&id);
    assert_eq!(
        reports[0].reboot,
        Some(RebootAttribution::InitiatedByProgram)
    );
    assert_ne!(reports[0].started_in.as_ref(), Some(&reports[0].boot));
}

#[test]
fn seed_001_service_without_notices_verifies_and_completes_once() {
    let outcome = Scenario::new(0x001)
        .service()
        .no_notices()
        .job(verified_upgrade(), Program::restarts_machine())
        .run_until_idle();
    outcome.assert_invariants();
    let id = verified_upgrade().id().clone();
    assert_eq!(outcome.launches(&id), 1);
    assert_eq!(
        outcome.reported(&id),
        [StateKind::AwaitingReboot, StateKind::Completed]
    );
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::ShuttingDown { notice: true, .. }
        )),
        0,
        "no notice ever reached the service"
    );
    assert!(matches!(
        outcome.job(&id).unwrap().state(),
        JobState::Completed { verified: true, .. }
    ));
}

/// Seed 001 exactly as reported, with realistic timing: the wrapper exits with a failure code
/// 30 s before the upgrade restarts the machine. The ledger licenses the detection check at once
/// (`Effect::Verify`), in the old boot, where the upgrade is not finished yet: "not installed".
/// After the restart (which completed the upgrade) the check is owed again before any retry,
/// and now says "installed": the upgrade runs once. (Found by this simulator: before the fix the
/// upgrade ran twice.)
#[test]
fn seed_001_wrapper_fails_just_before_the_restart_and_the_upgrade_still_runs_once() {
    let outcome = Scenario::new(0x001)
        .no_notices()
        .job(verified_upgrade(), Program::exits_then_restarts(1))
        .run_until_idle();
    outcome.assert_invariants();
    let id = verified_upgrade().id().clone();
    let checks: Vec<CheckResult> = outcome
        .trace()
        .lines()
        .iter()
        .filter_map(|l| match &l.what {
            Happened::Verified { result, .. } => Some(*result),
            _ => None,
        })
        .collect();
    // The failing exit was provisional: no check before the restart, one after it.
    assert_eq!(
        checks,
        [CheckResult::Installed],
        "checked before and after the restart: {}",
        outcome.trace()
    );
    assert_eq!(outcome.launches(&id), 1, "{}", outcome.trace());
    assert!(matches!(
        outcome.job(&id).unwrap().state(),
        JobState::Completed { verified: true, .. }
    ));
}

// ---- Determinism ----

/// A catalogue with one job of each kind.
fn catalogue(scenario: Scenario) -> Scenario {
    let quick = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(60),
        multiplier: 2,
        max_backoff: Duration::from_secs(600),
    };
    scenario
        .job(
            verified_upgrade().with_retry(quick),
            Program::restarts_machine(),
        )
        .job(installer(), Program::exits(3010))
        .job(
            service_pack().with_max_run_time(minutes_d(30)),
            Program::exits(1603)
                .then(Program::hangs())
                .then(Program::exits(0)),
        )
        .job_at(
            minutes_d(90),
            msi_job(job("user-tool"))
                .with_mandatory(false)
                .with_run_condition(RunCondition::OnlyWithUser),
            Program::exits_then_restarts(1641),
        )
        .job_at(
            minutes_d(30),
            msi_job(job("feature-update"))
                .with_reboot(RebootBehaviour::RestartsMachine)
                .with_verify_after_reboot(true)
                .with_max_reboots(4),
            Program::restarts_machine_times(3),
        )
        // A kernel package: exit 0, and the system's pending-restart flag says the rest.
        .job_at(
            minutes_d(45),
            JobSpec::new(job("linux-image"))
                .with_reboot(RebootBehaviour::MayRequest)
                .with_restart_when_pending(true),
            Program::exits(0).leaves_restart_pending(),
        )
        // An installer killed by a signal on its first try (an OOM kill), fine on its second.
        .job_at(
            minutes_d(60),
            msi_job(job("oom-killed")).with_retry(quick),
            Program::exits(ProgramExit::Signal(9)).then(Program::exits(0)),
        )
}

/// The restart policy of a randomized world, by its seed: at once, when no user is logged on
/// (at most 2 hours), or in a nightly window.
fn policy_for(seed: u64) -> jobstate::RestartPolicy {
    match seed % 3 {
        0 => jobstate::RestartPolicy::Immediately,
        1 => jobstate::RestartPolicy::WhenNoUser {
            at_most: Duration::from_secs(2 * 3600),
        },
        _ => jobstate::RestartPolicy::Window(
            jobstate::MaintenanceWindow::new(2, 0, Duration::from_secs(3 * 3600)).unwrap(),
        ),
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let mut distinct = std::collections::BTreeSet::new();
    let seeds = 60;
    let mut lines = 0;
    for seed in 0..seeds {
        let scenario = catalogue(Scenario::new(seed).chaos(Chaos::all()));
        let a = scenario.run_until_idle();
        let b = scenario.run_until_idle();
        let c = scenario.clone().run_until_idle();
        assert_eq!(a.trace(), b.trace(), "seed {seed}");
        assert_eq!(a.trace(), c.trace(), "seed {seed}");
        assert_eq!(a.trace().to_string(), b.trace().to_string());
        assert_eq!(a.jobs(), b.jobs(), "seed {seed}");
        assert_eq!(a.pending(), b.pending());
        assert_eq!(a.end(), b.end());
        distinct.insert(a.trace().to_string());
        lines += a.trace().len();
    }
    // The seed matters: the randomized worlds differ.
    assert!(
        distinct.len() as u64 >= seeds * 9 / 10,
        "only {} distinct traces of {seeds}",
        distinct.len()
    );
    report_figures(&format!(
        "simulator determinism: {seeds} seeds run 3 times each, identical traces; {} distinct \
         worlds, {lines} trace lines",
        distinct.len()
    ));
}

#[test]
fn without_chaos_the_seed_only_names_the_boots() {
    let run = |seed| {
        Scenario::new(seed)
            .job(upgrade(), Program::restarts_machine())
            .run_until_idle()
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.trace().len(), b.trace().len());
    let boots = |o: &Outcome| -> Vec<String> {
        o.trace()
            .lines()
            .iter()
            .filter_map(|l| match &l.what {
                Happened::Booted { boot } => Some(boot.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(boots(&a).len(), 2);
    assert_ne!(boots(&a)[0], boots(&a)[1], "every reboot has a new boot id");
    assert_ne!(boots(&a), boots(&b), "boot ids derive from the seed");
}

// ---- The world: programs, clocks, users, notices, the site server ----

#[test]
fn an_installer_3010_is_reported_as_success_after_the_agent_restarts_the_machine() {
    let outcome = Scenario::new(5)
        .job(installer(), Program::exits(3010))
        .run_until_idle();
    outcome.assert_invariants();
    let id = installer().id().clone();
    assert_eq!(outcome.launches(&id), 1);
    assert_eq!(
        outcome.reported(&id),
        [StateKind::AwaitingReboot, StateKind::Completed]
    );
    assert!(outcome.reports(&id).iter().all(|m| m.reason.is_none()));
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::ShuttingDown {
                cause: RebootCause::Agent(_),
                ..
            }
        )),
        1
    );
    // The same code from a job that never reboots: completed, the restart suppressed.
    let outcome = Scenario::new(5)
        .job(service_pack(), Program::exits(3010))
        .run_until_idle();
    assert_eq!(outcome.reboots(), 0);
    assert!(matches!(
        outcome.job(service_pack().id()).unwrap().state(),
        JobState::Completed {
            restart_suppressed: true,
            ..
        }
    ));
}

#[test]
fn restart_initiated_1641_completes_across_the_programs_restart() {
    let outcome = Scenario::new(6)
        .job(installer(), Program::exits_then_restarts(1641))
        .run_until_idle();
    outcome.assert_invariants();
    let id = installer().id().clone();
    assert_eq!(
        outcome.reported(&id),
        [StateKind::AwaitingReboot, StateKind::Completed]
    );
    assert_eq!(outcome.reboots(), 1);
    assert_eq!(
        outcome.reports(&id)[1].reboot,
        Some(RebootAttribution::RequestedByJob(
            jobstate::RebootKind::Hard
        ))
    );
}

#[test]
fn a_hang_is_terminated_at_the_maximum_run_time_and_retried() {
    let spec = service_pack().with_max_run_time(minutes_d(30));
    let outcome = Scenario::new(7)
        .job(spec.clone(), Program::hangs().then(Program::exits(0)))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 2);
    assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
    let killed: Vec<_> = outcome
        .trace()
        .lines()
        .iter()
        .filter(|l| {
            matches!(
                l.what,
                Happened::Killed {
                    was_running: true,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(killed.len(), 1);
    // Launched at 0:01:00, limit 30 min: killed at 0:31:00.
    assert_eq!(killed[0].at, minutes_d(31));
    let history = outcome.job(spec.id()).unwrap().history();
    assert!(history.iter().any(|e| matches!(
        &e.state,
        JobState::Queued {
            last_failure: Some(FailureReason::TimedOut),
            ..
        }
    )));
    assert!(history.iter().any(|e| matches!(
        e.event.kind,
        EventKind::ProgramExited {
            exit: TERMINATED,
            ..
        }
    )));
}

#[test]
fn exit_codes_follow_the_script_launch_by_launch() {
    let spec = service_pack().with_retry(RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    });
    let outcome = Scenario::new(8)
        .job(
            spec.clone(),
            Program::exits(1603)
                .then(Program::exits(1618))
                .then(Program::exits(1707)),
        )
        .run_until_idle();
    outcome.assert_invariants();
    let codes: Vec<ProgramExit> = outcome
        .trace()
        .lines()
        .iter()
        .filter_map(|l| match l.what {
            Happened::Exited { exit, .. } => Some(exit),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [1603, 1618, 1707].map(ProgramExit::Code));
    assert_eq!(outcome.reported(spec.id()), [StateKind::Completed]);
}

#[test]
fn the_wall_clock_jumps_back_after_a_reboot_and_the_boot_clock_restarts() {
    let outcome = Scenario::new(9)
        .clock_resets_on_reboot(Duration::from_secs(5 * 3600))
        .job(verified_upgrade(), Program::restarts_machine())
        .run_until_idle();
    outcome.assert_invariants();
    let history = outcome.job(verified_upgrade().id()).unwrap().history();
    let started = history
        .iter()
        .find(|e| e.event.kind == EventKind::AttemptStarted)
        .unwrap();
    let recovered = history
        .iter()
        .find(|e| matches!(e.event.kind, EventKind::AgentStarted { .. }))
        .unwrap();
    assert!(
        recovered.event.at < started.event.at,
        "the wall clock went back"
    );
    assert_eq!(recovered.event.since_boot, Duration::from_secs(60));
    assert_ne!(recovered.event.boot, started.event.boot);
    assert_eq!(
        outcome.state(verified_upgrade().id()),
        Some(StateKind::Completed)
    );
    assert_eq!(
        count(&outcome, |h| matches!(h, Happened::ClockJumped { .. })),
        1
    );
}

#[test]
fn a_job_for_users_waits_for_a_log_on() {
    let spec = msi_job(job("user-tool")).with_run_condition(RunCondition::OnlyWithUser);
    let outcome = Scenario::new(10)
        .no_user()
        .at(Duration::from_secs(3 * 3600), Happening::LogOn)
        .job(spec.clone(), Program::exits(0))
        .run_until_idle();
    outcome.assert_invariants();
    let launched = outcome
        .trace()
        .lines()
        .iter()
        .find(|l| matches!(l.what, Happened::Launched { .. }))
        .unwrap();
    assert_eq!(launched.at, Duration::from_secs(3 * 3600));
    // Nobody ever logs on: the job waits, and the run is idle.
    let outcome = Scenario::new(10)
        .no_user()
        .job(spec.clone(), Program::exits(0))
        .run_until_idle();
    assert!(outcome.is_idle());
    assert_eq!(outcome.state(spec.id()), Some(StateKind::Queued));
    assert_eq!(outcome.launches(spec.id()), 0);
}

#[test]
fn notices_are_recorded_when_delivered_and_change_nothing_else() {
    let run = |scenario: Scenario| {
        scenario
            .job(verified_upgrade(), Program::restarts_machine())
            .run_until_idle()
    };
    let with = run(Scenario::new(11).notices());
    let without = run(Scenario::new(11).no_notices());
    for outcome in [&with, &without] {
        outcome.assert_invariants();
        assert_eq!(outcome.launches(verified_upgrade().id()), 1);
    }
    let noticed = |o: &Outcome| {
        o.job(verified_upgrade().id())
            .unwrap()
            .history()
            .iter()
            .any(|e| {
                matches!(
                    e.state,
                    JobState::Running {
                        shutdown_notice_at: Some(_),
                        ..
                    }
                )
            })
    };
    assert!(noticed(&with));
    assert!(!noticed(&without));
    assert_eq!(
        with.reported(verified_upgrade().id()),
        without.reported(verified_upgrade().id())
    );
}

#[test]
fn a_power_cut_interrupts_a_job_that_never_reboots_and_it_runs_again() {
    let outcome = Scenario::new(12)
        .at(minutes_d(5), Happening::PowerCut)
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(service_pack().id()), 2);
    assert_eq!(
        outcome.reported(service_pack().id()),
        [StateKind::Completed]
    );
    assert_eq!(count(&outcome, |h| matches!(h, Happened::Died { .. })), 1);
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::ShuttingDown {
                cause: RebootCause::PowerCut,
                notice: false
            }
        )),
        1
    );
}

#[test]
fn a_failing_site_server_gets_every_report_later() {
    let outcome = Scenario::new(13)
        .at(Duration::ZERO, Happening::SinkFails(3))
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(
        outcome.reported(service_pack().id()),
        [StateKind::Completed]
    );
    assert_eq!(
        count(&outcome, |h| matches!(h, Happened::DeliveryFailed { .. })),
        3
    );
    assert!(outcome.pending().is_empty());

    // Down, then up again hours later.
    let outcome = Scenario::new(13)
        .at(Duration::ZERO, Happening::SinkDown)
        .at(Duration::from_secs(5 * 3600), Happening::SinkUp)
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(
        outcome.reported(service_pack().id()),
        [StateKind::Completed]
    );
    let delivered = outcome
        .trace()
        .lines()
        .iter()
        .find(|l| matches!(l.what, Happened::Delivered { .. }))
        .unwrap();
    assert!(delivered.at >= Duration::from_secs(5 * 3600));

    // Down for good: the message stays pending and the run still ends.
    let outcome = Scenario::new(13)
        .at(Duration::ZERO, Happening::SinkDown)
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    assert!(outcome.is_idle());
    assert_eq!(outcome.pending().len(), 1);
    outcome.assert_invariants();
}

#[test]
fn reruns_and_cancels_from_the_server() {
    let optional = msi_job(job("optional-tool")).with_mandatory(false);
    let outcome = Scenario::new(14)
        .job(optional.clone(), Program::exits(0))
        .job(service_pack(), Program::exits(0))
        .at(
            Duration::from_secs(3600),
            Happening::Rerun(optional.id().clone()),
        )
        .at(
            Duration::from_secs(3600),
            Happening::Rerun(service_pack().id().clone()),
        )
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(optional.id()), 2);
    assert_eq!(
        outcome.launches(service_pack().id()),
        1,
        "mandatory: refused"
    );
    assert!(
        count(&outcome, |h| matches!(
            h,
            Happened::Refused {
                call: Call::Rerun(_),
                ..
            }
        )) == 1
    );

    let outcome = Scenario::new(14)
        .no_user()
        .job(
            optional
                .clone()
                .with_run_condition(RunCondition::OnlyWithUser),
            Program::exits(0),
        )
        .at(
            Duration::from_secs(600),
            Happening::Cancel(optional.id().clone()),
        )
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.reported(optional.id()), [StateKind::Failed]);
    assert_eq!(outcome.launches(optional.id()), 0);
}

#[test]
fn step_through_a_machine_and_make_things_happen() {
    let mut machine = Scenario::new(15)
        .job(verified_upgrade(), Program::restarts_machine())
        .build();
    machine.run_for(minutes_d(5));
    let ledger = machine.ledger().expect("the agent runs");
    assert_eq!(
        ledger.job(verified_upgrade().id()).unwrap().state().kind(),
        StateKind::Running
    );
    machine.happen(Happening::PowerCut);
    assert!(
        machine.ledger().is_none(),
        "the agent died with the machine"
    );
    let outcome = machine.run_until_idle();
    outcome.assert_invariants();
    // Cut before the upgrade finished: the check says it is not there, and after a reboot an
    // attempt is never re-run.
    assert_eq!(outcome.launches(verified_upgrade().id()), 1);
    assert_eq!(
        outcome.reported(verified_upgrade().id()),
        [StateKind::AwaitingReboot, StateKind::Failed]
    );
}

#[test]
fn limits_stop_a_run() {
    let outcome = Scenario::new(16)
        .horizon(Duration::from_secs(30))
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    assert_eq!(outcome.end(), End::Horizon);
    let outcome = Scenario::new(16)
        .max_steps(3)
        .job(service_pack(), Program::exits(0))
        .run_until_idle();
    assert_eq!(outcome.end(), End::StepLimit);
    // A store that does not load: the agent cannot start, and the run says so.
    let outcome = Scenario::new(16)
        .job(service_pack(), Program::exits(0))
        .with_store(|| jobstate::MemoryStore::from_records(vec![vec![0xFF, 0x01, 0x02]]))
        .run_until_idle();
    assert_eq!(outcome.end(), End::AgentFailed);
    assert!(!outcome.violations().is_empty());
    assert_eq!(outcome.launches(service_pack().id()), 0);
}

// ---- Crash points ----

/// Every crash point of each job kind: the program runs as often as its script says (once,
/// or twice for a program that hangs the first time), the job completes, the promises hold.
#[test]
fn at_every_crash_point_each_job_runs_its_program_once() {
    let four = RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    };
    let kinds: Vec<(JobSpec, Program, usize)> = vec![
        (upgrade(), Program::restarts_machine(), 1),
        (verified_upgrade(), Program::restarts_machine(), 1),
        (installer(), Program::exits(3010), 1),
        (installer(), Program::exits_then_restarts(1641), 1),
        (service_pack(), Program::exits(0), 1),
        (
            service_pack()
                .with_max_run_time(minutes_d(30))
                .with_retry(four),
            Program::hangs().then(Program::exits(0)),
            2,
        ),
    ];
    let mut points = 0;
    for (spec, program, launches) in kinds {
        for scenario in [Scenario::new(20), Scenario::new(21).no_user().no_notices()] {
            let scenario = scenario.job(spec.clone(), program.clone());
            points += scenario.for_each_crash_point(|point, outcome| {
                outcome.assert_invariants();
                assert!(outcome.is_idle());
                assert_eq!(outcome.crashes(), 1, "{point}");
                assert_eq!(outcome.launches(spec.id()), launches, "{point}");
                assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
                assert!(!outcome.reported(spec.id()).contains(&StateKind::Failed));
            });
        }
    }
    assert!(points >= 150, "{points}");
    report_figures(&format!(
        "simulator crash points: {points} single-crash runs over 6 job kinds, each program run \
         as scripted"
    ));
}

#[test]
fn crash_points_cover_every_commit_three_ways() {
    let scenario = Scenario::new(22).job(verified_upgrade(), Program::restarts_machine());
    let commits = scenario.run_until_idle().trace().commits();
    let points = scenario.crash_points();
    assert_eq!(points.len(), commits.len() * 3);
    for (commit, call) in &commits {
        for when in CrashWhen::ALL {
            assert!(points.contains(&(
                CrashPoint {
                    commit: *commit,
                    when
                },
                call.clone()
            )));
        }
    }
    assert!(commits.iter().any(|(_, c)| matches!(c, Call::Begin(_))));
    assert!(commits.iter().any(|(_, c)| matches!(c, Call::Open)));
    assert!(
        commits
            .iter()
            .any(|(_, c)| matches!(c, Call::Verification(_)))
    );
    assert!(commits.iter().any(|(_, c)| matches!(c, Call::Deliver)));
}

/// Between `Running` and the launch it licenses: the launch is lost. The agent restarts in the
/// same boot; no process of the attempt is alive and its launch was never recorded, so it never
/// ran: it is launched again at once, as the same attempt (no retry spent, no run-time limit
/// waited for).
#[test]
fn a_crash_between_begin_and_launch_relaunches_the_same_attempt_at_once() {
    let spec = service_pack().with_max_run_time(minutes_d(45));
    let scenario = Scenario::new(23).job(spec.clone(), Program::exits(0));
    let (begin, _) = scenario
        .crash_points()
        .into_iter()
        .find(|(p, call)| p.when == CrashWhen::BeforeEffects && matches!(call, Call::Begin(_)))
        .unwrap();
    let outcome = scenario.clone().crash_at(begin).run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 1);
    assert_eq!(count(&outcome, |h| matches!(h, Happened::Killed { .. })), 0);
    let launched = outcome.launch_times(spec.id())[0];
    assert!(
        launched < minutes_d(5),
        "at once, not after the run-time limit: {launched:?}"
    );
    let record = outcome.job(spec.id()).unwrap();
    assert_eq!(
        record.state().attempt().unwrap().number,
        1,
        "the same attempt"
    );
    assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
}

/// A crash after the site server took a message and before its acknowledgement was committed:
/// delivered twice, same key.
#[test]
fn a_crash_before_the_acknowledgement_delivers_again() {
    let scenario = Scenario::new(24).job(service_pack(), Program::exits(0));
    let (deliver, _) = scenario
        .crash_points()
        .into_iter()
        .find(|(p, call)| p.when == CrashWhen::BeforeCommit && *call == Call::Deliver)
        .unwrap();
    let outcome = scenario.crash_at(deliver).run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.deliveries(service_pack().id()), 2);
    assert_eq!(outcome.reports(service_pack().id()).len(), 1);
}

/// Two crashes: at every crash point, and again at every crash point of the recovery.
#[test]
fn at_every_pair_of_crash_points_the_upgrade_runs_once() {
    let scenario = Scenario::new(25)
        .no_notices()
        .job(verified_upgrade(), Program::restarts_machine());
    let mut runs = 0;
    for (first, _) in scenario.crash_points() {
        let crashed = scenario.clone().crash_at(first);
        runs += crashed.for_each_crash_point(|second, outcome| {
            outcome.assert_invariants();
            assert_eq!(outcome.crashes(), 2, "{first}, then {second}");
            assert_eq!(outcome.launches(verified_upgrade().id()), 1);
            assert_eq!(
                outcome.state(verified_upgrade().id()),
                Some(StateKind::Completed)
            );
        });
    }
    assert!(runs >= 200, "{runs}");
    report_figures(&format!(
        "simulator crash pairs: {runs} runs with two crashes, upgrade run once in each"
    ));
}

// ---- Any store ----

fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("jobstate-it-sim-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_file_store_gives_the_same_trace_as_the_memory_store() {
    // Twice: every history kept, and the tightest retention with a compaction at every commit
    // (finished jobs tombstones at every agent start): the simulator's checks hold either way.
    let tight = {
        let mut least = jobstate::store::Retention::default();
        least.earlier_runs = 0;
        least
    };
    for (retention, compact_after) in [(jobstate::store::Retention::keep_all(), 16_384), (tight, 1)]
    {
        let options = jobstate::FileStoreOptions {
            compact_after,
            per_job: 0,
            retention,
        };
        let dirs = RefCell::new(Vec::new());
        let scenario = catalogue(Scenario::new(26).chaos(Chaos::all().power_cuts(false)));
        let memory = scenario.run_until_idle();
        let file = scenario
            .clone()
            .with_store({
                let dirs = dirs.clone();
                move || {
                    let dir = temp_dir("file");
                    dirs.borrow_mut().push(dir.clone());
                    FileStore::open_with(&dir, options).unwrap()
                }
            })
            // Each agent start opens the store from its directory, as a new process does.
            .reopen_with(move |store: FileStore| {
                let dir = store.dir().to_path_buf();
                drop(store);
                FileStore::open_with(dir, options)
            })
            .run_until_idle();
        file.assert_invariants();
        assert_eq!(memory.trace(), file.trace(), "{retention:?}");
        let (whole, kept) = (memory.jobs(), file.jobs());
        assert_eq!(whole.len(), kept.len());
        for (whole, kept) in whole.iter().zip(kept) {
            assert!(
                kept.is_compaction_of(whole),
                "{retention:?}: {kept:?} {whole:?}"
            );
        }
        if retention == tight {
            assert!(
                kept.iter().any(|j| j.first_seq() > 1),
                "the tight retention compacted nothing"
            );
        }
        for dir in dirs.borrow().iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// A reopen that fails (here: the store opened again while the old one still holds the lock, a
// mistake a harness can make) is the agent's failure to open its ledger: typed, noted in the
// trace, and the end of the run, never a panic inside the simulator.
#[test]
fn a_store_that_cannot_be_reopened_fails_the_agent_with_the_stores_error() {
    let dir = temp_dir("reopen");
    let errors = std::rc::Rc::new(RefCell::new(Vec::new()));
    let outcome = Scenario::new(3)
        .job(upgrade(), Program::restarts_machine())
        .with_store({
            let dir = dir.clone();
            move || FileStore::open(&dir).unwrap()
        })
        .reopen_with({
            let errors = errors.clone();
            move |store: FileStore| {
                let again = FileStore::open(store.dir()); // `store` still holds the lock
                if let Err(error) = &again {
                    errors.borrow_mut().push(format!("{error:?}"));
                }
                again
            }
        })
        .run_until_idle();
    assert_eq!(outcome.end(), End::AgentFailed);
    let errors = errors.borrow();
    assert_eq!(errors.len(), 1, "the first agent start fails: {errors:?}");
    assert!(errors[0].starts_with("Locked"), "{errors:?}");
    // The store went into the failed reopen: the final state cannot be read either.
    assert_eq!(
        outcome.violations(),
        [
            "the agent could not reopen its store",
            "the store does not load at the end: simulator store: the store is being reopened: no store"
        ]
    );
    let refused: Vec<_> = outcome
        .trace()
        .lines()
        .iter()
        .filter_map(|line| match &line.what {
            Happened::Refused {
                call: Call::Open,
                error,
            } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{}", outcome.trace().tail(10));
    assert!(
        refused[0].contains("is locked by another writer"),
        "{refused:?}"
    );
    assert_eq!(outcome.launches(upgrade().id()), 0, "no agent ran");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Seeds: randomized worlds, reported and replayed ----

#[test]
fn a_failing_seed_is_printed_and_replays_exactly() {
    let traces = RefCell::new(Vec::new());
    let test = |scenario: Scenario| {
        let seed = scenario.seed();
        let outcome = catalogue(scenario).run_until_idle();
        traces.borrow_mut().push((seed, outcome.trace().clone()));
        assert!(seed != 4, "seed 4 fails on purpose");
    };
    let failure = catch_unwind(AssertUnwindSafe(|| check_seeds(2..8, test))).unwrap_err();
    let message = failure.downcast_ref::<String>().unwrap();
    assert!(message.contains("JOBSTATE_SIM_SEED=4"), "{message}");
    assert!(message.contains("seed 4 fails on purpose"), "{message}");
    let failed = traces.borrow().last().cloned().unwrap();
    assert_eq!(failed.0, 4, "seeds after the failure did not run");
    // Replaying seed 4 alone gives exactly the failing run.
    traces.borrow_mut().clear();
    let _ = catch_unwind(AssertUnwindSafe(|| check_seeds([4], test)));
    assert_eq!(traces.borrow()[0], failed);
}

static SEEDS: AtomicU64 = AtomicU64::new(0);
static RANDOM_CRASHES: AtomicU64 = AtomicU64::new(0);
static RANDOM_REBOOTS: AtomicU64 = AtomicU64::new(0);

/// Randomized worlds: crashes, power cuts, lost notices, clock jumps, users, a failing site
/// server, jittered programs. `JOBSTATE_SIM_SEEDS` runs more; `JOBSTATE_SIM_SEED` replays one.
#[test]
fn randomized_worlds_keep_every_promise() {
    let ran = check(300, |scenario| {
        // Odd seeds: an agent that runs every runnable job at once.
        let parallel = scenario.seed() % 2 == 1;
        let policy = policy_for(scenario.seed() / 2);
        let outcome =
            catalogue(scenario.parallel(parallel).restart_policy(policy)).run_until_idle();
        outcome.assert_invariants();
        assert!(outcome.is_idle(), "{:?}", outcome.end());
        // A job that restarts the machine never runs twice, whatever happens around it, unless
        // its program died with the agent before it restarted the machine: that attempt ended
        // without a result, and the check said the upgrade was not there.
        let id = verified_upgrade().id().clone();
        let killed = count(
            &outcome,
            |h| matches!(h, Happened::KilledWithAgent { attempt } if attempt.job == id),
        );
        assert!(
            outcome.launches(&id) <= 1 + killed,
            "{} launches, {killed} killed with the agent",
            outcome.launches(&id)
        );
        SEEDS.fetch_add(1, Ordering::Relaxed);
        RANDOM_CRASHES.fetch_add(u64::from(outcome.crashes()), Ordering::Relaxed);
        RANDOM_REBOOTS.fetch_add(u64::from(outcome.reboots()), Ordering::Relaxed);
    });
    report_figures(&format!(
        "simulator randomized worlds: {ran} seeds, {} agent crashes, {} reboots, every promise kept",
        RANDOM_CRASHES.load(Ordering::Relaxed),
        RANDOM_REBOOTS.load(Ordering::Relaxed),
    ));
    assert_eq!(ran, SEEDS.load(Ordering::Relaxed));
}

#[test]
fn one_job_at_a_time_unless_parallel() {
    let scenario = Scenario::new(17)
        .job(installer(), Program::exits(3010))
        .job(
            verified_upgrade(),
            Program::restarts_machine().after(minutes_d(40)),
        );
    let sequential = scenario.run_until_idle();
    sequential.assert_invariants();
    assert_eq!(
        sequential.state(installer().id()),
        Some(StateKind::Completed)
    );
    assert_eq!(
        sequential.state(verified_upgrade().id()),
        Some(StateKind::Completed)
    );
    // An agent that starts every job it may start at once still runs them one at a time: both
    // may restart the machine, and restarts are exclusive (the ledger hands out the second only
    // after the first's restart came). No program dies under another job's restart.
    let parallel = scenario.clone().parallel(true).run_until_idle();
    parallel.assert_invariants();
    assert_eq!(parallel.state(installer().id()), Some(StateKind::Completed));
    assert_eq!(
        parallel.state(verified_upgrade().id()),
        Some(StateKind::Completed)
    );
    assert_eq!(count(&parallel, |h| matches!(h, Happened::Died { .. })), 0);
    let first = parallel.launch_times(installer().id())[0];
    let second = parallel.launch_times(verified_upgrade().id())[0];
    assert!(
        second > first + minutes_d(10),
        "the upgrade waited for the installer's restart: {first:?} {second:?}"
    );
}

/// A store that breaks the rules: once, a load forgets the last commit, as a disk that lost an
/// acknowledged write. The simulator must notice.
struct Forgetful {
    inner: jobstate::MemoryStore,
    last: usize,
    forgot: bool,
}

impl jobstate::store::Store for Forgetful {
    fn load(&mut self) -> Result<jobstate::store::Snapshot, jobstate::store::StoreError> {
        let mut records = self.inner.records();
        if !self.forgot && self.last > 0 {
            records.truncate(records.len() - self.last);
            self.forgot = true;
        }
        self.last = 0;
        self.inner = jobstate::MemoryStore::from_records(records);
        self.inner.load()
    }

    fn commit(
        &mut self,
        commit: &jobstate::store::Commit,
    ) -> Result<jobstate::store::Revision, jobstate::store::StoreError> {
        let before = self.inner.records().len();
        let revision = self.inner.commit(commit)?;
        self.last = self.inner.records().len() - before;
        Ok(revision)
    }
}

#[test]
fn the_simulator_catches_a_store_that_loses_acknowledged_commits() {
    let outcome = Scenario::new(18)
        .no_notices()
        .job(upgrade(), Program::restarts_machine())
        .with_store(|| Forgetful {
            inner: jobstate::MemoryStore::new(),
            last: 0,
            forgot: false,
        })
        .run_until_idle();
    // `Running` was lost with the reboot: the upgrade ran again.
    assert_eq!(outcome.launches(upgrade().id()), 2);
    assert!(
        outcome
            .violations()
            .iter()
            .any(|v| v.starts_with("invariant 2")),
        "{:?}",
        outcome.violations()
    );
    let panic = catch_unwind(AssertUnwindSafe(|| outcome.assert_invariants())).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("simulator seed 18"), "{message}");
    assert!(message.contains("VIOLATION"), "{message}");
}

static ONCE_SEEDS: AtomicU64 = AtomicU64::new(0);

/// Every kind of job, side by side, in randomized worlds without power cuts (which legitimately
/// re-run jobs that never reboot): each runs its program once and completes.
#[test]
fn randomized_worlds_without_power_cuts_run_each_job_once() {
    let jobs: Vec<(JobSpec, Program)> = vec![
        (upgrade(), Program::restarts_machine()),
        (
            msi_job(job("verified-upgrade"))
                .with_reboot(RebootBehaviour::RestartsMachine)
                .with_verify_after_reboot(true),
            Program::restarts_machine(),
        ),
        (installer(), Program::exits(3010)),
        (
            msi_job(job("verified-3010"))
                .with_reboot(RebootBehaviour::MayRequest)
                .with_verify_after_reboot(true),
            Program::exits(3010),
        ),
        (
            msi_job(job("hard-restart")).with_reboot(RebootBehaviour::MayRequest),
            Program::exits_then_restarts(1641),
        ),
        (
            msi_job(job("verified-hard-restart"))
                .with_reboot(RebootBehaviour::MayRequest)
                .with_verify_after_reboot(true),
            Program::exits_then_restarts(1641),
        ),
        (service_pack(), Program::exits(0)),
        (msi_job(job("sp-1707")), Program::exits(1707)),
        (
            JobSpec::new(job("linux-image"))
                .with_reboot(RebootBehaviour::MayRequest)
                .with_restart_when_pending(true),
            Program::exits(0).leaves_restart_pending(),
        ),
    ];
    let ran = check(200, |scenario| {
        // (Programs that die with a crashed agent end their attempts without a result: those
        // jobs legitimately run again, as under power cuts.)
        let chaos = Chaos::all()
            .power_cuts(false)
            .user_sessions(false)
            .kill_mode(false);
        let policy = policy_for(scenario.seed());
        let mut scenario = scenario.chaos(chaos).restart_policy(policy);
        for (spec, program) in &jobs {
            scenario = scenario.job(spec.clone(), program.clone());
        }
        let outcome = scenario.run_until_idle();
        outcome.assert_invariants();
        assert!(outcome.is_idle(), "{:?}", outcome.end());
        for (spec, _) in &jobs {
            assert_eq!(outcome.launches(spec.id()), 1, "{}", spec.id());
            assert_eq!(
                outcome.state(spec.id()),
                Some(StateKind::Completed),
                "{}",
                spec.id()
            );
        }
        ONCE_SEEDS.fetch_add(1, Ordering::Relaxed);
    });
    report_figures(&format!(
        "simulator randomized worlds without power cuts: {ran} seeds x {} job kinds, each run once",
        jobs.len()
    ));
    assert_eq!(ran, ONCE_SEEDS.load(Ordering::Relaxed));
}

/// A crash between `Running` and the launch it licenses, then a reboot: a launch never recorded
/// never ran, so the reboot does not complete the upgrade (SEMANTICS.md invariant 7); it is launched
/// in the new boot, as the same attempt, and completes once, with or without a check.
#[test]
fn a_lost_launch_then_a_reboot_launches_the_upgrade_once_in_the_new_boot() {
    for spec in [upgrade(), verified_upgrade()] {
        // The agent dies at its begin (at 1:00), and the power is cut before it restarts.
        let scenario = Scenario::new(30)
            .at(Duration::from_secs(62), Happening::PowerCut)
            .job(spec.clone(), Program::restarts_machine());
        let (begin, _) = scenario
            .crash_points()
            .into_iter()
            .find(|(p, call)| p.when == CrashWhen::BeforeEffects && matches!(call, Call::Begin(_)))
            .unwrap();
        let outcome = scenario.crash_at(begin).run_until_idle();
        outcome.assert_invariants();
        assert_eq!(outcome.launches(spec.id()), 1, "{}", outcome.trace());
        assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
        let attempt = outcome
            .job(spec.id())
            .unwrap()
            .state()
            .attempt()
            .unwrap()
            .clone();
        assert_eq!(attempt.number, 1, "the same attempt");
        assert!(
            outcome.launch_times(spec.id())[0] > Duration::from_secs(62),
            "launched after the power cut, in the new boot"
        );
    }
}

/// The agent dies between spawning the program and recording its launch: the program runs, with
/// its attempt's marker. The next agent (same boot) sees a process of the attempt alive and takes
/// the launch as observed; the program restarts the machine, and the reboot completes the job.
#[test]
fn a_crash_between_spawn_and_launch_record_is_an_observed_launch() {
    let spec = upgrade();
    let scenario = Scenario::new(31).job(spec.clone(), Program::restarts_machine());
    let (point, _) = scenario
        .crash_points()
        .into_iter()
        .find(|(p, call)| p.when == CrashWhen::BeforeCommit && matches!(call, Call::Launched(_)))
        .unwrap();
    let outcome = scenario.crash_at(point).run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 1, "{}", outcome.trace());
    assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
    let history = outcome.job(spec.id()).unwrap().history();
    assert!(
        history.iter().any(|e| matches!(
            e.state,
            JobState::Running {
                launch: jobstate::Launch::Observed,
                ..
            }
        )),
        "{history:?}"
    );
}

// ---- What the agent may never hear, in simulated worlds ----

/// A feature update that restarts the machine three times: the check says "not yet" after the
/// first two restarts; the job waits for each, within its bound, and completes once.
#[test]
fn an_upgrade_that_restarts_three_times_runs_once_and_completes() {
    let spec = verified_upgrade().with_max_reboots(3);
    let outcome = Scenario::new(40)
        .job(spec.clone(), Program::restarts_machine_times(3))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 1);
    assert_eq!(outcome.reboots(), 3);
    let keys: Vec<String> = outcome
        .reports(spec.id())
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 1",
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 2",
            "os-upgrade/run 1/attempt 1/AwaitingReboot/wait 3",
            "os-upgrade/run 1/attempt 1/Completed",
        ]
    );
    // With a bound of two reboots, the third "not yet" stops the loop.
    let bounded = verified_upgrade().with_max_reboots(2);
    let outcome = Scenario::new(41)
        .job(bounded.clone(), Program::restarts_machine_times(3))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(bounded.id()), 1);
    assert!(matches!(
        outcome.job(bounded.id()).unwrap().state(),
        JobState::Failed {
            reason: FailureReason::RebootLoop { boots: 2 },
            ..
        }
    ));
}

/// Checks scripted whatever the program did: the first check after the restart says "not yet",
/// the agent restarts the machine for the installer, the next says "installed".
#[test]
fn scripted_checks_drive_another_restart() {
    let spec = installer().with_verify_after_reboot(true);
    let outcome = Scenario::new(42)
        .job(
            spec.clone(),
            Program::exits(3010).checks_say([CheckResult::NotYet, CheckResult::Installed]),
        )
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 1);
    assert_eq!(outcome.reboots(), 2, "{}", outcome.trace());
    assert_eq!(outcome.state(spec.id()), Some(StateKind::Completed));
}

/// The agent's restart command fails: the restart never comes. Past the deadline it is licensed
/// again and reported overdue; the next one works, and the job completes after the reboot.
#[test]
fn a_restart_that_never_comes_is_licensed_again_and_reported_overdue() {
    let outcome = Scenario::new(43)
        .restarts_fail(1)
        .job(installer(), Program::exits(3010))
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(installer().id()), 1);
    assert_eq!(outcome.state(installer().id()), Some(StateKind::Completed));
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::RestartDidNotHappen { .. }
        )),
        1
    );
    let keys: Vec<String> = outcome
        .reports(installer().id())
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "msi-installer/run 1/attempt 1/AwaitingReboot/wait 1",
            "msi-installer/run 1/attempt 1/AwaitingReboot/wait 1/overdue 1",
            "msi-installer/run 1/attempt 1/Completed",
        ]
    );
    assert!(outcome.elapsed() > minutes_d(60), "the deadline is an hour");
}

/// An agent crash that kills its programs (systemd's KillMode=control-group): the attempt ends
/// without a result. Without a check, the job runs again; with one, the check decides, and a
/// program that had finished its work is not run again.
#[test]
fn programs_that_die_with_the_agent_end_their_attempts_and_nothing_sticks() {
    // Killed mid-way: retried, completes on the second launch.
    let outcome = Scenario::new(44)
        .programs_die_with_agent()
        .job(service_pack(), Program::exits(0).after(minutes_d(10)))
        .at(minutes_d(5), Happening::AgentCrash)
        .run_until_idle();
    outcome.assert_invariants();
    assert!(outcome.is_idle());
    assert_eq!(outcome.launches(service_pack().id()), 2);
    assert_eq!(
        outcome.state(service_pack().id()),
        Some(StateKind::Completed)
    );
    assert_eq!(
        count(&outcome, |h| matches!(h, Happened::KilledWithAgent { .. })),
        1
    );
    assert!(matches!(
        outcome.job(service_pack().id()).unwrap().history()[3].state,
        JobState::Queued {
            last_failure: Some(FailureReason::ProgramLost),
            ..
        }
    ));
    // With a check that finds the work done, nothing runs again.
    let spec = service_pack().with_verify_after_reboot(true);
    let outcome = Scenario::new(45)
        .programs_die_with_agent()
        .job(
            spec.clone(),
            Program::hangs().checks_say([CheckResult::Installed]),
        )
        .at(minutes_d(5), Happening::AgentCrash)
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(spec.id()), 1);
    assert!(matches!(
        outcome.job(spec.id()).unwrap().state(),
        JobState::Completed { verified: true, .. }
    ));
}

/// A session that cannot tell whether programs are alive concludes nothing: after an agent crash
/// the job waits (visibly, under its run-time limit), the program's exit still ends it.
#[test]
fn an_unknown_program_status_concludes_nothing() {
    let outcome = Scenario::new(46)
        .program_status_unknown()
        .job(service_pack(), Program::exits(0).after(minutes_d(10)))
        .at(minutes_d(5), Happening::AgentCrash)
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(service_pack().id()), 1);
    assert_eq!(
        outcome.state(service_pack().id()),
        Some(StateKind::Completed)
    );
}

/// An operator abandons a job whose program hangs: it fails, is reported, and its program is
/// terminated.
#[test]
fn an_operator_abandons_a_hanging_job() {
    let outcome = Scenario::new(47)
        .job(
            service_pack().with_max_run_time(minutes_d(600)),
            Program::hangs(),
        )
        .at(
            minutes_d(30),
            Happening::Abandon(service_pack().id().clone()),
        )
        .run_until_idle();
    outcome.assert_invariants();
    assert!(matches!(
        outcome.job(service_pack().id()).unwrap().state(),
        JobState::Failed {
            reason: FailureReason::Abandoned,
            ..
        }
    ));
    assert_eq!(outcome.reported(service_pack().id()), [StateKind::Failed]);
    assert_eq!(
        count(&outcome, |h| matches!(
            h,
            Happened::Killed {
                was_running: true,
                ..
            }
        )),
        1
    );
}

/// When the agent ordered restarts, in simulated time.
fn restart_times(outcome: &jobstate::testkit::simulator::Outcome) -> Vec<Duration> {
    outcome
        .trace()
        .lines()
        .iter()
        .filter(|l| matches!(l.what, Happened::RestartScheduled { .. }))
        .map(|l| l.at)
        .collect()
}

/// A kernel package on Debian: exit 0, and `/run/reboot-required`. A job that asks for it is
/// "success, restart required": the agent restarts the machine and the job completes after it,
/// once; a job that does not ask completes at once and nothing restarts.
#[test]
fn a_success_that_leaves_a_pending_restart_restarts_the_machine_when_the_job_asks() {
    let kernel = JobSpec::new(job("linux-image"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_restart_when_pending(true);
    let outcome = Scenario::new(41)
        .job(kernel.clone(), Program::exits(0).leaves_restart_pending())
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.launches(kernel.id()), 1);
    assert_eq!(outcome.reboots(), 1, "{}", outcome.trace());
    assert!(matches!(
        outcome.job(kernel.id()).unwrap().state(),
        JobState::Completed {
            reboot: Some(RebootAttribution::RequestedByJob(
                jobstate::RebootKind::Soft
            )),
            ..
        }
    ));
    let plain = JobSpec::new(job("tool")).with_reboot(RebootBehaviour::MayRequest);
    let outcome = Scenario::new(41)
        .job(plain.clone(), Program::exits(0).leaves_restart_pending())
        .run_until_idle();
    outcome.assert_invariants();
    assert_eq!(outcome.reboots(), 0);
    assert_eq!(outcome.state(plain.id()), Some(StateKind::Completed));
}

/// The restart policy, end to end: with a user logged on all along, "when no user" restarts at
/// its limit; a nightly window restarts at its opening; the job completes once either way.
#[test]
fn the_restart_policy_decides_when_the_agent_restarts_the_machine() {
    let hour = Duration::from_secs(3600);
    let at_once = Scenario::new(42)
        .job(installer(), Program::exits(3010))
        .run_until_idle();
    at_once.assert_invariants();
    // Program::exits ends 10 minutes after its launch.
    let installer_exits = at_once.launch_times(installer().id())[0] + minutes_d(10);
    assert_eq!(restart_times(&at_once), [installer_exits]);

    let postponed = Scenario::new(42)
        .user_logged_on()
        .restart_policy(jobstate::RestartPolicy::WhenNoUser { at_most: 2 * hour })
        .job(installer(), Program::exits(3010))
        .run_until_idle();
    postponed.assert_invariants();
    let times = restart_times(&postponed);
    assert_eq!(times.len(), 1, "{}", postponed.trace());
    assert!(
        times[0] >= installer_exits + 2 * hour
            && times[0] <= installer_exits + 2 * hour + minutes_d(2),
        "{times:?}"
    );
    assert_eq!(postponed.launches(installer().id()), 1);
    assert_eq!(
        postponed.state(installer().id()),
        Some(StateKind::Completed)
    );

    // The simulated day begins at 02:00 UTC: a window at 14:00 opens 12 hours in.
    let window = Scenario::new(42)
        .restart_policy(jobstate::RestartPolicy::Window(
            jobstate::MaintenanceWindow::new(14, 0, hour).unwrap(),
        ))
        .job(installer(), Program::exits(3010))
        .run_until_idle();
    window.assert_invariants();
    let times = restart_times(&window);
    assert_eq!(times.len(), 1, "{}", window.trace());
    assert!(
        times[0] >= 12 * hour && times[0] < 13 * hour,
        "{times:?}\n{}",
        window.trace().tail(20)
    );
    assert_eq!(window.launches(installer().id()), 1);
    assert_eq!(window.state(installer().id()), Some(StateKind::Completed));
}

//! Pending-restart facts: the operating system says a restart is pending (`/run/reboot-required`,
//! `needs-restarting -r`). A job may take a success followed by it as "success, restart
//! required", and may refuse to start while it holds.

use jobstate::session::{RestartPending, SessionFacts};
use jobstate::{
    Effect, Effects, Error, JobSpec, JobState, Ledger, MemoryStore, NextJob, ProgramId,
    RebootAttribution, RebootBehaviour, RebootKind, StateKind, WaitReason,
};

use crate::common::*;

fn session(boot_name: &str, pending: RestartPending) -> SessionFacts {
    SessionFacts {
        restart_pending: pending,
        ..service_session(boot_name)
    }
}

/// Runs `spec` once to its exit with code 0 while the system says `pending`; returns the state
/// and the effects of the exit.
fn run_to_success(spec: &JobSpec, pending: RestartPending) -> (JobState, Effects) {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), session("b1", pending)).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(7, 7)).unwrap();
    let effects = ledger.program_exited(&attempt, 0).unwrap();
    (ledger.job(spec.id()).unwrap().state().clone(), effects)
}

#[test]
fn a_success_followed_by_a_pending_restart_is_success_restart_required_when_the_job_asks() {
    // A kernel package on Debian: exit 0, and /run/reboot-required appears.
    let kernel = JobSpec::new(job("linux-image"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_restart_when_pending(true);
    let (state, effects) = run_to_success(&kernel, RestartPending::Pending);
    assert!(
        matches!(
            state,
            JobState::AwaitingReboot {
                cause: RebootAttribution::RequestedByJob(RebootKind::Soft),
                ..
            }
        ),
        "{state:?}"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. })),
        "{effects:?}"
    );
    // Nothing pending, or unknown: a plain success.
    for pending in [RestartPending::NotPending, RestartPending::Unknown] {
        let (state, effects) = run_to_success(&kernel, pending);
        assert_eq!(state.kind(), StateKind::Completed, "{pending:?}");
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::ScheduleRestart { .. }))
        );
    }
    // A job that does not ask ignores the flag: another update may have left it.
    let plain = JobSpec::new(job("tool")).with_reboot(RebootBehaviour::MayRequest);
    let (state, _) = run_to_success(&plain, RestartPending::Pending);
    assert_eq!(state.kind(), StateKind::Completed);
    // A job that never reboots completes, the restart suppressed, as for an exit code 3010.
    let never = JobSpec::new(job("agent-update")).with_restart_when_pending(true);
    let (state, effects) = run_to_success(&never, RestartPending::Pending);
    assert!(
        matches!(
            state,
            JobState::Completed {
                restart_suppressed: true,
                ..
            }
        ),
        "{state:?}"
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. }))
    );
}

#[test]
fn the_restart_asked_for_by_a_pending_flag_completes_the_job_after_the_new_boot() {
    let store = MemoryStore::new();
    let kernel = JobSpec::new(job("linux-image"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_restart_when_pending(true);
    let (mut ledger, _) =
        Ledger::open(store.clone(), session("b1", RestartPending::Pending)).unwrap();
    ledger.offer(kernel.clone()).unwrap();
    let attempt = ledger.begin(kernel.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(7, 7)).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    drop(ledger);
    let (ledger, _) =
        Ledger::open(store.clone(), session("b2", RestartPending::NotPending)).unwrap();
    let state = ledger.job(kernel.id()).unwrap().state().clone();
    assert!(
        matches!(
            state,
            JobState::Completed {
                reboot: Some(RebootAttribution::RequestedByJob(RebootKind::Soft)),
                ..
            }
        ),
        "{state:?}"
    );
}

#[test]
fn a_job_that_waits_for_a_pending_restart_does_not_start_until_it_came() {
    let store = MemoryStore::new();
    let feature = JobSpec::new(job("feature-update")).with_wait_for_pending_restart(true);
    let other = JobSpec::new(job("tool"));
    let (mut ledger, _) =
        Ledger::open(store.clone(), session("b1", RestartPending::Pending)).unwrap();
    ledger.offer(feature.clone()).unwrap();
    ledger.offer(other.clone()).unwrap();
    // The job that does not care runs; the one that waits says why.
    assert_eq!(ledger.next_runnable(), NextJob::Run(other.id().clone()));
    let wait = ledger
        .waits()
        .into_iter()
        .find(|w| w.job == *feature.id())
        .unwrap();
    assert_eq!(wait.reason, WaitReason::SystemRestartPending);
    assert!(matches!(
        ledger.begin(feature.id()),
        Err(Error::NotRunnable {
            reason: WaitReason::SystemRestartPending,
            ..
        })
    ));
    assert!(
        WaitReason::SystemRestartPending
            .to_string()
            .contains("restart is pending")
    );
    // Unknown is not pending: the job may start (a condition that cannot be read does not
    // hold a job back for ever).
    ledger.session_mut().restart_pending = RestartPending::Unknown;
    assert_eq!(ledger.next_runnable(), NextJob::Run(feature.id().clone()));
    drop(ledger);
    // The restart came.
    let (mut ledger, _) = Ledger::open(store, session("b2", RestartPending::NotPending)).unwrap();
    assert_eq!(ledger.next_runnable(), NextJob::Run(feature.id().clone()));
    ledger.begin(feature.id()).unwrap();
}

#[test]
fn the_flags_are_part_of_the_config_form() {
    let spec: JobSpec = serde_json::from_str(
        r#"{"id":"linux-image","reboot":"may_request","restart_when_pending":true,"wait_for_pending_restart":true}"#,
    )
    .unwrap();
    assert!(spec.restart_when_pending());
    assert!(spec.wait_for_pending_restart());
    let plain: JobSpec = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
    assert!(!plain.restart_when_pending());
    assert!(!plain.wait_for_pending_restart());
}

#[test]
fn the_system_is_asked_once_per_query_and_asked_again_later() {
    let counting = Counting::new(session("b1", RestartPending::Pending));
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), counting).unwrap();
    for n in 0..10 {
        ledger
            .offer(JobSpec::new(job(&format!("feature-{n}"))).with_wait_for_pending_restart(true))
            .unwrap();
    }
    ledger.session().pending_asked.set(0);
    assert!(matches!(
        ledger.next_runnable(),
        NextJob::Wait {
            reason: WaitReason::SystemRestartPending,
            ..
        }
    ));
    assert_eq!(
        ledger.session().pending_asked.get(),
        1,
        "one question for ten jobs"
    );
    // Nothing tells the ledger when the flag clears: it asks again in five minutes.
    assert_eq!(
        ledger.next_wakeup(),
        Some(std::time::Duration::from_secs(300))
    );
    // Jobs that do not care never make the session ask.
    let (mut plain, _) = Ledger::open(
        MemoryStore::new(),
        Counting::new(session("b1", RestartPending::Pending)),
    )
    .unwrap();
    plain.offer(JobSpec::new(job("tool"))).unwrap();
    let attempt = plain.begin(&job("tool")).unwrap();
    let _effects = plain.program_exited(&attempt, 0).unwrap();
    assert_eq!(plain.session().pending_asked.get(), 0);
}

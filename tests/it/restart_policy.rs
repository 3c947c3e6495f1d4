//! Restart policy: when an owed soft restart is licensed — at once, in a maintenance window,
//! once nobody is logged on (up to a deadline), or never by the agent. `ScheduleRestart` says
//! which rule licensed it; every held restart is a named wait with its wake-up.

use std::time::Duration;

use chrono::{TimeZone, Timelike};
use jobstate::session::SessionFacts;
use jobstate::{
    Effect, Effects, JobSpec, Ledger, MaintenanceWindow, MemoryStore, ProgramId, RebootBehaviour,
    RestartHold, RestartPolicy, RestartRelease, StateKind, Timestamp, UserPresence, WaitReason,
};

use crate::common::*;

type MemLedger = Ledger<MemoryStore, SessionFacts>;

const HOUR: Duration = Duration::from_secs(3600);

fn noon() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn kb() -> JobSpec {
    msi_job(job("kb-patch")).with_reboot(RebootBehaviour::MayRequest)
}

/// A ledger at noon whose job `spec` just exited with `code`; returns the exit's effects.
fn exited(
    spec: &JobSpec,
    code: i32,
    user: UserPresence,
    store: &MemoryStore,
) -> (MemLedger, Effects) {
    let session = SessionFacts {
        now: noon(),
        user,
        ..service_session("b1")
    };
    let (mut ledger, _) = Ledger::open(store.clone(), session).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(9, 9)).unwrap();
    let effects = ledger.program_exited(&attempt, code).unwrap();
    (ledger, effects)
}

fn restarts(effects: &[Effect]) -> Vec<RestartRelease> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ScheduleRestart { when, .. } => Some(*when),
            _ => None,
        })
        .collect()
}

fn wait(ledger: &MemLedger, spec: &JobSpec) -> jobstate::JobWait {
    ledger
        .waits()
        .into_iter()
        .find(|w| w.job == *spec.id())
        .unwrap()
}

/// Moves both clocks on by `d`.
fn later(ledger: &mut MemLedger, d: Duration) {
    let session = ledger.session_mut();
    session.now += chrono::TimeDelta::from_std(d).unwrap();
    session.since_boot += d;
}

#[test]
fn immediately_is_the_default_and_says_so() {
    let (_, effects) = exited(&kb(), 3010, UserPresence::LoggedOn, &MemoryStore::new());
    assert_eq!(restarts(&effects), [RestartRelease::AtOnce]);
}

#[test]
fn a_restart_waits_for_the_maintenance_window_and_goes_when_it_opens() {
    let window = MaintenanceWindow::new(2, 0, 2 * HOUR).unwrap();
    let spec = kb().with_restart_policy(Some(RestartPolicy::Window(window)));
    let (mut ledger, effects) =
        exited(&spec, 3010, UserPresence::NoneLoggedOn, &MemoryStore::new());
    assert_eq!(restarts(&effects), []);
    let w = wait(&ledger, &spec);
    assert_eq!(
        w.reason,
        WaitReason::RestartDeferred {
            hold: RestartHold::OutsideWindow
        }
    );
    // The restart deadline (1 h) comes before the window (14 h): the wake-up is the sooner.
    assert_eq!(w.wake_after, Some(HOUR));
    // Its status message (the wait for a restart) is due now until delivered: delivered here,
    // so that the wake-up is the job's.
    assert_eq!(ledger.next_wakeup(), Some(Duration::ZERO));
    assert_eq!(take_reports(&mut ledger).len(), 1);
    assert_eq!(ledger.next_wakeup(), Some(HOUR));
    // The deadline passes: reported overdue, still held by the window.
    later(&mut ledger, HOUR);
    assert_eq!(restarts(&ledger.tick().unwrap()), []);
    assert_eq!(
        take_reports(&mut ledger)
            .iter()
            .filter(|m| m.key.overdue == 1)
            .count(),
        1
    );
    // 01:59: still closed. 02:00: the window opens, and the restart goes.
    later(&mut ledger, 12 * HOUR + Duration::from_secs(59 * 60));
    // Overdue reports catch up one per call after a long sleep; none licenses the restart.
    for _ in 0..4 {
        assert_eq!(restarts(&ledger.tick().unwrap()), []);
    }
    let _overdue = take_reports(&mut ledger);
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(60)));
    later(&mut ledger, Duration::from_secs(60));
    assert_eq!(
        restarts(&ledger.tick().unwrap()),
        [RestartRelease::InWindow]
    );
}

#[test]
fn a_restart_is_postponed_while_a_user_is_logged_on_up_to_its_limit() {
    let spec = kb().with_restart_policy(Some(RestartPolicy::WhenNoUser { at_most: 8 * HOUR }));
    // The user logs off after 2 hours.
    let (mut ledger, effects) = exited(&spec, 3010, UserPresence::LoggedOn, &MemoryStore::new());
    assert_eq!(restarts(&effects), []);
    let w = wait(&ledger, &spec);
    assert_eq!(
        w.reason,
        WaitReason::RestartDeferred {
            hold: RestartHold::UserLoggedOn { at_most: 8 * HOUR }
        }
    );
    assert_eq!(w.wake_after, Some(Duration::from_secs(60)));
    later(&mut ledger, 2 * HOUR);
    assert_eq!(restarts(&ledger.tick().unwrap()), []);
    ledger.session_mut().user = UserPresence::NoneLoggedOn;
    assert_eq!(restarts(&ledger.tick().unwrap()), [RestartRelease::NoUser]);

    // The user never logs off (or presence is unknown): 8 hours, then at once.
    let (mut ledger, _) = exited(&spec, 3010, UserPresence::Unknown, &MemoryStore::new());
    later(&mut ledger, 8 * HOUR - Duration::from_secs(1));
    assert_eq!(restarts(&ledger.tick().unwrap()), []);
    later(&mut ledger, Duration::from_secs(1));
    assert_eq!(
        restarts(&ledger.tick().unwrap()),
        [RestartRelease::PostponedLongEnough]
    );
}

#[test]
fn next_natural_boot_never_restarts_and_the_boot_completes_the_job() {
    let store = MemoryStore::new();
    let (mut ledger, effects) = {
        let session = SessionFacts {
            now: noon(),
            ..service_session("b1")
        };
        let (mut ledger, _) = Ledger::open(store.clone(), session).unwrap();
        // The ledger's default, for every job that names none.
        ledger.set_restart_policy(RestartPolicy::NextNaturalBoot);
        ledger.offer(kb()).unwrap();
        let attempt = ledger.begin(kb().id()).unwrap();
        let _effects = ledger.launched(&attempt, ProgramId::new(9, 9)).unwrap();
        let effects = ledger.program_exited(&attempt, 3010).unwrap();
        (ledger, effects)
    };
    assert_eq!(restarts(&effects), []);
    for _ in 0..5 {
        later(&mut ledger, 24 * HOUR);
        assert_eq!(restarts(&ledger.tick().unwrap()), []);
        assert_eq!(
            wait(&ledger, &kb()).reason,
            WaitReason::RestartDeferred {
                hold: RestartHold::NextNaturalBoot
            }
        );
    }
    // A job with its own policy is not held by the default.
    let own = msi_job(job("own"))
        .with_reboot(RebootBehaviour::MayRequest)
        .with_restart_policy(Some(RestartPolicy::Immediately));
    drop(ledger);
    let (ledger, _) = Ledger::open(store.clone(), service_session("b2")).unwrap();
    assert_eq!(
        ledger.job(kb().id()).unwrap().state().kind(),
        StateKind::Completed
    );
    drop(ledger);
    let (_, effects) = exited(&own, 3010, UserPresence::LoggedOn, &store);
    assert_eq!(restarts(&effects), [RestartRelease::AtOnce]);
}

#[test]
fn a_restart_already_under_way_is_never_deferred() {
    // 1641: the program initiated the restart. When it does not come by the deadline, the agent
    // is licensed to make sure it happens, whatever the policy says.
    let spec = kb().with_restart_policy(Some(RestartPolicy::NextNaturalBoot));
    let (mut ledger, effects) = exited(&spec, 1641, UserPresence::LoggedOn, &MemoryStore::new());
    assert_eq!(restarts(&effects), []);
    later(&mut ledger, HOUR);
    assert_eq!(restarts(&ledger.tick().unwrap()), [RestartRelease::AtOnce]);
}

#[test]
fn an_agent_restart_keeps_the_hold() {
    let store = MemoryStore::new();
    let spec = kb().with_restart_policy(Some(RestartPolicy::WhenNoUser { at_most: 8 * HOUR }));
    let (ledger, _) = exited(&spec, 3010, UserPresence::LoggedOn, &store);
    drop(ledger);
    let session = SessionFacts {
        now: noon(),
        user: UserPresence::LoggedOn,
        ..service_session("b1")
    };
    let (ledger, effects) = Ledger::open(store, session).unwrap();
    assert_eq!(restarts(&effects), []);
    assert!(matches!(
        wait(&ledger, &spec).reason,
        WaitReason::RestartDeferred { .. }
    ));
}

#[test]
fn a_policy_changed_by_the_server_applies_to_a_held_restart_at_once() {
    // The policy says when the agent may restart, not what the attempt means: a server that
    // lifts "next natural boot" is heard at the next tick, not after a boot that may not come.
    let held = kb().with_restart_policy(Some(RestartPolicy::NextNaturalBoot));
    let (mut ledger, effects) = exited(&held, 3010, UserPresence::LoggedOn, &MemoryStore::new());
    assert_eq!(restarts(&effects), []);
    ledger
        .offer(
            held.clone()
                .with_restart_policy(Some(RestartPolicy::Immediately)),
        )
        .unwrap();
    assert_eq!(restarts(&ledger.tick().unwrap()), [RestartRelease::AtOnce]);
}

#[test]
fn the_ledgers_default_policy_holds_the_restart_owed_at_open() {
    // A restart licensed before the agent restarted (in the same boot) is licensed again at
    // open: under the default given at open, not at once.
    let store = MemoryStore::new();
    let (ledger, effects) = exited(&kb(), 3010, UserPresence::LoggedOn, &store);
    assert_eq!(restarts(&effects), [RestartRelease::AtOnce]);
    drop(ledger); // the agent died before it restarted the machine
    let session = SessionFacts {
        now: noon(),
        ..service_session("b1")
    };
    let options =
        jobstate::LedgerOptions::default().with_restart_policy(RestartPolicy::NextNaturalBoot);
    let (ledger, effects) = Ledger::open_with(store.clone(), session.clone(), options).unwrap();
    assert_eq!(restarts(&effects), []);
    assert!(matches!(
        wait(&ledger, &kb()).reason,
        WaitReason::RestartDeferred {
            hold: RestartHold::NextNaturalBoot
        }
    ));
    drop(ledger);
    let (_, effects) = Ledger::open(store, session).unwrap();
    assert_eq!(restarts(&effects), [RestartRelease::AtOnce]);
}

#[test]
fn the_policy_is_part_of_the_config_form() {
    for (text, policy) in [
        (r#""immediately""#, RestartPolicy::Immediately),
        (r#""next_natural_boot""#, RestartPolicy::NextNaturalBoot),
        (
            r#"{"window":{"start":"23:30","length":"3h"}}"#,
            RestartPolicy::Window(MaintenanceWindow::new(23, 30, 3 * HOUR).unwrap()),
        ),
        (
            r#"{"when_no_user":{"at_most":"8h"}}"#,
            RestartPolicy::WhenNoUser { at_most: 8 * HOUR },
        ),
    ] {
        let spec: JobSpec =
            serde_json::from_str(&format!(r#"{{"id":"j","restart_policy":{text}}}"#)).unwrap();
        assert_eq!(spec.restart_policy(), Some(policy), "{text}");
        let back: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
    for (bad, says) in [
        (r#""sometimes""#, "unknown variant"),
        (r#"{"window":{"start":"2:00","length":"2h"}}"#, "HH:MM"),
        (r#"{"window":{"start":"24:00","length":"2h"}}"#, "HH:MM"),
        // Not 03:00 (cargo-mutants: minutes up to 60 let it through).
        (r#"{"window":{"start":"02:60","length":"2h"}}"#, "HH:MM"),
        (r#"{"window":{"start":"02:00"}}"#, "missing field `length`"),
        (
            r#"{"window":{"start":"02:00","length":"0s"}}"#,
            "more than zero",
        ),
        (
            r#"{"window":{"start":"02:00","length":"3d"}}"#,
            "at most a day",
        ),
        (
            r#"{"window":{"start":"02:00","length":"1h","tz":"CET"}}"#,
            "unknown field `tz`",
        ),
        (
            r#"{"when_no_user":{"at_most":"8h","at_mots":"1h"}}"#,
            "unknown field `at_mots`",
        ),
    ] {
        let error =
            serde_json::from_str::<JobSpec>(&format!(r#"{{"id":"j","restart_policy":{bad}}}"#))
                .unwrap_err()
                .to_string();
        assert!(error.contains(says), "{bad}: {error}");
    }
}

/// A window says when it opens and for how long as it was built, and refuses a time of day
/// that is not one (cargo-mutants: `start()` made to answer (0, 0) or (1, 1), or its minutes
/// as `start % 60` or `start * 60`, went unnoticed).
#[test]
fn a_window_tells_its_opening_time_and_length() {
    for (hour, minute) in [(0, 0), (2, 30), (23, 59), (12, 1)] {
        let window = MaintenanceWindow::new(hour, minute, 3 * HOUR).unwrap();
        assert_eq!(window.start(), (hour, minute));
        assert_eq!(window.length(), 3 * HOUR);
    }
    assert_eq!(MaintenanceWindow::new(24, 0, HOUR), None);
    assert_eq!(MaintenanceWindow::new(23, 60, HOUR), None);
    assert_eq!(MaintenanceWindow::new(2, 0, Duration::ZERO), None);
    assert_eq!(MaintenanceWindow::new(2, 0, 25 * HOUR), None);
    assert!(MaintenanceWindow::new(2, 0, 24 * HOUR).is_some());
}

/// How long until a window opens counts the fraction of a second too, a leap second's
/// included (cargo-mutants: the nanoseconds subtracted instead of added, or divided away
/// instead of reduced to the second's, went unnoticed).
#[test]
fn a_window_opens_in_to_the_nanosecond() {
    let window = MaintenanceWindow::new(2, 0, HOUR).unwrap();
    let at = |h, m, s, nanos| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 1, h, m, s)
            .unwrap()
            .with_nanosecond(nanos)
            .unwrap()
    };
    assert_eq!(
        window.opens_in(at(1, 59, 59, 250_000_000)),
        Duration::from_millis(750)
    );
    assert_eq!(window.opens_in(at(2, 0, 0, 0)), Duration::ZERO);
    assert_eq!(window.opens_in(at(2, 59, 59, 999_999_999)), Duration::ZERO);
    assert_eq!(
        window.opens_in(at(3, 0, 0, 500_000_000)),
        Duration::from_secs(23 * 3600) - Duration::from_millis(500)
    );
    // 23:59:60.5, inside a leap second, is taken as 23:59:59.5: half a second to midnight,
    // then two hours.
    assert_eq!(
        window.opens_in(at(23, 59, 59, 1_500_000_000)),
        Duration::from_secs(2 * 3600) + Duration::from_millis(500)
    );
}

/// What a held restart's wait says to an operator (cargo-mutants: `Display` made to print
/// nothing went unnoticed).
#[test]
fn a_held_restart_says_why() {
    assert_eq!(
        RestartHold::OutsideWindow.to_string(),
        "the maintenance window is closed"
    );
    assert_eq!(
        RestartHold::UserLoggedOn {
            at_most: 90 * Duration::from_secs(60)
        }
        .to_string(),
        "a user is logged on (or it is unknown); postponed at most 1h30m longer"
    );
    assert_eq!(
        RestartHold::NextNaturalBoot.to_string(),
        "the agent never restarts the machine for it: the next boot will do"
    );
}

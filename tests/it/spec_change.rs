//! Specs change (SEMANTICS.md): offering again a known job with a changed spec says so; mandatory
//! may be added, never removed; an attempt under way finishes under the spec it started with;
//! a retry or rerun takes the latest spec; a completed mandatory job stays completed.

use std::time::Duration;

use jobstate::store::{Change, JobTable, ReplayError};
use jobstate::{
    Event, EventKind, JobSpec, JobState, Ledger, MemoryStore, Offer, ProgramId, RebootBehaviour,
    RetryPolicy, SpecEffect, StateKind,
};

use crate::common::*;

type MemLedger = Ledger<MemoryStore, jobstate::session::SessionFacts>;

fn open(store: &MemoryStore, boot_name: &str) -> MemLedger {
    Ledger::open(store.clone(), service_session(boot_name))
        .unwrap()
        .0
}

fn start(ledger: &mut MemLedger, spec: &JobSpec) -> jobstate::AttemptId {
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 7)).unwrap();
    attempt
}

#[test]
fn a_queued_job_takes_a_changed_spec_at_once_and_says_so() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let first = msi_job(job("patch"));
    ledger.offer(first.clone()).unwrap();
    let second = first.clone().with_max_run_time(Duration::from_secs(60));
    assert_eq!(
        ledger.offer(second.clone()).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Queued,
            effect: SpecEffect::Now,
            kept_mandatory: false,
        }
    );
    let record = ledger.job(first.id()).unwrap();
    assert_eq!(record.spec(), &second);
    assert_eq!(record.latest_spec(), &second);
    assert_eq!(record.state(), &JobState::initial());
    assert_eq!(
        record.history().last().unwrap().event.kind,
        EventKind::SpecChanged
    );
    // The same spec again changes nothing, and says so.
    let seq = record.seq();
    assert_eq!(
        ledger.offer(second.clone()).unwrap(),
        Offer::AlreadyKnown {
            state: StateKind::Queued
        }
    );
    assert_eq!(ledger.job(first.id()).unwrap().seq(), seq);
    // It survives a restart of the agent.
    drop(ledger);
    let ledger = open(&store, "b1");
    assert_eq!(ledger.job(first.id()).unwrap().spec(), &second);
}

#[test]
fn a_running_attempt_finishes_under_its_spec_and_the_retry_takes_the_latest() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let old = msi_job(job("tool"));
    ledger.offer(old.clone()).unwrap();
    let attempt = start(&mut ledger, &old);
    // The server now says the tool restarts the machine, and gives it one attempt.
    let new = old
        .clone()
        .with_reboot(RebootBehaviour::RestartsMachine)
        .with_retry(RetryPolicy::none());
    assert_eq!(
        ledger.offer(new.clone()).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Running,
            effect: SpecEffect::NextAttempt,
            kept_mandatory: false,
        }
    );
    assert_eq!(ledger.job(old.id()).unwrap().spec(), &old);
    assert_eq!(ledger.job(old.id()).unwrap().latest_spec(), &new);
    // The agent restarts in the same boot: the attempt still runs under the old spec.
    drop(ledger);
    let mut ledger = open(&store, "b1");
    assert_eq!(ledger.job(old.id()).unwrap().spec(), &old);
    // It fails: under the old spec (3 attempts) it is retried, and the retry runs under the new.
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    let record = ledger.job(old.id()).unwrap();
    assert_eq!(record.state().kind(), StateKind::Queued);
    assert_eq!(record.spec(), &new);
}

#[test]
fn a_reboot_while_waiting_still_completes_a_job_whose_new_spec_says_it_never_reboots() {
    // Invariant 3 across a spec change: the attempt declared the restart; the new spec cannot
    // turn the restart it asked for into an interruption.
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let upgrade = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    ledger.offer(upgrade.clone()).unwrap();
    start(&mut ledger, &upgrade);
    let answer = ledger
        .offer(upgrade.clone().with_reboot(RebootBehaviour::Never))
        .unwrap();
    assert!(matches!(
        answer,
        Offer::SpecChanged {
            effect: SpecEffect::NextAttempt,
            ..
        }
    ));
    drop(ledger);
    let ledger = open(&store, "b2");
    assert_eq!(
        ledger.job(upgrade.id()).unwrap().state().kind(),
        StateKind::Completed
    );
}

#[test]
fn mandatory_may_be_added_and_never_removed() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let optional = msi_job(job("tool")).with_mandatory(false);
    ledger.offer(optional.clone()).unwrap();
    let attempt = start(&mut ledger, &optional);
    // Made mandatory while it runs: mandatory at once, even for the attempt under way.
    let mandatory = optional.clone().with_mandatory(true);
    assert_eq!(
        ledger.offer(mandatory.clone()).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Running,
            effect: SpecEffect::NextAttempt,
            kept_mandatory: false,
        }
    );
    assert!(ledger.job(optional.id()).unwrap().spec().is_mandatory());
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    // Completed and mandatory: no rerun, whatever a later offer says.
    assert!(ledger.rerun(optional.id()).is_err());
    let seq = ledger.job(optional.id()).unwrap().seq();
    for spec in [optional.clone(), optional.clone().with_max_reboots(9)] {
        assert_eq!(ledger.offer(spec).unwrap(), Offer::CompletedWillNotRun);
    }
    assert_eq!(ledger.job(optional.id()).unwrap().seq(), seq);

    // A queued mandatory job offered again as optional stays mandatory, and the answer says so.
    let patch = msi_job(job("patch"));
    ledger.offer(patch.clone()).unwrap();
    assert_eq!(
        ledger.offer(patch.clone().with_mandatory(false)).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Queued,
            effect: SpecEffect::Now,
            kept_mandatory: true,
        }
    );
    let changed = patch.clone().with_mandatory(false).with_max_reboots(7);
    assert_eq!(
        ledger.offer(changed).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Queued,
            effect: SpecEffect::Now,
            kept_mandatory: true,
        }
    );
    let record = ledger.job(patch.id()).unwrap();
    assert!(record.spec().is_mandatory());
    assert_eq!(record.spec().max_reboots(), 7);
}

#[test]
fn a_rerun_of_a_finished_optional_job_runs_under_the_latest_spec() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let tool = msi_job(job("tool")).with_mandatory(false);
    ledger.offer(tool.clone()).unwrap();
    let attempt = start(&mut ledger, &tool);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    let newer = tool.clone().with_max_run_time(Duration::from_secs(30));
    assert_eq!(
        ledger.offer(newer.clone()).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Completed,
            effect: SpecEffect::Now,
            kept_mandatory: false,
        }
    );
    let _effects = ledger.rerun(tool.id()).unwrap();
    let attempt = start(&mut ledger, &tool);
    assert_eq!(ledger.job(tool.id()).unwrap().spec(), &newer);
    // The new run-time limit is the one applied: 31 s later the program is to be terminated.
    ledger.session_mut().since_boot += Duration::from_secs(31);
    let effects = ledger.tick().unwrap();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, jobstate::Effect::Terminate(a) if *a == attempt)),
        "{effects:?}"
    );
}

/// A spec change on a finished job leaves it finished: a table replaying it (a store's at
/// open) does not list the job among the unfinished ones (a table that put a job there on a
/// change from a finished state to a finished one reported a completed job as unfinished).
#[test]
fn a_spec_change_on_a_finished_job_leaves_it_out_of_the_unfinished() {
    let store = MemoryStore::new();
    let mut ledger = open(&store, "b1");
    let tool = msi_job(job("tool")).with_mandatory(false);
    let queued = msi_job(job("queued"));
    ledger.offer(tool.clone()).unwrap();
    ledger.offer(queued.clone()).unwrap();
    let attempt = start(&mut ledger, &tool);
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    let newer = tool.clone().with_max_run_time(Duration::from_secs(30));
    assert!(matches!(
        ledger.offer(newer).unwrap(),
        Offer::SpecChanged {
            state: StateKind::Completed,
            ..
        }
    ));
    let mut table = JobTable::default();
    let mut last = None;
    for bytes in store.records() {
        if let jobstate::store::Record::Change(change) = jobstate::codec::decode(&bytes).unwrap() {
            last = Some(change.clone());
            table.apply(*change).unwrap();
        }
    }
    let last = last.unwrap();
    assert_eq!(last.event.kind, EventKind::SpecChanged);
    assert!(last.state.is_terminal(), "{:?}", last.state);
    let unfinished: Vec<_> = table.unfinished().map(|r| r.id().clone()).collect();
    assert_eq!(unfinished, vec![job("queued")]);
}

fn change(seq: u64, spec: Option<JobSpec>, kind: EventKind, state: JobState) -> Change {
    Change {
        job: job("j"),
        seq,
        spec: spec.map(Into::into),
        event: Event {
            at: t0(),
            boot: boot("b1"),
            since_boot: Duration::ZERO,
            kind,
        },
        state,
    }
}

#[test]
fn stored_spec_changes_that_break_the_rules_are_refused() {
    let spec = JobSpec::new(job("j"));
    let create = change(
        1,
        Some(spec.clone()),
        EventKind::Offered,
        JobState::initial(),
    );
    let table = || {
        let mut table = JobTable::default();
        table.apply(create.clone()).unwrap();
        table
    };
    let refused = |c: Change| {
        let mut t = table();
        let error = t.apply(c).unwrap_err();
        assert_eq!(t.get(&job("j")).unwrap().seq(), 1, "nothing applied");
        error
    };
    // A spec carried by a change that is not a spec change.
    assert!(matches!(
        refused(change(
            2,
            Some(spec.clone()),
            EventKind::Offered,
            JobState::initial()
        )),
        ReplayError::Spec { .. }
    ));
    // A spec change without a spec.
    assert!(matches!(
        refused(change(2, None, EventKind::SpecChanged, JobState::initial())),
        ReplayError::Spec { .. }
    ));
    // Another job's spec.
    assert!(matches!(
        refused(change(
            2,
            Some(JobSpec::new(job("other"))),
            EventKind::SpecChanged,
            JobState::initial()
        )),
        ReplayError::SpecMismatch { .. }
    ));
    // Mandatory made optional.
    assert!(matches!(
        refused(change(
            2,
            Some(spec.clone().with_mandatory(false)),
            EventKind::SpecChanged,
            JobState::initial()
        )),
        ReplayError::NotATransition { .. }
    ));
    // A spec change that moves the state.
    let failed = JobState::Failed {
        run: 1,
        attempt: None,
        at: t0(),
        reason: jobstate::FailureReason::Cancelled,
    };
    assert!(matches!(
        refused(change(
            2,
            Some(spec.clone().with_max_reboots(5)),
            EventKind::SpecChanged,
            failed
        )),
        ReplayError::NotATransition { .. }
    ));
    // A valid one applies, and the record's spec follows it.
    let mut t = table();
    let newer = spec.clone().with_max_reboots(5);
    t.apply(change(
        2,
        Some(newer.clone()),
        EventKind::SpecChanged,
        JobState::initial(),
    ))
    .unwrap();
    assert_eq!(t.get(&job("j")).unwrap().spec(), &newer);
}

/// A compaction rewrites every job's history: each spec change must carry its spec there too,
/// and an attempt under way must keep the spec it started with (a snapshot that dropped them
/// was refused at the next open: the store was lost).
#[test]
fn spec_changes_survive_a_file_store_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let old = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let new = old.clone().with_max_run_time(Duration::from_secs(5 * 3600));
    let queued = msi_job(job("patch"));
    let queued_new = queued.clone().with_max_reboots(7);
    {
        let store = jobstate::FileStore::open(dir.path()).unwrap();
        let (mut ledger, _) = Ledger::open(store, service_session("b1")).unwrap();
        ledger.offer(old.clone()).unwrap();
        let attempt = ledger.begin(old.id()).unwrap();
        let _effects = ledger.launched(&attempt, ProgramId::new(4242, 7)).unwrap();
        ledger.offer(new.clone()).unwrap();
        ledger.offer(queued.clone()).unwrap();
        ledger.offer(queued_new.clone()).unwrap();
        let mut store = ledger.into_store();
        store.compact().unwrap();
    }
    let store = jobstate::FileStore::open(dir.path()).unwrap();
    let (ledger, _) = Ledger::open(store, service_session("b1")).unwrap();
    let upgrade = ledger.job(old.id()).unwrap();
    assert_eq!(upgrade.spec(), &old, "the attempt under way keeps its spec");
    assert_eq!(upgrade.latest_spec(), &new);
    assert_eq!(upgrade.state().kind(), StateKind::Running);
    assert_eq!(ledger.job(queued.id()).unwrap().spec(), &queued_new);
}

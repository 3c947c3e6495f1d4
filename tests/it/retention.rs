//! Retention (SEMANTICS.md, "Persistence"): years of finished jobs must not make the agent slow or
//! large. Earlier runs beyond the bound go as a job runs again; finished jobs become tombstones
//! at open and at compaction; what invariant 1 needs (id, final state, mandatory) never goes.

use jobstate::store::{Change, Record, Replay, ReplayError, Retention, Store};
use jobstate::{
    Event, EventKind, FileStore, FileStoreOptions, JobSpec, JobState, Ledger, Offer, ProgramId,
    StateKind,
};

use crate::common::*;

type FileLedger = Ledger<FileStore, jobstate::session::SessionFacts>;

fn open(dir: &std::path::Path, boot_name: &str) -> FileLedger {
    Ledger::open(FileStore::open(dir).unwrap(), service_session(boot_name))
        .unwrap()
        .0
}

/// Runs `spec`'s job once to success (exit 0: no restart).
fn run_once(ledger: &mut FileLedger, spec: &JobSpec, pid: u32) {
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(pid, 1)).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
}

/// An optional job rerun 300 times holds its last runs only, in the ledger and in the store,
/// and keeps its sequence number; reopened, it is a tombstone of one entry.
#[test]
fn a_job_rerun_for_years_holds_a_few_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), "b1");
    let spec = msi_job(job("daily-scan")).with_mandatory(false);
    ledger.offer(spec.clone()).unwrap();
    let mut longest = 0;
    for n in 0..300 {
        if n > 0 {
            let _effects = ledger.rerun(spec.id()).unwrap();
        }
        run_once(&mut ledger, &spec, 100 + n);
        longest = longest.max(ledger.history(spec.id()).unwrap().len());
    }
    let record = ledger.job(spec.id()).unwrap();
    assert_eq!(record.state().run(), 300);
    // Four changes per run (queued, running, launched, completed): the last run and two
    // earlier ones, however many runs there were.
    assert_eq!(record.seq(), 1 + 300 * 3 + 299);
    assert!(longest <= 3 * 4, "history grew to {longest} entries");
    let runs: Vec<u32> = record.history().iter().map(|e| e.state.run()).collect();
    assert_eq!(runs.first(), Some(&298), "runs kept: {runs:?}");
    assert_eq!(
        record.first_seq() + record.history().len() as u64 - 1,
        record.seq()
    );
    let seq = record.seq();
    drop(ledger);
    let ledger = open(dir.path(), "b1");
    let record = ledger.job(spec.id()).unwrap();
    assert!(record.is_tombstone(), "{:?}", record.history());
    assert_eq!(record.seq(), seq);
    assert_eq!(record.state().kind(), StateKind::Completed);
    assert_eq!(record.latest_spec(), &spec);
    // It may run again: optional, and its spec is still there.
    let mut ledger = ledger;
    let _effects = ledger.rerun(spec.id()).unwrap();
    run_once(&mut ledger, &spec, 999);
    assert_eq!(ledger.job(spec.id()).unwrap().state().run(), 301);
}

/// Invariant 1 over a tombstone: a completed mandatory job compacted to its final entry, in the
/// store's snapshot too, is never queued, rerun or launched again.
#[test]
fn a_completed_mandatory_tombstone_never_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), "b1");
    let spec = msi_job(job("kb-upgrade")).with_mandatory(true);
    ledger.offer(spec.clone()).unwrap();
    run_once(&mut ledger, &spec, 42);
    let seq = ledger.job(spec.id()).unwrap().seq();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    drop(store);
    // The snapshot on disk holds the tombstone: one entry, marked as compacted.
    let inspection = FileStore::inspect(dir.path()).unwrap();
    let stored = &inspection.snapshot.jobs[0];
    assert!(stored.is_tombstone());
    assert_eq!(stored.first_seq(), seq);
    assert!(stored.latest_spec().is_mandatory());
    let mut ledger = open(dir.path(), "b2");
    let record = ledger.job(spec.id()).unwrap();
    assert!(record.is_tombstone());
    assert_eq!(record.state().kind(), StateKind::Completed);
    assert_eq!(
        ledger.offer(spec.clone()).unwrap(),
        Offer::CompletedWillNotRun
    );
    assert!(ledger.rerun(spec.id()).is_err());
    assert!(ledger.begin(spec.id()).is_err());
    assert!(ledger.abandon(spec.id()).is_err());
    // Made optional by a later offer: still refused, still completed.
    assert_eq!(
        ledger.offer(spec.clone().with_mandatory(false)).unwrap(),
        Offer::CompletedWillNotRun
    );
    assert_eq!(ledger.job(spec.id()).unwrap().seq(), seq);
    assert_eq!(ledger.next_runnable(), jobstate::NextJob::Idle);
}

/// A job an operator abandoned keeps its last run at open: its program may still run in this
/// boot, and the launch that names it is in that run.
#[test]
fn an_abandoned_job_keeps_its_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), "b1");
    let spec = msi_job(job("stuck")).with_mandatory(false);
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(77, 1)).unwrap();
    let _effects = ledger.abandon(spec.id()).unwrap();
    let whole = ledger.history(spec.id()).unwrap().to_vec();
    drop(ledger);
    let ledger = open(dir.path(), "b1");
    assert_eq!(ledger.history(spec.id()).unwrap(), whole.as_slice());
    assert!(!ledger.job(spec.id()).unwrap().is_tombstone());
}

/// Retention never loses a spec: a job made mandatory by a later offer, then rerun past
/// the bound, keeps the latest (mandatory) spec, and a compacted store replays to the same jobs.
#[test]
fn compacted_history_keeps_the_latest_spec_and_replays_to_the_same_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        retention: {
            let mut least = Retention::default();
            least.earlier_runs = 0;
            least
        },
        ..FileStoreOptions::default()
    };
    let store = FileStore::open_with(dir.path(), options).unwrap();
    let (mut ledger, _) = Ledger::open(store, service_session("b1")).unwrap();
    let optional = msi_job(job("agent-update")).with_mandatory(false);
    ledger.offer(optional.clone()).unwrap();
    run_once(&mut ledger, &optional, 1);
    let _effects = ledger.rerun(optional.id()).unwrap();
    let mandatory = optional.clone().with_mandatory(true);
    assert!(matches!(
        ledger.offer(mandatory.clone()).unwrap(),
        Offer::SpecChanged { .. }
    ));
    let _effects = ledger.rerun(optional.id()).ok();
    let other = msi_job(job("queued-one"));
    ledger.offer(other.clone()).unwrap();
    let jobs: Vec<_> = ledger.jobs().cloned().collect();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    let loaded = store.load().unwrap();
    for (before, after) in jobs.iter().zip(&loaded.jobs) {
        assert_eq!(before.id(), after.id());
        assert_eq!(before.seq(), after.seq());
        assert_eq!(before.state(), after.state());
        assert_eq!(before.latest_spec(), after.latest_spec());
    }
    let record = loaded
        .jobs
        .iter()
        .find(|r| r.id() == optional.id())
        .unwrap();
    assert!(record.latest_spec().is_mandatory());
    // The snapshot's records replay to the same table.
    drop(store);
    let reopened = FileStore::inspect(dir.path()).unwrap().snapshot;
    assert_eq!(reopened.jobs, loaded.jobs);
}

fn compacted(seq: u64, spec: Option<JobSpec>) -> Record {
    let id = job("patch");
    Record::Compacted(Box::new(Change {
        job: id,
        seq,
        spec: spec.map(Into::into),
        event: Event {
            at: t0(),
            boot: boot("b1"),
            since_boot: std::time::Duration::ZERO,
            kind: EventKind::Offered,
        },
        state: JobState::initial(),
    }))
}

/// A compacted record is the start of a job: refused for a job already known, without its spec,
/// or with a sequence number no history reaches.
#[test]
fn a_compacted_record_is_refused_where_it_cannot_be() {
    let spec = msi_job(job("patch"));
    let mut replay = Replay::default();
    assert!(matches!(
        replay.apply(compacted(7, None)),
        Err(ReplayError::Spec { .. })
    ));
    assert!(matches!(
        replay.apply(compacted(0, Some(spec.clone()))),
        Err(ReplayError::NotATransition { .. })
    ));
    // Change 1 is a job's creation: never compacted (the stores would write it back as a
    // creating change, which a replay refuses unless it is an offer).
    assert!(matches!(
        replay.apply(compacted(1, Some(spec.clone()))),
        Err(ReplayError::NotATransition { .. })
    ));
    assert!(matches!(
        replay.apply(compacted(u64::MAX, Some(spec.clone()))),
        Err(ReplayError::NotATransition { .. })
    ));
    // Past 2^48 is beyond any real history (and far from overflowing the next change's
    // number): refused just past it, kept at it (here in a replay of its own).
    assert!(matches!(
        replay.apply(compacted((1 << 48) + 1, Some(spec.clone()))),
        Err(ReplayError::NotATransition { .. })
    ));
    let mut at_the_limit = Replay::default();
    at_the_limit
        .apply(compacted(1 << 48, Some(spec.clone())))
        .unwrap();
    assert_eq!(at_the_limit.jobs().get(spec.id()).unwrap().seq(), 1 << 48);
    assert!(matches!(
        replay.apply(compacted(7, Some(msi_job(job("other"))))),
        Err(ReplayError::SpecMismatch { .. })
    ));
    replay.apply(compacted(7, Some(spec.clone()))).unwrap();
    assert_eq!(replay.jobs().get(spec.id()).unwrap().seq(), 7);
    assert!(matches!(
        replay.apply(compacted(7, Some(spec.clone()))),
        Err(ReplayError::Duplicate { .. })
    ));
    // The next change follows on from the compacted one's number.
    let next = Change {
        job: spec.id().clone(),
        seq: 7,
        spec: None,
        event: Event {
            at: t0(),
            boot: boot("b1"),
            since_boot: std::time::Duration::ZERO,
            kind: EventKind::CancelRequested,
        },
        state: JobState::initial(),
    };
    assert!(matches!(
        replay.apply(Record::Change(Box::new(next))),
        Err(ReplayError::OutOfSequence { expected: 8, .. })
    ));
}

/// The SQLite store keeps every row, and in memory what its retention says.
#[cfg(feature = "sqlite")]
#[test]
fn the_sqlite_store_holds_tombstones_in_memory_and_every_row_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.sqlite");
    let store = jobstate::store::SqliteStore::open(&path).unwrap();
    let (mut ledger, _) = Ledger::open(store, service_session("b1")).unwrap();
    let spec = msi_job(job("kb-1")).with_mandatory(true);
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(5, 1)).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    drop(ledger);
    let mut store = jobstate::store::SqliteStore::open(&path).unwrap();
    assert!(store.load().unwrap().jobs[0].is_tombstone());
    drop(store);
    let mut whole = jobstate::store::SqliteStore::open(&path)
        .unwrap()
        .with_retention(Retention::keep_all());
    let jobs = whole.load().unwrap().jobs;
    assert_eq!(jobs[0].history().len(), 4);
    assert_eq!(jobs[0].first_seq(), 1);
}

/// The tightest retention (no earlier runs) and a compaction at every commit, for ledger and
/// store alike.
fn tight_open(dir: &std::path::Path, session: jobstate::session::SessionFacts) -> FileLedger {
    let mut retention = Retention::default();
    retention.earlier_runs = 0;
    let options = FileStoreOptions {
        compact_after: 1,
        per_job: 0,
        retention,
    };
    let ledger_options = jobstate::LedgerOptions::default().with_retention(retention);
    Ledger::open_with(
        FileStore::open_with(dir, options).unwrap(),
        session,
        ledger_options,
    )
    .unwrap()
    .0
}

/// An optional job `name` run twice, rerun, and the attempt of its third run launched, in a
/// store under the tightest retention.
fn third_run_launched(
    dir: &std::path::Path,
    name: &str,
) -> (FileLedger, JobSpec, jobstate::AttemptId) {
    let mut ledger = tight_open(dir, service_session("b1"));
    let spec = msi_job(job(name)).with_mandatory(false);
    ledger.offer(spec.clone()).unwrap();
    run_once(&mut ledger, &spec, 1);
    let _effects = ledger.rerun(spec.id()).unwrap();
    run_once(&mut ledger, &spec, 2);
    let _effects = ledger.rerun(spec.id()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(3, 1)).unwrap();
    (ledger, spec, attempt)
}

/// The spec an attempt under way started with survives compactions at every commit and a
/// reopen in the same boot, though a later offer (during that attempt of a third run)
/// changed it; completed, the job is a tombstone that never runs again. (From a review.)
#[test]
fn the_spec_of_an_attempt_under_way_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, spec, _attempt) = third_run_launched(dir.path(), "agent");
    let changed = spec
        .clone()
        .with_mandatory(true)
        .with_max_run_time(std::time::Duration::from_secs(7));
    ledger.offer(changed.clone()).unwrap();
    let in_force = ledger.job(spec.id()).unwrap().spec().clone();
    assert_ne!(in_force, changed);
    assert!(in_force.is_mandatory());
    let seq = ledger.job(spec.id()).unwrap().seq();
    drop(ledger);
    let mut ledger = tight_open(dir.path(), service_session("b1"));
    let record = ledger.job(spec.id()).unwrap();
    assert!(record.seq() >= seq);
    assert!(record.first_seq() > 1, "earlier runs compacted away");
    assert_eq!(record.spec(), &in_force);
    assert_eq!(record.latest_spec(), &changed);
    let attempt = record.current_attempt().unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    assert_eq!(
        ledger.job(spec.id()).unwrap().state().kind(),
        StateKind::Completed
    );
    drop(ledger);
    let mut ledger = tight_open(dir.path(), service_session("b2"));
    let record = ledger.job(spec.id()).unwrap();
    assert!(record.is_tombstone());
    assert!(record.latest_spec().is_mandatory());
    assert!(ledger.rerun(spec.id()).is_err());
    assert_eq!(
        ledger.offer(spec.clone()).unwrap(),
        Offer::CompletedWillNotRun
    );
    assert_eq!(ledger.next_runnable(), jobstate::NextJob::Idle);
}

/// An abandoned program still alive in this boot blocks a rerun after compactions at every
/// commit, a new offer with a changed spec and a reopen in the same boot: its launch,
/// in the last run, is kept. (From a review.)
#[test]
fn an_abandoned_program_alive_blocks_a_rerun_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, spec, attempt) = third_run_launched(dir.path(), "stuck");
    let _effects = ledger.abandon(spec.id()).unwrap();
    ledger
        .offer(
            spec.clone()
                .with_max_run_time(std::time::Duration::from_secs(9)),
        )
        .unwrap();
    drop(ledger);
    let mut session = service_session("b1");
    session.programs =
        jobstate::session::LivePrograms::Known([attempt.clone()].into_iter().collect());
    let mut ledger = tight_open(dir.path(), session);
    assert!(matches!(
        ledger.rerun(spec.id()),
        Err(jobstate::Error::ProgramStillRunning { .. })
    ));
}

/// A spec change in an earlier run that is kept survives that run's predecessor being cut away
/// (with tombstones off, one earlier run kept): the latest spec is the changed one, in the
/// ledger, in the store, and reopened. (cargo-mutants: `compact` keeping only the spec changes
/// carried at the new first change, not after it, survived every other test.)
#[test]
fn a_kept_spec_change_survives_the_runs_before_it_being_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut retention = Retention::default();
    retention.earlier_runs = 1;
    retention.tombstones = false;
    let open = |dir: &std::path::Path| {
        let options = FileStoreOptions {
            retention,
            ..FileStoreOptions::default()
        };
        Ledger::open_with(
            FileStore::open_with(dir, options).unwrap(),
            service_session("b1"),
            jobstate::LedgerOptions::default().with_retention(retention),
        )
        .unwrap()
        .0
    };
    let mut ledger = open(dir.path());
    let spec = msi_job(job("nightly-agent")).with_mandatory(false);
    ledger.offer(spec.clone()).unwrap();
    run_once(&mut ledger, &spec, 1);
    let _effects = ledger.rerun(spec.id()).unwrap();
    // Run 2: its attempt under way when the new spec comes; it finishes under the old one.
    let attempt = ledger.begin(spec.id()).unwrap();
    let changed = spec
        .clone()
        .with_max_run_time(std::time::Duration::from_secs(7));
    assert!(matches!(
        ledger.offer(changed.clone()).unwrap(),
        Offer::SpecChanged { .. }
    ));
    let _effects = ledger.launched(&attempt, ProgramId::new(2, 1)).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    // Run 3 pushes run 1 out: the kept history starts at run 2, before the spec change.
    let _effects = ledger.rerun(spec.id()).unwrap();
    let record = ledger.job(spec.id()).unwrap().clone();
    let runs: Vec<u32> = record.history().iter().map(|e| e.state.run()).collect();
    assert_eq!(runs.first(), Some(&2), "runs kept: {runs:?}");
    assert_eq!(record.latest_spec(), &changed);
    assert_eq!(record.spec(), &changed);
    let mut store = ledger.into_store();
    let loaded = store.load().unwrap();
    let stored = loaded.jobs.iter().find(|j| j.id() == spec.id()).unwrap();
    assert_eq!(stored.first_seq(), record.first_seq());
    assert_eq!(stored.latest_spec(), &changed);
    store.compact().unwrap();
    drop(store);
    let ledger = open(dir.path());
    let reopened = ledger.job(spec.id()).unwrap();
    assert_eq!(reopened.latest_spec(), &changed);
    assert_eq!(reopened.first_seq(), stored.first_seq());
}

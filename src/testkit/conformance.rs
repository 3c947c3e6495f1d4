//! The store conformance suite: one call that checks a [`Store`] keeps the rules of the
//! [`Store`] trait, the ones the [`Ledger`] relies on.
//!
//! Implement [`Harness`] for your store (how to create one, how to reopen it as a new process
//! would, optionally how to damage it and compact it), then call [`check`] from a test:
//!
//! ```
//! use jobstate::testkit::conformance::{self, Damage, Harness};
//! use jobstate::MemoryStore;
//! use jobstate::store::StoreError;
//!
//! struct Memory;
//!
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!     fn create(&mut self) -> Result<MemoryStore, StoreError> {
//!         Ok(MemoryStore::new())
//!     }
//!     fn reopen(&mut self, store: MemoryStore) -> Result<MemoryStore, StoreError> {
//!         // A new "process" sees only the encoded records.
//!         Ok(MemoryStore::from_records(store.records()))
//!     }
//!     fn damage(
//!         &mut self,
//!         store: MemoryStore,
//!         damage: Damage,
//!     ) -> Option<Result<MemoryStore, StoreError>> {
//!         let mut records = store.records();
//!         let first = records.first_mut()?; // damage before the end
//!         match damage {
//!             Damage::Corrupt => first.truncate(first.len() / 2),
//!             Damage::FutureVersion => first[0] = u8::MAX,
//!             _ => return None,
//!         }
//!         Some(Ok(MemoryStore::from_records(records)))
//!     }
//! }
//!
//! let report = conformance::check(Memory);
//! assert_eq!(report.checks, 9);
//! // A store in memory has no medium to flip bits in or delete records from, and no second
//! // process to keep out: those checks are skipped, and say so.
//! assert_eq!(report.skipped.len(), 3);
//! ```

use std::time::Duration;

use crate::core::effect::{StatusKey, StatusMessage};
use crate::core::id::{BootId, JobId};
use crate::core::presence::UserPresence;
use crate::core::spec::{JobSpec, RebootBehaviour};
use crate::core::state::{JobState, StateKind};
use crate::ledger::{Ledger, Offer};
use crate::record::Change;
use crate::report::delivery::StatusSink;
use crate::session::{ExecutionContext, NoticeDelivery, SessionFacts};
use crate::store::{Commit, Revision, Snapshot, Store, StoreError};

/// How the suite damages a store's medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// Garble or truncate stored data *before* its end (a damaged row, a flipped bit in an early
    /// record): opening or loading must fail with a typed error.
    Corrupt,
    /// Mark stored data as written by a future format version: opening or loading must fail
    /// with a typed error.
    FutureVersion,
    /// Flip one bit anywhere in what the store keeps: bit `n` modulo the number of bits of its
    /// medium (every record, its checksum, the revision). The suite asks for many `n`. The
    /// store must refuse the damaged medium with a typed error, or load exactly what it held,
    /// or report what it cut ([`Store::open_report`]): never load something else silently.
    FlipBit(u64),
    /// Delete one stored record (a frame, a row) whole: record `n`, counted from the oldest.
    /// Return `None` when there is no record `n` (the suite asks for `n = 0, 1, 2, ...` until
    /// then). The store must refuse the medium, or report what it cut.
    ///
    /// A store whose medium cannot tell the loss of its whole *last* commit from a commit
    /// never written (an append-only journal that keeps its revision nowhere else, as
    /// [`FileStore`](crate::FileStore) does) may leave that commit's records out, and should
    /// say so in its documentation.
    DeleteRecord(u64),
}

/// How the suite makes, reopens, damages and compacts the store under test.
pub trait Harness {
    /// The store under test.
    type Store: Store;

    /// A new, empty store (a fresh directory, database or table).
    fn create(&mut self) -> Result<Self::Store, StoreError>;

    /// The same store as a new process would open it after `store` was dropped: from its medium
    /// only, nothing kept in memory.
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StoreError>;

    /// Damages the medium of `store` (dropped first) and returns the store reopened on the
    /// damaged medium, or an error if reopening already refused it. `None` if the store has no
    /// medium to damage; the bad-data checks are then skipped (and reported as skipped).
    fn damage(
        &mut self,
        store: Self::Store,
        damage: Damage,
    ) -> Option<Result<Self::Store, StoreError>> {
        let _ = (store, damage);
        None
    }

    /// Compacts the store, if it compacts (a snapshot, a vacuum). The default does nothing.
    fn compact(&mut self, store: &mut Self::Store) -> Result<(), StoreError> {
        let _ = store;
        Ok(())
    }

    /// Opens the medium of `store` a second time, as a second agent process would, while
    /// `store` stays open: the store must refuse it ([`StoreError::Locked`]). `None` if the
    /// store has no medium two processes could share; the one-writer checks are then skipped.
    fn open_again(&mut self, store: &Self::Store) -> Option<Result<Self::Store, StoreError>> {
        let _ = store;
        None
    }

    /// Deletes the lock files of `store`, and any other file its lock relies on that a careless
    /// cleanup could delete, while it is open. The default does nothing (a store that locks
    /// what cannot be deleted has nothing to delete).
    fn delete_lock_files(&mut self, store: &Self::Store) {
        let _ = store;
    }
}

/// What [`check`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Checks that ran and passed.
    pub checks: usize,
    /// Checks skipped, with the reason.
    pub skipped: Vec<String>,
}

/// Runs every check on stores from `harness`, and panics with a message naming the rule broken
/// if one is. Returns what ran.
///
/// The rules: a commit is durable when it returns (reopen and compare); a commit based on an old
/// revision is refused and changes nothing; a commit is atomic (a batch with one bad change
/// applies none of it); a job's history comes back in order; completed mandatory jobs are kept
/// forever, across compaction too; pending status messages are kept until acknowledged, and
/// acknowledged ones are gone; damaged data and unknown versions are typed errors; a bit flipped
/// or a record deleted anywhere is refused or reported, never loaded as something else; one
/// writer at a time, even when the store's lock files are deleted.
pub fn check<H: Harness>(mut harness: H) -> Report {
    let mut report = Report {
        checks: 0,
        skipped: Vec::new(),
    };
    let checks: [(&str, Check<H>); 12] = [
        ("durable on return", durable_on_return),
        ("stale writer refused", stale_writer_refused),
        ("batch is atomic", batch_is_atomic),
        ("history in order", history_in_order),
        ("completed mandatory jobs kept", tombstones_kept),
        (
            "tombstones survive compaction",
            tombstones_survive_compaction,
        ),
        ("status messages kept until acknowledged", outbox_kept),
        ("damaged data is a typed error", damaged_data_refused),
        ("unknown versions are a typed error", future_version_refused),
        ("a flipped bit anywhere is reported", flipped_bits_reported),
        (
            "a deleted record anywhere is reported",
            deleted_records_reported,
        ),
        (
            "one writer, even when the lock files are deleted",
            one_writer_even_without_lock_files,
        ),
    ];
    for (name, run) in checks {
        match run(&mut harness) {
            Outcome::Passed => report.checks += 1,
            Outcome::Skipped(why) => report.skipped.push(format!("{name}: {why}")),
        }
    }
    report
}

/// One named check of the suite.
type Check<H> = fn(&mut H) -> Outcome;

enum Outcome {
    Passed,
    Skipped(&'static str),
}

fn ok<T>(result: Result<T, StoreError>, doing: &str) -> T {
    result.unwrap_or_else(|e| panic!("store conformance: {doing} failed: {e}"))
}

fn session(boot: &str) -> SessionFacts {
    SessionFacts {
        boot: BootId::new(boot).unwrap_or_else(|e| panic!("{e}")),
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
        since_boot: Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: crate::session::RestartPending::Unknown,
    }
}

fn id(name: &str) -> JobId {
    JobId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Drives a ledger on `store`: a mandatory upgrade completed across a reboot, an optional job
/// completed, a job failed, one left running. Returns the store and what it should hold.
fn workload<S: Store>(store: S) -> (S, Snapshot) {
    let upgrade = JobSpec::new(id("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let (mut ledger, _) = ok(
        Ledger::open(store, session("boot-a")).map_err(into_store),
        "opening a ledger",
    );
    let run = |ledger: &mut Ledger<S, SessionFacts>, spec: JobSpec, code: Option<i32>| {
        let answer = ok(ledger.offer(spec.clone()).map_err(into_store), "offering");
        assert_eq!(answer, Offer::Queued, "store conformance: a new job");
        let attempt = ok(ledger.begin(spec.id()).map_err(into_store), "beginning");
        let program = crate::core::program::ProgramId::new(4242, 1);
        // The suite proves the store: what the ledger licenses is not its concern (no
        // program runs here).
        let _effects = ok(
            ledger.launched(&attempt, program).map_err(into_store),
            "recording a launch",
        );
        if let Some(code) = code {
            let _effects = ok(
                ledger.program_exited(&attempt, code).map_err(into_store),
                "recording an exit",
            );
        }
    };
    run(
        &mut ledger,
        JobSpec::new(id("tool")).with_mandatory(false),
        Some(0),
    );
    run(
        &mut ledger,
        JobSpec::new(id("broken")).with_retry(crate::core::spec::RetryPolicy::none()),
        Some(1603),
    );
    // The upgrade runs alone (restarts are exclusive); another job waits in the queue.
    run(&mut ledger, upgrade.clone(), None);
    ok(
        ledger.offer(JobSpec::new(id("long"))).map_err(into_store),
        "offering",
    );
    // Both are offered again with changed specs: each change carries a spec of its own.
    for spec in [
        upgrade.with_max_run_time(std::time::Duration::from_secs(5 * 3600)),
        JobSpec::new(id("long")).with_max_reboots(7),
    ] {
        let answer = ok(ledger.offer(spec).map_err(into_store), "offering");
        assert!(
            matches!(answer, Offer::SpecChanged { .. }),
            "store conformance: a changed spec is recorded, not {answer:?}"
        );
    }
    // A job cancelled before it ran: the site server refuses its message for good, and it
    // becomes a dead letter.
    ok(
        ledger
            .offer(JobSpec::new(id("retired")))
            .map_err(into_store),
        "offering",
    );
    // A queued job's cancel licenses nothing; the suite proves the store, not the ledger.
    let _effects = ok(
        ledger.cancel(&id("retired")).map_err(into_store),
        "cancelling",
    );
    let delivery = ok(
        ledger.deliver(&mut RefusesRetired).map_err(into_store),
        "delivering",
    );
    assert_eq!(
        delivery.dead_lettered, 1,
        "store conformance: the refused message is a dead letter"
    );
    let store = ledger.into_store();
    // The upgrade restarted the machine: boot B completes it.
    let (ledger, _) = ok(
        Ledger::open(store, session("boot-b")).map_err(into_store),
        "reopening in a new boot",
    );
    let mut store = ledger.into_store();
    let expected = ok(store.load(), "loading");
    (store, expected)
}

/// A site server that refuses the messages of job `retired` for good and is too busy for the
/// others (they stay pending, uncounted).
struct RefusesRetired;

impl StatusSink for RefusesRetired {
    type Error = std::convert::Infallible;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut crate::report::delivery::Answers,
    ) -> Result<(), Self::Error> {
        for message in batch.iter().filter(|m| m.key.job.as_str() == "retired") {
            answers.reject(&message.key, "409 the deployment was aborted");
        }
        answers.pause(None);
        Ok(())
    }
}

fn into_store(e: crate::error::Error) -> StoreError {
    match e {
        crate::error::Error::Store(e) => e,
        other => StoreError::Io {
            context: "the conformance workload".into(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn same(a: &Snapshot, b: &Snapshot, rule: &str) {
    assert_eq!(
        a.revision, b.revision,
        "store conformance ({rule}): revisions differ"
    );
    // A store may compact history away (its retention), never anything else.
    let compacted = |a: &[crate::record::JobRecord], b: &[crate::record::JobRecord]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| a.is_compaction_of(b) || b.is_compaction_of(a))
    };
    assert!(
        compacted(&a.jobs, &b.jobs),
        "store conformance ({rule}): jobs differ (beyond history compacted away):\n{:?}\n{:?}",
        a.jobs,
        b.jobs
    );
    assert_eq!(
        a.outbox, b.outbox,
        "store conformance ({rule}): pending status messages differ"
    );
    assert_eq!(
        a.dead_letters, b.dead_letters,
        "store conformance ({rule}): dead letters differ"
    );
}

fn durable_on_return<H: Harness>(h: &mut H) -> Outcome {
    let (store, expected) = workload(ok(h.create(), "creating a store"));
    assert_eq!(
        expected.jobs.len(),
        5,
        "store conformance: the workload's five jobs are loaded"
    );
    let mut reopened = ok(h.reopen(store), "reopening");
    same(
        &ok(reopened.load(), "loading after reopening"),
        &expected,
        "durable on return",
    );
    Outcome::Passed
}

/// The next change of `job` as `transition` makes it, from what `snapshot` holds.
fn next_change(snapshot: &Snapshot, job: &str, kind: crate::core::event::EventKind) -> Change {
    let record = snapshot
        .jobs
        .iter()
        .find(|r| r.id().as_str() == job)
        .unwrap_or_else(|| panic!("store conformance: job {job} is missing"));
    let event = crate::core::event::Event {
        at: session("boot-b").now,
        boot: session("boot-b").boot,
        since_boot: Duration::from_secs(120),
        kind,
    };
    let step = crate::core::transition::transition(record.spec(), record.state(), &event)
        .unwrap_or_else(|e| panic!("store conformance: {e}"));
    Change {
        job: record.id().clone(),
        seq: record.seq() + 1,
        spec: None,
        event,
        state: step.state.unwrap_or_else(|| record.state().clone()),
    }
}

fn stale_writer_refused<H: Harness>(h: &mut H) -> Outcome {
    let (mut store, before) = workload(ok(h.create(), "creating a store"));
    let change = next_change(
        &before,
        "tool",
        crate::core::event::EventKind::RerunRequested,
    );
    let stale = Revision(before.revision.0.saturating_sub(1));
    match store.commit(&Commit::new(stale, vec![change.clone()])) {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!(
            "store conformance: a commit based on an old revision must be refused with Conflict, got {other:?}"
        ),
    }
    let mut store = ok(h.reopen(store), "reopening");
    same(
        &ok(store.load(), "loading"),
        &before,
        "a refused commit changes nothing",
    );
    let revision = ok(
        store.commit(&Commit::new(before.revision, vec![change])),
        "committing on the current revision",
    );
    assert!(
        revision > before.revision,
        "store conformance: the revision grows with a commit"
    );
    Outcome::Passed
}

fn batch_is_atomic<H: Harness>(h: &mut H) -> Outcome {
    let (mut store, before) = workload(ok(h.create(), "creating a store"));
    let good = next_change(
        &before,
        "tool",
        crate::core::event::EventKind::RerunRequested,
    );
    let mut bad = next_change(
        &before,
        "broken",
        crate::core::event::EventKind::RerunRequested,
    );
    bad.seq += 5; // a gap: this change does not follow on
    assert!(
        store
            .commit(&Commit::new(before.revision, vec![good.clone(), bad]))
            .is_err(),
        "store conformance: a commit with a change out of sequence must be refused"
    );
    let mut store = ok(h.reopen(store), "reopening");
    same(
        &ok(store.load(), "loading"),
        &before,
        "a refused batch applies nothing",
    );
    let other = next_change(
        &before,
        "broken",
        crate::core::event::EventKind::RerunRequested,
    );
    ok(
        store.commit(&Commit::new(before.revision, vec![good, other])),
        "committing a batch",
    );
    let mut store = ok(h.reopen(store), "reopening");
    let after = ok(store.load(), "loading");
    for job in ["tool", "broken"] {
        let record = after.jobs.iter().find(|r| r.id().as_str() == job);
        assert!(
            matches!(
                record.map(|r| r.state()),
                Some(JobState::Queued { run: 2, .. })
            ),
            "store conformance: every change of a batch is applied ({job})"
        );
    }
    Outcome::Passed
}

fn history_in_order<H: Harness>(h: &mut H) -> Outcome {
    let (store, _) = workload(ok(h.create(), "creating a store"));
    let mut store = ok(h.reopen(store), "reopening");
    for record in ok(store.load(), "loading").jobs {
        let seqs: Vec<u64> = record.history().iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (record.first_seq()..=record.seq()).collect();
        assert_eq!(
            seqs,
            expected,
            "store conformance: the history of {} is in order",
            record.id()
        );
    }
    Outcome::Passed
}

fn assert_tombstone(snapshot: &Snapshot, rule: &str) {
    let upgrade = snapshot
        .jobs
        .iter()
        .find(|r| r.id().as_str() == "os-upgrade");
    assert!(
        matches!(
            upgrade.map(|r| r.state().kind()),
            Some(StateKind::Completed)
        ),
        "store conformance ({rule}): the completed mandatory job must be kept"
    );
}

fn tombstones_kept<H: Harness>(h: &mut H) -> Outcome {
    let (store, _) = workload(ok(h.create(), "creating a store"));
    let mut store = ok(h.reopen(store), "reopening");
    let snapshot = ok(store.load(), "loading");
    assert_tombstone(&snapshot, "after reopening");
    // And a ledger on it never starts it again.
    let (mut ledger, effects) = ok(
        Ledger::open(store, session("boot-c")).map_err(into_store),
        "opening a ledger",
    );
    assert!(
        effects
            .iter()
            .all(|e| !matches!(e, crate::core::effect::Effect::Launch(_)))
    );
    let spec = JobSpec::new(id("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    assert_eq!(
        ok(ledger.offer(spec).map_err(into_store), "offering again"),
        Offer::CompletedWillNotRun
    );
    Outcome::Passed
}

fn tombstones_survive_compaction<H: Harness>(h: &mut H) -> Outcome {
    let (mut store, before) = workload(ok(h.create(), "creating a store"));
    ok(h.compact(&mut store), "compacting");
    let mut store = ok(h.reopen(store), "reopening after compaction");
    let after = ok(store.load(), "loading after compaction");
    assert_tombstone(&after, "after compaction");
    // Every job, and its history unless the store's retention compacted it away.
    assert!(
        after.jobs.len() == before.jobs.len()
            && after
                .jobs
                .iter()
                .zip(&before.jobs)
                .all(|(a, b)| a.is_compaction_of(b)),
        "store conformance: compaction keeps every job, its state, specs and number"
    );
    assert_eq!(
        after.outbox, before.outbox,
        "store conformance: compaction keeps pending messages"
    );
    assert_eq!(
        after.dead_letters, before.dead_letters,
        "store conformance: compaction keeps dead letters"
    );
    Outcome::Passed
}

struct AcceptAll(Vec<StatusKey>);

impl StatusSink for AcceptAll {
    type Error = std::convert::Infallible;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut crate::report::delivery::Answers,
    ) -> Result<(), Self::Error> {
        self.0.extend(batch.iter().map(|m| m.key.clone()));
        answers.accept_all();
        Ok(())
    }
}

fn outbox_kept<H: Harness>(h: &mut H) -> Outcome {
    let (store, before) = workload(ok(h.create(), "creating a store"));
    // Completed (tool), Failed (broken), Completed (os-upgrade): three pending messages.
    assert_eq!(
        before.outbox.len(),
        3,
        "store conformance: three status messages are pending"
    );
    assert_eq!(
        before.dead_letters.len(),
        1,
        "store conformance: one dead letter is kept"
    );
    let mut store = ok(h.reopen(store), "reopening");
    let loaded = ok(store.load(), "loading");
    assert_eq!(
        loaded.outbox, before.outbox,
        "store conformance: pending messages are kept"
    );
    assert_eq!(
        loaded.dead_letters, before.dead_letters,
        "store conformance: dead letters are kept"
    );
    let (mut ledger, _) = ok(
        Ledger::open(store, session("boot-b")).map_err(into_store),
        "opening a ledger",
    );
    let mut sink = AcceptAll(Vec::new());
    ok(ledger.deliver(&mut sink).map_err(into_store), "delivering");
    assert_eq!(sink.0.len(), 3);
    let mut store = ok(h.reopen(ledger.into_store()), "reopening");
    let loaded = ok(store.load(), "loading");
    assert!(
        loaded.outbox.is_empty(),
        "store conformance: acknowledged messages are gone"
    );
    assert_eq!(
        loaded.dead_letters, before.dead_letters,
        "store conformance: a dead letter stays until re-queued or discarded"
    );
    // Re-queued, it is pending again, durably, and delivered like any other.
    let (mut ledger, _) = ok(
        Ledger::open(store, session("boot-b")).map_err(into_store),
        "opening a ledger",
    );
    let key = before.dead_letters[0].message.key.clone();
    ok(ledger.requeue(&key).map_err(into_store), "re-queueing");
    let mut store = ok(h.reopen(ledger.into_store()), "reopening");
    let loaded = ok(store.load(), "loading");
    assert!(
        loaded.dead_letters.is_empty() && loaded.outbox.len() == 1,
        "store conformance: a re-queued dead letter is pending again"
    );
    let (mut ledger, _) = ok(
        Ledger::open(store, session("boot-b")).map_err(into_store),
        "opening a ledger",
    );
    ok(ledger.deliver(&mut sink).map_err(into_store), "delivering");
    assert_eq!(sink.0.last(), Some(&key));
    Outcome::Passed
}

fn refused<H: Harness>(h: &mut H, damage: Damage) -> Outcome {
    let (store, _) = workload(ok(h.create(), "creating a store"));
    let Some(reopened) = h.damage(store, damage) else {
        return Outcome::Skipped("the harness cannot damage this store");
    };
    let result = reopened.and_then(|mut store| store.load());
    assert!(
        result.is_err(),
        "store conformance: a store damaged with {damage:?} must be refused with a typed error, not loaded"
    );
    Outcome::Passed
}

fn damaged_data_refused<H: Harness>(h: &mut H) -> Outcome {
    refused(h, Damage::Corrupt)
}

fn future_version_refused<H: Harness>(h: &mut H) -> Outcome {
    refused(h, Damage::FutureVersion)
}

/// How many bits the flip check flips (in a fresh store each time).
const FLIPS: u64 = 40;

/// Whether `store` (reopened on a damaged medium) refused the damage, loaded exactly
/// `expected`, or reported what it cut; `Err` describes what it did instead.
fn refused_or_reported<S: Store>(
    reopened: Result<S, StoreError>,
    expected: &Snapshot,
    unchanged_allowed: bool,
) -> Result<(), String> {
    let Ok(mut store) = reopened else {
        return Ok(());
    };
    let Ok(loaded) = store.load() else {
        return Ok(());
    };
    let report = store.open_report();
    if !report.is_clean() {
        return Ok(());
    }
    let unchanged = loaded.revision == expected.revision
        && loaded.jobs == expected.jobs
        && loaded.outbox == expected.outbox;
    if unchanged && unchanged_allowed {
        return Ok(());
    }
    Err(format!(
        "loaded revision {} with {} jobs and {} pending messages (the store held revision {} with {} jobs and {} messages), with nothing reported",
        loaded.revision,
        loaded.jobs.len(),
        loaded.outbox.len(),
        expected.revision,
        expected.jobs.len(),
        expected.outbox.len()
    ))
}

fn flipped_bits_reported<H: Harness>(h: &mut H) -> Outcome {
    // Bits spread over the whole medium, whatever its size (a multiplicative sequence).
    for i in 0..FLIPS {
        let n = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let (store, expected) = workload(ok(h.create(), "creating a store"));
        let Some(reopened) = h.damage(store, Damage::FlipBit(n)) else {
            return Outcome::Skipped("the harness cannot flip bits of this store");
        };
        if let Err(what) = refused_or_reported(reopened, &expected, true) {
            panic!("store conformance: after flipping bit {n} (flip {i}), the store {what}");
        }
    }
    Outcome::Passed
}

fn deleted_records_reported<H: Harness>(h: &mut H) -> Outcome {
    for n in 0.. {
        let (store, expected) = workload(ok(h.create(), "creating a store"));
        let Some(reopened) = h.damage(store, Damage::DeleteRecord(n)) else {
            if n == 0 {
                return Outcome::Skipped("the harness cannot delete records of this store");
            }
            break;
        };
        if let Err(what) = refused_or_reported(reopened, &expected, false) {
            panic!("store conformance: after deleting record {n}, the store {what}");
        }
    }
    Outcome::Passed
}

fn one_writer_even_without_lock_files<H: Harness>(h: &mut H) -> Outcome {
    let (mut store, before) = workload(ok(h.create(), "creating a store"));
    let refused = |second: Result<H::Store, StoreError>, when: &str| match second {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!(
            "store conformance: a second writer {when} must be refused with Locked, got {other}"
        ),
        Ok(_) => panic!("store conformance: a second writer {when} was let in"),
    };
    let Some(second) = h.open_again(&store) else {
        return Outcome::Skipped("the harness cannot open the store a second time");
    };
    refused(second, "while the first is open");
    h.delete_lock_files(&store);
    for _ in 0..2 {
        let Some(second) = h.open_again(&store) else {
            panic!("store conformance: open_again answered once, then not");
        };
        refused(second, "after the lock files were deleted");
    }
    // The first writer carries on, and what it commits is there for the next one.
    let change = next_change(
        &before,
        "tool",
        crate::core::event::EventKind::RerunRequested,
    );
    ok(
        store.commit(&Commit::new(before.revision, vec![change])),
        "committing after the lock files were deleted",
    );
    let after = ok(store.load(), "loading");
    let mut store = ok(h.reopen(store), "reopening");
    same(
        &ok(store.load(), "loading"),
        &after,
        "the one writer's commits",
    );
    Outcome::Passed
}

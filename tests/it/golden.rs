//! The on-disk format, pinned (issue 12, "a format pinned"): golden stores, written by a
//! scripted story that produces every kind of record, committed under `tests/golden/`, and read
//! by every later version. The rule (ARCHITECTURE.md): every released format is read by every
//! later version; a change of the bytes written is a new format, with golden files of its own
//! beside the old ones.
//!
//! - `format-2/`: the story's records (`records.json`), a file store (journal and snapshot) and
//!   a SQLite store. Snapshots and SQLite rows are still written in format 2.
//! - `format-3/`: the same story's journal in format 3 (changes written against their job's
//!   previous change), after format 2's snapshot.
//!
//! `JOBSTATE_WRITE_GOLDEN=1 cargo test --all-features --test it golden` writes the newest
//! format's journal again; do that only for a new format, never to make a failing test pass.
//! Format 2's files are never written again.
//!
//! Once, before format 2 was released, the story's snapshot was written again without a change
//! of encoding: the file store began making a job a tombstone in the change that finishes it,
//! so the rerun job's first run is a tombstone in the snapshot. The snapshot written before
//! that (`file/snapshot.earlier`, with the same journal) is kept and read as well: a store that
//! an earlier build left must open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jobstate::report::DeliveryPolicy;
use jobstate::session::SessionFacts;
use jobstate::store::{Commit, Record, Replay, Revision, Snapshot, Store, StoreError};
use jobstate::{
    ExitCodePolicy, ExitOutcome, FileStore, FileStoreOptions, JobSpec, Ledger, MaintenanceWindow,
    ProgramExit, ProgramId, RebootBehaviour, RestartPolicy, RetryPolicy, RunCondition,
    StatusMessage, codec,
};

use crate::common::*;

/// The format the golden records, snapshot and SQLite store are in (format 3 changed the
/// journal only).
const FORMAT: &str = "format-2";
/// The format of the journals this build writes.
const JOURNAL_FORMAT: &str = "format-3";

fn golden_dir() -> PathBuf {
    golden_dir_of(FORMAT)
}

fn golden_dir_of(format: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format)
}

/// A store that keeps every record committed to it, in order.
struct Recording<S> {
    inner: S,
    records: Vec<Record>,
}

impl<S: Store> Store for Recording<S> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        let revision = self.inner.commit(commit)?;
        self.records.extend(commit.records());
        Ok(revision)
    }
}

/// The site server of the story: rejects `retired`, fails `flaky`, accepts the rest.
fn server() -> Scripted<impl FnMut(&StatusMessage) -> Reply> {
    Scripted::new(|m: &StatusMessage| match m.key.job.as_str() {
        "retired" => Reply::Reject("409 the deployment was aborted"),
        "flaky" => Reply::Retry("HTTP 500"),
        _ => Reply::Accept,
    })
}

type StoryLedger<S> = Ledger<Recording<S>, SessionFacts>;

fn session(boot_name: &str, minute: i64) -> SessionFacts {
    let mut facts = service_session(boot_name);
    facts.now = t0() + minutes(minute);
    facts
}

/// The story: every record kind, every state, most event kinds, specs with every option set.
/// `between` runs once, between its two halves (the file store compacts there, so that both a
/// snapshot and a journal hold records).
fn story<S: Store>(store: S, between: impl FnOnce(&mut S)) -> Recording<S> {
    let store = Recording {
        inner: store,
        records: Vec::new(),
    };
    let (mut ledger, _) = Ledger::open(store, session("golden-boot-1", 0)).unwrap();
    ledger.set_delivery_policy(DeliveryPolicy {
        give_up_after_attempts: Some(1),
        ..DeliveryPolicy::default()
    });
    // Both clocks move: run-time limits are measured on the monotonic one.
    let at = |ledger: &mut StoryLedger<S>, minute: i64| {
        let session = ledger.session_mut();
        let now = t0() + minutes(minute);
        session.since_boot += (now - session.now).to_std().unwrap();
        session.now = now;
    };
    let window = MaintenanceWindow::new(1, 30, Duration::from_secs(7200)).unwrap();
    let specs = [
        msi_job(job("msi-patch")).with_retry(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        }),
        JobSpec::new(job("os-upgrade"))
            .with_reboot(RebootBehaviour::RestartsMachine)
            .with_verify_after_reboot(true)
            .with_max_reboots(3)
            .with_restart_policy(Some(RestartPolicy::Window(window))),
        JobSpec::new(job("tool"))
            .with_mandatory(false)
            .with_run_condition(RunCondition::OnlyWithoutUser)
            .with_retry(RetryPolicy::none())
            .with_max_run_time(Duration::from_secs(5400)),
        msi_job(job("asks-restart"))
            .with_reboot(RebootBehaviour::MayRequest)
            .with_restart_policy(Some(RestartPolicy::WhenNoUser {
                at_most: Duration::from_secs(3600),
            }))
            .with_restart_when_pending(true)
            .with_wait_for_pending_restart(true),
        JobSpec::new(job("custom-codes"))
            .with_reboot(RebootBehaviour::RestartsMachine)
            .with_exit_codes(
                ExitCodePolicy::new(ExitOutcome::Failure)
                    .with_code(0, ExitOutcome::Success)
                    .with_code(194, ExitOutcome::SuccessRestartRequired),
            )
            .with_failure_grace(Duration::from_secs(120))
            .with_restart_deadline(Duration::from_secs(1800))
            .with_terminate_grace(Duration::from_secs(30)),
        JobSpec::new(job("retired")),
        JobSpec::new(job("flaky")),
        JobSpec::new(job("optional")).with_mandatory(false),
        JobSpec::new(job("queued")),
        JobSpec::new(job("lost")).with_retry(RetryPolicy::none()),
        JobSpec::new(job("launch-fails")).with_retry(RetryPolicy::none()),
        JobSpec::new(job("slow"))
            .with_retry(RetryPolicy::none())
            .with_max_run_time(Duration::from_secs(60)),
    ];
    for spec in &specs {
        ledger.offer(spec.clone()).unwrap();
    }
    // A spec change: the queued job is offered again with a longer run-time limit.
    ledger
        .offer(JobSpec::new(job("queued")).with_max_run_time(Duration::from_secs(9000)))
        .unwrap();
    // msi-patch: 1603, a retry after its back-off, then success.
    let attempt = ledger.begin(&job("msi-patch")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(1001, 11)).unwrap();
    let _effects = ledger.program_exited(&attempt, 1603).unwrap();
    at(&mut ledger, 30);
    let attempt = ledger.begin(&job("msi-patch")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(1002, 12)).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    // tool: killed by a signal.
    let attempt = ledger.begin(&job("tool")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(1003, 13)).unwrap();
    let _effects = ledger
        .program_exited(&attempt, ProgramExit::Signal(15))
        .unwrap();
    // retired and flaky: cancelled; optional: completed, rerun, abandoned.
    let _effects = ledger.cancel(&job("retired")).unwrap();
    let _effects = ledger.cancel(&job("flaky")).unwrap();
    let attempt = ledger.begin(&job("optional")).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    let _effects = ledger.rerun(&job("optional")).unwrap();
    let _effects = ledger.abandon(&job("optional")).unwrap();
    // Delivery: accepted, a dead letter rejected, a dead letter given up on.
    at(&mut ledger, 31);
    ledger.deliver(&mut server()).unwrap();
    let flaky = ledger
        .dead_letters()
        .find(|l| l.message.key.job.as_str() == "flaky")
        .map(|l| l.message.key.clone())
        .unwrap();
    ledger.discard(&flaky).unwrap();
    let mut store = ledger.into_store();
    between(&mut store.inner);
    // Second half, same boot: the upgrade runs and restarts the machine.
    let (mut ledger, _) = Ledger::open(store, session("golden-boot-1", 40)).unwrap();
    let attempt = ledger.begin(&job("os-upgrade")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(2001, 21)).unwrap();
    let store = ledger.into_store();
    // A new boot: the upgrade is verified and completes; the rejected message is re-queued.
    let (mut ledger, effects) = Ledger::open(store, session("golden-boot-2", 70)).unwrap();
    let verify = effects
        .iter()
        .find_map(|e| match e {
            jobstate::Effect::Verify(attempt) => Some(attempt.clone()),
            _ => None,
        })
        .unwrap();
    let _effects = ledger.verification(&verify, true).unwrap();
    let retired = ledger.dead_letters().next().unwrap().message.key.clone();
    ledger.requeue(&retired).unwrap();
    // lost: its program vanished; launch-fails: it never started.
    let attempt = ledger.begin(&job("lost")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(3001, 31)).unwrap();
    let _effects = ledger.program_lost(&attempt).unwrap();
    let attempt = ledger.begin(&job("launch-fails")).unwrap();
    let _effects = ledger.launch_failed(&attempt).unwrap();
    // slow: past its run-time limit, a tick asks for its termination; a signal ends it.
    let attempt = ledger.begin(&job("slow")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(3002, 32)).unwrap();
    at(&mut ledger, 73);
    let _effects = ledger.tick().unwrap();
    let _effects = ledger
        .program_exited(&attempt, ProgramExit::Signal(15))
        .unwrap();
    // custom-codes: a shutdown notice while it runs; it exits failing (provisionally: it may be
    // restarting the machine), then the restart is under way; the story ends with that restart
    // owed (asks-restart and queued stay queued).
    let attempt = ledger.begin(&job("custom-codes")).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(3003, 33)).unwrap();
    let _effects = ledger.shutdown_notice().unwrap();
    let _effects = ledger.program_exited(&attempt, 1).unwrap();
    let _effects = ledger
        .expect_reboot(&attempt, jobstate::RebootKind::Hard)
        .unwrap();
    ledger.into_store()
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Copies the golden file store to a private directory (opening takes a lock and may repair).
fn copy_file_store(to: &Path) {
    for name in ["journal", "snapshot"] {
        let from = golden_dir().join("file").join(name);
        if from.exists() {
            std::fs::copy(&from, to.join(name)).unwrap();
        }
    }
}

fn records_json() -> Vec<Record> {
    let text = std::fs::read_to_string(golden_dir().join("records.json"))
        .expect("tests/golden/format-2/records.json: write it with JOBSTATE_WRITE_GOLDEN=1");
    serde_json::from_str(&text).expect("records.json reads as records")
}

fn replayed(records: &[Record]) -> Replay {
    let mut replay = Replay::default();
    for record in records {
        replay.apply(record.clone()).expect("the records replay");
    }
    replay
}

/// `loaded` holds what `expected` (the records replayed whole) holds, except history a
/// [`Retention`](jobstate::store::Retention) let go: each job's kept history is the end of its whole
/// one, and its number, state and specs are the same.
fn same_content(loaded: &Snapshot, expected: &Replay, what: &str) {
    let expected = expected.snapshot(loaded.revision);
    assert_eq!(
        loaded.jobs.len(),
        expected.jobs.len(),
        "{what}: jobs differ"
    );
    for (got, whole) in loaded.jobs.iter().zip(&expected.jobs) {
        let id = whole.id();
        assert_eq!(got.id(), id, "{what}: jobs in another order");
        assert_eq!(got.seq(), whole.seq(), "{what}: {id}'s sequence number");
        assert_eq!(got.state(), whole.state(), "{what}: {id}'s state");
        assert_eq!(got.spec(), whole.spec(), "{what}: {id}'s spec");
        assert_eq!(
            got.latest_spec(),
            whole.latest_spec(),
            "{what}: {id}'s spec"
        );
        assert!(
            whole.history().ends_with(got.history()) && !got.history().is_empty(),
            "{what}: {id}'s history is not the end of its whole history"
        );
    }
    assert_eq!(loaded.outbox, expected.outbox, "{what}: outbox differs");
    assert_eq!(
        loaded.dead_letters, expected.dead_letters,
        "{what}: dead letters differ"
    );
}

/// Writes the golden journal of the newest format (only with `JOBSTATE_WRITE_GOLDEN=1`; format
/// 2's files are never written again), then checks that this build writes exactly the bytes of
/// the golden files: format 3's journal, format 2's snapshot. A change is a new format, not an
/// edit of one.
#[test]
fn this_build_writes_its_formats_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // The default retention: the snapshot written halfway holds tombstones (compacted records).
    let options = FileStoreOptions {
        compact_after: u64::MAX,
        per_job: 0,
        retention: jobstate::store::Retention::default(),
    };
    let store = FileStore::open_with(dir.path(), options).unwrap();
    let recorded = story(store, |store| store.compact().unwrap());
    let json = serde_json::to_string_pretty(&recorded.records).unwrap();
    if std::env::var_os("JOBSTATE_WRITE_GOLDEN").is_some() {
        let bytes = std::fs::read(dir.path().join("journal")).unwrap();
        write_file(
            &golden_dir_of(JOURNAL_FORMAT).join("file").join("journal"),
            &bytes,
        );
    }
    let expected = std::fs::read_to_string(golden_dir().join("records.json")).unwrap();
    assert_eq!(
        json, expected,
        "the story's records differ from format 2's: a semantic change, or a change of the JSON form"
    );
    for (name, format) in [("journal", JOURNAL_FORMAT), ("snapshot", FORMAT)] {
        let written = std::fs::read(dir.path().join(name)).unwrap();
        let golden = std::fs::read(golden_dir_of(format).join("file").join(name)).unwrap();
        assert!(
            written == golden,
            "the file store's {name} is not {format}'s, byte for byte: a change of the stored \
             bytes is a new format (keep the golden files and the reader of every released \
             format, add the new format's beside them)"
        );
    }
    // Format 3 writes most later changes of a job against the change before.
    let journal = std::fs::read(dir.path().join("journal")).unwrap();
    assert_eq!(&journal[8..12], &3u32.to_le_bytes(), "the journal's format");
    for record in &recorded.records {
        let bytes = codec::encode(record).unwrap();
        assert_eq!(bytes[0], codec::FORMAT_VERSION);
        assert_eq!(&codec::decode(&bytes).unwrap(), record);
    }
    report_figures(&format!(
        "golden: the story writes {} records; journal {} bytes ({JOURNAL_FORMAT}), snapshot {} bytes ({FORMAT}), all equal to the golden files",
        recorded.records.len(),
        std::fs::metadata(dir.path().join("journal")).unwrap().len(),
        std::fs::metadata(dir.path().join("snapshot"))
            .unwrap()
            .len(),
    ));
}

/// Every record kind and every state appear in the golden story: a record kind missing from it
/// would be a kind whose format nothing pins.
#[test]
fn the_golden_story_holds_every_record_kind_and_state() {
    let records = records_json();
    let mut kinds = std::collections::BTreeSet::new();
    let mut states = std::collections::BTreeSet::new();
    let mut events = std::collections::BTreeSet::new();
    for record in &records {
        let kind = match record {
            Record::Change(change) => {
                states.insert(change.state.kind().to_string());
                events.insert(change.event.kind.name().to_string());
                "change"
            }
            Record::Report(_) => "report",
            Record::Delivered(_) => "delivered",
            Record::DeadLettered(note) => match note.reason {
                jobstate::report::DeadLetterReason::Rejected { .. } => "dead-lettered (rejected)",
                _ => "dead-lettered (gave up)",
            },
            Record::Requeued(_) => "requeued",
            Record::Discarded(_) => "discarded",
            _ => "unknown",
        };
        kinds.insert(kind);
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "change",
            "dead-lettered (gave up)",
            "dead-lettered (rejected)",
            "delivered",
            "discarded",
            "report",
            "requeued"
        ]
    );
    for state in ["Queued", "Running", "AwaitingReboot", "Completed", "Failed"] {
        assert!(
            states.contains(state),
            "no {state} in the golden story: {states:?}"
        );
    }
    assert_eq!(events.len(), 15, "every event kind: {events:?}");
    report_figures(&format!(
        "golden: {} records, states {states:?}, {} event kinds {events:?}",
        records.len(),
        events.len()
    ));
}

/// Format 2's file store, as committed, opens and loads to what its records say. Its journal
/// stays format 2 (an earlier build may still need to read it back) until a compaction starts
/// a new one, in format 3.
#[test]
fn the_format_2_file_store_reads() {
    let dir = tempfile::tempdir().unwrap();
    copy_file_store(dir.path());
    let before = std::fs::read(dir.path().join("journal")).unwrap();
    opens_to_its_records_and_carries_on(dir.path(), "format 2's file store");
    let after = std::fs::read(dir.path().join("journal")).unwrap();
    assert!(after.len() > before.len() && after.starts_with(&before));
    assert_eq!(&after[8..12], &2u32.to_le_bytes(), "still format 2");
    let mut store = FileStore::open(dir.path()).unwrap();
    let held = store.load().unwrap();
    store.compact().unwrap();
    let compacted = std::fs::read(dir.path().join("journal")).unwrap();
    assert_eq!(
        &compacted[8..12],
        &3u32.to_le_bytes(),
        "a new journal is format 3"
    );
    drop(store);
    let reopened = FileStore::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(reopened.jobs, held.jobs);
}

/// Format 3's journal (after format 2's snapshot, as the story left them) opens and loads to
/// what the records say, and an agent carries on from it.
#[test]
fn the_format_3_file_store_reads() {
    let dir = tempfile::tempdir().unwrap();
    copy_file_store(dir.path());
    std::fs::copy(
        golden_dir_of(JOURNAL_FORMAT).join("file").join("journal"),
        dir.path().join("journal"),
    )
    .unwrap();
    opens_to_its_records_and_carries_on(dir.path(), "format 3's file store");
}

/// The file store in `dir` opens cleanly to what the golden records say, and an agent carries
/// on from it: a new boot, a ledger, a delivery.
fn opens_to_its_records_and_carries_on(dir: &Path, what: &str) {
    let mut store = FileStore::open(dir).unwrap();
    assert!(store.open_report().is_clean(), "{}", store.open_report());
    let loaded = store.load().unwrap();
    same_content(&loaded, &replayed(&records_json()), what);
    let (mut ledger, _) = Ledger::open(store, session("golden-boot-3", 200)).unwrap();
    let delivery = ledger.deliver(&mut server()).unwrap();
    assert_eq!(delivery.pending, 0, "{delivery:?}");
}

/// The snapshot an earlier build of format 2 wrote for the same story (before the file store
/// made a job a tombstone in the change that finishes it: the rerun job's first run whole)
/// reads to the same jobs, and an agent carries on from it.
#[test]
fn the_format_2_snapshot_an_earlier_build_wrote_reads() {
    let dir = tempfile::tempdir().unwrap();
    copy_file_store(dir.path());
    let earlier = golden_dir().join("file").join("snapshot.earlier");
    std::fs::copy(&earlier, dir.path().join("snapshot")).unwrap();
    let current = std::fs::read(golden_dir().join("file").join("snapshot")).unwrap();
    assert_ne!(std::fs::read(&earlier).unwrap(), current, "two snapshots");
    opens_to_its_records_and_carries_on(dir.path(), "the earlier build's snapshot");
}

/// Format 2's snapshot holds compacted records: tombstones of the jobs finished before the
/// story's compaction, which every later version must read as such.
#[test]
fn the_format_2_snapshot_holds_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    copy_file_store(dir.path());
    let whole = replayed(&records_json()).snapshot(Revision(0));
    let stored = FileStore::inspect(dir.path()).unwrap().snapshot;
    let tombstones: Vec<_> = stored.jobs.iter().filter(|j| j.first_seq() > 1).collect();
    assert!(
        !tombstones.is_empty(),
        "no compacted record in the snapshot"
    );
    for job in &tombstones {
        let full = whole.jobs.iter().find(|j| j.id() == job.id()).unwrap();
        assert!(full.history().len() > job.history().len());
        assert_eq!(
            job.history()[0],
            full.history()[job.first_seq() as usize - 1]
        );
    }
    report_figures(&format!(
        "golden: the snapshot holds {} compacted jobs of {}",
        tombstones.len(),
        stored.jobs.len()
    ));
}

/// A store of a newer format is refused with a typed error that says to upgrade.
#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_file_store(dir.path());
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    set_header_format(&mut bytes, 4);
    std::fs::write(&journal, bytes).unwrap();
    match FileStore::open(dir.path()) {
        Err(error @ StoreError::UnknownFormat { found: 4, .. }) => {
            assert!(error.to_string().contains("upgrade jobstate"), "{error}");
        }
        other => panic!("a newer format must be refused, got {other:?}"),
    }
    // Format 3 changed journals only: a snapshot of format 3 is no snapshot this build wrote.
    copy_file_store(dir.path());
    let snapshot = dir.path().join("snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    set_header_format(&mut bytes, 3);
    std::fs::write(&snapshot, bytes).unwrap();
    assert!(matches!(
        FileStore::open(dir.path()),
        Err(StoreError::UnknownFormat { found: 3, .. })
    ));
    let record = codec::encode(&records_json()[0]).unwrap();
    let mut newer = record.clone();
    newer[0] = codec::FORMAT_VERSION + 1;
    assert!(matches!(
        codec::decode(&newer),
        Err(codec::DecodeError::UnknownVersion { .. })
    ));
}

/// Format 2's SQLite store: its rows are exactly the records, encoded, and it loads to what they
/// say.
#[cfg(feature = "sqlite")]
#[test]
fn the_format_2_sqlite_store_reads() {
    let records = records_json();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    std::fs::copy(golden_dir().join("sqlite/store.db"), &path).unwrap();
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut rows = db.prepare("SELECT data FROM records ORDER BY seq").unwrap();
        let rows: Vec<Vec<u8>> = rows
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), records.len());
        for (row, record) in rows.iter().zip(&records) {
            assert_eq!(
                row,
                &codec::encode(record).unwrap(),
                "a row is not format 2's"
            );
        }
    }
    let mut store = jobstate::store::SqliteStore::open(&path).unwrap();
    let loaded = store.load().unwrap();
    same_content(&loaded, &replayed(&records), "format 2's SQLite store");
}

//! The file store with real files: recovery, bad files, locking, permissions, and real
//! processes killed with SIGKILL.

use std::io::Write;
use std::path::{Path, PathBuf};

use jobstate::session::SessionFacts;
use jobstate::store::{JobRecord, OpenReport, Snapshot, Store, StoreError, UnsafePath};
use jobstate::{
    AttemptId, Effect, FileStore, FileStoreOptions, JobId, JobSpec, JobState, Launch, Ledger,
    NextJob, Offer, ProgramId, RebootBehaviour, StateKind, StatusKey,
};

use crate::common::*;

/// Serializes the SIGKILL test with the other tests of this module. Spawning a child copies
/// this process's open files into it until the child calls `exec` (close-on-exec takes effect
/// only then), and the store's `flock` lock is held while any copy of its file is open: a test
/// that closes a store and at once reopens it while the SIGKILL test is inside `spawn` found it
/// [`StoreError::Locked`] (seen: about one open in a few thousand). `FileStore::open` now waits
/// a quarter of a second for such a copy, which a child on a host loaded by the test suite can
/// outlast; this keeps it from ever happening. The other tests hold this for reading, the
/// SIGKILL test for writing.
pub(crate) static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn no_spawns() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWNING
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// For a test that spawns processes (`mkfifo`, `chown`, `mount`): no other test of this module
/// runs meanwhile.
pub fn spawning() -> std::sync::RwLockWriteGuard<'static, ()> {
    SPAWNING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("jobstate-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_completed_upgrade_survives_reopening_the_file_store() {
    let _serial = no_spawns();
    let dir = TempDir::new("reopen");
    let spec = msi_job(job("os-upgrade")).with_reboot(jobstate::RebootBehaviour::RestartsMachine);
    {
        let store = FileStore::open(&dir.0).unwrap();
        let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        let _effects = ledger.launched(&attempt, ProgramId::new(4242, 1)).unwrap();
    }
    let store = FileStore::open(&dir.0).unwrap();
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    assert_eq!(
        ledger.job(spec.id()).unwrap().state().kind(),
        StateKind::Completed
    );
    assert_eq!(take_reports(&mut ledger).len(), 1);
    drop(ledger);
    let mut store = FileStore::open(&dir.0).unwrap();
    let snapshot = store.load().unwrap();
    assert!(matches!(
        snapshot.jobs[0].state(),
        JobState::Completed { .. }
    ));
    assert!(snapshot.outbox.is_empty(), "the acknowledgement is durable");
    store.compact().unwrap();
    drop(store);
    let mut store = FileStore::open(&dir.0).unwrap();
    let tombstone = &store.load().unwrap().jobs[0];
    assert!(tombstone.is_tombstone(), "compaction keeps the tombstone");
    assert_eq!(tombstone.seq(), 4);
    assert!(tombstone.latest_spec().is_mandatory());
    assert_eq!(tombstone.state().kind(), StateKind::Completed);
}

#[test]
fn one_writer_at_a_time() {
    let _serial = no_spawns();
    let dir = TempDir::new("lock");
    let first = FileStore::open(&dir.0).unwrap();
    match FileStore::open(&dir.0) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.0),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    FileStore::open(&dir.0).unwrap();
}

/// A copy of the store's lock held for a moment, as a child process started by another thread
/// holds one from `fork` until its `exec`, does not refuse a store closed and reopened (as after
/// a fail-stop) meanwhile: the open waits for it, a quarter of a second at most. Without the
/// wait this open failed with `Locked`, "another writer".
#[test]
fn a_reopen_waits_for_a_copy_of_the_lock_that_a_starting_child_holds() {
    let _serial = no_spawns();
    let dir = TempDir::new("lock-copy");
    drop(FileStore::open(&dir.0).unwrap());
    // What the child holds between `fork` and `exec`: the store's directory, locked.
    let copy = std::fs::File::open(&dir.0).unwrap();
    copy.try_lock().unwrap();
    let exec = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(copy);
    });
    let reopened = FileStore::open(&dir.0);
    exec.join().unwrap();
    assert!(reopened.is_ok(), "{reopened:?}");
}

/// Issue 12, point 2: the lock was an `flock` on a file named `lock`; deleting the file let a
/// second writer in. The store locks its directory now: whatever is deleted or replaced in it,
/// a second open is refused while the first is open.
#[test]
fn one_writer_even_when_the_files_in_the_directory_are_deleted_or_replaced() {
    let _serial = no_spawns();
    let dir = TempDir::new("lock-deleted");
    let (mut ledger, _) =
        Ledger::open(FileStore::open(&dir.0).unwrap(), service_session("a")).unwrap();
    ledger.offer(msi_job(job("patch"))).unwrap();
    // A careless cleanup: every file of the store deleted, a `lock` file planted.
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::write(dir.0.join("lock"), b"").unwrap();
    for _ in 0..3 {
        match FileStore::open(&dir.0) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.0),
            other => panic!("a second writer got in: {other:?}"),
        }
    }
    drop(ledger);
    // Once the first writer is gone, the directory opens (as a new, empty store: its files
    // were deleted).
    let mut store = FileStore::open(&dir.0).unwrap();
    assert!(store.load().unwrap().jobs.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Bad files (SEMANTICS.md invariant 6): a typed error or a clean recovery, never a panic, nothing
// acknowledged lost.
// ---------------------------------------------------------------------------------------------

/// What a store holds, in a form two stores can be compared by: revision, jobs with their whole
/// history, and the keys of the pending status messages.
type Content = (u64, Vec<JobRecord>, Vec<StatusKey>);

fn content_of(snapshot: Snapshot) -> Content {
    let keys = snapshot.outbox.into_iter().map(|m| m.key).collect();
    (snapshot.revision.0, snapshot.jobs, keys)
}

fn ledger_content(ledger: &Ledger<FileStore, SessionFacts>) -> Content {
    (
        ledger.revision().0,
        ledger.jobs().cloned().collect(),
        ledger.outbox().map(|m| m.key.clone()).collect(),
    )
}

/// A small real store: three commits compacted into a snapshot, then five commits in the
/// journal, with what the store held after each journal frame.
struct Fixture {
    journal: Vec<u8>,
    snapshot: Vec<u8>,
    /// `ends[0]` is the end of the journal's header, `ends[k]` the end of its `k`-th frame.
    ends: Vec<usize>,
    /// `states[k]`: what the store held after the journal's first `k` frames (as acknowledged).
    states: Vec<Content>,
}

impl Fixture {
    fn frames(&self) -> usize {
        self.ends.len() - 1
    }

    /// The number of frames that lie entirely within the first `cut` bytes of the journal.
    fn frames_within(&self, cut: usize) -> usize {
        self.ends[1..].iter().filter(|&&end| end <= cut).count()
    }
}

fn fixture() -> Fixture {
    let dir = TempDir::new("fixture");
    let journal_len = || std::fs::metadata(dir.0.join("journal")).unwrap().len() as usize;
    let a = msi_job(job("patch-a"));
    let b = msi_job(job("upgrade-b")).with_reboot(RebootBehaviour::MayRequest);
    let c = msi_job(job("tool-c")).with_mandatory(false);

    let (mut ledger, _) =
        Ledger::open(FileStore::open(&dir.0).unwrap(), service_session("a")).unwrap();
    ledger.offer(a.clone()).unwrap();
    let attempt = ledger.begin(a.id()).unwrap();
    let _effects = ledger.program_exited(&attempt, 0).unwrap();
    let mut store = ledger.into_store();
    store.compact().unwrap();

    let (mut ledger, effects) = Ledger::open(store, service_session("a")).unwrap();
    assert!(effects.is_empty());
    assert_eq!(ledger.revision().0, 3);
    let mut ends = vec![journal_len()];
    let mut states = vec![ledger_content(&ledger)];
    let mut record = |ledger: &Ledger<FileStore, SessionFacts>| {
        // One call, one commit, one frame.
        assert_eq!(ledger.revision().0, states.last().unwrap().0 + 1);
        ends.push(journal_len());
        states.push(ledger_content(ledger));
    };
    ledger.offer(b.clone()).unwrap();
    record(&ledger);
    let attempt = ledger.begin(b.id()).unwrap();
    record(&ledger);
    let _effects = ledger.program_exited(&attempt, 3010).unwrap();
    record(&ledger);
    let delivered = ledger.deliver(&mut Collect::default()).unwrap();
    assert_eq!(delivered.delivered, 2);
    record(&ledger);
    ledger.offer(c).unwrap();
    record(&ledger);
    drop(ledger);

    let journal = std::fs::read(dir.0.join("journal")).unwrap();
    let snapshot = std::fs::read(dir.0.join("snapshot")).unwrap();
    assert_eq!(journal.len(), *ends.last().unwrap());
    assert_eq!(ends[0], 24, "a journal header is 24 bytes");
    Fixture {
        journal,
        snapshot,
        ends,
        states,
    }
}

/// One directory in which damaged copies of the fixture's files are opened, one after another.
struct Bench {
    dir: TempDir,
}

impl Bench {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(&dir.0).unwrap();
        Self { dir }
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.0.join("journal")
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.0.join("snapshot")
    }

    /// Writes the files (`None`: absent), opens the store and loads it.
    fn open(&self, journal: Option<&[u8]>, snapshot: Option<&[u8]>) -> Result<Content, StoreError> {
        self.open_reporting(journal, snapshot)
            .map(|(content, _)| content)
    }

    /// [`Bench::open`], with the store's open report.
    fn open_reporting(
        &self,
        journal: Option<&[u8]>,
        snapshot: Option<&[u8]>,
    ) -> Result<(Content, OpenReport), StoreError> {
        for (path, bytes) in [
            (self.journal_path(), journal),
            (self.snapshot_path(), snapshot),
        ] {
            match bytes {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let mut store = FileStore::open(&self.dir.0)?;
        let report = store.open_report().clone();
        Ok((store.load().map(content_of)?, report))
    }

    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    /// After a refused open: the files are exactly as they were (nothing changed or skipped).
    fn assert_untouched(&self, journal: Option<&[u8]>, snapshot: Option<&[u8]>, case: &str) {
        assert_eq!(
            self.read(&self.journal_path()).as_deref(),
            journal,
            "{case}: a refused open changed the journal"
        );
        assert_eq!(
            self.read(&self.snapshot_path()).as_deref(),
            snapshot,
            "{case}: a refused open changed the snapshot"
        );
    }
}

fn is_corrupt_at(result: &Result<Content, StoreError>, file: &Path, at: Option<u64>) -> bool {
    matches!(result, Err(StoreError::Corrupt { file: f, offset, detail })
        if f == file && at.is_none_or(|at| *offset == at) && !detail.is_empty())
}

#[test]
fn a_journal_cut_at_every_byte_recovers_the_frames_before_the_cut_or_is_refused() {
    let _serial = no_spawns();
    let fx = fixture();
    let bench = Bench::new("cut");
    let snapshot = Some(fx.snapshot.as_slice());
    let (mut refused, mut recovered) = (0, 0);
    for cut in 0..=fx.journal.len() {
        let journal = &fx.journal[..cut];
        let (result, report) = match bench.open_reporting(Some(journal), snapshot) {
            Ok((content, report)) => (Ok(content), report),
            Err(error) => (Err(error), OpenReport::default()),
        };
        if cut < fx.ends[0] {
            // A cut inside the header: the file is not a journal any more.
            assert!(
                is_corrupt_at(&result, &bench.journal_path(), Some(0)),
                "cut {cut}: {result:?}"
            );
            bench.assert_untouched(Some(journal), snapshot, &format!("cut {cut}"));
            refused += 1;
            continue;
        }
        // A cut inside a frame: that frame was never acknowledged (a torn tail), every frame
        // entirely before the cut was, and all of them are there.
        let k = fx.frames_within(cut);
        match &result {
            Ok(content) => assert!(
                *content == fx.states[k],
                "cut {cut}: expected the state after {k} frames, got {content:?}"
            ),
            Err(error) => panic!("cut {cut}: a torn tail must recover, got {error:?}"),
        }
        assert_eq!(
            bench.read(&bench.journal_path()).as_deref(),
            Some(&fx.journal[..fx.ends[k]]),
            "cut {cut}: the torn tail is cut off on disk"
        );
        // And what was cut is reported: where, and how much.
        if cut == fx.ends[k] {
            assert!(report.is_clean(), "cut {cut}: nothing cut, {report}");
        } else {
            assert_eq!(report.cut.len(), 1, "cut {cut}: {report}");
            let reported = &report.cut[0];
            assert_eq!(
                (
                    reported.file.as_path(),
                    reported.offset,
                    reported.bytes as usize
                ),
                (
                    bench.journal_path().as_path(),
                    fx.ends[k] as u64,
                    cut - fx.ends[k]
                ),
                "cut {cut}"
            );
        }
        // The recovered store takes new commits and opens again with them.
        let store = FileStore::open(&bench.dir.0).unwrap();
        let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
        let before = ledger_content(&ledger);
        let next = msi_job(job("after-the-cut"));
        ledger.offer(next.clone()).unwrap();
        // (It may wait: a job that may restart the machine runs in some recovered states.)
        let runnable = ledger.next_runnable() == NextJob::Run(next.id().clone());
        if runnable {
            ledger.begin(next.id()).unwrap();
        }
        let after = ledger_content(&ledger);
        drop(ledger);
        let mut store = FileStore::open(&bench.dir.0).unwrap();
        let reopened = content_of(store.load().unwrap());
        assert!(reopened == after, "cut {cut}: the new commits are durable");
        assert!(
            before.1.iter().all(|r| reopened.1.contains(r)),
            "cut {cut}: nothing recovered is lost by later commits"
        );
        assert_eq!(
            reopened.1.last().map(|r| r.state().kind()),
            Some(if runnable {
                StateKind::Running
            } else {
                StateKind::Queued
            })
        );
        recovered += 1;
    }
    report_figures(&format!(
        "file store: journal of {} bytes ({} frames) cut at every byte: {refused} refused, {recovered} recovered and written again",
        fx.journal.len(),
        fx.frames(),
    ));
}

#[test]
fn a_flipped_bit_anywhere_in_the_journal_is_refused_or_cuts_only_the_last_frame() {
    let _serial = no_spawns();
    let fx = fixture();
    let bench = Bench::new("flip");
    let snapshot = Some(fx.snapshot.as_slice());
    let last = fx.frames() - 1;
    let full = &fx.states[fx.frames()];
    let mut wrong = Vec::new();
    let (mut refused, mut torn) = (0, 0);
    for byte in 0..fx.journal.len() {
        for bit in 0..8 {
            let mut journal = fx.journal.clone();
            journal[byte] ^= 1 << bit;
            let reported = bench.open_reporting(Some(&journal), snapshot);
            let cut = reported.as_ref().ok().map(|(_, r)| r.cut.clone());
            let result = reported.map(|(content, _)| content);
            let path = bench.journal_path();
            let ok = if byte < fx.ends[0] {
                // The header: magic, format, revision and the header checksum are refused.
                match byte {
                    0..16 => is_corrupt_at(&result, &path, Some(0)),
                    // A wrong start revision shows at 0, or where a frame no longer follows on.
                    16..24 => is_corrupt_at(&result, &path, None),
                    _ => matches!(&result, Ok(content) if content == full),
                }
            } else {
                let frame = fx.frames_within(byte);
                let offset = fx.ends[frame] as u64;
                // A damaged frame with a frame after it is corruption, named with the file and
                // the frame's offset. Damage to the last frame cannot be told from a torn tail:
                // the store recovers the frames before it, and reports the cut.
                if frame == last {
                    matches!(&result, Ok(content) if *content == fx.states[last])
                        && matches!(&cut, Some(cut) if cut.len() == 1 && cut[0].offset == offset)
                } else {
                    is_corrupt_at(&result, &path, Some(offset))
                }
            };
            match &result {
                Err(_) => {
                    refused += 1;
                    bench.assert_untouched(Some(&journal), snapshot, &format!("byte {byte}"));
                }
                Ok(content) if content != full => torn += 1,
                Ok(_) => {}
            }
            if !ok {
                let frame = fx.frames_within(byte);
                let state = match &result {
                    Ok(content) => format!(
                        "Ok at revision {} (the full store is at {}); the journal is now {} bytes (was {})",
                        content.0,
                        full.0,
                        bench.read(&bench.journal_path()).map_or(0, |j| j.len()),
                        fx.journal.len()
                    ),
                    Err(error) => format!("Err({error:?})"),
                };
                wrong.push(format!(
                    "byte {byte} bit {bit} (frame {frame} at offset {}, frames end at {:?}): {state}",
                    fx.ends[frame], fx.ends
                ));
            }
        }
    }
    report_figures(&format!(
        "file store: {} single-bit flips in a journal of {} frames: {refused} refused, {torn} torn tails recovered, {} misclassified",
        fx.journal.len() * 8,
        fx.frames(),
        wrong.len()
    ));
    assert!(
        wrong.is_empty(),
        "{} of {} flips misclassified, e.g.:\n{}",
        wrong.len(),
        fx.journal.len() * 8,
        wrong[..wrong.len().min(12)].join("\n")
    );
}

/// Issue 12, point 1: random damage (bytes changed, ranges zeroed or deleted, the end cut and
/// garbage appended) anywhere in the journal is refused, or cuts at most the last frame and
/// says so. Before, damage across the last two frames cut both, silently.
///
/// What remains: damage that destroys the second-to-last frame's length *and* its payload
/// checksum *and* the last frame's header and payload checksum (four places, or one range
/// from the one to the other) leaves bytes a torn write of the last frame could leave; both
/// frames are cut, and the cut is reported (`JOBSTATE_DAMAGE_ROUNDS` runs more rounds).
#[test]
fn random_damage_to_the_journal_is_refused_or_cuts_only_the_last_frame_reported() {
    let _serial = no_spawns();
    let fx = fixture();
    let bench = Bench::new("random-damage");
    let snapshot = Some(fx.snapshot.as_slice());
    let last = fx.frames() - 1;
    let full = &fx.states[fx.frames()];
    let mut rng = SplitMix(env_u64("JOBSTATE_DAMAGE_SEED", 0x0da3_a6e5));
    let rounds = env_u64("JOBSTATE_DAMAGE_ROUNDS", 2_000);
    let (mut refused, mut cut_last, mut unchanged, mut cut_end) = (0, 0, 0, 0);
    for round in 0..rounds {
        let mut journal = fx.journal.clone();
        let len = journal.len() as u64;
        let kind = rng.below(4);
        match kind {
            0 => {
                // Up to three bytes: a damaged length of the second-to-last frame passes for a
                // torn tail only when its payload, the last frame's length and its payload are
                // all damaged too (four places): still reported, never silent.
                for _ in 0..=rng.below(3) {
                    let at = rng.below(len) as usize;
                    journal[at] = rng.next() as u8;
                }
            }
            1 => {
                // Up to 16 bytes zeroed (fewer than a frame header and a payload: zeros from
                // the length of the second-to-last frame to the last frame's payload checksum
                // are what a torn write could leave, and are cut, reported).
                let at = rng.below(len) as usize;
                let end = (at + 1 + rng.below(16) as usize).min(journal.len());
                journal[at..end].fill(0);
            }
            2 => {
                // Up to 8 bytes deleted. (A longer deletion that starts in the length of the
                // second-to-last frame and ends in the last frame's payload checksum leaves
                // what a torn write could: it is cut, and reported.)
                let at = rng.below(len) as usize;
                let end = (at + 1 + rng.below(8) as usize).min(journal.len());
                journal.drain(at..end);
            }
            _ => {
                // A cut and garbage after it: the frames wholly before the cut are kept, the
                // one it falls in is cut off and reported. (A journal cut at a frame boundary
                // is a shorter journal: nothing in it can tell.)
                let cut = (fx.ends[0] as u64 + rng.below(len + 1 - fx.ends[0] as u64)) as usize;
                journal.truncate(cut);
                let garbage = rng.below(60);
                for _ in 0..garbage {
                    journal.push(rng.next() as u8);
                }
                let k = fx.frames_within(cut);
                let outcome = bench.open_reporting(Some(&journal), snapshot);
                match &outcome {
                    Ok((content, report)) if *content == fx.states[k] => {
                        if cut == fx.ends[k] && garbage == 0 {
                            assert!(report.is_clean(), "round {round}: {report}");
                        } else {
                            assert_eq!(report.cut.len(), 1, "round {round}");
                            assert_eq!(report.cut[0].offset, fx.ends[k] as u64, "round {round}");
                        }
                        cut_end += 1;
                    }
                    // Garbage past the end of the frame the cut fell in is no torn write.
                    Err(StoreError::Corrupt { .. })
                        if k < fx.frames() && cut + garbage as usize > fx.ends[k + 1] =>
                    {
                        refused += 1;
                    }
                    other => panic!(
                        "round {round}: a cut at {cut} and {garbage} bytes of garbage: {other:?}"
                    ),
                }
                continue;
            }
        }
        let outcome = bench.open_reporting(Some(&journal), snapshot);
        match &outcome {
            Err(StoreError::Corrupt { .. } | StoreError::UnknownFormat { .. }) => {
                bench.assert_untouched(Some(&journal), snapshot, &format!("round {round}"));
                refused += 1;
            }
            Ok((content, report)) if content == full && report.is_clean() => unchanged += 1,
            // Garbage after the last frame, cut off and reported.
            Ok((content, report)) if content == full && report.cut.len() == 1 => cut_last += 1,
            Ok((content, report))
                if *content == fx.states[last]
                    && report.cut.len() == 1
                    && report.cut[0].offset == fx.ends[last] as u64 =>
            {
                cut_last += 1;
            }
            other => panic!(
                "round {round} (damage kind {kind}): neither refused nor at most the last frame cut and reported: {:?}; the journal (frames end at {:?}) differs from the fixture's at {:?}",
                other.as_ref().map(|(content, report)| (content.0, report)),
                fx.ends,
                (0..journal.len().max(fx.journal.len()))
                    .filter(|&i| journal.get(i) != fx.journal.get(i))
                    .collect::<Vec<_>>()
            ),
        }
    }
    report_figures(&format!(
        "file store: {rounds} random damages of a journal of {} frames: {refused} refused, {cut_last} cut only the last frame or garbage after it (reported), {cut_end} cuts with garbage recovered to the frame cut (reported), {unchanged} changed nothing",
        fx.frames()
    ));
    assert!(refused > rounds / 2, "{refused} refused");
    assert!(cut_last > 0 && cut_end > 0);
}

#[test]
fn a_damaged_snapshot_is_refused_and_nothing_is_rewritten() {
    let _serial = no_spawns();
    let fx = fixture();
    let bench = Bench::new("snapshot");
    let journal = Some(fx.journal.as_slice());
    let full = &fx.states[fx.frames()];
    let path = bench.snapshot_path();
    // Cut at every byte: always corruption of the snapshot (it is written whole and renamed).
    for cut in 0..fx.snapshot.len() {
        let snapshot = &fx.snapshot[..cut];
        let result = bench.open(journal, Some(snapshot));
        assert!(is_corrupt_at(&result, &path, None), "cut {cut}: {result:?}");
        bench.assert_untouched(journal, Some(snapshot), &format!("snapshot cut {cut}"));
    }
    // Every single-bit flip: a typed error with both files untouched (the header, its revision
    // included, is checksummed). Never a store that lost acknowledged commits.
    let mut wrong = Vec::new();
    for byte in 0..fx.snapshot.len() {
        for bit in 0..8 {
            let mut snapshot = fx.snapshot.clone();
            snapshot[byte] ^= 1 << bit;
            let result = bench.open(journal, Some(&snapshot));
            let ok = match &result {
                Err(StoreError::Corrupt { .. } | StoreError::UnknownFormat { .. }) => {
                    bench.assert_untouched(journal, Some(&snapshot), &format!("byte {byte}"));
                    true
                }
                Ok(content) => content == full,
                Err(_) => false,
            };
            if !ok {
                let outcome = match &result {
                    Ok(content) => format!(
                        "Ok at revision {} with {} jobs (the full store: revision {}, {} jobs); the journal is now {} bytes (was {})",
                        content.0,
                        content.1.len(),
                        full.0,
                        full.1.len(),
                        bench.read(&bench.journal_path()).map_or(0, |j| j.len()),
                        fx.journal.len()
                    ),
                    Err(error) => format!("Err({error:?})"),
                };
                wrong.push(format!("snapshot byte {byte} bit {bit}: {outcome}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} snapshot flips neither refused nor the whole store, e.g.:\n{}",
        wrong.len(),
        fx.snapshot.len() * 8,
        wrong[..wrong.len().min(12)].join("\n")
    );
}

type FileCase<'a> = (&'a str, Option<Vec<u8>>, Option<Vec<u8>>, &'a Path);

#[test]
fn garbage_empty_missing_and_future_files_are_typed_errors() {
    let _serial = no_spawns();
    let fx = fixture();
    let bench = Bench::new("garbage");
    let journal_path = bench.journal_path();
    let snapshot_path = bench.snapshot_path();
    let snapshot = Some(fx.snapshot.as_slice());
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    let mut snapshot_after = fx.snapshot.clone();
    snapshot_after.extend_from_slice(&fx.snapshot[24..]);

    // The untouched files open to the whole store.
    assert!(bench.open(Some(&fx.journal), snapshot).unwrap() == fx.states[fx.frames()]);

    let j = || Some(fx.journal.clone());
    let s = || Some(fx.snapshot.clone());
    // (case, journal, snapshot, the file the error must name); `None`: the file is absent.
    let cases: Vec<FileCase> = vec![
        ("garbage journal", Some(garbage.clone()), s(), &journal_path),
        ("empty journal", Some(Vec::new()), s(), &journal_path),
        (
            "garbage journal, no snapshot",
            Some(garbage.clone()),
            None,
            &journal_path,
        ),
        (
            "empty journal, no snapshot",
            Some(Vec::new()),
            None,
            &journal_path,
        ),
        ("a snapshot without its journal", None, s(), &journal_path),
        ("a journal without its snapshot", j(), None, &journal_path),
        (
            "garbage snapshot",
            j(),
            Some(garbage.clone()),
            &snapshot_path,
        ),
        ("empty snapshot", j(), Some(Vec::new()), &snapshot_path),
        (
            "data after the snapshot",
            j(),
            Some(snapshot_after),
            &snapshot_path,
        ),
    ];
    for (case, journal, snapshot, named) in &cases {
        let result = bench.open(journal.as_deref(), snapshot.as_deref());
        assert!(
            is_corrupt_at(&result, named, None),
            "{case}: expected Corrupt naming {}, got {result:?}",
            named.display()
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("damaged at byte"), "{case}: {message}");
        bench.assert_untouched(journal.as_deref(), snapshot.as_deref(), case);
    }

    // A file of a future format: UnknownFormat, naming the file, and nothing rewritten.
    for name in ["journal", "snapshot"] {
        let mut journal = fx.journal.clone();
        let mut snapshot = fx.snapshot.clone();
        let file = if name == "journal" {
            &mut journal
        } else {
            &mut snapshot
        };
        // This build writes journal format 3 (and reads 2) and snapshot format 2.
        let (future, newest): (u32, u32) = if name == "journal" { (4, 3) } else { (3, 2) };
        set_header_format(file, future);
        let result = bench.open(Some(&journal), Some(&snapshot));
        match &result {
            Err(StoreError::UnknownFormat {
                file,
                found,
                supported,
            }) if file.ends_with(name) && *found == future && *supported == newest => {}
            other => panic!("future {name} format: expected UnknownFormat, got {other:?}"),
        }
        assert!(result.unwrap_err().to_string().contains("upgrade jobstate"));
        bench.assert_untouched(Some(&journal), Some(&snapshot), name);
    }
}

#[test]
fn a_store_where_nobody_may_write_is_an_io_error() {
    let _serial = no_spawns();
    // The tests run as root, and root ignores permission bits (CAP_DAC_OVERRIDE): a directory of
    // mode 0500 would still be written and the test would prove nothing. So these paths fail
    // for every user: a path under a regular file, a regular file where the directory should
    // be, a directory in procfs, and store files that are directories.
    let dir = TempDir::new("unwritable");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("a-regular-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let io_error = |path: &Path| match FileStore::open(path) {
        Err(StoreError::Io { context, source }) => {
            assert!(!context.is_empty());
            source
        }
        other => panic!("{}: expected an Io error, got {other:?}", path.display()),
    };
    let source = io_error(&file.join("store"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory, "{source}");
    assert!(source.to_string().contains("a-regular-file"), "{source}");
    io_error(Path::new("/proc/jobstate-test"));
    io_error(Path::new("/proc/jobstate-test/store"));
    // A regular file given as the store: said so, not "creating directory: File exists".
    match FileStore::open(&file) {
        Err(StoreError::Unsafe(UnsafePath::NotADirectory { path, kind })) => {
            assert_eq!((path.as_path(), kind), (file.as_path(), "regular file"));
        }
        other => panic!("a regular file as the store: {other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // An empty path (it would be the current directory).
    assert!(matches!(
        FileStore::open(""),
        Err(StoreError::Unsafe(UnsafePath::Empty))
    ));

    // A journal or a snapshot that is a directory.
    for name in ["journal", "snapshot"] {
        let store = dir.0.join(format!("store-{name}"));
        std::fs::create_dir_all(store.join(name)).unwrap();
        match FileStore::open(&store) {
            Err(StoreError::Unsafe(UnsafePath::NotRegular {
                path,
                kind: "directory",
            })) => {
                assert_eq!(path, store.join(name));
            }
            other => panic!("a {name} that is a directory: {other:?}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn store_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = no_spawns();
    let root = TempDir::new("modes");
    let store_dir = root.0.join("nested").join("store");
    // In octal, so that a failure reads "644", not "420".
    let mode = |path: &Path| {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        format!("{:o}", mode & 0o777)
    };
    let file = |name: &str| mode(&store_dir.join(name));
    let (mut ledger, _) =
        Ledger::open(FileStore::open(&store_dir).unwrap(), service_session("a")).unwrap();
    for created in [&root.0, &root.0.join("nested"), &store_dir] {
        assert_eq!(mode(created), "700", "{}", created.display());
    }
    assert_eq!(file("journal"), "600");
    ledger.offer(msi_job(job("patch"))).unwrap();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    assert_eq!(file("snapshot"), "600");
    assert_eq!(file("journal"), "600", "the new journal after compaction");
    drop(store);
    let mut names: Vec<String> = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["journal", "snapshot"]);
    for name in &names {
        assert_eq!(file(name), "600", "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Real processes killed with SIGKILL (SEMANTICS.md invariants 1 and 2).
// ---------------------------------------------------------------------------------------------

/// The child's store directory; when set, [`kill_child`] runs the agent workload.
const CHILD_DIR: &str = "JOBSTATE_KILL_CHILD_DIR";
/// The child's round: its job ids and its clock.
const CHILD_ROUND: &str = "JOBSTATE_KILL_CHILD_ROUND";
/// The child's boot: the same as the previous child's (the agent was killed, the machine kept
/// running) or a new one (the machine restarted).
const CHILD_BOOT: &str = "JOBSTATE_KILL_CHILD_BOOT";

/// Small compaction bounds, so that kills also land in compactions and in opens that finish
/// an interrupted one.
fn kill_options() -> FileStoreOptions {
    FileStoreOptions {
        compact_after: 48,
        per_job: 0,
        retention: jobstate::store::Retention::keep_all(),
    }
}

fn kill_session(boot_name: &str, round: u64, later: chrono::TimeDelta) -> SessionFacts {
    let hours = i64::try_from(round).unwrap().saturating_mul(2);
    SessionFacts {
        now: t0() + chrono::TimeDelta::hours(hours) + later,
        since_boot: std::time::Duration::from_secs(60 + round),
        ..service_session(boot_name)
    }
}

/// Prints that the store acknowledged the job's current state: called only after the call that
/// committed it returned.
fn ack(out: &mut impl Write, ledger: &Ledger<FileStore, SessionFacts>, id: &JobId) {
    let record = ledger.job(id).unwrap();
    writeln!(out, "ACK {id} {} {}", record.seq(), record.state().kind()).unwrap();
    out.flush().unwrap();
}

/// The agent that [`sigkill_at_random_moments_loses_no_acknowledged_state`] runs in a child
/// process and kills. Without its environment variable it does nothing.
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let boot_name = std::env::var(CHILD_BOOT).unwrap();
    let mut out = std::io::stdout().lock();
    let store = FileStore::open_with(&dir, kill_options()).unwrap();
    let session = kill_session(&boot_name, round, chrono::TimeDelta::zero());
    let (mut ledger, effects) = Ledger::open(store, session).unwrap();
    // Recovery launches only attempts whose launch was never recorded (after a reboot): the
    // agent launches them now, and they finish.
    for effect in effects {
        if let Effect::Launch(attempt) = effect {
            assert!(matches!(
                ledger.job(&attempt.job).unwrap().state(),
                JobState::Running {
                    launch: Launch::Pending,
                    ..
                }
            ));
            let _effects = ledger.launched(&attempt, ProgramId::new(1, round)).unwrap();
            ack(&mut out, &ledger, &attempt.job);
            let _effects = ledger.program_exited(&attempt, 0).unwrap();
            ack(&mut out, &ledger, &attempt.job);
        }
    }
    // The agent died in this boot while programs ran: they finish now (a program of an earlier
    // boot is gone; recovery has dealt with it).
    let running: Vec<AttemptId> = ledger
        .jobs()
        .filter(|r| r.state().kind() == StateKind::Running)
        .filter(|r| {
            r.state()
                .attempt()
                .is_some_and(|a| a.boot == *ledger.boot())
        })
        .filter_map(JobRecord::current_attempt)
        .collect();
    for attempt in running {
        let _effects = ledger.program_exited(&attempt, 0).unwrap();
        ack(&mut out, &ledger, &attempt.job);
    }
    // The server offers completed mandatory jobs again: they never run again.
    let completed: Vec<JobSpec> = ledger
        .jobs()
        .filter(|r| r.state().kind() == StateKind::Completed && r.spec().is_mandatory())
        .map(|r| r.spec().clone())
        .collect();
    for spec in completed.iter().rev().take(8) {
        assert_eq!(
            ledger.offer(spec.clone()).unwrap(),
            Offer::CompletedWillNotRun
        );
    }
    let mut sink = Collect::default();
    for n in 0u64.. {
        let id = job(&format!("r{round}-j{n}"));
        let spec = match n % 8 {
            // Exits with 3010: restart required, AwaitingReboot.
            3 | 7 => msi_job(id.clone()).with_reboot(RebootBehaviour::MayRequest),
            // An OS upgrade: it restarts the machine itself and never reports an exit code.
            5 => msi_job(id.clone()).with_reboot(RebootBehaviour::RestartsMachine),
            _ => msi_job(id.clone()),
        };
        assert_eq!(ledger.offer(spec).unwrap(), Offer::Queued);
        ack(&mut out, &ledger, &id);
        while let NextJob::Run(next) = ledger.next_runnable() {
            let attempt = ledger.begin(&next).unwrap();
            ack(&mut out, &ledger, &next);
            let _effects = ledger.launched(&attempt, ProgramId::new(2, n)).unwrap();
            ack(&mut out, &ledger, &next);
            // An upgrade restarts the machine when a kill comes with a new boot; here it exits.
            let _effects = match ledger.job(&next).unwrap().spec().reboot() {
                RebootBehaviour::MayRequest => ledger.program_exited(&attempt, 3010).unwrap(),
                _ => ledger.program_exited(&attempt, 0).unwrap(),
            };
            ack(&mut out, &ledger, &next);
        }
        if n % 3 == 2 {
            ledger.deliver(&mut sink).unwrap();
            for message in sink.0.drain(..) {
                writeln!(out, "DLV {}", message.key).unwrap();
            }
            out.flush().unwrap();
        }
    }
}

/// A small seeded generator (SplitMix64), so that a failing run can be repeated.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn parse_kind(kind: &str) -> StateKind {
    match kind {
        "Queued" => StateKind::Queued,
        "Running" => StateKind::Running,
        "AwaitingReboot" => StateKind::AwaitingReboot,
        "Completed" => StateKind::Completed,
        "Failed" => StateKind::Failed,
        other => panic!("unknown state {other:?}"),
    }
}

/// What one child printed before it died: complete lines only (a line cut by the kill was
/// never printed whole, so it acknowledged nothing).
struct ChildOutput {
    acks: Vec<(String, u64, StateKind)>,
    delivered: Vec<String>,
}

impl ChildOutput {
    fn parse(lines: &[String]) -> Self {
        let mut output = Self {
            acks: Vec::new(),
            delivered: Vec::new(),
        };
        for line in lines.iter().filter_map(|l| l.strip_suffix('\n')) {
            if let Some(ack) = line.strip_prefix("ACK ") {
                let mut words = ack.split(' ');
                let (Some(job), Some(seq), Some(kind), None) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    panic!("a malformed line: {line:?}");
                };
                output
                    .acks
                    .push((job.to_string(), seq.parse().unwrap(), parse_kind(kind)));
            } else if let Some(key) = line.strip_prefix("DLV ") {
                output.delivered.push(key.to_string());
            }
        }
        output
    }
}

/// When the parent kills a child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After this many ACK lines: usually in the middle of the next commit.
    Acks(u64),
    /// After this long: often while the child starts, opens or recovers the store.
    Time(std::time::Duration),
    /// This long after a compaction's temporary file appears (or after 100 ACKs).
    Compaction(std::time::Duration),
}

/// Runs one child on `dir`, kills it with SIGKILL at `kill`, and returns every line it printed.
#[cfg(unix)]
fn run_and_kill(dir: &Path, round: u64, boot_name: &str, kill: KillAt) -> Vec<String> {
    use std::io::{BufRead, Read};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file_store::kill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .env(CHILD_BOOT, boot_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acks = 0;
    let compacting = || {
        ["snapshot.tmp", "journal.tmp"]
            .iter()
            .any(|name| dir.join(name).exists())
    };
    loop {
        match kill {
            KillAt::Acks(target) if acks >= target => break,
            KillAt::Time(after) => {
                std::thread::sleep(after);
                break;
            }
            KillAt::Compaction(after) if compacting() || acks >= 100 => {
                std::thread::sleep(after);
                break;
            }
            _ => {}
        }
        let wait = match kill {
            KillAt::Compaction(_) => Duration::from_micros(50),
            _ => Duration::from_millis(100),
        };
        match lines_rx.recv_timeout(wait) {
            Ok(line) => {
                acks += u64::from(line.starts_with("ACK "));
                lines.push(line);
            }
            // The child ended by itself: its exit status says why, below.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("round {round}: the child printed {acks} ACKs in 30 s, waiting for {kill:?}");
        }
    }
    // SIGKILL: no destructor, no flush, no unlock runs in the child.
    let _ = child.kill();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(lines_rx.try_iter());
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child ended by itself ({status}), not by SIGKILL:\n{stderr}\n{}",
        lines.concat()
    );
    lines
}

/// What the parent learnt from all children: the furthest acknowledged change of each job.
#[derive(Default)]
struct Acknowledged {
    /// Job id -> (seq, state) of its latest ACK.
    jobs: std::collections::HashMap<String, (u64, StateKind)>,
    /// Jobs acknowledged `Completed` (every job of the workload is mandatory).
    completed: std::collections::BTreeSet<String>,
    /// Status messages acknowledged as delivered.
    delivered: std::collections::HashSet<String>,
}

/// Invariant 2: the acknowledged change `seq` of `job` is in the store with the acknowledged
/// state (a later change may follow it; none may replace or lose it). Invariant 1: a job
/// acknowledged `Completed` (mandatory) is still `Completed`.
fn check_ack(
    round: u64,
    records: &std::collections::HashMap<String, &JobRecord>,
    acknowledged: &Acknowledged,
    job: &str,
    seq: u64,
    kind: StateKind,
) {
    let Some(record) = records.get(job) else {
        panic!(
            "round {round}: {job} was acknowledged ({kind} at seq {seq}) but is not in the store"
        );
    };
    let history = record.history();
    let Some(entry) = history.get(usize::try_from(seq).unwrap() - 1) else {
        panic!(
            "round {round}: {job} was acknowledged {kind} at seq {seq}, but the store holds only {} changes (last: {})",
            history.len(),
            record.state().kind()
        );
    };
    assert_eq!(
        entry.state.kind(),
        kind,
        "round {round}: {job} change {seq} was acknowledged {kind}"
    );
    if acknowledged.completed.contains(job) {
        assert!(record.spec().is_mandatory());
        assert_eq!(
            record.state().kind(),
            StateKind::Completed,
            "round {round}: {job}, a completed mandatory job, left Completed: {:?}",
            record.history()
        );
    }
}

/// Invariant 1 in a new boot: a ledger opened on a copy of the store in a boot no child ran in
/// launches nothing, keeps every completed mandatory job `Completed`, refuses to offer or
/// start it again, and never offers it to run.
fn check_new_boot(
    round: u64,
    dir: &Path,
    copy: &Path,
    acknowledged: &Acknowledged,
    jobs: &[&String],
) {
    let _ = std::fs::remove_dir_all(copy);
    std::fs::create_dir_all(copy).unwrap();
    for name in ["journal", "snapshot"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            std::fs::write(copy.join(name), bytes).unwrap();
        }
    }
    let store = FileStore::open(copy).unwrap();
    let session = kill_session(
        &format!("new-boot-{round}"),
        round,
        chrono::TimeDelta::minutes(90),
    );
    let (mut ledger, effects) = Ledger::open(store, session).unwrap();
    // Only attempts whose launch was never recorded are launched again, as the same attempt.
    for effect in &effects {
        if let Effect::Launch(attempt) = effect {
            assert!(
                !acknowledged.completed.contains(attempt.job.as_str()),
                "round {round}: {effects:?}"
            );
            assert!(
                matches!(
                    ledger.job(&attempt.job).unwrap().state(),
                    JobState::Running {
                        launch: Launch::Pending,
                        ..
                    }
                ),
                "round {round}: {effects:?}"
            );
        }
    }
    for &name in jobs {
        let id = job(name);
        let record = ledger.job(&id).unwrap();
        assert_eq!(record.state().kind(), StateKind::Completed, "{name}");
        let spec = record.spec().clone();
        assert_eq!(
            ledger.offer(spec).unwrap(),
            Offer::CompletedWillNotRun,
            "{name}"
        );
        assert!(ledger.begin(&id).is_err(), "{name} started again");
    }
    let mut started = 0;
    while let NextJob::Run(next) = ledger.next_runnable() {
        assert!(
            !acknowledged.completed.contains(next.as_str()),
            "round {round}: {next} completed and is offered to run again"
        );
        let attempt = ledger.begin(&next).unwrap();
        let _effects = ledger.program_exited(&attempt, 0).unwrap();
        started += 1;
        assert!(started < 100_000);
    }
}

/// Whether a compaction was interrupted: a temporary file is left, or the snapshot is newer
/// than the start of the journal (killed between the two renames).
fn interrupted_compaction(dir: &Path) -> bool {
    let revision = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        Some(u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?))
    };
    let tmp = ["journal.tmp", "snapshot.tmp"]
        .iter()
        .any(|name| dir.join(name).exists());
    tmp || revision("snapshot") > revision("journal")
}

#[cfg(unix)]
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_state() {
    let rounds = env_u64("JOBSTATE_KILL_ROUNDS", 200);
    let seed = env_u64("JOBSTATE_KILL_SEED", 0x6a6f_6273);
    // Each round reads the whole store three times and compactions rewrite it, so a round costs
    // more as the store grows (1000 rounds on one store: 270 s). Long runs start a new store
    // now and then.
    let per_store = env_u64("JOBSTATE_KILL_ROUNDS_PER_STORE", 500).max(1);
    let _serial = SPAWNING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = std::time::Instant::now();
    let mut dir = TempDir::new("kill");
    let copy = TempDir::new("kill-new-boot");
    let mut rng = SplitMix(seed);
    let mut acknowledged = Acknowledged::default();
    let (mut boot, mut verified, mut delivered, mut silent) = (0u64, 0u64, 0u64, 0u64);
    let (mut in_compaction, mut jobs, mut completed) = (0u64, 0usize, 0usize);
    for round in 0..rounds {
        if round > 0 && round % per_store == 0 {
            jobs += acknowledged.jobs.len();
            completed += acknowledged.completed.len();
            acknowledged = Acknowledged::default();
            dir = TempDir::new("kill");
        }
        // A third of the kills come with a machine restart: the next child runs in a new boot.
        if rng.below(3) == 0 {
            boot += 1;
        }
        let kill = match rng.below(4) {
            0 | 1 => KillAt::Acks(rng.below(40)),
            2 => KillAt::Time(std::time::Duration::from_micros(rng.below(20_000))),
            _ => KillAt::Compaction(std::time::Duration::from_micros(rng.below(3_000))),
        };
        let lines = run_and_kill(&dir.0, round, &format!("boot-{boot}"), kill);
        let output = ChildOutput::parse(&lines);
        silent += u64::from(output.acks.is_empty());
        for (job, seq, kind) in &output.acks {
            if *kind == StateKind::Completed {
                acknowledged.completed.insert(job.clone());
            }
            let latest = acknowledged
                .jobs
                .entry(job.clone())
                .or_insert((*seq, *kind));
            if *seq >= latest.0 {
                *latest = (*seq, *kind);
            }
        }
        acknowledged
            .delivered
            .extend(output.delivered.iter().cloned());

        in_compaction += u64::from(interrupted_compaction(&dir.0));
        // The child is dead and its lock with it: the store opens, with everything acknowledged.
        let mut store = FileStore::open_with(&dir.0, kill_options())
            .unwrap_or_else(|e| panic!("round {round}: the store does not open after a kill: {e}"));
        let snapshot = store.load().unwrap();
        drop(store);
        let records: std::collections::HashMap<String, &JobRecord> = snapshot
            .jobs
            .iter()
            .map(|r| (r.id().to_string(), r))
            .collect();
        let full = round % 50 == 49 || round + 1 == rounds || (round + 1) % per_store == 0;
        if full {
            for (job, (seq, kind)) in &acknowledged.jobs {
                check_ack(round, &records, &acknowledged, job, *seq, *kind);
            }
        }
        for (job, seq, kind) in &output.acks {
            check_ack(round, &records, &acknowledged, job, *seq, *kind);
            verified += 1;
        }
        let pending: std::collections::HashSet<String> =
            snapshot.outbox.iter().map(|m| m.key.to_string()).collect();
        let delivered_now: Vec<&String> = if full {
            acknowledged.delivered.iter().collect()
        } else {
            output.delivered.iter().collect()
        };
        for key in delivered_now {
            assert!(
                !pending.contains(key),
                "round {round}: {key} was acknowledged delivered and is pending again"
            );
        }
        delivered += output.delivered.len() as u64;

        let completed_now: Vec<&String> = if full {
            acknowledged.completed.iter().collect()
        } else {
            output
                .acks
                .iter()
                .filter(|(_, _, kind)| *kind == StateKind::Completed)
                .map(|(job, _, _)| job)
                .collect()
        };
        check_new_boot(round, &dir.0, &copy.0, &acknowledged, &completed_now);
    }
    report_figures(&format!(
        "file store: {rounds} children killed with SIGKILL (seed {seed:#x}, {boot} new boots, {} stores), {verified} ACKs and {delivered} deliveries verified, {} jobs, {} completed mandatory jobs never started again; {silent} children killed before their first ACK, {in_compaction} inside a compaction; {:.1} s",
        rounds.div_ceil(per_store),
        jobs + acknowledged.jobs.len(),
        completed + acknowledged.completed.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(verified > rounds, "the children acknowledged too little");
}

/// The change that creates job `id`, offered in boot `boot_name`.
fn offered(id: JobId, boot_name: &str) -> jobstate::store::Change {
    jobstate::store::Change {
        job: id.clone(),
        seq: 1,
        spec: Some(msi_job(id).into()),
        event: jobstate::Event {
            at: "2026-11-21T02:00:00Z".parse().unwrap(),
            boot: boot(boot_name),
            since_boot: std::time::Duration::ZERO,
            kind: jobstate::EventKind::Offered,
        },
        state: JobState::initial(),
    }
}

/// Commits the creation of job `name` to `store`, one commit.
fn offer_one(store: &mut FileStore, name: &str) {
    let base = store.load().unwrap().revision;
    let commit = jobstate::store::Commit::new(base, vec![offered(job(name), "b1")]);
    store.commit(&commit).unwrap();
}

/// The journal is compacted once it holds more commits than its bound (`compact_after`, plus
/// `per_job` for each job): not at the bound, and counting the commits it held at open
/// (cargo-mutants: a journal that never compacted, one that compacted a commit early, and an
/// open that forgot the commits already in the journal passed the file store's tests).
#[test]
fn the_journal_is_compacted_past_its_bound_counting_the_commits_it_held_at_open() {
    let _serial = no_spawns();
    let dir = TempDir::new("compact-bound");
    let options = FileStoreOptions {
        compact_after: 3,
        per_job: 0,
        ..FileStoreOptions::default()
    };
    let journal_len = || std::fs::metadata(dir.0.join("journal")).unwrap().len();
    let compacted = || dir.0.join("snapshot").exists();
    let mut store = FileStore::open_with(&dir.0, options).unwrap();
    let empty = journal_len();
    offer_one(&mut store, "a");
    offer_one(&mut store, "b");
    drop(store);
    // Reopened: the two commits in the journal count towards its bound.
    let mut store = FileStore::open_with(&dir.0, options).unwrap();
    offer_one(&mut store, "c");
    assert!(
        !compacted() && journal_len() > empty,
        "compacted at the bound, not past it"
    );
    offer_one(&mut store, "d");
    assert!(compacted(), "not compacted past the bound");
    assert_eq!(
        journal_len(),
        empty,
        "a new, empty journal after the snapshot"
    );
    drop(store);
    let mut store = FileStore::open_with(&dir.0, options).unwrap();
    assert_eq!(store.load().unwrap().jobs.len(), 4);
}

/// A compaction interrupted between its two renames leaves the new snapshot and the old
/// journal, which ends where the snapshot does. The open starts a new journal after the
/// snapshot, and the store carries on across commits and opens (cargo-mutants: an open that
/// kept the old journal passed the file store's tests; its commits made the next open refuse
/// the store).
#[test]
fn an_open_after_a_compaction_interrupted_between_its_renames_starts_a_new_journal() {
    let _serial = no_spawns();
    let dir = TempDir::new("between-renames");
    let mut store = FileStore::open(&dir.0).unwrap();
    let empty = std::fs::metadata(dir.0.join("journal")).unwrap().len();
    offer_one(&mut store, "a");
    offer_one(&mut store, "b");
    let old_journal = std::fs::read(dir.0.join("journal")).unwrap();
    store.compact().unwrap();
    drop(store);
    // The snapshot renamed into place, the journal not.
    std::fs::write(dir.0.join("journal"), &old_journal).unwrap();
    assert!(interrupted_compaction(&dir.0));
    let mut store = FileStore::open(&dir.0).unwrap();
    assert_eq!(
        std::fs::metadata(dir.0.join("journal")).unwrap().len(),
        empty,
        "the old journal kept"
    );
    assert!(!interrupted_compaction(&dir.0));
    offer_one(&mut store, "c");
    drop(store);
    let mut store = FileStore::open(&dir.0).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.revision, jobstate::store::Revision(3));
    assert_eq!(snapshot.jobs.len(), 3);
}

/// A commit too large for a journal frame (`MAX_FRAME` bytes) is refused with `TooLarge`
/// before anything is written, and the store takes the next commit (cargo-mutants: a limit
/// that refused only a commit of exactly `MAX_FRAME` bytes passed the file store's tests).
#[test]
fn a_commit_larger_than_a_frame_is_refused_and_nothing_is_written() {
    let _serial = no_spawns();
    let dir = TempDir::new("too-large");
    let mut store = FileStore::open(&dir.0).unwrap();
    let journal = std::fs::read(dir.0.join("journal")).unwrap();
    // Each change holds its job id and its event's boot id, 256 bytes each: more than
    // `MAX_FRAME` bytes in all.
    let long_boot = "b".repeat(jobstate::BootId::MAX_LEN);
    let changes = (0..jobstate::store::MAX_FRAME as usize / 512 + 1)
        .map(|i| {
            let name = format!("{i:0width$}", width = JobId::MAX_LEN);
            offered(job(&name), &long_boot)
        })
        .collect();
    let commit = jobstate::store::Commit::new(jobstate::store::Revision(0), changes);
    match store.commit(&commit) {
        Err(StoreError::TooLarge { size, max }) => {
            assert_eq!(max, jobstate::store::MAX_FRAME as usize);
            assert!(size > max, "{size} bytes refused");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(std::fs::read(dir.0.join("journal")).unwrap(), journal);
    offer_one(&mut store, "small");
    drop(store);
    let mut store = FileStore::open(&dir.0).unwrap();
    assert_eq!(store.load().unwrap().jobs.len(), 1);
}

/// Review finding: the snapshot was one frame of at most `MAX_FRAME` bytes, so a store that
/// outgrew it could not compact and stopped taking commits. Snapshots are now frames of about
/// 1 MiB after a count: a store of any size compacts, and a snapshot cut at a frame boundary
/// is refused.
#[test]
fn a_large_store_compacts_into_a_snapshot_of_many_frames() {
    let _serial = no_spawns();
    let dir = TempDir::new("large-snapshot");
    let mut store = FileStore::open(&dir.0).unwrap();
    let mut revision = jobstate::store::Revision(0);
    let jobs = 24_000; // a snapshot of about 2.1 MB: two frames of 1 MiB and the rest
    for batch in 0..jobs / 1000 {
        let changes = (0..1000)
            .map(|i| offered(job(&format!("job-{batch:02}-{i:04}")), "b1"))
            .collect();
        revision = store
            .commit(&jobstate::store::Commit::new(revision, changes))
            .unwrap();
    }
    store.compact().unwrap();
    let snapshot_len = std::fs::metadata(dir.0.join("snapshot")).unwrap().len();
    assert!(snapshot_len > 1_200_000, "{snapshot_len} bytes");
    drop(store);
    let mut store = FileStore::open(&dir.0).unwrap();
    assert_eq!(store.load().unwrap().jobs.len(), jobs);
    drop(store);

    // Cut at a frame boundary (the end of the second frame): refused, not a smaller store.
    let bytes = std::fs::read(dir.0.join("snapshot")).unwrap();
    let first = 24 + 12 + 8; // header, then the count frame
    let len = u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
    // Frames of 1 MiB at least (but the last): a few for this store, not one per few records.
    let count = u64::from_le_bytes(bytes[first - 8..first].try_into().unwrap());
    assert!(
        (2..=snapshot_len / (1024 * 1024) + 1).contains(&count),
        "a snapshot of {snapshot_len} bytes in {count} frames"
    );
    assert!(len >= 1024 * 1024, "a first frame of {len} bytes");
    std::fs::write(dir.0.join("snapshot"), &bytes[..first + 12 + len]).unwrap();
    assert!(matches!(
        FileStore::open(&dir.0),
        Err(StoreError::Corrupt { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Traps (issue 12, point 3): nothing followed, nothing trusted, typed errors that say what to do.
// ---------------------------------------------------------------------------------------------

/// A store with one job and a snapshot, closed: its directory.
fn closed_store(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let (mut ledger, _) =
        Ledger::open(FileStore::open(&dir.0).unwrap(), service_session("a")).unwrap();
    ledger.offer(msi_job(job("patch"))).unwrap();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    dir
}

fn unsafe_path(result: Result<FileStore, StoreError>) -> UnsafePath {
    match result {
        Err(StoreError::Unsafe(refusal)) => refusal,
        other => panic!("expected StoreError::Unsafe, got {other:?}"),
    }
}

/// Plants a trap.
type Plant<'a> = Box<dyn Fn() + 'a>;

#[cfg(unix)]
#[test]
fn links_fifos_devices_and_hard_links_in_the_store_are_refused_and_never_followed() {
    let _serial = spawning();
    let dir = closed_store("traps");
    let outside = TempDir::new("traps-victim");
    std::fs::create_dir_all(&outside.0).unwrap();
    let victim = outside.0.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mut refusals = 0;
    for name in ["journal", "snapshot"] {
        let path = dir.0.join(name);
        let saved = dir.0.join(format!("{name}.saved"));
        std::fs::rename(&path, &saved).unwrap();
        // A link to a file elsewhere, to a device; a FIFO (opening it would block for ever); a
        // second name (writing would change the file behind it).
        let mut traps: Vec<(&str, Plant)> = vec![
            (
                "link",
                Box::new(|| std::os::unix::fs::symlink(&victim, &path).unwrap()),
            ),
            (
                "link to /dev/zero",
                Box::new(|| std::os::unix::fs::symlink("/dev/zero", &path).unwrap()),
            ),
            (
                "hard link",
                Box::new(|| std::fs::hard_link(&saved, &path).unwrap()),
            ),
        ];
        if std::process::Command::new("mkfifo")
            .arg("--help")
            .output()
            .is_ok()
        {
            traps.push((
                "fifo",
                Box::new(|| {
                    assert!(
                        std::process::Command::new("mkfifo")
                            .arg(&path)
                            .status()
                            .unwrap()
                            .success()
                    );
                }),
            ));
        }
        for (trap, plant) in &traps {
            plant();
            let refusal = unsafe_path(FileStore::open(&dir.0));
            let ok = match (trap, &refusal) {
                (&"link" | &"link to /dev/zero", UnsafePath::Symlink { path: p }) => *p == path,
                (&"hard link", UnsafePath::HardLinked { path: p, links: 2 }) => *p == path,
                (&"fifo", UnsafePath::NotRegular { path: p, kind }) => {
                    *p == path && kind.contains("FIFO")
                }
                _ => false,
            };
            assert!(ok, "{name} as a {trap}: {refusal:?}");
            assert!(refusal.to_string().contains(&*path.to_string_lossy()));
            std::fs::remove_file(&path).unwrap();
            refusals += 1;
        }
        std::fs::rename(&saved, &path).unwrap();
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Temporary files planted as links: removed (the link, not its target), and reported.
    for name in ["journal.tmp", "snapshot.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.0.join(name)).unwrap();
    }
    let mut store = FileStore::open(&dir.0).unwrap();
    assert_eq!(
        store.open_report().removed.len(),
        2,
        "{}",
        store.open_report()
    );
    store.compact().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(store.load().unwrap().jobs.len(), 1);
    report_figures(&format!(
        "file store: {refusals} traps planted in place of the journal and the snapshot, all refused; links planted as temporary files removed, not followed"
    ));
}

#[cfg(unix)]
#[test]
fn a_directory_others_may_write_or_own_is_refused_and_modes_are_tightened() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _serial = spawning();
    let dir = closed_store("dir-modes");
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o7777;
    for writable in [0o777, 0o775, 0o1777, 0o730, 0o702] {
        set(&dir.0, writable);
        match unsafe_path(FileStore::open(&dir.0)) {
            UnsafePath::Writable { path, mode } => {
                assert_eq!((path, mode), (dir.0.clone(), writable));
            }
            other => panic!("mode {writable:o}: {other:?}"),
        }
        assert_eq!(
            mode(&dir.0),
            writable,
            "a refused directory is left as it was"
        );
    }
    // Readable by others only: opened, and tightened, with the files in it.
    set(&dir.0, 0o755);
    set(&dir.0.join("journal"), 0o644);
    set(&dir.0.join("snapshot"), 0o666);
    drop(FileStore::open(&dir.0).unwrap());
    assert_eq!(mode(&dir.0), 0o700);
    assert_eq!(mode(&dir.0.join("journal")), 0o600);
    assert_eq!(mode(&dir.0.join("snapshot")), 0o600);
    // Owned by another user (the tests run as root, who may give it away): refused, whether
    // the directory or a file in it.
    let chown = |path: &Path, uid: &str| {
        std::process::Command::new("chown")
            .arg(uid)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    };
    let me = std::fs::metadata(&dir.0).unwrap().uid();
    if me == 0 && chown(&dir.0, "12345") {
        match unsafe_path(FileStore::open(&dir.0)) {
            UnsafePath::ForeignOwner {
                owner: 12345,
                user: 0,
                ..
            } => {}
            other => panic!("a directory of uid 12345: {other:?}"),
        }
        assert!(chown(&dir.0, "0"));
        assert!(chown(&dir.0.join("journal"), "12345"));
        match unsafe_path(FileStore::open(&dir.0)) {
            UnsafePath::ForeignOwner {
                path, owner: 12345, ..
            } => {
                assert_eq!(path, dir.0.join("journal"));
            }
            other => panic!("a journal of uid 12345: {other:?}"),
        }
        assert!(chown(&dir.0.join("journal"), "0"));
    } else {
        report_figures("file store: not root, the foreign-owner refusal is not tested");
    }
    FileStore::open(&dir.0).unwrap();
}

/// Issue 12, point 5: a compaction cut short (a crash, a full disk) leaves `snapshot.tmp` or
/// `journal.tmp`; the next start used to fail until someone removed them by hand.
#[test]
fn leftovers_of_an_interrupted_compaction_are_removed_at_open_and_reported() {
    let _serial = no_spawns();
    let dir = closed_store("leftovers");
    std::fs::write(dir.0.join("snapshot.tmp"), vec![0x5a; 389 * 1024]).unwrap();
    std::fs::write(dir.0.join("journal.tmp"), b"JOBSTJNL half").unwrap();
    let mut store = FileStore::open(&dir.0).unwrap();
    let report = store.open_report().clone();
    assert_eq!(
        report.removed,
        [dir.0.join("snapshot.tmp"), dir.0.join("journal.tmp")]
    );
    assert!(report.cut.is_empty());
    assert!(
        report.to_string().contains("removed the leftover"),
        "{report}"
    );
    assert_eq!(store.load().unwrap().jobs.len(), 1);
    store.compact().unwrap();
    drop(store);
    assert!(FileStore::open(&dir.0).unwrap().open_report().is_clean());
}

/// `FileStore::inspect` reads a store an agent may be compacting: a snapshot read before a
/// compaction and a journal read after it disagree, so a `Corrupt` answer is read again, four
/// times 50 ms apart, before it is returned. A store that stays so is answered `Corrupt`, in
/// time (cargo-mutants: the retries dropped, or made endless, passed the file store's tests).
#[test]
fn inspect_reads_a_disagreeing_store_again_four_times_then_answers_corrupt() {
    let _serial = no_spawns();
    let dir = closed_store("inspect-retry");
    let old_snapshot = std::fs::read(dir.0.join("snapshot")).unwrap();
    let (mut ledger, _) =
        Ledger::open(FileStore::open(&dir.0).unwrap(), service_session("b")).unwrap();
    ledger.offer(msi_job(job("later"))).unwrap();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    drop(store);
    // What a reader between the two reads of a compaction sees: the old snapshot, the new
    // journal (which starts after it).
    std::fs::write(dir.0.join("snapshot"), &old_snapshot).unwrap();
    let path = dir.0.clone();
    let (answer, answered) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        // The receiver is gone only if this test already failed.
        let _ = answer.send(FileStore::inspect(&path));
    });
    let result = answered
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("inspect gives up on a store that stays damaged");
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Corrupt { .. })),
        "{result:?}"
    );
    assert!(
        took >= std::time::Duration::from_millis(200),
        "answered after {took:?}: not read again four times 50 ms apart"
    );
}

/// A small ext4 file system with 1 KiB blocks, loop-mounted (root only), unmounted on drop:
/// to fill a disk for real.
pub struct SmallExt4 {
    /// The image's directory.
    pub image: TempDir,
    /// Where it is mounted.
    pub mount: PathBuf,
}

impl SmallExt4 {
    /// Mounts a new file system of `kib` KiB, or says (on stderr) why it cannot.
    pub fn mount(name: &str, kib: u64) -> Option<Self> {
        let skip = |why: String| {
            report_figures(&format!("{name}: skipped, {why}"));
            None
        };
        if !std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        {
            return skip("not root: a loop mount needs root".into());
        }
        let image = TempDir::new(&format!("{name}-image"));
        std::fs::create_dir_all(&image.0).ok()?;
        let file = image.0.join("fs.img");
        let mount = image.0.join("mnt");
        std::fs::create_dir_all(&mount).ok()?;
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("{program}: {e}"))
                .and_then(|out| {
                    if out.status.success() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{program} failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ))
                    }
                })
        };
        let size = format!("{kib}K");
        if let Err(why) = run(
            "truncate",
            &["-s".as_ref(), size.as_ref(), file.as_os_str()],
        )
        .and_then(|()| {
            run(
                "mkfs.ext4",
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-b".as_ref(),
                    "1024".as_ref(),
                    file.as_os_str(),
                ],
            )
        })
        .and_then(|()| {
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    file.as_os_str(),
                    mount.as_os_str(),
                ],
            )
        }) {
            return skip(why);
        }
        Some(Self { image, mount })
    }

    /// Fills the file system, but for about `leave` bytes, with a file of zeros.
    pub fn fill(&self, name: &str, leave: u64) {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let free = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .unwrap();
        let mut left = free.saturating_sub(leave);
        let mut file = std::fs::File::create(self.mount.join(name)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = file.sync_all();
    }

    /// Fills what is left, until the file system says it is full.
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))] // used by conformance.rs only
    pub fn fill_up(&self, name: &str) {
        let mut file = std::fs::File::create(self.mount.join(name)).unwrap();
        let chunk = vec![0u8; 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
    }
}

impl Drop for SmallExt4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
        let _ = &self.image;
    }
}

/// Issue 12, point 5, on a real full disk: a compaction that runs out of space leaves a partial
/// `snapshot.tmp`; the store stops taking commits (fail-stop), and the next start removes the
/// leftover, reports it, and holds every acknowledged commit. Needs root (a loop mount):
/// skipped, and says so, otherwise.
#[test]
fn enospc_during_compaction_leaves_a_leftover_that_the_next_start_removes() {
    let _serial = spawning();
    let Some(fs) = SmallExt4::mount("file-store-full-disk", 3 * 1024) else {
        return;
    };
    let dir = fs.mount.join("state");
    let options = FileStoreOptions {
        compact_after: 1_000_000,
        per_job: 0,
        retention: jobstate::store::Retention::keep_all(),
    };
    let (mut ledger, _) = Ledger::open(
        FileStore::open_with(&dir, options).unwrap(),
        service_session("a"),
    )
    .unwrap();
    // Room for the journal, not for a snapshot beside it.
    fs.fill("filler", 48 * 1024);
    let mut acked = Vec::new();
    loop {
        let id = job(&format!("{:04}-{}", acked.len(), "x".repeat(200)));
        match ledger.offer(msi_job(id.clone())) {
            Ok(_) => acked.push(id),
            Err(_) => break,
        }
    }
    assert!(acked.len() > 20, "{} commits", acked.len());
    // The journal took the space; the last commit failed and the store stopped. A new process
    // (after a restart) compacts: the snapshot does not fit.
    drop(ledger);
    let mut store = FileStore::open_with(&dir, options).unwrap();
    let compaction = store.compact();
    assert!(
        compaction.is_err(),
        "a snapshot on a full disk: {compaction:?}"
    );
    let leftover = dir.join("snapshot.tmp");
    let leftover_len = std::fs::metadata(&leftover)
        .expect("the failed compaction leaves its temporary file")
        .len();
    drop(store);
    // The next start.
    let mut store = FileStore::open_with(&dir, options).unwrap();
    let jobs: Vec<JobId> = store
        .load()
        .unwrap()
        .jobs
        .iter()
        .map(|r| r.id().clone())
        .collect();
    assert_eq!(jobs, acked, "every acknowledged commit is there");
    assert_eq!(store.open_report().removed, std::slice::from_ref(&leftover));
    assert!(!leftover.exists());
    // Once there is room again, the store compacts.
    std::fs::remove_file(fs.mount.join("filler")).unwrap();
    store.compact().unwrap_or_else(|e| panic!("{e}"));
    report_figures(&format!(
        "file store on a full 1 KiB-block ext4: {} commits acknowledged, compaction failed ({}), a snapshot.tmp of {leftover_len} bytes left and removed at the next start",
        acked.len(),
        compaction.unwrap_err()
    ));
}

//! The encoded snapshot record of each of the file store's tombstones, kept so that a
//! compaction copies it instead of encoding it again.
//!
//! A tombstone never changes until its job does (an optional job rerun), so the bytes written
//! for it once stay right; its sequence number, which every change raises, tells when they no
//! longer are. Encoding 100,000 tombstones scattered over the heap took a compaction 60–75 ms
//! (their records walked one by one, cache miss after cache miss); copying their bytes from one
//! buffer costs a few. Bytes are taken from the snapshot at open and from the commit that
//! finished a job (the record is at hand then), and rebuilt, without what went stale, at each
//! compaction.

/// The bytes of the tombstones' records, by job position in the store's table.
#[derive(Debug, Default)]
pub(crate) struct TombstoneBytes {
    /// The records, back to back.
    bytes: Vec<u8>,
    /// By job position (the order jobs were first offered, which never changes): where its
    /// record is in `bytes`; `len == 0` for none.
    spans: Vec<Span>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Span {
    start: usize,
    len: u32,
    /// The job's sequence number when the bytes were taken: they are its record while it is.
    seq: u64,
}

impl TombstoneBytes {
    /// Room for the records of about `jobs` tombstones of about `bytes` bytes in all.
    pub(crate) fn with_capacity(jobs: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(jobs),
        }
    }

    /// Makes room for the tombstones of a snapshot of `bytes` bytes: at most that many bytes of
    /// records, and about one job per 100 bytes (a tombstone's record is about that long), so
    /// that taking 100,000 of them at open copies nothing twice. [`TombstoneBytes::fit`] gives
    /// back what was not used.
    pub(crate) fn reserve_for_snapshot(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
        self.spans.reserve(bytes / 100);
    }

    /// Gives back the room not used (after a snapshot of few tombstones, or a compaction that
    /// dropped stale bytes).
    pub(crate) fn fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    /// The record of the job at `position` if it is a tombstone whose bytes were taken at its
    /// sequence number `seq`, its current one: every change raises it, and nothing else changes
    /// a tombstone, so the bytes are still its record. (The job's record itself is not read:
    /// the point is not to walk to 100,000 of them.)
    pub(crate) fn get(&self, position: usize, seq: u64) -> Option<&[u8]> {
        let span = self.spans.get(position)?;
        if span.len == 0 || span.seq != seq {
            return None;
        }
        self.bytes.get(span.start..span.start + span.len as usize)
    }

    /// How many bytes the records take.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Keeps `record` as the record of the job at `position`, a tombstone at sequence number
    /// `seq`. (Bytes a job's later change made stale stay until the next compaction: at most
    /// one record per commit the journal's bound lets in.)
    pub(crate) fn put(&mut self, position: usize, seq: u64, record: &[u8]) {
        let Ok(len) = u32::try_from(record.len()) else {
            return; // never for a tombstone; without its bytes it is encoded again
        };
        if self.spans.len() <= position {
            self.spans.resize(position + 1, Span::default());
        }
        self.spans[position] = Span {
            start: self.bytes.len(),
            len,
            seq,
        };
        self.bytes.extend_from_slice(record);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::TombstoneBytes;
    use crate::codec;
    use crate::core::id::{BootId, JobId};
    use crate::core::program::ProgramId;
    use crate::core::spec::JobSpec;
    use crate::ledger::Ledger;
    use crate::session::{SessionFacts, test_facts};
    use crate::store::file::{FileStore, FileStoreOptions};

    fn id(s: &str) -> JobId {
        JobId::new(s).unwrap()
    }

    fn run(ledger: &mut Ledger<FileStore, SessionFacts>, job: &str, pid: u32) {
        let attempt = ledger.begin(&id(job)).unwrap();
        let _ = ledger.launched(&attempt, ProgramId::new(pid, 1)).unwrap();
        let _ = ledger.program_exited(&attempt, 0).unwrap();
    }

    /// The kept bytes of the job `job` of `store`, checked against a fresh encoding.
    fn kept(store: &FileStore, job: &str) -> Option<Vec<u8>> {
        let jobs = store.journal.live.jobs();
        let position = jobs.position(&id(job))?;
        let record = jobs.at(position)?;
        let bytes = store.journal.tombstones.get(position, record.seq())?;
        let mut fresh = Vec::new();
        codec::encode_job(record, &mut fresh).unwrap();
        assert_eq!(bytes, &fresh[..], "{job}'s kept bytes are its record");
        Some(bytes.to_vec())
    }

    /// A ledger on a new file store that compacts only when told to, in `boot-1`.
    fn opened() -> (
        tempfile::TempDir,
        FileStoreOptions,
        Ledger<FileStore, SessionFacts>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = FileStoreOptions {
            compact_after: u64::MAX,
            per_job: 0,
            ..FileStoreOptions::default()
        };
        let store = FileStore::open_with(dir.path(), options).unwrap();
        let (ledger, _) = Ledger::open(store, test_facts("boot-1")).unwrap();
        (dir, options, ledger)
    }

    /// What a compaction of `store` writes, from kept bytes and without them: the same.
    fn same_snapshot_either_way(store: &mut FileStore) -> usize {
        let live = &store.journal.live;
        let with = codec::encode_state(live, 4096, &mut store.journal.tombstones).unwrap();
        let without = codec::encode_state(live, 4096, &mut TombstoneBytes::default()).unwrap();
        assert_eq!(with, without, "kept bytes change what a snapshot holds");
        with.iter().map(Vec::len).sum()
    }

    /// Room for a snapshot's tombstones is made once, before they are taken (a job per 100
    /// bytes), and what was not used is given back (cargo-mutants: the room not made, made a
    /// hundred times too large, or never given back; only memory and copies tell).
    #[test]
    fn room_is_made_for_a_snapshots_tombstones_and_what_was_not_used_is_given_back() {
        let mut kept = TombstoneBytes::default();
        kept.reserve_for_snapshot(100_000);
        assert!(kept.bytes.capacity() >= 100_000);
        let spans = kept.spans.capacity();
        assert!((1_000..10_000).contains(&spans), "room for {spans} jobs");
        kept.put(3, 7, b"a tombstone's record");
        kept.fit();
        assert!(
            kept.bytes.capacity() < 1_000,
            "{} bytes kept",
            kept.bytes.capacity()
        );
        assert!(
            kept.spans.capacity() < 100,
            "{} jobs kept",
            kept.spans.capacity()
        );
        assert_eq!(kept.get(3, 7), Some(&b"a tombstone's record"[..]));
        assert_eq!(kept.len(), 20);
    }

    #[test]
    fn a_finished_job_is_a_tombstone_with_its_bytes_from_the_commit_that_finished_it() {
        let (dir, options, mut ledger) = opened();
        ledger.offer(JobSpec::new(id("patch"))).unwrap();
        ledger
            .offer(JobSpec::new(id("tool")).with_mandatory(false))
            .unwrap();
        ledger.offer(JobSpec::new(id("queued"))).unwrap();
        run(&mut ledger, "patch", 100);
        run(&mut ledger, "tool", 101);
        // The store's copies are tombstones at once; the ledger keeps the whole history.
        assert_eq!(ledger.job(&id("patch")).unwrap().history().len(), 4);
        let mut store = ledger.into_store();
        let jobs = store.journal.live.jobs();
        assert!(jobs.get(&id("patch")).unwrap().is_tombstone());
        assert!(jobs.get(&id("tool")).unwrap().is_tombstone());
        assert!(kept(&store, "patch").is_some() && kept(&store, "tool").is_some());
        assert_eq!(kept(&store, "queued"), None, "an unfinished job has none");
        same_snapshot_either_way(&mut store);

        // A rerun changes the job: its bytes are no longer its record.
        let (mut ledger, _) = Ledger::open(store, test_facts("boot-1")).unwrap();
        let _ = ledger.rerun(&id("tool")).unwrap();
        let mut store = ledger.into_store();
        assert_eq!(kept(&store, "tool"), None, "a rerun job's bytes went stale");
        assert!(kept(&store, "patch").is_some());
        same_snapshot_either_way(&mut store);
        store.compact().unwrap();
        let before: Vec<_> = store.journal.live.jobs().iter().cloned().collect();
        drop(store);

        // Reopened: the tombstones' bytes come from the snapshot, the rerun job has none.
        let store = FileStore::open_with(dir.path(), options).unwrap();
        let after: Vec<_> = store.journal.live.jobs().iter().cloned().collect();
        assert_eq!(after, before, "the snapshot reads back as written");
        assert!(kept(&store, "patch").is_some());
        assert_eq!(kept(&store, "tool"), None);
        let (mut ledger, _) = Ledger::open(store, test_facts("boot-2")).unwrap();
        run(&mut ledger, "tool", 200);
        run(&mut ledger, "queued", 201);
        let mut store = ledger.into_store();
        assert!(kept(&store, "tool").is_some() && kept(&store, "queued").is_some());
        let written = same_snapshot_either_way(&mut store);
        assert!(written > 0);
        store.compact().unwrap();
        let before: Vec<_> = store.journal.live.jobs().iter().cloned().collect();
        drop(store);
        let store = FileStore::open_with(dir.path(), options).unwrap();
        let after: Vec<_> = store.journal.live.jobs().iter().cloned().collect();
        assert_eq!(after, before);
        assert!(after.iter().all(|job| job.is_tombstone()));
    }

    #[test]
    fn a_commit_that_finishes_a_job_and_reruns_it_leaves_what_its_replay_leaves() {
        use crate::core::event::{Event, EventKind};
        use crate::core::transition::transition;
        use crate::store::{Change, Commit, Revision, Store};

        let dir = tempfile::tempdir().unwrap();
        let options = FileStoreOptions::default();
        let store = FileStore::open_with(dir.path(), options).unwrap();
        let (mut ledger, _) = Ledger::open(store, test_facts("boot-1")).unwrap();
        ledger
            .offer(JobSpec::new(id("tool")).with_mandatory(false))
            .unwrap();
        let attempt = ledger.begin(&id("tool")).unwrap();
        let _ = ledger.launched(&attempt, ProgramId::new(100, 1)).unwrap();
        let record = ledger.job(&id("tool")).unwrap().clone();
        let mut store = ledger.into_store();
        // One commit of two changes (a store's user may write such commits; the ledger does
        // not): the exit that completes the job, and its rerun.
        let event = |kind| Event {
            at: Utc.with_ymd_and_hms(2026, 12, 2, 12, 1, 0).unwrap(),
            boot: BootId::new("boot-1").unwrap(),
            since_boot: Duration::from_secs(120),
            kind,
        };
        let exited = event(EventKind::ProgramExited {
            attempt: attempt.attempt_ref(),
            exit: 0.into(),
            restart_pending: false,
        });
        let completed = transition(record.spec(), record.state(), &exited)
            .unwrap()
            .state
            .unwrap();
        assert!(completed.is_terminal());
        let rerun = event(EventKind::RerunRequested);
        let queued = transition(record.spec(), &completed, &rerun)
            .unwrap()
            .state
            .unwrap();
        let change = |seq, event, state| Change {
            job: id("tool"),
            seq,
            spec: None,
            event,
            state,
        };
        let commit = Commit::new(
            Revision(store.journal.revision),
            vec![
                change(record.seq() + 1, exited, completed),
                change(record.seq() + 2, rerun, queued),
            ],
        );
        store.commit(&commit).unwrap();
        let live = store.journal.live.jobs().get(&id("tool")).unwrap().clone();
        assert_eq!(live.history().len(), 2, "its tombstone, then the rerun");
        drop(store);
        let store = FileStore::open_with(dir.path(), options).unwrap();
        let replayed = store.journal.live.jobs().get(&id("tool")).unwrap().clone();
        assert_eq!(replayed, live, "the replay leaves what the commit left");
    }

    #[test]
    fn a_change_from_the_journal_makes_a_snapshot_tombstones_bytes_stale() {
        let (dir, options, mut ledger) = opened();
        ledger
            .offer(JobSpec::new(id("tool")).with_mandatory(false))
            .unwrap();
        run(&mut ledger, "tool", 100);
        let mut store = ledger.into_store();
        store.compact().unwrap();
        // The rerun lands in the journal after the snapshot that holds the tombstone.
        let (mut ledger, _) = Ledger::open(store, test_facts("boot-1")).unwrap();
        let _ = ledger.rerun(&id("tool")).unwrap();
        drop(ledger);
        let mut store = FileStore::open_with(dir.path(), options).unwrap();
        let tool = store.journal.live.jobs().get(&id("tool")).unwrap().clone();
        assert!(!tool.is_tombstone(), "rerun: queued again");
        assert_eq!(
            kept(&store, "tool"),
            None,
            "the snapshot's bytes went stale"
        );
        same_snapshot_either_way(&mut store);
    }
}

//! The durable file store: an append-only journal of checksummed frames, one `fdatasync` per
//! commit, compacted now and then into a snapshot that replaces the old one atomically.

#[cfg(test)]
mod crash_tests;
pub(crate) mod crc32c;
mod disk;
mod frame;
mod journal_reader;
mod read_only;
#[cfg(test)]
mod sim;
mod tombstone_bytes;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use frame::MAX_FRAME;
pub(crate) use tombstone_bytes::TombstoneBytes;

use self::disk::{AppendFile, Disk, RealDisk};
use self::frame::{
    HEADER_LEN, Header, HeaderError, JOURNAL_FORMAT, JOURNAL_FORMATS, JOURNAL_MAGIC, Layout, Next,
    SNAPSHOT_FORMAT, SNAPSHOT_MAGIC, frame_header, header, next_frame, push_frame, read_header,
};
use self::journal_reader::JournalReader;
use super::{Commit, Cut, Inspection, OpenReport, Replay, Revision, Snapshot, Store, StoreError};
use crate::codec;
use crate::safe_fs::UnsafePath;

const JOURNAL: &str = "journal";
const SNAPSHOT: &str = "snapshot";
/// The lock file, where directories cannot be locked (not on Unix).
#[cfg(not(unix))]
const LOCK: &str = "lock";
/// What an interrupted compaction may leave behind: removed at open.
const LEFTOVERS: [&str; 2] = ["snapshot.tmp", "journal.tmp"];
/// The size of a snapshot's frames: a store of any size compacts.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// How much of the journal recovery reads at a time (more for a longer frame, or to look past
/// a damaged one). The crate's own tests read in pieces of a few bytes, so that every frame,
/// torn or damaged, is met across a piece's edge.
#[cfg(not(test))]
const READ_PIECE: usize = 1024 * 1024;
#[cfg(test)]
const READ_PIECE: usize = 61;

/// About the fewest bytes a job takes in a snapshot (a tombstone's record is about 100) and in a
/// journal (its changes, about 120 bytes each, four to six of them, and their reports): what an
/// open reserves room for, in jobs, per byte it is about to load. An estimate too low costs a
/// growth of the index; too high, room never used.
const SNAPSHOT_BYTES_PER_JOB: usize = 110;
const JOURNAL_BYTES_PER_JOB: u64 = 600;

/// When the file store compacts its journal into a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// Compact once the journal holds more than this many commits, plus
    /// [`per_job`](FileStoreOptions::per_job) for each job the store holds.
    pub compact_after: u64,
    /// Commits allowed per job before compacting (the journal's bound grows with the jobs).
    pub per_job: u64,
    /// How much history the store keeps in memory and writes at compaction (default: two
    /// earlier runs per job, finished jobs as tombstones). What a snapshot dropped is gone.
    pub retention: crate::store::Retention,
}

impl Default for FileStoreOptions {
    /// Compact after 16 384 commits plus 4 per job; the default [`Retention`](crate::store::Retention).
    fn default() -> Self {
        Self {
            compact_after: 16_384,
            per_job: 4,
            retention: crate::store::Retention::default(),
        }
    }
}

/// The durable store agents ship with: a directory holding a journal and a snapshot.
///
/// - Each commit appends one frame (length, CRC-32C, the commit's records) to the journal and
///   calls `fdatasync` once before returning: a commit that returned `Ok` survives a crash or a
///   power cut. A batch of transitions in one [`Commit`] costs one sync.
/// - When the journal grows past its bound, the store writes a snapshot of everything (completed
///   mandatory jobs included: they are never pruned) to a temporary file, syncs it, renames it
///   over the old snapshot, syncs the directory, and starts a new journal the same way.
/// - Opening recovers: the last frame, if it ends the file and was torn by a crash while it was
///   written (a commit that never returned), is cut off, and the cut is reported
///   ([`FileStore::open_report`]). Any other damage — a damaged frame with anything after it,
///   a length that does not fit, a frame missing from the middle, any damage to the snapshot —
///   is refused with [`StoreError::Corrupt`], naming the file and the offset, and nothing is
///   changed or skipped. Damage confined to the very last frame cannot be told from a torn
///   write and is cut off like one (as SQLite's WAL does): only the medium damaging it after
///   the fact can lose an acknowledged commit so, and the open report says what was cut. The
///   loss of the whole last frame leaves no trace in the journal: a store that must notice it
///   needs its revision kept elsewhere.
/// - Leftovers of an interrupted compaction (`snapshot.tmp`, `journal.tmp`) are removed at
///   open, and reported.
/// - One writer: the store locks its directory itself (`flock` on the directory, on Unix), so
///   no file deleted or replaced in it lets a second writer in. A second [`FileStore::open`] of
///   the directory, in this process or another, fails with [`StoreError::Locked`] after
///   waiting a quarter of a second at most for the lock (a child process started by another
///   thread holds a copy of the lock until it executes its program: a store closed and
///   reopened meanwhile is not refused for that).
/// - No traps followed: the directory is refused ([`StoreError::Unsafe`]) when another user
///   owns it or its group or others may write it; store files are opened without following
///   links (`O_NOFOLLOW`), only as regular files with one name owned by this user or root,
///   temporary files are created with `O_EXCL`, and reads stop at the size seen at open.
/// - Files are created readable by the owner only (0600, the directory 0700), and existing
///   ones are tightened to those modes.
/// - A failed write or sync is fail-stop: the journal is cut back to its last synced length
///   (so that a later open cannot read the failed commit back from the page cache, where Linux
///   keeps it after a failed `fdatasync`, and build on it), the commit returns the error, and
///   every later commit is refused with [`StoreError::FailStop`] until the store is reopened,
///   so that nothing is reported done that may not be on disk.
///
/// ```
/// use jobstate::FileStore;
/// use jobstate::store::Store;
/// let dir = tempfile::tempdir()?;
/// let mut store = FileStore::open(dir.path().join("store"))?;
/// assert_eq!(store.load()?.jobs.len(), 0);
/// assert!(store.open_report().is_clean()); // nothing was cut or removed
/// assert!(FileStore::open(dir.path().join("store")).is_err()); // one writer at a time
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStore {
    journal: Journal<RealDisk>,
    /// Held (locked) for as long as the store is open: the directory on Unix.
    _lock: File,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Refused with [`StoreError::Unsafe`]: an empty path, a path that is not a directory, a
    /// directory another user owns or others may write, a store file that is a link, a FIFO, a
    /// device or has several names.
    pub fn open_with(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        RealDisk
            .create_dir(dir)
            .map_err(io("opening the store directory"))?;
        let lock = lock(dir)?;
        let journal = Journal::open(RealDisk, dir, options)?;
        Ok(Self {
            journal,
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.journal.dir
    }

    /// What opening the store cut off or removed: a torn last commit, leftovers of an
    /// interrupted compaction. An agent should log it; a cut it did not expect (no crash or
    /// power loss before this start) is media damage.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobstate::FileStore;
    /// let store = FileStore::open(dir.path().join("store"))?;
    /// for cut in &store.open_report().cut {
    ///     eprintln!("agent: recovery: {cut}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_report(&self) -> &OpenReport {
        &self.journal.report
    }

    /// Compacts the journal into a snapshot now.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.journal.compact()
    }

    /// Reads the store in `dir` without taking its lock or changing anything, so that it can
    /// be looked at while an agent holds it (what the `jobstate` inspection tool does). Nothing
    /// is created, cut or removed: what a writer's open would repair is in the inspection's
    /// report only. A torn last commit may be one the agent is writing right now.
    ///
    /// A compaction between the reads of the snapshot and the journal can make them disagree:
    /// the read is tried again, up to five times, before the error is returned.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobstate::FileStore;
    /// use jobstate::store::Store;
    /// let store = FileStore::open(dir.path())?; // an agent holds it
    /// let inspection = FileStore::inspect(dir.path())?;
    /// assert_eq!(inspection.snapshot.jobs.len(), 0);
    /// assert!(inspection.report.is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect(dir: impl AsRef<Path>) -> Result<Inspection, StoreError> {
        let dir = dir.as_ref();
        let mut tries = 0;
        loop {
            // Everything stored is shown: nothing is compacted away in memory either.
            let options = FileStoreOptions {
                retention: crate::store::Retention::keep_all(),
                ..FileStoreOptions::default()
            };
            let attempt =
                Journal::open(read_only::ReadOnlyDisk, dir, options).and_then(|journal| {
                    Ok(Inspection {
                        snapshot: journal.load()?,
                        report: journal.report,
                    })
                });
            match attempt {
                Err(StoreError::Corrupt { .. } | StoreError::Replay(_)) if tries < 4 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.journal.load()
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        self.journal.commit(commit)
    }

    fn open_report(&self) -> OpenReport {
        self.journal.report.clone()
    }
}

/// An IO error as a store error: an [`UnsafePath`](crate::store::UnsafePath) refusal as
/// [`StoreError::Unsafe`], anything else as [`StoreError::Io`] with `context`.
pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |source| match crate::safe_fs::take_unsafe(source) {
        Ok(refusal) => StoreError::Unsafe(refusal),
        Err(source) => StoreError::Io {
            context: context.to_string(),
            source,
        },
    }
}

/// How long [`try_lock`] waits, in all, for a lock held by someone else before it answers
/// [`StoreError::Locked`]: longer than a child process takes from `fork` to `exec`, far shorter
/// than any real writer's life.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Locks `file` for as long as it stays open, waiting [`LOCK_WAIT`] at most.
///
/// Why wait at all: an `flock` lock belongs to the open file, and a child process started by
/// any thread of this process holds a copy of every open file from `fork` until its `exec`
/// (close-on-exec takes effect only then). A store closed and at once reopened (as after a
/// fail-stop) while another thread starts a job's program would otherwise be refused as if
/// another writer held it.
pub(crate) fn try_lock(file: File, path: &Path) -> Result<File, StoreError> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    context: format!("locking {}", path.display()),
                    source,
                });
            }
        }
    }
}

/// Locks the store directory `dir` itself for the life of the returned handle: one writer at a
/// time. A lock on a file in the directory is defeated by deleting or replacing the file (the
/// next writer locks a new one); the directory cannot be deleted while the store's files are
/// in it, and the lock is checked to be on the directory that is at `dir` now.
#[cfg(unix)]
fn lock(dir: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let handle = File::open(dir).map_err(io("opening the store directory to lock it"))?;
    let handle = try_lock(handle, dir)?;
    let locked = handle
        .metadata()
        .map_err(io("looking at the locked store directory"))?;
    let now = std::fs::metadata(dir).map_err(io("looking at the store directory"))?;
    if (locked.dev(), locked.ino()) != (now.dev(), now.ino()) {
        return Err(StoreError::Unsafe(crate::store::UnsafePath::Replaced {
            path: dir.to_path_buf(),
        }));
    }
    Ok(handle)
}

/// Where a directory cannot be opened as a file: a lock file in it, checked after locking to
/// still be the file at its path.
#[cfg(not(unix))]
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    let file = crate::safe_fs::open(&path, &mut options).map_err(io("opening the lock file"))?;
    try_lock(file, &path)
}

/// The journal and snapshot over any [`Disk`]: the whole store but the lock.
#[derive(Debug)]
pub(crate) struct Journal<D: Disk> {
    disk: D,
    dir: PathBuf,
    options: FileStoreOptions,
    file: D::File,
    /// The store revision: commits applied, in the snapshot and the journal.
    revision: u64,
    /// Commits in the journal file.
    frames: u64,
    /// The journal file's format: what its commits are written in (format 2's journal, left by
    /// an earlier build, stays format 2 until a compaction starts a new one).
    format: u32,
    /// What the store holds.
    live: Replay,
    /// The snapshot records of its tombstones, encoded: what a compaction copies.
    tombstones: TombstoneBytes,
    /// The journal's length when it was last synced: what a failed write or sync is cut
    /// back to.
    synced_len: u64,
    /// What opening cut off or removed.
    report: OpenReport,
    /// Why the store stopped accepting commits, after a failed write or sync.
    failed: Option<String>,
}

impl<D: Disk> Journal<D> {
    pub(crate) fn open(disk: D, dir: &Path, options: FileStoreOptions) -> Result<Self, StoreError> {
        disk.create_dir(dir)
            .map_err(io("opening the store directory"))?;
        let mut report = OpenReport::default();
        // An interrupted compaction (a crash, a full disk) leaves its temporary files: they
        // hold nothing the journal and the snapshot do not, and the next compaction creates
        // them anew (O_EXCL), so they go.
        for name in LEFTOVERS {
            let path = dir.join(name);
            if disk
                .remove(&path)
                .map_err(io("removing a leftover temporary file"))?
            {
                report.removed.push(path);
            }
        }
        let snapshot_path = dir.join(SNAPSHOT);
        let journal_path = dir.join(JOURNAL);
        let mut live = Replay::default();
        // Finished jobs become tombstones in the change that finishes them, in the replay as in
        // every commit after it: what the store holds never depends on when it was reopened.
        live.settle_on_finish(Some(options.retention));
        let mut tombstones = TombstoneBytes::default();
        let snapshot = disk
            .read(&snapshot_path)
            .map_err(io("reading the snapshot"))?;
        let snapshot_revision = match &snapshot {
            Some(bytes) => {
                if options.retention.tombstones {
                    tombstones.reserve_for_snapshot(bytes.len());
                }
                live.reserve_jobs(bytes.len() / SNAPSHOT_BYTES_PER_JOB);
                let revision = load_snapshot(bytes, &snapshot_path, &mut live, &mut tombstones)?;
                tombstones.fit();
                revision
            }
            None => 0,
        };
        let Some((source, len)) = disk
            .open_read(&journal_path)
            .map_err(io("reading the journal"))?
        else {
            live.compact_history(&options.retention);
            if snapshot.is_some() {
                return Err(corrupt(
                    &journal_path,
                    0,
                    "the journal is missing but a snapshot exists".into(),
                ));
            }
            write_journal(&disk, dir, 0)?;
            let file = disk
                .open_append(&journal_path)
                .map_err(io("opening the journal"))?;
            return Ok(Self {
                disk,
                dir: dir.to_path_buf(),
                options,
                file,
                revision: 0,
                frames: 0,
                format: JOURNAL_FORMAT,
                live,
                tombstones,
                synced_len: HEADER_LEN as u64,
                report,
                failed: None,
            });
        };
        let mut journal = JournalReader::new(source, len, READ_PIECE);
        live.reserve_jobs(usize::try_from(len / JOURNAL_BYTES_PER_JOB).unwrap_or(0));
        let reading =
            |e| io("reading the journal")(crate::safe_fs::context(e, "reading", &journal_path));
        let Header {
            revision: start,
            mut format,
        } = checked_header(
            journal.start(HEADER_LEN).map_err(reading)?,
            JOURNAL_MAGIC,
            &JOURNAL_FORMATS,
            &journal_path,
        )?;
        journal.set_layout(Layout::of_journal(format));
        if start > snapshot_revision {
            return Err(corrupt(
                &journal_path,
                0,
                format!(
                    "the journal starts at revision {start} but the snapshot holds only {snapshot_revision}: the snapshot is missing or old"
                ),
            ));
        }
        let mut revision = start;
        let mut frames = 0;
        // An offset in the file, not in memory: a journal may be longer than a 32-bit
        // target's `usize` reaches.
        let mut at = HEADER_LEN as u64;
        loop {
            let salt = revision
                .checked_add(1)
                .ok_or_else(|| corrupt(&journal_path, at, "a revision past the largest".into()))?;
            match journal.next(at, salt).map_err(reading)? {
                Next::Frame { payload, end } => {
                    revision = salt;
                    frames += 1;
                    // Frames the snapshot already holds (an interrupted compaction) are skipped.
                    if revision > snapshot_revision {
                        apply_payload(payload, &mut live, format)
                            .map_err(|detail| corrupt(&journal_path, at, detail))?;
                    }
                    at = end;
                }
                Next::End => break,
                Next::TornTail(why) => {
                    disk.truncate(&journal_path, at)
                        .map_err(io("cutting the torn end off the journal"))?;
                    report.cut.push(Cut {
                        file: journal_path.clone(),
                        offset: at,
                        bytes: journal.len().saturating_sub(at),
                        damage: why.to_string(),
                    });
                    break;
                }
                Next::Corrupt(why) => {
                    return Err(corrupt(&journal_path, at, why.to_string()));
                }
            }
        }
        let mut synced_len = at;
        if start < snapshot_revision {
            // Only an interrupted compaction leaves a journal that starts before the snapshot,
            // and then it ends exactly where the snapshot does. Anything else is damage: never
            // rewrite the journal over it.
            if revision != snapshot_revision {
                return Err(corrupt(
                    &journal_path,
                    0,
                    format!(
                        "the journal holds revisions {start} to {revision} but the snapshot holds {snapshot_revision}: one of them is damaged"
                    ),
                ));
            }
            write_journal(&disk, dir, snapshot_revision)?;
            frames = 0;
            format = JOURNAL_FORMAT;
            synced_len = HEADER_LEN as u64;
        }
        live.compact_history(&options.retention);
        if !disk.read_only() {
            // The directory's entries may not be durable: a compaction whose last directory
            // sync failed renamed a new journal into place that a power cut would take back,
            // with every commit appended to it from now on. Durable before any commit.
            disk.sync_dir(dir)
                .map_err(io("syncing the store directory"))?;
        }
        let file = disk
            .open_append(&journal_path)
            .map_err(io("opening the journal"))?;
        Ok(Self {
            disk,
            dir: dir.to_path_buf(),
            options,
            file,
            revision,
            frames,
            format,
            live,
            tombstones,
            synced_len,
            report,
            failed: None,
        })
    }

    pub(crate) fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.live.snapshot(Revision(self.revision)))
    }

    pub(crate) fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        if let Some(cause) = &self.failed {
            return Err(StoreError::FailStop {
                cause: cause.clone(),
            });
        }
        if commit.base != Revision(self.revision) {
            return Err(StoreError::Conflict {
                base: commit.base,
                current: Revision(self.revision),
            });
        }
        if commit.is_empty() {
            return Ok(Revision(self.revision));
        }
        self.live.check(commit)?;
        let mut payload = Vec::with_capacity(256);
        if self.format >= 3 {
            crate::change_delta::encode_commit(commit, self.live.jobs(), &mut payload)?;
        } else {
            codec::encode_commit(commit, &mut payload)?;
        }
        if payload.len() > MAX_FRAME as usize {
            return Err(StoreError::TooLarge {
                size: payload.len(),
                max: MAX_FRAME as usize,
            });
        }
        let revision = self.revision.checked_add(1).ok_or_else(|| {
            corrupt(
                &self.dir.join(JOURNAL),
                0,
                "the store's revision is the largest there is and cannot grow".into(),
            )
        })?;
        let layout = Layout::of_journal(self.format);
        let mut frame = Vec::with_capacity(payload.len() + layout.overhead());
        push_frame(&mut frame, &payload, revision, layout);
        // One write, one fdatasync: the commit is durable when this returns.
        if let Err(source) = self
            .file
            .append(&frame)
            .and_then(|()| self.file.sync_data())
        {
            // Linux keeps the pages of a failed fdatasync in its cache, marked clean: a later
            // open would read the failed commit back and build on it, and a power cut would
            // then take it (and with it everything after it) away. Cut it off now.
            let cut = self.file.cut_back(self.synced_len);
            let cause = match &cut {
                Ok(()) => source.to_string(),
                Err(cut) => format!(
                    "{source}; cutting the journal back to its last synced length failed too ({cut}): the next open may read back the failed commit"
                ),
            };
            self.failed = Some(cause);
            return Err(StoreError::Io {
                context: format!(
                    "committing to the journal; {}; the store refuses further commits until reopened",
                    if cut.is_ok() {
                        "the journal was cut back to its last synced length"
                    } else {
                        "the journal could not be cut back"
                    }
                ),
                source,
            });
        }
        // Durable, but where? A journal deleted or replaced, or a store directory moved aside
        // (and a second writer let in at its path), takes this commit with it: refused, and
        // every commit after it.
        self.check_journal_is_at_its_path()?;
        self.synced_len += frame.len() as u64;
        self.live.apply_checked(commit)?;
        // A job this commit finished is a tombstone already (`settle_on_finish`); a run this
        // commit started may push the oldest out of bounds.
        self.live.bound_runs(commit, &self.options.retention);
        self.keep_tombstones(commit);
        self.revision = revision;
        self.frames += 1;
        let bound = self.options.compact_after.saturating_add(
            self.options
                .per_job
                .saturating_mul(self.live.jobs().len() as u64),
        );
        if self.frames > bound {
            // The commit is durable already; a failed compaction stops further commits.
            if let Err(error) = self.compact() {
                self.failed = Some(format!("compacting the journal: {error}"));
            }
        }
        Ok(Revision(self.revision))
    }

    /// Fails the store (refusing every later commit) unless its journal is still the file at
    /// its path in its directory.
    fn check_journal_is_at_its_path(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(JOURNAL);
        let error = match self.file.is_at(&path) {
            Ok(true) => return Ok(()),
            Ok(false) => StoreError::Unsafe(UnsafePath::NoLongerAtPath { path }),
            Err(e) => io("checking that the journal is still at its path")(e),
        };
        self.failed = Some(error.to_string());
        Err(error)
    }

    /// Keeps the snapshot records of the jobs `commit` made tombstones, encoded now, while they
    /// are at hand.
    fn keep_tombstones(&mut self, commit: &Commit) {
        let jobs = self.live.jobs();
        let mut record = Vec::new();
        for change in commit.changes.iter().filter(|c| c.state.is_terminal()) {
            if let Some(position) = jobs.position(&change.job)
                && let Some(job) = jobs.at(position)
                && job.is_tombstone()
            {
                record.clear();
                // A job that does not encode now fails the compaction that writes it, as before.
                if codec::encode_job(job, &mut record).is_ok() {
                    self.tombstones.put(position, job.seq(), &record);
                }
            }
        }
    }

    /// Writes a snapshot of everything, then starts an empty journal after it. Each file is
    /// written to a temporary name, synced, renamed into place, and the directory synced.
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        if let Some(cause) = &self.failed {
            return Err(StoreError::FailStop {
                cause: cause.clone(),
            });
        }
        // A compaction writes by path: into a directory put at this store's path since it was
        // opened, it would replace another writer's files.
        self.check_journal_is_at_its_path()?;
        // Nothing to drop: a job is a tombstone from the change that finished it, and a run
        // pushed out of bounds went in the commit that started the next.
        // Records in frames of about SNAPSHOT_CHUNK bytes each (no size limit on the store),
        // after a first frame that counts them, so that a snapshot cut at a frame boundary is
        // seen as cut.
        let chunks = codec::encode_state(&self.live, SNAPSHOT_CHUNK, &mut self.tombstones)?;
        let mut head = header(SNAPSHOT_MAGIC, self.revision).to_vec();
        push_frame(
            &mut head,
            &(chunks.len() as u64).to_le_bytes(),
            0,
            Layout::Plain,
        );
        // Each chunk written after its frame's header as it is, not first copied together with
        // the others: a copy of the whole snapshot (10 MB for 100,000 tombstones) was a fifth
        // of the pause of a compaction inside a ledger call.
        let mut headers = Vec::with_capacity(chunks.len());
        for (index, chunk) in (1u64..).zip(&chunks) {
            if chunk.len() > MAX_FRAME as usize {
                return Err(StoreError::TooLarge {
                    size: chunk.len(),
                    max: MAX_FRAME as usize,
                });
            }
            headers.push(frame_header(chunk, index));
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * chunks.len());
        parts.push(&head);
        for (frame_header, chunk) in headers.iter().zip(&chunks) {
            parts.push(frame_header);
            parts.push(chunk);
        }
        let result = replace(&self.disk, &self.dir, SNAPSHOT, &parts)
            .and_then(|()| write_journal(&self.disk, &self.dir, self.revision))
            .and_then(|()| {
                self.disk
                    .open_append(&self.dir.join(JOURNAL))
                    .map_err(io("opening the new journal"))
            });
        match result {
            Ok(file) => {
                self.file = file;
                self.frames = 0;
                self.format = JOURNAL_FORMAT;
                self.synced_len = HEADER_LEN as u64;
                Ok(())
            }
            Err(error) => {
                self.failed = Some(format!("compacting the journal: {error}"));
                Err(error)
            }
        }
    }
}

fn corrupt(file: &Path, offset: u64, detail: String) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        offset,
        detail,
    }
}

/// The header at the start of `bytes`, of a file with `magic` in one of the `formats` this
/// build reads (the last one: the newest).
fn checked_header(
    bytes: &[u8],
    magic: &[u8; 8],
    formats: &[u32],
    path: &Path,
) -> Result<Header, StoreError> {
    let header = read_header(bytes, magic).map_err(|e| {
        let detail = match e {
            HeaderError::Short => "the file is shorter than its header",
            HeaderError::Magic => "the file does not start with a jobstate header",
            HeaderError::Checksum => "the file header is damaged (checksum mismatch)",
        };
        corrupt(path, 0, detail.into())
    })?;
    if !formats.contains(&header.format) {
        return Err(StoreError::UnknownFormat {
            file: path.to_path_buf(),
            found: header.format,
            supported: formats.iter().copied().max().unwrap_or(0),
        });
    }
    Ok(header)
}

fn load_snapshot(
    bytes: &[u8],
    path: &Path,
    live: &mut Replay,
    tombstones: &mut TombstoneBytes,
) -> Result<u64, StoreError> {
    let revision = checked_header(bytes, SNAPSHOT_MAGIC, &[SNAPSHOT_FORMAT], path)?.revision;
    // A snapshot is written whole, synced and renamed into place: no crash leaves it torn, so
    // any damage is corruption (a flipped bit in its last frame too), and so is a frame more or
    // less than its first frame counts.
    let frame_at = |at: usize, index: u64| match next_frame(bytes, at, index, Layout::Plain) {
        Next::Frame { payload, end } => Ok((payload, end)),
        Next::End => Err(corrupt(
            path,
            at as u64,
            "the snapshot ends before the frames its first frame counts".into(),
        )),
        Next::TornTail(why) | Next::Corrupt(why) => Err(corrupt(
            path,
            at as u64,
            format!("{why} (a snapshot is never torn: it is damaged)"),
        )),
    };
    let (count, mut at) = frame_at(HEADER_LEN, 0)?;
    let count: [u8; 8] = count.try_into().map_err(|_| {
        corrupt(
            path,
            HEADER_LEN as u64,
            "a snapshot without its frame count".into(),
        )
    })?;
    for index in 1..=u64::from_le_bytes(count) {
        let (payload, end) = frame_at(at, index)?;
        apply_snapshot_payload(payload, live, tombstones)
            .map_err(|d| corrupt(path, at as u64, d))?;
        at = end;
    }
    if at != bytes.len() {
        return Err(corrupt(path, at as u64, "data after the snapshot".into()));
    }
    Ok(revision)
}

/// Decodes and applies the records of `payload`, a frame of a journal of `format`, one by one
/// (no list of them is built). Any error leaves `live` part-applied: the caller gives up the
/// open.
fn apply_payload(mut payload: &[u8], live: &mut Replay, format: u32) -> Result<(), String> {
    if format < 3 {
        // Format 2 knows no change written against the one before: its tag is refused there.
        return codec::decode_each(payload, |record| {
            live.apply_unboxed(record)
                .map_err(|e| PayloadError(e.to_string()))
        })
        .map_err(|e| e.0);
    }
    while let Some(&tag) = payload.first() {
        payload = if tag == crate::change_delta::TAG {
            live.apply_delta(payload)?
        } else {
            let (record, rest) = codec::take_record(payload).map_err(|e| e.to_string())?;
            live.apply_unboxed(record).map_err(|e| e.to_string())?;
            rest
        };
    }
    Ok(())
}

/// [`apply_payload`] of a snapshot's payload, keeping the bytes of each tombstone's record (a
/// [`Record::Compacted`](crate::store::Record::Compacted) of a finished job), which the next
/// compaction copies unless a later change (in the snapshot or the journal) raised the job's
/// sequence number.
fn apply_snapshot_payload(
    payload: &[u8],
    live: &mut Replay,
    tombstones: &mut TombstoneBytes,
) -> Result<(), String> {
    codec::decode_each_raw(payload, |record, bytes| {
        let compacted = matches!(record, crate::record::Unboxed::Compacted(_));
        let position = live.jobs().len();
        live.apply_unboxed(record)
            .map_err(|e| PayloadError(e.to_string()))?;
        if compacted
            && let Some(job) = live.jobs().at(position)
            && job.is_tombstone()
        {
            tombstones.put(position, job.seq(), bytes);
        }
        Ok(())
    })
    .map_err(|e: PayloadError| e.0)
}

/// Why a payload could not be applied, as the corruption report says it.
struct PayloadError(String);

impl From<codec::DecodeError> for PayloadError {
    fn from(e: codec::DecodeError) -> Self {
        Self(e.to_string())
    }
}

/// Replaces `dir/name` atomically with `parts`, one after the other: temporary file, sync,
/// rename, directory sync.
fn replace<D: Disk>(disk: &D, dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    disk.write_synced(&tmp, parts)
        .map_err(io("writing a temporary file"))?;
    disk.rename(&tmp, &dir.join(name))
        .map_err(io("renaming a temporary file into place"))?;
    disk.sync_dir(dir)
        .map_err(io("syncing the store directory"))
}

/// Starts an empty journal after `revision`.
fn write_journal<D: Disk>(disk: &D, dir: &Path, revision: u64) -> Result<(), StoreError> {
    replace(disk, dir, JOURNAL, &[&header(JOURNAL_MAGIC, revision)])
}

//! The durable file store: an append-only journal of checksummed frames, one `fdatasync` per
//! commit, compacted now and then into a snapshot that replaces the old one atomically.

#[cfg(test)]
mod crash_tests;
mod crc32c;
mod disk;
mod frame;
#[cfg(test)]
mod sim;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use frame::MAX_FRAME;

use self::disk::{AppendFile, Disk, RealDisk};
use self::frame::{
    FILE_FORMAT, HEADER_LEN, Header, HeaderError, JOURNAL_MAGIC, Next, SNAPSHOT_MAGIC, header,
    next_frame, push_frame, read_header,
};
use super::{Commit, Replay, Revision, Snapshot, Store, StoreError};
use crate::codec;

const JOURNAL: &str = "journal";
const SNAPSHOT: &str = "snapshot";
const LOCK: &str = "lock";
/// The size of a snapshot's frames: a store of any size compacts.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// When the file store compacts its journal into a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// Compact once the journal holds more than this many commits, plus
    /// [`per_job`](FileStoreOptions::per_job) for each job the store holds.
    pub compact_after: u64,
    /// Commits allowed per job before compacting (the journal's bound grows with the jobs).
    pub per_job: u64,
}

impl Default for FileStoreOptions {
    /// Compact after 16 384 commits plus 4 per job.
    fn default() -> Self {
        Self {
            compact_after: 16_384,
            per_job: 4,
        }
    }
}

/// The durable store agents ship with: a directory holding a journal, a snapshot and a lock.
///
/// - Each commit appends one frame (length, CRC-32C, the commit's records) to the journal and
///   calls `fdatasync` once before returning: a commit that returned `Ok` survives a crash or a
///   power cut. A batch of transitions in one [`Commit`] costs one sync.
/// - When the journal grows past its bound, the store writes a snapshot of everything (completed
///   mandatory jobs included: they are never pruned) to a temporary file, syncs it, renames it
///   over the old snapshot, syncs the directory, and starts a new journal the same way.
/// - Opening recovers: a torn last frame (a commit that never returned) is cut off; a damaged
///   frame with a valid frame after it is refused with [`StoreError::Corrupt`], naming the file
///   and the offset, and nothing is changed or skipped. Damage confined to the very last frame
///   cannot be told from a torn write and is cut off like one (as SQLite's WAL does): media
///   damage after the fact, not a crash, is the only way to lose an acknowledged commit so.
/// - One writer: a second [`FileStore::open`] of the directory, in this process or another, fails
///   at once with [`StoreError::Locked`].
/// - Files are created readable by the owner only (0600, the directory 0700).
/// - A failed write or sync is fail-stop: the commit returns the error and every later commit
///   is refused with [`StoreError::FailStop`] until the store is reopened, so that nothing is
///   reported done that may not be on disk.
///
/// ```
/// use jobstate::{FileStore, Store};
/// let dir = std::env::temp_dir().join(format!("jobstate-doc-{}", std::process::id()));
/// let mut store = FileStore::open(&dir)?;
/// assert_eq!(store.load()?.jobs.len(), 0);
/// assert!(FileStore::open(&dir).is_err()); // one writer at a time
/// drop(store);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStore {
    journal: Journal<RealDisk>,
    /// Held (locked) for as long as the store is open.
    _lock: File,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        RealDisk
            .create_dir(dir)
            .map_err(io("creating the store directory"))?;
        let lock = lock_file(&dir.join(LOCK))?;
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

    /// Compacts the journal into a snapshot now.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.journal.compact()
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.journal.load()
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        self.journal.commit(commit)
    }
}

fn io(context: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |source| StoreError::Io {
        context: context.to_string(),
        source,
    }
}

/// Opens and locks `path` for the life of the returned file: one writer at a time.
pub(crate) fn lock_file(path: &Path) -> Result<File, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(path)
        .map_err(io("opening the store's lock file"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
            context: format!("locking {}", path.display()),
            source,
        }),
    }
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
    /// What the store holds.
    live: Replay,
    /// Why the store stopped accepting commits, after a failed write or sync.
    failed: Option<String>,
}

impl<D: Disk> Journal<D> {
    pub(crate) fn open(disk: D, dir: &Path, options: FileStoreOptions) -> Result<Self, StoreError> {
        disk.create_dir(dir)
            .map_err(io("creating the store directory"))?;
        let snapshot_path = dir.join(SNAPSHOT);
        let journal_path = dir.join(JOURNAL);
        let mut live = Replay::default();
        let snapshot = disk
            .read(&snapshot_path)
            .map_err(io("reading the snapshot"))?;
        let snapshot_revision = match &snapshot {
            Some(bytes) => load_snapshot(bytes, &snapshot_path, &mut live)?,
            None => 0,
        };
        let Some(bytes) = disk
            .read(&journal_path)
            .map_err(io("reading the journal"))?
        else {
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
                live,
                failed: None,
            });
        };
        let start = checked_header(&bytes, JOURNAL_MAGIC, &journal_path)?.revision;
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
        let mut at = HEADER_LEN;
        loop {
            match next_frame(&bytes, at) {
                Next::Frame { payload, end } => {
                    revision = revision.checked_add(1).ok_or_else(|| {
                        corrupt(
                            &journal_path,
                            at as u64,
                            "a revision past the largest".into(),
                        )
                    })?;
                    frames += 1;
                    // Frames the snapshot already holds (an interrupted compaction) are skipped.
                    if revision > snapshot_revision {
                        apply_payload(payload, &mut live)
                            .map_err(|detail| corrupt(&journal_path, at as u64, detail))?;
                    }
                    at = end;
                }
                Next::End => break,
                Next::TornTail => {
                    disk.truncate(&journal_path, at as u64)
                        .map_err(io("cutting the torn end off the journal"))?;
                    break;
                }
                Next::Corrupt(why) => {
                    return Err(corrupt(&journal_path, at as u64, why.to_string()));
                }
            }
        }
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
            live,
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
        codec::encode_commit(commit, &mut payload)?;
        if payload.len() > MAX_FRAME as usize {
            return Err(StoreError::TooLarge {
                size: payload.len(),
                max: MAX_FRAME as usize,
            });
        }
        let mut frame = Vec::with_capacity(payload.len() + frame::FRAME_HEADER_LEN);
        push_frame(&mut frame, &payload);
        // One write, one fdatasync: the commit is durable when this returns.
        if let Err(source) = self
            .file
            .append(&frame)
            .and_then(|()| self.file.sync_data())
        {
            self.failed = Some(source.to_string());
            return Err(StoreError::Io {
                context:
                    "committing to the journal; the store refuses further commits until reopened"
                        .into(),
                source,
            });
        }
        self.live.apply_checked(commit)?;
        self.revision = self.revision.saturating_add(1);
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

    /// Writes a snapshot of everything, then starts an empty journal after it. Each file is
    /// written to a temporary name, synced, renamed into place, and the directory synced.
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        if let Some(cause) = &self.failed {
            return Err(StoreError::FailStop {
                cause: cause.clone(),
            });
        }
        // Records in frames of about SNAPSHOT_CHUNK bytes each (no size limit on the store),
        // after a first frame that counts them, so that a snapshot cut at a frame boundary is
        // seen as cut.
        let mut chunks = Vec::new();
        let mut chunk = Vec::new();
        for record in self.live.records() {
            codec::encode_into(&record, &mut chunk)?;
            if chunk.len() >= SNAPSHOT_CHUNK {
                chunks.push(std::mem::take(&mut chunk));
            }
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        let mut bytes = header(SNAPSHOT_MAGIC, self.revision).to_vec();
        push_frame(&mut bytes, &(chunks.len() as u64).to_le_bytes());
        for chunk in &chunks {
            if chunk.len() > MAX_FRAME as usize {
                return Err(StoreError::TooLarge {
                    size: chunk.len(),
                    max: MAX_FRAME as usize,
                });
            }
            push_frame(&mut bytes, chunk);
        }
        let result = replace(&self.disk, &self.dir, SNAPSHOT, &bytes)
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

fn checked_header(bytes: &[u8], magic: &[u8; 8], path: &Path) -> Result<Header, StoreError> {
    let header = read_header(bytes, magic).map_err(|e| {
        let detail = match e {
            HeaderError::Short => "the file is shorter than its header",
            HeaderError::Magic => "the file does not start with a jobstate header",
            HeaderError::Checksum => "the file header is damaged (checksum mismatch)",
        };
        corrupt(path, 0, detail.into())
    })?;
    if header.format != FILE_FORMAT {
        return Err(StoreError::UnknownFormat {
            file: path.to_path_buf(),
            found: header.format,
            supported: FILE_FORMAT,
        });
    }
    Ok(header)
}

fn load_snapshot(bytes: &[u8], path: &Path, live: &mut Replay) -> Result<u64, StoreError> {
    let revision = checked_header(bytes, SNAPSHOT_MAGIC, path)?.revision;
    // A snapshot is written whole and renamed into place: any damage is corruption, and so is
    // a frame more or less than its first frame counts.
    let frame_at = |at: usize| match next_frame(bytes, at) {
        Next::Frame { payload, end } => Ok((payload, end)),
        Next::End | Next::TornTail => Err(corrupt(path, at as u64, "a truncated snapshot".into())),
        Next::Corrupt(why) => Err(corrupt(path, at as u64, why.into())),
    };
    let (count, mut at) = frame_at(HEADER_LEN)?;
    let count: [u8; 8] = count.try_into().map_err(|_| {
        corrupt(
            path,
            HEADER_LEN as u64,
            "a snapshot without its frame count".into(),
        )
    })?;
    for _ in 0..u64::from_le_bytes(count) {
        let (payload, end) = frame_at(at)?;
        apply_payload(payload, live).map_err(|d| corrupt(path, at as u64, d))?;
        at = end;
    }
    if at != bytes.len() {
        return Err(corrupt(path, at as u64, "data after the snapshot".into()));
    }
    Ok(revision)
}

fn apply_payload(payload: &[u8], live: &mut Replay) -> Result<(), String> {
    for record in codec::decode_all(payload).map_err(|e| e.to_string())? {
        live.apply(record).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Replaces `dir/name` atomically with `bytes`: temporary file, sync, rename, directory sync.
fn replace<D: Disk>(disk: &D, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    disk.write_synced(&tmp, bytes)
        .map_err(io("writing a temporary file"))?;
    disk.rename(&tmp, &dir.join(name))
        .map_err(io("renaming a temporary file into place"))?;
    disk.sync_dir(dir)
        .map_err(io("syncing the store directory"))
}

/// Starts an empty journal after `revision`.
fn write_journal<D: Disk>(disk: &D, dir: &Path, revision: u64) -> Result<(), StoreError> {
    replace(disk, dir, JOURNAL, &header(JOURNAL_MAGIC, revision))
}

//! Where job records live: the [`Store`] trait, what a store keeps ([`Record`]s, rebuilt by
//! [`Replay`] into [`JobRecord`]s), and the stores the crate ships.
//!
//! An agent picks a store ([`FileStore`], the durable default, and [`MemoryStore`] are also at
//! the crate root) and hands it to [`Ledger::open`](crate::Ledger::open); the rest of this
//! module is for those who implement [`Store`] or look at what a store holds.

mod file;
pub(crate) use self::file::TombstoneBytes;
mod memory;
mod replay;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use crate::record::{Change, HistoryEntry, JobRecord, JobTable, Record, ReplayError};
pub use crate::retention::Retention;
pub use crate::safe_fs::UnsafePath;
pub use file::{FileStore, FileStoreOptions, MAX_FRAME};
pub use memory::MemoryStore;
pub use replay::Replay;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

use crate::codec::{DecodeError, EncodeError};
use crate::core::effect::{StatusKey, StatusMessage};
use crate::report::dead_letter::{DeadLetter, DeadLetterNote};

/// A store's revision: it grows with every commit. A commit names the revision it was based on,
/// so a writer that missed another's commit (a stale writer) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// What a store holds, as loaded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// The revision of the store when loaded.
    pub revision: Revision,
    /// Every job, in the order first offered.
    pub jobs: Vec<JobRecord>,
    /// The status messages not yet acknowledged, oldest first.
    pub outbox: Vec<StatusMessage>,
    /// The status messages given up on, in the order they were.
    pub dead_letters: Vec<DeadLetter>,
}

impl Snapshot {
    /// A snapshot of `jobs` and `outbox` at `revision`.
    pub fn new(revision: Revision, jobs: Vec<JobRecord>, outbox: Vec<StatusMessage>) -> Self {
        Self {
            revision,
            jobs,
            outbox,
            dead_letters: Vec::new(),
        }
    }

    /// The same snapshot, also holding `dead_letters`.
    #[must_use]
    pub fn with_dead_letters(mut self, dead_letters: Vec<DeadLetter>) -> Self {
        self.dead_letters = dead_letters;
        self
    }
}

/// An atomic group of changes, based on revision `base`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Commit {
    /// The revision the writer last saw. The store refuses the commit if it has moved on.
    pub base: Revision,
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// The status messages the changes produced: they enter the outbox in this same commit.
    pub reports: Vec<StatusMessage>,
    /// Status messages a sink accepted: they leave the outbox.
    pub delivered: Vec<StatusKey>,
    /// Pending status messages given up on: they move to the dead letters.
    pub dead_lettered: Vec<DeadLetterNote>,
    /// Dead letters re-queued: they move back to the end of the outbox.
    pub requeued: Vec<StatusKey>,
    /// Dead letters discarded: they are gone.
    pub discarded: Vec<StatusKey>,
}

impl Commit {
    /// A commit of `changes` based on `base`.
    pub fn new(base: Revision, changes: Vec<Change>) -> Self {
        Self {
            base,
            changes,
            reports: Vec::new(),
            delivered: Vec::new(),
            dead_lettered: Vec::new(),
            requeued: Vec::new(),
            discarded: Vec::new(),
        }
    }

    /// The same commit, also adding `reports` to the outbox.
    #[must_use]
    pub fn with_reports(mut self, reports: Vec<StatusMessage>) -> Self {
        self.reports = reports;
        self
    }

    /// The same commit, also removing the `delivered` messages from the outbox.
    #[must_use]
    pub fn with_delivered(mut self, delivered: Vec<StatusKey>) -> Self {
        self.delivered = delivered;
        self
    }

    /// The same commit, also moving pending messages to the dead letters.
    #[must_use]
    pub fn with_dead_lettered(mut self, dead_lettered: Vec<DeadLetterNote>) -> Self {
        self.dead_lettered = dead_lettered;
        self
    }

    /// The same commit, also moving dead letters back to the outbox.
    #[must_use]
    pub fn with_requeued(mut self, requeued: Vec<StatusKey>) -> Self {
        self.requeued = requeued;
        self
    }

    /// The same commit, also discarding dead letters.
    #[must_use]
    pub fn with_discarded(mut self, discarded: Vec<StatusKey>) -> Self {
        self.discarded = discarded;
        self
    }

    /// The commit as the records a store writes, in order: changes, reports, acknowledgements,
    /// dead-letterings, re-queues, discards. All of them or none must become durable.
    pub fn records(&self) -> Vec<Record> {
        let changes = self
            .changes
            .iter()
            .map(|c| Record::Change(Box::new(c.clone())));
        let reports = self.reports.iter().cloned().map(Record::Report);
        let delivered = self.delivered.iter().cloned().map(Record::Delivered);
        let dead = self.dead_lettered.iter().cloned().map(Record::DeadLettered);
        let requeued = self.requeued.iter().cloned().map(Record::Requeued);
        let discarded = self.discarded.iter().cloned().map(Record::Discarded);
        changes
            .chain(reports)
            .chain(delivered)
            .chain(dead)
            .chain(requeued)
            .chain(discarded)
            .collect()
    }

    /// Whether the commit holds nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.reports.is_empty()
            && self.delivered.is_empty()
            && self.dead_lettered.is_empty()
            && self.requeued.is_empty()
            && self.discarded.is_empty()
    }
}

/// What opening a store found and repaired, reported to the caller instead of done silently.
///
/// A store that cuts anything off (the [`FileStore`] cuts the last commit of its journal when a
/// crash tore it while it was written) or removes anything (leftovers of an interrupted
/// compaction) says so here. A torn last commit was never acknowledged; a cut an agent did not
/// expect (no crash or power loss before this start) means the medium damaged an acknowledged
/// commit, and deserves an operator's attention. [`Store::open_report`] returns it.
///
/// ```
/// use jobstate::MemoryStore;
/// use jobstate::store::Store;
/// let report = MemoryStore::new().open_report();
/// assert!(report.is_clean());
/// assert_eq!(report.to_string(), "nothing cut, nothing removed");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// What recovery cut off the end of a store file.
    pub cut: Vec<Cut>,
    /// Leftover files removed (temporary files of an interrupted compaction).
    pub removed: Vec<std::path::PathBuf>,
}

impl OpenReport {
    /// Whether nothing was cut or removed.
    pub fn is_clean(&self) -> bool {
        self.cut.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return f.write_str("nothing cut, nothing removed");
        }
        let mut first = true;
        for cut in &self.cut {
            if !std::mem::take(&mut first) {
                f.write_str("; ")?;
            }
            write!(f, "{cut}")?;
        }
        for path in &self.removed {
            if !std::mem::take(&mut first) {
                f.write_str("; ")?;
            }
            write!(f, "removed the leftover {}", path.display())?;
        }
        Ok(())
    }
}

/// What a read-only look at a store found ([`FileStore::inspect`], `SqliteStore::inspect`): its
/// content, and what a writer's open would repair.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// What the store holds.
    pub snapshot: Snapshot,
    /// What a writer's open would cut or remove (left undone).
    pub report: OpenReport,
}

/// Bytes that recovery cut off the end of a store file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// The file.
    pub file: std::path::PathBuf,
    /// Where the cut starts (the file's new length).
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
    /// What the cut-off bytes looked like (a frame cut short, a checksum mismatch, ...).
    pub damage: String,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cut {} bytes off the end of {} at byte {} ({}): a commit torn by a crash while it was written, never acknowledged; if no crash or power loss came before, the medium damaged it",
            self.bytes,
            self.file.display(),
            self.offset,
            self.damage
        )
    }
}

/// Why a store operation failed. A failed commit changed nothing.
///
/// Each message is whole: it includes its cause, which [`std::error::Error::source`] does not
/// repeat (so that a printed chain says each thing once).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A stale writer: the store moved past the commit's base revision.
    Conflict {
        /// The revision the commit was based on.
        base: Revision,
        /// The store's revision.
        current: Revision,
    },
    /// The changes do not follow on from what the store holds.
    Replay(ReplayError),
    /// A stored record could not be decoded.
    Decode {
        /// The position of the record.
        index: usize,
        /// Why.
        source: DecodeError,
    },
    /// A change could not be encoded.
    Encode(EncodeError),
    /// A store file is damaged: a frame or a header that cannot be what the store wrote.
    Corrupt {
        /// The damaged file.
        file: std::path::PathBuf,
        /// Where the damage starts (for the SQLite store: the row's sequence number).
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A store file was written in a format this build does not know (a newer jobstate).
    UnknownFormat {
        /// The file.
        file: std::path::PathBuf,
        /// Its format.
        found: u32,
        /// The newest format of such a file this build reads.
        supported: u32,
    },
    /// Another writer holds the store.
    Locked {
        /// What is locked: the store's directory, or the database file.
        path: std::path::PathBuf,
    },
    /// An earlier write or sync failed: the store refuses commits until reopened.
    FailStop {
        /// The first failure.
        cause: String,
    },
    /// A commit or snapshot larger than a frame may be.
    TooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// A path the store was given or found is not safe to use (a link, a FIFO, a directory
    /// others may write, ...) or not usable (empty, not a directory). Nothing was read from it
    /// or written to it.
    Unsafe(UnsafePath),
    /// An IO operation failed.
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict { base, current } => write!(
                f,
                "stale writer: the commit is based on revision {base} but the store is at {current}; another writer (an older ledger, a second agent) committed first, so this commit was refused. Reopen the ledger to reload"
            ),
            StoreError::Replay(e) => std::fmt::Display::fmt(e, f),
            StoreError::Decode { index, source } => {
                write!(f, "record {index} of the store: {source}")
            }
            StoreError::Encode(e) => std::fmt::Display::fmt(e, f),
            StoreError::Corrupt {
                file,
                offset,
                detail,
            } => write!(
                f,
                "{} is damaged at byte {offset}: {detail}; nothing was changed or skipped: restore the store from a backup, or move the file aside to inspect it",
                file.display()
            ),
            StoreError::UnknownFormat {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} has file format {found}, this build reads format {supported}; {}, nothing was changed",
                file.display(),
                if found > supported {
                    "upgrade jobstate to open this store"
                } else {
                    "that older format was never released: the file was written by a pre-release build, or is damaged"
                }
            ),
            StoreError::Locked { path } => write!(
                f,
                "{} is locked by another writer (another process, or another open store in this process); one writer at a time: close the other one first",
                path.display()
            ),
            StoreError::FailStop { cause } => write!(
                f,
                "the store refuses commits since a write or sync failed ({cause}); what was not acknowledged may not be on disk: reopen the store to recover"
            ),
            StoreError::TooLarge { size, max } => write!(
                f,
                "a commit of {size} bytes is larger than the {max} bytes a frame may hold; commit fewer changes at once"
            ),
            StoreError::Unsafe(e) => std::fmt::Display::fmt(e, f),
            StoreError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent variants pass on their inner error's source; the others include their
        // cause in their own message and have none.
        match self {
            StoreError::Replay(e) => e.source(),
            StoreError::Encode(e) => e.source(),
            StoreError::Unsafe(e) => e.source(),
            _ => None,
        }
    }
}

impl From<ReplayError> for StoreError {
    fn from(e: ReplayError) -> Self {
        StoreError::Replay(e)
    }
}

impl From<EncodeError> for StoreError {
    fn from(e: EncodeError) -> Self {
        StoreError::Encode(e)
    }
}

impl From<UnsafePath> for StoreError {
    fn from(e: UnsafePath) -> Self {
        StoreError::Unsafe(e)
    }
}

/// Durable storage for job records.
///
/// The rules every store keeps (the ledger relies on them):
/// - [`commit`](Store::commit) is durable when it returns `Ok`: after a crash or power loss,
///   [`load`](Store::load) sees it;
/// - a commit is atomic: all its changes or none;
/// - a commit whose `base` is not the store's current revision is refused with
///   [`StoreError::Conflict`] and changes nothing;
/// - a commit that does not follow on from what is stored (a change out of sequence, a status
///   message already pending, an acknowledgement of one that is not) is refused (use
///   [`Replay`] to check and rebuild);
/// - status messages committed and not acknowledged are kept, and returned by `load`;
/// - bad stored data is a typed error from `load`, never silently skipped or reset; what
///   opening repaired (a torn tail cut off) is reported by [`open_report`](Store::open_report).
pub trait Store {
    /// Loads everything the store holds.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Commits `commit` durably and returns the new revision.
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError>;

    /// What opening the store cut off or removed. A store that repairs anything at open must
    /// report it here, never silently; the default is a store that repairs nothing.
    fn open_report(&self) -> OpenReport {
        OpenReport::default()
    }
}

impl<S: Store + ?Sized> Store for &mut S {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        (**self).load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        (**self).commit(commit)
    }
    fn open_report(&self) -> OpenReport {
        (**self).open_report()
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        (**self).load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        (**self).commit(commit)
    }
    fn open_report(&self) -> OpenReport {
        (**self).open_report()
    }
}

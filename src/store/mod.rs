//! Where job records live: the [`Store`] trait and the stores the crate ships.

mod file;
mod memory;
mod replay;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use file::{FileStore, FileStoreOptions, MAX_FRAME};
pub use memory::MemoryStore;
pub use replay::Replay;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::codec::{DecodeError, EncodeError};
use crate::{Change, JobRecord, Record, ReplayError, StatusKey, StatusMessage};

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
    /// Every job, in the order first advertised.
    pub jobs: Vec<JobRecord>,
    /// The status messages not yet acknowledged, oldest first.
    pub outbox: Vec<StatusMessage>,
}

impl Snapshot {
    /// A snapshot of `jobs` and `outbox` at `revision`.
    pub fn new(revision: Revision, jobs: Vec<JobRecord>, outbox: Vec<StatusMessage>) -> Self {
        Self {
            revision,
            jobs,
            outbox,
        }
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
}

impl Commit {
    /// A commit of `changes` based on `base`.
    pub fn new(base: Revision, changes: Vec<Change>) -> Self {
        Self {
            base,
            changes,
            reports: Vec::new(),
            delivered: Vec::new(),
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

    /// The commit as the records a store writes, in order: changes, reports, acknowledgements.
    /// All of them or none must become durable.
    pub fn records(&self) -> Vec<Record> {
        let changes = self
            .changes
            .iter()
            .map(|c| Record::Change(Box::new(c.clone())));
        let reports = self.reports.iter().cloned().map(Record::Report);
        let delivered = self.delivered.iter().cloned().map(Record::Delivered);
        changes.chain(reports).chain(delivered).collect()
    }

    /// Whether the commit holds nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.reports.is_empty() && self.delivered.is_empty()
    }
}

/// Why a store operation failed. A failed commit changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A stale writer: the store moved past the commit's base revision.
    #[error(
        "stale writer: the commit is based on revision {base} but the store is at {current}; another writer (an older ledger, a second agent) committed first, so this commit was refused. Reopen the ledger to reload"
    )]
    Conflict {
        /// The revision the commit was based on.
        base: Revision,
        /// The store's revision.
        current: Revision,
    },
    /// The changes do not follow on from what the store holds.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A stored record could not be decoded.
    #[error("record {index} of the store: {source}")]
    Decode {
        /// The position of the record.
        index: usize,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A change could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A store file is damaged: a frame or a header that cannot be what the store wrote.
    #[error("{} is damaged at byte {offset}: {detail}; nothing was changed or skipped: restore the store from a backup, or move the file aside to inspect it", file.display())]
    Corrupt {
        /// The damaged file.
        file: std::path::PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A store file was written in a format this build does not know (a newer jobstate).
    #[error("{} has file format {found}, this build reads format {supported}; upgrade jobstate to open this store, nothing was changed", file.display())]
    UnknownFormat {
        /// The file.
        file: std::path::PathBuf,
        /// Its format.
        found: u32,
        /// The format this build reads.
        supported: u32,
    },
    /// Another writer holds the store.
    #[error("{} is locked by another writer (another process, or another open store in this process); one writer at a time: close the other one first", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// An earlier write or sync failed: the store refuses commits until reopened.
    #[error(
        "the store refuses commits since a write or sync failed ({cause}); what was not acknowledged may not be on disk: reopen the store to recover"
    )]
    FailStop {
        /// The first failure.
        cause: String,
    },
    /// A commit or snapshot larger than a frame may be.
    #[error(
        "a commit of {size} bytes is larger than the {max} bytes a frame may hold; commit fewer changes at once"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// An IO operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
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
/// - bad stored data is a typed error from `load`, never silently skipped or reset.
pub trait Store {
    /// Loads everything the store holds.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Commits `commit` durably and returns the new revision.
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError>;
}

impl<S: Store + ?Sized> Store for &mut S {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        (**self).load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        (**self).commit(commit)
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        (**self).load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        (**self).commit(commit)
    }
}

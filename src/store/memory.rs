//! An in-memory store for tests, examples and simulations.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Commit, Revision, Snapshot, Store, StoreError};
use crate::{JobTable, codec};

/// A store in memory, keeping each change *encoded*, as a durable store would, so that loading
/// goes through the same decoding and replay checks.
///
/// Clones share the same contents: drop a [`Ledger`](crate::Ledger) and open a new one on a
/// clone to simulate an agent crash and restart; keep two ledgers on clones to simulate two
/// agent processes (the second one's commits are refused as stale).
///
/// ```
/// use jobstate::{MemoryStore, Store};
/// let mut store = MemoryStore::new();
/// let mut same = store.clone();
/// assert_eq!(store.load().unwrap().jobs.len(), 0);
/// assert_eq!(same.load().unwrap().revision, store.load().unwrap().revision);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Vec<u8>>,
    live: JobTable,
    fail_commits: u32,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding these encoded records (as [`codec::encode`] writes them), for tests of
    /// bad data. Nothing is checked until [`Store::load`].
    pub fn from_records(records: Vec<Vec<u8>>) -> Self {
        let inner = Inner {
            records,
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// A copy of the encoded records, oldest first.
    pub fn records(&self) -> Vec<Vec<u8>> {
        self.lock().records.clone()
    }

    /// Makes the next `n` commits fail with an IO error (and change nothing), to test how a
    /// caller handles a failing store.
    pub fn fail_next_commits(&self, n: u32) {
        self.lock().fail_commits = n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing is left half-written under the lock, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut inner = self.lock();
        let mut table = JobTable::default();
        for (index, bytes) in inner.records.iter().enumerate() {
            let change =
                codec::decode(bytes).map_err(|source| StoreError::Decode { index, source })?;
            table.apply(change)?;
        }
        let revision = Revision(inner.records.len() as u64);
        let jobs = table.iter().cloned().collect();
        inner.live = table;
        Ok(Snapshot::new(revision, jobs))
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        if inner.fail_commits > 0 {
            inner.fail_commits -= 1;
            return Err(StoreError::Io {
                context: "memory store: commit failed on request (fail_next_commits)".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        let current = Revision(inner.records.len() as u64);
        if commit.base != current {
            return Err(StoreError::Conflict {
                base: commit.base,
                current,
            });
        }
        // Check and encode everything first: a commit is all or nothing.
        inner.live.check_all(&commit.changes)?;
        let encoded = commit
            .changes
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()?;
        for change in &commit.changes {
            inner.live.apply(change.clone())?;
        }
        inner.records.extend(encoded);
        Ok(Revision(inner.records.len() as u64))
    }
}

//! An in-memory store for tests, examples and simulations.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Commit, Replay, Revision, Snapshot, Store, StoreError};
use crate::codec;

/// A store in memory, keeping each record *encoded*, as a durable store would. Records given
/// to [`MemoryStore::from_records`] go through the same decoding and replay checks as a durable
/// store's on load; a store that made its records itself (by [`Store::commit`], which checked
/// and encoded each) loads what it committed without decoding them again, so that simulations
/// of thousands of agent restarts stay fast. (Decode a copy with
/// `MemoryStore::from_records(store.records())` to check the encoding itself.)
///
/// Clones share the same contents: drop a [`Ledger`](crate::Ledger) and open a new one on a
/// clone to simulate an agent crash and restart; keep two ledgers on clones to simulate two
/// agent processes (the second one's commits are refused as stale).
///
/// ```
/// use jobstate::MemoryStore;
/// use jobstate::store::Store;
/// let mut store = MemoryStore::new();
/// let mut same = store.clone();
/// assert_eq!(store.load().unwrap().jobs.len(), 0);
/// assert_eq!(same.load().unwrap().revision, store.load().unwrap().revision);
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Vec<u8>>,
    /// What `records` add up to, to check commits against; `None` until rebuilt from records
    /// given by [`MemoryStore::from_records`].
    live: Option<Replay>,
    fail_commits: u32,
}

impl Inner {
    /// Decodes and replays every record.
    fn replay(&self) -> Result<Replay, StoreError> {
        let mut replay = Replay::default();
        for (index, bytes) in self.records.iter().enumerate() {
            let record =
                codec::decode(bytes).map_err(|source| StoreError::Decode { index, source })?;
            replay.apply(record)?;
        }
        Ok(replay)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let inner = Inner {
            live: Some(Replay::default()),
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
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
        let revision = Revision(inner.records.len() as u64);
        if let Some(live) = &inner.live {
            return Ok(live.snapshot(revision));
        }
        let replay = inner.replay()?;
        let snapshot = replay.snapshot(revision);
        inner.live = Some(replay);
        Ok(snapshot)
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
        let mut live = match inner.live.take() {
            Some(live) => live,
            None => inner.replay()?,
        };
        let checked = live.check(commit).map_err(StoreError::from).and_then(|()| {
            let records = commit.records();
            records
                .iter()
                .map(codec::encode)
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)
        });
        let encoded = match checked {
            Ok(encoded) => encoded,
            Err(error) => {
                inner.live = Some(live);
                return Err(error);
            }
        };
        live.apply_checked(commit)?;
        inner.live = Some(live);
        inner.records.extend(encoded);
        Ok(Revision(inner.records.len() as u64))
    }
}

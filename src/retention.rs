//! How much history the ledger and the file store keep: years of finished jobs must not make
//! the agent slow or large ([semantics](crate::semantics), "Persistence").

/// How much of a job's history is kept, in memory and in a compacted store.
///
/// What invariant 1 needs is never dropped: every job keeps its id, its current state, its
/// sequence number and its latest spec (whether it is mandatory). What may go is history:
///
/// - **Earlier runs.** A job keeps the entries of its last run and of at most
///   [`earlier_runs`](Retention::earlier_runs) runs before it. An optional job rerun every day
///   for ten years holds a few runs, not 3,650.
/// - **Tombstones.** With [`tombstones`](Retention::tombstones) on, a finished job (completed or
///   failed) is compacted to a tombstone: its final entry and its latest spec. The ledger does
///   this when it is opened, never during a call: the history of a job that finished since the
///   agent started stays readable until then. The [`FileStore`](crate::FileStore) does it to its
///   own copy in the change that finishes the job, whether committed or replayed at open (so
///   that a compaction only writes tombstones and never has to make 100,000 of them at once,
///   and a replay does not hold every finished job's history to its end). A job rerun after
///   that continues from its tombstone there: with tombstones on, the file store holds a rerun
///   job's previous run as that tombstone, whatever `earlier_runs` says, and so does a ledger
///   opened on it. A job abandoned by an operator keeps its last run (its program may still run
///   in this boot, and its launch is in that run).
///
/// The ledger applies its retention ([`LedgerOptions::retention`](crate::LedgerOptions)) to
/// what it holds in memory; the [`FileStore`](crate::FileStore) applies its own
/// ([`FileStoreOptions::retention`](crate::FileStoreOptions)) to what it keeps and writes at
/// compaction. The [`MemoryStore`](crate::MemoryStore) keeps everything (it is for tests).
///
/// ```
/// use jobstate::store::Retention;
/// let default = Retention::default();
/// assert_eq!(default.earlier_runs, 2);
/// assert!(default.tombstones);
///
/// let mut audit = Retention::keep_all(); // everything, for ever
/// assert!(!audit.tombstones);
/// audit.earlier_runs = 10; // ten earlier runs, no tombstones
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// How many runs before its last one a job keeps the history of (default 2).
    pub earlier_runs: u32,
    /// Whether finished jobs are compacted to tombstones (default on): by the ledger at open, by
    /// the file store in the change that finishes them.
    pub tombstones: bool,
}

impl Default for Retention {
    /// Two earlier runs; finished jobs compacted to tombstones.
    fn default() -> Self {
        Self {
            earlier_runs: 2,
            tombstones: true,
        }
    }
}

impl Retention {
    /// Everything kept: every run's history, no tombstones. For tests that read whole
    /// histories, and audits that want them; memory and store size then grow with every job
    /// and every run, for ever.
    pub const fn keep_all() -> Self {
        Self {
            earlier_runs: u32::MAX,
            tombstones: false,
        }
    }
}

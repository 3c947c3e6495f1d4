//! What stores keep: [`Change`]s (one transition of one job), and the [`JobRecord`]s they add up to.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Event, JobId, JobSpec, JobState};

/// One durable transition of one job: the unit a [`Commit`](crate::Commit) carries and a store
/// keeps. A job's changes, in order, are its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The job.
    pub job: JobId,
    /// The job's sequence number: 1 for the change that creates it, then one more per change.
    pub seq: u64,
    /// The job's spec: present exactly in the creating change (`seq == 1`).
    pub spec: Option<JobSpec>,
    /// The event that caused the change.
    pub event: Event,
    /// The job's state after the change.
    pub state: JobState,
}

/// One entry of a job's history: an event and the state it led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The job's sequence number of this entry (1-based, contiguous). History is ordered by it,
    /// never by time: clocks jump.
    pub seq: u64,
    /// What happened.
    pub event: Event,
    /// The state it led to.
    pub state: JobState,
}

/// A job as the ledger knows it: its spec and its whole history. The current state is the last
/// entry's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    spec: JobSpec,
    history: Vec<HistoryEntry>,
    current: JobState,
}

impl JobRecord {
    /// The job's spec, as first advertised.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        self.spec.id()
    }

    /// The current state.
    pub fn state(&self) -> &JobState {
        &self.current
    }

    /// The attempt in progress (or whose check is awaited), as the ledger's attempt-scoped calls
    /// want it. `None` when the job is queued with nothing to check, or finished. After an agent
    /// restart in the same boot, this is how the agent finds the attempt of a running job.
    pub fn current_attempt(&self) -> Option<crate::AttemptId> {
        if self.current.is_terminal() {
            return None;
        }
        self.current.attempt().map(|a| crate::AttemptId {
            job: self.id().clone(),
            attempt: crate::AttemptRef {
                run: a.run,
                number: a.number,
            },
        })
    }

    /// Every transition, oldest first.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.history.len() as u64
    }
}

/// Why a sequence of changes does not add up to valid job records: the store holding them is
/// corrupt or was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A change for a job that was never created.
    #[error(
        "change {seq} of job {job} comes before the job was created; the store is damaged, restore it from a backup"
    )]
    UnknownJob {
        /// The job.
        job: JobId,
        /// The change's sequence number.
        seq: u64,
    },
    /// A change out of sequence (a gap, a duplicate, or a second creation).
    #[error(
        "job {job}: expected change {expected} but found {found}; the store is damaged, restore it from a backup"
    )]
    OutOfSequence {
        /// The job.
        job: JobId,
        /// The sequence number expected.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A creating change without a spec, or a later change with one.
    #[error("job {job}: change {seq} {}; the store is damaged, restore it from a backup", if *.seq == 1 { "creates the job without a spec" } else { "carries a spec but does not create the job" })]
    Spec {
        /// The job.
        job: JobId,
        /// The change's sequence number.
        seq: u64,
    },
    /// Two records of one job.
    #[error("job {job} is recorded twice; the store is damaged, restore it from a backup")]
    Duplicate {
        /// The job.
        job: JobId,
    },
    /// The spec's id differs from the change's job id.
    #[error(
        "change for job {job} carries the spec of job {spec_id}; the store is damaged, restore it from a backup"
    )]
    SpecMismatch {
        /// The job named by the change.
        job: JobId,
        /// The id inside the spec.
        spec_id: JobId,
    },
}

/// Job records rebuilt from changes, in the order the jobs were first advertised.
///
/// Stores use it to turn the changes they keep into the records [`Store::load`](crate::Store::load)
/// returns; it refuses changes that do not follow on from what it holds.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// use jobstate::{BootId, Change, Event, EventKind, JobId, JobSpec, JobState, JobTable};
/// # let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let id = JobId::new("patch").unwrap();
/// let create = Change {
///     job: id.clone(),
///     seq: 1,
///     spec: Some(JobSpec::new(id.clone())),
///     event: Event { at, boot: BootId::new("b1").unwrap(), kind: EventKind::Advertised },
///     state: JobState::initial(),
/// };
/// let mut table = JobTable::default();
/// table.apply(create.clone()).unwrap();
/// assert!(table.apply(create).is_err()); // a second creation is refused
/// assert_eq!(table.len(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct JobTable {
    jobs: Vec<JobRecord>,
    index: HashMap<JobId, usize>,
}

impl JobTable {
    /// A table of records loaded as a whole (a [`Snapshot`](crate::Snapshot)'s). Records are
    /// valid by construction; two records of one job are refused.
    pub fn from_records(records: Vec<JobRecord>) -> Result<Self, ReplayError> {
        let mut table = Self::default();
        for record in records {
            if table.index.contains_key(record.id()) {
                return Err(ReplayError::Duplicate {
                    job: record.id().clone(),
                });
            }
            table.index.insert(record.id().clone(), table.jobs.len());
            table.jobs.push(record);
        }
        Ok(table)
    }

    /// The records, in the order the jobs were first advertised.
    pub fn into_records(self) -> Vec<JobRecord> {
        self.jobs
    }

    /// Checks that `change` follows on from the table's contents, without applying it.
    pub fn check(&self, change: &Change) -> Result<(), ReplayError> {
        check_follows(change, self.next_seq(&change.job))
    }

    /// Checks that `changes`, in order, follow on from the table's contents (a commit's changes
    /// may touch one job more than once), without applying them.
    pub fn check_all(&self, changes: &[Change]) -> Result<(), ReplayError> {
        let mut next: HashMap<&JobId, u64> = HashMap::new();
        for change in changes {
            let expected = next
                .get(&change.job)
                .copied()
                .unwrap_or_else(|| self.next_seq(&change.job));
            check_follows(change, expected)?;
            next.insert(&change.job, expected + 1);
        }
        Ok(())
    }

    fn next_seq(&self, id: &JobId) -> u64 {
        self.get(id).map_or(1, |r| r.seq() + 1)
    }

    /// Applies `change`, or refuses it (and changes nothing) if it does not follow on.
    pub fn apply(&mut self, change: Change) -> Result<(), ReplayError> {
        self.check(&change)?;
        let entry = HistoryEntry {
            seq: change.seq,
            event: change.event,
            state: change.state.clone(),
        };
        if let Some(&i) = self.index.get(&change.job) {
            let record = &mut self.jobs[i];
            record.history.push(entry);
            record.current = change.state;
        } else {
            let spec = change.spec.ok_or(ReplayError::Spec {
                job: change.job.clone(),
                seq: change.seq,
            })?;
            self.index.insert(change.job, self.jobs.len());
            self.jobs.push(JobRecord {
                spec,
                history: vec![entry],
                current: change.state,
            });
        }
        Ok(())
    }

    /// The record of `id`, if known.
    pub fn get(&self, id: &JobId) -> Option<&JobRecord> {
        self.index.get(id).map(|&i| &self.jobs[i])
    }

    /// All records, in the order the jobs were first advertised.
    pub fn iter(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter()
    }

    /// How many jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

fn check_follows(change: &Change, expected: u64) -> Result<(), ReplayError> {
    if change.seq != expected {
        return Err(if expected == 1 {
            ReplayError::UnknownJob {
                job: change.job.clone(),
                seq: change.seq,
            }
        } else {
            ReplayError::OutOfSequence {
                job: change.job.clone(),
                expected,
                found: change.seq,
            }
        });
    }
    match (&change.spec, change.seq) {
        (Some(spec), 1) if spec.id() != &change.job => Err(ReplayError::SpecMismatch {
            job: change.job.clone(),
            spec_id: spec.id().clone(),
        }),
        (Some(_), 1) | (None, 2..) => Ok(()),
        _ => Err(ReplayError::Spec {
            job: change.job.clone(),
            seq: change.seq,
        }),
    }
}

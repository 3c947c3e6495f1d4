//! What a store's records add up to: the jobs and the outbox, rebuilt and checked record by record.

use super::{Commit, Revision, Snapshot};
use crate::{JobTable, Outbox, Record, ReplayError};

/// The jobs and pending status messages that a sequence of [`Record`]s adds up to.
///
/// Stores use it twice: on load, to rebuild and check what they hold ([`Replay::apply`]), and on
/// commit, to refuse a commit that does not follow on before writing anything
/// ([`Replay::check`]).
#[derive(Debug, Clone, Default)]
pub struct Replay {
    jobs: JobTable,
    outbox: Outbox,
}

impl Replay {
    /// The state a [`Snapshot`] describes: records valid by construction, checked for
    /// duplicates.
    pub fn from_snapshot(
        jobs: Vec<crate::JobRecord>,
        outbox: Vec<crate::StatusMessage>,
    ) -> Result<Self, ReplayError> {
        let jobs = JobTable::from_records(jobs)?;
        let mut pending = Outbox::default();
        for message in outbox {
            pending.add(message)?;
        }
        Ok(Self {
            jobs,
            outbox: pending,
        })
    }

    /// Applies one stored record, or refuses it (changing nothing) if it does not follow on.
    pub fn apply(&mut self, record: Record) -> Result<(), ReplayError> {
        match record {
            Record::Change(change) => self.jobs.apply(*change),
            Record::Report(message) => self.outbox.add(message),
            Record::Delivered(key) => self.outbox.remove(&key).map(drop),
        }
    }

    /// Checks that `commit` follows on: its changes continue their jobs' sequences, its reports
    /// are not pending already (nor twice in the commit), its acknowledgements name pending
    /// messages (each once).
    pub fn check(&self, commit: &Commit) -> Result<(), ReplayError> {
        self.jobs.check_all(&commit.changes)?;
        let mut seen = std::collections::HashSet::new();
        for message in &commit.reports {
            self.outbox.check_add(message)?;
            if !seen.insert(&message.key) {
                return Err(ReplayError::DuplicateReport {
                    key: message.key.clone(),
                });
            }
        }
        let mut acked = std::collections::HashSet::new();
        for key in &commit.delivered {
            self.outbox.check_remove(key)?;
            if !acked.insert(key) {
                return Err(ReplayError::UnknownReport { key: key.clone() });
            }
        }
        Ok(())
    }

    /// Checks `commit`, then applies all of it, or nothing.
    pub fn apply_commit(&mut self, commit: &Commit) -> Result<(), ReplayError> {
        self.check(commit)?;
        self.apply_checked(commit)
    }

    /// Applies `commit`, which [`Replay::check`] accepted with nothing applied since: the
    /// stores and the ledger check before they write, and need not check again after. (Each
    /// change is still checked as it is applied: cheap, and it keeps the table consistent.)
    pub(crate) fn apply_checked(&mut self, commit: &Commit) -> Result<(), ReplayError> {
        for change in &commit.changes {
            self.jobs.apply(change.clone())?;
        }
        for message in &commit.reports {
            self.outbox.add(message.clone())?;
        }
        for key in &commit.delivered {
            self.outbox.remove(key)?;
        }
        Ok(())
    }

    /// Everything as records, in an order that replays to the same state: each job's history,
    /// then the pending status messages. (What a snapshot holds.)
    pub fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        for job in self.jobs.iter() {
            for entry in job.history() {
                records.push(Record::Change(Box::new(crate::Change {
                    job: job.id().clone(),
                    seq: entry.seq,
                    spec: job.spec_carried_by(entry.seq).cloned(),
                    event: entry.event.clone(),
                    state: entry.state.clone(),
                })));
            }
        }
        records.extend(self.outbox.iter().cloned().map(Record::Report));
        records
    }

    /// The jobs.
    pub fn jobs(&self) -> &JobTable {
        &self.jobs
    }

    /// The pending status messages.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A snapshot of everything, at `revision`.
    pub fn snapshot(&self, revision: Revision) -> Snapshot {
        Snapshot::new(
            revision,
            self.jobs.iter().cloned().collect(),
            self.outbox.iter().cloned().collect(),
        )
    }
}

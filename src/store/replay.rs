//! What a store's records add up to: the jobs, the outbox and the dead letters, rebuilt and
//! checked record by record.

use super::{Commit, Revision, Snapshot};

use crate::core::effect::StatusKey;
use crate::few_keys::FewKeys;
use crate::record::{JobTable, Record, ReplayError, Unboxed};
use crate::report::dead_letter::{DeadLetter, DeadLetters};
use crate::report::outbox::Outbox;

/// The jobs, pending status messages and dead letters that a sequence of [`Record`]s adds up
/// to.
///
/// Stores use it twice: on load, to rebuild and check what they hold ([`Replay::apply`]), and on
/// commit, to refuse a commit that does not follow on before writing anything
/// ([`Replay::check`]).
#[derive(Debug, Clone, Default)]
pub struct Replay {
    jobs: JobTable,
    outbox: Outbox,
    dead: DeadLetters,
}

impl Replay {
    /// The state a [`Snapshot`] describes: records valid by construction, checked for
    /// duplicates.
    pub fn from_snapshot(
        jobs: Vec<crate::store::JobRecord>,
        outbox: Vec<crate::StatusMessage>,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<Self, ReplayError> {
        let jobs = JobTable::from_records(jobs)?;
        let mut pending = Outbox::default();
        for message in outbox {
            pending.add(message)?;
        }
        let mut dead = DeadLetters::default();
        for letter in dead_letters {
            pending.check_fresh(&letter.message.key)?;
            dead.add(letter)?;
        }
        Ok(Self {
            jobs,
            outbox: pending,
            dead,
        })
    }

    /// Applies one stored record, or refuses it (changing nothing) if it does not follow on.
    pub fn apply(&mut self, record: Record) -> Result<(), ReplayError> {
        match record {
            Record::Change(change) => self.jobs.apply_change(*change),
            Record::Compacted(change) => self.jobs.apply_compacted(*change),
            Record::Report(message) => self.apply_unboxed(Unboxed::Report(message)),
            Record::Delivered(key) => self.apply_unboxed(Unboxed::Delivered(key)),
            Record::DeadLettered(note) => self.apply_unboxed(Unboxed::DeadLettered(note)),
            Record::Requeued(key) => self.apply_unboxed(Unboxed::Requeued(key)),
            Record::Discarded(key) => self.apply_unboxed(Unboxed::Discarded(key)),
        }
    }

    /// Applies the format-3 change at the start of `bytes` (a change written against its job's
    /// previous one); the bytes after it.
    #[inline(always)]
    pub(crate) fn apply_delta<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        self.jobs.apply_delta(bytes)
    }

    /// [`Replay::apply`] of a record as recovery decodes it.
    #[inline(always)]
    pub(crate) fn apply_unboxed(&mut self, record: Unboxed<'_>) -> Result<(), ReplayError> {
        match record {
            Unboxed::Change(change) => self.jobs.apply_stored(change, false),
            Unboxed::Compacted(change) => self.jobs.apply_stored(change, true),
            Unboxed::Report(message) => {
                self.check_new_key(&message.key)?;
                self.outbox.add(message)
            }
            Unboxed::Delivered(key) => self.outbox.remove(&key).map(drop),
            Unboxed::DeadLettered(note) => {
                let message = self.outbox.remove(&note.key)?;
                self.dead.add(DeadLetter { message, note })
            }
            Unboxed::Requeued(key) => {
                let letter = self.dead.remove(&key)?;
                self.outbox.add(letter.message)
            }
            Unboxed::Discarded(key) => self.dead.remove(&key).map(drop),
        }
    }

    /// A new status message's key is neither pending nor a dead letter: each state yields one
    /// message, ever.
    fn check_new_key(&self, key: &StatusKey) -> Result<(), ReplayError> {
        self.outbox.check_fresh(key)?;
        if self.dead.contains(key) {
            return Err(ReplayError::DuplicateReport { key: key.clone() });
        }
        Ok(())
    }

    /// Checks that `commit` follows on: its changes continue their jobs' sequences; its reports
    /// are new (neither pending nor dead letters, nor twice in the commit); its acknowledgements
    /// and dead-letterings name pending messages, its re-queues and discards dead letters, each
    /// key once.
    pub fn check(&self, commit: &Commit) -> Result<(), ReplayError> {
        self.jobs.check_all(&commit.changes)?;
        let mut seen = FewKeys::for_count(commit.reports.len());
        for message in &commit.reports {
            self.check_new_key(&message.key)?;
            if !seen.add(&message.key) {
                return Err(ReplayError::DuplicateReport {
                    key: message.key.clone(),
                });
            }
        }
        let mut leaving = FewKeys::for_count(commit.delivered.len() + commit.dead_lettered.len());
        let dead = commit.dead_lettered.iter().map(|n| &n.key);
        for key in commit.delivered.iter().chain(dead) {
            self.outbox.check_remove(key)?;
            if !leaving.add(key) {
                return Err(ReplayError::UnknownReport { key: key.clone() });
            }
        }
        let mut returning = FewKeys::for_count(commit.requeued.len() + commit.discarded.len());
        for key in commit.requeued.iter().chain(&commit.discarded) {
            self.dead.check_remove(key)?;
            if !returning.add(key) {
                return Err(ReplayError::UnknownDeadLetter { key: key.clone() });
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
        for note in &commit.dead_lettered {
            let message = self.outbox.remove(&note.key)?;
            self.dead.add(DeadLetter {
                message,
                note: note.clone(),
            })?;
        }
        for key in &commit.requeued {
            let letter = self.dead.remove(key)?;
            self.outbox.add(letter.message)?;
        }
        for key in &commit.discarded {
            self.dead.remove(key)?;
        }
        Ok(())
    }

    /// Everything as records, in an order that replays to the same state: each job's history,
    /// the pending status messages, then each dead letter (its message, and the record that
    /// gave it up). (What a snapshot holds.)
    pub fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        for job in self.jobs.iter() {
            for entry in job.history() {
                let change = Box::new(crate::store::Change {
                    job: job.id().clone(),
                    seq: entry.seq,
                    spec: job.shared_spec_carried_by(entry.seq).cloned(),
                    event: entry.event.clone(),
                    state: entry.state.clone(),
                });
                // A job whose earlier history was compacted away begins with its first kept
                // change, marked as such.
                records.push(if job.starts_compacted(entry.seq) {
                    Record::Compacted(change)
                } else {
                    Record::Change(change)
                });
            }
        }
        records.extend(self.outbox.iter().cloned().map(Record::Report));
        for letter in self.dead.iter() {
            records.push(Record::Report(letter.message.clone()));
            records.push(Record::DeadLettered(letter.note.clone()));
        }
        records
    }

    /// Drops the history `retention` lets go, tombstones included (see
    /// [`Retention`](crate::store::Retention)): what a store does when it is opened. Returns how
    /// many jobs lost history.
    pub fn compact_history(&mut self, retention: &crate::store::Retention) -> usize {
        self.jobs.compact(retention, true)
    }

    /// Drops the earlier runs `retention` lets go from the jobs `commit` changed (no
    /// tombstones): after each commit, so that a job rerun for years holds a few runs.
    pub fn bound_runs(&mut self, commit: &Commit, retention: &crate::store::Retention) {
        if retention.earlier_runs == u32::MAX {
            return;
        }
        for change in &commit.changes {
            // Only a change that starts a run (its first, queued attempt) can push the oldest
            // run out of bounds.
            if matches!(change.state, crate::JobState::Queued { attempt: 1, .. }) {
                self.jobs.compact_job(&change.job, retention);
            }
        }
    }

    /// Room for about `jobs` more jobs, before a load of that many
    /// ([`JobTable::reserve`](crate::record::JobTable)).
    pub(crate) fn reserve_jobs(&mut self, jobs: usize) {
        self.jobs.reserve(jobs);
    }

    /// From now on, compacts each job with `retention` (to its tombstone) in the change that
    /// finishes it, whether replayed or committed: the file store's own copy, so that a
    /// compaction only writes tombstones (and never has to make 100,000 of them at once) and a
    /// replay does not hold every finished job's whole history to its end. `None` stops it.
    pub(crate) fn settle_on_finish(&mut self, retention: Option<crate::store::Retention>) {
        self.jobs.settle_on_finish(retention);
    }

    /// The jobs.
    pub fn jobs(&self) -> &JobTable {
        &self.jobs
    }

    /// The pending status messages.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The dead letters.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }

    /// A snapshot of everything, at `revision`.
    pub fn snapshot(&self, revision: Revision) -> Snapshot {
        Snapshot::new(
            revision,
            self.jobs.iter().cloned().collect(),
            self.outbox.iter().cloned().collect(),
        )
        .with_dead_letters(self.dead.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::codec::{self, DecodeError};
    use crate::core::event::{Event, EventKind};
    use crate::core::id::{BootId, JobId};
    use crate::core::spec::JobSpec;
    use crate::core::state::JobState;
    use crate::record::Change;

    fn change(job: &str, seq: u64, kind: EventKind) -> Record {
        let id = JobId::new(job).unwrap_or_else(|e| panic!("{e}"));
        Record::Change(Box::new(Change {
            spec: (seq == 1).then(|| Arc::new(JobSpec::new(id.clone()))),
            job: id,
            seq,
            event: Event {
                at: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
                boot: BootId::new("b1").unwrap_or_else(|e| panic!("{e}")),
                since_boot: Duration::from_secs(5),
                kind,
            },
            state: JobState::initial(),
        }))
    }

    /// `bytes` with every `from` replaced by `to` (of the same length).
    fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let at = out
            .windows(from.len())
            .position(|w| w == from)
            .unwrap_or_else(|| panic!("{from:?} in the record"));
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    /// Why bytes did not replay: a record did not decode, or did not apply.
    struct Refused(String);

    impl From<DecodeError> for Refused {
        fn from(e: DecodeError) -> Self {
            Self(e.to_string())
        }
    }

    fn replay(bytes: &[u8]) -> Result<Replay, String> {
        let mut replay = Replay::default();
        codec::decode_each(bytes, |record| {
            replay
                .apply_unboxed(record)
                .map_err(|e| Refused(e.to_string()))
        })
        .map_err(|e| e.0)?;
        Ok(replay)
    }

    #[test]
    fn a_stored_job_id_is_resolved_against_the_table_and_validated_when_new() {
        let mut bytes = Vec::new();
        codec::encode_into(&change("patch", 1, EventKind::Offered), &mut bytes).unwrap();
        codec::encode_into(&change("patch", 2, EventKind::Offered), &mut bytes).unwrap();
        let replayed = replay(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let id = JobId::new("patch").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(replayed.jobs().get(&id).map(|j| j.history().len()), Some(2));

        // A new job's id that is not valid (a control character), in its creating change and
        // in its spec alike: refused, as decoded alone and as replayed.
        let one = codec::encode(&change("patch", 1, EventKind::Offered)).unwrap();
        let bad = replaced(&one, b"patch", b"pa\x07ch");
        let bad = replaced(&bad, b"patch", b"pa\x07ch");
        assert!(matches!(
            codec::decode(&bad),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(replay(&bad[1..]).is_err());

        // Only the change's own id damaged (the spec's still valid): the id is validated
        // itself, not taken for the spec's.
        let bad = replaced(&one, b"patch", b"pa\x07ch");
        match codec::decode(&bad) {
            Err(DecodeError::Malformed { detail }) => {
                assert!(detail.contains("job id"), "{detail}")
            }
            other => panic!("expected a malformed record, got {other:?}"),
        }
        let err = replay(&bad[1..]).err().unwrap_or_default();
        assert!(err.contains("not a valid job id"), "{err}");

        // Not UTF-8 at all: refused the same ways.
        let bad = replaced(&one, b"patch", b"pa\xffch");
        assert!(matches!(
            codec::decode(&bad),
            Err(DecodeError::Malformed { .. })
        ));
        let err = replay(&bad[1..]).err().unwrap_or_default();
        assert!(err.contains("the id is not UTF-8"), "{err}");

        // A long invalid id is shown cut, with its length.
        let long = format!("{}\u{7}", "x".repeat(300));
        let err = crate::record::ReplayError::InvalidJobId {
            id: crate::record::shown_id(long.as_bytes()),
            why: String::new(),
        }
        .to_string();
        assert!(err.contains("… (301 bytes)") && err.len() < 300, "{err}");

        // A later change naming an unknown job with a valid id: the replay says so.
        let mut bytes = Vec::new();
        codec::encode_into(&change("patch", 1, EventKind::Offered), &mut bytes).unwrap();
        codec::encode_into(&change("other", 2, EventKind::Offered), &mut bytes).unwrap();
        let err = replay(&bytes).err().unwrap_or_default();
        assert!(err.contains("before the job was created"), "{err}");

        // A compacted job's first kept change (a snapshot's record) is resolved the same way.
        let Record::Change(first) = change("patch", 3, EventKind::Offered) else {
            panic!("a change")
        };
        let mut first = *first;
        first.spec = Some(Arc::new(JobSpec::new(first.job.clone())));
        let compacted = codec::encode(&Record::Compacted(Box::new(first))).unwrap();
        let read = replay(&compacted[1..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.jobs().get(&id).map(|j| j.history().len()), Some(1));
        let bad = replaced(&compacted, b"patch", b"pa\x07ch");
        let err = replay(&bad[1..]).err().unwrap_or_default();
        assert!(err.contains("not a valid job id"), "{err}");
        let twice = [&compacted[1..], &compacted[1..]].concat();
        let err = replay(&twice).err().unwrap_or_default();
        assert!(
            err.contains("patch"),
            "a second record of the job is refused: {err}"
        );
    }
}

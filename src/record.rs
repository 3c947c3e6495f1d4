//! What stores keep: [`Change`]s (one transition of one job), and the [`JobRecord`]s they add up to.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::few_keys::FewKeys;

use serde::{Deserialize, Serialize};

use crate::core::boot_scope::BootScope;
use crate::core::event::{Event, EventKind};
use crate::core::id::JobId;
use crate::core::spec::JobSpec;
use crate::core::state::JobState;

/// One durable transition of one job: the unit a [`Commit`](crate::store::Commit) carries and a store
/// keeps. A job's changes, in order, are its history.
///
/// Serialized (by serde, in any format) as a struct of these five fields in this order. The
/// stores' own encoding ([`codec`](crate::codec)) writes it leaner: a boot id in `state` that
/// is `event`'s boot is written there as the empty string and read back as `event.boot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The job.
    pub job: JobId,
    /// The job's sequence number: 1 for the change that creates it, then one more per change.
    pub seq: u64,
    /// The job's spec: present in the creating change (`seq == 1`), and in a change whose event
    /// is [`EventKind::SpecChanged`] (the job was offered again with a changed spec). Shared:
    /// the ledger and the store hold the same spec.
    #[serde(with = "shared_spec")]
    pub spec: Option<Arc<JobSpec>>,
    /// The event that caused the change.
    pub event: Event,
    /// The job's state after the change.
    pub state: JobState,
}

impl Change {
    /// The change as the job it is for, the spec it carries, and the entry it adds to the
    /// job's history.
    #[inline(always)]
    fn into_parts(self) -> (JobId, Option<Arc<JobSpec>>, HistoryEntry) {
        let Change {
            job,
            seq,
            spec,
            event,
            state,
        } = self;
        (job, spec, HistoryEntry { seq, event, state })
    }
}

/// [`Change`] by reference, as the codec writes it: its fields in order, a boot id in the state
/// that is the event's boot as the empty string (`core/boot_scope.rs`). Without cloning a
/// change or a store's state.
#[derive(Serialize)]
#[serde(rename = "Change")]
pub(crate) struct ChangeRef<'a> {
    job: &'a JobId,
    seq: u64,
    spec: Option<&'a JobSpec>,
    event: &'a Event,
    state: StateOfEvent<'a>,
}

impl<'a> ChangeRef<'a> {
    /// The change of `job` numbered `seq`: `event`, which led to `state`, carrying `spec`.
    pub(crate) fn new(
        job: &'a JobId,
        seq: u64,
        spec: Option<&'a JobSpec>,
        event: &'a Event,
        state: &'a JobState,
    ) -> Self {
        Self {
            job,
            seq,
            spec,
            event,
            state: StateOfEvent { event, state },
        }
    }
}

impl<'a> From<&'a Change> for ChangeRef<'a> {
    fn from(c: &'a Change) -> Self {
        Self::new(&c.job, c.seq, c.spec.as_deref(), &c.event, &c.state)
    }
}

/// A change's state, encoded against its event's boot. (A boot id writes itself whole in a
/// human-readable format, scope or not: `core/id.rs`.)
struct StateOfEvent<'a> {
    event: &'a Event,
    state: &'a JobState,
}

impl Serialize for StateOfEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let _scope = BootScope::enter(&self.event.boot);
        self.state.serialize(s)
    }
}

/// The names of [`Change`]'s fields, in order.
const CHANGE_FIELDS: &[&str] = &["job", "seq", "spec", "event", "state"];

/// `#[serde(with = "shared_spec")]`: an `Option<Arc<JobSpec>>` as the `Option<JobSpec>` it
/// holds (serde's own `Arc` support needs its `rc` feature, for this one field).
mod shared_spec {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::core::spec::JobSpec;

    pub(super) fn serialize<S: Serializer>(
        spec: &Option<Arc<JobSpec>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        spec.as_deref().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<JobSpec>>, D::Error> {
        Ok(Option::<JobSpec>::deserialize(d)?.map(Arc::new))
    }
}

/// A change as the codec decodes it: the job still the bytes it was stored as, resolved when
/// the change is applied ([`JobTable::apply_stored`]): a known job's id is shared from the
/// table, not looked up in the decoder's id cache, allocated or validated again. Its event and
/// state are held as the history entry they become, so that a replay moves them into the
/// job's history as they are (an entry is a few hundred bytes: each reshaping was a copy).
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(crate) struct StoredChange<'a> {
    job: &'a [u8],
    spec: Option<Arc<JobSpec>>,
    entry: HistoryEntry,
}

impl<'a> StoredChange<'a> {
    /// A change of the job whose id is stored as `job`.
    pub(crate) fn new(
        job: &'a [u8],
        seq: u64,
        spec: Option<Arc<JobSpec>>,
        event: Event,
        state: JobState,
    ) -> Self {
        Self {
            job,
            spec,
            entry: HistoryEntry { seq, event, state },
        }
    }

    /// The change, for the job `job` (the id its bytes name).
    fn with_job(self, job: JobId) -> Change {
        let HistoryEntry { seq, event, state } = self.entry;
        Change {
            job,
            seq,
            spec: self.spec,
            event,
            state,
        }
    }

    /// The id the stored bytes name, known to no table: the spec's the change carries when it is
    /// the same (decoded and validated already), else validated here.
    fn new_job_id(&self) -> Result<JobId, String> {
        match &self.spec {
            Some(spec) if spec.id().as_str().as_bytes() == self.job => Ok(spec.id().clone()),
            _ => {
                let id = std::str::from_utf8(self.job)
                    .map_err(|e| format!("the id is not UTF-8: {e}"))?;
                JobId::new(id).map_err(|e| e.to_string())
            }
        }
    }

    /// The change standing alone (a record decoded by itself): its job id validated.
    pub(crate) fn into_change(self) -> Result<Change, crate::codec::DecodeError> {
        let job = self
            .new_job_id()
            .map_err(|detail| crate::codec::DecodeError::Malformed { detail })?;
        Ok(self.with_job(job))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StoredChange<'a> {
    /// Reads a change as the codec writes it (a [`ChangeRef`]); `Change`'s own serde form
    /// stays plain.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(
            "Change",
            CHANGE_FIELDS,
            BinaryChange(std::marker::PhantomData),
        )
    }
}

/// Reads a change as the codec writes it: its fields in order (the codec's format is not
/// self-describing), the job id borrowed from the bytes, the state against the boot of the
/// event read before it.
struct BinaryChange<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for BinaryChange<'a> {
    type Value = StoredChange<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a change (job, seq, spec, event, state)")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<StoredChange<'a>, A::Error> {
        use serde::de::Error;
        let missing = |i: usize| A::Error::invalid_length(i, &"a change of five fields");
        let job = seq.next_element::<&'de [u8]>()?.ok_or_else(|| missing(0))?;
        let number = seq.next_element::<u64>()?.ok_or_else(|| missing(1))?;
        let spec = seq
            .next_element::<Option<JobSpec>>()?
            .ok_or_else(|| missing(2))?;
        let event = seq.next_element::<Event>()?.ok_or_else(|| missing(3))?;
        let state = {
            let _scope = BootScope::enter(&event.boot);
            seq.next_element::<JobState>()?.ok_or_else(|| missing(4))?
        };
        Ok(StoredChange::new(
            job,
            number,
            spec.map(Arc::new),
            event,
            state,
        ))
    }
}

/// One stored record: a job's change, a status message entering the outbox, or the
/// acknowledgement that removes one. A commit is a sequence of records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Record {
    /// A transition of a job (boxed: it is much larger than the other records).
    Change(Box<Change>),
    /// A status message committed to the outbox.
    Report(crate::core::effect::StatusMessage),
    /// The acknowledgement of a delivered status message: it leaves the outbox.
    Delivered(crate::core::effect::StatusKey),
    /// A pending status message given up on: it moves from the outbox to the dead letters.
    DeadLettered(crate::report::dead_letter::DeadLetterNote),
    /// A dead letter re-queued by an explicit call: it moves back to the outbox, at its end.
    Requeued(crate::core::effect::StatusKey),
    /// A dead letter discarded by an explicit call: it is gone.
    Discarded(crate::core::effect::StatusKey),
    /// The first kept change of a job whose earlier history was compacted away (see
    /// [`Retention`](crate::store::Retention)): the job begins here, at this sequence number, with the
    /// spec in force at this change (its `spec`, always present). Only snapshots hold it; it is
    /// refused for a job already known.
    Compacted(Box<Change>),
}

/// A [`Record`] as the codec decodes it: the same variants in the same order, each change as
/// the codec writes it ([`ChangeRef`]), its job id still the stored bytes, and not boxed, so
/// that replaying a journal costs no allocation, copy and free of a box per change.
#[derive(Deserialize)]
#[serde(rename = "Record")]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(crate) enum Unboxed<'a> {
    Change(#[serde(borrow)] StoredChange<'a>),
    Report(crate::core::effect::StatusMessage),
    Delivered(crate::core::effect::StatusKey),
    DeadLettered(crate::report::dead_letter::DeadLetterNote),
    Requeued(crate::core::effect::StatusKey),
    Discarded(crate::core::effect::StatusKey),
    Compacted(#[serde(borrow)] StoredChange<'a>),
}

impl Unboxed<'_> {
    /// The record standing alone (decoded by itself): a change's job id validated.
    pub(crate) fn into_record(self) -> Result<Record, crate::codec::DecodeError> {
        Ok(match self {
            Unboxed::Change(change) => Record::Change(Box::new(change.into_change()?)),
            Unboxed::Report(message) => Record::Report(message),
            Unboxed::Delivered(key) => Record::Delivered(key),
            Unboxed::DeadLettered(note) => Record::DeadLettered(note),
            Unboxed::Requeued(key) => Record::Requeued(key),
            Unboxed::Discarded(key) => Record::Discarded(key),
            Unboxed::Compacted(change) => Record::Compacted(Box::new(change.into_change()?)),
        })
    }
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

/// A job as the ledger knows it: its spec and its history (whole, or from the first change
/// kept by a [`Retention`](crate::store::Retention)). The current state is the last entry's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The spec in force at the first kept change: the one the job was created with (carried by
    /// its change 1), or the one a [`Record::Compacted`] carries.
    created: Arc<JobSpec>,
    /// The sequence number of the first kept change (1 unless history was compacted away).
    first_seq: u64,
    /// The sequence number of the last change (kept here, not read from the history, so that a
    /// compaction tells a tombstone unchanged since its bytes were taken without walking to
    /// its history: `store/file/tombstone_bytes.rs`).
    seq: u64,
    /// The specs recorded by later spec changes, with the sequence number of the change that
    /// carried each: the last is the latest (made mandatory if any offer was).
    changed: Vec<(u64, Arc<JobSpec>)>,
    /// The spec the attempt under way started with, when a later offer changed it
    /// (with the latest mandatory flag): it stands until that attempt's business is done.
    started_under: Option<Arc<JobSpec>>,
    /// Shared, copy on write: the store's copy of a job and the ledger's are one allocation
    /// until a change comes (most jobs, finished long ago, never see one again).
    history: Arc<Vec<HistoryEntry>>,
}

/// Whether `state` has an attempt whose business is not done: running, waiting for its reboot,
/// or queued for a retry whose check of the previous attempt is owed. A spec change waits for
/// it to be done.
fn attempt_under_way(state: &JobState) -> bool {
    match state {
        JobState::Queued {
            check_before_retry, ..
        } => *check_before_retry,
        JobState::Running { .. } | JobState::AwaitingReboot { .. } => true,
        JobState::Completed { .. } | JobState::Failed { .. } => false,
    }
}

/// What `JobRecord::state` answers for a record without history, which the table never builds.
static NEVER_EMPTY: JobState = JobState::initial();

impl JobRecord {
    /// The job's spec in force: the one last offered, except that an attempt under way
    /// (running, waiting for its reboot, or whose check is owed) finishes under the spec it
    /// started with — made mandatory, though, if a later offer made the job mandatory.
    pub fn spec(&self) -> &JobSpec {
        self.started_under.as_deref().unwrap_or(self.latest_spec())
    }

    /// The spec last offered: the one the next attempt, retry or rerun runs under.
    pub fn latest_spec(&self) -> &JobSpec {
        self.latest_arc()
    }

    /// The spec carried by the change with sequence number `seq`: the first kept change's (the
    /// creating change's, or the spec in force there when earlier history was compacted away),
    /// or a spec change's; `None` for any other change. (What a store writes back when it
    /// rewrites a job's history, as a compaction does.)
    pub fn spec_carried_by(&self, seq: u64) -> Option<&JobSpec> {
        self.shared_spec_carried_by(seq).map(|spec| &**spec)
    }

    /// [`JobRecord::spec_carried_by`], shared.
    pub(crate) fn shared_spec_carried_by(&self, seq: u64) -> Option<&Arc<JobSpec>> {
        if seq == self.first_seq {
            return Some(&self.created);
        }
        self.changed
            .iter()
            .find(|(at, _)| *at == seq)
            .map(|(_, spec)| spec)
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        self.created.id()
    }

    /// Adds `entry`, and `spec` if the change carried one, keeping the spec in force.
    #[inline]
    fn push(&mut self, spec: Option<Arc<JobSpec>>, entry: HistoryEntry) {
        let under_way = attempt_under_way(&entry.state);
        if let Some(spec) = spec {
            if under_way {
                let standing = self
                    .started_under
                    .take()
                    .unwrap_or_else(|| Arc::clone(self.latest_arc()));
                self.started_under = Some(Arc::new(
                    (*standing).clone().with_mandatory(spec.is_mandatory()),
                ));
            }
            self.changed.push((entry.seq, spec));
        }
        if !under_way {
            self.started_under = None;
        }
        // Grow by half, not double: a history is kept for the life of the store, and most
        // jobs stop a few entries past their first four (a retry, a reboot), where doubling
        // would leave nearly half of it unused (an entry is a few hundred bytes). Still
        // geometric, so a long history costs amortized O(1) per entry.
        self.seq = entry.seq;
        let history = Arc::make_mut(&mut self.history);
        if history.len() == history.capacity() {
            history.reserve_exact((history.len() / 2).max(1));
        }
        history.push(entry);
    }

    /// [`push`](Self::push) of the change that finishes the job, then
    /// [`compact`](Self::compact) to its tombstone, in one step: the history becomes that one
    /// entry without first growing to hold it and then being cut back (a replay finishes every
    /// job this way). `entry` must [end as a tombstone](ends_as_tombstone).
    fn push_tombstone(&mut self, spec: Option<Arc<JobSpec>>, entry: HistoryEntry) {
        if let Some(spec) = spec {
            self.changed.push((entry.seq, spec));
        }
        // The spec in force at the final change: the latest.
        self.created = Arc::clone(self.latest_arc());
        self.changed = Vec::new();
        self.started_under = None;
        self.first_seq = entry.seq;
        self.seq = entry.seq;
        match Arc::get_mut(&mut self.history) {
            // A new block, not the old one cut back in place: the old one is then free whole,
            // for the next job's history, where its cut-off rest would be too small for one.
            Some(history) => *history = vec![entry],
            None => self.history = Arc::new(vec![entry]),
        }
    }

    /// The latest spec, shared.
    fn latest_arc(&self) -> &Arc<JobSpec> {
        self.changed.last().map_or(&self.created, |(_, spec)| spec)
    }

    /// The current state: the last entry's.
    pub fn state(&self) -> &JobState {
        self.history.last().map_or(&NEVER_EMPTY, |e| &e.state)
    }

    /// The attempt in progress (or whose check is awaited), as the ledger's attempt-scoped calls
    /// want it. `None` when the job is queued with nothing to check, or finished. After an agent
    /// restart in the same boot, this is how the agent finds the attempt of a running job.
    pub fn current_attempt(&self) -> Option<crate::core::effect::AttemptId> {
        let current = self.state();
        let idle = matches!(
            current,
            JobState::Queued {
                check_before_retry: false,
                ..
            }
        );
        if current.is_terminal() || idle {
            return None;
        }
        current.attempt().map(|a| crate::core::effect::AttemptId {
            job: self.id().clone(),
            run: a.run,
            number: a.number,
        })
    }

    /// Every kept transition, oldest first: the whole history, or its end when a
    /// [`Retention`](crate::store::Retention) compacted earlier runs or made the job a tombstone.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The sequence number of the first kept change: 1, unless earlier history was compacted
    /// away.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Whether `self` is `whole`, or `whole` with earlier history compacted away by a
    /// [`Retention`](crate::store::Retention): the same job, sequence number, state and specs, and a
    /// history that is the end of `whole`'s. (How a test compares a store's jobs with what was
    /// committed to it, whatever the store's retention.)
    pub fn is_compaction_of(&self, whole: &JobRecord) -> bool {
        self.id() == whole.id()
            && self.seq() == whole.seq()
            && self.state() == whole.state()
            && self.spec() == whole.spec()
            && self.latest_spec() == whole.latest_spec()
            && !self.history.is_empty()
            && whole.history.ends_with(&self.history)
    }

    /// Whether change `seq` is the first kept change of a job whose earlier history was
    /// compacted away: what a store writes as a [`Record::Compacted`]. (Change 1 never is.)
    pub(crate) fn starts_compacted(&self, seq: u64) -> bool {
        seq > 1 && seq == self.first_seq
    }

    /// Whether the job is a tombstone: finished, with only its final change kept.
    pub fn is_tombstone(&self) -> bool {
        self.state().is_terminal() && self.history.len() == 1
    }

    /// The spec the job's last attempt began under (in force at its first `Running` change):
    /// what that attempt's program, if it still runs, was launched to do, whatever was offered
    /// since. The spec in force if no attempt is kept.
    pub(crate) fn last_attempt_spec(&self) -> &JobSpec {
        let mut began = None;
        for entry in self.history.iter().rev() {
            match (&entry.state, began) {
                (JobState::Running { attempt, .. }, None) => {
                    began = Some((attempt.run, attempt.number, entry.seq));
                }
                (JobState::Running { attempt, .. }, Some((run, number, _)))
                    if (attempt.run, attempt.number) == (run, number) =>
                {
                    began = Some((run, number, entry.seq));
                }
                (_, Some(_)) => break,
                (_, None) => {}
            }
        }
        began.map_or(self.spec(), |(_, _, seq)| self.spec_at(seq))
    }

    /// The spec in force at change `seq` (a kept one): the last spec carried at or before it.
    fn spec_at(&self, seq: u64) -> &Arc<JobSpec> {
        self.changed
            .iter()
            .rev()
            .find(|(at, _)| *at <= seq)
            .map_or(&self.created, |(_, spec)| spec)
    }

    /// Drops what `retention` lets go: the runs before the last `earlier_runs + 1`, and, when
    /// `tombstone` is set and the retention makes tombstones, all but the final change of a
    /// finished job (an abandoned job keeps its last run: its program may still run in this
    /// boot, and the launch that names it is in that run). Returns whether anything was dropped.
    ///
    /// The new first entry is a run's first change (or a finished job's last), where no attempt
    /// is under way, so the spec in force there is all a replay needs to rebuild the rest.
    pub(crate) fn compact(
        &mut self,
        retention: &crate::retention::Retention,
        tombstone: bool,
    ) -> bool {
        // One entry: nothing to drop (told without reading the history: a store of 100,000
        // tombstones is compacted at every open).
        if self.seq == self.first_seq {
            return false;
        }
        let state = self.state();
        let cut = if tombstone && retention.tombstones && ends_as_tombstone(state) {
            self.history.len() - 1
        } else {
            let oldest_kept = state.run().saturating_sub(retention.earlier_runs);
            match self.history.first() {
                Some(first) if first.state.run() < oldest_kept => self
                    .history
                    .iter()
                    .position(|e| e.state.run() >= oldest_kept)
                    .unwrap_or(0),
                _ => 0,
            }
        };
        if cut == 0 {
            return false;
        }
        let first_seq = self.history[cut].seq;
        self.created = Arc::clone(self.spec_at(first_seq));
        self.changed.retain(|(at, _)| *at > first_seq);
        self.changed.shrink_to_fit();
        match Arc::get_mut(&mut self.history) {
            // Ours alone (as after an open): cut in place, and give the rest back.
            Some(history) => {
                history.drain(..cut);
                history.shrink_to_fit();
            }
            // Shared with another copy (the ledger's and the store's): a new allocation.
            None => self.history = Arc::new(self.history[cut..].to_vec()),
        }
        self.first_seq = first_seq;
        true
    }
}

/// Whether a job in `state` becomes a tombstone when tombstones are made: it is finished, and
/// not abandoned (an abandoned job keeps its last run: its program may still run in this boot,
/// and the launch that names it is in that run).
fn ends_as_tombstone(state: &JobState) -> bool {
    state.is_terminal()
        && !matches!(
            state,
            JobState::Failed {
                reason: crate::core::state::FailureReason::Abandoned,
                ..
            }
        )
}

/// Why a sequence of changes does not add up to valid job records: the store holding them is
/// corrupt or was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A change names its job by an id that is not valid: damaged bytes.
    #[error(
        "a change names the job {id:?}, which is not a valid job id ({why}); the store is damaged, restore it from a backup"
    )]
    InvalidJobId {
        /// The id as stored.
        id: String,
        /// Why it is not valid.
        why: String,
    },
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
    /// A creating change without a spec, a later change with one that is not a spec change, or
    /// a spec change without one.
    #[error("job {job}: change {seq} {}; the store is damaged, restore it from a backup", if *.seq == 1 { "creates the job without a spec" } else { "carries a spec without being a spec change, or is a spec change without one" })]
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
    /// A change that no transition can make (see the structural rules on [`JobTable`]).
    #[error(
        "job {job}: change {seq} is not a possible transition ({why}); the store is damaged or was edited, restore it from a backup"
    )]
    NotATransition {
        /// The job.
        job: JobId,
        /// The change's sequence number.
        seq: u64,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A second pending status message with the same key.
    #[error(
        "status message {key} is already pending; the store is damaged, restore it from a backup"
    )]
    DuplicateReport {
        /// Its key.
        key: crate::core::effect::StatusKey,
    },
    /// An acknowledgement of a status message that is not pending.
    #[error(
        "status message {key} is acknowledged but was not pending; the store is damaged, restore it from a backup"
    )]
    UnknownReport {
        /// Its key.
        key: crate::core::effect::StatusKey,
    },
    /// A dead letter re-queued or discarded that is not a dead letter.
    #[error(
        "status message {key} leaves the dead letters but is not one; the store is damaged, restore it from a backup"
    )]
    UnknownDeadLetter {
        /// Its key.
        key: crate::core::effect::StatusKey,
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

/// A stored job id that is not valid, as an error shows it: at most its first 64 bytes (a
/// damaged length can make it megabytes long), invalid UTF-8 replaced.
pub(crate) fn shown_id(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let shown = String::from_utf8_lossy(bytes.get(..SHOWN).unwrap_or(bytes)).into_owned();
    if bytes.len() > SHOWN {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// A job's key in a [`JobTable`]'s index: its id, hashed and compared as its bytes, so that
/// recovery looks up the bytes a store holds before checking them as an id (a known job's are
/// never checked again).
#[derive(Debug, Clone, PartialEq, Eq)]
struct IdKey(JobId);

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for IdKey {
    fn borrow(&self) -> &[u8] {
        self.0.as_str().as_bytes()
    }
}

/// Job records rebuilt from changes, in the order the jobs were first offered.
///
/// Stores use it to turn the changes they keep into the records [`Store::load`](crate::store::Store::load)
/// returns; it refuses changes that do not follow on from what it holds: a gap or a repeat in a
/// job's sequence numbers, a job not created `Queued` by an offer with its spec, any
/// change after a completed mandatory job, a finished run followed by anything but a new run,
/// a run number that goes backwards.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// use jobstate::{BootId, Event, EventKind, JobId, JobSpec, JobState};
/// use jobstate::store::{Change, JobTable};
/// # let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let id = JobId::new("patch").unwrap();
/// let create = Change {
///     job: id.clone(),
///     seq: 1,
///     spec: Some(JobSpec::new(id.clone()).into()),
///     event: Event {
///         at,
///         boot: BootId::new("b1").unwrap(),
///         since_boot: std::time::Duration::ZERO,
///         kind: EventKind::Offered,
///     },
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
    index: FxHashMap<IdKey, usize>,
    /// The positions of the jobs whose run is not finished: the ledger's every-call questions
    /// (what may run, what runs, what waits) cost O(unfinished jobs), not O(all jobs ever).
    unfinished: std::collections::BTreeSet<usize>,
    /// In a file store's own table: the retention with which a job is compacted (to its
    /// tombstone) in the change that finishes it, replayed or committed.
    settle_on_finish: Option<crate::retention::Retention>,
}

impl JobTable {
    /// A table of records loaded as a whole (a [`Snapshot`](crate::store::Snapshot)'s). Records are
    /// valid by construction; two records of one job are refused.
    pub fn from_records(records: Vec<JobRecord>) -> Result<Self, ReplayError> {
        let mut table = Self::default();
        table.index.reserve(records.len());
        // At once (grown by doubling, 100,000 records were copied about twice over), with an
        // eighth more: room for the jobs offered next, without doubling at the first one.
        table
            .jobs
            .reserve_exact(records.len() + records.len() / 8 + 16);
        for record in records {
            match table.index.entry(IdKey(record.id().clone())) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    return Err(ReplayError::Duplicate {
                        job: record.id().clone(),
                    });
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(table.jobs.len());
                }
            }
            if !record.state().is_terminal() {
                table.unfinished.insert(table.jobs.len());
            }
            table.jobs.push(record);
        }
        Ok(table)
    }

    /// The records, in the order the jobs were first offered.
    pub fn into_records(self) -> Vec<JobRecord> {
        self.jobs
    }

    /// Checks that `change` follows on from the table's contents, without applying it.
    pub fn check(&self, change: &Change) -> Result<(), ReplayError> {
        check_follows(Proposed::of(change), self.tail(&change.job))
    }

    /// Checks that `changes`, in order, follow on from the table's contents (a commit's changes
    /// may touch one job more than once), without applying them.
    pub fn check_all(&self, changes: &[Change]) -> Result<(), ReplayError> {
        let mut tails: FewKeys<'_, JobId, Tail<'_>> = FewKeys::for_count(changes.len());
        for change in changes {
            let tail = match tails.get(&change.job) {
                Some(tail) => tail,
                None => self.tail(&change.job),
            };
            check_follows(Proposed::of(change), tail)?;
            let mandatory = change
                .spec
                .as_deref()
                .map_or_else(|| tail.is_some_and(|t| t.mandatory), JobSpec::is_mandatory);
            let _ = tails.insert(
                &change.job,
                Some(TailOf {
                    seq: change.seq,
                    state: &change.state,
                    mandatory,
                }),
            );
        }
        Ok(())
    }

    fn tail(&self, id: &JobId) -> Tail<'_> {
        self.get(id).map(tail_of)
    }

    /// Applies `change`, or refuses it (and changes nothing) if it does not follow on.
    pub fn apply(&mut self, change: Change) -> Result<(), ReplayError> {
        self.apply_change(change)
    }

    /// [`JobTable::apply`], inlined into its callers (a change is large: recovery applies
    /// millions of them, and each copy of one costs).
    #[inline(always)]
    pub(crate) fn apply_change(&mut self, change: Change) -> Result<(), ReplayError> {
        let slot = self.index.get(change.job.as_str().as_bytes()).copied();
        self.apply_change_at(change, slot)
    }

    /// [`JobTable::apply_change`] of a change whose job's position, if the job is known, is
    /// `slot` (looked up by the caller).
    #[inline(always)]
    fn apply_change_at(&mut self, change: Change, slot: Option<usize>) -> Result<(), ReplayError> {
        let (job, spec, entry) = change.into_parts();
        self.apply_entry(job, spec, entry, slot)
    }

    /// [`JobTable::apply_change_at`] of a change held as its parts: the job, the spec it
    /// carries, and the entry it adds to the job's history.
    #[inline(always)]
    fn apply_entry(
        &mut self,
        job: JobId,
        spec: Option<Arc<JobSpec>>,
        entry: HistoryEntry,
        slot: Option<usize>,
    ) -> Result<(), ReplayError> {
        let tail = slot.and_then(|i| self.jobs.get(i)).map(tail_of);
        // Whether the job was in `unfinished` before: a job is there unless its state is
        // terminal (a new job is not there yet).
        let listed = tail.is_some_and(|t| !t.state.is_terminal());
        check_follows(
            Proposed {
                job: &job,
                seq: entry.seq,
                spec: spec.as_deref(),
                event: &entry.event,
                state: &entry.state,
            },
            tail,
        )?;
        let seq = entry.seq;
        let position = slot.unwrap_or(self.jobs.len());
        let terminal = entry.state.is_terminal();
        let tombstone = self.settle_on_finish.is_some() && ends_as_tombstone(&entry.state);
        match slot.and_then(|i| self.jobs.get_mut(i)) {
            Some(record) if tombstone => record.push_tombstone(spec, entry),
            Some(record) => record.push(spec, entry),
            None => {
                let spec = spec.ok_or(ReplayError::Spec {
                    job: job.clone(),
                    seq,
                })?;
                self.index.insert(IdKey(job), self.jobs.len());
                // Room for a typical job's life (offered, started, finished, reported) at once.
                let mut history = Vec::with_capacity(4);
                history.push(entry);
                self.jobs.push(JobRecord {
                    created: spec,
                    first_seq: 1,
                    seq,
                    changed: Vec::new(),
                    started_under: None,
                    history: Arc::new(history),
                });
            }
        }
        // Most changes keep a job unfinished: the set is touched only when that changes.
        if terminal && listed {
            self.unfinished.remove(&position);
        } else if !terminal && !listed {
            self.unfinished.insert(position);
        }
        // A finished job not made a tombstone above (an abandoned one, which keeps its last
        // run) keeps what the retention keeps.
        if terminal
            && !tombstone
            && let Some(retention) = &self.settle_on_finish
            && let Some(record) = self.jobs.get_mut(position)
        {
            record.compact(retention, true);
        }
        Ok(())
    }

    /// Room for about `jobs` more jobs, told by the size of what is about to be loaded, so that
    /// the index does not grow while it is: each growth hashes every id again, read from
    /// wherever it lies on the heap (at a million records, the open's most frequent cache miss).
    pub(crate) fn reserve(&mut self, jobs: usize) {
        // An estimate from a file's length, which a damaged or sparse file makes anything:
        // room that cannot be had is not taken (the table grows as jobs come instead), never
        // an abort.
        if self.index.try_reserve(jobs).is_err() {
            return;
        }
        // An eighth more in the table, which costs only address space until used: an estimate
        // a little low then does not copy the whole table to double it.
        let _ = self.jobs.try_reserve(jobs.saturating_add(jobs / 8));
    }

    /// Compacts each job with `retention` (tombstones included) in the change that finishes
    /// it, from now on; `None` stops it.
    pub(crate) fn settle_on_finish(&mut self, retention: Option<crate::retention::Retention>) {
        self.settle_on_finish = retention.filter(|r| r.tombstones);
    }

    /// Applies the format-3 change at the start of `bytes` (`change_delta.rs`): its job looked up
    /// by id, the rest decoded against the job's last history entry, which is its previous
    /// change (the writer wrote it against the same). Returns the bytes after it.
    #[inline(always)]
    pub(crate) fn apply_delta<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        let (job, rest) = crate::change_decoder::delta_head(bytes)
            .ok_or_else(|| "a format-3 change that does not decode".to_string())?;
        let (key, slot) = match self.index.get_key_value(job) {
            Some((key, &slot)) => (key.0.clone(), slot),
            None => {
                return Err(format!(
                    "a format-3 change of an unknown job {}",
                    shown_id(job)
                ));
            }
        };
        let prev = self
            .jobs
            .get(slot)
            .and_then(|r| r.history.last())
            .ok_or_else(|| "a format-3 change of a job without history".to_string())?;
        let (entry, rest) = crate::change_decoder::delta_body(rest, (&prev.event, &prev.state))
            .ok_or_else(|| "a format-3 change that does not decode".to_string())?;
        self.apply_entry(key, None, entry, Some(slot))
            .map_err(|e| e.to_string())?;
        Ok(rest)
    }

    /// Applies a change as the codec decodes it (a [`Record::Compacted`]'s if `compacted`): its
    /// job resolved first, a known one's id shared from the index.
    #[inline(always)]
    pub(crate) fn apply_stored(
        &mut self,
        stored: StoredChange<'_>,
        compacted: bool,
    ) -> Result<(), ReplayError> {
        let (job, slot) = match self.index.get_key_value(stored.job) {
            Some((key, &slot)) => (key.0.clone(), Some(slot)),
            None => {
                let id = stored
                    .new_job_id()
                    .map_err(|why| ReplayError::InvalidJobId {
                        id: shown_id(stored.job),
                        why,
                    })?;
                (id, None)
            }
        };
        let StoredChange { spec, entry, .. } = stored;
        if compacted {
            self.apply_compacted_entry(job, spec, entry)
        } else {
            self.apply_entry(job, spec, entry, slot)
        }
    }

    /// Applies a [`Record::Compacted`]: creates `change.job`, unknown so far, with its kept
    /// history beginning at `change`, which carries the spec in force there.
    pub(crate) fn apply_compacted(&mut self, change: Change) -> Result<(), ReplayError> {
        let (job, spec, entry) = change.into_parts();
        self.apply_compacted_entry(job, spec, entry)
    }

    /// [`JobTable::apply_compacted`] of a change held as its parts.
    fn apply_compacted_entry(
        &mut self,
        job: JobId,
        spec: Option<Arc<JobSpec>>,
        entry: HistoryEntry,
    ) -> Result<(), ReplayError> {
        let seq = entry.seq;
        // One probe of the index for the check and the insertion (a snapshot of 100,000
        // tombstones is all new jobs). A record refused below leaves no key behind, though the
        // probe may have grown the index's room by one: a refused record fails the open.
        let slot = match self.index.entry(IdKey(job)) {
            std::collections::hash_map::Entry::Occupied(known) => {
                return Err(ReplayError::Duplicate {
                    job: known.key().0.clone(),
                });
            }
            std::collections::hash_map::Entry::Vacant(slot) => slot,
        };
        let job = &slot.key().0;
        let Some(spec) = spec else {
            return Err(ReplayError::Spec {
                job: job.clone(),
                seq,
            });
        };
        if spec.id() != job {
            return Err(ReplayError::SpecMismatch {
                job: job.clone(),
                spec_id: spec.id().clone(),
            });
        }
        // A job's change 1 is its creation, never compacted (the stores write it as a change,
        // which a replay would then refuse); past 2^48 is beyond any real history, and far from
        // overflowing the next change's number.
        if seq <= 1 || seq > MAX_COMPACTED_SEQ {
            return Err(ReplayError::NotATransition {
                job: job.clone(),
                seq,
                why: "a compacted job's first kept change has an impossible sequence number",
            });
        }
        slot.insert(self.jobs.len());
        if !entry.state.is_terminal() {
            self.unfinished.insert(self.jobs.len());
        }
        self.jobs.push(JobRecord {
            created: spec,
            first_seq: seq,
            seq,
            changed: Vec::new(),
            started_under: None,
            history: Arc::new(vec![entry]),
        });
        Ok(())
    }

    /// Drops the history `retention` lets go from every job; tombstones only if `tombstones` is
    /// set too. Returns how many jobs lost history.
    pub(crate) fn compact(
        &mut self,
        retention: &crate::retention::Retention,
        tombstones: bool,
    ) -> usize {
        self.jobs
            .iter_mut()
            .map(|job| usize::from(job.compact(retention, tombstones)))
            .sum()
    }

    /// Drops the earlier runs `retention` lets go from `id`'s history (no tombstone): after a
    /// change that may have started a new run.
    pub(crate) fn compact_job(&mut self, id: &JobId, retention: &crate::retention::Retention) {
        if let Some(&i) = self.index.get(id.as_str().as_bytes())
            && let Some(job) = self.jobs.get_mut(i)
        {
            job.compact(retention, false);
        }
    }

    /// Where `id`'s record is: its position in [`JobTable::iter`]'s order, which never changes.
    pub(crate) fn position(&self, id: &JobId) -> Option<usize> {
        self.index.get(id.as_str().as_bytes()).copied()
    }

    /// The record at `position`.
    pub(crate) fn at(&self, position: usize) -> Option<&JobRecord> {
        self.jobs.get(position)
    }

    /// The record of `id`, if known.
    pub fn get(&self, id: &JobId) -> Option<&JobRecord> {
        self.index
            .get(id.as_str().as_bytes())
            .map(|&i| &self.jobs[i])
    }

    /// All records, in the order the jobs were first offered.
    pub fn iter(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter()
    }

    /// The records whose run is not finished (neither completed nor failed), in the order the
    /// jobs were first offered: the cost is that of the unfinished jobs, however many
    /// finished ones the table holds.
    pub fn unfinished(&self) -> impl Iterator<Item = &JobRecord> {
        self.unfinished.iter().filter_map(|&i| self.jobs.get(i))
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

/// The largest first sequence number a [`Record::Compacted`] may carry (2^48: a change a
/// second for nine million years).
const MAX_COMPACTED_SEQ: u64 = 1 << 48;

/// A change as [`check_follows`] reads it, wherever its parts are held (a [`Change`], or a
/// job, a spec and a [`HistoryEntry`]).
#[derive(Clone, Copy)]
struct Proposed<'a> {
    job: &'a JobId,
    seq: u64,
    spec: Option<&'a JobSpec>,
    event: &'a Event,
    state: &'a JobState,
}

impl<'a> Proposed<'a> {
    fn of(change: &'a Change) -> Self {
        Self {
            job: &change.job,
            seq: change.seq,
            spec: change.spec.as_deref(),
            event: &change.event,
            state: &change.state,
        }
    }
}

/// The last change of a job, as the next change must follow on from it.
#[derive(Clone, Copy)]
struct TailOf<'a> {
    seq: u64,
    state: &'a JobState,
    mandatory: bool,
}

/// `None` for a job not created yet.
type Tail<'a> = Option<TailOf<'a>>;

fn tail_of(record: &JobRecord) -> TailOf<'_> {
    TailOf {
        seq: record.seq(),
        state: record.state(),
        mandatory: record.latest_spec().is_mandatory(),
    }
}

/// The structural rules every stored change keeps, whatever version of the state machine wrote
/// it: sequence numbers without gaps; a job created `Queued` by an offer, with its spec;
/// nothing after a completed mandatory job; a finished run followed only by a new run, and the
/// run number unchanged otherwise.
fn check_follows(change: Proposed<'_>, tail: Tail<'_>) -> Result<(), ReplayError> {
    let expected = tail.map_or(1, |t| t.seq + 1);
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
    let not_a_transition = |why: &'static str| ReplayError::NotATransition {
        job: change.job.clone(),
        seq: change.seq,
        why,
    };
    match (change.spec, tail) {
        (Some(spec), None) if spec.id() != change.job => Err(ReplayError::SpecMismatch {
            job: change.job.clone(),
            spec_id: spec.id().clone(),
        }),
        (Some(_), None) => {
            if *change.state != JobState::initial() || change.event.kind != EventKind::Offered {
                return Err(not_a_transition("a job must be created queued by an offer"));
            }
            Ok(())
        }
        (Some(spec), Some(tail)) => {
            if change.event.kind != EventKind::SpecChanged {
                return Err(ReplayError::Spec {
                    job: change.job.clone(),
                    seq: change.seq,
                });
            }
            if spec.id() != change.job {
                return Err(ReplayError::SpecMismatch {
                    job: change.job.clone(),
                    spec_id: spec.id().clone(),
                });
            }
            if tail.mandatory && tail.state.kind() == crate::core::state::StateKind::Completed {
                return Err(not_a_transition(
                    "nothing follows a completed mandatory job",
                ));
            }
            if tail.mandatory && !spec.is_mandatory() {
                return Err(not_a_transition(
                    "a mandatory job never becomes optional again",
                ));
            }
            if change.state != tail.state {
                return Err(not_a_transition("a spec change changes no state"));
            }
            Ok(())
        }
        (None, Some(_)) if change.event.kind == EventKind::SpecChanged => Err(ReplayError::Spec {
            job: change.job.clone(),
            seq: change.seq,
        }),
        (None, Some(tail)) => {
            let before = tail.state;
            if tail.mandatory && before.kind() == crate::core::state::StateKind::Completed {
                return Err(not_a_transition(
                    "nothing follows a completed mandatory job",
                ));
            }
            let new_run = matches!(
                *change.state,
                JobState::Queued { run, attempt: 1, .. } if Some(run) == before.run().checked_add(1)
            );
            if before.is_terminal() && !new_run {
                return Err(not_a_transition(
                    "a finished run is followed only by a new run",
                ));
            }
            // A run number changes only there: a jump would let a store's copy and its replay
            // keep different histories (the retention counts runs).
            if !before.is_terminal() && change.state.run() != before.run() {
                return Err(not_a_transition(
                    "the run number changes only when a finished run is followed by a new one",
                ));
            }
            Ok(())
        }
        _ => Err(ReplayError::Spec {
            job: change.job.clone(),
            seq: change.seq,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{JobTable, ReplayError, shown_id};

    /// An invalid stored id is shown whole up to 64 bytes, cut with its length past that
    /// (a mutant made 64 bytes read as cut).
    #[test]
    fn a_shown_id_is_cut_only_past_64_bytes() {
        assert_eq!(shown_id(&[b'x'; 64]), "x".repeat(64));
        assert_eq!(
            shown_id(&[b'x'; 65]),
            format!("{}… (65 bytes)", "x".repeat(64))
        );
        assert_eq!(shown_id(b"a\xffb"), "a\u{fffd}b");
    }
    use crate::codec;
    use crate::core::id::JobId;
    use crate::core::program::ProgramId;
    use crate::core::spec::JobSpec;
    use crate::core::state::JobState;
    use crate::ledger::Ledger;
    use crate::retention::Retention;
    use crate::session::test_facts;
    use crate::store::{Change, MemoryStore, Record};

    fn id(s: &str) -> JobId {
        JobId::new(s).unwrap()
    }

    /// The changes a ledger commits for two jobs run to completion: `plain`, and `changed`,
    /// whose spec changes (made mandatory) while its attempt is under way.
    fn changes() -> Vec<Change> {
        let store = MemoryStore::new();
        let session = test_facts("boot-1");
        let (mut ledger, _) = Ledger::open(store.clone(), session).unwrap();
        for job in ["plain", "changed"] {
            ledger
                .offer(JobSpec::new(id(job)).with_mandatory(false))
                .unwrap();
        }
        for (pid, job) in [(7, "plain"), (8, "changed")] {
            let attempt = ledger.begin(&id(job)).unwrap();
            let _ = ledger.launched(&attempt, ProgramId::new(pid, 1)).unwrap();
            if job == "changed" {
                ledger
                    .offer(JobSpec::new(id(job)).with_mandatory(true))
                    .unwrap();
            }
            let _ = ledger.program_exited(&attempt, 0).unwrap();
        }
        let mut changes = Vec::new();
        for bytes in store.records() {
            if let Record::Change(change) = codec::decode(&bytes).unwrap() {
                changes.push(*change);
            }
        }
        changes
    }

    /// A finished job made a tombstone in the change that finishes it (`push_tombstone`) is
    /// what the change followed by a compaction left before: the same spec, history and
    /// sequence numbers, whether its history is the table's alone or shared with a copy.
    #[test]
    fn a_tombstone_made_in_the_finishing_change_is_the_compaction_of_the_whole_job() {
        let changes = changes();
        let retention = Retention::default();
        let mut whole = JobTable::default();
        for change in &changes {
            whole.apply(change.clone()).unwrap();
        }
        assert!(whole.iter().all(|job| job.history().len() > 2));
        let mut compacted = whole.clone();
        compacted.compact(&retention, true);

        let mut settled = JobTable::default();
        settled.settle_on_finish(Some(retention));
        let (last, before) = changes.split_last().unwrap();
        for change in before {
            settled.apply(change.clone()).unwrap();
        }
        let copy = settled.clone();
        settled.apply(last.clone()).unwrap();
        assert_eq!(last.job, id("changed"));
        for job in whole.iter() {
            let made = settled.get(job.id()).unwrap();
            assert!(made.is_tombstone(), "{}", job.id());
            assert_eq!(made, compacted.get(job.id()).unwrap(), "{}", job.id());
            assert!(made.latest_spec().is_mandatory() == (job.id() == &id("changed")));
        }
        // The copy taken before the last change still holds the job unfinished.
        assert!(!copy.get(&id("changed")).unwrap().state().is_terminal());
    }

    /// A run number changes only when a finished run is followed by a new one: a change that
    /// starts an attempt in another run (ahead or behind) is refused, and the table is left as
    /// it was.
    #[test]
    fn a_change_that_jumps_to_another_run_is_refused() {
        let changes = changes();
        let started = changes
            .iter()
            .position(|c| matches!(c.state, JobState::Running { .. }))
            .unwrap();
        let mut table = JobTable::default();
        for change in &changes[..started] {
            table.apply(change.clone()).unwrap();
        }
        for run in [0, 2, 5] {
            let mut jump = changes[started].clone();
            let JobState::Running { attempt, .. } = &mut jump.state else {
                unreachable!()
            };
            attempt.run = run;
            let err = table.apply(jump).unwrap_err();
            assert!(
                matches!(err, ReplayError::NotATransition { .. }),
                "run {run}: {err}"
            );
        }
        table.apply(changes[started].clone()).unwrap();
    }

    /// A table loaded whole (the ledger's copy at open) has room for the jobs offered next: the
    /// first new job does not double it (an exact reservation did, holding twice the memory
    /// from the first offer on).
    #[test]
    fn a_table_loaded_whole_takes_new_jobs_without_growing() {
        let mut table = JobTable::default();
        for change in changes() {
            table.apply(change).unwrap();
        }
        let records: Vec<super::JobRecord> = (0..1000)
            .map(|i| {
                let mut record = table.get(&id("plain")).unwrap().clone();
                record.created = std::sync::Arc::new(JobSpec::new(id(&format!("job-{i}"))));
                record
            })
            .collect();
        let mut loaded = JobTable::from_records(records).unwrap();
        let room = loaded.jobs.capacity();
        assert!(room >= 1000 + 100, "room for 1000 records: {room}");
        assert!(
            room <= 1000 * 5 / 4 + 16,
            "no more than an eighth more: {room}"
        );
        let offered = changes().into_iter().next().unwrap();
        assert_eq!(offered.seq, 1);
        loaded.apply(offered).unwrap();
        assert_eq!(loaded.len(), 1001);
        assert_eq!(loaded.jobs.capacity(), room, "the first new job fits");
    }

    /// A table that settles jobs on finish drops, in the change that abandons a job, the
    /// earlier runs the retention lets go (an abandoned job is no tombstone: it keeps its last
    /// run): what a compaction of the whole table leaves (a mutant compacted tombstones there
    /// instead, and an abandoned job kept every run until the next compaction).
    #[test]
    fn an_abandoned_job_keeps_only_the_runs_the_retention_keeps_in_the_change_that_ends_it() {
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), test_facts("boot-1")).unwrap();
        let job = id("abandoned");
        ledger
            .offer(JobSpec::new(job.clone()).with_mandatory(false))
            .unwrap();
        let attempt = ledger.begin(&job).unwrap();
        let _ = ledger.launched(&attempt, ProgramId::new(7, 1)).unwrap();
        let _ = ledger.program_exited(&attempt, 0).unwrap();
        let _ = ledger.rerun(&job).unwrap();
        let _ = ledger.abandon(&job).unwrap();
        let mut changes = Vec::new();
        for bytes in store.records() {
            if let Record::Change(change) = codec::decode(&bytes).unwrap() {
                changes.push(*change);
            }
        }
        let retention = Retention {
            earlier_runs: 0,
            tombstones: true,
        };

        let mut whole = JobTable::default();
        let mut settled = JobTable::default();
        settled.settle_on_finish(Some(retention));
        for change in &changes {
            whole.apply(change.clone()).unwrap();
            settled.apply(change.clone()).unwrap();
        }
        let before = whole.get(&job).unwrap().clone();
        assert!(matches!(
            before.state(),
            JobState::Failed {
                reason: crate::core::state::FailureReason::Abandoned,
                ..
            }
        ));
        assert!(before.history().iter().any(|e| e.state.run() == 1));
        whole.compact(&retention, true);
        let made = settled.get(&job).unwrap();
        assert!(!made.is_tombstone());
        assert!(made.history().iter().all(|e| e.state.run() == 2));
        assert_eq!(made, whole.get(&job).unwrap());
    }

    /// Room made before a load is room for the jobs told and an eighth more in the table, and
    /// for the jobs told in the index (a mutant made none: each growth of the index while a
    /// million records load hashes every id again).
    #[test]
    fn room_made_before_a_load_holds_the_jobs_told_and_an_eighth_more() {
        let mut table = JobTable::default();
        table.reserve(1000);
        assert!(table.index.capacity() >= 1000, "{}", table.index.capacity());
        let room = table.jobs.capacity();
        assert!((1125..=1250).contains(&room), "room for 1000 jobs: {room}");
        // Room that cannot be had is not taken, and the table still takes jobs.
        table.reserve(usize::MAX);
        assert_eq!(table.jobs.capacity(), room);
        for change in changes() {
            table.apply(change).unwrap();
        }
        assert_eq!(table.len(), 2);
    }
}

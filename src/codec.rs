//! The serialized form of a stored [`Record`]: a format-version byte, then the record in a
//! compact binary encoding (postcard). Stores frame and checksum these bytes themselves.

use serde::Serialize;

use crate::change_decoder;
use crate::core::effect::{StatusKey, StatusMessage};
use crate::record::{ChangeRef, HistoryEntry, JobRecord, Record, Unboxed};
use crate::report::dead_letter::DeadLetterNote;
use crate::store::TombstoneBytes;
use crate::store::{Commit, Replay};

/// [`Record`] by reference: the same encoding (the same variants in the same order), without
/// cloning a commit or a store's state to write it.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    Change(ChangeRef<'a>),
    Report(&'a StatusMessage),
    Delivered(&'a StatusKey),
    DeadLettered(&'a DeadLetterNote),
    Requeued(&'a StatusKey),
    Discarded(&'a StatusKey),
    Compacted(ChangeRef<'a>),
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(record: &'a Record) -> Self {
        match record {
            Record::Change(change) => RecordRef::Change(ChangeRef::from(&**change)),
            Record::Report(message) => RecordRef::Report(message),
            Record::Delivered(key) => RecordRef::Delivered(key),
            Record::DeadLettered(note) => RecordRef::DeadLettered(note),
            Record::Requeued(key) => RecordRef::Requeued(key),
            Record::Discarded(key) => RecordRef::Discarded(key),
            Record::Compacted(change) => RecordRef::Compacted(ChangeRef::from(&**change)),
        }
    }
}

/// The format version this build writes and reads: 2, the first released one (1 was a
/// pre-release). Golden stores of it are committed under `tests/golden/format-2/`; every later
/// version reads them. (The file store's journals of format 3 also hold changes written
/// against their job's previous change, which only the store, holding the jobs, decodes; every
/// record this module writes and reads is format 2's.)
pub const FORMAT_VERSION: u8 = 2;

/// Why bytes could not be decoded into a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record was written in a format this build does not know (a newer jobstate, usually).
    #[error(
        "record format version {found} is not supported (this build reads version {supported}); {}, nothing was changed",
        if found > supported { "upgrade jobstate to read this store" } else { "that older version was never released: a pre-release build wrote it, or the store is damaged" }
    )]
    UnknownVersion {
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The bytes are not a valid record (truncated, garbled, or an invalid field such as a bad
    /// job id).
    #[error("the record is not valid ({detail}); the store is damaged, restore it from a backup")]
    Malformed {
        /// What the decoder said.
        detail: String,
    },
}

/// Why a [`Record`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not encode a record ({detail}); nothing was written")]
pub struct EncodeError {
    /// What the encoder said.
    pub detail: String,
}

/// Encodes `record` in the current format.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// use jobstate::{codec, BootId, Event, EventKind, JobId, JobSpec, JobState};
/// use jobstate::store::{Change, Record};
/// # let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// # let id = JobId::new("patch").unwrap();
/// let record = Record::Change(Box::new(Change {
///     job: id.clone(),
///     seq: 1,
///     spec: Some(JobSpec::new(id).into()),
///     event: Event {
///         at,
///         boot: BootId::new("b1").unwrap(),
///         since_boot: std::time::Duration::ZERO,
///         kind: EventKind::Offered,
///     },
///     state: JobState::initial(),
/// }));
/// let bytes = codec::encode(&record).unwrap();
/// assert_eq!(bytes[0], codec::FORMAT_VERSION);
/// assert_eq!(codec::decode(&bytes).unwrap(), record);
/// ```
pub fn encode(record: &Record) -> Result<Vec<u8>, EncodeError> {
    let mut bytes = vec![FORMAT_VERSION];
    encode_into(record, &mut bytes)?;
    Ok(bytes)
}

/// Appends the encoding of `record`, without the version byte, to `out`: for stores that write
/// the version once, in a file header.
pub fn encode_into(record: &Record, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    *out = postcard::to_extend(&RecordRef::from(record), std::mem::take(out)).map_err(|e| {
        EncodeError {
            detail: e.to_string(),
        }
    })?;
    Ok(())
}

/// Appends the records of `commit` (in [`Commit::records`]' order), without version bytes,
/// to `out`: what [`Commit::records`] holds, encoded as [`decode_all`] reads it back.
pub fn encode_commit(commit: &Commit, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let changes = commit
        .changes
        .iter()
        .map(|c| RecordRef::Change(ChangeRef::from(c)));
    let reports = commit.reports.iter().map(RecordRef::Report);
    let delivered = commit.delivered.iter().map(RecordRef::Delivered);
    let dead = commit.dead_lettered.iter().map(RecordRef::DeadLettered);
    let requeued = commit.requeued.iter().map(RecordRef::Requeued);
    let discarded = commit.discarded.iter().map(RecordRef::Discarded);
    let records = changes
        .chain(reports)
        .chain(delivered)
        .chain(dead)
        .chain(requeued)
        .chain(discarded);
    for record in records {
        *out = postcard::to_extend(&record, std::mem::take(out)).map_err(|e| EncodeError {
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// Encodes everything `replay` holds as the records [`Replay::records`] lists, without version
/// bytes, in chunks of at least `chunk` bytes (the last may be shorter): what a snapshot holds,
/// encoded without cloning any of it. A tombstone's record is copied from `tombstones` where
/// its bytes are there, and encoded otherwise; `tombstones` is left holding the bytes of every
/// tombstone written, and nothing else.
pub(crate) fn encode_state(
    replay: &Replay,
    chunk: usize,
    tombstones: &mut TombstoneBytes,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut chunks = Vec::new();
    let mut out = Vec::with_capacity(chunk + chunk / 4);
    let jobs = replay.jobs();
    let mut kept = TombstoneBytes::with_capacity(jobs.len(), tombstones.len());
    let mut full = |out: &mut Vec<u8>| {
        if out.len() >= chunk {
            chunks.push(std::mem::replace(
                out,
                Vec::with_capacity(chunk + chunk / 4),
            ));
        }
    };
    for (position, job) in jobs.iter().enumerate() {
        let start = out.len();
        if let Some(bytes) = tombstones.get(position, job.seq()) {
            // The crate's own tests (crash tests, property tests) check every copy against a
            // fresh encoding: bytes kept for a job that changed would write a wrong snapshot.
            #[cfg(test)]
            {
                let mut fresh = Vec::new();
                encode_job(job, &mut fresh)?;
                assert!(
                    job.is_tombstone(),
                    "bytes kept for {}, no tombstone",
                    job.id()
                );
                assert_eq!(bytes, &fresh[..], "stale bytes kept for {}", job.id());
            }
            out.extend_from_slice(bytes);
            kept.put(position, job.seq(), &out[start..]);
        } else if job.is_tombstone() {
            encode_job(job, &mut out)?;
            kept.put(position, job.seq(), &out[start..]);
        } else {
            for entry in job.history() {
                encode_entry(job, entry, &mut out)?;
                full(&mut out);
            }
        }
        full(&mut out);
    }
    kept.fit();
    *tombstones = kept;
    let mut put = |record: RecordRef<'_>, out: &mut Vec<u8>| -> Result<(), EncodeError> {
        extend(&record, out)?;
        full(out);
        Ok(())
    };
    for message in replay.outbox().iter() {
        put(RecordRef::Report(message), &mut out)?;
    }
    for letter in replay.dead_letters().iter() {
        put(RecordRef::Report(&letter.message), &mut out)?;
        put(RecordRef::DeadLettered(&letter.note), &mut out)?;
    }
    if !out.is_empty() {
        chunks.push(out);
    }
    Ok(chunks)
}

/// Appends the records of `job`'s kept history, as a snapshot holds them, to `out`.
pub(crate) fn encode_job(job: &JobRecord, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for entry in job.history() {
        encode_entry(job, entry, out)?;
    }
    Ok(())
}

/// Appends the record of one kept change of `job`: a [`Record::Compacted`] for the first kept
/// change of a job whose earlier history is gone, a [`Record::Change`] otherwise.
fn encode_entry(
    job: &JobRecord,
    entry: &HistoryEntry,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let change = ChangeRef::new(
        job.id(),
        entry.seq,
        job.spec_carried_by(entry.seq),
        &entry.event,
        &entry.state,
    );
    let record = if job.starts_compacted(entry.seq) {
        RecordRef::Compacted(change)
    } else {
        RecordRef::Change(change)
    };
    extend(&record, out)
}

/// Appends `record`'s encoding to `out`.
pub(crate) fn extend(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    *out = postcard::to_extend(record, std::mem::take(out)).map_err(|e| EncodeError {
        detail: e.to_string(),
    })?;
    Ok(())
}

/// Decodes a record, refusing an unknown format version before reading anything else.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => decode_body(body),
        Some((&found, _)) => Err(DecodeError::UnknownVersion {
            found,
            supported: FORMAT_VERSION,
        }),
        None => Err(DecodeError::Malformed {
            detail: "empty record".into(),
        }),
    }
}

/// Decodes records written by [`encode_into`] back to back, until `bytes` is used up.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut records = Vec::new();
    decode_each(bytes, |record| {
        records.push(record.into_record()?);
        Ok::<_, DecodeError>(())
    })?;
    Ok(records)
}

/// Decodes the record at the start of `bytes`: the record and the bytes after it. A change is
/// read by the hand-written decoder (`change_decoder.rs`), anything else (and any change whose
/// bytes it does not accept) by serde; both read the same bytes the same way.
#[inline(always)]
pub(crate) fn take_record(bytes: &[u8]) -> Result<(Unboxed<'_>, &[u8]), DecodeError> {
    if let Some(taken) = change_decoder::decode(bytes) {
        return Ok(taken);
    }
    postcard::take_from_bytes::<Unboxed>(bytes).map_err(|e| DecodeError::Malformed {
        detail: e.to_string(),
    })
}

/// Decodes records written by [`encode_into`] back to back, until `bytes` is used up, handing
/// each to `f` as soon as it is decoded (what [`decode_all`] does without collecting them):
/// stops at the first error, a record that does not decode or an error of `f`.
pub(crate) fn decode_each<E: From<DecodeError>>(
    bytes: &[u8],
    mut f: impl FnMut(Unboxed<'_>) -> Result<(), E>,
) -> Result<(), E> {
    decode_each_raw(bytes, |record, _| f(record))
}

/// [`decode_each`], handing `f` each record's bytes too.
pub(crate) fn decode_each_raw<E: From<DecodeError>>(
    mut bytes: &[u8],
    mut f: impl FnMut(Unboxed<'_>, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    while !bytes.is_empty() {
        let (record, rest) = take_record(bytes)?;
        f(record, &bytes[..bytes.len() - rest.len()])?;
        bytes = rest;
    }
    Ok(())
}

/// Decodes one record written by [`encode_into`]: all of `bytes`, nothing left over.
pub fn decode_body(body: &[u8]) -> Result<Record, DecodeError> {
    let (record, rest) = take_record(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            detail: format!("{} bytes after the record", rest.len()),
        });
    }
    record.into_record()
}

//! The serialized form of a stored [`Record`]: JSON inside a versioned envelope.

use serde::{Deserialize, Serialize};

use crate::Record;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Why bytes could not be decoded into a [`Record`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record was written in a format this build does not know (a newer jobstate, usually).
    #[error(
        "record format version {found} is not supported (this build reads version {supported}); upgrade jobstate to read this store, nothing was changed"
    )]
    UnknownVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The bytes are not a valid record (truncated, garbled, or an invalid field such as a bad
    /// job id).
    #[error("the record is not valid: {0}; the store is damaged, restore it from a backup")]
    Malformed(#[source] serde_json::Error),
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    record: &'a Record,
}

#[derive(Deserialize)]
struct Header {
    format: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    record: Record,
}

/// Why a [`Record`] could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("could not encode a record: {source}; nothing was written")]
pub struct EncodeError {
    /// What serde_json said.
    #[source]
    pub source: serde_json::Error,
}

/// Encodes `record` in the current format.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// use jobstate::{codec, BootId, Change, Event, EventKind, JobId, JobSpec, JobState, Record};
/// # let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// # let id = JobId::new("patch").unwrap();
/// let record = Record::Change(Box::new(Change {
///     job: id.clone(),
///     seq: 1,
///     spec: Some(JobSpec::new(id)),
///     event: Event {
///         at,
///         boot: BootId::new("b1").unwrap(),
///         since_boot: std::time::Duration::ZERO,
///         kind: EventKind::Advertised,
///     },
///     state: JobState::initial(),
/// }));
/// let bytes = codec::encode(&record).unwrap();
/// assert_eq!(codec::decode(&bytes).unwrap(), record);
/// ```
pub fn encode(record: &Record) -> Result<Vec<u8>, EncodeError> {
    let envelope = EnvelopeOut {
        format: FORMAT_VERSION,
        record,
    };
    serde_json::to_vec(&envelope).map_err(|source| EncodeError { source })
}

/// Decodes a record, refusing unknown format versions before reading anything else.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: Header = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
    if header.format != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: header.format,
            supported: FORMAT_VERSION,
        });
    }
    let envelope: EnvelopeIn = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
    Ok(envelope.record)
}

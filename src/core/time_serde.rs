//! Timestamps as RFC 3339 text in human-readable formats (JSON status lines, for people) and as
//! seconds + nanoseconds in binary ones (the journal, where parsing text would dominate
//! recovery time).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::Timestamp;

fn to_parts(t: &Timestamp) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn from_parts<E: serde::de::Error>((secs, nanos): (i64, u32)) -> Result<Timestamp, E> {
    chrono::DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| E::custom(format!("timestamp {secs}.{nanos:09} is out of range")))
}

/// `#[serde(with = "crate::core::time_serde::timestamp")]`
pub(crate) mod timestamp {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            to_parts(t).serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        if d.is_human_readable() {
            Timestamp::deserialize(d)
        } else {
            from_parts(<(i64, u32)>::deserialize(d)?)
        }
    }
}

/// `#[serde(with = "crate::core::time_serde::option")]`
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            t.as_ref().map(to_parts).serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        if d.is_human_readable() {
            Option::<Timestamp>::deserialize(d)
        } else {
            Option::<(i64, u32)>::deserialize(d)?
                .map(from_parts::<D::Error>)
                .transpose()
        }
    }
}

//! Timestamps as RFC 3339 text in human-readable formats (JSON status lines, for people) and as
//! seconds + nanoseconds in binary ones (the journal, where parsing text would dominate
//! recovery time).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::Timestamp;

fn to_parts(t: &Timestamp) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn from_parts<E: serde::de::Error>((secs, nanos): (i64, u32)) -> Result<Timestamp, E> {
    from_parts_cached(secs, nanos)
        .ok_or_else(|| E::custom(format!("timestamp {secs}.{nanos:09} is out of range")))
}

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAY_FROM_CE: i64 = 719_163;

thread_local! {
    /// The day of the timestamp decoded last and its date: a store's timestamps fall on a few
    /// days, and turning a day number into a date is most of what building a timestamp costs.
    static LAST_DAY: std::cell::Cell<Option<(i64, chrono::NaiveDate)>> =
        const { std::cell::Cell::new(None) };
}

/// [`chrono::DateTime::from_timestamp`], with the day's date taken from [`LAST_DAY`] when the
/// day is the one decoded last: the same result (the same checks of the day and of the time of
/// day, leap seconds included), for a fraction of the cost.
pub(crate) fn from_parts_cached(secs: i64, nanos: u32) -> Option<Timestamp> {
    let day = secs.div_euclid(DAY);
    let second_of_day = u32::try_from(secs.rem_euclid(DAY)).ok()?;
    let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, nanos)?;
    let date = match LAST_DAY.try_with(std::cell::Cell::get) {
        Ok(Some((last, date))) if last == day => date,
        _ => {
            let days_from_ce = i32::try_from(day.checked_add(UNIX_EPOCH_DAY_FROM_CE)?).ok()?;
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days_from_ce)?;
            let _ = LAST_DAY.try_with(|last| last.set(Some((day, date))));
            date
        }
    };
    Some(date.and_time(time).and_utc())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached conversion must agree with chrono's own, whatever was decoded before it
    /// (random timestamps: `tests/it/codec.rs`).
    fn agrees(secs: i64, nanos: u32) {
        assert_eq!(
            from_parts_cached(secs, nanos),
            chrono::DateTime::from_timestamp(secs, nanos),
            "{secs}.{nanos:09}"
        );
    }

    #[test]
    fn the_cached_day_agrees_with_chrono_at_the_edges() {
        let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp();
        let min = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp();
        for secs in [
            0,
            -1,
            1,
            DAY - 1,
            DAY,
            -DAY,
            -DAY - 1,
            59,
            DAY - 1 + 60,
            max,
            max + 1,
            min,
            min - 1,
            i64::MAX,
            i64::MIN,
            1_767_225_600,
        ] {
            for nanos in [
                0,
                1,
                999_999_999,
                1_000_000_000,
                1_999_999_999,
                2_000_000_000,
                u32::MAX,
            ] {
                // Twice: once computing the day, once from the cache.
                agrees(secs, nanos);
                agrees(secs, nanos);
            }
        }
    }
}

//! Durations as human text ("90s", "2h", "1h30m", "250ms") in human-readable formats (job specs
//! written as configuration), and as the native seconds + nanoseconds in binary ones (the
//! journal).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The units of the text form, largest first, with their length in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// `d` as text: each unit from days to nanoseconds that is not zero, largest first ("1h30m",
/// "1m30s", "250ms"); zero is "0s". [`parse`] reads it back exactly.
pub(crate) fn format(d: Duration) -> String {
    let mut rest = d.as_nanos();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, nanos) in UNITS {
        let count = rest / nanos;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(unit);
            rest %= nanos;
        }
    }
    text
}

/// Reads a duration written as one or more `<integer><unit>` parts, units `d`, `h`, `m`, `s`,
/// `ms`, `us`, `ns` ("90s", "2h", "1h30m", "500ms").
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let explain = |what: &str| {
        format!(
            "{what} in the duration {text:?}: write it as a number and a unit, such as \"90s\", \"2h\" or \"1h30m\" (units d, h, m, s, ms, us, ns)"
        )
    };
    if text.is_empty() {
        return Err(explain("nothing"));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(explain("a unit without a number"));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let Some((_, nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                explain("a number without a unit")
            } else {
                explain(&format!("an unknown unit {unit:?}"))
            });
        };
        let count: u128 = number.parse().map_err(|_| explain("a number too large"))?;
        total = count
            .checked_mul(*nanos)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| explain("a duration too long"))?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| explain("a duration too long"))?;
    // The remainder of a division by 10^9 fits in a u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// `#[serde(with = "crate::core::duration_text")]`
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        format(*d).serialize(s)
    } else {
        d.serialize(s)
    }
}

/// `#[serde(with = "crate::core::duration_text")]`
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    if d.is_human_readable() {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    } else {
        Duration::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_back_exactly_and_bad_text_is_explained() {
        for (text, d) in [
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("1d2h3m4s5ms6us7ns", Duration::new(93_784, 5_006_007)),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        for d in [
            Duration::ZERO,
            Duration::new(93_784, 5_006_007),
            Duration::MAX,
            Duration::from_nanos(1),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
        for bad in [
            "",
            "90",
            "s",
            "1x",
            "1.5h",
            "-1s",
            " 1s",
            "1s ",
            "99999999999999999999999d",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("\"90s\""), "{bad}: {error}");
        }
    }
}

//! The record encoding, field by field: a change's state is encoded against its event's boot
//! (a boot id there that is the event's is written as the empty string), timestamps come back
//! exactly whatever day they fall on, and an empty boot id anywhere else is refused.
//!
//! Random changes: 256 cases; `JOBSTATE_PROPTEST_MULTIPLIER=100` runs 100 times more.

use std::time::Duration;

use jobstate::chrono::DateTime;
use jobstate::store::{Change, Record};
use jobstate::{Attempt, BootId, Event, EventKind, JobState, Launch, Timestamp, codec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::*;

fn running(boot: BootId, started_at: Timestamp, started_since_boot: Duration) -> JobState {
    JobState::Running {
        attempt: Attempt {
            run: 1,
            number: 1,
            boot,
            started_at,
            started_since_boot,
        },
        launch: Launch::Pending,
        shutdown_notice_at: None,
        terminate: None,
        provisional: None,
    }
}

fn change(event_boot: BootId, at: Timestamp, state: JobState) -> Change {
    Change {
        job: job("patch"),
        seq: 2,
        spec: None,
        event: Event {
            at,
            boot: event_boot,
            since_boot: Duration::from_secs(60),
            kind: EventKind::AttemptStarted,
        },
        state,
    }
}

fn encoded(change: &Change) -> Vec<u8> {
    codec::encode(&Record::Change(Box::new(change.clone()))).expect("encodes")
}

fn decoded(bytes: &[u8]) -> Result<Change, codec::DecodeError> {
    match codec::decode(bytes)? {
        Record::Change(change) => Ok(*change),
        other => panic!("expected a change, got {other:?}"),
    }
}

/// The offset of `needle` in `haystack`, which holds it exactly once.
fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} in {haystack:?}");
    hits[0]
}

#[test]
fn a_state_boot_that_is_the_events_is_written_once() {
    let boot_id = "3f1c9a52-8e2b-4d7a-9c11-5b0e2f6a7d43";
    let same = change(
        boot(boot_id),
        t0(),
        running(boot(boot_id), t0(), Duration::ZERO),
    );
    let bytes = encoded(&same);
    // The event's boot, once; the state's is the empty string.
    find_once(&bytes, boot_id.as_bytes());
    assert_eq!(decoded(&bytes).expect("decodes"), same);

    let other = change(
        boot(boot_id),
        t0(),
        running(boot("earlier-boot"), t0(), Duration::ZERO),
    );
    let bytes = encoded(&other);
    find_once(&bytes, boot_id.as_bytes());
    find_once(&bytes, b"earlier-boot");
    assert_eq!(decoded(&bytes).expect("decodes"), other);

    // `Change`'s own serde form, in any format, writes every boot id whole: the leaner form is
    // the codec's alone. Human-readable (JSON) and binary (postcard itself, outside the codec).
    let json = serde_json::to_string(&same).expect("to JSON");
    assert_eq!(json.matches(boot_id).count(), 2, "{json}");
    assert_eq!(
        serde_json::from_str::<Change>(&json).expect("from JSON"),
        same
    );
    let plain = postcard::to_stdvec(&same).expect("to postcard");
    assert_eq!(
        plain
            .windows(boot_id.len())
            .filter(|w| *w == boot_id.as_bytes())
            .count(),
        2
    );
    assert_eq!(
        postcard::from_bytes::<Change>(&plain).expect("from postcard"),
        same
    );
    let record = Record::Change(Box::new(same.clone()));
    let plain = postcard::to_stdvec(&record).expect("a record to postcard");
    assert_eq!(
        postcard::from_bytes::<Record>(&plain).expect("from postcard"),
        record
    );
    assert!(
        plain.len() > encoded(&same).len(),
        "the codec's form is the leaner"
    );
}

#[test]
fn an_empty_boot_id_outside_a_changes_state_is_refused() {
    // Event boot "E", state boot "S": each is written as length 1, then the letter.
    let c = change(boot("E"), t0(), running(boot("S"), t0(), Duration::ZERO));
    let bytes = encoded(&c);

    // The state's boot emptied: it reads as the event's boot.
    let mut state_empty = bytes.clone();
    let at = find_once(&state_empty, &[1, b'S']);
    state_empty.splice(at..at + 2, [0]);
    let read = decoded(&state_empty).expect("an empty state boot is the event's");
    assert_eq!(
        read,
        change(boot("E"), t0(), running(boot("E"), t0(), Duration::ZERO))
    );

    // The event's own boot emptied: there is nothing it could stand for.
    let mut event_empty = bytes.clone();
    let at = find_once(&event_empty, &[1, b'E']);
    event_empty.splice(at..at + 2, [0]);
    match decoded(&event_empty) {
        Err(codec::DecodeError::Malformed { .. }) => {}
        other => panic!("an empty event boot must be refused, got {other:?}"),
    }

    // And a boot id decoded after the change is not read in its scope.
    let mut two = bytes.clone();
    two.extend_from_slice(&event_empty[1..]);
    assert!(
        codec::decode_all(&two[1..]).is_err(),
        "the second change's empty event boot must be refused"
    );
}

/// Any timestamp chrono can hold, for the event and the attempt, on any day, decoded after any
/// other: the decoder's cache of the last day decoded never changes a value.
#[test]
fn timestamps_come_back_exactly() {
    let multiplier: u32 = std::env::var("JOBSTATE_PROPTEST_MULTIPLIER")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    let cases = 256 * multiplier;
    let min = DateTime::<jobstate::chrono::Utc>::MIN_UTC.timestamp();
    let max = DateTime::<jobstate::chrono::Utc>::MAX_UTC.timestamp();
    let secs = prop_oneof![min..=max, 1_700_000_000i64..1_900_000_000];
    let instant = (secs, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range by construction"));
    let pairs = proptest::collection::vec((instant.clone(), instant, any::<bool>()), 1..16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let changes = std::cell::Cell::new(0u64);
    runner
        .run(&pairs, |pairs| {
            for (at, started_at, same_boot) in pairs {
                let state_boot = if same_boot { boot("b1") } else { boot("b0") };
                let c = change(
                    boot("b1"),
                    at,
                    running(state_boot, started_at, Duration::MAX),
                );
                prop_assert_eq!(decoded(&encoded(&c)).expect("decodes"), c);
                changes.set(changes.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "codec: {cases} cases, {} changes came back exactly",
        changes.get()
    );
}

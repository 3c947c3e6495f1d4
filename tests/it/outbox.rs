//! Status reporting that cannot be lost: committed with the transition, delivered at least
//! once, deduplicated by key, independent of users and notices.

use std::collections::HashMap;
use std::time::Duration;

#[cfg(feature = "json-lines")]
use jobstate::report::JsonLinesSink;
use jobstate::report::{Answers, DeliveryPolicy, StatusSink};
use jobstate::store::{Store, StoreError};
use jobstate::{
    Error, JobState, Ledger, MemoryStore, RebootBehaviour, StateKind, StatusKey, StatusMessage,
    UserPresence,
};

use crate::common::*;

/// A receiver that fails a number of times, then accepts everything; it counts deliveries per
/// key (raw) and keeps one copy per key (what a deduplicating server stores).
#[derive(Default)]
struct Receiver {
    fail_next: u32,
    calls: usize,
    raw: HashMap<StatusKey, usize>,
}

impl StatusSink for Receiver {
    type Error = std::io::Error;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        self.calls += 1;
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(std::io::Error::other("server unreachable"));
        }
        for m in batch {
            *self.raw.entry(m.key.clone()).or_default() += 1;
        }
        answers.accept_all();
        Ok(())
    }
}

/// Three jobs driven to three terminal states and one reboot wait.
fn busy_ledger(store: &MemoryStore) -> MemLedger {
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    for (name, code) in [("ok", 0), ("fails", 1603), ("reboots", 3010)] {
        let spec = msi_job(job(name))
            .with_reboot(RebootBehaviour::MayRequest)
            .with_retry(jobstate::RetryPolicy::none());
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        let _effects = ledger.program_exited(&attempt, code).unwrap();
    }
    ledger
}

#[test]
fn a_sink_that_fails_n_times_then_accepts_gets_exactly_one_message_per_state() {
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    let states: Vec<_> = ledger.outbox().map(|m| m.key.state).collect();
    assert_eq!(
        states,
        [
            StateKind::Completed,
            StateKind::Failed,
            StateKind::AwaitingReboot
        ]
    );
    let before: Vec<JobState> = ledger.jobs().map(|r| r.state().clone()).collect();

    let mut server = Receiver {
        fail_next: 3,
        ..Receiver::default()
    };
    let mut failures = 0;
    loop {
        let delivery = ledger.deliver(&mut server).unwrap();
        let Some(retry_at) = delivery.retry_at else {
            break;
        };
        failures += 1;
        assert_eq!(delivery.pending, 3, "nothing is lost while the sink fails");
        // Before the back-off is over, the sink is not even called.
        let calls = server.calls;
        assert!(ledger.deliver(&mut server).unwrap().retry_at.is_some());
        assert_eq!(server.calls, calls);
        ledger.session_mut().now = retry_at;
    }
    assert_eq!(failures, 3);
    assert_eq!(server.raw.len(), 3);
    assert!(server.raw.values().all(|&n| n == 1), "{:?}", server.raw);
    assert_eq!(ledger.outbox().count(), 0, "delivered messages are pruned");
    let after: Vec<JobState> = ledger.jobs().map(|r| r.state().clone()).collect();
    assert_eq!(before, after, "delivery failures never change a job");
    // Nothing more to send on the next turn, nor after an agent restart.
    assert_eq!(ledger.deliver(&mut server).unwrap().delivered, 0);
    drop(ledger);
    let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
    assert_eq!(ledger.deliver(&mut server).unwrap().delivered, 0);
    assert_eq!(server.raw.len(), 3);
}

#[test]
fn back_off_doubles_and_a_clock_reset_backwards_ends_it() {
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    ledger.set_delivery_policy(DeliveryPolicy {
        batch_size: 2,
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(600),
        ..DeliveryPolicy::default()
    });
    let mut server = Receiver {
        fail_next: 2,
        ..Receiver::default()
    };
    let first = ledger.deliver(&mut server).unwrap().retry_at.unwrap();
    assert_eq!(first, t0() + chrono::TimeDelta::seconds(10));
    ledger.session_mut().now = first;
    let second = ledger.deliver(&mut server).unwrap().retry_at.unwrap();
    assert_eq!(second, first + chrono::TimeDelta::seconds(20));
    // The clock is reset an hour back: the wait is over rather than an hour longer.
    ledger.session_mut().now = t0() - chrono::TimeDelta::hours(1);
    let delivery = ledger.deliver(&mut server).unwrap();
    assert_eq!(
        (delivery.delivered, delivery.pending),
        (3, 0),
        "batches of 2, then 1"
    );
}

#[test]
fn a_crash_between_delivery_and_acknowledgement_delivers_again_with_the_same_key() {
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    let mut server = Receiver::default();
    // The sink accepts; then the commit of the acknowledgement fails (the agent dies there).
    store.fail_next_commits(1);
    assert!(matches!(
        ledger.deliver(&mut server),
        Err(Error::Store(StoreError::Io { .. }))
    ));
    assert_eq!(server.raw.len(), 3);
    drop(ledger);

    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    assert_eq!(
        ledger.outbox().count(),
        3,
        "unacknowledged messages are still pending"
    );
    ledger.deliver(&mut server).unwrap();
    assert!(
        server.raw.values().all(|&n| n == 2),
        "delivered again: {:?}",
        server.raw
    );
    assert_eq!(
        server.raw.len(),
        3,
        "by key, the receiver still has one message per state"
    );
    assert_eq!(ledger.outbox().count(), 0);
    let mut reader = store.clone();
    assert!(
        reader.load().unwrap().outbox.is_empty(),
        "the acknowledgement is durable"
    );
}

#[test]
fn a_partial_acceptance_keeps_the_rest_pending() {
    struct TakesOne;
    impl StatusSink for TakesOne {
        type Error = std::convert::Infallible;
        fn deliver(
            &mut self,
            batch: &[StatusMessage],
            answers: &mut Answers,
        ) -> Result<(), Self::Error> {
            // A second answer for a key is ignored, as is an answer for a key not offered.
            answers.accept(&batch[0].key);
            answers.reject(&batch[0].key, "too late");
            let mut stranger = batch[0].key.clone();
            stranger.run += 100;
            answers.reject(&stranger, "never offered");
            Ok(())
        }
    }
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    let delivery = ledger.deliver(&mut TakesOne).unwrap();
    assert_eq!((delivery.delivered, delivery.pending), (1, 2));
    assert_eq!((delivery.retrying, delivery.dead_lettered), (2, 0));
    assert!(delivery.failure.is_none(), "the receiver was reached");
    assert!(delivery.retry_at.is_some());
}

#[test]
fn pending_messages_survive_crashes_and_reboots_and_need_no_user() {
    let store = MemoryStore::new();
    drop(busy_ledger(&store));
    let mut session = service_session("after-reboot");
    session.user = UserPresence::NoneLoggedOn;
    let (mut ledger, _) = Ledger::open(store, session).unwrap();
    // The 3010 job completed across the reboot: a fourth message joined the three.
    let mut server = Receiver::default();
    let delivery = ledger.deliver(&mut server).unwrap();
    assert_eq!((delivery.delivered, delivery.pending), (4, 0));
}

#[cfg(feature = "json-lines")]
#[test]
fn the_json_lines_sink_appends_synced_lines_readable_only_by_the_owner() {
    let dir = std::env::temp_dir().join(format!("jobstate-it-sink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("status.jsonl");
    let _ = std::fs::remove_file(&path);
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    let mut sink = JsonLinesSink::open(&path).unwrap();
    assert_eq!(ledger.deliver(&mut sink).unwrap().delivered, 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let messages: Vec<StatusMessage> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<_> = messages.iter().map(|m| m.key.state).collect();
    assert_eq!(
        states,
        [
            StateKind::Completed,
            StateKind::Failed,
            StateKind::AwaitingReboot
        ]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "json-lines")]
#[test]
fn the_json_lines_sink_cuts_off_a_line_a_crash_left_unfinished() {
    let dir = std::env::temp_dir().join(format!("jobstate-it-sink-torn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("status.jsonl");
    let complete = r#"{"key":{"job":"complete","run":1,"attempt":1,"state":"Completed"},"exit":{"code":0},"reason":null,"reboot":null,"started_at":null,"started_in":null,"boot":"b","at":"2026-11-21T02:00:00Z"}"#;
    std::fs::write(&path, format!("{complete}\n{{\"key\":{{\"job\":\"cut-here")).unwrap();
    let store = MemoryStore::new();
    let mut ledger = busy_ledger(&store);
    let mut sink = JsonLinesSink::open(&path).unwrap();
    ledger.deliver(&mut sink).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], complete);
    for line in &lines {
        serde_json::from_str::<StatusMessage>(line).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Delivery for a fleet (SEMANTICS.md "Status reporting"): per-message answers and back-offs, one
//! poison message never delaying the others, dead letters kept until an explicit call, the
//! pull API under `deliver`.

use std::time::Duration;

use chrono::TimeDelta;
use jobstate::report::{Answers, DeadLetterReason, DeliveryPolicy};
use jobstate::store::{Record, Replay};
use jobstate::{Error, FileStore, Ledger, MemoryStore, StatusKey, StatusMessage};

use crate::common::*;

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

// The scenario: one message the server always refuses among 300. Before, the others
// went out within 453 s, then every new message waited up to 30 minutes, for ever.
#[test]
fn one_poison_message_never_delays_the_others_and_becomes_a_dead_letter() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 300));
    let poison = job("job-150");
    let mut server = Scripted::new(|m: &StatusMessage| {
        if m.key.job == poison {
            Reply::Retry("HTTP 500 internal error")
        } else {
            Reply::Accept
        }
    });
    let first = ledger.deliver(&mut server).unwrap();
    assert_eq!(
        (first.delivered, first.retrying, first.pending),
        (299, 1, 1)
    );
    assert!(first.failure.is_none());
    // New messages keep coming, one a minute: each goes out on the very next call, while the
    // poison one backs off on its own.
    let mut minute = 0;
    let mut attempts_seen = 1;
    while ledger.dead_letters().next().is_none() {
        minute += 1;
        assert!(minute < 24 * 60, "the poison message was never given up on");
        ledger.session_mut().now = t0() + minutes(minute);
        let name = format!("new-{minute}");
        with_messages(&mut ledger, std::slice::from_ref(&name));
        let delivery = ledger.deliver(&mut server).unwrap();
        assert!(
            server.stored.contains_key(&ledger_key(&name)),
            "minute {minute}: a new message waited behind the poison one"
        );
        attempts_seen += delivery.retrying + delivery.dead_lettered;
        if let Some(at) = delivery.retry_at {
            assert!(seconds_until(&ledger, at) <= 30 * 60);
        }
    }
    let letter = ledger.dead_letters().next().unwrap().clone();
    assert_eq!(letter.message.key.job, poison);
    assert_eq!(letter.note.attempts, 20, "the default bound: 20 failures");
    assert_eq!(attempts_seen, 20);
    assert_eq!(
        letter.note.reason,
        DeadLetterReason::GaveUp {
            last_failure: "HTTP 500 internal error".into()
        }
    );
    assert_eq!(ledger.outbox().count(), 0);
    // Exactly one copy of every other message reached the server, and none of the poison one.
    assert_eq!(server.stored.len(), 299 + minute as usize);
    assert!(server.stored.values().all(|&n| n == 1));
    // Kept, durably: a restarted agent still shows it.
    drop(ledger);
    let (ledger, _) = Ledger::open(store, service_session("a")).unwrap();
    assert_eq!(ledger.dead_letters().next(), Some(&letter));
    report_figures(&format!(
        "delivery: poison message given up on after {} failures and {} min; {} other messages each delivered by the first call after it was reported",
        letter.note.attempts,
        minute,
        299 + minute
    ));
}

fn ledger_key(name: &str) -> StatusKey {
    StatusKey {
        job: job(name),
        run: 1,
        attempt: 0,
        state: jobstate::StateKind::Failed,
        wait: 0,
        overdue: 0,
    }
}

#[test]
fn a_rejected_message_is_a_dead_letter_at_once_kept_on_disk_until_requeued_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = FileStore::open(dir.path()).unwrap();
        Ledger::open(store, service_session("a")).unwrap().0
    };
    let mut ledger = open();
    with_messages(&mut ledger, &names("job", 3));
    let mut refusing = Scripted::new(|m: &StatusMessage| {
        if m.key.job.as_str() == "job-1" {
            Reply::Reject("409 deployment aborted")
        } else {
            Reply::Accept
        }
    });
    let delivery = ledger.deliver(&mut refusing).unwrap();
    assert_eq!(
        (delivery.delivered, delivery.dead_lettered, delivery.pending),
        (2, 1, 0)
    );
    assert_eq!(delivery.retry_at, None, "nothing is pending");
    drop(ledger);
    let mut ledger = open();
    let letter = ledger.dead_letters().next().unwrap().clone();
    assert_eq!(letter.message.key, ledger_key("job-1"));
    assert_eq!(letter.note.attempts, 1);
    assert_eq!(
        letter.note.reason.to_string(),
        "the receiver rejected it: 409 deployment aborted"
    );
    // A key that is not a dead letter is refused, with a message that says where to look.
    let error = ledger.requeue(&ledger_key("job-0")).unwrap_err();
    assert!(matches!(error, Error::NotADeadLetter(_)));
    assert!(
        error.to_string().contains("Ledger::dead_letters"),
        "{error}"
    );
    // Re-queued: pending again, due at once, and delivered once the receiver takes it.
    ledger.requeue(&letter.message.key).unwrap();
    assert_eq!(ledger.dead_letters().count(), 0);
    drop(ledger);
    let mut ledger = open();
    assert_eq!(ledger.outbox().count(), 1);
    let mut accepting = Scripted::new(|_: &StatusMessage| Reply::Accept);
    assert_eq!(ledger.deliver(&mut accepting).unwrap().delivered, 1);
    // Discarded: gone for good, and returned to the caller.
    with_messages(&mut ledger, &["job-9".to_string()]);
    let mut refusing = Scripted::new(|_: &StatusMessage| Reply::Reject("410 gone"));
    ledger.deliver(&mut refusing).unwrap();
    let discarded = ledger.discard(&ledger_key("job-9")).unwrap();
    assert_eq!(discarded.message.key, ledger_key("job-9"));
    assert!(matches!(
        ledger.discard(&ledger_key("job-9")),
        Err(Error::NotADeadLetter(_))
    ));
    drop(ledger);
    let ledger = open();
    assert_eq!(
        (ledger.outbox().count(), ledger.dead_letters().count()),
        (0, 0)
    );
}

// Invariant 5: each terminal state yields exactly one message, ever: its key cannot enter the
// outbox again while it is a dead letter.
#[test]
fn a_dead_letter_key_is_never_reported_again() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 1));
    ledger
        .deliver(&mut Scripted::new(|_: &StatusMessage| Reply::Reject("no")))
        .unwrap();
    let letter = ledger.dead_letters().next().unwrap().clone();
    let mut replay = Replay::default();
    for record in store.records() {
        replay
            .apply(jobstate::codec::decode(&record).unwrap())
            .unwrap();
    }
    let again = Record::Report(letter.message.clone());
    assert!(matches!(
        replay.apply(again),
        Err(jobstate::store::ReplayError::DuplicateReport { .. })
    ));
    let commit = jobstate::store::Commit::new(jobstate::store::Revision(0), Vec::new())
        .with_reports(vec![letter.message.clone()]);
    assert!(replay.check(&commit).is_err());
}

#[test]
fn retry_after_is_honoured_up_to_the_longest_back_off() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 1));
    let mut soon = Scripted::new(|_: &StatusMessage| Reply::RetryAfter(Duration::from_secs(45)));
    let delivery = ledger.deliver(&mut soon).unwrap();
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 45);
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(45)));
    // Not offered before then.
    ledger.session_mut().now = t0() + TimeDelta::seconds(44);
    assert_eq!(ledger.deliver(&mut soon).unwrap().retrying, 0);
    ledger.session_mut().now = t0() + TimeDelta::seconds(45);
    let mut far =
        Scripted::new(|_: &StatusMessage| Reply::RetryAfter(Duration::from_secs(864_000)));
    let delivery = ledger.deliver(&mut far).unwrap();
    assert_eq!(delivery.retrying, 1);
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 30 * 60);
}

#[test]
fn a_message_failing_past_the_age_bound_is_given_up_on() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 1));
    ledger.set_delivery_policy(DeliveryPolicy {
        give_up_after_attempts: None,
        give_up_after_age: Some(Duration::from_secs(3600)),
        ..DeliveryPolicy::default()
    });
    let mut failing = Scripted::new(|_: &StatusMessage| Reply::Retry("HTTP 502"));
    ledger.session_mut().now = t0() + minutes(59);
    assert_eq!(ledger.deliver(&mut failing).unwrap().retrying, 1);
    ledger.session_mut().now = t0() + minutes(61);
    let delivery = ledger.deliver(&mut failing).unwrap();
    assert_eq!((delivery.retrying, delivery.dead_lettered), (0, 1));
    assert_eq!(ledger.dead_letters().next().unwrap().note.attempts, 2);
}

// A pause (the receiver unreachable or overloaded) counts against no message and holds every
// message; an answered retry counts.
#[test]
fn a_pause_counts_against_no_message_and_holds_them_all() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 3));
    ledger.set_delivery_policy(DeliveryPolicy {
        give_up_after_attempts: Some(2),
        ..DeliveryPolicy::default()
    });
    let mut step = 0;
    for round in 0..5 {
        let mut busy =
            Scripted::new(|_: &StatusMessage| Reply::Pause(Some(Duration::from_secs(120))));
        let delivery = ledger.deliver(&mut busy).unwrap();
        assert_eq!(
            (delivery.retrying, delivery.dead_lettered, delivery.pending),
            (0, 0, 3),
            "round {round}"
        );
        assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 120);
        assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(120)));
        assert!(
            ledger.take_batch(10).is_empty(),
            "nothing is due in a pause"
        );
        step += 2;
        ledger.session_mut().now = t0() + minutes(step);
    }
    // A sink error is a pause too, with the sink's own error handed back whole.
    let mut down = Scripted::new(|_: &StatusMessage| Reply::Unreachable);
    let delivery = ledger.deliver(&mut down).unwrap();
    let failure = delivery.failure.expect("the sink's error");
    assert_eq!(failure.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(delivery.pending, 3);
    // Pauses double while they follow one another: the sixth lasts 30 s × 2^5.
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 960);
    ledger.session_mut().now = t0() + minutes(step) + TimeDelta::seconds(960);
    // Now one answered retry each: with a bound of 2, none is given up on yet...
    let mut failing = Scripted::new(|_: &StatusMessage| Reply::Retry("HTTP 500"));
    let delivery = ledger.deliver(&mut failing).unwrap();
    assert_eq!((delivery.retrying, delivery.dead_lettered), (3, 0));
    // ...the second makes the bound.
    ledger.session_mut().now += TimeDelta::seconds(60);
    let delivery = ledger.deliver(&mut failing).unwrap();
    assert_eq!((delivery.retrying, delivery.dead_lettered), (0, 3));
}

#[test]
fn the_pull_api_leases_what_it_hands_out_and_takes_answers_later() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 5));
    let first = ledger.take_batch(2);
    let second = ledger.take_batch(10);
    assert_eq!((first.len(), second.len()), (2, 3));
    assert!(ledger.take_batch(10).is_empty(), "all five are leased");
    assert_eq!(ledger.next_wakeup(), Some(Duration::from_secs(600)));
    // The second batch's answer comes first (an async client), partly.
    let mut answers = Answers::for_batch(&second);
    answers.accept(&second[0].key);
    answers.reject(&second[1].key, "400 bad request");
    answers.retry_after(&second[2].key, Duration::from_secs(5), "HTTP 503");
    let answered = ledger.answer(answers.clone()).unwrap();
    assert_eq!(
        (
            answered.delivered,
            answered.dead_lettered,
            answered.retrying,
            answered.stale
        ),
        (1, 1, 1, 0)
    );
    // The same answers again change nothing.
    let again = ledger.answer(answers).unwrap();
    assert_eq!((again.delivered, again.stale), (0, 2));
    // The first batch was never answered (the future was dropped): after the lease, it is due
    // again, as is the retried message after its 5 s.
    ledger.session_mut().now = t0() + TimeDelta::seconds(599);
    assert_eq!(ledger.take_batch(10).len(), 1);
    ledger.session_mut().now = t0() + TimeDelta::seconds(600);
    let retaken = ledger.take_batch(10);
    let keys: Vec<_> = retaken.iter().map(|m| m.key.clone()).collect();
    assert_eq!(
        keys,
        first.iter().map(|m| m.key.clone()).collect::<Vec<_>>()
    );
    let mut answers = Answers::for_batch(&retaken);
    answers.accept_all();
    assert_eq!(ledger.answer(answers).unwrap().delivered, 2);
    assert_eq!(ledger.outbox().count(), 1, "the retried one");
}

// A clock set back far (a dead RTC battery) must not hold a back-off, a lease or a pause for
// years: a wait longer than its longest possible length is over.
#[test]
fn a_clock_set_back_ends_every_wait() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &names("job", 3));
    let taken = ledger.take_batch(1);
    assert_eq!(taken.len(), 1);
    let mut failing = Scripted::new(|_: &StatusMessage| Reply::Retry("HTTP 500"));
    ledger.deliver(&mut failing).unwrap();
    ledger.session_mut().now = t0() - TimeDelta::days(365 * 5);
    assert_eq!(ledger.take_batch(10).len(), 3);
}

/// An agent that delivers with its own client follows the documented recipe of
/// `Ledger::take_batch`: take a batch, answer it, then sleep for `next_wakeup`. Two status
/// messages are pending; it takes a batch of one (the recipe's 64, with 65 pending, is the
/// same), the receiver stores it. The other message is due now, yet `next_wakeup` says to sleep
/// until the running job's run-time limit, two hours away (`Schedule::next_due` returns `None`
/// as soon as one message is due at once, so delivery drops out of the minimum). DESIGN: "when
/// the ledger next needs to be called (the earliest ... delivery retry), so that an agent sleeps
/// instead of polling": never a sleep past what is due.
#[test]
fn next_wakeup_is_now_while_a_message_is_due_now() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["one", "two"]);
    let long = msi_job(job("long")).with_max_run_time(Duration::from_secs(2 * 3600));
    ledger.offer(long.clone()).unwrap();
    let attempt = ledger.begin(long.id()).unwrap();
    let _effects = ledger
        .launched(&attempt, jobstate::ProgramId::new(4242, 7))
        .unwrap();
    let batch = ledger.take_batch(1);
    assert_eq!(batch.len(), 1);
    let mut answers = jobstate::report::Answers::for_batch(&batch);
    answers.accept(&batch[0].key);
    ledger.answer(answers).unwrap();
    assert_eq!(
        ledger.outbox().count(),
        1,
        "one message left, never offered: due now"
    );
    assert_eq!(
        ledger.next_wakeup(),
        Some(Duration::ZERO),
        "a message due now, and the agent is told to sleep"
    );
}

/// `next_wakeup` is zero while a message is due and the sink is not paused. A receiver that
/// answers 503 with `Retry-After: 0` (or an HTTP date not after its `Date`: `HttpSink` maps both
/// to `Answers::pause(Some(ZERO))`) would pause the sink until now: the message due again at
/// once, `next_wakeup` zero, the agent (examples/agent.rs: deliver, tick, sleep `next_wakeup`
/// clamped to at least 10 ms) offering it again about 100 times a second, for ever (pauses have
/// no give-up bound). A wait under a second is no wait: the policy's back-off applies.
///
/// DESIGN.md, "Every wait is named and bounded or visible": "... so that an agent sleeps instead
/// of polling"; "Status reporting": "a delivery failure is retried later".
#[test]
fn a_zero_pause_asked_by_the_receiver_does_not_make_next_wakeup_spin() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["one"]);
    let mut sink = answering(Reply::Pause(Some(Duration::ZERO)));
    let mut offered = 0;
    let start = ledger.session().now;
    // One simulated minute of the documented agent loop.
    while ledger.session().now - start < chrono::TimeDelta::seconds(60) {
        let before = ledger.outbox().count();
        let _delivery = ledger.deliver(&mut sink).unwrap();
        offered += before.min(1);
        let _effects = ledger.tick().unwrap();
        let sleep = ledger
            .next_wakeup()
            .unwrap_or(Duration::from_secs(60))
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        ledger.session_mut().now += chrono::TimeDelta::from_std(sleep).unwrap();
        ledger.session_mut().since_boot += sleep;
    }
    assert!(
        offered <= 10,
        "the paused sink was offered the message {offered} times in one minute: next_wakeup \
         says zero after every zero pause"
    );
}

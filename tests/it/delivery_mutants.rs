//! Tests that kill the mutants cargo-mutants found surviving in the delivery core:
//! `src/report/delivery.rs`, `src/ledger/reporting.rs`, `src/report/dead_letter.rs` and `src/store/replay.rs`.
//! Each pins one rule of SEMANTICS.md "Status reporting" (or invariant 5) that no other test
//! checked closely enough for a broken core to fail it. The command:
//!
//! ```text
//! CARGO_PROFILE_TEST_DEBUG=0 CARGO_PROFILE_DEV_DEBUG=0 \
//! cargo mutants --test-tool nextest --all-features --jobs 2 --timeout 300 \
//!   --file src/report/delivery.rs --file src/ledger/reporting.rs \
//!   --file src/report/dead_letter.rs --file src/store/replay.rs \
//!   -- --test it --max-fail=1:immediate \
//!   -- --skip file_store --skip conformance --skip linux_session --skip inspect --skip exhaustive
//! ```

use std::time::Duration;

use chrono::TimeDelta;
use jobstate::report::{Answer, Answers, DeadLetterReason, DeliveryPolicy};
use jobstate::store::{Commit, Replay, ReplayError, Revision};
use jobstate::{Ledger, MemoryStore, StatusKey, StatusMessage};

use crate::common::*;

fn keys<'a>(messages: impl IntoIterator<Item = &'a StatusMessage>) -> Vec<StatusKey> {
    messages.into_iter().map(|m| m.key.clone()).collect()
}

// SEMANTICS.md "Status reporting": "A sink delivers messages at least once". A sink handed over by
// mutable reference (`&mut S`, as an agent that keeps its client does) delivers as the sink
// itself does.
#[test]
fn a_sink_borrowed_mutably_delivers_as_the_sink_itself() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["a", "b"]);
    let mut collect = Collect::default();
    let mut borrowed: &mut Collect = &mut collect;
    let delivery = ledger.deliver(&mut borrowed).unwrap();
    assert_eq!(
        (delivery.delivered, delivery.retrying, delivery.pending),
        (2, 0, 0)
    );
    assert_eq!(collect.0.len(), 2);
}

// SEMANTICS.md "Status reporting": "The sink answers for each message" — once: the first answer
// for a key counts, a later one for the same key and one for a key never offered are ignored.
#[test]
fn the_first_answer_for_a_key_counts_and_keys_not_offered_are_ignored() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["a", "b"]);
    let batch = ledger.take_batch(1);
    assert_eq!(batch.len(), 1);
    let offered = batch[0].key.clone();
    let other = ledger.outbox().nth(1).unwrap().key.clone();
    let mut answers = Answers::for_batch(&batch);
    assert!(answers.answer(&offered, Answer::Accepted));
    assert!(!answers.answer(
        &offered,
        Answer::Rejected {
            reason: "too late".into()
        }
    ));
    answers.reject(&offered, "too late");
    assert_eq!(answers.get(&offered), Some(&Answer::Accepted));
    assert!(!answers.answer(&other, Answer::Accepted));
    assert_eq!(answers.get(&other), None);
    let answered = ledger.answer(answers).unwrap();
    assert_eq!((answered.delivered, answered.dead_lettered), (1, 0));
    assert_eq!(ledger.dead_letters().count(), 0);
    assert_eq!(keys(ledger.outbox()), vec![other]);
}

// SEMANTICS.md "Status reporting": the answers for a batch say per message what the receiver did,
// and whether it asked for a pause; an agent with its own client reads them back.
#[test]
fn answers_show_what_is_unanswered_and_whether_a_pause_was_asked_for() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["a", "b", "c"]);
    let batch = ledger.take_batch(10);
    let all = keys(&batch);
    let mut answers = Answers::for_batch(&batch);
    assert_eq!(answers.offered(), &all[..]);
    assert_eq!(answers.unanswered().cloned().collect::<Vec<_>>(), all);
    assert!(!answers.is_paused());
    answers.accept(&all[1]);
    assert_eq!(
        answers.unanswered().cloned().collect::<Vec<_>>(),
        vec![all[0].clone(), all[2].clone()]
    );
    answers.pause(Some(Duration::from_secs(90)));
    assert!(answers.is_paused());
    // The first pause asked for counts.
    answers.pause(None);
    let answered = ledger.answer(answers).unwrap();
    assert_eq!(answered.delivered, 1);
    assert_eq!(
        seconds_until(&ledger, answered.paused_until.unwrap()),
        90,
        "the first pause's wait"
    );
}

// SEMANTICS.md "Status reporting": a delivery failure is retried later. A message the sink left
// unanswered without a pause is a failed delivery: it backs off like a retry and counts toward
// the give-up bound, then it is kept as a dead letter.
#[test]
fn a_message_left_unanswered_backs_off_like_a_retry_and_counts_toward_the_bound() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.set_delivery_policy(DeliveryPolicy {
        give_up_after_attempts: Some(2),
        ..DeliveryPolicy::default()
    });
    with_messages(&mut ledger, &["a"]);
    let delivery = ledger.deliver(&mut answering(Reply::Silent)).unwrap();
    assert_eq!(
        (delivery.retrying, delivery.dead_lettered, delivery.pending),
        (1, 0, 1)
    );
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 30);
    assert!(ledger.take_batch(10).is_empty(), "it backs off");
    ledger.session_mut().now = t0() + TimeDelta::seconds(30);
    let delivery = ledger.deliver(&mut answering(Reply::Silent)).unwrap();
    assert_eq!(
        (delivery.retrying, delivery.dead_lettered, delivery.pending),
        (0, 1, 0)
    );
    let letter = ledger.dead_letters().next().unwrap();
    assert_eq!(letter.note.attempts, 2);
    assert_eq!(
        letter.note.reason,
        DeadLetterReason::GaveUp {
            last_failure: "the sink gave no answer".into()
        }
    );
}

// SEMANTICS.md "Status reporting": a message given up on is kept until an explicit call; re-queued
// (the receiver was fixed), it is due at once with its failure count reset — in the same agent
// session, not only after a restart.
#[test]
fn a_requeued_dead_letter_is_due_at_once_with_its_failure_count_reset() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    ledger.set_delivery_policy(DeliveryPolicy {
        give_up_after_attempts: Some(2),
        ..DeliveryPolicy::default()
    });
    with_messages(&mut ledger, &["gave-up", "rejected"]);
    let gave_up = ledger.outbox().next().unwrap().key.clone();
    let rejected = ledger.outbox().nth(1).unwrap().key.clone();
    // "gave-up" fails twice; "rejected" is refused at once.
    let batch = ledger.take_batch(10);
    let mut answers = Answers::for_batch(&batch);
    answers.retry(&gave_up, "HTTP 500");
    answers.reject(&rejected, "HTTP 410");
    ledger.answer(answers).unwrap();
    ledger.session_mut().now = t0() + TimeDelta::seconds(30);
    assert_eq!(
        ledger
            .deliver(&mut answering(Reply::Retry("HTTP 500")))
            .unwrap()
            .dead_lettered,
        1
    );
    assert_eq!(ledger.dead_letters().count(), 2);
    ledger.requeue(&gave_up).unwrap();
    ledger.requeue(&rejected).unwrap();
    // Due at once: no back-off, no lease left over.
    assert_eq!(
        keys(&ledger.take_batch(10)),
        vec![gave_up.clone(), rejected]
    );
    // Counted from 0 again: one failure is not the bound of 2.
    ledger.session_mut().now += TimeDelta::seconds(600);
    let delivery = ledger
        .deliver(&mut answering(Reply::Retry("HTTP 500")))
        .unwrap();
    assert_eq!((delivery.retrying, delivery.dead_lettered), (2, 0));
}

// SEMANTICS.md "Status reporting" (`Answers::pause`): the sink's back-off doubles while pauses
// follow one another; once the receiver answers, the next pause starts from the first back-off
// again.
#[test]
fn a_pause_after_the_receiver_answered_starts_from_the_first_back_off() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["a"]);
    let delivery = ledger.deliver(&mut answering(Reply::Unreachable)).unwrap();
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 30);
    ledger.session_mut().now = t0() + TimeDelta::seconds(30);
    let delivery = ledger.deliver(&mut answering(Reply::Unreachable)).unwrap();
    assert_eq!(
        seconds_until(&ledger, delivery.retry_at.unwrap()),
        60,
        "pauses in a row double"
    );
    ledger.session_mut().now = t0() + TimeDelta::seconds(90);
    assert_eq!(
        ledger
            .deliver(&mut answering(Reply::Accept))
            .unwrap()
            .delivered,
        1
    );
    with_messages(&mut ledger, &["b"]);
    let delivery = ledger.deliver(&mut answering(Reply::Unreachable)).unwrap();
    assert_eq!(seconds_until(&ledger, delivery.retry_at.unwrap()), 30);
}

// SEMANTICS.md "Status reporting": "a message given up on is kept, visible, never silently
// dropped": every one of several dead letters is kept, in the order given up on, in the ledger
// and in what the store's records replay to.
#[test]
fn every_dead_letter_is_kept_in_the_order_given_up_on() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["a", "b", "c"]);
    let pending = keys(ledger.outbox());
    let delivery = ledger
        .deliver(&mut answering(Reply::Reject("HTTP 410")))
        .unwrap();
    assert_eq!(delivery.dead_lettered, 3);
    let dead: Vec<StatusKey> = ledger
        .dead_letters()
        .map(|l| l.message.key.clone())
        .collect();
    assert_eq!(dead, pending);
    let mut replay = Replay::default();
    assert!(replay.dead_letters().is_empty());
    assert_eq!(replay.dead_letters().len(), 0);
    for record in store.records() {
        replay
            .apply(jobstate::codec::decode(&record).unwrap())
            .unwrap();
    }
    assert!(!replay.dead_letters().is_empty());
    assert_eq!(replay.dead_letters().len(), 3);
    assert_eq!(
        keys(replay.dead_letters().iter().map(|l| &l.message)),
        pending
    );
}

// Invariant 5 and SEMANTICS.md "Status reporting": a dead letter leaves only by an explicit
// re-queue or discard of that very letter; a commit that re-queues or discards a key that is
// not a dead letter does not follow on, and a store refuses it before writing anything.
#[test]
fn a_commit_requeuing_or_discarding_a_key_that_is_no_dead_letter_is_refused() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["pending"]);
    let pending = ledger.outbox().next().unwrap().key.clone();
    let mut replay = Replay::default();
    for record in store.records() {
        replay
            .apply(jobstate::codec::decode(&record).unwrap())
            .unwrap();
    }
    let requeue = Commit::new(Revision(0), Vec::new()).with_requeued(vec![pending.clone()]);
    assert!(matches!(
        replay.check(&requeue),
        Err(ReplayError::UnknownDeadLetter { .. })
    ));
    let discard = Commit::new(Revision(0), Vec::new()).with_discarded(vec![pending]);
    assert!(matches!(
        replay.check(&discard),
        Err(ReplayError::UnknownDeadLetter { .. })
    ));
}

// Invariant 6 and the `Store` trait's rules: `Replay::apply_commit`, what a custom store calls
// to keep its state, applies a commit that follows on whole, and refuses one that does not
// without changing anything.
#[test]
fn apply_commit_applies_a_commit_whole_or_refuses_it_changing_nothing() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["first", "second"]);
    let keys: Vec<StatusKey> = ledger.outbox().map(|m| m.key.clone()).collect();
    let mut replay = Replay::default();
    for record in store.records() {
        replay
            .apply(jobstate::codec::decode(&record).unwrap())
            .unwrap();
    }
    // An acknowledgement of a pending key and of one that is not: refused, nothing applied.
    let mut stranger = keys[0].clone();
    stranger.run += 9;
    let bad = Commit::new(Revision(0), Vec::new()).with_delivered(vec![keys[0].clone(), stranger]);
    assert!(matches!(
        replay.apply_commit(&bad),
        Err(ReplayError::UnknownReport { .. })
    ));
    assert_eq!(
        replay.outbox().len(),
        2,
        "a refused commit changed the outbox"
    );
    // A commit that follows on: applied whole.
    let good = Commit::new(Revision(0), Vec::new()).with_delivered(vec![keys[0].clone()]);
    replay.apply_commit(&good).unwrap();
    let left: Vec<&StatusKey> = replay.outbox().iter().map(|m| &m.key).collect();
    assert_eq!(left, [&keys[1]]);
}

// Invariant 6, and the rule that a key is reported once: a commit that names one status key
// twice, or gives one job's change twice, is refused, in a commit of a few keys (compared one by
// one) and of many (more than 16: through a map), with the repeat first, in the middle or last.
#[test]
fn a_commit_that_names_a_key_or_a_change_twice_is_refused_whatever_its_size() {
    for n in [2, 16, 17, 40] {
        let store = MemoryStore::new();
        let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("job-{i}")).collect();
        with_messages(&mut ledger, &names);
        let messages: Vec<StatusMessage> = ledger.outbox().cloned().collect();
        let records: Vec<jobstate::store::Record> = store
            .records()
            .iter()
            .map(|r| jobstate::codec::decode(r).unwrap())
            .collect();
        // Every job's changes, in commit order: offered (seq 1), cancelled (seq 2).
        let changes: Vec<jobstate::store::Change> = records
            .iter()
            .filter_map(|r| match r {
                jobstate::store::Record::Change(c) => Some((**c).clone()),
                _ => None,
            })
            .collect();
        assert_eq!(changes.len(), 2 * n);
        let (created, cancelled): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.seq == 1);
        let empty = Replay::default();
        // All jobs created, then each cancelled, in one commit: each job's second change
        // follows on from its first in the same commit.
        let both: Vec<_> = created.iter().chain(&cancelled).cloned().collect();
        empty
            .check(&Commit::new(Revision(0), both.clone()).with_reports(messages.clone()))
            .unwrap_or_else(|e| panic!("{n} jobs created and cancelled in one commit: {e}"));
        for repeat in [0, n / 2, n - 1] {
            // The job's creation given again after all of them, or its cancellation after all.
            for (what, mut changes, again) in [
                ("created", created.clone(), &created[repeat]),
                ("cancelled", both.clone(), &cancelled[repeat]),
            ] {
                changes.push(again.clone());
                assert!(
                    matches!(
                        empty.check(&Commit::new(Revision(0), changes)),
                        Err(ReplayError::OutOfSequence { .. })
                    ),
                    "job {repeat} of {n} {what} twice in one commit"
                );
            }
        }
        // The ledger's own state: every message pending.
        let mut replay = Replay::default();
        for record in records {
            replay.apply(record).unwrap();
        }
        let pending = keys(&messages);
        for repeat in [0, n / 2, n - 1] {
            let mut reports: Vec<StatusMessage> = messages
                .iter()
                .map(|m| {
                    let mut fresh = m.clone();
                    fresh.key.run += 1;
                    fresh
                })
                .collect();
            replay
                .check(&Commit::new(Revision(0), Vec::new()).with_reports(reports.clone()))
                .unwrap_or_else(|e| panic!("{n} new reports: {e}"));
            reports.push(reports[repeat].clone());
            assert!(
                matches!(
                    replay.check(&Commit::new(Revision(0), Vec::new()).with_reports(reports)),
                    Err(ReplayError::DuplicateReport { .. })
                ),
                "report {repeat} of {n} given twice"
            );
            let mut delivered = pending.clone();
            delivered.push(pending[repeat].clone());
            assert!(
                matches!(
                    replay.check(&Commit::new(Revision(0), Vec::new()).with_delivered(delivered)),
                    Err(ReplayError::UnknownReport { .. })
                ),
                "key {repeat} of {n} acknowledged twice"
            );
        }
        replay
            .check(&Commit::new(Revision(0), Vec::new()).with_delivered(pending))
            .unwrap_or_else(|e| panic!("all {n} pending keys acknowledged at once: {e}"));
    }
}

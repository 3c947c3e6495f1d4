//! How status messages leave the outbox: the sink trait and its per-message [`Answers`], the
//! delivery policy, and the schedule of retries. The schedule is pure and in memory: time comes
//! in as arguments, and a restart forgets it (every pending message is due again at once).

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::core::Timestamp;
use crate::core::effect::{StatusKey, StatusMessage};
use crate::report::outbox::Outbox;

/// Where status messages go: the agent's connection to its site server.
///
/// The sink answers for each message of a batch through `answers`: accepted (durably, on the
/// receiver's side), retry (optionally not before a time), or rejected for good. A message left
/// unanswered is retried with a back-off, like a retry. Returning `Err` says the receiver could
/// not be reached: the answers given so far stand, the messages not answered yet are neither
/// failed nor counted, and nothing is offered again before a back-off for the whole sink (as
/// [`Answers::unreachable`], which also says how a message on which the connection breaks each
/// time is kept from holding back the others).
///
/// Delivery is at least once: a message may be handed over again after a crash between the
/// receiver's acceptance and the ledger's commit of it. Receivers drop duplicates by
/// [`StatusMessage::key`].
///
/// ```
/// use jobstate::{StatusKey, StatusMessage};
/// use jobstate::report::{Answers, StatusSink};
///
/// /// A sink that keeps what it receives, dropping duplicates by key, and refuses messages
/// /// about one job for good.
/// #[derive(Default)]
/// struct Receiver(std::collections::BTreeMap<StatusKey, StatusMessage>);
///
/// impl StatusSink for Receiver {
///     type Error = std::convert::Infallible;
///     fn deliver(&mut self, batch: &[StatusMessage], answers: &mut Answers) -> Result<(), Self::Error> {
///         for message in batch {
///             if message.key.job.as_str() == "retired" {
///                 answers.reject(&message.key, "this deployment was aborted");
///                 continue;
///             }
///             self.0.entry(message.key.clone()).or_insert_with(|| message.clone());
///             answers.accept(&message.key);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait StatusSink {
    /// Why the receiver could not be reached (a network error, a full disk). It is handed back
    /// in [`Delivery::failure`], whole.
    type Error: std::fmt::Display;

    /// Delivers `batch` and answers for its messages in `answers`.
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error>;
}

impl<S: StatusSink + ?Sized> StatusSink for &mut S {
    type Error = S::Error;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        (**self).deliver(batch, answers)
    }
}

/// A receiver's answer for one status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver has it, durably: it leaves the outbox.
    Accepted,
    /// Not now: offer it again after `after` (HTTP `Retry-After`, at most the policy's longest
    /// back-off) or, without one, after the policy's back-off for its failure count. Each retry
    /// counts toward the give-up bound.
    Retry {
        /// The receiver's wait, if it named one.
        after: Option<Duration>,
        /// Why (kept in the dead letter if delivery gives up on it).
        reason: String,
    },
    /// Never again (an HTTP 4xx that will not change): it moves to the dead letters at once.
    Rejected {
        /// Why (kept in the dead letter).
        reason: String,
    },
}

/// The answers for one batch of status messages: what a [`StatusSink`] fills in, or what an
/// agent that delivers with its own client hands to [`Ledger::answer`](crate::Ledger::answer).
///
/// The first answer for a key counts; answers for keys that were not offered are ignored.
///
/// ```
/// use std::time::Duration;
/// use jobstate::report::{Answer, Answers};
/// # let batch: Vec<jobstate::StatusMessage> = Vec::new();
/// let mut answers = Answers::for_batch(&batch);
/// for message in &batch {
///     match message.key.overdue {
///         0 => answers.accept(&message.key),
///         _ => answers.retry_after(&message.key, Duration::from_secs(30), "HTTP 503"),
///     }
/// }
/// assert_eq!(answers.unanswered().count(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answers {
    offered: Vec<StatusKey>,
    given: FxHashMap<StatusKey, Answer>,
    pause: Option<Option<Duration>>,
    /// The pause came from a transport failure (the connection broke, timed out, was refused),
    /// not from the receiver's own "busy".
    unreachable: bool,
}

impl Answers {
    /// No answers yet for the messages of `batch`.
    pub fn for_batch(batch: &[StatusMessage]) -> Self {
        Self {
            offered: batch.iter().map(|m| m.key.clone()).collect(),
            given: FxHashMap::default(),
            pause: None,
            unreachable: false,
        }
    }

    /// Answers `answer` for `key`, if `key` was offered and not answered yet; says whether it
    /// counted.
    pub fn answer(&mut self, key: &StatusKey, answer: Answer) -> bool {
        if self.given.contains_key(key) || !self.offered.contains(key) {
            return false;
        }
        self.given.insert(key.clone(), answer);
        true
    }

    /// The receiver has the message with this key, durably.
    pub fn accept(&mut self, key: &StatusKey) {
        self.answer(key, Answer::Accepted);
    }

    /// Every message not answered yet was accepted.
    pub fn accept_all(&mut self) {
        for key in &self.offered {
            self.given.entry(key.clone()).or_insert(Answer::Accepted);
        }
    }

    /// Offer the message again after the policy's back-off.
    pub fn retry(&mut self, key: &StatusKey, reason: impl Into<String>) {
        let reason = reason.into();
        self.answer(
            key,
            Answer::Retry {
                after: None,
                reason,
            },
        );
    }

    /// Offer the message again after `after` (at most the policy's longest back-off).
    pub fn retry_after(&mut self, key: &StatusKey, after: Duration, reason: impl Into<String>) {
        let reason = reason.into();
        self.answer(
            key,
            Answer::Retry {
                after: Some(after),
                reason,
            },
        );
    }

    /// Never offer the message again: it moves to the dead letters.
    pub fn reject(&mut self, key: &StatusKey, reason: impl Into<String>) {
        let reason = reason.into();
        self.answer(key, Answer::Rejected { reason });
    }

    /// The receiver cannot take messages now (overloaded, as HTTP 429 or 503 say): the messages
    /// not answered yet are neither failed nor counted, and nothing is offered before `after`
    /// (at most the policy's longest back-off) or, without one, the policy's back-off, which
    /// doubles while pauses follow one another. A pause without `after` also makes the first
    /// message not answered (the one in flight) a suspect: it is offered after the other due
    /// messages from then on.
    pub fn pause(&mut self, after: Option<Duration>) {
        self.pause.get_or_insert(after);
    }

    /// The receiver could not be reached while this batch was offered (the connection was
    /// refused, broke or timed out): a [`pause`](Answers::pause) without a time, as a sink's
    /// `Err` is. The message in flight becomes a suspect, offered after the others; if the
    /// connection breaks on it again once the receiver has answered another message since, the
    /// failure is that message's own (a collector that drops the connection on that one
    /// message): it backs off on its own and counts toward the give-up bound on attempts, so
    /// that it never holds the others back. A receiver that is down counts against none.
    pub fn unreachable(&mut self) {
        self.pause(None);
        self.unreachable = true;
    }

    /// Whether [`pause`](Answers::pause) was asked for.
    pub fn is_paused(&self) -> bool {
        self.pause.is_some()
    }

    /// The answer for `key`, if one was given.
    pub fn get(&self, key: &StatusKey) -> Option<&Answer> {
        self.given.get(key)
    }

    /// The keys offered, in the batch's order.
    pub fn offered(&self) -> &[StatusKey] {
        &self.offered
    }

    /// The keys offered and not answered, in the batch's order.
    pub fn unanswered(&self) -> impl Iterator<Item = &StatusKey> {
        self.offered.iter().filter(|k| !self.given.contains_key(*k))
    }

    /// The pause asked for: `Some(after)` if one was.
    pub(crate) fn pause_asked(&self) -> Option<Option<Duration>> {
        self.pause
    }

    /// Whether the pause came from a transport failure ([`unreachable`](Answers::unreachable)).
    pub(crate) fn was_unreachable(&self) -> bool {
        self.unreachable
    }
}

/// How the ledger delivers: batch size, back-off, give-up bounds.
///
/// ```
/// use std::time::Duration;
/// use jobstate::report::DeliveryPolicy;
/// let policy = DeliveryPolicy {
///     give_up_after_attempts: Some(5),
///     ..DeliveryPolicy::default()
/// };
/// assert_eq!(policy.backoff(1), Duration::from_secs(30));
/// assert_eq!(policy.backoff(3), Duration::from_secs(120));
/// assert_eq!(policy.backoff(30), Duration::from_secs(30 * 60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Messages handed to the sink at once (at least 1).
    pub batch_size: usize,
    /// The wait after a message's first failed delivery (or the sink's first pause); it
    /// doubles with each further failure of that message (or pause of the sink).
    pub initial_backoff: Duration,
    /// The longest wait, also the most a receiver's `Retry-After` is honoured.
    pub max_backoff: Duration,
    /// Give up on a message (move it to the dead letters) after this many failed deliveries
    /// since the agent started. `None`: never on attempts.
    pub give_up_after_attempts: Option<u32>,
    /// Give up on a message that fails while older than this (from the transition it reports,
    /// by the session's wall clock). `None`: never on age.
    pub give_up_after_age: Option<Duration>,
    /// How long a message taken by [`Ledger::take_batch`](crate::Ledger::take_batch) is not
    /// offered again while its answer is awaited.
    pub lease: Duration,
}

impl Default for DeliveryPolicy {
    /// Batches of 64; waits of 30 s, doubling to at most 30 min; give up after 20 failures
    /// (about 7 hours of waits) or at a failure 7 days after the transition; leases of 10 min.
    fn default() -> Self {
        Self {
            batch_size: 64,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
            give_up_after_attempts: Some(20),
            give_up_after_age: Some(Duration::from_secs(7 * 24 * 3600)),
            lease: Duration::from_secs(10 * 60),
        }
    }
}

impl DeliveryPolicy {
    /// The wait after `failures` consecutive failed deliveries (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait a receiver asked for, or the back-off for `failures`; never longer than the
    /// longest back-off. A wait of less than a second (`Retry-After: 0`, a date not after the
    /// answer's) is no wait: the back-off applies, or the agent would offer again at once, for
    /// ever (a sink's pauses have no give-up bound).
    fn wait(&self, after: Option<Duration>, failures: u32) -> Duration {
        after
            .filter(|wait| *wait >= Duration::from_secs(1))
            .unwrap_or_else(|| self.backoff(failures))
            .min(self.max_backoff)
    }

    /// Whether a message reported at `reported` that failed `failures` times by `now` is past
    /// the give-up bound.
    fn gives_up(&self, failures: u32, reported: Timestamp, now: Timestamp) -> bool {
        let attempts = self.give_up_after_attempts.is_some_and(|n| failures >= n);
        let age = (now - reported).to_std().unwrap_or(Duration::ZERO);
        attempts || self.give_up_after_age.is_some_and(|bound| age >= bound)
    }
}

/// What one call of [`Ledger::deliver`](crate::Ledger::deliver) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery<E> {
    /// Messages the receiver accepted and the ledger pruned, in this call.
    pub delivered: usize,
    /// Messages answered "retry" (or not answered), in this call.
    pub retrying: usize,
    /// Messages moved to the dead letters, in this call.
    pub dead_lettered: usize,
    /// Messages still pending.
    pub pending: usize,
    /// The sink's error, if the receiver could not be reached.
    pub failure: Option<E>,
    /// When a pending message is next due, if none is due now (every one is backing off,
    /// leased, or the sink is paused).
    pub retry_at: Option<Timestamp>,
}

/// What [`Ledger::answer`](crate::Ledger::answer) did with a batch's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Answered {
    /// Messages accepted: they left the outbox.
    pub delivered: usize,
    /// Messages to offer again after a back-off.
    pub retrying: usize,
    /// Messages moved to the dead letters.
    pub dead_lettered: usize,
    /// Offered messages no longer pending (answered before, or given up on): nothing changed.
    pub stale: usize,
    /// When the sink's pause ends, if it was paused.
    pub paused_until: Option<Timestamp>,
}

/// One pending message's delivery state.
#[derive(Debug, Clone, Default)]
struct MessageState {
    /// Failed deliveries since the agent started.
    failures: u32,
    /// Not offered before this time (a back-off).
    not_before: Option<Timestamp>,
    /// Taken, its answer awaited, until this time.
    leased_until: Option<Timestamp>,
    /// It was the message in flight when the sink paused (a transport error, no answer), as
    /// the receiver's [`Schedule::heard`] count stood then. It is offered after the other due
    /// messages; if the sink fails on it again once the receiver has answered another message
    /// since, the failure is its own (a message that breaks the receiver's connection), not the
    /// receiver's, and counts toward the give-up bound.
    suspect_since: Option<u64>,
}

/// When each pending message may be offered again, and when the sink may: in memory only.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    messages: FxHashMap<StatusKey, MessageState>,
    paused_until: Option<Timestamp>,
    pauses: u32,
    /// Messages the receiver answered (accepted, retry, rejected) since the agent started: it
    /// was reachable after a message became suspect if this grew since.
    heard: u64,
}

/// Whether a wait `until` is still running at `now`. A wait longer than `longest` means the
/// clock jumped back: it is over.
fn waiting(until: Option<Timestamp>, now: Timestamp, longest: Duration) -> bool {
    until.is_some_and(|until| now < until && until <= crate::core::spec::add(now, longest))
}

impl Schedule {
    /// When the sink's pause ends, if it is paused at `now`.
    pub(crate) fn paused_until(
        &self,
        now: Timestamp,
        policy: &DeliveryPolicy,
    ) -> Option<Timestamp> {
        self.paused_until
            .filter(|_| waiting(self.paused_until, now, policy.max_backoff))
    }

    /// When the message with `key` may be offered, if not at `now`.
    fn due_at(
        &self,
        key: &StatusKey,
        now: Timestamp,
        policy: &DeliveryPolicy,
    ) -> Option<Timestamp> {
        let state = self.messages.get(key)?;
        let leased = state
            .leased_until
            .filter(|_| waiting(state.leased_until, now, policy.lease));
        let backing_off = state
            .not_before
            .filter(|_| waiting(state.not_before, now, policy.max_backoff));
        leased.into_iter().chain(backing_off).max()
    }

    /// Takes (leases) up to `max` messages due at `now`, oldest first, suspects (messages in
    /// flight when the sink paused) after the others; none while the sink is paused.
    pub(crate) fn take(
        &mut self,
        outbox: &Outbox,
        now: Timestamp,
        policy: &DeliveryPolicy,
        max: usize,
    ) -> Vec<StatusMessage> {
        if self.paused_until(now, policy).is_some() {
            return Vec::new();
        }
        let due = |m: &&StatusMessage| self.due_at(&m.key, now, policy).is_none();
        let suspect = |m: &&StatusMessage| {
            self.messages
                .get(&m.key)
                .is_some_and(|s| s.suspect_since.is_some())
        };
        let taken: Vec<StatusMessage> = outbox
            .iter()
            .filter(|m| due(m) && !suspect(m))
            .chain(outbox.iter().filter(|m| due(m) && suspect(m)))
            .take(max)
            .cloned()
            .collect();
        let until = crate::core::spec::add(now, policy.lease);
        for message in &taken {
            let state = self.messages.entry(message.key.clone()).or_default();
            state.leased_until = Some(until);
            state.not_before = None;
        }
        taken
    }

    /// Records a failed delivery of `key` at `now` and returns its failure count.
    pub(crate) fn failed(
        &mut self,
        key: &StatusKey,
        now: Timestamp,
        policy: &DeliveryPolicy,
        after: Option<Duration>,
    ) -> u32 {
        let state = self.messages.entry(key.clone()).or_default();
        state.failures = state.failures.saturating_add(1);
        state.leased_until = None;
        state.not_before = Some(crate::core::spec::add(
            now,
            policy.wait(after, state.failures),
        ));
        state.failures
    }

    /// The receiver answered `answers` messages (it was reachable).
    pub(crate) fn heard(&mut self, answers: usize) {
        self.heard = self
            .heard
            .saturating_add(u64::try_from(answers).unwrap_or(u64::MAX));
    }

    /// `key` was in flight when the sink paused: marks it a suspect, and says whether the
    /// failure is the message's own: the pause came from a transport failure (`unreachable`)
    /// and the receiver answered another message since it was marked.
    pub(crate) fn suspect(&mut self, key: &StatusKey, unreachable: bool) -> bool {
        let heard = self.heard;
        let state = self.messages.entry(key.clone()).or_default();
        state.leased_until = None;
        match state.suspect_since {
            Some(since) if unreachable && heard > since => {
                state.suspect_since = Some(heard);
                true
            }
            Some(_) => false,
            None => {
                state.suspect_since = Some(heard);
                false
            }
        }
    }

    /// How many deliveries of `key` failed.
    pub(crate) fn failures(&self, key: &StatusKey) -> u32 {
        self.messages.get(key).map_or(0, |s| s.failures)
    }

    /// `key` is due again without having failed (its batch was cut short by a pause).
    pub(crate) fn release(&mut self, key: &StatusKey) {
        if let Some(state) = self.messages.get_mut(key) {
            state.leased_until = None;
        }
    }

    /// `key` left the outbox, or is due again from scratch (re-queued).
    pub(crate) fn forget(&mut self, key: &StatusKey) {
        self.messages.remove(key);
    }

    /// Pauses the sink at `now` and returns when the pause ends.
    pub(crate) fn pause(
        &mut self,
        now: Timestamp,
        policy: &DeliveryPolicy,
        after: Option<Duration>,
    ) -> Timestamp {
        self.pauses = self.pauses.saturating_add(1);
        let until = crate::core::spec::add(now, policy.wait(after, self.pauses));
        self.paused_until = Some(until);
        until
    }

    /// The receiver answered: the sink's pauses are over.
    pub(crate) fn resume(&mut self) {
        self.pauses = 0;
        self.paused_until = None;
    }

    /// Whether a pending message is due at `now` (the sink not paused): one never offered, or
    /// whose lease or back-off has ended.
    pub(crate) fn any_due(&self, outbox: &Outbox, now: Timestamp, policy: &DeliveryPolicy) -> bool {
        self.paused_until(now, policy).is_none()
            && outbox
                .iter()
                .any(|message| self.due_at(&message.key, now, policy).is_none())
    }

    /// When a pending message is next due, if none is due at `now`; `None` when one is due now
    /// or nothing is pending.
    pub(crate) fn next_due(
        &self,
        outbox: &Outbox,
        now: Timestamp,
        policy: &DeliveryPolicy,
    ) -> Option<Timestamp> {
        if outbox.is_empty() {
            return None;
        }
        if let Some(until) = self.paused_until(now, policy) {
            return Some(until);
        }
        let mut earliest = None;
        for message in outbox.iter() {
            let at = self.due_at(&message.key, now, policy)?;
            earliest = Some(earliest.map_or(at, |e: Timestamp| e.min(at)));
        }
        earliest
    }

    /// Whether `message` is past the give-up bound on attempts after its failures so far.
    pub(crate) fn gives_up_on_attempts(
        &self,
        message: &StatusMessage,
        policy: &DeliveryPolicy,
    ) -> bool {
        policy
            .give_up_after_attempts
            .is_some_and(|n| self.failures(&message.key) >= n)
    }

    /// Whether `message` is past the give-up bound after its failures so far.
    pub(crate) fn gives_up(
        &self,
        message: &StatusMessage,
        now: Timestamp,
        policy: &DeliveryPolicy,
    ) -> bool {
        policy.gives_up(self.failures(&message.key), message.at, now)
    }
}

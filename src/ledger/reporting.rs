//! The ledger's status reporting: delivery through a sink, the pull API under it, and the dead
//! letters (SEMANTICS.md: "Status reporting").

use crate::core::effect::{StatusKey, StatusMessage};
use crate::error::Error;
use crate::report::dead_letter::{DeadLetter, DeadLetterNote, DeadLetterReason};
use crate::report::delivery::{Answer, Answered, Answers, Delivery, DeliveryPolicy, StatusSink};
use crate::session::SessionContext;
use crate::store::{Commit, Store};

use super::Ledger;

impl<S: Store, C: SessionContext> Ledger<S, C> {
    /// Hands the pending status messages that are due to `sink`, batch by batch, and commits
    /// what it answered: accepted messages leave the outbox, rejected ones (and ones past the
    /// give-up bound) move to the dead letters, the others back off, each on its own — a message
    /// that keeps failing never delays the others. A sink error (the receiver unreachable)
    /// pauses the whole sink for a back-off and is handed back in [`Delivery::failure`]. Only a
    /// store failure is an `Err`; delivery never changes a job's state.
    ///
    /// Built on [`take_batch`](Ledger::take_batch) and [`answer`](Ledger::answer), which an
    /// agent with its own (async) client calls itself. Call it from the agent loop whoever is
    /// logged on: delivery depends on nothing but the store and the sink; back-offs are computed
    /// from the session's time.
    ///
    /// A store failure while committing answers returns the error; the batch (which the
    /// receiver may have) is offered again after a pause: receivers drop duplicates by key.
    ///
    /// ```
    /// use jobstate::StatusMessage;
    /// use jobstate::report::{Answers, StatusSink};
    /// # use jobstate::{Ledger, MemoryStore, JobId, JobSpec};
    /// # use jobstate::session::SessionFacts;
    /// # let session = SessionFacts {
    /// #     boot: jobstate::BootId::new("b").unwrap(), user: jobstate::UserPresence::Unknown,
    /// #     context: jobstate::session::ExecutionContext::Service, notices: jobstate::session::NoticeDelivery::NotDelivered,
    /// #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
    /// #     programs: jobstate::session::LivePrograms::Unknown, restart_pending: jobstate::session::RestartPending::Unknown };
    /// # let (mut ledger, _) = Ledger::open(MemoryStore::new(), session)?;
    /// # ledger.offer(JobSpec::new(JobId::new("patch")?))?;
    /// # let _effects = ledger.cancel(&JobId::new("patch")?)?; // a cancel licenses nothing
    /// /// A receiver that refuses messages about cancelled runs for good.
    /// struct Server(Vec<StatusMessage>);
    /// impl StatusSink for Server {
    ///     type Error = std::io::Error;
    ///     fn deliver(&mut self, batch: &[StatusMessage], answers: &mut Answers) -> Result<(), Self::Error> {
    ///         for message in batch {
    ///             if message.key.attempt == 0 {
    ///                 answers.reject(&message.key, "409 the deployment was aborted");
    ///             } else {
    ///                 self.0.push(message.clone());
    ///                 answers.accept(&message.key);
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// let delivery = ledger.deliver(&mut Server(Vec::new()))?;
    /// assert_eq!((delivery.delivered, delivery.dead_lettered, delivery.pending), (0, 1, 0));
    /// let letter = ledger.dead_letters().next().expect("kept, never dropped");
    /// assert_eq!(letter.note.reason.to_string(), "the receiver rejected it: 409 the deployment was aborted");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deliver<K: StatusSink>(&mut self, sink: &mut K) -> Result<Delivery<K::Error>, Error> {
        crate::observe::call_span!("deliver");
        let mut delivery = Delivery {
            delivered: 0,
            retrying: 0,
            dead_lettered: 0,
            pending: 0,
            failure: None,
            retry_at: None,
        };
        let due = self.take_batch(usize::MAX);
        let mut batches = due.chunks(self.delivery.batch_size.max(1));
        for batch in batches.by_ref() {
            let mut answers = Answers::for_batch(batch);
            let result = sink.deliver(batch, &mut answers);
            if result.is_err() {
                answers.unreachable();
            }
            let answered = match self.answer(answers) {
                Ok(answered) => answered,
                Err(error) => {
                    for message in batches.flatten() {
                        self.schedule.release(&message.key);
                    }
                    return Err(error);
                }
            };
            delivery.delivered += answered.delivered;
            delivery.retrying += answered.retrying;
            delivery.dead_lettered += answered.dead_lettered;
            if let Err(error) = result {
                delivery.failure = Some(error);
            }
            if answered.paused_until.is_some() {
                break;
            }
        }
        // Batches not offered because the sink paused are due again when the pause ends.
        for message in batches.flatten() {
            self.schedule.release(&message.key);
        }
        delivery.pending = self.state.outbox().len();
        delivery.retry_at =
            self.schedule
                .next_due(self.state.outbox(), self.session.now(), &self.delivery);
        crate::observe::delivery!("deliver", delivery, delivery.pending);
        Ok(delivery)
    }

    /// Takes up to `max` pending status messages that are due, oldest first, for an agent that
    /// delivers them with its own client (an async one, say); hand what the receiver answered
    /// to [`answer`](Ledger::answer). Taken messages are not taken again while their answer is
    /// awaited, for at most the policy's [`lease`](DeliveryPolicy::lease). Nothing is due while
    /// the sink is paused or a message backs off.
    ///
    /// A recipe for an async agent: the crate needs no async runtime, the client and the sleep
    /// are the agent's own (reqwest and tokio, say). Keep the ledger in the task that drives the
    /// jobs, or behind a mutex that is never held across an `.await`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use jobstate::{Ledger, StatusMessage};
    /// use jobstate::store::Store;
    /// use jobstate::session::SessionContext;
    /// use jobstate::report::Answers;
    ///
    /// /// What the agent's own HTTP client made of one POST.
    /// enum Reply { Stored, Busy(Option<Duration>), Refused(String), Failed(String), Unreachable }
    ///
    /// trait Client {
    ///     async fn post(&self, message: &StatusMessage) -> Reply;
    ///     async fn sleep(&self, wait: Duration);
    /// }
    ///
    /// async fn report<S: Store, C: SessionContext>(
    ///     ledger: &mut Ledger<S, C>,
    ///     client: &impl Client,
    /// ) -> Result<(), jobstate::Error> {
    ///     loop {
    ///         let batch = ledger.take_batch(64);
    ///         let mut answers = Answers::for_batch(&batch);
    ///         for message in &batch {
    ///             match client.post(message).await {
    ///                 Reply::Stored => answers.accept(&message.key),
    ///                 Reply::Refused(why) => answers.reject(&message.key, why), // a 4xx
    ///                 Reply::Failed(why) => answers.retry(&message.key, why), // a 500
    ///                 Reply::Busy(after) => {
    ///                     answers.pause(after); // 429 or 503, with its Retry-After
    ///                     break;
    ///                 }
    ///                 Reply::Unreachable => {
    ///                     answers.unreachable(); // a pause; the message in flight a suspect
    ///                     break;
    ///                 }
    ///             }
    ///         }
    ///         ledger.answer(answers)?;
    ///         let wait = ledger.next_wakeup().unwrap_or(Duration::from_secs(60));
    ///         client.sleep(wait).await; // or a select! with the agent's other wake-ups
    ///     }
    /// }
    /// ```
    pub fn take_batch(&mut self, max: usize) -> Vec<StatusMessage> {
        crate::observe::call_span!("take_batch");
        let now = self.session.now();
        self.schedule
            .take(self.state.outbox(), now, &self.delivery, max)
    }

    /// Commits what a receiver answered for a batch taken by [`take_batch`](Ledger::take_batch)
    /// (or offered by [`deliver`](Ledger::deliver)): accepted messages leave the outbox;
    /// rejected ones, and ones whose failure reaches the give-up bound, move to the dead
    /// letters; the others back off each on its own. A message not answered counts as a retry,
    /// unless the answers ask for a [pause](Answers::pause). Answers for messages no longer
    /// pending change nothing ([`Answered::stale`]).
    pub fn answer(&mut self, answers: Answers) -> Result<Answered, Error> {
        crate::observe::call_span!("answer");
        let now = self.session.now();
        let policy = self.delivery;
        let pause = answers.pause_asked();
        let mut answered = Answered::default();
        let mut delivered = Vec::new();
        let mut dead = Vec::new();
        self.schedule.heard(
            answers
                .offered()
                .iter()
                .filter(|k| answers.get(k).is_some())
                .count(),
        );
        // The message in flight when the sink paused without naming a time: offered after the
        // others from then on; if the connection broke on it (a transport error) again after
        // the receiver answered others, the failure is its own (SEMANTICS.md: "one message
        // that keeps failing never holds back the others").
        let in_flight = match pause {
            Some(None) => answers.unanswered().next().cloned(),
            _ => None,
        };
        for key in answers.offered() {
            let Some(message) = self.state.outbox().get(key) else {
                answered.stale += 1;
                continue;
            };
            // A failure: the wait the receiver asked for, and what it said. A suspect's counts
            // against the bound on attempts only: a message the receiver answers nothing about
            // is not given up on for its age (a network that drops now and then would do it).
            let mut on_attempts_only = false;
            let (after, last_failure) = match answers.get(key) {
                Some(Answer::Accepted) => {
                    delivered.push(key.clone());
                    continue;
                }
                Some(Answer::Rejected { reason }) => {
                    dead.push(DeadLetterNote {
                        key: key.clone(),
                        reason: DeadLetterReason::Rejected {
                            reason: reason.clone(),
                        },
                        at: now,
                        attempts: self.schedule.failures(key) + 1,
                    });
                    continue;
                }
                Some(Answer::Retry { after, reason }) => (*after, reason.clone()),
                None if in_flight.as_ref() == Some(key) => {
                    if !self.schedule.suspect(key, answers.was_unreachable()) {
                        continue;
                    }
                    on_attempts_only = true;
                    (
                        None,
                        "the sink failed on it each time, while the receiver answered other messages"
                            .into(),
                    )
                }
                None if pause.is_some() => {
                    self.schedule.release(key);
                    continue;
                }
                None => (None, "the sink gave no answer".into()),
            };
            self.schedule.failed(key, now, &policy, after);
            let gives_up = if on_attempts_only {
                self.schedule.gives_up_on_attempts(message, &policy)
            } else {
                self.schedule.gives_up(message, now, &policy)
            };
            if !gives_up {
                answered.retrying += 1;
                continue;
            }
            dead.push(DeadLetterNote {
                key: key.clone(),
                reason: DeadLetterReason::GaveUp { last_failure },
                at: now,
                attempts: self.schedule.failures(key),
            });
        }
        if !delivered.is_empty() || !dead.is_empty() {
            let commit = Commit::new(self.revision, Vec::new())
                .with_delivered(delivered.clone())
                .with_dead_lettered(dead.clone());
            if let Err(error) = self.commit(commit) {
                // The receiver may have them, the store does not know: offer them again after a
                // pause rather than at once.
                for key in answers.offered() {
                    self.schedule.release(key);
                }
                self.schedule.pause(now, &policy, None);
                return Err(error);
            }
        }
        for key in delivered.iter().chain(dead.iter().map(|n| &n.key)) {
            self.schedule.forget(key);
        }
        answered.delivered = delivered.len();
        answered.dead_lettered = dead.len();
        match pause {
            Some(after) => answered.paused_until = Some(self.schedule.pause(now, &policy, after)),
            None => self.schedule.resume(),
        }
        crate::observe::delivery!("answer", answered, self.state.outbox().len());
        Ok(answered)
    }

    /// The status messages committed and not yet acknowledged (nor given up on), oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &StatusMessage> {
        self.state.outbox().iter()
    }

    /// The status messages given up on, in the order they were: kept in the store until
    /// [re-queued](Ledger::requeue) or [discarded](Ledger::discard). A status the server must
    /// still learn (a completed mandatory job's, say) stays findable here.
    pub fn dead_letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.state.dead_letters().iter()
    }

    /// Moves the dead letter with `key` back to the end of the outbox, due at once, its failure
    /// count reset (the receiver was fixed, say).
    pub fn requeue(&mut self, key: &StatusKey) -> Result<(), Error> {
        crate::observe::call_span!("requeue", key = key);
        if !self.state.dead_letters().contains(key) {
            return Err(Error::NotADeadLetter(key.clone()));
        }
        self.commit(Commit::new(self.revision, Vec::new()).with_requeued(vec![key.clone()]))?;
        self.schedule.forget(key);
        Ok(())
    }

    /// Discards the dead letter with `key` for good, and returns it: an explicit decision that
    /// the receiver never learns it.
    pub fn discard(&mut self, key: &StatusKey) -> Result<DeadLetter, Error> {
        crate::observe::call_span!("discard", key = key);
        let Some(letter) = self.state.dead_letters().get(key).cloned() else {
            return Err(Error::NotADeadLetter(key.clone()));
        };
        self.commit(Commit::new(self.revision, Vec::new()).with_discarded(vec![key.clone()]))?;
        Ok(letter)
    }

    /// Sets how [`deliver`](Ledger::deliver) batches, backs off and gives up.
    pub fn set_delivery_policy(&mut self, policy: DeliveryPolicy) {
        self.delivery = policy;
    }
}

//! Status reporting that cannot be lost: the pending messages (the outbox), the sink trait that
//! delivers them, and the delivery policy.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{ReplayError, StatusKey, StatusMessage, Timestamp};

/// The status messages committed and not yet acknowledged by a sink, oldest first.
///
/// A message enters in the same commit as the transition that produced it and leaves in the
/// commit that records its acknowledgement; in between it survives crashes, restarts and reboots.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    by_order: BTreeMap<u64, StatusMessage>,
    order_of: rustc_hash::FxHashMap<StatusKey, u64>,
    next: u64,
}

impl Outbox {
    /// Checks that `message` may be added: its key is not pending already.
    pub fn check_add(&self, message: &StatusMessage) -> Result<(), ReplayError> {
        if self.order_of.contains_key(&message.key) {
            return Err(ReplayError::DuplicateReport {
                key: message.key.clone(),
            });
        }
        Ok(())
    }

    /// Checks that `key` may be acknowledged: it is pending.
    pub fn check_remove(&self, key: &StatusKey) -> Result<(), ReplayError> {
        if !self.order_of.contains_key(key) {
            return Err(ReplayError::UnknownReport { key: key.clone() });
        }
        Ok(())
    }

    /// Adds a pending message, refusing a second message with the same key.
    pub fn add(&mut self, message: StatusMessage) -> Result<(), ReplayError> {
        self.check_add(&message)?;
        self.order_of.insert(message.key.clone(), self.next);
        self.by_order.insert(self.next, message);
        self.next += 1;
        Ok(())
    }

    /// Removes an acknowledged message, refusing a key that is not pending.
    pub fn remove(&mut self, key: &StatusKey) -> Result<StatusMessage, ReplayError> {
        let order = self
            .order_of
            .remove(key)
            .ok_or_else(|| ReplayError::UnknownReport { key: key.clone() })?;
        self.by_order
            .remove(&order)
            .ok_or_else(|| ReplayError::UnknownReport { key: key.clone() })
    }

    /// The pending message with this key, if any.
    pub fn get(&self, key: &StatusKey) -> Option<&StatusMessage> {
        self.order_of.get(key).and_then(|o| self.by_order.get(o))
    }

    /// The pending messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &StatusMessage> {
        self.by_order.values()
    }

    /// How many messages are pending.
    pub fn len(&self) -> usize {
        self.by_order.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.by_order.is_empty()
    }
}

/// Where status messages go: the agent's connection to its site server.
///
/// Delivery is at least once: a message may be handed over again after a crash between the
/// sink's acceptance and the ledger's commit of it. Receivers drop duplicates by
/// [`StatusMessage::key`].
///
/// ```
/// use jobstate::{StatusKey, StatusMessage, StatusSink};
///
/// /// A sink that keeps what it receives, dropping duplicates by key.
/// #[derive(Default)]
/// struct Receiver(std::collections::BTreeMap<StatusKey, StatusMessage>);
///
/// impl StatusSink for Receiver {
///     type Error = std::convert::Infallible;
///     fn deliver(&mut self, batch: &[StatusMessage]) -> Result<Vec<StatusKey>, Self::Error> {
///         for message in batch {
///             self.0.entry(message.key.clone()).or_insert_with(|| message.clone());
///         }
///         Ok(batch.iter().map(|m| m.key.clone()).collect())
///     }
/// }
/// ```
pub trait StatusSink {
    /// Why a whole batch could not be delivered (a network error, a full disk).
    type Error: std::fmt::Display;

    /// Delivers `batch` and returns the keys the receiver accepted (durably, on its side).
    /// Keys not returned stay pending and are offered again after a back-off.
    fn deliver(&mut self, batch: &[StatusMessage]) -> Result<Vec<StatusKey>, Self::Error>;
}

impl<S: StatusSink + ?Sized> StatusSink for &mut S {
    type Error = S::Error;
    fn deliver(&mut self, batch: &[StatusMessage]) -> Result<Vec<StatusKey>, Self::Error> {
        (**self).deliver(batch)
    }
}

/// How the ledger delivers: batch size and back-off after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Messages handed to the sink at once (at least 1).
    pub batch_size: usize,
    /// The wait after the first failed delivery; it doubles with each further failure.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    /// Batches of 64; waits of 30 s, doubling to at most 30 min.
    fn default() -> Self {
        Self {
            batch_size: 64,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
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
}

/// What one call of [`Ledger::deliver`](crate::Ledger::deliver) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Messages the sink accepted and the ledger pruned, in this call.
    pub delivered: usize,
    /// Messages still pending.
    pub pending: usize,
    /// Why the last batch was not (wholly) delivered, if it was not.
    pub failure: Option<String>,
    /// When delivery should be tried again, if messages are pending after a failure (or the
    /// call came before the back-off was over).
    pub retry_at: Option<Timestamp>,
}

//! Status messages given up on: kept durably in the same store, visible, and re-queued or
//! discarded only by an explicit call (SEMANTICS.md: "a message given up on is kept, visible, never
//! silently dropped").

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::effect::{StatusKey, StatusMessage};
use crate::record::ReplayError;
use crate::report::keyed_queue::KeyedQueue;

/// Why a status message was given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The receiver refused it for good (an HTTP 4xx that will not change; Mender's 409
    /// "deployment aborted").
    Rejected {
        /// What the receiver said.
        reason: String,
    },
    /// It kept failing until the delivery policy's give-up bound (attempts or age,
    /// [`DeliveryPolicy::give_up_after_attempts`](crate::report::DeliveryPolicy::give_up_after_attempts),
    /// [`DeliveryPolicy::give_up_after_age`](crate::report::DeliveryPolicy::give_up_after_age)).
    GaveUp {
        /// The last failure.
        last_failure: String,
    },
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterReason::Rejected { reason } => {
                write!(f, "the receiver rejected it: {reason}")
            }
            DeadLetterReason::GaveUp { last_failure } => write!(
                f,
                "delivery gave up after its bound; the last failure: {last_failure}"
            ),
        }
    }
}

/// The stored record that moves a pending status message to the dead letters
/// ([`Record::DeadLettered`](crate::store::Record::DeadLettered)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterNote {
    /// The message's key: it was pending.
    pub key: StatusKey,
    /// Why it was given up on.
    pub reason: DeadLetterReason,
    /// When (the session's wall clock).
    #[serde(with = "crate::core::time_serde::timestamp")]
    pub at: Timestamp,
    /// How many deliveries of it had failed since the agent started (failures are counted in
    /// memory: a restart counts from 0 again, the age bound still holds).
    pub attempts: u32,
}

/// A status message given up on, as the ledger shows it
/// ([`Ledger::dead_letters`](crate::Ledger::dead_letters)). It stays until re-queued
/// ([`Ledger::requeue`](crate::Ledger::requeue)) or discarded
/// ([`Ledger::discard`](crate::Ledger::discard)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message.
    pub message: StatusMessage,
    /// Why, when and after how many failures it was given up on.
    pub note: DeadLetterNote,
}

/// The dead letters, in the order they were given up on.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters {
    letters: KeyedQueue<DeadLetter>,
}

impl DeadLetters {
    /// Whether `key` is a dead letter.
    pub fn contains(&self, key: &StatusKey) -> bool {
        self.letters.contains(key)
    }

    /// Checks that `key` may leave (re-queued or discarded): it is a dead letter.
    pub fn check_remove(&self, key: &StatusKey) -> Result<(), ReplayError> {
        if !self.contains(key) {
            return Err(ReplayError::UnknownDeadLetter { key: key.clone() });
        }
        Ok(())
    }

    /// Adds a dead letter, refusing a second one with the same key.
    pub fn add(&mut self, letter: DeadLetter) -> Result<(), ReplayError> {
        let key = letter.message.key.clone();
        self.letters
            .push(key.clone(), letter)
            .map_err(|_| ReplayError::DuplicateReport { key })
    }

    /// Removes the dead letter with this key, refusing a key that is not one.
    pub fn remove(&mut self, key: &StatusKey) -> Result<DeadLetter, ReplayError> {
        self.letters
            .remove(key)
            .ok_or_else(|| ReplayError::UnknownDeadLetter { key: key.clone() })
    }

    /// The dead letter with this key, if any.
    pub fn get(&self, key: &StatusKey) -> Option<&DeadLetter> {
        self.letters.get(key)
    }

    /// The dead letters, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &DeadLetter> {
        self.letters.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.letters.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

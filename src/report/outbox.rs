//! Status reporting that cannot be lost: the pending messages (the outbox). How they are
//! delivered is in `delivery`.

use crate::core::effect::{StatusKey, StatusMessage};
use crate::record::ReplayError;
use crate::report::keyed_queue::KeyedQueue;

/// The status messages committed and not yet acknowledged by a sink, oldest first.
///
/// A message enters in the same commit as the transition that produced it and leaves in the
/// commit that records its acknowledgement; in between it survives crashes, restarts and reboots.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pending: KeyedQueue<StatusMessage>,
}

impl Outbox {
    /// Checks that a message with `key` may be added: the key is not pending already.
    pub fn check_fresh(&self, key: &StatusKey) -> Result<(), ReplayError> {
        if self.pending.contains(key) {
            return Err(ReplayError::DuplicateReport { key: key.clone() });
        }
        Ok(())
    }

    /// Checks that `key` may be acknowledged: it is pending.
    pub fn check_remove(&self, key: &StatusKey) -> Result<(), ReplayError> {
        if !self.pending.contains(key) {
            return Err(ReplayError::UnknownReport { key: key.clone() });
        }
        Ok(())
    }

    /// Adds a pending message, refusing a second message with the same key.
    pub fn add(&mut self, message: StatusMessage) -> Result<(), ReplayError> {
        let key = message.key.clone();
        self.pending
            .push(key.clone(), message)
            .map_err(|_| ReplayError::DuplicateReport { key })
    }

    /// Removes an acknowledged message, refusing a key that is not pending.
    pub fn remove(&mut self, key: &StatusKey) -> Result<StatusMessage, ReplayError> {
        self.pending
            .remove(key)
            .ok_or_else(|| ReplayError::UnknownReport { key: key.clone() })
    }

    /// The pending message with this key, if any.
    pub fn get(&self, key: &StatusKey) -> Option<&StatusMessage> {
        self.pending.get(key)
    }

    /// The pending messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &StatusMessage> {
        self.pending.iter()
    }

    /// How many messages are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

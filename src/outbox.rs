//! Status reporting that cannot be lost: the pending messages (the outbox). How they are
//! delivered is in `delivery`.

use std::collections::BTreeMap;

use crate::{ReplayError, StatusKey, StatusMessage};

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
    /// Checks that a message with `key` may be added: the key is not pending already.
    pub fn check_fresh(&self, key: &StatusKey) -> Result<(), ReplayError> {
        if self.order_of.contains_key(key) {
            return Err(ReplayError::DuplicateReport { key: key.clone() });
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
        self.check_fresh(&message.key)?;
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

//! Values in the order they were added, unique by status key: the shape of the outbox and of
//! the dead letters.

use std::collections::BTreeMap;

use crate::core::effect::StatusKey;

/// Values in insertion order, at most one per [`StatusKey`]; O(log n) by key or by order.
#[derive(Debug, Clone)]
pub(crate) struct KeyedQueue<V> {
    by_order: BTreeMap<u64, V>,
    order_of: rustc_hash::FxHashMap<StatusKey, u64>,
    next: u64,
}

impl<V> Default for KeyedQueue<V> {
    fn default() -> Self {
        Self {
            by_order: BTreeMap::new(),
            order_of: rustc_hash::FxHashMap::default(),
            next: 0,
        }
    }
}

impl<V> KeyedQueue<V> {
    /// Whether a value with `key` is held.
    pub(crate) fn contains(&self, key: &StatusKey) -> bool {
        self.order_of.contains_key(key)
    }

    /// Adds `value` at the end under `key`; refuses (returns it) if `key` is held already.
    pub(crate) fn push(&mut self, key: StatusKey, value: V) -> Result<(), V> {
        if self.contains(&key) {
            return Err(value);
        }
        self.order_of.insert(key, self.next);
        self.by_order.insert(self.next, value);
        self.next += 1;
        Ok(())
    }

    /// Removes the value with `key`, if held.
    pub(crate) fn remove(&mut self, key: &StatusKey) -> Option<V> {
        let order = self.order_of.remove(key)?;
        self.by_order.remove(&order)
    }

    /// The value with `key`, if held.
    pub(crate) fn get(&self, key: &StatusKey) -> Option<&V> {
        self.order_of.get(key).and_then(|o| self.by_order.get(o))
    }

    /// The values, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &V> {
        self.by_order.values()
    }

    /// How many values are held.
    pub(crate) fn len(&self) -> usize {
        self.by_order.len()
    }
}

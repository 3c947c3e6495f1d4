//! The keys met so far within one commit, each with a value: what the checks of a commit use to
//! see a job changed twice or a status key given twice.
//!
//! A commit carries a handful of changes and keys. Hashing a key into a new set or map (its
//! allocation, the hash) cost more than the rest of a commit's check, about 1,200 instructions
//! for a commit with one status message; so up to [`FEW`] keys are compared one by one in
//! place, and a hash map holds them only for a commit of more (a delivery of 64 acknowledged
//! messages: comparing each with all before it would cost more than hashing).

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// How many keys are compared one by one before a map is built.
const FEW: usize = 16;

/// Keys `&K` met so far, each with its latest value `V`.
pub(crate) struct FewKeys<'a, K: ?Sized, V> {
    few: [Option<(&'a K, V)>; FEW],
    len: usize,
    /// Every key, when more than [`FEW`] were announced.
    many: Option<FxHashMap<&'a K, V>>,
}

impl<'a, K: Eq + Hash + ?Sized, V: Copy> FewKeys<'a, K, V> {
    /// None met yet, for at most `count` keys (nothing allocated unless there are more than
    /// [`FEW`]; more keys than announced are still kept).
    pub(crate) fn for_count(count: usize) -> Self {
        Self {
            few: [None; FEW],
            len: 0,
            many: (count > FEW).then(|| {
                let mut map = FxHashMap::default();
                map.reserve(count);
                map
            }),
        }
    }

    /// The value of `key`, if it was met.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        if let Some(many) = &self.many {
            return many.get(key).copied();
        }
        self.few[..self.len]
            .iter()
            .flatten()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// Sets the value of `key`; `true` if it was not met before.
    pub(crate) fn insert(&mut self, key: &'a K, value: V) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key, value).is_none();
        }
        if let Some(slot) = self.few[..self.len]
            .iter_mut()
            .flatten()
            .find(|(k, _)| *k == key)
        {
            slot.1 = value;
            return false;
        }
        if let Some(slot) = self.few.get_mut(self.len) {
            *slot = Some((key, value));
            self.len += 1;
            return true;
        }
        // More keys than announced: all of them into a map from now on.
        let mut many: FxHashMap<&'a K, V> = self.few.iter().flatten().copied().collect();
        many.insert(key, value);
        self.many = Some(many);
        true
    }
}

impl<'a, K: Eq + Hash + ?Sized> FewKeys<'a, K, ()> {
    /// Adds `key`; `false` if it was met already.
    pub(crate) fn add(&mut self, key: &'a K) -> bool {
        self.insert(key, ())
    }
}

#[cfg(test)]
mod tests {
    use super::{FEW, FewKeys};

    #[test]
    fn a_key_is_met_once_whether_few_or_many() {
        // Every key is found, and a repeat refused, wherever the earlier one is kept.
        // Announced truly (few, many) or too few (the map built on the way).
        for (count, announced) in [(FEW, FEW), (3 * FEW, 3 * FEW), (3 * FEW, 1), (FEW + 1, FEW)] {
            let keys: Vec<String> = (0..count).map(|i| format!("key-{i}")).collect();
            let mut met = FewKeys::for_count(announced);
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(met.get(key.as_str()), None, "{key} before it is added");
                assert!(met.insert(key.as_str(), i), "{key} is new");
            }
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(
                    met.get(key.as_str()),
                    Some(i),
                    "{key} of {count}, {announced}"
                );
                assert!(!met.insert(key.as_str(), i + 1000), "{key} again");
                assert_eq!(met.get(key.as_str()), Some(i + 1000), "the latest value");
            }
        }
        let mut set = FewKeys::for_count(2);
        assert!(set.add("a"));
        assert!(!set.add("a"));
        assert!(set.add("b"));
    }
}

//! The boot a stored change's state is encoded against: its event's.
//!
//! An attempt starts, waits and ends in the boot its event happened in, so nearly every boot id
//! in a stored state is the event's own. In a binary format (the stores' records) such a boot id
//! is written as the empty string, which no boot id can be, and read back as the event's: 37
//! bytes less per boot id, and no second lookup of an id just decoded. Human-readable formats
//! (JSON) always write the id itself.
//!
//! The scope is per thread and set only while a change's state is encoded or decoded
//! ([`BootScope::enter`], by `Change`'s serde); outside it an empty boot id is refused as
//! always.

use std::cell::RefCell;

use crate::core::id::BootId;

thread_local! {
    static SCOPE: RefCell<Option<BootId>> = const { RefCell::new(None) };
}

/// While alive, boot ids equal to its boot are encoded as the empty string, and the empty
/// string decodes as its boot. Dropping it restores the scope it replaced.
pub(crate) struct BootScope {
    outer: Option<BootId>,
}

impl BootScope {
    /// Encodes and decodes boot ids against `boot` until the scope is dropped.
    pub(crate) fn enter(boot: &BootId) -> Self {
        let outer = SCOPE
            .try_with(|scope| scope.replace(Some(boot.clone())))
            .ok()
            .flatten();
        Self { outer }
    }
}

impl Drop for BootScope {
    fn drop(&mut self) {
        let outer = self.outer.take();
        let _ = SCOPE.try_with(|scope| *scope.borrow_mut() = outer);
    }
}

/// Whether `boot` is the boot of the scope this thread is in (false outside any scope).
pub(crate) fn is_scope_boot_str(boot: &str) -> bool {
    SCOPE
        .try_with(|scope| scope.borrow().as_ref().is_some_and(|b| b.as_str() == boot))
        .unwrap_or(false)
}

/// The boot of the scope this thread is in, if it is in one.
pub(crate) fn scope_boot() -> Option<BootId> {
    SCOPE
        .try_with(|scope| scope.borrow().clone())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_restored_when_it_ends() {
        let a = BootId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let b = BootId::new("b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scope_boot(), None);
        {
            let _outer = BootScope::enter(&a);
            assert!(is_scope_boot_str("a") && !is_scope_boot_str("b"));
            {
                let _inner = BootScope::enter(&b);
                assert_eq!(scope_boot(), Some(b.clone()));
            }
            assert_eq!(scope_boot(), Some(a.clone()));
        }
        assert_eq!(scope_boot(), None);
        assert!(!is_scope_boot_str("a"));
    }
}

//! The reporting side: the outbox of status messages, the dead letters, delivery to a
//! [`StatusSink`](crate::StatusSink) with its schedule, and the shipped sinks. The ledger drives
//! it (`src/ledger/reporting.rs`); the stores keep what it holds. The crate root re-exports the
//! public items.

pub(crate) mod dead_letter;
pub(crate) mod delivery;
#[cfg(feature = "http")]
pub(crate) mod http_sink;
#[cfg(feature = "json-lines")]
pub(crate) mod json_lines_sink;
pub(crate) mod keyed_queue;
pub(crate) mod outbox;

//! Status reporting: the [`Outbox`] of status messages, the [`DeadLetters`], delivery to a
//! [`StatusSink`] (per-message [`Answers`], the [`DeliveryPolicy`]) and the shipped sinks
//! (`JsonLinesSink`, feature `json-lines`; `HttpSink`, feature `http`). The ledger drives it
//! ([`Ledger::deliver`](crate::Ledger::deliver)); the stores keep what it holds.

pub(crate) mod dead_letter;
pub(crate) mod delivery;
#[cfg(feature = "http")]
pub(crate) mod http_sink;
#[cfg(feature = "json-lines")]
pub(crate) mod json_lines_sink;
pub(crate) mod keyed_queue;
pub(crate) mod outbox;

pub use dead_letter::{DeadLetter, DeadLetterNote, DeadLetterReason, DeadLetters};
pub use delivery::{Answer, Answered, Answers, Delivery, DeliveryPolicy, StatusSink};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http_sink::{HttpSink, HttpSinkError, HttpSinkOptions};
#[cfg(feature = "json-lines")]
#[cfg_attr(docsrs, doc(cfg(feature = "json-lines")))]
pub use json_lines_sink::{JsonLinesSink, SinkOptions};
pub use outbox::Outbox;

//! The pure core: the state machine and the values it works on. Nothing here does IO or reads a
//! clock (time and boot identity arrive inside events), and nothing here uses a module outside
//! `core` (`tests/it/core_purity.rs` checks both). The crate root re-exports the public items.

pub(crate) mod boot_scope;
pub(crate) mod duration_text;
pub(crate) mod effect;
pub(crate) mod event;
pub(crate) mod exit_code;
pub(crate) mod id;
pub(crate) mod presence;
pub(crate) mod program;
pub(crate) mod restart_policy;
pub(crate) mod spec;
pub(crate) mod state;
pub(crate) mod time_serde;
pub(crate) mod transition;

/// A point in wall-clock time, in UTC. It comes in with events; the core never reads a clock.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

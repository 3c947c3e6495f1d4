//! One integration-test binary with modules: it compiles once instead of once per file.

mod bad_input;
mod common;
#[cfg(feature = "testkit")]
mod conformance;
mod delivery;
mod delivery_mutants;
mod exhaustive;
mod file_store;
#[cfg(feature = "testkit")]
mod fleet;
mod golden;
#[cfg(feature = "http")]
mod http_sink;
#[cfg(feature = "cli")]
mod inspect;
#[cfg(target_os = "linux")]
mod linux_session;
mod model;
mod mutation_kills;
mod outbox;
mod restart_pending;
mod restart_policy;
mod retention;
mod scale;
mod seeds;
mod semantics;
#[cfg(feature = "testkit")]
mod simulator;
mod spec_change;
mod spec_form;
mod unheard;

//! One integration-test binary with modules: it compiles once instead of once per file.
//!
//! The ledger's effects are `#[must_use]` (`jobstate::Effects`): a test either checks the effects
//! of a call or binds them to `_effects`. `let _effects = ledger.call(..)` marks a call made
//! only to move a job to the state a test is about: what that call licenses is not what the test
//! checks (the tests about effects assert them: `semantics.rs`, `unheard.rs`,
//! `mutation_kills.rs`, `restart_policy.rs`, the model and the simulator carry every effect out).

mod bad_input;
mod codec;
mod common;
#[cfg(feature = "testkit")]
mod conformance;
mod core_purity;
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
mod review_fixes;
mod review_last;
mod review_restarts;
mod review_sqlite;
mod review_status;
mod review_stores;
mod scale;
mod seeds;
mod semantics;
#[cfg(feature = "testkit")]
mod simulator;
mod spec_change;
mod spec_form;
#[cfg(feature = "tracing")]
mod tracing;
mod unheard;

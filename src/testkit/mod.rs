//! Tools for testing with jobstate (feature `testkit`):
//!
//! - [`conformance`]: a suite that proves a store keeps the rules the ledger relies on;
//! - [`simulator`]: a deterministic simulated machine and agent, to test a deployment tool's own
//!   policies against reboots, crashes, absent users, lost notices and a flaky site server.

pub mod conformance;
pub mod simulator;

//! Tools for testing with jobstate (feature `testkit`): a conformance suite that proves a store
//! keeps the rules the ledger relies on.

pub mod conformance;

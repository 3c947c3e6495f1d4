//! Crash tests (to come).

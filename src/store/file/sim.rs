//! A simulated disk (see crash_tests).

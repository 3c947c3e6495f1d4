//! Helpers shared by the integration tests.

use chrono::{TimeDelta, TimeZone, Utc};
use jobstate::{
    BootId, Effect, ExecutionContext, JobId, Ledger, MemoryStore, NoticeDelivery, SessionFacts,
    Timestamp, UserPresence,
};

pub type MemLedger = Ledger<MemoryStore, SessionFacts>;

pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap()
}

pub fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

pub fn boot(name: &str) -> BootId {
    BootId::new(name).unwrap()
}

pub fn job(name: &str) -> JobId {
    JobId::new(name).unwrap()
}

/// A service with no user logged on that never hears of shutdowns: the hard case.
pub fn service_session(boot_name: &str) -> SessionFacts {
    SessionFacts {
        boot: boot(boot_name),
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: t0(),
    }
}

/// Writes a line of figures to stderr directly, past libtest's output capture, so that plain
/// `cargo test` shows how much a property or exhaustive test checked.
pub fn report_figures(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Counts the launches among `effects`.
pub fn launches(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Launch(_)))
        .count()
}

pub fn reports(effects: &[Effect]) -> Vec<&jobstate::StatusMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Report(m) => Some(m),
            _ => None,
        })
        .collect()
}

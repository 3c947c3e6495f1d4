//! What the ledger tells a [`tracing`](https://docs.rs/tracing) subscriber (feature `tracing`,
//! off by default).
//!
//! With the feature on, the ledger opens a span for each call that may change something and
//! emits an event for each transition it committed, each effect it handed out, each delivery
//! call, each message given up on and each repair the store made at open. Everything has the
//! target `"jobstate"`, and each event has a stable *name* (its metadata's
//! [`name`](https://docs.rs/tracing/latest/tracing/struct.Metadata.html#method.name), set with
//! `name:`), so a subscriber can filter on `target == "jobstate"` and match on the name instead of
//! parsing messages. The names and fields below are part of the crate's API: a field may be added
//! in a minor version, never renamed or removed. Without the feature nothing is compiled: the
//! calls are empty macros and empty `#[inline]` functions, and the `tracing` crate is not a
//! dependency.
//!
//! This module holds no public items: it documents what is emitted.
//!
//! # Spans (level `DEBUG`)
//!
//! One span per call, named after the [`Ledger`](crate::Ledger) method, entered for the whole
//! call: every event the call emits is inside it (`deliver`'s spans of `take_batch` and
//! `answer` are inside `deliver`'s).
//!
//! | span | fields |
//! |---|---|
//! | `open` ([`Ledger::open`](crate::Ledger::open), [`Ledger::open_with`](crate::Ledger::open_with)) | — |
//! | `offer` | `job` |
//! | `begin`, `rerun`, `cancel`, `abandon` | `job` |
//! | `launched`, `program_exited`, `launch_failed`, `program_lost`, `expect_reboot`, `verification` | `job`, `run`, `attempt` (of the attempt named) |
//! | `shutdown_notice`, `tick` | — |
//! | `deliver`, `take_batch`, `answer` | — |
//! | `requeue`, `discard` | `key` (the [`StatusKey`](crate::StatusKey)'s `Display`) |
//!
//! # Events
//!
//! | name | level | when | fields |
//! |---|---|---|---|
//! | `transition` | `INFO` | a change of a job was committed: emitted only after the store acknowledged the commit, one per change, in commit order | `job`, `seq` (the job's sequence number), `from` (the state's kind before: `Queued`, `Running`, `AwaitingReboot`, `Completed`, `Failed`, or `none` for a job just offered), `to` (the state's kind after), `event` (the [`EventName`](crate::EventName): `Offered`, `AttemptStarted`, `ProgramExited`, ...), `run`, `attempt` (the attempt of the new state; for `Queued`, the next attempt; 0 if none started), `revision` (the store's revision after the commit: it counts records, so it may grow by more than one). A spec change of a known job is a transition with `from` equal to `to` and `event` `SpecChanged`; the reconciliation at open emits one per job it changed, with `event` `AgentStarted` |
//! | `effect` | `INFO` | an effect was handed out (also the [`Effect::Launch`](crate::Effect::Launch) that [`Ledger::begin`](crate::Ledger::begin) hands out as its attempt), in the order of the call's [`Effects`](crate::Effects) | `effect` (`Launch`, `Terminate`, `ScheduleRestart`, `Verify`), `job`, `run`, `attempt` (0 for `ScheduleRestart`), `restart` (`Soft` or `Hard` for `ScheduleRestart`, empty otherwise) |
//! | `delivery` | `DEBUG` | at the end of each [`deliver`](crate::Ledger::deliver) and [`answer`](crate::Ledger::answer) call that returns `Ok` (`deliver` calls `answer` once per batch: each batch has its own `answer` event) | `call` (`deliver` or `answer`), `delivered`, `retrying`, `dead_lettered`, `pending` (messages still in the outbox) |
//! | `dead_letter` | `WARN` | a message was moved to the dead letters (rejected, or given up on), after the commit | `key`, `reason` (the [`DeadLetterReason`](crate::report::DeadLetterReason)'s `Display`), `attempts` |
//! | `recovery_cut` | `WARN` | at [`Ledger::open`](crate::Ledger::open): the store cut a torn or damaged end off a file ([`OpenReport::cut`](crate::store::OpenReport::cut)) | `file`, `offset`, `bytes`, `damage` |
//! | `recovery_removed` | `WARN` | at [`Ledger::open`](crate::Ledger::open): the store removed a leftover file ([`OpenReport::removed`](crate::store::OpenReport::removed)) | `file` |
//! | `reconciled` | `INFO` | at the end of [`Ledger::open`](crate::Ledger::open): the unfinished jobs were reconciled against the boot | `boot`, `jobs` (unfinished jobs reconciled), `changed` (how many of them changed), `effects` (effects handed out) |
//!
//! Values: `job`, `key`, `boot`, `file`, `damage`, `reason` and `event` are recorded through
//! their `Display` (a visitor's `record_debug` gets a value whose `Debug` is that `Display`);
//! `from`, `to`, `effect`, `restart` and `call` are `&'static str`s (`record_str`); the counts and
//! numbers are unsigned integers (`record_u64`). Each event also has a human-readable `message`,
//! which is not part of the stable interface. A commit that a store refused emits no `transition` and no
//! `dead_letter` event: the ledger did not change.
//!
//! # Example
//!
//! Any subscriber works (`tracing-subscriber`'s `fmt()` in an agent). Here one that prints
//! each event's name:
//!
//! ```
//! # #[cfg(feature = "tracing")]
//! # fn main() {
//! use jobstate::{JobId, JobSpec, Ledger, MemoryStore};
//! use jobstate::session::SessionFacts;
//! use tracing::{Event, Metadata, span};
//!
//! struct Names;
//! impl tracing::Subscriber for Names {
//!     fn enabled(&self, metadata: &Metadata<'_>) -> bool {
//!         metadata.target() == "jobstate"
//!     }
//!     fn new_span(&self, _: &span::Attributes<'_>) -> span::Id { span::Id::from_u64(1) }
//!     fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
//!     fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
//!     fn event(&self, event: &Event<'_>) {
//!         println!("{} {}", event.metadata().level(), event.metadata().name());
//!     }
//!     fn enter(&self, _: &span::Id) {}
//!     fn exit(&self, _: &span::Id) {}
//! }
//!
//! # let session = SessionFacts {
//! #     boot: jobstate::BootId::new("b").unwrap(), user: jobstate::UserPresence::Unknown,
//! #     context: jobstate::session::ExecutionContext::Service, notices: jobstate::session::NoticeDelivery::NotDelivered,
//! #     now: chrono::DateTime::UNIX_EPOCH, since_boot: std::time::Duration::ZERO,
//! #     programs: jobstate::session::LivePrograms::Unknown, restart_pending: jobstate::session::RestartPending::Unknown };
//! tracing::subscriber::with_default(Names, || {
//!     let (mut ledger, _) = Ledger::open(MemoryStore::new(), session).unwrap();
//!     ledger.offer(JobSpec::new(JobId::new("patch").unwrap())).unwrap(); // INFO transition
//!     let attempt = ledger.begin(&JobId::new("patch").unwrap()).unwrap(); // INFO transition, INFO effect
//!     # let _ = attempt;
//! });
//! # }
//! # #[cfg(not(feature = "tracing"))]
//! # fn main() {}
//! ```

#[cfg(feature = "tracing")]
mod on {
    use crate::core::effect::{Effect, Effects};
    use crate::core::id::{BootId, JobId};
    use crate::core::state::{JobState, RebootKind, StateKind};
    use crate::store::{Commit, OpenReport, Replay, Revision};

    /// The target of every span and event.
    pub(crate) const TARGET: &str = "jobstate";

    /// Whether a subscriber may want `INFO` events: the global maximum level only, never a
    /// callsite of its own (`tracing::enabled!` is one, with a name of its own, which a
    /// subscriber that filters on the events' names may refuse).
    fn info_enabled() -> bool {
        use tracing::Level;
        use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
        Level::INFO <= STATIC_MAX_LEVEL && Level::INFO <= LevelFilter::current()
    }

    fn state_name(kind: StateKind) -> &'static str {
        match kind {
            StateKind::Queued => "Queued",
            StateKind::Running => "Running",
            StateKind::AwaitingReboot => "AwaitingReboot",
            StateKind::Completed => "Completed",
            StateKind::Failed => "Failed",
        }
    }

    /// The attempt a state names: for `Queued` the next one.
    fn attempt_of(state: &JobState) -> u32 {
        match state {
            JobState::Queued { attempt, .. } => *attempt,
            other => other.attempt().map_or(0, |a| a.number),
        }
    }

    /// What a commit's changes were before it: the state kind of each changed job.
    pub(crate) struct Pending(Vec<Option<StateKind>>);

    #[inline]
    pub(crate) fn before_commit(state: &Replay, commit: &Commit) -> Pending {
        if commit.changes.is_empty() || !info_enabled() {
            return Pending(Vec::new());
        }
        Pending(
            commit
                .changes
                .iter()
                .map(|c| state.jobs().get(&c.job).map(|r| r.state().kind()))
                .collect(),
        )
    }

    /// After the store acknowledged `commit` (now at `revision`).
    pub(crate) fn committed(pending: Pending, commit: &Commit, revision: Revision) {
        if pending.0.len() == commit.changes.len() {
            for (change, from) in commit.changes.iter().zip(pending.0) {
                tracing::info!(
                    name: "transition",
                    target: TARGET,
                    job = %change.job,
                    seq = change.seq,
                    from = from.map_or("none", state_name),
                    to = state_name(change.state.kind()),
                    event = %change.event.kind.name(),
                    run = change.state.run(),
                    attempt = attempt_of(&change.state),
                    revision = revision.0,
                    "{} → {} ({})",
                    from.map_or("none", state_name),
                    state_name(change.state.kind()),
                    change.job
                );
            }
        }
        for note in &commit.dead_lettered {
            tracing::warn!(
                name: "dead_letter",
                target: TARGET,
                key = %note.key,
                reason = %note.reason,
                attempts = note.attempts,
                "status message moved to the dead letters"
            );
        }
    }

    pub(crate) fn effects(effects: &[Effect]) {
        for effect in effects {
            let (name, attempt) = match effect {
                Effect::Launch(a) => ("Launch", a),
                Effect::Terminate(a) => ("Terminate", a),
                Effect::Verify(a) => ("Verify", a),
                Effect::ScheduleRestart { job, kind, .. } => {
                    let restart = match kind {
                        RebootKind::Soft => "Soft",
                        RebootKind::Hard => "Hard",
                    };
                    tracing::info!(
                        name: "effect",
                        target: TARGET,
                        effect = "ScheduleRestart",
                        job = %job,
                        run = 0u32,
                        attempt = 0u32,
                        restart,
                        "effect ScheduleRestart ({job})"
                    );
                    continue;
                }
            };
            tracing::info!(
                name: "effect",
                target: TARGET,
                effect = name,
                job = %attempt.job,
                run = attempt.run,
                attempt = attempt.number,
                restart = "",
                "effect {name} ({})",
                attempt.job
            );
        }
    }

    pub(crate) fn delivery(
        call: &'static str,
        delivered: usize,
        retrying: usize,
        dead_lettered: usize,
        pending: usize,
    ) {
        tracing::debug!(
            name: "delivery",
            target: TARGET,
            call,
            delivered,
            retrying,
            dead_lettered,
            pending,
            "{call}: {delivered} delivered, {retrying} retrying, {dead_lettered} dead-lettered, {pending} pending"
        );
    }

    pub(crate) fn recovery(report: &OpenReport) {
        for cut in &report.cut {
            tracing::warn!(
                name: "recovery_cut",
                target: TARGET,
                file = %cut.file.display(),
                offset = cut.offset,
                bytes = cut.bytes,
                damage = %cut.damage,
                "{cut}"
            );
        }
        for file in &report.removed {
            tracing::warn!(
                name: "recovery_removed",
                target: TARGET,
                file = %file.display(),
                "removed the leftover {}",
                file.display()
            );
        }
    }

    /// The unfinished jobs before the reconciliation at open, with their sequence numbers.
    pub(crate) struct Reconciling(Vec<(JobId, u64)>);

    pub(crate) fn reconciling(state: &Replay) -> Reconciling {
        if !info_enabled() {
            return Reconciling(Vec::new());
        }
        Reconciling(
            state
                .jobs()
                .unfinished()
                .map(|r| (r.id().clone(), r.seq()))
                .collect(),
        )
    }

    pub(crate) fn reconciled(
        before: Reconciling,
        state: &Replay,
        boot: &BootId,
        effects: &Effects,
    ) {
        let changed = before
            .0
            .iter()
            .filter(|(job, seq)| state.jobs().get(job).is_some_and(|r| r.seq() != *seq))
            .count();
        tracing::info!(
            name: "reconciled",
            target: TARGET,
            boot = %boot,
            jobs = before.0.len(),
            changed,
            effects = effects.len(),
            "reconciled {} unfinished jobs with boot {boot}: {changed} changed, {} effects",
            before.0.len(),
            effects.len()
        );
    }
}

#[cfg(feature = "tracing")]
pub(crate) use on::*;

#[cfg(not(feature = "tracing"))]
mod off {
    use crate::core::effect::{Effect, Effects};
    use crate::core::id::BootId;
    use crate::store::{Commit, Replay, Revision};

    /// Nothing: without the feature nothing is collected.
    pub(crate) struct Pending;
    /// Nothing: without the feature nothing is collected.
    pub(crate) struct Reconciling;

    #[inline(always)]
    pub(crate) fn before_commit(_: &Replay, _: &Commit) -> Pending {
        Pending
    }
    #[inline(always)]
    pub(crate) fn committed(_: Pending, _: &Commit, _: Revision) {}
    #[inline(always)]
    pub(crate) fn effects(_: &[Effect]) {}
    #[inline(always)]
    pub(crate) fn reconciling(_: &Replay) -> Reconciling {
        Reconciling
    }
    #[inline(always)]
    pub(crate) fn reconciled(_: Reconciling, _: &Replay, _: &BootId, _: &Effects) {}
}

#[cfg(not(feature = "tracing"))]
pub(crate) use off::*;

/// Enters a `DEBUG` span named after a ledger call for the rest of the enclosing block:
/// `call_span!("tick")`, `call_span!("begin", job = job)`, `call_span!("launched", attempt =
/// attempt)` (an `&AttemptId`), `call_span!("requeue", key = key)`. Without the feature it expands to nothing (its arguments are not evaluated).
#[cfg(feature = "tracing")]
macro_rules! call_span {
    ($name:literal) => {
        let _jobstate_span =
            ::tracing::debug_span!(target: $crate::observe::TARGET, $name).entered();
    };
    ($name:literal, attempt = $attempt:expr) => {
        let _jobstate_attempt: &$crate::core::effect::AttemptId = $attempt;
        let _jobstate_span = ::tracing::debug_span!(
            target: $crate::observe::TARGET,
            $name,
            job = %_jobstate_attempt.job,
            run = _jobstate_attempt.run,
            attempt = _jobstate_attempt.number,
        )
        .entered();
    };
    ($name:literal, $field:ident = $value:expr) => {
        let _jobstate_span =
            ::tracing::debug_span!(target: $crate::observe::TARGET, $name, $field = %$value)
                .entered();
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! call_span {
    ($($anything:tt)*) => {};
}

/// Emits the recovery findings of `store` (its [`OpenReport`](crate::store::OpenReport)). Without the
/// feature it expands to nothing: the store is not asked.
#[cfg(feature = "tracing")]
macro_rules! recovery_findings {
    ($store:expr) => {
        $crate::observe::recovery(&$crate::store::Store::open_report(&$store))
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! recovery_findings {
    ($($anything:tt)*) => {};
}

/// Emits the `delivery` event of a call from its report (`Delivery` or `Answered`) and the
/// number of messages still pending. Without the feature it expands to nothing.
#[cfg(feature = "tracing")]
macro_rules! delivery {
    ($call:literal, $report:expr, $pending:expr) => {
        $crate::observe::delivery(
            $call,
            $report.delivered,
            $report.retrying,
            $report.dead_lettered,
            $pending,
        )
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! delivery {
    ($($anything:tt)*) => {};
}

pub(crate) use {call_span, delivery, recovery_findings};

//! Reboot-proof job state for software-deployment agents.
//!
//! A deployment agent runs jobs (packages, upgrades) that may restart the machine. For thirty
//! years agents have lost track of such jobs: an upgrade run as a background task with no user
//! logged on completes but is never recorded; a wrapper waits for a shutdown message that a
//! service never receives and marks the job failed; and the agent runs the same mandatory
//! upgrade again, forever. `jobstate` makes the rules explicit and proven:
//!
//! - a pure state machine, [`transition`]: `Queued → Running → AwaitingReboot →
//!   Completed | Failed`, driven by [`Event`]s that carry their time and boot identity, returning
//!   the [`Effect`]s the caller must carry out. It never does IO and never reads a clock;
//! - a [`Ledger`] that an agent drives from its loop: every transition is committed to a
//!   [`Store`](store::Store) *before* its effects are handed out, and on open every unfinished job is
//!   reconciled against the current [`BootId`] — reboot truth comes from boot identity, never
//!   from messages;
//! - a durable outbox of [`StatusMessage`]s, committed with their transitions and delivered at
//!   least once to a [`StatusSink`](report::StatusSink) by [`Ledger::deliver`], whoever is logged on;
//! - a [`SessionContext`](session::SessionContext) for the facts of the session (boot, user logged on, service or
//!   interactive, whether shutdown notices arrive): facts, never requirements for bookkeeping.
//!
//! The promise, proven by the tests: no sequence of events, crashes, restarts or reboots moves a
//! completed mandatory job out of `Completed` or starts it again. [`semantics`] states every
//! rule: the states, events and effects, what the agent may never hear, the invariants, and what
//! a store must keep.
//!
//! # Recipe: an agent loop
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use jobstate::session::{ExecutionContext, LivePrograms, NoticeDelivery, SessionFacts};
//! use jobstate::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new(); // an agent ships a durable store here
//! let session = SessionFacts {
//!     boot: BootId::new("boot-a")?,
//!     user: UserPresence::NoneLoggedOn,
//!     context: ExecutionContext::Service,
//!     notices: NoticeDelivery::NotDelivered,
//!     now: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
//!     since_boot: std::time::Duration::from_secs(60),
//!     programs: LivePrograms::Unknown,
//!     restart_pending: jobstate::session::RestartPending::Unknown,
//! };
//! let upgrade = JobSpec::new(JobId::new("os-upgrade")?)
//!     .with_reboot(RebootBehaviour::RestartsMachine);
//!
//! // Boot A: the agent starts, learns of the job and runs it.
//! let (mut ledger, recovered) = Ledger::open(store.clone(), session.clone())?;
//! assert!(recovered.is_empty()); // an agent carries these out first
//! ledger.offer(upgrade.clone())?;
//! if let NextJob::Run(job) = ledger.next_runnable() {
//!     let attempt = ledger.begin(&job)?; // Running is durable; now launch the program,
//!     let effects = ledger.launched(&attempt, ProgramId::new(4242, 1))?; // and record that it runs.
//!     assert!(effects.is_empty()); // every call returns effects: carry them all out
//! }
//! drop(ledger); // the program restarts the machine: no exit code, no notice.
//!
//! // Boot B: the agent starts again; the boot changed, so the upgrade is complete.
//! let (ledger, recovered) = Ledger::open(store, SessionFacts { boot: BootId::new("boot-b")?, ..session })?;
//! assert!(recovered.is_empty()); // the new boot completed the upgrade: nothing to verify
//! let job = ledger.job(upgrade.id()).unwrap();
//! assert_eq!(job.state().kind(), StateKind::Completed);
//! // Its status message was committed with it: `ledger.deliver(&mut sink)` sends it.
//! assert_eq!(ledger.outbox().count(), 1);
//! # Ok(()) }
//! ```
//!
//! # Recipe: a custom store
//!
//! Implement [`store::Store`]: `load` returns every job *and every pending status message*
//! ([`store::Snapshot`]); `commit` applies a [`store::Commit`] — its changes, the status messages
//! they produced ([`Commit::reports`](store::Commit::reports)) and the acknowledgements of
//! delivered ones ([`Commit::delivered`](store::Commit::delivered)) — atomically and durably,
//! refusing it with [`StoreError::Conflict`](store::StoreError::Conflict) when its base revision
//! is not current. [`store::Replay`] checks a commit before you write it and rebuilds everything
//! from the [`Record`](store::Record)s you keep ([`Commit::records`](store::Commit::records));
//! [`codec`] gives a versioned encoding.
//!
//! # Recipe: a deployment tool's unit test
//!
//! With the `testkit` feature, `testkit::simulator` runs the real ledger on a simulated machine:
//! reboots, agent crashes at chosen points, absent users, lost notices, a clock that jumps, a
//! flaky site server, scripted programs; a scenario is a few lines and replays from its seed.
//! `testkit::conformance` proves a store of your own. Without the feature, use [`MemoryStore`]
//! and [`session::SessionFacts`]: drop the ledger and open a new one on a clone of the store to simulate
//! a crash; open it with another [`BootId`] to simulate a reboot.
//!
//! # Comparison with what agents do today
//!
//! - *Detection rules* (ConfigMgr, Intune) re-check "is it installed?" to decide whether to run
//!   again; `jobstate` keeps the record of completion itself and uses a detection check only to
//!   confirm a result after a reboot ([`JobSpec::with_verify_after_reboot`]).
//! - *Pending-reboot checks* loop when the flag never clears; here the reboots of one attempt
//!   are bounded ([`JobSpec::with_max_reboots`]) and the job fails with a reason that says so.
//! - *Job queues* delete finished rows after a retention window; a completed mandatory job here
//!   is a tombstone that is never pruned while the job can be offered.
//!
//! # Modules
//!
//! The crate root holds what an agent uses every day: the [`Ledger`] and its options, the
//! [`JobSpec`] and its policies, ids, effects, states, events, errors, status messages, the
//! [`JobRecord`] the ledger answers with, and the store, session and sink most agents pick
//! ([`FileStore`], [`MemoryStore`], [`LinuxSession`] on Linux, `JsonLinesSink` with the
//! default feature `json-lines`). The rest is in modules:
//!
//! - [`store`] — the [`Store`](store::Store) trait for those who write a store, what a store
//!   keeps and replays (records, changes, job records, retention), every shipped store;
//! - [`session`] — the [`SessionContext`](session::SessionContext) trait, the plain-value
//!   [`SessionFacts`](session::SessionFacts) and the session's facts;
//! - [`report`] — status reporting: the outbox, sinks (the [`StatusSink`](report::StatusSink)
//!   trait, the JSON-lines and HTTP sinks), delivery answers and policy, dead letters;
//! - [`codec`] — the versioned encoding of a store's records;
//! - [`observe`] — what feature `tracing` emits;
//! - `testkit` (feature `testkit`) — the store conformance suite and the simulator;
//! - [`semantics`] — the rules, in prose.
//!
//! # Features
//!
//! | feature | default | adds | costs |
//! |---|---|---|---|
//! | `json-lines` | on | `JsonLinesSink` and `report::SinkOptions`: status messages appended to a local file as JSON lines, synced before they are accepted | `serde_json` (4 crates) |
//! | `sqlite` | off | `store::SqliteStore`: the store in one SQLite database file | `rusqlite` (11 crates); links the system's `libsqlite3`: a binary needs its development files to link (Debian: `libsqlite3-dev`) and the library to run |
//! | `sqlite-bundled` | off | `sqlite`, with SQLite compiled into the binary instead: nothing to install | SQLite's C source compiled with the C compiler Rust links with (14 crates in all with `sqlite`) |
//! | `http` | off | `report::HttpSink`: each status message `POST`ed to a site server over HTTP(S), TLS by rustls with the Mozilla roots compiled in | `ureq`, `rustls`, `ring` (C and assembly compiled), `webpki-roots`, `serde_json` (28 crates) |
//! | `testkit` | off | `testkit::conformance` (the suite that proves a store of yours) and `testkit::simulator` (a simulated machine for a deployment tool's tests) | no dependencies; more code to compile |
//! | `tracing` | off | a `DEBUG` span per ledger call and events for every committed transition and effect handed out (`INFO`), delivery and dead letters, and what recovery repaired at open (`WARN`), with stable names and fields ([`observe`]) | `tracing` without default features (4 crates: `tracing`, `tracing-core`, `pin-project-lite`, `once_cell`; no proc-macro); without the feature the calls compile to nothing |
//! | `cli` | off | the `jobstate` binary, which inspects a store read-only while an agent holds it (a SQLite store with `sqlite`) | `serde_json`; the library is unchanged |
//!
//! [`LinuxSession`] is there on Linux whatever the features. Without any feature the crate
//! depends on `chrono`, `serde`, `postcard`, `thiserror`, `rustc-hash` and `crc32c` (18 crates
//! with their own dependencies, build-time macros and build scripts included) and does all its IO with `std`. The crate
//! counts above are what a feature adds to that, from `cargo tree`.
//!
//! On a machine without SQLite's development files, `--features sqlite` builds the library but a
//! binary that uses it fails to link (`unable to find library -lsqlite3`): take `sqlite-bundled`
//! there, or install `libsqlite3-dev`. Tests, examples and benches of this crate build either
//! way: its dev-dependency on `rusqlite` is bundled.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89 (edition 2024; `File::try_lock` for the file store's single-writer lock). Raising it
//! is a minor-version change.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod change_decoder;
mod change_delta;
pub mod codec;
mod core;
mod error;
mod exit_status;
mod few_keys;
mod ledger;
#[cfg(target_os = "linux")]
mod linux_session;
pub mod observe;
mod record;
pub mod report;
mod retention;
mod safe_fs;
/// The semantics the crate promises, for those who embed it (`SEMANTICS.md`, shipped with the
/// crate): states, events, effects, reboot truth, what the agent may never hear, status
/// reporting, the invariants and the rules every store keeps. This module holds no items.
#[doc = ""]
#[doc = include_str!("../SEMANTICS.md")]
pub mod semantics {}
pub mod session;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

// The crate root: what an agent uses every day. Store implementers' types are in `store`, the
// session's facts in `session`, status reporting in `report`.
pub use core::Timestamp;
pub use core::effect::{AttemptId, Effect, Effects, StatusKey, StatusMessage};
pub use core::event::{AttemptRef, CheckResult, Event, EventKind, EventName};
pub use core::exit_code::{ExitCodePolicy, ExitOutcome, ProgramExit};
pub use core::id::{BootId, IdError, JobId};
pub use core::presence::UserPresence;
pub use core::program::{ProgramId, ProgramStatus};
pub use core::restart_policy::{MaintenanceWindow, RestartHold, RestartPolicy, RestartRelease};
pub use core::spec::{JobSpec, RebootBehaviour, RetryPolicy, RunCondition};
pub use core::state::{
    Attempt, FailureReason, JobState, Launch, ProvisionalFailure, RebootAttribution, RebootKind,
    StateKind, Termination,
};
pub use core::transition::{Step, TransitionError, transition};
pub use error::{Error, WaitReason};
pub use ledger::{JobWait, Ledger, LedgerOptions, NextJob, Offer, SpecEffect};
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use linux_session::LinuxSession;
#[cfg(feature = "json-lines")]
#[cfg_attr(docsrs, doc(cfg(feature = "json-lines")))]
pub use report::JsonLinesSink;
pub use store::{FileStore, FileStoreOptions, JobRecord, MemoryStore};

/// The `chrono` this crate's timestamps come from, so callers need not depend on it directly.
pub use chrono;

// The README's examples run as doctests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

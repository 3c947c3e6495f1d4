//! The facts of the session the agent runs in. Facts, never requirements: recording state and
//! reporting status never depend on a user being logged on or a notice being delivered.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BootId, Timestamp};

/// Whether an interactive user is logged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserPresence {
    /// At least one interactive user is logged on.
    LoggedOn,
    /// Nobody is logged on.
    NoneLoggedOn,
    /// It could not be determined.
    Unknown,
}

/// How the agent process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExecutionContext {
    /// As a service (a Windows service, a systemd unit).
    Service,
    /// As a background task with no session of its own.
    BackgroundTask,
    /// In an interactive user session.
    Interactive,
}

/// Whether shutdown notices reach the agent. A service does not receive the window messages an
/// interactive program gets; on Linux nothing arrives unless the agent wires its SIGTERM handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoticeDelivery {
    /// Shutdown notices are delivered (but may still be missed: a power cut sends none).
    Delivered,
    /// Shutdown notices never reach the agent.
    NotDelivered,
}

/// Why a session fact could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The boot identity could not be read.
    #[error(
        "could not read the boot identity from {source_name}: {detail}; the ledger cannot reconcile jobs without it"
    )]
    BootId {
        /// Where it was read from.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// Who is logged on could not be read (the presence is then `Unknown`).
    #[error("could not read who is logged on from {source_name}: {detail}")]
    Users {
        /// Where it was read from.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// The time since boot could not be read.
    #[error(
        "could not read the time since boot from {source_name}: {detail}; run-time limits need it"
    )]
    Clock {
        /// Where it was read from.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
}

/// The facts of the session the agent runs in. Implement it over the real machine, use
/// [`LinuxSession`](crate::LinuxSession) on Linux, or [`SessionFacts`] in tests.
///
/// The boot identity must differ for every running kernel instance and be equal within one:
/// uptime and "last boot time" do not qualify.
///
/// # Supplying the facts on Windows
///
/// The crate ships no Windows code (it would be untested here); this is how a Windows agent
/// supplies each fact.
///
/// - **Boot identity.** Not the last boot time: Windows Fast Startup (hybrid shutdown) resumes a
///   hibernated kernel and does not update it, and a reset clock moves it. Nor anything kept in
///   kernel memory, such as a volatile registry key: Fast Startup restores that memory. Use a
///   counter the system increments at every start, Fast Startup included — for example the
///   `BootId` value under `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Memory
///   Management\PrefetchParameters` — and verify the choice on the Windows versions you ship
///   to: this crate ships no Windows code and has tested none.
/// - **Shutdown notices.** A service never receives `WM_QUERYENDSESSION`/`WM_ENDSESSION`: those
///   window messages go to interactive programs (the very message seed 001's wrapper waited for
///   in vain). A service registers for `SERVICE_CONTROL_PRESHUTDOWN` (with
///   `SERVICE_ACCEPT_PRESHUTDOWN`) or `SERVICE_CONTROL_SHUTDOWN` in its handler (see
///   `RegisterServiceCtrlHandlerExW`), and reports them as delivered only then. Even so they are
///   hints: a power cut or a crash sends none.
/// - **Users logged on.** `WTSEnumerateSessionsW` with `WTSQuerySessionInformationW`
///   (`WTSConnectState` of `WTSActive`, and a non-empty `WTSUserName`); report
///   [`UserPresence::Unknown`] when the call fails, never a guess.
/// - **Execution context.** A service (started by the service control manager), a scheduled
///   background task (Task Scheduler, "run whether user is logged on or not"), or interactive.
/// - **Time since boot.** `QueryUnbiasedInterruptTime` (excludes sleep) or `GetTickCount64`
///   (includes it): monotonic within a boot, restarting at each boot.
pub trait SessionContext {
    /// The identity of the current boot.
    fn boot_id(&self) -> Result<BootId, SessionError>;
    /// Whether an interactive user is logged on now.
    fn user_presence(&self) -> UserPresence;
    /// How the agent runs.
    fn execution_context(&self) -> ExecutionContext;
    /// Whether shutdown notices reach the agent.
    fn shutdown_notices(&self) -> NoticeDelivery;
    /// The current wall-clock time. It may jump (backwards too); nothing but back-off depends
    /// on it.
    fn now(&self) -> Timestamp;
    /// Monotonic time since the current boot began (Linux `CLOCK_BOOTTIME`, Windows
    /// `QueryUnbiasedInterruptTime` or `GetTickCount64`): never jumps, restarts at each boot.
    /// The run-time limit is measured on it.
    fn since_boot(&self) -> Duration;
}

/// A session described by plain values: for tests, examples and simulations.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use jobstate::{BootId, ExecutionContext, NoticeDelivery, SessionContext, SessionFacts, UserPresence};
///
/// let mut session = SessionFacts {
///     boot: BootId::new("boot-1").unwrap(),
///     user: UserPresence::NoneLoggedOn,
///     context: ExecutionContext::Service,
///     notices: NoticeDelivery::NotDelivered,
///     now: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
///     since_boot: std::time::Duration::from_secs(90),
/// };
/// session.now += chrono::TimeDelta::minutes(5); // time passes on both clocks
/// session.since_boot += std::time::Duration::from_secs(300);
/// assert_eq!(session.user_presence(), UserPresence::NoneLoggedOn);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// The current boot.
    pub boot: BootId,
    /// Who is logged on.
    pub user: UserPresence,
    /// How the agent runs.
    pub context: ExecutionContext,
    /// Whether shutdown notices arrive.
    pub notices: NoticeDelivery,
    /// The current wall-clock time.
    pub now: Timestamp,
    /// Monotonic time since this boot began.
    pub since_boot: Duration,
}

impl SessionContext for SessionFacts {
    fn boot_id(&self) -> Result<BootId, SessionError> {
        Ok(self.boot.clone())
    }
    fn user_presence(&self) -> UserPresence {
        self.user
    }
    fn execution_context(&self) -> ExecutionContext {
        self.context
    }
    fn shutdown_notices(&self) -> NoticeDelivery {
        self.notices
    }
    fn now(&self) -> Timestamp {
        self.now
    }
    fn since_boot(&self) -> Duration {
        self.since_boot
    }
}

impl<T: SessionContext + ?Sized> SessionContext for &T {
    fn boot_id(&self) -> Result<BootId, SessionError> {
        (**self).boot_id()
    }
    fn user_presence(&self) -> UserPresence {
        (**self).user_presence()
    }
    fn execution_context(&self) -> ExecutionContext {
        (**self).execution_context()
    }
    fn shutdown_notices(&self) -> NoticeDelivery {
        (**self).shutdown_notices()
    }
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn since_boot(&self) -> Duration {
        (**self).since_boot()
    }
}

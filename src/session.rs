//! The facts of the session the agent runs in. Facts, never requirements: recording state and
//! reporting status never depend on a user being logged on or a notice being delivered.
//!
//! A platform implements [`SessionContext`]; [`SessionFacts`] is the plain-value one (for tests
//! and simulations), and `LinuxSession` (Linux only, also at the crate root) reads the machine.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::core::Timestamp;
use crate::core::effect::AttemptId;
use crate::core::id::BootId;
pub use crate::core::presence::UserPresence;
use crate::core::program::{ProgramId, ProgramStatus};
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use crate::linux_session::LinuxSession;

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

/// Whether the operating system says a restart is pending: an update installed outside the
/// ledger, or by a job whose program said nothing, waits for a restart to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPending {
    /// The system says a restart is pending.
    Pending,
    /// The system says none is pending.
    NotPending,
    /// It could not be determined (the default of a session that does not ask).
    Unknown,
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
    /// A program's identity could not be read.
    #[error(
        "could not read the identity of a program from {source_name}: {detail}; record the launch as soon as the program started, before it can be reaped"
    )]
    Program {
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
/// [`LinuxSession`] on Linux, or [`SessionFacts`] in tests.
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
    /// Whether the program of `attempt`, a job running in the current boot, is alive.
    ///
    /// With `program` (its launch was recorded): whether that very process is alive (a process
    /// id reused by another program is not it). Without (the launch was never recorded): whether
    /// any process of the attempt is alive, which the agent makes decidable by giving the program
    /// something it carries, such as the environment variable [`ATTEMPT_ENV`] set to
    /// [`AttemptId::env_value`]. A process that exited and was not yet reaped is alive: its
    /// exit status is still to be collected. Answer [`ProgramStatus::Unknown`] when you cannot
    /// tell: the ledger then concludes nothing, and the job waits, visibly.
    ///
    /// The ledger asks at open (a program that died with the agent ends its attempt; a launch
    /// never recorded is launched again) and on every [`tick`](crate::Ledger::tick).
    fn program_status(&self, attempt: &AttemptId, program: Option<&ProgramId>) -> ProgramStatus;

    /// Whether the operating system says a restart is pending. The default answers
    /// [`RestartPending::Unknown`], which the ledger treats as "not known to be pending".
    ///
    /// Where the facts live: on Debian and Ubuntu, the file `/run/reboot-required` (written by
    /// package hooks); on RHEL and Fedora, `needs-restarting -r` (exit status 1: a restart is
    /// needed); on Windows, the keys that ConfigMgr and Intune read — the key
    /// `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending`,
    /// the key `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired`,
    /// and the value `PendingFileRenameOperations` under
    /// `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager` (the crate ships no Windows
    /// code; verify on the versions you ship to).
    fn restart_pending(&self) -> RestartPending {
        RestartPending::Unknown
    }
}

/// The environment variable an agent sets for a job's program, with the value
/// [`AttemptId::env_value`], so that a session can tell whether any process of an attempt is
/// alive when its launch was never recorded
/// ([`LinuxSession`] looks for it in `/proc/<pid>/environ`).
pub const ATTEMPT_ENV: &str = "JOBSTATE_ATTEMPT";

/// Which programs are alive, as a [`SessionFacts`] states it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LivePrograms {
    /// The session cannot tell (the default): the ledger concludes nothing about programs.
    #[default]
    Unknown,
    /// The programs of these attempts are alive; those of all others are gone.
    Known(BTreeSet<AttemptId>),
}

/// A session described by plain values: for tests, examples and simulations.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use jobstate::{BootId, UserPresence};
/// use jobstate::session::{
///     ExecutionContext, LivePrograms, NoticeDelivery, SessionContext, SessionFacts,
/// };
///
/// let mut session = SessionFacts {
///     boot: BootId::new("boot-1").unwrap(),
///     user: UserPresence::NoneLoggedOn,
///     context: ExecutionContext::Service,
///     notices: NoticeDelivery::NotDelivered,
///     now: Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap(),
///     since_boot: std::time::Duration::from_secs(90),
///     programs: LivePrograms::Known(Default::default()), // no program alive
///     restart_pending: jobstate::session::RestartPending::Unknown,
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
    /// Which jobs' programs are alive.
    pub programs: LivePrograms,
    /// Whether the operating system says a restart is pending.
    pub restart_pending: RestartPending,
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
    fn program_status(&self, attempt: &AttemptId, _: Option<&ProgramId>) -> ProgramStatus {
        match &self.programs {
            LivePrograms::Unknown => ProgramStatus::Unknown,
            LivePrograms::Known(alive) if alive.contains(attempt) => ProgramStatus::Alive,
            LivePrograms::Known(_) => ProgramStatus::Gone,
        }
    }
    fn restart_pending(&self) -> RestartPending {
        self.restart_pending
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
    fn program_status(&self, attempt: &AttemptId, program: Option<&ProgramId>) -> ProgramStatus {
        (**self).program_status(attempt, program)
    }
    fn restart_pending(&self) -> RestartPending {
        (**self).restart_pending()
    }
}

/// The facts of the crate's unit tests: boot `boot`, a service with no user logged on and no
/// shutdown notices, at a fixed instant.
#[cfg(test)]
pub(crate) fn test_facts(boot: &str) -> SessionFacts {
    use chrono::TimeZone;
    SessionFacts {
        boot: BootId::new(boot).unwrap(),
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: chrono::Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap(),
        since_boot: Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: RestartPending::Unknown,
    }
}

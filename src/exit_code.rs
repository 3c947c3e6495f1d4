//! Mapping a program's exit code to what it means for the job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitOutcome {
    /// The program succeeded; nothing else is needed.
    Success,
    /// The program succeeded, but a restart is required to finish (a *soft* reboot: Windows
    /// Installer's 3010). The agent must restart the machine.
    SuccessRestartRequired,
    /// The program succeeded and has already initiated a restart (a *hard* reboot: Windows
    /// Installer's 1641). The machine is going down.
    SuccessRestartInitiated,
    /// Another installation is in progress; try again later (Windows Installer's 1618).
    RetryLater,
    /// The program failed.
    Failure,
}

/// A table from exit codes to [`ExitOutcome`]s, with an outcome for every code not in the table.
///
/// The default is [`ExitCodePolicy::windows_installer`], the conventions that ConfigMgr and
/// Intune use.
///
/// ```
/// use jobstate::{ExitCodePolicy, ExitOutcome};
/// let msi = ExitCodePolicy::default();
/// assert_eq!(msi.outcome(0), ExitOutcome::Success);
/// assert_eq!(msi.outcome(3010), ExitOutcome::SuccessRestartRequired);
/// assert_eq!(msi.outcome(1603), ExitOutcome::Failure);
///
/// // A tool whose exit code 2 means "nothing to do": a custom table.
/// let custom = ExitCodePolicy::new(ExitOutcome::Failure)
///     .with(0, ExitOutcome::Success)
///     .with(2, ExitOutcome::Success);
/// assert_eq!(custom.outcome(2), ExitOutcome::Success);
/// assert_eq!(custom.outcome(1), ExitOutcome::Failure);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCodePolicy {
    table: BTreeMap<i32, ExitOutcome>,
    otherwise: ExitOutcome,
}

impl ExitCodePolicy {
    /// An empty table in which every code means `otherwise`.
    pub fn new(otherwise: ExitOutcome) -> Self {
        Self {
            table: BTreeMap::new(),
            otherwise,
        }
    }

    /// The Windows Installer conventions: 0 and 1707 success, 3010 success with a restart
    /// required, 1641 success with a restart initiated, 1618 retry later, anything else failure.
    pub fn windows_installer() -> Self {
        Self::new(ExitOutcome::Failure)
            .with(0, ExitOutcome::Success)
            .with(1707, ExitOutcome::Success)
            .with(3010, ExitOutcome::SuccessRestartRequired)
            .with(1641, ExitOutcome::SuccessRestartInitiated)
            .with(1618, ExitOutcome::RetryLater)
    }

    /// Maps `code` to `outcome`, replacing any earlier mapping of `code`.
    #[must_use]
    pub fn with(mut self, code: i32, outcome: ExitOutcome) -> Self {
        self.table.insert(code, outcome);
        self
    }

    /// What `code` means under this policy.
    pub fn outcome(&self, code: i32) -> ExitOutcome {
        self.table.get(&code).copied().unwrap_or(self.otherwise)
    }
}

impl Default for ExitCodePolicy {
    fn default() -> Self {
        Self::windows_installer()
    }
}

//! How a program ended, and what its exit code means for the job.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a program ended: with an exit code, or killed by a signal (Unix).
///
/// A signal is not an exit code: it is never looked up in an [`ExitCodePolicy`]. An attempt
/// whose program a signal ended failed with [`FailureReason::Signal`](crate::FailureReason::Signal),
/// and the retry policy applies; for a job whose program restarts the machine it is provisional
/// like a failing exit code (the shutdown's `SIGTERM` is how such a program usually ends).
///
/// Convert a [`std::process::ExitStatus`] without loss, or a plain code:
///
/// ```
/// use jobstate::ProgramExit;
/// assert_eq!(ProgramExit::from(3010), ProgramExit::Code(3010));
/// # #[cfg(unix)] {
/// use std::os::unix::process::ExitStatusExt;
/// let killed = std::process::ExitStatus::from_raw(15); // what waitpid reports for SIGTERM
/// assert_eq!(ProgramExit::from(killed), ProgramExit::Signal(15));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgramExit {
    /// The program exited with this code (on Unix, 0–255).
    Code(i32),
    /// A signal ended the program (Unix): its number.
    Signal(i32),
}

impl From<i32> for ProgramExit {
    fn from(code: i32) -> Self {
        ProgramExit::Code(code)
    }
}

impl fmt::Display for ProgramExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramExit::Code(code) => write!(f, "exit code {code}"),
            ProgramExit::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// What an exit code means (in a job spec's text form: `success`, `success_restart_required`,
/// `success_restart_initiated`, `retry_later`, `failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// The default is the platform's: [`ExitCodePolicy::unix`] on Unix (0 success, anything else
/// failure), [`ExitCodePolicy::windows_installer`] on Windows (the conventions that ConfigMgr
/// and Intune use). On Unix a program cannot say "restart required" with 3010: an exit status
/// has 8 bits (3010 arrives as 194); the operating system says it instead
/// ([`SessionContext::restart_pending`](crate::session::SessionContext::restart_pending)).
///
/// ```
/// use jobstate::{ExitCodePolicy, ExitOutcome};
/// let unix = ExitCodePolicy::unix();
/// assert_eq!(unix.outcome(0), ExitOutcome::Success);
/// assert_eq!(unix.outcome(100), ExitOutcome::Failure); // apt's "an error occurred"
///
/// let msi = ExitCodePolicy::windows_installer();
/// assert_eq!(msi.outcome(0), ExitOutcome::Success);
/// assert_eq!(msi.outcome(3010), ExitOutcome::SuccessRestartRequired);
/// assert_eq!(msi.outcome(1603), ExitOutcome::Failure);
///
/// // A tool whose exit code 2 means "nothing to do": a custom table.
/// let custom = ExitCodePolicy::new(ExitOutcome::Failure)
///     .with_code(0, ExitOutcome::Success)
///     .with_code(2, ExitOutcome::Success);
/// assert_eq!(custom.outcome(2), ExitOutcome::Success);
/// assert_eq!(custom.outcome(1), ExitOutcome::Failure);
/// ```
///
/// # Text form
///
/// In a job spec written as text (JSON), a policy is the name of a shipped table, `"unix"` or
/// `"windows_installer"`, or a map from codes to outcomes with an optional `"otherwise"`
/// (default `"failure"`); it is written back as the map:
///
/// ```
/// use jobstate::{ExitCodePolicy, ExitOutcome};
/// let policy: ExitCodePolicy =
///     serde_json::from_str(r#"{ "0": "success", "194": "success_restart_required" }"#)?;
/// assert_eq!(policy.outcome(194), ExitOutcome::SuccessRestartRequired);
/// assert_eq!(policy.outcome(1), ExitOutcome::Failure);
/// let msi: ExitCodePolicy = serde_json::from_str(r#""windows_installer""#)?;
/// assert_eq!(msi, ExitCodePolicy::windows_installer());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCodePolicy {
    /// Shared: the jobs of a fleet mostly use one of a few tables, and a store keeps a spec for
    /// every job it ever ran.
    table: Arc<BTreeMap<i32, ExitOutcome>>,
    otherwise: ExitOutcome,
}

/// The binary (journal) form of an [`ExitCodePolicy`].
#[derive(Deserialize)]
struct PolicyParts {
    table: BTreeMap<i32, ExitOutcome>,
    otherwise: ExitOutcome,
}

/// [`PolicyParts`] by reference, for writing.
#[derive(Serialize)]
#[serde(rename = "PolicyParts")]
struct PolicyPartsRef<'a> {
    table: &'a BTreeMap<i32, ExitOutcome>,
    otherwise: ExitOutcome,
}

/// The key of the text form that names the outcome of every code not listed.
const OTHERWISE: &str = "otherwise";

impl Serialize for ExitCodePolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if !s.is_human_readable() {
            return PolicyPartsRef {
                table: &self.table,
                otherwise: self.otherwise,
            }
            .serialize(s);
        }
        let mut map = s.serialize_map(Some(self.table.len() + 1))?;
        for (code, outcome) in self.table.iter() {
            map.serialize_entry(&code.to_string(), outcome)?;
        }
        map.serialize_entry(OTHERWISE, &self.otherwise)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ExitCodePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let parts = PolicyParts::deserialize(d)?;
            return Ok(Self {
                table: Arc::new(parts.table),
                otherwise: parts.otherwise,
            });
        }
        d.deserialize_any(PolicyVisitor)
    }
}

/// Reads the text form: a shipped table's name, or a map of codes.
struct PolicyVisitor;

impl<'de> serde::de::Visitor<'de> for PolicyVisitor {
    type Value = ExitCodePolicy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "\"unix\", \"windows_installer\", or a map from exit codes to outcomes such as {\"0\": \"success\", \"otherwise\": \"failure\"}",
        )
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        match name {
            "unix" => Ok(ExitCodePolicy::unix()),
            "windows_installer" => Ok(ExitCodePolicy::windows_installer()),
            other => Err(E::custom(format!(
                "unknown exit-code table {other:?}: name \"unix\" or \"windows_installer\", or write a map such as {{\"0\": \"success\"}}"
            ))),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut policy = ExitCodePolicy::new(ExitOutcome::Failure);
        let mut otherwise = None;
        while let Some(key) = map.next_key::<String>()? {
            let outcome: ExitOutcome = map.next_value()?;
            if key == OTHERWISE {
                if otherwise.replace(outcome).is_some() {
                    return Err(A::Error::custom("\"otherwise\" is given twice"));
                }
                continue;
            }
            let code: i32 = key.parse().map_err(|_| {
                A::Error::custom(format!(
                    "{key:?} is not an exit code: the keys of an exit-code map are codes such as \"3010\", or \"otherwise\""
                ))
            })?;
            if Arc::make_mut(&mut policy.table)
                .insert(code, outcome)
                .is_some()
            {
                return Err(A::Error::custom(format!("exit code {code} is given twice")));
            }
        }
        policy.otherwise = otherwise.unwrap_or(ExitOutcome::Failure);
        Ok(policy)
    }
}

impl ExitCodePolicy {
    /// An empty table in which every code means `otherwise`.
    pub fn new(otherwise: ExitOutcome) -> Self {
        Self {
            table: Arc::new(BTreeMap::new()),
            otherwise,
        }
    }

    /// Unix's convention: 0 success, anything else failure.
    pub fn unix() -> Self {
        Self::new(ExitOutcome::Failure).with_code(0, ExitOutcome::Success)
    }

    /// The Windows Installer conventions: 0 and 1707 success, 3010 success with a restart
    /// required, 1641 success with a restart initiated, 1618 retry later, anything else failure.
    pub fn windows_installer() -> Self {
        Self::new(ExitOutcome::Failure)
            .with_code(0, ExitOutcome::Success)
            .with_code(1707, ExitOutcome::Success)
            .with_code(3010, ExitOutcome::SuccessRestartRequired)
            .with_code(1641, ExitOutcome::SuccessRestartInitiated)
            .with_code(1618, ExitOutcome::RetryLater)
    }

    /// Maps `code` to `outcome`, replacing any earlier mapping of `code`.
    #[must_use]
    pub fn with_code(mut self, code: i32, outcome: ExitOutcome) -> Self {
        Arc::make_mut(&mut self.table).insert(code, outcome);
        self
    }

    /// What `code` means under this policy.
    pub fn outcome(&self, code: i32) -> ExitOutcome {
        self.table.get(&code).copied().unwrap_or(self.otherwise)
    }
}

impl Default for ExitCodePolicy {
    /// [`ExitCodePolicy::windows_installer`] on Windows, [`ExitCodePolicy::unix`] elsewhere.
    fn default() -> Self {
        if cfg!(windows) {
            Self::windows_installer()
        } else {
            Self::unix()
        }
    }
}

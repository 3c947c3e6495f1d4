//! What a job is: its identity and the policies that decide its transitions.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::exit_code::ExitCodePolicy;
use crate::core::id::JobId;
use crate::core::presence::UserPresence;
use crate::core::restart_policy::RestartPolicy;

/// When a job may run, with respect to an interactive user (text form: `always`,
/// `only_with_user`, `only_without_user`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunCondition {
    /// Whether or not a user is logged on (a system background task). The default.
    #[default]
    Always,
    /// Only while an interactive user is logged on.
    OnlyWithUser,
    /// Only while no interactive user is logged on.
    OnlyWithoutUser,
}

impl RunCondition {
    /// Whether a job with this condition may start given who is logged on. An `Unknown`
    /// presence satisfies only [`RunCondition::Always`]: a condition that cannot be confirmed
    /// is not met.
    pub fn allows(self, presence: UserPresence) -> bool {
        match self {
            RunCondition::Always => true,
            RunCondition::OnlyWithUser => presence == UserPresence::LoggedOn,
            RunCondition::OnlyWithoutUser => presence == UserPresence::NoneLoggedOn,
        }
    }
}

/// How a job's program relates to restarting the machine (text form: `never`, `may_request`,
/// `restarts_machine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RebootBehaviour {
    /// The job never restarts the machine. A reboot while it runs interrupts it (the retry
    /// policy applies). If its program still reports "restart required", the job completes and
    /// the restart is *not* requested (recorded as suppressed); if its program reports "restart
    /// initiated", the machine is going down regardless, so the ledger waits for the reboot.
    /// The default.
    #[default]
    Never,
    /// The program may ask for a restart through its exit code (3010, 1641). A reboot while it
    /// runs, before its exit code was recorded, interrupts it.
    MayRequest,
    /// The program restarts the machine itself, as an OS upgrade does: a reboot while it runs is
    /// its expected end, never a failure.
    RestartsMachine,
}

/// How failed attempts are retried: at most `max_attempts` attempts per run, with exponential
/// back-off between them.
///
/// ```
/// use std::time::Duration;
/// use jobstate::RetryPolicy;
/// let retry = RetryPolicy::default();
/// assert_eq!(retry.backoff(1), Duration::from_secs(60));
/// assert_eq!(retry.backoff(2), Duration::from_secs(120));
/// assert_eq!(retry.backoff(30), Duration::from_secs(3600)); // capped
/// ```
///
/// Text form (every field optional, defaults as above):
/// `{"max_attempts": 3, "initial_backoff": "1m", "multiplier": 2, "max_backoff": "1h"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per run, the first included; at least 1.
    pub max_attempts: u32,
    /// The wait after the first failed attempt.
    #[serde(with = "crate::core::duration_text")]
    pub initial_backoff: Duration,
    /// The factor by which the wait grows after each further failure.
    pub multiplier: u32,
    /// The longest wait.
    #[serde(with = "crate::core::duration_text")]
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// No retries: the first failure fails the run.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after attempt number `failed_attempt` (1-based) failed.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(32);
        let factor = self.multiplier.max(1).saturating_pow(exponent);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The time before which the next attempt must not start, after `failed_attempt` failed at
    /// `at`.
    pub(crate) fn not_before(&self, failed_attempt: u32, at: Timestamp) -> Timestamp {
        add(at, self.backoff(failed_attempt))
    }
}

/// The default of [`JobSpec::with_max_run_time`]: 2 hours.
const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(2 * 3600);
/// The default of [`JobSpec::with_max_reboots`].
const DEFAULT_MAX_REBOOTS: u32 = 3;
/// The default of [`JobSpec::with_failure_grace`]: 10 minutes.
pub(crate) const DEFAULT_FAILURE_GRACE: Duration = Duration::from_secs(10 * 60);
/// The default of [`JobSpec::with_restart_deadline`]: 1 hour.
pub(crate) const DEFAULT_RESTART_DEADLINE: Duration = Duration::from_secs(3600);
/// The default of [`JobSpec::with_terminate_grace`]: 5 minutes.
pub(crate) const DEFAULT_TERMINATE_GRACE: Duration = Duration::from_secs(5 * 60);

/// `at + d`, saturating at the largest representable time instead of overflowing.
pub(crate) fn add(at: Timestamp, d: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

impl Default for RetryPolicy {
    /// Three attempts, waiting 1 minute, then 2, growing to at most 1 hour.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(60),
            multiplier: 2,
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// Everything the ledger needs to know about a job to drive it.
///
/// Build one with [`JobSpec::new`] and the builder methods; the defaults are a mandatory job
/// that runs whether or not a user is logged on, never reboots, maps exit codes by the
/// platform's table ([`ExitCodePolicy::default`]: Unix's on Unix, Windows Installer's on
/// Windows), makes at most 3 attempts, may run for 2 hours, needs no verification,
/// and allows 3 reboots per attempt; a failing exit of a program that restarts the machine is
/// provisional for 10 minutes, a restart is overdue after 1 hour, and a terminated program has
/// 5 minutes to go.
///
/// ```
/// use std::time::Duration;
/// use jobstate::{JobId, JobSpec, RebootBehaviour, RunCondition};
///
/// let upgrade = JobSpec::new(JobId::new("os-upgrade").unwrap())
///     .with_mandatory(true)
///     .with_run_condition(RunCondition::Always)
///     .with_reboot(RebootBehaviour::RestartsMachine)
///     .with_verify_after_reboot(true)
///     .with_max_run_time(Duration::from_secs(4 * 3600));
/// assert!(upgrade.is_mandatory());
/// ```
///
/// # Text form
///
/// A spec is also a configuration format (JSON here; any human-readable serde format): every
/// field but `id` is optional, with the defaults above; names are snake_case; durations are
/// text such as `"90s"`, `"2h"` or `"1h30m"`; an exit-code table is `"unix"`,
/// `"windows_installer"` or a map ([`ExitCodePolicy`]); a field the crate does not know is
/// refused. A spec is written back in the same form, with every field.
///
/// ```
/// use std::time::Duration;
/// use jobstate::{JobSpec, RebootBehaviour};
///
/// let upgrade: JobSpec = serde_json::from_str(r#"{
///     "id": "os-upgrade",
///     "reboot": "restarts_machine",
///     "verify_after_reboot": true,
///     "max_run_time": "4h",
///     "retry": { "max_attempts": 2 }
/// }"#)?;
/// assert_eq!(upgrade.reboot(), RebootBehaviour::RestartsMachine);
/// assert_eq!(upgrade.max_run_time(), Duration::from_secs(4 * 3600));
/// assert!(upgrade.is_mandatory()); // the default
///
/// let typo = serde_json::from_str::<JobSpec>(r#"{"id": "kb2", "mandatroy": false}"#);
/// assert!(typo.unwrap_err().to_string().contains("unknown field `mandatroy`"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "SpecForm")]
pub struct JobSpec {
    id: JobId,
    /// Everything but the id, shared (copy on write): a fleet's jobs mostly differ by id, and
    /// a store keeps a spec for every job it ever ran.
    settings: Arc<Settings>,
}

/// A [`JobSpec`]'s settings: everything but its id. (Shown by `JobSpec`'s `Debug`.)
#[derive(Clone, PartialEq, Eq)]
struct Settings {
    mandatory: bool,
    run_condition: RunCondition,
    reboot: RebootBehaviour,
    exit_codes: ExitCodePolicy,
    retry: RetryPolicy,
    max_run_time: Duration,
    verify_after_reboot: bool,
    max_reboots: u32,
    failure_grace: Duration,
    restart_deadline: Duration,
    terminate_grace: Duration,
    restart_when_pending: bool,
    wait_for_pending_restart: bool,
    restart_policy: Option<RestartPolicy>,
}

/// As a struct of its id and its settings side by side (how it read when they were one).
impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &*self.settings;
        f.debug_struct("JobSpec")
            .field("id", &self.id)
            .field("mandatory", &s.mandatory)
            .field("run_condition", &s.run_condition)
            .field("reboot", &s.reboot)
            .field("exit_codes", &s.exit_codes)
            .field("retry", &s.retry)
            .field("max_run_time", &s.max_run_time)
            .field("verify_after_reboot", &s.verify_after_reboot)
            .field("max_reboots", &s.max_reboots)
            .field("failure_grace", &s.failure_grace)
            .field("restart_deadline", &s.restart_deadline)
            .field("terminate_grace", &s.terminate_grace)
            .field("restart_when_pending", &s.restart_when_pending)
            .field("wait_for_pending_restart", &s.wait_for_pending_restart)
            .field("restart_policy", &s.restart_policy)
            .finish()
    }
}

/// The serde form of a [`JobSpec`]: every field but the id optional, unknown fields refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecForm {
    id: JobId,
    #[serde(default = "default_mandatory")]
    mandatory: bool,
    #[serde(default)]
    run_condition: RunCondition,
    #[serde(default)]
    reboot: RebootBehaviour,
    #[serde(default)]
    exit_codes: ExitCodePolicy,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default = "default_max_run_time", with = "crate::core::duration_text")]
    max_run_time: Duration,
    #[serde(default)]
    verify_after_reboot: bool,
    #[serde(default = "default_max_reboots")]
    max_reboots: u32,
    #[serde(default = "default_failure_grace", with = "crate::core::duration_text")]
    failure_grace: Duration,
    #[serde(
        default = "default_restart_deadline",
        with = "crate::core::duration_text"
    )]
    restart_deadline: Duration,
    #[serde(
        default = "default_terminate_grace",
        with = "crate::core::duration_text"
    )]
    terminate_grace: Duration,
    #[serde(default)]
    restart_when_pending: bool,
    #[serde(default)]
    wait_for_pending_restart: bool,
    #[serde(default)]
    restart_policy: Option<RestartPolicy>,
}

fn default_mandatory() -> bool {
    true
}
fn default_max_run_time() -> Duration {
    DEFAULT_MAX_RUN_TIME
}
fn default_max_reboots() -> u32 {
    DEFAULT_MAX_REBOOTS
}
fn default_failure_grace() -> Duration {
    DEFAULT_FAILURE_GRACE
}
fn default_restart_deadline() -> Duration {
    DEFAULT_RESTART_DEADLINE
}
fn default_terminate_grace() -> Duration {
    DEFAULT_TERMINATE_GRACE
}

impl JobSpec {
    /// This spec for the job `id`: what decoding the same settings with another id gives.
    pub(crate) fn with_id(&self, id: JobId) -> JobSpec {
        JobSpec { id, ..self.clone() }
    }
}

impl From<SpecForm> for JobSpec {
    /// Through the builder, so that a spec read from text obeys the same floors (at least one
    /// attempt, one reboot, a restart deadline of a second) as one built in code.
    ///
    /// No setting may depend on the id (a default derived from it, a check against it): the
    /// recovery decoder reuses the settings of the spec it decoded last for a spec whose bytes
    /// after its id are the same (`change_decoder.rs`, `LAST_SPEC`).
    fn from(form: SpecForm) -> Self {
        JobSpec::new(form.id)
            .with_mandatory(form.mandatory)
            .with_run_condition(form.run_condition)
            .with_reboot(form.reboot)
            .with_exit_codes(form.exit_codes)
            .with_retry(form.retry)
            .with_max_run_time(form.max_run_time)
            .with_verify_after_reboot(form.verify_after_reboot)
            .with_max_reboots(form.max_reboots)
            .with_failure_grace(form.failure_grace)
            .with_restart_deadline(form.restart_deadline)
            .with_terminate_grace(form.terminate_grace)
            .with_restart_when_pending(form.restart_when_pending)
            .with_wait_for_pending_restart(form.wait_for_pending_restart)
            .with_restart_policy(form.restart_policy)
    }
}

/// [`SpecForm`] by reference, for writing: the same fields, names and order, so the same
/// encoding in every format, without cloning the spec (a store writes one per job at every
/// compaction).
#[derive(Serialize)]
struct SpecFormRef<'a> {
    id: &'a JobId,
    mandatory: bool,
    run_condition: RunCondition,
    reboot: RebootBehaviour,
    exit_codes: &'a ExitCodePolicy,
    retry: RetryPolicy,
    #[serde(with = "crate::core::duration_text")]
    max_run_time: Duration,
    verify_after_reboot: bool,
    max_reboots: u32,
    #[serde(with = "crate::core::duration_text")]
    failure_grace: Duration,
    #[serde(with = "crate::core::duration_text")]
    restart_deadline: Duration,
    #[serde(with = "crate::core::duration_text")]
    terminate_grace: Duration,
    restart_when_pending: bool,
    wait_for_pending_restart: bool,
    restart_policy: Option<RestartPolicy>,
}

impl Serialize for JobSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SpecFormRef {
            id: &self.id,
            mandatory: self.settings.mandatory,
            run_condition: self.settings.run_condition,
            reboot: self.settings.reboot,
            exit_codes: &self.settings.exit_codes,
            retry: self.settings.retry,
            max_run_time: self.settings.max_run_time,
            verify_after_reboot: self.settings.verify_after_reboot,
            max_reboots: self.settings.max_reboots,
            failure_grace: self.settings.failure_grace,
            restart_deadline: self.settings.restart_deadline,
            terminate_grace: self.settings.terminate_grace,
            restart_when_pending: self.settings.restart_when_pending,
            wait_for_pending_restart: self.settings.wait_for_pending_restart,
            restart_policy: self.settings.restart_policy,
        }
        .serialize(serializer)
    }
}

/// The settings of [`JobSpec::new`], shared by every spec that keeps them: a store of
/// 100,000 default jobs holds one copy of them (and of the exit-code table), not 100,000
/// scattered ones that a compaction must walk.
static DEFAULT_SETTINGS: std::sync::LazyLock<Arc<Settings>> = std::sync::LazyLock::new(|| {
    Arc::new(Settings {
        mandatory: true,
        run_condition: RunCondition::Always,
        reboot: RebootBehaviour::Never,
        exit_codes: ExitCodePolicy::default(),
        retry: RetryPolicy::default(),
        max_run_time: DEFAULT_MAX_RUN_TIME,
        verify_after_reboot: false,
        max_reboots: DEFAULT_MAX_REBOOTS,
        failure_grace: DEFAULT_FAILURE_GRACE,
        restart_deadline: DEFAULT_RESTART_DEADLINE,
        terminate_grace: DEFAULT_TERMINATE_GRACE,
        restart_when_pending: false,
        wait_for_pending_restart: false,
        restart_policy: None,
    })
});

/// `$spec` with one setting set to `$value`; the settings are copied only when the value is
/// new (a builder that repeats a default keeps sharing them).
macro_rules! set {
    ($spec:ident . $field:ident = $value:expr) => {{
        let value = $value;
        if $spec.settings.$field != value {
            Arc::make_mut(&mut $spec.settings).$field = value;
        }
        $spec
    }};
}

impl JobSpec {
    /// A job with the defaults listed on [`JobSpec`].
    pub fn new(id: JobId) -> Self {
        Self {
            id,
            settings: Arc::clone(&DEFAULT_SETTINGS),
        }
    }

    /// Mandatory jobs, once completed, are never run again; optional ones may be rerun on request.
    #[must_use]
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        set!(self.mandatory = mandatory)
    }

    /// When the job may run with respect to a logged-on user.
    #[must_use]
    pub fn with_run_condition(mut self, condition: RunCondition) -> Self {
        set!(self.run_condition = condition)
    }

    /// How the job's program relates to restarting the machine.
    #[must_use]
    pub fn with_reboot(mut self, behaviour: RebootBehaviour) -> Self {
        set!(self.reboot = behaviour)
    }

    /// How exit codes are interpreted.
    #[must_use]
    pub fn with_exit_codes(mut self, policy: ExitCodePolicy) -> Self {
        set!(self.exit_codes = policy)
    }

    /// How failed attempts are retried. `max_attempts` of 0 is treated as 1.
    #[must_use]
    pub fn with_retry(mut self, mut policy: RetryPolicy) -> Self {
        policy.max_attempts = policy.max_attempts.max(1);
        set!(self.retry = policy)
    }

    /// How long one attempt may run before its program is terminated and the attempt ends as
    /// timed out.
    #[must_use]
    pub fn with_max_run_time(mut self, limit: Duration) -> Self {
        set!(self.max_run_time = limit)
    }

    /// Whether a detection check must confirm the result after a reboot before the job is
    /// completed.
    #[must_use]
    pub fn with_verify_after_reboot(mut self, verify: bool) -> Self {
        set!(self.verify_after_reboot = verify)
    }

    /// How many reboots one attempt may see before a further restart request fails the job
    /// instead (the reboot-loop bound). 0 is treated as 1.
    #[must_use]
    pub fn with_max_reboots(mut self, max: u32) -> Self {
        set!(self.max_reboots = max.max(1))
    }

    /// For a job declared [`RebootBehaviour::RestartsMachine`]: how long a failing exit stays
    /// provisional (measured on the boot's monotonic clock). A reboot within it is the
    /// program's expected end (seed 001: the wrapper reported failure because it never heard
    /// the shutdown that was under way); when it closes in the same boot, the failure stands.
    /// Zero makes every failing exit final at once.
    #[must_use]
    pub fn with_failure_grace(mut self, window: Duration) -> Self {
        set!(self.failure_grace = window)
    }

    /// How long a restart may take to come (measured on the boot's monotonic clock from the
    /// start of the wait): past it, the restart is licensed again and reported overdue, then
    /// again after 3, 7, 15, ... times this (the interval doubles). At least 1 second.
    #[must_use]
    pub fn with_restart_deadline(mut self, deadline: Duration) -> Self {
        set!(self.restart_deadline = deadline.max(Duration::from_secs(1)))
    }

    /// How long a program may take to go after its termination was licensed: past it, a program
    /// still alive is reported unresponsive, and its job waits, visibly, until it is gone or an
    /// operator abandons the job.
    #[must_use]
    pub fn with_terminate_grace(mut self, grace: Duration) -> Self {
        set!(self.terminate_grace = grace)
    }

    /// Whether a successful exit after which the operating system says a restart is pending
    /// ([`SessionContext::restart_pending`](crate::session::SessionContext::restart_pending)) means
    /// "success, restart required": on Unix a program cannot say 3010, but a package that
    /// updates the kernel leaves `/run/reboot-required` behind. Off by default (a flag left by
    /// another update would make this job ask for the restart too).
    #[must_use]
    pub fn with_restart_when_pending(mut self, on: bool) -> Self {
        set!(self.restart_when_pending = on)
    }

    /// Whether the job must not start while the operating system says a restart is pending
    /// (Windows Update's "a restart is required before installation"): it waits, with
    /// [`WaitReason::SystemRestartPending`](crate::WaitReason::SystemRestartPending), while the
    /// session says [`RestartPending::Pending`](crate::session::RestartPending::Pending); `NotPending` and
    /// `Unknown` let it start (a fact that cannot be read never holds a job back for ever).
    /// Restarts the ledger owes hold every job back whatever this says.
    #[must_use]
    pub fn with_wait_for_pending_restart(mut self, on: bool) -> Self {
        set!(self.wait_for_pending_restart = on)
    }

    /// When the restart this job requires is licensed; `None` (the default): the ledger's
    /// default ([`Ledger::set_restart_policy`](crate::Ledger::set_restart_policy)).
    #[must_use]
    pub fn with_restart_policy(mut self, policy: impl Into<Option<RestartPolicy>>) -> Self {
        set!(self.restart_policy = policy.into())
    }

    /// The job's own restart policy, if it has one.
    pub fn restart_policy(&self) -> Option<RestartPolicy> {
        self.settings.restart_policy
    }

    /// Whether a success followed by a pending restart means "success, restart required".
    pub fn restart_when_pending(&self) -> bool {
        self.settings.restart_when_pending
    }

    /// Whether the job waits while the operating system says a restart is pending.
    pub fn wait_for_pending_restart(&self) -> bool {
        self.settings.wait_for_pending_restart
    }

    /// The grace window of a failing exit of a program that restarts the machine.
    pub fn failure_grace(&self) -> Duration {
        self.settings.failure_grace
    }

    /// How long a restart may take to come before it is overdue.
    pub fn restart_deadline(&self) -> Duration {
        self.settings.restart_deadline
    }

    /// How long a terminated program may take to go before it is reported unresponsive.
    pub fn terminate_grace(&self) -> Duration {
        self.settings.terminate_grace
    }

    /// How long after the start of a wait for a reboot, already reported overdue `overdue`
    /// times, it is overdue again: 1, 3, 7, 15, ... times the restart deadline.
    pub(crate) fn overdue_after(&self, overdue: u32) -> Duration {
        let factor = 2u32.saturating_pow(overdue.saturating_add(1).min(31)) - 1;
        self.settings.restart_deadline.saturating_mul(factor)
    }

    /// The job's identity.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Whether the job is mandatory.
    pub fn is_mandatory(&self) -> bool {
        self.settings.mandatory
    }

    /// When the job may run.
    pub fn run_condition(&self) -> RunCondition {
        self.settings.run_condition
    }

    /// How the job relates to restarts.
    pub fn reboot(&self) -> RebootBehaviour {
        self.settings.reboot
    }

    /// The exit-code policy.
    pub fn exit_codes(&self) -> &ExitCodePolicy {
        &self.settings.exit_codes
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    /// The maximum run time of one attempt.
    pub fn max_run_time(&self) -> Duration {
        self.settings.max_run_time
    }

    /// Whether a verification must confirm the result after a reboot.
    pub fn verify_after_reboot(&self) -> bool {
        self.settings.verify_after_reboot
    }

    /// The reboot-loop bound per attempt.
    pub fn max_reboots(&self) -> u32 {
        self.settings.max_reboots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> JobId {
        JobId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shared_settings_are_copied_before_a_builder_changes_them() {
        let a = JobSpec::new(id("a")).with_max_reboots(3);
        let b = a.with_id(id("b"));
        assert!(
            Arc::ptr_eq(&a.settings, &b.settings),
            "shared until changed"
        );
        assert_eq!(b.id(), &id("b"));
        assert_eq!(b.max_reboots(), 3);

        let b = b.with_mandatory(false).with_exit_codes(ExitCodePolicy::new(
            crate::core::exit_code::ExitOutcome::Success,
        ));
        assert!(!Arc::ptr_eq(&a.settings, &b.settings));
        assert!(a.is_mandatory() && !b.is_mandatory());
        assert_ne!(a.exit_codes(), b.exit_codes());
        assert_eq!(
            a,
            JobSpec::new(id("a")).with_max_reboots(3),
            "a is untouched"
        );

        // Equality is by value, shared or not; Debug reads as one flat struct.
        let c = JobSpec::new(id("a")).with_max_reboots(3);
        assert_eq!(a, c);
        let debug = format!("{a:?}");
        assert!(
            debug.starts_with("JobSpec { id: JobId(\"a\"), mandatory: true,"),
            "{debug}"
        );
        assert!(!debug.contains("settings"), "{debug}");
    }

    #[test]
    fn default_specs_share_one_copy_of_their_settings_until_a_builder_changes_one() {
        let a = JobSpec::new(id("a"));
        let b = JobSpec::new(id("b"));
        assert!(Arc::ptr_eq(&a.settings, &b.settings), "JobSpec::new shares");
        // A builder that repeats a default keeps sharing (as decoding a default spec does).
        let c = JobSpec::new(id("c"))
            .with_mandatory(true)
            .with_max_reboots(a.max_reboots())
            .with_exit_codes(a.exit_codes().clone());
        assert!(Arc::ptr_eq(&a.settings, &c.settings), "a repeated default");
        let d = JobSpec::new(id("d")).with_max_reboots(a.max_reboots() + 1);
        assert!(!Arc::ptr_eq(&a.settings, &d.settings), "a new value copies");
        assert_eq!(d.max_reboots(), a.max_reboots() + 1);
        assert_eq!(
            a.max_reboots(),
            JobSpec::new(id("e")).max_reboots(),
            "the default is untouched"
        );
        let e = d.with_max_reboots(a.max_reboots());
        assert_eq!(e.max_reboots(), a.max_reboots(), "set back by value");
        assert_eq!(e.with_id(id("a")), a);
    }
}

//! Helpers shared by the integration tests.

use chrono::{TimeDelta, TimeZone, Utc};
use std::time::Duration;

use jobstate::report::{Answers, StatusSink};
use jobstate::session::{ExecutionContext, NoticeDelivery, SessionFacts};
use jobstate::{
    BootId, Effect, ExitCodePolicy, JobId, JobSpec, Ledger, MemoryStore, StatusKey, StatusMessage,
    Timestamp, UserPresence,
};

/// A job under the Windows Installer exit-code conventions (3010 "restart required", 1641
/// "restart initiated", 1618 "retry later", 1707 success), which most of these stories speak:
/// on Unix the default table is Unix's.
pub fn msi_job(id: JobId) -> JobSpec {
    JobSpec::new(id).with_exit_codes(ExitCodePolicy::windows_installer())
}

pub type MemLedger = Ledger<MemoryStore, SessionFacts>;

/// The job's current state.
pub fn state(ledger: &MemLedger, spec: &JobSpec) -> jobstate::JobState {
    ledger.job(spec.id()).unwrap().state().clone()
}

/// Begins the job's queued attempt and records its launch (pid 4242).
pub fn start(ledger: &mut MemLedger, spec: &JobSpec) -> jobstate::AttemptId {
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger
        .launched(&attempt, jobstate::ProgramId::new(4242, 7))
        .unwrap();
    attempt
}

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
        since_boot: Duration::from_secs(60),
        programs: Default::default(),
        restart_pending: jobstate::session::RestartPending::Unknown,
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

/// A sink that accepts every message and keeps it.
#[derive(Debug, Default)]
pub struct Collect(pub Vec<StatusMessage>);

impl StatusSink for Collect {
    type Error = std::convert::Infallible;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        self.0.extend_from_slice(batch);
        answers.accept_all();
        Ok(())
    }
}

/// Delivers the outbox and returns what was reported since the last call: the messages the
/// ledger's transitions committed, through the real delivery path.
pub fn take_reports<S: jobstate::store::Store>(
    ledger: &mut Ledger<S, SessionFacts>,
) -> Vec<StatusMessage> {
    let mut sink = Collect::default();
    let delivery = ledger.deliver(&mut sink).unwrap();
    assert_eq!(delivery.pending, 0, "{delivery:?}");
    sink.0
}

/// SEMANTICS.md invariant 7, derived independently of the crate: a job is completed only on
/// evidence: an exit code that maps to success, a positive check, or a new boot after a
/// requested restart or after the recorded launch (or exit) of a program declared to restart
/// the machine.
pub fn completion_has_evidence(
    spec: &jobstate::JobSpec,
    before: &jobstate::JobState,
    event: &jobstate::Event,
) -> bool {
    use jobstate::{CheckResult, EventKind, ExitOutcome, JobState, RebootBehaviour};
    match &event.kind {
        EventKind::ProgramExited {
            exit: jobstate::ProgramExit::Code(code),
            ..
        } => matches!(
            spec.exit_codes().outcome(*code),
            ExitOutcome::Success | ExitOutcome::SuccessRestartRequired
        ),
        EventKind::Verified { result, .. } => *result == CheckResult::Installed,
        EventKind::AgentStarted { .. } => match before {
            JobState::AwaitingReboot {
                requested_in,
                verifying_in: None,
                ..
            } => *requested_in != event.boot,
            JobState::Running {
                attempt,
                launch,
                provisional,
                ..
            } => {
                attempt.boot != event.boot
                    && spec.reboot() == RebootBehaviour::RestartsMachine
                    && (launch.happened() || provisional.is_some())
            }
            _ => false,
        },
        _ => false,
    }
}

/// Invariant 3's one allowance, derived independently of the crate: an attempt whose launch was
/// never recorded never ran (SEMANTICS.md, "A launch is a recorded fact"), so a reboot found at
/// an agent start is no end of its program: it is queued again as the same attempt (no re-run,
/// no retry spent: it is launched again), whether or not its termination had been requested.
pub fn never_ran_and_left_alone(before: &jobstate::JobState, after: &jobstate::JobState) -> bool {
    use jobstate::JobState;
    match (before, after) {
        (
            JobState::Running {
                attempt, launch, ..
            },
            JobState::Queued {
                run,
                attempt: number,
                ..
            },
        ) => !launch.happened() && *run == attempt.run && *number == attempt.number,
        _ => false,
    }
}

/// Invariant 7 over a history: besides the transition's own evidence, a completion through a
/// reboot after a wait (`AwaitingReboot`) needs the attempt's program to have run: its launch
/// recorded or observed, or its exit recorded, earlier in the history.
pub fn completion_evidenced_in_history(
    spec: &jobstate::JobSpec,
    history: &[jobstate::store::HistoryEntry],
    index: usize,
) -> bool {
    use jobstate::{EventKind, JobState};
    let (Some(entry), Some(before)) = (history.get(index), index.checked_sub(1)) else {
        return false;
    };
    let before = &history[before].state;
    if !completion_has_evidence(spec, before, &entry.event) {
        return false;
    }
    let (JobState::AwaitingReboot { attempt, .. }, EventKind::AgentStarted { .. }) =
        (before, &entry.event.kind)
    else {
        return true;
    };
    let same = |a: &jobstate::Attempt| a.run == attempt.run && a.number == attempt.number;
    history[..index]
        .iter()
        .any(|e| match (&e.state, &e.event.kind) {
            (
                JobState::Running {
                    attempt: a,
                    launch,
                    provisional,
                    ..
                },
                _,
            ) => same(a) && (launch.happened() || provisional.is_some()),
            (_, EventKind::ProgramExited { attempt: a, .. }) => {
                a.run == attempt.run && a.number == attempt.number
            }
            _ => false,
        })
}

/// A session that counts the ledger's questions the session may answer slowly: about programs
/// (a scan of `/proc` on Linux) and about a pending restart (a helper on RHEL).
pub struct Counting {
    pub facts: SessionFacts,
    pub programs_asked: std::cell::Cell<u32>,
    pub pending_asked: std::cell::Cell<u32>,
}

impl Counting {
    pub fn new(facts: SessionFacts) -> Self {
        Self {
            facts,
            programs_asked: std::cell::Cell::new(0),
            pending_asked: std::cell::Cell::new(0),
        }
    }
}

impl jobstate::session::SessionContext for Counting {
    fn boot_id(&self) -> Result<BootId, jobstate::session::SessionError> {
        self.facts.boot_id()
    }
    fn user_presence(&self) -> UserPresence {
        self.facts.user_presence()
    }
    fn execution_context(&self) -> ExecutionContext {
        self.facts.execution_context()
    }
    fn shutdown_notices(&self) -> NoticeDelivery {
        self.facts.shutdown_notices()
    }
    fn now(&self) -> Timestamp {
        self.facts.now()
    }
    fn since_boot(&self) -> std::time::Duration {
        self.facts.since_boot()
    }
    fn program_status(
        &self,
        attempt: &jobstate::AttemptId,
        program: Option<&jobstate::ProgramId>,
    ) -> jobstate::ProgramStatus {
        self.programs_asked.set(self.programs_asked.get() + 1);
        self.facts.program_status(attempt, program)
    }
    fn restart_pending(&self) -> jobstate::session::RestartPending {
        self.pending_asked.set(self.pending_asked.get() + 1);
        self.facts.restart_pending()
    }
}

/// A site server scripted by the test: answers each message by a rule, counts what it stored by
/// key.
pub struct Scripted<F: FnMut(&StatusMessage) -> Reply> {
    rule: F,
    pub stored: std::collections::HashMap<StatusKey, usize>,
}

#[derive(Clone)]
pub enum Reply {
    Accept,
    Retry(&'static str),
    RetryAfter(Duration),
    Reject(&'static str),
    Pause(Option<Duration>),
    /// Answers nothing and returns `Ok` (a sink that forgot to answer).
    Silent,
    Unreachable,
}

impl<F: FnMut(&StatusMessage) -> Reply> Scripted<F> {
    pub fn new(rule: F) -> Self {
        Self {
            rule,
            stored: std::collections::HashMap::new(),
        }
    }
}

impl<F: FnMut(&StatusMessage) -> Reply> StatusSink for Scripted<F> {
    type Error = std::io::Error;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        for message in batch {
            match (self.rule)(message) {
                Reply::Accept => {
                    *self.stored.entry(message.key.clone()).or_default() += 1;
                    answers.accept(&message.key);
                }
                Reply::Retry(why) => answers.retry(&message.key, why),
                Reply::RetryAfter(after) => answers.retry_after(&message.key, after, "HTTP 429"),
                Reply::Reject(why) => answers.reject(&message.key, why),
                Reply::Silent => {}
                Reply::Pause(after) => {
                    answers.pause(after);
                    return Ok(());
                }
                Reply::Unreachable => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the site server is down",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A receiver that answers every message alike.
pub fn answering(reply: Reply) -> Scripted<impl FnMut(&StatusMessage) -> Reply> {
    Scripted::new(move |_: &StatusMessage| reply.clone())
}

/// `names` offered and cancelled: one pending status message each, in this order.
pub fn with_messages<S: jobstate::store::Store>(
    ledger: &mut Ledger<S, SessionFacts>,
    names: &[impl AsRef<str>],
) {
    for name in names {
        ledger.offer(msi_job(job(name.as_ref()))).unwrap();
        let _effects = ledger.cancel(&job(name.as_ref())).unwrap();
    }
}

/// Seconds from the session's now until `at`.
pub fn seconds_until<S: jobstate::store::Store>(
    ledger: &Ledger<S, SessionFacts>,
    at: Timestamp,
) -> i64 {
    (at - ledger.session().now).num_seconds()
}

/// The example agent, built by cargo each time (`cargo test --test it` builds no example;
/// cargo says at once when it is fresh).
#[cfg(target_os = "linux")]
pub fn example_agent() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let agent = profile_dir.join("examples").join("agent");
    // Built every time (cargo says at once when it is fresh): a binary left by an older build
    // would test old code.
    {
        let target_dir = profile_dir.parent().unwrap();
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--example",
                "agent",
                "--features",
                "json-lines",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building examples/agent");
    }
    agent
}

/// Waits up to `limit` for `child` to exit: its status, or `None` (then it is killed).
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The example agent started on `config`, its output piped, with SIGXFSZ ignored (as an agent
/// that handles a full disk would): a write past the file-size limit a test's job sets fails
/// with EFBIG, as ENOSPC would, instead of killing it.
#[cfg(target_os = "linux")]
pub fn spawn_agent_ignoring_xfsz(
    agent: &std::path::Path,
    config: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec {} {}",
            agent.display(),
            config.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether `prlimit` (util-linux), which the disk-filling tests use, is missing: then they say
/// so and skip.
#[cfg(target_os = "linux")]
pub fn no_prlimit() -> bool {
    let missing = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err();
    if missing {
        eprintln!("skipped: no prlimit");
    }
    missing
}

/// Lifts the file-size limit of the process `pid` ("space comes back").
#[cfg(target_os = "linux")]
pub fn lift_file_size_limit(pid: u32) -> std::process::Output {
    std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited"])
        .output()
        .unwrap()
}

/// Rewrites the format field of a file store file's 24-byte header (journal or snapshot) to
/// `format`, with the header checksum a build writing that format computes: of the magic, the
/// format and the revision (format 2's left the format field out). What a newer build's file
/// looks like to this one.
pub fn set_header_format(bytes: &mut [u8], format: u32) {
    bytes[8..12].copy_from_slice(&format.to_le_bytes());
    let covered: Vec<u8> = if format == 2 {
        [&bytes[..8], &bytes[16..24]].concat()
    } else {
        [&bytes[..12], &bytes[16..24]].concat()
    };
    bytes[12..16].copy_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
}

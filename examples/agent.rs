//! A small but complete deployment agent (Linux): `agent <config.json>`.
//!
//! It reads job specs from a JSON file, keeps their state in a `FileStore`, learns the facts of
//! the machine from `LinuxSession`, runs each job's program as a child process, maps its exit
//! code, restarts the machine through a configured command when a job asks for it, reports
//! status to a JSON-lines file, and on start reconciles whatever the last boot left — including
//! a job whose program restarted the machine without telling anyone (seed 001).
//!
//! ```json
//! {
//!   "state_dir": "/var/lib/agent/state",
//!   "status_file": "/var/lib/agent/status.jsonl",
//!   "restart_command": ["/sbin/reboot"],
//!   "exit_when_idle": true,
//!   "jobs": [{
//!     "id": "os-upgrade",
//!     "program": ["/usr/local/sbin/upgrade"],
//!     "reboot": "restarts_machine",
//!     "verify": ["/bin/sh", "-c", "test -f /etc/upgraded"]
//!   }, {
//!     "id": "kernel-patch",
//!     "program": ["/usr/local/sbin/patch-kernel"],
//!     "reboot": "may_request",
//!     "exit_codes": { "0": "success", "194": "success_restart_required" }
//!   }]
//! }
//! ```
//!
//! Every event is one line on stdout starting with `agent: `. Bad input (a malformed config, a
//! missing program) is a clear message on stderr and exit status 2; any other failure exits 1.
//! Nothing already recorded is lost either way: the store never drops what it acknowledged.
//!
//! `scripts/vm-reboot-test` runs this agent in a virtual machine whose job reboots it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use jobstate::{
    AttemptId, Effect, ExitCodePolicy, ExitOutcome, FileStore, JobId, JobSpec, JsonLinesSink,
    Ledger, LinuxSession, NextJob, RebootBehaviour, RetryPolicy, RunCondition, SessionContext,
    StatusKey, StatusMessage, StatusSink, WaitReason,
};
use serde::Deserialize;

type Agent = Ledger<FileStore, LinuxSession>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    state_dir: PathBuf,
    status_file: PathBuf,
    restart_command: Vec<String>,
    #[serde(default = "yes")]
    exit_when_idle: bool,
    #[serde(default = "poll_ms")]
    poll_ms: u64,
    jobs: Vec<JobConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobConfig {
    id: String,
    program: Vec<String>,
    #[serde(default = "yes")]
    mandatory: bool,
    #[serde(default)]
    reboot: Reboot,
    #[serde(default)]
    run_condition: Condition,
    verify: Option<Vec<String>>,
    #[serde(default = "max_run_time_secs")]
    max_run_time_secs: u64,
    #[serde(default = "max_attempts")]
    max_attempts: u32,
    /// Exit code -> outcome; codes not listed are failures. Without it, the Windows Installer
    /// conventions apply — but a Unix exit status has 8 bits: an installer's 3010 arrives as 194.
    exit_codes: Option<std::collections::BTreeMap<i32, Outcome>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Success,
    SuccessRestartRequired,
    SuccessRestartInitiated,
    RetryLater,
    Failure,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Reboot {
    #[default]
    Never,
    MayRequest,
    RestartsMachine,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Condition {
    #[default]
    Always,
    OnlyWithUser,
    OnlyWithoutUser,
}

fn yes() -> bool {
    true
}
fn poll_ms() -> u64 {
    200
}
fn max_run_time_secs() -> u64 {
    7200
}
fn max_attempts() -> u32 {
    3
}

/// Why the agent stopped: bad input (exit 2) or anything else (exit 1).
enum Failure {
    Input(String),
    Other(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.to_string())
    }
}

/// Prints one event line and flushes it (the VM test reads them off a serial console).
macro_rules! say {
    ($($arg:tt)*) => {{
        println!("agent: {}", format_args!($($arg)*));
        let _ = std::io::stdout().flush();
    }};
}

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("agent: error: usage: agent <config.json>");
        return ExitCode::from(2);
    };
    match run(Path::new(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("agent: error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("agent: error: {message}");
            ExitCode::from(1)
        }
    }
}

/// The config, checked: every job id valid, every program and verification present.
fn load(path: &Path) -> Result<(Config, Vec<JobSpec>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    let config: Config = serde_json::from_str(&text).map_err(|e| {
        Failure::Input(format!(
            "{} is not a valid agent config: {e}",
            path.display()
        ))
    })?;
    let mut specs = Vec::new();
    for job in &config.jobs {
        let id = JobId::new(job.id.as_str())
            .map_err(|e| Failure::Input(format!("job {:?}: {e}", job.id)))?;
        for argv in std::iter::once(&job.program).chain(job.verify.as_ref()) {
            let program = argv
                .first()
                .ok_or_else(|| Failure::Input(format!("job {id}: an empty command")))?;
            if !exists(program) {
                return Err(Failure::Input(format!(
                    "job {id}: program {program} not found"
                )));
            }
        }
        specs.push(
            JobSpec::new(id)
                .mandatory(job.mandatory)
                .reboot(match job.reboot {
                    Reboot::Never => RebootBehaviour::Never,
                    Reboot::MayRequest => RebootBehaviour::MayRequest,
                    Reboot::RestartsMachine => RebootBehaviour::RestartsMachine,
                })
                .run_condition(match job.run_condition {
                    Condition::Always => RunCondition::Always,
                    Condition::OnlyWithUser => RunCondition::OnlyWithUser,
                    Condition::OnlyWithoutUser => RunCondition::OnlyWithoutUser,
                })
                .verify_after_reboot(job.verify.is_some())
                .exit_codes(exit_codes(job.exit_codes.as_ref()))
                .max_run_time(Duration::from_secs(job.max_run_time_secs))
                .retry(RetryPolicy {
                    max_attempts: job.max_attempts,
                    ..RetryPolicy::default()
                }),
        );
    }
    if config.restart_command.is_empty() {
        return Err(Failure::Input("restart_command is empty".into()));
    }
    Ok((config, specs))
}

/// The job's exit-code table, or the Windows Installer conventions.
fn exit_codes(table: Option<&std::collections::BTreeMap<i32, Outcome>>) -> ExitCodePolicy {
    let Some(table) = table else {
        return ExitCodePolicy::default();
    };
    table.iter().fold(
        ExitCodePolicy::new(ExitOutcome::Failure),
        |policy, (&code, outcome)| {
            policy.with(
                code,
                match outcome {
                    Outcome::Success => ExitOutcome::Success,
                    Outcome::SuccessRestartRequired => ExitOutcome::SuccessRestartRequired,
                    Outcome::SuccessRestartInitiated => ExitOutcome::SuccessRestartInitiated,
                    Outcome::RetryLater => ExitOutcome::RetryLater,
                    Outcome::Failure => ExitOutcome::Failure,
                },
            )
        },
    )
}

/// Whether `program` exists: a path, or a name found in `PATH`.
fn exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn run(path: &Path) -> Result<(), Failure> {
    let (config, specs) = load(path)?;
    let jobs: HashMap<&str, &JobConfig> = config.jobs.iter().map(|j| (j.id.as_str(), j)).collect();

    // The machine's facts. Shutdown notices are not wired: nothing here waits for one.
    let session = LinuxSession::new()?;
    say!(
        "start boot={} context={:?} user={:?}",
        session.boot_id()?,
        session.execution_context(),
        session.user_presence()
    );

    // Open the store and reconcile every unfinished job against this boot.
    let store = FileStore::open(&config.state_dir)?;
    let (mut ledger, effects) = Ledger::open(store, session)?;
    say!("recovered effects={}", effects.len());
    let mut sink = Reporter(JsonLinesSink::open(&config.status_file)?);
    carry_out(&mut ledger, effects, &jobs, &config, &mut sink)?;

    for spec in specs {
        let id = spec.id().clone();
        let answer = ledger.advertise(spec)?;
        say!("advertise job={id} answer={answer:?}");
    }

    let poll = Duration::from_millis(config.poll_ms);
    loop {
        ledger.deliver(&mut sink)?;
        match ledger.next_runnable() {
            NextJob::Run(job) => run_job(&mut ledger, &job, &jobs, &config, &mut sink)?,
            NextJob::Wait {
                reason: WaitReason::BackingOff { .. },
                ..
            } => std::thread::sleep(poll),
            _ if config.exit_when_idle && ledger.outbox().next().is_none() => break,
            _ => std::thread::sleep(poll),
        }
    }
    for record in ledger.jobs() {
        let launches = record
            .history()
            .iter()
            .filter(|e| e.event.kind == jobstate::EventKind::AttemptStarted)
            .count();
        say!(
            "final job={} state={} launches_recorded={launches}",
            record.id(),
            record.state().kind()
        );
    }
    say!("idle");
    Ok(())
}

/// Starts the job's program (after `Running` is durable) and follows it to its exit.
fn run_job(
    ledger: &mut Agent,
    job: &JobId,
    jobs: &HashMap<&str, &JobConfig>,
    config: &Config,
    sink: &mut Reporter,
) -> Result<(), Failure> {
    let Some(job_config) = jobs.get(job.as_str()) else {
        return Err(Failure::Other(format!(
            "job {job} is queued but not in the config"
        )));
    };
    let attempt = ledger.begin(job)?;
    say!(
        "launch job={job} run={} attempt={}",
        attempt.attempt.run,
        attempt.attempt.number
    );
    let argv = &job_config.program;
    let mut child = match Command::new(&argv[0]).args(&argv[1..]).spawn() {
        Ok(child) => child,
        Err(e) => {
            // It never ran: record that as a failed attempt (the shell's "not found"), then stop.
            ledger.program_exited(&attempt, 127)?;
            return Err(Failure::Input(format!(
                "job {job}: cannot start {}: {e}",
                argv[0]
            )));
        }
    };
    let poll = Duration::from_millis(config.poll_ms);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(poll);
        for effect in ledger.tick()? {
            if effect == Effect::Terminate(attempt.clone()) {
                say!("terminate job={job}: past its maximum run time");
                let _ = child.kill();
            }
        }
    };
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    let effects = ledger.program_exited(&attempt, code)?;
    let state = ledger.job(job).map(|r| r.state().kind());
    say!(
        "exit job={job} code={code} state={}",
        state.map_or("?".into(), |s| s.to_string())
    );
    carry_out(ledger, effects, jobs, config, sink)
}

/// Carries out what a committed transition licensed.
fn carry_out(
    ledger: &mut Agent,
    effects: Vec<Effect>,
    jobs: &HashMap<&str, &JobConfig>,
    config: &Config,
    sink: &mut Reporter,
) -> Result<(), Failure> {
    for effect in effects {
        match effect {
            Effect::Verify(attempt) => verify(ledger, &attempt, jobs, config, sink)?,
            Effect::ScheduleRestart { job, .. } => {
                // Report first: the restart ends this process.
                ledger.deliver(sink)?;
                say!("restart job={job}");
                let argv = &config.restart_command;
                let status = Command::new(&argv[0]).args(&argv[1..]).status()?;
                if !status.success() {
                    return Err(Failure::Other(format!(
                        "the restart command failed: {status}"
                    )));
                }
            }
            Effect::Terminate(attempt) => {
                // Only the agent process that started a program holds it.
                say!(
                    "terminate job={}: started by an earlier agent process; stop it by hand",
                    attempt.job
                );
            }
            other => say!("effect {other:?}"),
        }
    }
    Ok(())
}

/// Runs the job's detection check and records its answer.
fn verify(
    ledger: &mut Agent,
    attempt: &AttemptId,
    jobs: &HashMap<&str, &JobConfig>,
    config: &Config,
    sink: &mut Reporter,
) -> Result<(), Failure> {
    let argv = jobs
        .get(attempt.job.as_str())
        .and_then(|j| j.verify.as_ref())
        .ok_or_else(|| {
            Failure::Input(format!(
                "job {}: a verification is owed but none is configured",
                attempt.job
            ))
        })?;
    let installed = Command::new(&argv[0]).args(&argv[1..]).status()?.success();
    let effects = ledger.verification(attempt, installed)?;
    let state = ledger.job(&attempt.job).map(|r| r.state().kind());
    say!(
        "verify job={} installed={installed} state={}",
        attempt.job,
        state.map_or("?".into(), |s| s.to_string())
    );
    carry_out(ledger, effects, jobs, config, sink)
}

/// The JSON-lines sink, printing what it accepts.
struct Reporter(JsonLinesSink);

impl StatusSink for Reporter {
    type Error = std::io::Error;
    fn deliver(&mut self, batch: &[StatusMessage]) -> Result<Vec<StatusKey>, Self::Error> {
        let accepted = self.0.deliver(batch)?;
        for key in &accepted {
            say!("report {key}");
        }
        Ok(accepted)
    }
}

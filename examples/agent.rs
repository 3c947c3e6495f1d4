//! A small but complete deployment agent (Linux): `agent <config.json>`.
//!
//! It reads job specs from a JSON file, keeps their state in a `FileStore`, learns the facts of
//! the machine from `LinuxSession`, runs each job's program as a child process (with
//! `JOBSTATE_ATTEMPT` naming its attempt) and records its launch with the process's identity
//! (pid and start time), maps its exit code, restarts the machine through a configured command
//! when a job asks for it (never while another job's program runs: the ledger holds it), reports
//! status to a JSON-lines file, sleeps until the ledger's next deadline, and on start reconciles
//! whatever the last boot left — a job whose program restarted the machine without telling
//! anyone (seed 001), a program that died with the previous agent process, a launch that was
//! never recorded.
//!
//! ```json
//! {
//!   "state_dir": "/var/lib/agent/state",
//!   "status_file": "/var/lib/agent/status.jsonl",
//!   "restart_command": ["/sbin/reboot"],
//!   "exit_when_idle": true,
//!   "jobs": [{
//!     "spec": { "id": "os-upgrade", "reboot": "restarts_machine", "verify_after_reboot": true },
//!     "program": ["/usr/local/sbin/upgrade"],
//!     "verify": ["/bin/sh", "-c", "test -f /etc/upgraded"]
//!   }, {
//!     "spec": {
//!       "id": "kernel-patch",
//!       "reboot": "may_request",
//!       "exit_codes": { "0": "success", "194": "success_restart_required" }
//!     },
//!     "program": ["/usr/local/sbin/patch-kernel"]
//!   }]
//! }
//! ```
//!
//! `restart_policy` (optional, default `"immediately"`) is the [`RestartPolicy`] of jobs whose
//! spec names none. Each job's `spec` is a [`JobSpec`] in its text form (the README's "Job specs as
//! configuration"); `verify`, the detection check, is given exactly when the spec says
//! `verify_after_reboot`.
//!
//! Every event is one line on stdout starting with `agent: `. Bad input (a malformed config, a
//! missing program) is a clear message on stderr and exit status 2; any other failure exits 1.
//! Nothing already recorded is lost either way: the store never drops what it acknowledged.
//!
//! `scripts/vm-reboot-test` runs this agent in a virtual machine whose job reboots it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use jobstate::report::{Answers, JsonLinesSink, StatusSink};
use jobstate::session::{ATTEMPT_ENV, SessionContext};
use jobstate::{
    AttemptId, CheckResult, Effect, Effects, FileStore, JobId, JobSpec, JobState, Ledger,
    LedgerOptions, LinuxSession, NextJob, ProgramExit, RestartPolicy, RestartRelease,
    StatusMessage, WaitReason,
};
use serde::Deserialize;

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
    /// The restart policy of jobs whose spec names none (default: at once).
    #[serde(default)]
    restart_policy: RestartPolicy,
    jobs: Vec<JobConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobConfig {
    /// The job, in `JobSpec`'s own configuration form.
    spec: JobSpec,
    program: Vec<String>,
    verify: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}
fn poll_ms() -> u64 {
    200
}

/// Why the agent stopped: bad input (exit 2) or anything else (exit 1); or why it opens the
/// store again: exits it heard that the store refused to record.
enum Failure {
    Input(String),
    Other(String),
    Unrecorded {
        exits: Vec<(AttemptId, ProgramExit)>,
        why: String,
    },
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.to_string())
    }
}

/// A ledger call's failure: a store that refused a commit (it refuses every commit until it is
/// opened again) sends the agent back to reopen it; anything else stops it.
fn store_or_other(e: jobstate::Error) -> Failure {
    match e {
        jobstate::Error::Store(e) => Failure::Unrecorded {
            exits: Vec::new(),
            why: e.to_string(),
        },
        e => Failure::Other(e.to_string()),
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let result = match args.as_slice() {
        [path] => run(Path::new(path)),
        // An operator's way out of a stuck job.
        [path, verb, job] if verb == "abandon" => abandon(Path::new(path), job),
        _ => {
            eprintln!("agent: error: usage: agent <config.json> [abandon <job-id>]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("agent: error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message) | Failure::Unrecorded { why: message, .. }) => {
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
    let mut specs: Vec<JobSpec> = Vec::new();
    for job in &config.jobs {
        let id = job.spec.id();
        if specs.iter().any(|s| s.id() == id) {
            return Err(Failure::Input(format!("job {id} is listed twice")));
        }
        if job.spec.verify_after_reboot() != job.verify.is_some() {
            return Err(Failure::Input(format!(
                "job {id}: give a \"verify\" command exactly when the spec says \"verify_after_reboot\": true"
            )));
        }
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
        specs.push(job.spec.clone());
    }
    if config.restart_command.is_empty() {
        return Err(Failure::Input("restart_command is empty".into()));
    }
    Ok((config, specs))
}

/// Whether `program` exists: a path, or a name found in `PATH`.
fn exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `agent <config.json> abandon <job-id>`: ends a job that is not completed (its status message
/// is delivered by the next run). Run it while no agent runs: the store allows one writer.
fn abandon(path: &Path, job: &std::ffi::OsStr) -> Result<(), Failure> {
    let (config, _) = load(path)?;
    let job = JobId::new(job.to_string_lossy())
        .map_err(|e| Failure::Input(format!("job {job:?}: {e}")))?;
    let store = FileStore::open(&config.state_dir)?;
    let (mut ledger, _) = Ledger::open(store, LinuxSession::new()?)?;
    for effect in ledger.abandon(&job)? {
        say!("after abandoning {job}: {effect:?} (the next run carries it out)");
    }
    say!(
        "abandoned job={job} state={}",
        ledger
            .job(&job)
            .map_or("?".into(), |r| r.state().kind().to_string())
    );
    Ok(())
}

fn run(path: &Path) -> Result<(), Failure> {
    let (config, specs) = load(path)?;
    // The children this process started: kept across a reopen, so that their exits are heard.
    let mut children: HashMap<JobId, (AttemptId, Child)> = HashMap::new();
    let mut heard: Vec<(AttemptId, ProgramExit)> = Vec::new();
    // A store whose commit failed refuses every commit until it is opened again (a full disk, a
    // failed sync): open it again, with the exits it refused, so that none is lost to the
    // reconciliation (which would find those programs gone and run their jobs again). While an
    // exit is held or a child runs, for as long as it takes (1 s, doubling to a minute: a disk
    // is freed eventually, and an exit given up is a job run twice); otherwise five times, then
    // exit 1 (a supervisor starts the agent again).
    let mut tries = 0u32;
    loop {
        // Children that exited meanwhile: their exits go to the open too, before its
        // reconciliation could find a program gone whose launch it never recorded and start
        // it again.
        children.retain(|_, (attempt, child)| match child.try_wait() {
            Ok(Some(status)) => {
                heard.push((attempt.clone(), ProgramExit::from(status)));
                false
            }
            _ => true,
        });
        let served = std::time::Instant::now();
        match serve(&config, &specs, &mut children, std::mem::take(&mut heard)) {
            Err(Failure::Unrecorded { exits, why }) => {
                // The exits no open recorded: those it was given if it failed, else those
                // reaped after it.
                heard = exits;
                // Failures in a row: a store that worked for a minute starts the count again.
                tries = if served.elapsed() > Duration::from_secs(60) {
                    1
                } else {
                    tries + 1
                };
                if heard.is_empty() && children.is_empty() && tries >= 5 {
                    return Err(Failure::Other(why));
                }
                let wait = Duration::from_secs(1 << tries.min(6)).min(Duration::from_secs(60));
                say!(
                    "the store refused a commit ({why}); {} exit(s) held, {} child(ren) running; opening it again in {} s",
                    heard.len(),
                    children.len(),
                    wait.as_secs()
                );
                std::thread::sleep(wait);
            }
            other => return other,
        }
    }
}

/// Opens the store (recording `heard` first), reconciles, offers the jobs and runs them until
/// idle.
fn serve(
    config: &Config,
    specs: &[JobSpec],
    children: &mut HashMap<JobId, (AttemptId, Child)>,
    heard: Vec<(AttemptId, ProgramExit)>,
) -> Result<(), Failure> {
    let jobs: HashMap<&str, &JobConfig> = config
        .jobs
        .iter()
        .map(|j| (j.spec.id().as_str(), j))
        .collect();

    // The machine's facts. Shutdown notices are not wired: nothing here waits for one.
    let session = LinuxSession::new()?;
    say!(
        "start boot={} context={:?} user={:?}",
        session.boot_id()?,
        session.execution_context(),
        session.user_presence()
    );

    // Open the store and reconcile every unfinished job against this boot: a program that died
    // with the previous agent process ends its attempt; a launch never recorded is launched again
    // now if the job may start (its run condition, no restart owed), else when the loop below
    // finds it runnable.
    let options = LedgerOptions::default().with_restart_policy(config.restart_policy);
    // A store that cannot be opened, or whose open cannot commit (a disk still full), keeps
    // the exits it was given for the next try.
    let opened = FileStore::open(&config.state_dir)
        .map_err(jobstate::Error::from)
        .and_then(|store| Ledger::open_with_exits(store, session, options, heard.clone()));
    let (ledger, effects) = match opened {
        Ok(opened) => opened,
        Err(jobstate::Error::Store(e)) => {
            return Err(Failure::Unrecorded {
                exits: heard,
                why: e.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    say!("recovered effects={}", effects.len());
    let report = ledger.open_report();
    if !report.is_clean() {
        say!("store repaired at open: {report}");
    }
    let mut agent = Agent {
        ledger,
        jobs,
        config,
        sink: Reporter(JsonLinesSink::open(&config.status_file)?),
        children,
        restart_ordered: false,
    };
    agent.carry_out(effects)?;

    for spec in specs {
        let id = spec.id().clone();
        let answer = agent.ledger.offer(spec.clone()).map_err(store_or_other)?;
        say!("offer job={id} answer={answer:?}");
    }

    let poll = Duration::from_millis(config.poll_ms);
    loop {
        agent
            .ledger
            .deliver(&mut agent.sink)
            .map_err(store_or_other)?;
        agent.reap()?;
        let effects = agent.ledger.tick().map_err(store_or_other)?;
        agent.carry_out(effects)?;
        // Start what may start: the ledger hands out a job that may restart the machine only
        // when no other job runs, and nothing while a restart is owed.
        while let NextJob::Run(job) = agent.ledger.next_runnable() {
            agent.start(&job)?;
        }
        // Idle: no program of ours or of an earlier agent process runs, nothing to report, and
        // no restart is owed but one this process ordered that was already reported overdue. A
        // restart that was not ordered, or whose command failed, or that does not come (a
        // command that succeeded, and no shutdown), is waited for: its deadline licenses it
        // again and reports it overdue; then the next start of the agent licenses it again.
        let waiting = agent.ledger.jobs().any(|r| match r.state() {
            JobState::Running { .. } => true,
            JobState::AwaitingReboot {
                verifying_in: None,
                overdue,
                ..
            } => !agent.restart_ordered || *overdue == 0,
            _ => false,
        });
        let idle = agent.children.is_empty() && !waiting && agent.ledger.outbox().next().is_none();
        let backing_off = matches!(
            agent.ledger.next_runnable(),
            NextJob::Wait {
                reason: WaitReason::BackingOff { .. },
                ..
            }
        );
        if config.exit_when_idle && idle && !backing_off {
            break;
        }
        // Sleep until the ledger's next deadline; children are polled (std cannot wait for
        // any of several children at once).
        let mut sleep = agent.ledger.next_wakeup().unwrap_or(poll);
        if !agent.children.is_empty() {
            sleep = sleep.min(poll);
        }
        std::thread::sleep(sleep.clamp(Duration::from_millis(10), Duration::from_secs(60)));
    }
    for record in agent.ledger.jobs() {
        let count = |name| {
            record
                .history()
                .iter()
                .filter(|e| e.event.kind.name() == name)
                .count()
        };
        if record.is_tombstone() {
            // Compacted at this open (the default retention): its final change and its spec
            // are all that is kept of a finished job.
            say!(
                "final job={} state={} tombstone",
                record.id(),
                record.state().kind()
            );
        } else {
            say!(
                "final job={} state={} launches_recorded={}",
                record.id(),
                record.state().kind(),
                count(jobstate::EventName::Launched)
            );
        }
    }
    say!("idle");
    Ok(())
}

/// The agent: its ledger, its jobs' programs, and the children it started.
struct Agent<'a> {
    ledger: Ledger<FileStore, LinuxSession>,
    jobs: HashMap<&'a str, &'a JobConfig>,
    config: &'a Config,
    sink: Reporter,
    children: &'a mut HashMap<JobId, (AttemptId, Child)>,
    /// Whether this process ordered a restart that the command accepted.
    restart_ordered: bool,
}

impl Agent<'_> {
    fn job(&self, job: &JobId) -> Option<&JobConfig> {
        self.jobs.get(job.as_str()).copied()
    }

    fn state(&self, job: &JobId) -> String {
        self.ledger
            .job(job)
            .map_or("?".into(), |r| r.state().kind().to_string())
    }

    /// Begins the job's queued attempt, then launches it.
    fn start(&mut self, job: &JobId) -> Result<(), Failure> {
        let attempt = self.ledger.begin(job).map_err(store_or_other)?;
        self.launch(attempt)
    }

    /// Starts the attempt's program (`Running` is durable) and records the launch with the
    /// process's identity: from then on a reboot may end it; before, it never ran.
    fn launch(&mut self, attempt: AttemptId) -> Result<(), Failure> {
        let job = attempt.job.clone();
        // This process's child of that attempt still runs (its launch never recorded): it is
        // the attempt's program; a second one never starts beside it.
        if self.children.get(&job).is_some_and(|(a, _)| *a == attempt) {
            say!("launch job={job}: its program already runs");
            return Ok(());
        }
        say!(
            "launch job={job} run={} attempt={}",
            attempt.run,
            attempt.number
        );
        // A job no longer in the config cannot be launched: that attempt fails (not the agent).
        let spawned = match self.job(&job) {
            Some(config) => Command::new(&config.program[0])
                .args(&config.program[1..])
                .env(ATTEMPT_ENV, attempt.env_value())
                .spawn(),
            None => Err(std::io::Error::other("the job is no longer in the config")),
        };
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // It never ran: the attempt fails as such (the retry policy applies).
                say!("launch failed job={job}: {e}");
                let effects = self
                    .ledger
                    .launch_failed(&attempt)
                    .map_err(store_or_other)?;
                return self.carry_out(effects);
            }
        };
        // Kept before the launch is recorded: if the store refuses that commit, the agent
        // reopens it still holding the child, and hears its exit.
        let pid = child.id();
        self.children.insert(job, (attempt.clone(), child));
        let program = self.ledger.session().program_id(pid)?;
        let effects = self
            .ledger
            .launched(&attempt, program)
            .map_err(store_or_other)?;
        self.carry_out(effects)
    }

    /// Records the exit of every child that exited.
    fn reap(&mut self) -> Result<(), Failure> {
        let mut exited = Vec::new();
        for (job, (attempt, child)) in self.children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                // An exit code or a signal, without loss (a signal is never mistaken for a code).
                exited.push((job.clone(), attempt.clone(), ProgramExit::from(status)));
            }
        }
        for job in exited.iter().map(|(job, ..)| job) {
            self.children.remove(job);
        }
        let mut exited = exited.into_iter();
        while let Some((job, attempt, exit)) = exited.next() {
            let effects = match self.ledger.program_exited(&attempt, exit) {
                Ok(effects) => effects,
                // Reaped, the status exists nowhere else: it goes to the next open, with the
                // ones not recorded yet.
                Err(jobstate::Error::Store(e)) => {
                    let exits = std::iter::once((attempt, exit))
                        .chain(exited.map(|(_, attempt, exit)| (attempt, exit)))
                        .collect();
                    return Err(Failure::Unrecorded {
                        exits,
                        why: e.to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            say!("exit job={job} {exit} state={}", self.state(&job));
            // Its effects met a store refusal: the exits reaped with it and not recorded yet
            // go to the next open too.
            match self.carry_out(effects) {
                Err(Failure::Unrecorded { mut exits, why }) => {
                    exits.extend(exited.map(|(_, attempt, exit)| (attempt, exit)));
                    return Err(Failure::Unrecorded { exits, why });
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Carries out what a committed transition licensed: every variant, no catch-all.
    fn carry_out(&mut self, effects: Effects) -> Result<(), Failure> {
        for effect in effects {
            match effect {
                Effect::Launch(attempt) => self.launch(attempt)?,
                Effect::Verify(attempt) => self.verify(&attempt)?,
                Effect::ScheduleRestart { job, when, .. } => self.restart(&job, when)?,
                Effect::Terminate(attempt) => self.terminate(&attempt)?,
            }
        }
        Ok(())
    }

    fn restart(&mut self, job: &JobId, when: RestartRelease) -> Result<(), Failure> {
        // Report first: the restart ends this process.
        self.ledger
            .deliver(&mut self.sink)
            .map_err(store_or_other)?;
        say!("restart job={job} when={when:?}");
        let argv = &self.config.restart_command;
        match Command::new(&argv[0]).args(&argv[1..]).status() {
            Ok(status) if status.success() => self.restart_ordered = true,
            // The restart deadline licenses it again, and reports it overdue; the agent goes on
            // (a command that cannot run must not stop every other job).
            Ok(status) => say!("restart failed job={job}: {status}"),
            Err(e) => say!("restart failed job={job}: {}: {e}", argv[0]),
        }
        Ok(())
    }

    /// Stops the program of `attempt`: the child this process started, or a program an earlier
    /// agent process started (killed by pid once its identity is checked, so that a reused pid
    /// is never killed).
    fn terminate(&mut self, attempt: &AttemptId) -> Result<(), Failure> {
        if let Some((a, child)) = self.children.get_mut(&attempt.job)
            && a == attempt
        {
            say!("terminate job={}: past its maximum run time", attempt.job);
            let _ = child.kill();
            return Ok(()); // its exit is reaped like any other
        }
        // The program's identity is in the attempt's last `Running` state: the current one, or,
        // for a job an operator abandoned, the one before its end.
        let recorded = self.ledger.history(&attempt.job).and_then(|history| {
            history.iter().rev().find_map(|entry| match &entry.state {
                JobState::Running {
                    attempt: a, launch, ..
                } if a.run == attempt.run && a.number == attempt.number => {
                    Some(launch.program().copied())
                }
                _ => None,
            })
        });
        let recorded = recorded.flatten();
        let Some(program) = recorded else {
            say!(
                "terminate job={}: its program's identity was never recorded; stop it by hand",
                attempt.job
            );
            return Ok(());
        };
        let same = self.ledger.session().program_id(program.pid()).ok() == Some(program);
        if same {
            say!("terminate job={} pid={}", attempt.job, program.pid());
            // Not run, it changes nothing the ledger holds: the job waits, visibly, and the
            // termination is licensed again.
            if let Err(e) = Command::new("kill")
                .args(["-KILL", &program.pid().to_string()])
                .status()
            {
                say!("terminate failed job={}: kill: {e}", attempt.job);
            }
        }
        // It was not this process's child: its exit status is lost. The next tick sees it gone
        // and ends the attempt as timed out.
        Ok(())
    }

    /// Runs the job's detection check and records its answer: 0 installed, 2 not yet (another
    /// restart is needed), anything else not installed.
    fn verify(&mut self, attempt: &AttemptId) -> Result<(), Failure> {
        let Some(argv) = self.job(&attempt.job).and_then(|j| j.verify.clone()) else {
            // The job waits, visibly (`waits`), until its check is configured or an operator
            // abandons it; the agent goes on with the others.
            say!(
                "verify job={}: a check is owed but none is configured; abandon the job or configure one",
                attempt.job
            );
            return Ok(());
        };
        let status = match Command::new(&argv[0]).args(&argv[1..]).status() {
            Ok(status) => status,
            // A check that cannot run said nothing: it stays owed (licensed again at the next
            // start), the job waits visibly, and the agent goes on with the others.
            Err(e) => {
                say!(
                    "verify job={}: the check cannot be run: {}: {e}",
                    attempt.job,
                    argv[0]
                );
                return Ok(());
            }
        };
        let result = match status.code() {
            Some(0) => CheckResult::Installed,
            Some(2) => CheckResult::NotYet,
            _ => CheckResult::NotInstalled,
        };
        let effects = self
            .ledger
            .verification(attempt, result)
            .map_err(store_or_other)?;
        say!(
            "verify job={} result={result:?} state={}",
            attempt.job,
            self.state(&attempt.job)
        );
        self.carry_out(effects)
    }
}

/// The JSON-lines sink, printing what it accepts.
struct Reporter(JsonLinesSink);

impl StatusSink for Reporter {
    type Error = std::io::Error;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        self.0.deliver(batch, answers)?;
        for message in batch {
            say!("report {}", message.key);
        }
        Ok(())
    }
}

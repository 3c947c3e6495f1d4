//! Seed 000 — Microsoft KB Q158644, "SMS: Windows NT 4.0 Upgrade Job Repeats Continually".
//!
//! What SMS 1.2 did wrong: an NT 4.0 unattended upgrade, sent as a *system background task* to a
//! machine where nobody is logged on, installed correctly, but the Package Command Manager
//! service "fails to report a job completion status" when no user is logged on. Whether the job
//! had finished lived somewhere that needed a user session and did not survive the restart the
//! upgrade itself caused, so the next start saw a mandatory job still to do and ran it again,
//! forever. (A service pack, which exits with a code instead of restarting, behaved.)
//!
//! Here the only record is the ledger: `Running` (with the boot it started in) is committed
//! *before* the program launches, the launch itself is committed right after it, and after the
//! restart the agent compares boot identities. A different boot after the recorded launch of a
//! job declared `RestartsMachine` is the program's expected end, so the job is `Completed` and
//! its status message is produced in the same commit. Nobody has to be logged
//! on, no notice has to arrive, and the clock may even run backwards.
//!
//! Run with `cargo run --example background_upgrade`.

use chrono::TimeDelta;
use jobstate::report::{Answers, JsonLinesSink, StatusSink};
use jobstate::session::{ExecutionContext, LivePrograms, NoticeDelivery, SessionFacts};
use jobstate::{
    BootId, FileStore, JobId, JobSpec, JobState, Ledger, NextJob, Offer, ProgramId,
    RebootBehaviour, RunCondition, StatusMessage, UserPresence,
};

type Agent = Ledger<FileStore, SessionFacts>;

/// One timeline line: `log!(ledger, "format", args..)`.
macro_rules! log {
    ($ledger:expr, $($what:tt)*) => { timeline(&$ledger, format_args!($($what)*)) };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = JobId::new("nt40-unattended-upgrade")?;
    let upgrade = JobSpec::new(id.clone())
        .with_mandatory(true)
        .with_run_condition(RunCondition::Always) // "System Background task": user or not
        .with_reboot(RebootBehaviour::RestartsMachine); // winnt32 restarts the machine itself
    // The agent's durable store: a directory holding a journal (one fdatasync per commit). A
    // real agent keeps it under /var/lib; the example uses a private temporary directory
    // (0700, an unpredictable name: a predictable path under /tmp is a trap another user can
    // plant), removed when `tmp` is dropped.
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let store_dir = dir.join("store");
    let mut launches = 0;

    // ---- Boot A: a background service, nobody logged on, no shutdown notices. ----
    let session_a = SessionFacts {
        boot: BootId::new("boot-a-6c1f")?, // on Linux: /proc/sys/kernel/random/boot_id
        user: UserPresence::NoneLoggedOn,
        context: ExecutionContext::BackgroundTask,
        notices: NoticeDelivery::NotDelivered,
        now: "1997-11-21T02:00:00Z".parse()?,
        since_boot: std::time::Duration::from_secs(95),
        programs: LivePrograms::Unknown, // whether programs are alive: not asked in this story
        restart_pending: jobstate::session::RestartPending::Unknown,
    };
    let (mut ledger, recovered) = Ledger::open(FileStore::open(&store_dir)?, session_a.clone())?;
    log!(ledger, "agent started, {} effect(s)", recovered.len());
    let ad = ledger.offer(upgrade.clone())?;
    log!(ledger, "server offered the upgrade: {ad:?}");
    ledger.session_mut().now += TimeDelta::minutes(1);
    run_next(&mut ledger, &mut launches)?;
    log!(
        ledger,
        "Running committed, winnt32 launched (#{launches}), launch recorded"
    );
    // The upgrade restarts the machine. The agent is killed: no exit code, no shutdown notice,
    // no status sent. Dropping the ledger is all that happens to it; nothing is lost, because
    // everything that matters was committed before the launch.
    ledger.session_mut().now += TimeDelta::minutes(40);
    log!(ledger, "winnt32 restarts the machine; the agent dies");
    let clock_at_restart = ledger.session().now;
    drop(ledger);

    // ---- Boot B: a new kernel, and a CMOS clock that reads an hour *earlier*. ----
    // Nothing depends on the clock: the boot identity alone says "the machine restarted".
    let session_b = SessionFacts {
        boot: BootId::new("boot-b-93e0")?,
        now: clock_at_restart - TimeDelta::hours(1),
        ..session_a
    };
    // The same directory, reopened by the agent in the new boot: recovery reads the journal.
    let (mut ledger, effects) = Ledger::open(FileStore::open(&store_dir)?, session_b)?;
    log!(ledger, "agent started: reconciled against the new boot");
    for effect in &effects {
        println!("    -> {effect:?}"); // none here: nothing to verify, no restart owed
    }

    // The status message the 1997 agent never sent was committed to the outbox in the same
    // commit as `Completed`: the job is done whether or not the send succeeds, and the message
    // waits, durably, until a sink accepts it. Nobody is logged on; it does not matter.
    // The "site server" here is a JSON-lines file behind a link that fails twice.
    let mut server = FailsFirst {
        failures_left: 2,
        inner: JsonLinesSink::open(dir.join("status.jsonl"))?,
    };
    loop {
        let delivery = ledger.deliver(&mut server)?;
        match (delivery.failure, delivery.retry_at) {
            (Some(why), Some(retry_at)) => {
                log!(
                    ledger,
                    "delivery failed: {why}; retry {}",
                    retry_at.format("%H:%M:%S")
                );
                ledger.session_mut().now = retry_at; // the agent loop waits for the back-off
            }
            _ => {
                log!(
                    ledger,
                    "status delivered: {} message(s), {} pending",
                    delivery.delivered,
                    delivery.pending
                );
                break;
            }
        }
    }
    let received = std::fs::read_to_string(server.inner.path())?;
    print!("    server received: {received}");
    if received.lines().count() != 1 || !received.contains("\"Completed\"") {
        return Err("the completion was not reported exactly once".into());
    }

    // The site server still lists the job and offers it again, as it did every cycle.
    ledger.session_mut().now += TimeDelta::minutes(5);
    let ad = ledger.offer(upgrade)?;
    if ad != Offer::CompletedWillNotRun {
        return Err(format!("expected CompletedWillNotRun, got {ad:?}").into());
    }
    log!(ledger, "server offered it again: {ad:?}");
    let next = run_next(&mut ledger, &mut launches)?;
    log!(ledger, "run loop asked for work: {next:?}");

    let record = ledger.job(&id).ok_or("the job vanished")?;
    println!("\nhistory of {id} (ordered by sequence number, never by clock):");
    for entry in ledger.history(&id).unwrap_or_default() {
        println!(
            "  #{} {:<14} in {} at {} -> {}",
            entry.seq,
            entry.event.kind.name(),
            entry.event.boot,
            entry.event.at.format("%H:%M"),
            entry.state.kind()
        );
    }
    let JobState::Completed {
        attempt,
        exit,
        reboot,
        verified,
        ..
    } = record.state()
    else {
        return Err(format!("expected Completed, found {:?}", record.state()).into());
    };
    println!(
        "\nfinal state: Completed (run {} attempt {}, started in {}), exit {exit:?}, \
         reboot {reboot:?}, verified {verified}",
        attempt.run, attempt.number, attempt.boot
    );
    println!("program started {launches} time(s)");
    if launches != 1 {
        return Err(format!("the upgrade ran {launches} times; it must run once").into());
    }
    drop(ledger);
    tmp.close()?;
    Ok(())
}

/// One turn of an agent's run loop: start the next runnable job, if any. `begin` commits
/// `Running` (with this boot's identity) and only then may the program start; as soon as it
/// started, `launched` commits that fact with its identity. If the machine dies a moment later,
/// the record says which boot the program ran in; if the agent dies before the launch is
/// recorded, the program never ran as far as the ledger knows, and it is launched again, never
/// completed by the next reboot.
fn run_next(ledger: &mut Agent, launches: &mut u32) -> Result<NextJob, jobstate::Error> {
    let next = ledger.next_runnable();
    if let NextJob::Run(job) = &next {
        let attempt = ledger.begin(job)?;
        *launches += 1; // a real agent spawns the program here...
        let pid = 400 + *launches; // ...and reads its pid and start time (LinuxSession::program_id)
        let effects = ledger.launched(&attempt, ProgramId::new(pid, 1_000))?;
        // Recording a launch licenses nothing here (no other job waits for a restart); an
        // agent carries out whatever any call returns all the same.
        assert!(effects.is_empty(), "{effects:?}");
    }
    Ok(next)
}

/// Prints boot, wall clock, what happened and the state of the (only) job.
fn timeline(ledger: &Agent, what: std::fmt::Arguments) {
    let state = ledger.jobs().next().map(|r| r.state().kind().to_string());
    let what = what.to_string(); // `Arguments` ignores width: pad the string
    println!(
        "[{} {}] {what:<56} state: {}",
        ledger.boot(),
        ledger.session().now.format("%H:%M"),
        state.as_deref().unwrap_or("-")
    );
}

/// A sink whose link fails a number of times before it passes messages on.
struct FailsFirst {
    failures_left: u32,
    inner: JsonLinesSink,
}

impl StatusSink for FailsFirst {
    type Error = std::io::Error;

    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(std::io::Error::other("site server unreachable"));
        }
        self.inner.deliver(batch, answers)
    }
}

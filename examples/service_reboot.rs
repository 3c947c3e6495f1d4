//! Seed 001 — Microsoft KB Q164887, "SMS: Upgrading Windows NT with PCM Service May Constantly
//! Repeat".
//!
//! What SMS 1.2 did wrong: Ntencap.exe, the wrapper around an NT upgrade, learned that the
//! machine was restarting by waiting for a shutdown message. Run from the Package Command Manager
//! *service*, it never received that message, so it marked the mandatory job failed, and at the
//! next start the service ran the same package again: every OS upgrade needing a restart repeated
//! forever.
//!
//! Here a shutdown notice is a hint the agent may record (`Ledger::shutdown_notice`) and nothing
//! waits for it. Reboot truth is the boot identity: `Running` is committed with boot A before the
//! launch; when the agent starts in boot B, the job (declared `RestartsMachine`) is known to have
//! been ended by its own restart. Because this job asks for `verify_after_reboot`, the ledger
//! first asks for a detection check (`Effect::Verify`) and completes only when it says "installed".
//!
//! Run with `cargo run --example service_reboot`.

use chrono::TimeDelta;
use jobstate::report::{Answers, JsonLinesSink, StatusSink};
use jobstate::session::{ExecutionContext, LivePrograms, NoticeDelivery, SessionFacts};
use jobstate::{
    BootId, Effect, FileStore, JobId, JobSpec, JobState, Ledger, NextJob, Offer, ProgramId,
    RebootBehaviour, StateKind, StatusMessage, UserPresence,
};

type Agent = Ledger<FileStore, SessionFacts>;

/// One timeline line: `log!(ledger, "format", args..)`.
macro_rules! log {
    ($ledger:expr, $($what:tt)*) => { timeline(&$ledger, format_args!($($what)*)) };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = JobId::new("nt40-upgrade-via-ntencap")?;
    let upgrade = JobSpec::new(id.clone())
        .with_mandatory(true)
        .with_reboot(RebootBehaviour::RestartsMachine)
        // The restart proves the program ended, not that it worked: confirm before completing.
        .with_verify_after_reboot(true);
    // The agent's durable store, in a private temporary directory (0700, an unpredictable
    // name), removed when `tmp` is dropped (a real agent: /var/lib/...).
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let mut launches = 0;
    // What the machine reports after the upgrade; the detection check reads it.
    let installed_os_version = "NT 4.0";
    let detection_check = || installed_os_version == "NT 4.0";

    // ---- Boot A: the agent is a service; shutdown notices never reach it. ----
    let session_a = SessionFacts {
        boot: BootId::new("boot-a-17d2")?,
        user: UserPresence::LoggedOn, // irrelevant here: the bug was about messages
        context: ExecutionContext::Service,
        notices: NoticeDelivery::NotDelivered,
        now: "1997-03-04T22:00:00Z".parse()?,
        since_boot: std::time::Duration::from_secs(120),
        programs: LivePrograms::Unknown,
        restart_pending: jobstate::session::RestartPending::Unknown,
    };
    let (mut ledger, _) = Ledger::open(FileStore::open(dir)?, session_a.clone())?;
    let ad = ledger.offer(upgrade.clone())?;
    log!(ledger, "server offered the upgrade: {ad:?}");
    run_next(&mut ledger, &mut launches)?;
    log!(ledger, "Running committed, Ntencap launched (#{launches})");
    // The machine restarts. No shutdown message reaches the service, so `shutdown_notice` is
    // never called (an agent that gets one may record it: a hint, nothing waits for it), and no
    // exit code arrives. Ntencap's verdict "failed" would have been a guess; here there is none.
    ledger.session_mut().now += TimeDelta::minutes(25);
    log!(ledger, "machine restarts: no notice, no exit code");
    drop(ledger);

    // ---- Boot B: the agent starts; the boot identity differs, so the restart happened. ----
    let session_b = SessionFacts {
        boot: BootId::new("boot-b-c04a")?,
        now: session_a.now + TimeDelta::minutes(32),
        ..session_a.clone()
    };
    let (mut ledger, effects) = Ledger::open(FileStore::open(dir)?, session_b.clone())?;
    let n = effects.len();
    log!(ledger, "agent started: reconciled, {n} effect(s)");
    let kind = ledger.job(&id).map(|r| r.state().kind());
    if kind != Some(StateKind::AwaitingReboot) {
        return Err(format!("expected AwaitingReboot (verification owed), got {kind:?}").into());
    }
    // Recovery licensed a detection check. The restarted agent remembers nothing of the
    // attempt: `Verify` names it, and the verdict goes back under that name (a stale attempt
    // would be refused).
    for effect in &effects {
        match effect {
            Effect::Verify(attempt) => {
                let installed = detection_check();
                log!(ledger, "  -> detection check: installed = {installed}");
                for effect in ledger.verification(attempt, installed)? {
                    log!(ledger, "  -> {effect:?}");
                }
            }
            other => log!(ledger, "  -> {other:?}"),
        }
    }
    // Status messages were committed with each transition (AwaitingReboot at recovery,
    // Completed with the verdict). Delivering them is a separate step of the loop, from the
    // durable outbox: the service needs no message and no user to do it.
    let mut server = PrintSink(JsonLinesSink::open(dir.join("status.jsonl"))?);
    let delivery = ledger.deliver(&mut server)?;
    log!(
        ledger,
        "  delivered {} status message(s)",
        delivery.delivered
    );

    // Restart the agent three more times (twice in boot B, once after another reboot), and
    // each time the server offers the job again. A same-boot restart concludes nothing; a
    // completed mandatory job is a tombstone either way.
    for (boot, hours) in [("boot-b-c04a", 0), ("boot-b-c04a", 2), ("boot-c-5e91", 9)] {
        drop(ledger); // the agent process exits; only the store remains
        let now = session_b.now + TimeDelta::hours(hours);
        let session = SessionFacts {
            boot: BootId::new(boot)?,
            now,
            ..session_b.clone()
        };
        let effects;
        (ledger, effects) = Ledger::open(FileStore::open(dir)?, session)?;
        let n = effects.len();
        let ad = ledger.offer(upgrade.clone())?;
        let next = run_next(&mut ledger, &mut launches)?;
        log!(ledger, "agent restart: {n} effect(s), {ad:?}, {next:?}");
        if ad != Offer::CompletedWillNotRun || next != NextJob::Idle {
            return Err("a completed mandatory job was offered again".into());
        }
    }

    let record = ledger.job(&id).ok_or("the job vanished")?;
    let JobState::Completed {
        verified, reboot, ..
    } = record.state()
    else {
        return Err(format!("expected Completed, found {:?}", record.state()).into());
    };
    println!("\nfinal state: Completed, verified: {verified}, reboot: {reboot:?}");
    println!("program started {launches} time(s)");
    if launches != 1 {
        return Err(format!("the upgrade ran {launches} times; it must run once").into());
    }
    drop(ledger);
    tmp.close()?;
    Ok(())
}

/// One turn of the run loop. `begin` commits `Running` with this boot's identity *before* the
/// program starts, and `launched` commits the launch right after, so a restart at any later
/// instant is recognisable from the boot id alone, as the end of a program that ran.
fn run_next(ledger: &mut Agent, launches: &mut u32) -> Result<NextJob, jobstate::Error> {
    let next = ledger.next_runnable();
    if let NextJob::Run(job) = &next {
        let attempt = ledger.begin(job)?;
        *launches += 1; // a real agent spawns the program here, then records it:
        let effects = ledger.launched(&attempt, ProgramId::new(700 + *launches, 1_000))?;
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
        "[{} {}] {what:<60} state: {}",
        ledger.boot(),
        ledger.session().now.format("%H:%M"),
        state.as_deref().unwrap_or("-")
    );
}

/// Stands in for the site server: a JSON-lines status file, printing what it accepts.
struct PrintSink(JsonLinesSink);

impl StatusSink for PrintSink {
    type Error = std::io::Error;

    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        self.0.deliver(batch, answers)?;
        for message in batch {
            println!("    -> server received {}", message.key);
        }
        Ok(())
    }
}

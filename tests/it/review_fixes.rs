//! Review C of the third-round fixes (0e77c30..fb5f3d4). Each test is one finding: it fails on
//! the code it was written against; the CHANGELOG (Unreleased, Fixed) says how each was fixed.

use std::collections::HashSet;
use std::time::Duration;

use jobstate::report::{Answers, StatusSink};
use jobstate::{Ledger, MemoryStore, StatusKey, StatusMessage};

use crate::common::*;

/// A healthy receiver with a burst limit, as most HTTP collectors have: it stores the first
/// `per_burst` messages of each delivery, then answers 429 without `Retry-After` (the shipped
/// `HttpSink` turns a 429 or 503 without `Retry-After` into `Answers::pause(None)`). It never
/// fails on any message.
struct BurstLimited {
    per_burst: usize,
    stored: HashSet<StatusKey>,
}

impl StatusSink for BurstLimited {
    type Error = std::io::Error;
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        for (i, message) in batch.iter().enumerate() {
            if i == self.per_burst {
                // "429 Too Many Requests", no Retry-After.
                answers.pause(None);
                return Ok(());
            }
            self.stored.insert(message.key.clone());
            answers.accept(&message.key);
        }
        Ok(())
    }
}

/// C1. A receiver that only rate-limits turns healthy messages into dead letters.
///
/// A laptop is offline for 8 days (its agent keeps working: 60 messages are reported). Back
/// online, its collector accepts 5 messages per burst and answers 429 (no `Retry-After`) to the
/// 6th, which `HttpSink` maps to `pause(None)`. The 6th message becomes a "suspect", offered
/// after the others from then on; one burst lands the throttle on it again, and "the receiver
/// answered another message since": the pause counts as the message's own failure.
/// The message is older than the give-up age (7 days by default), so that one failure makes it
/// a dead letter ("the sink failed on it each time, while the receiver answered other
/// messages"), though the receiver never failed on it, only throttled the agent. The same
/// happens without the age bound after 20 such bursts (any steady backlog above the burst
/// limit), and with a flapping network (`Err` in the middle of a batch).
///
/// Before the fix a pause (429/503/unreachable) never counted against any message, as the
/// `StatusSink` and `Answers::pause` docs still say ("the messages not answered yet are neither
/// failed nor counted"). DESIGN.md, "Status reporting": "a delivery failure is retried later";
/// the give-up bound is for "one message that keeps failing", not for a receiver that is
/// reachable and merely busy. Severity: medium (the statuses are kept as dead letters, visible,
/// but the server never learns them without an operator's requeue: for a completed mandatory
/// job that is the seeds' symptom, a server that never hears "done").
#[test]
fn a_receiver_that_only_rate_limits_makes_healthy_messages_dead_letters() {
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("offline-{i:02}")).collect();
    with_messages(&mut ledger, &names);
    let mut collector = BurstLimited {
        per_burst: 5,
        stored: HashSet::new(),
    };
    // Back online after 8 days; the agent delivers whenever it is due (checked every minute).
    let back = t0() + chrono::TimeDelta::days(8);
    for minute in 0..(24 * 60) {
        ledger.session_mut().now = back + minutes(minute);
        let _ = ledger.deliver(&mut collector).unwrap();
    }
    let dead: Vec<String> = ledger
        .dead_letters()
        .map(|l| format!("{} ({})", l.message.key, l.note.reason))
        .collect();
    assert!(
        dead.is_empty(),
        "a collector that accepted {} messages and only ever throttled made {} healthy \
         message(s) dead letters: {dead:?}",
        collector.stored.len(),
        dead.len()
    );
    assert_eq!(collector.stored.len(), 60);
}

/// C2. A rerun of the abandoned job drops the hold that a restart it still owed keeps on
/// every other job (fix 3, `abandoned_restart_owed`): the hold is looked up only for jobs in
/// `Ledger::abandoned`, and `rerun` removes the job from it.
///
/// Sequence: job `a` (may request a restart) exits 3010; the ledger licenses the restart and
/// the agent orders it (`shutdown -r +5`, say); an operator abandons `a`, then, before the
/// machine goes down, asks to run it again. `b` was waiting, "RestartPending { job: a }",
/// until `a`'s restart deadline; right after the rerun it is handed out at once (and so is
/// `a`'s new run), though nothing says the ordered restart will not come: it is still the
/// restart the fix says "may still come", and it ends `b`'s attempt (attributed to nobody:
/// `a`'s record no longer says a restart is owed).
///
/// DESIGN.md, "Restarts are exclusive": "nothing else starts while it runs or while its
/// restart is owed"; the fix's own rule (CHANGELOG: "a restart owed when its job was abandoned
/// stays in the way until its deadline"). Severity: low (the interrupted attempt is retried;
/// a job declared as restarting the machine is not failed), but it is the hole fix 3 closes,
/// reopened by an ordinary operator action.
#[test]
fn a_rerun_of_the_abandoned_job_drops_the_hold_of_the_restart_it_still_owes() {
    use jobstate::{NextJob, ProgramExit, RebootBehaviour, WaitReason};
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    let a = msi_job(job("a")).with_reboot(RebootBehaviour::MayRequest);
    let b = msi_job(job("b"));
    ledger.offer(a.clone()).unwrap();
    let attempt = start(&mut ledger, &a);
    let effects = ledger
        .program_exited(&attempt, ProgramExit::Code(3010))
        .unwrap();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, jobstate::Effect::ScheduleRestart { .. })),
        "{effects:?}"
    );
    // The agent ordered the restart. The operator abandons `a`.
    let _effects = ledger.abandon(a.id()).unwrap();
    ledger.offer(b.clone()).unwrap();
    assert!(
        matches!(
            ledger.next_runnable(),
            NextJob::Wait {
                reason: WaitReason::RestartPending { .. },
                ..
            }
        ),
        "the fix holds b while a's restart may come: {:?}",
        ledger.next_runnable()
    );
    // A minute later, before the machine went down, the operator asks to run `a` again:
    // refused while the restart may still come (fixed so), and accepted after its deadline.
    ledger.session_mut().since_boot += Duration::from_secs(60);
    assert!(
        matches!(
            ledger.rerun(a.id()),
            Err(jobstate::Error::NotRunnable {
                reason: WaitReason::RestartPending { ref job },
                ..
            }) if job == a.id()
        ),
        "a rerun under the restart a's abandoned attempt owed"
    );
    assert!(!matches!(ledger.next_runnable(), NextJob::Run(_)));
    ledger.session_mut().since_boot += Duration::from_secs(3600 - 60);
    let _effects = ledger.rerun(a.id()).unwrap();
    let first = ledger.next_runnable();
    // `a`'s new run is handed out at once; say it is quick (exit 0: nothing to do any more).
    let again = start(&mut ledger, &a);
    let _effects = ledger.program_exited(&again, ProgramExit::Code(0)).unwrap();
    let next = ledger.next_runnable();
    assert_eq!(
        next,
        NextJob::Run(b.id().clone()),
        "after the deadline, a's rerun ({first:?}) and then b run"
    );
}

/// C4 (examples/agent.rs, fix 5). The reopen loop that is to keep the exits a refusing store
/// did not take gives up at the first reopen that the store still refuses: `serve` opens with
/// `Ledger::open_with_exits(..)?`, whose commit of the held exit fails again (the disk is
/// still full), and that error is not `Failure::Unrecorded`, so `run` returns it at once
/// (exit 1): no second try "a second apart", and the exits held are dropped. (Had the open
/// succeeded, the budget of three reopens is for the agent's whole life, not "in a row", and
/// the exits of the third are dropped too; a store refusal in any other call — `deliver`,
/// `tick`, `begin` — ends the agent at once while its children run, and their exits are lost
/// the same way.)
///
/// Sequence: the job's program writes its marker, the disk fills (here: the program lowers the
/// agent's RLIMIT_FSIZE to the journal's size, so the journal can no longer grow: EFBIG, as
/// ENOSPC would), the program exits 0. The agent reaps it, `program_exited` fails, the agent
/// reopens, the open's commit of the exit fails, the agent exits 1. Space comes back; the agent
/// is started again (systemd's Restart=on-failure): the program is gone and its exit never
/// recorded, so the attempt is "lost" and the job runs a second time.
///
/// Fixed so: the agent holds the exit and opens the store again, backing off, for as long as
/// it holds one; the test lifts the limit after 4 s ("space comes back"), the agent records
/// the exit (Completed) and exits 0; started again, it runs nothing.
///
/// DESIGN.md, "The problem, from the field": the truth "this job finished" (a reaped exit 0)
/// kept where the job's conditions destroy it (the agent's memory, given up after one retry);
/// "A program can vanish" is for an exit never heard; this one was heard. The fix's own claim
/// (CHANGELOG/agent.rs: "open it again with the exits it refused ... A few times, a second
/// apart"). Severity: medium (a successful job without a check runs again after a full disk).
#[cfg(target_os = "linux")]
#[test]
fn the_example_agent_keeps_an_exit_while_the_store_still_refuses_it_at_the_reopen() {
    use std::os::unix::fs::PermissionsExt;
    if crate::common::no_prlimit() {
        return;
    }
    let _spawning = crate::file_store::spawning();
    let agent = example_agent();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let job = format!(
        "#!/bin/sh\necho ran >> {d}/marker\nsleep 0.5\n\
         if [ $(wc -l < {d}/marker) -eq 1 ]; then\n\
           max=$(stat -c %s {d}/state/* | sort -n | tail -1)\n\
           prlimit --pid $PPID --fsize=$max:unlimited\n\
         fi\nexit 0\n"
    );
    std::fs::write(dir.path().join("job.sh"), job).unwrap();
    std::fs::set_permissions(
        dir.path().join("job.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let config = format!(
        r#"{{"state_dir": "{d}/state", "status_file": "{d}/status.jsonl",
            "restart_command": ["/bin/true"], "poll_ms": 20, "exit_when_idle": true,
            "jobs": [{{"spec": {{"id": "patch"}}, "program": ["{d}/job.sh"]}}]}}"#
    );
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    // SIGXFSZ ignored (as an agent that handles a full disk would): a write past the limit
    // fails with EFBIG instead of killing the process.
    let mut first = spawn_agent_ignoring_xfsz(&agent, &dir.path().join("config.json"));
    // The agent holds the exit and opens the store again and again, backing off; space comes
    // back after a few seconds (the limit lifted), and it records the exit then.
    std::thread::sleep(Duration::from_secs(4));
    let lifted = lift_file_size_limit(first.id());
    if !lifted.status.success() {
        let _ = first.kill();
        let out = first.wait_with_output().unwrap();
        panic!(
            "prlimit: {} (the agent: {} / {})",
            String::from_utf8_lossy(&lifted.stderr),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exited = wait_at_most(&mut first, Duration::from_secs(120));
    let mut out = String::new();
    use std::io::Read;
    let _ = first.stdout.take().unwrap().read_to_string(&mut out);
    assert!(
        out.contains("exit(s) held"),
        "the store never refused the exit: the test did not test: {out}"
    );
    // The agent is started again: nothing to run.
    let second = std::process::Command::new(&agent)
        .arg(dir.path().join("config.json"))
        .output()
        .unwrap();
    let runs = std::fs::read_to_string(dir.path().join("marker")).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the program exited 0 once and ran again. First agent ({exited:?}): {} / second: {}",
        out.trim().replace('\n', " | "),
        String::from_utf8_lossy(&second.stdout)
            .trim()
            .replace('\n', " | "),
    );
    assert_eq!(exited.map(|s| s.success()), Some(true), "{out}");
    let status = std::fs::read_to_string(dir.path().join("status.jsonl")).unwrap();
    assert!(status.contains("Completed"), "{status}");
}

/// C3. Fix 4 (`abandoned_program_alive`: an abandoned program recorded unresponsive counts as
/// alive while the session answers `Unknown`) has no way back for the rest of the boot, even
/// when the agent *heard* the program go.
///
/// Sequence, on a session that cannot tell which programs run (`LivePrograms::Unknown`, the
/// default of `SessionFacts`): a job's program passes its run-time limit, is terminated, is
/// still "there" after the grace (the ledger cannot see it go, so it is marked unresponsive);
/// an operator abandons the job. The agent's kill then works and it reaps the child's exit
/// (signal 9). `program_exited` refuses it (`Invalid { state: Failed, event: ProgramExited }`),
/// so does `program_lost`, and `open_with_exits` swallows it: no call records that the program
/// is gone. From then on, until the machine restarts: `rerun` is refused
/// (`ProgramStillRunning`), and every job that may restart the machine waits
/// (`Exclusive { job }`, polled every 10 s) though nothing runs. Nothing licenses the restart
/// that would end it. (Before fix 4, `Unknown` counted as gone: no hold.)
///
/// DESIGN.md invariant 8 ("nothing the agent fails to hear ... leaves a job waiting without a
/// bound ... or an operator's way out": here the agent heard it, and the other job waits
/// without bound), "An operator can always end a stuck job" (the operator's rerun is refused,
/// and abandoning the waiting job only fails it), "Restarts are exclusive" (nothing runs).
/// Severity: medium on sessions without process introspection; none where the session says
/// `Gone`.
#[test]
fn an_abandoned_programs_exit_the_agent_heard_cannot_end_the_hold_of_fix_4() {
    use jobstate::session::LivePrograms;
    use jobstate::{NextJob, ProgramExit, ProgramId, RebootBehaviour};
    let spec = msi_job(job("installer"))
        .with_mandatory(false)
        .with_max_run_time(Duration::from_secs(600));
    let upgrade = msi_job(job("upgrade")).with_reboot(RebootBehaviour::MayRequest);
    let mut facts = service_session("a");
    facts.programs = LivePrograms::Unknown;
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), facts).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 7)).unwrap();
    ledger.session_mut().since_boot += Duration::from_secs(600);
    let _effects = ledger.tick().unwrap();
    ledger.session_mut().since_boot += spec.terminate_grace();
    let _effects = ledger.tick().unwrap();
    let _effects = ledger.abandon(spec.id()).unwrap();
    ledger.offer(upgrade.clone()).unwrap();
    // The agent's kill worked: it reaped its child, and says so in every way it can.
    let exited = ledger.program_exited(&attempt, ProgramExit::Signal(9));
    let lost = ledger.program_lost(&attempt);
    ledger.session_mut().since_boot += Duration::from_secs(24 * 3600);
    let next = ledger.next_runnable();
    let rerun = ledger.rerun(spec.id());
    assert!(
        matches!(next, NextJob::Run(_)) && rerun.is_ok(),
        "a day after the abandoned program's exit was reaped (program_exited: {exited:?}; \
         program_lost: {lost:?}), nothing runs and still: upgrade {next:?}; rerun {rerun:?}"
    );
}

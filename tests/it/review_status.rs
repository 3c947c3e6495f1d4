//! Review (B) of status reporting, spec changes and operator actions when the store fails in
//! the middle of a call or the agent crashes. Each test is one finding: it fails on the code it
//! was written against, and its comment names the sequence, what happened, and the sentence of
//! DESIGN.md it breaks; the CHANGELOG (Unreleased, Fixed) says how each was fixed.

use std::time::Duration;

use jobstate::session::{LivePrograms, SessionFacts};
use jobstate::{
    AttemptId, Effect, JobState, Ledger, LedgerOptions, MemoryStore, NextJob, ProgramExit,
    ProgramId, StateKind, StatusMessage,
};

use crate::common::*;

fn session(boot_name: &str, alive: &[&AttemptId]) -> SessionFacts {
    SessionFacts {
        programs: LivePrograms::Known(alive.iter().map(|a| (*a).clone()).collect()),
        ..service_session(boot_name)
    }
}

/// F1. One message whose delivery makes the transport fail (the shipped `HttpSink` returns `Err`
/// for a request that times out or whose connection is reset, and pauses on a 503: a collector
/// that crashes or times out on one message, a proxy that resets the connection on its body)
/// holds back every later message for ever, and is never given up on.
///
/// The sink delivers the messages before it, then fails on it: the ledger pauses the whole sink
/// and counts the failure against no message. After the pause the same message is again the
/// first due one, and fails again. Messages reported after it are never delivered; the poison
/// one is never a dead letter, neither after 20 failures nor after 7 days (the give-up bounds
/// are looked at only on a "retry" or missing answer, never on a pause).
///
/// DESIGN.md, "Status reporting": "one message that keeps failing never holds back the others,
/// and a message given up on is kept, visible". Severity: high for a fleet (one machine's status
/// reporting stops for good, silently: no dead letter, no error returned; the outbox only
/// grows).
#[test]
fn a_message_that_always_breaks_the_connection_holds_back_every_later_one_for_ever() {
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
    with_messages(&mut ledger, &["poison"]);
    let poison = job("poison");
    // The receiver stores every message but breaks the connection on the poison one.
    let mut server = Scripted::new(|m: &StatusMessage| {
        if m.key.job == poison {
            Reply::Unreachable
        } else {
            Reply::Accept
        }
    });
    // Eight days of agent loop: a new message every hour, delivery whenever the ledger says.
    let mut reported = Vec::new();
    for hour in 0..(8 * 24) {
        let name = format!("later-{hour}");
        with_messages(&mut ledger, std::slice::from_ref(&name));
        reported.push(name);
        // Within the hour, call deliver as often as next_wakeup asks (at least once a minute).
        for minute in 0..60 {
            ledger.session_mut().now = t0() + minutes(hour * 60 + minute);
            let _ = ledger.deliver(&mut server).unwrap();
        }
    }
    let delivered = reported
        .iter()
        .filter(|name| {
            server
                .stored
                .keys()
                .any(|k| k.job.as_str() == name.as_str())
        })
        .count();
    let dead = ledger.dead_letters().count();
    assert!(
        delivered == reported.len() || dead == 1,
        "after 8 days: {delivered} of {} later messages delivered, {dead} dead letters, {} pending \
         (the first pending: {:?}): the poison message holds back every other one, for ever",
        reported.len(),
        ledger.outbox().count(),
        ledger.outbox().next().map(|m| m.key.to_string()),
    );
    assert_eq!(
        delivered,
        reported.len(),
        "a message reported after the poison one waited behind it"
    );
}

/// F2. An exit status the agent holds is lost to a failed commit: the agent reaped its child
/// (`Child::try_wait`, as examples/agent.rs does), `program_exited` failed on the store (a full
/// disk for a moment; the `FileStore` then refuses every commit until it is reopened), so the
/// agent must open the ledger again. The reconciliation at open runs before any call can hand
/// it the exit it holds: the program is gone in this boot and "its exit was never recorded", so
/// the attempt ends as `ProgramLost` and the job is queued to run again. The exit status the
/// agent then reports is refused as stale. A job whose program succeeded (exit 0) runs a second
/// time: the seeds' bug, from one transient IO error. (The example agent does worse: its `?`
/// ends the process, and the status is gone with it.)
///
/// DESIGN.md, "The problem, from the field" (the truth "this job finished" kept where the job's
/// conditions destroy it) and invariant 7 / "A program can vanish" (ProgramLost is for a program
/// whose exit was *never heard*; this one was heard). No public call records a known exit once
/// the ledger had to be reopened. Severity: high (a successful job without a check runs again).
/// A memory store that fails like the `FileStore` after a failed fdatasync: once a commit
/// failed, it refuses every commit until it is opened (loaded) again.
struct FailStop {
    inner: MemoryStore,
    arm: std::rc::Rc<std::cell::Cell<bool>>,
    failed: bool,
}

impl jobstate::store::Store for FailStop {
    fn load(&mut self) -> Result<jobstate::store::Snapshot, jobstate::store::StoreError> {
        self.failed = false;
        self.inner.load()
    }
    fn commit(
        &mut self,
        commit: &jobstate::store::Commit,
    ) -> Result<jobstate::store::Revision, jobstate::store::StoreError> {
        if self.arm.replace(false) || self.failed {
            self.failed = true;
            return Err(jobstate::store::StoreError::Io {
                context: "committing to the journal; the store refuses further commits until \
                          reopened"
                    .into(),
                source: std::io::Error::other("fdatasync: EIO"),
            });
        }
        self.inner.commit(commit)
    }
}

#[test]
fn an_exit_heard_before_a_failed_commit_can_still_be_recorded_after_the_reopen_it_forces() {
    let store = MemoryStore::new();
    let arm = std::rc::Rc::new(std::cell::Cell::new(false));
    let open = |arm: &std::rc::Rc<std::cell::Cell<bool>>, heard: Vec<(AttemptId, ProgramExit)>| {
        let wrapped = FailStop {
            inner: store.clone(),
            arm: arm.clone(),
            failed: false,
        };
        Ledger::open_with_exits(wrapped, session("a", &[]), LedgerOptions::default(), heard)
            .unwrap()
    };
    let spec = msi_job(job("patch"));
    let (mut ledger, _) = open(&arm, Vec::new());
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 7)).unwrap();
    // The program exits 0 and is reaped; the commit of its exit fails, and so does a retry.
    arm.set(true);
    assert!(ledger.program_exited(&attempt, 0).is_err());
    assert!(
        ledger.program_exited(&attempt, 0).is_err(),
        "fail-stop until reopened"
    );
    // The agent reopens, still holding the exit status, and hands it to the open; its program
    // is gone. (Fixed by `Ledger::open_with_exits`: a plain `open` cannot know the exit.)
    drop(ledger);
    let (ledger, effects) = open(&arm, vec![(attempt.clone(), ProgramExit::Code(0))]);
    assert_eq!(
        ledger.job(spec.id()).unwrap().state().kind(),
        StateKind::Completed,
        "the exit 0 the agent heard was not recorded; the job is {:?} and will run again \
         (open's effects {effects:?}, next {:?})",
        ledger.job(spec.id()).unwrap().state(),
        ledger.next_runnable(),
    );
    assert_eq!(effects, Vec::<Effect>::new());
    // Recorded once: handed to the next open again (the agent could not tell the commit
    // failed for good), it changes nothing.
    drop(ledger);
    let (ledger, effects) = open(&arm, vec![(attempt.clone(), ProgramExit::Code(0))]);
    assert_eq!(effects, Vec::<Effect>::new());
    assert_eq!(
        take_reports(&mut { ledger }).len(),
        1,
        "one terminal message for the run"
    );
}

/// F3. A program that outlived its termination (reported unresponsive: "a second attempt never
/// starts beside it") is abandoned by an operator; the session cannot tell whether programs are
/// alive (`LivePrograms::Unknown`, the default of `SessionFacts`, and what a session without
/// process introspection answers). `rerun` is accepted and `begin` starts a second attempt at
/// once: the ledger knew the first program would not go, and nothing since said it went.
///
/// DESIGN.md, "A program can vanish": "one still alive after a grace period is reported and
/// waits visibly (a second attempt never starts beside it), and an operator may abandon the
/// job"; invariant 4: "A job never has two attempts running at once". `rerun` refuses only when
/// the session says `Alive`; `Unknown` is taken as gone. Severity: medium (two installers of one
/// package at once, on platforms whose session answers `Unknown`).
#[test]
fn a_rerun_after_abandoning_an_unresponsive_program_never_starts_beside_it_when_the_session_cannot_tell()
 {
    let store = MemoryStore::new();
    let spec = msi_job(job("installer"))
        .with_mandatory(false)
        .with_max_run_time(Duration::from_secs(600));
    let mut facts = service_session("a");
    facts.programs = LivePrograms::Unknown;
    let (mut ledger, _) = Ledger::open(store, facts).unwrap();
    ledger.offer(spec.clone()).unwrap();
    let attempt = ledger.begin(spec.id()).unwrap();
    let _effects = ledger.launched(&attempt, ProgramId::new(4242, 7)).unwrap();
    // Past its limit: terminated; past the termination's grace: still there, reported.
    ledger.session_mut().since_boot += Duration::from_secs(600);
    let effects = ledger.tick().unwrap();
    assert_eq!(effects, vec![Effect::Terminate(attempt.clone())]);
    ledger.session_mut().since_boot += spec.terminate_grace();
    let _effects = ledger.tick().unwrap();
    assert!(matches!(
        ledger.job(spec.id()).unwrap().state(),
        JobState::Running { terminate: Some(t), .. } if t.unresponsive
    ));
    // An operator abandons it (the program is still there), then asks for a rerun.
    let effects = ledger.abandon(spec.id()).unwrap();
    assert_eq!(effects, vec![Effect::Terminate(attempt.clone())]);
    let rerun = ledger.rerun(spec.id());
    let second = match (&rerun, ledger.next_runnable()) {
        (Ok(_), NextJob::Run(id)) => ledger.begin(&id).ok(),
        _ => None,
    };
    assert!(
        second.is_none(),
        "a second attempt {second:?} began beside {attempt}, whose program was last seen \
         refusing to go and never seen gone (rerun: {rerun:?})"
    );
}

/// F4 (examples/agent.rs). One job's detection check that cannot be executed (a script whose
/// interpreter is missing, a file that lost its execute bit: `load` checks only that the path
/// is a file) stops the whole agent at every start, for good. `verify` runs the check with
/// `Command::status()?`, so the exec error ends the process (exit 1). The check is owed, so the
/// next start licenses it again at open, and `carry_out(effects)?` ends that process too,
/// before it offers any job, starts any, ticks, or delivers a single status message. A job added
/// to the config never runs; messages pending stay pending; the log names no job
/// ("Permission denied (os error 13)"). The same holds for a `restart_command` that cannot be
/// executed (`restart` uses `status()?` too, and a soft restart is licensed again at open).
///
/// DESIGN.md, "What the agent may never hear" ("none may leave a job ... stuck without end";
/// the failing job here waits visibly, but every *other* job waits without bound), "Every job
/// ends or waits visibly", and "Status reporting" (one job's trouble never holds back the
/// others). The launch path handles the same error (`launch_failed`); the check path does not.
/// Severity: medium (an example users copy: one bad check takes a machine's agent down).
#[cfg(target_os = "linux")]
#[test]
fn the_example_agent_keeps_running_other_jobs_when_one_jobs_check_cannot_be_executed() {
    use std::os::unix::fs::PermissionsExt;
    let _spawning = crate::file_store::spawning();
    let agent = example_agent();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let script = |name: &str, body: &str, mode: u32| {
        std::fs::write(dir.path().join(name), body).unwrap();
        std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
            .unwrap();
    };
    script("fail.sh", "#!/bin/sh\nexit 1\n", 0o755);
    script("ok.sh", "#!/bin/sh\nexit 0\n", 0o755);
    script("reboot.sh", "#!/bin/sh\nexit 0\n", 0o755);
    // The check exists but cannot be executed.
    script("check.sh", "#!/bin/sh\nexit 0\n", 0o644);
    let config = |jobs: &str| {
        format!(
            r#"{{"state_dir": "{}", "status_file": "{}", "restart_command": ["{}"],
                "poll_ms": 20, "jobs": [{jobs}]}}"#,
            path("state"),
            path("status.jsonl"),
            path("reboot.sh"),
        )
    };
    let kb = format!(
        r#"{{"spec": {{"id": "kb", "verify_after_reboot": true, "retry": {{"max_attempts": 1}}}},
            "program": ["{}"], "verify": ["{}"]}}"#,
        path("fail.sh"),
        path("check.sh")
    );
    let later = format!(
        r#"{{"spec": {{"id": "later"}}, "program": ["{}"]}}"#,
        path("ok.sh")
    );
    let run = |jobs: &str| {
        std::fs::write(dir.path().join("config.json"), config(jobs)).unwrap();
        std::process::Command::new(&agent)
            .arg(dir.path().join("config.json"))
            .output()
            .unwrap()
    };
    // The first run: kb fails, its check is owed and cannot be run.
    let first = run(&kb);
    // The operator adds a job; the agent is started again (systemd's Restart=on-failure).
    let mut outputs = Vec::new();
    for _ in 0..3 {
        outputs.push(run(&format!("{kb}, {later}")));
    }
    let status = std::fs::read_to_string(dir.path().join("status.jsonl")).unwrap_or_default();
    let last = outputs.last().unwrap();
    assert!(
        status.contains(r#""job":"later""#),
        "the job added to the config never ran nor was reported: first run {:?} ({}), then \
         every start exits {:?}: {}",
        first.status,
        String::from_utf8_lossy(&first.stderr).trim(),
        last.status,
        String::from_utf8_lossy(&last.stdout)
            .trim()
            .replace('\n', " | ")
            + " / "
            + String::from_utf8_lossy(&last.stderr).trim(),
    );
}

/// F1 with the shipped `HttpSink` (feature `http`): a collector that drops the connection
/// without an answer on one message (a handler that crashes on it, a proxy that resets it). The
/// sink returns `Err` for it; the ledger pauses the whole sink; that message is the first due
/// one after every pause. Two days later nothing reported after it reached the collector, and it
/// is no dead letter.
#[cfg(feature = "http")]
#[test]
fn with_the_http_sink_a_message_the_collector_drops_holds_back_every_later_one() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    let stored = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = stored.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let body = String::from_utf8_lossy(&body).to_string();
            if body.contains("\"poison\"") {
                drop(stream); // no answer: the connection is closed
                continue;
            }
            kept.lock().unwrap().push(body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let mut sink = jobstate::report::HttpSink::new(&url).unwrap();
    let (mut ledger, _) = Ledger::open(MemoryStore::new(), service_session("a")).unwrap();
    with_messages(&mut ledger, &["poison"]);
    let mut later = 0;
    for hour in 0..48 {
        with_messages(&mut ledger, &[format!("later-{hour}")]);
        later += 1;
        for minute in 0..60 {
            ledger.session_mut().now = t0() + minutes(hour * 60 + minute);
            let _ = ledger.deliver(&mut sink).unwrap();
        }
    }
    let delivered = stored.lock().unwrap().len();
    assert!(
        delivered == later || ledger.dead_letters().count() == 1,
        "after 2 days through the HttpSink: {delivered} of {later} later messages reached the \
         collector, {} dead letters, {} pending behind {:?}",
        ledger.dead_letters().count(),
        ledger.outbox().count(),
        ledger.outbox().next().map(|m| m.key.to_string()),
    );
}

/// F5 (examples/agent.rs, default `exit_when_idle: true`). A restart the agent ordered whose
/// command succeeded but that never comes (`shutdown -r +5` cancelled by an operator, a
/// `systemctl reboot` job that a unit then blocks, a container whose `reboot` does nothing) is
/// never reported overdue nor licensed again in that boot: the agent counts an owed restart it
/// ordered as "idle" and exits at once. Nothing runs until someone starts the agent again; every
/// other job waits behind the owed restart ("nothing else starts while ... its restart is owed")
/// without a bound. Here the job's restart deadline is 1 s; the agent is given 5 s.
///
/// DESIGN.md, "A restart can fail to come": "A restart required (soft) or initiated (hard) that
/// no new boot confirms within the spec's deadline is licensed again and reported overdue";
/// invariant 8 ("nothing the agent fails to hear (... a restart) leaves a job waiting without a
/// bound, an overdue report, or an operator's way out"). Severity: medium (the example's
/// default configuration; a user copying its idle rule inherits it).
#[cfg(target_os = "linux")]
#[test]
fn the_example_agent_reports_a_restart_it_ordered_overdue_when_it_does_not_come() {
    use std::os::unix::fs::PermissionsExt;
    let _spawning = crate::file_store::spawning();
    let agent = example_agent();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(dir.path().join("ok.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("ok.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let config = format!(
        r#"{{"state_dir": "{}", "status_file": "{}", "restart_command": ["/bin/true"],
            "poll_ms": 20, "jobs": [{{"spec": {{"id": "kernel-patch", "reboot": "may_request",
            "exit_codes": {{"0": "success_restart_required"}}, "restart_deadline": "1s"}},
            "program": ["{}"]}}]}}"#,
        path("state"),
        path("status.jsonl"),
        path("ok.sh"),
    );
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let mut child = std::process::Command::new(&agent)
        .arg(dir.path().join("config.json"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let exited = wait_at_most(&mut child, Duration::from_secs(5));
    let mut stdout = String::new();
    use std::io::Read;
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let status = std::fs::read_to_string(dir.path().join("status.jsonl")).unwrap_or_default();
    assert!(
        status.contains(r#""overdue":1"#),
        "no overdue report within 5 s of a 1 s restart deadline; the agent {} after {:?}: {}",
        match exited {
            Some(s) => format!("exited ({s})"),
            None => "was still running".into(),
        },
        started.elapsed(),
        stdout.trim().replace('\n', " | "),
    );
}

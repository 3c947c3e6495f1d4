//! Review D: the last fixes (delivery's suspect, the rerun/abandoned hold, examples/agent.rs's
//! reopen loop). Each test failed on the code it was written against; the CHANGELOG
//! (Unreleased, Fixed) says how each was fixed.

use std::time::Duration;

/// D1 (examples/agent.rs, fix 5: "a child is kept before its launch is recorded").
///
/// The agent spawns the attempt's child (marked with `JOBSTATE_ATTEMPT`), keeps it, and the
/// store refuses the `launched` commit (a full disk). The agent backs off (2 s, then more) and
/// reopens, still holding the child. A short program exits during the back-off: it is a zombie
/// of the agent, its exit "still to be collected" (session.rs: "A process that exited and was
/// not yet reaped is alive"). But `LinuxSession::program_status(attempt, None)` looks for the
/// marker in `/proc/<pid>/environ`, which a zombie no longer has (its memory is gone: it reads
/// empty), so it answers `Gone`; the open's reconciliation takes the attempt for one that never
/// ran, queues it again and licenses `Effect::Launch` of the same attempt. The agent's
/// `launch` spawns the program a second time and `children.insert` drops the first child (its
/// exit, the one the fix meant to keep, is never heard).
///
/// This test runs the library half of that sequence with the real `FileStore` and
/// `LinuxSession`: begin, spawn the marked child, the `launched` call never made (the refused
/// commit), the child exits unreaped, the store opened again in the same boot.
#[cfg(target_os = "linux")]
#[test]
fn a_kept_child_that_exited_during_the_back_off_is_launched_again_at_the_reopen() {
    use jobstate::session::{ATTEMPT_ENV, SessionContext};
    use jobstate::{Effect, FileStore, JobId, JobSpec, Ledger, LinuxSession, NextJob};
    let _spawning = crate::file_store::spawning();
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::new("patch").unwrap();
    let (mut ledger, _effects) = Ledger::open(
        FileStore::open(dir.path()).unwrap(),
        LinuxSession::new().unwrap(),
    )
    .unwrap();
    let _answer = ledger.offer(JobSpec::new(job.clone())).unwrap();
    assert_eq!(ledger.next_runnable(), NextJob::Run(job.clone()));
    let attempt = ledger.begin(&job).unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "exit 0"])
        .env(ATTEMPT_ENV, attempt.env_value())
        .spawn()
        .unwrap();
    // The store refused `launched`: the agent drops this ledger and reopens after a back-off,
    // still holding `child`, which exits meanwhile and is not reaped.
    drop(ledger);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    assert!(stat.contains(") Z "), "the child is a zombie: {stat}");
    // What the kernel shows of the zombie's environment: nothing (its memory is gone).
    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    assert!(
        !environ.as_ref().is_ok_and(|e| !e.is_empty()),
        "a zombie's environ: {environ:?}"
    );
    // This sandbox's pid 1 hides its environment even from root (the session then answers
    // `Unknown` for every unrecorded launch); on a machine where root reads every process, as
    // the agent runs, the session sees what this root sees: the real boot and uptime, and the
    // agent's zombie child as the kernel shows it.
    let root = tempfile::tempdir().unwrap();
    let proc = root.path().join("proc");
    std::fs::create_dir_all(proc.join("sys/kernel/random")).unwrap();
    std::fs::create_dir_all(proc.join("self")).unwrap();
    std::fs::create_dir_all(root.path().join("run")).unwrap();
    for file in ["sys/kernel/random/boot_id", "uptime", "self/stat"] {
        std::fs::copy(std::path::Path::new("/proc").join(file), proc.join(file)).unwrap();
    }
    let zombie = proc.join(child.id().to_string());
    std::fs::create_dir_all(&zombie).unwrap();
    std::fs::write(zombie.join("stat"), &stat).unwrap();
    std::fs::write(zombie.join("environ"), environ.unwrap_or_default()).unwrap();
    let session = LinuxSession::at_root(root.path()).unwrap();
    assert_eq!(
        session.boot_id().unwrap(),
        LinuxSession::new().unwrap().boot_id().unwrap()
    );
    let status = session.program_status(&attempt, None);
    let (_ledger, effects) = Ledger::open(FileStore::open(dir.path()).unwrap(), session).unwrap();
    let relaunched = effects
        .iter()
        .any(|e| matches!(e, Effect::Launch(a) if *a == attempt));
    let _ = child.wait();
    assert!(
        !relaunched,
        "the kept child ran and exited, its exit still to be collected (a zombie: \
         program_status(attempt, None) = {status:?}); the reopen licensed launching the same \
         attempt again: {effects:?}"
    );
}

/// D2 (examples/agent.rs, fix 5: "hold reaped exits ... any store refusal reopens"). `reap`
/// takes every exited child out of `children` first, then records their exits one by one, and
/// carries out each one's effects in between. If carrying them out meets a store refusal (a
/// check's `verification`, a `launch_failed`, a `launched`, the `deliver` before a restart,
/// all mapped by `store_or_other` to `Unrecorded { exits: vec![] }`), `reap` returns at once:
/// the exits reaped in the same pass and not recorded yet are in neither `children` nor the
/// held exits. The reopen finds those programs gone (reaped) and ends their attempts as lost.
///
/// Sequence: eight jobs with a check (`verify_after_reboot`) run side by side, exit 1 in the
/// same poll interval and are reaped in one pass. The first one's exit is recorded and licenses
/// its check; the check runs while the disk fills (here: it lowers the agent's RLIMIT_FSIZE to
/// the journal's size), so `verification` is refused; the agent says "0 exit(s) held, 0
/// child(ren) running" and reopens. The seven other exits are gone: the reopen ends those
/// attempts as programs lost (their status messages carry no exit), and the agent exits 0.
/// With jobs that have no check, the same pass ran seven of eight plain jobs (exit 0 each) a
/// second time after the retry back-off (`launches_recorded=2`; HashMap order decides which
/// come after the first refusal).
///
/// The fix's own claim ("an exit given up is a job run twice"; the reaped status "exists
/// nowhere else"). Severity: medium (the same harm as review C4, through another door).
#[cfg(target_os = "linux")]
#[test]
fn the_example_agent_loses_the_exits_reaped_with_one_whose_effects_the_store_refuses() {
    use std::os::unix::fs::PermissionsExt;
    if crate::common::no_prlimit() {
        return;
    }
    let _spawning = crate::file_store::spawning();
    let agent = crate::common::example_agent();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let script = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let check = script(
        "check.sh",
        format!(
            "if [ ! -e {d}/filled ]; then\n  touch {d}/filled\n\
               max=$(stat -c %s {d}/state/* | sort -n | tail -1)\n\
               prlimit --pid $PPID --fsize=$max:unlimited\nfi\nexit 0\n"
        ),
    );
    // Every job checked, so that whichever is reaped first, the others of its pass are lost.
    let jobs: Vec<String> = (0..8)
        .map(|i| {
            let fail = script(
                &format!("fail{i}.sh"),
                format!("echo ran >> {d}/marker{i}\nsleep 0.5\nexit 1\n"),
            );
            format!(
                r#"{{"spec": {{"id": "kb{i}", "verify_after_reboot": true}},
                    "program": ["{fail}"], "verify": ["{check}"]}}"#
            )
        })
        .collect();
    let config = format!(
        r#"{{"state_dir": "{d}/state", "status_file": "{d}/status.jsonl",
            "restart_command": ["/bin/true"], "poll_ms": 1500, "exit_when_idle": true,
            "jobs": [{}]}}"#,
        jobs.join(",")
    );
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let mut first =
        crate::common::spawn_agent_ignoring_xfsz(&agent, &dir.path().join("config.json"));
    std::thread::sleep(Duration::from_secs(5));
    let _ = crate::common::lift_file_size_limit(first.id());
    let exited = crate::common::wait_at_most(&mut first, Duration::from_secs(120));
    let mut out = String::new();
    use std::io::Read;
    let _ = first.stdout.take().unwrap().read_to_string(&mut out);
    assert!(
        out.contains("refused a commit"),
        "the store never refused a commit: the test did not test ({exited:?}): {out}"
    );
    // Each job's exit 1 was reaped; a status message without it is an exit lost (the attempt
    // then ended as a program lost, and its check ran again).
    let status = std::fs::read_to_string(dir.path().join("status.jsonl")).unwrap();
    let lost: Vec<&str> = status
        .lines()
        .filter(|l| !l.contains(r#""exit":{"code":1}"#))
        .collect();
    assert!(
        lost.is_empty(),
        "exits reaped and never recorded: {lost:#?}\nagent ({exited:?}): {}",
        out.trim().replace('\n', " | ")
    );
}

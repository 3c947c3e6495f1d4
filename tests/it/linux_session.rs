//! `LinuxSession` on hand-made /proc and utmp files, and on this machine.

use std::path::Path;

use jobstate::{
    ExecutionContext, LinuxSession, NoticeDelivery, SessionContext, SessionError, UserPresence,
};

fn utmp_record(ut_type: i16, user: &str) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[..2].copy_from_slice(&ut_type.to_le_bytes());
    r[44..44 + user.len()].copy_from_slice(user.as_bytes());
    r
}

fn fake_root(name: &str, boot_id: &str, utmp: Option<&[u8]>) -> std::path::PathBuf {
    let root =
        std::env::temp_dir().join(format!("jobstate-it-linux-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("proc/sys/kernel/random")).unwrap();
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::write(
        root.join("proc/sys/kernel/random/boot_id"),
        format!("{boot_id}\n"),
    )
    .unwrap();
    std::fs::write(root.join("proc/uptime"), "1234.56 4000.00\n").unwrap();
    // A command name with spaces and parentheses, and a controlling terminal (tty_nr 34816).
    std::fs::write(
        root.join("proc/self/stat"),
        "42 (my (agent) x) S 1 42 42 34816 42 0 0",
    )
    .unwrap();
    if let Some(utmp) = utmp {
        std::fs::write(root.join("run/utmp"), utmp).unwrap();
    }
    root
}

fn cleanup(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn facts_come_from_the_injected_root() {
    let mut utmp = utmp_record(2, "reboot");
    utmp.extend(utmp_record(7, "alice"));
    let root = fake_root("facts", "6f9619ff-8b86-d011-b42d-00cf4fc964ff", Some(&utmp));
    let session = LinuxSession::with_root(&root).unwrap();
    assert_eq!(
        session.boot_id().unwrap().as_str(),
        "6f9619ff-8b86-d011-b42d-00cf4fc964ff"
    );
    assert_eq!(session.user_presence(), UserPresence::LoggedOn);
    assert_eq!(session.logged_on_users().unwrap(), ["alice"]);
    assert!(session.since_boot() >= std::time::Duration::from_millis(1_234_560));
    if std::env::var_os("INVOCATION_ID").is_none() {
        assert_eq!(
            session.execution_context(),
            ExecutionContext::Interactive,
            "tty_nr 34816"
        );
    }
    // Shutdown notices: not delivered unless the agent wires them.
    assert_eq!(session.shutdown_notices(), NoticeDelivery::NotDelivered);
    session.notices_wired(true);
    assert_eq!(session.shutdown_notices(), NoticeDelivery::Delivered);
    cleanup(&root);
}

#[test]
fn nobody_logged_on_and_bad_utmp_files() {
    let root = fake_root("nobody", "b1", Some(&utmp_record(8, "bob")));
    let session = LinuxSession::with_root(&root).unwrap();
    assert_eq!(session.user_presence(), UserPresence::NoneLoggedOn);

    // Truncated, garbage, or missing: Unknown, and a typed error says why.
    let full = [utmp_record(7, "alice"), utmp_record(7, "bob")].concat();
    for (name, bytes) in [("truncated", &full[..500]), ("garbage", &[0xFFu8; 384][..])] {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        let session = LinuxSession::with_root(&root).unwrap().utmp(&path);
        assert_eq!(session.user_presence(), UserPresence::Unknown, "{name}");
        assert!(
            matches!(session.logged_on_users(), Err(SessionError::Users { .. })),
            "{name}"
        );
    }
    let session = LinuxSession::with_root(&root)
        .unwrap()
        .utmp(root.join("missing"));
    assert_eq!(session.user_presence(), UserPresence::Unknown);
    cleanup(&root);
}

#[test]
fn a_bad_boot_id_or_uptime_is_a_typed_error() {
    let root = fake_root("badboot", "", None);
    let session = LinuxSession::with_root(&root).unwrap();
    assert!(matches!(
        session.boot_id(),
        Err(SessionError::BootId { .. })
    ));
    // A huge boot id file is not read whole: the first 4 KiB are too long for a boot id.
    let huge = vec![b'a'; 64 << 20];
    std::fs::write(root.join("proc/sys/kernel/random/boot_id"), &huge).unwrap();
    assert!(matches!(
        session.boot_id(),
        Err(SessionError::BootId { detail, .. }) if detail.contains("4096 bytes")
    ));
    std::fs::write(root.join("proc/uptime"), "soon").unwrap();
    assert!(matches!(
        LinuxSession::with_root(&root),
        Err(SessionError::Clock { .. })
    ));
    cleanup(&root);
}

#[test]
fn this_machine() {
    let session = LinuxSession::new().unwrap();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(session.boot_id().unwrap().as_str(), kernel.trim());
    let a = session.since_boot();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(session.since_boot() > a, "the boot clock moves forward");
    let _ = session.user_presence(); // whatever it is, it does not panic
}

fn attempt(job: &str) -> jobstate::AttemptId {
    jobstate::AttemptId {
        job: jobstate::JobId::new(job).unwrap(),
        attempt: jobstate::AttemptRef { run: 1, number: 1 },
    }
}

/// Real child processes: a recorded program is alive while its pid holds the process with its
/// start time; a launch never recorded is found by its attempt's marker in the environment.
#[test]
fn program_status_of_real_processes() {
    use jobstate::{ATTEMPT_ENV, ProgramId, ProgramStatus};
    // A child forked while a store test holds its lock file would hold the lock until it execs.
    let _serial = crate::file_store::SPAWNING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let session = LinuxSession::new().unwrap();
    let marked = attempt("marked job");
    let other = attempt("other job");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env(ATTEMPT_ENV, marked.env_value())
        .spawn()
        .unwrap();
    let program = session.program_id(child.id()).unwrap();
    // Right after `spawn`, the kernel may still be setting up the new program's environment
    // (it reads empty for a few microseconds): wait until it shows.
    let environ = format!("/proc/{}/environ", child.id());
    for _ in 0..1000 {
        if !std::fs::read(&environ).unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(program.pid(), child.id());
    assert_eq!(
        session.program_status(&marked, Some(&program)),
        ProgramStatus::Alive
    );
    assert_eq!(session.program_status(&marked, None), ProgramStatus::Alive);
    // Without root, other users' environments are unreadable: then nobody can say "gone".
    let all_readable = std::fs::read("/proc/1/environ").is_ok();
    let nothing = if all_readable {
        ProgramStatus::Gone
    } else {
        ProgramStatus::Unknown
    };
    assert_eq!(session.program_status(&other, None), nothing);
    // The same pid with another start time is another program (a reused pid).
    let reused = ProgramId::new(program.pid(), program.start() + 1);
    assert_eq!(
        session.program_status(&marked, Some(&reused)),
        ProgramStatus::Gone
    );
    child.kill().unwrap();
    // Killed but not reaped: a zombie whose status is this process's to collect is alive.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        session.program_status(&marked, Some(&program)),
        ProgramStatus::Alive
    );
    child.wait().unwrap();
    assert_eq!(
        session.program_status(&marked, Some(&program)),
        ProgramStatus::Gone
    );
    assert_eq!(session.program_status(&marked, None), nothing);
    assert!(matches!(
        session.program_id(program.pid()),
        Err(SessionError::Program { .. })
    ));
}

/// `/proc/<pid>/stat` as the kernel writes it, and as nobody should: a command name with spaces
/// and parentheses, an orphaned zombie, garbage.
#[test]
fn program_status_from_hand_made_proc_files() {
    use jobstate::{ProgramId, ProgramStatus};
    let root = fake_root("programs", "b00t", None);
    let stat = |pid: u32, line: &str| {
        std::fs::create_dir_all(root.join(format!("proc/{pid}"))).unwrap();
        std::fs::write(root.join(format!("proc/{pid}/stat")), line).unwrap();
    };
    let fields = |state: &str, parent: u32, start: u64| {
        let mut f = vec!["0".to_string(); 20];
        f[0] = state.to_string();
        f[1] = parent.to_string();
        f[19] = start.to_string();
        f.join(" ")
    };
    stat(100, &format!("100 (a (b) c) {}", fields("S", 1, 5000)));
    stat(101, &format!("101 (orphan) {}", fields("Z", 1, 6000)));
    stat(102, "102 (garbage) S 1");
    stat(
        103,
        &format!("103 (mine) {}", fields("Z", std::process::id(), 7000)),
    );
    let session = LinuxSession::with_root(&root).unwrap();
    let a = attempt("j");
    assert_eq!(session.program_id(100).unwrap(), ProgramId::new(100, 5000));
    let status = |pid, start| session.program_status(&a, Some(&ProgramId::new(pid, start)));
    assert_eq!(status(100, 5000), ProgramStatus::Alive);
    assert_eq!(status(100, 5001), ProgramStatus::Gone);
    assert_eq!(status(101, 6000), ProgramStatus::Gone, "an orphaned zombie");
    assert_eq!(status(103, 7000), ProgramStatus::Alive, "our own zombie");
    assert_eq!(status(102, 1), ProgramStatus::Unknown, "an unreadable stat");
    assert_eq!(status(999, 1), ProgramStatus::Gone);
    assert!(session.program_id(102).is_err());
    cleanup(&root);
}

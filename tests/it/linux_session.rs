//! `LinuxSession` on hand-made /proc and utmp files, and on this machine.

use std::path::Path;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jobstate::session::{
    ExecutionContext, NoticeDelivery, RestartPending, SessionContext, SessionError,
};
use jobstate::{LinuxSession, UserPresence};

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
    let session = LinuxSession::at_root(&root).unwrap();
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
    let mut session = session.with_notices_wired(true);
    assert_eq!(session.shutdown_notices(), NoticeDelivery::Delivered);
    session.set_notices_wired(false);
    assert_eq!(session.shutdown_notices(), NoticeDelivery::NotDelivered);
    cleanup(&root);
}

#[test]
fn nobody_logged_on_and_bad_utmp_files() {
    let root = fake_root("nobody", "b1", Some(&utmp_record(8, "bob")));
    let session = LinuxSession::at_root(&root).unwrap();
    assert_eq!(session.user_presence(), UserPresence::NoneLoggedOn);

    // Truncated, garbage, or missing: Unknown, and a typed error says why.
    let full = [utmp_record(7, "alice"), utmp_record(7, "bob")].concat();
    for (name, bytes) in [("truncated", &full[..500]), ("garbage", &[0xFFu8; 384][..])] {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        let session = LinuxSession::at_root(&root).unwrap().with_utmp(&path);
        assert_eq!(session.user_presence(), UserPresence::Unknown, "{name}");
        assert!(
            matches!(session.logged_on_users(), Err(SessionError::Users { .. })),
            "{name}"
        );
    }
    let session = LinuxSession::at_root(&root)
        .unwrap()
        .with_utmp(root.join("missing"));
    assert_eq!(session.user_presence(), UserPresence::Unknown);
    cleanup(&root);
}

#[test]
fn a_bad_boot_id_or_uptime_is_a_typed_error() {
    let root = fake_root("badboot", "", None);
    let session = LinuxSession::at_root(&root).unwrap();
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
        LinuxSession::at_root(&root),
        Err(SessionError::Clock { .. })
    ));
    cleanup(&root);
}

#[test]
fn this_machine() {
    let _serial = spawning();
    let session = LinuxSession::new().unwrap();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // Where systemd booted the machine, its own count decides the suffix.
    let count = if Path::new("/run/systemd/system").is_dir() {
        let out = std::process::Command::new("systemctl")
            .args(["show", "--property=SoftRebootsCount", "--value"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0u64)
    } else {
        assert_eq!(
            session.soft_reboots().unwrap(),
            None,
            "no systemd, no count"
        );
        0
    };
    let expected = match count {
        0 => kernel.trim().to_string(),
        n => format!("{}+soft-reboot-{n}", kernel.trim()),
    };
    assert_eq!(session.boot_id().unwrap().as_str(), expected);
    let _ = session.user_presence(); // whatever it is, it does not panic
}

fn attempt(job: &str) -> jobstate::AttemptId {
    jobstate::AttemptId {
        job: jobstate::JobId::new(job).unwrap(),
        run: 1,
        number: 1,
    }
}

/// Real child processes: a recorded program is alive while its pid holds the process with its
/// start time; a launch never recorded is found by its attempt's marker in the environment.
#[test]
fn program_status_of_real_processes() {
    use jobstate::session::ATTEMPT_ENV;
    use jobstate::{ProgramId, ProgramStatus};
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
    let session = LinuxSession::at_root(&root).unwrap();
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

/// Holds the lock of the tests that fork: a child forked while a store test holds its lock file
/// would hold the lock until it execs, and a script being written while another test forks
/// could not be run ("text file busy").
fn spawning() -> std::sync::RwLockWriteGuard<'static, ()> {
    crate::file_store::SPAWNING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An executable shell script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Makes the hand-made root look booted by systemd (`/run/systemd/system`), with logind's
/// sessions directory.
fn systemd(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    let sessions = root.join("run/systemd/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    sessions
}

/// A session file as logind writes it (`session_save` in `src/login/logind-session.c`).
fn logind_session(sessions: &Path, id: &str, user: &str, class: &str, state: &str) {
    std::fs::write(
        sessions.join(id),
        format!(
            "# This is private data. Do not parse.\nUID=1000\nUSER={user}\nACTIVE=1\n\
             IS_DISPLAY=0\nSTATE={state}\nREMOTE=1\nTYPE=tty\nORIGINAL_TYPE=tty\nCLASS={class}\n\
             SCOPE=session-{id}.scope\nREMOTE_HOST=\"203.0.113.7\"\nSERVICE=sshd\nLEADER=4242\n\
             REALTIME=1700000000000000\nMONOTONIC=123456789\n"
        ),
    )
    .unwrap();
}

/// Where logind keeps sessions, they are the source, whatever utmp says.
#[test]
fn logind_sessions_are_the_source_where_systemd_booted() {
    let root = fake_root("logind", "b1", Some(&utmp_record(8, "bob")));
    let sessions = systemd(&root);
    logind_session(&sessions, "3", "alice", "user", "active");
    logind_session(&sessions, "c1", "gdm", "greeter", "online");
    logind_session(&sessions, "5", "root", "background", "active");
    logind_session(&sessions, "7", "carol", "user", "online"); // remote, not in the foreground
    let session = LinuxSession::at_root(&root).unwrap();
    assert_eq!(session.user_presence(), UserPresence::LoggedOn);
    assert_eq!(session.logged_on_users().unwrap(), ["alice", "carol"]);

    // Logged out: the session is closing (its processes linger), or gone.
    logind_session(&sessions, "3", "alice", "user", "closing");
    std::fs::remove_file(sessions.join("7")).unwrap();
    assert_eq!(
        session.user_presence(),
        UserPresence::NoneLoggedOn,
        "greeter only"
    );
    assert!(session.logged_on_users().unwrap().is_empty());

    // An empty directory: nobody, even when utmp says otherwise.
    std::fs::write(root.join("run/utmp"), utmp_record(7, "mallory")).unwrap();
    for entry in std::fs::read_dir(&sessions).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(session.user_presence(), UserPresence::NoneLoggedOn);

    // `.with_utmp(path)` chooses utmp even here.
    let utmp = LinuxSession::at_root(&root)
        .unwrap()
        .with_utmp(root.join("run/utmp"));
    assert_eq!(utmp.logged_on_users().unwrap(), ["mallory"]);
    cleanup(&root);
}

/// A session that cannot be judged makes the answer unknown, unless another one proves a user
/// logged on; what is not a session file (logind's temporary files, its FIFOs) is skipped.
#[test]
fn logind_garbage_is_unknown_never_a_guess() {
    let root = fake_root("logind-garbage", "b1", None);
    let sessions = systemd(&root);
    logind_session(&sessions, "4", "gdm", "greeter", "active");
    let session = LinuxSession::at_root(&root).unwrap();
    // logind's temporary file (hidden) and a FIFO (logind before v258): not sessions, and
    // opening the FIFO would block.
    std::fs::write(sessions.join(".#4abcdef"), "\u{0}garbage").unwrap();
    let made_fifo = {
        let _serial = spawning();
        std::process::Command::new("mkfifo")
            .arg(sessions.join("4.ref"))
            .status()
            .is_ok_and(|s| s.success())
    };
    assert_eq!(
        session.user_presence(),
        UserPresence::NoneLoggedOn,
        "fifo {made_fifo}"
    );

    for (name, text) in [
        ("no-class", "USER=alice\nSTATE=active\n".to_string()),
        (
            "unknown-class",
            "USER=alice\nCLASS=robot\nSTATE=active\n".to_string(),
        ),
        (
            "unknown-state",
            "USER=alice\nCLASS=user\nSTATE=dozing\n".to_string(),
        ),
        (
            "unterminated",
            "USER=\"alice\nCLASS=user\nSTATE=active\n".to_string(),
        ),
        ("binary", "\u{0}\u{1}\u{2}".to_string()),
        (
            "huge",
            format!(
                "USER=alice\nCLASS=user\nSTATE=active\nX={}\n",
                "x".repeat(1 << 20)
            ),
        ),
    ] {
        std::fs::write(sessions.join("9"), text).unwrap();
        assert_eq!(session.user_presence(), UserPresence::Unknown, "{name}");
        assert!(
            matches!(session.logged_on_users(), Err(SessionError::Users { .. })),
            "{name}"
        );
        // A user known to be logged on is logged on, whatever else is there; the list is
        // still refused (a partial list is not the list).
        logind_session(&sessions, "10", "alice", "user", "active");
        assert_eq!(session.user_presence(), UserPresence::LoggedOn, "{name}");
        assert!(session.logged_on_users().is_err(), "{name}");
        std::fs::remove_file(sessions.join("10")).unwrap();
    }
    // A directory that cannot be read is unknown.
    let missing = LinuxSession::at_root(&root)
        .unwrap()
        .with_logind_sessions(root.join("missing"));
    assert_eq!(missing.user_presence(), UserPresence::Unknown);
    cleanup(&root);
}

/// A sessions directory left in a `/run` that is no tmpfs (an image, a container) is not
/// logind's when systemd did not boot the system: utmp is the source.
#[test]
fn a_stale_sessions_directory_without_systemd_is_not_the_source() {
    let root = fake_root("stale-logind", "b1", Some(&utmp_record(7, "alice")));
    std::fs::create_dir_all(root.join("run/systemd/sessions")).unwrap();
    let session = LinuxSession::at_root(&root).unwrap();
    assert_eq!(session.user_presence(), UserPresence::LoggedOn);
    assert_eq!(session.logged_on_users().unwrap(), ["alice"]);
    // Neither logind nor utmp: unknown.
    std::fs::remove_file(root.join("run/utmp")).unwrap();
    assert_eq!(session.user_presence(), UserPresence::Unknown);
    cleanup(&root);
}

/// The boot clock is `/proc/uptime` at every call: it follows the file forward and never
/// goes back.
#[test]
fn the_boot_clock_follows_uptime_and_never_goes_back() {
    let root = fake_root("clock", "b1", None);
    let session = LinuxSession::at_root(&root).unwrap();
    let clone = session.clone();
    assert_eq!(session.since_boot(), Duration::from_millis(1_234_560));
    // A night suspended: the file jumps forward, and the clock with it (Instant would not).
    std::fs::write(root.join("proc/uptime"), "30034.56 4000.00\n").unwrap();
    assert_eq!(session.since_boot(), Duration::from_millis(30_034_560));
    // Backwards (a file rewritten by hand, a time namespace changed): the clock holds, in
    // every clone.
    std::fs::write(root.join("proc/uptime"), "20.00 4000.00\n").unwrap();
    assert_eq!(session.since_boot(), Duration::from_millis(30_034_560));
    assert_eq!(clone.since_boot(), Duration::from_millis(30_034_560));
    std::fs::write(root.join("proc/uptime"), "30035.00 4000.00\n").unwrap();
    assert_eq!(clone.since_boot(), Duration::from_secs(30_035));
    // Unreadable later: it goes on (on Instant) from the last reading, never back.
    std::fs::write(root.join("proc/uptime"), "garbage").unwrap();
    let held = session.since_boot();
    assert!(held >= Duration::from_secs(30_035), "{held:?}");
    cleanup(&root);
}

/// On this machine the boot clock never decreases and moves on.
#[test]
fn the_boot_clock_of_this_machine() {
    let session = LinuxSession::new().unwrap();
    let uptime = |text: String| -> Duration {
        let seconds: f64 = text.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_secs_f64(seconds)
    };
    let before = uptime(std::fs::read_to_string("/proc/uptime").unwrap());
    let mut last = session.since_boot();
    assert!(last >= before, "{last:?} < {before:?}");
    for _ in 0..200 {
        let now = session.since_boot();
        assert!(now >= last, "{now:?} < {last:?}");
        last = now;
    }
    std::thread::sleep(Duration::from_millis(50)); // /proc/uptime moves in steps of 10 ms
    let later = session.since_boot();
    assert!(
        later >= last + Duration::from_millis(30),
        "{later:?} vs {last:?}"
    );
    let after = uptime(std::fs::read_to_string("/proc/uptime").unwrap());
    assert!(
        later <= after,
        "{later:?} > {after:?}: one clock, /proc/uptime"
    );
}

const KERNEL_ID: &str = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";

/// The boot identity is the kernel's id alone without soft reboots (as in every earlier
/// release), and carries systemd's count after one.
#[test]
fn soft_reboots_change_the_boot_identity() {
    let _serial = spawning();
    let root = fake_root("soft-reboot", KERNEL_ID, None);
    let bin = root.join("bin-fake");
    // Without systemd, systemctl is not asked (this one would say 5).
    let five = script(&bin, "five", "echo 5");
    let session = LinuxSession::at_root(&root).unwrap().with_systemctl(&five);
    assert_eq!(session.boot_id().unwrap().as_str(), KERNEL_ID);
    assert_eq!(session.soft_reboots().unwrap(), None);

    systemd(&root);
    for (name, body, expected) in [
        ("zero", "echo 0", KERNEL_ID.to_string()),
        ("none", "exit 0", KERNEL_ID.to_string()), // systemd < 256: no such property
        ("three", "echo 3", format!("{KERNEL_ID}+soft-reboot-3")),
        (
            "padded",
            "printf ' 12 \\n\\n'",
            format!("{KERNEL_ID}+soft-reboot-12"),
        ),
    ] {
        let systemctl = script(&bin, name, body);
        let session = LinuxSession::at_root(&root)
            .unwrap()
            .with_systemctl(&systemctl);
        assert_eq!(session.boot_id().unwrap().as_str(), expected, "{name}");
    }
    // The same boot, asked twice, by two sessions: the same identity (an agent restart).
    let three = script(&bin, "three", "echo 3");
    let a = LinuxSession::at_root(&root).unwrap().with_systemctl(&three);
    let b = LinuxSession::at_root(&root).unwrap().with_systemctl(&three);
    assert_eq!(a.boot_id().unwrap(), b.boot_id().unwrap());

    // Found under the root where no path is given.
    script(&root.join("usr/bin"), "systemctl", "echo 2");
    let found = LinuxSession::at_root(&root).unwrap();
    assert_eq!(found.soft_reboots().unwrap(), Some(2));
    assert_eq!(
        found.boot_id().unwrap().as_str(),
        format!("{KERNEL_ID}+soft-reboot-2")
    );
    cleanup(&root);
}

/// Where systemd runs and cannot say its count, the boot identity is an error, never a guess.
#[test]
fn a_soft_reboot_count_that_cannot_be_read_is_an_error() {
    let _serial = spawning();
    let root = fake_root("soft-reboot-bad", KERNEL_ID, None);
    systemd(&root);
    let bin = root.join("bin-fake");
    // No systemctl anywhere under the root.
    let none = LinuxSession::at_root(&root).unwrap();
    assert!(matches!(none.boot_id(), Err(SessionError::BootId { .. })));
    for (name, body) in [
        ("fails", "echo 'Failed to connect to bus' >&2; exit 1"),
        ("garbage", "echo three"),
        ("signed", "echo +3"),
        ("negative", "echo -1"),
        ("two-lines", "echo 1; echo 2"),
        ("huge", "echo 99999999999999999999999"),
        ("killed", "kill -9 $$"),
    ] {
        let systemctl = script(&bin, name, body);
        let session = LinuxSession::at_root(&root)
            .unwrap()
            .with_systemctl(&systemctl);
        assert!(
            matches!(session.boot_id(), Err(SessionError::BootId { .. })),
            "{name}"
        );
    }
    let missing = LinuxSession::at_root(&root)
        .unwrap()
        .with_systemctl(bin.join("missing"));
    assert!(matches!(
        missing.boot_id(),
        Err(SessionError::BootId { .. })
    ));
    // A systemctl that hangs is killed after the helper timeout.
    let hangs = script(&bin, "hangs", "exec sleep 30");
    let session = LinuxSession::at_root(&root)
        .unwrap()
        .with_systemctl(&hangs)
        .with_helper_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let result = session.boot_id();
    assert!(
        matches!(&result, Err(SessionError::BootId { detail, .. }) if detail.contains("killed")),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    cleanup(&root);
}

/// The pending-restart facts: Debian's flag file, `needs-restarting -r`, dpkg's presence.
#[test]
fn restart_pending_from_hand_made_facts() {
    let _serial = spawning();
    let root = fake_root("restart", "b1", None);
    let bin = root.join("bin-fake");
    let session = |needs_restarting: Option<&Path>| {
        let session = LinuxSession::at_root(&root)
            .unwrap()
            .with_helper_timeout(Duration::from_millis(300));
        match needs_restarting {
            Some(path) => session.with_needs_restarting(path),
            None => session,
        }
    };
    // Nothing to ask: unknown.
    assert_eq!(session(None).restart_pending(), RestartPending::Unknown);
    // needs-restarting -r: 1 pending, 0 not, anything else unknown.
    let args = root.join("args");
    let answers = [
        ("one", "exit 1", RestartPending::Pending),
        ("zero", "exit 0", RestartPending::NotPending),
        ("two", "exit 2", RestartPending::Unknown),
        ("killed", "kill -9 $$", RestartPending::Unknown),
    ];
    for (name, body, expected) in answers {
        let body = format!("echo \"$@\" > '{}'\n{body}", args.display());
        let path = script(&bin, name, &body);
        assert_eq!(session(Some(&path)).restart_pending(), expected, "{name}");
        assert_eq!(std::fs::read_to_string(&args).unwrap(), "-r\n", "{name}");
    }
    // One that hangs is killed: unknown, within the helper timeout.
    let hangs = script(&bin, "hangs", "exec sleep 30");
    let start = Instant::now();
    assert_eq!(
        session(Some(&hangs)).restart_pending(),
        RestartPending::Unknown
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // One that cannot run: unknown.
    let not_executable = bin.join("plain-file");
    std::fs::write(&not_executable, "exit 1\n").unwrap();
    assert_eq!(
        session(Some(&not_executable)).restart_pending(),
        RestartPending::Unknown
    );
    // Found under the root where no path is given.
    script(&root.join("usr/bin"), "needs-restarting", "exit 1");
    assert_eq!(session(None).restart_pending(), RestartPending::Pending);
    std::fs::remove_file(root.join("usr/bin/needs-restarting")).unwrap();

    // A dpkg system: the flag's absence says "not pending", its presence "pending", whatever
    // needs-restarting would say.
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "Package: dpkg\n").unwrap();
    assert_eq!(session(None).restart_pending(), RestartPending::NotPending);
    std::fs::write(
        root.join("run/reboot-required"),
        "*** System restart required ***\n",
    )
    .unwrap();
    assert_eq!(session(None).restart_pending(), RestartPending::Pending);
    let zero = script(&bin, "zero", "exit 0");
    assert_eq!(
        session(Some(&zero)).restart_pending(),
        RestartPending::Pending
    );
    cleanup(&root);
}

/// On this machine the answer agrees with its files.
#[test]
fn restart_pending_on_this_machine() {
    let _serial = spawning();
    let session = LinuxSession::new().unwrap();
    let answer = session.restart_pending();
    if Path::new("/run/reboot-required").exists() {
        assert_eq!(answer, RestartPending::Pending);
    } else if !Path::new("/usr/bin/needs-restarting").exists()
        && Path::new("/var/lib/dpkg/status").exists()
    {
        assert_eq!(answer, RestartPending::NotPending);
    } else if !Path::new("/usr/bin/needs-restarting").exists() {
        assert_eq!(answer, RestartPending::Unknown);
    }
}

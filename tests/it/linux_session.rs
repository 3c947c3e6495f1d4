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

//! The `jobstate` inspection tool (feature `cli`), run as a real process against stores an agent
//! holds open: it reads them, lists jobs by state, prints a job's timeline across boots, the
//! outbox, the dead letters and what recovery found, and changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use jobstate::store::Store;
use jobstate::{FileStore, Ledger, RebootBehaviour, StatusMessage};

use crate::common::*;

/// Runs the tool, as a spawning test must (`file_store::SPAWNING`): until it `exec`s, the child
/// holds copies of this process's open files, a store's locked one among them, and a test
/// reopening its store meanwhile found it locked.
fn tool(args: &[&std::ffi::OsStr]) -> Output {
    let _serial = crate::file_store::spawning();
    Command::new(env!("CARGO_BIN_EXE_jobstate"))
        .args(args)
        .output()
        .expect("the tool runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the tool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Every file under `dir` and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Rejects the messages of job `retired`, accepts the others.
fn server() -> Scripted<impl FnMut(&StatusMessage) -> Reply> {
    Scripted::new(|m: &StatusMessage| match m.key.job.as_str() {
        "retired" => Reply::Reject("409 aborted"),
        _ => Reply::Accept,
    })
}

/// An upgrade completed across a reboot, a job running, a dead letter, a pending message; the
/// ledger (and its lock) stays open.
fn agent<S: Store>(open: impl Fn() -> S) -> Ledger<S, jobstate::session::SessionFacts> {
    let upgrade = msi_job(job("os-upgrade")).with_reboot(RebootBehaviour::RestartsMachine);
    let (mut ledger, _) = Ledger::open(open(), service_session("boot-a")).unwrap();
    ledger.offer(upgrade.clone()).unwrap();
    ledger.offer(msi_job(job("retired"))).unwrap();
    let _effects = ledger.cancel(&job("retired")).unwrap();
    ledger.deliver(&mut server()).unwrap();
    let attempt = ledger.begin(upgrade.id()).unwrap();
    let _effects = ledger
        .launched(&attempt, jobstate::ProgramId::new(42, 1))
        .unwrap();
    let store = ledger.into_store();
    let (mut ledger, _) = Ledger::open(store, service_session("boot-b")).unwrap();
    ledger.offer(msi_job(job("patch"))).unwrap();
    ledger.begin(&job("patch")).unwrap();
    ledger
}

#[test]
fn the_tool_reads_a_file_store_an_agent_holds_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = agent(|| FileStore::open(dir.path()).unwrap());
    let before = files(dir.path());
    let text = stdout(&tool(&[dir.path().as_os_str()]));
    assert!(text.contains("(file store, revision r"), "{text}");
    assert!(
        text.contains("recovery: nothing cut, nothing removed"),
        "{text}"
    );
    assert!(text.contains("Running: 1\n  patch "), "{text}");
    assert!(text.contains("Completed: 1\n  os-upgrade "), "{text}");
    assert!(
        text.contains("outbox: 1 pending\n  os-upgrade/run 1/attempt 1/Completed"),
        "{text}"
    );
    assert!(
        text.contains("dead letters: 1\n  retired/run 1/attempt 0/Failed  the receiver rejected it: 409 aborted"),
        "{text}"
    );
    // A job's timeline, across the two boots.
    let timeline = stdout(&tool(&[
        dir.path().as_os_str(),
        "--job".as_ref(),
        "os-upgrade".as_ref(),
    ]));
    let boots: Vec<&str> = timeline
        .lines()
        .filter(|l| l.starts_with("boot "))
        .collect();
    assert_eq!(boots, ["boot boot-a", "boot boot-b"], "{timeline}");
    assert!(
        timeline.contains("AgentStarted       -> Completed"),
        "{timeline}"
    );
    // JSON, for scripts.
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&tool(&[dir.path().as_os_str(), "--json".as_ref()]))).unwrap();
    assert_eq!(json["revision"], ledger.revision().0);
    assert_eq!(json["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(json["dead_letters"][0]["note"]["attempts"], 1);
    assert_eq!(json["outbox"][0]["key"]["state"], "Completed");
    // Nothing changed, and the agent carries on.
    assert_eq!(files(dir.path()), before, "the tool changed the store");
    ledger.offer(msi_job(job("later"))).unwrap();
    assert_eq!(
        FileStore::inspect(dir.path()).unwrap().snapshot.jobs.len(),
        4
    );
}

/// A finished job compacted to a tombstone: the timeline says that its earlier changes went.
#[test]
fn the_timeline_of_a_tombstone_says_what_was_compacted_away() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = agent(|| FileStore::open(dir.path()).unwrap());
    let seq = ledger.job(&job("os-upgrade")).unwrap().seq();
    let mut store = ledger.into_store();
    store.compact().unwrap();
    let timeline = stdout(&tool(&[
        dir.path().as_os_str(),
        "--job".as_ref(),
        "os-upgrade".as_ref(),
    ]));
    let said = format!(
        "(changes 1 to {} compacted away by the store's retention: a tombstone)",
        seq - 1
    );
    assert!(timeline.contains(&said), "{timeline}");
    assert!(timeline.contains("-> Completed"), "{timeline}");
    drop(store);
}

#[test]
fn a_torn_tail_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = agent(|| FileStore::open(dir.path()).unwrap());
    // A commit being written: half a frame at the end of the journal.
    let journal = dir.path().join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(&journal, &bytes).unwrap();
    let text = stdout(&tool(&[dir.path().as_os_str()]));
    assert!(text.contains("recovery: cut 6 bytes off the end"), "{text}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        bytes,
        "the tool cut the journal"
    );
    drop(ledger);
}

#[test]
fn bad_arguments_and_missing_stores_are_refused_with_a_reason() {
    let output = tool(&["--frobnicate".as_ref()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown option --frobnicate"));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let output = tool(&[missing.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!missing.exists(), "the tool created something");
    let empty = tool(&[dir.path().as_os_str()]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no store there"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    assert!(files(dir.path()).is_empty(), "the tool created a journal");
}

#[cfg(feature = "sqlite")]
#[test]
fn the_tool_reads_a_sqlite_store_an_agent_holds_exclusively() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let ledger = agent(|| jobstate::store::SqliteStore::open(&path).unwrap());
    // The agent holds SQLite's exclusive lock: a second connection cannot read.
    assert!(jobstate::store::SqliteStore::open(&path).is_err());
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&tool(&[path.as_os_str(), "--json".as_ref()]))).unwrap();
    assert_eq!(json["kind"], "SQLite store");
    assert_eq!(json["revision"], ledger.revision().0);
    assert_eq!(json["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(json["dead_letters"].as_array().unwrap().len(), 1);
    drop(ledger);
}

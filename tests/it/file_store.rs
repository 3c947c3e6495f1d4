//! The file store with real files: recovery, bad files, locking, permissions, and real
//! processes killed with SIGKILL.

use jobstate::{FileStore, JobSpec, JobState, Ledger, StateKind, Store, StoreError};

use crate::common::*;

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("jobstate-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_completed_upgrade_survives_reopening_the_file_store() {
    let dir = TempDir::new("reopen");
    let spec = JobSpec::new(job("os-upgrade")).reboot(jobstate::RebootBehaviour::RestartsMachine);
    {
        let store = FileStore::open(&dir.0).unwrap();
        let (mut ledger, _) = Ledger::open(store, service_session("a")).unwrap();
        ledger.advertise(spec.clone()).unwrap();
        ledger.begin(spec.id()).unwrap();
    }
    let store = FileStore::open(&dir.0).unwrap();
    let (mut ledger, _) = Ledger::open(store, service_session("b")).unwrap();
    assert_eq!(
        ledger.job(spec.id()).unwrap().state().kind(),
        StateKind::Completed
    );
    assert_eq!(take_reports(&mut ledger).len(), 1);
    drop(ledger);
    let mut store = FileStore::open(&dir.0).unwrap();
    let snapshot = store.load().unwrap();
    assert!(matches!(
        snapshot.jobs[0].state(),
        JobState::Completed { .. }
    ));
    assert!(snapshot.outbox.is_empty(), "the acknowledgement is durable");
    store.compact().unwrap();
    drop(store);
    let mut store = FileStore::open(&dir.0).unwrap();
    assert_eq!(
        store.load().unwrap().jobs[0].history().len(),
        3,
        "compaction keeps the tombstone"
    );
}

#[test]
fn one_writer_at_a_time() {
    let dir = TempDir::new("lock");
    let first = FileStore::open(&dir.0).unwrap();
    match FileStore::open(&dir.0) {
        Err(StoreError::Locked { path }) => assert!(path.ends_with("lock")),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    FileStore::open(&dir.0).unwrap();
}

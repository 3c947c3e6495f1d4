//! Scale cliffs: no number of jobs may make a call's commit too large for a store.

use jobstate::store::{Commit, Revision, Snapshot, Store, StoreError};
use jobstate::{Ledger, MemoryStore, ProgramId, StateKind};

use crate::common::*;

/// A memory store that records the size of every commit.
struct Counting {
    inner: MemoryStore,
    commits: std::rc::Rc<std::cell::RefCell<Vec<usize>>>,
}

impl Store for Counting {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        self.commits.borrow_mut().push(commit.changes.len());
        self.inner.commit(commit)
    }
}

/// 2,500 jobs running when the machine restarts: the reconciliation at the next open changes
/// every one of them, in commits of bounded size (one commit of 65,000 such changes was over
/// the file store's frame limit, and the agent could never start again).
#[test]
fn the_reconciliation_of_many_jobs_is_split_into_bounded_commits() {
    let jobs = 2_500;
    let store = MemoryStore::new();
    let (mut ledger, _) = Ledger::open(store.clone(), service_session("a")).unwrap();
    for n in 0..jobs {
        let spec = msi_job(job(&format!("patch-{n}")));
        ledger.offer(spec.clone()).unwrap();
        let attempt = ledger.begin(spec.id()).unwrap();
        let _effects = ledger
            .launched(&attempt, ProgramId::new(1000 + n, 1))
            .unwrap();
    }
    drop(ledger);
    // The machine restarted under all of them.
    let commits = std::rc::Rc::default();
    let counting = Counting {
        inner: store.clone(),
        commits: std::rc::Rc::clone(&commits),
    };
    let (ledger, _) = Ledger::open(counting, service_session("b")).unwrap();
    assert_eq!(*commits.borrow(), [1024, 1024, 452], "bounded commits");
    assert!(
        ledger.jobs().all(|r| r.state().kind() == StateKind::Queued),
        "every interrupted job is queued for its retry"
    );
    drop(ledger);
    // Nothing was lost between the commits: a fresh load sees every change.
    let (reloaded, _) = Ledger::open(store.clone(), service_session("b")).unwrap();
    assert_eq!(reloaded.jobs().count(), jobs as usize);
    assert!(
        reloaded
            .jobs()
            .all(|r| r.state().kind() == StateKind::Queued)
    );
}

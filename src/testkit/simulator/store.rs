//! The simulator's store: any [`Store`] wrapped so that the agent can crash at a chosen commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use crate::core::effect::StatusKey;
use crate::store::{Commit, Revision, Snapshot, Store, StoreError};

/// Where, around one commit, the agent crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CrashWhen {
    /// The agent dies while committing: the commit never reaches the store (the call that made
    /// it fails, and nothing it would have licensed happens).
    BeforeCommit,
    /// The commit is durable and the call returns; the agent carries out the effects that need
    /// only the world (it launches the program, kills one, schedules the restart) and dies
    /// before it talks to the ledger again. A verification it was licensed to run is lost.
    AfterCommit,
    /// The commit is durable and the call returns, but the agent dies before carrying out any
    /// effect the commit licensed: the program is never launched, the restart never scheduled,
    /// the verification never run.
    BeforeEffects,
}

impl CrashWhen {
    /// The three ways, in order.
    pub const ALL: [CrashWhen; 3] = [
        CrashWhen::BeforeCommit,
        CrashWhen::AfterCommit,
        CrashWhen::BeforeEffects,
    ];
}

/// A point at which the agent crashes: around its `commit`-th commit (counted from 0 over the
/// whole run, across agent restarts and reboots).
///
/// A scenario's commits are numbered in the order the agent makes them, and the simulation is
/// deterministic, so a crash point names the same commit every time the scenario runs up to it.
/// [`Scenario::crash_points`](super::Scenario::crash_points) lists them with the call that
/// makes each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrashPoint {
    /// The commit, counted from 0.
    pub commit: u64,
    /// Where around it the agent dies.
    pub when: CrashWhen,
}

impl CrashPoint {
    /// The agent dies while making commit `commit`: it never reaches the store.
    pub fn before_commit(commit: u64) -> Self {
        Self {
            commit,
            when: CrashWhen::BeforeCommit,
        }
    }

    /// The agent dies right after commit `commit` and the effects it carries out at once.
    pub fn after_commit(commit: u64) -> Self {
        Self {
            commit,
            when: CrashWhen::AfterCommit,
        }
    }

    /// The agent dies between commit `commit` and the effects it licenses.
    pub fn before_effects(commit: u64) -> Self {
        Self {
            commit,
            when: CrashWhen::BeforeEffects,
        }
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.commit;
        match self.when {
            CrashWhen::BeforeCommit => write!(f, "before commit #{n}"),
            CrashWhen::AfterCommit => write!(f, "right after commit #{n}"),
            CrashWhen::BeforeEffects => write!(f, "between commit #{n} and its effects"),
        }
    }
}

/// Any [`Store`], wrapped so that commits can fail on demand and the agent can crash around a
/// chosen commit.
///
/// Clones are handles to the same store (the simulated disk): the simulator hands one to each
/// [`Ledger`](crate::Ledger) it opens and keeps one itself, so that a crash is simply dropping
/// the ledger. Once a crash point is reached, the store refuses every further commit until
/// [`SimStore::revive`] (the dead process can write nothing more).
///
/// It is the building block of the [`Scenario`](super::Scenario) runner, usable on its own with
/// a hand-driven ledger:
///
/// ```
/// use jobstate::testkit::simulator::{CrashPoint, SimStore};
/// use jobstate::MemoryStore;
/// use jobstate::store::Store;
///
/// let store = SimStore::new(MemoryStore::new());
/// store.crash_at(CrashPoint::before_commit(0));
/// let mut handle = store.clone();
/// let commit = jobstate::store::Commit::new(jobstate::store::Revision(0), Vec::new());
/// assert!(handle.commit(&commit).is_err()); // the agent "died" while committing
/// assert_eq!(store.take_crash(), Some(CrashPoint::before_commit(0)));
/// ```
pub struct SimStore<S> {
    shared: Rc<RefCell<Shared<S>>>,
}

struct Shared<S> {
    /// `None` only while a reopen hook runs.
    store: Option<S>,
    /// Commits asked for so far (whether they succeeded or not).
    commits: u64,
    plan: BTreeMap<u64, CrashWhen>,
    /// The crash point reached and not yet taken by the simulator.
    tripped: Option<CrashPoint>,
    /// Set once a crash point is reached: the process is dead.
    dead: bool,
    fail_next: u32,
    /// The commits made since the last [`SimStore::take_log`]: number and whether it succeeded.
    log: Vec<(u64, bool)>,
    /// The keys of the status messages that entered the outbox in acknowledged commits, in
    /// order: what the store was asked to report, seen at the store, not through the ledger.
    reported: Vec<StatusKey>,
}

impl<S> Clone for SimStore<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for SimStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared.borrow();
        f.debug_struct("SimStore")
            .field("commits", &shared.commits)
            .field("plan", &shared.plan)
            .field("dead", &shared.dead)
            .finish_non_exhaustive()
    }
}

impl<S: Store> SimStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self {
            shared: Rc::new(RefCell::new(Shared {
                store: Some(store),
                commits: 0,
                plan: BTreeMap::new(),
                tripped: None,
                dead: false,
                fail_next: 0,
                log: Vec::new(),
                reported: Vec::new(),
            })),
        }
    }

    /// Plans a crash at `point`. A later plan for the same commit replaces an earlier one.
    pub fn crash_at(&self, point: CrashPoint) {
        self.shared
            .borrow_mut()
            .plan
            .insert(point.commit, point.when);
    }

    /// Makes the next `n` commits fail with an IO error (changing nothing), without a crash.
    pub fn fail_next_commits(&self, n: u32) {
        self.shared.borrow_mut().fail_next = n;
    }

    /// How many commits were asked for so far.
    pub fn commits(&self) -> u64 {
        self.shared.borrow().commits
    }

    /// The crash point reached since the last call, if one was.
    pub fn take_crash(&self) -> Option<CrashPoint> {
        self.shared.borrow_mut().tripped.take()
    }

    /// Whether a crash point was reached and the store refuses commits.
    pub fn is_dead(&self) -> bool {
        self.shared.borrow().dead
    }

    /// A new agent process: commits are accepted again.
    pub fn revive(&self) {
        let mut shared = self.shared.borrow_mut();
        shared.dead = false;
        shared.tripped = None;
    }

    /// Replaces the wrapped store by `reopen(store)`: how a new process would open it. If
    /// reopening fails, its error is returned and the store is gone: every later call fails.
    pub fn reopen(
        &self,
        reopen: impl FnOnce(S) -> Result<S, StoreError>,
    ) -> Result<(), StoreError> {
        let store = self.shared.borrow_mut().store.take();
        if let Some(store) = store {
            let reopened = reopen(store)?;
            self.shared.borrow_mut().store = Some(reopened);
        }
        Ok(())
    }

    /// Loads the wrapped store directly, dead or not (to read the final state of a run).
    pub fn load_inner(&self) -> Result<Snapshot, StoreError> {
        let mut shared = self.shared.borrow_mut();
        match shared.store.as_mut() {
            Some(store) => store.load(),
            None => Err(gone()),
        }
    }

    /// The keys of the status messages that entered the outbox in the commits the store
    /// acknowledged, in order (a re-queued dead letter is not counted again).
    pub fn reported(&self) -> Vec<StatusKey> {
        self.shared.borrow().reported.clone()
    }

    /// The commits made since the last call: their numbers, and whether each succeeded.
    pub(super) fn take_log(&self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.shared.borrow_mut().log)
    }
}

fn gone() -> StoreError {
    StoreError::Io {
        context: "simulator store: the store is being reopened".into(),
        source: std::io::Error::other("no store"),
    }
}

fn refused(context: &str) -> StoreError {
    StoreError::Io {
        context: format!("simulator store: {context}"),
        source: std::io::Error::other("simulated failure"),
    }
}

impl<S: Store> Store for SimStore<S> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut shared = self.shared.borrow_mut();
        if shared.dead {
            return Err(refused("the agent crashed: it reads nothing more"));
        }
        match shared.store.as_mut() {
            Some(store) => store.load(),
            None => Err(gone()),
        }
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        let mut guard = self.shared.borrow_mut();
        let shared = &mut *guard;
        if shared.dead {
            return Err(refused("the agent crashed: nothing more reaches the store"));
        }
        let n = shared.commits;
        shared.commits += 1;
        if shared.fail_next > 0 {
            shared.fail_next -= 1;
            shared.log.push((n, false));
            return Err(refused("commit failed on request"));
        }
        let Some(store) = shared.store.as_mut() else {
            return Err(gone());
        };
        let planned = shared.plan.remove(&n);
        if planned == Some(CrashWhen::BeforeCommit) {
            shared.dead = true;
            shared.tripped = Some(CrashPoint::before_commit(n));
            shared.log.push((n, false));
            return Err(refused(
                "the agent crashed before this commit reached the store",
            ));
        }
        let result = store.commit(commit);
        shared.log.push((n, result.is_ok()));
        if result.is_ok() {
            shared
                .reported
                .extend(commit.reports.iter().map(|m| m.key.clone()));
        }
        if let Some(when) = planned {
            shared.dead = true;
            shared.tripped = Some(CrashPoint { commit: n, when });
        }
        result
    }
}

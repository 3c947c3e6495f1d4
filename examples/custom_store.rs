//! A store of your own, checked by the conformance suite in a few lines.
//!
//! An agent may already keep its state somewhere: a registry hive, a table of its database, a
//! key-value file. Any of them can hold jobstate's ledger, as long as it keeps the rules of the
//! `Store` trait. Here is an intentionally simple one, a `BTreeMap` of records shared between
//! "processes", and the one call that proves it keeps the rules.
//!
//! Run with `cargo run --features testkit --example custom_store`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jobstate::store::{Commit, Record, Replay, Revision, Snapshot, Store, StoreError};
use jobstate::testkit::conformance::{self, Harness};

/// The "medium": what survives the process. Here, a map from commit number to the records of
/// that commit, shared by clones.
type Medium = Arc<Mutex<BTreeMap<u64, Vec<Record>>>>;

/// The store: the medium, plus what it adds up to (to check commits before writing them).
struct MapStore {
    medium: Medium,
    live: Replay,
}

impl MapStore {
    /// Opens the store on `medium`, replaying (and so checking) everything it holds.
    fn open(medium: Medium) -> Result<Self, StoreError> {
        let mut live = Replay::default();
        for records in medium.lock().map_err(poisoned)?.values() {
            for record in records {
                live.apply(record.clone())?; // a record that does not follow on is refused
            }
        }
        Ok(Self { medium, live })
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let medium = self.medium.lock().map_err(poisoned)?;
        Ok(Revision(medium.len() as u64))
    }
}

impl Store for MapStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.live.snapshot(self.revision()?))
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        let mut medium = self.medium.lock().map_err(poisoned)?;
        let current = Revision(medium.len() as u64);
        if commit.base != current {
            return Err(StoreError::Conflict {
                base: commit.base,
                current,
            });
        }
        self.live.check(commit)?; // all or nothing: check before writing anything
        medium.insert(current.0 + 1, commit.records());
        self.live.apply_commit(commit)?;
        Ok(Revision(current.0 + 1))
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Io {
        context: "map store".into(),
        source: std::io::Error::other("a thread panicked while holding the map"),
    }
}

/// How the suite creates and reopens map stores.
struct Maps;

impl Harness for Maps {
    type Store = MapStore;
    fn create(&mut self) -> Result<MapStore, StoreError> {
        MapStore::open(Medium::default())
    }
    fn reopen(&mut self, store: MapStore) -> Result<MapStore, StoreError> {
        MapStore::open(store.medium) // a new process: nothing but the medium
    }
}

fn main() {
    let report = conformance::check(Maps);
    println!("the map store passed {} conformance checks", report.checks);
    for skipped in &report.skipped {
        println!("skipped: {skipped}");
    }
}

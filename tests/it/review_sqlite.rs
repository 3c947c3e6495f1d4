//! Review H (an attacker's try at the SQLite store, the JSON-lines sink and the inspection
//! tool, 12-04): each test is a finding reproduced, and failed on the code it was written
//! against.

#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};

use jobstate::store::{Commit, Revision, SqliteStore, Store, StoreError, UnsafePath};

use crate::common::job;
use crate::review_stores::{job_names as names, offered};

fn offer_one(store: &mut impl Store, name: &str) -> Result<Revision, StoreError> {
    let base = store.load()?.revision;
    store.commit(&Commit::new(base, vec![offered(job(name))]))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// A closed store holding jobs a, b and c.
fn three(dir: &Path) -> PathBuf {
    let path = dir.join("jobs.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    for name in ["a", "b", "c"] {
        offer_one(&mut store, name).unwrap();
    }
    path
}

/// Whether `result` is the refusal of another program's database.
fn foreign<T>(result: &Result<T, StoreError>) -> bool {
    matches!(
        result,
        Err(StoreError::Unsafe(UnsafePath::ForeignFile { .. }))
    )
}

/// Copies another program's database at `live` and its `log` file (`-wal`, `-journal`), as
/// they are while its connection is open, to `path`: the open of the copy is refused as
/// another program's, and changes neither file.
fn refused_unchanged(live: &Path, path: &Path, log: &str) {
    std::fs::copy(live, path).unwrap();
    std::fs::copy(with_suffix(live, log), with_suffix(path, log)).unwrap();
    let files = || {
        (
            std::fs::read(path).unwrap(),
            std::fs::read(with_suffix(path, log)).ok(),
        )
    };
    let before = files();
    assert!(before.1.is_some());
    let result = SqliteStore::open(path);
    assert!(foreign(&result), "{result:?}");
    drop(result);
    assert!(
        files() == before,
        "the refused database or its {log} changed"
    );
}

const WRITER_DB: &str = "JOBSTATE_TEST_SQLITE_WRITER_DB";

/// Not a test of its own: the second writer of
/// [`an_inspection_in_the_agents_process_lets_no_second_writer_in`], run in a child process.
/// Prints what its open and commit answered.
#[test]
#[ignore = "run by another test, in a child process"]
fn child_second_sqlite_writer() {
    let Ok(path) = std::env::var(WRITER_DB) else {
        return;
    };
    match SqliteStore::open(&path) {
        Ok(mut store) => println!("WRITER commit: {:?}", offer_one(&mut store, "second")),
        Err(e) => println!("WRITER open: {e}"),
    }
}

fn second_writer(path: &Path) -> String {
    let _serial = crate::file_store::spawning();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "review_sqlite::child_second_sqlite_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.find("WRITER ").map(|at| l[at..].to_owned()))
        .unwrap_or_else(|| format!("the child said nothing: {stdout}"))
}

/// H1: SQLite's locks are POSIX locks, which a process loses when it closes any descriptor of
/// the file. `SqliteStore::inspect` in the agent's process (a status command), or the status
/// file pointed at the database by mistake, read the file and closed it: a second writer
/// process then opened the store and had its commit acknowledged, and lost. The store now also
/// holds an `flock` on the database for its life.
#[cfg(unix)]
#[test]
fn an_inspection_in_the_agents_process_lets_no_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.sqlite");
    let mut agent = SqliteStore::open(&path).unwrap();
    offer_one(&mut agent, "a").unwrap();
    let before = second_writer(&path);
    assert!(before.starts_with("WRITER open"), "{before}");
    let inspected = SqliteStore::inspect(&path).unwrap();
    assert_eq!(names(&inspected.snapshot), ["a"]);
    #[cfg(feature = "json-lines")]
    assert!(jobstate::report::JsonLinesSink::open(&path).is_err());
    let after = second_writer(&path);
    assert!(
        after.starts_with("WRITER open") && after.contains("locked"),
        "a second writer after the inspection: {after}"
    );
    offer_one(&mut agent, "b").unwrap();
    drop(agent);
    let mut reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(names(&reopened.load().unwrap()), ["a", "b"]);
}

/// H2: every commit goes to the `-wal` file; one deleted by a careless cleanup took every
/// commit since with it at the next crash, while the store went on acknowledging. Now the log
/// is checked like the database file: the commit is refused, and every later one (fail-stop).
#[cfg(unix)]
#[test]
fn a_commit_after_the_log_was_deleted_is_refused_and_the_store_fails_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    offer_one(&mut store, "before").unwrap();
    std::fs::remove_file(with_suffix(&path, "-wal")).unwrap();
    let refused = offer_one(&mut store, "after");
    assert!(
        matches!(&refused, Err(StoreError::FailStop { cause }) if cause.contains("write-ahead log")),
        "{refused:?}"
    );
    let again = offer_one(&mut store, "later");
    assert!(
        matches!(again, Err(StoreError::FailStop { .. })),
        "{again:?}"
    );
    drop(store);
    // Deleted before the first commit of an open: the log's identity is taken at the open.
    let mut store = SqliteStore::open(&path).unwrap();
    std::fs::remove_file(with_suffix(&path, "-wal")).unwrap();
    let refused = offer_one(&mut store, "first");
    assert!(
        matches!(&refused, Err(StoreError::FailStop { .. })),
        "{refused:?}"
    );
}

/// H3: two triggers planted in the database (one deletes each new row, one puts the revision
/// back) made every later commit vanish, acknowledged, with every open finding a consistent,
/// smaller store. A database holding anything jobstate never creates is now `Corrupt`, at
/// the open and at every load. (A commit is also read back before it is acknowledged: the
/// unit test `sqlite_a_trigger_planted_while_open_fails_the_commit_it_changes`.)
#[test]
fn planted_triggers_are_refused_and_change_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = three(dir.path());
    let plant = |path: &Path| {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER keep_rows AFTER INSERT ON records BEGIN
                     DELETE FROM records WHERE seq = NEW.seq;
                 END;
                 CREATE TRIGGER keep_revision AFTER UPDATE ON revision BEGIN
                     UPDATE revision SET value = OLD.value, head = OLD.head;
                 END;",
            )
            .unwrap();
    };
    plant(&path);
    let opened = SqliteStore::open(&path);
    assert!(
        matches!(&opened, Err(StoreError::Corrupt { detail, .. }) if detail.contains("keep_")),
        "{opened:?}"
    );
    // A view too.
    let other = tempfile::tempdir().unwrap();
    let path = three(other.path());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE VIEW jobs AS SELECT seq FROM records")
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Corrupt { .. })
    ));
}

/// H4: `inspect` copied the database, then its log, with nothing keeping the two consistent:
/// when the agent folded its log into the database and started it anew between the two
/// reads, the copy was an old database with a new log, and a healthy store was reported as
/// another program's database. Replayed here: such a mix is refused, and the database read
/// again after the log differs from the first read, which is what `inspect` now checks
/// before it copies (the retry itself: the unit test
/// `sqlite_a_copy_is_read_again_when_the_database_changed_while_its_log_was_read`).
#[test]
fn an_inspection_never_pairs_an_old_database_with_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let mut agent = SqliteStore::open(&path).unwrap();
    let salt = |path: &Path| {
        std::fs::read(with_suffix(path, "-wal"))
            .ok()
            .filter(|wal| wal.len() >= 32)
            .map(|wal| wal[16..24].to_vec())
    };
    for n in 0..50 {
        offer_one(&mut agent, &format!("job-{n}")).unwrap();
    }
    let old_database = std::fs::read(&path).unwrap();
    let first_salt = salt(&path);
    let mut n = 50;
    while salt(&path) == first_salt {
        offer_one(&mut agent, &format!("job-{n}")).unwrap();
        n += 1;
        assert!(n < 20_000, "the log was never started anew");
    }
    let copy = tempfile::tempdir().unwrap();
    let mixed = copy.path().join("mixed.db");
    std::fs::write(&mixed, &old_database).unwrap();
    std::fs::copy(with_suffix(&path, "-wal"), with_suffix(&mixed, "-wal")).unwrap();
    assert!(
        SqliteStore::inspect(&mixed).is_err(),
        "a mix read as a store"
    );
    assert_ne!(std::fs::read(&path).unwrap(), old_database);
    let inspected = SqliteStore::inspect(&path).unwrap();
    assert_eq!(inspected.snapshot.revision, agent.load().unwrap().revision);
    assert_eq!(inspected.snapshot.jobs.len(), n);
}

/// H5: one damaged page (the `schema` table's root) made a jobstate database "another
/// program's", with the advice to give the path of one that does not exist yet: a new, empty
/// store, which forgets every finished job. Damage is `Corrupt` now.
/// H9: a damaged page of the records, or a column edited to another type, was `Io` ("reading
/// a record"), naming no row. It is `Corrupt` now, naming the row it was read at.
#[test]
fn damaged_pages_and_edited_column_types_are_corruption() {
    let damaged_root = |table: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = three(dir.path());
        let db = rusqlite::Connection::open(&path).unwrap();
        let page: i64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let root: i64 = db
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        drop(db);
        let mut bytes = std::fs::read(&path).unwrap();
        // The b-tree page's type byte: no valid type.
        bytes[((root - 1) * page) as usize] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let result = SqliteStore::open(&path).and_then(|mut s| s.load());
        (dir, result)
    };
    for table in ["schema", "records", "revision"] {
        let (_dir, result) = damaged_root(table);
        assert!(
            matches!(&result, Err(StoreError::Corrupt { .. })),
            "the {table} table's root page damaged: {result:?}"
        );
    }
    for edit in [
        "UPDATE records SET crc = 'x' WHERE seq = 2",
        "UPDATE records SET crc = 1.5 WHERE seq = 2",
        "UPDATE records SET rev = 'two' WHERE seq = 2",
        "UPDATE revision SET value = 'three'",
        "UPDATE revision SET head = 0.5",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = three(dir.path());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(edit)
            .unwrap();
        let result = SqliteStore::open(&path).and_then(|mut s| s.load());
        assert!(
            matches!(&result, Err(StoreError::Corrupt { .. })),
            "{edit}: {result:?}"
        );
        if edit.starts_with("UPDATE records") {
            assert!(
                result.unwrap_err().to_string().contains("row 2"),
                "{edit}: the row is not named"
            );
        }
    }
}

/// H7: another program's database given by mistake was tightened to 0600 before it was
/// refused, locking its other users out; one left in WAL mode with a log had its log folded
/// in and deleted when the refused connection closed. Refused now means unchanged.
#[cfg(unix)]
#[test]
fn another_programs_database_is_refused_with_its_mode_and_its_log_unchanged() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE hosts (name TEXT); INSERT INTO hosts VALUES ('a');")
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let result = SqliteStore::open(&path);
    assert!(foreign(&result), "{result:?}");
    assert_eq!(mode(&path), 0o644);

    // In WAL mode, with the log its program left.
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let source = live.join("inventory.db");
    let db = rusqlite::Connection::open(&source).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE hosts (name TEXT); INSERT INTO hosts VALUES ('a');",
    )
    .unwrap();
    refused_unchanged(&source, &dir.path().join("left.db"), "-wal");
    drop(db);
}

/// H11: errors of `inspect` named its private copy (already deleted), not the database.
#[test]
fn an_inspections_errors_name_the_database_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let path = three(dir.path());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE records SET data = x'00' WHERE seq = 2")
        .unwrap();
    match SqliteStore::inspect(&path) {
        Err(StoreError::Corrupt { file, .. }) => assert_eq!(file, path),
        other => panic!("{other:?}"),
    }
}

/// Review H's re-review, 1: an object named `sqlite_…` (created with `PRAGMA writable_schema`,
/// which the sqlite3 tool allows) was left out of the check as one of SQLite's own: a trigger
/// so named that rewrites each new row's data got the commit acknowledged and the next open
/// `Corrupt`. Only SQLite's own tables and automatic indexes are left out now.
#[test]
fn a_trigger_named_like_sqlites_own_objects_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = three(dir.path());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA writable_schema=ON;
             CREATE TRIGGER sqlite_keep AFTER INSERT ON records BEGIN
                 UPDATE records SET data = X'00' WHERE seq = NEW.seq;
             END;",
        )
        .unwrap();
    let opened = SqliteStore::open(&path);
    assert!(
        matches!(&opened, Err(StoreError::Corrupt { detail, .. }) if detail.contains("sqlite_keep")),
        "{opened:?}"
    );
}

/// Review H's re-review, 2: another program's database in WAL mode, closed cleanly (no
/// `-wal`), got an empty `-wal` beside it from the refused open (no checkpoint at close
/// removed it any more). Refused means unchanged: the directory holds what it held.
#[test]
fn a_refused_wal_database_gets_no_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE hosts (name TEXT); INSERT INTO hosts VALUES ('a');",
        )
        .unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(dir.path());
    assert_eq!(before, ["inventory.db"]);
    let result = SqliteStore::open(&path);
    assert!(foreign(&result), "{result:?}");
    assert_eq!(listing(dir.path()), before);
}

/// Review H's re-review, 3, not fixed: another program's database in rollback-journal mode
/// with a hot `-journal` (its program crashed mid-transaction) is refused, but SQLite rolls
/// the journal back into it at the first read of the classification, and deletes the
/// journal. Classifying through a read-only connection answers `SQLITE_READONLY_ROLLBACK`
/// instead, which then needs a decision for the store's own database interrupted while it
/// switched to WAL (the only moment one of ours has a rollback journal).
#[test]
#[ignore = "known: a foreign database's hot journal is rolled back by the refused open"]
fn a_refused_database_with_a_hot_journal_is_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("inventory.db");
    let db = rusqlite::Connection::open(&live).unwrap();
    db.execute_batch(
        "PRAGMA cache_size=1; CREATE TABLE hosts (name TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200)
         INSERT INTO hosts SELECT hex(randomblob(200)) FROM n;",
    )
    .unwrap();
    db.execute_batch(
        "BEGIN; DELETE FROM hosts;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<400)
         INSERT INTO hosts SELECT hex(randomblob(300)) FROM n;",
    )
    .unwrap();
    // The crash image: the database and its journal as they are mid-transaction.
    refused_unchanged(&live, &dir.path().join("crashed.db"), "-journal");
    drop(db);
}

/// Holding (the re-review's check): a store reopened at once in the same process, after an
/// inspection and a fail-stop, is never `Locked`; after a clean close, the `-wal` SQLite
/// deletes and creates again at the next open is not taken for a deleted log.
#[test]
fn a_store_reopened_in_the_same_process_is_not_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = three(dir.path());
    for _ in 0..10 {
        let mut store = SqliteStore::open(&path).unwrap();
        let _ = SqliteStore::inspect(&path).unwrap();
        std::fs::remove_file(with_suffix(&path, "-wal")).unwrap();
        assert!(matches!(
            offer_one(&mut store, "x"),
            Err(StoreError::FailStop { .. })
        ));
        drop(store);
    }
    let mut store = SqliteStore::open(&path).unwrap();
    offer_one(&mut store, "y").unwrap();
    drop(store);
    assert!(!with_suffix(&path, "-wal").exists());
    let mut store = SqliteStore::open(&path).unwrap();
    offer_one(&mut store, "z").unwrap();
    assert_eq!(names(&store.load().unwrap()), ["a", "b", "c", "y", "z"]);
}

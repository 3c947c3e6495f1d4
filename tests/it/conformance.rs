//! Every store the crate ships passes the public conformance suite.

use jobstate::store::StoreError;
use jobstate::testkit::conformance::{self, Damage, Harness};
use jobstate::{FileStore, FileStoreOptions, MemoryStore};

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;
    fn create(&mut self) -> Result<MemoryStore, StoreError> {
        Ok(MemoryStore::new())
    }
    fn reopen(&mut self, store: MemoryStore) -> Result<MemoryStore, StoreError> {
        Ok(MemoryStore::from_records(store.records()))
    }
    fn damage(
        &mut self,
        store: MemoryStore,
        damage: Damage,
    ) -> Option<Result<MemoryStore, StoreError>> {
        let mut records = store.records();
        let first = records.first_mut()?;
        match damage {
            Damage::Corrupt => first.truncate(first.len() / 2),
            Damage::FutureVersion => first[0] = u8::MAX,
            _ => return None,
        }
        Some(Ok(MemoryStore::from_records(records)))
    }
}

/// File stores in fresh directories, removed at the end.
struct Files {
    root: std::path::PathBuf,
    next: u32,
}

impl Files {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "jobstate-it-conformance-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        Self { root, next: 0 }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Harness for Files {
    type Store = FileStore;
    fn create(&mut self) -> Result<FileStore, StoreError> {
        self.next += 1;
        // A small bound, so that the workload also runs through compactions.
        FileStore::open_with(
            self.root.join(self.next.to_string()),
            FileStoreOptions {
                compact_after: 3,
                per_job: 0,
                retention: jobstate::store::Retention::keep_all(),
            },
        )
    }
    fn reopen(&mut self, store: FileStore) -> Result<FileStore, StoreError> {
        let dir = store.dir().to_path_buf();
        drop(store);
        FileStore::open(dir)
    }
    fn damage(
        &mut self,
        store: FileStore,
        damage: Damage,
    ) -> Option<Result<FileStore, StoreError>> {
        let dir = store.dir().to_path_buf();
        drop(store);
        match damage {
            Damage::FlipBit(n) => {
                Self::flip(&dir, n)?;
                return Some(FileStore::open(dir));
            }
            Damage::DeleteRecord(n) => {
                Self::delete_frame(&dir, n)?;
                return Some(FileStore::open(dir));
            }
            _ => {}
        }
        // Damage the snapshot if there is one (the store compacts often here), else the journal.
        let target = ["snapshot", "journal"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())?;
        let mut bytes = std::fs::read(&target).ok()?;
        match damage {
            Damage::Corrupt => {
                let at = 24 + 10; // inside the first frame, which has data after it
                bytes[at] ^= 0x40;
            }
            Damage::FutureVersion => bytes[8] = bytes[8].wrapping_add(1),
            _ => return None,
        }
        std::fs::write(&target, bytes).ok()?;
        Some(FileStore::open(dir))
    }
    fn compact(&mut self, store: &mut FileStore) -> Result<(), StoreError> {
        store.compact()
    }
    fn open_again(&mut self, store: &FileStore) -> Option<Result<FileStore, StoreError>> {
        Some(FileStore::open(store.dir()))
    }
    fn delete_lock_files(&mut self, store: &FileStore) {
        // The file store locks its directory: a `lock` file of an older build is all there
        // could be.
        let _ = std::fs::remove_file(store.dir().join("lock"));
    }
}

/// The frames of a store file (after its 24-byte header): (start, end) of each. A frame is a
/// 12-byte header and its payload, and in a journal of format 3 an 8-byte trailer after it.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let journal_of_format_3 = bytes.len() >= 24
        && &bytes[..8] == b"JOBSTJNL"
        && u32::from_le_bytes(bytes[8..12].try_into().unwrap()) >= 3;
    let trailer = if journal_of_format_3 { 8 } else { 0 };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at, at + 12 + len + trailer));
        at += 12 + len + trailer;
    }
    frames
}

impl Files {
    /// Flips bit `n` (modulo their bits) of the snapshot and journal, one after the other.
    fn flip(dir: &std::path::Path, n: u64) -> Option<()> {
        let mut files: Vec<(std::path::PathBuf, Vec<u8>)> = ["snapshot", "journal"]
            .iter()
            .map(|f| dir.join(f))
            .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
            .collect();
        let bits: u64 = files.iter().map(|(_, b)| b.len() as u64 * 8).sum();
        let mut bit = n % bits;
        for (path, bytes) in &mut files {
            let len = bytes.len() as u64 * 8;
            if bit < len {
                bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
                return std::fs::write(path, bytes).ok();
            }
            bit -= len;
        }
        None
    }

    /// Deletes frame `n` of the snapshot's and the journal's frames, the journal's last frame
    /// left out (see `Damage::DeleteRecord`: the file store cannot tell it was ever written).
    fn delete_frame(dir: &std::path::Path, n: u64) -> Option<()> {
        let mut all = Vec::new();
        for name in ["snapshot", "journal"] {
            let path = dir.join(name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut found = frames(&bytes);
            if name == "journal" {
                found.pop();
            }
            all.extend(found.into_iter().map(|f| (path.clone(), f)));
        }
        let (path, (start, end)) = all.get(usize::try_from(n).ok()?)?.clone();
        let mut bytes = std::fs::read(&path).ok()?;
        bytes.drain(start..end);
        std::fs::write(&path, bytes).ok()
    }
}

#[test]
fn the_memory_store_conforms() {
    let report = conformance::check(Memory);
    assert_eq!(report.checks, 9, "{report:?}");
    // No medium to damage, no second process: said so.
    assert_eq!(report.skipped.len(), 3, "{report:?}");
}

#[test]
fn the_file_store_conforms() {
    let report = conformance::check(Files::new("file"));
    assert_eq!(report.checks, 12, "{report:?}");
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use jobstate::store::SqliteStore;
    use jobstate::store::Store;

    /// SQLite stores in fresh database files, removed at the end.
    pub struct Databases(Files);

    impl Databases {
        pub fn new(name: &str) -> Self {
            let files = Files::new(name);
            std::fs::create_dir_all(&files.root).expect("a temporary directory");
            Self(files)
        }
    }

    impl Harness for Databases {
        type Store = SqliteStore;
        fn create(&mut self) -> Result<SqliteStore, StoreError> {
            self.0.next += 1;
            SqliteStore::open(self.0.root.join(format!("{}.sqlite", self.0.next)))
        }
        fn reopen(&mut self, store: SqliteStore) -> Result<SqliteStore, StoreError> {
            let path = store.path().to_path_buf();
            drop(store);
            SqliteStore::open(path)
        }
        fn open_again(&mut self, store: &SqliteStore) -> Option<Result<SqliteStore, StoreError>> {
            Some(SqliteStore::open(store.path()))
        }
        fn delete_lock_files(&mut self, store: &SqliteStore) {
            // The SQLite store locks the database itself: a `.lock` file of an older build
            // is all there could be.
            let _ = std::fs::remove_file(format!("{}.lock", store.path().display()));
        }
        fn damage(
            &mut self,
            store: SqliteStore,
            damage: Damage,
        ) -> Option<Result<SqliteStore, StoreError>> {
            let path = store.path().to_path_buf();
            drop(store);
            let db = rusqlite::Connection::open(&path).ok()?;
            match damage {
                Damage::FlipBit(n) => {
                    flip_row_bit(&db, n)?;
                    drop(db);
                    return Some(SqliteStore::open(path));
                }
                Damage::DeleteRecord(n) => {
                    let seq: i64 = db
                        .query_row(
                            "SELECT seq FROM records ORDER BY seq LIMIT 1 OFFSET ?1",
                            [i64::try_from(n).ok()?],
                            |r| r.get(0),
                        )
                        .ok()?;
                    db.execute("DELETE FROM records WHERE seq = ?1", [seq])
                        .ok()?;
                    drop(db);
                    return Some(SqliteStore::open(path));
                }
                _ => {}
            }
            let sql = match damage {
                // A damaged row, with rows after it.
                Damage::Corrupt => {
                    "UPDATE records SET data = substr(data, 1, length(data) / 2) WHERE seq = (SELECT MIN(seq) FROM records)"
                }
                Damage::FutureVersion => "UPDATE schema SET version = version + 1",
                _ => return None,
            };
            db.execute(sql, []).ok()?;
            drop(db);
            Some(SqliteStore::open(path))
        }
    }

    /// Flips bit `n` (modulo their bits) of the rows: each record's data and checksum, then
    /// the revision and its checksum.
    fn flip_row_bit(db: &rusqlite::Connection, n: u64) -> Option<()> {
        let mut rows: Vec<(i64, Vec<u8>, i64)> = db
            .prepare("SELECT seq, data, crc FROM records ORDER BY seq")
            .ok()?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        let (revision, head): (i64, i64) = db
            .query_row("SELECT value, head FROM revision", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .ok()?;
        let bits: u64 = rows
            .iter()
            .map(|(_, d, _)| (d.len() as u64 + 4) * 8)
            .sum::<u64>()
            + 96;
        let mut bit = n % bits;
        for (seq, data, crc) in &mut rows {
            let len = data.len() as u64 * 8;
            if bit < len {
                data[(bit / 8) as usize] ^= 1 << (bit % 8);
                db.execute(
                    "UPDATE records SET data = ?1 WHERE seq = ?2",
                    rusqlite::params![&*data, *seq],
                )
                .ok()?;
                return Some(());
            }
            bit -= len;
            if bit < 32 {
                db.execute(
                    "UPDATE records SET crc = ?1 WHERE seq = ?2",
                    rusqlite::params![*crc ^ (1 << bit), *seq],
                )
                .ok()?;
                return Some(());
            }
            bit -= 32;
        }
        let (value, head) = if bit < 64 {
            (revision ^ (1 << bit), head)
        } else {
            (revision, head ^ (1 << (bit - 64)))
        };
        db.execute(
            "UPDATE revision SET value = ?1, head = ?2",
            rusqlite::params![value, head],
        )
        .ok()?;
        Some(())
    }

    #[test]
    fn the_sqlite_store_conforms() {
        let report = conformance::check(Databases::new("sqlite-suite"));
        assert_eq!(report.checks, 12, "{report:?}");
    }

    #[test]
    fn the_sqlite_store_is_single_writer_and_owner_only() {
        let mut databases = Databases::new("sqlite-single");
        let store = databases.create().unwrap();
        assert!(matches!(
            SqliteStore::open(store.path()),
            Err(StoreError::Locked { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A store with a few commits, closed: its path.
    fn closed(databases: &mut Databases) -> std::path::PathBuf {
        let store = databases.create().unwrap();
        let (mut ledger, _) =
            jobstate::Ledger::open(store, crate::common::service_session("a")).unwrap();
        for name in ["one", "two", "three"] {
            ledger
                .offer(jobstate::JobSpec::new(crate::common::job(name)))
                .unwrap();
        }
        let attempt = ledger.begin(&crate::common::job("one")).unwrap();
        let _effects = ledger.program_exited(&attempt, 0).unwrap();
        ledger.into_store().path().to_path_buf()
    }

    fn corrupt(path: &std::path::Path, sql: &str) -> String {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch(sql).unwrap();
        drop(db);
        match SqliteStore::open(path) {
            Err(StoreError::Corrupt { file, detail, .. }) => {
                assert_eq!(file, path);
                detail
            }
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
    }

    /// Issue 12, point 1: `DELETE FROM records` opened as an empty store; deleting the last
    /// commit's rows turned a completed job back into `Running`.
    #[test]
    fn deleted_rows_are_corruption_never_a_smaller_store() {
        let mut databases = Databases::new("sqlite-rows");
        let cases = [
            ("DELETE FROM records", "commits"),
            (
                "DELETE FROM records WHERE rev = (SELECT MAX(rev) FROM records)",
                "rows of the last commits are missing",
            ),
            (
                "DELETE FROM records WHERE seq = (SELECT MAX(seq) FROM records)",
                "missing",
            ),
            ("DELETE FROM records WHERE seq = 2", "row 2 is missing"),
            (
                "INSERT INTO records SELECT seq + 100, rev, data, crc FROM records WHERE seq = 1",
                "",
            ),
            ("UPDATE records SET rev = rev + 1 WHERE seq = 3", ""),
            ("UPDATE revision SET value = value - 1", ""),
            ("INSERT INTO revision VALUES (0, 0)", "holds 2 rows"),
        ];
        for (sql, says) in cases {
            let path = closed(&mut databases);
            let detail = corrupt(&path, sql);
            assert!(detail.contains(says), "{sql}: {detail}");
        }
    }

    /// Issue 12, point 5: on a full ext4 file system with 1 KiB blocks, reopening a SQLite
    /// store in WAL mode died of SIGBUS in SQLite's recovery of its memory-mapped `-shm`. In
    /// exclusive locking mode there is no `-shm`: every open on the full disk is a typed error
    /// or a store, never a signal. The filling and reopening run in a child process, whose
    /// death by a signal fails this test. Needs root (a loop mount): skipped, and says so,
    /// otherwise.
    #[test]
    fn a_full_disk_is_a_typed_error_never_sigbus() {
        use std::os::unix::process::ExitStatusExt;
        let _serial = crate::file_store::spawning();
        let Some(fs) = crate::file_store::SmallExt4::mount("sqlite-full-disk", 3 * 1024) else {
            return;
        };
        let mut lines = Vec::new();
        for step in ["fill", "reopen"] {
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "conformance::sqlite::full_disk_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(FULL_DISK_DIR, &fs.mount)
                .env(FULL_DISK_STEP, step)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            // (libtest prints "test ... " before the test's first line, on the same line.)
            let said: Vec<String> = stdout
                .lines()
                .filter_map(|l| l.find("FULL ").map(|at| l[at..].to_owned()))
                .collect();
            assert!(
                output.status.success(),
                "the {step} child died ({:?}, signal {:?}); it said:\n{}\n{}",
                output.status,
                output.status.signal(),
                said.join("\n"),
                String::from_utf8_lossy(&output.stderr)
            );
            lines.extend(said);
        }
        assert!(
            lines.iter().any(|l| l.starts_with("FULL filled")),
            "{lines:?}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("FULL reopen"))
                .count(),
            3,
            "{lines:?}"
        );
        crate::common::report_figures(&format!(
            "sqlite store on a full 1 KiB-block ext4: {}",
            lines
                .iter()
                .map(|l| l.trim_start_matches("FULL "))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }

    const FULL_DISK_DIR: &str = "JOBSTATE_FULL_DISK_DIR";

    const FULL_DISK_STEP: &str = "JOBSTATE_FULL_DISK_STEP";

    /// The child of [`a_full_disk_is_a_typed_error_never_sigbus`]: does nothing unless
    /// `JOBSTATE_FULL_DISK_DIR` is set. Step `fill` fills the disk with commits and exits
    /// without closing the store (a crash: the WAL stays); step `reopen` opens it three times.
    #[test]
    fn full_disk_child() {
        let Some(dir) = std::env::var_os(FULL_DISK_DIR) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let fs = std::mem::ManuallyDrop::new(crate::file_store::SmallExt4 {
            image: crate::file_store::TempDir(std::path::PathBuf::new()),
            mount: dir.clone(),
        });
        let path = dir.join("state").join("jobs.sqlite");
        if std::env::var(FULL_DISK_STEP).as_deref() == Ok("fill") {
            fs.fill("filler", 160 * 1024);
            std::fs::create_dir(dir.join("state")).unwrap();
            let store = SqliteStore::open(&path).unwrap();
            let (mut ledger, _) =
                jobstate::Ledger::open(store, crate::common::service_session("a")).unwrap();
            let mut committed = 0;
            let error = loop {
                let id = format!("{committed:06}-{}", "x".repeat(200));
                match ledger.offer(jobstate::JobSpec::new(crate::common::job(&id))) {
                    Ok(_) => committed += 1,
                    Err(error) => break error,
                }
            };
            println!("FULL filled: {committed} commits, then: {error}");
            fs.fill_up("filler-2");
            // A crash: no close, no checkpoint; the WAL stays.
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        for round in 0..3 {
            let outcome = match SqliteStore::open(&path) {
                Ok(mut store) => match store.load() {
                    Ok(snapshot) => format!("a store of {} jobs", snapshot.jobs.len()),
                    Err(error) => format!("load: {error}"),
                },
                Err(error) => format!("open: {error}"),
            };
            println!("FULL reopen {round}: {outcome}");
        }
    }
}

//! Every store the crate ships passes the public conformance suite.

use jobstate::testkit::conformance::{self, Damage, Harness};
use jobstate::{FileStore, FileStoreOptions, MemoryStore, StoreError};

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
}

#[test]
fn the_memory_store_conforms() {
    let report = conformance::check(Memory);
    assert_eq!(report.checks, 9, "{report:?}");
}

#[test]
fn the_file_store_conforms() {
    let report = conformance::check(Files::new("file"));
    assert_eq!(report.checks, 9, "{report:?}");
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use jobstate::SqliteStore;

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
        fn damage(
            &mut self,
            store: SqliteStore,
            damage: Damage,
        ) -> Option<Result<SqliteStore, StoreError>> {
            let path = store.path().to_path_buf();
            drop(store);
            let db = rusqlite::Connection::open(&path).ok()?;
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

    #[test]
    fn the_sqlite_store_conforms() {
        let report = conformance::check(Databases::new("sqlite-suite"));
        assert_eq!(report.checks, 9, "{report:?}");
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
}

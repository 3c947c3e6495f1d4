//! A store in one SQLite database file (feature `sqlite`).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Commit, Replay, Revision, Snapshot, Store, StoreError};
use crate::codec;

/// The schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 1;

/// A store in one SQLite database file: each commit is one `BEGIN IMMEDIATE` transaction in WAL
/// mode with `synchronous=FULL` (durable when it returns), and the revision check is done in SQL,
/// so a stale writer is refused by the database itself.
///
/// - Records are kept as rows of the crate's versioned encoding, in commit order; completed
///   mandatory jobs and their histories are never deleted.
/// - A `schema` table holds the schema version; an unknown version is
///   [`StoreError::UnknownFormat`].
/// - One writer process at a time: a lock file beside the database (`<file>.lock`), as the file
///   store does ([`StoreError::Locked`]).
/// - The database file is created readable by its owner only (SQLite gives its `-wal` and `-shm`
///   files the same permissions).
///
/// ```
/// use jobstate::{SqliteStore, Store};
/// let path = std::env::temp_dir().join(format!("jobstate-doc-{}.sqlite", std::process::id()));
/// let mut store = SqliteStore::open(&path)?;
/// assert_eq!(store.load()?.jobs.len(), 0);
/// drop(store);
/// # for suffix in ["", "-wal", "-shm", ".lock"] {
/// #     let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    db: Connection,
    path: PathBuf,
    revision: u64,
    live: Replay,
    _lock: File,
}

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Io {
        context: format!("sqlite store: {context}"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and loads and checks what it holds.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = super::file::lock_file(&PathBuf::from(format!("{}.lock", path.display())))?;
        if !path.exists() {
            // Created owner-only before SQLite opens it; SQLite copies the mode to -wal and -shm.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(&path).map_err(|source| StoreError::Io {
                context: format!("creating {}", path.display()),
                source,
            })?;
        }
        let db = Connection::open(&path).map_err(sql("opening the database"))?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("setting WAL mode"))?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS revision (value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);",
        )
        .map_err(sql("creating the tables"))?;
        let version: Option<i64> = db
            .query_row("SELECT version FROM schema", [], |r| r.get(0))
            .optional()
            .map_err(sql("reading the schema version"))?;
        match version {
            None => {
                db.execute_batch(&format!(
                    "BEGIN; INSERT INTO schema VALUES ({SCHEMA_VERSION}); INSERT INTO revision VALUES (0); COMMIT;"
                ))
                .map_err(sql("writing the schema version"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(StoreError::UnknownFormat {
                    file: path,
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    supported: SCHEMA_VERSION as u32,
                });
            }
        }
        let mut store = Self {
            db,
            path,
            revision: 0,
            live: Replay::default(),
            _lock: lock,
        };
        store.reload()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        let revision: i64 = self
            .db
            .query_row("SELECT value FROM revision", [], |r| r.get(0))
            .map_err(sql("reading the revision"))?;
        let mut statement = self
            .db
            .prepare("SELECT seq, data FROM records ORDER BY seq")
            .map_err(sql("reading the records"))?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(sql("reading the records"))?;
        let mut live = Replay::default();
        for row in rows {
            let (seq, data) = row.map_err(sql("reading a record"))?;
            let record = codec::decode(&data).map_err(|source| match source {
                codec::DecodeError::UnknownVersion { found, supported } => {
                    StoreError::UnknownFormat {
                        file: self.path.clone(),
                        found: u32::from(found),
                        supported: u32::from(supported),
                    }
                }
                other => StoreError::Corrupt {
                    file: self.path.clone(),
                    offset: u64::try_from(seq).unwrap_or(0),
                    detail: format!("row {seq} of table records: {other}"),
                },
            })?;
            live.apply(record).map_err(|e| StoreError::Corrupt {
                file: self.path.clone(),
                offset: u64::try_from(seq).unwrap_or(0),
                detail: format!("row {seq} of table records: {e}"),
            })?;
        }
        self.revision = u64::try_from(revision).map_err(|_| StoreError::Corrupt {
            file: self.path.clone(),
            offset: 0,
            detail: format!("a negative revision {revision}"),
        })?;
        self.live = live;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.reload()?;
        Ok(self.live.snapshot(Revision(self.revision)))
    }

    fn commit(&mut self, commit: &Commit) -> Result<Revision, StoreError> {
        if commit.is_empty() {
            return Ok(Revision(self.revision));
        }
        self.live.check(commit)?;
        let base = i64::try_from(commit.base.0).unwrap_or(i64::MAX);
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("beginning a transaction"))?;
        // The stale-writer check, in SQL: only a writer that saw the current revision moves it.
        let moved = tx
            .execute(
                "UPDATE revision SET value = value + 1 WHERE value = ?1",
                params![base],
            )
            .map_err(sql("moving the revision"))?;
        if moved != 1 {
            let current: i64 = tx
                .query_row("SELECT value FROM revision", [], |r| r.get(0))
                .map_err(sql("reading the revision"))?;
            return Err(StoreError::Conflict {
                base: commit.base,
                current: Revision(u64::try_from(current).unwrap_or(0)),
            });
        }
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO records (data) VALUES (?1)")
                .map_err(sql("preparing an insert"))?;
            for record in commit.records() {
                let data = codec::encode(&record)?;
                insert
                    .execute(params![data])
                    .map_err(sql("inserting a record"))?;
            }
        }
        tx.commit().map_err(sql("committing"))?;
        self.live.apply_checked(commit)?;
        self.revision = commit.base.0.saturating_add(1);
        Ok(Revision(self.revision))
    }
}

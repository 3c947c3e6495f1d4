//! A store in one SQLite database file (feature `sqlite`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::file::crc32c::{crc32c, crc32c_append};
use super::{Commit, Replay, Revision, Snapshot, Store, StoreError};
use crate::safe_fs::UnsafePath;
use crate::{codec, safe_fs};

/// The schema version this build writes and reads. (Version 1, without row checksums, was never
/// released.)
const SCHEMA_VERSION: i64 = 2;

/// A store in one SQLite database file: each commit is one `BEGIN IMMEDIATE` transaction in WAL
/// mode with `synchronous=FULL` (durable when it returns), and the revision check is done in SQL,
/// so a stale writer is refused by the database itself.
///
/// - Records are kept as rows of the crate's versioned encoding, in commit order; completed
///   mandatory jobs and their histories are never deleted.
/// - Every row carries a checksum (CRC-32C) of its sequence number, its commit's revision, its
///   data and the checksum of the row before it; the `revision` table holds the store's
///   revision and the checksum of the last row. So an edited row, a row deleted anywhere (the
///   last commit's rows included), an extra row, or all rows deleted is
///   [`StoreError::Corrupt`], naming the row, never a smaller store.
/// - A `schema` table holds the schema version; an unknown version is
///   [`StoreError::UnknownFormat`].
/// - One writer: the connection runs in SQLite's exclusive locking mode and takes the
///   database's write lock at open, holding it until the store is dropped. A second open, in
///   this process or another, is [`StoreError::Locked`]; no lock file exists to be deleted.
///   Exclusive mode also keeps WAL's index in memory instead of a memory-mapped `-shm` file:
///   on a full disk, SQLite's recovery of a mapped `-shm` dies of `SIGBUS`, where this store
///   returns a typed error.
/// - No traps followed: the database's directory is refused ([`StoreError::Unsafe`]) when
///   another user owns it or its group or others may write it; the database and its `-wal`
///   and `-journal` files are refused when they are links, not regular files, or have several
///   names; SQLite opens the database with `SQLITE_OPEN_NOFOLLOW`.
/// - The database file is created readable by its owner only, and an existing one (and its
///   `-wal`) is tightened to 0600.
///
/// ```
/// use jobstate::store::{SqliteStore, Store};
/// let dir = tempfile::tempdir()?;
/// let mut store = SqliteStore::open(dir.path().join("jobs.sqlite"))?;
/// assert_eq!(store.load()?.jobs.len(), 0);
/// assert!(SqliteStore::open(dir.path().join("jobs.sqlite")).is_err()); // one writer
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    db: Connection,
    path: PathBuf,
    revision: u64,
    /// The sequence number of the last row (0: none).
    last_seq: i64,
    /// The checksum of the last row (0: none).
    head: u32,
    live: Replay,
    /// How much history is kept in memory. (The database keeps every row: it is never
    /// compacted.)
    retention: crate::store::Retention,
}

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Io {
        context: format!("sqlite store: {context}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Whether `e` says another connection holds the database.
fn busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The checksum of a row: its sequence number, its commit's revision, its data, chained to the
/// checksum of the row before it.
fn row_crc(previous: u32, seq: i64, rev: i64, data: &[u8]) -> u32 {
    let mut head = [0u8; 20];
    head[..4].copy_from_slice(&previous.to_le_bytes());
    head[4..12].copy_from_slice(&seq.to_le_bytes());
    head[12..].copy_from_slice(&rev.to_le_bytes());
    crc32c_append(crc32c(&head), data)
}

/// Checks the files SQLite will open beside `path` without opening them (opening and closing a
/// file of a database this process has open would drop SQLite's POSIX locks on it), and
/// tightens their modes.
fn check_files(path: &Path) -> Result<bool, StoreError> {
    let mut exists = false;
    for suffix in ["", "-wal", "-journal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let found = safe_fs::look(&file).map_err(super::file::io("checking the database files"))?;
        #[cfg(unix)]
        if let Some(metadata) = &found {
            use std::os::unix::fs::PermissionsExt;
            if metadata.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(super::file::io("making a database file owner-only"))?;
            }
        }
        exists |= suffix.is_empty() && found.is_some();
    }
    Ok(exists)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and loads and checks what it holds.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(UnsafePath::Empty.into());
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        safe_fs::check_dir(dir, false)
            .map_err(super::file::io("checking the database's directory"))?;
        if !check_files(&path)? {
            // Created owner-only (and never a link: O_EXCL) before SQLite opens it; SQLite
            // gives its -wal file the same mode.
            safe_fs::create_new(&path, std::fs::OpenOptions::new().write(true))
                .map_err(super::file::io("creating the database"))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let db = Connection::open_with_flags(&path, flags).map_err(sql("opening the database"))?;
        let locked = |e: rusqlite::Error| {
            if busy(&e) {
                StoreError::Locked { path: path.clone() }
            } else {
                sql("taking the database's write lock")(e)
            }
        };
        // Exclusive before WAL: no memory-mapped -shm file (see the type's docs), and the
        // lock is held from the first transaction until the connection closes.
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(&locked)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(&locked)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        // Takes the write lock now, so that a second writer is refused at its open.
        db.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(&locked)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS revision (value INTEGER NOT NULL, head INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS records (
                 seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL, data BLOB NOT NULL,
                 crc INTEGER NOT NULL);",
        )
        .map_err(sql("creating the tables"))?;
        let version: Option<i64> = db
            .query_row("SELECT version FROM schema", [], |r| r.get(0))
            .optional()
            .map_err(sql("reading the schema version"))?;
        match version {
            None => {
                db.execute_batch(&format!(
                    "BEGIN; INSERT INTO schema VALUES ({SCHEMA_VERSION}); INSERT INTO revision VALUES (0, 0); COMMIT;"
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
            last_seq: 0,
            head: 0,
            live: Replay::default(),
            retention: crate::store::Retention::default(),
        };
        store.reload()?;
        Ok(store)
    }

    /// The same store, keeping as much history in memory as `retention` says (default:
    /// [`Retention::default`](crate::store::Retention)). The database itself keeps every row.
    #[must_use]
    pub fn with_retention(mut self, retention: crate::store::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Reads the database at `path` without taking its lock or changing it, so that it can be
    /// looked at while an agent holds it (what the `jobstate` inspection tool does).
    ///
    /// The store keeps SQLite's exclusive locking mode (against the `SIGBUS` of a shared-memory
    /// index on a full disk), so no second connection can read it while an agent has it open:
    /// the database file and its write-ahead log are copied, as they are, into a private
    /// temporary directory, and the copy is opened and checked like any store (row checksums,
    /// revision) and removed. A copy taken while the agent folds its log into the database may
    /// show an older revision than the agent's, never a mix: the revision is in the snapshot.
    pub fn inspect(path: impl AsRef<Path>) -> Result<super::Inspection, StoreError> {
        let path = path.as_ref();
        if safe_fs::look(path)
            .map_err(super::file::io("looking at the database"))?
            .is_none()
        {
            return Err(StoreError::Io {
                context: format!("inspecting {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no database there; the read-only view creates nothing",
                ),
            });
        }
        let copy = PrivateDir::new()?;
        let db = copy.0.join("store.db");
        for (suffix, required) in [("", true), ("-wal", false)] {
            let from = PathBuf::from(format!("{}{suffix}", path.display()));
            let bytes = safe_fs::read(&from).map_err(super::file::io("reading the database"))?;
            let Some(bytes) = bytes else {
                if required {
                    return Err(StoreError::Io {
                        context: format!("reading {}", from.display()),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                continue;
            };
            let to = PathBuf::from(format!("{}{suffix}", db.display()));
            let mut file = safe_fs::create_new(&to, std::fs::OpenOptions::new().write(true))
                .map_err(super::file::io("copying the database"))?;
            std::io::Write::write_all(&mut file, &bytes).map_err(|source| StoreError::Io {
                context: format!("copying {}", from.display()),
                source,
            })?;
        }
        let mut store = Self::open(&db)?.with_retention(crate::store::Retention::keep_all());
        let snapshot = store.load()?;
        drop(store);
        Ok(super::Inspection {
            snapshot,
            report: super::OpenReport::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, seq: i64, detail: String) -> StoreError {
        StoreError::Corrupt {
            file: self.path.clone(),
            offset: u64::try_from(seq).unwrap_or(0),
            detail,
        }
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        let rows: Vec<(i64, i64)> = {
            let mut statement = self
                .db
                .prepare("SELECT value, head FROM revision")
                .map_err(sql("reading the revision"))?;
            statement
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql("reading the revision"))?
                .collect::<Result<_, _>>()
                .map_err(sql("reading the revision"))?
        };
        let [(revision, head)] = rows[..] else {
            return Err(self.corrupt(
                0,
                format!("table revision holds {} rows, not one", rows.len()),
            ));
        };
        let revision = u64::try_from(revision)
            .map_err(|_| self.corrupt(0, format!("a negative revision {revision}")))?;
        let head = u32::try_from(head)
            .map_err(|_| self.corrupt(0, format!("a revision checksum out of range ({head})")))?;
        let mut statement = self
            .db
            .prepare("SELECT seq, rev, data, crc FROM records ORDER BY seq")
            .map_err(sql("reading the records"))?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql("reading the records"))?;
        let corrupt = |seq: i64, detail: String| StoreError::Corrupt {
            file: self.path.clone(),
            offset: u64::try_from(seq).unwrap_or(0),
            detail,
        };
        let mut live = Replay::default();
        let (mut last_seq, mut last_rev, mut last_crc) = (0i64, 0i64, 0u32);
        for row in rows {
            let (seq, rev, data, crc) = row.map_err(sql("reading a record"))?;
            let at = |what: String| corrupt(seq, format!("row {seq} of table records: {what}"));
            if Some(seq) != last_seq.checked_add(1) {
                return Err(at(format!(
                    "row {} is missing (a deleted or renumbered row)",
                    last_seq + 1
                )));
            }
            if rev != last_rev && Some(rev) != last_rev.checked_add(1) {
                return Err(at(format!(
                    "revision {rev} after revision {last_rev} (a commit's rows are missing)"
                )));
            }
            if u32::try_from(crc).ok() != Some(row_crc(last_crc, seq, rev, &data)) {
                return Err(at(
                    "checksum mismatch (an edited row, or a row before it deleted)".into(),
                ));
            }
            let record = codec::decode(&data).map_err(|source| match source {
                codec::DecodeError::UnknownVersion { found, supported } => {
                    StoreError::UnknownFormat {
                        file: self.path.clone(),
                        found: u32::from(found),
                        supported: u32::from(supported),
                    }
                }
                other => at(other.to_string()),
            })?;
            live.apply(record).map_err(|e| at(e.to_string()))?;
            (last_seq, last_rev, last_crc) = (seq, rev, crc as u32);
        }
        if u64::try_from(last_rev).ok() != Some(revision) || last_crc != head {
            return Err(corrupt(
                last_seq,
                format!(
                    "table revision says {revision} commits ending in a row with checksum {head:08x}, but the rows end with commit {last_rev} (checksum {last_crc:08x}): rows of the last commits are missing, or rows were added"
                ),
            ));
        }
        drop(statement);
        live.compact_history(&self.retention);
        self.revision = revision;
        self.last_seq = last_seq;
        self.head = last_crc;
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
        let rev = base.saturating_add(1);
        // The rows and their chained checksums, computed before anything is written.
        let mut rows = Vec::new();
        let (mut seq, mut head) = (self.last_seq, self.head);
        for record in commit.records() {
            let data = codec::encode(&record)?;
            seq += 1;
            head = row_crc(head, seq, rev, &data);
            rows.push((seq, data, head));
        }
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("beginning a transaction"))?;
        // The stale-writer check, in SQL: only a writer that saw the current revision moves it.
        let moved = tx
            .execute(
                "UPDATE revision SET value = value + 1, head = ?2 WHERE value = ?1",
                params![base, i64::from(head)],
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
                .prepare_cached("INSERT INTO records (seq, rev, data, crc) VALUES (?1, ?2, ?3, ?4)")
                .map_err(sql("preparing an insert"))?;
            for (seq, data, crc) in &rows {
                insert
                    .execute(params![seq, rev, data, i64::from(*crc)])
                    .map_err(sql("inserting a record"))?;
            }
        }
        tx.commit().map_err(sql("committing"))?;
        self.live.apply_checked(commit)?;
        self.live.bound_runs(commit, &self.retention);
        self.revision = commit.base.0.saturating_add(1);
        self.last_seq = seq;
        self.head = head;
        Ok(Revision(self.revision))
    }
}

/// A private (0700) temporary directory, removed with what it holds when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> Result<Self, StoreError> {
        let base = std::env::temp_dir();
        let mut last = None;
        for n in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = base.join(format!(
                "jobstate-inspect-{}-{nanos:09}-{n}",
                std::process::id()
            ));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            // Never an existing directory: one planted there is not ours.
            match builder.create(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(StoreError::Io {
            context: format!("creating a private directory in {}", base.display()),
            source: last.unwrap_or_else(|| std::io::Error::other("no attempt made")),
        })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! A store in one SQLite database file (feature `sqlite`).

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};

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
///   [`StoreError::Corrupt`], naming the row, never a smaller store. So is a damaged page, a
///   column edited to another type, and anything in the database jobstate never creates (a
///   trigger or a view could change what is written or read); a commit is read back inside
///   its transaction before it is acknowledged.
/// - A `schema` table holds the schema version; an unknown version is
///   [`StoreError::UnknownFormat`]. What a database holds is read before anything is written
///   to it: tables are created only in a database with none, and a database of another version
///   or of another program ([`UnsafePath::ForeignFile`]) is refused unchanged (no tables, no
///   switch to WAL).
/// - One writer: the connection runs in SQLite's exclusive locking mode and takes the
///   database's write lock at open, holding it until the store is dropped. A second open, in
///   this process or another, is [`StoreError::Locked`]; no lock file exists to be deleted.
///   SQLite's locks are POSIX locks, which a process loses when it closes any descriptor of
///   the file (an inspection in the agent's process, a status file pointed at the database by
///   mistake): the store also holds an `flock` on the database for its life, which only its
///   own descriptor's closing releases.
///   The database file itself can be deleted: before each commit is acknowledged, the store
///   checks (one `lstat` each) that the file at its path and its write-ahead log are still
///   the ones it opened (same device and inode), and if either was deleted or replaced
///   refuses that commit and every later one ([`StoreError::FailStop`]): reopen the store. A second store at the same path in this
///   process is refused even then; one in another process would create a new database there,
///   and the first store stops acknowledging.
///   Exclusive mode also keeps WAL's index in memory instead of a memory-mapped `-shm` file:
///   on a full disk, SQLite's recovery of a mapped `-shm` dies of `SIGBUS`, where this store
///   returns a typed error.
/// - No traps followed: the database's directory is refused ([`StoreError::Unsafe`]) when
///   another user owns it or its group or others may write it; the database and its `-wal`
///   and `-journal` files are refused when they are links, not regular files, or have several
///   names; SQLite opens the database with `SQLITE_OPEN_NOFOLLOW`.
/// - The database file is created readable by its owner only, and an existing one of this
///   store (and its `-wal`) is tightened to 0600; another program's database is refused with
///   its modes, and its log, as they were.
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
    /// The database file this store opened, checked before a commit is acknowledged.
    file: FileIdentity,
    /// Why the store refuses every commit (the database file was deleted or replaced).
    failed: Option<String>,
    /// The database file, open and `flock`ed for the life of the store (declared after `db`:
    /// closed after SQLite's connection). SQLite's own locks are POSIX locks, which this
    /// process loses when it closes *any* descriptor of the file: an inspection in the agent's
    /// process, or a status file pointed at the database by mistake, would drop them and let a
    /// second writer in. An `flock` belongs to this descriptor alone.
    #[cfg(unix)]
    _writer: std::fs::File,
    /// This process's claim on the path (released when the store is dropped).
    _claim: Claim,
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
/// file of a database this process has open would drop SQLite's POSIX locks on it), and, when
/// `tighten` (once the database is known to be a store's), tightens their modes: a database
/// refused as another program's keeps its modes.
fn check_files(path: &Path, tighten: bool) -> Result<bool, StoreError> {
    let mut exists = false;
    for suffix in ["", "-wal", "-journal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let found = safe_fs::look(&file).map_err(super::file::io("checking the database files"))?;
        #[cfg(unix)]
        if let Some(metadata) = found.as_ref().filter(|_| tighten) {
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

/// The database file a store opened, and its write-ahead log: their absolute paths (a later
/// `chdir` changes nothing) and, on Unix, their devices and inodes. SQLite keeps both open,
/// so their inode numbers cannot be reused while the store lives: the same `(dev, ino)` at the
/// path means the same file.
#[derive(Debug)]
struct FileIdentity {
    path: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
    /// The `-wal` file, where every commit goes until SQLite folds it into the database.
    wal_path: PathBuf,
    /// Its identity, once seen (SQLite creates it at the first write).
    #[cfg(unix)]
    wal: Option<(u64, u64)>,
}

/// The device and inode of `metadata`'s file.
#[cfg(unix)]
fn dev_ino(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

impl FileIdentity {
    fn of(path: &Path, metadata: &std::fs::Metadata) -> Self {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let wal_path = PathBuf::from(format!("{}-wal", path.display()));
        #[cfg(unix)]
        {
            Self {
                path,
                id: dev_ino(metadata),
                wal_path,
                wal: None,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            Self { path, wal_path }
        }
    }

    fn same(&self, metadata: &std::fs::Metadata) -> bool {
        #[cfg(unix)]
        {
            self.id == dev_ino(metadata)
        }
        #[cfg(not(unix))]
        {
            metadata.file_type().is_file()
        }
    }

    /// `None` if the files at the paths are still the ones opened, else what happened to
    /// them. One `lstat` of each. The log matters as much as the database: a commit is durable
    /// in the log, and a log deleted (a careless cleanup of `*-wal`) takes every commit since
    /// the last checkpoint with it at the next crash, while SQLite goes on writing to it.
    fn changed(&mut self) -> Option<String> {
        let what = |path: &Path, same: &dyn Fn(&std::fs::Metadata) -> bool| {
            match std::fs::symlink_metadata(path) {
                Ok(metadata) if same(&metadata) => None,
                Ok(_) => Some("replaced by another file".to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("deleted".into()),
                Err(e) => Some(format!("no longer found (looking at it failed: {e})")),
            }
        };
        if let Some(what) = what(&self.path, &|m| self.same(m)) {
            return Some(format!(
                "the database file {} was {what}",
                self.path.display()
            ));
        }
        #[cfg(unix)]
        match self.wal {
            Some(id) => {
                if let Some(what) = what(&self.wal_path, &|m| dev_ino(m) == id) {
                    return Some(format!(
                        "its write-ahead log {} was {what}",
                        self.wal_path.display()
                    ));
                }
            }
            None => {
                self.wal = std::fs::symlink_metadata(&self.wal_path)
                    .ok()
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| dev_ino(&m));
            }
        }
        None
    }
}

/// What identifies a database path within this process: its directory (device and inode on
/// Unix, so that another name of the same directory is the same key) and its file name.
#[cfg(unix)]
type ClaimKey = ((u64, u64), std::ffi::OsString);
#[cfg(not(unix))]
type ClaimKey = (PathBuf, std::ffi::OsString);

/// The database paths open in this process. SQLite's lock is on the database file, which a
/// careless cleanup can delete: a second store at the same path would then create a new file
/// and lock that. Within one process this list refuses it whatever happened to the file; for
/// another process, the first store's check before each acknowledgment stops it (fail-stop).
static OPEN: std::sync::Mutex<Vec<ClaimKey>> = std::sync::Mutex::new(Vec::new());

/// A path claimed in [`OPEN`] for the life of a store.
#[derive(Debug)]
struct Claim(ClaimKey);

impl Claim {
    fn take(dir: &Path, path: &Path) -> Result<Self, StoreError> {
        #[cfg(unix)]
        let dir_key = {
            use std::os::unix::fs::MetadataExt;
            let metadata = std::fs::metadata(dir)
                .map_err(super::file::io("looking at the database's directory"))?;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let dir_key = std::fs::canonicalize(dir)
            .map_err(super::file::io("looking at the database's directory"))?;
        let name = path
            .file_name()
            .map_or_else(|| path.as_os_str().to_owned(), std::ffi::OsStr::to_owned);
        let key = (dir_key, name);
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.contains(&key) {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
            });
        }
        open.push(key.clone());
        Ok(Self(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut open = OPEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = open.iter().position(|key| *key == self.0) {
            open.swap_remove(at);
        }
    }
}

/// What [`classify`] found in a database, read before anything is written to it.
enum Found {
    /// No tables at all: a new store is created in it.
    Empty,
    /// This store's tables, all empty and without a version: a creation by an older build
    /// that was interrupted, completed now.
    Unfinished,
    /// A store of this schema version.
    Ours,
}

/// This store's tables.
const TABLES: [&str; 3] = ["schema", "revision", "records"];

/// Refuses a store's database holding anything beside its three tables (SQLite's own
/// objects left out): a trigger or a view planted there could change what a commit writes or
/// what an open reads (a trigger that deletes each new row leaves every open a consistent,
/// smaller store), and jobstate creates nothing else.
fn check_objects(objects: &[(String, String)]) -> Result<(), String> {
    match objects.iter().find(|(kind, name)| {
        let ours = kind == "table" && TABLES.contains(&name.as_str());
        !(ours || sqlite_own(kind, name))
    }) {
        Some((kind, name)) => Err(format!(
            "the database holds {kind} {name:?}, which jobstate never creates (a trigger or a view can change what is written and read): an edited database; remove it with the sqlite3 tool once you know who put it there, or restore the store from a backup"
        )),
        None => Ok(()),
    }
}

/// Every row of `query`, a query of two columns.
fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
    db: &Connection,
    query: &str,
) -> rusqlite::Result<Vec<(A, B)>> {
    db.prepare(query)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Whether `kind` `name` is an object SQLite itself creates: its statistics and sequence
/// tables, and the indexes behind constraints. Anything else named `sqlite_…` (a trigger
/// created with `writable_schema`) is not.
fn sqlite_own(kind: &str, name: &str) -> bool {
    match kind {
        "table" => matches!(
            name,
            "sqlite_sequence" | "sqlite_stat1" | "sqlite_stat2" | "sqlite_stat3" | "sqlite_stat4"
        ),
        "index" => name.starts_with("sqlite_autoindex_"),
        _ => false,
    }
}

/// Whether `e` says the database's bytes are damaged or a column holds what jobstate never
/// writes there: damage to report as [`StoreError::Corrupt`], not a failure of the disk.
fn damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    ) || e.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt)
}

/// Looks at what the database holds, reading only: what is not an empty database or a store of
/// this version is refused before anything (a table, the switch to WAL) is written to it.
fn classify(db: &Connection, path: &Path) -> Result<Found, StoreError> {
    let foreign = |detail: String| {
        StoreError::Unsafe(UnsafePath::ForeignFile {
            path: path.to_path_buf(),
            detail,
        })
    };
    // A damaged database is not another program's: advice to start a new store there would
    // forget every finished job.
    let damage = |e: rusqlite::Error| StoreError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        detail: format!(
            "SQLite cannot read what the database holds ({e}): damaged pages; try the sqlite3 tool's .recover into a new file, or restore the store from a backup"
        ),
    };
    let read = |e: rusqlite::Error| {
        if busy(&e) {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        } else if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            foreign(
                "it is not an SQLite database; give the path of a jobstate database, or of one that does not exist yet".into(),
            )
        } else if damaged(&e) {
            damage(e)
        } else {
            sql("reading what the database holds")(e)
        }
    };
    let objects: Vec<(String, String)> =
        pairs(db, "SELECT type, name FROM sqlite_master ORDER BY name").map_err(read)?;
    // SQLite's own objects (sqlite_sequence, sqlite_stat1, automatic indexes) say nothing.
    let objects: Vec<(String, String)> = objects
        .into_iter()
        .filter(|(kind, name)| !sqlite_own(kind, name))
        .collect();
    if objects.is_empty() {
        return Ok(Found::Empty);
    }
    let has_table = |name: &str| objects.iter().any(|(t, n)| t == "table" && n == name);
    if !has_table("schema") {
        let mut list: Vec<String> = objects
            .iter()
            .take(8)
            .map(|(kind, name)| format!("{kind} {name:?}"))
            .collect();
        if objects.len() > 8 {
            list.push(format!("{} more", objects.len() - 8));
        }
        return Err(foreign(format!(
            "an SQLite database holding {} and no table \"schema\": another program's database, left unchanged; give the path of a jobstate database, or of one that does not exist yet",
            list.join(", ")
        )));
    }
    let versions: Vec<rusqlite::types::Value> = {
        let not_ours = |e: rusqlite::Error| {
            if busy(&e) || damaged(&e) {
                read(e)
            } else {
                foreign(format!(
                    "its table \"schema\" is not jobstate's ({e}), left unchanged; give the path of a jobstate database, or of one that does not exist yet"
                ))
            }
        };
        let mut statement = db.prepare("SELECT version FROM schema").map_err(not_ours)?;
        statement
            .query_map([], |r| r.get(0))
            .map_err(not_ours)?
            .collect::<Result<_, _>>()
            .map_err(not_ours)?
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        detail,
    };
    match versions[..] {
        [] => {
            let only_ours = objects
                .iter()
                .all(|(kind, name)| kind == "table" && TABLES.contains(&name.as_str()));
            if only_ours {
                let mut all_empty = true;
                for (_, name) in &objects {
                    let rows: bool = db
                        .query_row(
                            &format!("SELECT EXISTS (SELECT 1 FROM \"{name}\")"),
                            [],
                            |r| r.get(0),
                        )
                        .map_err(read)?;
                    all_empty &= !rows;
                }
                if all_empty {
                    return Ok(Found::Unfinished);
                }
            }
            Err(corrupt(
                "table schema holds no version, and the database holds more than an unfinished creation"
                    .into(),
            ))
        }
        [rusqlite::types::Value::Integer(SCHEMA_VERSION)] => {
            for table in TABLES {
                if !has_table(table) {
                    return Err(corrupt(format!("table {table} is missing")));
                }
            }
            check_objects(&objects).map_err(corrupt)?;
            Ok(Found::Ours)
        }
        [rusqlite::types::Value::Integer(found)] => Err(StoreError::UnknownFormat {
            file: path.to_path_buf(),
            found: if found < 0 {
                0
            } else {
                u32::try_from(found).unwrap_or(u32::MAX)
            },
            supported: SCHEMA_VERSION as u32,
        }),
        [ref other] => Err(corrupt(format!(
            "the schema version is {other:?}, not an integer"
        ))),
        ref many => Err(corrupt(format!(
            "table schema holds {} rows, not one",
            many.len()
        ))),
    }
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
        // Before the files are looked at: one store per path in this process, even when the
        // database file of the first has been deleted.
        let claim = Claim::take(dir, &path)?;
        if !check_files(&path, false)? {
            // Created owner-only (and never a link: O_EXCL) before SQLite opens it; SQLite
            // gives its -wal file the same mode.
            safe_fs::create_new(&path, std::fs::OpenOptions::new().write(true))
                .map_err(super::file::io("creating the database"))?;
        }
        let missing = || StoreError::Io {
            context: format!("opening {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the database was removed while it was being opened",
            ),
        };
        let before = safe_fs::look(&path)
            .map_err(super::file::io("looking at the database"))?
            .ok_or_else(missing)?;
        // The writer's lock, beside SQLite's own: see `writer`.
        #[cfg(unix)]
        let writer = {
            let file = safe_fs::open_untightened(&path, std::fs::OpenOptions::new().read(true))
                .map_err(super::file::io("opening the database to lock it"))?;
            let file = super::file::try_lock(file, &path)?;
            let locked = file
                .metadata()
                .map_err(super::file::io("looking at the locked database"))?;
            if !FileIdentity::of(&path, &before).same(&locked) {
                return Err(UnsafePath::Replaced { path }.into());
            }
            file
        };
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
        // Exclusive before anything is read: no memory-mapped -shm file (see the type's docs),
        // and the lock taken by the first read is held until the connection closes. (A setting
        // of the connection: nothing is written.)
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(&locked)?;
        // Another program's database left with a log: SQLite would fold the log into it and
        // delete it when this connection closes, a change to a database this open refuses.
        db.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(sql("setting no checkpoint on close"))?;
        // Read only, before anything is written: a database of a newer version or of another
        // program is refused unchanged (an empty log SQLite created for the read, with no
        // checkpoint to delete it, goes).
        let wal_path = PathBuf::from(format!("{}-wal", path.display()));
        let had_wal = safe_fs::look(&wal_path)
            .map_err(super::file::io("checking the database files"))?
            .is_some();
        let found = match classify(&db, &path) {
            Ok(found) => found,
            Err(refused) => {
                drop(db);
                if !had_wal
                    && safe_fs::look(&wal_path)
                        .ok()
                        .flatten()
                        .is_some_and(|m| m.len() == 0)
                {
                    let _ = std::fs::remove_file(&wal_path);
                }
                return Err(refused);
            }
        };
        db.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
            .map_err(sql("setting checkpoints on close"))?;
        check_files(&path, true)?;
        // The file SQLite opened is the one looked at (the lock is now held: no writer of this
        // kind replaces it), and the one checked before each commit is acknowledged.
        let after = safe_fs::look(&path)
            .map_err(super::file::io("looking at the database"))?
            .ok_or_else(missing)?;
        let file = FileIdentity::of(&path, &before);
        if !file.same(&after) {
            return Err(UnsafePath::Replaced { path }.into());
        }
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(&locked)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        // Takes the write lock now, so that a second writer is refused at its open.
        db.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(&locked)?;
        match found {
            Found::Ours => {}
            Found::Empty | Found::Unfinished => {
                // One transaction: a creation interrupted leaves no tables, or all of them.
                db.execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
                     CREATE TABLE IF NOT EXISTS revision (value INTEGER NOT NULL, head INTEGER NOT NULL);
                     CREATE TABLE IF NOT EXISTS records (
                         seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL, data BLOB NOT NULL,
                         crc INTEGER NOT NULL);
                     INSERT INTO schema VALUES ({SCHEMA_VERSION});
                     INSERT INTO revision VALUES (0, 0);
                     COMMIT;"
                ))
                .map_err(sql("creating the tables"))?;
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
            file,
            failed: None,
            #[cfg(unix)]
            _writer: writer,
            _claim: claim,
        };
        store.reload()?;
        // Notes the log's identity (created by the write lock's transaction above).
        store.check_file()?;
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
    /// revision) and removed. The database is read again after its log, and the copy taken
    /// only when it did not change meanwhile: a copy taken while the agent commits may show an
    /// older revision than the agent's (the revision is in the snapshot), never an old
    /// database with a new log. Errors name the database at `path`, not the copy.
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
        let (database, wal) = read_consistent(path, |suffix| {
            let from = PathBuf::from(format!("{}{suffix}", path.display()));
            // Read as they are: the read-only view tightens no mode of the agent's files.
            safe_fs::read_untightened(&from).map_err(super::file::io("reading the database"))
        })?;
        let Some(database) = database else {
            return Err(StoreError::Io {
                context: format!("reading {}", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        for (suffix, bytes) in [("", Some(database)), ("-wal", wal)] {
            let Some(bytes) = bytes else { continue };
            let to = PathBuf::from(format!("{}{suffix}", db.display()));
            let mut file = safe_fs::create_new(&to, std::fs::OpenOptions::new().write(true))
                .map_err(super::file::io("copying the database"))?;
            std::io::Write::write_all(&mut file, &bytes).map_err(|source| StoreError::Io {
                context: format!("copying {}{suffix}", path.display()),
                source,
            })?;
        }
        // What is said of the copy is said of the agent's database.
        let named = |e: StoreError| match e {
            StoreError::Corrupt { offset, detail, .. } => StoreError::Corrupt {
                file: path.to_path_buf(),
                offset,
                detail,
            },
            StoreError::UnknownFormat {
                found, supported, ..
            } => StoreError::UnknownFormat {
                file: path.to_path_buf(),
                found,
                supported,
            },
            StoreError::Unsafe(UnsafePath::ForeignFile { detail, .. }) => {
                StoreError::Unsafe(UnsafePath::ForeignFile {
                    path: path.to_path_buf(),
                    detail,
                })
            }
            other => other,
        };
        let mut store = Self::open(&db)
            .map_err(named)?
            .with_retention(crate::store::Retention::keep_all());
        let snapshot = store.load().map_err(named)?;
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

    /// Refuses (and from now on refuses every commit: fail-stop) when the file at the store's
    /// path is no longer the database this store opened: deleted, or replaced. Its commits
    /// would go to a file no later open finds, while a second writer may create a new database
    /// at the path.
    fn check_file(&mut self) -> Result<(), StoreError> {
        if let Some(what) = self.file.changed() {
            let cause = format!(
                "{what} after this store opened it: what it would commit from now on no later open would find, so nothing more is acknowledged; stop whatever deletes or replaces files there, then reopen the store (a database created at that path since holds none of this store's earlier commits)"
            );
            self.failed = Some(cause.clone());
            return Err(StoreError::FailStop { cause });
        }
        Ok(())
    }

    fn corrupt(&self, seq: i64, detail: String) -> StoreError {
        StoreError::Corrupt {
            file: self.path.clone(),
            offset: u64::try_from(seq).unwrap_or(0),
            detail,
        }
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        // What SQLite says of a damaged page, or of a column holding another type, is damage
        // at (or after) row `seq`; anything else a failure to read.
        let path = self.path.clone();
        let failed = |context: &'static str, seq: i64| {
            let path = path.clone();
            move |e: rusqlite::Error| {
                if damaged(&e) {
                    StoreError::Corrupt {
                        file: path.clone(),
                        offset: u64::try_from(seq).unwrap_or(0),
                        detail: format!(
                            "{context}: {e} (a damaged page, or a column edited to another type){}",
                            if seq > 0 {
                                format!(", at row {seq} of table records or after it")
                            } else {
                                String::new()
                            }
                        ),
                    }
                } else {
                    sql(context)(e)
                }
            }
        };
        // Planted since the open, while the lock was not held (see `check_objects`).
        let objects: Vec<(String, String)> =
            pairs(&self.db, "SELECT type, name FROM sqlite_master")
                .map_err(failed("reading the schema", 0))?;
        check_objects(&objects).map_err(|detail| self.corrupt(0, detail))?;
        let rows: Vec<(i64, i64)> = pairs(&self.db, "SELECT value, head FROM revision")
            .map_err(failed("reading the revision", 0))?;
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
            .map_err(failed("reading the records", 1))?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(failed("reading the records", 1))?;
        let corrupt = |seq: i64, detail: String| StoreError::Corrupt {
            file: self.path.clone(),
            offset: u64::try_from(seq).unwrap_or(0),
            detail,
        };
        let mut live = Replay::default();
        let (mut last_seq, mut last_rev, mut last_crc) = (0i64, 0i64, 0u32);
        for row in rows {
            let (seq, rev, data, crc) =
                row.map_err(failed("reading a record", last_seq.saturating_add(1)))?;
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
        if let Some(cause) = &self.failed {
            return Err(StoreError::FailStop {
                cause: cause.clone(),
            });
        }
        self.live.check(commit)?;
        // Nothing is written to a database file that is no longer at the store's path.
        self.check_file()?;
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
        // What the transaction wrote is what was asked (a trigger planted while the store is
        // open could have changed it; `check_objects` refuses one at the next open).
        let (count, value, written, last): (i64, Option<i64>, Option<i64>, Option<i64>) = tx
            .query_row(
                "SELECT count(*), max(value), max(head), (SELECT max(seq) FROM records) FROM revision",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(sql("reading back the commit"))?;
        let rows_back: Vec<(i64, i64, Vec<u8>, i64)> = {
            let mut statement = tx
                .prepare_cached(
                    "SELECT seq, rev, data, crc FROM records WHERE seq > ?1 ORDER BY seq",
                )
                .map_err(sql("reading back the commit"))?;
            statement
                .query_map([self.last_seq], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(sql("reading back the commit"))?
                .collect::<Result<_, _>>()
                .map_err(sql("reading back the commit"))?
        };
        let rows_written = rows.len() == rows_back.len()
            && rows.iter().zip(&rows_back).all(|((seq, data, crc), back)| {
                (*seq, rev, data, i64::from(*crc)) == (back.0, back.1, &back.2, back.3)
            });
        if (count, value, written, last) != (1, Some(rev), Some(i64::from(head)), Some(seq))
            || !rows_written
        {
            drop(tx);
            let cause = format!(
                "the commit of revision {rev} read back as {count} revision row(s) saying {value:?}, checksum {written:?}, last row {last:?}, its rows {} (expected checksum {head}, last row {seq}): something in the database (a trigger?) changes what is written; nothing more is acknowledged: reopen the store, which refuses such a database and says what it holds",
                if rows_written {
                    "as written"
                } else {
                    "changed"
                }
            );
            self.failed = Some(cause.clone());
            return Err(StoreError::FailStop { cause });
        }
        tx.commit().map_err(sql("committing"))?;
        // And nothing is acknowledged that went to a file deleted or replaced meanwhile: no
        // later open would find it.
        self.check_file()?;
        self.live.apply_checked(commit)?;
        self.live.bound_runs(commit, &self.retention);
        self.revision = commit.base.0.saturating_add(1);
        self.last_seq = seq;
        self.head = head;
        Ok(Revision(self.revision))
    }
}

/// A file's bytes, `None` when it does not exist.
type Bytes = Option<Vec<u8>>;

/// How many times [`read_consistent`] reads before it gives up.
const COPY_TRIES: u32 = 16;

/// The database and its log as `read` gives them (by suffix: `""`, `"-wal"`), read so that
/// they belong together: the database, the log, and the database again. The agent may fold
/// its log into the database and start the log anew between the reads, and an old database
/// with a new log is a mix SQLite reads as damage. A database unchanged across the log's read
/// was not folded into meanwhile.
fn read_consistent(
    path: &Path,
    mut read: impl FnMut(&str) -> Result<Bytes, StoreError>,
) -> Result<(Bytes, Bytes), StoreError> {
    for _ in 0..COPY_TRIES {
        let database = read("")?;
        let wal = read("-wal")?;
        if read("")? == database {
            return Ok((database, wal));
        }
    }
    Err(StoreError::Io {
        context: format!("copying {}", path.display()),
        source: std::io::Error::other(format!(
            "the database changed while its log was read, {COPY_TRIES} times in a row; try again when the agent is less busy"
        )),
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::core::event::{Event, EventKind};
    use crate::core::id::{BootId, JobId};
    use crate::core::spec::JobSpec;
    use crate::core::state::JobState;
    use crate::record::Change;

    fn offer(store: &mut SqliteStore, job: &str) -> Result<Revision, StoreError> {
        let base = store.load()?.revision;
        offer_at(store, base, job)
    }

    /// [`offer`] on `base`, without a load first.
    fn offer_at(
        store: &mut SqliteStore,
        base: Revision,
        job: &str,
    ) -> Result<Revision, StoreError> {
        let id = JobId::new(job).unwrap_or_else(|e| panic!("{e}"));
        let change = Change {
            spec: Some(Arc::new(JobSpec::new(id.clone()))),
            job: id,
            seq: 1,
            event: Event {
                at: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
                boot: BootId::new("b1").unwrap_or_else(|e| panic!("{e}")),
                since_boot: Duration::from_secs(5),
                kind: EventKind::Offered,
            },
            state: JobState::initial(),
        };
        store.commit(&Commit::new(base, vec![change]))
    }

    fn tables(path: &Path) -> Vec<String> {
        let db = Connection::open(path).unwrap();
        let mut statement = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn journal_mode(path: &Path) -> String {
        let db = Connection::open(path).unwrap();
        db.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    /// Review H, finding 4: a checkpoint between the reads of the database and its log (the
    /// database read changes) is read again; a database that never holds still is an error,
    /// never a mix.
    #[test]
    fn sqlite_a_copy_is_read_again_when_the_database_changed_while_its_log_was_read() {
        // The agent's files at each read: the old database, then (checkpointed, the log started
        // anew) the new database and the new log.
        let mut reads = vec![
            ("", "old db"),
            ("-wal", "new wal"),
            ("", "new db"),
            ("", "new db"),
            ("-wal", "new wal"),
            ("", "new db"),
        ]
        .into_iter();
        let copied = read_consistent(Path::new("db"), |suffix| {
            let (expected, bytes) = reads.next().expect("no more reads than needed");
            assert_eq!(suffix, expected);
            Ok(Some(bytes.as_bytes().to_vec()))
        })
        .unwrap();
        assert_eq!(
            copied,
            (Some(b"new db".to_vec()), Some(b"new wal".to_vec()))
        );
        assert_eq!(reads.next(), None);
        let mut version = 0u32;
        let never_still = read_consistent(Path::new("db"), |suffix| {
            version += u32::from(suffix.is_empty());
            Ok(Some(version.to_le_bytes().to_vec()))
        });
        assert!(matches!(never_still, Err(StoreError::Io { .. })));
        assert_eq!(version, 2 * COPY_TRIES);
    }

    /// A trigger that undoes each commit, planted through the store's own connection (what a
    /// lock lost would allow another process): the commit is read back before it is
    /// acknowledged, refused, and the store fails stop; the next open refuses the database.
    #[test]
    fn sqlite_a_trigger_planted_while_open_fails_the_commit_it_changes() {
        for trigger in [
            "DELETE FROM records WHERE seq = NEW.seq;",
            "UPDATE records SET data = X'00' WHERE seq = NEW.seq;",
        ] {
            a_trigger_planted_while_open_fails_the_commit_it_changes(trigger);
        }
    }

    fn a_trigger_planted_while_open_fails_the_commit_it_changes(body: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        offer(&mut store, "a").unwrap();
        store
            .db
            .execute_batch(&format!(
                "CREATE TRIGGER changes_rows AFTER INSERT ON records BEGIN {body} END;"
            ))
            .unwrap();
        // (A load would refuse the database already: the trigger is in its schema.)
        let refused = offer_at(&mut store, Revision(1), "b");
        assert!(
            matches!(&refused, Err(StoreError::FailStop { cause }) if cause.contains("trigger")),
            "{refused:?}"
        );
        assert!(matches!(
            offer_at(&mut store, Revision(1), "c"),
            Err(StoreError::FailStop { .. })
        ));
        drop(store);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn sqlite_commits_into_a_deleted_database_are_refused_and_the_store_fails_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        offer(&mut store, "a").unwrap();
        for suffix in ["", "-wal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let refused = offer(&mut store, "b");
        assert!(
            matches!(&refused, Err(StoreError::FailStop { cause }) if cause.contains("deleted")),
            "{refused:?}"
        );
        // Fail-stop: refused even once a file is back at the path.
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            offer(&mut store, "c"),
            Err(StoreError::FailStop { .. })
        ));
        // Still one store per path in this process.
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Locked { .. })
        ));
        drop(store);
        let mut reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap().jobs.len(), 0);
    }

    #[test]
    fn sqlite_commits_into_a_replaced_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        offer(&mut store, "a").unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let refused = offer(&mut store, "b");
        assert!(
            matches!(&refused, Err(StoreError::FailStop { cause }) if cause.contains("replaced")),
            "{refused:?}"
        );
    }

    #[test]
    fn sqlite_open_refuses_another_programs_database_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE hosts (name TEXT); INSERT INTO hosts VALUES ('a');")
                .unwrap();
        }
        let result = SqliteStore::open(&path);
        assert!(
            matches!(
                &result,
                Err(StoreError::Unsafe(UnsafePath::ForeignFile { detail, .. })) if detail.contains("hosts")
            ),
            "{result:?}"
        );
        drop(result);
        assert_eq!(tables(&path), ["hosts"]);
        assert_eq!(journal_mode(&path), "delete");
    }

    #[test]
    fn sqlite_open_refuses_a_newer_schema_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.sqlite");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE schema (version INTEGER NOT NULL); INSERT INTO schema VALUES (3);",
            )
            .unwrap();
        }
        let result = SqliteStore::open(&path);
        assert!(
            matches!(
                result,
                Err(StoreError::UnknownFormat {
                    found: 3,
                    supported: 2,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(tables(&path), ["schema"]);
        assert_eq!(journal_mode(&path), "delete");
    }

    #[test]
    fn sqlite_open_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        let text = b"not a database, but long enough to have a header of one. ".repeat(4);
        std::fs::write(&path, &text).unwrap();
        let result = SqliteStore::open(&path);
        assert!(
            matches!(
                &result,
                Err(StoreError::Unsafe(UnsafePath::ForeignFile { .. }))
            ),
            "{result:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), text);
    }

    #[test]
    fn sqlite_open_completes_an_unfinished_creation_and_opens_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        {
            // What an older build's open left when interrupted after its first table.
            let db = Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE schema (version INTEGER NOT NULL);")
                .unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        offer(&mut store, "a").unwrap();
        drop(store);
        assert_eq!(tables(&path), ["records", "revision", "schema"]);
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap().jobs.len(), 1);
    }
}

//! The seam between the file store and the file system: the few operations the store performs,
//! so that tests can run the store over a simulated disk that loses unsynced writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::safe_fs::{self, UnsafePath};

/// A file opened for appending.
pub(crate) trait AppendFile: Send {
    /// Appends `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and makes that durable: after a failed write or sync,
    /// so that what never became durable cannot be read back from the page cache.
    fn cut_back(&mut self, len: u64) -> io::Result<()>;
    /// Whether this file is still the one at `path`: not deleted, not replaced, its directory
    /// not moved aside. A commit appended to a file that is no longer there is durable
    /// nowhere anyone will read, and must not be acknowledged. (The simulated disk has no
    /// other process to change its files: there, always.)
    fn is_at(&self, _path: &Path) -> io::Result<bool> {
        Ok(true)
    }
}

/// The file-system operations of the store.
pub(crate) trait Disk: Send {
    /// The type of files opened for appending.
    type File: AppendFile;
    /// Creates `dir` (owner-only) if it does not exist; refuses one that is not safe to keep
    /// the store in.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The whole content of `path`, or `None` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// `path` opened to be read in pieces, with its length then (nothing past it is read), or
    /// `None` if it does not exist. (By default, its whole content, read at once.)
    fn open_read(&self, path: &Path) -> io::Result<Option<(Box<dyn io::Read + Send>, u64)>> {
        Ok(self.read(path)?.map(|bytes| {
            let len = bytes.len() as u64;
            (
                Box::new(io::Cursor::new(bytes)) as Box<dyn io::Read + Send>,
                len,
            )
        }))
    }
    /// Cuts `path` to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Opens `path`, which exists, for appending.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates `path`, which must not exist, (owner-only) with `parts` one after the other, and
    /// makes it durable. (In parts: a snapshot's frames are written as they were encoded, not
    /// first copied together.)
    fn write_synced(&self, path: &Path, parts: &[&[u8]]) -> io::Result<()>;
    /// Removes `path` if it exists (a leftover temporary file); whether it existed.
    fn remove(&self, path: &Path) -> io::Result<bool>;
    /// Renames `from` to `to`, replacing `to` (durable only after [`Disk::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether this disk only reads (the inspection): then an open makes nothing durable.
    fn read_only(&self) -> bool {
        false
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealDisk;

/// A real file opened for appending.
#[derive(Debug)]
pub(crate) struct RealFile {
    file: File,
    path: PathBuf,
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    safe_fs::context(e, what, path)
}

impl AppendFile for RealFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| with_path(e, "appending to", &self.path))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file
            .sync_data()
            .map_err(|e| with_path(e, "syncing", &self.path))
    }

    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| with_path(e, "cutting back", &self.path))
    }

    #[cfg(unix)]
    fn is_at(&self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let held = self
            .file
            .metadata()
            .map_err(|e| with_path(e, "looking at", &self.path))?;
        let named = match std::fs::symlink_metadata(path) {
            Ok(named) => named,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(with_path(e, "looking at", path)),
        };
        Ok(held.nlink() > 0 && (held.dev(), held.ino()) == (named.dev(), named.ino()))
    }
}

/// Refuses a directory that holds files of others and no store (neither a journal nor a
/// snapshot): a store would tighten it to 0700 and write among them.
fn check_holds_a_store_or_nothing(dir: &Path) -> io::Result<()> {
    let own = |name: &std::ffi::OsStr| {
        name == super::JOURNAL
            || name == super::SNAPSHOT
            || name == "lock"
            || super::LEFTOVERS.iter().any(|l| name == *l)
    };
    let mut other = None;
    for entry in std::fs::read_dir(dir).map_err(|e| with_path(e, "listing", dir))? {
        let name = entry.map_err(|e| with_path(e, "listing", dir))?.file_name();
        if name == super::JOURNAL || name == super::SNAPSHOT {
            return Ok(());
        }
        if other.is_none() && !own(&name) {
            other = Some(name);
        }
    }
    match other {
        None => Ok(()),
        Some(name) => Err(UnsafePath::NotAStore {
            path: dir.to_path_buf(),
            example: name.to_string_lossy().into_owned(),
        }
        .into_io()),
    }
}

impl Disk for RealDisk {
    type File = RealFile;

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.as_os_str().is_empty() {
            return Err(UnsafePath::Empty.into_io());
        }
        match std::fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => {
                // Checked before anything is tightened: a directory of other files is not
                // the store's to make owner-only.
                check_holds_a_store_or_nothing(dir)?;
                return safe_fs::check_dir(dir, true);
            }
            Ok(_) => return safe_fs::check_dir(dir, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path(e, "looking at", dir)),
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| with_path(e, "creating directory", dir))?;
        // The new directory's entry in its parent must be durable too, or a power cut could
        // take the whole store with it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.sync_dir(parent)?;
        }
        safe_fs::check_dir(dir, true)
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        safe_fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<(Box<dyn io::Read + Send>, u64)>> {
        Ok(safe_fs::open_read(path)?
            .map(|(file, len)| (Box::new(file.take(len)) as Box<dyn io::Read + Send>, len)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = safe_fs::open(path, OpenOptions::new().write(true))?;
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| with_path(e, "truncating", path))
    }

    fn open_append(&self, path: &Path) -> io::Result<RealFile> {
        let file = safe_fs::open(path, OpenOptions::new().append(true))?;
        Ok(RealFile {
            file,
            path: path.to_path_buf(),
        })
    }

    fn write_synced(&self, path: &Path, parts: &[&[u8]]) -> io::Result<()> {
        let mut file = safe_fs::create_new(path, OpenOptions::new().write(true))?;
        parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .and_then(|()| file.sync_all())
            .map_err(|e| with_path(e, "writing", path))
    }

    fn remove(&self, path: &Path) -> io::Result<bool> {
        safe_fs::remove_if_present(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to).map_err(|e| with_path(e, "renaming", from))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path(e, "syncing directory", dir))
    }
}

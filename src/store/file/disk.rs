//! The seam between the file store and the file system: the few operations the store performs,
//! so that tests can run the store over a simulated disk that loses unsynced writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A file opened for appending.
pub(crate) trait AppendFile: Send {
    /// Appends `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The file-system operations of the store.
pub(crate) trait Disk: Send {
    /// The type of files opened for appending.
    type File: AppendFile;
    /// Creates `dir` (owner-only) if it does not exist.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// The whole content of `path`, or `None` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Cuts `path` to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Opens `path`, which exists, for appending.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates or replaces `path` (owner-only) with `bytes`, and makes it durable.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable only after [`Disk::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
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
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
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
}

fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

impl Disk for RealDisk {
    type File = RealFile;

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
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
        match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => self.sync_dir(parent),
            None => Ok(()),
        }
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(with_path(e, "opening", path)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| with_path(e, "reading", path))?;
        Ok(Some(bytes))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| with_path(e, "opening", path))?;
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| with_path(e, "truncating", path))
    }

    fn open_append(&self, path: &Path) -> io::Result<RealFile> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| with_path(e, "opening", path))?;
        Ok(RealFile {
            file,
            path: path.to_path_buf(),
        })
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = owner_only(OpenOptions::new().write(true).create(true).truncate(true))
            .open(path)
            .map_err(|e| with_path(e, "creating", path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| with_path(e, "writing", path))
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

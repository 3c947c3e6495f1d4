//! A read-only view of a file store that an agent may hold open: no lock taken, nothing
//! created, cut, removed or tightened. What the inspection tool uses.

use std::io;
use std::path::Path;

use super::disk::{AppendFile, Disk, RealDisk};

/// The real file system, read only: every write is refused, a cut recovery would make is left
/// undone (and still reported), no leftover is removed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOnlyDisk;

/// What a read-only journal appends to: nothing.
#[derive(Debug)]
pub(crate) struct NoFile;

fn refused(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {}: the store is open read-only", what, path.display()),
    )
}

impl AppendFile for NoFile {
    fn append(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Err(refused("appending to", Path::new("the journal")))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Err(refused("syncing", Path::new("the journal")))
    }
    fn cut_back(&mut self, _len: u64) -> io::Result<()> {
        Err(refused("cutting back", Path::new("the journal")))
    }
}

impl Disk for ReadOnlyDisk {
    type File = NoFile;

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        // The directory must be there, and as safe as a writer wants it; it is not tightened.
        crate::safe_fs::check_dir(dir, false)
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        RealDisk.read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<(Box<dyn io::Read + Send>, u64)>> {
        RealDisk.open_read(path)
    }

    fn truncate(&self, _path: &Path, _len: u64) -> io::Result<()> {
        // A torn tail is reported by the caller's open report, and left for the writer: it may
        // be a commit being written right now.
        Ok(())
    }

    fn open_append(&self, _path: &Path) -> io::Result<NoFile> {
        Ok(NoFile)
    }

    fn write_synced(&self, path: &Path, _parts: &[&[u8]]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no store there (no journal); the read-only view creates nothing",
                path.display()
            ),
        ))
    }

    fn remove(&self, _path: &Path) -> io::Result<bool> {
        Ok(false)
    }

    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused("renaming", from))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Err(refused("syncing", dir))
    }
}

//! A read-only view of a file store that an agent may hold open: no lock taken, nothing
//! created, cut, removed, renamed or tightened. What the inspection tool uses.
//!
//! Every state a writer's open accepts is read, and answered as the writer would load it: what
//! the writer's open would repair (a torn last commit, leftovers of an interrupted compaction,
//! the old journal a compaction interrupted between its renames left) is left as it is, and
//! what the writer reports is reported.

use std::io;
use std::path::Path;

use super::disk::{AppendFile, Disk};
use super::{JOURNAL, SNAPSHOT};
use crate::safe_fs::{self, UnsafePath};

/// The real file system, read only: every write is refused, a cut recovery would make is left
/// undone (and still reported), no leftover is removed (but each is reported, as a writer's
/// open would remove it), no file's mode is changed.
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

/// How many times a read is tried when the file was replaced between its look and its open
/// (a compaction renaming a new file into place right then).
const TRIES: usize = 5;

/// `read` tried again while the file it opened was replaced under it by a rename.
fn again_if_replaced<T>(read: impl Fn() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 1;
    loop {
        match read() {
            Err(e)
                if tries < TRIES
                    && matches!(safe_fs::unsafe_path(&e), Some(UnsafePath::Replaced { .. })) =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Whether `path` is `dir/name.tmp`, the temporary file `replace` writes `dir/name` through;
/// the directory then.
fn temporary_of<'a>(path: &'a Path, name: &str) -> Option<&'a Path> {
    let file_name = path.file_name()?.to_str()?;
    (file_name.strip_suffix(".tmp")? == name).then_some(path.parent()?)
}

impl Disk for ReadOnlyDisk {
    type File = NoFile;

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        // The directory must be there, and as safe as a writer wants it; it is not tightened.
        safe_fs::check_dir(dir, false)
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        // Its mode left as it is: a writer tightens it, a look at it does not.
        again_if_replaced(|| safe_fs::read_untightened(path))
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<(Box<dyn io::Read + Send>, u64)>> {
        let opened = again_if_replaced(|| safe_fs::open_read_untightened(path))?;
        Ok(opened.map(|(file, len)| {
            (
                Box::new(io::Read::take(file, len)) as Box<dyn io::Read + Send>,
                len,
            )
        }))
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
        // The one file a writer's open writes in a store that is there: the empty journal that
        // replaces the old one a compaction interrupted between its renames left (the snapshot
        // renamed into place, the journal not). The old journal then ends where the snapshot
        // does, and what the store holds is the snapshot: the writer's repair is left to the
        // writer, and the view answers as if it had been made. (A writer's open reports no
        // such repair either.)
        if let Some(dir) = temporary_of(path, JOURNAL)
            && safe_fs::look(&dir.join(JOURNAL))?.is_some()
            && safe_fs::look(&dir.join(SNAPSHOT))?.is_some()
        {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no store there (no journal); the read-only view creates nothing",
                path.display()
            ),
        ))
    }

    fn remove(&self, path: &Path) -> io::Result<bool> {
        // Whether a writer's open would remove it (`safe_fs::remove_if_present`: the name, be it
        // a link or a file of any owner; a directory refused), so that the report names it. It
        // stays: it may be the temporary file of a compaction running right now.
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_dir() => Err(UnsafePath::NotRegular {
                path: path.to_path_buf(),
                kind: "directory",
            }
            .into_io()),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(safe_fs::context(e, "looking at", path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        // Only the rename of the empty journal `write_synced` answered as written (and did not
        // write): nothing to do.
        match temporary_of(from, JOURNAL) {
            Some(dir) if to == dir.join(JOURNAL) => Ok(()),
            _ => Err(refused("renaming", from)),
        }
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Nothing was changed in it (a rename answered as made was not made): nothing to sync.
        Ok(())
    }

    fn read_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in files {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        dir
    }

    #[test]
    fn read_only_remove_answers_whether_a_leftover_is_there_and_leaves_it() {
        let dir = dir_with(&["snapshot.tmp"]);
        let leftover = dir.path().join("snapshot.tmp");
        assert!(ReadOnlyDisk.remove(&leftover).unwrap());
        assert!(leftover.exists(), "the read-only view removed a leftover");
        assert!(
            !ReadOnlyDisk
                .remove(&dir.path().join("journal.tmp"))
                .unwrap()
        );
        std::fs::create_dir(dir.path().join("journal.tmp")).unwrap();
        // A writer's open refuses a directory there: so does the view.
        assert!(
            ReadOnlyDisk
                .remove(&dir.path().join("journal.tmp"))
                .is_err()
        );
    }

    #[test]
    fn read_only_answers_the_journal_repair_as_made_and_creates_nothing() {
        let empty = dir_with(&[]);
        let tmp = empty.path().join("journal.tmp");
        let error = ReadOnlyDisk.write_synced(&tmp, &[b"x"]).unwrap_err();
        assert!(error.to_string().contains("no store there"), "{error}");
        // Only the journal: not the state between a compaction's renames.
        let journal_only = dir_with(&["journal"]);
        let tmp = journal_only.path().join("journal.tmp");
        assert!(ReadOnlyDisk.write_synced(&tmp, &[b"x"]).is_err());

        let store = dir_with(&["journal", "snapshot"]);
        let tmp = store.path().join("journal.tmp");
        ReadOnlyDisk.write_synced(&tmp, &[b"x"]).unwrap();
        assert!(!tmp.exists(), "the read-only view created {tmp:?}");
        ReadOnlyDisk
            .rename(&tmp, &store.path().join("journal"))
            .unwrap();
        ReadOnlyDisk.sync_dir(store.path()).unwrap();
        assert_eq!(std::fs::read(store.path().join("journal")).unwrap(), b"x");
        // Nothing else is written or renamed.
        let snapshot_tmp = store.path().join("snapshot.tmp");
        assert!(ReadOnlyDisk.write_synced(&snapshot_tmp, &[b"x"]).is_err());
        assert!(
            ReadOnlyDisk
                .rename(&snapshot_tmp, &store.path().join("snapshot"))
                .is_err()
        );
        assert!(
            ReadOnlyDisk
                .rename(&tmp, &store.path().join("snapshot"))
                .is_err()
        );
        assert!(!snapshot_tmp.exists());
    }

    #[cfg(unix)]
    #[test]
    fn read_only_reads_change_no_mode() {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let store = dir_with(&["journal", "snapshot"]);
        for name in ["journal", "snapshot"] {
            let path = store.path().join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        assert_eq!(
            ReadOnlyDisk.read(&store.path().join("snapshot")).unwrap(),
            Some(b"x".to_vec())
        );
        let (mut journal, len) = ReadOnlyDisk
            .open_read(&store.path().join("journal"))
            .unwrap()
            .unwrap();
        let mut bytes = Vec::new();
        journal.read_to_end(&mut bytes).unwrap();
        assert_eq!((bytes.as_slice(), len), (&b"x"[..], 1));
        for name in ["journal", "snapshot"] {
            let mode = std::fs::metadata(store.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640, "the read-only view tightened {name}");
        }
    }
}

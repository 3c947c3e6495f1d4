//! Opening the stores' and the sink's files without following traps.
//!
//! A state directory that another user can write, a symbolic link planted where the journal
//! should be, a FIFO that blocks the agent for ever, a device read without end, a hard link to a
//! file elsewhere: each would let someone else choose what a (often root) agent reads or writes.
//! So, on Unix:
//!
//! - every file is looked at with `lstat` before it is opened and refused unless it is a regular
//!   file with one name, owned by this process's user or by root;
//! - it is then opened with `O_NOFOLLOW` (a link swapped in meanwhile fails the open) and
//!   `O_NONBLOCK` (a FIFO swapped in cannot block the open), and what was opened is compared,
//!   by device and inode, with what was looked at;
//! - reads stop at the size seen when the file was opened;
//! - existing files are tightened to 0600 and the directory to 0700;
//! - the directory itself is refused when another user owns it or its group or others may
//!   write it (they could plant any of the above).
//!
//! On other platforms the checks that need Unix metadata are skipped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why jobstate refused a path: a trap planted in its way, or a configuration mistake. Nothing
/// was read from or written to the path.
///
/// [`StoreError::Unsafe`](crate::store::StoreError::Unsafe) carries it for the stores; the
/// `JsonLinesSink` (feature `json-lines`) returns it inside its `std::io::Error` (find it with
/// `error.get_ref().and_then(|e| e.downcast_ref::<UnsafePath>())`).
///
/// ```
/// use jobstate::FileStore;
/// use jobstate::store::{StoreError, UnsafePath};
/// match FileStore::open("") {
///     Err(StoreError::Unsafe(UnsafePath::Empty)) => {}
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafePath {
    /// The path given was empty (it would have meant the current directory).
    #[error(
        "the path is empty: give the directory (or file) to keep the state in, for example /var/lib/<agent>/jobstate"
    )]
    Empty,
    /// A symbolic link where a file of jobstate's was expected.
    #[error(
        "{} is a symbolic link: jobstate never follows links to its own files (one planted there could point its writes at any file); remove the link, or point jobstate at the real file",
        path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a regular file (a FIFO, a device, a socket, a directory) where a
    /// file of jobstate's was expected.
    #[error(
        "{} is a {kind}, not a regular file: jobstate reads and writes only regular files (a FIFO would block it, a device be read without end); remove it, or point jobstate elsewhere",
        path.display()
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The store's directory is something else, a regular file for instance.
    #[error(
        "{} is a {kind}, not a directory: a file store is a directory that holds its journal and snapshot; give the path of a directory (it is created if missing), or move the {kind} aside",
        path.display()
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A file with more than one name: writing it would change a file elsewhere.
    #[error(
        "{} has {links} names (hard links): a file of jobstate's has one, or writing it would change the file behind another name; remove the other names, or move the file aside",
        path.display()
    )]
    HardLinked {
        /// The path.
        path: PathBuf,
        /// How many names it has.
        links: u64,
    },
    /// The file or directory belongs to another user, who could replace or plant files in it.
    #[error(
        "{} is owned by uid {owner}, not by this process's user (uid {user}) or root: that user could plant links or files for jobstate to follow; `chown {user}` it, or choose a path of your own",
        path.display()
    )]
    ForeignOwner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        user: u32,
    },
    /// The directory may be written by its group or by everyone: they could plant links in it.
    #[error(
        "{} is writable by its group or by others (mode {mode:03o}): they could plant links or files for jobstate to follow; run `chmod 700` on it (jobstate keeps its directories 0700), or choose a private directory",
        path.display()
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file changed identity between being looked at and being opened.
    #[error(
        "{} was replaced while jobstate opened it: another process is changing jobstate's directory; stop it, then try again",
        path.display()
    )]
    Replaced {
        /// The path.
        path: PathBuf,
    },
    /// A file the store had open is no longer the one at its path: deleted, replaced, or its
    /// directory moved aside (and perhaps another writer let in at the path).
    #[error(
        "{} is no longer the file this store has open (deleted, replaced, or its directory moved aside): another process changed jobstate's directory, and another writer may be using the path; the store refuses every commit until it is reopened: find what changed it first",
        path.display()
    )]
    NoLongerAtPath {
        /// The path.
        path: PathBuf,
    },
    /// A directory that holds other files and no store, given as a store's directory: the
    /// store would tighten it to 0700 (locking others out of those files) and write among them.
    #[error(
        "{} holds other files (such as {example}) and no store: a file store keeps a directory of its own, which it makes owner-only; give it an empty or new directory, for example a subdirectory",
        path.display()
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// One of the other files in it.
        example: String,
    },
    /// An existing file that is not in the format jobstate would write there.
    #[error(
        "{} is not a jobstate file of this kind ({detail}): jobstate never cuts or appends to a file that is not its own; check the configured path",
        path.display()
    )]
    ForeignFile {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

impl UnsafePath {
    /// As an `io::Error` (the disk seam and the sink speak `io::Error`); [`unsafe_path`] takes
    /// it out again.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            UnsafePath::Empty | UnsafePath::NotADirectory { .. } => io::ErrorKind::InvalidInput,
            UnsafePath::ForeignOwner { .. } | UnsafePath::Writable { .. } => {
                io::ErrorKind::PermissionDenied
            }
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// The [`UnsafePath`] inside `error`, if it carries one.
pub(crate) fn unsafe_path(error: &io::Error) -> Option<&UnsafePath> {
    error.get_ref().and_then(|e| e.downcast_ref::<UnsafePath>())
}

/// `error` as an [`UnsafePath`] if it carries one, else unchanged.
pub(crate) fn take_unsafe(error: io::Error) -> Result<UnsafePath, io::Error> {
    if unsafe_path(&error).is_none() {
        return Err(error);
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<UnsafePath>())
    {
        Some(Ok(refusal)) => Ok(*refusal),
        Some(Err(other)) => Err(io::Error::other(other)),
        None => Err(io::Error::other("an error without its cause")),
    }
}

/// Adds what was being done to `error`, keeping an [`UnsafePath`] as it is.
pub(crate) fn context(error: io::Error, what: &str, path: &Path) -> io::Error {
    if unsafe_path(&error).is_some() {
        return error;
    }
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

/// `open(2)` flags that `std` does not name: `O_NOFOLLOW` (refuse a symbolic link as the last
/// component) and `O_NONBLOCK` (an open of a FIFO returns at once instead of waiting for a
/// writer; it changes nothing for regular files). The values are the kernel's, per target: the
/// crate forbids `unsafe` and has no `libc` dependency. Where a target is not listed the flags
/// are 0, and the `lstat` before and the device and inode comparison after the open still
/// refuse links and swapped files.
#[cfg(unix)]
mod flags {
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "riscv64",
            target_arch = "loongarch64",
            target_arch = "s390x"
        )
    ))]
    pub(super) const NOFOLLOW: i32 = 0o400_000;
    // The ARM and PowerPC kernels number the flags differently.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        any(
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "powerpc",
            target_arch = "powerpc64"
        )
    ))]
    pub(super) const NOFOLLOW: i32 = 0o100_000;
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "riscv64",
            target_arch = "loongarch64",
            target_arch = "s390x",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "powerpc",
            target_arch = "powerpc64"
        )
    ))]
    pub(super) const NONBLOCK: i32 = 0o4_000;
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    pub(super) const NOFOLLOW: i32 = 0x100;
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    pub(super) const NONBLOCK: i32 = 0x4;
    #[cfg(not(any(
        all(
            any(target_os = "linux", target_os = "android"),
            any(
                target_arch = "x86",
                target_arch = "x86_64",
                target_arch = "riscv64",
                target_arch = "loongarch64",
                target_arch = "s390x",
                target_arch = "arm",
                target_arch = "aarch64",
                target_arch = "powerpc",
                target_arch = "powerpc64"
            )
        ),
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    pub(super) const NOFOLLOW: i32 = 0;
    #[cfg(not(any(
        all(
            any(target_os = "linux", target_os = "android"),
            any(
                target_arch = "x86",
                target_arch = "x86_64",
                target_arch = "riscv64",
                target_arch = "loongarch64",
                target_arch = "s390x",
                target_arch = "arm",
                target_arch = "aarch64",
                target_arch = "powerpc",
                target_arch = "powerpc64"
            )
        ),
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    pub(super) const NONBLOCK: i32 = 0;
}

/// What a file type is, in words.
#[cfg(unix)]
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_fifo() {
        "named pipe (FIFO)"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "file of an unknown type"
    }
}

#[cfg(not(unix))]
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else {
        "file of another type"
    }
}

/// This process's effective user id (the owner of the files it creates).
#[cfg(unix)]
pub(crate) fn effective_uid(dir: &Path) -> io::Result<u32> {
    static UID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    match UID.get_or_init(uid_from_proc) {
        Some(uid) => Ok(*uid),
        None => uid_from_probe(dir),
    }
}

/// The effective uid from `/proc/self/status` (Linux), if it can be read.
#[cfg(unix)]
fn uid_from_proc() -> Option<u32> {
    let mut status = String::new();
    File::open("/proc/self/status")
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut status)
        .ok()?;
    // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The owner of a file this process creates in `dir` (and removes at once): where `/proc` is
/// missing (other Unixes), the one portable way without `libc`.
#[cfg(unix)]
pub(crate) fn uid_from_probe(dir: &Path) -> io::Result<u32> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = dir.join(format!(
        ".jobstate-uid-probe-{}-{nanos}",
        std::process::id()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| context(e, "creating a probe file", &probe))?;
    let uid = file.metadata().map(|m| m.uid());
    drop(file);
    let _ = std::fs::remove_file(&probe);
    uid
}

/// Checks that `path`, as found by `lstat`, may be opened as one of jobstate's files.
#[cfg(unix)]
fn check_file(path: &Path, metadata: &std::fs::Metadata, user: u32) -> Result<(), UnsafePath> {
    use std::os::unix::fs::MetadataExt;
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        return Err(UnsafePath::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !file_type.is_file() {
        return Err(UnsafePath::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(file_type),
        });
    }
    if metadata.nlink() > 1 {
        return Err(UnsafePath::HardLinked {
            path: path.to_path_buf(),
            links: metadata.nlink(),
        });
    }
    if metadata.uid() != user && metadata.uid() != 0 {
        return Err(UnsafePath::ForeignOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            user,
        });
    }
    Ok(())
}

/// Looks at `path` without following a link: `None` if nothing is there, an error if what is
/// there is not a regular file of ours.
pub(crate) fn look(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context(e, "looking at", path)),
    };
    #[cfg(unix)]
    {
        let dir = path.parent().unwrap_or(Path::new("."));
        check_file(path, &metadata, effective_uid(dir)?).map_err(UnsafePath::into_io)?;
    }
    #[cfg(not(unix))]
    if !metadata.file_type().is_file() {
        return Err(UnsafePath::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        }
        .into_io());
    }
    Ok(Some(metadata))
}

/// Opens `path` with `options` (which may create it), refusing anything but a regular file of
/// ours, and tightens an existing file to 0600.
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    open_checked(path, options, true)
}

/// [`open`], leaving the file's mode as it is (a file not yet known to be the store's).
#[cfg(all(unix, feature = "sqlite"))] // the SQLite store's flock, its one user
pub(crate) fn open_untightened(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    open_checked(path, options, false)
}

/// [`open`], tightening the file to 0600 when `tighten` (a read-only view leaves its mode as
/// it found it).
fn open_checked(path: &Path, options: &mut OpenOptions, tighten: bool) -> io::Result<File> {
    let before = look(path)?;
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, flags::NOFOLLOW | flags::NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) => {
            // A link or another kind of file swapped in since `look`: say which.
            look(path)?;
            return Err(context(e, "opening", path));
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let after = file
            .metadata()
            .map_err(|e| context(e, "looking at", path))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        check_file(path, &after, effective_uid(dir)?).map_err(UnsafePath::into_io)?;
        if let Some(before) = before
            && (before.dev(), before.ino()) != (after.dev(), after.ino())
        {
            return Err(UnsafePath::Replaced {
                path: path.to_path_buf(),
            }
            .into_io());
        }
        if tighten && after.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| context(e, "making owner-only", path))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (before, tighten);
    Ok(file)
}

/// Creates `path`, which must not exist (`O_EXCL`: never a link, never a file planted there),
/// owner-only.
pub(crate) fn create_new(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options.create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                e.kind(),
                format!(
                    "creating {}: something is already there (a leftover, or something planted): {e}",
                    path.display()
                ),
            )
        } else {
            context(e, "creating", path)
        }
    })
}

/// The whole content of the regular file `path`, or `None` if it does not exist. Reads stop at
/// the size the file had when opened.
pub(crate) fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    read_checked(path, true)
}

/// [`read`], leaving the file's mode as it is: for a read-only view, which changes nothing.
pub(crate) fn read_untightened(path: &Path) -> io::Result<Option<Vec<u8>>> {
    read_checked(path, false)
}

fn read_checked(path: &Path, tighten: bool) -> io::Result<Option<Vec<u8>>> {
    let Some((file, len)) = open_read_checked(path, tighten)? else {
        return Ok(None);
    };
    // The length is the file system's word, which a damaged or sparse file makes anything: a
    // length that cannot be had in memory is a typed error, not an abort.
    let mut bytes = Vec::new();
    if bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "{} is {len} bytes, more than this process can hold in memory: a damaged or sparse file? move it aside, or restore it from a backup",
                path.display()
            ),
        ));
    }
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| context(e, "reading", path))?;
    Ok(Some(bytes))
}

/// `path` opened for reading as [`read`] opens it, with its length then (what a reader must
/// not read past), or `None` if it does not exist.
pub(crate) fn open_read(path: &Path) -> io::Result<Option<(File, u64)>> {
    open_read_checked(path, true)
}

/// [`open_read`], leaving the file's mode as it is: for a read-only view, which changes nothing.
pub(crate) fn open_read_untightened(path: &Path) -> io::Result<Option<(File, u64)>> {
    open_read_checked(path, false)
}

fn open_read_checked(path: &Path, tighten: bool) -> io::Result<Option<(File, u64)>> {
    if look(path)?.is_none() {
        return Ok(None);
    }
    let file = open_checked(path, OpenOptions::new().read(true), tighten)?;
    let len = file
        .metadata()
        .map_err(|e| context(e, "looking at", path))?
        .len();
    Ok(Some((file, len)))
}

/// Checks the directory `dir` (following a link to it: the directory's own path is the
/// caller's to trust), refusing one that another user owns or may write, and tightening it
/// to 0700 when `tighten`.
pub(crate) fn check_dir(dir: &Path, tighten: bool) -> io::Result<()> {
    let metadata = std::fs::metadata(dir).map_err(|e| context(e, "looking at", dir))?;
    if !metadata.is_dir() {
        return Err(UnsafePath::NotADirectory {
            path: dir.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        }
        .into_io());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let user = effective_uid(dir)?;
        if metadata.uid() != user && metadata.uid() != 0 {
            return Err(UnsafePath::ForeignOwner {
                path: dir.to_path_buf(),
                owner: metadata.uid(),
                user,
            }
            .into_io());
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(UnsafePath::Writable {
                path: dir.to_path_buf(),
                mode,
            }
            .into_io());
        }
        if tighten && mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| context(e, "making owner-only", dir))?;
        }
    }
    #[cfg(not(unix))]
    let _ = tighten;
    Ok(())
}

/// Removes `path` if it is there (the name only: a link is removed, not followed). Whether it
/// was there.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => Err(UnsafePath::NotRegular {
            path: path.to_path_buf(),
            kind: "directory",
        }
        .into_io()),
        Ok(_) => std::fs::remove_file(path)
            .map(|()| true)
            .map_err(|e| context(e, "removing", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(context(e, "looking at", path)),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("jobstate-safe-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn the_open_flags_refuse_a_link_and_a_fifo_without_blocking() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = scratch("flags");
        let target = dir.join("target");
        std::fs::write(&target, b"x").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        // The raw flag on this target: the kernel refuses the link (ELOOP), which proves the
        // constant is the kernel's O_NOFOLLOW.
        if flags::NOFOLLOW != 0 {
            let error = OpenOptions::new()
                .read(true)
                .custom_flags(flags::NOFOLLOW)
                .open(dir.join("link"))
                .unwrap_err();
            assert!(error.raw_os_error().is_some(), "{error}");
            assert!(
                OpenOptions::new()
                    .read(true)
                    .custom_flags(flags::NOFOLLOW)
                    .open(&target)
                    .is_ok()
            );
        }
        let error = open(&dir.join("link"), OpenOptions::new().read(true)).unwrap_err();
        assert!(
            matches!(unsafe_path(&error), Some(UnsafePath::Symlink { .. })),
            "{error}"
        );
        let status = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status();
        if status.is_ok_and(|s| s.success()) {
            let error = read(&dir.join("fifo")).unwrap_err();
            assert!(
                matches!(
                    unsafe_path(&error),
                    Some(UnsafePath::NotRegular {
                        kind: "named pipe (FIFO)",
                        ..
                    })
                ),
                "{error}"
            );
        }
        let error = read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(
                unsafe_path(&error),
                Some(UnsafePath::NotRegular {
                    kind: "character device",
                    ..
                })
            ),
            "{error}"
        );
        std::fs::hard_link(&target, dir.join("second-name")).unwrap();
        let error = read(&target).unwrap_err();
        assert!(
            matches!(
                unsafe_path(&error),
                Some(UnsafePath::HardLinked { links: 2, .. })
            ),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_uid_from_proc_is_the_uid_of_a_created_file() {
        let dir = scratch("uid");
        assert_eq!(uid_from_proc(), Some(uid_from_probe(&dir).unwrap()));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn existing_files_are_tightened_and_open_directories_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("modes");
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        open(&file, OpenOptions::new().read(true)).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&dir, true).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = check_dir(&dir, true).unwrap_err();
        assert!(
            matches!(
                unsafe_path(&error),
                Some(UnsafePath::Writable { mode: 0o1777, .. })
            ),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 700"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! A status sink that appends each message as one JSON line to a file, synced before it says
//! "accepted".

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::core::effect::StatusMessage;
use crate::report::delivery::StatusSink;
use crate::safe_fs::{self, UnsafePath};

/// How much of the end of an existing file is read at open: the last complete line and a line a
/// crash left unfinished must lie within it (a status line is a few hundred bytes).
const TAIL: u64 = 64 * 1024;

/// When a [`JsonLinesSink`] rotates its file.
///
/// ```
/// use jobstate::report::SinkOptions;
/// // Rotate past 1 MiB, keep `status.jsonl.1` to `status.jsonl.3`.
/// let options = SinkOptions { rotate_at: Some(1024 * 1024), keep: 3 };
/// assert_eq!(SinkOptions::default().rotate_at, Some(64 * 1024 * 1024));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// Before a batch would take the file past this many bytes, the file is renamed to
    /// `<file>.1` (an older `<file>.1` to `<file>.2`, and so on) and a new file started. `None`:
    /// never rotate.
    pub rotate_at: Option<u64>,
    /// How many rotated files to keep (`<file>.1` is the newest); the oldest beyond it is
    /// deleted. At least one is kept.
    pub keep: u32,
}

impl Default for SinkOptions {
    /// Rotate past 64 MiB, keep 4 rotated files.
    fn default() -> Self {
        Self {
            rotate_at: Some(64 * 1024 * 1024),
            keep: 4,
        }
    }
}

/// Appends each delivered status message as one line of JSON to a file, and syncs the file
/// before accepting the batch. A stand-in for a site server in examples and tests, and a
/// durable local log for agents that ship status files.
///
/// - A failed write or sync cuts the file back to where the batch began, so that a partial
///   line never glues itself to the next one. If that cut fails too, the sink refuses every
///   later batch until it is opened again (opening cuts the partial line off).
/// - Opening reads only the end of an existing file (64 KiB at most, whatever its size) and
///   cuts off a last line that a crash left unfinished — but only in a file that is its own:
///   one whose last complete line is a JSON object, and whose unfinished line is the start of
///   one. Any other file (a journal, a configuration, given by mistake) is refused with
///   [`UnsafePath::ForeignFile`] and left untouched.
/// - Size-based rotation ([`SinkOptions`]): by default past 64 MiB, keeping 4 old files.
/// - Delivery is at least once: after a crash between the sync and the ledger's
///   acknowledgement, the same message is appended again. Readers drop duplicates by `key`.
/// - No traps followed: the file is opened without following a link (`O_NOFOLLOW`), only as a
///   regular file with one name owned by this user or root ([`UnsafePath`], inside the
///   returned `std::io::Error`).
/// - The file is created readable and writable by its owner only (on Unix; an existing one is
///   tightened to 0600), and its directory entry is synced when it is created.
///
/// ```no_run
/// use jobstate::report::JsonLinesSink;
/// let sink = JsonLinesSink::open("/var/lib/agent/status.jsonl")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct JsonLinesSink {
    file: File,
    path: PathBuf,
    options: SinkOptions,
    /// The file's length.
    len: u64,
    /// Why the sink refuses batches: a failed write whose cut-back failed too.
    broken: Option<String>,
}

fn context(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    if safe_fs::unsafe_path(&e).is_some() {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        format!("{what} status file {}: {e}", path.display()),
    )
}

fn foreign(path: &Path, detail: &str) -> std::io::Error {
    UnsafePath::ForeignFile {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
    .into_io()
}

/// Whether `line` is a JSON object.
fn json_object(line: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(line),
        Ok(serde_json::Value::Object(_))
    )
}

/// The rotated file `n` of `path`: `<path>.<n>`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context(e, "syncing the directory of", path)),
        None => Ok(()),
    }
}

impl JsonLinesSink {
    /// Opens `path` for appending, creating it if needed, with default [`SinkOptions`].
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        Self::open_with(path, SinkOptions::default())
    }

    /// Opens `path` for appending, creating it if needed, and cuts off a last line that a
    /// crash left unfinished (in a file of its own only: see the type's docs).
    pub fn open_with(path: impl AsRef<Path>, options: SinkOptions) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(UnsafePath::Empty.into_io());
        }
        let created = safe_fs::look(&path)?.is_none();
        let mut open = OpenOptions::new();
        open.create(true).read(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let mut file = safe_fs::open(&path, &mut open).map_err(|e| context(e, "opening", &path))?;
        let len = file
            .metadata()
            .map_err(|e| context(e, "looking at", &path))?
            .len();
        let len = Self::repair(&mut file, &path, len)?;
        if created {
            sync_dir_of(&path)?;
        }
        Ok(Self {
            file,
            path,
            options,
            len,
            broken: None,
        })
    }

    /// Checks the end of an existing file and cuts off a line a crash left unfinished; the
    /// file's new length.
    fn repair(file: &mut File, path: &Path, len: u64) -> std::io::Result<u64> {
        if len == 0 {
            return Ok(0);
        }
        let from = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| context(e, "reading", path))?;
        let mut tail = Vec::with_capacity((len - from) as usize);
        Read::by_ref(file)
            .take(len - from)
            .read_to_end(&mut tail)
            .map_err(|e| context(e, "reading", path))?;
        let complete = tail.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        // The last complete line must be a JSON object (if the window holds one whole).
        if let Some(end) = complete {
            let start = tail[..end - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1);
            match start {
                Some(start) if !json_object(&tail[start..end - 1]) => {
                    return Err(foreign(path, "its last line is not a JSON object"));
                }
                None if from == 0 && !json_object(&tail[..end - 1]) => {
                    return Err(foreign(path, "its last line is not a JSON object"));
                }
                None if from > 0 => {
                    return Err(foreign(path, "its last line is longer than 64 KiB"));
                }
                _ => {}
            }
        } else if from > 0 {
            return Err(foreign(path, "no line break in its last 64 KiB"));
        }
        let unfinished = &tail[complete.unwrap_or(0)..];
        if unfinished.is_empty() {
            return Ok(len);
        }
        if serde_json::from_slice::<StatusMessage>(unfinished).is_ok() {
            // A whole message whose line break a crash cut off: keep it, finish the line.
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(|e| context(e, "repairing", path))?;
            return Ok(len + 1);
        }
        if !unfinished.starts_with(b"{") || json_object(unfinished) {
            return Err(foreign(
                path,
                "it does not end with a line break, and its last line is not the start of a JSON object",
            ));
        }
        let keep = from + complete.unwrap_or(0) as u64;
        file.set_len(keep)
            .and_then(|()| file.sync_data())
            .map_err(|e| context(e, "repairing", path))?;
        Ok(keep)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `<file>.1` (shifting older ones) and starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.options.keep.max(1);
        safe_fs::remove_if_present(&rotated(&self.path, keep))
            .map_err(|e| context(e, "rotating", &self.path))?;
        for n in (1..keep).rev() {
            let from = rotated(&self.path, n);
            if safe_fs::look(&from)?.is_some() {
                std::fs::rename(&from, rotated(&self.path, n + 1))
                    .map_err(|e| context(e, "rotating", &self.path))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
            .map_err(|e| context(e, "rotating", &self.path))?;
        let file = safe_fs::create_new(&self.path, OpenOptions::new().read(true).append(true))
            .map_err(|e| context(e, "rotating", &self.path))?;
        sync_dir_of(&self.path)?;
        self.file = file;
        self.len = 0;
        Ok(())
    }
}

impl StatusSink for JsonLinesSink {
    type Error = std::io::Error;

    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut crate::report::delivery::Answers,
    ) -> Result<(), Self::Error> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!(
                "status file {}: the sink refuses writes since a failed write could not be cut back ({why}); open the sink again (it cuts the partial line off)",
                self.path.display()
            )));
        }
        let mut lines = Vec::new();
        for message in batch {
            serde_json::to_writer(&mut lines, message)?;
            lines.push(b'\n');
        }
        if let Some(max) = self.options.rotate_at
            && self.len > 0
            && self.len.saturating_add(lines.len() as u64) > max
        {
            self.rotate()?;
        }
        let start = self.len;
        if let Err(error) = self
            .file
            .write_all(&lines)
            .and_then(|()| self.file.sync_data())
        {
            // Never leave a partial line for the next batch to glue itself to.
            if let Err(cut) = self.file.set_len(start) {
                self.broken = Some(format!("{error}; cutting back: {cut}"));
            }
            return Err(context(error, "appending to", &self.path));
        }
        self.len += lines.len() as u64;
        answers.accept_all();
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The double fault: a write fails and so does the cut back. The sink must refuse further
    /// batches (else the next line glues itself to the partial one) until opened again, which
    /// cuts the partial line off. A file opened read-only makes both the write and the cut
    /// fail.
    #[test]
    fn after_a_failed_write_and_a_failed_cut_the_sink_refuses_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"partial\":").unwrap();
        let mut sink = JsonLinesSink::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        sink.file = File::open(&path).unwrap();
        let message: StatusMessage = serde_json::from_str(MESSAGE).unwrap();
        assert!(
            sink.deliver(
                std::slice::from_ref(&message),
                &mut crate::report::delivery::Answers::default()
            )
            .is_err()
        );
        assert!(sink.broken.is_some());
        let refused = sink
            .deliver(
                std::slice::from_ref(&message),
                &mut crate::report::delivery::Answers::default(),
            )
            .unwrap_err();
        assert!(
            refused.to_string().contains("open the sink again"),
            "{refused}"
        );
        let mut sink = JsonLinesSink::open(&path).unwrap();
        sink.deliver(
            std::slice::from_ref(&message),
            &mut crate::report::delivery::Answers::default(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(json_object_str));
    }

    fn json_object_str(line: &str) -> bool {
        json_object(line.as_bytes())
    }

    const MESSAGE: &str = r#"{"key":{"job":"j","run":1,"attempt":1,"state":"Completed"},"exit":{"code":0},"reason":null,"reboot":null,"started_at":null,"started_in":null,"boot":"b","at":"2026-11-21T02:00:00Z"}"#;

    #[test]
    fn the_message_fixture_is_a_status_message() {
        serde_json::from_str::<StatusMessage>(MESSAGE).unwrap();
    }

    fn refusal(result: std::io::Result<JsonLinesSink>) -> UnsafePath {
        let error = result.unwrap_err();
        safe_fs::unsafe_path(&error)
            .unwrap_or_else(|| panic!("not an UnsafePath: {error}"))
            .clone()
    }

    /// Issue 12, point 8: pointed at the journal by a configuration mistake, the sink cut it
    /// back to its last newline and the agent lost its state. A file that is not the sink's
    /// own is refused and left as it was; so are links, FIFOs and devices.
    #[test]
    fn a_file_that_is_not_the_sinks_own_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::FileStore::open(dir.path().join("store")).unwrap();
        drop(store);
        let cases: [(&str, &[u8]); 6] = [
            ("journal", b""),
            (
                "config.json",
                b"{\n  \"state_dir\": \"/var/lib/agent\"\n}\n",
            ),
            ("compact.json", b"{\"state_dir\": \"/var/lib/agent\"}"),
            ("notes.txt", b"first line\nsecond line without a break"),
            ("list.json", b"[1, 2, 3]\n"),
            ("huge-line", &[b'x'; 70 * 1024]),
        ];
        for (name, bytes) in cases {
            let path = if name == "journal" {
                dir.path().join("store").join("journal")
            } else {
                let path = dir.path().join(name);
                std::fs::write(&path, bytes).unwrap();
                path
            };
            let before = std::fs::read(&path).unwrap();
            match refusal(JsonLinesSink::open(&path)) {
                UnsafePath::ForeignFile { path: p, .. } => assert_eq!(p, path, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(std::fs::read(&path).unwrap(), before, "{name} was changed");
        }
        // Traps.
        let target = dir.path().join("target.jsonl");
        std::fs::write(&target, b"{\"a\":1}\n").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            refusal(JsonLinesSink::open(&link)),
            UnsafePath::Symlink { .. }
        ));
        let dangling = dir.path().join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            refusal(JsonLinesSink::open(&dangling)),
            UnsafePath::Symlink { .. }
        ));
        assert!(
            !dir.path().join("nowhere").exists(),
            "the link was followed"
        );
        assert!(matches!(
            refusal(JsonLinesSink::open("/dev/null")),
            UnsafePath::NotRegular { .. }
        ));
        assert!(matches!(
            refusal(JsonLinesSink::open("")),
            UnsafePath::Empty
        ));
        // Its own files open: a complete last line, a torn one (cut off), a whole message
        // whose line break was lost (kept, the line finished).
        let own = dir.path().join("own.jsonl");
        std::fs::write(&own, format!("{MESSAGE}\n{{\"key\":{{\"jo")).unwrap();
        JsonLinesSink::open(&own).unwrap();
        assert_eq!(
            std::fs::read_to_string(&own).unwrap(),
            format!("{MESSAGE}\n")
        );
        std::fs::write(&own, format!("{MESSAGE}\n{MESSAGE}")).unwrap();
        JsonLinesSink::open(&own).unwrap();
        assert_eq!(
            std::fs::read_to_string(&own).unwrap(),
            format!("{MESSAGE}\n{MESSAGE}\n")
        );
    }

    /// Issue 12, point 8: open read the whole file (1.17 GB: 1.15 GB of memory). It reads the
    /// last 64 KiB now: a sparse file of 8 GiB opens at once (reading it whole would need 8 GiB).
    #[test]
    fn open_reads_only_the_end_of_a_huge_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.jsonl");
        let mut file = File::create(&path).unwrap();
        let mut head = MESSAGE.as_bytes().to_vec();
        head.push(b'\n');
        file.write_all(&head).unwrap();
        file.set_len(8 << 30).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        // A run of zeros is no line of ours: end the hole with a line break, then lines.
        file.write_all(b"\n").unwrap();
        file.write_all(&head).unwrap();
        file.write_all(b"{\"key\":{\"job\":\"torn").unwrap();
        drop(file);
        let started = std::time::Instant::now();
        let sink = JsonLinesSink::open(&path).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(sink.len, (8 << 30) + 1 + head.len() as u64);
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.jsonl");
        let options = SinkOptions {
            rotate_at: Some(1000),
            keep: 2,
        };
        let mut sink = JsonLinesSink::open_with(&path, options).unwrap();
        let message: StatusMessage = serde_json::from_str(MESSAGE).unwrap();
        let per_line = serde_json::to_string(&message).unwrap().len() as u64 + 1;
        for _ in 0..40 {
            sink.deliver(
                std::slice::from_ref(&message),
                &mut crate::report::delivery::Answers::default(),
            )
            .unwrap();
        }
        let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 1000 && len % per_line == 0, "{}: {len}", p.display());
        }
        assert!(!rotated(&path, 3).exists());
        assert_eq!(lines(&rotated(&path, 1)), (1000 / per_line) as usize);
        // A reopened sink appends to the current file and rotates on.
        drop(sink);
        let mut sink = JsonLinesSink::open_with(&path, options).unwrap();
        for _ in 0..(1000 / per_line) {
            sink.deliver(
                std::slice::from_ref(&message),
                &mut crate::report::delivery::Answers::default(),
            )
            .unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "a rotated-in file is owner-only");
        }
    }
}

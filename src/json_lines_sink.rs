//! A status sink that appends each message as one JSON line to a file, synced before it says
//! "accepted".

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{StatusKey, StatusMessage, StatusSink};

/// Appends each delivered status message as one line of JSON to a file, and syncs the file
/// before accepting the batch. A stand-in for a site server in examples and tests, and a
/// durable local log for agents that ship status files.
///
/// - A failed write or sync cuts the file back to where the batch began, so that a partial
///   line never glues itself to the next one; a line cut by a crash is cut off when the file is
///   opened again.
/// - Delivery is at least once: after a crash between the sync and the ledger's
///   acknowledgement, the same message is appended again. Readers drop duplicates by `key`.
/// - The file is created readable and writable by its owner only (on Unix), and its directory
///   entry is synced when it is created.
///
/// ```no_run
/// use jobstate::JsonLinesSink;
/// let sink = JsonLinesSink::open("/var/lib/agent/status.jsonl")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct JsonLinesSink {
    file: File,
    path: PathBuf,
}

fn context(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("{what} status file {}: {e}", path.display()),
    )
}

impl JsonLinesSink {
    /// Opens `path` for appending, creating it if needed, and cuts off a last line that a crash
    /// left unfinished.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let created = !path.exists();
        let mut options = OpenOptions::new();
        options.create(true).read(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .map_err(|e| context(e, "opening", &path))?;
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| context(e, "reading", &path))?;
        let complete = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if complete < content.len() {
            file.set_len(complete as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| context(e, "repairing", &path))?;
        }
        if created && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| context(e, "syncing the directory of", &path))?;
        }
        Ok(Self { file, path })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StatusSink for JsonLinesSink {
    type Error = std::io::Error;

    fn deliver(&mut self, batch: &[StatusMessage]) -> Result<Vec<StatusKey>, Self::Error> {
        let mut lines = Vec::new();
        for message in batch {
            serde_json::to_writer(&mut lines, message)?;
            lines.push(b'\n');
        }
        let start = self.file.seek(SeekFrom::End(0))?;
        if let Err(error) = self
            .file
            .write_all(&lines)
            .and_then(|()| self.file.sync_data())
        {
            // Never leave a partial line for the next batch to glue itself to.
            let _ = self.file.set_len(start);
            return Err(context(error, "appending to", &self.path));
        }
        Ok(batch.iter().map(|m| m.key.clone()).collect())
    }
}

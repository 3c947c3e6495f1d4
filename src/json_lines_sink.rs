//! A status sink that appends each message as one JSON line to a file, synced before it says
//! "accepted".

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{StatusKey, StatusMessage, StatusSink};

/// Appends each delivered status message as one line of JSON to a file, and syncs the file
/// before accepting the batch. A stand-in for a site server in examples and tests, and a
/// durable local log for agents that ship status files.
///
/// The file is created readable and writable by its owner only (on Unix).
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

impl JsonLinesSink {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening status file {}: {e}", path.display()),
            )
        })?;
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
        self.file.write_all(&lines)?;
        self.file.sync_data()?;
        Ok(batch.iter().map(|m| m.key.clone()).collect())
    }
}

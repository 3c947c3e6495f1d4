//! Whether a job's program is alive: by its pid and start time, or by its attempt's marker.

use super::{LinuxSession, read_bounded};
use crate::core::effect::AttemptId;
use crate::core::program::{ProgramId, ProgramStatus};
use crate::session::{ATTEMPT_ENV, SessionError};

/// The most of `/proc/<pid>/stat` read: the line is a few hundred bytes.
const STAT_MAX: u64 = 4096;
/// The most of `/proc/<pid>/environ` read when looking for an attempt's marker.
const ENVIRON_MAX: u64 = 1 << 20;

impl LinuxSession {
    /// The identity of the process `pid`: its pid and its start time (field 22 of
    /// `/proc/<pid>/stat`, clock ticks since boot), for [`Ledger::launched`](crate::Ledger::launched).
    /// Read it right after spawning the program (a child that was not yet reaped keeps it).
    pub fn program_id(&self, pid: u32) -> Result<ProgramId, SessionError> {
        let path = self.root.join(format!("proc/{pid}/stat"));
        let error = |detail: String| SessionError::Program {
            source_name: path.display().to_string(),
            detail,
        };
        let stat = read_bounded(&path, STAT_MAX).map_err(|e| error(e.to_string()))?;
        let stat = parse_stat(&stat).ok_or_else(|| {
            error(
                "no state, parent and start time (fields 3, 4, 22): not a /proc/<pid>/stat line"
                    .to_string(),
            )
        })?;
        Ok(ProgramId::new(pid, stat.start))
    }

    /// Whether the recorded `program` is alive: its stat exists with the same start time. A
    /// zombie is alive while this process is its parent (its status is ours to collect); an
    /// orphaned zombie's status goes to someone else, and some containers' init never reaps
    /// it: it is gone.
    pub(super) fn recorded_status(&self, program: &ProgramId) -> ProgramStatus {
        let path = self.root.join(format!("proc/{}/stat", program.pid()));
        match read_bounded(&path, STAT_MAX) {
            Ok(stat) => match parse_stat(&stat) {
                Some(stat) if stat.start != program.start() => ProgramStatus::Gone, // pid reused
                Some(stat) if stat.state == 'Z' && stat.parent != std::process::id() => {
                    ProgramStatus::Gone
                }
                Some(_) => ProgramStatus::Alive,
                None => ProgramStatus::Unknown,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ProgramStatus::Gone,
            Err(_) => ProgramStatus::Unknown,
        }
    }

    /// Whether any process carries the attempt's marker in its environment. A process whose
    /// environment this process may not read could be the attempt's, and so could a zombie
    /// child of this process (a zombie shows no environment): then the answer is `Unknown`,
    /// never `Gone` (which would launch a second program beside it).
    pub(super) fn marked_status(&self, attempt: &AttemptId) -> ProgramStatus {
        let marker = format!("{ATTEMPT_ENV}={}", attempt.env_value()).into_bytes();
        let Ok(entries) = std::fs::read_dir(self.root.join("proc")) else {
            return ProgramStatus::Unknown;
        };
        let mut unreadable = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_pid = name
                .to_str()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            let environ = match read_bounded(&entry.path().join("environ"), ENVIRON_MAX) {
                Ok(environ) => environ,
                // A process that vanished is not the attempt's; one we may not read may be.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    unreadable = true;
                    continue;
                }
                Err(_) => continue,
            };
            if environ
                .split(|&b| b == 0)
                .any(|var| var == marker.as_slice())
            {
                return ProgramStatus::Alive;
            }
            // A zombie shows no environment. This process's own zombie child may be the
            // attempt's: it ran, and its status is still ours to collect (the agent then hands
            // it to `program_exited`); `Gone` would launch the attempt a second time.
            if environ.is_empty() && self.own_zombie(&entry.path()) {
                unreadable = true;
            }
        }
        if unreadable {
            ProgramStatus::Unknown
        } else {
            ProgramStatus::Gone
        }
    }
}

impl LinuxSession {
    /// Whether the process at `proc_dir` is a zombie whose parent is this process.
    fn own_zombie(&self, proc_dir: &std::path::Path) -> bool {
        read_bounded(&proc_dir.join("stat"), STAT_MAX)
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|stat| stat.state == 'Z' && stat.parent == std::process::id())
    }
}

/// What the session reads of a process from `/proc/<pid>/stat`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stat {
    /// Field 3: `R`, `S`, `Z` (a zombie: exited, not reaped), ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub parent: u32,
    /// Field 22: when the process started, in clock ticks since boot.
    pub start: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name in field 2 may hold spaces and
/// parentheses: count from the last `)`.
pub(super) fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let after = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the `)`, the first field is field 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut state = fields.first()?.chars();
    let (state, None) = (state.next()?, state.next()) else {
        return None;
    };
    Some(Stat {
        state,
        parent: fields.get(4 - 3)?.parse().ok()?,
        start: fields.get(22 - 3)?.parse().ok()?,
    })
}

//! The session facts of a Linux machine (Linux only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{
    ATTEMPT_ENV, AttemptId, BootId, ExecutionContext, NoticeDelivery, ProgramId, ProgramStatus,
    SessionContext, SessionError, Timestamp, UserPresence,
};

/// The most of the boot id file read: a UUID and a newline are 37 bytes; `BootId` allows 128.
const BOOT_ID_MAX: u64 = 4096;
/// The most of `/proc/<pid>/stat` read: the line is a few hundred bytes.
const STAT_MAX: u64 = 4096;
/// The most of `/proc/<pid>/environ` read when looking for an attempt's marker.
const ENVIRON_MAX: u64 = 1 << 20;

/// The size of one utmp record on Linux (glibc, all 64-bit and 32-bit ABIs with 64-bit time).
const UTMP_RECORD: usize = 384;
/// `ut_type` of a logged-in user's record.
const USER_PROCESS: i16 = 7;
/// The largest `ut_type` Linux defines (`ACCOUNTING`).
const MAX_UT_TYPE: i16 = 9;

/// The facts of the Linux machine the agent runs on.
///
/// - **Boot identity:** `/proc/sys/kernel/random/boot_id`, a UUID the kernel draws at every boot.
/// - **Users:** the `USER_PROCESS` records of utmp (`/run/utmp`). A file that cannot be read, or
///   is malformed or truncated, gives [`UserPresence::Unknown`], never a guess and never a panic
///   ([`LinuxSession::logged_on_users`] says why).
/// - **Execution context:** a service when started by systemd (`INVOCATION_ID` is set) or when
///   the process has no controlling terminal; interactive otherwise.
/// - **Shutdown notices:** reported as not delivered, unless the agent wires a source of them
///   (its SIGTERM handler, which calls [`Ledger::shutdown_notice`](crate::Ledger::shutdown_notice))
///   and says so with [`LinuxSession::notices_wired`]. The crate never claims to hear what it
///   cannot.
/// - **Programs:** a recorded program is alive while `/proc/<pid>/stat` exists with the start
///   time recorded at launch ([`LinuxSession::program_id`]); a reused pid is not it, and a zombie
///   (exited, not yet reaped) is alive until reaped. For a launch that was never recorded, any
///   process whose `/proc/<pid>/environ` holds [`ATTEMPT_ENV`](crate::ATTEMPT_ENV)`=<value>`
///   ([`AttemptId::env_value`]) is the attempt's: set it on the child you spawn. `environ` is
///   the environment a process was started with, inherited by the program's children (a daemon
///   it starts keeps the attempt "alive"); a program that starts its work under a cleared
///   environment hides it. When some process's environment cannot be read (another user's,
///   without root), the answer is `Unknown`, never `Gone`. (For a few microseconds after `exec` the kernel shows no
///   environment: an agent restarted by its service manager is far slower than that.)
/// - **Time:** the wall clock, and time since boot (`/proc/uptime` at construction, then
///   `Instant`, which does not count time suspended: a machine that sleeps stretches run-time
///   limits by its sleep), on which run-time limits are measured.
///
/// The root (`/`) and the utmp path can be injected, for tests.
///
/// ```no_run
/// use jobstate::{LinuxSession, SessionContext};
/// let session = LinuxSession::new()?;
/// println!("boot {}", session.boot_id()?);
/// # Ok::<(), jobstate::SessionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinuxSession {
    root: PathBuf,
    utmp: PathBuf,
    context: ExecutionContext,
    notices: Arc<AtomicBool>,
    since_boot_at_start: Duration,
    start: Instant,
}

impl LinuxSession {
    /// The session of this process on this machine.
    pub fn new() -> Result<Self, SessionError> {
        Self::with_root("/")
    }

    /// The session as seen under `root` instead of `/` (its `proc/...` and `run/utmp`), for tests.
    pub fn with_root(root: impl AsRef<Path>) -> Result<Self, SessionError> {
        let root = root.as_ref().to_path_buf();
        let since_boot_at_start = read_uptime(&root.join("proc/uptime"))?;
        let context = detect_context(&root);
        Ok(Self {
            utmp: root.join("run/utmp"),
            root,
            context,
            notices: Arc::new(AtomicBool::new(false)),
            since_boot_at_start,
            start: Instant::now(),
        })
    }

    /// Reads users from `path` instead of `<root>/run/utmp`.
    #[must_use]
    pub fn utmp(mut self, path: impl AsRef<Path>) -> Self {
        self.utmp = path.as_ref().to_path_buf();
        self
    }

    /// Overrides the detected execution context.
    #[must_use]
    pub fn context(mut self, context: ExecutionContext) -> Self {
        self.context = context;
        self
    }

    /// Says that the agent receives shutdown notices (it handles SIGTERM and calls
    /// [`Ledger::shutdown_notice`](crate::Ledger::shutdown_notice)). Until then they are
    /// reported as not delivered.
    pub fn notices_wired(&self, wired: bool) {
        self.notices.store(wired, Ordering::Relaxed);
    }

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
    fn recorded_status(&self, program: &ProgramId) -> ProgramStatus {
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
    /// environment this process may not read could be the attempt's: then the answer is
    /// `Unknown`, never `Gone` (which would launch a second program beside it).
    fn marked_status(&self, attempt: &AttemptId) -> ProgramStatus {
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
        }
        if unreadable {
            ProgramStatus::Unknown
        } else {
            ProgramStatus::Gone
        }
    }

    /// The users logged on now, from utmp's `USER_PROCESS` records.
    pub fn logged_on_users(&self) -> Result<Vec<String>, SessionError> {
        let bytes = std::fs::read(&self.utmp).map_err(|e| SessionError::Users {
            source_name: self.utmp.display().to_string(),
            detail: e.to_string(),
        })?;
        parse_utmp(&bytes).map_err(|detail| SessionError::Users {
            source_name: self.utmp.display().to_string(),
            detail,
        })
    }
}

/// The user names of the `USER_PROCESS` records in a utmp file.
fn parse_utmp(bytes: &[u8]) -> Result<Vec<String>, String> {
    if !bytes.len().is_multiple_of(UTMP_RECORD) {
        return Err(format!(
            "{} bytes is not a whole number of {UTMP_RECORD}-byte records: the file is truncated or not utmp",
            bytes.len()
        ));
    }
    let mut users = Vec::new();
    for (i, record) in bytes.chunks_exact(UTMP_RECORD).enumerate() {
        let ut_type = i16::from_le_bytes([record[0], record[1]]);
        if !(0..=MAX_UT_TYPE).contains(&ut_type) {
            return Err(format!(
                "record {i} has type {ut_type}: the file is not utmp"
            ));
        }
        if ut_type != USER_PROCESS {
            continue;
        }
        let name = &record[44..76];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if !name.is_empty() {
            users.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(users)
}

/// Reads at most `max` bytes of `path` (files under /proc report no size).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What the session reads of a process from `/proc/<pid>/stat`.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// Field 3: `R`, `S`, `Z` (a zombie: exited, not reaped), ...
    state: char,
    /// Field 4: the parent's pid.
    parent: u32,
    /// Field 22: when the process started, in clock ticks since boot.
    start: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name in field 2 may hold spaces and
/// parentheses: count from the last `)`.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
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

fn read_uptime(path: &Path) -> Result<Duration, SessionError> {
    let error = |detail: String| SessionError::Clock {
        source_name: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let first = text.split_whitespace().next().unwrap_or_default();
    let seconds: f64 = first
        .parse()
        .map_err(|_| error(format!("{first:?} is not a number of seconds")))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| error(e.to_string()))
}

/// A service when systemd started us, or when we have no controlling terminal.
fn detect_context(root: &Path) -> ExecutionContext {
    if std::env::var_os("INVOCATION_ID").is_some() {
        return ExecutionContext::Service;
    }
    // Field 7 of /proc/self/stat is the controlling terminal (0: none). The command name in
    // field 2 may hold spaces and parentheses: count from the last ')'.
    let tty = std::fs::read_to_string(root.join("proc/self/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.get(stat.rfind(')')? + 1..)?.to_string();
            after.split_whitespace().nth(4)?.parse::<i64>().ok()
        });
    match tty {
        Some(0) | None => ExecutionContext::Service,
        Some(_) => ExecutionContext::Interactive,
    }
}

impl SessionContext for LinuxSession {
    fn boot_id(&self) -> Result<BootId, SessionError> {
        let path = self.root.join("proc/sys/kernel/random/boot_id");
        let error = |detail: String| SessionError::BootId {
            source_name: path.display().to_string(),
            detail,
        };
        // A boot id is 37 bytes: read a bounded amount, whatever sits at the path.
        let bytes = read_bounded(&path, BOOT_ID_MAX).map_err(|e| error(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| error(e.to_string()))?;
        BootId::new(text.trim()).map_err(|e| error(e.to_string()))
    }

    fn user_presence(&self) -> UserPresence {
        match self.logged_on_users() {
            Ok(users) if users.is_empty() => UserPresence::NoneLoggedOn,
            Ok(_) => UserPresence::LoggedOn,
            Err(_) => UserPresence::Unknown,
        }
    }

    fn execution_context(&self) -> ExecutionContext {
        self.context
    }

    fn shutdown_notices(&self) -> NoticeDelivery {
        if self.notices.load(Ordering::Relaxed) {
            NoticeDelivery::Delivered
        } else {
            NoticeDelivery::NotDelivered
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from(std::time::SystemTime::now())
    }

    fn since_boot(&self) -> Duration {
        self.since_boot_at_start
            .saturating_add(self.start.elapsed())
    }

    fn program_status(&self, attempt: &AttemptId, program: Option<&ProgramId>) -> ProgramStatus {
        match program {
            Some(program) => self.recorded_status(program),
            None => self.marked_status(attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ut_type: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD];
        r[..2].copy_from_slice(&ut_type.to_le_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn utmp_records_are_parsed_and_bad_files_refused() {
        let mut file = record(2, "reboot"); // BOOT_TIME
        file.extend(record(USER_PROCESS, "alice"));
        file.extend(record(8, "bob")); // DEAD_PROCESS: logged off
        assert_eq!(parse_utmp(&file).unwrap(), ["alice"]);
        assert_eq!(parse_utmp(&[]).unwrap(), Vec::<String>::new());
        for cut in [1, UTMP_RECORD - 1, UTMP_RECORD + 7] {
            assert!(parse_utmp(&file[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_utmp(&record(300, "x")).is_err());
        assert!(parse_utmp(&record(-1, "x")).is_err());
        // A name filling all 32 bytes (no NUL) is read whole.
        assert_eq!(
            parse_utmp(&record(USER_PROCESS, &"n".repeat(32))).unwrap()[0].len(),
            32
        );
    }
}

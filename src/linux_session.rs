//! The session facts of a Linux machine (Linux only).

mod boot;
mod clock;
mod command;
mod programs;
mod restart;
mod users;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::Timestamp;
use crate::core::effect::AttemptId;
use crate::core::id::BootId;
use crate::core::presence::UserPresence;
use crate::core::program::{ProgramId, ProgramStatus};
use crate::session::{
    ExecutionContext, NoticeDelivery, RestartPending, SessionContext, SessionError,
};

/// The longest wait for a helper program (`systemctl`, `needs-restarting`) by default.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// The facts of the Linux machine the agent runs on.
///
/// - **Boot identity:** the kernel's `/proc/sys/kernel/random/boot_id` (a UUID drawn at every
///   kernel boot), combined with systemd's count of soft reboots: `systemctl soft-reboot`
///   (systemd 254 and later) restarts all of user space under the same kernel, so the kernel's
///   id stays while everything the agent knew is gone, as in a reboot. Where systemd booted the
///   system (`/run/systemd/system` exists, the test of `sd_booted(3)`), the count is asked of
///   systemd (`systemctl show --property=SoftRebootsCount --value`, bounded by
///   [`with_helper_timeout`](Self::with_helper_timeout); as root, `systemctl` talks to systemd over its
///   private socket, no D-Bus daemon needed). With no soft reboot, or no systemd, or a systemd
///   that keeps no count (before 256), the identity is the kernel's id byte for byte, as in
///   every earlier release; after `n` soft reboots it is `<kernel id>+soft-reboot-<n>`. Where
///   systemd runs but cannot say its count (no `systemctl`, an error, no answer in time),
///   [`boot_id`](SessionContext::boot_id) is an error, never a guess: the plain kernel id could
///   hide a soft reboot, and anything else would invent one. systemd 254 and 255 can soft-reboot
///   but keep no count: there a soft reboot is not seen.
/// - **Users:** who is logged on comes from systemd-logind where it runs (`/run/systemd/sessions`
///   on a system booted by systemd): one file per session, and a session counts when its class
///   is a user's (`user`, `user-early`, `user-incomplete`, `user-light`, `user-early-light`)
///   and its state is `opening`, `online` or `active`, local or remote, in the foreground or not.
///   A login screen (`greeter`), a lock screen, a background session (cron), the per-user
///   service manager, and a `closing` session (logged out, processes lingering) do not. An empty
///   directory says nobody is logged on. Without logind, the `USER_PROCESS` records of utmp
///   (`/run/utmp`), which also count every login. A source that cannot be read, or is
///   malformed or truncated, gives [`UserPresence::Unknown`], never a guess and never a panic:
///   a session that cannot be judged (an unknown class) leaves the answer unknown unless another
///   one proves a user logged on ([`LinuxSession::logged_on_users`] says why).
/// - **Execution context:** a service when started by systemd (`INVOCATION_ID` is set) or when
///   the process has no controlling terminal; interactive otherwise.
/// - **Shutdown notices:** reported as not delivered, unless the agent wires a source of them
///   (its SIGTERM handler, which calls [`Ledger::shutdown_notice`](crate::Ledger::shutdown_notice))
///   and says so with [`LinuxSession::with_notices_wired`]. The crate never claims to hear what it
///   cannot.
/// - **Programs:** a recorded program is alive while `/proc/<pid>/stat` exists with the start
///   time recorded at launch ([`LinuxSession::program_id`]); a reused pid is not it, and a zombie
///   (exited, not yet reaped) is alive until reaped. For a launch that was never recorded, any
///   process whose `/proc/<pid>/environ` holds [`ATTEMPT_ENV`](crate::session::ATTEMPT_ENV)`=<value>`
///   ([`AttemptId::env_value`]) is the attempt's: set it on the child you spawn. `environ` is
///   the environment a process was started with, inherited by the program's children (a daemon
///   it starts keeps the attempt "alive"); a program that starts its work under a cleared
///   environment hides it. When some process's environment cannot be read (another user's,
///   without root), the answer is `Unknown`, never `Gone`. (For a few microseconds after `exec`
///   the kernel shows no environment: an agent restarted by its service manager is far slower
///   than that.)
/// - **Time:** the wall clock (for back-off only), and time since boot, read from
///   `/proc/uptime` at every call ([`since_boot`](SessionContext::since_boot)). That is the
///   kernel's `CLOCK_BOOTTIME`, which counts time suspended, so every limit the ledger measures
///   on time since boot counts a suspend as time passed: the run-time limit, the failure grace
///   window, the restart deadline and the grace after a terminate request. A program suspended
///   with the machine for a night has used its night: it did not run, but the deadline that
///   someone waits on did pass.
/// - **Pending restart:** `/run/reboot-required` exists (Debian, Ubuntu: package scripts touch
///   it, Debian Policy §9.12): pending. Else, where `/usr/bin/needs-restarting` is installed
///   (RHEL, Fedora: yum-utils, dnf-utils), `needs-restarting -r` answers (exit status 1:
///   pending, 0: not; anything else, or no answer within the helper timeout: unknown). Else, on
///   a dpkg system (`/var/lib/dpkg/status` exists), the flag's absence: not pending. Else
///   unknown. (`/run` survives a soft reboot, and so does the flag: a kernel update still waits
///   for a full reboot.)
///
/// Every path is read under the root (`/`, or the one given to [`at_root`](Self::at_root)),
/// and the users' source and the helpers can be overridden, for tests.
///
/// ```no_run
/// use jobstate::LinuxSession;
/// use jobstate::session::SessionContext;
/// let session = LinuxSession::new()?;
/// println!("boot {}", session.boot_id()?);
/// # Ok::<(), jobstate::session::SessionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinuxSession {
    root: PathBuf,
    users: UserSource,
    systemctl: Option<PathBuf>,
    needs_restarting: PathBuf,
    helper_timeout: Duration,
    context: ExecutionContext,
    notices: bool,
    clock: clock::BootClock,
}

/// Where the users logged on are read from.
#[derive(Debug, Clone)]
enum UserSource {
    /// logind's sessions where systemd booted the system and logind keeps them, else utmp.
    Auto,
    /// The utmp file at this path.
    Utmp(PathBuf),
    /// logind's session files in this directory.
    Logind(PathBuf),
}

/// The source of users, resolved.
enum Users {
    /// The utmp file at this path.
    Utmp(PathBuf),
    /// logind's session files in this directory.
    Logind(PathBuf),
}

impl LinuxSession {
    /// The session of this process on this machine.
    pub fn new() -> Result<Self, SessionError> {
        Self::at_root("/")
    }

    /// The session as seen under `root` instead of `/` (its `proc/...`, `run/...`, `usr/bin/...`
    /// and `var/lib/dpkg/status`), for tests. Helper programs found under it are run.
    pub fn at_root(root: impl AsRef<Path>) -> Result<Self, SessionError> {
        let root = root.as_ref().to_path_buf();
        let clock = clock::BootClock::new(root.join("proc/uptime"))?;
        let context = detect_context(&root);
        Ok(Self {
            needs_restarting: root.join("usr/bin/needs-restarting"),
            root,
            users: UserSource::Auto,
            systemctl: None,
            helper_timeout: HELPER_TIMEOUT,
            context,
            notices: false,
            clock,
        })
    }

    /// Reads users from the utmp file at `path`, whether or not logind runs.
    #[must_use]
    pub fn with_utmp(mut self, path: impl AsRef<Path>) -> Self {
        self.users = UserSource::Utmp(path.as_ref().to_path_buf());
        self
    }

    /// Reads users from logind's session files in the directory `dir`, whether or not systemd
    /// booted the system (a missing directory gives [`UserPresence::Unknown`]).
    #[must_use]
    pub fn with_logind_sessions(mut self, dir: impl AsRef<Path>) -> Self {
        self.users = UserSource::Logind(dir.as_ref().to_path_buf());
        self
    }

    /// Asks the program at `path` instead of `<root>/usr/bin/systemctl` (or `<root>/bin/systemctl`)
    /// for systemd's count of soft reboots.
    #[must_use]
    pub fn with_systemctl(mut self, path: impl AsRef<Path>) -> Self {
        self.systemctl = Some(path.as_ref().to_path_buf());
        self
    }

    /// Runs the program at `path` instead of `<root>/usr/bin/needs-restarting`.
    #[must_use]
    pub fn with_needs_restarting(mut self, path: impl AsRef<Path>) -> Self {
        self.needs_restarting = path.as_ref().to_path_buf();
        self
    }

    /// The longest wait for a helper program (`systemctl`, `needs-restarting`); one still
    /// running then is killed. 5 seconds unless set.
    #[must_use]
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// Overrides the detected execution context.
    #[must_use]
    pub fn with_context(mut self, context: ExecutionContext) -> Self {
        self.context = context;
        self
    }

    /// Says whether the agent receives shutdown notices (it handles SIGTERM and calls
    /// [`Ledger::shutdown_notice`](crate::Ledger::shutdown_notice)). Until it says so they are
    /// reported as not delivered.
    #[must_use]
    pub fn with_notices_wired(mut self, wired: bool) -> Self {
        self.notices = wired;
        self
    }

    /// [`LinuxSession::with_notices_wired`], later: for a session the ledger holds already,
    /// through [`Ledger::session_mut`](crate::Ledger::session_mut). (Each clone of a session
    /// has its own setting.)
    pub fn set_notices_wired(&mut self, wired: bool) {
        self.notices = wired;
    }

    /// The users logged on now, one entry per session (logind) or login record (utmp). An
    /// error when the source cannot be read, or when any of its sessions cannot be judged: a
    /// partial list is not the list.
    pub fn logged_on_users(&self) -> Result<Vec<String>, SessionError> {
        match self.user_source()? {
            Users::Logind(dir) => {
                let scan = users::logind_scan(&dir)?;
                match scan.undecided {
                    None => Ok(scan.users),
                    Some(detail) => Err(SessionError::Users {
                        source_name: dir.display().to_string(),
                        detail,
                    }),
                }
            }
            Users::Utmp(path) => users::utmp_users(&path),
        }
    }

    /// systemd's count of soft reboots since the kernel booted: `None` where systemd did not
    /// boot the system or keeps no count (before 256); an error where systemd runs and cannot
    /// say it.
    pub fn soft_reboots(&self) -> Result<Option<u64>, SessionError> {
        let marker = self.root.join("run/systemd/system");
        let booted_by_systemd = dir_exists(&marker).map_err(|e| SessionError::BootId {
            source_name: marker.display().to_string(),
            detail: e.to_string(),
        })?;
        if !booted_by_systemd {
            return Ok(None);
        }
        let systemctl = match &self.systemctl {
            Some(path) => path.clone(),
            None => {
                let candidates = [
                    self.root.join("usr/bin/systemctl"),
                    self.root.join("bin/systemctl"),
                ];
                candidates
                    .iter()
                    .find(|path| path.exists())
                    .cloned()
                    .ok_or_else(|| SessionError::BootId {
                        source_name: marker.display().to_string(),
                        detail: format!(
                            "systemd booted this system, but neither {} nor {} exists to ask for its count of soft reboots",
                            candidates[0].display(),
                            candidates[1].display()
                        ),
                    })?
            }
        };
        boot::soft_reboots_count(&systemctl, self.helper_timeout)
    }

    /// The source of users: the one chosen, or logind's where it runs, else utmp.
    fn user_source(&self) -> Result<Users, SessionError> {
        match &self.users {
            UserSource::Auto => {
                let sessions = self.root.join("run/systemd/sessions");
                let error = |path: &Path, e: std::io::Error| SessionError::Users {
                    source_name: path.display().to_string(),
                    detail: e.to_string(),
                };
                let marker = self.root.join("run/systemd/system");
                let systemd = dir_exists(&marker).map_err(|e| error(&marker, e))?;
                if systemd && dir_exists(&sessions).map_err(|e| error(&sessions, e))? {
                    Ok(Users::Logind(sessions))
                } else {
                    Ok(Users::Utmp(self.root.join("run/utmp")))
                }
            }
            UserSource::Utmp(path) => Ok(Users::Utmp(path.clone())),
            UserSource::Logind(dir) => Ok(Users::Logind(dir.clone())),
        }
    }
}

/// Whether `path` is a directory (`false` when nothing is there).
fn dir_exists(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(metadata.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
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
    /// The kernel's boot id, with `+soft-reboot-<n>` after `n` soft reboots (none: the kernel's
    /// id alone); an error where systemd runs and cannot say its count (see [`LinuxSession`]).
    fn boot_id(&self) -> Result<BootId, SessionError> {
        let path = self.root.join("proc/sys/kernel/random/boot_id");
        let kernel = boot::kernel_boot_id(&path)?;
        let soft_reboots = self.soft_reboots()?;
        boot::boot_identity(&kernel, soft_reboots).map_err(|detail| SessionError::BootId {
            source_name: path.display().to_string(),
            detail,
        })
    }

    fn user_presence(&self) -> UserPresence {
        let Ok(source) = self.user_source() else {
            return UserPresence::Unknown;
        };
        match source {
            Users::Logind(dir) => match users::logind_scan(&dir) {
                Ok(scan) if !scan.users.is_empty() => UserPresence::LoggedOn,
                Ok(scan) if scan.undecided.is_none() => UserPresence::NoneLoggedOn,
                _ => UserPresence::Unknown,
            },
            Users::Utmp(path) => match users::utmp_users(&path) {
                Ok(users) if users.is_empty() => UserPresence::NoneLoggedOn,
                Ok(_) => UserPresence::LoggedOn,
                Err(_) => UserPresence::Unknown,
            },
        }
    }

    fn execution_context(&self) -> ExecutionContext {
        self.context
    }

    fn shutdown_notices(&self) -> NoticeDelivery {
        if self.notices {
            NoticeDelivery::Delivered
        } else {
            NoticeDelivery::NotDelivered
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from(std::time::SystemTime::now())
    }

    /// Time since boot from `/proc/uptime`, re-read at every call: the kernel's
    /// `CLOCK_BOOTTIME`, which counts time suspended (in steps of 10 ms), so the run-time limit,
    /// the failure grace window, the restart deadline and the terminate grace all count a
    /// suspend as time passed, in this process and in the next agent alike. It never decreases
    /// within one `LinuxSession` and its clones (the largest value handed out stands). Should
    /// the file become unreadable, time goes on from the last reading on `Instant`, which does
    /// not count suspend: limits then fire late, never early.
    fn since_boot(&self) -> Duration {
        self.clock.since_boot()
    }

    fn program_status(&self, attempt: &AttemptId, program: Option<&ProgramId>) -> ProgramStatus {
        match program {
            Some(program) => self.recorded_status(program),
            None => self.marked_status(attempt),
        }
    }

    /// From `/run/reboot-required`, `needs-restarting -r` or dpkg's presence (see
    /// [`LinuxSession`]).
    fn restart_pending(&self) -> RestartPending {
        let sources = restart::RestartSources {
            flag: &self.root.join("run/reboot-required"),
            needs_restarting: &self.needs_restarting,
            dpkg_status: &self.root.join("var/lib/dpkg/status"),
        };
        restart::restart_pending(&sources, self.helper_timeout)
    }
}

//! A [`ProgramExit`] from a [`std::process::ExitStatus`], without loss. It lives outside the core
//! because it names `std::process`: the core never touches a process, it is told how one ended.

use crate::core::exit_code::ProgramExit;

impl From<std::process::ExitStatus> for ProgramExit {
    fn from(status: std::process::ExitStatus) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                return ProgramExit::Signal(signal);
            }
        }
        // A status is either a code or (on Unix) a signal; -1 is unreachable in practice and
        // fails under every shipped policy.
        ProgramExit::Code(status.code().unwrap_or(-1))
    }
}

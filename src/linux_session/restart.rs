//! Whether the operating system says a restart is pending.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::command::run_bounded;
use crate::session::RestartPending;

/// Where the facts live, under the session's root.
#[derive(Debug, Clone)]
pub(super) struct RestartSources<'a> {
    /// `/run/reboot-required` (Debian Policy §9.12: a package's maintainer script touches it).
    pub flag: &'a Path,
    /// `needs-restarting` (RHEL, Fedora: yum-utils, dnf-utils).
    pub needs_restarting: &'a Path,
    /// `/var/lib/dpkg/status`: the system's packages are dpkg's, and follow Debian Policy.
    pub dpkg_status: &'a Path,
}

/// The flag file says "pending" wherever it exists; else `needs-restarting -r` answers where it
/// is installed (exit status 1: pending, 0: not; anything else, a failure to start, or no
/// answer within `timeout`: unknown); else on a dpkg system the flag's absence says "not
/// pending"; else nobody can tell.
pub(super) fn restart_pending(sources: &RestartSources<'_>, timeout: Duration) -> RestartPending {
    match sources.flag.try_exists() {
        Ok(true) => return RestartPending::Pending,
        Ok(false) => {}
        Err(_) => return RestartPending::Unknown,
    }
    match sources.needs_restarting.try_exists() {
        Ok(true) => {
            let answer = run_bounded(
                Command::new(sources.needs_restarting).arg("-r"),
                timeout,
                false,
            );
            return match answer.map(|finished| finished.status.code()) {
                Ok(Some(1)) => RestartPending::Pending,
                Ok(Some(0)) => RestartPending::NotPending,
                _ => RestartPending::Unknown,
            };
        }
        Ok(false) => {}
        Err(_) => return RestartPending::Unknown,
    }
    match sources.dpkg_status.try_exists() {
        Ok(true) => RestartPending::NotPending,
        _ => RestartPending::Unknown,
    }
}

//! The boot identity: the kernel's boot id, and systemd's count of soft reboots.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::command::run_bounded;
use super::read_bounded;
use crate::core::id::BootId;
use crate::session::SessionError;

/// The most of the boot id file read: a UUID and a newline are 37 bytes; `BootId` allows 128.
const BOOT_ID_MAX: u64 = 4096;

/// The kernel's boot id at `path`, trimmed.
pub(super) fn kernel_boot_id(path: &Path) -> Result<String, SessionError> {
    let error = |detail: String| SessionError::BootId {
        source_name: path.display().to_string(),
        detail,
    };
    // A boot id is 37 bytes: read a bounded amount, whatever sits at the path.
    let bytes = read_bounded(path, BOOT_ID_MAX).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| error(e.to_string()))?;
    // Validated here so that a bad kernel id is reported as such, not with a suffix.
    BootId::new(text.trim()).map_err(|e| error(e.to_string()))?;
    Ok(text.trim().to_string())
}

/// The identity of a boot whose kernel id is `kernel` after `soft_reboots` soft reboots: the
/// kernel id itself when there were none (the identity of every release before this one), else
/// `<kernel id>+soft-reboot-<n>`.
pub(super) fn boot_identity(kernel: &str, soft_reboots: Option<u64>) -> Result<BootId, String> {
    let id = match soft_reboots {
        None | Some(0) => BootId::new(kernel),
        Some(n) => BootId::new(format!("{kernel}+soft-reboot-{n}")),
    };
    id.map_err(|e| e.to_string())
}

/// Systemd's count of soft reboots since the kernel booted, from `systemctl show
/// --property=SoftRebootsCount --value`: `None` when this systemd has no such property (it
/// prints nothing: systemd before 256).
pub(super) fn soft_reboots_count(
    systemctl: &Path,
    timeout: Duration,
) -> Result<Option<u64>, SessionError> {
    let source_name = format!(
        "{} show --property=SoftRebootsCount --value",
        systemctl.display()
    );
    let error = |detail: String| SessionError::BootId {
        source_name: source_name.clone(),
        detail: format!(
            "{detail}; systemd runs here, and without its count of soft reboots a soft reboot could not be told from an agent restart"
        ),
    };
    let finished = run_bounded(
        Command::new(systemctl).args([
            "show",
            "--property=SoftRebootsCount",
            "--value",
            "--no-pager",
        ]),
        timeout,
        true,
    )
    .map_err(|e| error(e.to_string()))?;
    if !finished.status.success() {
        return Err(error(format!("it ended with {}", finished.status)));
    }
    let text = std::str::from_utf8(&finished.stdout)
        .map_err(|_| error("its output is not text".to_string()))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    // Digits only: `u64::from_str` would also take a leading '+'.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(format!("its output {text:?} is not a count")));
    }
    text.parse()
        .map(Some)
        .map_err(|_| error(format!("its output {text:?} is not a count")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";

    #[test]
    fn no_soft_reboot_keeps_the_kernel_id_byte_for_byte() {
        assert_eq!(boot_identity(KERNEL, None).unwrap().as_str(), KERNEL);
        assert_eq!(boot_identity(KERNEL, Some(0)).unwrap().as_str(), KERNEL);
        assert_eq!(
            boot_identity(KERNEL, Some(3)).unwrap().as_str(),
            format!("{KERNEL}+soft-reboot-3")
        );
        // The longest suffix fits a UUID in a BootId.
        let longest = boot_identity(KERNEL, Some(u64::MAX)).unwrap();
        assert!(longest.as_str().len() <= BootId::MAX_LEN);
        // A kernel id that leaves no room is an error, never a cut identity.
        assert!(boot_identity(&"a".repeat(BootId::MAX_LEN), Some(1)).is_err());
    }
}

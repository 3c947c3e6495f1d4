//! Time since boot, on one clock that counts time suspended.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::read_bounded;
use crate::session::SessionError;

/// The most of `/proc/uptime` read: two numbers, a few dozen bytes.
const UPTIME_MAX: u64 = 256;

/// The boot clock of one [`LinuxSession`](crate::LinuxSession) and its clones: `/proc/uptime`,
/// re-read at every call, never moving backwards.
#[derive(Debug, Clone)]
pub(super) struct BootClock {
    path: PathBuf,
    state: Arc<Mutex<ClockState>>,
}

#[derive(Debug, Clone, Copy)]
struct ClockState {
    /// The latest value handed out: nothing earlier is ever handed out again.
    max: Duration,
    /// The last successful reading of the file, and when (on `Instant`) it was taken.
    last_read: Duration,
    read_at: Instant,
}

impl BootClock {
    /// Reads `path` once: a clock that cannot be read at the start is an error.
    pub(super) fn new(path: PathBuf) -> Result<Self, SessionError> {
        let now = read_uptime(&path)?;
        Ok(Self {
            path,
            state: Arc::new(Mutex::new(ClockState {
                max: now,
                last_read: now,
                read_at: Instant::now(),
            })),
        })
    }

    /// Time since boot: the file's value, or while it cannot be read, the last reading plus
    /// the `Instant` time since (which does not count suspend: late, never early); never less
    /// than a value handed out before.
    pub(super) fn since_boot(&self) -> Duration {
        let reading = read_uptime(&self.path).ok();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = match reading {
            Some(reading) => {
                state.last_read = reading;
                state.read_at = Instant::now();
                reading
            }
            None => state.last_read.saturating_add(state.read_at.elapsed()),
        };
        state.max = state.max.max(now);
        state.max
    }
}

/// The first number of `/proc/uptime`: seconds since boot with two decimals, suspend included.
fn read_uptime(path: &Path) -> Result<Duration, SessionError> {
    let error = |detail: String| SessionError::Clock {
        source_name: path.display().to_string(),
        detail,
    };
    let bytes = read_bounded(path, UPTIME_MAX).map_err(|e| error(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| error(e.to_string()))?;
    let first = text.split_whitespace().next().unwrap_or_default();
    // Digits and one dot only: `f64::from_str` also takes "inf", "NaN" and exponents.
    let plain = !first.is_empty()
        && first.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && first.bytes().filter(|&b| b == b'.').count() <= 1;
    if !plain {
        return Err(error(format!("{first:?} is not a number of seconds")));
    }
    let seconds: f64 = first
        .parse()
        .map_err(|_| error(format!("{first:?} is not a number of seconds")))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_values_are_parsed_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uptime");
        for (text, expected) in [
            ("1234.56 4000.00\n", Some(Duration::from_millis(1_234_560))),
            ("7 1\n", Some(Duration::from_secs(7))),
            ("", None),
            ("inf 1\n", None),
            ("1e3 1\n", None),
            ("-1.0 1\n", None),
            ("1.2.3 1\n", None),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_uptime(&path).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn a_clock_whose_file_vanishes_goes_on_on_instant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uptime");
        std::fs::write(&path, "100.00 1\n").unwrap();
        let clock = BootClock::new(path.clone()).unwrap();
        assert_eq!(clock.since_boot(), Duration::from_secs(100));
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let later = clock.since_boot();
        assert!(later >= Duration::from_millis(100_030), "{later:?}");
        // Readable again, with a value below what was handed out: the clock holds.
        std::fs::write(&path, "100.01 1\n").unwrap();
        assert_eq!(clock.since_boot(), later);
        std::fs::write(&path, "200.00 1\n").unwrap();
        assert_eq!(clock.since_boot(), Duration::from_secs(200));
    }
}

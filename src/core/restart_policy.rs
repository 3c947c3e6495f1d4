//! When the agent may restart the machine for a job that requires it ("restart required", soft):
//! at once, in a maintenance window, once nobody is logged on (up to a deadline), or never (the
//! next natural boot). A restart already under way (hard) is not the agent's to defer.

use std::fmt;
use std::time::Duration;

use chrono::Timelike;
use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::core::presence::UserPresence;

/// How often the ledger asks again whether a user is still logged on, while a restart waits for
/// nobody to be: a logoff is not an event the ledger hears.
pub(crate) const USER_RECHECK: Duration = Duration::from_secs(60);

/// When an owed soft restart is licensed. Per job ([`JobSpec::with_restart_policy`](crate::JobSpec::with_restart_policy)),
/// else the ledger's default ([`Ledger::set_restart_policy`](crate::Ledger::set_restart_policy),
/// itself [`RestartPolicy::Immediately`] by default). Whatever the policy, a restart is never
/// licensed while another job runs, and a restart deadline that passes is still reported
/// overdue (the report says how long the restart has been owed; it stays held by the policy).
///
/// Text form: `"immediately"`, `"next_natural_boot"`,
/// `{"window": {"start": "02:00", "length": "2h"}}` (UTC), `{"when_no_user": {"at_most": "8h"}}`.
///
/// ```
/// use jobstate::RestartPolicy;
/// let policy: RestartPolicy =
///     serde_json::from_str(r#"{"window": {"start": "23:30", "length": "3h"}}"#)?;
/// assert!(matches!(policy, RestartPolicy::Window(_)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// As soon as no other job runs (the default).
    #[default]
    Immediately,
    /// Only inside a daily maintenance window.
    Window(MaintenanceWindow),
    /// Postponed while a user is logged on (or presence is unknown), for at most `at_most`
    /// after the restart became owed; then at once.
    WhenNoUser {
        /// The longest postponement.
        #[serde(with = "crate::core::duration_text")]
        at_most: Duration,
    },
    /// Never by the agent: the job waits, visibly, for the next natural boot.
    NextNaturalBoot,
}

/// A daily window of wall-clock time, in UTC, that may cross midnight: it opens at a time of
/// day and stays open for more than nothing and at most a day (a window that never opens would
/// hold a restart for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WindowForm", into = "WindowForm")]
pub struct MaintenanceWindow {
    /// When it opens, as minutes after midnight UTC (below 1,440).
    start: u16,
    /// How long it stays open (more than zero, at most a day).
    length: Duration,
}

/// The serde form of a [`MaintenanceWindow`], checked on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowForm {
    #[serde(with = "time_of_day")]
    start: u16,
    #[serde(with = "crate::core::duration_text")]
    length: Duration,
}

impl TryFrom<WindowForm> for MaintenanceWindow {
    type Error = String;
    fn try_from(form: WindowForm) -> Result<Self, String> {
        Self::new(form.start / 60, form.start % 60, form.length).ok_or_else(|| {
            "a maintenance window's length is more than zero and at most a day (\"1s\" to \"1d\")"
                .to_owned()
        })
    }
}

impl From<MaintenanceWindow> for WindowForm {
    fn from(window: MaintenanceWindow) -> Self {
        WindowForm {
            start: window.start,
            length: window.length,
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl MaintenanceWindow {
    /// A window opening `hour:minute` UTC for `length`; `None` for an hour past 23, a minute
    /// past 59, or a length of zero or longer than a day.
    pub fn new(hour: u16, minute: u16, length: Duration) -> Option<Self> {
        (hour < 24 && minute < 60 && !length.is_zero() && length <= DAY).then(|| Self {
            start: hour * 60 + minute,
            length,
        })
    }

    /// When the window opens, as (hour, minute) UTC.
    pub fn start(&self) -> (u16, u16) {
        (self.start / 60, self.start % 60)
    }

    /// How long it stays open.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// How long until the window opens, from `now`; zero while it is open.
    pub fn opens_in(&self, now: Timestamp) -> Duration {
        let into_day = Duration::from_secs(u64::from(now.num_seconds_from_midnight()))
            + Duration::from_nanos(u64::from(now.nanosecond() % 1_000_000_000));
        // `start` is below a day and `into_day` below a day plus a leap second: no subtraction
        // below zero, whatever the inputs (saturating all the same).
        let start = Duration::from_secs(u64::from(self.start % (24 * 60)) * 60);
        // Time since the window last opened (today or yesterday).
        let since_open = if into_day >= start {
            into_day - start
        } else {
            (into_day + DAY).saturating_sub(start)
        };
        if since_open < self.length {
            Duration::ZERO
        } else {
            DAY.saturating_sub(since_open)
        }
    }
}

/// Why the ledger licensed a restart now ([`Effect::ScheduleRestart`](crate::Effect::ScheduleRestart)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RestartRelease {
    /// At once: the policy is [`RestartPolicy::Immediately`], or the restart is already under
    /// way (hard).
    AtOnce,
    /// The maintenance window is open.
    InWindow,
    /// Nobody is logged on.
    NoUser,
    /// A user is logged on, but the restart was postponed as long as the policy allows.
    PostponedLongEnough,
}

/// Why an owed restart is not licensed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RestartHold {
    /// Outside the maintenance window.
    OutsideWindow,
    /// A user is logged on (or presence is unknown); postponed at most this much longer.
    UserLoggedOn {
        /// Until the policy's limit.
        at_most: Duration,
    },
    /// The policy leaves the restart to the next natural boot.
    NextNaturalBoot,
}

impl fmt::Display for RestartHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartHold::OutsideWindow => f.write_str("the maintenance window is closed"),
            RestartHold::UserLoggedOn { at_most } => write!(
                f,
                "a user is logged on (or it is unknown); postponed at most {} longer",
                crate::core::duration_text::format(*at_most)
            ),
            RestartHold::NextNaturalBoot => {
                f.write_str("the agent never restarts the machine for it: the next boot will do")
            }
        }
    }
}

/// The policy's answer for an owed soft restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Release(RestartRelease),
    /// Held; ask again after `wake_after` (`None`: nothing the ledger can wait for).
    Hold {
        hold: RestartHold,
        wake_after: Option<Duration>,
    },
}

impl RestartPolicy {
    /// Whether a restart owed for `owed_for` may be licensed now.
    pub(crate) fn decide(&self, now: Timestamp, user: UserPresence, owed_for: Duration) -> Verdict {
        match self {
            RestartPolicy::Immediately => Verdict::Release(RestartRelease::AtOnce),
            RestartPolicy::Window(window) => match window.opens_in(now) {
                Duration::ZERO => Verdict::Release(RestartRelease::InWindow),
                wait => Verdict::Hold {
                    hold: RestartHold::OutsideWindow,
                    wake_after: Some(wait),
                },
            },
            RestartPolicy::WhenNoUser { at_most } => {
                if user == UserPresence::NoneLoggedOn {
                    return Verdict::Release(RestartRelease::NoUser);
                }
                match at_most.checked_sub(owed_for) {
                    Some(left) if !left.is_zero() => Verdict::Hold {
                        hold: RestartHold::UserLoggedOn { at_most: left },
                        wake_after: Some(left.min(USER_RECHECK)),
                    },
                    _ => Verdict::Release(RestartRelease::PostponedLongEnough),
                }
            }
            RestartPolicy::NextNaturalBoot => Verdict::Hold {
                hold: RestartHold::NextNaturalBoot,
                wake_after: None,
            },
        }
    }
}

/// `"HH:MM"` in human-readable formats, minutes after midnight in binary ones.
mod time_of_day {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(minutes: &u16, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            format!("{:02}:{:02}", minutes / 60, minutes % 60).serialize(s)
        } else {
            minutes.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        use serde::de::Error;
        let minutes = if d.is_human_readable() {
            let text = String::deserialize(d)?;
            parse(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "{text:?} is not a time of day: write it as \"HH:MM\" (UTC), such as \"02:00\""
                ))
            })?
        } else {
            u16::deserialize(d)?
        };
        if minutes >= 24 * 60 {
            return Err(D::Error::custom("a time of day is before 24:00"));
        }
        Ok(minutes)
    }

    fn parse(text: &str) -> Option<u16> {
        let (hours, minutes) = text.split_once(':')?;
        let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(hours) || !digits(minutes) {
            return None;
        }
        let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
        (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(h: u32, m: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }

    #[test]
    fn a_window_across_midnight_opens_and_closes_on_time() {
        let window = MaintenanceWindow::new(23, 30, Duration::from_secs(3 * 3600)).unwrap();
        assert_eq!(window.opens_in(at(23, 30)), Duration::ZERO);
        assert_eq!(window.opens_in(at(0, 10)), Duration::ZERO);
        assert_eq!(window.opens_in(at(2, 29)), Duration::ZERO);
        assert_eq!(window.opens_in(at(2, 30)), Duration::from_secs(21 * 3600));
        assert_eq!(window.opens_in(at(23, 0)), Duration::from_secs(30 * 60));
        assert!(MaintenanceWindow::new(24, 0, DAY).is_none());
        assert!(MaintenanceWindow::new(1, 60, DAY).is_none());
        assert!(MaintenanceWindow::new(1, 0, Duration::ZERO).is_none());
        assert!(MaintenanceWindow::new(1, 0, DAY + Duration::from_secs(1)).is_none());
        // A whole day is always open.
        let always = MaintenanceWindow::new(5, 0, DAY).unwrap();
        assert_eq!(always.opens_in(at(4, 59)), Duration::ZERO);
    }

    #[test]
    fn each_policy_decides_as_documented() {
        let noon = at(12, 0);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            RestartPolicy::Immediately.decide(noon, UserPresence::LoggedOn, Duration::ZERO),
            Verdict::Release(RestartRelease::AtOnce)
        );
        let postpone = RestartPolicy::WhenNoUser { at_most: 8 * hour };
        assert_eq!(
            postpone.decide(noon, UserPresence::NoneLoggedOn, Duration::ZERO),
            Verdict::Release(RestartRelease::NoUser)
        );
        assert_eq!(
            postpone.decide(noon, UserPresence::Unknown, 7 * hour),
            Verdict::Hold {
                hold: RestartHold::UserLoggedOn { at_most: hour },
                wake_after: Some(USER_RECHECK),
            }
        );
        assert_eq!(
            postpone.decide(noon, UserPresence::LoggedOn, 8 * hour),
            Verdict::Release(RestartRelease::PostponedLongEnough)
        );
        assert!(matches!(
            RestartPolicy::NextNaturalBoot.decide(noon, UserPresence::NoneLoggedOn, 1000 * hour),
            Verdict::Hold {
                hold: RestartHold::NextNaturalBoot,
                wake_after: None
            }
        ));
    }
}

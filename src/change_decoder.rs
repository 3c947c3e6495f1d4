//! The hand-written decoder of a stored change: what recovery spends its time on.
//!
//! Decoding a change through serde and postcard costs about 2,000 instructions, a field at a
//! time through visitors, nested results and postcard's general varint loop; recovery decodes
//! millions of changes. This module reads the same bytes directly, for every shape a change
//! can have, and leaves to serde the records that are not changes (status messages and their
//! acknowledgements) and any byte it does not accept: then it answers `None` and the caller
//! decodes the record with serde, which reads it (or refuses it) as it always would. It accepts
//! less than serde in places (a duration whose nanoseconds serde would carry into its seconds;
//! on a target that is neither 32 nor 64 bits, anything), never more. So it can only be faster,
//! never different: whenever it answers, its answer and the bytes it used are serde's own (on a
//! 64-bit or 32-bit target), which the tests below check on every shape, on damaged bytes and
//! on random integers.
//!
//! The format is postcard's, of the codec's types ([`Unboxed`], [`StoredChange`]): a varint
//! for an enum's variant index, an unsigned integer and a length (a length at pointer width);
//! zigzag varints for signed integers; one byte, 0 or 1, for a bool and for an option's tag;
//! fields in declaration order. Format 2 is frozen: these shapes never change within it. A new
//! field or variant in a stored type is a new format, and this decoder must learn it with it:
//! its test fails until it does (a new variant is refused here and read by serde; a new field
//! would be misread).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use crate::core::Timestamp;
use crate::core::event::{AttemptRef, CheckResult, Event, EventKind};
use crate::core::exit_code::ProgramExit;
use crate::core::id::{BootId, JobId};
use crate::core::program::{ProgramId, ProgramStatus};
use crate::core::spec::JobSpec;
use crate::core::state::{
    Attempt, FailureReason, JobState, Launch, ProvisionalFailure, RebootAttribution, RebootKind,
    Termination,
};
use crate::core::time_serde::from_parts_cached;
use crate::record::{StoredChange, Unboxed};

/// The variant indices of [`Unboxed`] that hold a change.
const CHANGE: u32 = 0;
const COMPACTED: u32 = 6;

/// Decodes the record at the start of `bytes` if it is a change whose bytes it accepts: the
/// record and the bytes after it, exactly as serde would decode them. `None`: decode it with
/// serde.
pub(crate) fn decode(bytes: &[u8]) -> Option<(Unboxed<'_>, &[u8])> {
    let mut r = Reader { bytes };
    let variant = r.u32()?;
    if variant != CHANGE && variant != COMPACTED {
        return None;
    }
    let job = r.bytes()?;
    let seq = r.u64()?;
    let spec = r.option(Reader::spec)?.map(Arc::new);
    let event = r.event()?;
    let state = r.state(&event.boot)?;
    let change = StoredChange::new(job, seq, spec, event, state);
    let record = if variant == CHANGE {
        Unboxed::Change(change)
    } else {
        Unboxed::Compacted(change)
    };
    Some((record, r.bytes))
}

thread_local! {
    /// The spec decoded last, with the bytes that followed its id. A fleet's jobs mostly share
    /// their settings and differ by id: a spec whose bytes after its id are these is that spec
    /// with its own id (decoding is a function of the bytes read, and a spec's fields after its
    /// id do not depend on it), without serde's 2,000-odd instructions.
    static LAST_SPEC: RefCell<Option<(Vec<u8>, Arc<JobSpec>)>> = const { RefCell::new(None) };
}

/// A cursor over a record's bytes. Each read answers `None` where postcard would fail, or
/// where this module accepts less than serde (then serde reads the record).
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let (&byte, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(byte)
    }

    /// A varint of at most `max_bytes` bytes whose last byte is at most `last_max`: postcard's
    /// reading (which accepts a longer encoding than needed, and refuses overflow).
    #[inline(always)]
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> Option<u64> {
        // Most varints are one byte (small numbers, lengths, variant indices).
        if let Some((&byte, rest)) = self.bytes.split_first()
            && byte & 0x80 == 0
        {
            self.bytes = rest;
            return Some(u64::from(byte));
        }
        // Up to 8 bytes (a timestamp's seconds and nanoseconds take 5), read as one word.
        if let Some(word) = self
            .bytes
            .first_chunk::<8>()
            .map(|w| u64::from_le_bytes(*w))
        {
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                let len = ends.trailing_zeros() / 8 + 1;
                if len > max_bytes
                    || (len == max_bytes && (word >> (8 * (len - 1))) as u8 > last_max)
                {
                    return None;
                }
                let x = if len == 8 {
                    word
                } else {
                    word & ((1u64 << (8 * len)) - 1)
                };
                // The 7-bit groups, packed.
                let x = (x & 0x007F_007F_007F_007F) | ((x & 0x7F00_7F00_7F00_7F00) >> 1);
                let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x3FFF_0000_3FFF_0000) >> 2);
                let x = (x & 0x0000_0000_0FFF_FFFF) | ((x & 0x0FFF_FFFF_0000_0000) >> 4);
                self.bytes = self.bytes.get(len as usize..)?;
                return Some(x);
            }
        }
        let mut out = 0u64;
        for i in 0..max_bytes {
            let byte = self.byte()?;
            out |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return (i < max_bytes - 1 || byte <= last_max).then_some(out);
            }
        }
        None
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        // The last (fifth) byte holds 4 bits; what is read fits in a u32.
        u32::try_from(self.varint(5, 0x0F)?).ok()
    }

    #[inline(always)]
    fn i64(&mut self) -> Option<i64> {
        let n = self.u64()?;
        Some(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline(always)]
    fn i32(&mut self) -> Option<i32> {
        let n = self.u32()?;
        Some(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    /// A bool, or an option's tag (`true`: `Some`): one byte, 0 or 1.
    #[inline(always)]
    fn tag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// An option: its tag, then the value `read` reads if it is `Some`.
    #[inline(always)]
    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        Some(if self.tag()? { Some(read(self)?) } else { None })
    }

    /// A length-prefixed byte string. postcard reads a length as a `usize` varint: at most 10
    /// bytes where a pointer is 64 bits, 5 where it is 32 (a longer encoding of a short length
    /// is refused there).
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = if cfg!(target_pointer_width = "64") {
            usize::try_from(self.u64()?).ok()?
        } else if cfg!(target_pointer_width = "32") {
            usize::try_from(self.u32()?).ok()?
        } else {
            return None;
        };
        let (taken, rest) = self.bytes.split_at_checked(len)?;
        self.bytes = rest;
        Some(taken)
    }

    /// A job spec: its id, then its settings, which are the last spec's ([`LAST_SPEC`]) if
    /// their bytes are; else read by serde, and remembered.
    fn spec(&mut self) -> Option<JobSpec> {
        let start = self.bytes;
        let id = JobId::from_stored_once(self.bytes()?)?;
        let settings = self.bytes;
        let known = LAST_SPEC
            .try_with(|last| {
                let last = last.try_borrow().ok()?;
                let (bytes, spec) = last.as_ref()?;
                (!bytes.is_empty() && settings.starts_with(bytes))
                    .then(|| (bytes.len(), spec.with_id(id)))
            })
            .ok()
            .flatten();
        if let Some((len, spec)) = known {
            self.bytes = settings.get(len..)?;
            return Some(spec);
        }
        let (spec, rest) = postcard::take_from_bytes::<JobSpec>(start).ok()?;
        let used = settings.get(..settings.len().checked_sub(rest.len())?)?;
        let _ = LAST_SPEC.try_with(|last| {
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = Some((used.to_vec(), Arc::new(spec.clone())));
            }
        });
        self.bytes = rest;
        Some(spec)
    }

    /// `time_serde`'s binary form: seconds (i64), nanoseconds (u32).
    fn timestamp(&mut self) -> Option<Timestamp> {
        let secs = self.i64()?;
        let nanos = self.u32()?;
        from_parts_cached(secs, nanos)
    }

    /// serde's binary form of a `Duration`: seconds (u64), nanoseconds (u32). (serde carries
    /// nanoseconds of a second or more into the seconds: left to serde.)
    fn duration(&mut self) -> Option<Duration> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
    }

    fn attempt_ref(&mut self) -> Option<AttemptRef> {
        let run = self.u32()?;
        let number = self.u32()?;
        Some(AttemptRef { run, number })
    }

    fn program_id(&mut self) -> Option<ProgramId> {
        let pid = self.u32()?;
        let start = self.u64()?;
        Some(ProgramId::new(pid, start))
    }

    fn program_exit(&mut self) -> Option<ProgramExit> {
        match self.u32()? {
            0 => Some(ProgramExit::Code(self.i32()?)),
            1 => Some(ProgramExit::Signal(self.i32()?)),
            _ => None,
        }
    }

    fn event(&mut self) -> Option<Event> {
        let at = self.timestamp()?;
        let boot = BootId::from_stored::<postcard::Error>(self.bytes()?).ok()?;
        let since_boot = self.duration()?;
        let kind = self.event_kind()?;
        Some(Event {
            at,
            boot,
            since_boot,
            kind,
        })
    }

    fn event_kind(&mut self) -> Option<EventKind> {
        let kind = match self.u32()? {
            0 => EventKind::Offered,
            1 => EventKind::SpecChanged,
            2 => EventKind::AttemptStarted,
            3 => {
                let attempt = self.attempt_ref()?;
                let program = self.program_id()?;
                EventKind::Launched { attempt, program }
            }
            4 => EventKind::LaunchFailed {
                attempt: self.attempt_ref()?,
            },
            5 => {
                let attempt = self.attempt_ref()?;
                let exit = self.program_exit()?;
                let restart_pending = self.tag()?;
                EventKind::ProgramExited {
                    attempt,
                    exit,
                    restart_pending,
                }
            }
            6 => EventKind::ProgramLost {
                attempt: self.attempt_ref()?,
            },
            7 => EventKind::ShutdownNoticed,
            8 => {
                let program = self.program_status()?;
                let restart_of = self.option(Self::job_id)?;
                EventKind::AgentStarted {
                    program,
                    restart_of,
                }
            }
            9 => {
                let attempt = self.attempt_ref()?;
                let kind = self.reboot_kind()?;
                EventKind::RebootExpected { attempt, kind }
            }
            10 => {
                let attempt = self.attempt_ref()?;
                let result = match self.u32()? {
                    0 => CheckResult::Installed,
                    1 => CheckResult::NotInstalled,
                    2 => CheckResult::NotYet,
                    _ => return None,
                };
                EventKind::Verified { attempt, result }
            }
            11 => EventKind::Tick {
                program: self.program_status()?,
            },
            12 => EventKind::CancelRequested,
            13 => EventKind::RerunRequested,
            14 => EventKind::AbandonRequested,
            _ => return None,
        };
        Some(kind)
    }

    /// A boot id in a change's state: the empty string stands for the event's boot
    /// (`core/boot_scope.rs`).
    fn state_boot(&mut self, event_boot: &BootId) -> Option<BootId> {
        let bytes = self.bytes()?;
        if bytes.is_empty() {
            Some(event_boot.clone())
        } else {
            BootId::from_stored::<postcard::Error>(bytes).ok()
        }
    }

    fn attempt(&mut self, event_boot: &BootId) -> Option<Attempt> {
        let run = self.u32()?;
        let number = self.u32()?;
        let boot = self.state_boot(event_boot)?;
        let started_at = self.timestamp()?;
        let started_since_boot = self.duration()?;
        Some(Attempt {
            run,
            number,
            boot,
            started_at,
            started_since_boot,
        })
    }

    /// A job id, as its serde form reads it (through the per-thread cache of recent ids).
    fn job_id(&mut self) -> Option<JobId> {
        JobId::from_stored::<postcard::Error>(self.bytes()?).ok()
    }

    fn program_status(&mut self) -> Option<ProgramStatus> {
        match self.u32()? {
            0 => Some(ProgramStatus::Alive),
            1 => Some(ProgramStatus::Gone),
            2 => Some(ProgramStatus::Unknown),
            _ => None,
        }
    }

    fn reboot_kind(&mut self) -> Option<RebootKind> {
        match self.u32()? {
            0 => Some(RebootKind::Soft),
            1 => Some(RebootKind::Hard),
            _ => None,
        }
    }

    fn attribution(&mut self) -> Option<RebootAttribution> {
        match self.u32()? {
            0 => Some(RebootAttribution::RequestedByJob(self.reboot_kind()?)),
            1 => Some(RebootAttribution::InitiatedByProgram),
            2 => Some(RebootAttribution::ForJob(self.job_id()?)),
            3 => Some(RebootAttribution::Unrelated),
            _ => None,
        }
    }

    fn termination(&mut self) -> Option<Termination> {
        let at = self.timestamp()?;
        let since_boot = self.duration()?;
        let unresponsive = self.tag()?;
        Some(Termination {
            at,
            since_boot,
            unresponsive,
        })
    }

    fn provisional(&mut self) -> Option<ProvisionalFailure> {
        let exit = self.option(Self::program_exit)?;
        let since_boot = self.duration()?;
        Some(ProvisionalFailure { exit, since_boot })
    }

    fn failure(&mut self) -> Option<FailureReason> {
        Some(match self.u32()? {
            0 => FailureReason::ExitCode(self.i32()?),
            1 => FailureReason::Signal(self.i32()?),
            2 => FailureReason::TimedOut,
            3 => FailureReason::Interrupted(self.attribution()?),
            4 => FailureReason::NotDetected,
            5 => FailureReason::RebootLoop { boots: self.u32()? },
            6 => FailureReason::Cancelled,
            7 => FailureReason::ProgramLost,
            8 => FailureReason::LaunchFailed,
            9 => FailureReason::Abandoned,
            _ => return None,
        })
    }

    /// A change's state; `AwaitingReboot`, a termination and a provisional failure are left
    /// to serde.
    fn state(&mut self, event_boot: &BootId) -> Option<JobState> {
        match self.u32()? {
            0 => {
                let run = self.u32()?;
                let attempt = self.u32()?;
                let not_before = self.option(Self::timestamp)?;
                let last_failure = self.option(Self::failure)?;
                let previous = self.option(|r| r.attempt(event_boot))?;
                let check_before_retry = self.tag()?;
                Some(JobState::Queued {
                    run,
                    attempt,
                    not_before,
                    last_failure,
                    previous,
                    check_before_retry,
                })
            }
            1 => {
                let attempt = self.attempt(event_boot)?;
                let launch = match self.u32()? {
                    0 => Launch::Pending,
                    1 => Launch::Recorded(self.program_id()?),
                    2 => Launch::Observed,
                    _ => return None,
                };
                let shutdown_notice_at = self.option(Self::timestamp)?;
                let terminate = self.option(Self::termination)?;
                let provisional = self.option(Self::provisional)?;
                Some(JobState::Running {
                    attempt,
                    launch,
                    shutdown_notice_at,
                    terminate,
                    provisional,
                })
            }
            2 => {
                let attempt = self.attempt(event_boot)?;
                let cause = self.attribution()?;
                let requested_in = self.state_boot(event_boot)?;
                let since = self.timestamp()?;
                let since_boot = self.duration()?;
                let wait = self.u32()?;
                let overdue = self.u32()?;
                let exit = self.option(Self::program_exit)?;
                let reboots_seen = self.u32()?;
                let verifying_in = self.option(|r| r.state_boot(event_boot))?;
                Some(JobState::AwaitingReboot {
                    attempt,
                    cause,
                    requested_in,
                    since,
                    since_boot,
                    wait,
                    overdue,
                    exit,
                    reboots_seen,
                    verifying_in,
                })
            }
            3 => {
                let attempt = self.attempt(event_boot)?;
                let at = self.timestamp()?;
                let exit = self.option(Self::program_exit)?;
                let reboot = self.option(Self::attribution)?;
                let verified = self.tag()?;
                let restart_suppressed = self.tag()?;
                Some(JobState::Completed {
                    attempt,
                    at,
                    exit,
                    reboot,
                    verified,
                    restart_suppressed,
                })
            }
            4 => {
                let run = self.u32()?;
                let attempt = self.option(|r| r.attempt(event_boot))?;
                let at = self.timestamp()?;
                let reason = self.failure()?;
                Some(JobState::Failed {
                    run,
                    attempt,
                    at,
                    reason,
                })
            }
            _ => None,
        }
    }
}

// Journal format 3: a change written against its job's previous change (`change_delta.rs`
// writes it, and says what each field may be written as).

/// A format-3 change's job id bytes and the bytes after them.
#[inline(always)]
pub(crate) fn delta_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = Reader { bytes };
    if r.u32()? != u32::from(crate::change_delta::TAG) {
        return None;
    }
    let job = r.bytes()?;
    Some((job, r.bytes))
}

/// The attempt a state carries (or, queued, the one before it): what a format-3 attempt may be
/// written as "the previous state's".
pub(crate) fn last_attempt(state: &JobState) -> Option<&Attempt> {
    match state {
        JobState::Queued { previous, .. } => previous.as_ref(),
        JobState::Running { attempt, .. }
        | JobState::AwaitingReboot { attempt, .. }
        | JobState::Completed { attempt, .. } => Some(attempt),
        JobState::Failed { attempt, .. } => attempt.as_ref(),
    }
}

/// The rest of a format-3 change (after its job id), decoded against its job's previous change
/// (`prev`: its event and state): the entry it adds, and the bytes after it. `None` if the bytes
/// are not such a change.
#[inline(always)]
pub(crate) fn delta_body<'a>(
    bytes: &'a [u8],
    prev: (&Event, &JobState),
) -> Option<(crate::record::HistoryEntry, &'a [u8])> {
    let (prev_event, prev_state) = prev;
    let mut r = Reader { bytes };
    let seq = r.u64()?;
    let at = r.timestamp()?;
    let boot = r.bytes()?;
    let boot = if boot.is_empty() {
        prev_event.boot.clone()
    } else {
        BootId::from_stored::<postcard::Error>(boot).ok()?
    };
    let since_boot = r.duration()?;
    let kind = r.event_kind()?;
    let event = Event {
        at,
        boot,
        since_boot,
        kind,
    };
    let state = r.delta_state(&event, prev_state)?;
    Some((crate::record::HistoryEntry { seq, event, state }, r.bytes))
}

impl Reader<'_> {
    /// A timestamp: 0, the event's; 1, then the timestamp.
    #[inline(always)]
    fn ts_or_event(&mut self, event: &Event) -> Option<Timestamp> {
        match self.byte()? {
            0 => Some(event.at),
            1 => self.timestamp(),
            _ => None,
        }
    }

    #[inline(always)]
    fn dur_or_event(&mut self, event: &Event) -> Option<Duration> {
        match self.byte()? {
            0 => Some(event.since_boot),
            1 => self.duration(),
            _ => None,
        }
    }

    /// An attempt: 0, the previous state's; 1, then run, number, boot (empty: the event's),
    /// started at (or the event's), started since boot (or the event's).
    fn delta_attempt(&mut self, event: &Event, prev: &JobState) -> Option<Attempt> {
        match self.byte()? {
            0 => last_attempt(prev).cloned(),
            1 => {
                let run = self.u32()?;
                let number = self.u32()?;
                let boot = self.state_boot(&event.boot)?;
                let started_at = self.ts_or_event(event)?;
                let started_since_boot = self.dur_or_event(event)?;
                Some(Attempt {
                    run,
                    number,
                    boot,
                    started_at,
                    started_since_boot,
                })
            }
            _ => None,
        }
    }

    fn delta_state(&mut self, event: &Event, prev: &JobState) -> Option<JobState> {
        match self.u32()? {
            0 => {
                let run = self.u32()?;
                let attempt = self.u32()?;
                let not_before = self.option(|r| r.ts_or_event(event))?;
                let last_failure = self.option(Self::failure)?;
                let previous = self.option(|r| r.delta_attempt(event, prev))?;
                let check_before_retry = self.tag()?;
                Some(JobState::Queued {
                    run,
                    attempt,
                    not_before,
                    last_failure,
                    previous,
                    check_before_retry,
                })
            }
            1 => {
                let attempt = self.delta_attempt(event, prev)?;
                let launch = match self.u32()? {
                    0 => Launch::Pending,
                    1 => Launch::Recorded(self.program_id()?),
                    2 => Launch::Observed,
                    _ => return None,
                };
                let shutdown_notice_at = self.option(|r| r.ts_or_event(event))?;
                let terminate = self.option(Self::termination)?;
                let provisional = self.option(Self::provisional)?;
                Some(JobState::Running {
                    attempt,
                    launch,
                    shutdown_notice_at,
                    terminate,
                    provisional,
                })
            }
            3 => {
                let attempt = self.delta_attempt(event, prev)?;
                let at = self.ts_or_event(event)?;
                let exit = self.option(Self::program_exit)?;
                let reboot = self.option(Self::attribution)?;
                let verified = self.tag()?;
                let restart_suppressed = self.tag()?;
                Some(JobState::Completed {
                    attempt,
                    at,
                    exit,
                    reboot,
                    verified,
                    restart_suppressed,
                })
            }
            4 => {
                let run = self.u32()?;
                let attempt = self.option(|r| r.delta_attempt(event, prev))?;
                let at = self.ts_or_event(event)?;
                let reason = self.failure()?;
                Some(JobState::Failed {
                    run,
                    attempt,
                    at,
                    reason,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The decoder against serde: on every shape of a change (those it reads and those it
    //! leaves to serde) and on damaged bytes, whenever it answers, its answer and the bytes it
    //! used are serde's. Random changes: 512 cases (each also damaged 16 ways);
    //! `JOBSTATE_PROPTEST_MULTIPLIER=100` runs 100 times more.

    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    use super::*;
    use crate::core::event::CheckResult;
    use crate::core::id::JobId;
    use crate::core::program::ProgramStatus;
    use crate::core::state::{ProvisionalFailure, Termination};
    use crate::record::{Change, Record};

    fn serde_decode(bytes: &[u8]) -> Option<(Unboxed<'_>, &[u8])> {
        postcard::take_from_bytes::<Unboxed>(bytes).ok()
    }

    pub(crate) fn boot() -> impl Strategy<Value = BootId> {
        prop_oneof![Just("E"), Just("S"), Just("T")].prop_map(|b| BootId::new(b).unwrap())
    }

    pub(crate) fn time() -> impl Strategy<Value = Timestamp> {
        let min = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp();
        let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp();
        (
            prop_oneof![min..=max, 1_700_000_000i64..1_900_000_000],
            prop_oneof![
                Just(0u32),
                0..1_000_000_000u32,
                1_000_000_000..2_000_000_000u32
            ],
        )
            // Nanoseconds of a second or more are a leap second, valid only at a minute's last
            // second: elsewhere the same instant without it (no rejection, whatever the count).
            .prop_map(|(s, n)| {
                chrono::DateTime::from_timestamp(s, n)
                    .or_else(|| chrono::DateTime::from_timestamp(s, n % 1_000_000_000))
                    .unwrap_or(chrono::DateTime::UNIX_EPOCH)
            })
    }

    pub(crate) fn duration() -> impl Strategy<Value = Duration> {
        (
            prop_oneof![Just(0u64), 0..100_000u64, Just(u64::MAX)],
            0..1_000_000_000u32,
        )
            .prop_map(|(s, n)| Duration::new(s, n))
    }

    fn exit() -> impl Strategy<Value = ProgramExit> {
        prop_oneof![
            any::<i32>().prop_map(ProgramExit::Code),
            any::<i32>().prop_map(ProgramExit::Signal)
        ]
    }

    fn attempt_ref() -> impl Strategy<Value = AttemptRef> {
        (any::<u32>(), 0..5u32).prop_map(|(run, number)| AttemptRef { run, number })
    }

    fn attempt() -> impl Strategy<Value = Attempt> {
        (0..3u32, any::<u32>(), boot(), time(), duration()).prop_map(
            |(run, number, boot, started_at, started_since_boot)| Attempt {
                run,
                number,
                boot,
                started_at,
                started_since_boot,
            },
        )
    }

    fn attribution() -> impl Strategy<Value = RebootAttribution> {
        prop_oneof![
            Just(RebootAttribution::RequestedByJob(RebootKind::Soft)),
            Just(RebootAttribution::RequestedByJob(RebootKind::Hard)),
            Just(RebootAttribution::InitiatedByProgram),
            Just(RebootAttribution::ForJob(JobId::new("other").unwrap())),
            Just(RebootAttribution::Unrelated),
        ]
    }

    fn failure() -> impl Strategy<Value = FailureReason> {
        prop_oneof![
            any::<i32>().prop_map(FailureReason::ExitCode),
            any::<i32>().prop_map(FailureReason::Signal),
            Just(FailureReason::TimedOut),
            attribution().prop_map(FailureReason::Interrupted),
            Just(FailureReason::NotDetected),
            any::<u32>().prop_map(|boots| FailureReason::RebootLoop { boots }),
            Just(FailureReason::Cancelled),
            Just(FailureReason::ProgramLost),
            Just(FailureReason::LaunchFailed),
            Just(FailureReason::Abandoned),
        ]
    }

    fn program() -> impl Strategy<Value = ProgramId> {
        (any::<u32>(), any::<u64>()).prop_map(|(pid, start)| ProgramId::new(pid, start))
    }

    pub(crate) fn state() -> BoxedStrategy<JobState> {
        let queued = (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(time()),
            proptest::option::of(failure()),
            proptest::option::of(attempt()),
            any::<bool>(),
        )
            .prop_map(
                |(run, attempt, not_before, last_failure, previous, check_before_retry)| {
                    JobState::Queued {
                        run,
                        attempt,
                        not_before,
                        last_failure,
                        previous,
                        check_before_retry,
                    }
                },
            );
        let launch = prop_oneof![
            Just(Launch::Pending),
            program().prop_map(Launch::Recorded),
            Just(Launch::Observed)
        ];
        let termination =
            (time(), duration(), any::<bool>()).prop_map(|(at, since_boot, unresponsive)| {
                Termination {
                    at,
                    since_boot,
                    unresponsive,
                }
            });
        let provisional = (proptest::option::of(exit()), duration())
            .prop_map(|(exit, since_boot)| ProvisionalFailure { exit, since_boot });
        let running = (
            attempt(),
            launch,
            proptest::option::of(time()),
            proptest::option::weighted(0.2, termination),
            proptest::option::weighted(0.2, provisional),
        )
            .prop_map(
                |(attempt, launch, shutdown_notice_at, terminate, provisional)| JobState::Running {
                    attempt,
                    launch,
                    shutdown_notice_at,
                    terminate,
                    provisional,
                },
            );
        let awaiting = (
            (attempt(), attribution(), boot(), time(), duration()),
            (
                1..3u32,
                0..3u32,
                proptest::option::of(exit()),
                any::<u32>(),
                proptest::option::of(boot()),
            ),
        )
            .prop_map(
                |(
                    (attempt, cause, requested_in, since, since_boot),
                    (wait, overdue, exit, reboots_seen, verifying_in),
                )| JobState::AwaitingReboot {
                    attempt,
                    cause,
                    requested_in,
                    since,
                    since_boot,
                    wait,
                    overdue,
                    exit,
                    reboots_seen,
                    verifying_in,
                },
            );
        let completed = (
            attempt(),
            time(),
            proptest::option::of(exit()),
            proptest::option::of(attribution()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(attempt, at, exit, reboot, verified, restart_suppressed)| JobState::Completed {
                    attempt,
                    at,
                    exit,
                    reboot,
                    verified,
                    restart_suppressed,
                },
            );
        let failed = (
            any::<u32>(),
            proptest::option::of(attempt()),
            time(),
            failure(),
        )
            .prop_map(|(run, attempt, at, reason)| JobState::Failed {
                run,
                attempt,
                at,
                reason,
            });
        prop_oneof![
            queued.boxed(),
            running.boxed(),
            awaiting.boxed(),
            completed.boxed(),
            failed.boxed()
        ]
        .boxed()
    }

    fn program_status() -> impl Strategy<Value = ProgramStatus> {
        prop_oneof![
            Just(ProgramStatus::Alive),
            Just(ProgramStatus::Gone),
            Just(ProgramStatus::Unknown)
        ]
    }

    pub(crate) fn kind() -> BoxedStrategy<EventKind> {
        prop_oneof![
            Just(EventKind::Offered),
            Just(EventKind::SpecChanged),
            Just(EventKind::AttemptStarted),
            (attempt_ref(), program())
                .prop_map(|(attempt, program)| EventKind::Launched { attempt, program }),
            attempt_ref().prop_map(|attempt| EventKind::LaunchFailed { attempt }),
            (attempt_ref(), exit(), any::<bool>()).prop_map(|(attempt, exit, restart_pending)| {
                EventKind::ProgramExited {
                    attempt,
                    exit,
                    restart_pending,
                }
            }),
            attempt_ref().prop_map(|attempt| EventKind::ProgramLost { attempt }),
            Just(EventKind::ShutdownNoticed),
            (
                program_status(),
                proptest::option::of(Just(JobId::new("other").unwrap()))
            )
                .prop_map(|(program, restart_of)| EventKind::AgentStarted {
                    program,
                    restart_of
                }),
            (attempt_ref(), any::<bool>()).prop_map(|(attempt, hard)| {
                EventKind::RebootExpected {
                    attempt,
                    kind: if hard {
                        RebootKind::Hard
                    } else {
                        RebootKind::Soft
                    },
                }
            }),
            (
                attempt_ref(),
                prop_oneof![
                    Just(CheckResult::Installed),
                    Just(CheckResult::NotInstalled),
                    Just(CheckResult::NotYet)
                ]
            )
                .prop_map(|(attempt, result)| EventKind::Verified { attempt, result }),
            program_status().prop_map(|program| EventKind::Tick { program }),
            Just(EventKind::CancelRequested),
            Just(EventKind::RerunRequested),
            Just(EventKind::AbandonRequested),
        ]
        .boxed()
    }

    pub(crate) fn change() -> BoxedStrategy<(bool, Change)> {
        (
            any::<bool>(),
            prop_oneof![Just("patch"), Just("kb-5034441"), Just("ü-job")],
            prop_oneof![Just(1u64), any::<u64>()],
            proptest::option::of((any::<bool>(), 0..3u32, any::<bool>())),
            (time(), boot(), duration(), kind()),
            state(),
        )
            .prop_map(
                |(compacted, job, seq, spec, (at, boot, since_boot, kind), state)| {
                    let job = JobId::new(job).unwrap();
                    // Specs that differ by id and by settings: the decoder's last spec is reused
                    // for some and not for others.
                    let spec = spec.map(|(mandatory, reboots, unix)| {
                        let codes = if unix {
                            crate::core::exit_code::ExitCodePolicy::unix()
                        } else {
                            crate::core::exit_code::ExitCodePolicy::windows_installer()
                        };
                        Arc::new(
                            JobSpec::new(job.clone())
                                .with_mandatory(mandatory)
                                .with_max_reboots(reboots)
                                .with_exit_codes(codes),
                        )
                    });
                    let event = Event {
                        at,
                        boot,
                        since_boot,
                        kind,
                    };
                    (
                        compacted,
                        Change {
                            job,
                            seq,
                            spec,
                            event,
                            state,
                        },
                    )
                },
            )
            .boxed()
    }

    fn encoded(compacted: bool, change: &Change) -> Vec<u8> {
        let change = Box::new(change.clone());
        let record = if compacted {
            Record::Compacted(change)
        } else {
            Record::Change(change)
        };
        let mut bytes = Vec::new();
        crate::codec::encode_into(&record, &mut bytes).unwrap();
        bytes
    }

    /// Whatever the decoder answers for `bytes` is serde's answer.
    fn agrees(bytes: &[u8]) -> Result<bool, TestCaseError> {
        let Some((fast, fast_rest)) = decode(bytes) else {
            return Ok(false);
        };
        let Some((slow, slow_rest)) = serde_decode(bytes) else {
            return Err(TestCaseError::fail(format!(
                "the decoder read bytes serde refuses: {bytes:?}"
            )));
        };
        prop_assert_eq!(fast, slow);
        prop_assert_eq!(fast_rest.len(), slow_rest.len());
        Ok(true)
    }

    pub(crate) fn cases() -> u32 {
        let multiplier: u32 = std::env::var("JOBSTATE_PROPTEST_MULTIPLIER")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(1);
        512 * multiplier
    }

    /// The integers as postcard reads them, on random bytes: every length, a continuation bit
    /// or not on each byte, encodings longer than needed, overflow.
    #[test]
    fn integers_are_read_as_postcard_reads_them() {
        fn same<T: PartialEq + std::fmt::Debug + for<'a> serde::Deserialize<'a>>(
            bytes: &[u8],
            read: impl Fn(&mut Reader<'_>) -> Option<T>,
        ) -> Result<(), TestCaseError> {
            let mut r = Reader { bytes };
            let ours = read(&mut r).map(|v| (v, r.bytes.len()));
            let theirs = postcard::take_from_bytes::<T>(bytes)
                .ok()
                .map(|(v, rest)| (v, rest.len()));
            prop_assert_eq!(ours, theirs, "{:?}", bytes);
            Ok(())
        }
        let byte = prop_oneof![
            0x80..=0xFFu8,
            0..0x80u8,
            Just(0x80u8),
            Just(0u8),
            Just(1u8),
            Just(0x0Fu8),
            Just(0x10u8)
        ];
        let mut runner = TestRunner::new(Config {
            failure_persistence: None,
            ..Config::with_cases(cases() * 16)
        });
        runner
            .run(&proptest::collection::vec(byte, 0..14), |bytes| {
                same::<u64>(&bytes, |r| r.u64())?;
                same::<u32>(&bytes, |r| r.u32())?;
                same::<i64>(&bytes, |r| r.i64())?;
                same::<i32>(&bytes, |r| r.i32())?;
                same::<bool>(&bytes, |r| r.tag())?;
                same::<Vec<u8>>(&bytes, |r| r.bytes().map(<[u8]>::to_vec))?;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "change decoder: {} byte strings read as postcard reads them",
            cases() * 16
        );
    }

    /// A duration of a second of nanoseconds or more is left to serde, which carries them into
    /// the seconds or refuses the overflow; the decoder answers nothing for it, and never
    /// panics (a carry past `u64::MAX` seconds would, in `Duration::new`).
    #[test]
    fn durations_of_a_second_of_nanoseconds_or_more_are_left_to_serde() {
        for (secs, nanos) in [
            (5, 999_999_999),
            (u64::MAX, 999_999_999),
            (5, 1_000_000_000),
            (5, u32::MAX),
            (u64::MAX, 1_000_000_000),
        ] {
            let bytes = postcard::to_stdvec(&(secs, nanos)).unwrap();
            let ours = Reader { bytes: &bytes }.duration();
            let theirs = postcard::from_bytes::<Duration>(&bytes).ok();
            if nanos < 1_000_000_000 {
                assert_eq!(ours, Some(Duration::new(secs, nanos)));
                assert_eq!(ours, theirs);
            } else {
                assert_eq!(ours, None, "{secs} s {nanos} ns: serde reads {theirs:?}");
            }
        }
    }

    #[test]
    fn the_decoder_reads_what_serde_reads() {
        let mut runner = TestRunner::new(Config {
            failure_persistence: None,
            ..Config::with_cases(cases())
        });
        let counts = std::cell::Cell::new((0u32, 0u32, 0u32, 0u32));
        let strategy = (
            change(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 16),
        );
        runner
            .run(&strategy, |((compacted, change), damage)| {
                let mut bytes = encoded(compacted, &change);
                // Another record after it: the decoder stops where the record ends.
                bytes.extend(encoded(false, &change));
                let read = agrees(&bytes)?;
                prop_assert!(read, "every shape is read by the decoder: {:?}", change);
                let (mut fast, mut damaged, mut damaged_read, mut left) = counts.get();
                fast += 1;
                // Damaged: a byte replaced, or the bytes cut short there.
                for (i, (at, byte)) in damage.iter().enumerate() {
                    let at = at.index(bytes.len());
                    let mut bad = bytes.clone();
                    if i % 4 == 3 {
                        bad.truncate(at);
                    } else {
                        bad[at] = *byte;
                    }
                    damaged += 1;
                    if agrees(&bad)? {
                        damaged_read += 1;
                    } else if serde_decode(&bad).is_some() {
                        left += 1;
                    }
                }
                counts.set((fast, damaged, damaged_read, left));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let (fast, damaged, damaged_read, left) = counts.get();
        eprintln!(
            "change decoder: {} cases, {fast} read by the decoder as serde reads them; {damaged} damaged, {damaged_read} of them read by the decoder as serde reads them, {left} refused by the decoder and read by serde, the rest refused by both",
            cases()
        );
        assert!(fast == cases() && damaged_read > 0);
    }
}

//! Journal format 3: a change written against its job's previous change.
//!
//! Most of a journal is a job's later changes (started, exited, completed), and most of what
//! format 2 writes for them repeats the change before: the event's boot, the attempt, the times
//! the state records (the event's own time). Recovery reads every byte and decodes every field
//! of a million of them, so format 3 writes such a change as a record of its own tag ([`TAG`],
//! a record variant format 2 never writes) with what the job's previous change implies left
//! out:
//!
//! ```text
//! change3 = TAG | job id | seq | event | state3
//! event   = at | boot ("" = the previous change's event boot) | since boot | kind
//! state3  = a state as format 2 writes it (variants Queued, Running, Completed, Failed), except:
//!           each timestamp and `started_since_boot`: 0 = the event's, or 1 then the value;
//!           each attempt: 0 = the previous state's (`last_attempt`), or 1 then the attempt
//!           (its boot "" = the event's, as in format 2)
//! ```
//!
//! The previous change is the job's last history entry, which the reader holds when it reaches
//! the record (the journal is replayed in order, and every job keeps its last change, a
//! tombstone too). A change that carries a spec, or whose state is `AwaitingReboot`, is written
//! as format 2 writes it, and so is every other record. Each format-3 record is decoded again as
//! it is written and compared with the change: one the decoder would not read back exactly is
//! written in format 2 instead, so a gap between the two can cost bytes, never a change.

use crate::change_decoder;
use crate::codec::{self, EncodeError, RecordRef};
use crate::core::Timestamp;
use crate::core::event::Event;
use crate::core::id::JobId;
use crate::core::state::{Attempt, JobState};
use crate::few_keys::FewKeys;
use crate::record::{Change, ChangeRef, JobTable};
use crate::store::Commit;
use std::time::Duration;

/// The record tag of a change written against its job's previous change: the variant index
/// after format 2's last (`Compacted`, 6).
pub(crate) const TAG: u8 = 7;

/// Appends the records of `commit` as a format-3 journal frame holds them: each change of a job
/// that has a previous change (earlier in `commit`, or else the last in `jobs`, the store before
/// the commit) written against it where it can be, everything else as [`codec::encode_commit`]
/// writes it, in the same order.
pub(crate) fn encode_commit(
    commit: &Commit,
    jobs: &JobTable,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    // Each job's latest change so far in this commit, by index (a map past a few: a
    // reconciliation commits a change for every job at once).
    let mut latest: FewKeys<'_, JobId, usize> = FewKeys::for_count(commit.changes.len());
    for (i, change) in commit.changes.iter().enumerate() {
        // The previous change in the same commit, if any: what the reader's job table holds
        // as the job's last entry once it has applied the records before this one.
        let earlier = latest
            .get(&change.job)
            .and_then(|j| commit.changes.get(j))
            .map(|c| (&c.event, &c.state));
        latest.insert(&change.job, i);
        let prev = earlier.or_else(|| {
            jobs.get(&change.job)
                .and_then(|job| job.history().last())
                .map(|entry| (&entry.event, &entry.state))
        });
        if let Some(prev) = prev
            && write_against(change, prev, out)?
        {
            continue;
        }
        codec::extend(&RecordRef::Change(ChangeRef::from(change)), out)?;
    }
    let reports = commit.reports.iter().map(RecordRef::Report);
    let delivered = commit.delivered.iter().map(RecordRef::Delivered);
    let dead = commit.dead_lettered.iter().map(RecordRef::DeadLettered);
    let requeued = commit.requeued.iter().map(RecordRef::Requeued);
    let discarded = commit.discarded.iter().map(RecordRef::Discarded);
    for record in reports
        .chain(delivered)
        .chain(dead)
        .chain(requeued)
        .chain(discarded)
    {
        codec::extend(&record, out)?;
    }
    Ok(())
}

/// Appends `change` as a format-3 record against `prev` (its job's previous event and state),
/// and answers `true`; or writes nothing and answers `false` where format 2 must write it (a
/// spec, `AwaitingReboot`, or bytes the decoder would not read back as `change`).
fn write_against(
    change: &Change,
    prev: (&Event, &JobState),
    out: &mut Vec<u8>,
) -> Result<bool, EncodeError> {
    if change.spec.is_some() || matches!(change.state, JobState::AwaitingReboot { .. }) {
        return Ok(false);
    }
    let start = out.len();
    let written = Writer {
        event: &change.event,
        prev_state: prev.1,
        out,
    }
    .change(change, prev.0);
    if let Err(error) = written {
        out.truncate(start);
        return Err(error);
    }
    if !reads_back(&out[start..], change, prev) {
        out.truncate(start);
        return Ok(false);
    }
    Ok(true)
}

/// Whether `bytes` decode, against `prev`, to exactly `change` and nothing more.
fn reads_back(bytes: &[u8], change: &Change, prev: (&Event, &JobState)) -> bool {
    let Some((job, rest)) = change_decoder::delta_head(bytes) else {
        return false;
    };
    if job != change.job.as_str().as_bytes() {
        return false;
    }
    matches!(
        change_decoder::delta_body(rest, prev),
        Some((entry, [])) if entry.seq == change.seq
            && entry.event == change.event
            && entry.state == change.state
    )
}

/// Writes one format-3 change: the event's time and the previous state are what fields may
/// be written as.
struct Writer<'a> {
    event: &'a Event,
    prev_state: &'a JobState,
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn change(&mut self, change: &Change, prev_event: &Event) -> Result<(), EncodeError> {
        let event = self.event;
        self.out.push(TAG);
        self.bytes(change.job.as_str().as_bytes());
        self.varint(change.seq);
        self.timestamp(&event.at);
        if event.boot == prev_event.boot {
            self.bytes(b"");
        } else {
            self.bytes(event.boot.as_str().as_bytes());
        }
        self.duration(&event.since_boot);
        self.serde(&event.kind)?;
        match &change.state {
            JobState::Queued {
                run,
                attempt,
                not_before,
                last_failure,
                previous,
                check_before_retry,
            } => {
                self.varint(0);
                self.varint(u64::from(*run));
                self.varint(u64::from(*attempt));
                self.option(not_before.as_ref(), Self::timestamp_or_event);
                self.serde(last_failure)?;
                self.option(previous.as_ref(), Self::attempt);
                self.out.push(u8::from(*check_before_retry));
            }
            JobState::Running {
                attempt,
                launch,
                shutdown_notice_at,
                terminate,
                provisional,
            } => {
                self.varint(1);
                self.attempt(attempt);
                self.serde(launch)?;
                self.option(shutdown_notice_at.as_ref(), Self::timestamp_or_event);
                self.serde(terminate)?;
                self.serde(provisional)?;
            }
            JobState::Completed {
                attempt,
                at,
                exit,
                reboot,
                verified,
                restart_suppressed,
            } => {
                self.varint(3);
                self.attempt(attempt);
                self.timestamp_or_event(at);
                self.serde(exit)?;
                self.serde(reboot)?;
                self.out.push(u8::from(*verified));
                self.out.push(u8::from(*restart_suppressed));
            }
            JobState::Failed {
                run,
                attempt,
                at,
                reason,
            } => {
                self.varint(4);
                self.varint(u64::from(*run));
                self.option(attempt.as_ref(), Self::attempt);
                self.timestamp_or_event(at);
                self.serde(reason)?;
            }
            // Written in format 2 (`write_against` does not come here).
            JobState::AwaitingReboot { .. } => {
                return Err(EncodeError {
                    detail: "a state awaiting a reboot has no format-3 form".into(),
                });
            }
        }
        Ok(())
    }

    /// postcard's varint.
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.out.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    /// As format 2 writes a timestamp: seconds (zigzag), nanoseconds.
    fn timestamp(&mut self, t: &Timestamp) {
        let secs = t.timestamp();
        self.varint(((secs << 1) ^ (secs >> 63)) as u64);
        self.varint(u64::from(t.timestamp_subsec_nanos()));
    }

    fn duration(&mut self, d: &Duration) {
        self.varint(d.as_secs());
        self.varint(u64::from(d.subsec_nanos()));
    }

    fn timestamp_or_event(&mut self, t: &Timestamp) {
        if *t == self.event.at {
            self.out.push(0);
        } else {
            self.out.push(1);
            self.timestamp(t);
        }
    }

    fn duration_or_event(&mut self, d: &Duration) {
        if *d == self.event.since_boot {
            self.out.push(0);
        } else {
            self.out.push(1);
            self.duration(d);
        }
    }

    /// postcard's `Option`: 0, or 1 then the value.
    fn option<T>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match value {
            None => self.out.push(0),
            Some(value) => {
                self.out.push(1);
                write(self, value);
            }
        }
    }

    fn attempt(&mut self, attempt: &Attempt) {
        if change_decoder::last_attempt(self.prev_state) == Some(attempt) {
            self.out.push(0);
            return;
        }
        self.out.push(1);
        self.varint(u64::from(attempt.run));
        self.varint(u64::from(attempt.number));
        if attempt.boot == self.event.boot {
            self.bytes(b"");
        } else {
            self.bytes(attempt.boot.as_str().as_bytes());
        }
        self.timestamp_or_event(&attempt.started_at);
        self.duration_or_event(&attempt.started_since_boot);
    }

    /// A field as format 2 writes it (postcard).
    fn serde<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        *self.out =
            postcard::to_extend(value, std::mem::take(self.out)).map_err(|e| EncodeError {
                detail: e.to_string(),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Format 3 against format 2: every change that has a format-3 form is written in it, reads
    //! back exactly, and is shorter. Random changes against random previous changes: 512 cases;
    //! `JOBSTATE_PROPTEST_MULTIPLIER=100` runs 100 times more.

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;
    use crate::change_decoder::tests::{boot, cases, change, duration, kind, state, time};
    use crate::core::event::AttemptRef;
    use crate::core::event::EventKind;
    use crate::core::exit_code::ProgramExit;
    use crate::core::id::{BootId, JobId};
    use crate::core::spec::{JobSpec, RebootBehaviour};
    use crate::store::{Record, Replay, Revision};

    /// The format-2 bytes of `change`.
    fn format_2(change: &Change) -> Vec<u8> {
        let mut out = Vec::new();
        codec::extend(&RecordRef::Change(ChangeRef::from(change)), &mut out).unwrap();
        out
    }

    /// Writes `change` against `prev` after `before`: whether it was written in format 3, after
    /// checking that it reads back exactly and left `before` alone.
    fn written(change: &Change, prev: (&Event, &JobState)) -> Result<bool, TestCaseError> {
        let before = vec![0xA5, 0x5A];
        let mut out = before.clone();
        let format_3 = write_against(change, prev, &mut out).unwrap();
        prop_assert!(out.starts_with(&before));
        if !format_3 {
            prop_assert_eq!(&out, &before, "nothing written when format 2 must be");
            return Ok(false);
        }
        let (job, rest) = change_decoder::delta_head(&out[before.len()..]).unwrap();
        prop_assert_eq!(job, change.job.as_str().as_bytes());
        let (entry, rest) = change_decoder::delta_body(rest, prev).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(
            (entry.seq, &entry.event, &entry.state),
            (change.seq, &change.event, &change.state)
        );
        prop_assert!(
            out.len() - before.len() <= format_2(change).len() + 8,
            "format 3 of {:?}: {} bytes, format 2 {}",
            change,
            out.len() - before.len(),
            format_2(change).len()
        );
        Ok(true)
    }

    #[test]
    fn every_change_without_a_spec_or_a_reboot_is_written_in_format_3_and_reads_back() {
        let mut runner = TestRunner::new(Config {
            failure_persistence: None,
            ..Config::with_cases(cases())
        });
        let prev_event =
            (time(), boot(), duration(), kind()).prop_map(|(at, boot, since_boot, kind)| Event {
                at,
                boot,
                since_boot,
                kind,
            });
        let same_boot = any::<bool>();
        let counts = std::cell::Cell::new((0u32, 0u32));
        runner
            .run(
                &(change(), prev_event, state(), same_boot),
                |((_, change), mut prev_event, prev_state, same_boot)| {
                    if same_boot {
                        prev_event.boot = change.event.boot.clone();
                    }
                    let eligible = change.spec.is_none()
                        && !matches!(change.state, JobState::AwaitingReboot { .. });
                    let format_3 = written(&change, (&prev_event, &prev_state))?;
                    prop_assert_eq!(format_3, eligible, "{:?}", change);
                    let (all, three) = counts.get();
                    counts.set((all + 1, three + u32::from(format_3)));
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let (all, three) = counts.get();
        eprintln!("format 3: {all} random changes, {three} written in format 3 and read back");
        assert!(three > 0);
    }

    /// A job's life as the state machine makes it (offered, started, failed, started, completed;
    /// and one that restarts the machine): every change after the first is written in format 3
    /// but the one awaiting the reboot, and a commit of them replays to the same jobs.
    #[test]
    fn a_jobs_real_life_is_written_against_its_previous_changes_and_replays() {
        let boot = BootId::new("3f1c9a52-8e2b-4d7a-9c11-5b0e2f6a7d43").unwrap();
        let mut at: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        let mut since_boot = Duration::from_secs(60);
        let mut changes = Vec::new();
        for (name, reboot) in [
            ("kb5034441", RebootBehaviour::Never),
            ("os-upgrade", RebootBehaviour::RestartsMachine),
        ] {
            let spec = JobSpec::new(JobId::new(name).unwrap()).with_reboot(reboot);
            let mut state = JobState::initial();
            let mut event = |kind| {
                at += chrono::TimeDelta::seconds(7);
                since_boot += Duration::from_secs(7);
                Event {
                    at,
                    boot: boot.clone(),
                    since_boot,
                    kind,
                }
            };
            changes.push(Change {
                job: spec.id().clone(),
                seq: 1,
                spec: Some(spec.clone().into()),
                event: event(EventKind::Offered),
                state: state.clone(),
            });
            for exit in [1603, 0] {
                let restarts = reboot == RebootBehaviour::RestartsMachine;
                for step in 0..3 {
                    let attempt = match &state {
                        JobState::Running { attempt, .. } => AttemptRef {
                            run: attempt.run,
                            number: attempt.number,
                        },
                        _ => AttemptRef { run: 1, number: 0 },
                    };
                    let kind = match step {
                        0 => EventKind::AttemptStarted,
                        1 if restarts => EventKind::RebootExpected {
                            attempt,
                            kind: crate::core::state::RebootKind::Hard,
                        },
                        1 => continue,
                        _ => EventKind::ProgramExited {
                            attempt,
                            exit: ProgramExit::Code(exit),
                            restart_pending: false,
                        },
                    };
                    let event = event(kind);
                    // A step the job's state does not take (the restarting job exits into
                    // its wait for the reboot) is left out.
                    let Some(next) = crate::core::transition::transition(&spec, &state, &event)
                        .ok()
                        .and_then(|step| step.state)
                    else {
                        continue;
                    };
                    state = next;
                    changes.push(Change {
                        job: spec.id().clone(),
                        seq: changes.iter().filter(|c| c.job == *spec.id()).count() as u64 + 1,
                        spec: None,
                        event,
                        state: state.clone(),
                    });
                }
            }
        }
        // Each change against the one before it, in one commit.
        let commit = Commit::new(Revision(0), changes.clone());
        let mut three = Vec::new();
        encode_commit(&commit, &Replay::default().jobs().clone(), &mut three).unwrap();
        let mut two = Vec::new();
        codec::encode_commit(&commit, &mut two).unwrap();
        let mut replay = Replay::default();
        let mut rest = &three[..];
        let mut format_3 = 0;
        while let Some(&tag) = rest.first() {
            rest = if tag == TAG {
                format_3 += 1;
                replay.apply_delta(rest).unwrap()
            } else {
                let (record, rest) = codec::take_record(rest).unwrap();
                replay.apply_unboxed(record).unwrap();
                rest
            };
        }
        let mut whole = Replay::default();
        for change in &changes {
            whole
                .apply(Record::Change(Box::new(change.clone())))
                .unwrap();
        }
        assert_eq!(
            replay.snapshot(Revision(1)).jobs,
            whole.snapshot(Revision(1)).jobs
        );
        let awaiting = changes
            .iter()
            .filter(|c| matches!(c.state, JobState::AwaitingReboot { .. }))
            .count();
        assert!(awaiting > 0, "the restarting job awaits its reboot");
        assert_eq!(format_3, changes.len() - 2 - awaiting);
        assert!(
            three.len() * 4 < two.len() * 3,
            "format 3: {} bytes, format 2: {}",
            three.len(),
            two.len()
        );
        eprintln!(
            "format 3: {} changes, {format_3} written against the one before: {} bytes, format 2 {}",
            changes.len(),
            three.len(),
            two.len()
        );
    }
}

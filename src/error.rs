//! The ledger's error type.

use std::fmt;

use crate::{JobId, SessionError, StoreError, Timestamp, TransitionError};

/// Why a queued job cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// The job runs only with a user logged on, and nobody is.
    NeedsUser,
    /// The job runs only without a user logged on, and someone is.
    NeedsNoUser,
    /// The job needs a user, or needs none, and who is logged on is unknown.
    UserPresenceUnknown,
    /// The job's detection check must say whether the failed attempt's result is there before
    /// another attempt starts: run it and pass the result to
    /// [`Ledger::verification`](crate::Ledger::verification).
    CheckPending,
    /// The job is backing off after a failed attempt.
    BackingOff {
        /// Not before this time.
        until: Timestamp,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NeedsUser => f.write_str("it runs only while a user is logged on, and none is"),
            WaitReason::NeedsNoUser => {
                f.write_str("it runs only while no user is logged on, and one is")
            }
            WaitReason::UserPresenceUnknown => f.write_str(
                "its run condition depends on a logged-on user, and whether one is logged on is unknown",
            ),
            WaitReason::CheckPending => f.write_str(
                "its detection check must first say whether the failed attempt's result is there",
            ),
            WaitReason::BackingOff { until } => {
                write!(f, "it is backing off after a failed attempt until {until}")
            }
        }
    }
}

/// Why a ledger operation failed. The ledger is as it was and hands out no effect; reopen it
/// after [`StoreError::Conflict`] or a store failure. (After a failed write or sync the store
/// cannot say whether the commit reached the disk: a reopened ledger may show it.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job with this id is known.
    #[error("no job with id {0} is known: advertise it first")]
    UnknownJob(JobId),
    /// The state machine refused the event.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The job is queued but may not start now.
    #[error("job {job} cannot start now: {reason}; ask again later (next_runnable says when)")]
    NotRunnable {
        /// The job.
        job: JobId,
        /// Why it waits.
        reason: WaitReason,
    },
    /// The store failed or refused the commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A session fact could not be read.
    #[error(transparent)]
    Session(#[from] SessionError),
}

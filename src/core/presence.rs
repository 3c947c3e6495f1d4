//! Whether a user is logged on: a session fact that the core decides on (a job's run condition,
//! a restart policy that waits for nobody to be logged on). The session reads it; the core only
//! compares it.

use serde::{Deserialize, Serialize};

/// Whether an interactive user is logged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserPresence {
    /// At least one interactive user is logged on.
    LoggedOn,
    /// Nobody is logged on.
    NoneLoggedOn,
    /// It could not be determined.
    Unknown,
}

//! Validated identifiers: [`JobId`] names a job, [`BootId`] names one running kernel instance.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused as a [`JobId`] or a [`BootId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier was empty.
    #[error("{kind} is empty: give a non-empty identifier")]
    Empty {
        /// Which kind of identifier ("job id" or "boot id").
        kind: &'static str,
    },
    /// The identifier was longer than the bound.
    #[error("{kind} is {len} bytes long, more than the {max} allowed: use a shorter identifier")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound in bytes.
        max: usize,
    },
    /// The identifier held a control character (newline, NUL, escape, ...).
    #[error(
        "{kind} holds a control character (U+{code:04X}) at byte {at}: identifiers must be printable"
    )]
    ControlCharacter {
        /// Which kind of identifier.
        kind: &'static str,
        /// The code point of the first control character.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
}

fn validate(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    // Identifiers are ASCII almost always: check bytes, and chars only when there are others.
    let ascii_control = |b: &u8| *b < 0x20 || *b == 0x7F;
    let control = if s.is_ascii() {
        s.bytes()
            .position(|b| ascii_control(&b))
            .map(|at| (at, char::from(s.as_bytes()[at])))
    } else {
        s.char_indices().find(|(_, c)| c.is_control())
    };
    if let Some((at, c)) = control {
        return Err(IdError::ControlCharacter {
            kind,
            code: u32::from(c),
            at,
        });
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest identifier accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s`: non-empty, at most [`Self::MAX_LEN`] bytes, no control characters.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s, $max)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// The identity of a job, as the site server advertises it.
    ///
    /// Non-empty, at most 256 bytes, no control characters, so that it is safe in logs, status
    /// messages and terminal output. (It may hold `/`: do not use it as a file name unescaped.)
    ///
    /// ```
    /// use jobstate::JobId;
    /// assert!(JobId::new("os-upgrade-24h2").is_ok());
    /// assert!(JobId::new("").is_err());
    /// assert!(JobId::new("bad\nid").is_err());
    /// ```
    JobId,
    "job id",
    256
);

validated_id!(
    /// The identity of one boot: a value that differs for every running kernel instance.
    ///
    /// It is opaque: only equality matters. On Linux it is `/proc/sys/kernel/random/boot_id`.
    /// Uptime or "last boot time" are *not* boot identities (Windows Fast Startup does not update
    /// the last boot time, and clocks can be reset).
    ///
    /// ```
    /// use jobstate::BootId;
    /// let a = BootId::new("2f0c3a1e-boot-a").unwrap();
    /// let b = BootId::new("9d41b7c2-boot-b").unwrap();
    /// assert_ne!(a, b);
    /// ```
    BootId,
    "boot id",
    128
);

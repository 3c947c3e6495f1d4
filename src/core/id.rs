//! Validated identifiers: [`JobId`] names a job, [`BootId`] names one running kernel instance.

use std::cell::RefCell;
use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// The identifier held a character that prints as nothing, as a space, or changes how the
    /// text around it prints: a bidirectional control (U+202E turns `gpj.exe` into `exe.jpg`),
    /// a zero-width character, a line or paragraph separator, another invisible format
    /// character (Unicode category Cf), a default-ignorable code point (a combining grapheme
    /// joiner, a variation selector, a Hangul filler) or a space other than the ASCII one
    /// (a no-break space prints as a space). Two ids that print alike must be alike.
    #[error(
        "{kind} holds an invisible or direction-changing character (U+{code:04X}) at byte {at}: it would make the id print as another one in logs and terminals; remove it"
    )]
    InvisibleCharacter {
        /// Which kind of identifier.
        kind: &'static str,
        /// The code point of the first such character.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
}

/// Whether `c` prints as nothing, as a space, or changes how the text around it prints:
/// Unicode's format characters (general category Cf), its default-ignorable code points
/// (`Default_Ignorable_Code_Point`: combining grapheme joiner, variation selectors, Hangul
/// fillers, ...), the spaces other than U+0020 (category Zs), and the line and paragraph
/// separators; as of Unicode 16.
fn invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00A0
            | 0x00AD
            | 0x034F
            | 0x115F..=0x1160
            | 0x1680
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x2000..=0x200A
            | 0x202F
            | 0x205F
            | 0x3000
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0xE0000..=0xE0FFF
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
    )
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
    if !s.is_ascii()
        && let Some((at, c)) = s.char_indices().find(|&(_, c)| invisible(c))
    {
        return Err(IdError::InvisibleCharacter {
            kind,
            code: u32::from(c),
            at,
        });
    }
    Ok(())
}

/// Slots of a [`Recent`] cache (a power of two).
const RECENT_SLOTS: usize = 512;

/// The decode-side interner of one kind of id: a store's records repeat the same few boot ids
/// and the ids of the jobs in flight over and over, and decoding each occurrence anew would
/// allocate and validate it each time. This small cache, per thread, direct-mapped by hash,
/// hands out the shared string of an id decoded recently instead. Only an id that passed
/// validation is ever put in it, so a damaged or hostile store still never yields an invalid
/// id: each distinct id is validated when it enters the cache (and again if it was evicted
/// and comes back). Bounded: at most [`RECENT_SLOTS`] ids of each kind per thread are kept
/// alive by it (at most 512 × 256 bytes of job ids).
struct Recent {
    slots: Vec<Option<Arc<str>>>,
}

impl Recent {
    const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// The id whose bytes are `bytes`: the cached string if it is in the cache (its bytes were
    /// checked for UTF-8 and validated when it entered), else `bytes` checked for UTF-8,
    /// validated by `validate` (its error returned, nothing cached) and cached.
    fn get<E: serde::de::Error>(
        &mut self,
        bytes: &[u8],
        validate: impl FnOnce(&str) -> Result<(), IdError>,
    ) -> Result<Arc<str>, E> {
        if self.slots.is_empty() {
            self.slots.resize(RECENT_SLOTS, None);
        }
        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(bytes);
        let slot = (hasher.finish() as usize) & (RECENT_SLOTS - 1);
        if let Some(Some(id)) = self.slots.get(slot)
            && id.as_bytes() == bytes
        {
            return Ok(Arc::clone(id));
        }
        let s = std::str::from_utf8(bytes).map_err(E::custom)?;
        validate(s).map_err(E::custom)?;
        let id: Arc<str> = Arc::from(s);
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(Arc::clone(&id));
        }
        Ok(id)
    }
}

/// The decoded id whose bytes are `bytes`, checked for UTF-8 and validated by `validate`
/// unless `cache` holds it already. Without the cache (the thread is being torn down) it is
/// checked and allocated anew.
fn decoded<E: serde::de::Error>(
    cache: &'static std::thread::LocalKey<RefCell<Recent>>,
    bytes: &[u8],
    validate: fn(&str) -> Result<(), IdError>,
) -> Result<Arc<str>, E> {
    match cache.try_with(|recent| recent.try_borrow_mut().map(|mut r| r.get(bytes, validate))) {
        Ok(Ok(result)) => result,
        _ => {
            let s = std::str::from_utf8(bytes).map_err(E::custom)?;
            validate(s).map_err(E::custom)?;
            Ok(Arc::from(s))
        }
    }
}

/// An id's stand-in in a stored change's state: the id the empty string stands for there, if
/// any (see [`boot_scope`](crate::core::boot_scope)).
trait Scope {
    /// Whether `id` is the one the empty string stands for now.
    fn holds(id: &str) -> bool;
    /// The id the empty string stands for now, if any.
    fn id() -> Option<Arc<str>>;
}

/// Job ids have no stand-in.
struct NoScope;

impl Scope for NoScope {
    fn holds(_: &str) -> bool {
        false
    }
    fn id() -> Option<Arc<str>> {
        None
    }
}

/// A boot id in a stored change's state may stand for the change's event's boot.
struct EventBootScope;

impl Scope for EventBootScope {
    fn holds(id: &str) -> bool {
        crate::core::boot_scope::is_scope_boot_str(id)
    }
    fn id() -> Option<Arc<str>> {
        crate::core::boot_scope::scope_boot().map(|boot| boot.0)
    }
}

thread_local! {
    static RECENT_JOB_IDS: RefCell<Recent> = const { RefCell::new(Recent::new()) };
    static RECENT_BOOT_IDS: RefCell<Recent> = const { RefCell::new(Recent::new()) };
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $recent:ident, $scope:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the string is shared (reference-counted), and decoding a stored id
        /// seen recently shares the string already decoded rather than allocating and
        /// validating it again.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The longest identifier accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s`: non-empty, at most [`Self::MAX_LEN`] bytes, no control characters,
            /// no invisible or direction-changing characters.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s, $max)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id a binary record stores as `bytes` (its string's bytes), as its serde form
            /// reads it (outside a change's state): through this thread's cache of recent ids,
            /// checked for UTF-8 and validated when it enters it. What the recovery decoder
            /// (`change_decoder.rs`) calls too.
            pub(crate) fn from_stored<E: serde::de::Error>(bytes: &[u8]) -> Result<Self, E> {
                decoded(&$recent, bytes, |s| validate($kind, s, $max)).map($name)
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
                String::from(&*id.0)
            }
        }

        impl Serialize for $name {
            /// The id as a string; in a binary format, inside a stored change's state, the
            /// empty string for the id its scope stands for (`core/boot_scope.rs`).
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if !s.is_human_readable() && $scope::holds(&self.0) {
                    return s.serialize_str("");
                }
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            /// Reads a string and validates it as [`Self::new`] does (an id decoded recently
            /// on this thread was validated already: its string is shared instead).
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                /// Whether the format is binary (where an empty id may stand for its scope's).
                struct Visitor(bool);
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", $kind, " (a string)"))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        self.visit_bytes(s.as_bytes())
                    }
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<$name, E> {
                        if self.0 && b.is_empty() {
                            if let Some(id) = $scope::id() {
                                return Ok($name(id));
                            }
                        }
                        $name::from_stored(b)
                    }
                }
                // A binary format writes a string as its bytes: read them as bytes, so that
                // an id found in the cache is not checked for UTF-8 again. (In postcard a
                // string and a byte array are alike: a length, then the bytes.)
                if d.is_human_readable() {
                    d.deserialize_str(Visitor(false))
                } else {
                    d.deserialize_bytes(Visitor(true))
                }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// The id as it is; width, fill, alignment and precision apply as they do to a `str`
        /// (`{:<24}` aligns a column of ids).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

/// Writes `args` as [`Formatter::pad`](fmt::Formatter::pad) writes a `str`: with the
/// formatter's width, fill, alignment and precision, if it has any (then through a `String`);
/// straight through otherwise. For the `Display` of the composite ids.
pub(crate) fn pad_fmt(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    if f.width().is_none() && f.precision().is_none() {
        f.write_fmt(args)
    } else {
        f.pad(&args.to_string())
    }
}

validated_id!(
    /// The identity of a job, as the site server offers it.
    ///
    /// Non-empty, at most 256 bytes, no control characters, and none that print as nothing or
    /// reorder the text around them (bidirectional controls, zero-width characters, line and
    /// paragraph separators, Unicode's other format characters), so that it is safe in logs,
    /// status messages and terminal output, and two ids that print alike are alike. (It may
    /// hold `/`: do not use it as a file name unescaped.)
    ///
    /// ```
    /// use jobstate::{IdError, JobId};
    /// assert!(JobId::new("os-upgrade-24h2").is_ok());
    /// assert!(JobId::new("Überweisung ✓ 升级").is_ok());
    /// assert!(JobId::new("").is_err());
    /// assert!(JobId::new("bad\nid").is_err());
    /// // "upgrade-\u{202E}exe.gpj" would print as "upgrade-jpg.exe".
    /// assert!(matches!(
    ///     JobId::new("upgrade-\u{202E}exe.gpj"),
    ///     Err(IdError::InvisibleCharacter { code: 0x202E, at: 8, .. })
    /// ));
    /// // It prints as a `str` does, width and alignment included.
    /// assert_eq!(format!("[{:<8}]", JobId::new("patch").unwrap()), "[patch   ]");
    /// ```
    JobId,
    "job id",
    256,
    RECENT_JOB_IDS,
    NoScope
);

impl JobId {
    /// [`JobId::from_stored`] without the cache of recent ids: for the id of a spec, which comes
    /// with its job's creation (or a spec change) and would only churn the cache.
    pub(crate) fn from_stored_once(bytes: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        validate("job id", s, Self::MAX_LEN).ok()?;
        Some(Self(Arc::from(s)))
    }
}

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
    128,
    RECENT_BOOT_IDS,
    EventBootScope
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_with_width_fill_alignment_and_precision() {
        let job = JobId::new("patch").unwrap_or_else(|e| panic!("{e}"));
        let boot = BootId::new("boot-a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{job}"), "patch");
        assert_eq!(format!("[{job:<8}]"), "[patch   ]");
        assert_eq!(format!("[{job:>8}]"), "[   patch]");
        assert_eq!(format!("[{job:*^9}]"), "[**patch**]");
        assert_eq!(format!("[{job:.3}]"), "[pat]");
        assert_eq!(format!("[{job:3}]"), "[patch]", "never cut by a width");
        assert_eq!(format!("[{boot:>8}]"), "[  boot-a]");
        // Width counts characters, as for a `str`.
        let wide = JobId::new("升级").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("[{wide:<4}]"), "[升级  ]");
        let attempt = crate::core::effect::AttemptId {
            job: job.clone(),
            run: 1,
            number: 2,
        };
        assert_eq!(format!("{attempt}"), "patch run 1 attempt 2");
        assert_eq!(format!("[{attempt:<24}]"), "[patch run 1 attempt 2   ]");
        assert_eq!(
            format!("[{:>17}]", attempt.attempt_ref()),
            "[  run 1 attempt 2]"
        );
        let program = crate::core::program::ProgramId::new(42, 7);
        assert_eq!(
            format!("[{program:-<26}]"),
            format!("[{:-<26}]", program.to_string())
        );
        let key = crate::core::effect::StatusKey {
            job,
            run: 1,
            attempt: 2,
            state: crate::core::state::StateKind::AwaitingReboot,
            wait: 1,
            overdue: 0,
        };
        assert_eq!(
            format!("[{key:<48}]"),
            format!("[{:<48}]", "patch/run 1/attempt 2/AwaitingReboot/wait 1")
        );
        assert_eq!(
            format!("{key}"),
            "patch/run 1/attempt 2/AwaitingReboot/wait 1"
        );
    }

    /// Decodes `s` written as postcard writes a string (its length, then its bytes), whatever
    /// the bytes are: a `Vec<u8>` is written so.
    fn decode<T: for<'de> Deserialize<'de>>(s: &[u8]) -> Result<T, postcard::Error> {
        postcard::from_bytes(&postcard::to_stdvec(&s.to_vec())?)
    }

    #[test]
    fn a_repeated_decoded_id_shares_its_string() {
        let a: JobId = decode(b"deploy-7").unwrap_or_else(|e| panic!("{e}"));
        let b: JobId = decode(b"deploy-7").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, JobId::new("deploy-7").unwrap_or_else(|e| panic!("{e}")));
    }

    #[test]
    fn an_invalid_decoded_id_is_refused_every_time() {
        for _ in 0..3 {
            assert!(decode::<JobId>(b"bad\nid").is_err());
            assert!(decode::<BootId>(b"").is_err());
            assert!(decode::<JobId>(b"upgrade-\xE2\x80\xAEexe").is_err());
            assert!(decode::<JobId>(b"not utf-8 \xFF").is_err());
        }
    }

    #[test]
    fn an_id_valid_for_one_kind_is_not_taken_for_the_other() {
        let long = vec![b'a'; 200];
        assert!(decode::<JobId>(&long).is_ok());
        assert!(decode::<JobId>(&long).is_ok());
        assert!(matches!(
            BootId::new(String::from_utf8(long.clone()).unwrap_or_default()),
            Err(IdError::TooLong { .. })
        ));
        assert!(decode::<BootId>(&long).is_err());
    }

    #[test]
    fn ids_decode_from_json_as_strings() {
        let id: JobId = serde_json::from_str("\"kb-1\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.as_str(), "kb-1");
        assert!(serde_json::from_str::<JobId>("\"a\\u202Eb\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap_or_default(), "\"kb-1\"");
    }
}

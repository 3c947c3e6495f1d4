//! The on-disk layout: file headers and length- and checksum-framed payloads.
//!
//! ```text
//! header   = magic (8 bytes) | format version (u32 LE) | CRC-32C of magic and revision (u32 LE)
//!            | revision (u64 LE)
//! frame    = payload length (u32 LE) | CRC-32C of the length (u32 LE)
//!            | CRC-32C of the payload (u32 LE) | payload
//! journal  = header (revision = the store revision the journal starts from) | frame*
//!            one frame per commit; the payload is the commit's records, back to back
//! snapshot = header (revision = the store revision it holds) | one frame of records
//! ```
//!
//! The length has a checksum of its own: a damaged length must not pass for a frame that runs
//! past the end of the file (a torn tail), or every commit after it would be cut off.

use super::crc32c::crc32c;

pub(crate) const JOURNAL_MAGIC: &[u8; 8] = b"JOBSTJNL";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"JOBSTSNP";
/// The file format this build writes and reads.
pub(crate) const FILE_FORMAT: u32 = 1;
pub(crate) const HEADER_LEN: usize = 24;
pub(crate) const FRAME_HEADER_LEN: usize = 12;

/// The largest frame payload accepted (and written), checked before anything is allocated.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// A file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) format: u32,
    pub(crate) revision: u64,
}

pub(crate) fn header(magic: &[u8; 8], revision: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FILE_FORMAT.to_le_bytes());
    h[16..24].copy_from_slice(&revision.to_le_bytes());
    let crc = header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The checksum of the magic and the revision. The format field is left out on purpose: a
/// format this build does not know is reported as such (a typed error too), whether a newer
/// build wrote it or a flipped bit.
fn header_crc(h: &[u8]) -> u32 {
    let mut covered = [0u8; 16];
    covered[..8].copy_from_slice(&h[..8]);
    covered[8..].copy_from_slice(&h[16..24]);
    crc32c(&covered)
}

/// Why a header is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Short,
    Magic,
    Checksum,
}

pub(crate) fn read_header(bytes: &[u8], magic: &[u8; 8]) -> Result<Header, HeaderError> {
    let h = bytes.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
    if &h[..8] != magic {
        return Err(HeaderError::Magic);
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&h[12..16]);
    if u32::from_le_bytes(word) != header_crc(h) {
        return Err(HeaderError::Checksum);
    }
    let mut format = [0u8; 4];
    format.copy_from_slice(&h[8..12]);
    let mut revision = [0u8; 8];
    revision.copy_from_slice(&h[16..24]);
    Ok(Header {
        format: u32::from_le_bytes(format),
        revision: u64::from_le_bytes(revision),
    })
}

/// Appends a frame holding `payload` to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    // Callers check the length against MAX_FRAME first.
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What was found at an offset of a framed file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// A valid frame, and the offset after it.
    Frame { payload: &'a [u8], end: usize },
    /// The file ends here.
    End,
    /// The rest of the file is a frame that was being written when the machine stopped: short,
    /// torn, or zero-filled. It was never acknowledged.
    TornTail,
    /// A damaged frame with more data after it: corruption, not a torn write.
    Corrupt(&'static str),
}

/// Reads the frame at `at`.
pub(crate) fn next_frame(bytes: &[u8], at: usize) -> Next<'_> {
    match read_frame(bytes, at) {
        Ok(Some((payload, end))) => Next::Frame { payload, end },
        Ok(None) => Next::End,
        Err(Damage::RunsPastEnd) => Next::TornTail,
        Err(Damage::Invalid(why)) => Next::Corrupt(why),
        // A damaged frame is the torn end of the file only if no valid frame follows it: a
        // torn write leaves nothing valid after itself.
        Err(Damage::Checksum(why)) => {
            if (at + 1..bytes.len()).any(|p| matches!(read_frame(bytes, p), Ok(Some(_)))) {
                Next::Corrupt(why)
            } else {
                Next::TornTail
            }
        }
    }
}

enum Damage {
    /// A frame whose (checked) length runs past the end of the file.
    RunsPastEnd,
    /// A checksum mismatch, of the length or the payload.
    Checksum(&'static str),
    /// A frame the store never writes.
    Invalid(&'static str),
}

fn word(bytes: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(w)
}

fn read_frame(bytes: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, Damage> {
    let rest = bytes.get(at..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Err(Damage::Checksum("a frame header cut short"));
    }
    if crc32c(&rest[..4]) != word(&rest[4..8]) {
        return Err(Damage::Checksum("a damaged frame length"));
    }
    let len = word(rest);
    if len == 0 {
        return Err(Damage::Invalid("a frame of length 0"));
    }
    if len > MAX_FRAME {
        // Checked before anything is allocated or read.
        return Err(Damage::Invalid("a frame longer than the maximum"));
    }
    let len = len as usize;
    let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(Damage::RunsPastEnd);
    };
    if crc32c(payload) != word(&rest[8..12]) {
        return Err(Damage::Checksum("a payload checksum mismatch"));
    }
    Ok(Some((payload, at + FRAME_HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_tails_are_classified() {
        let mut file = header(JOURNAL_MAGIC, 7).to_vec();
        push_frame(&mut file, b"first");
        push_frame(&mut file, b"second");
        let h = read_header(&file, JOURNAL_MAGIC).unwrap();
        assert_eq!((h.format, h.revision), (FILE_FORMAT, 7));
        let Next::Frame { payload, end } = next_frame(&file, HEADER_LEN) else {
            panic!()
        };
        assert_eq!(payload, b"first");
        let Next::Frame { payload, end } = next_frame(&file, end) else {
            panic!()
        };
        assert_eq!(payload, b"second");
        assert_eq!(next_frame(&file, end), Next::End);
        // Every truncation of the last frame is a torn tail.
        for cut in end - 13..end {
            assert_eq!(
                next_frame(&file[..cut], end - 14),
                Next::TornTail,
                "cut {cut}"
            );
        }
        // A flipped bit in the first frame, with a frame after it, is corruption.
        let mut bad = file.clone();
        bad[HEADER_LEN + 9] ^= 1;
        assert!(matches!(next_frame(&bad, HEADER_LEN), Next::Corrupt(_)));
        // A huge length is refused before anything is allocated.
        let mut huge = file.clone();
        let max = u32::MAX.to_le_bytes();
        huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&max);
        huge[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc32c(&max).to_le_bytes());
        assert!(matches!(next_frame(&huge, HEADER_LEN), Next::Corrupt(_)));
        // Every bit of a header but the format field is covered; a flipped format bit reads
        // as an unknown format, which the store refuses too.
        for bit in (0..HEADER_LEN * 8).filter(|b| !(64..96).contains(b)) {
            let mut bad = file.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                read_header(&bad, JOURNAL_MAGIC).is_err(),
                "header bit {bit}"
            );
        }
        assert_eq!(
            read_header(&file[..10], JOURNAL_MAGIC),
            Err(HeaderError::Short)
        );
        assert_eq!(read_header(&file, SNAPSHOT_MAGIC), Err(HeaderError::Magic));
    }
}

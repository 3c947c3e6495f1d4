//! CRC-32C (Castagnoli): the checksum of journal frames and SQLite rows, computed by the
//! `crc32c` crate (the CPU's CRC instruction where it has one, detected at run time; tables
//! otherwise), and by a byte table here for inputs of a few bytes (a frame's length, its
//! salt), where the crate's setup costs more than the bytes (about 120 instructions a call
//! against 5 a byte: a third of the checksum cost of a one-change frame).

/// Inputs up to this length are checksummed with [`TABLE`].
const SHORT: usize = 16;

/// The byte-at-a-time table of the reflected CRC-32C polynomial.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC-32C of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_append(0, bytes)
}

/// The CRC-32C of `a` followed by `bytes`, given `crc`, the CRC-32C of `a`: checksums of
/// several pieces without copying them together.
pub(crate) fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    if bytes.len() <= SHORT {
        let mut crc = !crc;
        for &byte in bytes {
            crc = TABLE[usize::from(crc as u8 ^ byte)] ^ (crc >> 8);
        }
        return !crc;
    }
    ::crc32c::crc32c_append(crc, bytes)
}

#[cfg(test)]
mod tests {
    use super::{SHORT, crc32c, crc32c_append};

    #[test]
    fn known_vectors() {
        // RFC 3720 (iSCSI) test vectors.
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        // In pieces, the same as whole.
        for split in 0..=ascending.len() {
            let (a, b) = ascending.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), 0x46DD_794E, "split at {split}");
        }
    }

    #[test]
    fn the_short_table_agrees_with_the_crate() {
        // Every length the table serves and the first the crate does, from several starting
        // checksums, over bytes that reach every table entry.
        let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in 0..=SHORT + 1 {
            for start in (0..bytes.len() - len).step_by(7) {
                let piece = &bytes[start..start + len];
                for crc in [0, 1, 0xFFFF_FFFF, 0xE306_9283] {
                    assert_eq!(
                        crc32c_append(crc, piece),
                        ::crc32c::crc32c_append(crc, piece),
                        "{len} bytes from {start}, after {crc:#x}"
                    );
                }
            }
        }
    }
}

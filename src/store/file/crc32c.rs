//! CRC-32C (Castagnoli): the checksum of journal frames and SQLite rows, computed by the
//! `crc32c` crate (the CPU's CRC instruction where it has one, detected at run time; tables
//! otherwise).

/// The CRC-32C of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

/// The CRC-32C of `a` followed by `bytes`, given `crc`, the CRC-32C of `a`: checksums of
/// several pieces without copying them together.
pub(crate) fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, bytes)
}

#[cfg(test)]
mod tests {
    use super::{crc32c, crc32c_append};

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
}

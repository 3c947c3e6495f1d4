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

/// What appending `n` zero bytes does to a difference of CRC-32C states: a linear map of 32
/// bits (the method of zlib's `crc32_combine`). So the checksums of one payload after many
/// different salts cost one pass over the payload and a few operations a salt:
/// `crc32c_append(a, p) ^ crc32c_append(b, p) == ZeroShift::new(p.len()).apply(a ^ b)`.
pub(crate) struct ZeroShift {
    /// The image of each bit.
    columns: [u32; 32],
}

impl ZeroShift {
    /// The map of `n` zero bytes: about 30 squarings of a 32×32 bit matrix at most.
    pub(crate) fn new(n: usize) -> Self {
        // One zero bit: the register shifts right, and the polynomial comes in for bit 0.
        let mut bit = [0u32; 32];
        bit[0] = 0x82F6_3B78;
        for (i, column) in bit.iter_mut().enumerate().skip(1) {
            *column = 1 << (i - 1);
        }
        let mut power = compose(&bit, &bit); // two zero bits
        power = compose(&power, &power); // four
        power = compose(&power, &power); // eight: one zero byte
        let mut columns = std::array::from_fn(|i| 1u32 << i);
        let mut n = n;
        while n > 0 {
            if n & 1 == 1 {
                columns = compose(&power, &columns);
            }
            n >>= 1;
            if n > 0 {
                power = compose(&power, &power);
            }
        }
        Self { columns }
    }

    /// The map applied to `v`.
    pub(crate) fn apply(&self, v: u32) -> u32 {
        times(&self.columns, v)
    }
}

/// `matrix` (the images of the bits) applied to `v`.
fn times(matrix: &[u32; 32], mut v: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while v != 0 {
        if v & 1 == 1 {
            sum ^= matrix[i];
        }
        v >>= 1;
        i += 1;
    }
    sum
}

/// `a` after `b`.
fn compose(a: &[u32; 32], b: &[u32; 32]) -> [u32; 32] {
    std::array::from_fn(|i| times(a, b[i]))
}

#[cfg(test)]
mod tests {
    use super::{SHORT, ZeroShift, crc32c, crc32c_append};

    /// The shift of a difference of states through `n` zero bytes is what the checksums of the
    /// same bytes after the two states differ by: every length to 300, and a few large ones.
    #[test]
    fn a_zero_shift_relates_checksums_of_one_payload_after_two_states() {
        let bytes: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let lengths = (0..300).chain([4096, 65_537, 200_000]);
        let mut checked = 0;
        for (len, (a, b)) in lengths.zip((1u32..).map(|i| (i.wrapping_mul(0x9E37_79B9), !i))) {
            let payload = &bytes[..len];
            let shift = ZeroShift::new(len);
            for (a, b) in [(a, b), (0, 1), (crc32c(&7u64.to_le_bytes()), 0xFFFF_FFFF)] {
                assert_eq!(
                    crc32c_append(a, payload) ^ crc32c_append(b, payload),
                    shift.apply(a ^ b),
                    "{len} bytes after {a:#x} and {b:#x}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 303 * 3);
    }

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

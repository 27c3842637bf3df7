//! The on-disk format: every byte that `wald-storage` writes is laid out here.
//!
//! `docs/FORMAT.md` is the prose twin of this module; the golden-bytes tests at the
//! bottom of `record.rs`, `header.rs` and `index.rs` hold the two together. Change
//! one and the tests fail until the other follows (and the version is bumped).
//!
//! All multi-byte integers are little-endian. Offsets and positions are `u64`
//! unless a range below says otherwise.

pub mod header;
pub mod index;
pub mod record;

use std::ops::Range;

/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Magic bytes at byte 0 of every segment (`.log`) file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WALDLOG\0";
/// Magic bytes at byte 0 of every index (`.idx`) file.
pub const INDEX_MAGIC: [u8; 8] = *b"WALDIDX\0";

/// File-name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = "log";
/// File-name suffix of a segment's sparse index.
pub const INDEX_SUFFIX: &str = "idx";
/// File name of the directory lock.
pub const LOCK_FILE: &str = "LOCK";
/// Suffix of a preallocated spare segment waiting to become the next active one.
pub const SPARE_SUFFIX: &str = "spare";

/// The file name of the segment whose first record has `base_offset`.
#[must_use]
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{SEGMENT_SUFFIX}")
}

/// The file name of the index of the segment whose first record has `base_offset`.
#[must_use]
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{INDEX_SUFFIX}")
}

/// Parses `{base_offset:020}.{suffix}`; `None` for any other name.
#[must_use]
pub fn parse_file_name(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Reads a little-endian `u16` at `range` (which must be 2 bytes long and in bounds).
pub(crate) fn get_u16(buf: &[u8], range: Range<usize>) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[range]);
    u16::from_le_bytes(b)
}

/// Reads a little-endian `u32` at `range` (which must be 4 bytes long and in bounds).
pub(crate) fn get_u32(buf: &[u8], range: Range<usize>) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[range]);
    u32::from_le_bytes(b)
}

/// Reads a little-endian `u64` at `range` (which must be 8 bytes long and in bounds).
pub(crate) fn get_u64(buf: &[u8], range: Range<usize>) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[range]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(index_file_name(42), "00000000000000000042.idx");
        assert_eq!(
            parse_file_name("00000000000000000042.log", SEGMENT_SUFFIX),
            Some(42)
        );
        assert_eq!(
            parse_file_name("00000000000000000042.idx", SEGMENT_SUFFIX),
            None
        );
        assert_eq!(parse_file_name("42.log", SEGMENT_SUFFIX), None);
        assert_eq!(
            parse_file_name("0000000000000000004x.log", SEGMENT_SUFFIX),
            None
        );
        assert_eq!(
            parse_file_name(&segment_file_name(u64::MAX), SEGMENT_SUFFIX),
            Some(u64::MAX)
        );
    }
}

//! The sparse offset/time index of a segment (`{base_offset:020}.idx`).
//!
//! A 64-byte header, then fixed 16-byte entries, one for the segment's first record and
//! then one at least every `index_interval_bytes` of records:
//!
//! Header:
//!
//! | bytes  | field       | meaning                                            |
//! |--------|-------------|----------------------------------------------------|
//! | 0..8   | magic       | `WALDIDX\0`                                        |
//! | 8..10  | version     | format version (u16)                               |
//! | 10..12 | header_len  | 64 (u16)                                           |
//! | 12..16 | header_crc  | CRC-32 of bytes 0..64 with this field zeroed (u32) |
//! | 16..24 | base_offset | the segment's base offset (u64)                    |
//! | 24..64 | reserved    | zero                                               |
//!
//! Entry:
//!
//! | bytes | field        | meaning                                              |
//! |-------|--------------|------------------------------------------------------|
//! | 0..4  | rel_offset   | record offset − base_offset (u32)                    |
//! | 4..8  | position     | byte position of that record in the segment (u32)    |
//! | 8..16 | timestamp_ms | that record's append timestamp (u64)                 |
//!
//! The index is derived from the log and never trusted over it: an index that is missing,
//! short, or disagrees with the segment is rebuilt from the segment.

use std::ops::Range;

use super::header::{header_crc, HeaderError};
use super::{get_u16, get_u32, get_u64, FORMAT_VERSION, INDEX_MAGIC};

/// Length of the index file header.
pub const INDEX_HEADER_LEN: usize = 64;
/// Length of one index entry.
pub const INDEX_ENTRY_LEN: usize = 16;

/// `magic`.
pub const IH_MAGIC: Range<usize> = 0..8;
/// `version`.
pub const IH_VERSION: Range<usize> = 8..10;
/// `header_len`.
pub const IH_HEADER_LEN: Range<usize> = 10..12;
/// `header_crc`.
pub const IH_CRC: Range<usize> = 12..16;
/// `base_offset`.
pub const IH_BASE_OFFSET: Range<usize> = 16..24;

/// Entry `rel_offset`.
pub const IE_REL_OFFSET: Range<usize> = 0..4;
/// Entry `position`.
pub const IE_POSITION: Range<usize> = 4..8;
/// Entry `timestamp_ms`.
pub const IE_TIMESTAMP: Range<usize> = 8..16;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset relative to the segment's base offset.
    pub rel_offset: u32,
    /// Byte position of the record in the segment file.
    pub position: u32,
    /// The record's append timestamp.
    pub timestamp_ms: u64,
}

impl IndexEntry {
    /// Encodes the entry.
    #[must_use]
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[IE_REL_OFFSET].copy_from_slice(&self.rel_offset.to_le_bytes());
        b[IE_POSITION].copy_from_slice(&self.position.to_le_bytes());
        b[IE_TIMESTAMP].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        b
    }

    /// Decodes an entry from exactly [`INDEX_ENTRY_LEN`] bytes (or more; the rest is ignored).
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < INDEX_ENTRY_LEN {
            return None;
        }
        Some(Self {
            rel_offset: get_u32(b, IE_REL_OFFSET),
            position: get_u32(b, IE_POSITION),
            timestamp_ms: get_u64(b, IE_TIMESTAMP),
        })
    }
}

/// Encodes an index file header.
#[must_use]
pub fn encode_index_header(base_offset: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut b = [0u8; INDEX_HEADER_LEN];
    b[IH_MAGIC].copy_from_slice(&INDEX_MAGIC);
    b[IH_VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // INDEX_HEADER_LEN is 64: fits a u16.
    b[IH_HEADER_LEN].copy_from_slice(&(INDEX_HEADER_LEN as u16).to_le_bytes());
    b[IH_BASE_OFFSET].copy_from_slice(&base_offset.to_le_bytes());
    let crc = header_crc(&b, IH_CRC, INDEX_HEADER_LEN);
    b[IH_CRC].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes an index header, returning its base offset.
///
/// # Errors
/// A [`HeaderError`] naming what is wrong.
pub fn decode_index_header(b: &[u8]) -> Result<u64, HeaderError> {
    if b.len() < INDEX_HEADER_LEN {
        return Err(HeaderError::Short { len: b.len() });
    }
    if b[IH_MAGIC] != INDEX_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = get_u16(b, IH_VERSION);
    if version > FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion { found: version });
    }
    if version == 0 {
        return Err(HeaderError::Invalid("version 0"));
    }
    let expected = get_u32(b, IH_CRC);
    let got = header_crc(b, IH_CRC, INDEX_HEADER_LEN);
    if got != expected {
        return Err(HeaderError::ChecksumMismatch { got, expected });
    }
    if usize::from(get_u16(b, IH_HEADER_LEN)) != INDEX_HEADER_LEN {
        return Err(HeaderError::Invalid("header_len is not 64"));
    }
    Ok(get_u64(b, IH_BASE_OFFSET))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes for docs/FORMAT.md's index example.
    #[test]
    fn golden_index() {
        let h = encode_index_header(7);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"WALDIDX\0");
        expected.extend_from_slice(&[1, 0, 64, 0]);
        expected.extend_from_slice(&[0x98, 0x69, 0xB9, 0xA2]); // header_crc
        expected.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0u8; 40]);
        assert_eq!(
            h.to_vec(),
            expected,
            "index header drifted from docs/FORMAT.md"
        );
        assert_eq!(decode_index_header(&h), Ok(7));
        let e = IndexEntry {
            rel_offset: 2,
            position: 130,
            timestamp_ms: 1000,
        };
        assert_eq!(
            e.encode().to_vec(),
            vec![2, 0, 0, 0, 130, 0, 0, 0, 0xE8, 0x03, 0, 0, 0, 0, 0, 0],
            "index entry drifted from docs/FORMAT.md"
        );
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
    }
}

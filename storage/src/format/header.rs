//! The 64-byte header at the start of every segment file.
//!
//! | bytes  | field          | meaning                                              |
//! |--------|----------------|------------------------------------------------------|
//! | 0..8   | magic          | `WALDLOG\0`                                          |
//! | 8..10  | version        | format version (u16)                                 |
//! | 10..12 | header_len     | length of this header in bytes (u16), 64             |
//! | 12..16 | header_crc     | CRC-32 of bytes 0..64 with this field zeroed (u32)   |
//! | 16..24 | base_offset    | offset of the segment's first record (u64)           |
//! | 24..32 | created_ms     | creation time, ms since the Unix epoch (u64)         |
//! | 32..64 | reserved       | zero                                                 |

use std::ops::Range;

use super::{get_u16, get_u32, get_u64, FORMAT_VERSION, SEGMENT_MAGIC};

/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;

/// `magic`: the segment magic bytes.
pub const SH_MAGIC: Range<usize> = 0..8;
/// `version`: the format version the file was written with.
pub const SH_VERSION: Range<usize> = 8..10;
/// `header_len`: the header's own length.
pub const SH_HEADER_LEN: Range<usize> = 10..12;
/// `header_crc`: CRC-32 of the header with this field zeroed.
pub const SH_CRC: Range<usize> = 12..16;
/// `base_offset`: the offset of the first record in the segment.
pub const SH_BASE_OFFSET: Range<usize> = 16..24;
/// `created_ms`: when the segment was created.
pub const SH_CREATED_MS: Range<usize> = 24..32;
/// Reserved, zero.
pub const SH_RESERVED: Range<usize> = 32..64;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// Creation time in ms since the Unix epoch (used for age-based rolling).
    pub created_ms: u64,
}

/// Why a segment or index header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    Short {
        /// bytes available
        len: usize,
    },
    /// The magic bytes are not ours: this is not a wald file.
    BadMagic,
    /// Written by a newer wald.
    UnsupportedVersion {
        /// version found in the file
        found: u16,
    },
    /// The header's checksum does not match its bytes.
    ChecksumMismatch {
        /// CRC computed over the bytes
        got: u32,
        /// CRC stored in the header
        expected: u32,
    },
    /// A field holds an impossible value.
    Invalid(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short { len } => write!(f, "file too short for a header ({len} bytes)"),
            Self::BadMagic => write!(f, "bad magic bytes: not a wald file"),
            Self::UnsupportedVersion { found } => write!(
                f,
                "format version {found} is newer than this build supports ({FORMAT_VERSION})"
            ),
            Self::ChecksumMismatch { got, expected } => write!(
                f,
                "header checksum mismatch (computed {got:#010x}, stored {expected:#010x})"
            ),
            Self::Invalid(what) => write!(f, "invalid header: {what}"),
        }
    }
}

/// CRC of a 64-byte header with its CRC field treated as zero.
pub(crate) fn header_crc(buf: &[u8], crc_range: Range<usize>, len: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..crc_range.start]);
    h.update(&[0u8; 4]);
    h.update(&buf[crc_range.end..len]);
    h.finalize()
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[SH_MAGIC].copy_from_slice(&SEGMENT_MAGIC);
        b[SH_VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // SEGMENT_HEADER_LEN is 64: fits a u16.
        b[SH_HEADER_LEN].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[SH_BASE_OFFSET].copy_from_slice(&self.base_offset.to_le_bytes());
        b[SH_CREATED_MS].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = header_crc(&b, SH_CRC, SEGMENT_HEADER_LEN);
        b[SH_CRC].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header from the first bytes of a segment file.
    ///
    /// # Errors
    /// A [`HeaderError`] naming what is wrong.
    pub fn decode(buf: &[u8]) -> Result<Self, HeaderError> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short { len: buf.len() });
        }
        if buf[SH_MAGIC] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = get_u16(buf, SH_VERSION);
        if version > FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion { found: version });
        }
        if version == 0 {
            return Err(HeaderError::Invalid("version 0"));
        }
        let expected = get_u32(buf, SH_CRC);
        let got = header_crc(buf, SH_CRC, SEGMENT_HEADER_LEN);
        if got != expected {
            return Err(HeaderError::ChecksumMismatch { got, expected });
        }
        if usize::from(get_u16(buf, SH_HEADER_LEN)) != SEGMENT_HEADER_LEN {
            return Err(HeaderError::Invalid("header_len is not 64"));
        }
        Ok(Self {
            base_offset: get_u64(buf, SH_BASE_OFFSET),
            created_ms: get_u64(buf, SH_CREATED_MS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: the header of a segment with base offset 7 created at ms 1000,
    /// exactly as docs/FORMAT.md shows it.
    #[test]
    fn golden_segment_header() {
        let h = SegmentHeader {
            base_offset: 7,
            created_ms: 1000,
        };
        let bytes = h.encode();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"WALDLOG\0"); // magic
        expected.extend_from_slice(&[0x01, 0x00]); // version 1
        expected.extend_from_slice(&[0x40, 0x00]); // header_len 64
        expected.extend_from_slice(&[0xD2, 0xD7, 0x9C, 0xE5]); // header_crc
        expected.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]); // base_offset
        expected.extend_from_slice(&[0xE8, 0x03, 0, 0, 0, 0, 0, 0]); // created_ms 1000
        expected.extend_from_slice(&[0u8; 32]); // reserved
        assert_eq!(
            bytes.to_vec(),
            expected,
            "header bytes drifted from docs/FORMAT.md"
        );
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
    }

    #[test]
    fn refuses_bad_headers() {
        let good = SegmentHeader {
            base_offset: 1,
            created_ms: 2,
        }
        .encode();
        assert_eq!(
            SegmentHeader::decode(&good[..10]),
            Err(HeaderError::Short { len: 10 })
        );
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadMagic));
        let mut newer = good;
        newer[SH_VERSION].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&newer),
            Err(HeaderError::UnsupportedVersion { found: 2 })
        ));
        let mut flipped = good;
        flipped[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&flipped),
            Err(HeaderError::ChecksumMismatch { .. })
        ));
    }
}

//! A record: one message in a segment, self-describing and checksummed.
//!
//! | bytes     | field        | meaning                                                   |
//! |-----------|--------------|-----------------------------------------------------------|
//! | 0..4      | length       | whole record length in bytes, this header included (u32); 0 marks the end of data |
//! | 4..8      | crc          | CRC-32 (IEEE) of bytes 0..4 then 8..length (u32)         |
//! | 8..16     | offset       | the record's offset in its partition log (u64)           |
//! | 16..24    | timestamp_ms | append time, ms since the Unix epoch, non-decreasing (u64) |
//! | 24..32    | due_ms       | earliest delivery time, ms since the epoch; 0 = now (u64) |
//! | 32..34    | flags        | reserved, 0 in version 1 (u16)                            |
//! | 34..36    | key_len      | bytes of key (u16)                                        |
//! | 36..40    | headers_len  | bytes of the encoded headers block (u32)                  |
//! | 40..44    | payload_len  | bytes of payload (u32)                                    |
//! | 44..      | key, headers block, payload, back to back                                |
//!
//! The headers block is a sequence of `name_len: u16, value_len: u32, name (UTF-8), value`.
//! `length == 44 + key_len + headers_len + payload_len` always holds.

use std::ops::Range;

use super::{get_u16, get_u32, get_u64};

/// Length of the fixed record header.
pub const RECORD_HEADER_LEN: usize = 44;

/// `length`: the whole record's length.
pub const R_LENGTH: Range<usize> = 0..4;
/// `crc`: CRC-32 over `length` and bytes 8..length.
pub const R_CRC: Range<usize> = 4..8;
/// `offset`: the record's offset.
pub const R_OFFSET: Range<usize> = 8..16;
/// `timestamp_ms`: when it was appended.
pub const R_TIMESTAMP: Range<usize> = 16..24;
/// `due_ms`: when it may be delivered (0 = at once).
pub const R_DUE: Range<usize> = 24..32;
/// `flags`: reserved.
pub const R_FLAGS: Range<usize> = 32..34;
/// `key_len`.
pub const R_KEY_LEN: Range<usize> = 34..36;
/// `headers_len`.
pub const R_HEADERS_LEN: Range<usize> = 36..40;
/// `payload_len`.
pub const R_PAYLOAD_LEN: Range<usize> = 40..44;

/// Per-header overhead in the headers block: `name_len` (2) + `value_len` (4).
pub const HEADER_ENTRY_OVERHEAD: usize = 6;

/// The hard ceiling on a record's length (the `length` field is a u32; we keep 1 GiB).
pub const MAX_RECORD_LEN_LIMIT: usize = 1 << 30;

/// A record as the caller hands it to the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Partition key (≤ 65535 bytes); may be empty.
    pub key: Vec<u8>,
    /// Headers: UTF-8 names (≤ 65535 bytes), opaque values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Earliest delivery time in ms since the Unix epoch; 0 means at once.
    pub due_ms: u64,
}

impl Record {
    /// A record with just a payload.
    #[must_use]
    pub fn from_payload(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// The encoded length of this record, or `None` when a field is too large for the format.
    #[must_use]
    pub fn encoded_len(&self) -> Option<usize> {
        if self.key.len() > usize::from(u16::MAX) {
            return None;
        }
        let mut headers = 0usize;
        for (name, value) in &self.headers {
            if name.len() > usize::from(u16::MAX) || u32::try_from(value.len()).is_err() {
                return None;
            }
            headers = headers.checked_add(HEADER_ENTRY_OVERHEAD + name.len() + value.len())?;
        }
        let total = RECORD_HEADER_LEN
            .checked_add(self.key.len())?
            .checked_add(headers)?
            .checked_add(self.payload.len())?;
        (total <= MAX_RECORD_LEN_LIMIT).then_some(total)
    }

    /// Appends the encoded record to `out`. The caller has checked [`Record::encoded_len`]
    /// (returns it); `None` (and nothing written) when the record does not fit the format.
    pub fn encode_into(&self, offset: u64, timestamp_ms: u64, out: &mut Vec<u8>) -> Option<usize> {
        let len = self.encoded_len()?;
        let headers_len = len - RECORD_HEADER_LEN - self.key.len() - self.payload.len();
        let start = out.len();
        out.reserve(len);
        // Each cast below is checked by encoded_len: len ≤ 1 GiB, key ≤ u16::MAX.
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.due_ms.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&(headers_len as u32).to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&self.payload);
        let rec = &mut out[start..];
        let crc = record_crc(rec);
        rec[R_CRC].copy_from_slice(&crc.to_le_bytes());
        Some(len)
    }
}

/// CRC of an encoded record: bytes 0..4 then 8..end.
fn record_crc(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[R_LENGTH]);
    h.update(&rec[R_CRC.end..]);
    h.finalize()
}

/// A record read back from the log, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Offset in the partition log.
    pub offset: u64,
    /// Append time (ms since the epoch).
    pub timestamp_ms: u64,
    /// Earliest delivery time (ms since the epoch; 0 = at once).
    pub due_ms: u64,
    /// Partition key.
    pub key: &'a [u8],
    /// The encoded headers block (iterate with [`RecordView::headers`]).
    pub headers_block: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Encoded length in bytes.
    pub len: usize,
}

impl<'a> RecordView<'a> {
    /// Iterates the headers; the block was validated when the record was decoded.
    #[must_use]
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers_block,
        }
    }

    /// Copies the record into an owned [`StoredRecord`].
    #[must_use]
    pub fn to_owned_record(&self) -> StoredRecord {
        StoredRecord {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            due_ms: self.due_ms,
            key: self.key.to_vec(),
            headers: self
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            payload: self.payload.to_vec(),
        }
    }
}

/// Iterator over a validated headers block.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value, rest) = split_header(self.rest).ok()??;
        self.rest = rest;
        Some((name, value))
    }
}

/// One header split off a block: (name, value, rest of the block).
type HeaderSplit<'a> = (&'a str, &'a [u8], &'a [u8]);

/// Splits one header off a block: `Ok(None)` when the block is empty.
fn split_header(block: &[u8]) -> Result<Option<HeaderSplit<'_>>, RecordError> {
    if block.is_empty() {
        return Ok(None);
    }
    if block.len() < HEADER_ENTRY_OVERHEAD {
        return Err(RecordError::Malformed("truncated header entry"));
    }
    let name_len = usize::from(get_u16(block, 0..2));
    let value_len = get_u32(block, 2..6) as usize;
    let body = &block[HEADER_ENTRY_OVERHEAD..];
    if body.len() < name_len || body.len() - name_len < value_len {
        return Err(RecordError::Malformed(
            "header entry overruns the headers block",
        ));
    }
    let name = std::str::from_utf8(&body[..name_len])
        .map_err(|_| RecordError::Malformed("header name is not UTF-8"))?;
    let value = &body[name_len..name_len + value_len];
    Ok(Some((name, value, &body[name_len + value_len..])))
}

/// An owned record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Offset in the partition log.
    pub offset: u64,
    /// Append time (ms since the epoch).
    pub timestamp_ms: u64,
    /// Earliest delivery time (ms since the epoch; 0 = at once).
    pub due_ms: u64,
    /// Partition key.
    pub key: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What decoding the bytes at a position found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record.
    Record(RecordView<'a>),
    /// A zero `length` field: the end of the written data (segments are zero-filled).
    End,
    /// The buffer holds only part of the record; `need` bytes are required in all.
    Incomplete {
        /// Bytes the whole record needs.
        need: usize,
    },
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The length field is impossible.
    #[error("record length {len} is out of range ({min}..={max})")]
    BadLength {
        /// The length found.
        len: usize,
        /// Smallest valid length.
        min: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// Checksum mismatch.
    #[error("record checksum mismatch (computed {got:#010x}, stored {expected:#010x})")]
    ChecksumMismatch {
        /// CRC computed over the bytes.
        got: u32,
        /// CRC stored in the record.
        expected: u32,
    },
    /// The checksum matched but the fields contradict each other.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Decodes the record at the start of `buf`, accepting lengths up to `max_len`.
///
/// # Errors
/// A [`RecordError`] when the bytes are not a valid record.
pub fn decode(buf: &[u8], max_len: usize) -> Result<Decoded<'_>, RecordError> {
    if buf.len() < R_LENGTH.end {
        // Not even a length: treat a zero prefix as the end, else it is incomplete.
        if buf.iter().all(|&b| b == 0) {
            return Ok(Decoded::End);
        }
        return Ok(Decoded::Incomplete {
            need: RECORD_HEADER_LEN,
        });
    }
    let len = get_u32(buf, R_LENGTH) as usize;
    if len == 0 {
        return Ok(Decoded::End);
    }
    let max = max_len.min(MAX_RECORD_LEN_LIMIT);
    if len < RECORD_HEADER_LEN || len > max {
        return Err(RecordError::BadLength {
            len,
            min: RECORD_HEADER_LEN,
            max,
        });
    }
    if buf.len() < len {
        return Ok(Decoded::Incomplete { need: len });
    }
    let rec = &buf[..len];
    let expected = get_u32(rec, R_CRC);
    let got = record_crc(rec);
    if got != expected {
        return Err(RecordError::ChecksumMismatch { got, expected });
    }
    if get_u16(rec, R_FLAGS) != 0 {
        return Err(RecordError::Malformed("unknown flags"));
    }
    let key_len = usize::from(get_u16(rec, R_KEY_LEN));
    let headers_len = get_u32(rec, R_HEADERS_LEN) as usize;
    let payload_len = get_u32(rec, R_PAYLOAD_LEN) as usize;
    let body_len = key_len
        .checked_add(headers_len)
        .and_then(|n| n.checked_add(payload_len))
        .ok_or(RecordError::Malformed("field lengths overflow"))?;
    if RECORD_HEADER_LEN + body_len != len {
        return Err(RecordError::Malformed(
            "field lengths do not add up to the record length",
        ));
    }
    let key_start = RECORD_HEADER_LEN;
    let headers_start = key_start + key_len;
    let payload_start = headers_start + headers_len;
    let headers_block = &rec[headers_start..payload_start];
    let mut rest = headers_block;
    while let Some((_, _, r)) = split_header(rest)? {
        rest = r;
    }
    Ok(Decoded::Record(RecordView {
        offset: get_u64(rec, R_OFFSET),
        timestamp_ms: get_u64(rec, R_TIMESTAMP),
        due_ms: get_u64(rec, R_DUE),
        key: &rec[key_start..headers_start],
        headers_block,
        payload: &rec[payload_start..],
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            key: b"k1".to_vec(),
            headers: vec![("id".to_owned(), b"m-1".to_vec())],
            payload: b"{\"a\":1}".to_vec(),
            due_ms: 5000,
        }
    }

    /// Golden bytes: the record of docs/FORMAT.md's worked example, byte for byte.
    #[test]
    fn golden_record() {
        let mut out = Vec::new();
        let len = sample().encode_into(3, 1000, &mut out);
        let mut expected = Vec::new();
        expected.extend_from_slice(&[64, 0, 0, 0]); // length 64
        expected.extend_from_slice(&[0xF5, 0x2D, 0x2D, 0xE8]); // crc
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // offset 3
        expected.extend_from_slice(&[0xE8, 0x03, 0, 0, 0, 0, 0, 0]); // timestamp_ms 1000
        expected.extend_from_slice(&[0x88, 0x13, 0, 0, 0, 0, 0, 0]); // due_ms 5000
        expected.extend_from_slice(&[0, 0]); // flags
        expected.extend_from_slice(&[2, 0]); // key_len 2
        expected.extend_from_slice(&[11, 0, 0, 0]); // headers_len 11
        expected.extend_from_slice(&[7, 0, 0, 0]); // payload_len 7
        expected.extend_from_slice(b"k1"); // key
        expected.extend_from_slice(&[2, 0, 3, 0, 0, 0]); // header: name_len 2, value_len 3
        expected.extend_from_slice(b"idm-1"); // name, value
        expected.extend_from_slice(b"{\"a\":1}"); // payload
        assert_eq!(out, expected, "record bytes drifted from docs/FORMAT.md");
        assert_eq!(len, Some(64));
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        sample().encode_into(9, 77, &mut out);
        let Ok(Decoded::Record(v)) = decode(&out, 1 << 20) else {
            panic!("decode failed")
        };
        let owned = v.to_owned_record();
        assert_eq!(owned.offset, 9);
        assert_eq!(owned.timestamp_ms, 77);
        assert_eq!(owned.due_ms, 5000);
        assert_eq!(owned.key, b"k1");
        assert_eq!(owned.headers, vec![("id".to_owned(), b"m-1".to_vec())]);
        assert_eq!(owned.payload, b"{\"a\":1}");
    }

    #[test]
    fn end_incomplete_and_corrupt() {
        assert_eq!(decode(&[0u8; 100], 1 << 20), Ok(Decoded::End));
        assert_eq!(decode(&[], 1 << 20), Ok(Decoded::End));
        let mut out = Vec::new();
        sample().encode_into(1, 1, &mut out);
        assert_eq!(
            decode(&out[..30], 1 << 20),
            Ok(Decoded::Incomplete { need: 64 })
        );
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            let r = decode(&bad, 1 << 20);
            assert!(
                !matches!(r, Ok(Decoded::Record(_))),
                "flipping byte {i} still decoded as a record"
            );
        }
        assert!(matches!(
            decode(&out, 10),
            Err(RecordError::BadLength { len: 64, .. })
        ));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let r = Record {
            key: vec![0; 70_000],
            ..Record::default()
        };
        assert_eq!(r.encoded_len(), None);
        let mut out = Vec::new();
        assert_eq!(r.encode_into(0, 0, &mut out), None);
        assert!(out.is_empty());
    }
}

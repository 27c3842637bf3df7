//! Walking the records of a segment's bytes, and classifying where and why the walk stopped.

use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::index::IndexEntry;
use crate::format::record::{self, Decoded, RecordError, RecordView, RECORD_HEADER_LEN};

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A zero length field (the zero-filled rest of a preallocated segment), or the
    /// exact end of the bytes.
    End,
    /// A record runs past the end of the bytes.
    Incomplete {
        /// Bytes the record claims.
        need: usize,
    },
    /// Bytes that are not a valid record.
    Corrupt(RecordError),
    /// A valid record whose offset is not the next one expected.
    WrongOffset {
        /// The offset in the record.
        found: u64,
    },
}

/// The outcome of scanning a segment from its first record.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Offset the next record must have (base + records found).
    pub next_offset: u64,
    /// Byte position just after the last valid record.
    pub end: usize,
    /// Timestamp of the last valid record (0 when none).
    pub last_timestamp: u64,
    /// Timestamp of the first valid record (0 when none).
    pub first_timestamp: u64,
    /// The sparse index the segment's records imply.
    pub index: Vec<IndexEntry>,
    /// Why the scan stopped at `end`.
    pub stop: Stop,
    /// Records found.
    pub records: u64,
}

/// Decides when an index entry is due: one for the first record, then one whenever
/// `interval` bytes of records have passed since the previous entry.
#[derive(Debug, Clone)]
pub struct IndexPolicy {
    interval: usize,
    last_entry_pos: Option<usize>,
}

impl IndexPolicy {
    /// A policy with the given interval, with no entry made yet.
    #[must_use]
    pub fn new(interval: u32) -> Self {
        Self {
            interval: interval as usize,
            last_entry_pos: None,
        }
    }

    /// A policy that continues after an existing last entry.
    #[must_use]
    pub fn resume(interval: u32, last: Option<&IndexEntry>) -> Self {
        Self {
            interval: interval as usize,
            last_entry_pos: last.map(|e| e.position as usize),
        }
    }

    /// Returns the entry for a record at `position`, when one is due.
    pub fn observe(
        &mut self,
        base: u64,
        offset: u64,
        position: usize,
        ts: u64,
    ) -> Option<IndexEntry> {
        let due = match self.last_entry_pos {
            None => true,
            Some(p) => position.saturating_sub(p) >= self.interval,
        };
        if !due {
            return None;
        }
        self.last_entry_pos = Some(position);
        Some(IndexEntry {
            // Offsets within one segment stay far below 2^32 (a record is ≥ 44 bytes and a
            // segment < 4 GiB), and positions are < 4 GiB by configuration.
            rel_offset: (offset - base) as u32,
            position: position as u32,
            timestamp_ms: ts,
        })
    }
}

/// Scans `bytes` (a whole segment file, header included) from the first record.
#[must_use]
pub fn scan(bytes: &[u8], base_offset: u64, max_record: usize, index_interval: u32) -> Scan {
    let mut pos = SEGMENT_HEADER_LEN.min(bytes.len());
    let mut next = base_offset;
    let mut policy = IndexPolicy::new(index_interval);
    let mut out = Scan {
        next_offset: base_offset,
        end: pos,
        last_timestamp: 0,
        first_timestamp: 0,
        index: Vec::new(),
        stop: Stop::End,
        records: 0,
    };
    loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            out.stop = Stop::End;
            break;
        }
        match record::decode(rest, max_record) {
            Ok(Decoded::End) => {
                out.stop = Stop::End;
                break;
            }
            Ok(Decoded::Incomplete { need }) => {
                out.stop = Stop::Incomplete { need };
                break;
            }
            Err(e) => {
                out.stop = Stop::Corrupt(e);
                break;
            }
            Ok(Decoded::Record(v)) => {
                if v.offset == u64::MAX {
                    // The offset space ends below u64::MAX: a next offset must exist.
                    out.stop = Stop::Corrupt(RecordError::Malformed(
                        "record offset u64::MAX is out of range",
                    ));
                    break;
                }
                if v.offset != next {
                    out.stop = Stop::WrongOffset { found: v.offset };
                    break;
                }
                if out.records == 0 {
                    out.first_timestamp = v.timestamp_ms;
                }
                if let Some(e) = policy.observe(base_offset, v.offset, pos, v.timestamp_ms) {
                    out.index.push(e);
                }
                out.records += 1;
                out.last_timestamp = v.timestamp_ms;
                next += 1;
                pos += v.len;
                out.end = pos;
                out.next_offset = next;
            }
        }
    }
    out
}

/// Looks for a valid record anywhere in `bytes[from..]` whose offset is at least
/// `min_offset`: evidence that damage at `from` is not a torn tail. Returns its position.
///
/// Only runs on the rare path where a scan of the last segment stopped early, so it is a
/// plain byte-by-byte search, skipping runs of zeros (a record's 4-byte length is never 0).
#[must_use]
pub fn find_valid_record_after(
    bytes: &[u8],
    from: usize,
    min_offset: u64,
    max_record: usize,
) -> Option<(usize, u64)> {
    let mut p = from + 1;
    while p + RECORD_HEADER_LEN <= bytes.len() {
        // Skip to the next non-zero byte; a record start is at most 3 bytes before it.
        let nz = bytes[p..].iter().position(|&b| b != 0)?;
        let q = p + nz;
        let start = q.saturating_sub(3).max(p);
        for cand in start..=q {
            if cand + RECORD_HEADER_LEN > bytes.len() {
                return None;
            }
            if !plausible(&bytes[cand..], max_record, min_offset) {
                continue;
            }
            if let Ok(Decoded::Record(v)) = record::decode(&bytes[cand..], max_record) {
                if v.offset >= min_offset {
                    return Some((cand, v.offset));
                }
            }
        }
        p = q + 1;
    }
    None
}

/// Cheap checks of a candidate record header (no CRC): the length is in range and fits,
/// the field lengths add up, the flags are zero, and the offset is not before `min_offset`.
/// Keeps the resync search linear in practice on random damage.
fn plausible(b: &[u8], max_record: usize, min_offset: u64) -> bool {
    use crate::format::record::{
        R_FLAGS, R_HEADERS_LEN, R_KEY_LEN, R_LENGTH, R_OFFSET, R_PAYLOAD_LEN,
    };
    use crate::format::{get_u16, get_u32, get_u64};
    if b.len() < RECORD_HEADER_LEN {
        return false;
    }
    let len = get_u32(b, R_LENGTH) as usize;
    if len < RECORD_HEADER_LEN || len > max_record || len > b.len() {
        return false;
    }
    let fields = RECORD_HEADER_LEN as u64
        + u64::from(get_u16(b, R_KEY_LEN))
        + u64::from(get_u32(b, R_HEADERS_LEN))
        + u64::from(get_u32(b, R_PAYLOAD_LEN));
    fields == len as u64 && get_u16(b, R_FLAGS) == 0 && get_u64(b, R_OFFSET) >= min_offset
}

/// Decodes the record at `pos`, for readers.
///
/// # Errors
/// Why there is no record at `pos` (the end of the data, a torn record, corruption).
pub fn record_at(bytes: &[u8], pos: usize, max_record: usize) -> Result<RecordView<'_>, Stop> {
    let Some(rest) = bytes.get(pos..) else {
        return Err(Stop::End);
    };
    match record::decode(rest, max_record) {
        Ok(Decoded::Record(v)) => Ok(v),
        Ok(Decoded::End) => Err(Stop::End),
        Ok(Decoded::Incomplete { need }) => Err(Stop::Incomplete { need }),
        Err(e) => Err(Stop::Corrupt(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::SegmentHeader;
    use crate::format::record::Record;

    fn segment(n: u64, base: u64) -> Vec<u8> {
        let mut b = SegmentHeader {
            base_offset: base,
            created_ms: 1,
        }
        .encode()
        .to_vec();
        for i in 0..n {
            Record::from_payload(vec![i as u8; 100]).encode_into(base + i, 10 + i, &mut b);
        }
        b
    }

    #[test]
    fn scans_to_the_end_and_builds_an_index() {
        let mut b = segment(100, 5);
        let data_end = b.len();
        b.resize(data_end + 4096, 0);
        let s = scan(&b, 5, 1 << 20, 1000);
        assert_eq!(s.stop, Stop::End);
        assert_eq!(s.next_offset, 105);
        assert_eq!(s.end, data_end);
        assert_eq!(s.records, 100);
        assert_eq!(s.first_timestamp, 10);
        assert_eq!(s.last_timestamp, 109);
        // 144-byte records, an entry at least every 1000 bytes: every 7th record.
        assert_eq!(s.index.first().map(|e| e.position), Some(64));
        assert!(s
            .index
            .windows(2)
            .all(|w| w[1].position - w[0].position >= 1000));
        assert_eq!(s.index.len(), 15);
    }

    #[test]
    fn torn_and_corrupt_tails() {
        let b = segment(10, 0);
        let s = scan(&b[..b.len() - 10], 0, 1 << 20, 4096);
        assert!(matches!(s.stop, Stop::Incomplete { .. }));
        assert_eq!(s.next_offset, 9);
        let mut c = b.clone();
        let last_start = s.end;
        c[last_start + 60] ^= 0xff;
        let s2 = scan(&c, 0, 1 << 20, 4096);
        assert!(matches!(
            s2.stop,
            Stop::Corrupt(RecordError::ChecksumMismatch { .. })
        ));
        assert_eq!(s2.end, last_start);
        assert_eq!(find_valid_record_after(&c, last_start, 9, 1 << 20), None);
        // Corrupt a middle record: the records after it are found.
        let mut d = b;
        let mid = SEGMENT_HEADER_LEN + 144 * 3 + 50;
        d[mid] ^= 0xff;
        let s3 = scan(&d, 0, 1 << 20, 4096);
        assert_eq!(s3.next_offset, 3);
        assert_eq!(
            find_valid_record_after(&d, s3.end, 3, 1 << 20),
            Some((SEGMENT_HEADER_LEN + 144 * 4, 4))
        );
    }
}

//! Reading a log from an offset or a time: an iterator that crosses segments, reading
//! sealed segments through their memory map and the active one with positioned reads.

use std::sync::Arc;

use super::{read, Shared};
use crate::error::{Error, IoOp, Result};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::{self, Decoded, StoredRecord, RECORD_HEADER_LEN};
use crate::io::read_up_to;
use crate::segment::index::Entries;
use crate::segment::{ActiveShared, Sealed, Source};

/// Bytes read per positioned read.
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, Clone)]
enum Seg {
    Sealed(Arc<Sealed>),
    Active(Arc<ActiveShared>),
}

impl Seg {
    fn path(&self) -> &std::path::Path {
        match self {
            Self::Sealed(s) => &s.path,
            Self::Active(a) => &a.path,
        }
    }
}

/// An iterator over records from an offset; yields `Err` for corruption or I/O failure.
///
/// It stops (`None`) at the last acknowledged record; calling `next` again later yields
/// records acknowledged since — a reader can follow the log.
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    next: u64,
    cur: Option<(Seg, u64)>,
    /// Skip records older than this (time-based reads).
    min_ts: Option<u64>,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

/// The offset from which a time-based read should scan: the start of the last index
/// interval whose records are all older than `ts`.
pub(crate) fn offset_near_time(shared: &Shared, ts: u64) -> u64 {
    let view = read(&shared.view);
    // Timestamps never decrease in log order: the answer lies in the last segment whose
    // first record is older than `ts`, or in the one after it.
    if view.active_first_ts != 0 && view.active_first_ts < ts {
        let a = &view.active;
        return a
            .floor_time(ts)
            .map_or(a.base_offset, |e| a.base_offset + u64::from(e.rel_offset));
    }
    let i = view
        .sealed
        .partition_point(|s| s.index.get(0).is_some_and(|e| e.timestamp_ms < ts));
    match i.checked_sub(1).and_then(|k| view.sealed.get(k)) {
        Some(s) => s
            .index
            .floor_time(ts)
            .map_or(s.base_offset, |e| s.base_offset + u64::from(e.rel_offset)),
        None => view.first_offset(),
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64, min_ts: Option<u64>) -> Result<Self> {
        {
            let v = read(&shared.view);
            let (first, next) = (v.first_offset(), v.visible_next);
            if offset < first || offset > next {
                return Err(Error::OffsetOutOfRange {
                    requested: offset,
                    first,
                    next,
                });
            }
        }
        Ok(Self {
            shared,
            next: offset,
            cur: None,
            min_ts,
            buf: Vec::new(),
            buf_pos: 0,
        })
    }

    /// The offset of the next record this reader will yield.
    #[must_use]
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Finds the segment holding `self.next` and the index position at or before it.
    fn locate(&self) -> Result<(Seg, u64)> {
        let v = read(&self.shared.view);
        let first = v.first_offset();
        if self.next < first {
            return Err(Error::OffsetOutOfRange {
                requested: self.next,
                first,
                next: v.visible_next,
            });
        }
        if self.next >= v.active.base_offset {
            let a = &v.active;
            let pos = a
                .floor_offset(self.next - a.base_offset)
                .map_or(SEGMENT_HEADER_LEN as u64, |e| u64::from(e.position));
            return Ok((Seg::Active(Arc::clone(a)), pos));
        }
        let i = v.sealed.partition_point(|s| s.base_offset <= self.next);
        let Some(s) = i.checked_sub(1).and_then(|k| v.sealed.get(k)) else {
            return Err(Error::OffsetOutOfRange {
                requested: self.next,
                first,
                next: v.visible_next,
            });
        };
        let pos = s
            .index
            .floor_offset(self.next - s.base_offset)
            .map_or(SEGMENT_HEADER_LEN as u64, |e| u64::from(e.position));
        Ok((Seg::Sealed(Arc::clone(s)), pos))
    }

    /// Reads the bytes of the record at `pos` of an unmapped segment into `buf`, up to `limit`.
    fn fill(
        &mut self,
        file: &dyn crate::io::VFile,
        path: &std::path::Path,
        pos: u64,
        limit: u64,
    ) -> Result<&[u8]> {
        let have = |r: &Self| {
            pos >= r.buf_pos && pos + RECORD_HEADER_LEN as u64 <= r.buf_pos + r.buf.len() as u64
        };
        // Complete when the buffer holds the whole record its length field claims (the
        // record is decoded — CRC included — once, by the caller).
        let whole = |r: &Self| {
            let start = (pos - r.buf_pos) as usize;
            let len =
                crate::format::get_u32(&r.buf[start..], crate::format::record::R_LENGTH) as usize;
            r.buf.len() - start >= len
        };
        if !(have(self) && whole(self)) {
            // A fresh reader (often one that reads one record and goes) reads a chunk; a
            // reader under way reads ahead by up to the largest record. A record longer than
            // what was read is then read whole, up to the largest record the log accepts (a
            // longer length field is the decoder's to refuse).
            let avail = usize::try_from(limit.saturating_sub(pos)).unwrap_or(usize::MAX);
            let want = if self.buf.is_empty() {
                READ_CHUNK
            } else {
                READ_CHUNK.max(self.shared.config.max_record_bytes.min(64 << 20))
            };
            self.read_at(file, path, pos, want.min(avail))?;
            if have(self) && !whole(self) {
                let len =
                    crate::format::get_u32(&self.buf, crate::format::record::R_LENGTH) as usize;
                let max = self.shared.config.max_record_bytes.min(64 << 20);
                self.read_at(file, path, pos, len.min(max).min(avail))?;
            }
        }
        let start = usize::try_from(pos - self.buf_pos).unwrap_or(usize::MAX);
        Ok(self.buf.get(start..).unwrap_or(&[]))
    }

    /// Reads `n` bytes at `pos` into `buf` (fewer at the file's end).
    fn read_at(
        &mut self,
        file: &dyn crate::io::VFile,
        path: &std::path::Path,
        pos: u64,
        n: usize,
    ) -> Result<()> {
        self.buf.resize(n, 0);
        let got =
            read_up_to(file, &mut self.buf, pos).map_err(|e| Error::io(IoOp::Read, path, e))?;
        self.buf.truncate(got);
        self.buf_pos = pos;
        Ok(())
    }

    fn read_next(&mut self) -> Option<Result<StoredRecord>> {
        let mut relocated = false;
        loop {
            let (visible_next, active_limit) = {
                let v = read(&self.shared.view);
                (v.visible_next, (Arc::clone(&v.active), v.visible_end))
            };
            if self.next >= visible_next {
                return None;
            }
            let (seg, pos) = match self.cur.take() {
                Some(c) => c,
                None => match self.locate() {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                },
            };
            let max = self.shared.config.max_record_bytes;
            let decoded = match &seg {
                Seg::Sealed(s) => match &s.source {
                    Source::Mapped(m) => {
                        let bytes = m.bytes();
                        let at = usize::try_from(pos).unwrap_or(usize::MAX);
                        record_or_end(bytes.get(at..).unwrap_or(&[]), max)
                    }
                    Source::File(f) => {
                        let f = Arc::clone(f);
                        match self.fill(f.as_ref(), &s.path, pos, s.len) {
                            Ok(b) => record_or_end(b, max),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                },
                Seg::Active(a) => {
                    let limit = if Arc::ptr_eq(a, &active_limit.0) {
                        active_limit.1
                    } else {
                        u64::MAX
                    };
                    let f = Arc::clone(&a.file);
                    match self.fill(f.as_ref(), &a.path, pos, limit) {
                        Ok(b) => record_or_end(b, max),
                        Err(e) => return Some(Err(e)),
                    }
                }
            };
            match decoded {
                Ok(Some(rec)) => {
                    let len = rec.1 as u64;
                    let rec = rec.0;
                    if rec.offset < self.next {
                        self.cur = Some((seg, pos + len));
                        continue;
                    }
                    if rec.offset > self.next {
                        return Some(Err(corrupt(
                            &seg,
                            pos,
                            self.next,
                            format!(
                                "found offset {} where {} was expected",
                                rec.offset, self.next
                            ),
                        )));
                    }
                    self.next += 1;
                    self.cur = Some((seg, pos + len));
                    if self.min_ts.is_some_and(|t| rec.timestamp_ms < t) {
                        continue;
                    }
                    self.min_ts = None;
                    return Some(Ok(rec));
                }
                Ok(None) => {
                    // End of this segment's data: the record is in the next segment.
                    if relocated {
                        return Some(Err(corrupt(
                            &seg,
                            pos,
                            self.next,
                            "acknowledged record not found".into(),
                        )));
                    }
                    relocated = true;
                    self.buf.clear();
                    let (s2, p2) = match self.locate() {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e)),
                    };
                    if same_seg(&s2, &seg) && p2 >= pos {
                        return Some(Err(corrupt(
                            &seg,
                            pos,
                            self.next,
                            "acknowledged record not found".into(),
                        )));
                    }
                    self.cur = Some((s2, p2));
                }
                Err(reason) => return Some(Err(corrupt(&seg, pos, self.next, reason))),
            }
        }
    }
}

fn same_seg(a: &Seg, b: &Seg) -> bool {
    match (a, b) {
        (Seg::Sealed(x), Seg::Sealed(y)) => Arc::ptr_eq(x, y),
        (Seg::Active(x), Seg::Active(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

fn corrupt(seg: &Seg, pos: u64, offset: u64, reason: String) -> Error {
    Error::Corruption {
        segment: seg.path().to_path_buf(),
        position: pos,
        offset,
        reason,
    }
}

/// A record with its encoded length, `None` at the end of the data, or why the bytes are bad.
fn record_or_end(
    bytes: &[u8],
    max: usize,
) -> std::result::Result<Option<(StoredRecord, usize)>, String> {
    match record::decode(bytes, max) {
        Ok(Decoded::Record(v)) => Ok(Some((v.to_owned_record(), v.len))),
        Ok(Decoded::End | Decoded::Incomplete { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl Iterator for LogReader {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_next()
    }
}

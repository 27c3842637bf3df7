//! A segment's sparse index in memory (active segment) or mapped (sealed segment),
//! and writing index files.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoOp, Result};
use crate::format::index::{
    decode_index_header, encode_index_header, IndexEntry, INDEX_ENTRY_LEN, INDEX_HEADER_LEN,
};
use crate::io::{OpenMode, VFile, Vfs};
use crate::mmap::Mapped;

/// The entries of a sealed segment's index.
#[derive(Debug)]
pub enum IndexData {
    /// Mapped from the `.idx` file (entries start after the header).
    Mapped(Mapped),
    /// Held in memory (file systems without mmap, and rebuilt indexes).
    Owned(Vec<IndexEntry>),
}

impl IndexData {
    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Mapped(m) => m.bytes().len().saturating_sub(INDEX_HEADER_LEN) / INDEX_ENTRY_LEN,
            Self::Owned(v) => v.len(),
        }
    }

    /// True when there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<IndexEntry> {
        match self {
            Self::Mapped(m) => {
                let start = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
                m.bytes()
                    .get(start..start + INDEX_ENTRY_LEN)
                    .and_then(IndexEntry::decode)
            }
            Self::Owned(v) => v.get(i).copied(),
        }
    }
}

/// Read access to a list of entries sorted by offset (and so by position and time).
pub trait Entries {
    /// Number of entries.
    fn count(&self) -> usize;
    /// Entry `i`.
    fn entry(&self, i: usize) -> Option<IndexEntry>;

    /// The last entry whose relative offset is ≤ `rel`.
    fn floor_offset(&self, rel: u64) -> Option<IndexEntry> {
        let n = self.partition_point(|e| u64::from(e.rel_offset) <= rel);
        n.checked_sub(1).and_then(|i| self.entry(i))
    }

    /// The last entry whose timestamp is < `ts` (records before it are all older than `ts`).
    fn floor_time(&self, ts: u64) -> Option<IndexEntry> {
        let n = self.partition_point(|e| e.timestamp_ms < ts);
        n.checked_sub(1).and_then(|i| self.entry(i))
    }

    /// Number of leading entries for which `pred` holds (entries are sorted).
    fn partition_point(&self, pred: impl Fn(&IndexEntry) -> bool) -> usize {
        let (mut lo, mut hi) = (0usize, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some(e) if pred(&e) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }
}

impl Entries for IndexData {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Option<IndexEntry> {
        self.get(i)
    }
}

impl Entries for Vec<IndexEntry> {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> Option<IndexEntry> {
        self.get(i).copied()
    }
}

/// Encodes a whole index file.
#[must_use]
pub fn encode_index_file(base_offset: u64, entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
    out.extend_from_slice(&encode_index_header(base_offset));
    for e in entries {
        out.extend_from_slice(&e.encode());
    }
    out
}

/// Reads an index file's entries; `None` when it is missing, has a bad header, a different
/// base offset, or a partial entry (the caller then rebuilds it).
pub fn read_index_file(fs: &dyn Vfs, path: &Path, base_offset: u64) -> Option<Vec<IndexEntry>> {
    let file = fs.open(path, OpenMode::Read).ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?;
    let mut buf = vec![0u8; len];
    crate::io::read_exact_at(file.as_ref(), &mut buf, 0).ok()?;
    if decode_index_header(&buf).ok()? != base_offset {
        return None;
    }
    let body = &buf[INDEX_HEADER_LEN..];
    if body.len() % INDEX_ENTRY_LEN != 0 {
        return None;
    }
    Some(
        body.chunks_exact(INDEX_ENTRY_LEN)
            .filter_map(IndexEntry::decode)
            .collect(),
    )
}

/// Writes a complete index file durably: to `path.tmp`, synced, renamed over `path`
/// (so an existing mapping of the old file keeps its bytes). The caller syncs the directory.
///
/// # Errors
/// The I/O error, with the step and file.
pub fn write_index_file(
    fs: &dyn Vfs,
    path: &Path,
    base_offset: u64,
    entries: &[IndexEntry],
) -> Result<()> {
    let tmp = path.with_extension("idx.tmp");
    if fs.exists(&tmp) {
        fs.remove_file(&tmp)
            .map_err(|e| Error::io(IoOp::Remove, &tmp, e))?;
    }
    let file = fs
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io(IoOp::Open, &tmp, e))?;
    let bytes = encode_index_file(base_offset, entries);
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io(IoOp::Write, &tmp, e))?;
    file.sync_all()
        .map_err(|e| Error::io(IoOp::Sync, &tmp, e))?;
    fs.rename(&tmp, path)
        .map_err(|e| Error::io(IoOp::Rename, path, e))?;
    Ok(())
}

/// Opens an index for a sealed segment: mapped when the file system maps, else loaded.
///
/// # Errors
/// The I/O error, with the step and file.
pub fn open_sealed_index(fs: &dyn Vfs, path: &Path, entries: Vec<IndexEntry>) -> Result<IndexData> {
    let file: Arc<dyn VFile> = fs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(IoOp::Open, path, e))?;
    match file.map().map_err(|e| Error::io(IoOp::Map, path, e))? {
        Some(m) => Ok(IndexData::Mapped(m)),
        None => Ok(IndexData::Owned(entries)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel: u32, pos: u32, ts: u64) -> IndexEntry {
        IndexEntry {
            rel_offset: rel,
            position: pos,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn floor_lookups() {
        let v = vec![
            e(0, 64, 10),
            e(10, 4200, 20),
            e(20, 8400, 20),
            e(30, 12600, 40),
        ];
        assert_eq!(v.floor_offset(0), Some(e(0, 64, 10)));
        assert_eq!(v.floor_offset(15), Some(e(10, 4200, 20)));
        assert_eq!(v.floor_offset(99), Some(e(30, 12600, 40)));
        assert_eq!(v.floor_time(10), None);
        assert_eq!(v.floor_time(20), Some(e(0, 64, 10)));
        assert_eq!(v.floor_time(21), Some(e(20, 8400, 20)));
        assert_eq!(Vec::<IndexEntry>::new().floor_offset(3), None);
    }
}

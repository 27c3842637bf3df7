//! Segments: the active one being appended to, and sealed ones being read.

pub mod index;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{LogConfig, Preallocate};
use crate::error::{Error, IoOp, Result};
use crate::format::header::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::index::{IndexEntry, INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
use crate::format::{index_file_name, segment_file_name, SPARE_SUFFIX};
use crate::io::{OpenMode, VFile, Vfs};
use crate::mmap::Mapped;
use index::{encode_index_file, IndexData};
use scan::IndexPolicy;

/// Zeros written per call when preallocating.
const ZERO_CHUNK: usize = 1 << 20;

/// The file name of the preallocated spare segment.
#[must_use]
pub fn spare_file_name() -> String {
    format!("next.{SPARE_SUFFIX}")
}

/// Where a segment's bytes are read from.
#[derive(Debug)]
pub enum Source {
    /// A read-only map of the sealed file.
    Mapped(Mapped),
    /// Positioned reads (active segments, and file systems without mmap).
    File(Arc<dyn VFile>),
}

/// A sealed segment: immutable, its length final.
#[derive(Debug)]
pub struct Sealed {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
    /// Bytes of the file (header + records).
    pub len: u64,
    /// Timestamp of its last record (0 when unknown or empty).
    pub last_timestamp: u64,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// The segment file.
    pub path: PathBuf,
    /// The index file.
    pub index_path: PathBuf,
    /// Its bytes.
    pub source: Source,
    /// Its sparse index.
    pub index: IndexData,
}

/// What readers of the active segment share with its writer.
#[derive(Debug)]
pub struct ActiveShared {
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// The file (read with positioned reads).
    pub file: Arc<dyn VFile>,
    /// The segment's path.
    pub path: PathBuf,
    /// The index entries so far.
    pub index: Mutex<Vec<IndexEntry>>,
}

impl ActiveShared {
    /// A copy of the index entry at or before relative offset `rel`.
    pub fn floor_offset(&self, rel: u64) -> Option<IndexEntry> {
        use index::Entries;
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .floor_offset(rel)
    }

    /// A copy of the last index entry with a timestamp before `ts`.
    pub fn floor_time(&self, ts: u64) -> Option<IndexEntry> {
        use index::Entries;
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .floor_time(ts)
    }
}

/// The segment being appended to. Owned by the group-commit leader.
#[derive(Debug)]
pub struct Active {
    /// Shared with readers.
    pub shared: Arc<ActiveShared>,
    /// The index file (appended to, synced when sealing).
    idx_file: Arc<dyn VFile>,
    index_path: PathBuf,
    /// When the segment was created.
    pub created_ms: u64,
    /// The bytes records may fill: the preallocated file's length (`segment_bytes` when
    /// files grow with their data).
    pub capacity: u64,
    /// Where the next record goes.
    pub write_pos: u64,
    /// The offset the next record gets.
    pub next_offset: u64,
    /// Timestamp of the last record (0 when empty).
    pub last_timestamp: u64,
    /// Index entries written to the index file so far.
    idx_written: usize,
    policy: IndexPolicy,
}

/// Bytes of zeros between two syncs when preparing a spare: a spare's flushes stay small,
/// so they never queue a long flush ahead of the write path's `fdatasync`.
const SPARE_SYNC_CHUNK: u64 = 4 << 20;

fn zero_fill(
    file: &dyn VFile,
    from: u64,
    to: u64,
    path: &Path,
    sync_every: Option<u64>,
) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut pos = from;
    let mut since_sync = 0u64;
    while pos < to {
        let n = usize::try_from(to - pos)
            .unwrap_or(ZERO_CHUNK)
            .min(ZERO_CHUNK);
        file.write_all_at(&zeros[..n], pos)
            .map_err(|e| Error::io(IoOp::Write, path, e))?;
        pos += n as u64;
        since_sync += n as u64;
        if sync_every.is_some_and(|every| since_sync >= every) {
            file.sync_data()
                .map_err(|e| Error::io(IoOp::Sync, path, e))?;
            since_sync = 0;
        }
    }
    Ok(())
}

/// A zero-filled, synced file waiting to become the next segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    /// Its path (`next.spare`).
    pub path: PathBuf,
    /// Its size in bytes: the capacity of the segment it becomes.
    pub bytes: u64,
}

/// Prepares the spare: a zero-filled, synced file of `bytes` waiting to become the next
/// segment. Off the write path (the background thread calls it). A failure (a full disk)
/// removes what it wrote.
///
/// # Errors
/// The I/O error, with the step and file.
pub fn prepare_spare(fs: &dyn Vfs, dir: &Path, bytes: u64) -> Result<Spare> {
    let path = dir.join(spare_file_name());
    if fs.exists(&path) {
        fs.remove_file(&path)
            .map_err(|e| Error::io(IoOp::Remove, &path, e))?;
    }
    let filled = (|| {
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?;
        zero_fill(file.as_ref(), 0, bytes, &path, Some(SPARE_SYNC_CHUNK))?;
        file.sync_data()
            .map_err(|e| Error::io(IoOp::Sync, &path, e))
    })();
    if let Err(e) = filled {
        remove_quietly(fs, &path);
        return Err(e);
    }
    Ok(Spare { path, bytes })
}

/// Removes a file a failed step left behind (best effort: recovery removes it otherwise).
fn remove_quietly(fs: &dyn Vfs, path: &Path) {
    if fs.exists(path) {
        if let Err(e) = fs.remove_file(path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove a leftover file");
        }
    }
}

impl Active {
    /// Creates a new segment at `base_offset` of `capacity` bytes: from the spare when one
    /// is ready and large enough (renamed into place), else a fresh file (zero-filled when
    /// configured). The header is synced before the function returns, and the directory is
    /// synced after the create/rename. A failure removes the files it created (a full disk
    /// gets its space back, and the next attempt starts clean).
    ///
    /// # Errors
    /// The I/O error, with the step and file.
    pub fn create(
        fs: &dyn Vfs,
        dir: &Path,
        cfg: &LogConfig,
        base_offset: u64,
        created_ms: u64,
        spare: Option<Spare>,
        capacity: u64,
    ) -> Result<Self> {
        let path = dir.join(segment_file_name(base_offset));
        let index_path = dir.join(index_file_name(base_offset));
        let spare = match spare {
            Some(s) if s.bytes >= capacity => Some(s),
            Some(s) => {
                remove_quietly(fs, &s.path);
                None
            }
            None => None,
        };
        let capacity = spare.as_ref().map_or(capacity, |s| s.bytes);
        let made = Self::create_files(
            fs,
            dir,
            cfg,
            base_offset,
            created_ms,
            spare.as_ref(),
            capacity,
        );
        match made {
            Ok((file, idx_file)) => Ok(Self::from_parts(
                file,
                idx_file,
                dir,
                cfg,
                base_offset,
                created_ms,
                capacity,
            )),
            Err(e) => {
                if let Some(s) = &spare {
                    remove_quietly(fs, &s.path);
                }
                remove_quietly(fs, &path);
                remove_quietly(fs, &index_path);
                Err(e)
            }
        }
    }

    fn create_files(
        fs: &dyn Vfs,
        dir: &Path,
        cfg: &LogConfig,
        base_offset: u64,
        created_ms: u64,
        spare: Option<&Spare>,
        capacity: u64,
    ) -> Result<(Arc<dyn VFile>, Arc<dyn VFile>)> {
        let path = dir.join(segment_file_name(base_offset));
        let header = SegmentHeader {
            base_offset,
            created_ms,
        }
        .encode();
        let file = if let Some(spare) = spare {
            let file = fs
                .open(&spare.path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(IoOp::Open, &spare.path, e))?;
            file.write_all_at(&header, 0)
                .map_err(|e| Error::io(IoOp::Write, &spare.path, e))?;
            file.sync_data()
                .map_err(|e| Error::io(IoOp::Sync, &spare.path, e))?;
            fs.rename(&spare.path, &path)
                .map_err(|e| Error::io(IoOp::Rename, &path, e))?;
            file
        } else {
            let file = fs
                .open(&path, OpenMode::CreateNew)
                .map_err(|e| Error::io(IoOp::Open, &path, e))?;
            if cfg.preallocate == Preallocate::ZeroFill {
                zero_fill(
                    file.as_ref(),
                    SEGMENT_HEADER_LEN as u64,
                    capacity,
                    &path,
                    None,
                )?;
            }
            file.write_all_at(&header, 0)
                .map_err(|e| Error::io(IoOp::Write, &path, e))?;
            file.sync_data()
                .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
            file
        };
        let index_path = dir.join(index_file_name(base_offset));
        let idx_file = create_index(fs, &index_path, base_offset, &[])?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io(IoOp::SyncDir, dir, e))?;
        Ok((file, idx_file))
    }

    /// Grows an empty preallocated segment in place to `capacity` (zero-filled and synced):
    /// the first record of a partition can be larger than its small first segment.
    ///
    /// # Errors
    /// The I/O error of the write or the sync; on failure the capacity is unchanged.
    pub fn grow(&mut self, capacity: u64) -> Result<()> {
        if capacity <= self.capacity {
            return Ok(());
        }
        let path = &self.shared.path;
        let filled = zero_fill(
            self.shared.file.as_ref(),
            self.capacity,
            capacity,
            path,
            None,
        );
        if let Err(e) = filled {
            // Give back what the partial extension took (the segment holds no record yet).
            if let Err(cut) = self.shared.file.set_len(self.capacity) {
                tracing::warn!(segment = %path.display(), error = %cut, "could not cut back a failed extension");
            }
            return Err(e);
        }
        self.shared
            .file
            .sync_data()
            .map_err(|e| Error::io(IoOp::Sync, path, e))?;
        self.capacity = capacity;
        Ok(())
    }

    /// Takes back a write that failed before it completed (`len` bytes at the write
    /// position): zeros over them when preallocated, else the file cut back to its data. The
    /// position did not move, so what follows is written over the same bytes; without this a
    /// crash could leave a refused record readable after the data.
    ///
    /// # Errors
    /// The I/O error of the undo (the caller then poisons the log).
    pub fn undo_write(&self, len: u64, preallocate: Preallocate) -> Result<()> {
        let path = &self.shared.path;
        match preallocate {
            Preallocate::ZeroFill => {
                let end = (self.write_pos + len).min(self.capacity);
                zero_fill(self.shared.file.as_ref(), self.write_pos, end, path, None)
            }
            Preallocate::None => self
                .shared
                .file
                .set_len(self.write_pos)
                .map_err(|e| Error::io(IoOp::SetLen, path, e)),
        }
    }

    /// The active segment `base_offset` of `dir`, empty (just its header), `capacity` bytes
    /// preallocated or allowed.
    fn from_parts(
        file: Arc<dyn VFile>,
        idx_file: Arc<dyn VFile>,
        dir: &Path,
        cfg: &LogConfig,
        base_offset: u64,
        created_ms: u64,
        capacity: u64,
    ) -> Self {
        Self {
            shared: Arc::new(ActiveShared {
                base_offset,
                file,
                path: dir.join(segment_file_name(base_offset)),
                index: Mutex::new(Vec::new()),
            }),
            idx_file,
            index_path: dir.join(index_file_name(base_offset)),
            created_ms,
            capacity,
            write_pos: SEGMENT_HEADER_LEN as u64,
            next_offset: base_offset,
            last_timestamp: 0,
            idx_written: 0,
            policy: IndexPolicy::new(cfg.index_interval_bytes),
        }
    }

    /// Reopens the last segment (`file_len` bytes long) for appending after recovery scanned
    /// it. The index file is rewritten from `index` (the scan's, derived from the log).
    ///
    /// # Errors
    /// The I/O error, with the step and file.
    #[allow(clippy::too_many_arguments)]
    pub fn reopen(
        fs: &dyn Vfs,
        dir: &Path,
        cfg: &LogConfig,
        file: Arc<dyn VFile>,
        header: SegmentHeader,
        scan: &scan::Scan,
        index_ok: bool,
        file_len: u64,
    ) -> Result<Self> {
        let index_path = dir.join(index_file_name(header.base_offset));
        let idx_file = if index_ok {
            fs.open(&index_path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(IoOp::Open, &index_path, e))?
        } else {
            if fs.exists(&index_path) {
                fs.remove_file(&index_path)
                    .map_err(|e| Error::io(IoOp::Remove, &index_path, e))?;
            }
            let f = create_index(fs, &index_path, header.base_offset, &scan.index)?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io(IoOp::SyncDir, dir, e))?;
            f
        };
        let capacity = match cfg.preallocate {
            // The preallocated length (segments start small and grow, so it is the file's).
            Preallocate::ZeroFill => file_len.max(scan.end as u64),
            Preallocate::None => cfg.segment_bytes.max(scan.end as u64),
        };
        let mut a = Self::from_parts(
            file,
            idx_file,
            dir,
            cfg,
            header.base_offset,
            header.created_ms,
            capacity,
        );
        a.write_pos = scan.end as u64;
        a.next_offset = scan.next_offset;
        a.last_timestamp = scan.last_timestamp;
        a.idx_written = scan.index.len();
        a.policy = IndexPolicy::resume(cfg.index_interval_bytes, scan.index.last());
        a.shared
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(&scan.index);
        Ok(a)
    }

    /// Bytes still free.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.capacity.saturating_sub(self.write_pos)
    }

    /// True when no record was written yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.write_pos == SEGMENT_HEADER_LEN as u64
    }

    /// Writes encoded records (`bytes`, which must fit) in one write, then notes their index
    /// entries. `metas` are (offset, position within `bytes`, timestamp) per record.
    ///
    /// # Errors
    /// The I/O error of the write.
    pub fn write(&mut self, bytes: &[u8], metas: &[(u64, usize, u64)]) -> Result<()> {
        let path = &self.shared.path;
        self.shared
            .file
            .write_all_at(bytes, self.write_pos)
            .map_err(|e| Error::io(IoOp::Write, path, e))?;
        let mut new_entries = Vec::new();
        for &(offset, rel_pos, ts) in metas {
            let pos = self.write_pos as usize + rel_pos;
            if let Some(e) = self
                .policy
                .observe(self.shared.base_offset, offset, pos, ts)
            {
                new_entries.push(e);
            }
            self.last_timestamp = ts;
        }
        self.write_pos += bytes.len() as u64;
        if let Some(&(last, _, _)) = metas.last() {
            self.next_offset = last + 1;
        }
        if !new_entries.is_empty() {
            // The index is derived: a failed index write is repaired at the next open, so it
            // does not fail the append.
            let at = (INDEX_HEADER_LEN + self.idx_written * INDEX_ENTRY_LEN) as u64;
            let buf: Vec<u8> = new_entries.iter().flat_map(IndexEntry::encode).collect();
            if let Err(e) = self.idx_file.write_all_at(&buf, at) {
                tracing::warn!(index = %self.index_path.display(), error = %e, "index write failed; it will be rebuilt on open");
            }
            self.idx_written += new_entries.len();
            self.shared
                .index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(new_entries);
        }
        Ok(())
    }

    /// `fdatasync` of the segment.
    ///
    /// # Errors
    /// The I/O error of the sync.
    pub fn sync(&self) -> Result<()> {
        self.shared
            .file
            .sync_data()
            .map_err(|e| Error::io(IoOp::Sync, &self.shared.path, e))
    }

    /// Seals the segment: data synced, file truncated to its data and fsync'd, index
    /// rewritten complete and synced; then reopened for reading (mapped when possible).
    ///
    /// # Errors
    /// The I/O error, with the step and file.
    pub fn seal(&self, fs: &dyn Vfs) -> Result<Sealed> {
        let path = self.shared.path.clone();
        let file = &self.shared.file;
        file.sync_data()
            .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
        file.set_len(self.write_pos)
            .map_err(|e| Error::io(IoOp::SetLen, &path, e))?;
        file.sync_all()
            .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
        let entries = self
            .shared
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let bytes = encode_index_file(self.shared.base_offset, &entries);
        let written = self
            .idx_file
            .write_all_at(&bytes, 0)
            .map_err(|e| Error::io(IoOp::Write, &self.index_path, e));
        let index_ok = match written {
            Ok(()) => true,
            // The index is derived (rebuilt at open from the segment): a full disk that
            // refuses its rewrite leaves the segment sealed, its index kept in memory.
            Err(e) if e.is_disk_full() => {
                tracing::warn!(index = %self.index_path.display(), error = %e, "index rewrite refused (disk full); kept in memory, rebuilt at the next open");
                false
            }
            Err(e) => return Err(e),
        };
        if index_ok {
            self.idx_file
                .sync_all()
                .map_err(|e| Error::io(IoOp::Sync, &self.index_path, e))?;
        }
        let source = match file.map().map_err(|e| Error::io(IoOp::Map, &path, e))? {
            Some(m) => Source::Mapped(m),
            None => Source::File(Arc::clone(file)),
        };
        let index = if index_ok {
            index::open_sealed_index(fs, &self.index_path, entries)?
        } else {
            IndexData::Owned(entries)
        };
        Ok(Sealed {
            base_offset: self.shared.base_offset,
            next_offset: self.next_offset,
            len: self.write_pos,
            last_timestamp: self.last_timestamp,
            created_ms: self.created_ms,
            path,
            index_path: self.index_path.clone(),
            source,
            index,
        })
    }
}

fn create_index(
    fs: &dyn Vfs,
    path: &Path,
    base_offset: u64,
    entries: &[IndexEntry],
) -> Result<Arc<dyn VFile>> {
    if fs.exists(path) {
        fs.remove_file(path)
            .map_err(|e| Error::io(IoOp::Remove, path, e))?;
    }
    let f = fs
        .open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io(IoOp::Open, path, e))?;
    f.write_all_at(&encode_index_file(base_offset, entries), 0)
        .map_err(|e| Error::io(IoOp::Write, path, e))?;
    Ok(f)
}

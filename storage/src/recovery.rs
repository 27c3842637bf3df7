//! Opening a log directory: check every file, scan, cut a torn tail, rebuild indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{LogConfig, Preallocate, RecoveryMode};
use crate::error::{Error, IoOp, Result};
use crate::format::header::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::format::{
    index_file_name, parse_file_name, INDEX_SUFFIX, LOCK_FILE, SEGMENT_SUFFIX, SPARE_SUFFIX,
};
use crate::io::{read_up_to, OpenMode, VFile, Vfs};
use crate::segment::index::{self, read_index_file, write_index_file, IndexData};
use crate::segment::scan::{self, find_valid_record_after, Scan, Stop};
use crate::segment::{Active, Sealed, Source};

/// A torn tail that recovery cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte position of the cut (the end of the last valid record).
    pub position: u64,
    /// The offset the first discarded record would have had.
    pub offset: u64,
    /// Non-zero bytes discarded.
    pub bytes_cut: u64,
    /// What was found there.
    pub reason: String,
}

/// What opening a log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Records checked by CRC while opening.
    pub records_scanned: u64,
    /// The torn tail that was cut, if any.
    pub tail_cut: Option<TailCut>,
    /// Index files rebuilt from their segments.
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Leftover files removed (spare, temporary files, orphan indexes, an unfinished segment).
    pub removed: Vec<PathBuf>,
}

/// The recovered state of a log.
#[derive(Debug)]
pub struct Recovered {
    /// Sealed segments, oldest first.
    pub sealed: Vec<Arc<Sealed>>,
    /// The active segment.
    pub active: Active,
    /// What was found and done.
    pub report: RecoveryReport,
}

fn corruption(segment: &Path, position: usize, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        segment: segment.to_path_buf(),
        position: position as u64,
        offset,
        reason: reason.into(),
    }
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::End => "unexpected end of data".to_owned(),
        Stop::Incomplete { need } => {
            format!("record of {need} bytes runs past the end of the data")
        }
        Stop::Corrupt(e) => e.to_string(),
        Stop::WrongOffset { found } => format!("record carries offset {found}"),
    }
}

fn read_all(file: &dyn VFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| Error::io(IoOp::Read, path, e))?;
    let len = usize::try_from(len).map_err(|_| Error::NotALog {
        path: path.to_path_buf(),
        reason: "file too large".into(),
    })?;
    let mut buf = vec![0u8; len];
    let n = read_up_to(file, &mut buf, 0).map_err(|e| Error::io(IoOp::Read, path, e))?;
    buf.truncate(n);
    Ok(buf)
}

/// Lists the directory, removes leftovers, and returns the segments' base offsets in order.
fn inventory(fs: &dyn Vfs, dir: &Path, report: &mut RecoveryReport) -> Result<Vec<u64>> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io(IoOp::ListDir, dir, e))?;
    let mut segments = Vec::new();
    let mut indexes = Vec::new();
    let mut removed_any = false;
    for name in names {
        if name == LOCK_FILE {
            continue;
        }
        if let Some(base) = parse_file_name(&name, SEGMENT_SUFFIX) {
            segments.push(base);
        } else if let Some(base) = parse_file_name(&name, INDEX_SUFFIX) {
            indexes.push(base);
        } else if Path::new(&name)
            .extension()
            .is_some_and(|x| x == SPARE_SUFFIX || x == "tmp")
        {
            let p = dir.join(&name);
            fs.remove_file(&p)
                .map_err(|e| Error::io(IoOp::Remove, &p, e))?;
            report.removed.push(p);
            removed_any = true;
        } else {
            return Err(Error::NotALog {
                path: dir.join(&name),
                reason: "unexpected file in a log directory (expected *.log, *.idx, LOCK)".into(),
            });
        }
    }
    segments.sort_unstable();
    for base in indexes {
        if segments.binary_search(&base).is_err() {
            let p = dir.join(index_file_name(base));
            fs.remove_file(&p)
                .map_err(|e| Error::io(IoOp::Remove, &p, e))?;
            report.removed.push(p);
            removed_any = true;
        }
    }
    if removed_any {
        fs.sync_dir(dir)
            .map_err(|e| Error::io(IoOp::SyncDir, dir, e))?;
    }
    Ok(segments)
}

/// Opens the log in `dir` (already locked by the caller).
///
/// # Errors
/// Corruption outside what `cfg.recovery_mode` tolerates, a bad file, or an I/O error.
#[allow(clippy::too_many_lines)] // one linear procedure, read top to bottom
pub fn recover(fs: &dyn Vfs, dir: &Path, cfg: &LogConfig, now_ms: u64) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut bases = inventory(fs, dir, &mut report)?;

    // A newest segment whose header is all zeros was being created when the process died;
    // a segment's header is synced before its first record, so it holds nothing acknowledged.
    if let Some(&last) = bases.last() {
        let path = dir.join(crate::format::segment_file_name(last));
        let file = fs
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let n =
            read_up_to(file.as_ref(), &mut head, 0).map_err(|e| Error::io(IoOp::Read, &path, e))?;
        if head[..n].iter().all(|&b| b == 0) {
            let bytes = read_all(file.as_ref(), &path)?;
            if bytes.iter().all(|&b| b == 0) {
                drop(file);
                fs.remove_file(&path)
                    .map_err(|e| Error::io(IoOp::Remove, &path, e))?;
                let idx = dir.join(index_file_name(last));
                if fs.exists(&idx) {
                    fs.remove_file(&idx)
                        .map_err(|e| Error::io(IoOp::Remove, &idx, e))?;
                }
                fs.sync_dir(dir)
                    .map_err(|e| Error::io(IoOp::SyncDir, dir, e))?;
                tracing::warn!(segment = %path.display(), "removed an unfinished segment (its header was never written)");
                report.removed.push(path);
                bases.pop();
            }
        }
    }

    report.segments = bases.len();
    let mut sealed: Vec<Arc<Sealed>> = Vec::with_capacity(bases.len());
    let Some((&last_base, sealed_bases)) = bases.split_last() else {
        let first = cfg.next_segment_bytes(None, 0);
        let active = Active::create(fs, dir, cfg, 0, now_ms, None, first)?;
        return Ok(Recovered {
            sealed,
            active,
            report,
        });
    };

    for (i, &base) in sealed_bases.iter().enumerate() {
        let next_base = bases[i + 1];
        let s = open_sealed(fs, dir, cfg, base, next_base, &mut report)?;
        sealed.push(Arc::new(s));
    }

    let path = dir.join(crate::format::segment_file_name(last_base));
    let file = fs
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| Error::io(IoOp::Open, &path, e))?;
    let mut bytes = read_all(file.as_ref(), &path)?;
    let header = SegmentHeader::decode(&bytes).map_err(|reason| Error::BadHeader {
        path: path.clone(),
        reason,
    })?;
    check_base(&path, header.base_offset, last_base)?;
    if let Some(prev) = sealed.last() {
        if prev.next_offset != last_base {
            return Err(corruption(
                &prev.path,
                prev.len as usize,
                prev.next_offset,
                format!(
                    "segment ends at offset {} but the next segment starts at {last_base}",
                    prev.next_offset
                ),
            ));
        }
    }
    let max = cfg.max_record_bytes;
    let mut sc = scan::scan(&bytes, last_base, max, cfg.index_interval_bytes);
    report.records_scanned += sc.records;
    cut_tail(cfg, file.as_ref(), &path, &mut bytes, &mut sc, &mut report)?;
    // What survived a process crash may still be only in the page cache (appends under
    // `Batch`/`None`, or a `Sync` batch whose fsync had not run): once the log opens, readers
    // see every record, so the records are made durable first — nothing is ever served that
    // a power loss could still take back. One fdatasync per open.
    if sc.records > 0 {
        file.sync_data()
            .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
    }

    let idx_path = dir.join(index_file_name(last_base));
    let index_ok = read_index_file(fs, &idx_path, last_base).as_deref() == Some(&sc.index[..]);
    if !index_ok {
        report.indexes_rebuilt.push(idx_path.clone());
    }
    // A preallocated segment whose data reaches the end of its file has no room left: it
    // was sealed (its file truncated to its data) or filled, and no successor exists yet.
    // Segments start small and grow, so the file's length, not `segment_bytes`, says so.
    let file_len = bytes.len() as u64;
    let full = cfg.preallocate == Preallocate::ZeroFill && sc.end as u64 == file_len;
    if full && sc.records > 0 {
        // Keep it sealed and start a new active segment after it.
        let mut active = Active::reopen(fs, dir, cfg, file, header, &sc, index_ok, file_len)?;
        let s = active.seal(fs)?;
        let next = s.next_offset;
        let capacity = cfg.next_segment_bytes(Some(s.len), 0);
        match Active::create(fs, dir, cfg, next, now_ms, None, capacity) {
            Ok(created) => {
                sealed.push(Arc::new(s));
                return Ok(Recovered {
                    sealed,
                    active: created,
                    report,
                });
            }
            // A full disk (a log that was refusing writes, reopened before space returned):
            // open with the full segment as the active one; the first write rolls.
            Err(e) if e.is_disk_full() => {
                tracing::warn!(dir = %dir.display(), error = %e, "disk full: the next segment will be created by the first write");
                drop(s);
                active.capacity = active.write_pos;
                return Ok(Recovered {
                    sealed,
                    active,
                    report,
                });
            }
            Err(e) => return Err(e),
        }
    }
    let active = Active::reopen(fs, dir, cfg, file, header, &sc, index_ok, file_len)?;
    Ok(Recovered {
        sealed,
        active,
        report,
    })
}

fn check_base(path: &Path, in_header: u64, in_name: u64) -> Result<()> {
    if in_header == in_name {
        return Ok(());
    }
    Err(Error::NotALog {
        path: path.to_path_buf(),
        reason: format!("header says base offset {in_header} but the file name says {in_name}"),
    })
}

/// Handles whatever follows the last valid record of the last segment.
fn cut_tail(
    cfg: &LogConfig,
    file: &dyn VFile,
    path: &Path,
    bytes: &mut [u8],
    sc: &mut Scan,
    report: &mut RecoveryReport,
) -> Result<()> {
    let end = sc.end;
    let rest = &bytes[end..];
    let Some(last_nz) = rest.iter().rposition(|&b| b != 0) else {
        return Ok(()); // clean: nothing but zeros after the last record
    };
    if let Stop::WrongOffset { found } = sc.stop {
        return Err(corruption(
            path,
            end,
            sc.next_offset,
            format!("a valid record carries offset {found}: a gap or a repeat, not a torn tail"),
        ));
    }
    let reason = match &sc.stop {
        Stop::End => "non-zero bytes after the end of data".to_owned(),
        other => describe(other),
    };
    if let Some((pos, offset)) =
        find_valid_record_after(bytes, end, sc.next_offset, cfg.max_record_bytes)
    {
        return Err(corruption(
            path,
            end,
            sc.next_offset,
            format!(
            "{reason}; a valid record (offset {offset}) follows at byte {pos}, so this is damage \
             inside the log, not a torn tail"
        ),
        ));
    }
    if cfg.recovery_mode == RecoveryMode::AbsoluteConsistency {
        return Err(corruption(
            path,
            end,
            sc.next_offset,
            format!(
                "{reason} (a torn tail; RecoveryMode::AbsoluteConsistency refuses it, \
             TolerateTailCorruption would cut it)"
            ),
        ));
    }
    let cut = last_nz + 1;
    let zeros = vec![0u8; cut];
    file.write_all_at(&zeros, end as u64)
        .map_err(|e| Error::io(IoOp::Write, path, e))?;
    if cfg.preallocate == Preallocate::None {
        file.set_len(end as u64)
            .map_err(|e| Error::io(IoOp::SetLen, path, e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io(IoOp::Sync, path, e))?;
    bytes[end..end + cut].fill(0);
    tracing::warn!(
        segment = %path.display(), position = end, offset = sc.next_offset, bytes_cut = cut,
        %reason, "cut a torn tail"
    );
    report.tail_cut = Some(TailCut {
        segment: path.to_path_buf(),
        position: end as u64,
        offset: sc.next_offset,
        bytes_cut: cut as u64,
        reason,
    });
    sc.stop = Stop::End;
    Ok(())
}

/// Opens a sealed segment: header, scan (when verifying), chain check, index.
#[allow(clippy::too_many_lines)] // one linear procedure, read top to bottom
fn open_sealed(
    fs: &dyn Vfs,
    dir: &Path,
    cfg: &LogConfig,
    base: u64,
    next_base: u64,
    report: &mut RecoveryReport,
) -> Result<Sealed> {
    let path = dir.join(crate::format::segment_file_name(base));
    let idx_path = dir.join(index_file_name(base));
    let file = fs
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io(IoOp::Open, &path, e))?;
    let len = file.len().map_err(|e| Error::io(IoOp::Read, &path, e))?;
    let source = match file.map().map_err(|e| Error::io(IoOp::Map, &path, e))? {
        Some(m) => Source::Mapped(m),
        None => Source::File(Arc::clone(&file)),
    };
    let owned;
    let bytes: &[u8] = match &source {
        Source::Mapped(m) => m.bytes(),
        Source::File(f) => {
            if cfg.verify_on_open {
                owned = read_all(f.as_ref(), &path)?;
            } else {
                let mut h = vec![0u8; SEGMENT_HEADER_LEN];
                let n = read_up_to(f.as_ref(), &mut h, 0)
                    .map_err(|e| Error::io(IoOp::Read, &path, e))?;
                h.truncate(n);
                owned = h;
            }
            &owned
        }
    };
    let header = SegmentHeader::decode(bytes).map_err(|reason| Error::BadHeader {
        path: path.clone(),
        reason,
    })?;
    check_base(&path, header.base_offset, base)?;
    let stored = read_index_file(fs, &idx_path, base);
    let (entries, last_ts) = if cfg.verify_on_open {
        let sc = scan::scan(bytes, base, cfg.max_record_bytes, cfg.index_interval_bytes);
        report.records_scanned += sc.records;
        let interrupted_seal = sc.stop == Stop::End
            && (sc.end as u64) < len
            && bytes[sc.end..].iter().all(|&b| b == 0);
        if interrupted_seal {
            // A seal interrupted before its truncation (written by an older build, which
            // created the next segment first): only zeros follow the records. Finish it —
            // after dropping our own map of the file, which must never see it shrink.
            let end = sc.end as u64;
            drop(source);
            let f = fs
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(IoOp::Open, &path, e))?;
            f.set_len(end)
                .map_err(|e| Error::io(IoOp::SetLen, &path, e))?;
            f.sync_all().map_err(|e| Error::io(IoOp::Sync, &path, e))?;
            tracing::warn!(segment = %path.display(), "finished an interrupted seal (truncated its zero tail)");
            return open_sealed(fs, dir, cfg, base, next_base, report);
        }
        if sc.stop != Stop::End || sc.end as u64 != len {
            return Err(corruption(
                &path,
                sc.end,
                sc.next_offset,
                format!(
                    "{} in a sealed segment (only the tail of the last segment may be torn)",
                    describe(&sc.stop)
                ),
            ));
        }
        if sc.next_offset != next_base {
            return Err(corruption(
                &path,
                sc.end,
                sc.next_offset,
                format!(
                    "segment ends at offset {} but the next segment starts at {next_base}",
                    sc.next_offset
                ),
            ));
        }
        (sc.index, sc.last_timestamp)
    } else {
        let e = stored.clone().unwrap_or_default();
        let ts = e.last().map_or(header.created_ms, |x| x.timestamp_ms);
        (e, ts)
    };
    let (index, idx_path) = if stored.as_deref() != Some(&entries[..])
        || (entries.is_empty() && len > SEGMENT_HEADER_LEN as u64)
    {
        let rebuilt = if entries.is_empty() && len > SEGMENT_HEADER_LEN as u64 {
            // Not verifying, and the index is unusable: derive it from the segment now.
            let all = match &source {
                Source::Mapped(m) => m.bytes().to_vec(),
                Source::File(f) => read_all(f.as_ref(), &path)?,
            };
            scan::scan(&all, base, cfg.max_record_bytes, cfg.index_interval_bytes).index
        } else {
            entries.clone()
        };
        write_index_file(fs, &idx_path, base, &rebuilt)?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io(IoOp::SyncDir, dir, e))?;
        report.indexes_rebuilt.push(idx_path.clone());
        let index = index::open_sealed_index(fs, &idx_path, rebuilt)?;
        (index, idx_path)
    } else {
        let index = index::open_sealed_index(fs, &idx_path, entries)
            .unwrap_or(IndexData::Owned(Vec::new()));
        (index, idx_path)
    };
    Ok(Sealed {
        base_offset: base,
        next_offset: next_base,
        len,
        last_timestamp: last_ts,
        created_ms: header.created_ms,
        path,
        index_path: idx_path,
        source,
        index,
    })
}

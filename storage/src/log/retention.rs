//! Deleting old sealed segments: by age, by total size, never at or above a floor offset.

use std::sync::Arc;

use super::{lock, read, write, Shared};
use crate::error::{Error, IoOp, Result};
use crate::segment::Sealed;

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// The log's first offset afterwards.
    pub first_offset: u64,
}

/// Deletes the oldest sealed segments while `doomed(segment, bytes_of_log)` says so.
/// Only a prefix is deleted (the log stays contiguous); the active segment never is.
fn delete_prefix(
    shared: &Shared,
    mut doomed: impl FnMut(&Sealed, u64) -> bool,
) -> Result<RetentionReport> {
    let _one_at_a_time = lock(&shared.retention_lock);
    let removed: Vec<Arc<Sealed>> = {
        let mut v = write(&shared.view);
        let mut total: u64 = v.sealed.iter().map(|s| s.len).sum::<u64>() + v.visible_end;
        let mut n = 0;
        for s in &v.sealed {
            if !doomed(s, total) {
                break;
            }
            total -= s.len;
            n += 1;
        }
        v.sealed.drain(..n).collect()
    };
    let mut report = RetentionReport::default();
    for s in &removed {
        // Nobody else holds it (it left the view, so nobody can take it again): its blocks
        // are given back in steps before the unlink (see `shrink`). A reader still holding
        // it may have it mapped, so then the file is only unlinked.
        if Arc::strong_count(s) == 1 {
            shrink(shared, &s.path);
        }
        for path in [&s.path, &s.index_path] {
            match shared.fs.remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(IoOp::Remove, path, e)),
            }
        }
        report.segments_deleted += 1;
        report.bytes_freed += s.len;
        tracing::info!(segment = %s.path.display(), base_offset = s.base_offset, "retention deleted a segment");
    }
    if !removed.is_empty() {
        shared
            .fs
            .sync_dir(&shared.dir)
            .map_err(|e| Error::io(IoOp::SyncDir, &shared.dir, e))?;
    }
    report.first_offset = read(&shared.view).first_offset();
    Ok(report)
}

pub(crate) fn apply(
    shared: &Shared,
    policy: crate::config::Retention,
    floor: u64,
    now_ms: u64,
    max_segments: usize,
) -> Result<RetentionReport> {
    let mut budget = max_segments;
    let max_age_ms = policy
        .max_age
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    delete_prefix(shared, |s, total| {
        if s.next_offset > floor || budget == 0 {
            return false;
        }
        let newest = s.last_timestamp.max(s.created_ms);
        let too_old = max_age_ms.is_some_and(|age| now_ms.saturating_sub(newest) > age);
        let too_big = policy.max_bytes.is_some_and(|max| total > max);
        let doomed = too_old || too_big;
        budget -= usize::from(doomed);
        doomed
    })
}

pub(crate) fn delete_before(shared: &Shared, offset: u64) -> Result<RetentionReport> {
    delete_prefix(shared, |s, _| s.next_offset <= offset)
}

/// Bytes given back per step when a deleted segment is shrunk.
const SHRINK_STEP: u64 = 8 << 20;

/// Truncates a doomed segment in [`SHRINK_STEP`]s, each step synced, before it is unlinked:
/// on a file system mounted with `discard`, unlinking a 64 MiB segment discards it in one
/// journal commit, and the write path's next metadata sync (a roll's truncate, a directory
/// sync) waited for it — writes stalled up to 0.7 s while retention ran (docs/BENCHMARKS.md,
/// "Retention against the write path"). Steps spread that over several small commits.
/// Best effort: the segment is already out of the log, so a failure only means it is
/// unlinked whole (logged; nothing the log holds depends on it).
fn shrink(shared: &Shared, path: &std::path::Path) {
    let step = || -> std::io::Result<()> {
        let f = shared.fs.open(path, crate::io::OpenMode::ReadWrite)?;
        let mut len = f.len()?;
        while len > SHRINK_STEP {
            len -= SHRINK_STEP;
            f.set_len(len)?;
            f.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = step() {
        tracing::warn!(segment = %path.display(), error = %e, "shrinking a deleted segment failed; it is unlinked whole");
    }
}

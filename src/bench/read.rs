//! Reading sealed segments back through `Log::read_from`, and reopening the log after its
//! tail was torn (recovery).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use wald_storage::format::record::RECORD_HEADER_LEN;
use wald_storage::{Durability, Log, LogConfig, Record};

use super::stats::size_label;
use super::{progress, progress_done, Plan};
use crate::cli::CliError;

/// Payload bytes of the records written for the read test.
pub const READ_RECORD_BYTES: usize = 4 << 10;

/// Records per `append` call while filling the log.
const FILL_BATCH: usize = 64;

/// Read and recovery figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Records read per pass.
    pub records: u64,
    /// Encoded bytes read per pass (all in sealed segments).
    pub bytes: u64,
    /// Sealed segments read.
    pub segments: usize,
    /// Seconds to write the log (Durability::None, then roll and sync).
    pub fill_secs: f64,
    /// GB/s (10^9 bytes of encoded records) of each pass, from the page cache.
    pub passes_gb_s: Vec<f64>,
    /// Seconds to reopen the log after its tail was torn (warm page cache).
    pub recovery_secs: f64,
    /// Bytes of the log at reopening (segment data, not the zero-filled space).
    pub recovery_log_bytes: u64,
    /// Records the recovery scanned (CRC-checked).
    pub recovery_records_scanned: u64,
    /// Bytes the recovery cut from the tail.
    pub recovery_bytes_cut: u64,
}

/// The newest segment file of a log directory.
fn last_segment(dir: &Path) -> Result<PathBuf, CliError> {
    let mut best: Option<PathBuf> = None;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "log") && best.as_ref().is_none_or(|b| p > *b) {
            best = Some(p);
        }
    }
    best.ok_or_else(|| format!("no segment in {}", dir.display()).into())
}

/// Position after the last non-zero byte of a file (the end of its records: payloads are
/// non-zero and come last in a record).
fn end_of_data(path: &Path) -> Result<u64, CliError> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.read_exact_at(&mut buf[..n], start)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Writes `plan.read_bytes` of records, reads them back, tears the tail and reopens.
pub fn measure(dir: &Path, plan: &Plan, label: &str) -> Result<ReadReport, CliError> {
    if dir.exists() {
        super::remove_settled(dir)?;
    }
    progress(&format!(
        "{label}read: writing {} of {} records...",
        size_label(plan.read_bytes as usize),
        size_label(READ_RECORD_BYTES)
    ));
    let t = Instant::now();
    let log = Log::open(dir, LogConfig::default())?;
    let batch: Vec<Record> = (0..FILL_BATCH)
        .map(|_| Record::from_payload(vec![0xA5u8; READ_RECORD_BYTES]))
        .collect();
    let per_batch = batch.iter().filter_map(Record::encoded_len).sum::<usize>() as u64;
    let mut written = 0u64;
    while written < plan.read_bytes {
        log.append(&batch, Durability::None)?.wait()?;
        written += per_batch;
    }
    log.roll()?;
    log.sync()?;
    let fill_secs = t.elapsed().as_secs_f64();
    let stats = log.stats();
    progress_done(&format!(
        "{fill_secs:.2} s, {} segments",
        stats.segments - 1
    ));

    let mut passes_gb_s = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    for pass in 1..=2 {
        progress(&format!(
            "{label}read: sequential read_from(0), pass {pass}..."
        ));
        let t = Instant::now();
        (records, bytes) = (0, 0);
        for r in log.read_from(0)? {
            let r = r?;
            records += 1;
            bytes += (RECORD_HEADER_LEN + r.payload.len()) as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        let gb_s = bytes as f64 / secs / 1e9;
        progress_done(&format!("{gb_s:.2} GB/s ({records} records, {secs:.3} s)"));
        passes_gb_s.push(gb_s);
    }

    // A little more in the new active segment, then a torn record after it.
    for _ in 0..16 {
        log.append(&batch, Durability::Sync)?.wait()?;
    }
    let next = log.stats().next_offset;
    log.close()?;
    let seg = last_segment(dir)?;
    let end = end_of_data(&seg)?;
    let mut torn = Vec::new();
    Record::from_payload(vec![0xA5u8; READ_RECORD_BYTES]).encode_into(
        next,
        wald_storage::now_ms(),
        &mut torn,
    );
    torn.truncate(torn.len() / 2);
    OpenOptions::new()
        .write(true)
        .open(&seg)?
        .write_all_at(&torn, end)?;

    progress_done(&format!(
        "{label}recovery: reopening after a torn tail ({} torn bytes)...",
        torn.len()
    ));
    let t = Instant::now();
    let log = Log::open(dir, LogConfig::default())?;
    let recovery_secs = t.elapsed().as_secs_f64();
    let report = log.recovery_report().clone();
    let recovery_log_bytes = log.stats().bytes;
    log.close()?;
    super::remove_settled(dir)?;
    let cut = report.tail_cut.as_ref().map_or(0, |c| c.bytes_cut);
    progress_done(&format!(
        "{label}recovery: {recovery_secs:.3} s for {:.0} MiB, {} records scanned, {cut} bytes cut",
        recovery_log_bytes as f64 / f64::from(1u32 << 20),
        report.records_scanned
    ));
    if report.tail_cut.is_none() {
        return Err("recovery did not report the torn tail".into());
    }

    Ok(ReadReport {
        record_bytes: READ_RECORD_BYTES,
        records,
        bytes,
        segments: stats.segments - 1,
        fill_secs,
        passes_gb_s,
        recovery_secs,
        recovery_log_bytes,
        recovery_records_scanned: report.records_scanned,
        recovery_bytes_cut: cut,
    })
}

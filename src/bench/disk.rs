//! The disk alone: the latency of a durable write (`write_all_at` + `fdatasync`) by size,
//! appending to a growing file and overwriting a zero-filled one; buffered write
//! throughput; and the durable bandwidth of sequential 1 MiB writes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::stats::{interp, nanos, size_label, us_label, Summary};
use super::{progress, progress_done, Plan};
use crate::cli::CliError;

/// Write sizes measured.
pub const SIZES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// Unmeasured writes before each measured series.
const WARMUP: usize = 10;

/// The figures of one write size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRow {
    /// Bytes per write.
    pub size: usize,
    /// write + fdatasync, appending to a growing file.
    pub append: Summary,
    /// write + fdatasync, overwriting a zero-filled, synced file in place.
    pub zeroed: Summary,
    /// Buffered writes (no fsync) to a fresh file: MB/s (10^6 bytes).
    pub buffered_mb_s: f64,
    /// Latency of each buffered write.
    pub buffered: Summary,
}

/// Everything measured about the disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// One row per write size.
    pub sizes: Vec<SizeRow>,
    /// Durable bandwidth B: sequential 1 MiB writes into a zero-filled file, one
    /// fdatasync per write, in MB/s (10^6 bytes).
    pub bandwidth_mb_s: f64,
    /// Bytes written for B.
    pub bandwidth_bytes: u64,
    /// Seconds to zero-fill and sync the preallocated file.
    pub zero_fill_secs: f64,
}

impl DiskReport {
    fn points(&self, f: impl Fn(&SizeRow) -> f64) -> Vec<(f64, f64)> {
        self.sizes.iter().map(|r| (r.size as f64, f(r))).collect()
    }

    /// L(b): p50 of a durable write of `b` bytes into a zero-filled file, in µs
    /// (interpolated between measured sizes; the 4 KiB figure below 4 KiB).
    #[must_use]
    pub fn l_p50_us(&self, b: f64) -> f64 {
        interp(&self.points(|r| r.zeroed.p50_us), b)
    }

    /// p99 of a durable write of `b` bytes into a zero-filled file, in µs (interpolated).
    #[must_use]
    pub fn l_p99_us(&self, b: f64) -> f64 {
        interp(&self.points(|r| r.zeroed.p99_us), b)
    }

    /// B in bytes per second.
    #[must_use]
    pub fn bandwidth_bytes_s(&self) -> f64 {
        self.bandwidth_mb_s * 1e6
    }
}

fn create(path: &Path) -> Result<File, CliError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(f)
}

/// Writes zeros over `len` bytes of a new file and syncs it (and its size).
pub(crate) fn zero_filled(path: &Path, len: u64) -> Result<File, CliError> {
    let f = create(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    f.sync_all()?;
    Ok(f)
}

/// The disk right now: `iters` 4 KiB writes + fdatasync, sequential through `f` (a
/// zero-filled file of at least 4 KiB), with no warm-up.
pub(crate) fn reference(f: &File, iters: usize) -> Result<Summary, CliError> {
    let slots = (f.metadata()?.len() / 4096).max(1);
    let buf = [0x5Au8; 4096];
    let mut lat = Vec::with_capacity(iters);
    for i in 0..iters as u64 {
        let t = Instant::now();
        f.write_all_at(&buf, (i % slots) * 4096)?;
        f.sync_data()?;
        lat.push(nanos(t.elapsed()));
    }
    Ok(Summary::of(lat))
}

/// Interleaved rounds of one durable write per size and mode, so that a noisy spell of the
/// machine (other builds, the scheduler) hits every series alike. Returns one row per size.
fn fsync_rounds(dir: &Path, zf: &File, plan: &Plan, label: &str) -> Result<Vec<SizeRow>, CliError> {
    progress(&format!(
        "{label}disk: {} rounds of write + fdatasync, {} sizes × (appending, zero-filled), interleaved...",
        plan.disk_iters,
        SIZES.len()
    ));
    let t = Instant::now();
    let bufs: Vec<Vec<u8>> = SIZES.iter().map(|&n| vec![0x5Au8; n]).collect();
    let mut appending = Vec::new();
    for &size in &SIZES {
        let path = dir.join(format!("disk-append-{size}.dat"));
        appending.push((create(&path)?, path));
    }
    let mut lat_append = vec![Vec::with_capacity(plan.disk_iters); SIZES.len()];
    let mut lat_zeroed = vec![Vec::with_capacity(plan.disk_iters); SIZES.len()];
    let mut cursor = 0u64;
    for round in 0..WARMUP + plan.disk_iters {
        for (k, buf) in bufs.iter().enumerate() {
            let (f, _) = &appending[k];
            let w = Instant::now();
            f.write_all_at(buf, (round * buf.len()) as u64)?;
            f.sync_data()?;
            let appended = nanos(w.elapsed());

            if cursor + buf.len() as u64 > plan.zeroed_bytes {
                cursor = 0;
            }
            let w = Instant::now();
            zf.write_all_at(buf, cursor)?;
            zf.sync_data()?;
            let zeroed = nanos(w.elapsed());
            cursor += buf.len() as u64;
            if round >= WARMUP {
                lat_append[k].push(appended);
                lat_zeroed[k].push(zeroed);
            }
        }
    }
    for (_, path) in appending {
        super::remove_settled(&path)?;
    }
    progress_done(&format!("{:.1} s", t.elapsed().as_secs_f64()));
    let mut rows = Vec::new();
    for ((&size, la), lz) in SIZES.iter().zip(lat_append).zip(lat_zeroed) {
        let (append, zeroed) = (Summary::of(la), Summary::of(lz));
        for (what, s) in [("appending", &append), ("into zero-filled", &zeroed)] {
            progress(&format!("{label}disk: {} {what}...", size_label(size)));
            progress_done(&format!(
                "p50 {} p99 {} p999 {}",
                us_label(s.p50_us),
                us_label(s.p99_us),
                us_label(s.p999_us)
            ));
        }
        rows.push(SizeRow {
            size,
            append,
            zeroed,
            buffered_mb_s: 0.0,
            buffered: Summary::default(),
        });
    }
    Ok(rows)
}

/// B: sequential 1 MiB writes through the zero-filled file, one fdatasync each.
/// Returns (MB/s, bytes written).
fn bandwidth(zf: &File, plan: &Plan, label: &str) -> Result<(f64, u64), CliError> {
    progress(&format!(
        "{label}disk: durable bandwidth, sequential 1 MiB + fdatasync..."
    ));
    let chunk = vec![0x5Au8; 1 << 20];
    let n = plan.zeroed_bytes / chunk.len() as u64;
    let t = Instant::now();
    for i in 0..n {
        zf.write_all_at(&chunk, i * chunk.len() as u64)?;
        zf.sync_data()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = n * chunk.len() as u64;
    let mb_s = bytes as f64 / secs / 1e6;
    progress_done(&format!("{mb_s:.0} MB/s"));
    Ok((mb_s, bytes))
}

/// Buffered writes (no fsync) of `row.size` to a fresh file: fills the row's figures.
fn buffered(dir: &Path, row: &mut SizeRow, plan: &Plan, label: &str) -> Result<(), CliError> {
    progress(&format!(
        "{label}disk: {} buffered (no fsync)...",
        size_label(row.size)
    ));
    let path = dir.join(format!("disk-buffered-{}.dat", row.size));
    let f = create(&path)?;
    let buf = vec![0x5Au8; row.size];
    let count = (plan.buffered_bytes / row.size as u64).max(plan.disk_iters as u64);
    let mut lat = Vec::with_capacity(count as usize);
    let t = Instant::now();
    for i in 0..count {
        let w = Instant::now();
        f.write_all_at(&buf, i * row.size as u64)?;
        lat.push(nanos(w.elapsed()));
    }
    let secs = t.elapsed().as_secs_f64();
    // Untimed: push the data out before the file goes, so that its writeback does not land
    // in the fsyncs of the next measurements.
    f.sync_all()?;
    drop(f);
    super::remove_settled(&path)?;
    row.buffered_mb_s = (count * row.size as u64) as f64 / secs / 1e6;
    row.buffered = Summary::of(lat);
    progress_done(&format!("{:.0} MB/s", row.buffered_mb_s));
    Ok(())
}

/// Measures the disk in `dir` (files are created and removed there).
pub fn measure(dir: &Path, plan: &Plan, label: &str) -> Result<DiskReport, CliError> {
    let zeroed_path = dir.join("disk-zeroed.dat");
    progress(&format!(
        "{label}disk: zero-filling {} for in-place writes...",
        size_label(plan.zeroed_bytes as usize)
    ));
    let t = Instant::now();
    let zf = zero_filled(&zeroed_path, plan.zeroed_bytes)?;
    let zero_fill_secs = t.elapsed().as_secs_f64();
    progress_done(&format!("{zero_fill_secs:.2} s"));

    let mut sizes = fsync_rounds(dir, &zf, plan, label)?;
    let (bandwidth_mb_s, bandwidth_bytes) = bandwidth(&zf, plan, label)?;
    drop(zf);
    super::remove_settled(&zeroed_path)?;
    // Buffered writes last: their dirty pages must not be flushed under the fsync series.
    for row in &mut sizes {
        buffered(dir, row, plan, label)?;
    }
    Ok(DiskReport {
        sizes,
        bandwidth_mb_s,
        bandwidth_bytes,
        zero_fill_secs,
    })
}

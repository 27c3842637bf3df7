//! The engine against the disk: C writer threads each looping `append_one(.., Sync)` on a
//! fresh log for a fixed time.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use wald_storage::{Durability, Log, LogConfig, Record};

use super::disk::DiskReport;
use super::stats::{cpu_secs, nanos, size_label, threads_cpu_nanos, us_label, Summary};
use super::{progress, progress_done, Plan};
use crate::cli::CliError;

/// 4 KiB fdatasyncs measured right before each phase (the disk at that moment).
const REFERENCE_ITERS: usize = 100;

/// One (record size, writers) run.
#[derive(Debug, Clone, Serialize)]
pub struct EngineRow {
    /// `threads`: one OS thread per writer, blocking in `Ticket::wait` (it may lead the
    /// commit itself); `async`: one task per writer on a 2-worker tokio runtime, awaiting
    /// the `Ticket` (the background thread commits) — the service's path.
    pub mode: String,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Encoded bytes per record (44-byte header + payload): R in the bound.
    pub encoded_bytes: usize,
    /// Concurrent writer threads: C.
    pub writers: usize,
    /// Wall seconds of the phase.
    pub secs: f64,
    /// Acknowledged appends.
    pub appends: u64,
    /// Durable appends per second.
    pub appends_per_s: f64,
    /// Durable MB/s of encoded records (10^6 bytes).
    pub mb_s: f64,
    /// 4 KiB write + fdatasync into a zero-filled file right before the phase: the disk at
    /// that moment (the machine is shared; compare with the disk phase's L).
    pub disk_now: Summary,
    /// Per-append latency as each writer saw it.
    pub latency: Summary,
    /// Write-path fdatasync calls during the phase.
    pub fsyncs: u64,
    /// counters().records / counters().fsyncs.
    pub records_per_fsync: f64,
    /// Encoded bytes per fsync: the mean batch.
    pub bytes_per_fsync: f64,
    /// Mean duration of the engine's write-path fdatasync, µs.
    pub fsync_mean_us: f64,
    /// Fraction of the phase during which an fdatasync was in progress.
    pub fsync_busy: f64,
    /// Segments rolled during the phase.
    pub rolls: u64,
    /// CPU (user + sys of every thread, busy-loop threads excluded; schedstat) per append, µs.
    pub cpu_us_per_append: f64,
    /// The same from /proc/self/stat utime + stime (10 ms ticks), µs: a cross-check.
    pub cpu_us_per_append_ticks: f64,
    /// min(C / L(C·R), B / R) appends per second.
    pub device_bound: f64,
    /// appends_per_s / device_bound.
    pub frac_of_bound: f64,
    /// appends × R / B.
    pub frac_of_bandwidth: f64,
    /// The disk's fdatasync p99 (zero-filled) at the mean batch size, µs.
    pub disk_p99_at_batch_us: f64,
    /// latency p99 / disk_p99_at_batch_us.
    pub p99_over_disk_p99: f64,
    /// L(max(R, 4 KiB)) in µs: a lone write of one record.
    pub l_single_us: f64,
    /// latency p50 / l_single_us (meaningful for C = 1).
    pub p50_over_l_single: f64,
}

/// Where the writers and the measuring thread meet: all spawned → go (or abort); all done →
/// the CPU time is read while every writer still lives → exit.
#[derive(Default)]
struct Gate {
    /// (start: None = wait, Some(go)), writers done, may exit.
    state: Mutex<(Option<bool>, usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<bool>, usize, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until started; false when aborted.
    fn wait_start(&self) -> bool {
        let mut s = self.lock();
        loop {
            if let Some(go) = s.0 {
                return go;
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn start(&self, go: bool) {
        self.lock().0 = Some(go);
        self.cv.notify_all();
    }

    /// A writer is done: waits until the measuring thread lets it exit.
    fn finish(&self) {
        let mut s = self.lock();
        s.1 += 1;
        self.cv.notify_all();
        while !s.2 {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits (at most `limit`) until `n` writers are done; true when they are.
    fn all_done(&self, n: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut s = self.lock();
        while s.1 < n {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        true
    }

    fn release(&self) {
        self.lock().2 = true;
        self.cv.notify_all();
    }
}

/// One writer: appends until `dur` has passed, returns each append's latency.
fn writer(log: &Log, payload: &[u8], dur: Duration, gate: &Gate) -> Result<Vec<u32>, CliError> {
    if !gate.wait_start() {
        return Ok(Vec::new());
    }
    let mut lat = Vec::with_capacity(4096);
    let until = Instant::now() + dur;
    let result = loop {
        let rec = Record::from_payload(payload.to_vec());
        let t = Instant::now();
        if let Err(e) = log.append_one(rec, Durability::Sync) {
            break Err(e.into());
        }
        let done = Instant::now();
        lat.push(nanos(done - t));
        if done >= until {
            break Ok(());
        }
    };
    gate.finish();
    result.map(|()| lat)
}

/// How the writers wait for their acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An OS thread per writer, `Ticket::wait`.
    Threads,
    /// A tokio task per writer, `ticket.await`, on 2 worker threads.
    Async,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Threads => "threads",
            Self::Async => "async",
        }
    }
}

/// C tasks on a 2-worker tokio runtime, each appending and awaiting its ticket.
fn run_tasks(
    log: &Arc<Log>,
    payload: &[u8],
    c: usize,
    dur: Duration,
    spinners: &[u64],
) -> Result<Phase, CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-task")
        .build()?;
    let payload: Arc<[u8]> = payload.into();
    let cpu0 = threads_cpu_nanos(spinners)?;
    let ticks0 = cpu_secs(spinners)?;
    let t = Instant::now();
    let until = t + dur;
    let joined = rt.block_on(async {
        let mut handles = Vec::with_capacity(c);
        for _ in 0..c {
            let (log, payload) = (Arc::clone(log), Arc::clone(&payload));
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                loop {
                    let rec = Record::from_payload(payload.to_vec());
                    let started = Instant::now();
                    log.append(std::slice::from_ref(&rec), Durability::Sync)?
                        .await?;
                    let done = Instant::now();
                    lat.push(nanos(done - started));
                    if done >= until {
                        break;
                    }
                }
                Ok::<_, wald_storage::Error>(lat)
            }));
        }
        let mut out = Vec::with_capacity(c);
        for h in handles {
            out.push(h.await);
        }
        out
    });
    let secs = t.elapsed().as_secs_f64();
    let cpu1 = threads_cpu_nanos(spinners)?;
    let ticks1 = cpu_secs(spinners)?;
    drop(rt);
    let mut lats = Vec::with_capacity(c);
    for j in joined {
        match j {
            Ok(Ok(l)) => lats.push(l),
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(format!("a writer task failed: {e}").into()),
        }
    }
    Ok(Phase {
        lats,
        secs,
        cpu_nanos: cpu1.saturating_sub(cpu0),
        cpu_tick_secs: ticks1 - ticks0,
    })
}

/// What the measuring thread saw of a phase.
struct Phase {
    lats: Vec<Vec<u32>>,
    secs: f64,
    /// On-CPU nanoseconds of the process's threads (busy-loop threads excluded).
    cpu_nanos: u64,
    /// The same from /proc/self/stat ticks (10 ms resolution), seconds.
    cpu_tick_secs: f64,
}

fn run_writers(
    log: &Log,
    payload: &[u8],
    c: usize,
    dur: Duration,
    spinners: &[u64],
) -> Result<Phase, CliError> {
    let gate = Gate::default();
    thread::scope(|s| -> Result<Phase, CliError> {
        let mut handles = Vec::with_capacity(c);
        for i in 0..c {
            let gate = &gate;
            let spawned = thread::Builder::new()
                .name(format!("bench-writer-{i}"))
                .stack_size(256 << 10)
                .spawn_scoped(s, move || writer(log, payload, dur, gate));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    gate.start(false);
                    return Err(format!("spawning writer {i}: {e}").into());
                }
            }
        }
        let cpu0 = threads_cpu_nanos(spinners)?;
        let ticks0 = cpu_secs(spinners)?;
        let t = Instant::now();
        gate.start(true);
        let done = gate.all_done(c, dur + Duration::from_secs(120));
        let secs = t.elapsed().as_secs_f64();
        let cpu1 = threads_cpu_nanos(spinners);
        let ticks1 = cpu_secs(spinners);
        gate.release();
        let mut lats = Vec::with_capacity(c);
        let mut first_err: Option<CliError> = None;
        for h in handles {
            match h.join() {
                Ok(Ok(l)) => lats.push(l),
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some("a writer thread panicked".into())),
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !done {
            return Err("writers did not finish within 120 s of the deadline".into());
        }
        Ok(Phase {
            lats,
            secs,
            cpu_nanos: cpu1?.saturating_sub(cpu0),
            cpu_tick_secs: ticks1? - ticks0,
        })
    })
}

/// Runs C writers of `size`-byte records on a fresh log in `dir`.
#[allow(clippy::too_many_arguments)]
pub fn run_one(
    dir: &Path,
    size: usize,
    c: usize,
    plan: &Plan,
    disk: &DiskReport,
    reference: &std::fs::File,
    spinners: &[u64],
    mode: Mode,
) -> Result<EngineRow, CliError> {
    if dir.exists() {
        super::remove_settled(dir)?;
    }
    // A fresh log, as a new partition starts: its first segment is `first_segment_bytes`,
    // and the growth (rolls, spares zero-filled in the background) is part of the phase.
    let config = LogConfig {
        first_segment_bytes: plan.first_segment_bytes,
        ..LogConfig::default()
    };
    config.validate()?;
    let log = Arc::new(Log::open(dir, config)?);
    let disk_now = super::disk::reference(reference, REFERENCE_ITERS)?;
    let payload = vec![0xA5u8; size];
    let encoded = Record::from_payload(payload.clone())
        .encoded_len()
        .ok_or("record too large")?;

    let k = log.counters();
    let snap = || {
        [&k.records, &k.fsyncs, &k.bytes, &k.fsync_nanos, &k.rolls]
            .map(|a| a.load(Ordering::Relaxed))
    };
    let before = snap();
    let phase = match mode {
        Mode::Threads => run_writers(&log, &payload, c, plan.engine_secs, spinners)?,
        Mode::Async => run_tasks(&log, &payload, c, plan.engine_secs, spinners)?,
    };
    let after = snap();
    let [records, fsyncs, bytes, fsync_nanos, rolls] =
        [0, 1, 2, 3, 4].map(|i| after[i] - before[i]);
    match Arc::try_unwrap(log) {
        Ok(log) => log.close()?,
        Err(_) => return Err("the log is still shared after the phase".into()),
    }
    super::remove_settled(dir)?;

    let secs = phase.secs;
    let all: Vec<u32> = phase.lats.into_iter().flatten().collect();
    let appends = all.len() as u64;
    let latency = Summary::of(all);
    let r = encoded as f64;
    let appends_per_s = appends as f64 / secs;
    let b = disk.bandwidth_bytes_s();
    let device_bound = (c as f64 / (disk.l_p50_us(c as f64 * r) / 1e6)).min(b / r);
    let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
    let bytes_per_fsync = per(bytes as f64, fsyncs);
    let disk_p99_at_batch_us = disk.l_p99_us(bytes_per_fsync);
    let l_single_us = disk.l_p50_us(r);
    Ok(EngineRow {
        mode: mode.label().to_owned(),
        record_bytes: size,
        encoded_bytes: encoded,
        writers: c,
        secs,
        appends,
        appends_per_s,
        mb_s: appends_per_s * r / 1e6,
        disk_now,
        latency,
        fsyncs,
        records_per_fsync: per(records as f64, fsyncs),
        bytes_per_fsync,
        fsync_mean_us: per(fsync_nanos as f64 / 1e3, fsyncs),
        fsync_busy: fsync_nanos as f64 / 1e9 / secs,
        rolls,
        cpu_us_per_append: per(phase.cpu_nanos as f64 / 1e3, appends),
        cpu_us_per_append_ticks: per(phase.cpu_tick_secs * 1e6, appends),
        device_bound,
        frac_of_bound: appends_per_s / device_bound,
        frac_of_bandwidth: appends_per_s * r / b,
        disk_p99_at_batch_us,
        p99_over_disk_p99: latency.p99_us / disk_p99_at_batch_us,
        l_single_us,
        p50_over_l_single: latency.p50_us / l_single_us,
    })
}

/// Runs every (record size, writers) pair of the plan.
pub fn measure(
    dir: &Path,
    plan: &Plan,
    disk: &DiskReport,
    spinners: &[u64],
    label: &str,
) -> Result<Vec<EngineRow>, CliError> {
    let ref_path = dir.join("engine-ref.dat");
    let reference = super::disk::zero_filled(&ref_path, 4 << 20)?;
    let mut rows = Vec::new();
    let mut runs: Vec<(usize, usize, Mode)> = Vec::new();
    for &size in &plan.record_sizes {
        for &c in &plan.writers {
            runs.push((size, c, Mode::Threads));
        }
    }
    for &c in &plan.writers {
        if c >= 16 && plan.record_sizes.contains(&(1 << 10)) {
            runs.push((1 << 10, c, Mode::Async));
        }
    }
    {
        for (size, c, mode) in runs {
            progress(&format!(
                "{label}engine ({}): {} × {c} writers, Sync, {:.0} s...",
                mode.label(),
                size_label(size),
                plan.engine_secs.as_secs_f64()
            ));
            let row = run_one(
                &dir.join(format!("engine-{size}-{c}-{}", mode.label())),
                size,
                c,
                plan,
                disk,
                &reference,
                spinners,
                mode,
            )?;
            progress_done(&format!(
                "{:.0} appends/s, p50 {} p99 {}, {:.1} rec/fsync, fsync {} ({:.0}% busy), {:.1} µs CPU/append, {:.0}% of bound",
                row.appends_per_s,
                us_label(row.latency.p50_us),
                us_label(row.latency.p99_us),
                row.records_per_fsync,
                us_label(row.fsync_mean_us),
                row.fsync_busy * 100.0,
                row.cpu_us_per_append,
                row.frac_of_bound * 100.0
            ));
            rows.push(row);
        }
    }
    drop(reference);
    super::remove_settled(&ref_path)?;
    Ok(rows)
}

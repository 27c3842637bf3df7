//! `wald bench fsync`: the disk's fdatasync limits, and the engine's group commit measured
//! against them in the same run (on a busy machine the limits move, so they are never
//! taken from a previous run).
//!
//! One run measures, per set (quiet, and with `--contended` again under two busy-loop
//! threads): the disk ([`disk`]), the engine with C concurrent `Sync` writers ([`engine`]),
//! and sequential reads plus recovery after a torn tail ([`read`]). Progress goes to
//! stderr, tables and a final JSON line to stdout ([`report`]).
//!
//! `wald bench http` ([`http`]) is the HTTP load generator against a running server.
//! `wald bench delivery` ([`delivery`]) measures delivery end to end, in process.
//! `wald bench mirror` ([`mirror`]) measures mirroring to Redis Streams, Kafka and SQS, in
//! process, against servers it starts.

mod common;
pub mod delivery;
pub mod disk;
pub mod engine;
pub mod http;
pub mod mirror;
pub mod partitions;
pub mod read;
pub mod report;
pub mod stats;
mod writers;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cli::CliError;

/// Options of `wald bench fsync`.
#[derive(Debug, Clone, Default)]
pub struct FsyncOptions {
    /// Where to create the (fresh, removed afterwards) working directory.
    pub dir: Option<PathBuf>,
    /// Also run everything with two busy-loop threads.
    pub contended: bool,
    /// Fewer iterations, sizes and writer counts.
    pub quick: bool,
    /// Write the JSON report here too.
    pub json: Option<PathBuf>,
    /// `first_segment_bytes` of the engine phases (`None`: the engine's default).
    pub first_segment_bytes: Option<u64>,
}

/// How much to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Measured durable writes per size and mode.
    pub disk_iters: usize,
    /// Size of the zero-filled file (also the bytes written for B).
    pub zeroed_bytes: u64,
    /// Bytes of buffered writes per size.
    pub buffered_bytes: u64,
    /// Engine record payload sizes.
    pub record_sizes: Vec<usize>,
    /// Engine writer counts C.
    pub writers: Vec<usize>,
    /// Duration of each engine phase.
    pub engine_secs: Duration,
    /// Bytes of records written for the read and recovery figures.
    pub read_bytes: u64,
    /// `first_segment_bytes` of the engine phases' logs.
    pub first_segment_bytes: u64,
}

impl Plan {
    /// The plan of a full or a `--quick` run.
    #[must_use]
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                disk_iters: 150,
                zeroed_bytes: 64 << 20,
                buffered_bytes: 32 << 20,
                record_sizes: vec![1 << 10],
                writers: vec![1, 16, 64],
                engine_secs: Duration::from_secs(1),
                read_bytes: 64 << 20,
                first_segment_bytes: wald_storage::LogConfig::default().first_segment_bytes,
            }
        } else {
            Self {
                disk_iters: 400,
                zeroed_bytes: 128 << 20,
                buffered_bytes: 64 << 20,
                record_sizes: vec![100, 1 << 10, 16 << 10],
                writers: vec![1, 4, 16, 64, 256],
                engine_secs: Duration::from_secs(3),
                read_bytes: 256 << 20,
                first_segment_bytes: wald_storage::LogConfig::default().first_segment_bytes,
            }
        }
    }
}

/// Prints the start of a progress line on stderr.
pub(crate) fn progress(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{msg} ");
    let _ = e.flush();
}

/// Ends a progress line.
pub(crate) fn progress_done(msg: &str) {
    eprintln!("{msg}");
}

/// Removes a file or a directory tree, then fsyncs its parent directory. On this disk
/// (ext4 mounted with `discard`) the blocks of a deleted file are discarded at the next
/// journal commit, and until that commit is done every fdatasync in the file system is
/// slow (milliseconds, for seconds): forcing the commit here keeps that cost out of the
/// next measurement.
pub(crate) fn remove_settled(path: &Path) -> Result<(), CliError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    } else {
        std::fs::remove_file(path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to the process.
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `/proc/loadavg` when the run started.
    pub loadavg: String,
}

impl Machine {
    /// The machine this process runs on.
    pub(crate) fn probe() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            nproc: thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg: read("/proc/loadavg"),
        }
    }
}

/// The figures of one set (quiet or contended).
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// `quiet` or `contended`.
    pub label: String,
    /// Busy-loop threads running during the set.
    pub spinners: usize,
    /// The disk.
    pub disk: disk::DiskReport,
    /// The engine, one row per (record size, writers).
    pub engine: Vec<engine::EngineRow>,
    /// Reads and recovery.
    pub read: read::ReadReport,
    /// Several partition logs at once.
    pub partitions: Vec<partitions::PartitionRow>,
}

/// Everything one `wald bench fsync` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncReport {
    /// The machine.
    pub machine: Machine,
    /// The working directory the files were in.
    pub dir: String,
    /// `--quick`.
    pub quick: bool,
    /// What was measured.
    pub plan: Plan,
    /// Quiet, then (with `--contended`) contended.
    pub sets: Vec<SetReport>,
    /// The project's targets, checked against the figures.
    pub targets: Vec<report::Target>,
}

/// A fresh working directory, removed when dropped.
struct Workdir(PathBuf);

impl Workdir {
    fn create(parent: Option<&Path>) -> Result<Self, CliError> {
        let parent = match parent {
            Some(p) => p.to_path_buf(),
            None if Path::new("bench-data").is_dir() => PathBuf::from("bench-data"),
            None => std::env::temp_dir(),
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = parent.join(format!("wald-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let dir = dir.canonicalize()?;
        Ok(Self(dir))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = remove_settled(&self.0);
    }
}

/// Busy-loop threads that compete with the benchmark for the CPUs.
struct Spinners {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    /// Their kernel thread ids (their CPU time is not the engine's).
    tids: Vec<u64>,
}

impl Spinners {
    fn start(n: usize) -> Result<Self, CliError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = Self {
            stop: Arc::clone(&stop),
            handles: Vec::new(),
            tids: Vec::new(),
        };
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let stop = Arc::clone(&stop);
            let h = thread::Builder::new()
                .name(format!("bench-spin-{i}"))
                .spawn(move || {
                    let _ = tx.send(stats::current_tid().map_err(|e| e.to_string()));
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005)
                                    .wrapping_add(1_442_695_040_888_963_407),
                            );
                        }
                    }
                })?;
            s.handles.push(h);
            s.tids.push(rx.recv()??);
        }
        Ok(s)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn run_set(dir: &Path, plan: &Plan, spinners: Option<&Spinners>) -> Result<SetReport, CliError> {
    let (label, tids) = match spinners {
        Some(s) => ("contended", s.tids.clone()),
        None => ("quiet", Vec::new()),
    };
    let tag = format!("[{label}] ");
    let disk = disk::measure(dir, plan, &tag)?;
    let engine = engine::measure(dir, plan, &disk, &tids, &tag)?;
    let read = read::measure(&dir.join("read-log"), plan, &tag)?;
    let partitions = partitions::measure(dir, plan, &tag)?;
    Ok(SetReport {
        label: label.into(),
        spinners: tids.len(),
        disk,
        engine,
        read,
        partitions,
    })
}

/// Runs `wald bench fsync`: prints progress on stderr, the tables and a final JSON line on
/// stdout, and writes the JSON to `opts.json` when given.
pub fn run_fsync(opts: &FsyncOptions) -> Result<FsyncReport, CliError> {
    let mut plan = Plan::new(opts.quick);
    if let Some(b) = opts.first_segment_bytes {
        plan.first_segment_bytes = b;
    }
    let output = common::Output::create(opts.json.as_deref())?;
    let work = Workdir::create(opts.dir.as_deref())?;
    let machine = Machine::probe();
    eprintln!(
        "wald bench fsync: working in {} ({} CPUs, kernel {}, load {})",
        work.0.display(),
        machine.nproc,
        machine.kernel,
        machine.loadavg
    );
    let mut sets = vec![run_set(&work.0, &plan, None)?];
    if opts.contended {
        let spin = Spinners::start(2)?;
        eprintln!(
            "--contended: 2 busy-loop threads spinning (tids {:?})",
            spin.tids
        );
        let set = run_set(&work.0, &plan, Some(&spin));
        drop(spin);
        sets.push(set?);
    }
    let targets = report::targets(&sets);
    let report = FsyncReport {
        machine,
        dir: work.0.display().to_string(),
        quick: opts.quick,
        plan,
        sets,
        targets,
    };
    output.finish(&report::render(&report), &report)?;
    Ok(report)
}

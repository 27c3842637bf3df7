//! Several partition logs appended to at once: do their fsyncs overlap, or serialise?
//!
//! C writer threads (1 KiB, `Sync`) spread round-robin over P logs, each log in its own
//! directory with its own group commit. With P = 1 every writer shares one fsync stream;
//! with P > 1 the logs' leaders fsync independently. If fsyncs of different logs were
//! serialised one behind another, fsyncs/s would stay flat as P grows and throughput would
//! fall; if they overlap, fsyncs/s grows with P.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use wald_storage::{Durability, Log, LogConfig, Record};

use super::stats::{nanos, Summary};
use super::{progress, progress_done, Plan};
use crate::cli::CliError;

/// Record payload size of this phase.
const SIZE: usize = 1 << 10;

/// One (partitions, writers) run.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    /// Logs written at once.
    pub partitions: usize,
    /// Writer threads in all.
    pub writers: usize,
    /// Durable appends per second, all logs together.
    pub appends_per_s: f64,
    /// fdatasync calls per second, all logs together.
    pub fsyncs_per_s: f64,
    /// Records per fsync.
    pub records_per_fsync: f64,
    /// Append latency.
    pub latency: Summary,
}

fn run(dir: &Path, p: usize, c: usize, dur: Duration) -> Result<PartitionRow, CliError> {
    let logs: Vec<Log> = (0..p)
        .map(|i| Log::open(dir.join(format!("p{i}")), LogConfig::default()))
        .collect::<Result<_, _>>()?;
    // Let each log's spare segment be written before measuring.
    thread::sleep(Duration::from_millis(500));
    let before: u64 = logs
        .iter()
        .map(|l| l.counters().fsyncs.load(Ordering::Relaxed))
        .sum();
    let records0: u64 = logs
        .iter()
        .map(|l| l.counters().records.load(Ordering::Relaxed))
        .sum();
    let payload = vec![0x5Au8; SIZE];
    let t = Instant::now();
    let until = t + dur;
    let lats: Vec<Result<Vec<u32>, wald_storage::Error>> = thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|i| {
                let (log, payload) = (&logs[i % p], &payload);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(4096);
                    loop {
                        let started = Instant::now();
                        log.append_one(Record::from_payload(payload.clone()), Durability::Sync)?;
                        let done = Instant::now();
                        lat.push(nanos(done - started));
                        if done >= until {
                            return Ok(lat);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let after: u64 = logs
        .iter()
        .map(|l| l.counters().fsyncs.load(Ordering::Relaxed))
        .sum();
    let records1: u64 = logs
        .iter()
        .map(|l| l.counters().records.load(Ordering::Relaxed))
        .sum();
    for l in logs {
        l.close()?;
    }
    super::remove_settled(dir)?;
    let mut all = Vec::new();
    for l in lats {
        all.extend(l?);
    }
    let appends = all.len() as f64;
    let fsyncs = (after - before) as f64;
    Ok(PartitionRow {
        partitions: p,
        writers: c,
        appends_per_s: appends / secs,
        fsyncs_per_s: fsyncs / secs,
        records_per_fsync: if fsyncs > 0.0 {
            (records1 - records0) as f64 / fsyncs
        } else {
            0.0
        },
        latency: Summary::of(all),
    })
}

/// Runs P ∈ {1, 4, 16} logs with C = 16 and C = 64 writers in all.
pub fn measure(dir: &Path, plan: &Plan, tag: &str) -> Result<Vec<PartitionRow>, CliError> {
    let mut rows = Vec::new();
    for c in [16usize, 64] {
        for p in [1usize, 4, 16] {
            if p > c {
                continue;
            }
            progress(&format!(
                "{tag}partitions: {c} writers over {p} logs, 1 KiB Sync..."
            ));
            let row = run(&dir.join(format!("parts-{p}-{c}")), p, c, plan.engine_secs)?;
            progress_done(&format!(
                "{:.0} appends/s, {:.0} fsyncs/s, {:.1} rec/fsync",
                row.appends_per_s, row.fsyncs_per_s, row.records_per_fsync
            ));
            rows.push(row);
        }
    }
    Ok(rows)
}

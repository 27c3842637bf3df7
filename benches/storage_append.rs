//! Append benchmarks of `wald-storage`.
//!
//! - `append_none/{100 B,1 KiB,16 KiB}`: one writer, `Durability::None` — the CPU path
//!   (validate, encode + CRC, queue, lead, one write) with no fsync on the ack path.
//! - `append_sync_1KiB/{1,4,16}`: W writer threads, `Durability::Sync`, 1 KiB records —
//!   group commit against the real disk (elements/s = durable appends/s).
//!
//! Sealed segments are deleted between samples so the disk use stays bounded. The numbers
//! are never asserted; `wald bench fsync` compares the engine with the disk's own limits.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wald_storage::{Durability, Log, LogConfig, Record};

const SIZES: [(usize, &str); 3] = [(100, "100 B"), (1 << 10, "1 KiB"), (16 << 10, "16 KiB")];

fn open(dir: &tempfile::TempDir, name: &str) -> Log {
    Log::open(dir.path().join(name), LogConfig::default()).expect("open the log")
}

/// Removes a benchmark's directory and fsyncs its parent: on a file system mounted with
/// `discard`, freed blocks are discarded at the next journal commit, and every fdatasync
/// is slow until that commit is done — forcing it here keeps it out of the next group.
fn remove_settled(dir: tempfile::TempDir) {
    let parent = dir.path().parent().map(std::path::Path::to_path_buf);
    dir.close().expect("remove the temp dir");
    if let Some(p) = parent {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .expect("sync the parent dir");
    }
}

/// Deletes the sealed segments (untimed) so a long run does not fill the disk.
fn trim(log: &Log) {
    let next = log.stats().next_offset;
    log.delete_before(next).expect("delete sealed segments");
}

fn append_none(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("append_none");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (size, label) in SIZES {
        let log = open(&dir, &format!("none-{size}"));
        let payload = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    log.append_one(Record::from_payload(payload.clone()), Durability::None)
                        .expect("append");
                }
                let elapsed = t.elapsed();
                trim(&log);
                elapsed
            });
        });
        log.close().expect("close");
    }
    g.finish();
    remove_settled(dir);
}

fn append_sync_writers(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("append_sync_1KiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for writers in [1usize, 4, 16] {
        let log = Arc::new(open(&dir, &format!("sync-{writers}")));
        g.bench_function(BenchmarkId::new("writers", writers), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(writers as u64);
                let t = Instant::now();
                thread::scope(|s| {
                    for _ in 0..writers {
                        let log = &log;
                        s.spawn(move || {
                            for _ in 0..per {
                                log.append_one(
                                    Record::from_payload(vec![0xA5u8; 1 << 10]),
                                    Durability::Sync,
                                )
                                .expect("append");
                            }
                        });
                    }
                });
                // Report the time per append actually made (per × writers ≥ iters).
                let elapsed = t
                    .elapsed()
                    .mul_f64(iters as f64 / (per * writers as u64) as f64);
                trim(&log);
                elapsed
            });
        });
        match Arc::try_unwrap(log) {
            Ok(log) => log.close().expect("close"),
            Err(_) => unreachable!("the writers have finished"),
        }
    }
    g.finish();
    remove_settled(dir);
}

criterion_group!(benches, append_none, append_sync_writers);
criterion_main!(benches);

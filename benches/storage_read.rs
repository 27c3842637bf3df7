//! Read benchmark of `wald-storage`: a sequential `Log::read_from(0)` over a pre-built log
//! whose records are all in sealed (memory-mapped) segments, by record size. Throughput is
//! in encoded bytes; the log is in the page cache. Never asserted.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wald_storage::{Durability, Log, LogConfig, Record};

const SIZES: [(usize, &str); 3] = [(100, "100 B"), (1 << 10, "1 KiB"), (16 << 10, "16 KiB")];

/// Bytes of records per pre-built log.
const LOG_BYTES: usize = 32 << 20;

fn build(dir: &std::path::Path, size: usize) -> (Log, u64) {
    let log = Log::open(
        dir,
        LogConfig {
            segment_bytes: 8 << 20,
            ..LogConfig::default()
        },
    )
    .expect("open");
    let batch: Vec<Record> = (0..64)
        .map(|_| Record::from_payload(vec![0xA5u8; size]))
        .collect();
    let per_batch: usize = batch.iter().filter_map(Record::encoded_len).sum();
    let mut written = 0;
    while written < LOG_BYTES {
        log.append(&batch, Durability::None)
            .expect("append")
            .wait()
            .expect("ack");
        written += per_batch;
    }
    log.roll().expect("roll");
    log.sync().expect("sync");
    (log, written as u64)
}

fn read_sealed(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("read_sealed");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (size, label) in SIZES {
        let (log, bytes) = build(&dir.path().join(format!("r-{size}")), size);
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let mut n = 0u64;
                for r in log.read_from(0).expect("reader") {
                    n += r.expect("record").payload.len() as u64;
                }
                n
            });
        });
        log.close().expect("close");
    }
    g.finish();
    let parent = dir.path().parent().map(std::path::Path::to_path_buf);
    dir.close().expect("remove the temp dir");
    if let Some(p) = parent {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .expect("sync the parent dir");
    }
}

criterion_group!(benches, read_sealed);
criterion_main!(benches);

//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Request counters and the write latency histogram are observed on the request path; the
//! engine's figures (records, bytes, batches, fsyncs, segments, disk free) are read from
//! the logs' counters when the page is rendered, so they cost nothing per request. The
//! per-namespace time series behind `GET /api/v1/wal/namespace/{ns}/metrics` is in
//! [`series`].

pub mod series;

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// A log's counters as last copied into the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSeen {
    /// Records appended.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// Commit batches.
    pub batches: u64,
    /// fdatasync calls.
    pub fsyncs: u64,
    /// Nanoseconds in fdatasync.
    pub fsync_nanos: u64,
    /// Batches a full disk refused.
    pub disk_full: u64,
}

/// The service's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by namespace, route and status.
    pub requests: IntCounterVec,
    /// Durable-write latency by namespace (accept → answer), seconds.
    pub write_latency: HistogramVec,
    /// Idempotent duplicates answered, by namespace.
    pub duplicates: IntCounterVec,
    /// Requests refused by a rate limit, by namespace.
    pub rate_limited: IntCounterVec,
    /// Segments retention deleted, by namespace.
    pub retention_segments: IntCounterVec,
    /// Bytes retention freed, by namespace.
    pub retention_bytes: IntCounterVec,
    /// Expired idempotency keys purged.
    pub idempotency_purged: prometheus::IntCounter,
    /// Engine: records appended per namespace/partition (from the log's counters).
    pub records: IntCounterVec,
    /// Engine: bytes appended.
    pub bytes: IntCounterVec,
    /// Engine: group-commit batches.
    pub batches: IntCounterVec,
    /// Engine: fsyncs on the write path.
    pub fsyncs: IntCounterVec,
    /// Engine: seconds spent in write-path fsyncs.
    pub fsync_seconds: CounterVec,
    /// Engine: batches a full disk refused (the log stayed writable).
    pub disk_full: IntCounterVec,
    /// The engine's counters as last copied, per (namespace, partition): counters only move
    /// by what the log's own counters moved since (a log reopened starts again from 0).
    engine_seen: Arc<Mutex<HashMap<(String, String), EngineSeen>>>,
    /// `wald_build_info{version}` = 1.
    pub build_info: IntGaugeVec,
    /// Engine: segments.
    pub segments: IntGaugeVec,
    /// Engine: 1 when the log refuses writes after a disk failure.
    pub poisoned: IntGaugeVec,
    /// Bytes free on the data directory's file system.
    pub disk_free: IntGaugeVec,
    /// Group-commit batch size (records per batch), observed at every commit.
    pub batch_records: HistogramVec,
    /// Write-path fdatasync latency, observed at every commit that synced.
    pub fsync_latency: HistogramVec,
    /// Per-namespace, per-minute writes, bytes, errors, duplicates and latency (24 h).
    pub series: Arc<series::SeriesStore>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("wald")
}

impl Metrics {
    /// Registers every metric.
    ///
    /// # Errors
    /// A registration conflict (a bug).
    #[allow(clippy::too_many_lines)] // one declaration per metric
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let ns_part = &["namespace", "partition"];
        let m = Self {
            requests: IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests by namespace, route and status",
                ),
                &["namespace", "route", "status"],
            )?,
            write_latency: HistogramVec::new(
                HistogramOpts::new(
                    "write_latency_seconds",
                    "Durable write latency, request accepted to answer",
                )
                .namespace("wald")
                .buckets(vec![
                    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0,
                ]),
                &["namespace"],
            )?,
            duplicates: IntCounterVec::new(
                opts(
                    "idempotent_duplicates_total",
                    "Writes answered as duplicates of an earlier idempotency key",
                ),
                &["namespace"],
            )?,
            rate_limited: IntCounterVec::new(
                opts("rate_limited_total", "Requests refused by a rate limit"),
                &["namespace"],
            )?,
            retention_segments: IntCounterVec::new(
                opts(
                    "retention_deleted_segments_total",
                    "Sealed segments deleted by retention",
                ),
                &["namespace"],
            )?,
            retention_bytes: IntCounterVec::new(
                opts(
                    "retention_freed_bytes_total",
                    "Bytes of segments deleted by retention",
                ),
                &["namespace"],
            )?,
            idempotency_purged: prometheus::IntCounter::with_opts(opts(
                "idempotency_keys_purged_total",
                "Expired idempotency keys deleted from the state store",
            ))?,
            records: IntCounterVec::new(
                opts("log_records_appended_total", "Records appended to the log"),
                ns_part,
            )?,
            bytes: IntCounterVec::new(
                opts(
                    "log_appended_bytes_total",
                    "Bytes of records appended to the log",
                ),
                ns_part,
            )?,
            batches: IntCounterVec::new(
                opts(
                    "log_commit_batches_total",
                    "Group-commit batches written to the log",
                ),
                ns_part,
            )?,
            fsyncs: IntCounterVec::new(
                opts("log_fsyncs_total", "Write-path fdatasync calls"),
                ns_part,
            )?,
            fsync_seconds: CounterVec::new(
                opts(
                    "log_fsync_seconds_total",
                    "Seconds spent in write-path fdatasync",
                ),
                ns_part,
            )?,
            disk_full: IntCounterVec::new(
                opts(
                    "log_disk_full_refusals_total",
                    "Write batches refused because the disk was full (nothing of them written; \
                     the log stays writable and takes writes again when space returns)",
                ),
                ns_part,
            )?,
            engine_seen: Arc::default(),
            build_info: IntGaugeVec::new(
                opts(
                    "build_info",
                    "1, labelled with the version of the running binary",
                ),
                &["version"],
            )?,
            segments: IntGaugeVec::new(opts("log_segments", "Segments of the log"), ns_part)?,
            poisoned: IntGaugeVec::new(
                opts(
                    "log_poisoned",
                    "1 when the log refuses writes after a disk failure",
                ),
                ns_part,
            )?,
            disk_free: IntGaugeVec::new(
                opts(
                    "disk_free_bytes",
                    "Bytes available on the data directory's file system",
                ),
                &["path"],
            )?,
            batch_records: HistogramVec::new(
                HistogramOpts::new(
                    "commit_batch_records",
                    "Records per group-commit batch (one write, at most one fdatasync)",
                )
                .namespace("wald")
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
                &["namespace"],
            )?,
            series: Arc::new(series::SeriesStore::new()),
            fsync_latency: HistogramVec::new(
                HistogramOpts::new(
                    "fsync_latency_seconds",
                    "Write-path fdatasync latency, per group commit that synced",
                )
                .namespace("wald")
                .buckets(vec![
                    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                    0.5, 1.0,
                ]),
                &["namespace"],
            )?,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.write_latency.clone()),
            Box::new(m.duplicates.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.retention_segments.clone()),
            Box::new(m.retention_bytes.clone()),
            Box::new(m.idempotency_purged.clone()),
            Box::new(m.records.clone()),
            Box::new(m.bytes.clone()),
            Box::new(m.batches.clone()),
            Box::new(m.fsyncs.clone()),
            Box::new(m.disk_full.clone()),
            Box::new(m.fsync_seconds.clone()),
            Box::new(m.segments.clone()),
            Box::new(m.poisoned.clone()),
            Box::new(m.disk_free.clone()),
            Box::new(m.batch_records.clone()),
            Box::new(m.fsync_latency.clone()),
            Box::new(m.build_info.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // CPU seconds, resident memory, open file descriptors and their limit, start time.
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// Renders the registry in the Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Registers another collector (e.g. delivery's metrics) in the same registry.
    ///
    /// # Errors
    /// A registration conflict (a bug).
    pub fn register(
        &self,
        c: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    /// Moves the engine counters of one log to its counters' current values `now`.
    pub fn copy_engine_counters(&self, namespace: &str, partition: &str, now: EngineSeen) {
        let mut seen = self
            .engine_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = seen
            .entry((namespace.to_owned(), partition.to_owned()))
            .or_default();
        // A counter below its last value belongs to a reopened log: it counts from 0 again.
        let delta = |now: u64, last: u64| if now >= last { now - last } else { now };
        let labels = [namespace, partition];
        self.records
            .with_label_values(&labels)
            .inc_by(delta(now.records, last.records));
        self.bytes
            .with_label_values(&labels)
            .inc_by(delta(now.bytes, last.bytes));
        self.batches
            .with_label_values(&labels)
            .inc_by(delta(now.batches, last.batches));
        self.fsyncs
            .with_label_values(&labels)
            .inc_by(delta(now.fsyncs, last.fsyncs));
        self.fsync_seconds
            .with_label_values(&labels)
            .inc_by(delta(now.fsync_nanos, last.fsync_nanos) as f64 / 1e9);
        self.disk_full
            .with_label_values(&labels)
            .inc_by(delta(now.disk_full, last.disk_full));
        *last = now;
    }

    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

/// Observes every group commit of one namespace's logs into the batch-size and fsync-latency
/// histograms.
#[derive(Debug)]
pub struct CommitMetrics {
    batch: prometheus::Histogram,
    fsync: prometheus::Histogram,
}

impl CommitMetrics {
    /// The observer of `namespace`'s logs.
    #[must_use]
    pub fn new(m: &Metrics, namespace: &str) -> Self {
        Self {
            batch: m.batch_records.with_label_values(&[namespace]),
            fsync: m.fsync_latency.with_label_values(&[namespace]),
        }
    }
}

impl wald_storage::CommitObserver for CommitMetrics {
    fn committed(&self, records: usize, _bytes: usize, fsync: Option<std::time::Duration>) {
        self.batch.observe(records as f64);
        if let Some(d) = fsync {
            self.fsync.observe(d.as_secs_f64());
        }
    }
}

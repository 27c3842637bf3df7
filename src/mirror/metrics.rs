//! Mirrors' Prometheus metrics (registered in the service's registry).

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// Mirrors' metrics.
#[derive(Debug, Clone)]
pub struct MirrorMetrics {
    /// Records between a mirror's committed offset and the log's end, by namespace,
    /// partition and mirror.
    pub lag_records: IntGaugeVec,
    /// Age in seconds of the oldest record the mirror has not settled.
    pub lag_seconds: IntGaugeVec,
    /// Records the backend confirmed, by namespace and mirror.
    pub published: IntCounterVec,
    /// Errors by namespace, mirror and kind (`unavailable`, `timeout`, `config`, `state`,
    /// `read`, `refused` — the last counts records refused for good and skipped).
    pub errors: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("wald")
}

impl MirrorMetrics {
    /// Creates and registers the metrics.
    ///
    /// # Errors
    /// A registration conflict (a bug).
    pub fn new(registry: &Metrics) -> Result<Self, prometheus::Error> {
        let npm = &["namespace", "partition", "mirror"];
        let m = Self {
            lag_records: IntGaugeVec::new(
                opts(
                    "mirror_lag_records",
                    "Records between a mirror's committed offset and the log's end",
                ),
                npm,
            )?,
            lag_seconds: IntGaugeVec::new(
                opts(
                    "mirror_lag_seconds",
                    "Age in seconds of the oldest record a mirror has not settled",
                ),
                npm,
            )?,
            published: IntCounterVec::new(
                opts(
                    "mirror_published_total",
                    "Records a mirror's backend confirmed",
                ),
                &["namespace", "mirror"],
            )?,
            errors: IntCounterVec::new(
                opts(
                    "mirror_errors_total",
                    "Mirror errors by kind (refused: records skipped for good)",
                ),
                &["namespace", "mirror", "kind"],
            )?,
        };
        registry.register(Box::new(m.lag_records.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        Ok(m)
    }
}

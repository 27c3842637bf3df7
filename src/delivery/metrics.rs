//! Delivery's Prometheus metrics (registered in the service's registry).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// Delivery's metrics.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Attempts by namespace, target and result (`ok`, `retryable`, `permanent`).
    pub attempts: IntCounterVec,
    /// Final outcomes by namespace, target and outcome (`delivered`, `dead_lettered`,
    /// `failed`, `expired`).
    pub outcomes: IntCounterVec,
    /// Append → delivered, seconds, by namespace.
    pub latency: HistogramVec,
    /// Records between a consumer's committed offset and the log's end.
    pub lag_records: IntGaugeVec,
    /// Age of the oldest record not yet final, seconds.
    pub lag_seconds: IntGaugeVec,
    /// Messages waiting for a later due time (parked and in the timer wheel).
    pub pending_delayed: IntGaugeVec,
    /// Messages in the dead-letter queue awaiting a decision, by namespace.
    pub dlq_size: IntGaugeVec,
    /// Arrivals in the dead-letter queue, by namespace.
    pub dlq_arrivals: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("wald")
}

impl DeliveryMetrics {
    /// Creates and registers the metrics.
    ///
    /// # Errors
    /// A registration conflict (a bug).
    pub fn new(registry: &Metrics) -> Result<Self, prometheus::Error> {
        let ntr = &["namespace", "target", "result"];
        let np = &["namespace", "partition"];
        let m = Self {
            attempts: IntCounterVec::new(
                opts(
                    "delivery_attempts_total",
                    "Delivery attempts by namespace, target and result",
                ),
                ntr,
            )?,
            outcomes: IntCounterVec::new(
                opts(
                    "deliveries_total",
                    "Final delivery outcomes by namespace, target and outcome",
                ),
                &["namespace", "target", "outcome"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "delivery_latency_seconds",
                    "Time from a message's due time (its append, when not delayed) to its delivery",
                )
                .namespace("wald")
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0,
                ]),
                &["namespace"],
            )?,
            lag_records: IntGaugeVec::new(
                opts(
                    "consumer_lag_records",
                    "Records between the committed offset and the log's end",
                ),
                np,
            )?,
            lag_seconds: IntGaugeVec::new(
                opts(
                    "consumer_lag_seconds",
                    "Age in seconds of the oldest record not yet final",
                ),
                np,
            )?,
            pending_delayed: IntGaugeVec::new(
                opts(
                    "delivery_pending_delayed",
                    "Messages waiting for a later due time",
                ),
                np,
            )?,
            dlq_size: IntGaugeVec::new(
                opts("dlq_size", "Dead-letter entries awaiting replay or discard"),
                &["namespace"],
            )?,
            dlq_arrivals: IntCounterVec::new(
                opts(
                    "dlq_arrivals_total",
                    "Messages sent to the dead-letter queue",
                ),
                &["namespace"],
            )?,
        };
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.outcomes.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.lag_records.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.pending_delayed.clone()))?;
        registry.register(Box::new(m.dlq_size.clone()))?;
        registry.register(Box::new(m.dlq_arrivals.clone()))?;
        Ok(m)
    }
}

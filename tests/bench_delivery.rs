//! `wald bench delivery`, tiny: 200 messages through the HTTP API, 2,000 delays over 3 s.
//! Checks that everything is measured, never the performance targets.

mod common;

use std::time::Duration;

use common::tempdir;
use wald::bench::delivery::{run_delivery, DeliveryOptions};

#[test]
fn a_tiny_run_delivers_everything_and_measures_each_figure() {
    let (_d, dir) = tempdir();
    let (_o, out) = tempdir();
    let file = out.join("delivery.json");
    let opts = DeliveryOptions {
        dir: Some(dir),
        messages: 200,
        concurrency: 4,
        partitions: 2,
        payload_bytes: 128,
        delay_count: 2_000,
        delay_spread: Duration::from_secs(3),
        // Beyond the consumers' park horizon (5 s), with time to append, park and restart.
        delay_lead: Duration::from_secs(8),
        sample: 2_000,
        json: Some(file.clone()),
        ..DeliveryOptions::new(true)
    };
    let r = run_delivery(&opts).expect("bench runs");

    let t = r.throughput.as_ref().expect("throughput measured");
    assert_eq!(t.sent, 200, "{t:?}");
    assert_eq!(t.write_errors, 0, "{t:?}");
    assert_eq!(
        t.delivered, t.sent,
        "every written message delivered: {t:?}"
    );
    assert!(t.delivered_per_s > 0.0 && t.writes_per_s > 0.0, "{t:?}");
    assert_eq!(t.latency.count, 200);
    assert!(
        0.0 < t.latency.p50_ms
            && t.latency.p50_ms <= t.latency.p99_ms
            && t.latency.p99_ms <= t.latency.max_ms,
        "{t:?}"
    );
    assert_eq!(t.write_latency.count, 200);

    let d = r.delays.as_ref().expect("delays measured");
    assert_eq!(d.delays, 2_000);
    assert_eq!(d.parked, 2_000, "all parked in the due-time index: {d:?}");
    assert!(
        d.rss_parked.total_mb > 0.0 && d.rss_baseline.total_mb > 0.0,
        "{d:?}"
    );
    assert!(
        d.start_secs > 0.0 && d.ready_secs >= d.start_secs,
        "restart measured: {d:?}"
    );
    assert!(d.resumed_secs >= d.ready_secs, "{d:?}");
    assert!(
        d.margin_secs > 0.0,
        "restarted before the first due time: {d:?}"
    );
    assert_eq!(d.sample, 2_000, "every sampled delay delivered: {d:?}");
    assert_eq!(d.lateness.count, 2_000);
    assert_eq!(d.early, 0, "none delivered before its due time: {d:?}");
    assert!(
        d.lateness.min_ms >= 0.0 && d.lateness.p50_ms <= d.lateness.max_ms,
        "{d:?}"
    );
    // Fewer than 1M delays: only the throughput targets are checked.
    assert_eq!(r.targets.len(), 2, "{:?}", r.targets);

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(j["throughput"]["delivered"], 200);
    assert_eq!(j["delays"]["parked"], 2_000);
    assert!(j["delays"]["lateness"]["p99_ms"].is_number(), "{j}");
    assert!(j["delays"]["ready_secs"].is_number(), "{j}");
}

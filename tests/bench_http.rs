//! `wald bench http` against the in-process server: a short run with 4 connections.

mod common;

use std::time::Duration;

use common::{config, tempdir, Server};
use serde_json::json;
use wald::bench::http::{run_http, HttpBenchError, HttpOptions};

/// Rate limits no bench reaches (the defaults allow 100 requests at once, 100/s).
fn unlimited() -> serde_json::Value {
    json!({ "requestsPerMinute": 60_000_000, "requestsPerHour": 3_600_000_000u64, "burstLimit": 1_000_000 })
}

fn options(s: &Server, namespace: &str, json: Option<std::path::PathBuf>) -> HttpOptions {
    HttpOptions {
        url: format!("http://{}", s.addr),
        concurrency: 4,
        duration: Duration::from_secs(1),
        payload_bytes: 512,
        namespace: namespace.into(),
        api_key: None,
        // The server runs in this process: its CPU is this process's.
        server_pid: Some(std::process::id()),
        batch: 1,
        json,
    }
}

#[test]
fn a_short_run_writes_durably_without_errors() {
    let (_d, dir) = tempdir();
    let (_o, out) = tempdir();
    let mut c = config(&dir);
    // The bench scrapes /metrics, which otherwise needs the admin key.
    c.server.metrics_public = true;
    let s = Server::start(c);
    s.create_namespace(json!({ "name": "bench", "accessControl": { "rateLimits": unlimited() } }));
    let file = out.join("bench.json");
    let r = run_http(&options(&s, "bench", Some(file.clone()))).expect("bench runs");

    assert!(r.writes > 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.elapsed_secs >= 1.0, "{r:?}");
    assert!(r.writes_per_s > 0.0);
    let l = &r.latency;
    assert_eq!(l.count, r.writes);
    assert!(
        0.0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us,
        "percentiles ordered: {l:?}"
    );
    assert_eq!(
        r.durable.yes, r.writes,
        "a sync namespace answers durable \"true\""
    );
    assert_eq!(
        r.body_bytes,
        r#"{"namespace":"bench","payload":}"#.len() + 512
    );
    // /metrics was scraped before and after: every write was one record.
    assert_eq!(r.records_appended, Some(r.writes), "{r:?}");
    let per_fsync = r.messages_per_fsync.expect("messages per fsync");
    assert!(per_fsync >= 1.0, "{per_fsync}");
    assert!(r.server_cpu_us_per_write.is_some_and(|c| c >= 0.0), "{r:?}");
    // The server runs in this process: the "client" CPU includes it, so it is at least the
    // server's (both from /proc/self/stat over the same run, read at nearly the same times).
    assert_eq!((r.batch, r.requests), (1, r.writes), "{r:?}");
    let client = r.client_cpu_secs.expect("client CPU");
    assert!(client > 0.0, "{r:?}");
    assert!(r.client_cpu_us_per_write.is_some_and(|c| c > 0.0), "{r:?}");

    // The JSON file holds the same report.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(j["writes"], r.writes);
    assert_eq!(j["concurrency"], 4);
    assert!(j["latency"]["p99_us"].is_number(), "{j}");
    assert_eq!(j["durable"]["true"], r.writes);
    assert_eq!(j["requests"], r.writes);
    assert!(j["client_cpu_us_per_write"].is_number(), "{j}");

    // The namespace's metrics endpoint saw the same writes.
    let m = s
        .req("GET", "/api/v1/wal/namespace/bench/metrics", &[], None)
        .json();
    assert_eq!(m["metrics"]["writes"], r.writes, "{m}");
    assert_eq!(m["metrics"]["errors"], 0, "{m}");
}

#[test]
fn a_batched_run_counts_messages_and_requests() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.metrics_public = true;
    let s = Server::start(c);
    s.create_namespace(json!({ "name": "bench", "accessControl": { "rateLimits": unlimited() } }));
    let mut o = options(&s, "bench", None);
    o.batch = 10;
    let r = run_http(&o).expect("bench runs");

    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.batch, 10);
    assert!(r.requests > 0, "{r:?}");
    assert_eq!(
        r.writes,
        r.requests * 10,
        "a 202 acknowledges the 10 messages: {r:?}"
    );
    assert_eq!(
        r.latency.count, r.requests,
        "the latency is per request: {r:?}"
    );
    assert_eq!(
        r.durable.yes, r.writes,
        "every message of a sync namespace is durable \"true\": {r:?}"
    );
    assert_eq!(
        r.body_bytes,
        r#"{"messages":[]}"#.len() + 10 * (r#"{"namespace":"bench","payload":}"#.len() + 512) + 9
    );
    assert!(
        (r.writes_per_s * r.elapsed_secs - r.writes as f64).abs() < 1.0,
        "{r:?}"
    );
    assert_eq!(
        r.records_appended,
        Some(r.writes),
        "one record per message: {r:?}"
    );
    assert!(r.messages_per_fsync.is_some_and(|m| m >= 1.0), "{r:?}");
    let cpu = r.server_cpu_secs.expect("server CPU");
    let per = r.server_cpu_us_per_write.expect("server CPU per write");
    assert!(
        (per - cpu * 1e6 / r.writes as f64).abs() < 1e-6,
        "per message: {r:?}"
    );
}

#[test]
fn batch_sizes_out_of_range_are_refused() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    for n in [0, 1001] {
        let mut o = options(&s, "bench", None);
        o.batch = n;
        let e = run_http(&o).unwrap_err();
        assert!(
            matches!(e, HttpBenchError::Options(ref m) if m.contains("--batch")),
            "{e}"
        );
    }
}

#[test]
fn a_missing_namespace_or_server_fails_early() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let e = run_http(&options(&s, "nope", None)).unwrap_err();
    assert!(
        matches!(e, HttpBenchError::NoNamespace(ref n) if n == "nope"),
        "{e}"
    );
    let mut o = options(&s, "nope", None);
    o.url = "https://example.invalid".into();
    assert!(matches!(run_http(&o), Err(HttpBenchError::Url { .. })));
    let o = options(&s, "nope", None);
    s.stop();
    assert!(matches!(run_http(&o), Err(HttpBenchError::Connect { .. })));
}

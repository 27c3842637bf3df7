//! `wald bench mirror`, tiny: 300 messages through the HTTP API mirrored to a real
//! `redis-server` the bench starts itself (and, with `mirror-sqs`, 200 to moto's server
//! mode). Checks that everything is measured, never the performance targets.
#![cfg(feature = "mirror-redis")]

mod common;

use common::tempdir;
use wald::bench::mirror::{run_mirror, Backend, MirrorOptions};

#[test]
fn a_tiny_run_mirrors_everything_and_measures_each_figure() {
    let (_d, dir) = tempdir();
    let (_o, out) = tempdir();
    let file = out.join("mirror.json");
    let mut backends = vec![Backend::Redis];
    // moto's server mode, when ./scripts/test.sh installed it (it sets WALD_MOTO_SERVER).
    if cfg!(feature = "mirror-sqs") && std::env::var_os("WALD_MOTO_SERVER").is_some() {
        backends.push(Backend::Sqs);
    }
    let opts = MirrorOptions {
        dir: Some(dir),
        backends: backends.clone(),
        messages: 300,
        sqs_messages: 200,
        concurrency: 4,
        partitions: 2,
        payload_bytes: 128,
        json: Some(file.clone()),
        ..MirrorOptions::new(true)
    };
    let r = run_mirror(&opts).expect("bench runs");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(r.backends.len(), backends.len());
    for b in &r.backends {
        let n = if b.backend == Backend::Redis {
            300
        } else {
            200
        };
        assert_eq!(b.sent, n, "{b:?}");
        assert_eq!(b.write_errors, 0, "{b:?}");
        assert_eq!(b.mirrored, n, "every acknowledged write confirmed: {b:?}");
        assert_eq!(b.in_backend, Some(n), "the backend holds them all: {b:?}");
        assert_eq!(b.lag.count, n);
        assert!(
            0.0 <= b.lag.p50_ms && b.lag.p50_ms <= b.lag.p99_ms && b.lag.p99_ms <= b.lag.max_ms,
            "{b:?}"
        );
        assert!(b.intake_per_s > 0.0 && b.mirrored_per_s > 0.0, "{b:?}");
        assert!(b.backend_cpu_pct.is_some(), "a server process: {b:?}");
    }
    assert!(r.disk.is_some_and(|d| d.fdatasync_p50_us > 0.0));
    assert_eq!(
        r.targets.len(),
        r.backends
            .iter()
            .map(|b| if b.backend == Backend::Redis { 2 } else { 1 })
            .sum::<usize>()
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["backends"][0]["backend"], "redis");
}

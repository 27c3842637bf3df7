//! The Redis Streams mirror against a real `redis-server` (started here on 127.0.0.1) and the
//! real server (in process, or the `wald serve` binary for the crash test):
//!
//! - messages written over HTTP arrive in `wal:{ns}:messages` in order, with their ids and
//!   the seeds' fields (`id`, `payload`, `metadata`);
//! - Redis stopped mid-load and started again on the same port: intake goes on, every
//!   acknowledged message arrives at least once, in order of first arrival, and the lag
//!   returns to 0;
//! - `ack = "mirror"`: "unknown" while Redis is down, "true" when it is up;
//! - a record larger than `maxRecordBytes` is refused for good, recorded, and skipped;
//! - SIGKILL of `wald serve` mid-mirroring loses nothing;
//! - bad backend configs are refused with the field named.
#![cfg(feature = "mirror-redis")]

mod common;
#[path = "common/servers.rs"]
mod servers;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{request, Server};
use serde_json::{json, Value};
use servers::RedisServer;

/// The stream's entries: (message id, payload JSON text, metadata JSON).
fn stream(port: u16, ns: &str) -> Vec<(String, String, Value)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut c = client.get_connection().unwrap();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("wal:{ns}:messages"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    entries
        .into_iter()
        .map(|(_, f)| {
            assert_eq!(f.len(), 6, "fields {f:?}");
            assert_eq!(
                (f[0].as_str(), f[2].as_str(), f[4].as_str()),
                ("id", "payload", "metadata")
            );
            (
                f[1].clone(),
                f[3].clone(),
                serde_json::from_str(&f[5]).unwrap(),
            )
        })
        .collect()
}

fn redis_ns(name: &str, port: u16, extra: &Value) -> Value {
    let mut cfg =
        json!({"url": format!("redis://127.0.0.1:{port}"), "batchSize": 16, "timeoutMs": 1000});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    json!({"name": name, "backend": "redis_streams", "backendConfig": cfg, "accessControl": common::no_rate_limits()})
}

/// Ids in order of first arrival.
fn first_arrivals(entries: &[(String, String, Value)]) -> Vec<String> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|e| seen.insert(e.0.clone()))
        .map(|e| e.0.clone())
        .collect()
}

#[test]
fn a_panicking_mirror_is_reported_and_restarted() {
    let redis = RedisServer::start();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    s.app
        .supervision
        .inject_panics(wald::supervise::MIRROR_CONSUMER, 1);
    s.create_namespace(redis_ns("orders", redis.port, &json!({"maxLen": 0})));
    let mut ids = Vec::new();
    for n in 0..20 {
        let r = common::write_n(s.addr, "orders", n, None);
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["messageId"].as_str().unwrap().to_owned());
    }
    common::wait_caught_up(s.addr, "orders", 20);
    let got: Vec<String> = stream(redis.port, "orders")
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(got, ids, "every record, once, after the restart");
    let ready = s.admin("GET", "/api/v1/health/readiness", None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready
            .text()
            .contains("mirror_consumer orders/0/redis_streams"),
        "{}",
        ready.text()
    );
    s.stop();
}

#[test]
fn messages_arrive_in_order_with_their_ids() {
    let redis = RedisServer::start();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    s.create_namespace(redis_ns("orders", redis.port, &json!({"maxLen": 0})));
    let mut ids = Vec::new();
    for n in 0..150 {
        let r = common::write_n(s.addr, "orders", n, None);
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["durable"], "true");
        ids.push(r.json()["messageId"].as_str().unwrap().to_owned());
    }
    let st = common::wait_caught_up(s.addr, "orders", 20);
    let m = &st["mirrors"][0];
    assert_eq!(m["name"], "redis_streams");
    assert_eq!(m["backend"], "redis_streams");
    assert_eq!(m["ack"], "fsync");
    assert_eq!(m["committedOffsets"], json!([150]));
    let entries = stream(redis.port, "orders");
    assert_eq!(entries.len(), 150, "no duplicates without failures");
    let got: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    assert_eq!(got, ids);
    for (n, (_, payload, meta)) in entries.iter().enumerate() {
        assert_eq!(
            serde_json::from_str::<Value>(payload).unwrap(),
            json!({"n": n})
        );
        assert_eq!(meta["namespace"], "orders");
        assert_eq!(meta["partition"], 0);
        assert_eq!(meta["offset"], n);
        assert!(
            meta["requestId"].as_str().is_some_and(|r| !r.is_empty()),
            "{meta}"
        );
        assert!(
            meta["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{meta}"
        );
    }
    let metrics = s.admin("GET", "/metrics", None).text();
    assert!(metrics.contains("wald_mirror_lag_records{mirror=\"redis_streams\",namespace=\"orders\",partition=\"0\"} 0"), "{metrics}");
    assert!(metrics.contains(
        "wald_mirror_published_total{mirror=\"redis_streams\",namespace=\"orders\"} 150"
    ));
    s.stop();
}

#[test]
fn redis_restarted_mid_load_gets_every_acknowledged_message() {
    let mut redis = RedisServer::start_persistent();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    let mut spec = redis_ns("load", redis.port, &json!({}));
    spec["shardConfig"] = json!({"partitionCount": 2, "strategy": "round_robin"});
    s.create_namespace(spec);
    let acked = Arc::new(Mutex::new(Vec::<(String, u64, u64)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, done, addr) = (Arc::clone(&acked), Arc::clone(&done), s.addr);
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = common::write_n(addr, "load", n, None);
                assert_eq!(r.status, 202, "{}", r.text());
                let j = r.json();
                assert_eq!(
                    j["durable"], "true",
                    "intake never waits on the mirror: {j}"
                );
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "a write took {:?} while Redis was down",
                    t.elapsed()
                );
                acked.lock().unwrap().push((
                    j["messageId"].as_str().unwrap().to_owned(),
                    j["partition"].as_u64().unwrap(),
                    j["offset"].as_u64().unwrap(),
                ));
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    redis.stop();
    let at_stop = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(1500));
    let st = common::namespace_status(s.addr, "load");
    let m = &st["mirrors"][0];
    assert_eq!(m["healthy"], false, "{st:#}");
    assert!(
        m["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{st:#}"
    );
    assert!(m["lagRecords"].as_u64().unwrap() > 0, "{st:#}");
    let ready = s.admin("GET", "/api/v1/health/readiness", None);
    assert_eq!(
        ready.status,
        200,
        "a mirror that is down does not make readiness red: {}",
        ready.text()
    );
    assert_eq!(ready.json()["mirrors"][0]["healthy"], false);
    assert!(
        acked.lock().unwrap().len() > at_stop,
        "writes went on while Redis was down"
    );
    redis.restart();
    std::thread::sleep(Duration::from_millis(700));
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    common::wait_caught_up(s.addr, "load", 30);
    let entries = stream(redis.port, "load");
    let present: HashSet<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let acked = acked.lock().unwrap().clone();
    for (id, _, _) in &acked {
        assert!(
            present.contains(id.as_str()),
            "acknowledged {id} never reached Redis"
        );
    }
    // In order per partition, by first arrival.
    let first = first_arrivals(&entries);
    for p in 0..2 {
        let want: Vec<&str> = acked
            .iter()
            .filter(|a| a.1 == p)
            .map(|a| a.0.as_str())
            .collect();
        let part: HashSet<&str> = want.iter().copied().collect();
        let got: Vec<&str> = first
            .iter()
            .map(String::as_str)
            .filter(|i| part.contains(i))
            .collect();
        assert_eq!(got, want, "partition {p} out of order");
    }
    s.stop();
}

#[test]
fn ack_mirror_answers_unknown_while_redis_is_down() {
    let mut redis = RedisServer::start_persistent();
    let (_d, dir) = common::tempdir();
    let mut cfg = common::config(&dir);
    cfg.server.request_timeout_ms = 1000;
    let s = Server::start(cfg);
    s.create_namespace(redis_ns(
        "acked",
        redis.port,
        &json!({"ack": "mirror", "timeoutMs": 300}),
    ));
    let r = common::write_n(s.addr, "acked", 1, None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["durable"], "true", "{}", r.text());
    assert_eq!(
        stream(redis.port, "acked").len(),
        1,
        "answered true only once in Redis"
    );
    redis.stop();
    let t = Instant::now();
    let keyed =
        json!({"namespace": "acked", "payload": {"n": 2}, "idempotencyKey": "two"}).to_string();
    let write_two = || {
        request(
            s.addr,
            "POST",
            "/api/v1/wal/write",
            &[("content-type", "application/json")],
            Some(keyed.as_bytes()),
        )
    };
    let r = write_two();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["durable"], "unknown", "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered within the request timeout"
    );
    // Its retry is a duplicate, and Redis has not confirmed the first one either.
    let r = write_two();
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
    assert_eq!(
        r.json()["durable"],
        "unknown",
        "a duplicate is not more durable than its first write: {}",
        r.text()
    );
    assert_eq!(
        common::namespace_status(s.addr, "acked")["mirrors"][0]["ack"],
        "mirror"
    );
    redis.restart();
    common::wait_caught_up(s.addr, "acked", 20);
    let r = common::write_n(s.addr, "acked", 3, None);
    assert_eq!(r.json()["durable"], "true", "{}", r.text());
    let ids: Vec<String> = stream(redis.port, "acked")
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    s.stop();
}

#[test]
fn a_record_too_large_for_the_backend_is_refused_and_skipped() {
    let redis = RedisServer::start();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    s.create_namespace(redis_ns("big", redis.port, &json!({"maxRecordBytes": 600})));
    let small1 = common::write_n(s.addr, "big", 1, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"namespace": "big", "payload": {"blob": "x".repeat(2000)}}).to_string();
    let r = request(
        s.addr,
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let big = r.json()["messageId"].as_str().unwrap().to_owned();
    let small2 = common::write_n(s.addr, "big", 2, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let st = common::wait_caught_up(s.addr, "big", 20);
    let m = &st["mirrors"][0];
    assert_eq!(m["refused"], 1, "{st:#}");
    let why = m["lastRefusal"].as_str().unwrap();
    assert!(
        why.contains(&big) && why.contains("maxRecordBytes"),
        "{why}"
    );
    let ids: Vec<String> = stream(redis.port, "big").into_iter().map(|e| e.0).collect();
    assert_eq!(ids, [small1.clone(), small2]);
    // Recorded with the message, in the state store (it survives restarts).
    s.stop();
    let s = Server::start(common::config(&dir));
    let m = request(
        s.addr,
        "GET",
        &format!("/api/v1/wal/messages/{big}"),
        &[],
        None,
    )
    .json();
    let refusals = m["mirrorRefusals"].as_array().expect("mirrorRefusals");
    assert_eq!(refusals.len(), 1, "{m:#}");
    assert_eq!(refusals[0]["mirror"], "redis_streams");
    assert!(
        refusals[0]["reason"]
            .as_str()
            .unwrap()
            .contains("maxRecordBytes"),
        "{m:#}"
    );
    let m = request(
        s.addr,
        "GET",
        &format!("/api/v1/wal/messages/{small1}"),
        &[],
        None,
    )
    .json();
    assert!(m.get("mirrorRefusals").is_none(), "{m:#}");
    s.stop();
}

#[test]
fn bad_backend_configs_are_refused_with_the_field_named() {
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    let mut cases = vec![
        (json!({"name": "b1", "backend": "rabbitmq"}), "backend"),
        (
            json!({"name": "b2", "backend": "redis_streams"}),
            "backendConfig.url",
        ),
        (
            json!({"name": "b3", "backend": "redis_streams", "backendConfig": {"url": "redis://127.0.0.1:1", "maxLen": -1}}),
            "backendConfig.maxLen",
        ),
        (
            json!({"name": "b4", "backend": "redis_streams", "backendConfig": {"url": "redis://127.0.0.1:1", "ack": "sometimes"}}),
            "backendConfig.ack",
        ),
        (
            json!({"name": "b6", "mirrors": [{"backend": "sqs", "backendConfig": {"batchSize": 50}}]}),
            "mirrors[0].backendConfig.batchSize",
        ),
        (
            json!({"name": "b7", "mirrors": [{"backend": "redis_streams", "backendConfig": {"url": "nope"}}]}),
            "mirrors[0].backendConfig.url",
        ),
    ];
    if !cfg!(feature = "mirror-sqs") {
        // A backend this build lacks.
        cases.push((json!({"name": "b5", "backend": "sqs", "backendConfig": {"queueUrl": "http://127.0.0.1:1/q"}}), "backend"));
    }
    for (spec, field) in cases {
        let r = s.admin("POST", "/api/v1/namespaces", Some(&spec));
        let j = r.assert_error(400, "VALIDATION_ERROR");
        let fields: Vec<&str> = j["error"]["details"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{spec}: {j}");
        if spec["backend"] == "sqs" {
            assert!(
                j["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("this build has no `mirror-sqs` feature"),
                "{j}"
            );
        }
    }
    s.stop();
}

/// `wald serve` with data in `dir`; returns the process and its address.
fn spawn(dir: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    common::spawn_serve(dir, common::ADMIN, None)
}

#[test]
fn sigkill_mid_mirroring_loses_nothing() {
    let redis = RedisServer::start_persistent();
    let dir = tempfile::tempdir().unwrap();
    let (c, mut addr) = spawn(dir.path());
    let mut child = common::Killed(c);
    let spec = redis_ns("crash", redis.port, &json!({}));
    let r = common::admin_post(addr, "/api/v1/namespaces", &spec);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut acked = Vec::new();
    let cycles: usize = std::env::var("WALD_MIRROR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut n = 0;
    for _ in 0..cycles {
        // Writes while the mirror runs, then SIGKILL without warning.
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            let r = common::write_n(addr, "crash", n, None);
            n += 1;
            assert_eq!(r.status, 202, "{}", r.text());
            assert_eq!(r.json()["durable"], "true");
            acked.push(r.json()["messageId"].as_str().unwrap().to_owned());
        }
        // SIGKILL, then a new process on the same data.
        drop(child);
        let (c, a) = spawn(dir.path());
        (child, addr) = (common::Killed(c), a);
    }
    common::wait_caught_up(addr, "crash", 30);
    let entries = stream(redis.port, "crash");
    let present: HashSet<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for id in &acked {
        assert!(
            present.contains(id.as_str()),
            "acknowledged {id} lost across SIGKILL"
        );
    }
    assert_eq!(first_arrivals(&entries), acked, "order of first arrival");
    drop(child);
}

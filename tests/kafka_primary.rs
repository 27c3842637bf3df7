//! Kafka as primary durability (`durability = "kafka"`) against librdkafka's mock cluster:
//!
//! - a write answers `durable: "true"` once Kafka confirmed it, `"unknown"` while the broker
//!   is down (and the record reaches Kafka when it returns);
//! - the local log losing its unsynced tail (an OS crash, simulated by putting back a copy of
//!   the data directory taken earlier) is rebuilt from the topic at startup: every
//!   acknowledged message is back at its offset, with its payload, key, targets and metadata.
#![cfg(feature = "mirror-kafka")]

mod common;

use common::{config, tempdir, Server};
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};

fn namespace(bootstrap: &str) -> Value {
    json!({"name": "orders", "durability": "kafka", "backend": "kafka",
           "backendConfig": {"bootstrapServers": bootstrap, "timeoutMs": 500, "batchSize": 16},
           "accessControl": {"allowedApiKeys": [], "rateLimits": {"requestsPerMinute": 1_000_000,
               "requestsPerHour": 100_000_000, "burstLimit": 100_000}}})
}

fn write(s: &Server, n: u64) -> (String, Value) {
    let body = json!({"namespace": "orders", "partitionKey": format!("k{}", n % 3),
        "payload": {"n": n, "text": "é ✓"}, "metadata": {"source": "test"},
        "lifecycle": {"ttl": 3600}});
    let r = s.post_json("/api/v1/wal/write", &[], &body);
    assert_eq!(r.status, 202, "{}", r.text());
    let j = r.json();
    (j["messageId"].as_str().unwrap().to_owned(), j)
}

fn wait_mirrored(s: &Server) {
    common::wait_caught_up(s.addr, "orders", 60);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn writes_answer_after_kafka_and_a_lost_local_tail_is_rebuilt_from_the_topic() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_d, root) = tempdir();
    let (data, snapshot) = (root.join("data"), root.join("snapshot"));
    let mut cfg = config(&data);
    cfg.server.request_timeout_ms = 1500;

    let s = Server::start(cfg.clone());
    s.create_namespace(namespace(&bootstrap));
    let mut acked = Vec::new();
    for n in 0..10 {
        let (id, j) = write(&s, n);
        assert_eq!(j["durable"], "true", "{j}");
        acked.push(id);
    }
    cluster.broker_down(1).unwrap();
    let (id, j) = write(&s, 10);
    assert_eq!(j["durable"], "unknown", "Kafka is down: {j}");
    assert!(j["message"].as_str().unwrap().contains("Kafka"), "{j}");
    acked.push(id);
    cluster.broker_up(1).unwrap();
    wait_mirrored(&s);
    s.stop();

    // The state of the disk an OS crash could leave: the first 11 records only.
    copy_dir(&data, &snapshot);
    let s = Server::start(cfg.clone());
    for n in 11..25 {
        let (id, j) = write(&s, n);
        assert_eq!(j["durable"], "true", "{j}");
        acked.push(id);
    }
    wait_mirrored(&s);
    s.stop();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&snapshot, &data).unwrap();

    // At startup the 14 records Kafka confirmed come back from the topic, at their offsets.
    let s = Server::start(cfg);
    let page = s
        .req(
            "GET",
            "/api/v1/wal/namespace/orders/messages?partition=0&fromOffset=0&limit=100",
            &[],
            None,
        )
        .json();
    let msgs = page["messages"].as_array().unwrap();
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, acked, "every acknowledged message, in order");
    for (n, m) in msgs.iter().enumerate() {
        assert_eq!(m["offset"], n as u64);
        assert_eq!(m["payload"], json!({"n": n, "text": "é ✓"}));
        assert_eq!(m["metadata"], json!({"source": "test"}));
        assert_eq!(m["lifecycle"]["ttl"], 3600);
    }
    // Found by id (indexed), and writes go on after the recovered tail.
    let last = acked.last().unwrap();
    let r = s.req("GET", &format!("/api/v1/wal/messages/{last}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, j) = write(&s, 25);
    assert_eq!(j["durable"], "true");
    assert_eq!(j["offset"], 25);
    s.stop();
}

#[test]
fn a_record_kafka_refuses_is_never_answered_durable() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 1, 1).unwrap();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.server.request_timeout_ms = 3000;
    let s = Server::start(cfg);
    let mut ns = namespace(&cluster.bootstrap_servers());
    ns["backendConfig"]["maxRecordBytes"] = json!(1000);
    s.create_namespace(ns);
    let (_, j) = write(&s, 0);
    assert_eq!(j["durable"], "true", "{j}");
    // Over the mirror's maxRecordBytes: the mirror refuses it for good and its committed
    // offset passes it — neither in Kafka nor fsync'd here, so not durable.
    let big = json!({"namespace": "orders", "payload": {"blob": "x".repeat(3000)},
        "idempotencyKey": "big"});
    for attempt in ["first", "retry"] {
        let r = s.post_json("/api/v1/wal/write", &[], &big);
        assert_eq!(r.status, 202, "{}", r.text());
        let j = r.json();
        assert_eq!(j["durable"], "false", "{attempt}: {j}");
        assert_eq!(j["duplicate"], attempt == "retry", "{j}");
        let why = j["message"].as_str().unwrap();
        assert!(why.contains("refused") && why.contains("kafka"), "{why}");
    }
    let (_, j) = write(&s, 2);
    assert_eq!(
        j["durable"], "true",
        "the mirror goes on after a refusal: {j}"
    );
    s.stop();
}

#[test]
fn kafka_durability_needs_a_kafka_mirror() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let r = s.admin(
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"name": "x", "durability": "kafka"})),
    );
    let e = r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        e["error"]["details"]["fields"][0]["field"], "durability",
        "{e}"
    );
    s.stop();
}

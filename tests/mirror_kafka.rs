//! The Kafka mirror against librdkafka's mock cluster (`rdkafka::mocking::MockCluster`, a
//! Kafka-protocol broker on 127.0.0.1 inside the test process) and the real server:
//!
//! - messages written over HTTP arrive in the topic in order per partition, with their ids
//!   in the headers and the partition key as the Kafka key;
//! - the broker taken down mid-load and brought back: intake goes on, every acknowledged
//!   message arrives at least once, and the lag returns to 0;
//! - `ack = "mirror"`: "unknown" while the broker is down, "true" when it is up;
//! - a record larger than `maxRecordBytes` is refused for good, recorded, and skipped;
//! - SIGKILL of `wald serve` mid-mirroring loses nothing.
#![cfg(feature = "mirror-kafka")]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{request, Server};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

/// A message read back: Kafka partition, key, payload, headers.
#[derive(Debug, Clone)]
struct Got {
    partition: i32,
    key: Option<String>,
    payload: String,
    headers: HashMap<String, String>,
}

impl Got {
    fn id(&self) -> &str {
        self.headers.get("id").map_or("", String::as_str)
    }
}

/// Reads the topic from the beginning until `done` holds (or panics after `secs`).
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    secs: u64,
    done: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "wald-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while !done(&got) {
        assert!(
            Instant::now() < deadline,
            "topic {topic}: condition not met in {secs} s; got {} messages",
            got.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let headers: HashMap<String, String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push(Got {
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
    }
    got
}

fn kafka_ns(name: &str, bootstrap: &str, extra: &Value) -> Value {
    let mut cfg = json!({"bootstrapServers": bootstrap, "batchSize": 16, "timeoutMs": 1000});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    json!({"name": name, "backend": "kafka", "backendConfig": cfg, "accessControl": common::no_rate_limits()})
}

fn ids_cover(acked: &[String]) -> impl Fn(&[Got]) -> bool + '_ {
    move |got| {
        let have: HashSet<&str> = got.iter().map(Got::id).collect();
        acked.iter().all(|a| have.contains(a.as_str()))
    }
}

/// Ids of one Kafka partition in order of first arrival.
fn first_arrivals(got: &[Got], partition: i32) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|g| g.partition == partition && seen.insert(g.id().to_owned()))
        .map(|g| g.id().to_owned())
        .collect()
}

#[test]
fn messages_arrive_in_order_per_partition_with_their_ids() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 2, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    let mut spec = kafka_ns("orders", &bootstrap, &json!({}));
    spec["shardConfig"] = json!({"partitionCount": 2, "strategy": "hash"});
    s.create_namespace(spec);
    let mut acked: Vec<(String, u64)> = Vec::new();
    for n in 0..80 {
        let key = format!("k{}", n % 5);
        let r = common::write_n(s.addr, "orders", n, Some(&key));
        assert_eq!(r.status, 202, "{}", r.text());
        let j = r.json();
        assert_eq!(j["durable"], "true");
        acked.push((
            j["messageId"].as_str().unwrap().to_owned(),
            j["partition"].as_u64().unwrap(),
        ));
    }
    let st = common::wait_caught_up(s.addr, "orders", 30);
    assert_eq!(st["mirrors"][0]["backend"], "kafka");
    let ids: Vec<String> = acked.iter().map(|a| a.0.clone()).collect();
    let got = consume(&bootstrap, "orders", 2, 30, ids_cover(&ids));
    assert_eq!(got.len(), 80, "no duplicates without failures");
    for g in &got {
        assert_eq!(g.headers["namespace"], "orders");
        assert_eq!(
            g.headers["partition"],
            g.partition.to_string(),
            "wald partition p → Kafka partition p"
        );
        assert!(
            g.key.as_deref().is_some_and(|k| k.starts_with('k')),
            "{g:?}"
        );
        assert!(
            g.headers.get("requestId").is_some_and(|r| !r.is_empty()),
            "{g:?}"
        );
        let n: Value = serde_json::from_str(&g.payload).unwrap();
        assert!(n["n"].is_u64(), "{g:?}");
    }
    for p in 0..2 {
        let want: Vec<String> = acked
            .iter()
            .filter(|a| a.1 == p as u64)
            .map(|a| a.0.clone())
            .collect();
        assert_eq!(first_arrivals(&got, p), want, "partition {p}");
    }
    s.stop();
}

#[test]
fn broker_down_mid_load_then_every_acknowledged_message_arrives() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("load", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    s.create_namespace(kafka_ns("load", &bootstrap, &json!({})));
    let mut acked = Vec::new();
    let mut n = 0;
    let mut burst = |s: &Server, acked: &mut Vec<String>, count: u64| {
        for _ in 0..count {
            let t = Instant::now();
            let r = common::write_n(s.addr, "load", n, None);
            n += 1;
            assert_eq!(r.status, 202, "{}", r.text());
            assert_eq!(r.json()["durable"], "true");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "intake waited {:?}",
                t.elapsed()
            );
            acked.push(r.json()["messageId"].as_str().unwrap().to_owned());
        }
    };
    burst(&s, &mut acked, 40);
    cluster.broker_down(1).unwrap();
    burst(&s, &mut acked, 40);
    std::thread::sleep(Duration::from_millis(2500));
    let st = common::namespace_status(s.addr, "load");
    assert_eq!(st["mirrors"][0]["healthy"], false, "{st:#}");
    assert!(
        st["mirrors"][0]["lagRecords"].as_u64().unwrap() > 0,
        "{st:#}"
    );
    let ready = request(s.addr, "GET", "/api/v1/health/readiness", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    burst(&s, &mut acked, 20);
    cluster.broker_up(1).unwrap();
    burst(&s, &mut acked, 20);
    common::wait_caught_up(s.addr, "load", 60);
    let got = consume(&bootstrap, "load", 1, 30, ids_cover(&acked));
    assert_eq!(first_arrivals(&got, 0), acked, "order of first arrival");
    s.stop();
}

#[test]
fn ack_mirror_answers_unknown_while_the_broker_is_down() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("acked", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_d, dir) = common::tempdir();
    let mut cfg = common::config(&dir);
    cfg.server.request_timeout_ms = 1500;
    let s = Server::start(cfg);
    s.create_namespace(kafka_ns(
        "acked",
        &bootstrap,
        &json!({"ack": "mirror", "timeoutMs": 500}),
    ));
    let r = common::write_n(s.addr, "acked", 1, None);
    assert_eq!(r.json()["durable"], "true", "{}", r.text());
    cluster.broker_down(1).unwrap();
    let r = common::write_n(s.addr, "acked", 2, None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["durable"], "unknown", "{}", r.text());
    cluster.broker_up(1).unwrap();
    common::wait_caught_up(s.addr, "acked", 60);
    let r = common::write_n(s.addr, "acked", 3, None);
    assert_eq!(r.json()["durable"], "true", "{}", r.text());
    s.stop();
}

#[test]
fn a_record_too_large_for_kafka_is_refused_and_skipped() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("big", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_d, dir) = common::tempdir();
    let s = Server::start(common::config(&dir));
    s.create_namespace(kafka_ns(
        "big",
        &bootstrap,
        &json!({"maxRecordBytes": 1000}),
    ));
    let small1 = common::write_n(s.addr, "big", 1, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"namespace": "big", "payload": {"blob": "x".repeat(5000)}}).to_string();
    let r = request(
        s.addr,
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    let big = r.json()["messageId"].as_str().unwrap().to_owned();
    let small2 = common::write_n(s.addr, "big", 2, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let st = common::wait_caught_up(s.addr, "big", 30);
    let m = &st["mirrors"][0];
    assert_eq!(m["refused"], 1, "{st:#}");
    assert!(m["lastRefusal"].as_str().unwrap().contains(&big), "{st:#}");
    let want = [small1, small2];
    let got = consume(&bootstrap, "big", 1, 30, ids_cover(&want));
    assert_eq!(first_arrivals(&got, 0), want);
    s.stop();
}

#[test]
fn sigkill_mid_mirroring_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("crash", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let spawn = || common::spawn_serve(dir.path(), common::ADMIN, None);
    let (c, mut addr) = spawn();
    let mut child = common::Killed(c);
    let spec = kafka_ns("crash", &bootstrap, &json!({}));
    let r = common::admin_post(addr, "/api/v1/namespaces", &spec);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut acked = Vec::new();
    let mut n = 0;
    for _ in 0..3 {
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            let r = common::write_n(addr, "crash", n, None);
            n += 1;
            assert_eq!(r.json()["durable"], "true", "{}", r.text());
            acked.push(r.json()["messageId"].as_str().unwrap().to_owned());
        }
        // SIGKILL, then a new process on the same data.
        drop(child);
        let (c, a) = spawn();
        (child, addr) = (common::Killed(c), a);
    }
    common::wait_caught_up(addr, "crash", 60);
    let got = consume(&bootstrap, "crash", 1, 30, ids_cover(&acked));
    assert_eq!(first_arrivals(&got, 0), acked);
    drop(child);
}

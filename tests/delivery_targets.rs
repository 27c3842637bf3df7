//! Delivery through the whole service to real systems: a real Redis and a real PostgreSQL
//! started by the test (tests/common/servers.rs), written to by the server's consumers; and
//! cross-region fan-out, each region delivered and retried on its own.

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "common/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use common::{config, tempdir, Server};
use serde_json::{json, Value};

fn write(s: &Server, body: &Value) -> String {
    let r = s.post_json("/api/v1/wal/write", &[], body);
    assert_eq!(r.status, 202, "write: {}", r.text());
    r.json()["messageId"].as_str().unwrap().to_owned()
}

fn wait_status(s: &Server, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = s
            .req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None)
            .json();
        if m["status"] == status {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status}: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn cache_and_database_targets_land_in_real_redis_and_postgresql() {
    let redis = servers::RedisServer::start();
    let pg = servers::PgServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg_client = rt.block_on(servers::pg_client(pg.port));
    rt.block_on(pg_client.batch_execute(
        "CREATE TABLE user_events (id integer PRIMARY KEY, name text NOT NULL, visits integer)",
    ))
    .unwrap();

    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let cache_target = json!({ "type": "cache", "identifier": "redis", "config": {
        "type": "redis", "host": "127.0.0.1", "port": redis.port, "database": 2, "keyPrefix": "wald:" } });
    let db_target = json!({ "type": "database", "identifier": "pg", "config": {
        "type": "postgresql", "host": "127.0.0.1", "port": pg.port, "database": "postgres", "table": "user_events" } });
    s.create_namespace(json!({ "name": "sync", "retryPolicy": {"maxAttempts": 2, "initialDelayMs": 100, "jitterMs": 0},
        "targetConfigs": [cache_target, db_target] }));
    // A message names the namespace's targets by identifier.
    let (cache, db) = (json!("redis"), json!("pg"));

    let set = write(
        &s,
        &json!({ "namespace": "sync", "partitionKey": "user:1", "target": cache,
        "payload": { "operation": "SET", "key": "user:1", "value": {"name": "Ann"}, "ttlSeconds": 600 } }),
    );
    let tmp = write(
        &s,
        &json!({ "namespace": "sync", "partitionKey": "user:2", "target": cache,
        "payload": { "operation": "SET", "key": "user:2", "value": "short-lived" } }),
    );
    wait_status(&s, &set, "delivered");
    wait_status(&s, &tmp, "delivered");
    let del = write(
        &s,
        &json!({ "namespace": "sync", "partitionKey": "user:2", "target": cache,
        "payload": { "operation": "DEL", "key": "user:2" } }),
    );
    wait_status(&s, &del, "delivered");

    let mut conn = rt.block_on(async {
        redis::Client::open(format!("redis://127.0.0.1:{}/2", redis.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    let (v1, ttl, v2): (Option<String>, i64, Option<String>) = rt.block_on(async {
        let v1 = redis::cmd("GET")
            .arg("wald:user:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let ttl = redis::cmd("TTL")
            .arg("wald:user:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let v2 = redis::cmd("GET")
            .arg("wald:user:2")
            .query_async(&mut conn)
            .await
            .unwrap();
        (v1, ttl, v2)
    });
    let v1: Value = serde_json::from_str(&v1.expect("SET landed in Redis database 2")).unwrap();
    assert_eq!(v1, json!({"name": "Ann"}));
    assert!((1..=600).contains(&ttl), "TTL set: {ttl}");
    assert_eq!(v2, None, "DEL landed");

    let ins = write(
        &s,
        &json!({ "namespace": "sync", "partitionKey": "row:1", "target": db,
        "payload": { "operation": "INSERT", "data": {"id": 1, "name": "Ann", "visits": 1} } }),
    );
    wait_status(&s, &ins, "delivered");
    let up = write(
        &s,
        &json!({ "namespace": "sync", "partitionKey": "row:1", "target": db,
        "payload": { "operation": "UPSERT", "data": {"id": 1, "name": "Ann B", "visits": 2} } }),
    );
    wait_status(&s, &up, "delivered");
    let rows = rt
        .block_on(pg_client.query("SELECT id, name, visits FROM user_events ORDER BY id", &[]))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].get::<_, i32>(0),
            rows[0].get::<_, String>(1),
            rows[0].get::<_, i32>(2)
        ),
        (1, "Ann B".to_owned(), 2)
    );
    // A duplicate key is a permanent failure: one attempt, then the DLQ.
    let dup = write(
        &s,
        &json!({ "namespace": "sync", "target": db,
        "payload": { "operation": "INSERT", "data": {"id": 1, "name": "again"} } }),
    );
    let m = wait_status(&s, &dup, "dead_lettered");
    assert_eq!(
        m["targets"][0]["attempts"].as_array().unwrap().len(),
        1,
        "{m:#}"
    );
    s.stop();
}

#[test]
fn each_region_is_delivered_and_retried_on_its_own() {
    let rx = receiver::Receiver::start();
    rx.shared
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "regions", "adHocTargets": true,
        "retryPolicy": {"maxAttempts": 1, "backoffStrategy": "constant", "initialDelayMs": 100, "jitterMs": 0} }));
    let target = |id: &str, region: &str, path: &str| {
        json!({ "type": "webhook", "identifier": id,
        "region": region, "config": { "url": rx.url(path) } })
    };
    let id = write(
        &s,
        &json!({ "namespace": "regions", "payload": {"session": 456},
        "target": [target("eu-hook", "europe", "ok"), target("asia-hook", "asia", "down")] }),
    );
    let m = wait_status(&s, &id, "dead_lettered");
    let by_region = |r: &str| {
        m["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["region"] == r)
            .unwrap()
            .clone()
    };
    let (eu, asia) = (by_region("europe"), by_region("asia"));
    assert_eq!(eu["status"], "delivered");
    assert_eq!(eu["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(asia["status"], "dead_lettered");
    assert_eq!(
        asia["attempts"].as_array().unwrap().len(),
        2,
        "asia retried on its own: {m:#}"
    );
    let ok_hits = rx.hits().iter().filter(|h| h.path == "ok").count();
    assert_eq!(ok_hits, 1, "europe is not re-delivered while asia retries");

    // Replaying the DLQ entry re-delivers only to the region that did not get it.
    rx.shared
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/regions/dlq/{id}/replay"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_status(&s, &id, "delivered");
    assert_eq!(rx.hits().iter().filter(|h| h.path == "ok").count(), 1);
    assert!(rx
        .hits()
        .iter()
        .any(|h| h.path == "down" && h.status == 200));
    s.stop();
}

#[test]
fn wald_replay_redelivers_a_range_of_the_log() {
    let rx = receiver::Receiver::start();
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "again", "targetConfigs": [
        { "type": "webhook", "identifier": "a", "config": { "url": rx.url("ok") } },
        { "type": "webhook", "identifier": "b", "config": { "url": rx.url("ok") } } ] }));
    let ids: Vec<String> = (0..5)
        .map(|i| write(&s, &json!({ "namespace": "again", "payload": {"i": i} })))
        .collect();
    for id in &ids {
        wait_status(&s, id, "delivered");
    }
    assert_eq!(rx.hits().len(), 10);
    // Offsets 1..=3, target "a" only, through the command line against the running server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wald"))
        .args([
            "replay",
            "--namespace",
            "again",
            "--from-offset",
            "1",
            "--to-offset",
            "3",
            "--target",
            "a",
        ])
        .args([
            "--url",
            &format!("http://{}", s.addr),
            "--admin-key",
            common::ADMIN,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wald replay failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["total"].as_u64(), summary["succeeded"].as_u64()),
        (Some(3), Some(3)),
        "{summary:#}"
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 13);
    for (i, id) in ids.iter().enumerate() {
        let n = hits.iter().filter(|h| &h.message_id == id).count();
        assert_eq!(n, if (1..=3).contains(&i) { 3 } else { 2 }, "message {i}");
    }
    // Bad input.
    s.admin("POST", "/api/v1/namespaces/again/replay", Some(&json!({})))
        .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/namespaces/again/replay",
        Some(&json!({"fromOffset": 3, "toOffset": 1})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/namespaces/again/replay",
        Some(&json!({"fromOffset": 0, "target": "zzz"})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/namespaces/again/replay",
        Some(&json!({"fromOffset": 0, "partition": 9})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/namespaces/nope/replay",
        Some(&json!({"fromOffset": 0})),
    )
    .assert_error(404, "NAMESPACE_NOT_FOUND");
    s.stop();
}

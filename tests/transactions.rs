//! Multi-partition transactions through the whole service, against a real PostgreSQL and a
//! real Redis started by the test (tests/common/servers.rs) and an HTTP receiver:
//!
//! - three mutations over two PostgreSQL tables and Redis, all applied: `completed`, rows and
//!   keys present;
//! - the third fails for good: the first two compensated in reverse order (the inserted row
//!   deleted, the previous Redis value restored — checked in the servers), `compensated`,
//!   each mutation's history visible;
//! - malformed transactions refused with 400 naming the field; an unknown id is 404.

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "common/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use common::{config, tempdir, Server};
use serde_json::{json, Value};

/// The namespace's targets: PostgreSQL (`orders-db`, `stock-db`) and Redis (`cache`).
fn namespace(pg: u16, redis: u16, hook: &str) -> Value {
    let db = |id: &str, table: &str| {
        json!({ "type": "database", "identifier": id, "config": {
            "type": "postgresql", "host": "127.0.0.1", "port": pg, "database": "postgres", "table": table } })
    };
    json!({ "name": "shop",
        "retryPolicy": {"maxAttempts": 2, "backoffStrategy": "constant", "initialDelayMs": 100, "jitterMs": 0},
        "targetConfigs": [
            db("orders-db", "orders"), db("stock-db", "stock"),
            { "type": "cache", "identifier": "cache", "config": {
                "type": "redis", "host": "127.0.0.1", "port": redis, "database": 3 } },
            { "type": "webhook", "identifier": "billing", "config": { "url": hook } }
        ] })
}

fn wait_txn(s: &Server, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.req(
            "GET",
            &format!("/api/v1/wal/transaction/{id}/status"),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json();
        if t["status"] == status {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status}: {t:#}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn write_txn(s: &Server, mutations: &Value) -> String {
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({ "namespace": "shop", "payload": { "transactions": mutations } }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    assert_eq!(body["durable"], "true");
    assert!(body["messageId"].as_str().unwrap().starts_with("wal_"));
    body["transactionId"].as_str().unwrap().to_owned()
}

#[test]
fn transactions_apply_everywhere_or_are_compensated_in_reverse_order() {
    let redis = servers::RedisServer::start();
    let pg = servers::PgServer::start();
    let rx = receiver::Receiver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pgc = rt.block_on(servers::pg_client(pg.port));
    rt.block_on(pgc.batch_execute(
        "CREATE TABLE orders (id integer PRIMARY KEY, item text NOT NULL, qty integer);
         CREATE TABLE stock (item text PRIMARY KEY, qty integer NOT NULL, note text);
         INSERT INTO stock VALUES ('apple', 10, 'initial');",
    ))
    .unwrap();
    let mut rc = rt.block_on(servers::redis_conn(redis.port, 3));
    let get = |rc: &mut redis::aio::MultiplexedConnection, k: &str| -> Option<String> {
        rt.block_on(redis::cmd("GET").arg(k).query_async(rc))
            .unwrap()
    };
    rt.block_on(
        redis::cmd("SET")
            .arg("price:apple")
            .arg("1.00")
            .query_async::<()>(&mut rc),
    )
    .unwrap();

    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(namespace(pg.port, redis.port, &rx.url("perm")));

    // 1. All three succeed, each in its own partition (run in parallel).
    let ok = write_txn(
        &s,
        &json!([
            {"partition": "orders", "operation": "INSERT", "target": "orders-db",
             "data": {"id": 1, "item": "apple", "qty": 3}},
            {"partition": "stock", "operation": "UPDATE", "target": "stock-db",
             "data": {"item": "apple", "qty": 7}, "conditions": {"key": "item"}},
            {"partition": "cache", "operation": "SET", "target": "cache",
             "data": {"key": "order:1", "value": {"item": "apple", "qty": 3}}}
        ]),
    );
    let t = wait_txn(&s, &ok, "completed");
    assert_eq!(t["totalMutations"], 3);
    assert_eq!(t["completedMutations"], 3);
    assert_eq!(t["failedMutations"], 0);
    for m in t["mutations"].as_array().unwrap() {
        assert_eq!(m["status"], "completed", "{m:#}");
        assert_eq!(m["attemptCount"], 1, "{m:#}");
        assert_eq!(m["attempts"].as_array().unwrap().len(), 1);
    }
    assert_eq!(t["mutations"][1]["compensation"]["source"], "derived");
    assert_eq!(
        t["mutations"][1]["compensation"]["data"],
        json!({"item": "apple", "qty": 10, "note": "initial"}),
        "the row before the UPDATE was captured"
    );
    assert!(
        t["startedAt"].is_string() && t["completedAt"].is_string() && t["timeoutAt"].is_string()
    );
    let row = rt
        .block_on(pgc.query_one("SELECT item, qty FROM orders WHERE id = 1", &[]))
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("apple".into(), 3)
    );
    let qty: i32 = rt
        .block_on(pgc.query_one("SELECT qty FROM stock WHERE item = 'apple'", &[]))
        .unwrap()
        .get(0);
    assert_eq!(qty, 7);
    let cached: Value = serde_json::from_str(&get(&mut rc, "order:1").unwrap()).unwrap();
    assert_eq!(cached, json!({"item": "apple", "qty": 3}));

    // 2. The third fails for good (the webhook answers 400): the first two are undone in
    //    reverse order. One partition, so the order of execution is the order given.
    let bad = write_txn(
        &s,
        &json!([
            {"partition": "p", "operation": "INSERT", "target": "orders-db",
             "data": {"id": 2, "item": "pear", "qty": 1}},
            {"partition": "p", "operation": "SET", "target": "cache",
             "data": {"key": "price:apple", "value": "2.00"}},
            {"partition": "p", "operation": "HTTP", "target": "billing", "data": {"charge": 5},
             "compensation": {"operation": "HTTP", "data": {"refund": 5}}}
        ]),
    );
    let t = wait_txn(&s, &bad, "compensated");
    let m = t["mutations"].as_array().unwrap();
    assert_eq!(m[0]["status"], "compensated", "{t:#}");
    assert_eq!(m[1]["status"], "compensated", "{t:#}");
    assert_eq!(m[2]["status"], "failed", "{t:#}");
    assert_eq!(t["compensatedMutations"], 2);
    assert_eq!(t["failedMutations"], 1);
    assert!(
        m[2]["lastError"].as_str().unwrap().contains("400"),
        "{:#}",
        m[2]
    );
    assert_eq!(m[2]["attemptCount"], 1, "a 400 is not retried");
    assert!(
        t["reason"].as_str().unwrap().contains("mutation 3"),
        "{t:#}"
    );
    assert_eq!(
        m[2]["compensation"]["attempts"].as_array().unwrap().len(),
        0,
        "a mutation that never applied is not compensated"
    );
    let at = |i: usize| {
        m[i]["compensation"]["attempts"][0]["at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(at(1) <= at(0), "reverse order: {} then {}", at(1), at(0));
    assert_eq!(m[1]["compensation"]["source"], "derived");
    assert_eq!(m[1]["compensation"]["data"]["value"], "1.00");
    assert_eq!(m[0]["compensation"]["operation"], "DELETE");
    // In the real servers: the row is gone, the previous value is back.
    let n: i64 = rt
        .block_on(pgc.query_one("SELECT count(*) FROM orders WHERE id = 2", &[]))
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the inserted row was deleted");
    assert_eq!(get(&mut rc, "price:apple").as_deref(), Some("1.00"));
    // The webhook saw the mutation once, by its id (the idempotency key).
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].message_id, format!("{bad}_m3"));

    // Metrics per state.
    let metrics = s.admin("GET", "/metrics", None).text();
    assert!(
        metrics.contains("wald_transactions_total{namespace=\"shop\",state=\"compensated\"} 1"),
        "{metrics}"
    );
    s.stop();
}

#[test]
fn malformed_transactions_are_refused_naming_the_field() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let hook = "http://127.0.0.1:9/x";
    s.create_namespace(
        json!({ "name": "shop", "adHocTargets": true, "targetConfigs": [
        { "type": "webhook", "identifier": "billing", "config": { "url": hook } },
        { "type": "cache", "identifier": "mem", "config": { "type": "in_memory" } } ] }),
    );
    let refused = |payload: Value, extra: Value| -> Vec<String> {
        let mut body = json!({ "namespace": "shop", "payload": payload });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = s.post_json("/api/v1/wal/write", &[], &body);
        let err = r.assert_error(400, "VALIDATION_ERROR");
        err["error"]["details"]["fields"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|d| d["field"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let m =
        |t: Value| json!({"partition": "a", "operation": "HTTP", "target": t, "data": {"x": 1}});
    assert_eq!(
        refused(json!({"transactions": [m(json!("billing"))]}), json!({})),
        ["payload.transactions"],
        "one mutation"
    );
    assert_eq!(
        refused(
            json!({"transactions": [m(json!("billing")), m(json!("nope"))]}),
            json!({})
        ),
        ["payload.transactions[1].target"]
    );
    assert_eq!(
        refused(
            json!({"transactions": [
                {"partition": "a", "operation": "SET", "target": "mem"},
                m(json!("billing"))]}),
            json!({})
        ),
        ["payload.transactions[0].data"]
    );
    assert_eq!(
        refused(
            json!({"transactions": [m(json!("billing")), m(json!({"type": "webhook", "identifier": "x",
                    "config": {"url": "ftp://nope"}}))]}),
            json!({})
        ),
        ["payload.transactions[1].target.config.url"]
    );
    assert_eq!(
        refused(
            json!({"transactions": [m(json!("billing")), m(json!("billing"))]}),
            json!({"lifecycle": {"delay": 5}})
        ),
        ["lifecycle.delay"]
    );
    let r = s.req(
        "GET",
        "/api/v1/wal/transaction/txn_1_nope/status",
        &[],
        None,
    );
    r.assert_error(404, "TRANSACTION_NOT_FOUND");
    // A well-formed one is accepted and answered with its transaction id.
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({ "namespace": "shop", "payload": {"transactions": [
            {"partition": "a", "operation": "SET", "target": "mem", "data": {"key": "k", "value": 1}},
            {"partition": "b", "operation": "DEL", "target": "mem", "data": {"key": "j"}}]} }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["transactionId"].as_str().unwrap().to_owned();
    wait_txn(&s, &id, "completed");
    // Deleted with its namespace.
    assert_eq!(
        s.admin("DELETE", "/api/v1/namespaces/shop", None).status,
        204
    );
    let r = s.req(
        "GET",
        &format!("/api/v1/wal/transaction/{id}/status"),
        &[],
        None,
    );
    r.assert_error(404, "TRANSACTION_NOT_FOUND");
    s.stop();
}

#[test]
fn a_transaction_past_its_timeout_is_compensated() {
    let rx = receiver::Receiver::start();
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "shop", "adHocTargets": true,
        "retryPolicy": {"maxAttempts": 10, "backoffStrategy": "constant", "initialDelayMs": 300, "jitterMs": 0},
        "transactionConfig": {"timeoutSeconds": 600},
        "targetConfigs": [
            { "type": "webhook", "identifier": "flaky", "config": { "url": rx.url("fail-first/100") } },
            { "type": "cache", "identifier": "mem", "config": { "type": "in_memory" } } ] }));
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({ "namespace": "shop", "lifecycle": {"transactionTimeout": 1},
            "payload": {"transactions": [
                {"partition": "a", "operation": "SET", "target": "mem", "data": {"key": "k", "value": 1}},
                {"partition": "b", "operation": "HTTP", "target": "flaky", "data": {"n": 1}}]} }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["transactionId"].as_str().unwrap().to_owned();
    let t = wait_txn(&s, &id, "compensated");
    assert!(t["reason"].as_str().unwrap().contains("timed out"), "{t:#}");
    let m = t["mutations"].as_array().unwrap();
    assert_eq!(m[0]["status"], "compensated", "{t:#}");
    assert_eq!(
        m[0]["compensation"]["operation"], "DEL",
        "no value before the SET"
    );
    assert_eq!(m[1]["status"], "failed", "{t:#}");
    let tries = m[1]["attemptCount"].as_u64().unwrap();
    assert!(
        (2..=6).contains(&tries),
        "retried until the 1 s timeout: {tries}"
    );

    // An applied mutation that has no inverse and no explicit compensation: the transaction
    // ends `failed`, saying so.
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({ "namespace": "shop", "payload": {"transactions": [
            {"partition": "a", "operation": "HTTP", "target": {"type": "webhook", "identifier": "ok",
              "config": {"url": rx.url("ok")}}, "data": {"n": 1}},
            {"partition": "a", "operation": "HTTP", "target": {"type": "webhook", "identifier": "bad",
              "config": {"url": rx.url("perm")}}, "data": {"n": 2}}]} }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["transactionId"].as_str().unwrap().to_owned();
    let t = wait_txn(&s, &id, "failed");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("mutation 2") && reason.contains("no derived inverse"),
        "{t:#}"
    );
    assert_eq!(
        t["mutations"][0]["status"], "completed",
        "applied, not undone"
    );
    assert_eq!(t["mutations"][0]["compensation"]["source"], "unavailable");
    s.stop();
}

//! Transactions across SIGKILL of the real server process (`wald serve`), with a real
//! PostgreSQL, a real Redis and an HTTP receiver started by the test:
//!
//! - killed in the middle of execution (a mutation waiting for its retry): after the restart
//!   the transaction completes, attempts keep counting, the applied mutations are not applied
//!   again (the row exists once, the value is the mutation's);
//! - killed in the middle of compensation (a compensation waiting for its retry): after the
//!   restart compensation finishes in reverse order, the row is deleted, the previous Redis
//!   value is back, and the receiver saw each request under its mutation id.

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "common/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use common::request;
use receiver::Receiver;
use serde_json::{json, Value};

const ADMIN: &str = "txn-crash-admin-0123456789abcdef01234";

struct Proc {
    child: Child,
    addr: SocketAddr,
}

fn spawn(dir: &std::path::Path) -> Proc {
    let (child, addr) = common::spawn_serve(dir, ADMIN, None);
    Proc { child, addr }
}

impl Proc {
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn post(&self, path: &str, body: &Value) -> common::Resp {
        let text = body.to_string();
        request(
            self.addr,
            "POST",
            path,
            &[("x-api-key", ADMIN), ("content-type", "application/json")],
            Some(text.as_bytes()),
        )
    }

    fn status(&self, id: &str) -> Value {
        let r = request(
            self.addr,
            "GET",
            &format!("/api/v1/wal/transaction/{id}/status"),
            &[("x-api-key", ADMIN)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn wait(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let t = self.status(id);
            if f(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {t:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn write_txn(&self, mutations: &Value) -> String {
        let r = self.post(
            "/api/v1/wal/write",
            &json!({"namespace": "shop", "payload": {"transactions": mutations}}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["durable"], "true");
        r.json()["transactionId"].as_str().unwrap().to_owned()
    }
}

struct Env {
    redis: servers::RedisServer,
    pg: servers::PgServer,
    rx: Receiver,
    rt: tokio::runtime::Runtime,
    pgc: tokio_postgres::Client,
}

fn env() -> Env {
    let redis = servers::RedisServer::start();
    let pg = servers::PgServer::start();
    let rx = Receiver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pgc = rt.block_on(servers::pg_client(pg.port));
    rt.block_on(
        pgc.batch_execute("CREATE TABLE orders (id integer PRIMARY KEY, item text NOT NULL)"),
    )
    .unwrap();
    Env {
        redis,
        pg,
        rx,
        rt,
        pgc,
    }
}

impl Env {
    fn namespace(&self, p: &Proc) {
        let r = p.post("/api/v1/namespaces", &json!({ "name": "shop", "adHocTargets": true,
            "retryPolicy": {"maxAttempts": 10, "backoffStrategy": "constant", "initialDelayMs": 1000,
                            "maxDelayMs": 1000, "jitterMs": 0},
            "targetConfigs": [
                { "type": "database", "identifier": "orders-db", "config": { "type": "postgresql",
                  "host": "127.0.0.1", "port": self.pg.port, "database": "postgres", "table": "orders" } },
                { "type": "cache", "identifier": "cache", "config": {
                  "type": "redis", "host": "127.0.0.1", "port": self.redis.port } },
                { "type": "webhook", "identifier": "slow-hook", "config": { "url": self.rx.url("fail-first/3") } },
                { "type": "webhook", "identifier": "ok-hook", "config": { "url": self.rx.url("ok") } },
                { "type": "webhook", "identifier": "bad-hook", "config": { "url": self.rx.url("perm") } }
            ] }));
        assert_eq!(r.status, 201, "{}", r.text());
    }

    fn redis_get(&self, key: &str) -> Option<String> {
        self.rt.block_on(async {
            let mut c = servers::redis_conn(self.redis.port, 0).await;
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap()
        })
    }

    fn redis_set(&self, key: &str, value: &str) {
        self.rt.block_on(async {
            let mut c = servers::redis_conn(self.redis.port, 0).await;
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        });
    }

    fn rows(&self, id: i32) -> i64 {
        self.rt
            .block_on(
                self.pgc
                    .query_one("SELECT count(*) FROM orders WHERE id = $1", &[&id]),
            )
            .unwrap()
            .get(0)
    }
}

#[test]
fn sigkill_during_execution_resumes_without_reapplying() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    e.namespace(&p);
    let id = p.write_txn(&json!([
        {"partition": "p", "operation": "INSERT", "target": "orders-db", "data": {"id": 1, "item": "apple"}},
        {"partition": "p", "operation": "SET", "target": "cache", "data": {"key": "order:1", "value": "placed"}},
        {"partition": "p", "operation": "HTTP", "target": "slow-hook", "data": {"notify": 1}}
    ]));
    // The third mutation fails its first attempts (503) and waits 1 s between them.
    p.wait(&id, "the third mutation retrying", |t| {
        t["mutations"][2]["status"] == "retrying" && t["mutations"][2]["attemptCount"] == 1
    });
    p.kill();
    std::thread::sleep(Duration::from_millis(300));
    let p = spawn(dir.path());
    let t = p.wait(&id, "completed", |t| t["status"] == "completed");
    let m = t["mutations"].as_array().unwrap();
    assert!(m.iter().all(|x| x["status"] == "completed"), "{t:#}");
    assert_eq!(
        m[0]["attemptCount"], 1,
        "the INSERT was not applied again: {t:#}"
    );
    assert_eq!(
        m[1]["attemptCount"], 1,
        "the SET was not applied again: {t:#}"
    );
    assert_eq!(
        m[2]["attemptCount"], 4,
        "attempts kept counting across the restart: {t:#}"
    );
    assert_eq!(e.rows(1), 1);
    assert_eq!(e.redis_get("order:1").as_deref(), Some("placed"));
    let hits = e.rx.hits();
    assert!(
        hits.iter().all(|h| h.message_id == format!("{id}_m3")),
        "{hits:#?}"
    );
    let attempts: Vec<u32> = hits.iter().map(|h| h.attempt).collect();
    assert_eq!(
        attempts,
        [1, 2, 3, 4],
        "each attempt once, numbered on: {hits:#?}"
    );
    p.kill();
}

#[test]
fn sigkill_during_compensation_finishes_it_in_reverse_order() {
    let e = env();
    e.redis_set("price", "old");
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    e.namespace(&p);
    let refund = json!({"type": "webhook", "identifier": "refund", "config": {"url": e.rx.url("fail-first/2")}});
    let id = p.write_txn(&json!([
        {"partition": "p", "operation": "INSERT", "target": "orders-db", "data": {"id": 2, "item": "pear"}},
        {"partition": "p", "operation": "SET", "target": "cache", "data": {"key": "price", "value": "new"}},
        {"partition": "p", "operation": "HTTP", "target": "ok-hook", "data": {"charge": 5},
         "compensation": {"operation": "HTTP", "target": refund, "data": {"refund": 5}}},
        {"partition": "p", "operation": "HTTP", "target": "bad-hook", "data": {"ship": 1}}
    ]));
    // The fourth fails for good; the third's compensation fails twice (1 s apart).
    p.wait(&id, "the third mutation's compensation retrying", |t| {
        t["status"] == "compensating"
            && t["mutations"][2]["compensation"]["attempts"]
                .as_array()
                .map_or(0, Vec::len)
                == 1
    });
    assert_eq!(
        e.redis_get("price").as_deref(),
        Some("new"),
        "not yet compensated"
    );
    p.kill();
    std::thread::sleep(Duration::from_millis(300));
    let p = spawn(dir.path());
    let t = p.wait(&id, "compensated", |t| t["status"] == "compensated");
    let m = t["mutations"].as_array().unwrap();
    for x in &m[..3] {
        assert_eq!(x["status"], "compensated", "{t:#}");
    }
    assert_eq!(m[3]["status"], "failed");
    assert_eq!(
        m[2]["compensation"]["attempts"].as_array().unwrap().len(),
        3,
        "{t:#}"
    );
    let at = |i: usize| {
        m[i]["compensation"]["attempts"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(at(2) <= at(1) && at(1) <= at(0), "reverse order: {t:#}");
    assert_eq!(e.rows(2), 0, "the inserted row was deleted");
    assert_eq!(
        e.redis_get("price").as_deref(),
        Some("old"),
        "the previous value is back"
    );
    let refunds: Vec<u32> =
        e.rx.hits_of(&format!("{id}_m3_compensation"))
            .iter()
            .map(|h| h.attempt)
            .collect();
    assert_eq!(
        refunds,
        [1, 2, 3],
        "each compensation attempt once, numbered on"
    );
    assert_eq!(e.rx.hits_of(&format!("{id}_m3")).len(), 1);
    assert_eq!(e.rx.hits_of(&format!("{id}_m4")).len(), 1);
    p.kill();
}

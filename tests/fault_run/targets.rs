//! The real targets of the process run: a Redis (AOF, `appendfsync always`) and a PostgreSQL,
//! started here, taken away in the middle of some cycles (Redis SIGKILLed, PostgreSQL shut
//! down) and brought back; the namespaces that deliver to them (`cache`, `db`) and run
//! transactions over both (`shop`); and the end's check, in the servers themselves, that
//! every acknowledged message took effect there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::book::{Ack, Rng};
use crate::common;
use crate::end::spec;
use crate::servers::{pg_client, redis_conn, PgServer, RedisServer};

pub struct Targets {
    redis: RedisServer,
    pg: PgServer,
    rt: tokio::runtime::Runtime,
    /// Redis kills and PostgreSQL shutdowns so far.
    pub redis_kills: u64,
    pub pg_stops: u64,
}

/// The Redis database of the `cache` namespace, and of `shop`'s cache target.
const CACHE_DB: u8 = 1;
const SHOP_DB: u8 = 2;

impl Targets {
    pub fn start() -> Self {
        let redis = RedisServer::start_persistent();
        let pg = PgServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            pg_client(pg.port)
                .await
                .batch_execute(
                    "CREATE TABLE rows_db (k text PRIMARY KEY, pad text NOT NULL, n bigint NOT NULL);
                     CREATE TABLE txrows (k text PRIMARY KEY, pad text NOT NULL, n bigint NOT NULL);",
                )
                .await
                .expect("create tables");
        });
        Self {
            redis,
            pg,
            rt,
            redis_kills: 0,
            pg_stops: 0,
        }
    }

    /// The documents of the targets' namespaces. Retries cover a server that is away for
    /// seconds: 10 attempts, 0.2 to 2 s apart (12 s).
    pub fn namespaces(&self) -> Vec<Value> {
        let redis = |id: &str, db: u8| {
            json!({"type": "cache", "identifier": id, "config": {"type": "redis",
                "host": "127.0.0.1", "port": self.redis.port, "database": db, "timeoutMs": 1000}})
        };
        let pg = |id: &str, table: &str| {
            json!({"type": "database", "identifier": id, "config": {"type": "postgresql",
                "host": "127.0.0.1", "port": self.pg.port, "database": "postgres",
                "table": table, "keyColumns": ["k"], "timeoutMs": 2000}})
        };
        let retry = json!({"maxAttempts": 10, "backoffStrategy": "exponential",
            "initialDelayMs": 200, "maxDelayMs": 2000, "jitterMs": 0});
        vec![
            spec(
                "cache",
                json!([redis("cache", CACHE_DB)]),
                retry.clone(),
                2,
                "sync",
            ),
            spec("db", json!([pg("db", "rows_db")]), retry.clone(), 2, "sync"),
            spec(
                "shop",
                json!([pg("rows", "txrows"), redis("cache", SHOP_DB)]),
                retry,
                2,
                "sync",
            ),
        ]
    }

    /// In the middle of a cycle's load, now and then: Redis killed (SIGKILL) or PostgreSQL
    /// shut down, and brought back 0.2–1 s later. Returns what was done.
    pub fn disrupt(&mut self, rng: &mut Rng) -> Option<&'static str> {
        let away = Duration::from_millis(200 + rng.below(800));
        match rng.below(4) {
            0 => {
                self.redis.stop();
                self.redis_kills += 1;
                std::thread::sleep(away);
                self.redis.restart();
                Some("redis-killed")
            }
            1 => {
                self.pg.stop();
                self.pg_stops += 1;
                std::thread::sleep(away);
                self.pg.restart();
                Some("postgres-down")
            }
            _ => None,
        }
    }

    /// Every acknowledged message of the targets' namespaces took effect in its server:
    /// `cache` keys hold their payloads, `db` rows their values, and every `shop` transaction
    /// `completed` with both its row and its key in place. Waits up to 300 s (retries after
    /// the last disruption). Returns how many were checked.
    pub fn check(&self, addr: SocketAddr, acks: &[Ack]) -> usize {
        let of = |ns: &str| -> Vec<&Ack> { acks.iter().filter(|a| a.msg.ns == ns).collect() };
        let (cache, db, shop) = (of("cache"), of("db"), of("shop"));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let missing = self.missing(addr, &cache, &db, &shop);
            if missing.is_empty() {
                return cache.len() + db.len() + shop.len();
            }
            assert!(
                Instant::now() < deadline,
                "{} acknowledged messages never took effect in their servers, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            std::thread::sleep(Duration::from_millis(1000));
        }
    }

    fn missing(&self, addr: SocketAddr, cache: &[&Ack], db: &[&Ack], shop: &[&Ack]) -> Vec<String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut r1 = redis_conn(self.redis.port, CACHE_DB).await;
            let mut r2 = redis_conn(self.redis.port, SHOP_DB).await;
            let pgc = pg_client(self.pg.port).await;
            let rows = |table: &'static str| {
                let pgc = &pgc;
                async move {
                    pgc.query(&format!("SELECT k, n FROM {table}"), &[])
                        .await
                        .expect("select")
                        .into_iter()
                        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                        .collect::<std::collections::HashMap<String, i64>>()
                }
            };
            let (db_rows, tx_rows) = (rows("rows_db").await, rows("txrows").await);
            let n_of = |a: &Ack| a.msg.payload["n"].as_i64().unwrap_or(-1);
            for a in cache {
                let v: Option<String> = redis::cmd("GET")
                    .arg(format!("fr:{}", a.msg.key))
                    .query_async(&mut r1)
                    .await
                    .expect("GET");
                let same = v
                    .and_then(|v| serde_json::from_str::<Value>(&v).ok())
                    .is_some_and(|v| v == a.msg.payload);
                if !same {
                    out.push(format!("cache {} ({})", a.id, a.msg.key));
                }
            }
            for a in db {
                if db_rows.get(&a.msg.key) != Some(&n_of(a)) {
                    out.push(format!("db {} ({})", a.id, a.msg.key));
                }
            }
            for a in shop {
                let n = a.msg.payload["transactions"][0]["data"]["n"].as_i64();
                let v: Option<String> = redis::cmd("GET")
                    .arg(format!("tx:{}", a.msg.key))
                    .query_async(&mut r2)
                    .await
                    .expect("GET");
                let key_ok = v
                    .and_then(|v| serde_json::from_str::<Value>(&v).ok())
                    .is_some_and(|v| v["n"].as_i64() == n);
                let txn = a.txn.as_deref().unwrap_or("(not answered)");
                let status = common::request(
                    addr,
                    "GET",
                    &format!("/api/v1/wal/transaction/{txn}/status"),
                    &[],
                    None,
                );
                let completed = status.status == 200 && status.json()["status"] == "completed";
                if !(key_ok && tx_rows.get(&a.msg.key).copied() == n && completed) {
                    out.push(format!(
                        "shop {} ({}): key {key_ok}, row {:?}, status {} {}",
                        a.id,
                        a.msg.key,
                        tx_rows.get(&a.msg.key),
                        status.status,
                        status.json()["status"]
                    ));
                }
            }
            out
        })
    }
}

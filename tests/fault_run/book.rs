//! The writers' side of a fault run: messages, what was acknowledged, the load, and the
//! per-cycle read-back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, try_request};

/// The namespace whose durability is `batch`: its writes are answered `durable: "false"`, and
/// a power loss may take the last of them back.
pub const LOSSY: &str = "quick";

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One logical message: sent until acknowledged, always with the same key and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub key: String,
    pub ns: &'static str,
    pub payload: Value,
    pub delay_s: u64,
    /// When it was first sent (a retry of a write whose answer was lost may find it accepted
    /// back then): no delivery attempt before this plus the delay.
    pub born_ms: u64,
}

/// An acknowledgement: `durable: "true"`, or `"false"` in the lossy namespace.
#[derive(Debug, Clone)]
pub struct Ack {
    pub msg: Msg,
    pub id: String,
    pub partition: u64,
    pub offset: u64,
    /// The `transactionId` a transaction was answered with.
    pub txn: Option<String>,
}

#[derive(Default)]
pub struct Book {
    pub acks: HashMap<String, Ack>,
    /// Keys acknowledged in the current cycle (checked in full after it).
    pub fresh: Vec<String>,
    /// Messages whose write failed or whose fate is unknown: sent again.
    pub pending: Vec<Msg>,
    /// Ids of lossy acknowledgements a power loss took back: their keys must never be
    /// answered with them again.
    pub lost_ids: HashSet<String>,
    pub duplicates_checked: u64,
    pub refused_disk_full: u64,
    pub refused_other: u64,
}

/// What the writers send: the share of each namespace.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Also write to the lossy (`batch`) namespace: a fifth of the messages not for `dead`.
    pub lossy: bool,
    /// Also write to the namespaces of the real targets: `cache` (Redis), `db` (PostgreSQL)
    /// and `shop` (transactions over both), a tenth each of the messages not for `dead`.
    pub targets: bool,
    /// Also write to `stream` (mirrored to Kafka): a tenth of the messages not for `dead`.
    pub kafka: bool,
}

impl Mix {
    /// The namespace of the next message.
    fn pick(self, rng: &mut Rng) -> &'static str {
        if rng.below(10) == 0 {
            return "dead";
        }
        if self.lossy && rng.below(5) == 0 {
            return LOSSY;
        }
        match rng.below(10) {
            0 if self.targets => return "cache",
            1 if self.targets => return "db",
            2 if self.targets => return "shop",
            3 if self.kafka => return "stream",
            _ => {}
        }
        "main"
    }
}

/// The payload of message `n` with `key` for namespace `ns`; `k` is the key in every one
/// (for a transaction, in its mutations' data).
fn payload_for(ns: &str, key: &str, pad: &str, n: u64) -> Value {
    match ns {
        // A SET of the whole payload under `key`.
        "cache" => json!({"key": format!("fr:{key}"), "k": key, "pad": pad, "n": n}),
        // A row of `rows_db` (k, pad, n).
        "db" => json!({"operation": "UPSERT", "key": ["k"], "k": key, "pad": pad, "n": n}),
        // A row of `txrows` and a Redis key, all or compensated.
        "shop" => json!({"transactions": [
            {"partition": "rows", "operation": "UPSERT", "target": "rows",
             "data": {"k": key, "pad": pad, "n": n}, "conditions": {"key": "k"}},
            {"partition": "cache", "operation": "SET", "target": "cache",
             "data": {"key": format!("tx:{key}"), "value": {"k": key, "n": n}}}
        ]}),
        _ => json!({"k": key, "pad": pad, "n": n}),
    }
}

/// The key a stored payload carries (see [`payload_for`]).
pub fn key_of(payload: &Value) -> &str {
    payload["k"]
        .as_str()
        .or_else(|| payload["transactions"][0]["data"]["k"].as_str())
        .unwrap_or_default()
}

fn body_of(m: &Msg) -> Value {
    let mut b = json!({"namespace": m.ns, "payload": m.payload, "idempotencyKey": m.key});
    if m.delay_s > 0 {
        b["lifecycle"] = json!({"delay": m.delay_s});
    }
    b
}

/// Records one result; returns false when the message must be sent again.
fn record(book: &Mutex<Book>, m: &Msg, r: &Value) -> bool {
    let accepted = r["durable"] == "true" || (m.ns == LOSSY && r["durable"] == "false");
    if !accepted {
        return false;
    }
    let id = r["messageId"].as_str().expect("messageId").to_owned();
    let mut b = book.lock().unwrap();
    assert!(
        !b.lost_ids.contains(&id),
        "key {} answered with {id}, a message a power loss took back",
        m.key
    );
    if let Some(first) = b.acks.get(&m.key) {
        assert_eq!(first.id, id, "key {} answered with two message ids", m.key);
        b.duplicates_checked += 1;
        return true;
    }
    let ack = Ack {
        msg: m.clone(),
        id,
        partition: r["partition"].as_u64().expect("partition"),
        offset: r["offset"].as_u64().expect("offset"),
        txn: r["transactionId"].as_str().map(str::to_owned),
    };
    b.fresh.push(m.key.clone());
    b.acks.insert(m.key.clone(), ack);
    true
}

/// Sends `msgs` (one write, or a batch); every message not acknowledged goes back to pending.
pub fn send(addr: SocketAddr, book: &Mutex<Book>, msgs: Vec<Msg>) {
    let (path, body) = if msgs.len() == 1 {
        ("/api/v1/wal/write", body_of(&msgs[0]))
    } else {
        let list: Vec<Value> = msgs.iter().map(body_of).collect();
        ("/api/v1/wal/write/batch", json!({ "messages": list }))
    };
    let text = body.to_string();
    let answer = try_request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        Some(text.as_bytes()),
    );
    let mut failed: Vec<Msg> = Vec::new();
    match answer {
        Ok(r) if r.status == 202 => {
            let j = r.json();
            let results: Vec<Value> = if msgs.len() == 1 {
                vec![j]
            } else {
                j["results"].as_array().cloned().unwrap_or_default()
            };
            assert_eq!(results.len(), msgs.len(), "{}", r.text());
            for (m, res) in msgs.iter().zip(&results) {
                if !record(book, m, res) {
                    failed.push(m.clone());
                }
            }
        }
        Ok(r) => {
            let mut b = book.lock().unwrap();
            if r.text().contains("DISK_FULL") {
                b.refused_disk_full += 1;
            } else {
                b.refused_other += 1;
            }
            assert!(
                r.status == 503 || r.status == 500,
                "a fault answers 503 (or 500 when the state store failed), not {}: {}",
                r.status,
                r.text()
            );
            failed = msgs;
        }
        Err(_) => failed = msgs,
    }
    if !failed.is_empty() {
        book.lock().unwrap().pending.extend(failed);
        // A refused or lost write is retried, as a client would: after a short pause.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three writers until `stop`: pending messages first, then new ones.
pub fn load(
    addr: SocketAddr,
    book: &Arc<Mutex<Book>>,
    cycle: u64,
    seed: u64,
    mix: Mix,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..3u64)
        .map(|w| {
            let (book, stop) = (Arc::clone(book), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (cycle << 8) ^ (w + 1).wrapping_mul(0x9E37_79B9));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let retry: Vec<Msg> = {
                        let mut b = book.lock().unwrap();
                        let n = b.pending.len().min(5);
                        b.pending.drain(..n).collect()
                    };
                    if !retry.is_empty() {
                        send(addr, &book, retry);
                        continue;
                    }
                    // Now and then an acknowledged key again: answered with its first id.
                    if rng.below(20) == 0 {
                        let again = {
                            let b = book.lock().unwrap();
                            let k = usize::try_from(rng.below(b.acks.len() as u64)).unwrap();
                            b.acks.values().nth(k).map(|a| a.msg.clone())
                        };
                        if let Some(m) = again {
                            send(addr, &book, vec![m]);
                            continue;
                        }
                    }
                    let n = if rng.below(10) < 3 {
                        2 + rng.below(4)
                    } else {
                        1
                    };
                    let msgs: Vec<Msg> = (0..n)
                        .map(|_| {
                            i += 1;
                            let ns = mix.pick(&mut rng);
                            let delay_s = if ns == "main" && rng.below(5) == 0 {
                                1 + rng.below(2)
                            } else {
                                0
                            };
                            let key = format!("c{cycle}-w{w}-{i}");
                            let pad = "x".repeat(usize::try_from(10 + rng.below(1500)).unwrap());
                            Msg {
                                payload: payload_for(ns, &key, &pad, i),
                                key,
                                ns,
                                delay_s,
                                born_ms: wald_storage::now_ms(),
                            }
                        })
                        .collect();
                    send(addr, &book, msgs);
                    // A steady, moderate load: the checks of a long run stay proportionate.
                    std::thread::sleep(Duration::from_millis(2 + rng.below(6)));
                }
            })
        })
        .collect()
}

/// Every acknowledgement of the last cycle, and `sample` older ones, read back by id.
///
/// A lossy acknowledgement of the last cycle that is gone (a power loss took it) is
/// forgotten and its message sent again — with its key, which must then not be answered with
/// the lost id. Every other acknowledgement must be there: payload identical, at its
/// partition and offset. Returns how many were read.
pub fn check_acks(addr: SocketAddr, book: &Mutex<Book>, rng: &mut Rng, sample: usize) -> usize {
    let (fresh, older): (Vec<Ack>, Vec<Ack>) = {
        let mut b = book.lock().unwrap();
        let keys: Vec<String> = b.fresh.drain(..).collect();
        let fresh: Vec<Ack> = keys.iter().filter_map(|k| b.acks.get(k).cloned()).collect();
        let fresh_keys: HashSet<&String> = keys.iter().collect();
        let all: Vec<&Ack> = b
            .acks
            .values()
            .filter(|a| !fresh_keys.contains(&a.msg.key))
            .collect();
        let older = (0..sample.min(all.len()))
            .map(|_| all[usize::try_from(rng.below(all.len() as u64)).unwrap()].clone())
            .collect();
        (fresh, older)
    };
    let n = fresh.len() + older.len();
    let mut lost: Vec<Ack> = Vec::new();
    for (a, is_fresh) in fresh
        .iter()
        .map(|a| (a, true))
        .chain(older.iter().map(|a| (a, false)))
    {
        let r = common::request(
            addr,
            "GET",
            &format!("/api/v1/wal/messages/{}", a.id),
            &[],
            None,
        );
        if r.status == 404 && is_fresh && a.msg.ns == LOSSY {
            // Taken back by the power cut only if the log's tail went with it: nothing may
            // be left at its offset (no write has run since the restart).
            let at = common::request(
                addr,
                "GET",
                &format!(
                    "/api/v1/wal/namespace/{LOSSY}/messages?partition={}&fromOffset={}&limit=1",
                    a.partition, a.offset
                ),
                &[],
                None,
            );
            let still_there = at.status == 200
                && at.json()["messages"].as_array().is_some_and(|m| {
                    m.first()
                        .is_some_and(|m| m["offset"].as_u64() == Some(a.offset))
                });
            assert!(
                !still_there,
                "{} ({}) is not found by id, yet its offset {}/{} holds a record: {}",
                a.id,
                a.msg.key,
                a.partition,
                a.offset,
                at.text()
            );
            lost.push(a.clone());
            continue;
        }
        if r.status != 200 {
            let at = common::request(
                addr,
                "GET",
                &format!(
                    "/api/v1/wal/namespace/{}/messages?partition={}&fromOffset={}&limit=1",
                    a.msg.ns, a.partition, a.offset
                ),
                &[],
                None,
            );
            eprintln!(
                "at {}/{}/{}: {}",
                a.msg.ns,
                a.partition,
                a.offset,
                at.text().chars().take(600).collect::<String>()
            );
        }
        assert_eq!(
            r.status,
            200,
            "acknowledged {} ({} in {}, {}) lost: {}",
            a.id,
            a.msg.key,
            a.msg.ns,
            if is_fresh {
                "in the last cycle"
            } else {
                "before"
            },
            r.text()
        );
        let j = r.json();
        assert_eq!(j["payload"], a.msg.payload, "{} changed", a.id);
        assert_eq!(j["partition"].as_u64(), Some(a.partition), "{}: {j}", a.id);
        assert_eq!(j["offset"].as_u64(), Some(a.offset), "{}: {j}", a.id);
    }
    if !lost.is_empty() {
        let mut b = book.lock().unwrap();
        for a in lost {
            b.acks.remove(&a.msg.key);
            b.lost_ids.insert(a.id);
            b.pending.push(a.msg);
        }
    }
    n
}

//! The end of a fault run: on a clean server, everything still pending is sent until
//! acknowledged, then the whole history is checked against the logs, the DLQ and the
//! receiver.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::book::{check_acks, key_of, send, Ack, Book, Msg, Rng, LOSSY};
use crate::common::{self, ADMIN};
use crate::receiver::Receiver;

/// An admin request; a body only when given (a GET with a body the server does not read
/// can be answered with a reset that cuts a large answer short).
pub fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> common::Resp {
    let text = body.map(ToString::to_string);
    common::request(
        addr,
        method,
        path,
        &[("x-api-key", ADMIN), ("content-type", "application/json")],
        text.as_deref().map(str::as_bytes),
    )
}

/// A namespace's document.
pub fn spec(name: &str, targets: Value, retry: Value, partitions: u64, durability: &str) -> Value {
    json!({
        "name": name,
        "durability": durability,
        "shardConfig": {"partitionCount": partitions},
        "retryPolicy": retry,
        "targetConfigs": targets,
    })
}

/// The namespaces of a run: `main` (4 partitions, its webhook fails each message's first
/// attempt), `dead` (its webhook down: every message ends in the DLQ), when `lossy` `quick`
/// (durability `batch`, 2 partitions, a webhook that answers 200), and `more` (the real
/// servers' namespaces: crate::targets, crate::kafka).
pub fn create_namespaces(addr: SocketAddr, rx: &Receiver, lossy: bool, more: Vec<Value>) {
    let hook = |url: String| json!([{"type": "webhook", "identifier": "h", "config": {"url": url, "timeoutMs": 2000}}]);
    let retry = |attempts: u32| json!({"maxAttempts": attempts, "backoffStrategy": "constant", "initialDelayMs": 150, "maxDelayMs": 1000, "jitterMs": 0});
    let mut list = vec![
        spec("main", hook(rx.url("fail-first/1")), retry(6), 4, "sync"),
        spec("dead", hook(rx.url("down")), retry(2), 1, "sync"),
    ];
    if lossy {
        list.push(spec(LOSSY, hook(rx.url("ok")), retry(3), 2, "batch"));
    }
    list.extend(more);
    for doc in list {
        let r = admin(addr, "POST", "/api/v1/namespaces", Some(&doc));
        assert_eq!(r.status, 201, "{}: {}", doc["name"], r.text());
    }
}

/// The ids pending in the dead namespace's DLQ.
fn dlq_ids(addr: SocketAddr) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut from = String::new();
    loop {
        let r = admin(
            addr,
            "GET",
            &format!("/api/v1/namespaces/dead/dlq?limit=1000{from}"),
            None,
        );
        let j = r.json();
        for e in j["entries"].as_array().cloned().unwrap_or_default() {
            out.insert(e["messageId"].as_str().unwrap_or_default().to_owned());
        }
        match (j["nextFrom"].as_u64(), j["nextAfter"].as_str()) {
            (Some(next), Some(after)) => from = format!("&from={next}&after={after}"),
            _ => return out,
        }
    }
}

/// Every record of a namespace: (partition, offset) → key.
fn read_all(addr: SocketAddr, ns: &str, partitions: u64) -> HashMap<(u64, u64), String> {
    let mut out = HashMap::new();
    for p in 0..partitions {
        let mut from = 0u64;
        loop {
            let r = common::request(
                addr,
                "GET",
                &format!("/api/v1/wal/namespace/{ns}/messages?partition={p}&fromOffset={from}&limit=1000"),
                &[],
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            let msgs = j["messages"].as_array().cloned().unwrap_or_default();
            for m in &msgs {
                let key = key_of(&m["payload"]).to_owned();
                out.insert((p, m["offset"].as_u64().unwrap()), key);
            }
            let next = j["nextOffset"].as_u64().unwrap();
            if msgs.is_empty() || next == from {
                break;
            }
            from = next;
        }
    }
    out
}

/// The ids the receiver answered 200, read under its lock (a long run has millions of
/// hits: no copies).
fn ok_ids(rx: &Receiver) -> HashSet<String> {
    let h = rx.shared.hits.lock().unwrap();
    h.iter()
        .filter(|x| x.status == 200)
        .map(|x| x.message_id.clone())
        .collect()
}

/// What the service says of message `id` (for a failure's message).
fn state_of(addr: SocketAddr, id: &str) -> String {
    let r = common::request(
        addr,
        "GET",
        &format!("/api/v1/wal/messages/{id}"),
        &[],
        None,
    );
    let mut j = r.json();
    j["payload"] = Value::Null;
    format!("{id}: {} {j}", r.status)
}

/// Waits until every one of `ids` was delivered: up to 300 s, and a second more for every 200
/// (a long run's replay-all is paced by `replay_rate_per_sec`, 2,000 here).
fn wait_delivered(addr: SocketAddr, rx: &Receiver, ids: &HashSet<&str>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300 + ids.len() as u64 / 200);
    loop {
        let ok = ok_ids(rx);
        let missing: Vec<&str> = ids
            .iter()
            .filter(|id| !ok.contains(**id))
            .copied()
            .collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for id in missing.iter().take(10) {
                eprintln!("not delivered: {}", state_of(addr, id));
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} never delivered",
            missing.len(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the end found.
pub struct Summary {
    pub acks: usize,
    pub by_ns: HashMap<&'static str, usize>,
    pub checked: usize,
    pub hits: usize,
    pub delivered: usize,
    pub duplicates: usize,
}

/// The end of a run on the clean server at `addr`: pending writes sent until acknowledged
/// (and read back), then every promise over the whole history. `namespaces` are
/// (name, partitions).
pub fn finish(
    addr: SocketAddr,
    book: &Mutex<Book>,
    rx: &Receiver,
    rng: &mut Rng,
    namespaces: &[(&str, u64)],
) -> Summary {
    let mut checked = check_acks(addr, book, rng, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let next: Vec<Msg> = {
            let mut b = book.lock().unwrap();
            let n = b.pending.len().min(20);
            b.pending.drain(..n).collect()
        };
        if next.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pending writes never acknowledged"
        );
        send(addr, book, next);
    }
    checked += check_acks(addr, book, rng, 0);
    let acks: Vec<Ack> = book.lock().unwrap().acks.values().cloned().collect();

    // Offsets never reused, every key in the logs exactly once.
    let mut logs: HashMap<(&str, u64, u64), String> = HashMap::new();
    for &(ns, partitions) in namespaces {
        for ((p, o), k) in read_all(addr, ns, partitions) {
            logs.insert((ns, p, o), k);
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for k in logs.values() {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    for a in &acks {
        assert_eq!(
            logs.get(&(a.msg.ns, a.partition, a.offset))
                .map(String::as_str),
            Some(a.msg.key.as_str()),
            "{}/{}/{} holds another message than the one acknowledged there",
            a.msg.ns,
            a.partition,
            a.offset
        );
        assert_eq!(
            seen.get(a.msg.key.as_str()),
            Some(&1),
            "key {} appended more than once",
            a.msg.key
        );
    }
    assert_eq!(
        logs.len(),
        acks.len(),
        "records in the logs that no key accounts for"
    );

    // Delivery: every message at least once; the dead namespace's after a replay.
    rx.shared.down.store(false, Ordering::SeqCst);
    let ids_of = |pick: &dyn Fn(&str) -> bool| -> HashSet<&str> {
        acks.iter()
            .filter(|a| pick(a.msg.ns))
            .map(|a| a.id.as_str())
            .collect()
    };
    // (The real targets' namespaces are checked in their servers: crate::targets.)
    let live_ids = ids_of(&|ns| ns == "main" || ns == LOSSY);
    let dead_ids = ids_of(&|ns| ns == "dead");
    wait_delivered(addr, rx, &live_ids, "messages");
    // Everything the dead namespace had goes to the DLQ (its webhook was down); replay it all.
    let dlq_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = dlq_ids(addr);
        let n = listed.len();
        let ok = ok_ids(rx);
        let already = dead_ids.iter().filter(|id| ok.contains(**id)).count();
        if n + already >= dead_ids.len() {
            break;
        }
        if Instant::now() >= dlq_deadline {
            // Say where the missing ones are before failing: their delivery state by id.
            for id in dead_ids
                .iter()
                .filter(|id| !listed.contains(**id) && !ok.contains(**id))
                .take(10)
            {
                eprintln!("not in the DLQ: {}", state_of(addr, id));
            }
            panic!(
                "dead messages never reached the DLQ: {n} of {}",
                dead_ids.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = admin(
        addr,
        "POST",
        "/api/v1/namespaces/dead/dlq/replay",
        Some(&json!({"since": 0})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_delivered(addr, rx, &dead_ids, "dead messages after the replay");

    // No attempt before its delay.
    let by_id: HashMap<&str, &Ack> = acks.iter().map(|a| (a.id.as_str(), a)).collect();
    let hits = rx.shared.hits.lock().unwrap();
    let mut early = 0;
    for h in hits.iter() {
        if let Some(a) = by_id.get(h.message_id.as_str()) {
            if h.at_ms < a.msg.born_ms + a.msg.delay_s * 1000 {
                early += 1;
                eprintln!(
                    "{} attempted {} ms after its write, before its {} s delay",
                    a.id,
                    h.at_ms.saturating_sub(a.msg.born_ms),
                    a.msg.delay_s
                );
            }
        }
    }
    assert_eq!(early, 0, "deliveries before their delay");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in hits.iter().filter(|h| h.status == 200) {
        *counts.entry(h.message_id.as_str()).or_default() += 1;
    }
    let mut by_ns: HashMap<&'static str, usize> = HashMap::new();
    for a in &acks {
        *by_ns.entry(a.msg.ns).or_default() += 1;
    }
    Summary {
        acks: acks.len(),
        by_ns,
        checked,
        hits: hits.len(),
        delivered: counts.len(),
        duplicates: counts.values().map(|n| n - 1).sum(),
    }
}

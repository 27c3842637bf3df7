//! The long fault run: cycle after cycle of mixed load against the service, each cycle ended
//! or disturbed by a fault, and after each cycle the promises checked.
//!
//! Faults (chosen per cycle by a seeded generator):
//! - **SIGKILL** of a real `wald serve` process in the middle of the load;
//! - **a disk that fills up** (in process, `FaultFs::set_free_space`: writes that grow a file
//!   take space, what does not fit fails with ENOSPC after writing what fits) and frees again;
//! - **EIO on an fsync** (in process, `FaultFs`): the partition is poisoned, then the server
//!   is restarted.
//!
//! Load (three writers): single and batch writes, each message with its own idempotency key,
//! some delayed (1–2 s), some for a namespace whose webhook is down (retries, then the DLQ);
//! every write that failed is sent again, with the same key, until it is acknowledged; some
//! acknowledged keys are sent again on purpose. The webhook of the main namespace fails every
//! message's first attempt (a retry each).
//!
//! Checked after each cycle, on the restarted server: every message answered
//! `durable: "true"` in the cycle before (and a sample of the older ones) is readable by id,
//! payload identical, at the partition and offset it was answered with; a key sent again is
//! answered with its first message id. At the end: every key is in the logs exactly once and
//! every acknowledged (namespace, partition, offset) holds that message (offsets never reused);
//! every message is delivered at least once — the dead namespace's after a DLQ replay-all —
//! and no delivery attempt came before the message's delay.
//!
//! `WALD_FAULT_RUN_CYCLES` (default 6, as CI runs it) and `WALD_FAULT_RUN_SEED`; the figures
//! are printed at the end (docs/DURABILITY.md has the 1,000-cycle run).

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{try_request, Resp, Server, ADMIN};
use receiver::Receiver;
use serde_json::{json, Value};
use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, StdFs};

const SEGMENT: u64 = 64 << 10;
const FIRST_SEGMENT: u64 = 64 << 10;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One logical message: sent until acknowledged, always with the same key and body.
#[derive(Debug, Clone)]
struct Msg {
    key: String,
    ns: &'static str,
    payload: Value,
    delay_s: u64,
    /// When it was first sent (a retry of a write whose answer was lost may find it accepted
    /// back then): no delivery attempt before this plus the delay.
    born_ms: u64,
}

/// An acknowledgement (`durable: "true"`).
#[derive(Debug, Clone)]
struct Ack {
    msg: Msg,
    id: String,
    partition: u64,
    offset: u64,
}

#[derive(Default)]
struct Book {
    acks: HashMap<String, Ack>,
    /// Keys acknowledged in the current cycle (checked in full after it).
    fresh: Vec<String>,
    /// Messages whose write failed or whose fate is unknown: sent again.
    pending: Vec<Msg>,
    duplicates_checked: u64,
    refused_disk_full: u64,
    refused_other: u64,
}

enum Instance {
    Process(Child, SocketAddr),
    InProcess(Server),
}

impl Instance {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Process(_, a) => *a,
            Self::InProcess(s) => s.addr,
        }
    }
}

fn config_toml() -> String {
    format!(
        "[storage]\nsegment_bytes = {SEGMENT}\nfirst_segment_bytes = {FIRST_SEGMENT}\nmax_record_bytes = 32768\n\
         [delivery]\npark_after_ms = 1000\n"
    )
}

fn in_process(dir: &Path, fs: FaultFs) -> Instance {
    let mut c = common::config(&dir.join("data"));
    c.storage.segment_bytes = SEGMENT;
    c.storage.first_segment_bytes = FIRST_SEGMENT;
    c.storage.max_record_bytes = 32768;
    c.delivery.park_after_ms = 1000;
    Instance::InProcess(Server::start_with(c, Arc::new(fs)))
}

fn process(dir: &Path) -> Instance {
    let (child, addr) = common::spawn_serve(dir, ADMIN, Some(&config_toml()));
    Instance::Process(child, addr)
}

/// An admin request; a body only when given (a GET with a body the server does not read
/// can be answered with a reset that cuts a large answer short).
fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let text = body.map(ToString::to_string);
    common::request(
        addr,
        method,
        path,
        &[("x-api-key", ADMIN), ("content-type", "application/json")],
        text.as_deref().map(str::as_bytes),
    )
}

fn create_namespaces(addr: SocketAddr, rx: &Receiver) {
    for (name, url, attempts, partitions) in [
        ("main", rx.url("fail-first/1"), 6, 4),
        ("dead", rx.url("down"), 2, 1),
    ] {
        let r = admin(
            addr,
            "POST",
            "/api/v1/namespaces",
            Some(&json!({
                "name": name,
                "shardConfig": {"partitionCount": partitions},
                "retryPolicy": {"maxAttempts": attempts, "backoffStrategy": "constant", "initialDelayMs": 150, "maxDelayMs": 1000, "jitterMs": 0},
                "targetConfigs": [{"type": "webhook", "identifier": "h", "config": {"url": url, "timeoutMs": 2000}}],
            })),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
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
    if r["durable"] != "true" {
        return false;
    }
    let id = r["messageId"].as_str().expect("messageId").to_owned();
    let mut b = book.lock().unwrap();
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
    };
    b.fresh.push(m.key.clone());
    b.acks.insert(m.key.clone(), ack);
    true
}

/// Sends `msgs` (one write, or a batch); every message not acknowledged goes back to pending.
fn send(addr: SocketAddr, book: &Mutex<Book>, msgs: Vec<Msg>) {
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
fn load(
    addr: SocketAddr,
    book: &Arc<Mutex<Book>>,
    cycle: u64,
    seed: u64,
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
                            let dead = rng.below(10) == 0;
                            let delay_s = if !dead && rng.below(5) == 0 {
                                1 + rng.below(2)
                            } else {
                                0
                            };
                            let key = format!("c{cycle}-w{w}-{i}");
                            let pad = "x".repeat(usize::try_from(10 + rng.below(1500)).unwrap());
                            Msg {
                                payload: json!({"k": key, "pad": pad, "n": i}),
                                key,
                                ns: if dead { "dead" } else { "main" },
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
fn check_acks(addr: SocketAddr, book: &Mutex<Book>, rng: &mut Rng, sample: usize) -> usize {
    let (fresh, older): (Vec<Ack>, Vec<Ack>) = {
        let mut b = book.lock().unwrap();
        let keys: Vec<String> = b.fresh.drain(..).collect();
        let fresh: Vec<Ack> = keys.iter().filter_map(|k| b.acks.get(k).cloned()).collect();
        let all: Vec<&Ack> = b.acks.values().collect();
        let older = (0..sample.min(all.len()))
            .map(|_| all[usize::try_from(rng.below(all.len() as u64)).unwrap()].clone())
            .collect();
        (fresh, older)
    };
    let n = fresh.len() + older.len();
    for a in fresh.iter().chain(&older) {
        let r = common::request(
            addr,
            "GET",
            &format!("/api/v1/wal/messages/{}", a.id),
            &[],
            None,
        );
        assert_eq!(
            r.status,
            200,
            "acknowledged {} ({}) lost: {}",
            a.id,
            a.msg.key,
            r.text()
        );
        let j = r.json();
        assert_eq!(j["payload"], a.msg.payload, "{} changed", a.id);
        assert_eq!(j["partition"].as_u64(), Some(a.partition), "{}: {j}", a.id);
        assert_eq!(j["offset"].as_u64(), Some(a.offset), "{}: {j}", a.id);
    }
    n
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
        match j["nextFrom"].as_u64() {
            Some(next) => from = format!("&from={next}"),
            None => return out,
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
                let key = m["payload"]["k"].as_str().unwrap_or_default().to_owned();
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

#[test]
fn a_long_fault_run_keeps_every_promise() {
    let cycles: u64 = std::env::var("WALD_FAULT_RUN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("WALD_FAULT_RUN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_0F_FA17);
    let started = Instant::now();
    let rx = Receiver::start();
    rx.shared.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let book = Arc::new(Mutex::new(Book::default()));
    let mut rng = Rng(seed | 1);
    let mut kinds: HashMap<&str, u64> = HashMap::new();
    let mut checked = 0usize;
    let mut restart_ms: Vec<u64> = Vec::new();
    for cycle in 0..cycles {
        let kind = match (cycle, rng.below(4)) {
            (0, _) | (_, 0 | 1) => "sigkill",
            (_, 2) => "disk-full",
            _ => "eio",
        };
        *kinds.entry(kind).or_default() += 1;
        let fault = FaultFs::new(Arc::new(StdFs));
        let t0 = Instant::now();
        let inst = if kind == "sigkill" {
            process(dir.path())
        } else {
            in_process(dir.path(), fault.clone())
        };
        restart_ms.push(u64::try_from(t0.elapsed().as_millis()).unwrap());
        let addr = inst.addr();
        if cycle == 0 {
            create_namespaces(addr, &rx);
        } else {
            checked += check_acks(addr, &book, &mut rng, 20);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(addr, &book, cycle, seed, &stop);
        std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
        match kind {
            "disk-full" => {
                fault.set_free_space(Some(rng.below(3) * 40_000));
                std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
                fault.set_free_space(None);
                std::thread::sleep(Duration::from_millis(200));
            }
            "eio" => {
                fault.arm(FaultPlan {
                    op: FaultOp::Sync,
                    nth: 1 + rng.below(20),
                    kind: FaultKind::Eio,
                    sticky: rng.below(2) == 0,
                });
                std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
                fault.disarm();
            }
            _ => {}
        }
        match inst {
            Instance::Process(mut child, _) => {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                stop.store(true, Ordering::Relaxed);
            }
            Instance::InProcess(server) => {
                stop.store(true, Ordering::Relaxed);
                for w in writers.iter() {
                    while !w.is_finished() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                server.stop();
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        if cycle % 50 == 49 {
            let b = book.lock().unwrap();
            eprintln!(
                "fault run: cycle {}/{cycles}, {} acknowledged, {} pending, {:?}, {:.0} s",
                cycle + 1,
                b.acks.len(),
                b.pending.len(),
                kinds,
                started.elapsed().as_secs_f64()
            );
        }
    }

    // The end: a clean server; everything still pending sent until acknowledged.
    let p = process(dir.path());
    let addr = p.addr();
    checked += check_acks(addr, &book, &mut rng, 200);
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
        send(addr, &book, next);
    }
    checked += check_acks(addr, &book, &mut rng, 0);
    let acks: Vec<Ack> = book.lock().unwrap().acks.values().cloned().collect();

    // Offsets never reused, every key in the logs exactly once.
    let mut logs = read_all(addr, "main", 4);
    for ((p, o), k) in read_all(addr, "dead", 1) {
        logs.insert((p + 1000, o), k);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for k in logs.values() {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    for a in &acks {
        let p = if a.msg.ns == "dead" {
            a.partition + 1000
        } else {
            a.partition
        };
        assert_eq!(
            logs.get(&(p, a.offset)).map(String::as_str),
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

    // Delivery: every main message at least once; the dead namespace's after a replay.
    rx.shared.down.store(false, Ordering::SeqCst);
    let main_ids: HashSet<&str> = acks
        .iter()
        .filter(|a| a.msg.ns == "main")
        .map(|a| a.id.as_str())
        .collect();
    let dead_ids: HashSet<&str> = acks
        .iter()
        .filter(|a| a.msg.ns == "dead")
        .map(|a| a.id.as_str())
        .collect();
    // The ids the receiver answered 200, read under its lock (a long run has millions of
    // hits: no copies).
    let ok_ids = || -> HashSet<String> {
        let h = rx.shared.hits.lock().unwrap();
        h.iter()
            .filter(|x| x.status == 200)
            .map(|x| x.message_id.clone())
            .collect()
    };
    let wait_delivered = |ids: &HashSet<&str>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ok = ok_ids();
            let missing = ids.iter().filter(|id| !ok.contains(**id)).count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {missing} of {} never delivered",
                ids.len()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_delivered(&main_ids, "main messages");
    // Everything the dead namespace had goes to the DLQ (its webhook was down); replay it all.
    let dlq_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = dlq_ids(addr);
        let n = listed.len();
        let ok = ok_ids();
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
                let r = common::request(
                    addr,
                    "GET",
                    &format!("/api/v1/wal/messages/{id}"),
                    &[],
                    None,
                );
                eprintln!("not in the DLQ: {id}: {} {}", r.status, r.text());
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
    wait_delivered(&dead_ids, "dead messages after the replay");

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
    if let Instance::Process(mut child, _) = p {
        let _ = child.kill();
        let _ = child.wait();
    }
    let b = book.lock().unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in hits.iter().filter(|h| h.status == 200) {
        *counts.entry(h.message_id.as_str()).or_default() += 1;
    }
    let dups: usize = counts.values().map(|n| n - 1).sum();
    restart_ms.sort_unstable();
    eprintln!(
        "fault run: {cycles} cycles ({kinds:?}) in {:.0} s, seed {seed}: {} messages acknowledged \
         ({} main, {} dead→DLQ→replayed), {} read back by id, {} keys sent again and answered \
         with their first id, {} writes refused for a full disk, {} for other faults, {} delivery \
         attempts ({} successful deliveries, {dups} duplicates), 0 early, 0 lost, 0 appended \
         twice, 0 offsets reused; start p50 {} ms, max {} ms",
        started.elapsed().as_secs_f64(),
        acks.len(),
        main_ids.len(),
        dead_ids.len(),
        checked,
        b.duplicates_checked,
        b.refused_disk_full,
        b.refused_other,
        hits.len(),
        counts.len(),
        restart_ms[restart_ms.len() / 2],
        restart_ms.last().copied().unwrap_or(0),
    );
}

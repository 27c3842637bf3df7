//! Delivery across SIGKILL of the real server process (`wald serve`), with a real HTTP
//! receiver in the test process:
//!
//! - a delayed message, the server killed during the delay and restarted: delivered once its
//!   time comes (not before), once;
//! - a pending retry, the server killed while it waits: the retry runs at its time after the
//!   restart, counted as attempt 2;
//! - at-least-once under load: writers run while the server is killed again and again; in the
//!   end every acknowledged message reached the receiver, and the duplicates are bounded by
//!   what can be in flight at a crash (the consumer's window per kill).
//!
//! Cycles of the last: `WALD_DELIVERY_CRASH_CYCLES` (default 8).

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::request;
use receiver::Receiver;
use serde_json::{json, Value};

const ADMIN: &str = "delivery-crash-admin-0123456789abcdef";
/// The consumer window in these tests (bounds the duplicates a crash can cause).
const WINDOW: usize = 32;

struct Proc {
    child: Child,
    addr: SocketAddr,
}

fn spawn(dir: &std::path::Path) -> Proc {
    let config = format!("[delivery]\nwindow = {WINDOW}\npark_after_ms = 1000\n");
    let (child, addr) = common::spawn_serve(dir, ADMIN, Some(&config));
    Proc { child, addr }
}

impl Proc {
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn admin(&self, method: &str, path: &str, body: &Value) -> common::Resp {
        let text = body.to_string();
        request(
            self.addr,
            method,
            path,
            &[("x-api-key", ADMIN), ("content-type", "application/json")],
            Some(text.as_bytes()),
        )
    }

    fn write(&self, body: &Value) -> String {
        let text = body.to_string();
        let r = request(
            self.addr,
            "POST",
            "/api/v1/wal/write",
            &[("content-type", "application/json")],
            Some(text.as_bytes()),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["durable"], "true");
        r.json()["messageId"].as_str().unwrap().to_owned()
    }

    fn message(&self, id: &str) -> Value {
        let r = request(
            self.addr,
            "GET",
            &format!("/api/v1/wal/messages/{id}"),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

fn namespace(p: &Proc, name: &str, url: &str, retry_ms: u64) {
    let r = p.admin("POST", "/api/v1/namespaces", &json!({
        "name": name,
        "retryPolicy": {"maxAttempts": 10, "backoffStrategy": "constant", "initialDelayMs": retry_ms, "maxDelayMs": retry_ms.max(1000), "jitterMs": 0},
        "targetConfigs": [{"type": "webhook", "identifier": "h", "config": {"url": url, "timeoutMs": 2000}}],
        "accessControl": {"allowedApiKeys": [], "rateLimits": {"requestsPerMinute": 1_000_000, "requestsPerHour": 100_000_000, "burstLimit": 100_000}},
    }));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_delayed_message_survives_sigkill_during_its_delay() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    namespace(&p, "later", &rx.url("ok"), 200);
    let t0 = wald_storage::now_ms();
    let short =
        p.write(&json!({"namespace": "later", "payload": {"d": 1}, "lifecycle": {"delay": 1}}));
    let parked =
        p.write(&json!({"namespace": "later", "payload": {"d": 3}, "lifecycle": {"delay": 3}}));
    p.kill();
    std::thread::sleep(Duration::from_millis(300));
    let p = spawn(dir.path());
    let hits = rx.wait_for(15, "both delayed messages", |h| {
        h.iter().any(|x| x.message_id == short) && h.iter().any(|x| x.message_id == parked)
    });
    for (id, delay) in [(&short, 1000), (&parked, 3000)] {
        let at = hits.iter().find(|x| &x.message_id == id).unwrap().at_ms;
        assert!(
            at >= t0 + delay,
            "{id} delivered {} ms after its write, before its {delay} ms delay",
            at - t0
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.hits_of(&short).len(), 1);
    assert_eq!(rx.hits_of(&parked).len(), 1);
    p.kill();
}

#[test]
fn a_pending_retry_survives_sigkill() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    namespace(&p, "retry", &rx.url("fail-first/1"), 3000);
    let id = p.write(&json!({"namespace": "retry", "payload": {"r": 1}}));
    let first = rx.wait_for(10, "the first attempt", |h| {
        h.iter().any(|x| x.message_id == id)
    })[0]
        .at_ms;
    // Wait until the retry is recorded (attempts and next attempt time) before the kill.
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.message(&id)["targets"][0]["status"] != "retrying" {
        assert!(
            Instant::now() < deadline,
            "retry never recorded: {:#}",
            p.message(&id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill();
    let p = spawn(dir.path());
    let hits = rx.wait_for(15, "the retry after the restart", |h| {
        h.iter().any(|x| x.message_id == id && x.status == 200)
    });
    let mine: Vec<_> = hits.iter().filter(|x| x.message_id == id).collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert_eq!(mine[1].attempt, 2, "the attempt count survives the restart");
    assert!(
        mine[1].at_ms >= first + 3000,
        "retried {} ms after the first attempt, before its 3000 ms backoff",
        mine[1].at_ms - first
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.message(&id)["status"] != "delivered" {
        assert!(Instant::now() < deadline, "{:#}", p.message(&id));
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill();
}

#[test]
fn every_acknowledged_message_is_delivered_across_repeated_sigkill() {
    let cycles: usize = std::env::var("WALD_DELIVERY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<String> = Vec::new();
    for cycle in 0..cycles {
        let p = spawn(dir.path());
        if cycle == 0 {
            namespace(&p, "load", &rx.url("ok"), 100);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let addr = p.addr;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (stop, got) = (Arc::clone(&stop), Arc::clone(&got));
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = format!(
                            r#"{{"namespace":"load","payload":{{"c":{cycle},"w":{w},"i":{i}}}}}"#
                        );
                        let Ok(r) = std::panic::catch_unwind(|| {
                            request(
                                addr,
                                "POST",
                                "/api/v1/wal/write",
                                &[("content-type", "application/json")],
                                Some(body.as_bytes()),
                            )
                        }) else {
                            break;
                        };
                        if r.status != 202 {
                            break;
                        }
                        let j = r.json();
                        if j["durable"] == "true" {
                            got.lock()
                                .unwrap()
                                .push(j["messageId"].as_str().unwrap().to_owned());
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + (cycle as u64 * 137) % 500));
        p.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        acked.append(&mut got.lock().unwrap());
    }
    let p = spawn(dir.path());
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    rx.wait_for(60, "every acknowledged message", |h| {
        let seen: HashSet<&str> = h.iter().map(|x| x.message_id.as_str()).collect();
        want.iter().all(|id| seen.contains(id))
    });
    p.kill();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for h in rx.hits() {
        *counts.entry(h.message_id).or_default() += 1;
    }
    let dups: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{cycles} kills, {} acknowledged messages all delivered, {dups} duplicate deliveries",
        acked.len()
    );
    // A crash can only repeat what was in flight: at most the window, per kill.
    assert!(
        dups <= cycles * WINDOW,
        "{dups} duplicates for {cycles} kills with a window of {WINDOW}"
    );
}

//! Crash test through HTTP: writers POST and record every answer with `durable: "true"`;
//! the server process is SIGKILLed mid-load and restarted on the same data directory;
//! every acknowledged message must be returned by `GET /api/v1/wal/messages/{id}` with its
//! payload byte-identical, and appear in the read API at its offset.
//! Cycles: `WALD_HTTP_CRASH_CYCLES` (default 20).

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::request;

const ADMIN: &str = "crash-admin-0123456789abcdef0123456789";

struct Acked {
    id: String,
    partition: u64,
    offset: u64,
    payload: String,
}

fn spawn(dir: &std::path::Path) -> (Child, SocketAddr) {
    let listen = std::ffi::OsStr::new("--listen");
    common::spawn_wald(&[
        listen,
        "127.0.0.1:0".as_ref(),
        "--admin-key".as_ref(),
        ADMIN.as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ])
}

fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn verify(addr: SocketAddr, acked: &[Acked]) {
    for a in acked {
        let r = request(
            addr,
            "GET",
            &format!("/api/v1/wal/messages/{}", a.id),
            &[],
            None,
        );
        assert_eq!(
            r.status,
            200,
            "acknowledged message {} lost: {}",
            a.id,
            r.text()
        );
        let text = r.text();
        assert!(
            text.contains(&format!("\"payload\":{}", a.payload)),
            "payload of {} differs: {text}",
            a.id
        );
        let page = request(
            addr,
            "GET",
            &format!(
                "/api/v1/wal/namespace/crash/messages?partition={}&fromOffset={}&limit=1",
                a.partition, a.offset
            ),
            &[],
            None,
        );
        assert_eq!(page.status, 200, "{}", page.text());
        assert_eq!(
            page.json()["messages"][0]["messageId"],
            a.id.as_str(),
            "message at its offset"
        );
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("WALD_HTTP_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("http crash test seed {seed}");
    let mut all: Vec<Acked> = Vec::new();
    for cycle in 0..cycles {
        let (mut child, addr) = spawn(dir.path());
        if cycle == 0 {
            let spec = r#"{"name":"crash","shardConfig":{"strategy":"round_robin","partitionCount":2},"accessControl":{"allowedApiKeys":[],"rateLimits":{"requestsPerMinute":1000000,"requestsPerHour":100000000,"burstLimit":100000}}}"#;
            let r = request(
                addr,
                "POST",
                "/api/v1/namespaces",
                &[("x-api-key", ADMIN), ("content-type", "application/json")],
                Some(spec.as_bytes()),
            );
            assert_eq!(r.status, 201, "{}", r.text());
        } else {
            // Everything acknowledged in the previous cycle survived the kill.
            let start = all.len().saturating_sub(400);
            verify(addr, &all[start..]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let payload = format!(
                            r#"{{"cycle":{cycle},"writer":{w},"seq":{i},"pad":"{}"}}"#,
                            "x".repeat((i % 50) as usize)
                        );
                        let body = format!(r#"{{"namespace":"crash","payload":{payload}}}"#);
                        let r = std::panic::catch_unwind(|| {
                            request(
                                addr,
                                "POST",
                                "/api/v1/wal/write",
                                &[("content-type", "application/json")],
                                Some(body.as_bytes()),
                            )
                        });
                        let Ok(r) = r else { break };
                        if r.status != 202 {
                            break;
                        }
                        let j = r.json();
                        if j["durable"] == "true" {
                            acked.lock().unwrap().push(Acked {
                                id: j["messageId"].as_str().unwrap().to_owned(),
                                partition: j["partition"].as_u64().unwrap(),
                                offset: j["offset"].as_u64().unwrap(),
                                payload,
                            });
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + next_rand(&mut seed) % 400));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.join();
        }
        let mut got = std::mem::take(&mut *acked.lock().unwrap());
        eprintln!("cycle {cycle}: {} writes acknowledged durable", got.len());
        all.append(&mut got);
    }
    let (mut child, addr) = spawn(dir.path());
    verify(addr, &all);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{cycles} SIGKILL cycles, {} acknowledged writes verified",
        all.len()
    );
    assert!(
        all.len() > cycles,
        "the writers acknowledged too little to prove anything"
    );
}

//! A real HTTP receiver for delivery tests: an axum server on 127.0.0.1:0, in its own
//! thread and runtime, that records every request and answers by path:
//!
//! - `/ok`            → 200
//! - `/perm`          → 400 (a permanent failure)
//! - `/down`          → 503 while `down` is set, else 200
//! - `/fail-first/N`  → 503 for attempts 1..=N of each message id, then 200
//! - `/needs-fixed`   → 400 unless the body contains `"fixed":true`
//! - `/flaky3`        → 503 on the first attempt of messages whose `seq` is a multiple of 3
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub message_id: String,
    pub attempt: u32,
    pub at_ms: u64,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
pub struct Shared {
    pub hits: Mutex<Vec<Hit>>,
    pub down: AtomicBool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let message_id = h("x-wald-message-id");
    let attempt: u32 = h("x-wald-attempt").parse().unwrap_or(0);
    let text = String::from_utf8_lossy(&body).into_owned();
    let status = if path == "ok" {
        200
    } else if path == "perm" {
        400
    } else if path == "down" {
        if s.down.load(Ordering::SeqCst) {
            503
        } else {
            200
        }
    } else if let Some(n) = path.strip_prefix("fail-first/") {
        let n: u32 = n.parse().unwrap_or(0);
        if attempt <= n {
            503
        } else {
            200
        }
    } else if path == "needs-fixed" {
        if text.replace(' ', "").contains("\"fixed\":true") {
            200
        } else {
            400
        }
    } else if path == "flaky3" {
        let seq = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .unwrap_or(1);
        if seq.is_multiple_of(3) && attempt == 1 {
            503
        } else {
            200
        }
    } else {
        404
    };
    s.hits.lock().unwrap().push(Hit {
        path,
        message_id,
        attempt,
        at_ms: now_ms(),
        body: text,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let s2 = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new().route("/{*path}", post(handle)).with_state(s2);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            addr,
            shared,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Requests for one message id, in arrival order.
    pub fn hits_of(&self, id: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.message_id == id)
            .collect()
    }

    /// Waits until `f` holds over the hits, or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let hits = self.hits();
            if f(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; hits: {hits:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

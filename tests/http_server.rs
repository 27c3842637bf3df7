//! The server around the routes: CORS from the config, the header-size limit answered with
//! the envelope, and graceful shutdown (every request in flight answered durable, nothing
//! lost, intake stopped).

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{config, tempdir, Server};
use serde_json::json;
use wald_storage::io::{LockGuard, OpenMode, StdFs, VFile, Vfs};
use wald_storage::mmap::Mapped;

fn has_cors_headers(r: &common::Resp) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

/// The write routes skip the router's layers (src/http/fast.rs) except for cross-origin
/// requests under CORS: both ways answer the same.
#[test]
fn the_write_routes_answer_alike_with_and_without_the_router() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.cors.allowed_origins = vec!["https://app.example".into()];
    let s = Server::start(c);
    s.create_namespace(json!({ "name": "web" }));
    let ways: [&[(&str, &str)]; 2] = [&[], &[("origin", "https://app.example")]];
    let mut seen = Vec::new();
    for (n, origin) in ways.iter().enumerate() {
        let mut h = vec![("x-request-id", "req-1")];
        h.extend_from_slice(origin);
        let ok = s.post_json(
            "/api/v1/wal/write",
            &h,
            &json!({ "namespace": "web", "payload": { "n": n } }),
        );
        assert_eq!(ok.status, 202, "{}", ok.text());
        assert_eq!(ok.header("x-request-id"), Some("req-1"));
        let keys: Vec<String> = ok.json().as_object().unwrap().keys().cloned().collect();
        let bad = s
            .post_json(
                "/api/v1/wal/write/batch",
                &h,
                &json!({ "messages": [{ "namespace": "web", "payload": {} }] }),
            )
            .assert_error(400, "VALIDATION_ERROR");
        assert_eq!(bad["metadata"]["requestId"], "req-1");
        assert_eq!(bad["metadata"]["path"], "/api/v1/wal/write/batch");
        let big = "x".repeat(usize::try_from(s.app.config.server.max_body_bytes).unwrap() + 10);
        s.req(
            "POST",
            "/api/v1/wal/write",
            &[&[("content-type", "application/json")], *origin].concat(),
            Some(&big),
        )
        .assert_error(413, "MESSAGE_SIZE_LIMIT_EXCEEDED");
        seen.push((
            keys,
            bad["error"]["details"].clone(),
            has_cors_headers(&ok).is_empty(),
        ));
    }
    assert_eq!(seen[0].0, seen[1].0, "the same answer fields");
    assert_eq!(seen[0].1, seen[1].1, "the same error details");
    assert!(
        seen[0].2 && !seen[1].2,
        "CORS headers only for the cross-origin request"
    );
    // Both were counted under the write route.
    let m = s
        .req("GET", "/metrics", &[("x-api-key", common::ADMIN)], None)
        .text();
    assert!(
        m.lines().any(|l| l.contains("route=\"/api/v1/wal/write\"")
            && l.contains("status=\"202\"")
            && l.ends_with(" 2")),
        "{m}"
    );
}

#[test]
fn cors_answers_allowed_origins_only() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.cors.allowed_origins = vec!["https://app.example".into()];
    let s = Server::start(c);
    s.create_namespace(json!({ "name": "web" }));
    let preflight = |origin: &str| {
        s.req(
            "OPTIONS",
            "/api/v1/wal/write",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-api-key"),
            ],
            None,
        )
    };
    let ok = preflight("https://app.example");
    assert!(
        ok.status < 300,
        "preflight answered: {} {:?}",
        ok.status,
        ok.headers
    );
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = ok
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        headers.contains("x-api-key") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));

    let evil = preflight("https://evil.example");
    assert!(
        has_cors_headers(&evil).is_empty(),
        "a disallowed origin gets no CORS headers: {:?}",
        has_cors_headers(&evil)
    );

    // Actual requests: the allowed origin is named, the other is not.
    let body = json!({ "namespace": "web", "payload": { "a": 1 } });
    let w = s.post_json(
        "/api/v1/wal/write",
        &[("origin", "https://app.example")],
        &body,
    );
    assert_eq!(w.status, 202, "{}", w.text());
    assert_eq!(
        w.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // A foreign origin is refused outright (docs/SECURITY.md), without CORS headers.
    let w = s.post_json(
        "/api/v1/wal/write",
        &[("origin", "https://evil.example")],
        &body,
    );
    w.assert_error(403, "ORIGIN_NOT_ALLOWED");
    assert!(has_cors_headers(&w).is_empty(), "{:?}", w.headers);
    s.stop();

    // CORS off (the default): no headers for anyone.
    let s = Server::start(config(&dir));
    let r = preflight_on(&s, "https://app.example");
    assert!(has_cors_headers(&r).is_empty(), "{:?}", r.headers);
}

fn preflight_on(s: &Server, origin: &str) -> common::Resp {
    s.req(
        "OPTIONS",
        "/api/v1/wal/write",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ],
        None,
    )
}

#[test]
fn oversized_headers_get_431_with_the_envelope_and_the_server_keeps_serving() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "h" }));
    // 100 KiB: over the service's 64 KiB limit. 600 KiB: over hyper's default buffer
    // (~400 KiB), which the server raises so that it too gets the envelope.
    for kib in [100, 600] {
        let big = "a".repeat(kib * 1024);
        let r = s.req("GET", "/api/v1/health", &[("x-big", &big)], None);
        let j = r.assert_error(431, "HEADER_TOO_LARGE");
        assert_eq!(j["error"]["details"]["maxSize"], 64 * 1024, "{j}");
        assert_eq!(j["error"]["details"]["largestHeader"], "x-big", "{j}");
        assert!(
            j["error"]["details"]["actualSize"].as_u64().unwrap() > (kib * 1024) as u64,
            "{j}"
        );
    }
    // Many headers adding up over the limit, on a write.
    let chunk = "b".repeat(8 * 1024);
    let names: Vec<String> = (0..10).map(|i| format!("x-h{i}")).collect();
    let mut headers: Vec<(&str, &str)> =
        names.iter().map(|n| (n.as_str(), chunk.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let r = s.req(
        "POST",
        "/api/v1/wal/write",
        &headers,
        Some(r#"{"namespace":"h","payload":{"a":1}}"#),
    );
    r.assert_error(431, "HEADER_TOO_LARGE");
    // Just under the limit passes.
    let fits = "c".repeat(60 * 1024);
    assert_eq!(
        s.req("GET", "/api/v1/health", &[("x-fits", &fits)], None)
            .status,
        200
    );
    // And the server keeps serving.
    assert_eq!(s.req("GET", "/api/v1/health", &[], None).status, 200);
    assert_eq!(s.write("h", json!({ "after": true })).status, 202);
}

/// A gate that holds every `sync_data` while closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    cv: Condvar,
    held: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.held.fetch_add(1, Ordering::SeqCst);
        }
        while *closed {
            closed = self.cv.wait(closed).unwrap();
        }
    }

    fn set(&self, close: bool) {
        *self.closed.lock().unwrap() = close;
        self.cv.notify_all();
    }
}

/// The real file system, with fdatasync held at the gate.
#[derive(Debug)]
struct GatedFs {
    inner: StdFs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn VFile>,
    gate: Arc<Gate>,
}

impl Vfs for GatedFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(GatedFile {
            inner: self.inner.open(path, mode)?,
            gate: Arc::clone(&self.gate),
        }))
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(path)
    }
    fn available_space(&self, path: &Path) -> Option<u64> {
        self.inner.available_space(path)
    }
}

impl VFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn map(&self) -> io::Result<Option<Mapped>> {
        self.inner.map()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

#[test]
fn graceful_shutdown_answers_every_write_in_flight_durably() {
    const WRITERS: usize = 8;
    let (_d, dir) = tempdir();
    let gate = Arc::new(Gate::default());
    let fs = GatedFs {
        inner: StdFs,
        gate: Arc::clone(&gate),
    };
    let mut s = Server::start_with(config(&dir), Arc::new(fs));
    s.create_namespace(json!({ "name": "drain", "durability": "sync" }));
    assert_eq!(s.write("drain", json!({ "warm": true })).status, 202);

    // Every fsync now waits at the gate: the writes below stay in flight.
    gate.set(true);
    let addr = s.addr;
    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                let body = json!({ "namespace": "drain", "payload": { "i": i } }).to_string();
                sent.fetch_add(1, Ordering::SeqCst);
                let r = common::request(
                    addr,
                    "POST",
                    "/api/v1/wal/write",
                    &[("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                (i, r, Instant::now())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (sent.load(Ordering::SeqCst) < WRITERS || gate.held.load(Ordering::SeqCst) == 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        gate.held.load(Ordering::SeqCst) > 0,
        "a group commit waits at the gate"
    );
    // Let every request reach the append queue before the shutdown starts.
    std::thread::sleep(Duration::from_millis(500));

    let triggered = Instant::now();
    s.trigger_shutdown();
    std::thread::sleep(Duration::from_millis(300));
    // Intake stopped: the listener is closed.
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "no new connections once shutdown began"
    );
    gate.set(false);

    let mut ids = Vec::new();
    for w in writers {
        let (i, r, answered) = w.join().unwrap();
        assert_eq!(r.status, 202, "writer {i}: {}", r.text());
        let j = r.json();
        assert_eq!(j["durable"], "true", "writer {i}: {j}");
        assert!(
            answered > triggered,
            "writer {i} was in flight at the shutdown"
        );
        ids.push((i, j["messageId"].as_str().unwrap().to_owned()));
    }
    s.stop();

    // Reopened: every acknowledged write is there.
    let s = Server::start(config(&dir));
    for (i, id) in &ids {
        let r = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["payload"], json!({ "i": i }), "{id}");
    }
    let page = s
        .req(
            "GET",
            "/api/v1/wal/namespace/drain/messages?limit=100",
            &[],
            None,
        )
        .json();
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        WRITERS + 1,
        "{page}"
    );
}

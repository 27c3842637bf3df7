//! Test harness: the real server, in process, on 127.0.0.1:0 with a temporary data
//! directory; and a minimal HTTP/1.1 client (one connection per request).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wald::app::App;
use wald::config::Config;

pub const ADMIN: &str = "admin-secret-0123456789abcdef0123456789";

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The default test configuration: data in `dir`, an admin key.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.admin_key = Some(ADMIN.to_owned());
    c.egress.allow = vec!["127.0.0.0/8".into(), "::1/128".into()];
    // The suites that test what a client does take anonymous writes; the trust boundary's
    // own tests (tests/security_*.rs) start from `Config::default()`'s closed API.
    c.auth.open = true;
    c
}

impl Server {
    pub fn start(config: Config) -> Self {
        Self::start_with(config, Arc::new(wald_storage::io::StdFs))
    }

    pub fn start_with(config: Config, fs: Arc<dyn wald_storage::io::Vfs>) -> Self {
        config.validate().expect("valid test config");
        let listen = config.server.listen;
        let app = App::start_with(config, fs).expect("start");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let app2 = Arc::clone(&app);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                wald::server::run(listener, app2, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server address");
        Self {
            addr,
            app,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until its logs are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        request(self.addr, method, path, headers, body.map(str::as_bytes))
    }

    pub fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Resp {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.req("POST", path, &h, Some(&body.to_string()))
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Resp {
        let text = body.map(ToString::to_string);
        self.req(
            method,
            path,
            &[("x-api-key", ADMIN), ("content-type", "application/json")],
            text.as_deref(),
        )
    }

    /// Creates a namespace through the admin API.
    pub fn create_namespace(&self, spec: serde_json::Value) -> Resp {
        let r = self.admin("POST", "/api/v1/namespaces", Some(&spec));
        assert_eq!(r.status, 201, "create namespace: {}", r.text());
        r
    }

    pub fn write(&self, ns: &str, payload: serde_json::Value) -> Resp {
        self.post_json(
            "/api/v1/wal/write",
            &[],
            &serde_json::json!({ "namespace": ns, "payload": payload }),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Asserts the error envelope with `code` and the request id.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "status; body {}", self.text());
        let j = self.json();
        assert_eq!(j["success"], false, "{j}");
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{j}"
        );
        let rid = self
            .header("x-request-id")
            .expect("X-Request-ID on every answer");
        assert_eq!(j["metadata"]["requestId"], rid, "{j}");
        assert!(
            j["metadata"]["path"].as_str().is_some() && j["metadata"]["method"].as_str().is_some(),
            "{j}"
        );
        assert!(
            j["metadata"]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{j}"
        );
        j
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// [`request`] that reports a refused connection, a reset or a truncated answer (a server
/// killed mid-request) instead of panicking.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.unwrap_or(&[]);
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!("no answer ({} bytes)", raw.len()));
    }
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + size]);
        b = &b[p + 2 + size + 2..];
    }
    out
}

/// A temporary directory path (kept while the returned guard lives).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

impl Server {
    /// Resolves the server's shutdown future without waiting for it to stop (`stop` waits).
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `wald serve` on 127.0.0.1:0 with the admin key `admin`, its data in `dir/data`, and, when
/// given, `config` (TOML) written to `dir/wald.toml` and passed with `--config`.
pub fn spawn_serve(
    dir: &Path,
    admin: &str,
    config: Option<&str>,
) -> (std::process::Child, SocketAddr) {
    let data = dir.join("data");
    let cfg = dir.join("wald.toml");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--admin-key".as_ref(),
        admin.as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    if let Some(text) = config {
        std::fs::write(&cfg, text).expect("write wald.toml");
        args.extend(["--config".as_ref(), cfg.as_os_str()]);
    }
    spawn_wald(&args)
}

/// Starts the real `wald serve` binary with `args` (after `serve`), stdout drained, and
/// returns it with the address it listens on (it prints `wald listening on http://ADDR`).
pub fn spawn_wald(args: &[&std::ffi::OsStr]) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wald"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .env("WALD_EGRESS__ALLOW", "127.0.0.0/8,::1/128")
        .env("WALD_AUTH__OPEN", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn wald serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "wald serve did not start"
        );
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wald serve exited before listening")
        };
        if let Some(rest) = line.strip_prefix("wald listening on http://") {
            let addr: SocketAddr = rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("address");
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (child, addr);
        }
    }
}

/// Namespace access control with no key restriction and rate limits too high to matter.
pub fn no_rate_limits() -> serde_json::Value {
    serde_json::json!({"allowedApiKeys": [], "rateLimits": {"requestsPerMinute": 10_000_000,
        "requestsPerHour": 100_000_000, "burstLimit": 1_000_000}})
}

/// Writes `{"n": n}` to `ns` (with `partitionKey` = `key` when given).
pub fn write_n(addr: SocketAddr, ns: &str, n: u64, key: Option<&str>) -> Resp {
    let mut body = serde_json::json!({"namespace": ns, "payload": {"n": n}});
    if let Some(k) = key {
        body["partitionKey"] = serde_json::json!(k);
    }
    let body = body.to_string();
    request(
        addr,
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

/// `POST path` with the admin key and a JSON body.
pub fn admin_post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Resp {
    let text = body.to_string();
    request(
        addr,
        "POST",
        path,
        &[("x-api-key", ADMIN), ("content-type", "application/json")],
        Some(text.as_bytes()),
    )
}

/// `GET /api/v1/wal/namespace/{ns}/status` (asserted 200).
pub fn namespace_status(addr: SocketAddr, ns: &str) -> serde_json::Value {
    let r = request(
        addr,
        "GET",
        &format!("/api/v1/wal/namespace/{ns}/status"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits until the namespace's first mirror has no lag and is healthy (or panics after
/// `secs`); returns the status.
pub fn wait_caught_up(addr: SocketAddr, ns: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = namespace_status(addr, ns);
        let m = &s["mirrors"][0];
        if m["lagRecords"] == 0 && m["healthy"] == true {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mirror did not catch up in {secs} s: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `wald serve` child killed (SIGKILL) when dropped, also when the test panics.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

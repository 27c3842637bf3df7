//! The harness of `wald bench delivery`: the service and the receiver in their own threads
//! and runtimes, a minimal HTTP/1.1 client, and small measurement helpers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::cli::CliError;
use crate::config::Config;

/// The admin key of the bench's servers.
pub(crate) const ADMIN_KEY: &str = "bench-delivery-admin-0123456789abcdef";

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Millis {
    /// Samples.
    pub count: u64,
    /// Smallest (negative: early).
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Millis {
    /// Nearest-rank percentiles of microsecond samples.
    #[must_use]
    pub fn of(mut v: Vec<i64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1e3;
        Self {
            count: n as u64,
            min_ms: v[0] as f64 / 1e3,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: v[n - 1] as f64 / 1e3,
        }
    }
}

/// Resident memory of this process (`/proc/self/status`), MB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    /// VmRSS.
    pub total_mb: f64,
    /// RssAnon (heap).
    pub anon_mb: f64,
    /// RssFile (mapped files).
    pub file_mb: f64,
}

impl Rss {
    pub(crate) fn now() -> Self {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |k| k / 1024.0)
        };
        Self {
            total_mb: kb("VmRSS:"),
            anon_mb: kb("RssAnon:"),
            file_mb: kb("RssFile:"),
        }
    }
}

pub(crate) fn epoch_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request the receiver got.
struct Hit {
    id: Box<str>,
    /// The payload's `t` (µs since the epoch).
    t_us: i64,
    at_us: i64,
}

#[derive(Default)]
pub(crate) struct Inbox {
    hits: Mutex<Vec<Hit>>,
    /// Requests so far.
    pub(crate) count: AtomicU64,
}

impl Inbox {
    /// Requests whose `t` passes `keep` (a cheap count under the lock: no dedup).
    pub(crate) fn count(&self, keep: impl Fn(i64) -> bool) -> u64 {
        lock(&self.hits).iter().filter(|h| keep(h.t_us)).count() as u64
    }

    /// First arrival per id: (t, arrival), and the duplicate count.
    pub(crate) fn firsts(&self, keep: impl Fn(i64) -> bool) -> (Vec<(i64, i64)>, u64) {
        let hits = lock(&self.hits);
        let mut first: HashMap<&str, (i64, i64)> = HashMap::with_capacity(hits.len());
        let mut dups = 0;
        for h in hits.iter().filter(|h| keep(h.t_us)) {
            match first.get_mut(&*h.id) {
                Some(f) => {
                    dups += 1;
                    f.1 = f.1.min(h.at_us);
                }
                None => {
                    first.insert(&h.id, (h.t_us, h.at_us));
                }
            }
        }
        (first.into_values().collect(), dups)
    }
}

/// `t` of a payload `{"t":123,…}`.
fn stamp(body: &[u8]) -> Option<i64> {
    let rest = body.strip_prefix(br#"{"t":"#)?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at_us = epoch_us();
    let id = headers
        .get("x-wald-message-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let hit = Hit {
        id: id.into(),
        t_us: stamp(&body).unwrap_or(0),
        at_us,
    };
    lock(&inbox.hits).push(hit);
    inbox.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// A thread running a tokio runtime until told to stop.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn<F, Fut>(name: &str, workers: usize, body: F) -> Result<Self, CliError>
    where
        F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => {
                        let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
                        body(l, stopped).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        })?;
        let addr = rx.recv_timeout(Duration::from_secs(60))??;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn start_receiver(inbox: &Arc<Inbox>) -> Result<Running, CliError> {
    let router = axum::Router::new()
        .fallback(axum::routing::any(receive))
        .with_state(Arc::clone(inbox));
    Running::spawn("bench-receiver", 1, move |l, stop| async move {
        tokio::select! {
            _ = axum::serve(l, router) => {}
            _ = stop => {}
        }
    })
}

/// The service, in process.
pub(crate) struct Server {
    pub(crate) app: Arc<App>,
    pub(crate) run: Running,
}

impl Server {
    pub(crate) fn start(config: &Config) -> Result<Self, CliError> {
        let app = App::start(config.clone())?;
        let app2 = Arc::clone(&app);
        let run = Running::spawn("bench-server", 2, move |l, stop| async move {
            if let Err(e) = crate::server::run(l, app2, async move {
                let _ = stop.await;
            })
            .await
            {
                eprintln!("server: {e}");
            }
        })?;
        Ok(Self { app, run })
    }

    /// Stops it and waits until the App (and its state store) is closed.
    pub(crate) fn stop(self) -> Result<(), CliError> {
        let Self { app, mut run } = self;
        run.shutdown();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&app) > 1 {
            if Instant::now() > deadline {
                return Err("the stopped App is still referenced after 30 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        drop(app);
        Ok(())
    }

    pub(crate) fn gauges(&self, ns: &str, partitions: u32) -> (i64, i64) {
        let m = &self.app.delivery.metrics;
        (0..partitions).fold((0, 0), |(lag, pend), p| {
            let l = [ns, &p.to_string()];
            let get = |g: &prometheus::IntGaugeVec| {
                g.get_metric_with_label_values(&l).map_or(0, |g| g.get())
            };
            (lag + get(&m.lag_records), pend + get(&m.pending_delayed))
        })
    }
}

pub(crate) type Sender = SendRequest<Full<Bytes>>;

pub(crate) async fn connect(addr: SocketAddr) -> Result<Sender, CliError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(s)
}

pub(crate) async fn call(
    s: &mut Sender,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> Result<(u16, Bytes), CliError> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-api-key", ADMIN_KEY)
        .body(Full::new(Bytes::from(body)))?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

pub(crate) async fn once(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> Result<(u16, Bytes), CliError> {
    call(&mut connect(addr).await?, addr, method, path, body).await
}

pub(crate) fn client_rt() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-client")
        .build()?)
}

/// The fields of a namespace with one `webhook` target to `hook`.
pub(crate) fn webhook(hook: &str) -> Value {
    json!({
        "targetConfigs": [{ "type": "webhook", "identifier": "receiver", "config": { "url": hook } }],
    })
}

/// Creates the namespace `name` (durability `sync`, `partitions` round-robin, no rate limit
/// in the way) with the fields of `extra` besides (targets, a mirror).
pub(crate) fn create_namespace(
    rt: &tokio::runtime::Runtime,
    s: &Server,
    name: &str,
    partitions: u32,
    extra: Value,
) -> Result<(), CliError> {
    let limits = json!({ "requestsPerMinute": 60_000_000, "requestsPerHour": 3_600_000_000u64, "burstLimit": 1_000_000 });
    let mut spec = json!({
        "name": name, "durability": "sync",
        "shardConfig": { "partitionCount": partitions, "strategy": "round_robin" },
        "accessControl": { "rateLimits": limits },
    });
    if let (Some(m), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        m.extend(extra);
    }
    let (status, body) = rt.block_on(once(
        s.run.addr,
        Method::POST,
        "/api/v1/namespaces",
        spec.to_string(),
    ))?;
    if status != 201 {
        return Err(format!(
            "creating namespace {name}: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

pub(crate) fn config(dir: &Path) -> Result<Config, CliError> {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.auth.admin_key = Some(ADMIN_KEY.to_owned());
    // The benchmark's writers are anonymous and its targets and backends listen on this
    // machine's loopback: both doors opened on purpose, for this in-process server only.
    c.auth.open = true;
    c.egress.allow = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
    c.validate()?;
    Ok(c)
}

pub(crate) fn dir_mb(p: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(p) as f64 / 1_048_576.0
}

//! `wald bench http`: an HTTP load generator against a running server.
//!
//! N keep-alive HTTP/1.1 connections, each sending `POST {url}/api/v1/wal/write` and waiting
//! for the answer before the next (so N requests are in flight). A 202 is a write; anything
//! else (or a broken connection) is an error, the first few printed. Progress once per second
//! on stderr; a table and one JSON line on stdout at the end. With `--server-pid` the
//! server's CPU per write (from `/proc/PID/stat`), and from `{url}/metrics` scraped before
//! and after, the messages per fsync of the namespace.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use super::stats::{nanos, pid_cpu_secs, size_label, us_label, Summary};
use super::Machine;

/// How many error answers are printed (the rest are only counted).
const ERRORS_SHOWN: u64 = 5;

/// Errors of `wald bench http`.
#[derive(Debug, thiserror::Error)]
pub enum HttpBenchError {
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Options(String),
    /// The `--url` is not `http://host[:port][/prefix]`.
    #[error("invalid --url {url:?}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server cannot be reached.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built (a header value that is not ASCII).
    #[error("building a request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The namespace does not exist on the server.
    #[error("namespace {0:?} does not exist on the server; create it first (POST /api/v1/namespaces with the admin key)")]
    NoNamespace(String),
    /// `/proc/PID/stat` of `--server-pid` cannot be read.
    #[error("reading the CPU time of pid {pid}: {reason}")]
    ServerCpu {
        /// The pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// The JSON file cannot be written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising the report.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The async runtime cannot start.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Options of `wald bench http`.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The server's base URL, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    /// Connections, each with one request in flight.
    pub concurrency: usize,
    /// How long to send.
    pub duration: Duration,
    /// Size of the payload JSON of each write (`{"data":"xxx…"}`), bytes.
    pub payload_bytes: usize,
    /// The namespace written to (must exist).
    pub namespace: String,
    /// `X-API-Key`, when the namespace needs one.
    pub api_key: Option<String>,
    /// The server's pid, for its CPU time per write.
    pub server_pid: Option<u32>,
    /// Write the JSON report here too.
    pub json: Option<PathBuf>,
}

/// Answers by their `durable` field.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DurableCounts {
    /// `"true"`: fsync'd before the answer.
    #[serde(rename = "true")]
    pub yes: u64,
    /// `"false"`.
    #[serde(rename = "false")]
    pub no: u64,
    /// `"unknown"`: the fsync outlived the request timeout.
    pub unknown: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    /// The machine the client ran on.
    pub machine: Machine,
    /// The server's base URL.
    pub url: String,
    /// The namespace.
    pub namespace: String,
    /// Connections.
    pub concurrency: usize,
    /// Payload JSON bytes per write.
    pub payload_bytes: usize,
    /// Request body bytes per write.
    pub body_bytes: usize,
    /// Sending time asked for, seconds.
    pub duration_secs: f64,
    /// From the first request to the last answer, seconds.
    pub elapsed_secs: f64,
    /// 202 answers.
    pub writes: u64,
    /// Other answers and broken connections.
    pub errors: u64,
    /// Writes per second.
    pub writes_per_s: f64,
    /// Latency of the 202 answers (request sent → answer read), microseconds.
    pub latency: Summary,
    /// The 202 answers by `durable`.
    pub durable: DurableCounts,
    /// Server CPU seconds (user + system) over the run, with `--server-pid`.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per write, with `--server-pid`.
    pub server_cpu_us_per_write: Option<f64>,
    /// Records appended to the namespace over the run (from `/metrics`).
    pub records_appended: Option<u64>,
    /// Write-path fsyncs of the namespace over the run (from `/metrics`).
    pub fsyncs: Option<u64>,
    /// Records per fsync over the run.
    pub messages_per_fsync: Option<f64>,
}

/// Where the server is.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The path prefix, without a trailing `/`.
    base: String,
}

fn parse_url(url: &str) -> Result<Target, HttpBenchError> {
    let bad = |reason: &str| HttpBenchError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// is supported")),
        None => return Err(bad("give the scheme: http://host:port")),
    }
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        host,
        port: auth.port_u16().unwrap_or(80),
        authority: auth.as_str().to_owned(),
        base: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// The request body: `{"namespace":NS,"payload":{"data":"xxx…"}}`, the payload JSON being
/// `payload_bytes` long (at least `{"data":""}`).
fn body(namespace: &str, payload_bytes: usize) -> Result<Bytes, HttpBenchError> {
    let filler = "x".repeat(payload_bytes.saturating_sub(r#"{"data":""}"#.len()));
    let v = serde_json::json!({ "namespace": namespace, "payload": { "data": filler } });
    Ok(Bytes::from(serde_json::to_vec(&v)?))
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Sender, HttpBenchError> {
    let stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|source| HttpBenchError::Connect {
            addr: format!("{}:{}", t.host, t.port),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One exchange on `s`: the status and the whole body.
async fn exchange(
    s: &mut Sender,
    t: &Target,
    method: Method,
    path: &str,
    api_key: Option<&str>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), HttpBenchError> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", t.base))
        .header(header::HOST, &t.authority);
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(k) = api_key {
        req = req.header("x-api-key", k);
    }
    let resp = s.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// One request on a fresh connection.
async fn once(
    t: &Target,
    path: &str,
    api_key: Option<&str>,
) -> Result<(StatusCode, Bytes), HttpBenchError> {
    let mut s = connect(t).await?;
    exchange(&mut s, t, Method::GET, path, api_key, Bytes::new()).await
}

/// Sums `name{namespace="NS",...} value` lines of a Prometheus text page.
fn sum_metric(text: &str, name: &str, namespace: &str) -> Option<u64> {
    let label = format!("namespace=\"{namespace}\"");
    let mut sum = 0u64;
    let mut seen = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        if !labels.split(',').any(|l| l == label) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            sum += v.max(0.0) as u64;
            seen = true;
        }
    }
    seen.then_some(sum)
}

/// The namespace's records appended and fsyncs, from `/metrics` (None when unreadable).
async fn scrape(t: &Target, opts: &HttpOptions) -> Option<(u64, u64)> {
    let (status, body) = once(t, "/metrics", opts.api_key.as_deref()).await.ok()?;
    if status != StatusCode::OK {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    Some((
        sum_metric(&text, "wald_log_records_appended", &opts.namespace)?,
        sum_metric(&text, "wald_log_fsyncs", &opts.namespace)?,
    ))
}

/// Counts shared by the connections.
struct Shared {
    target: Target,
    body: Bytes,
    api_key: Option<String>,
    deadline: Instant,
    writes: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn error(&self, what: &str) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_SHOWN {
            eprintln!("error #{}: {what}", n + 1);
        } else if n == ERRORS_SHOWN {
            eprintln!("(further errors are counted, not shown)");
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Conn {
    latencies: Vec<u32>,
    durable: DurableCounts,
}

/// The value of `"durable":"…"` in an answer, without parsing the whole JSON.
fn durable_of(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = br#""durable":""#;
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

async fn connection(sh: Arc<Shared>) -> Conn {
    let mut out = Conn::default();
    let mut sender: Option<Sender> = None;
    while Instant::now() < sh.deadline {
        if let Some(s) = sender.as_mut() {
            // The server closed the connection (after an error answer): open another.
            if s.ready().await.is_err() {
                sender = None;
            }
        }
        let s = match sender {
            Some(ref mut s) => s,
            None => match connect(&sh.target).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    sh.error(&e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let r = exchange(
            s,
            &sh.target,
            Method::POST,
            "/api/v1/wal/write",
            sh.api_key.as_deref(),
            sh.body.clone(),
        )
        .await;
        match r {
            Ok((StatusCode::ACCEPTED, body)) => {
                out.latencies.push(nanos(t0.elapsed()));
                sh.writes.fetch_add(1, Ordering::Relaxed);
                match durable_of(&body) {
                    Some(b"true") => out.durable.yes += 1,
                    Some(b"false") => out.durable.no += 1,
                    _ => out.durable.unknown += 1,
                }
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
                sh.error(&format!("{status}: {text}"));
            }
            Err(e) => {
                sh.error(&e.to_string());
                sender = None;
            }
        }
    }
    out
}

/// Prints writes/s once per second until the deadline.
async fn progress(sh: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    while Instant::now() < sh.deadline {
        tick.tick().await;
        let n = sh.writes.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "  {secs:>5.1} s  {n:>9} writes  {:>8.0} writes/s (last second {:>8}/s)  errors {}",
            n as f64 / secs,
            n - last,
            sh.errors.load(Ordering::Relaxed)
        );
        last = n;
    }
}

fn server_cpu(pid: u32) -> Result<f64, HttpBenchError> {
    pid_cpu_secs(pid).map_err(|e| HttpBenchError::ServerCpu {
        pid,
        reason: e.to_string(),
    })
}

/// Runs the load and measures it (no printing but progress and errors on stderr).
pub async fn measure(opts: &HttpOptions) -> Result<HttpReport, HttpBenchError> {
    if opts.concurrency == 0 || opts.concurrency > 100_000 {
        return Err(HttpBenchError::Options(
            "--concurrency must be 1..=100000".into(),
        ));
    }
    if opts.duration.is_zero() {
        return Err(HttpBenchError::Options("--duration must be above 0".into()));
    }
    let target = parse_url(&opts.url)?;
    let body = body(&opts.namespace, opts.payload_bytes)?;
    // Fail early, with a clear message, on an unreachable server or a missing namespace.
    let status_path = format!("/api/v1/wal/namespace/{}/status", opts.namespace);
    let (status, _) = once(&target, &status_path, opts.api_key.as_deref()).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(HttpBenchError::NoNamespace(opts.namespace.clone()));
    }
    let before = scrape(&target, opts).await;
    let cpu_before = opts.server_pid.map(server_cpu).transpose()?;
    eprintln!(
        "wald bench http: {} namespace {}, {} connections, {} payload, {:.1} s",
        opts.url,
        opts.namespace,
        opts.concurrency,
        size_label(opts.payload_bytes),
        opts.duration.as_secs_f64()
    );
    let start = Instant::now();
    let sh = Arc::new(Shared {
        target: target.clone(),
        body: body.clone(),
        api_key: opts.api_key.clone(),
        deadline: start + opts.duration,
        writes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let ticker = tokio::spawn(progress(Arc::clone(&sh), start));
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|_| tokio::spawn(connection(Arc::clone(&sh))))
        .collect();
    let mut latencies = Vec::new();
    let mut durable = DurableCounts::default();
    for t in tasks {
        match t.await {
            Ok(c) => {
                latencies.extend(c.latencies);
                durable.yes += c.durable.yes;
                durable.no += c.durable.no;
                durable.unknown += c.durable.unknown;
            }
            Err(e) => sh.error(&format!("connection task failed: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    ticker.abort();
    let cpu = match (opts.server_pid, cpu_before) {
        (Some(pid), Some(b)) => Some(server_cpu(pid)? - b),
        _ => None,
    };
    let after = scrape(&target, opts).await;
    let writes = sh.writes.load(Ordering::Relaxed);
    let (records, fsyncs) = match (before, after) {
        (Some((r0, f0)), Some((r1, f1))) => {
            (Some(r1.saturating_sub(r0)), Some(f1.saturating_sub(f0)))
        }
        _ => (None, None),
    };
    Ok(HttpReport {
        machine: Machine::probe(),
        url: opts.url.clone(),
        namespace: opts.namespace.clone(),
        concurrency: opts.concurrency,
        payload_bytes: opts.payload_bytes,
        body_bytes: body.len(),
        duration_secs: opts.duration.as_secs_f64(),
        elapsed_secs: elapsed,
        writes,
        errors: sh.errors.load(Ordering::Relaxed),
        writes_per_s: writes as f64 / elapsed.max(1e-9),
        latency: Summary::of(latencies),
        durable,
        server_cpu_secs: cpu,
        server_cpu_us_per_write: cpu.filter(|_| writes > 0).map(|c| c * 1e6 / writes as f64),
        records_appended: records,
        fsyncs,
        messages_per_fsync: records
            .zip(fsyncs)
            .and_then(|(r, f)| (f > 0).then(|| r as f64 / f as f64)),
    })
}

/// The table printed after a run.
#[must_use]
pub fn render(r: &HttpReport) -> String {
    use std::fmt::Write as _;
    let ms = |us: f64| us / 1e3;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "wald bench http — {} namespace {}, C = {}, {} payload ({} B body), {:.1} s; {} CPUs, load at end {}",
        r.url, r.namespace, r.concurrency, size_label(r.payload_bytes), r.body_bytes,
        r.elapsed_secs, r.machine.nproc, r.machine.loadavg
    );
    let _ = writeln!(
        o,
        "{:>10} {:>9} {:>7} | {:>8} {:>8} {:>8} {:>8} | durable true/false/unknown",
        "writes/s", "writes", "errors", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    let _ = writeln!(
        o,
        "{:>10.0} {:>9} {:>7} | {:>8.2} {:>8.2} {:>8.2} {:>8.2} | {}/{}/{}",
        r.writes_per_s,
        r.writes,
        r.errors,
        ms(r.latency.p50_us),
        ms(r.latency.p99_us),
        ms(r.latency.p999_us),
        ms(r.latency.max_us),
        r.durable.yes,
        r.durable.no,
        r.durable.unknown
    );
    match (r.server_cpu_us_per_write, r.server_cpu_secs) {
        (Some(per), Some(total)) => {
            let _ = writeln!(
                o,
                "server CPU: {} per write ({total:.2} s user+sys over the run)",
                us_label(per)
            );
        }
        _ => {
            let _ = writeln!(o, "server CPU: not measured (give --server-pid)");
        }
    }
    match (r.messages_per_fsync, r.records_appended, r.fsyncs) {
        (Some(m), Some(rec), Some(f)) => {
            let _ = writeln!(
                o,
                "batching: {m:.1} messages per fsync ({rec} records appended, {f} fsyncs in namespace {})",
                r.namespace
            );
        }
        _ => {
            let _ = writeln!(
                o,
                "batching: unknown (no fsync counted in {}/metrics)",
                r.url
            );
        }
    }
    o
}

/// Runs `wald bench http`: progress on stderr, the table and a JSON line on stdout, the
/// JSON to `opts.json` too when given.
pub fn run_http(opts: &HttpOptions) -> Result<HttpReport, HttpBenchError> {
    // Open the JSON file first: a bad path should fail now, not after the run.
    let file = match &opts.json {
        Some(path) => Some(
            std::fs::File::create(path).map_err(|source| HttpBenchError::File {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-http")
        .build()
        .map_err(HttpBenchError::Runtime)?;
    let report = rt.block_on(measure(opts))?;
    print!("{}", render(&report));
    if let (Some(mut f), Some(path)) = (file, &opts.json) {
        let pretty = serde_json::to_string_pretty(&report)? + "\n";
        f.write_all(pretty.as_bytes())
            .map_err(|source| HttpBenchError::File {
                path: path.clone(),
                source,
            })?;
        eprintln!("JSON written to {}", path.display());
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_prefix() {
        let t = parse_url("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base.as_str()),
            ("127.0.0.1", 3000, "")
        );
        let t = parse_url("http://[::1]/wald/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base.as_str()),
            ("::1", 80, "/wald")
        );
        assert_eq!(t.authority, "[::1]");
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("127.0.0.1:3000").is_err());
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn the_payload_json_has_the_asked_size() {
        let b = body("ns", 1024).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["payload"].to_string().len(), 1024);
        assert_eq!(v["namespace"], "ns");
        let small: serde_json::Value = serde_json::from_slice(&body("ns", 1).unwrap()).unwrap();
        assert_eq!(small["payload"]["data"], "");
    }

    #[test]
    fn metrics_are_summed_per_namespace_and_durable_is_found() {
        let text = "# HELP x\nwald_log_fsyncs{namespace=\"a\",partition=\"0\"} 3\n\
                    wald_log_fsyncs{namespace=\"a\",partition=\"1\"} 4\n\
                    wald_log_fsyncs{namespace=\"ab\",partition=\"0\"} 100\n\
                    wald_log_fsyncs_other{namespace=\"a\",partition=\"0\"} 100\n";
        assert_eq!(sum_metric(text, "wald_log_fsyncs", "a"), Some(7));
        assert_eq!(sum_metric(text, "wald_log_fsyncs", "zz"), None);
        assert_eq!(
            durable_of(br#"{"durable":"true","messageId":"m"}"#),
            Some(&b"true"[..])
        );
        assert_eq!(durable_of(br#"{"messageId":"m"}"#), None);
    }
}

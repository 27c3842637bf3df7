//! `wald bench http`: an HTTP load generator against a running server.
//!
//! N keep-alive HTTP/1.1 connections, each sending `POST {url}/api/v1/wal/write` (or, with
//! `--batch N`, `POST {url}/api/v1/wal/write/batch` with N messages) and waiting for the
//! answer before the next (so N requests are in flight). A 202 is a write (N writes with
//! `--batch N`); anything else (or a broken connection) is an error, the first few printed.
//! Progress once per second on stderr; a table and one JSON line on stdout at the end. With
//! `--server-pid` the server's CPU per write (from `/proc/PID/stat`), and from `{url}/metrics`
//! scraped before and after, the messages per fsync of the namespace.
//!
//! The load shares the machine with the server under test, so the hot loop is lean, like
//! redis-benchmark's: one thread (a current-thread runtime), one task per connection over a
//! raw `TcpStream`, the request's bytes built once and written as they are, the answer read
//! into a reused buffer and parsed by hand (status line, headers up to the blank line,
//! `Content-Length`, `Connection: close`; a chunked answer is an error). It is still a real
//! HTTP/1.1 client: the latency runs from just before the request is written to the whole
//! answer read. The setup calls and the `/metrics` scrapes, not hot, go through hyper.

use std::io::Write as _;
use std::ops::Range;
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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::stats::{cpu_secs, nanos, pid_cpu_secs, size_label, us_label, Summary};
use super::Machine;

/// How many error answers are printed (the rest are only counted).
const ERRORS_SHOWN: u64 = 5;

/// The most messages in one `--batch` request (the server's limit).
pub const MAX_BATCH: usize = 1000;

/// An answer's status line and headers longer than this are an error.
const MAX_HEAD: usize = 64 << 10;

/// An answer's `Content-Length` above this is an error (a batch of 1000 answers ~250 KB).
const MAX_BODY: usize = 64 << 20;

/// Free room kept in a connection's read buffer before each read.
const READ_CHUNK: usize = 16 << 10;

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
    /// Messages per request: 1 posts `/api/v1/wal/write`; 2..=1000 post
    /// `/api/v1/wal/write/batch` with this many copies of the message.
    pub batch: usize,
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
    /// Messages per request (1: `/api/v1/wal/write`; more: `/api/v1/wal/write/batch`).
    pub batch: usize,
    /// Request body bytes per request (per write when `batch` is 1).
    pub body_bytes: usize,
    /// Sending time asked for, seconds.
    pub duration_secs: f64,
    /// From the first request to the last answer, seconds.
    pub elapsed_secs: f64,
    /// Messages acknowledged: `batch` per 202 answer.
    pub writes: u64,
    /// Requests answered 202 (`writes` / `batch`).
    pub requests: u64,
    /// Other answers (and 202s whose results do not number `batch`) and broken connections.
    pub errors: u64,
    /// Writes (messages) per second.
    pub writes_per_s: f64,
    /// Latency of the 202 answers (from just before the request is written to the whole
    /// answer read), microseconds; per request.
    pub latency: Summary,
    /// The acknowledged messages by `durable`.
    pub durable: DurableCounts,
    /// Server CPU seconds (user + system) over the run, with `--server-pid`.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU microseconds per write (per message), with `--server-pid`.
    pub server_cpu_us_per_write: Option<f64>,
    /// This process's CPU seconds (user + system, from `/proc/self/stat`) over the run: the
    /// load generator's own cost. When the server runs in the same process (the tests), the
    /// server's CPU is included.
    pub client_cpu_secs: Option<f64>,
    /// `client_cpu_secs` in microseconds per write (per message); the server's included when
    /// it runs in this process.
    pub client_cpu_us_per_write: Option<f64>,
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

/// The batch route's body: `{"messages":[M,M,…]}`, `n` copies of the single write's body.
fn batch_body(message: &[u8], n: usize) -> Bytes {
    let mut b = Vec::with_capacity(16 + n * (message.len() + 1));
    b.extend_from_slice(br#"{"messages":["#);
    for i in 0..n {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(message);
    }
    b.extend_from_slice(b"]}");
    Bytes::from(b)
}

/// The bytes of a whole `POST` request (head and body), written as they are for each write.
fn post_request(t: &Target, path: &str, api_key: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        t.base,
        t.authority,
        body.len()
    );
    if let Some(k) = api_key {
        head.push_str("X-API-Key: ");
        head.push_str(k);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    req
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Sender, HttpBenchError> {
    let stream = connect_raw(t).await?;
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
        sum_metric(&text, "wald_log_records_appended_total", &opts.namespace)?,
        sum_metric(&text, "wald_log_fsyncs_total", &opts.namespace)?,
    ))
}

/// Counts shared by the connections.
struct Shared {
    target: Target,
    /// The whole request, head and body.
    request: Vec<u8>,
    /// Messages per request.
    batch: usize,
    deadline: Instant,
    /// Messages acknowledged.
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
    /// One per request answered 202.
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

/// Counts the results of a batch answer (`{"results":[{…,"messageId":…,"durable":"…"},…]}`)
/// without parsing the whole JSON: one result per `"messageId":`, each `"durable":"…"` by
/// its value (a result without one is `unknown`). Fewer or more results than `expected` is
/// an error.
fn batch_durable(body: &[u8], expected: usize) -> Result<DurableCounts, String> {
    const ID: &[u8] = br#""messageId":"#;
    const DURABLE: &[u8] = br#""durable":""#;
    let mut d = DurableCounts::default();
    let mut results = 0u64;
    let mut i = 0;
    while let Some(q) = body[i..].iter().position(|&b| b == b'"') {
        let at = i + q;
        let rest = &body[at..];
        if rest.starts_with(ID) {
            results += 1;
            i = at + ID.len();
        } else if let Some(value) = rest.strip_prefix(DURABLE) {
            let Some(end) = value.iter().position(|&b| b == b'"') else {
                break;
            };
            match &value[..end] {
                b"true" => d.yes += 1,
                b"false" => d.no += 1,
                _ => d.unknown += 1,
            }
            i = at + DURABLE.len() + end + 1;
        } else {
            i = at + 1;
        }
    }
    if results != expected as u64 {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        return Err(format!(
            "202 with {results} results for {expected} messages: {text}"
        ));
    }
    let counted = d.yes + d.no + d.unknown;
    if counted > results {
        return Err(format!(
            "202 with {counted} \"durable\" fields for {results} results"
        ));
    }
    d.unknown += results - counted;
    Ok(d)
}

/// The head of an answer: status line and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// The status code.
    status: u16,
    /// Bytes of the status line and headers, the blank line included.
    len: usize,
    /// Bytes of the body (`Content-Length`; 0 for 1xx, 204 and 304).
    body: usize,
    /// The server closes the connection after this answer (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    close: bool,
}

/// Parses the head of an HTTP/1.x answer at the start of `buf`: `Ok(None)` while it is
/// incomplete (no blank line yet). A body framed otherwise than by `Content-Length` (chunked,
/// or up to the close) is an error: the server does not send those for these routes.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("an answer head longer than {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let bad_status = || {
        format!(
            "not an HTTP/1.x status line: {:?}",
            String::from_utf8_lossy(&status_line[..status_line.len().min(100)])
        )
    };
    let version = status_line
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.first().copied())
        .filter(|v| matches!(v, b'0' | b'1'))
        .ok_or_else(bad_status)?;
    let code = status_line.get(8..12).ok_or_else(bad_status)?;
    if code[0] != b' '
        || !code[1..].iter().all(u8::is_ascii_digit)
        || status_line.get(12).is_some_and(|&b| b != b' ')
    {
        return Err(bad_status());
    }
    let status = code[1..]
        .iter()
        .fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'));
    let mut close = version == b'0';
    let mut length: Option<usize> = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "a header line without ':': {:?}",
                String::from_utf8_lossy(&line[..line.len().min(100)])
            ));
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| format!("Content-Length {:?}", String::from_utf8_lossy(value)))?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(format!(
                "the answer has Transfer-Encoding: {} (this load generator reads only \
                 Content-Length bodies; chunked answers are not supported)",
                String::from_utf8_lossy(value)
            ));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == b'0' {
                    close = false;
                }
            }
        }
    }
    let body = match length {
        Some(n) if n > MAX_BODY => return Err(format!("Content-Length {n} over {MAX_BODY}")),
        Some(n) => n,
        None if status < 200 || status == 204 || status == 304 => 0,
        None => return Err(format!("a {status} answer without Content-Length")),
    };
    Ok(Some(Head {
        status,
        len: end + 4,
        body,
        close,
    }))
}

/// Reads more of the answer into `buf`, at its end.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(READ_CHUNK);
    match s.read_buf(buf).await {
        Ok(0) if buf.is_empty() => Err("the server closed the connection without answering".into()),
        Ok(0) => Err("the server closed the connection in the middle of an answer".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading the answer: {e}")),
    }
}

/// Writes `request` and reads its answer into `buf` (after any bytes already there): the
/// answer's head, its body being `buf[head.len..head.len + head.body]`. Interim 1xx answers
/// are skipped.
async fn round_trip(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<Head, String> {
    s.write_all(request)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    loop {
        let head = loop {
            if let Some(h) = parse_head(buf)? {
                break h;
            }
            read_more(s, buf).await?;
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            buf.drain(..head.len);
            continue;
        }
        while buf.len() < head.len + head.body {
            read_more(s, buf).await?;
        }
        return Ok(head);
    }
}

/// A connection of the hot loop: TCP_NODELAY, no HTTP machinery.
async fn connect_raw(t: &Target) -> Result<TcpStream, HttpBenchError> {
    let stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|source| HttpBenchError::Connect {
            addr: format!("{}:{}", t.host, t.port),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One connection: the request, its answer, again until the deadline.
async fn connection(sh: Arc<Shared>) -> Conn {
    let mut out = Conn::default();
    let mut stream: Option<TcpStream> = None;
    // The answers, read into one buffer reused for the whole run.
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ_CHUNK);
    while Instant::now() < sh.deadline {
        let s = match stream {
            Some(ref mut s) => s,
            None => match connect_raw(&sh.target).await {
                Ok(s) => {
                    buf.clear();
                    stream.insert(s)
                }
                Err(e) => {
                    sh.error(&e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let head = match round_trip(s, &sh.request, &mut buf).await {
            Ok(h) => h,
            Err(e) => {
                // A broken connection: count it, open another.
                sh.error(&e);
                stream = None;
                continue;
            }
        };
        let latency = nanos(t0.elapsed());
        let answer: Range<usize> = head.len..head.len + head.body;
        let body = &buf[answer.clone()];
        if head.status == 202 {
            let counted = if sh.batch == 1 {
                let mut d = DurableCounts::default();
                match durable_of(body) {
                    Some(b"true") => d.yes = 1,
                    Some(b"false") => d.no = 1,
                    _ => d.unknown = 1,
                }
                Ok(d)
            } else {
                batch_durable(body, sh.batch)
            };
            match counted {
                Ok(d) => {
                    out.latencies.push(latency);
                    sh.writes.fetch_add(sh.batch as u64, Ordering::Relaxed);
                    out.durable.yes += d.yes;
                    out.durable.no += d.no;
                    out.durable.unknown += d.unknown;
                }
                Err(e) => sh.error(&e),
            }
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
            let status = match StatusCode::from_u16(head.status) {
                Ok(s) => s.to_string(),
                Err(_) => head.status.to_string(),
            };
            sh.error(&format!("{status}: {text}"));
        }
        // Keep what follows the answer (nothing, with one request in flight).
        buf.drain(..answer.end);
        if head.close {
            stream = None;
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

/// The options' ranges (the API key goes into the request bytes as it is).
fn check(opts: &HttpOptions) -> Result<(), HttpBenchError> {
    if opts.concurrency == 0 || opts.concurrency > 100_000 {
        return Err(HttpBenchError::Options(
            "--concurrency must be 1..=100000".into(),
        ));
    }
    if opts.duration.is_zero() {
        return Err(HttpBenchError::Options("--duration must be above 0".into()));
    }
    if opts.batch == 0 || opts.batch > MAX_BATCH {
        return Err(HttpBenchError::Options(format!(
            "--batch must be 1..={MAX_BATCH}"
        )));
    }
    if let Some(k) = &opts.api_key {
        if !k.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(HttpBenchError::Options(
                "--api-key must be printable ASCII".into(),
            ));
        }
    }
    Ok(())
}

/// Runs the connections until the deadline: the latencies of the 202s, the durable counts.
async fn load(sh: &Arc<Shared>, concurrency: usize) -> (Vec<u32>, DurableCounts) {
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(connection(Arc::clone(sh))))
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
    (latencies, durable)
}

/// Runs the load and measures it (no printing but progress and errors on stderr).
pub async fn measure(opts: &HttpOptions) -> Result<HttpReport, HttpBenchError> {
    check(opts)?;
    let target = parse_url(&opts.url)?;
    let message = body(&opts.namespace, opts.payload_bytes)?;
    let (path, body) = if opts.batch == 1 {
        ("/api/v1/wal/write", message)
    } else {
        ("/api/v1/wal/write/batch", batch_body(&message, opts.batch))
    };
    let request = post_request(&target, path, opts.api_key.as_deref(), &body);
    // Fail early, with a clear message, on an unreachable server or a missing namespace.
    let status_path = format!("/api/v1/wal/namespace/{}/status", opts.namespace);
    let (status, _) = once(&target, &status_path, opts.api_key.as_deref()).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(HttpBenchError::NoNamespace(opts.namespace.clone()));
    }
    let before = scrape(&target, opts).await;
    let cpu_before = opts.server_pid.map(server_cpu).transpose()?;
    eprintln!(
        "wald bench http: {} namespace {}, {} connections, {} payload{}, {:.1} s",
        opts.url,
        opts.namespace,
        opts.concurrency,
        size_label(opts.payload_bytes),
        if opts.batch > 1 {
            format!(", {} messages per request ({path})", opts.batch)
        } else {
            String::new()
        },
        opts.duration.as_secs_f64()
    );
    let client_before = cpu_secs(&[]).ok();
    let start = Instant::now();
    let sh = Arc::new(Shared {
        target: target.clone(),
        request,
        batch: opts.batch,
        deadline: start + opts.duration,
        writes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let ticker = tokio::spawn(progress(Arc::clone(&sh), start));
    let (latencies, durable) = load(&sh, opts.concurrency).await;
    let elapsed = start.elapsed().as_secs_f64();
    ticker.abort();
    let client_cpu = client_before
        .zip(cpu_secs(&[]).ok())
        .map(|(b, a)| (a - b).max(0.0));
    let cpu = match (opts.server_pid, cpu_before) {
        (Some(pid), Some(b)) => Some(server_cpu(pid)? - b),
        _ => None,
    };
    let after = scrape(&target, opts).await;
    let writes = sh.writes.load(Ordering::Relaxed);
    let requests = latencies.len() as u64;
    let per_write =
        |secs: Option<f64>| secs.filter(|_| writes > 0).map(|c| c * 1e6 / writes as f64);
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
        batch: opts.batch,
        body_bytes: body.len(),
        duration_secs: opts.duration.as_secs_f64(),
        elapsed_secs: elapsed,
        writes,
        requests,
        errors: sh.errors.load(Ordering::Relaxed),
        writes_per_s: writes as f64 / elapsed.max(1e-9),
        latency: Summary::of(latencies),
        durable,
        server_cpu_secs: cpu,
        server_cpu_us_per_write: per_write(cpu),
        client_cpu_secs: client_cpu,
        client_cpu_us_per_write: per_write(client_cpu),
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
    let batch = if r.batch > 1 {
        format!(" × {} per request", r.batch)
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "wald bench http — {} namespace {}, C = {}, {} payload{batch} ({} B body), {:.1} s; {} CPUs, load at end {}",
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
    let client = match (r.client_cpu_us_per_write, r.client_cpu_secs) {
        (Some(per), Some(total)) => format!(
            "; load generator (this process) {} per write ({total:.2} s)",
            us_label(per)
        ),
        _ => String::new(),
    };
    match (r.server_cpu_us_per_write, r.server_cpu_secs) {
        (Some(per), Some(total)) => {
            let _ = writeln!(
                o,
                "server CPU: {} per write ({total:.2} s user+sys over the run){client}",
                us_label(per)
            );
        }
        _ => {
            let _ = writeln!(o, "server CPU: not measured (give --server-pid){client}");
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
    if r.batch > 1 {
        let _ = writeln!(
            o,
            "batch route: {} messages per request, {} requests ({:.0}/s); the latency is per request",
            r.batch,
            r.requests,
            r.requests as f64 / r.elapsed_secs.max(1e-9)
        );
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
    // One thread, like redis-benchmark's event loop: the load generator shares the machine
    // with the server under test, and cross-thread wake-ups cost it CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
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
        let text = "# HELP x\nwald_log_fsyncs_total{namespace=\"a\",partition=\"0\"} 3\n\
                    wald_log_fsyncs_total{namespace=\"a\",partition=\"1\"} 4\n\
                    wald_log_fsyncs_total{namespace=\"ab\",partition=\"0\"} 100\n\
                    wald_log_fsyncs_other{namespace=\"a\",partition=\"0\"} 100\n";
        assert_eq!(sum_metric(text, "wald_log_fsyncs_total", "a"), Some(7));
        assert_eq!(sum_metric(text, "wald_log_fsyncs_total", "zz"), None);
        assert_eq!(
            durable_of(br#"{"durable":"true","messageId":"m"}"#),
            Some(&b"true"[..])
        );
        assert_eq!(durable_of(br#"{"messageId":"m"}"#), None);
    }

    #[test]
    fn a_batch_body_is_n_copies_of_the_single_write() {
        let one = body("ns", 64).unwrap();
        let b = batch_body(&one, 3);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let single: serde_json::Value = serde_json::from_slice(&one).unwrap();
        let messages = v["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert!(messages.iter().all(|m| *m == single), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 1, "only `messages`: {v}");
        assert_eq!(b.len(), r#"{"messages":[]}"#.len() + 3 * one.len() + 2);
        let v: serde_json::Value = serde_json::from_slice(&batch_body(&one, 1)).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn batch_results_are_counted_by_durable_and_must_number_n() {
        let result = |durable: &str| {
            serde_json::json!({
                "messageId": "wal_1", "durable": durable, "message": "Message accepted for processing",
                "timestamp": "2026-01-01T00:00:00Z", "namespace": "bench", "partition": 0,
                "offset": 7, "duplicate": false
            })
        };
        let answer = |rs: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({ "results": rs })).unwrap()
        };
        let b = answer(vec![
            result("true"),
            result("false"),
            result("unknown"),
            result("true"),
        ]);
        let d = batch_durable(&b, 4).unwrap();
        assert_eq!((d.yes, d.no, d.unknown), (2, 1, 1));
        // One result short or one too many: an error naming the counts.
        let e = batch_durable(&b, 5).unwrap_err();
        assert!(e.contains("4 results for 5 messages"), "{e}");
        assert!(batch_durable(&b, 3).is_err());
        // A result without `durable` counts as unknown.
        let b = answer(vec![
            result("true"),
            serde_json::json!({ "messageId": "wal_2", "offset": 8 }),
        ]);
        let d = batch_durable(&b, 2).unwrap();
        assert_eq!((d.yes, d.no, d.unknown), (1, 0, 1));
        // An error envelope is no batch answer.
        assert!(batch_durable(br#"{"error":{"code":"X"}}"#, 1).is_err());
    }

    #[test]
    fn the_request_bytes_are_a_whole_http_request() {
        let t = parse_url("http://127.0.0.1:3000/p").unwrap();
        let r = post_request(&t, "/api/v1/wal/write", Some("k1"), b"{}");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /p/api/v1/wal/write HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nX-API-Key: k1\r\n\r\n{}"
        );
        let r = post_request(&t, "/x", None, b"");
        assert!(String::from_utf8(r)
            .unwrap()
            .ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn answer_heads_parse_with_their_framing() {
        let a = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nCONTENT-LENGTH: 5\r\n\r\nhello";
        let h = parse_head(a).unwrap().unwrap();
        assert_eq!(
            h,
            Head {
                status: 202,
                len: a.len() - 5,
                body: 5,
                close: false
            }
        );
        // Incomplete: more to read.
        assert_eq!(parse_head(&a[..20]).unwrap(), None);
        assert_eq!(parse_head(b"").unwrap(), None);
        // Connection: close, in a list, any case.
        let h = parse_head(
            b"HTTP/1.1 400 Bad Request\r\nConnection: Upgrade, CLOSE\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.body, h.close), (400, 0, true));
        // HTTP/1.0 closes unless kept alive.
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
            .unwrap()
            .unwrap();
        assert!(h.close);
        let h =
            parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx")
                .unwrap()
                .unwrap();
        assert!(!h.close);
        // No body without Content-Length for 204, 304, 1xx; an error otherwise.
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap()
                .unwrap()
                .body,
            0
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            100
        );
        let e = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err();
        assert!(e.contains("without Content-Length"), "{e}");
        // Chunked answers are refused with a clear message.
        let e =
            parse_head(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err();
        assert!(e.contains("chunked"), "{e}");
        // Malformed heads.
        assert!(parse_head(b"HTTP/2 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.x 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 20x OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
        // A status line with no reason phrase.
        assert_eq!(
            parse_head(b"HTTP/1.1 202\r\ncontent-length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            202
        );
    }
}

//! The HTTP(S) client of the operator commands: one request at a time to `--url`, the key
//! in `X-API-Key`, JSON in and out, and failures sorted into exit codes a script can tell
//! apart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Exit codes of the operator commands (also in `wald --help`).
pub mod exit {
    /// Anything else (an unexpected answer, a server error).
    pub const OTHER: u8 = 1;
    /// The server cannot be reached, or did not answer in time.
    pub const UNREACHABLE: u8 = 3;
    /// 401 or 403: no key, a wrong key, or a key without the right.
    pub const DENIED: u8 = 4;
    /// 404: no such namespace, message, key or entry.
    pub const NOT_FOUND: u8 = 5;
    /// 409: exists already, or not in a state that allows it.
    pub const CONFLICT: u8 = 6;
    /// 400, 413, 415, 416, 422: the input was refused (the message names the field).
    pub const REJECTED: u8 = 7;
    /// 429 or 503: rate limited, overloaded, shutting down or a failed disk: retry later.
    pub const UNAVAILABLE: u8 = 8;
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The server's JSON (one document, or one line per item when following), for scripts.
    Json,
}

/// Options shared by every command that talks to a server.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server: `http://` or `https://`.
    #[arg(
        long,
        env = "WALD_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// The admin key (administration, and every namespace).
    #[arg(long, env = "WALD_ADMIN_KEY", hide_env_values = true, global = true)]
    pub admin_key: Option<String>,
    /// An API key, used instead of the admin key (writes and reads of its namespaces).
    #[arg(long, env = "WALD_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Extra trusted CA certificates (PEM) for an `https://` server.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,
}

/// A failed command: the message for stderr and its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code ([`exit`]).
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of kind `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Prints the message and gives the exit code.
    #[must_use]
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// The exit code of an HTTP status that is not a success.
#[must_use]
pub fn code_of(status: u16) -> u8 {
    match status {
        401 | 403 => exit::DENIED,
        404 => exit::NOT_FOUND,
        409 => exit::CONFLICT,
        400 | 413 | 415 | 416 | 422 | 431 => exit::REJECTED,
        429 | 503 => exit::UNAVAILABLE,
        _ => exit::OTHER,
    }
}

/// The client of one server.
pub struct Client {
    http: Hyper<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    key: String,
    timeout: Duration,
    /// How results are printed.
    pub output: Output,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The TLS roots: the system's, plus `--ca-file`.
fn tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, Failure> {
    let extra = match ca_file {
        Some(path) => crate::egress::read_ca_file(path)
            .map_err(|e| Failure::new(exit::OTHER, format!("--ca-file: {e}")))?,
        None => Vec::new(),
    };
    let (config, refused) = crate::egress::client_tls_config(extra)
        .map_err(|e| Failure::new(exit::OTHER, format!("--ca-file: {e}")))?;
    match refused.first() {
        Some(e) => Err(Failure::new(
            exit::OTHER,
            format!("--ca-file: a certificate is not usable: {e}"),
        )),
        None => Ok(config),
    }
}

impl Client {
    /// A client for `r.url` with the admin key, or the API key when given.
    ///
    /// # Errors
    /// A URL that is neither `http://` nor `https://`, or a bad `--ca-file`.
    pub fn new(r: &Remote) -> Result<Self, Failure> {
        let base = r.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::new(
                exit::OTHER,
                format!("--url {base:?}: give http://HOST:PORT or https://HOST:PORT"),
            ));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(r.timeout.max(1))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls(r.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let key = r
            .key
            .clone()
            .or_else(|| r.admin_key.clone())
            .unwrap_or_default();
        Ok(Self {
            http: Hyper::builder(TokioExecutor::new()).build(connector),
            base,
            key,
            timeout: Duration::from_secs(r.timeout.max(1)),
            output: r.output,
        })
    }

    /// One request; the answer's status and body (JSON when it is JSON, else a string).
    ///
    /// # Errors
    /// The server cannot be reached or does not answer in time.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failure> {
        self.call_with(method, path, body, &[]).await
    }

    /// [`Client::call`] with extra request headers.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), Failure> {
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                "user-agent",
                concat!("wald-cli/", env!("CARGO_PKG_VERSION")),
            );
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if !self.key.is_empty() {
            req = req.header("x-api-key", &self.key);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Failure::new(exit::OTHER, format!("building the request: {e}")))?;
        let unreachable = |e: String| {
            Failure::new(
                exit::UNREACHABLE,
                format!("{method} {}{path}: {e}", self.base),
            )
        };
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", self.timeout.as_secs())))?
            .map_err(|e| unreachable(error_text(&e)))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer stopped".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, json))
    }

    /// [`Client::call`] where any status outside 2xx is a [`Failure`] with its code and the
    /// server's message.
    ///
    /// # Errors
    /// As [`Client::call`], and any answer that is not a success.
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let (status, json) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        Err(Failure::new(code_of(status), server_message(status, &json)))
    }
}

/// The error chain of a connection failure, as one line.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The server's error message: the envelope's `error.message` (and the failing fields).
#[must_use]
pub fn server_message(status: u16, json: &Value) -> String {
    let msg = json["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| match json {
            Value::String(s) if !s.is_empty() => s.clone(),
            other => other.to_string(),
        });
    let code = json["error"]["code"].as_str().unwrap_or("");
    format!("{status} {code}: {msg}").replace("  ", " ")
}

/// Percent-encodes one path segment (names and ids are restricted, but be safe).
#[must_use]
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints rows as aligned columns under `headers`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Prints a JSON value, pretty.
pub fn json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A JSON value as a short cell (strings unquoted, absent as `-`).
#[must_use]
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

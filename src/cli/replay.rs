//! `wald replay`: asks a running server to re-deliver a range of a namespace's log to its
//! targets (the admin API's `POST /api/v1/namespaces/{ns}/replay`), shows progress while the
//! task runs, and prints a summary. Exit status 0 only when every message was delivered.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::CliError;

/// Arguments of `wald replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The namespace.
    #[arg(long)]
    pub namespace: String,
    /// First offset to re-deliver.
    #[arg(
        long,
        conflicts_with = "from_time",
        required_unless_present = "from_time"
    )]
    pub from_offset: Option<u64>,
    /// Or: the first record at or after this time (ms since the epoch or RFC 3339).
    #[arg(long)]
    pub from_time: Option<String>,
    /// Last offset to re-deliver (inclusive). Default: the log's end.
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// Only this partition. Default: all.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Only the target with this identifier. Default: every target of each message.
    #[arg(long)]
    pub target: Option<String>,
    /// The server.
    #[arg(long, env = "WALD_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// The admin key.
    #[arg(long, env = "WALD_ADMIN_KEY")]
    pub admin_key: Option<String>,
}

/// Runs `wald replay`.
pub fn run(a: ReplayArgs) -> Result<ExitCode, CliError> {
    let from_time = match &a.from_time {
        None => None,
        Some(t) => Some(match t.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => crate::model::time::parse_rfc3339_ms(t)
                .ok_or("--from-time: give ms since the epoch or an RFC 3339 time")?,
        }),
    };
    let mut body = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        if !v.is_null() {
            body.insert(k.to_owned(), v);
        }
    };
    put("fromOffset", serde_json::json!(a.from_offset));
    put("fromTime", serde_json::json!(from_time));
    put("toOffset", serde_json::json!(a.to_offset));
    put("partition", serde_json::json!(a.partition));
    put("target", serde_json::json!(a.target));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let base = a.url.trim_end_matches('/').to_owned();
        let key = a.admin_key.unwrap_or_default();
        let path = format!("/api/v1/namespaces/{}/replay", a.namespace);
        let (status, task) = request(
            &base,
            "POST",
            &path,
            &key,
            Some(serde_json::Value::Object(body)),
        )
        .await?;
        if status != 202 {
            return Err(format!("the server answered {status}: {task}").into());
        }
        let id = task["id"]
            .as_str()
            .ok_or("the server's answer has no task id")?
            .to_owned();
        eprintln!("replay task {id} started");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, t) =
                request(&base, "GET", &format!("/api/v1/tasks/{id}"), &key, None).await?;
            if status != 200 {
                return Err(format!("reading task {id}: {status}: {t}").into());
            }
            eprintln!(
                "  {} / {} messages, {} delivered, {} failed",
                t["done"], t["total"], t["succeeded"], t["failed"]
            );
            if t["finished"].as_bool() == Some(true) {
                println!("{}", serde_json::to_string_pretty(&t)?);
                let ok = t["failed"].as_u64() == Some(0) && t.get("error").is_none();
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
        }
    })
}

/// One HTTP/1.1 request with the admin key; the answer's status and JSON body.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), CliError> {
    let authority = base
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority)
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

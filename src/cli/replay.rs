//! `wald replay`: asks a running server to re-deliver a range of a namespace's log to its
//! targets (the admin API's `POST /api/v1/namespaces/{ns}/replay`), shows progress while the
//! task runs, and prints a summary. Exit status 0 only when every message was delivered.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

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
        let mut progress = super::remote::progress::Progress::new(0, "messages");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, t) =
                request(&base, "GET", &format!("/api/v1/tasks/{id}"), &key, None).await?;
            if status != 200 {
                return Err(format!("reading task {id}: {status}: {t}").into());
            }
            progress.set_total(t["total"].as_u64().unwrap_or(0));
            progress.set(t["done"].as_u64().unwrap_or(0));
            if t["finished"].as_bool() == Some(true) {
                progress.finish();
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

/// One request with the admin key through the operator client (`http://` or `https://`);
/// the answer's status and JSON body.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), CliError> {
    let remote = super::remote::Remote {
        url: base.to_owned(),
        admin_key: Some(key.to_owned()),
        key: None,
        output: super::remote::Output::Table,
        ca_file: None,
        timeout: 30,
    };
    let client = super::remote::client::Client::new(&remote).map_err(|f| f.message)?;
    client
        .call(method, path, body.as_ref())
        .await
        .map_err(|f| f.message.into())
}

//! `wald write`, `wald msg get`, `wald tail`: the write and read API from a terminal.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{self, cell, seg, Client, Failure, Output};
use super::progress::Progress;

/// Messages per batch request (the API's most).
const BATCH: usize = 1000;

/// `wald write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The namespace.
    pub namespace: String,
    /// The payload: a JSON object. Default: read from stdin.
    pub payload: Option<String>,
    /// The partition key (messages with one key keep their order).
    #[arg(long)]
    pub partition_key: Option<String>,
    /// An idempotency key: a retry with it answers the first write.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Instead of one payload: a file of JSON lines (`-`: stdin), each a payload object or a
    /// whole message (`{"payload": ..., "partitionKey": ...}`), sent 1,000 per request.
    #[arg(long, conflicts_with_all = ["payload", "idempotency_key"])]
    pub batch: Option<String>,
}

/// `wald msg ...`.
#[derive(Debug, Subcommand)]
pub enum MsgCommand {
    /// A message by id: payload, partition, offset, delivery status.
    Get {
        /// The message id.
        id: String,
    },
}

/// `wald tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The namespace.
    pub namespace: String,
    /// The partition.
    #[arg(long, short = 'p', default_value_t = 0)]
    pub partition: u32,
    /// The first offset. Default: the first held.
    #[arg(long)]
    pub from_offset: Option<u64>,
    /// Keep waiting for new messages (until ctrl-c).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

fn answers_rows(results: &[Value]) -> Vec<Vec<String>> {
    results
        .iter()
        .map(|r| {
            vec![
                cell(&r["messageId"]),
                cell(&r["partition"]),
                cell(&r["offset"]),
                cell(&r["durable"]),
                cell(&r["duplicate"]),
            ]
        })
        .collect()
}

const WRITE_HEAD: [&str; 5] = ["MESSAGE ID", "PARTITION", "OFFSET", "DURABLE", "DUPLICATE"];

fn payload_of(text: &str, at: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::new(client::exit::REJECTED, format!("{at}: not JSON: {e}")))
}

/// Runs `wald write`.
pub async fn write(c: &Client, a: WriteArgs) -> Result<ExitCode, Failure> {
    if let Some(source) = &a.batch {
        return write_batch(c, &a, source).await;
    }
    let text = match &a.payload {
        Some(p) => p.clone(),
        None => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Failure::new(client::exit::OTHER, format!("reading stdin: {e}")))?;
            s
        }
    };
    let mut body = json!({ "namespace": a.namespace, "payload": payload_of(&text, "payload")? });
    if let Some(k) = &a.partition_key {
        body["partitionKey"] = json!(k);
    }
    let headers: Vec<(&str, &str)> = a
        .idempotency_key
        .as_deref()
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let (status, v) = c
        .call_with("POST", "/api/v1/wal/write", Some(&body), &headers)
        .await?;
    if !(200..300).contains(&status) {
        return Err(Failure::new(
            client::code_of(status),
            client::server_message(status, &v),
        ));
    }
    match c.output {
        Output::Json => client::json(&v),
        Output::Table => client::table(&WRITE_HEAD, &answers_rows(std::slice::from_ref(&v))),
    }
    Ok(ExitCode::SUCCESS)
}

async fn write_batch(c: &Client, a: &WriteArgs, source: &str) -> Result<ExitCode, Failure> {
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(source)
                .map_err(|e| Failure::new(client::exit::OTHER, format!("reading {source}: {e}")))?,
        ))
    };
    let mut messages = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line =
            line.map_err(|e| Failure::new(client::exit::OTHER, format!("reading {source}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = payload_of(&line, &format!("{source}:{}", i + 1))?;
        let mut m = if v.get("payload").is_some() {
            v
        } else {
            json!({ "payload": v })
        };
        m["namespace"] = json!(a.namespace);
        if let Some(k) = &a.partition_key {
            if m.get("partitionKey").is_none() {
                m["partitionKey"] = json!(k);
            }
        }
        messages.push(m);
    }
    let progress = Progress::new(messages.len() as u64, "messages");
    let mut results = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(BATCH) {
        let v = c
            .ok(
                "POST",
                "/api/v1/wal/write/batch",
                Some(&json!({ "messages": chunk })),
            )
            .await
            .map_err(|f| {
                Failure::new(
                    f.code,
                    format!("after {} messages written: {}", results.len(), f.message),
                )
            })?;
        results.extend(v["results"].as_array().cloned().unwrap_or_default());
        progress.set(results.len() as u64);
    }
    progress.finish();
    match c.output {
        Output::Json => client::json(&json!({ "results": results })),
        Output::Table => client::table(&WRITE_HEAD, &answers_rows(&results)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `wald msg ...`.
pub async fn msg(c: &Client, cmd: MsgCommand) -> Result<ExitCode, Failure> {
    let MsgCommand::Get { id } = cmd;
    let v = c
        .ok("GET", &format!("/api/v1/wal/messages/{}", seg(&id)), None)
        .await?;
    match c.output {
        Output::Json => client::json(&v),
        Output::Table => {
            let mut rows = Vec::new();
            if let Some(o) = v.as_object() {
                for (k, val) in o {
                    rows.push(vec![k.clone(), compact(val)]);
                }
            }
            client::table(&["FIELD", "VALUE"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs `wald tail`.
pub async fn tail(c: &Client, a: TailArgs) -> Result<ExitCode, Failure> {
    let mut from = a.from_offset;
    if c.output == Output::Table {
        client::table(&["OFFSET", "MESSAGE ID", "PAYLOAD"], &[]);
    }
    loop {
        let mut path = format!(
            "/api/v1/wal/namespace/{}/messages?partition={}&limit=100",
            seg(&a.namespace),
            a.partition
        );
        if let Some(f) = from {
            path.push_str(&format!("&fromOffset={f}"));
        }
        let page = c.ok("GET", &path, None).await?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            match c.output {
                Output::Json => println!("{m}"),
                Output::Table => println!(
                    "{}  {}  {}",
                    cell(&m["offset"]),
                    cell(&m["messageId"]),
                    compact(&m["payload"])
                ),
            }
        }
        let next = page["nextOffset"].as_u64();
        let moved = next.is_some() && next != from;
        if next.is_some() {
            from = next;
        }
        if messages.is_empty() || !moved {
            if !a.follow {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

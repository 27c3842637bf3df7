//! `wald dlq list|get|replay|discard`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{self, cell, seg, Client, Failure, Output};
use super::progress::Progress;

/// Dead-letter queue commands (admin key).
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Entries of a namespace's dead-letter queue.
    List {
        /// The namespace.
        namespace: String,
        /// `pending` (default), `replaying`, `replayed`, `discarded` or `all`.
        #[arg(long)]
        status: Option<String>,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One entry: its message, attempts and last error.
    Get {
        /// The namespace.
        namespace: String,
        /// The message id.
        id: String,
    },
    /// Re-delivers one entry (optionally with an edited payload), or `--all` since a time,
    /// following the task's progress.
    Replay {
        /// The namespace.
        namespace: String,
        /// The message id (or `--all`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every pending entry (since `--since`).
        #[arg(long)]
        all: bool,
        /// With `--all`: entries dead-lettered at or after this time (ms or RFC 3339).
        #[arg(long, requires = "all")]
        since: Option<String>,
        /// With an id: the payload to deliver instead (a JSON object).
        #[arg(long, conflicts_with = "all")]
        payload: Option<String>,
    },
    /// Discards one entry (recorded; asks for `--yes`).
    Discard {
        /// The namespace.
        namespace: String,
        /// The message id.
        id: String,
        /// Yes, discard it.
        #[arg(long)]
        yes: bool,
    },
}

fn base(ns: &str) -> String {
    format!("/api/v1/namespaces/{}/dlq", seg(ns))
}

/// Runs a DLQ command.
pub async fn run(c: &Client, cmd: DlqCommand) -> Result<ExitCode, Failure> {
    match cmd {
        DlqCommand::List {
            namespace,
            status,
            limit,
        } => {
            let mut path = format!("{}?limit={limit}", base(&namespace));
            if let Some(s) = status {
                path.push_str(&format!("&status={}", seg(&s)));
            }
            let v = c.ok("GET", &path, None).await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => {
                    let rows: Vec<Vec<String>> = v["entries"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|e| {
                                    vec![
                                        cell(&e["messageId"]),
                                        cell(&e["status"]),
                                        cell(&e["replays"]),
                                        cell(&e["reason"]),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    client::table(&["MESSAGE ID", "STATUS", "REPLAYS", "REASON"], &rows);
                }
            }
        }
        DlqCommand::Get { namespace, id } => {
            let v = c
                .ok("GET", &format!("{}/{}", base(&namespace), seg(&id)), None)
                .await?;
            client::json(&v);
        }
        DlqCommand::Replay {
            namespace,
            id: Some(id),
            payload,
            ..
        } => {
            let body = match payload {
                Some(p) => json!({ "payload": serde_json::from_str::<Value>(&p).map_err(|e| {
                    Failure::new(client::exit::REJECTED, format!("--payload: not JSON: {e}"))
                })? }),
                None => json!({}),
            };
            let v = c
                .ok(
                    "POST",
                    &format!("{}/{}/replay", base(&namespace), seg(&id)),
                    Some(&body),
                )
                .await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => println!("replayed {id}: {}", cell(&v["status"])),
            }
        }
        DlqCommand::Replay {
            namespace, since, ..
        } => {
            let body = match since {
                Some(s) => json!({ "since": s.parse::<u64>().map_or(json!(s), |ms| json!(ms)) }),
                None => json!({}),
            };
            let task = c
                .ok("POST", &format!("{}/replay", base(&namespace)), Some(&body))
                .await?;
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            return follow_task(c, &id).await;
        }
        DlqCommand::Discard { namespace, id, yes } => {
            if !yes {
                return Err(Failure::new(
                    client::exit::REJECTED,
                    format!("discarding {id} gives up its delivery: add --yes"),
                ));
            }
            let v = c
                .ok(
                    "DELETE",
                    &format!("{}/{}", base(&namespace), seg(&id)),
                    None,
                )
                .await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => println!("discarded {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a replay task to its end: a progress bar (or lines), then its summary; exit 0
/// only when every message was delivered.
async fn follow_task(c: &Client, id: &str) -> Result<ExitCode, Failure> {
    let mut progress = Progress::new(0, "messages");
    loop {
        let t = c
            .ok("GET", &format!("/api/v1/tasks/{}", seg(id)), None)
            .await?;
        progress.set_total(t["total"].as_u64().unwrap_or(0));
        progress.set(t["done"].as_u64().unwrap_or(0));
        if t["finished"].as_bool() == Some(true) {
            progress.finish();
            match c.output {
                Output::Json => client::json(&t),
                Output::Table => println!(
                    "task {id}: {} of {} delivered, {} failed{}",
                    cell(&t["succeeded"]),
                    cell(&t["total"]),
                    cell(&t["failed"]),
                    t["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            }
            let ok = t["failed"].as_u64() == Some(0) && t["error"].is_null();
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(client::exit::OTHER)
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

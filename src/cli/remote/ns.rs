//! `wald ns list|get|create|update|delete`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{self, cell, seg, Client, Failure, Output};

/// Namespace commands.
#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Every namespace.
    List,
    /// One namespace's document (secrets read `<set>`).
    Get {
        /// The namespace.
        name: String,
    },
    /// Creates a namespace: from `--file` (a namespace document, `-` for stdin), or by name
    /// with the options below and every other field at its default.
    Create {
        /// The namespace's name (when no `--file`).
        name: Option<String>,
        /// A namespace document (JSON), or `-` for stdin.
        #[arg(long, short = 'f')]
        file: Option<String>,
        /// Partitions (`shardConfig.partitionCount`).
        #[arg(long)]
        partitions: Option<u32>,
        /// `sync` (default), `batch`, `none` or `kafka`.
        #[arg(long)]
        durability: Option<String>,
    },
    /// Replaces a namespace's document (`PUT`): the whole document from `--file`.
    Update {
        /// The namespace.
        name: String,
        /// The namespace document (JSON), or `-` for stdin.
        #[arg(long, short = 'f')]
        file: String,
    },
    /// Deletes a namespace with its logs and data (asks for `--yes`).
    Delete {
        /// The namespace.
        name: String,
        /// Yes, delete it and every message in it.
        #[arg(long)]
        yes: bool,
    },
}

fn row(ns: &Value) -> Vec<String> {
    vec![
        cell(&ns["name"]),
        cell(&ns["durability"]),
        cell(&ns["shardConfig"]["partitionCount"]),
        ns["targetConfigs"]
            .as_array()
            .map_or(0, Vec::len)
            .to_string(),
        cell(&ns["backend"]),
        cell(&ns["enabled"]),
    ]
}

const HEAD: [&str; 6] = [
    "NAME",
    "DURABILITY",
    "PARTITIONS",
    "TARGETS",
    "BACKEND",
    "ENABLED",
];

fn show(c: &Client, v: &Value) {
    match c.output {
        Output::Json => client::json(v),
        Output::Table => client::table(&HEAD, &[row(v)]),
    }
}

/// Runs a namespace command.
pub async fn run(c: &Client, cmd: NsCommand) -> Result<ExitCode, Failure> {
    match cmd {
        NsCommand::List => {
            let v = c.ok("GET", "/api/v1/namespaces", None).await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => {
                    let rows: Vec<Vec<String>> = v
                        .as_array()
                        .map(|a| a.iter().map(row).collect())
                        .unwrap_or_default();
                    client::table(&HEAD, &rows);
                }
            }
        }
        NsCommand::Get { name } => {
            let v = c
                .ok("GET", &format!("/api/v1/namespaces/{}", seg(&name)), None)
                .await?;
            match c.output {
                Output::Json => client::json(&v),
                // A document is read best as itself.
                Output::Table => client::json(&v),
            }
        }
        NsCommand::Create {
            name,
            file,
            partitions,
            durability,
        } => {
            let mut doc = match (file, name) {
                (Some(f), _) => super::read_json(&f)?,
                (None, Some(n)) => json!({ "name": n }),
                (None, None) => {
                    return Err(Failure::new(
                        client::exit::REJECTED,
                        "give the namespace's name, or --file with its document",
                    ))
                }
            };
            if let Some(p) = partitions {
                doc["shardConfig"]["partitionCount"] = json!(p);
            }
            if let Some(d) = durability {
                doc["durability"] = json!(d);
            }
            let v = c.ok("POST", "/api/v1/namespaces", Some(&doc)).await?;
            show(c, &v);
        }
        NsCommand::Update { name, file } => {
            let doc = super::read_json(&file)?;
            let v = c
                .ok(
                    "PUT",
                    &format!("/api/v1/namespaces/{}", seg(&name)),
                    Some(&doc),
                )
                .await?;
            show(c, &v);
        }
        NsCommand::Delete { name, yes } => {
            if !yes {
                return Err(Failure::new(
                    client::exit::REJECTED,
                    format!("deleting '{name}' removes every message in it: add --yes"),
                ));
            }
            c.ok(
                "DELETE",
                &format!("/api/v1/namespaces/{}", seg(&name)),
                None,
            )
            .await?;
            match c.output {
                Output::Json => client::json(&json!({ "deleted": name })),
                Output::Table => println!("deleted namespace {name}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

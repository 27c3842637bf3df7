//! `wald keys list|create|revoke`: API keys created at run time.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::client::{self, cell, seg, Client, Failure, Output};

/// API key commands (admin key).
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key: configured ones (read-only) and run-time ones; never a secret.
    List,
    /// Creates a key; its secret is printed this once.
    Create {
        /// The key's id (letters, digits, `.`, `_`, `-`).
        id: String,
        /// A namespace the key may use (repeat it), or `*` for all.
        #[arg(long = "namespace", short = 'n', required = true)]
        namespaces: Vec<String>,
    },
    /// Revokes a run-time key: its next request is refused.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Runs a key command.
pub async fn run(c: &Client, cmd: KeysCommand) -> Result<ExitCode, Failure> {
    match cmd {
        KeysCommand::List => {
            let v = c.ok("GET", "/api/v1/keys", None).await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => {
                    let rows: Vec<Vec<String>> = v["keys"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|k| {
                                    vec![
                                        cell(&k["id"]),
                                        k["namespaces"]
                                            .as_array()
                                            .map(|n| {
                                                n.iter().map(cell).collect::<Vec<_>>().join(",")
                                            })
                                            .unwrap_or_default(),
                                        cell(&k["source"]),
                                        cell(&k["createdAt"]),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    client::table(&["ID", "NAMESPACES", "SOURCE", "CREATED"], &rows);
                }
            }
        }
        KeysCommand::Create { id, namespaces } => {
            let v = c
                .ok(
                    "POST",
                    "/api/v1/keys",
                    Some(&json!({ "id": id, "namespaces": namespaces })),
                )
                .await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => {
                    println!("{}", cell(&v["key"]));
                    eprintln!(
                        "API key '{}' created for {}. The line above is its secret: it is not \
                         shown again (the server keeps only its SHA-256).",
                        cell(&v["id"]),
                        v["namespaces"]
                            .as_array()
                            .map(|n| n.iter().map(cell).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let v = c
                .ok("DELETE", &format!("/api/v1/keys/{}", seg(&id)), None)
                .await?;
            match c.output {
                Output::Json => client::json(&v),
                Output::Table => println!("revoked API key {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

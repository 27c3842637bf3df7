//! The operator's commands: a running server administered from a terminal — namespaces,
//! API keys, writes, reads, the dead-letter queue, status — over `http://` or `https://`
//! (`--url`/`WALD_URL`, `--admin-key`/`WALD_ADMIN_KEY`). Tables for people, `--output json`
//! for scripts; exit codes in [`client::exit`].

pub mod client;
mod data;
mod dlq;
mod keys;
mod ns;
pub mod progress;

use std::process::ExitCode;

use clap::Subcommand;

pub use client::{Failure, Output, Remote};
pub use data::{MsgCommand, TailArgs, WriteArgs};
pub use dlq::DlqCommand;
pub use keys::KeysCommand;
pub use ns::NsCommand;

/// What to do on the server.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Namespaces: list, get, create, update, delete (admin key).
    #[command(subcommand)]
    Ns(NsCommand),
    /// API keys created at run time: list, create (the secret shown once), revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Writes a message (payload from the argument or stdin), or `--batch` JSON lines.
    Write(WriteArgs),
    /// Messages: `get ID`.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// Reads a partition in order from an offset; `--follow` waits for new messages.
    Tail(TailArgs),
    /// The dead-letter queue: list, get, replay (one or all since a time), discard.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Health and readiness (with the admin key: what makes it red).
    Status,
}

/// Runs one command against the server; failures are printed and become exit codes.
///
/// # Errors
/// The async runtime cannot start.
pub fn run(remote: &Remote, cmd: RemoteCommand) -> Result<ExitCode, super::CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async move {
        let c = client::Client::new(remote)?;
        match cmd {
            RemoteCommand::Ns(cmd) => ns::run(&c, cmd).await,
            RemoteCommand::Keys(cmd) => keys::run(&c, cmd).await,
            RemoteCommand::Write(a) => data::write(&c, a).await,
            RemoteCommand::Msg(cmd) => data::msg(&c, cmd).await,
            RemoteCommand::Tail(a) => data::tail(&c, a).await,
            RemoteCommand::Dlq(cmd) => dlq::run(&c, cmd).await,
            RemoteCommand::Status => status(&c).await,
        }
    });
    Ok(match outcome {
        Ok(code) => code,
        Err(f) => f.report(),
    })
}

async fn status(c: &client::Client) -> Result<ExitCode, Failure> {
    let (_, health) = c.call("GET", "/api/v1/health", None).await?;
    let (ready_status, ready) = c.call("GET", "/api/v1/health/readiness", None).await?;
    let ready_ok = ready_status == 200;
    match c.output {
        Output::Json => client::json(&serde_json::json!({
            "health": health, "ready": ready_ok, "readiness": ready,
        })),
        Output::Table => {
            let mut rows = vec![
                vec!["status".into(), client::cell(&health["status"])],
                vec!["ready".into(), ready_ok.to_string()],
            ];
            for k in ["version", "uptimeSeconds", "namespaces", "partitions"] {
                if !health[k].is_null() {
                    rows.push(vec![k.into(), client::cell(&health[k])]);
                }
            }
            let problems = ready["error"]["details"]["problems"]
                .as_array()
                .or_else(|| health["problems"].as_array())
                .cloned()
                .unwrap_or_default();
            for p in problems {
                rows.push(vec!["problem".into(), client::cell(&p)]);
            }
            client::table(&["", ""], &rows);
        }
    }
    Ok(if ready_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(client::exit::UNAVAILABLE)
    })
}

/// Reads a JSON document from a file, or stdin for `-`.
pub(crate) fn read_json(source: &str) -> Result<serde_json::Value, Failure> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::new(client::exit::OTHER, format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| Failure::new(client::exit::OTHER, format!("reading {source}: {e}")))?
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::new(client::exit::REJECTED, format!("{source}: not JSON: {e}")))
}

//! `wald log verify|dump|stats`.

use std::process::ExitCode;

use clap::Subcommand;

use super::CliError;

/// Offline log tools.
#[derive(Debug, Subcommand)]
pub enum LogCommand {}

/// Runs a `wald log` command.
pub fn run(cmd: LogCommand) -> Result<ExitCode, CliError> {
    match cmd {}
}

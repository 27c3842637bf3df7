//! `wald bench fsync`.

use std::process::ExitCode;

use clap::Subcommand;

use super::CliError;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {}

/// Runs a `wald bench` command.
pub fn run(cmd: BenchCommand) -> Result<ExitCode, CliError> {
    match cmd {}
}

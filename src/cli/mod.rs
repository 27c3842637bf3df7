//! The command line: `wald serve`, `wald log ...`, `wald bench ...`.

pub mod bench;
pub mod first_run;
pub mod log;
pub mod replay;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors of the command line, printed by `main`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// wald: a write-ahead-log service with its own durable, segmented log.
#[derive(Debug, Parser)]
#[command(name = "wald", version, about)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service (default: 127.0.0.1:3000, data in ./data).
    Serve(serve::ServeArgs),
    /// Offline tools for a partition log directory (never modify it).
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Benchmarks: the disk's fsync limits and the engine against them.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Re-delivers a range of a namespace's log through a running server (admin key).
    Replay(replay::ReplayArgs),
}

/// Sets up `tracing` output on stderr.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Log(cmd) => log::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Replay(args) => replay::run(args),
    }
}

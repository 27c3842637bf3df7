//! `wald bench fsync`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use crate::bench::{run_fsync, FsyncOptions};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The disk's fdatasync latency and bandwidth, the engine's group commit against them
    /// (1..256 Sync writers), sequential reads and recovery. Progress on stderr; tables and a
    /// final JSON line on stdout.
    Fsync(FsyncArgs),
}

/// Arguments of `wald bench fsync`.
#[derive(Debug, Args)]
pub struct FsyncArgs {
    /// Directory in which to create the (fresh, removed afterwards) working directory.
    /// Default: ./bench-data when it exists, else $TMPDIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run everything again with two busy-loop threads spinning, and compare.
    #[arg(long)]
    pub contended: bool,
    /// Fewer iterations, one record size (1 KiB), C in {1, 16, 64}, 1 s per engine phase.
    #[arg(long)]
    pub quick: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Runs a `wald bench` command.
pub fn run(cmd: BenchCommand) -> Result<ExitCode, CliError> {
    match cmd {
        BenchCommand::Fsync(a) => {
            let opts = FsyncOptions {
                dir: a.dir,
                contended: a.contended,
                quick: a.quick,
                json: a.json,
            };
            run_fsync(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

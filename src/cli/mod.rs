//! The command line: `wald serve`, `wald log ...`, `wald bench ...`.

pub mod bench;
pub mod config_cmd;
pub mod first_run;
pub mod log;
pub mod remote;
pub mod replay;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors of the command line, printed by `main`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// wald: a write-ahead-log service with its own durable, segmented log.
#[derive(Debug, Parser)]
#[command(
    name = "wald",
    version,
    about,
    after_help = "Exit codes of the commands that talk to a server (ns, keys, write, msg, tail, dlq, \
status): 0 ok; 1 other failure; 2 usage; 3 cannot connect or no answer in time; 4 unauthorized \
or forbidden (401/403); 5 not found (404); 6 conflict (409); 7 input refused (400/413/415; \
also an invalid `config check`); 8 rate limited or unavailable (429/503; `status`: not ready)."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log line format on stderr: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WALD_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
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
    /// Namespaces on a running server: list, get, create, update, delete.
    Ns {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        cmd: remote::NsCommand,
    },
    /// API keys on a running server: list, create, revoke.
    Keys {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        cmd: remote::KeysCommand,
    },
    /// Writes a message (or `--batch` JSON lines) to a running server.
    Write {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::WriteArgs,
    },
    /// Messages on a running server: `msg get ID`.
    Msg {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        cmd: remote::MsgCommand,
    },
    /// Reads a partition in order; `--follow` waits for new messages.
    Tail {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(flatten)]
        args: remote::TailArgs,
    },
    /// The dead-letter queue on a running server: list, get, replay, discard.
    #[command(name = "dlq")]
    Dlq {
        #[command(flatten)]
        remote: remote::Remote,
        #[command(subcommand)]
        cmd: remote::DlqCommand,
    },
    /// A running server's health and readiness (exit 8 when not ready).
    Status {
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Shell completions: `wald completions bash > /etc/bash_completion.d/wald`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Configuration files: check one, or print the effective configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, the request's span).
    Json,
}

/// Sets up `tracing` output on stderr, written by a background thread through a bounded
/// queue (lines are dropped, never waited for, when it is full: a slow log reader never
/// slows a write). Keep the returned guard until the end of `main`: dropping it flushes.
#[must_use]
pub fn init_tracing(verbose: u8, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    guard
}

/// Runs a parsed command line; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Log(cmd) => log::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Replay(args) => replay::run(args),
        Command::Ns { remote, cmd } => remote::run(&remote, remote::RemoteCommand::Ns(cmd)),
        Command::Keys { remote, cmd } => remote::run(&remote, remote::RemoteCommand::Keys(cmd)),
        Command::Write { remote, args } => remote::run(&remote, remote::RemoteCommand::Write(args)),
        Command::Msg { remote, cmd } => remote::run(&remote, remote::RemoteCommand::Msg(cmd)),
        Command::Tail { remote, args } => remote::run(&remote, remote::RemoteCommand::Tail(args)),
        Command::Dlq { remote, cmd } => remote::run(&remote, remote::RemoteCommand::Dlq(cmd)),
        Command::Status { remote } => remote::run(&remote, remote::RemoteCommand::Status),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "wald", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(cmd) => config_cmd::run(cmd),
    }
}

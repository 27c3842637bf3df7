//! The `wald` binary.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the request path allocates per request, and glibc's malloc/free were ~17 % of
/// the server's CPU under load (docs/BENCHMARKS.md, "What each change bought").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = wald::cli::Cli::parse();
    let _logs = wald::cli::init_tracing(cli.verbose, cli.log_format);
    match wald::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

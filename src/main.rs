//! The `wald` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wald::cli::Cli::parse();
    wald::cli::init_tracing(cli.verbose);
    match wald::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

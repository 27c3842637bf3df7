//! `wald config check [FILE]` and `wald config print [FILE]`: a configuration validated, or
//! shown as it takes effect (file, then `WALD_*` environment, then defaults) with every
//! secret hidden.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::remote::client::exit;
use super::CliError;
use crate::config::Config;

/// Configuration commands (offline: no server needed).
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Loads and validates a configuration: `ok`, or the error naming the key (exit 7).
    Check {
        /// The TOML file. Default: `WALD_CONFIG`, else none (defaults and environment).
        file: Option<PathBuf>,
    },
    /// Prints the effective configuration, secrets hidden.
    Print {
        /// The TOML file. Default: `WALD_CONFIG`, else none (defaults and environment).
        file: Option<PathBuf>,
    },
}

fn load(file: Option<PathBuf>) -> Result<Config, String> {
    let file = file.or_else(|| std::env::var_os("WALD_CONFIG").map(PathBuf::from));
    let mut c = Config::load(file.as_deref()).map_err(|e| e.to_string())?;
    c.auth.read_admin_key_file().map_err(|e| e.to_string())?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Runs a configuration command.
///
/// # Errors
/// Never (failures are exit codes); the signature matches the other commands.
pub fn run(cmd: ConfigCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ConfigCommand::Check { file } => match load(file) {
            Ok(_) => {
                println!("ok");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(exit::REJECTED))
            }
        },
        ConfigCommand::Print { file } => match load(file) {
            Ok(c) => {
                print!("{}", render(&c));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(exit::REJECTED))
            }
        },
    }
}

/// The configuration as text: every section as its (secret-free) `Debug` form, and the
/// declared namespaces as JSON with their secrets redacted as the API serves them.
#[must_use]
pub fn render(c: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "[server] {:#?}", c.server);
    let _ = writeln!(out, "[auth] {:#?}", c.auth);
    let _ = writeln!(out, "[storage] {:#?}", c.storage);
    let _ = writeln!(out, "[rate_limits] {:#?}", c.rate_limits);
    let _ = writeln!(out, "[delivery] {:#?}", c.delivery);
    let _ = writeln!(out, "[cluster] {:#?}", c.cluster);
    let _ = writeln!(out, "[egress] {:#?}", c.egress);
    match c.declared_namespaces::<crate::model::namespace::Namespace>() {
        Ok(list) => {
            for ns in list {
                let shown = crate::redact::namespace_json(&ns)
                    .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                    .unwrap_or_else(|e| format!("<cannot show: {e}>"));
                let _ = writeln!(out, "[[namespaces]] {shown}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "[[namespaces]] <invalid: {e}>");
        }
    }
    out
}

//! `wald serve`: runs the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::config::Config;

/// Options of `wald serve` (each also settable in the config file and the environment).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML configuration file (see wald.example.toml). Default: none (built-in defaults).
    #[arg(long, short = 'c', env = "WALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Default: 127.0.0.1:3000.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory. Default: ./data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The admin key (namespace and DLQ administration). Visible to every user of the
    /// machine in `ps`: prefer `--admin-key-file` or `WALD_ADMIN_KEY`.
    #[arg(long)]
    pub admin_key: Option<String>,
    /// A file whose first line is the admin key (instead of `--admin-key`).
    #[arg(long, conflicts_with = "admin_key")]
    pub admin_key_file: Option<PathBuf>,
}

/// `[auth] open = true` serves the write and read API without a key: said at every start,
/// as an error when the address is reachable from other machines.
fn warn_if_open(config: &Config) {
    if !config.auth.open {
        return;
    }
    let listen = config.server.listen;
    if listen.ip().is_loopback() {
        tracing::warn!(%listen, "auth.open = true: the write and read API accept requests without a key");
    } else {
        tracing::error!(%listen, "auth.open = true on a non-loopback address: anyone who can reach it may write and read without a key");
    }
}

/// Runs the service until SIGTERM or ctrl-c.
pub fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    config.apply_cli(args.listen, args.data_dir, args.admin_key);
    if let Some(file) = args.admin_key_file {
        config.auth.admin_key = None;
        config.auth.admin_key_sha256 = None;
        config.auth.admin_key_file = Some(file);
    }
    config.auth.read_admin_key_file()?;
    config.validate()?;
    let generated = super::first_run::ensure_admin_key(&mut config)?;
    warn_if_open(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wald")
        .build()?;
    rt.block_on(async move {
        let listen = config.server.listen;
        let data_dir = config.server.data_dir.clone();
        let app = tokio::task::spawn_blocking(move || crate::app::App::start(config)).await??;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("binding {listen}: {e}"))?;
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, data_dir = %data_dir.display(), namespaces = app.all_namespaces().len(), "wald is serving");
        println!("wald listening on http://{local} (data in {})", data_dir.display());
        if let Some(g) = &generated {
            g.print(&format!("http://{local}"));
        }
        crate::server::run(listener, app, crate::server::shutdown_signal()).await?;
        Ok::<_, CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

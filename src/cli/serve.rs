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
    /// The admin key (namespace and DLQ administration).
    #[arg(long)]
    pub admin_key: Option<String>,
}

/// Runs the service until SIGTERM or ctrl-c.
pub fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    config.apply_cli(args.listen, args.data_dir, args.admin_key);
    config.validate()?;
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
        crate::server::run(listener, app, crate::server::shutdown_signal()).await?;
        Ok::<_, CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

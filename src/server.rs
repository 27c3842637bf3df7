//! The server: `run(listener, app, shutdown)` serves until `shutdown` completes, then stops
//! intake, lets in-flight requests (and their group commits) finish within the grace
//! period, and closes every log cleanly.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;

/// Serves the API on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener's I/O error.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(Arc::clone(&app));
    let grace = app.config.server.shutdown_grace();
    let flag = Arc::clone(&app);
    let signal = async move {
        shutdown.await;
        flag.shutting_down.store(true, Ordering::Relaxed);
        tracing::info!("shutting down: refusing new writes, finishing in-flight requests");
    };
    let serve = axum::serve(listener, router).with_graceful_shutdown(signal);
    // In-flight requests get the grace period; after it, the process moves on to closing.
    let result = tokio::select! {
        r = serve => r,
        () = async { app_shutdown_started(&app).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; closing with requests still in flight");
            Ok(())
        }
    };
    let closing = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || closing.engine.close_all()).await;
    tracing::info!("all logs closed");
    result
}

async fn app_shutdown_started(app: &App) {
    while !app.shutting_down.load(Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

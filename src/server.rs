//! The server: `run(listener, app, shutdown)` serves until `shutdown` completes, then stops
//! intake, lets in-flight requests (and their group commits) finish within the grace
//! period, and closes every log cleanly.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::app::App;
use crate::http::headers::HYPER_MAX_BUF_BYTES;

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
    // Consumers deliver while the server runs; they stop before the logs close.
    let (stop_delivery, delivery_stopped) = tokio::sync::watch::channel(false);
    let consumers = crate::delivery::supervisor::spawn(Arc::clone(&app), delivery_stopped.clone());
    let mirrors = crate::mirror::supervisor::spawn(Arc::clone(&app), delivery_stopped);
    // Transactions that were not final when the process stopped go on where they were.
    app.txns.resume_all(&app);
    let grace = app.config.server.shutdown_grace();
    let flag = Arc::clone(&app);
    let signal = async move {
        shutdown.await;
        flag.shutting_down.store(true, Ordering::Relaxed);
        tracing::info!("shutting down: refusing new writes, finishing in-flight requests");
    };
    let serve = serve(listener, router, signal);
    // In-flight requests get the grace period; after it, the process moves on to closing.
    let result = tokio::select! {
        r = serve => r,
        () = async { app_shutdown_started(&app).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; closing with requests still in flight");
            Ok(())
        }
    };
    let _ = stop_delivery.send(true);
    app.txns.shutdown().await;
    let _ = consumers.await;
    let _ = mirrors.await;
    let closing = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || closing.engine.close_all()).await;
    tracing::info!("all logs closed");
    result
}

/// The accept loop: one hyper HTTP/1.1 connection task per client (keep-alive,
/// `TCP_NODELAY`, a read buffer of [`HYPER_MAX_BUF_BYTES`] so that an oversized header
/// section reaches [`crate::http::headers::limit`] and is answered with the envelope).
/// When `signal` resolves: stops accepting, asks every connection to close once its
/// request in flight is answered, and returns when all have closed.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone of `open_rx`; `open_tx.closed()` waits for them all.
    let (open_tx, open_rx) = watch::channel(());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(HYPER_MAX_BUF_BYTES);
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: axum::extract::Request<Incoming>| {
            router.clone().oneshot(req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let (mut stop, open) = (stop_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut stopping = *stop.borrow();
            if stopping {
                conn.as_mut().graceful_shutdown();
            }
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// After a failed `accept`: a client that went away is nothing; anything else (out of file
/// descriptors) is logged and retried after a pause.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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

//! The server: `run(listener, app, shutdown)` serves until `shutdown` completes, then stops
//! intake, lets in-flight requests (and their group commits) finish within the grace
//! period, and closes every log cleanly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use crate::app::App;
use crate::http::error::ErrorCode;
use crate::http::headers::HYPER_MAX_BUF_BYTES;
use crate::io_loop::IoThreads;

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
    let retention = crate::retention::spawn(Arc::clone(&app), delivery_stopped.clone());
    let mirrors = crate::mirror::supervisor::spawn(Arc::clone(&app), delivery_stopped);
    // Transactions that were not final when the process stopped go on where they were.
    app.txns.resume_all(&app);
    let grace = app.config.server.shutdown_grace();
    let signal = shutdown;
    // Default: half the CPUs (at least one). Threads that share a log take turns at its
    // fsync, and the rest of the service (delivery, the state store, mirrors) needs CPU too:
    // on 2 cores one thread batched 3x more per fsync than two (docs/BENCHMARKS.md).
    let threads = match usize::try_from(app.config.server.io_threads) {
        Ok(0) | Err(_) => {
            (std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) / 2).max(1)
        }
        Ok(n) => n,
    };
    let io = IoThreads::start(threads)?;
    tracing::info!(
        threads = io.len(),
        "I/O threads serving connections, committing inline"
    );
    let serve = serve(
        listener,
        &io,
        Arc::clone(&app),
        router,
        Limits::of(&app.config.server),
        signal,
    );
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
    let _ = retention.await;
    let closing = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || {
        io.stop();
        closing.engine.close_all();
    })
    .await;
    tracing::info!("all logs closed");
    result
}

/// The connection limits of [`serve`], from `[server]`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// hyper's header-read timeout (also runs while a keep-alive connection is idle).
    header_read: Duration,
    /// No request in progress and no byte moving for this long: the connection is closed.
    idle: Duration,
    /// Connections open at once.
    max_connections: usize,
    /// The shutdown grace period.
    grace: Duration,
}

impl Limits {
    fn of(config: &crate::config::ServerConfig) -> Self {
        Self {
            header_read: config.header_read_timeout(),
            idle: config.idle_timeout(),
            max_connections: usize::try_from(config.max_connections)
                .unwrap_or(usize::MAX)
                .clamp(1, Semaphore::MAX_PERMITS),
            grace: config.shutdown_grace(),
        }
    }
}

/// The accept loop: one hyper HTTP/1.1 connection task per client (keep-alive,
/// `TCP_NODELAY`, a read buffer of [`HYPER_MAX_BUF_BYTES`] so that an oversized header
/// section reaches [`crate::http::headers::limit`] and is answered with the envelope).
///
/// Every connection is bounded: its header section must arrive within
/// `header_read_timeout_ms` (from the connection's start, and again each time it goes idle
/// after an answer); it is closed after `idle_timeout_ms` without a request in progress and
/// without a byte moving; and at most `max_connections` are open at once — past that a new
/// connection gets [`reject`]'s 503 and is closed, in a task of its own so that the loop
/// never waits on a client.
///
/// When `signal` resolves: stops accepting, asks every connection to close once its
/// request in flight is answered, and returns when all have closed.
async fn serve(
    listener: TcpListener,
    io: &IoThreads,
    app: Arc<App>,
    router: axum::Router,
    limits: Limits,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone of `open_rx`; `open_tx.closed()` waits for them all.
    let (open_tx, open_rx) = watch::channel(());
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper silently ignores `header_read_timeout`.
    http.max_buf_size(HYPER_MAX_BUF_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            reject(stream, &rejecting, limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let app = Arc::clone(&app);
        let http = http.clone();
        let (mut stop, open) = (stop_rx.clone(), open_rx.clone());
        let idle = limits.idle;
        let spawned = io.spawn(stream, move |stream| async move {
            let _slot = slot;
            let activity = Arc::new(Activity::new());
            let in_request = Arc::clone(&activity);
            let client = crate::http::throttle::ClientAddr(peer.ip());
            let service =
                hyper::service::service_fn(move |mut req: axum::extract::Request<Incoming>| {
                    req.extensions_mut().insert(client);
                    let busy = InRequest::start(Arc::clone(&in_request));
                    // The write routes skip the router's layers (same steps, no layers).
                    let fast = crate::http::fast::route_of(&app, &req);
                    let (app, router) = (Arc::clone(&app), router.clone());
                    async move {
                        let r = match fast {
                            Some(route) => Ok(crate::http::fast::serve(app, route, req).await),
                            None => router.oneshot(req).await,
                        };
                        drop(busy);
                        r
                    }
                });
            let io = TokioIo::new(Watched {
                inner: stream,
                activity: Arc::clone(&activity),
            });
            let conn = http.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = *stop.borrow();
            if stopping {
                conn.as_mut().graceful_shutdown();
            }
            loop {
                let idle_at = activity.idle_deadline(idle);
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
                    () = tokio::time::sleep_until(idle_at) => {
                        if activity.is_idle(idle) {
                            tracing::debug!(%peer, "closing an idle connection");
                            break;
                        }
                    }
                }
            }
            drop(open);
        });
        if let Err(e) = spawned {
            tracing::debug!(%peer, error = %e, "handing a connection to an I/O thread failed");
        }
    }
    drop(listener);
    // Requests that reached a connection while its I/O thread was in an fsync are in flight
    // too: let every thread run one more loop iteration (reading them, admitting them)
    // before writes are refused and connections asked to close.
    io.settle(limits.grace).await;
    app.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: refusing new writes, finishing in-flight requests");
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// Most connections being refused at once (each in a task for at most
/// [`REJECT_TIMEOUT`]); past it, further ones are closed without an answer.
const MAX_REJECTING: usize = 256;

/// Longest a refused connection is given to take its 503.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer to a connection past `max_connections`: a minimal HTTP/1.1 503 with the
/// error envelope, `Connection: close` and `Retry-After: 1`.
fn rejection(max: usize) -> Vec<u8> {
    let rid = crate::http::request_id::generate();
    let body = serde_json::json!({
        "success": false,
        "error": {
            "code": ErrorCode::TooManyConnections,
            "message": format!("the server holds its most connections ({max}); retry shortly"),
            "details": { "maxConnections": max },
        },
        "metadata": {
            "requestId": &rid,
            "timestamp": crate::model::time::rfc3339_ms(wald_storage::now_ms()),
        },
    })
    .to_string();
    let status = ErrorCode::TooManyConnections.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\nx-request-id: {rid}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Service Unavailable"),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Answers a connection past the cap with [`rejection`] and closes it, in a task of its own
/// bounded by [`REJECT_TIMEOUT`] (at most [`MAX_REJECTING`] at once; past that the
/// connection is just closed). What the client sent is read and dropped until it closes or
/// the time is up, so that closing does not reset the connection before the answer is read.
fn reject(stream: TcpStream, rejecting: &Arc<Semaphore>, max: usize) {
    let Ok(permit) = Arc::clone(rejecting).try_acquire_owned() else {
        tracing::debug!("connection refused without an answer: too many being refused");
        return;
    };
    tracing::debug!(max, "connection refused: max_connections reached");
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let answer = async {
            stream.write_all(&rejection(max)).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(REJECT_TIMEOUT, answer).await;
    });
}

/// When a connection last moved a byte, and how many of its requests are in progress.
#[derive(Debug)]
struct Activity {
    /// The connection's start, the base of `last_ms`.
    start: Instant,
    /// Milliseconds from `start` to the last byte read or written.
    last_ms: AtomicU64,
    /// Requests handed to the router and not yet answered.
    in_requests: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_requests: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the connection becomes idle if nothing happens until then.
    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let at = self.last().checked_add(idle).unwrap_or_else(Instant::now);
        // A request in progress is not idle: look again one period later.
        let at = if self.in_requests.load(Ordering::Relaxed) > 0 {
            at.max(Instant::now() + idle)
        } else {
            at
        };
        tokio::time::Instant::from_std(at)
    }

    /// No request in progress and no byte moved for `idle`.
    fn is_idle(&self, idle: Duration) -> bool {
        self.in_requests.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= idle
    }
}

/// A request in progress on a connection (counted while it lives).
struct InRequest(Arc<Activity>);

impl InRequest {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_requests.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.in_requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A client's stream that records when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

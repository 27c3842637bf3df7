//! The access log: one line per request at info, target `wald::access` (`[server]
//! access_log`, default on) — method, route, status and latency, inside the request's span,
//! which carries the request id and, once the key is verified, the key's id (never the key).

use std::time::Instant;

use axum::http::{Method, StatusCode};

use crate::app::App;

/// The request's span: its id, method and path; `key` is filled in by [`record_key`].
#[must_use]
pub fn span(request_id: &str, method: &Method, path: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %path,
        key = tracing::field::Empty
    )
}

/// Records the verified key's id in the current request span.
pub fn record_key(id: &str) {
    tracing::Span::current().record("key", id);
}

/// Writes the request's access line (when enabled and `wald::access` logs at info).
pub fn log(app: &App, method: &Method, route: &str, status: StatusCode, started: Instant) {
    if !app.config.server.access_log {
        return;
    }
    tracing::info!(
        target: "wald::access",
        method = %method,
        route,
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
}

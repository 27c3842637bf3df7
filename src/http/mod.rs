//! The HTTP API: one router per resource, behind the common layers (request id, error
//! envelope, timeout, body limit, CORS, metrics).

pub mod access;
pub mod auth;
pub mod cluster;
pub mod cors;
pub mod dlq;
pub mod docs;
pub mod edge;
pub mod error;
pub mod fast;
pub mod headers;
pub mod health;
pub mod hosts;
pub mod keys;
pub mod namespaces;
pub mod ns_metrics;
pub mod ratelimit;
pub mod read;
pub mod request_id;
pub mod throttle;
pub mod txn;
pub mod wal;

use std::sync::Arc;

use axum::middleware;
use axum::Router;

use crate::app::App;

/// The whole API.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = usize::try_from(app.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new()
        .merge(wal::router())
        .merge(read::router())
        .merge(txn::router())
        .merge(ns_metrics::router())
        .merge(namespaces::router())
        .merge(dlq::router())
        .merge(keys::router())
        .merge(health::router())
        .merge(docs::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            edge::inner,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit));
    r = cors::apply(r, &app);
    // Outside CORS: a preflight from a foreign origin is refused too.
    r.layer(middleware::from_fn_with_state(
        Arc::clone(&app),
        edge::outer,
    ))
    .with_state(app)
}

//! The HTTP API: one router per resource, behind the common layers (request id, error
//! envelope, timeout, body limit, CORS, metrics).

pub mod auth;
pub mod cluster;
pub mod cors;
pub mod dlq;
pub mod docs;
pub mod error;
pub mod headers;
pub mod health;
pub mod hosts;
pub mod namespaces;
pub mod ns_metrics;
pub mod ratelimit;
pub mod read;
pub mod request_id;
pub mod throttle;
pub mod txn;
pub mod wal;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::app::App;

/// Counts requests by route and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    // Only namespaces that exist become label values: a URL segment of an unknown name (or
    // of an unauthenticated request for one) never grows the series set.
    let ns = namespace_label(req.uri().path())
        .filter(|n| app.namespace(n).is_some())
        .unwrap_or_else(|| "-".to_owned());
    let resp = next.run(req).await;
    app.metrics
        .requests
        .with_label_values(&[ns.as_str(), route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// The namespace named in the path, if any (the write's namespace is in the body).
fn namespace_label(path: &str) -> Option<String> {
    let mut parts = path.split('/');
    while let Some(p) = parts.next() {
        if p == "namespace" || p == "namespaces" {
            return parts
                .next()
                .map(crate::model::namespace::normalise_namespace_name);
        }
    }
    None
}

/// The whole API.
pub fn router(app: Arc<App>) -> Router {
    let timeout = app.config.server.request_timeout() + Duration::from_secs(1);
    let body_limit = usize::try_from(app.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new()
        .merge(wal::router())
        .merge(read::router())
        .merge(txn::router())
        .merge(ns_metrics::router())
        .merge(namespaces::router())
        .merge(dlq::router())
        .merge(health::router())
        .merge(docs::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            cluster::route,
        ))
        .layer(middleware::from_fn(headers::limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), count))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ));
    r = cors::apply(r, &app);
    // Outside CORS: a preflight from a foreign origin is refused too.
    r = r.layer(middleware::from_fn_with_state(
        Arc::clone(&app),
        hosts::check,
    ));
    r.layer(middleware::from_fn(error::envelope))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(app)
}

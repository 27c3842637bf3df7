//! The HTTP API: one router per resource, behind the common layers (request id, error
//! envelope, timeout, body limit, CORS, metrics).

pub mod auth;
pub mod docs;
pub mod error;
pub mod health;
pub mod namespaces;
pub mod ratelimit;
pub mod request_id;
pub mod wal;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::App;

/// Counts requests by route and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let ns = namespace_label(req.uri().path());
    let resp = next.run(req).await;
    app.metrics
        .requests
        .with_label_values(&[ns.as_str(), route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// The namespace named in the path, for labels (the write's namespace is in the body: "-").
fn namespace_label(path: &str) -> String {
    let mut parts = path.split('/');
    while let Some(p) = parts.next() {
        if p == "namespace" || p == "namespaces" {
            if let Some(n) = parts.next() {
                return crate::model::namespace::normalise_namespace_name(n);
            }
        }
    }
    "-".to_owned()
}

fn cors(app: &App) -> Option<CorsLayer> {
    let c = &app.config.server.cors;
    if !c.enabled() {
        return None;
    }
    let origins = if c.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            c.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let methods: Vec<Method> = c
        .allowed_methods
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();
    let headers: Vec<axum::http::HeaderName> = c
        .allowed_headers
        .iter()
        .filter_map(|h| h.parse().ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(methods)
            .allow_headers(headers)
            .max_age(Duration::from_secs(c.max_age_secs)),
    )
}

/// The whole API.
pub fn router(app: Arc<App>) -> Router {
    let timeout = app.config.server.request_timeout() + Duration::from_secs(1);
    let body_limit = usize::try_from(app.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new()
        .merge(wal::router())
        .merge(namespaces::router())
        .merge(health::router())
        .merge(docs::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), count))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ));
    if let Some(c) = cors(&app) {
        r = r.layer(c);
    }
    r.layer(middleware::from_fn(error::envelope))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(app)
}

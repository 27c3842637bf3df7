//! The two middlewares every route sits behind, each one pass over the request (one
//! middleware layer costs a service clone and a boxed future per request: the write path's
//! profile showed the stack of them, docs/BENCHMARKS.md "What each change bought"):
//!
//! - [`outer`], outside CORS: the request id (the client's usable `X-Request-ID`, else a new
//!   one; echoed on every answer), the `Host`/`Origin` check against DNS rebinding, and the
//!   error envelope around everything inside.
//! - [`inner`], around the routes: the request timeout (504), the request counter by
//!   namespace, route and status, the header-section limit (431), and the cluster's
//!   redirect to a namespace's owner (307).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::request_id::{self, RequestId};
use crate::app::App;

/// Request id, `Host`/`Origin`, error envelope.
pub async fn outer(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let id = request_id::of(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let uri = req.uri().clone();
    let method = req.method().clone();
    let span = super::access::span(&id, &method, uri.path());
    let resp = match super::hosts::allowed(&app, &req) {
        Ok(()) => next.run(req).instrument(span).await,
        Err(e) => e.into_response(),
    };
    let mut resp = super::error::finish(resp, &id, uri.path(), &method);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    resp
}

/// Timeout, request counter, header limit, cluster redirect.
pub async fn inner(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let timeout = app.config.server.request_timeout() + std::time::Duration::from_secs(1);
    match tokio::time::timeout(timeout, counted(&app, req, next)).await {
        Ok(r) => r,
        // The envelope turns it into REQUEST_TIMEOUT.
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}

async fn counted(app: &App, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    // Only namespaces that exist become label values: a URL segment of an unknown name (or
    // of an unauthenticated request for one) never grows the series set.
    let ns = namespace_label(req.uri().path())
        .filter(|n| app.namespace(n).is_some())
        .unwrap_or_else(|| "-".to_owned());
    let checked = super::headers::check(&req).and_then(|()| super::cluster::owned_here(app, &req));
    let resp = match checked {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    app.metrics
        .requests
        .with_label_values(&[ns.as_str(), route.as_str(), resp.status().as_str()])
        .inc();
    super::access::log(app, &method, &route, resp.status(), started);
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

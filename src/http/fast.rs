//! The write routes without the router: `POST /api/v1/wal/write` and
//! `POST /api/v1/wal/write/batch` are the hot path, and the router's layers (a service clone
//! and a boxed future each, per request) were a fifth of the server's CPU per write
//! (docs/BENCHMARKS.md, "What each change bought"). This calls the same pieces the router's
//! stack does, in the same order — request id, `Host`/`Origin`, timeout, request counter,
//! header limit, the handler's extractors (caller, then the body under `max_body_bytes`), the
//! handler itself, the error envelope — with no layer in between.
//!
//! Requests with an `Origin` header go through the router when CORS is configured (the CORS
//! layer answers for them); everything else is identical, which `tests/http_api.rs` checks
//! by sending the same requests both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use super::auth::Caller;
use super::request_id::{self, RequestId};
use crate::app::App;

/// The routes served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/v1/wal/write`.
    Write,
    /// `POST /api/v1/wal/write/batch`.
    WriteBatch,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Self::Write => "/api/v1/wal/write",
            Self::WriteBatch => "/api/v1/wal/write/batch",
        }
    }
}

/// The fast route of a request, if it has one.
#[must_use]
pub fn route_of(app: &App, req: &Request<Incoming>) -> Option<Route> {
    if req.method() != Method::POST {
        return None;
    }
    let route = match req.uri().path() {
        "/api/v1/wal/write" => Route::Write,
        "/api/v1/wal/write/batch" => Route::WriteBatch,
        _ => return None,
    };
    if app.config.server.cors.enabled() && req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    Some(route)
}

/// Serves a request of a fast route.
pub async fn serve(app: Arc<App>, route: Route, mut req: Request<Incoming>) -> Response<Body> {
    let id = request_id::of_headers(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let uri = req.uri().clone();
    let method = req.method().clone();
    let span = super::access::span(&id, &method, uri.path());
    let resp = match super::hosts::allowed_headers(&app, req.headers()) {
        Ok(()) => {
            let timeout = app.config.server.request_timeout() + std::time::Duration::from_secs(1);
            match tokio::time::timeout(timeout, counted(&app, route, req))
                .instrument(span)
                .await
            {
                Ok(r) => r,
                Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    let mut resp = super::error::finish(resp, &id, uri.path(), &method);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    resp
}

async fn counted(app: &Arc<App>, route: Route, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let resp = match super::headers::check_headers(req.method(), req.uri(), req.headers()) {
        Ok(()) => handle(app, route, req).await,
        Err(e) => e.into_response(),
    };
    app.metrics
        .requests
        .with_label_values(&["-", route.path(), resp.status().as_str()])
        .inc();
    super::access::log(app, &method, route.path(), resp.status(), started);
    resp
}

async fn handle(app: &Arc<App>, route: Route, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let rid = parts
        .extensions
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId(request_id::generate()));
    let caller = match Caller::from_request_parts(&mut parts, app).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let limit = usize::try_from(app.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response()
        }
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let state = State(Arc::clone(app));
    match route {
        Route::Write => super::wal::write(state, Extension(rid), caller, parts.headers, body)
            .await
            .into_response(),
        Route::WriteBatch => {
            super::wal::write_batch(state, Extension(rid), caller, parts.headers, body)
                .await
                .into_response()
        }
    }
}

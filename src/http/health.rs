//! Health (`/api/v1/health[/liveness|/readiness]`) and Prometheus metrics (`/metrics`).
//!
//! What an anonymous caller learns is the status alone (`ok`/`degraded`, `ready` or a 503):
//! enough for a load-balancer probe, nothing about the deployment. The details (version,
//! uptime, namespace and partition counts, problems — which name namespaces and may quote
//! paths —, mirrors and their errors) need the admin key, unless `[server]
//! health_details_public = true`. A valid non-admin key gets the status alone too (its
//! namespaces' state is at `/api/v1/wal/namespace/{ns}/status`). `/metrics` (whose series
//! name every namespace and mirror) needs the admin key unless `[server] metrics_public =
//! true`. A key that is presented must be valid: an unknown one is answered 401.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use crate::app::App;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/health/liveness", get(liveness))
        .route("/api/v1/health/readiness", get(readiness))
        .route("/metrics", get(metrics))
}

/// Whether the caller presented a key (`X-API-Key` or `Authorization`).
fn presents_key(parts: &Parts) -> bool {
    parts.headers.contains_key("x-api-key") || parts.headers.contains_key(header::AUTHORIZATION)
}

/// Who may see what: `Admin` for the admin key, `Key` for another valid key, `Anonymous`
/// without one. A presented key that is not valid is refused (401) by the [`Caller`] check
/// it goes through (with its failed-authentication accounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// No key presented.
    Anonymous,
    /// A valid key that is not the admin key.
    Key,
    /// The admin key.
    Admin,
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        if !presents_key(parts) {
            return Ok(Self::Anonymous);
        }
        match Caller::from_request_parts(parts, app).await? {
            Caller(Some(who)) if who.admin => Ok(Self::Admin),
            Caller(Some(_)) => Ok(Self::Key),
            Caller(None) => Ok(Self::Anonymous),
        }
    }
}

impl Viewer {
    /// Whether this caller gets the health details.
    fn details(self, app: &App) -> bool {
        self == Self::Admin || app.config.server.health_details_public
    }
}

/// The service's health. Without the admin key (and `health_details_public`), only `status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `degraded` when a log refuses writes.
    pub status: String,
    /// The version (admin key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since start (admin key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Namespaces served (admin key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<usize>,
    /// Partition logs open (admin key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<usize>,
    /// Problems found (admin key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// Overall health: always 200; `status` says `ok` or `degraded`.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "Health; the details only with the admin key (or `[server] health_details_public`)", body = Health),
        (status = 401, description = "A key was presented and it is not valid", body = super::error::ErrorEnvelope)),
    security((), ("api_key" = []), ("bearer" = [])))]
pub async fn health(State(app): State<Arc<App>>, viewer: Viewer) -> Json<Health> {
    let (ok, problems) = app.ready();
    let status = if ok { "ok" } else { "degraded" }.to_owned();
    if !viewer.details(&app) {
        return Json(Health {
            status,
            version: None,
            uptime_seconds: None,
            namespaces: None,
            partitions: None,
            problems: None,
        });
    }
    Json(Health {
        status,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        uptime_seconds: Some(app.started.elapsed().as_secs()),
        namespaces: Some(app.all_namespaces().len()),
        partitions: Some(app.engine.all().len()),
        problems: Some(problems),
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/v1/health/liveness", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn liveness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// Readiness: every log accepts writes (none poisoned), the state store is open, not shutting
/// down. 200 or 503 for everyone; the problems and the mirrors only with the admin key.
#[utoipa::path(get, path = "/api/v1/health/readiness", tag = "health", responses(
    (status = 200, description = "Ready (`mirrors` only with the admin key)"),
    (status = 401, description = "A key was presented and it is not valid", body = super::error::ErrorEnvelope),
    (status = 503, description = "Not ready; with the admin key, details list why", body = super::error::ErrorEnvelope)),
    security((), ("api_key" = []), ("bearer" = [])))]
pub async fn readiness(
    State(app): State<Arc<App>>,
    viewer: Viewer,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (ok, problems) = app.ready();
    if !viewer.details(&app) {
        return if ok {
            Ok(Json(serde_json::json!({ "status": "ready" })))
        } else {
            Err(ApiError::new(ErrorCode::StorageUnavailable, "not ready"))
        };
    }
    // Mirrors are information only: one that is down does not stop intake.
    let mirrors: Vec<serde_json::Value> = app
        .all_namespaces()
        .iter()
        .flat_map(|ns| {
            app.mirrors.status(ns).into_iter().map(|m| {
                serde_json::json!({ "namespace": ns.spec.name, "mirror": m.name, "healthy": m.healthy,
                    "lagRecords": m.lag_records, "lagSeconds": m.lag_seconds, "lastError": m.last_error })
            })
        })
        .collect();
    if ok {
        Ok(Json(
            serde_json::json!({ "status": "ready", "mirrors": mirrors }),
        ))
    } else {
        Err(
            ApiError::new(ErrorCode::StorageUnavailable, "not ready: see details")
                .with_details(serde_json::json!({ "problems": problems, "mirrors": mirrors })),
        )
    }
}

/// Prometheus metrics (text format): the admin key, unless `[server] metrics_public`.
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 401, description = "No key, or not a valid one", body = super::error::ErrorEnvelope),
    (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn metrics(
    State(app): State<Arc<App>>,
    viewer: Viewer,
) -> Result<impl IntoResponse, ApiError> {
    if !app.config.server.metrics_public {
        match viewer {
            Viewer::Admin => {}
            Viewer::Key => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "/metrics needs the admin key",
                ))
            }
            Viewer::Anonymous => {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "/metrics needs the admin key (X-API-Key or Authorization: Bearer)",
                ))
            }
        }
    }
    app.refresh_engine_metrics();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    ))
}

#[cfg(test)]
mod tests {
    /// No example in the served OpenAPI document looks like a key, a password or a secret.
    #[test]
    fn openapi_examples_hold_no_secrets() {
        use utoipa::OpenApi;
        fn walk(v: &serde_json::Value, under_example: bool, found: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        walk(x, under_example || k == "example" || k == "examples", found);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, under_example, found)),
                serde_json::Value::String(s) if under_example => {
                    let l = s.to_ascii_lowercase();
                    let secretish = [
                        "secret", "password", "bearer ", "token", "api-key", "apikey", "whsec_",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                        || crate::redact::text(s) != s.as_str();
                    if secretish {
                        found.push(s.clone());
                    }
                }
                _ => {}
            }
        }
        let doc = serde_json::to_value(super::super::docs::ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        walk(&doc, false, &mut found);
        assert!(
            found.is_empty(),
            "secret-looking OpenAPI examples: {found:?}"
        );
    }
}

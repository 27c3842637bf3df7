//! Health (`/api/v1/health[/liveness|/readiness]`) and Prometheus metrics (`/metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

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

/// The service's health.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `degraded` when a log refuses writes.
    pub status: String,
    /// The version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Namespaces served.
    pub namespaces: usize,
    /// Partition logs open.
    pub partitions: usize,
    /// Problems found.
    pub problems: Vec<String>,
}

/// Overall health.
#[utoipa::path(get, path = "/api/v1/health", tag = "health", responses((status = 200, description = "Health", body = Health)))]
pub async fn health(State(app): State<Arc<App>>) -> Json<Health> {
    let (ok, problems) = app.ready();
    Json(Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: app.started.elapsed().as_secs(),
        namespaces: app.all_namespaces().len(),
        partitions: app.engine.all().len(),
        problems,
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/v1/health/liveness", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn liveness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// Readiness: every log accepts writes (none poisoned), the state store is open, not shutting down.
#[utoipa::path(get, path = "/api/v1/health/readiness", tag = "health", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Not ready; details list why", body = super::error::ErrorEnvelope)))]
pub async fn readiness(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let (ok, problems) = app.ready();
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

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.refresh_engine_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

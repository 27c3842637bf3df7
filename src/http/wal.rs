//! `/api/v1/wal/...`: the durable write, reading messages back, namespace status and the
//! read/replay API.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{authorize_namespace, Caller};
use super::error::{ApiError, ErrorCode};
use super::request_id::RequestId;
use crate::app::{App, NamespaceRuntime};
use crate::ingest;
use crate::model::validate::FieldError;
use crate::model::write::{WriteToLogDto, WriteToLogResponse};

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/wal/write", post(write))
        .route("/api/v1/wal/write/batch", post(write_batch))
        .route(
            "/api/v1/wal/namespace/{namespace}/status",
            get(namespace_status),
        )
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ))
    }
}

pub(crate) fn lookup_namespace(app: &App, name: &str) -> Result<Arc<NamespaceRuntime>, ApiError> {
    app.namespace(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NamespaceNotFound,
            format!("Namespace '{name}' not found"),
        )
        .with_details(serde_json::json!({ "namespace": name }))
    })
}

/// Writes a message to its namespace's log; answers once it is durable under the
/// namespace's policy (`durable: "true"` only after the covering fsync).
#[utoipa::path(
    post, path = "/api/v1/wal/write", tag = "wal",
    request_body(content = WriteToLogDto, example = json!({
        "namespace": "orders",
        "payload": {"orderId": 1234, "total": 99.5},
        "partitionKey": "customer-42",
        "lifecycle": {"delay": 30, "delayUnit": "seconds"}
    })),
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key (or the body's idempotencyKey)")),
    responses(
        (status = 202, description = "Accepted; durable per the namespace's policy", body = WriteToLogResponse),
        (status = 400, description = "Invalid body; details name every failing field", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or unknown API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Key without access to the namespace, or namespace disabled", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope),
        (status = 413, description = "Message over the namespace's maxMessageSize", body = super::error::ErrorEnvelope),
        (status = 415, description = "Body is not application/json", body = super::error::ErrorEnvelope),
        (status = 429, description = "Rate limited (Retry-After)", body = super::error::ErrorEnvelope),
        (status = 503, description = "Storage poisoned, disk full or overloaded", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn write(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WriteToLogResponse>), ApiError> {
    let origin = accept(&app, rid, caller, &headers)?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned).map_err(|_| ()));
    let answer = ingest::write_one(&app, &origin, &body, header_key).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The answer of a batch write: one result per message, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchWriteResponse {
    /// Each message's answer, as the single write gives it.
    pub results: Vec<WriteToLogResponse>,
}

/// The body of a batch write.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct BatchWriteDto {
    /// 1 to 1,000 messages, each exactly the body of `POST /api/v1/wal/write`.
    pub messages: Vec<WriteToLogDto>,
}

/// Writes up to 1,000 messages in one request. Every message is validated and authorized
/// first: any invalid one answers 400 naming `messages[i].field` and nothing is appended.
/// The messages of one partition go into its log in request order and share group
/// commits; the answer comes once all are durable under their namespaces' policies.
#[utoipa::path(
    post, path = "/api/v1/wal/write/batch", tag = "wal",
    request_body(content = BatchWriteDto, example = json!({"messages": [
        {"namespace": "orders", "payload": {"orderId": 1234}, "partitionKey": "customer-42"},
        {"namespace": "orders", "payload": {"orderId": 1235}, "partitionKey": "customer-7"}
    ]})),
    responses(
        (status = 202, description = "Accepted; each result durable per its namespace's policy", body = BatchWriteResponse),
        (status = 400, description = "Invalid body or message; details name every failing `messages[i].field`", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or unknown API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Key without access to a message's namespace, or namespace disabled (details.index names the message)", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace (details.index names the message)", body = super::error::ErrorEnvelope),
        (status = 413, description = "A message over its namespace's maxMessageSize, or the body over server.max_body_bytes", body = super::error::ErrorEnvelope),
        (status = 415, description = "Body is not application/json", body = super::error::ErrorEnvelope),
        (status = 429, description = "Rate limited: each message counts (Retry-After)", body = super::error::ErrorEnvelope),
        (status = 503, description = "Storage poisoned, disk full or overloaded", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn write_batch(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<BatchWriteResponse>), ApiError> {
    let origin = accept(&app, rid, caller, &headers)?;
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::validation(vec![FieldError::new(
            "Idempotency-Key",
            "a batch write takes each message's idempotencyKey in its body, not the header",
        )]));
    }
    let results = ingest::write_batch(&app, &origin, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchWriteResponse { results })))
}

/// What every write checks before reading its body: JSON, and not shutting down.
fn accept(
    app: &App,
    rid: RequestId,
    caller: Caller,
    headers: &HeaderMap,
) -> Result<ingest::Origin, ApiError> {
    let started = Instant::now();
    require_json(headers)?;
    if app.shutting_down.load(Ordering::Relaxed) {
        return Err(
            ApiError::new(ErrorCode::ShuttingDown, "the service is shutting down").retry_after(5),
        );
    }
    Ok(ingest::Origin {
        caller,
        request_id: rid.0,
        started,
    })
}

/// A namespace's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The namespace.
    pub namespace: String,
    /// Whether it accepts writes.
    pub enabled: bool,
    /// `healthy`, or `unhealthy` when a partition log refuses writes.
    pub status: String,
    /// The durability policy.
    pub durability: String,
    /// Writes accepted since start.
    pub writes_accepted: u64,
    /// Write errors since start.
    pub write_errors: u64,
    /// Per partition.
    pub partitions: Vec<PartitionStatus>,
    /// The namespace's mirrors: lag, errors, health (a mirror that is down does not make the
    /// namespace unhealthy: intake works).
    pub mirrors: Vec<crate::mirror::hub::MirrorStatus>,
}

/// One partition's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// The partition.
    pub partition: u32,
    /// First offset held.
    pub first_offset: u64,
    /// Next offset to be written.
    pub next_offset: u64,
    /// Segments.
    pub segments: usize,
    /// Bytes of segment data.
    pub bytes: u64,
    /// Records appended since start.
    pub records_appended: u64,
    /// Write-path fsyncs since start.
    pub fsyncs: u64,
    /// Why the log refuses writes, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poisoned: Option<String>,
}

/// A namespace's status, from the logs' real state and counters.
#[utoipa::path(
    get, path = "/api/v1/wal/namespace/{namespace}/status", tag = "wal",
    params(("namespace" = String, Path, description = "The namespace")),
    responses(
        (status = 200, description = "Status", body = NamespaceStatus),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn namespace_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<NamespaceStatus>, ApiError> {
    let name = crate::model::namespace::normalise_namespace_name(&namespace);
    let ns = lookup_namespace(&app, &name)?;
    authorize_namespace(&app, &caller, &ns, &name)?;
    let mut partitions = Vec::new();
    for (p, log) in ns.logs.iter().enumerate() {
        let st = log.stats();
        let c = log.counters();
        partitions.push(PartitionStatus {
            partition: u32::try_from(p).unwrap_or(u32::MAX),
            first_offset: st.first_offset,
            next_offset: st.next_offset,
            segments: st.segments,
            bytes: st.bytes,
            records_appended: c.records.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            poisoned: st.poisoned,
        });
    }
    let healthy = partitions.iter().all(|p| p.poisoned.is_none());
    Ok(Json(NamespaceStatus {
        namespace: name,
        enabled: ns.spec.enabled,
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        durability: format!("{:?}", ns.spec.durability).to_lowercase(),
        writes_accepted: ns.writes.load(Ordering::Relaxed),
        write_errors: ns.errors.load(Ordering::Relaxed),
        mirrors: app.mirrors.status(&ns),
        partitions,
    }))
}

//! Reading back: `GET /api/v1/wal/messages/{messageId}` (a message as written, with its
//! delivery status) and `GET /api/v1/wal/namespace/{ns}/messages` (a partition's records in
//! order, with the offset to continue from).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::{IntoParams, ToSchema};

use super::auth::{authorize_namespace, Caller};
use super::error::{ApiError, ErrorCode};
use super::wal::lookup_namespace;
use crate::app::App;
use crate::message::{RecordIds, StoredMessage};
use crate::model::time::rfc3339_ms;
use crate::model::validate::FieldError;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/wal/messages/{message_id}", get(get_message))
        .route(
            "/api/v1/wal/namespace/{namespace}/messages",
            get(read_messages),
        )
        .layer(Extension(Arc::new(ReadGate::default())))
}

/// How long a read waits for a slot (`[server] max_concurrent_reads`) before it is
/// answered 503.
const READ_SLOT_WAIT: Duration = Duration::from_secs(1);

/// The slots of the read API (`[server] max_concurrent_reads`), made on first use from the
/// configuration; one per router, so per server.
#[derive(Debug, Default)]
pub struct ReadGate {
    slots: OnceLock<Arc<Semaphore>>,
}

impl ReadGate {
    /// A slot for one read: waits up to [`READ_SLOT_WAIT`], then 503 `OVERLOADED`.
    async fn enter(&self, app: &App) -> Result<OwnedSemaphorePermit, ApiError> {
        let max = app.config.server.max_concurrent_reads;
        let slots = self.slots.get_or_init(|| {
            Arc::new(Semaphore::new(
                usize::try_from(max)
                    .unwrap_or(1)
                    .clamp(1, Semaphore::MAX_PERMITS),
            ))
        });
        match tokio::time::timeout(READ_SLOT_WAIT, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "{max} reads are being served (server.max_concurrent_reads); retry shortly"
                ),
            )
            .retry_after(1)),
        }
    }
}

/// What a record is counted for against `[server] max_read_bytes`: its bytes as stored
/// plus a little for the answer's fields around it.
fn record_bytes(rec: &wald_storage::StoredRecord) -> u64 {
    let headers: usize = rec.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    u64::try_from(rec.payload.len() + rec.key.len() + headers)
        .unwrap_or(u64::MAX)
        .saturating_add(RECORD_OVERHEAD_BYTES)
}

/// The fields of a message view besides its stored bytes (ids, times, status, targets).
const RECORD_OVERHEAD_BYTES: u64 = 512;

/// A message read back.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The message id.
    pub message_id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition log.
    pub offset: u64,
    /// The payload exactly as written.
    #[schema(value_type = Object)]
    pub payload: Box<serde_json::value::RawValue>,
    /// Targets named at write time.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub target: Option<serde_json::Value>,
    /// Lifecycle settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub lifecycle: Option<serde_json::Value>,
    /// Metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// When it may be delivered (RFC 3339; absent = at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Delivery status: `pending`, `scheduled` (delayed), `delivering`, `delivered`,
    /// `dead_lettered`, `failed`, `expired`, `no_targets`, or `transaction` (a transaction's
    /// record: see the transaction status API).
    pub status: crate::delivery::record::MessageStatus,
    /// Every delivery attempt so far, of every target (each names its `target` and `region`).
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<serde_json::Value>,
    /// Each target's (and so each region's) delivery: status, attempts, next attempt.
    pub targets: Vec<crate::delivery::record::TargetDelivery>,
    /// Mirrors that refused the message for good (too large for the backend, not a message):
    /// they skipped it. Absent when none did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirror_refusals: Vec<MirrorRefusal>,
}

/// A mirror's refusal of a message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorRefusal {
    /// The mirror's name.
    pub mirror: String,
    /// Why (e.g. larger than the backend's limit).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The refusals of the message at `offset` (none when the state store cannot say).
fn refusals(app: &App, namespace: &str, partition: u32, offset: u64) -> Vec<MirrorRefusal> {
    app.state
        .mirror_refusals(namespace, partition, offset)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(mirror, bytes)| {
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            Some(MirrorRefusal {
                mirror,
                reason: v["reason"].as_str().unwrap_or_default().to_owned(),
                at: rfc3339_ms(v["atMs"].as_u64().unwrap_or(0)),
            })
        })
        .collect()
}

/// The delivery record of a message (none yet: pending).
fn delivery_record(
    app: &App,
    namespace: &str,
    partition: u32,
    offset: u64,
) -> crate::delivery::record::DeliveryRecord {
    app.state
        .delivery_state(namespace, partition, offset)
        .ok()
        .flatten()
        .and_then(|b| crate::delivery::record::DeliveryRecord::decode(&b).ok())
        .unwrap_or_default()
}

fn view(
    rec: &wald_storage::StoredRecord,
    partition: u32,
    delivery: crate::delivery::record::DeliveryRecord,
    mirror_refusals: Vec<MirrorRefusal>,
) -> Result<MessageView, ApiError> {
    let m = StoredMessage::from_record(rec).map_err(ApiError::internal)?;
    let attempts = delivery
        .targets
        .iter()
        .flat_map(|t| {
            t.attempts.iter().map(move |a| {
                serde_json::json!({
                    "target": t.identifier,
                    "region": t.region,
                    "attempt": a.attempt,
                    "at": rfc3339_ms(a.at_ms),
                    "durationMs": a.duration_ms,
                    "error": a.error,
                    "errorClass": a.error_class,
                })
            })
        })
        .collect();
    Ok(MessageView {
        message_id: m.message_id,
        namespace: m.namespace,
        partition,
        offset: rec.offset,
        payload: m.payload,
        target: m.target.map(crate::redact::targets_owned),
        lifecycle: m.lifecycle,
        metadata: m.metadata,
        priority: m.priority,
        tags: m.tags,
        idempotency_key: m.idempotency_key,
        accepted_at: rfc3339_ms(m.accepted_at_ms),
        due_at: (rec.due_ms > 0).then(|| rfc3339_ms(rec.due_ms)),
        status: delivery.status,
        attempts,
        targets: delivery.targets,
        mirror_refusals,
    })
}

/// Reads a message by id: the record at its indexed location, checked to carry that id.
#[utoipa::path(
    get, path = "/api/v1/wal/messages/{message_id}", tag = "wal",
    params(("message_id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "The message as written", body = MessageView),
        (status = 404, description = "Unknown message", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn get_message(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(message_id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::MessageNotFound,
            format!("Message '{message_id}' not found"),
        )
        .with_details(serde_json::json!({ "messageId": message_id }))
    };
    let loc = app
        .state
        .message_location(&message_id)
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let ns = lookup_namespace(&app, &loc.namespace).map_err(|_| not_found())?;
    authorize_namespace(&app, &caller, &ns, &loc.namespace)?;
    let log = ns
        .logs
        .get(loc.partition as usize)
        .cloned()
        .ok_or_else(not_found)?;
    let rec = tokio::task::spawn_blocking(move || log.read_from(loc.offset).map(|mut r| r.next()))
        .await
        .map_err(ApiError::internal)?;
    let rec = match rec {
        Ok(Some(Ok(r))) => r,
        Ok(None) | Err(wald_storage::Error::OffsetOutOfRange { .. }) => return Err(not_found()),
        Ok(Some(Err(e))) | Err(e) => return Err(ApiError::from(e)),
    };
    // The index is derived: trust the record, not the index.
    if RecordIds::of(&rec).map(|i| i.message_id).ok().as_deref() != Some(message_id.as_str()) {
        return Err(not_found());
    }
    let delivery = delivery_record(&app, &loc.namespace, loc.partition, loc.offset);
    let refused = refusals(&app, &loc.namespace, loc.partition, loc.offset);
    Ok(Json(view(&rec, loc.partition, delivery, refused)?))
}

/// Query of the read API.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadQuery {
    /// Partition (default 0).
    pub partition: Option<u32>,
    /// First offset (default: the first held).
    pub from_offset: Option<u64>,
    /// Or: the first record appended at or after this time (ms since the epoch, at most
    /// 253402300799999 = 9999-12-31T23:59:59.999Z).
    pub from_time: Option<u64>,
    /// Most records to return (default 100, at most 1000). Fewer come back when they would
    /// pass the byte budget (`[server] max_read_bytes`; at least one always does).
    pub limit: Option<usize>,
}

/// Records in order, with the offset to continue from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadPage {
    /// The namespace.
    pub namespace: String,
    /// The partition.
    pub partition: u32,
    /// The messages.
    pub messages: Vec<MessageView>,
    /// The offset to pass as `fromOffset` to continue.
    pub next_offset: u64,
    /// True when the page stopped at the byte budget (`[server] max_read_bytes`) before
    /// `limit`: more records follow from `nextOffset`. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Reads (replays) a partition's records in order.
#[utoipa::path(
    get, path = "/api/v1/wal/namespace/{namespace}/messages", tag = "wal",
    params(("namespace" = String, Path, description = "The namespace"), ReadQuery),
    responses(
        (status = 200, description = "Records in order", body = ReadPage),
        (status = 400, description = "Invalid query", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope),
        (status = 416, description = "fromOffset outside the log", body = super::error::ErrorEnvelope),
        (status = 503, description = "Too many reads at once (server.max_concurrent_reads); Retry-After", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn read_messages(
    State(app): State<Arc<App>>,
    Extension(gate): Extension<Arc<ReadGate>>,
    caller: Caller,
    Path(namespace): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let name = crate::model::namespace::normalise_namespace_name(&namespace);
    let ns = lookup_namespace(&app, &name)?;
    authorize_namespace(&app, &caller, &ns, &name)?;
    let partition = q.partition.unwrap_or(0);
    let log = ns.logs.get(partition as usize).cloned().ok_or_else(|| {
        ApiError::validation(vec![FieldError {
            field: "partition".into(),
            message: format!(
                "namespace has {} partitions (0..{})",
                ns.logs.len(),
                ns.logs.len()
            ),
        }])
    })?;
    if q.from_offset.is_some() && q.from_time.is_some() {
        return Err(ApiError::validation(vec![FieldError {
            field: "fromTime".into(),
            message: "give fromOffset or fromTime, not both".into(),
        }]));
    }
    if let Some(t) = q.from_time {
        super::ns_metrics::check_time("fromTime", t).map_err(|e| ApiError::validation(vec![e]))?;
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::validation(vec![FieldError {
            field: "limit".into(),
            message: "must be 1..=1000".into(),
        }]));
    }
    let budget = app.config.server.max_read_bytes;
    let slot = gate.enter(&app).await?;
    let (records, next, truncated) =
        tokio::task::spawn_blocking(move || -> Result<_, wald_storage::Error> {
            let mut reader = match (q.from_offset, q.from_time) {
                (_, Some(t)) => log.read_from_time(t)?,
                (Some(o), None) => log.read_from(o)?,
                (None, None) => log.read_from(log.stats().first_offset)?,
            };
            let mut out = Vec::with_capacity(limit.min(64));
            let mut bytes = 0u64;
            while out.len() < limit {
                let Some(r) = reader.next() else { break };
                let r = r?;
                let size = record_bytes(&r);
                if !out.is_empty() && bytes.saturating_add(size) > budget {
                    // Not returned: the client continues from it.
                    return Ok((out, r.offset, true));
                }
                bytes = bytes.saturating_add(size);
                out.push(r);
            }
            Ok((out, reader.next_offset(), false))
        })
        .await
        .map_err(ApiError::internal)??;
    let messages = records
        .into_iter()
        .map(|r| {
            view(
                &r,
                partition,
                delivery_record(&app, &name, partition, r.offset),
                refusals(&app, &name, partition, r.offset),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Rendered while the slot is held: the body is the answer's largest copy.
    let page = Json(ReadPage {
        namespace: name,
        partition,
        messages,
        next_offset: next,
        truncated,
    })
    .into_response();
    drop(slot);
    Ok(page)
}

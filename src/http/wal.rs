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
use crate::app::{App, NamespaceRuntime, IDEMPOTENCY_WINDOW_MS};
use crate::message::{new_message_id, RecordIds, StoredMessage};
use crate::model::namespace::DurabilityMode;
use crate::model::time::rfc3339_ms;
use crate::model::transaction::{parse_transactions, MutationSpec};
use crate::model::validate::{parse_json, FieldError};
use crate::model::write::{
    DurableStatus, ValidWrite, WriteLimits, WriteToLogDto, WriteToLogResponse,
};
use crate::txn::record::transaction_id_of;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new().route("/api/v1/wal/write", post(write)).route(
        "/api/v1/wal/namespace/{namespace}/status",
        get(namespace_status),
    )
}

/// What a transaction may not combine with, and that each mutation's (and compensation's)
/// target can be delivered to by this build.
fn check_transaction(
    app: &App,
    v: &ValidWrite,
    mutations: &[MutationSpec],
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if v.targets.is_some() {
        errs.push(FieldError::new(
            "target",
            "a transaction names a target per mutation (payload.transactions[i].target); remove `target`",
        ));
    }
    if v.delay_ms > 0 {
        errs.push(FieldError::new(
            "lifecycle.delay",
            "a transaction cannot be delayed",
        ));
    }
    for (i, m) in mutations.iter().enumerate() {
        let path = format!("payload.transactions[{i}]");
        if let Err(e) = app
            .delivery
            .check_target(&format!("{path}.target"), &m.target)
        {
            errs.extend(e);
        }
        if let Some(c) = &m.compensation {
            if let Err(e) = app
                .delivery
                .check_target(&format!("{path}.compensation.target"), &c.target)
            {
                errs.extend(e);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
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
    request_body = WriteToLogDto,
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
#[allow(clippy::too_many_lines)] // the write path, read top to bottom
pub async fn write(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WriteToLogResponse>), ApiError> {
    let started = Instant::now();
    require_json(&headers)?;
    if app.shutting_down.load(Ordering::Relaxed) {
        return Err(
            ApiError::new(ErrorCode::ShuttingDown, "the service is shutting down").retry_after(5),
        );
    }
    let dto: WriteToLogDto = parse_json(&body).map_err(ApiError::validation)?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned));
    let mut v = dto
        .validate(&WriteLimits {
            max_delay_secs: app.config.server.max_delay_secs,
        })
        .map_err(ApiError::validation)?;
    match header_key {
        Some(Err(_)) => {
            return Err(ApiError::validation(vec![FieldError {
                field: "Idempotency-Key".into(),
                message: "must be visible ASCII".into(),
            }]))
        }
        Some(Ok(h)) => {
            let mut errs = Vec::new();
            if h.is_empty() || h.len() > 200 {
                errs.push(FieldError {
                    field: "Idempotency-Key".into(),
                    message: "must be 1..=200 characters".into(),
                });
            }
            if v.idempotency_key.as_ref().is_some_and(|b| *b != h) {
                errs.push(FieldError {
                    field: "idempotencyKey".into(),
                    message: "differs from the Idempotency-Key header; send one or make them equal"
                        .into(),
                });
            }
            if !errs.is_empty() {
                return Err(ApiError::validation(errs));
            }
            v.idempotency_key = Some(h);
        }
        None => {}
    }
    super::cluster::check_owner(&app, &v.namespace, "/api/v1/wal/write")?;
    let ns = lookup_namespace(&app, &v.namespace)?;
    authorize_namespace(&app, &caller, &ns, &v.namespace)?;
    if !ns.spec.enabled {
        return Err(ApiError::new(
            ErrorCode::NamespaceDisabled,
            format!("Namespace '{}' is disabled", v.namespace),
        ));
    }
    // The message's targets are the namespace's (checked only after the caller is known to
    // have access: nothing is built or cached for an anonymous or foreign request). Declared
    // targets were checked when the namespace was installed; only an ad-hoc object (where
    // the namespace accepts them) still needs its adapter built.
    if let Some(refs) = &v.targets {
        crate::model::target_ref::resolve(&ns.spec, refs, "target")
            .map_err(ApiError::validation)?;
        for (i, r) in refs.iter().enumerate() {
            if let crate::model::TargetRef::Inline(t) = r {
                app.delivery
                    .check_target(&crate::model::validate::index("target", i), t)
                    .map_err(ApiError::validation)?;
            }
        }
    }
    let size = body.len() as u64;
    if size > ns.spec.max_message_size {
        return Err(ApiError::new(
            ErrorCode::MessageSizeLimitExceeded,
            format!(
                "Message size {size} bytes exceeds limit of {} bytes",
                ns.spec.max_message_size
            ),
        )
        .with_details(
            serde_json::json!({ "actualSize": size, "maxSize": ns.spec.max_message_size }),
        ));
    }
    let txn = parse_transactions(
        v.payload.get(),
        &ns.spec,
        ns.spec.transaction_config.require_compensation,
    )
    .map_err(ApiError::validation)?;
    if let Some(mutations) = &txn {
        check_transaction(&app, &v, mutations).map_err(ApiError::validation)?;
    }
    let now = wald_storage::now_ms();
    // Concurrent writes with one key: the first appends, the rest wait and see it as done.
    let _key_guard = match &v.idempotency_key {
        Some(key) => Some(app.lock_key(&v.namespace, key).await),
        None => None,
    };
    if let Some(key) = &v.idempotency_key {
        if let Some(first) = app
            .state
            .idempotent(&v.namespace, key, now)
            .map_err(ApiError::internal)?
        {
            app.metrics
                .duplicates
                .with_label_values(&[v.namespace.as_str()])
                .inc();
            app.metrics.series.record_duplicate(&v.namespace, now);
            let durable = if ns.spec.durability == DurabilityMode::Kafka {
                // Whether Kafka confirmed the first one (waiting for it, as its write did).
                let deadline = started + app.config.server.request_timeout();
                app.mirrors
                    .confirm(
                        &ns,
                        first.partition,
                        first.offset,
                        DurableStatus::False,
                        deadline,
                    )
                    .await
            } else {
                durable_status(&ns)
            };
            return Ok((
                StatusCode::ACCEPTED,
                Json(WriteToLogResponse {
                    durable,
                    transaction_id: txn.as_ref().map(|_| transaction_id_of(&first.message_id)),
                    message_id: first.message_id,
                    message:
                        "Duplicate: this idempotency key was already written; nothing was appended"
                            .into(),
                    timestamp: rfc3339_ms(now),
                    namespace: v.namespace.clone(),
                    partition: first.partition,
                    offset: first.offset,
                    duplicate: true,
                }),
            ));
        }
    }
    let partition =
        ns.choose_partition(v.partition_key.as_deref().or(v.idempotency_key.as_deref()));
    let log = ns.logs.get(partition as usize).cloned().ok_or_else(|| {
        ApiError::internal(format!(
            "namespace {} has no partition {partition}",
            v.namespace
        ))
    })?;
    let message_id = new_message_id(now);
    let transaction_id = txn.as_ref().map(|_| transaction_id_of(&message_id));
    let stored = StoredMessage {
        message_id: message_id.clone(),
        namespace: v.namespace.clone(),
        target: v.targets_json().map_err(ApiError::internal)?,
        lifecycle: v.lifecycle_json().map_err(ApiError::internal)?,
        payload: v.payload,
        metadata: v.metadata.take(),
        priority: v.priority,
        tags: v.tags.take(),
        transaction_id: transaction_id.clone(),
        idempotency_key: v.idempotency_key.clone(),
        request_id: Some(rid.0.clone()),
        accepted_at_ms: now,
    };
    let due_ms = if v.delay_ms > 0 { now + v.delay_ms } else { 0 };
    let pkey = v.partition_key.as_deref().unwrap_or("").as_bytes();
    let record = stored.to_record(pkey, due_ms).map_err(ApiError::internal)?;
    let durability = ns.durability(std::time::Duration::from_millis(
        app.config.storage.background_sync_interval_ms,
    ));
    let mut ticket = log
        .try_append(std::slice::from_ref(&record), durability)
        .map_err(|e| write_failed(&app, &ns, &v.namespace, e))?;
    let timeout = app.config.server.request_timeout();
    let ids = RecordIds {
        message_id: message_id.clone(),
        idempotency_key: stored.idempotency_key.clone(),
        transaction_id: transaction_id.clone(),
    };
    let (durable, offset) = match tokio::time::timeout(timeout, &mut ticket).await {
        Ok(Ok(a)) => (
            if a.synced {
                DurableStatus::True
            } else {
                DurableStatus::False
            },
            a.first_offset,
        ),
        Ok(Err(e)) => return Err(write_failed(&app, &ns, &v.namespace, e)),
        Err(_) => {
            // The fsync did not complete in time: the message may or may not become durable.
            // Index it when (if) it does, so it is findable and its key deduplicates.
            let (app, ns_name) = (Arc::clone(&app), v.namespace.clone());
            tokio::spawn(async move {
                if let Ok(a) = ticket.await {
                    index(&app, &ns_name, partition, a.first_offset, ids, now);
                }
            });
            return Ok((
                StatusCode::ACCEPTED,
                Json(WriteToLogResponse {
                    durable: DurableStatus::Unknown,
                    message_id,
                    transaction_id,
                    message:
                        "Accepted, but durability was not confirmed within the request timeout"
                            .into(),
                    timestamp: rfc3339_ms(wald_storage::now_ms()),
                    namespace: v.namespace,
                    partition,
                    offset: 0,
                    duplicate: false,
                }),
            ));
        }
    };
    index(&app, &v.namespace, partition, offset, ids, now);
    if transaction_id.is_some() {
        // Its state record now (else the partition's consumer creates it from the log).
        if let Err(e) = app.txns.adopt(&app, &stored, partition, offset) {
            tracing::error!(message_id = %message_id, error = %e, "storing a new transaction's record failed; its consumer will");
        }
    }
    app.delivery.appended(&v.namespace, partition);
    // Mirrors: wake them; with `ack = "mirror"`, also wait for their confirmation.
    app.mirrors.appended(&v.namespace, partition);
    let durable = app
        .mirrors
        .confirm(&ns, partition, offset, durable, started + timeout)
        .await;
    ns.writes.fetch_add(1, Ordering::Relaxed);
    let latency = started.elapsed();
    app.metrics
        .write_latency
        .with_label_values(&[v.namespace.as_str()])
        .observe(latency.as_secs_f64());
    app.metrics
        .series
        .record_write(&v.namespace, wald_storage::now_ms(), size, latency);
    Ok((
        StatusCode::ACCEPTED,
        Json(WriteToLogResponse {
            durable,
            message_id,
            transaction_id,
            message: if durable == DurableStatus::Unknown && ns.spec.durability == DurabilityMode::Kafka {
                "Accepted in the local log, but Kafka did not confirm within the request timeout (it is retried until it does)"
            } else if durable == DurableStatus::Unknown {
                "Accepted and durable in the log, but a mirror with ack = \"mirror\" did not confirm within the request timeout"
            } else {
                "Message accepted for processing"
            }
            .into(),
            timestamp: rfc3339_ms(wald_storage::now_ms()),
            namespace: v.namespace,
            partition,
            offset,
            duplicate: false,
        }),
    ))
}

/// Counts a write the storage refused or failed, and answers it.
fn write_failed(app: &App, ns: &NamespaceRuntime, name: &str, e: wald_storage::Error) -> ApiError {
    ns.errors.fetch_add(1, Ordering::Relaxed);
    app.metrics
        .series
        .record_error(name, wald_storage::now_ms());
    ApiError::from(e)
}

/// Indexes an appended message. The message is in the log whatever happens here: a failure
/// is logged, not answered (the index is derived and catches up from the log at the next
/// start), so a durable write is never reported as failed.
fn index(app: &App, namespace: &str, partition: u32, offset: u64, ids: RecordIds, now: u64) {
    if let Err(e) = app.state.apply(
        namespace,
        partition,
        &[(offset, ids, now)],
        IDEMPOTENCY_WINDOW_MS,
    ) {
        tracing::error!(namespace, partition, offset, error = %e, "indexing an appended message failed; it is re-indexed from the log at the next start");
    }
}

fn durable_status(ns: &NamespaceRuntime) -> DurableStatus {
    match ns.spec.durability {
        DurabilityMode::Sync => DurableStatus::True,
        _ => DurableStatus::False,
    }
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

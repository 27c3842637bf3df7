//! The dead-letter queue, log replays and background tasks (admin key):
//!
//! - `GET    /api/v1/namespaces/{ns}/dlq` — entries, oldest first (`status`, `from`, `to`, `limit`)
//! - `GET    /api/v1/namespaces/{ns}/dlq/{messageId}` — one entry with its attempts
//! - `POST   /api/v1/namespaces/{ns}/dlq/{messageId}/replay` — replay one (optional `payload`)
//! - `POST   /api/v1/namespaces/{ns}/dlq/replay` — replay all pending since a time (a task)
//! - `DELETE /api/v1/namespaces/{ns}/dlq/{messageId}` — discard one (recorded)
//! - `POST   /api/v1/namespaces/{ns}/replay` — re-deliver a range of the log (a task)
//! - `GET    /api/v1/tasks/{taskId}` — a task's progress

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use crate::app::App;
use crate::delivery::dlq::{self, DlqError, DlqIndex, DlqItem, DlqStatus};
use crate::delivery::tasks::{self, LogReplay, TaskView};
use crate::model::namespace::normalise_namespace_name;
use crate::model::time::parse_rfc3339_ms;
use crate::model::validate::FieldError;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/namespaces/{namespace}/dlq", get(list))
        .route(
            "/api/v1/namespaces/{namespace}/dlq/replay",
            post(replay_all),
        )
        .route(
            "/api/v1/namespaces/{namespace}/dlq/{message_id}",
            get(read).delete(discard),
        )
        .route(
            "/api/v1/namespaces/{namespace}/dlq/{message_id}/replay",
            post(replay_one),
        )
        .route("/api/v1/namespaces/{namespace}/replay", post(replay_log))
        .route("/api/v1/tasks/{task_id}", get(task))
}

impl From<DlqError> for ApiError {
    /// Maps each DLQ error to its answer explicitly.
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::NoNamespace(ns) => not_found_ns(&ns),
            DlqError::NotFound(id) => ApiError::new(
                ErrorCode::MessageNotFound,
                format!("Message '{id}' is not in the dead-letter queue"),
            )
            .with_details(serde_json::json!({ "messageId": id })),
            e @ DlqError::NotPending { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()),
            DlqError::Log(e) => e.into(),
            DlqError::Engine(e) => ApiError::new(ErrorCode::StorageUnavailable, e.to_string()),
            e @ (DlqError::State(_) | DlqError::Corrupt { .. }) => ApiError::internal(e),
        }
    }
}

fn not_found_ns(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NamespaceNotFound,
        format!("Namespace '{name}' not found"),
    )
    .with_details(serde_json::json!({ "namespace": name }))
}

fn namespace(app: &App, raw: &str) -> Result<String, ApiError> {
    let name = normalise_namespace_name(raw);
    if app.namespace(&name).is_none() {
        return Err(not_found_ns(&name));
    }
    Ok(name)
}

fn field(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// A time given as ms since the epoch (at most
/// [`super::ns_metrics::MAX_TIME_MS`]) or RFC 3339.
fn time(name: &str, v: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let ms = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: a number too large for u64 is out of range like u64::MAX.
        v.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        parse_rfc3339_ms(v)
            .ok_or_else(|| field(name, "must be ms since the epoch or an RFC 3339 time"))?
    };
    super::ns_metrics::check_time(name, ms)
        .map(Some)
        .map_err(|e| ApiError::validation(vec![e]))
}

/// Counts the bytes written to it (the size of an answer without building it).
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self
            .0
            .saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Loads the entries of a `full` listing in order while they fit `budget` bytes as JSON (at
/// least one); the first left out, if any, is returned as well.
fn load_entries(
    app: &App,
    ns: &str,
    items: &mut Vec<DlqItem>,
    budget: u64,
) -> Result<Option<DlqItem>, DlqError> {
    let mut bytes = 0u64;
    for i in 0..items.len() {
        let entry = dlq::read_entry(app, ns, &items[i].message_id, &items[i].index)?;
        let mut size = Counter(0);
        let _ = serde_json::to_writer(&mut size, &entry);
        if i > 0 && bytes.saturating_add(size.0) > budget {
            let rest = items.split_off(i);
            return Ok(rest.into_iter().next());
        }
        bytes = bytes.saturating_add(size.0);
        items[i].entry = Some(entry);
    }
    Ok(None)
}

/// Query of the DLQ listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (default), `replaying`, `replayed`, `discarded` or `all`.
    pub status: Option<String>,
    /// Arrived at or after (ms since the epoch or RFC 3339).
    pub from: Option<String>,
    /// Arrived before (ms since the epoch or RFC 3339).
    pub to: Option<String>,
    /// Continue after this entry: the `nextAfter` of the previous page, given with its
    /// `nextFrom` as `from` (entries that arrived in the same millisecond are ordered by
    /// message id).
    pub after: Option<String>,
    /// Most entries (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Include each entry's message and attempts (default false). Such a page stops early
    /// once it would pass `[server] max_read_bytes` (at least one entry; `nextFrom`
    /// continues).
    pub full: Option<bool>,
}

/// A page of DLQ entries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DlqPage {
    /// The namespace.
    pub namespace: String,
    /// Entries, oldest first.
    pub entries: Vec<DlqItem>,
    /// Pass as `from`, with `nextAfter` as `after`, to continue (absent when this page is
    /// the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_from: Option<u64>,
    /// Pass as `after`, with `nextFrom` as `from`, to continue: the last entry returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Lists dead-letter entries.
#[utoipa::path(
    get, path = "/api/v1/namespaces/{namespace}/dlq", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace"), ListQuery),
    responses((status = 200, description = "Entries, oldest first", body = DlqPage),
        (status = 400, description = "Invalid query", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(ns): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DlqPage>, ApiError> {
    let Query(q) = query?;
    let ns = namespace(&app, &ns)?;
    let status = match q.status.as_deref() {
        None | Some("pending") => Some(DlqStatus::Pending),
        Some("replaying") => Some(DlqStatus::Replaying),
        Some("replayed") => Some(DlqStatus::Replayed),
        Some("discarded") => Some(DlqStatus::Discarded),
        Some("all") => None,
        Some(other) => {
            return Err(field(
                "status",
                format!("unknown status '{other}': pending, replaying, replayed, discarded or all"),
            ))
        }
    };
    let from = time("from", q.from.as_deref())?.unwrap_or(0);
    let to = time("to", q.to.as_deref())?.unwrap_or(u64::MAX);
    if from > to {
        return Err(field("from", "must not be after `to`"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(field("limit", "must be 1 to 1000"));
    }
    if let Some(a) = &q.after {
        if a.is_empty() || a.len() > 256 {
            return Err(field(
                "after",
                "must be a message id (the previous page's nextAfter)",
            ));
        }
    }
    let full = q.full.unwrap_or(false);
    let budget = app.config.server.max_read_bytes;
    let app2 = Arc::clone(&app);
    let ns2 = ns.clone();
    let (mut entries, left_out) = tokio::task::spawn_blocking(move || {
        let listing = dlq::Listing {
            status,
            from_ms: from,
            to_ms: to,
            after: q.after,
            limit: limit + 1,
        };
        let mut items = dlq::list(&app2, &ns2, &listing, false)?;
        let mut left_out = None;
        if items.len() > limit {
            left_out = items.pop();
        }
        if full {
            if let Some(first) = load_entries(&app2, &ns2, &mut items, budget)? {
                left_out = Some(first);
            }
        }
        Ok::<_, DlqError>((items, left_out))
    })
    .await
    .map_err(ApiError::internal)??;
    entries.truncate(limit);
    // Continue after the last entry returned: its time and its id (entries that arrived in
    // the same millisecond are ordered by id, so none is skipped or repeated).
    let (next_from, next_after) = match (left_out, entries.last()) {
        (Some(_), Some(last)) => (
            Some(last.index.dead_lettered_at_ms),
            Some(last.message_id.clone()),
        ),
        _ => (None, None),
    };
    Ok(Json(DlqPage {
        namespace: ns,
        entries: entries.into_iter().map(DlqItem::redacted).collect(),
        next_from,
        next_after,
    }))
}

/// Reads one dead-letter entry with its message and every attempt.
#[utoipa::path(
    get, path = "/api/v1/namespaces/{namespace}/dlq/{messageId}", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace"),
           ("messageId" = String, Path, description = "The message id")),
    responses((status = 200, description = "The entry", body = DlqItem),
        (status = 404, description = "Unknown namespace, or not in the DLQ", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn read(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<DlqItem>, ApiError> {
    let ns = namespace(&app, &ns)?;
    Ok(Json(dlq::get(&app, &ns, &id)?.redacted()))
}

/// Discards one dead-letter entry (recorded with its time).
#[utoipa::path(
    delete, path = "/api/v1/namespaces/{namespace}/dlq/{messageId}", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace"),
           ("messageId" = String, Path, description = "The message id")),
    responses((status = 200, description = "Discarded", body = DlqIndex),
        (status = 404, description = "Unknown namespace, or not in the DLQ", body = super::error::ErrorEnvelope),
        (status = 409, description = "Not pending (being replayed, replayed or discarded)", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn discard(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<DlqIndex>, ApiError> {
    let ns = namespace(&app, &ns)?;
    Ok(Json(dlq::discard(&app, &ns, &id)?.redacted()))
}

/// Body of a single replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayOne {
    /// A corrected payload to deliver instead of the original (a JSON object). Default: the
    /// original.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
}

/// Replays one dead-letter entry in the background: answers at once with the entry marked
/// `replaying`; it becomes `replayed`, or `pending` again with the new attempts.
#[utoipa::path(
    post, path = "/api/v1/namespaces/{namespace}/dlq/{messageId}/replay", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace"),
           ("messageId" = String, Path, description = "The message id")),
    request_body(content = Option<ReplayOne>, description = "Optional edited payload"),
    responses((status = 202, description = "Replay started", body = DlqIndex),
        (status = 400, description = "Invalid body", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace, or not in the DLQ", body = super::error::ErrorEnvelope),
        (status = 409, description = "Not pending", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn replay_one(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path((ns, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<DlqIndex>), ApiError> {
    let ns = namespace(&app, &ns)?;
    let req: ReplayOne = super::error::json_body(&body)?;
    if let Some(p) = &req.payload {
        crate::model::write::check_payload(p).map_err(|m| field("payload", m))?;
    }
    let (ix, _) = dlq::start_replay(&app, &ns, &id, req.payload)?;
    Ok((StatusCode::ACCEPTED, Json(ix.redacted())))
}

/// Body of a bulk replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayAll {
    /// Replay entries that arrived at or after this time (ms since the epoch or RFC 3339).
    /// Default: all.
    #[serde(default)]
    pub since: Option<serde_json::Value>,
}

/// Replays every pending entry since a time, as a background task (rate-limited by
/// `[delivery] replay_rate_per_sec`); poll `GET /api/v1/tasks/{taskId}`.
#[utoipa::path(
    post, path = "/api/v1/namespaces/{namespace}/dlq/replay", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace")),
    request_body(content = Option<ReplayAll>, description = "Optional `since`"),
    responses((status = 202, description = "Task started", body = TaskView),
        (status = 400, description = "Invalid body", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn replay_all(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let ns = namespace(&app, &ns)?;
    let req: ReplayAll = super::error::json_body(&body)?;
    let since = match &req.since {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::Number(n)) => {
            let ms = n
                .as_u64()
                .ok_or_else(|| field("since", "must be ms since the epoch or an RFC 3339 time"))?;
            super::ns_metrics::check_time("since", ms).map_err(|e| ApiError::validation(vec![e]))?
        }
        Some(serde_json::Value::String(s)) => time("since", Some(s))?.unwrap_or(0),
        Some(_) => {
            return Err(field(
                "since",
                "must be ms since the epoch or an RFC 3339 time",
            ))
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(tasks::replay_dlq(&app, &ns, since)),
    ))
}

/// Re-delivers a range of a namespace's log (`fromOffset` or `fromTime`, optional
/// `toOffset`, `partition`, `target`) as a background task.
#[utoipa::path(
    post, path = "/api/v1/namespaces/{namespace}/replay", tag = "dlq",
    params(("namespace" = String, Path, description = "The namespace")),
    request_body = LogReplay,
    responses((status = 202, description = "Task started", body = TaskView),
        (status = 400, description = "Invalid body", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn replay_log(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let name = namespace(&app, &ns)?;
    let req: LogReplay = super::error::json_body(&body)?;
    if req.from_offset.is_none() && req.from_time.is_none() {
        return Err(field("fromOffset", "give fromOffset or fromTime"));
    }
    if req.from_offset.is_some() && req.from_time.is_some() {
        return Err(field("fromTime", "give fromOffset or fromTime, not both"));
    }
    if let Some(t) = req.from_time {
        super::ns_metrics::check_time("fromTime", t).map_err(|e| ApiError::validation(vec![e]))?;
    }
    if let (Some(f), Some(t)) = (req.from_offset, req.to_offset) {
        if t < f {
            return Err(field("toOffset", "must not be below fromOffset"));
        }
    }
    if let Some(rt) = app.namespace(&name) {
        if let Some(p) = req.partition {
            if p as usize >= rt.logs.len() {
                return Err(field(
                    "partition",
                    format!("namespace has {} partitions", rt.logs.len()),
                ));
            }
        }
        if let Some(t) = &req.target {
            let known = rt.spec.target_configs.iter().any(|c| &c.identifier == t);
            if !known && rt.spec.target_configs.is_empty() {
                // Messages may name their own targets: an unknown id just matches none of them.
            } else if !known {
                return Err(field("target", format!("namespace has no target '{t}'")));
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(tasks::replay_log(&app, &name, req)),
    ))
}

/// A background task's progress.
#[utoipa::path(
    get, path = "/api/v1/tasks/{taskId}", tag = "dlq",
    params(("taskId" = String, Path, description = "The task id")),
    responses((status = 200, description = "Progress", body = TaskView),
        (status = 404, description = "Unknown task", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn task(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    app.delivery.tasks.get(&id).map(Json).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("Task '{id}' not found"))
            .with_details(serde_json::json!({ "taskId": id }))
    })
}

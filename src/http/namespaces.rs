//! `/api/v1/namespaces[/{ns}]`: namespace administration (admin key), persisted in the
//! state store's registry (synced) and applied at once.
//!
//! Namespaces are served redacted ([`crate::redact`]): target secrets, secret headers,
//! passwords and URL credentials read `"<set>"`. A PUT that sends `"<set>"` back keeps the
//! stored secret at that place; a `"<set>"` with no stored secret behind it (a create, a new
//! target, a changed URL) is refused with 400 naming the field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use crate::app::App;
use crate::model::namespace::{normalise_namespace_name, Namespace};
use crate::model::time::rfc3339_ms;
use crate::model::validate::FieldError;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/namespaces", get(list).post(create))
        .route(
            "/api/v1/namespaces/{namespace}",
            get(read).put(replace).delete(remove),
        )
}

/// Parses a namespace document. `stored`: the namespace it replaces (unredacted), whose
/// secrets stand behind the `"<set>"` placeholders of the document.
fn parse(
    headers: &HeaderMap,
    body: &[u8],
    stored: Option<&serde_json::Value>,
) -> Result<Namespace, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ));
    }
    let restored;
    let body = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut doc) => {
            let errs = crate::redact::restore_namespace(&mut doc, stored);
            if !errs.is_empty() {
                return Err(ApiError::validation(errs));
            }
            restored = serde_json::to_vec(&doc).map_err(ApiError::internal)?;
            restored.as_slice()
        }
        // Not JSON: the parser below names the error.
        Err(_) => body,
    };
    let mut ns = Namespace::from_json(body).map_err(ApiError::validation)?;
    ns.normalise();
    ns.validate().map_err(ApiError::validation)?;
    Ok(ns)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NamespaceNotFound,
        format!("Namespace '{name}' not found"),
    )
    .with_details(serde_json::json!({ "namespace": name }))
}

fn declared(app: &App, name: &str) -> bool {
    app.config
        .declared_namespaces::<Namespace>()
        .is_ok_and(|v| v.iter().any(|n| normalise_namespace_name(&n.name) == name))
}

async fn persist_and_install(app: Arc<App>, ns: Namespace) -> Result<Namespace, ApiError> {
    let doc = serde_json::to_vec(&ns).map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || -> Result<Namespace, ApiError> {
        // Logs first, registry second: a namespace is only registered (and so reopened at
        // the next start) once its logs opened.
        let previous = app.namespace(&ns.name).map(|rt| rt.spec.clone());
        app.install(ns.clone()).map_err(|e| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("the namespace's logs could not be opened: {e}"),
            )
        })?;
        if let Err(e) = app.state.put_namespace(&ns.name, &doc) {
            // Not registered: serve what the registry says (the previous version, or nothing),
            // so that what is served is what the next start reopens.
            tracing::error!(namespace = %ns.name, error = %e, "registering the namespace failed; its change is undone");
            match previous {
                Some(spec) => {
                    let _ = app.install(spec);
                }
                None => {
                    let _ = app.uninstall(&ns.name);
                }
            }
            return Err(ApiError::internal(e));
        }
        Ok(ns)
    })
    .await
    .map_err(ApiError::internal)?
}

/// A namespace as served: its secrets redacted.
fn served(ns: &Namespace) -> Result<serde_json::Value, ApiError> {
    crate::redact::namespace_json(ns).map_err(ApiError::internal)
}

/// Creates a namespace.
#[utoipa::path(
    post, path = "/api/v1/namespaces", tag = "namespaces",
    request_body(content = Namespace, example = json!({
        "name": "orders", "durability": "sync",
        "shardConfig": {"strategy": "hash", "partitionCount": 4},
        "targetConfigs": [{"type": "webhook", "identifier": "billing",
            "config": {"url": "https://billing.example/hooks/orders", "timeoutMs": 5000}}],
        "retryPolicy": {"maxAttempts": 5, "backoffStrategy": "exponential"}
    })),
    responses(
        (status = 201, description = "Created (secrets read `<set>`)", body = Namespace),
        (status = 400, description = "Invalid; details name every failing field", body = super::error::ErrorEnvelope),
        (status = 401, description = "No key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope),
        (status = 409, description = "Exists already", body = super::error::ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _admin: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut ns = parse(&headers, &body, None)?;
    super::cluster::check_owner(&app, &ns.name, "/api/v1/namespaces")?;
    app.delivery
        .check_targets("targetConfigs", &ns.target_configs)
        .map_err(ApiError::validation)?;
    crate::mirror::check_built(&ns).map_err(ApiError::validation)?;
    let _serial = app.ns_admin.lock().await;
    if app.namespace(&ns.name).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("Namespace '{}' exists already", ns.name),
        ));
    }
    let now = rfc3339_ms(wald_storage::now_ms());
    ns.created_at = Some(now.clone());
    ns.updated_at = Some(now);
    // A name deleted earlier in this process: its index may be written again.
    app.state.undelete(&ns.name);
    let ns = persist_and_install(Arc::clone(&app), ns).await?;
    Ok((StatusCode::CREATED, Json(served(&ns)?)))
}

/// Lists namespaces.
#[utoipa::path(
    get, path = "/api/v1/namespaces", tag = "namespaces",
    responses((status = 200, description = "Every namespace (secrets read `<set>`)", body = Vec<Namespace>),
        (status = 401, description = "No key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _admin: Admin,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let list = app
        .all_namespaces()
        .iter()
        .filter(|n| app.config.cluster.owns(&n.spec.name))
        .map(|n| served(&n.spec))
        .collect::<Result<_, _>>()?;
    Ok(Json(list))
}

/// Reads a namespace.
#[utoipa::path(
    get, path = "/api/v1/namespaces/{namespace}", tag = "namespaces",
    params(("namespace" = String, Path, description = "The namespace")),
    responses((status = 200, description = "The namespace (secrets read `<set>`)", body = Namespace),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn read(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = normalise_namespace_name(&name);
    let ns = app.namespace(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(served(&ns.spec)?))
}

/// Replaces a namespace's settings (the partition count may grow, never shrink). A secret
/// sent back as `"<set>"` (as a GET shows it) keeps its stored value.
#[utoipa::path(
    put, path = "/api/v1/namespaces/{namespace}", tag = "namespaces",
    request_body(content = Namespace, example = json!({
        "name": "orders", "durability": "sync",
        "shardConfig": {"strategy": "hash", "partitionCount": 4},
        "targetConfigs": [{"type": "webhook", "identifier": "billing",
            "config": {"url": "https://billing.example/hooks/orders", "timeoutMs": 10000}}]
    })),
    params(("namespace" = String, Path, description = "The namespace")),
    responses((status = 200, description = "Replaced (secrets read `<set>`)", body = Namespace),
        (status = 400, description = "Invalid", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn replace(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = normalise_namespace_name(&name);
    let _serial = app.ns_admin.lock().await;
    let current = app.namespace(&name).ok_or_else(|| not_found(&name))?;
    let stored = serde_json::to_value(&current.spec).map_err(ApiError::internal)?;
    let mut ns = parse(&headers, &body, Some(&stored))?;
    app.delivery
        .check_targets("targetConfigs", &ns.target_configs)
        .map_err(ApiError::validation)?;
    crate::mirror::check_built(&ns).map_err(ApiError::validation)?;
    let mut errs = Vec::new();
    if ns.name != name {
        errs.push(FieldError {
            field: "name".into(),
            message: format!("must equal the path's namespace '{name}'"),
        });
    }
    let before = current.spec.shard_config.partition_count;
    if ns.shard_config.partition_count < before {
        errs.push(FieldError {
            field: "shardConfig.partitionCount".into(),
            message: format!("may grow but not shrink (is {before}): records in the removed partitions would be orphaned"),
        });
    }
    if !errs.is_empty() {
        return Err(ApiError::validation(errs));
    }
    ns.created_at.clone_from(&current.spec.created_at);
    ns.updated_at = Some(rfc3339_ms(wald_storage::now_ms()));
    let ns = persist_and_install(Arc::clone(&app), ns).await?;
    Ok(Json(served(&ns)?))
}

/// Deletes a namespace and its data.
#[utoipa::path(
    delete, path = "/api/v1/namespaces/{namespace}", tag = "namespaces",
    params(("namespace" = String, Path, description = "The namespace")),
    responses((status = 204, description = "Deleted with its logs"),
        (status = 404, description = "Unknown namespace", body = super::error::ErrorEnvelope),
        (status = 409, description = "Declared in the config file", body = super::error::ErrorEnvelope)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn remove(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = normalise_namespace_name(&name);
    let _serial = app.ns_admin.lock().await;
    if app.namespace(&name).is_none() {
        return Err(not_found(&name));
    }
    if declared(&app, &name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("Namespace '{name}' is declared in the config file; remove it there"),
        ));
    }
    let app = Arc::clone(&app);
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        if let Some(rt) = app.uninstall(&name) {
            // New requests no longer find it; let the ones in flight and its consumers
            // (which notice within a loop turn) let go of its logs.
            let in_use = |rt: &Arc<crate::app::NamespaceRuntime>| {
                Arc::strong_count(rt) > 1 || rt.logs.iter().any(|l| Arc::strong_count(l) > 2)
            };
            if !wait_until(std::time::Duration::from_secs(10), || !in_use(&rt)) {
                tracing::warn!(namespace = %name, "namespace logs still in use after 10 s; closing them for writes");
            }
            // Before anything is deleted, the logs refuse appends: a write still holding the
            // namespace is answered 503, never acknowledged into files about to be removed;
            // what was queued is synced and its tickets complete.
            for (p, log) in rt.logs.iter().enumerate() {
                if let Err(e) = log.close_for_writes() {
                    tracing::warn!(namespace = %name, partition = p, error = %e, "closing a deleted namespace's log");
                }
            }
            if let Some(dlq) = app.engine.open_dlqs().into_iter().find(|(n, _)| *n == name) {
                if let Err(e) = dlq.1.close_for_writes() {
                    tracing::warn!(namespace = %name, error = %e, "closing a deleted namespace's dead-letter log");
                }
            }
            // Requests still holding it now finish at once (their appends fail or completed).
            if !wait_until(std::time::Duration::from_secs(10), || Arc::strong_count(&rt) == 1) {
                tracing::warn!(namespace = %name, "requests still hold the deleted namespace after its logs closed");
            }
        }
        app.metrics.series.remove(&name);
        app.mirrors.forget(&name);
        app.state
            .delete_namespace(&name)
            .map_err(ApiError::internal)?;
        app.state
            .delete_namespace_data(&name)
            .map_err(ApiError::internal)?;
        app.state
            .delete_delivery_data(&name)
            .map_err(ApiError::internal)?;
        app.state
            .delete_txns_of(&name)
            .map_err(ApiError::internal)?;
        app.engine
            .remove_namespace(&name)
            .map_err(ApiError::internal)?;
        tracing::warn!(namespace = %name, "namespace deleted with its logs");
        Ok(())
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(StatusCode::NO_CONTENT)
}

/// Polls `done` every 20 ms until it holds (true) or `limit` passes (false).
fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

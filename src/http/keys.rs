//! `/api/v1/keys[/{id}]`: API keys created and revoked at run time (admin key). The secret
//! is in the creation's answer only; the server keeps its SHA-256. Keys of the configuration
//! file are listed as read-only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
use super::error::{ApiError, ErrorCode};
use crate::app::App;
use crate::keys::{KeyError, KeyInfo};
use crate::model::time::rfc3339_ms;
use crate::model::validate::FieldError;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/keys", get(list).post(create))
        .route("/api/v1/keys/{id}", delete(revoke))
}

/// A key to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// The key's id (1 to 100 letters, digits, `.`, `_`, `-`): in namespaces'
    /// `accessControl.allowedApiKeys`, logs and metrics.
    #[schema(example = "billing-writer")]
    pub id: String,
    /// The namespaces the key may use, or `["*"]` for all.
    #[schema(example = json!(["orders"]))]
    pub namespaces: Vec<String>,
}

/// A key as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// The key's id.
    pub id: String,
    /// Its namespaces (`["*"]`: all).
    pub namespaces: Vec<String>,
    /// `config` (the configuration file's; read-only here) or `runtime` (created by this API).
    pub source: String,
    /// When a run-time key was created (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A created key, with its secret — shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key's id.
    pub id: String,
    /// The secret, for `X-API-Key` or `Authorization: Bearer`. Not shown again: the server
    /// keeps only its SHA-256.
    pub key: String,
    /// Its namespaces.
    pub namespaces: Vec<String>,
    /// `runtime`.
    pub source: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// Every API key (the admin key aside).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// Configured keys first, then run-time keys by id.
    pub keys: Vec<KeyView>,
}

/// A revoked key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// The key's id.
    pub id: String,
    /// Always true.
    pub revoked: bool,
}

fn view(k: KeyInfo) -> KeyView {
    KeyView {
        id: k.id,
        namespaces: k.namespaces,
        source: k.source.to_owned(),
        created_at: k.created_at_ms.map(rfc3339_ms),
    }
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid { field, reason } => {
            ApiError::validation(vec![FieldError::new(field, reason)])
        }
        KeyError::Exists(_) | KeyError::ReadOnly(_) => {
            ApiError::new(ErrorCode::Conflict, e.to_string())
        }
        KeyError::NotFound(_) => ApiError::new(ErrorCode::ApiKeyNotFound, e.to_string()),
        KeyError::Full => ApiError::new(ErrorCode::Conflict, e.to_string()),
        KeyError::Store(e) => ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("the state store refused the change: {e}"),
        ),
    }
}

/// Creates an API key; the answer holds its secret, shown this once.
#[utoipa::path(
    post, path = "/api/v1/keys", tag = "keys", request_body(content = CreateKey, example = json!({"id": "billing-writer", "namespaces": ["orders"]})),
    responses(
        (status = 201, description = "Created; `key` is the secret, never shown again", body = CreatedKey),
        (status = 400, description = "Invalid id or namespaces", body = super::error::ErrorEnvelope),
        (status = 401, description = "No key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope),
        (status = 409, description = "The id is taken, or too many keys", body = super::error::ErrorEnvelope),
        (status = 503, description = "The state store refused the write", body = super::error::ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let req: CreateKey = super::error::json_body(&body)?;
    let now = wald_storage::now_ms();
    let (secret, info) = tokio::task::spawn_blocking(move || {
        app.keys.create(&app.state, &req.id, &req.namespaces, now)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(key_error)?;
    tracing::info!(key = %info.id, namespaces = ?info.namespaces, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: info.id,
            key: secret,
            namespaces: info.namespaces,
            source: info.source.to_owned(),
            created_at: rfc3339_ms(now),
        }),
    ))
}

/// Lists the API keys (ids and namespaces, never secrets).
#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 401, description = "No key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(State(app): State<Arc<App>>, _admin: Admin) -> Json<KeyList> {
    Json(KeyList {
        keys: app.keys.list().into_iter().map(view).collect(),
    })
}

/// Revokes a run-time API key: its next request is answered 401.
#[utoipa::path(
    delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 401, description = "No key", body = super::error::ErrorEnvelope),
        (status = 403, description = "Not the admin key", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such run-time key", body = super::error::ErrorEnvelope),
        (status = 409, description = "A key of the configuration file (read-only)", body = super::error::ErrorEnvelope),
        (status = 503, description = "The state store refused the change", body = super::error::ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn revoke(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let app2 = Arc::clone(&app);
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || app2.keys.revoke(&app2.state, &id2))
        .await
        .map_err(ApiError::internal)?
        .map_err(key_error)?;
    tracing::info!(key = %id, "API key revoked");
    Ok(Json(Revoked { id, revoked: true }))
}

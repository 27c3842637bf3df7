//! `GET /api/v1/wal/transaction/{transactionId}/status`: a multi-partition transaction's
//! state, counts, timestamps and each mutation's state, attempts and compensation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::auth::{authorize_namespace, Caller};
use super::error::{ApiError, ErrorCode};
use super::wal::lookup_namespace;
use crate::app::App;
use crate::txn::record::TxnRecord;
use crate::txn::view::TransactionView;

/// The routes of this resource.
pub fn router() -> Router<Arc<App>> {
    Router::new().route(
        "/api/v1/wal/transaction/{transaction_id}/status",
        get(transaction_status),
    )
}

/// A transaction's status.
#[utoipa::path(
    get, path = "/api/v1/wal/transaction/{transaction_id}/status", tag = "wal",
    params(("transaction_id" = String, Path, description = "The transaction id (`transactionId` of the write's answer)")),
    responses(
        (status = 200, description = "The transaction's state and each mutation's", body = TransactionView),
        (status = 403, description = "Key without access to the transaction's namespace", body = super::error::ErrorEnvelope),
        (status = 404, description = "Unknown transaction", body = super::error::ErrorEnvelope),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn transaction_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(transaction_id): Path<String>,
) -> Result<Json<TransactionView>, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::TransactionNotFound,
            format!("Transaction '{transaction_id}' not found"),
        )
        .with_details(serde_json::json!({ "transactionId": transaction_id }))
    };
    let bytes = app
        .state
        .get_txn(&transaction_id)
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let rec = TxnRecord::decode(&bytes).map_err(ApiError::internal)?;
    // A deleted namespace's transactions are visible to the admin key only.
    match lookup_namespace(&app, &rec.namespace) {
        Ok(ns) => authorize_namespace(&app, &caller, &ns, &rec.namespace)?,
        Err(_) if caller.0.as_ref().is_none_or(|w| w.admin) => {}
        Err(_) => return Err(not_found()),
    }
    Ok(Json(TransactionView::from(&rec)))
}

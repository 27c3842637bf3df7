//! The answer of `GET /api/v1/wal/transaction/{transactionId}/status`.
//!
//! It names each mutation's target by identifier only (never its configuration), and every
//! error text is scrubbed of credentials ([`crate::redact::text`]) before it is served.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::record::{Inverse, MutationState, MutationStatus, TxnRecord, TxnStatus};
use crate::delivery::record::AttemptRecord;
use crate::model::time::rfc3339_ms;
use crate::model::transaction::Operation;

/// A transaction's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    /// The transaction id.
    #[schema(example = "txn_1696291200000_xyz789abc")]
    pub transaction_id: String,
    /// Its namespace.
    pub namespace: String,
    /// The message (log record) that carries it.
    pub message_id: String,
    /// Where it is.
    pub status: TxnStatus,
    /// Why it failed or needed compensation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Mutations in all.
    pub total_mutations: usize,
    /// Mutations applied (and not compensated).
    pub completed_mutations: usize,
    /// Mutations that failed.
    pub failed_mutations: usize,
    /// Mutations compensated.
    pub compensated_mutations: usize,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// When its first mutation started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it reached its final state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// When mutations not completed by then fail.
    pub timeout_at: String,
    /// Its last change.
    pub updated_at: String,
    /// Each mutation, in the order given.
    pub mutations: Vec<MutationView>,
}

/// One attempt, with RFC 3339 time.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: u32,
    /// When it started.
    pub at: String,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

/// How a mutation is (or was) undone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationView {
    /// `explicit` (the client's), `derived` (from the captured value), `noop` (nothing to
    /// undo), `unavailable`, or `not_captured` (the mutation has not started).
    pub source: String,
    /// The compensating operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Its data (for a derived inverse: what the target held before the mutation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    /// Its attempts.
    pub attempts: Vec<AttemptView>,
    /// Why it failed for good (or cannot exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One mutation's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationView {
    /// The mutation id (targets see it as the idempotency key; a compensation as
    /// `{mutationId}_compensation`).
    pub mutation_id: String,
    /// 1-based position.
    pub order: u32,
    /// Its partition.
    pub partition: String,
    /// What it does.
    pub operation: Operation,
    /// The target's identifier.
    pub target: String,
    /// Where it is.
    pub status: MutationStatus,
    /// Attempts made.
    pub attempt_count: u32,
    /// The attempts (the most recent 32).
    pub attempts: Vec<AttemptView>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it reached completed, failed or compensated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Its compensation.
    pub compensation: CompensationView,
}

/// An error text as served: URL credentials and secret parameters read `<set>`.
fn scrub(e: Option<&String>) -> Option<String> {
    e.map(|e| crate::redact::text(e).into_owned())
}

fn attempts(list: &[AttemptRecord]) -> Vec<AttemptView> {
    list.iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            at: rfc3339_ms(a.at_ms),
            duration_ms: a.duration_ms,
            error: scrub(a.error.as_ref()),
            error_class: a.error_class.clone(),
        })
        .collect()
}

fn compensation(m: &MutationState) -> CompensationView {
    let (source, operation, data) = match (&m.spec.compensation, &m.inverse) {
        (Some(c), _) => ("explicit", Some(c.operation), Some(c.data.clone())),
        (None, Some(Inverse::Apply { operation, data })) => {
            ("derived", Some(*operation), Some(data.clone()))
        }
        (None, Some(Inverse::Noop)) => ("noop", None, None),
        (None, Some(Inverse::Unavailable { .. })) => ("unavailable", None, None),
        (None, None) => ("not_captured", None, None),
    };
    let error = m.compensation_error.clone().or_else(|| match &m.inverse {
        Some(Inverse::Unavailable { reason }) if m.spec.compensation.is_none() => {
            Some(reason.clone())
        }
        _ => None,
    });
    CompensationView {
        source: source.to_owned(),
        operation,
        data,
        attempts: attempts(&m.compensation_attempts),
        error: scrub(error.as_ref()),
    }
}

impl From<&TxnRecord> for TransactionView {
    fn from(r: &TxnRecord) -> Self {
        Self {
            transaction_id: r.transaction_id.clone(),
            namespace: r.namespace.clone(),
            message_id: r.message_id.clone(),
            status: r.status,
            reason: scrub(r.reason.as_ref()),
            total_mutations: r.mutations.len(),
            completed_mutations: r.count(MutationStatus::Completed),
            failed_mutations: r.count(MutationStatus::Failed),
            compensated_mutations: r.count(MutationStatus::Compensated),
            created_at: rfc3339_ms(r.created_at_ms),
            started_at: r.started_at_ms.map(rfc3339_ms),
            completed_at: r.completed_at_ms.map(rfc3339_ms),
            timeout_at: rfc3339_ms(r.timeout_at_ms),
            updated_at: rfc3339_ms(r.updated_at_ms),
            mutations: r
                .mutations
                .iter()
                .map(|m| MutationView {
                    mutation_id: m.mutation_id.clone(),
                    order: m.order,
                    partition: m.spec.partition.clone(),
                    operation: m.spec.operation,
                    target: m.spec.target.identifier.clone(),
                    status: m.status,
                    attempt_count: m.attempt_count,
                    attempts: attempts(&m.attempts),
                    last_error: scrub(m.last_error.as_ref()),
                    next_attempt_at: m.next_attempt_at_ms.map(rfc3339_ms),
                    started_at: m.started_at_ms.map(rfc3339_ms),
                    completed_at: m.completed_at_ms.map(rfc3339_ms),
                    compensation: compensation(m),
                })
                .collect(),
        }
    }
}

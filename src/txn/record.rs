//! A transaction's record: its state, each mutation's state, attempts and captured inverse,
//! as stored in the state store (`txn` column family, JSON) and served, as a view, by
//! `GET /api/v1/wal/transaction/{id}/status`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::delivery::record::{push_bounded, AttemptRecord};
use crate::model::namespace::RetryPolicy;
use crate::model::transaction::{MutationSpec, Operation};

/// Where a transaction is (the seeds' `TransactionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxnStatus {
    /// Accepted and durable; no mutation started yet.
    Initiated,
    /// Mutations are being applied.
    InProgress,
    /// Every mutation was applied.
    Completed,
    /// A mutation failed for good and could not be (wholly) compensated; `reason` says why.
    Failed,
    /// A mutation failed for good (or the timeout passed); compensation is about to start.
    CompensationRequired,
    /// The applied mutations are being compensated, in reverse order.
    Compensating,
    /// Every applied mutation was compensated.
    Compensated,
    /// Abandoned before any mutation was applied (its namespace was deleted).
    Cancelled,
}

impl TxnStatus {
    /// Every state, for metrics.
    pub const ALL: [Self; 8] = [
        Self::Initiated,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::CompensationRequired,
        Self::Compensating,
        Self::Compensated,
        Self::Cancelled,
    ];

    /// True once nothing changes any more.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Compensated | Self::Cancelled
        )
    }

    /// The state's name (as in JSON).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::CompensationRequired => "compensation_required",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a mutation is (the seeds' `MutationStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    /// Not started.
    Pending,
    /// An attempt is under way.
    InProgress,
    /// Applied.
    Completed,
    /// Failed for good (or abandoned when the transaction failed or timed out).
    Failed,
    /// An attempt failed; another is scheduled (`nextAttemptAt`).
    Retrying,
    /// Its compensation is under way.
    Compensating,
    /// Its compensation was applied.
    Compensated,
}

/// How a mutation is undone, decided before its first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Inverse {
    /// Apply this on the mutation's target.
    Apply {
        /// The inverse operation.
        operation: Operation,
        /// Its data (for a captured value: what the target held before the mutation).
        #[schema(value_type = Object)]
        data: Map<String, Value>,
    },
    /// Nothing to undo (the mutation changes nothing that existed, e.g. DELETE of a row that
    /// was not there).
    Noop,
    /// No inverse exists; the reason says why.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// One mutation's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutationState {
    /// `{transactionId}_m{order}`: targets see it as the idempotency key.
    pub mutation_id: String,
    /// 1-based position in the transaction.
    pub order: u32,
    /// What it does.
    pub spec: MutationSpec,
    /// Where it is.
    pub status: MutationStatus,
    /// Its undo, captured before the first attempt (absent until then, and for mutations with
    /// an explicit compensation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<Inverse>,
    /// Attempts (the most recent [`crate::delivery::record::MAX_ATTEMPTS_KEPT`]).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Attempts made in all.
    #[serde(default)]
    pub attempt_count: u32,
    /// When the next attempt is due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    /// An attempt started and its outcome was not recorded (a crash in between): the next
    /// attempt may find it applied.
    #[serde(default)]
    pub in_doubt: bool,
    /// Abandoned when the transaction failed while its last attempt may have applied it (in
    /// doubt, or timed out): it is compensated too.
    #[serde(default)]
    pub maybe_applied: bool,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Compensation attempts.
    #[serde(default)]
    pub compensation_attempts: Vec<AttemptRecord>,
    /// Compensation attempts made in all.
    #[serde(default)]
    pub compensation_attempt_count: u32,
    /// Why its compensation failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_error: Option<String>,
    /// First attempt (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When it reached completed / failed / compensated (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at_ms: Option<u64>,
}

impl MutationState {
    /// A mutation not started.
    #[must_use]
    pub fn new(transaction_id: &str, order: u32, spec: MutationSpec) -> Self {
        Self {
            mutation_id: format!("{transaction_id}_m{order}"),
            order,
            spec,
            status: MutationStatus::Pending,
            inverse: None,
            attempts: Vec::new(),
            attempt_count: 0,
            next_attempt_at_ms: None,
            in_doubt: false,
            maybe_applied: false,
            last_error: None,
            compensation_attempts: Vec::new(),
            compensation_attempt_count: 0,
            compensation_error: None,
            started_at_ms: None,
            completed_at_ms: None,
        }
    }

    /// Records an attempt of the mutation (`compensation`: of its compensation).
    pub fn push_attempt(&mut self, a: AttemptRecord, compensation: bool) {
        let (list, count) = if compensation {
            (
                &mut self.compensation_attempts,
                &mut self.compensation_attempt_count,
            )
        } else {
            (&mut self.attempts, &mut self.attempt_count)
        };
        push_bounded(list, count, a);
    }
}

/// A transaction's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxnRecord {
    /// `txn_{ms}_{9 base-36 chars}` (the message id's suffix).
    pub transaction_id: String,
    /// The namespace.
    pub namespace: String,
    /// The message (log record) that carries it.
    pub message_id: String,
    /// The record's partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Where it is.
    pub status: TxnStatus,
    /// Why it failed, or why compensation was needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The retry policy of its mutations and compensations.
    pub policy: RetryPolicy,
    /// Whether a compensation that fails for good goes to the DLQ.
    pub dlq: bool,
    /// Accepted (ms since the epoch).
    pub created_at_ms: u64,
    /// First mutation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at_ms: Option<u64>,
    /// Mutations not completed by then fail.
    pub timeout_at_ms: u64,
    /// Last change.
    pub updated_at_ms: u64,
    /// The mutations, in the order given.
    pub mutations: Vec<MutationState>,
}

impl TxnRecord {
    /// Encodes the record (JSON).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stored record.
    ///
    /// # Errors
    /// The bytes are not a transaction record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Mutations in a status.
    #[must_use]
    pub fn count(&self, status: MutationStatus) -> usize {
        self.mutations.iter().filter(|m| m.status == status).count()
    }
}

/// The transaction id of the message id `wal_{ms}_{rand}`: `txn_{ms}_{rand}`.
#[must_use]
pub fn transaction_id_of(message_id: &str) -> String {
    match message_id.strip_prefix("wal_") {
        Some(rest) => format!("txn_{rest}"),
        None => format!("txn_{message_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_finality() {
        assert_eq!(transaction_id_of("wal_1_abc"), "txn_1_abc");
        let finals: Vec<_> = TxnStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len(), 4);
        assert_eq!(
            serde_json::to_string(&TxnStatus::CompensationRequired).unwrap(),
            "\"compensation_required\""
        );
        let inv = Inverse::Apply {
            operation: Operation::Del,
            data: serde_json::json!({"key": "k"}).as_object().unwrap().clone(),
        };
        let back: Inverse = serde_json::from_str(&serde_json::to_string(&inv).unwrap()).unwrap();
        assert_eq!(back, inv);
    }
}

//! Compensation: the applied mutations (and those whose last attempt may have applied) undone
//! in reverse order, one at a time, each by its explicit compensation or its derived inverse,
//! retried by the transaction's policy; one that fails for good goes to the dead-letter queue
//! and the transaction ends `failed`.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use wald_storage::now_ms;

use super::{already_applied, attempt_record, last_timed_out, Executor, STORE_RETRY_MS};
use crate::delivery::backoff::{decide, RetryDecision};
use crate::delivery::record::{DeliveryRecord, MessageStatus, TargetDelivery, TargetStatus};
use crate::delivery::runner::{attempt, ms};
use crate::delivery::target::{ErrorClass, TargetError};
use crate::message::StoredMessage;
use crate::model::target::TargetConfig;
use crate::model::transaction::Operation;
use crate::txn::inverse::payload;
use crate::txn::record::{Inverse, MutationState, MutationStatus, TxnStatus};

/// What undoing one mutation takes.
enum Undo {
    /// Apply an operation on a target.
    Apply {
        target: TargetConfig,
        operation: Operation,
        data: Map<String, Value>,
        key: Option<Vec<String>>,
    },
    /// Nothing to undo.
    Noop,
    /// It cannot be undone.
    Unavailable(String),
}

impl Executor {
    /// Undoes the applied mutations in reverse order; true when the transaction reached a
    /// final state, false when the service stopped.
    pub(super) async fn compensate(&mut self) -> bool {
        let order: Vec<usize> = (0..self.rec.mutations.len())
            .rev()
            .filter(|&i| {
                let m = &self.rec.mutations[i];
                matches!(
                    m.status,
                    MutationStatus::Completed | MutationStatus::Compensating
                ) || (m.status == MutationStatus::Failed && m.maybe_applied)
            })
            .collect();
        for i in order {
            if !self.compensate_one(i).await {
                return false;
            }
        }
        let failures: Vec<String> = self
            .rec
            .mutations
            .iter()
            .filter_map(|m| {
                m.compensation_error
                    .as_ref()
                    .map(|e| format!("mutation {} ({}): {e}", m.order, m.mutation_id))
            })
            .collect();
        if failures.is_empty() {
            self.set_status(TxnStatus::Compensated, None);
        } else {
            let before = self.rec.reason.clone().unwrap_or_default();
            self.set_status(
                TxnStatus::Failed,
                Some(format!(
                    "{before}; compensation failed: {}",
                    failures.join("; ")
                )),
            );
        }
        self.save(false);
        true
    }

    fn undo_of(m: &MutationState) -> Undo {
        match (&m.spec.compensation, &m.inverse) {
            (Some(c), _) => Undo::Apply {
                target: c.target.clone(),
                operation: c.operation,
                data: c.data.clone(),
                key: c.key.clone(),
            },
            (None, Some(Inverse::Apply { operation, data })) => Undo::Apply {
                target: m.spec.target.clone(),
                operation: *operation,
                data: data.clone(),
                key: m.spec.key.clone(),
            },
            (None, Some(Inverse::Noop)) => Undo::Noop,
            (None, Some(Inverse::Unavailable { reason })) => Undo::Unavailable(reason.clone()),
            (None, None) => Undo::Unavailable("no inverse was captured before the mutation".into()),
        }
    }

    /// Compensates mutation `i` (retrying by policy); false when the service stopped.
    async fn compensate_one(&mut self, i: usize) -> bool {
        let (target, operation, data, key) = match Self::undo_of(&self.rec.mutations[i]) {
            Undo::Apply {
                target,
                operation,
                data,
                key,
            } => (target, operation, data, key),
            Undo::Noop => {
                let m = &mut self.rec.mutations[i];
                m.status = MutationStatus::Compensated;
                m.completed_at_ms = Some(now_ms());
                self.save(false);
                return true;
            }
            Undo::Unavailable(reason) => {
                self.rec.mutations[i].compensation_error = Some(reason);
                self.save(false);
                return true;
            }
        };
        let body = payload(operation, &target, &data, key.as_deref());
        let comp_id = format!("{}_compensation", self.rec.mutations[i].mutation_id);
        if self.rec.mutations[i].status != MutationStatus::Compensating {
            self.rec.mutations[i].status = MutationStatus::Compensating;
            self.rec.mutations[i].next_attempt_at_ms = None;
            self.save(false);
        }
        loop {
            let at = self.rec.mutations[i].next_attempt_at_ms.unwrap_or(0);
            if !self.pause_until(at).await {
                return false;
            }
            let adapter = self.app.delivery.adapter(&target);
            let m = &mut self.rec.mutations[i];
            let doubt = m.in_doubt || last_timed_out(&m.compensation_attempts);
            let number = m.compensation_attempt_count + 1;
            m.in_doubt = true;
            if !self.save(false) {
                self.rec.mutations[i].next_attempt_at_ms = Some(now_ms() + STORE_RETRY_MS);
                continue;
            }
            let (record, result) = match adapter {
                Ok(adapter) => {
                    let out = self.outgoing(&comp_id, body.clone());
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        r = attempt(adapter, &out, number) => r,
                        _ = stop.changed() => return false,
                    }
                }
                Err(reason) => {
                    let err = TargetError::permanent(ErrorClass::Config, reason);
                    (attempt_record(number, now_ms(), 0, &err), Err(err))
                }
            };
            let now = now_ms();
            let policy = self.rec.policy.clone();
            let m = &mut self.rec.mutations[i];
            m.in_doubt = false;
            m.push_attempt(record, true);
            let result = match result {
                Err(e) if already_applied(operation, &e, doubt) => Ok(()),
                r => r,
            };
            self.app.delivery.count_attempt(
                &self.rec.namespace,
                &target.identifier,
                result.as_ref().err(),
            );
            let m = &mut self.rec.mutations[i];
            match result {
                Ok(()) => {
                    m.status = MutationStatus::Compensated;
                    m.next_attempt_at_ms = None;
                    m.compensation_error = None;
                    m.completed_at_ms = Some(now);
                    self.save(false);
                    return true;
                }
                Err(e) => match decide(&policy, m.compensation_attempt_count, &e) {
                    RetryDecision::Retry { after } => {
                        m.next_attempt_at_ms = Some(now.saturating_add(ms(after)));
                        self.save(false);
                    }
                    RetryDecision::GiveUp { .. } => {
                        m.next_attempt_at_ms = None;
                        m.compensation_error = Some(e.to_string());
                        self.dead_letter(i, &target, &body, &e.to_string()).await;
                        self.save(false);
                        return true;
                    }
                },
            }
        }
    }

    /// Sends a compensation that failed for good to the namespace's dead-letter queue (a
    /// replay delivers it to its target again).
    async fn dead_letter(&mut self, i: usize, target: &TargetConfig, body: &[u8], reason: &str) {
        if !self.rec.dlq {
            return;
        }
        let now = now_ms();
        let m = &self.rec.mutations[i];
        let Ok(raw) =
            serde_json::value::RawValue::from_string(String::from_utf8_lossy(body).into_owned())
        else {
            return;
        };
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("transactionId".to_owned(), self.rec.transaction_id.clone());
        metadata.insert("mutationId".to_owned(), m.mutation_id.clone());
        metadata.insert("kind".to_owned(), "compensation".to_owned());
        let msg = StoredMessage {
            target: serde_json::to_value(vec![target]).ok(),
            transaction_id: Some(self.rec.transaction_id.clone()),
            metadata: Some(metadata),
            ..StoredMessage::new(
                format!("{}_compensation", m.mutation_id),
                &self.rec.namespace,
                raw,
                now,
            )
        };
        let delivery = DeliveryRecord {
            status: MessageStatus::DeadLettered,
            due_at_ms: 0,
            targets: vec![TargetDelivery {
                status: TargetStatus::DeadLettered,
                attempts: m.compensation_attempts.clone(),
                attempt_count: m.compensation_attempt_count,
                ..TargetDelivery::new(&target.identifier, target.region.as_deref())
            }],
            updated_at_ms: now,
        };
        let reason = format!(
            "compensation of {} in transaction {} failed: {reason}",
            m.mutation_id, self.rec.transaction_id
        );
        if let Err(e) = crate::delivery::dlq::dead_letter(
            &self.app,
            &msg,
            self.rec.partition,
            self.rec.offset,
            &delivery,
            &reason,
            0,
        )
        .await
        {
            tracing::error!(transaction_id = %self.rec.transaction_id, error = %e, "dead-lettering a failed compensation failed");
            let m = &mut self.rec.mutations[i];
            if let Some(err) = m.compensation_error.as_mut() {
                let _ = write!(
                    err,
                    " (and writing it to the dead-letter queue failed: {e})"
                );
            }
        }
    }
}

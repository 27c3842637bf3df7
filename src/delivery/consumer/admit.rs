//! Taking records into the window: a transaction's record handed to its executor, a message
//! parked when it is due far ahead, else a slot with its plan, adapters and delivery record.

use std::sync::Arc;

use wald_storage::{now_ms, StoredRecord};

use super::{Consumer, Slot};
use crate::delivery::plan::plan;
use crate::delivery::record::{DeliveryRecord, MessageStatus, TargetDelivery};
use crate::delivery::runner::Outgoing;
use crate::message::StoredMessage;

impl Consumer {
    /// Hands a transaction's record to its executor: resolved once its state record is
    /// stored (the commit may then pass it).
    pub(super) fn adopt_transaction(&mut self, rec: &StoredRecord) -> Result<(), String> {
        let offset = rec.offset;
        match StoredMessage::from_record(rec) {
            Ok(msg) => {
                self.app
                    .txns
                    .adopt(&self.app, &msg, self.partition, offset)
                    .map_err(|e| e.to_string())?;
                let record = DeliveryRecord {
                    status: MessageStatus::Transaction,
                    due_at_ms: rec.due_ms,
                    targets: Vec::new(),
                    updated_at_ms: now_ms(),
                };
                self.batch
                    .put_state(&self.ns, self.partition, offset, record.encode());
            }
            Err(e) => {
                tracing::error!(namespace = %self.ns, partition = self.partition, offset, error = %e, "transaction record cannot be read");
            }
        }
        self.window.insert(offset, true);
        Ok(())
    }

    /// Takes a record read from the log into the window.
    pub(super) fn admit(&mut self, rec: &StoredRecord) {
        let offset = rec.offset;
        let prior = match self
            .app
            .state
            .delivery_state(&self.ns, self.partition, offset)
        {
            Ok(p) => p.and_then(|b| DeliveryRecord::decode(&b).ok()),
            Err(e) => {
                tracing::error!(namespace = %self.ns, offset, error = %e, "reading delivery state failed");
                None
            }
        };
        if let Some(p) = &prior {
            if p.status.is_final() || p.status == MessageStatus::Scheduled {
                // Resolved before a restart, or parked: the due-time index has it.
                self.window.insert(offset, true);
                return;
            }
        }
        let now = now_ms();
        let Some(slot) = self.build_slot(rec, prior, None) else {
            self.window.insert(offset, true);
            return;
        };
        let due = slot_due(&slot);
        let park_after = self.app.delivery.config.park_after_ms;
        if due > now.saturating_add(park_after)
            && slot.record.targets.iter().all(|t| t.attempt_count == 0)
        {
            let mut record = slot.record;
            record.status = MessageStatus::Scheduled;
            record.updated_at_ms = now;
            self.batch
                .put_state(&self.ns, self.partition, offset, record.encode());
            self.batch.park(&self.ns, self.partition, due, offset);
            self.parked += 1;
            self.window.insert(offset, true);
            return;
        }
        self.window.insert(offset, false);
        let key = slot.key.clone();
        self.slots.insert(offset, slot);
        if key.is_empty() {
            self.arm(offset);
        } else {
            let q = self.keys.entry(key).or_default();
            q.push_back(offset);
            if q.len() == 1 {
                self.arm(offset);
            }
        }
    }

    /// A slot for a record, or `None` when it is resolved at once (no targets, bad record),
    /// in which case its final record is already in the batch.
    pub(super) fn build_slot(
        &mut self,
        rec: &StoredRecord,
        prior: Option<DeliveryRecord>,
        parked_due: Option<u64>,
    ) -> Option<Slot> {
        let offset = rec.offset;
        let now = now_ms();
        let ns = self.app.namespace(&self.ns)?;
        let decoded = StoredMessage::from_record(rec)
            .map_err(|e| e.to_string())
            .and_then(|m| plan(&m, &ns.spec).map(|p| (m, p)));
        let (msg, plan) = match decoded {
            Ok(x) => x,
            Err(reason) => {
                tracing::error!(namespace = %self.ns, partition = self.partition, offset, %reason, "record cannot be delivered");
                let record = DeliveryRecord {
                    status: MessageStatus::Failed,
                    due_at_ms: rec.due_ms,
                    targets: Vec::new(),
                    updated_at_ms: now,
                };
                self.batch
                    .put_state(&self.ns, self.partition, offset, record.encode());
                return None;
            }
        };
        let mut record = prior.unwrap_or_else(|| DeliveryRecord {
            status: MessageStatus::Pending,
            due_at_ms: rec.due_ms,
            targets: TargetDelivery::for_targets(&plan.targets),
            updated_at_ms: now,
        });
        if record.targets.len() != plan.targets.len() {
            // The namespace's targets changed since the record was written: start over.
            record.targets = TargetDelivery::for_targets(&plan.targets);
        }
        if plan.targets.is_empty() {
            record.status = MessageStatus::NoTargets;
            record.updated_at_ms = now;
            self.batch
                .put_state(&self.ns, self.partition, offset, record.encode());
            return None;
        }
        let adapters = plan
            .targets
            .iter()
            .map(|t| self.app.delivery.adapter(t))
            .collect();
        let n = plan.targets.len();
        let out = Outgoing {
            message_id: Arc::from(msg.message_id.as_str()),
            namespace: Arc::clone(&self.ns),
            partition: self.partition,
            offset,
            payload: Arc::from(msg.payload.get().as_bytes()),
            accepted_at_ms: msg.accepted_at_ms,
        };
        Some(Slot {
            msg,
            out,
            key: rec.key.clone(),
            plan,
            adapters,
            record,
            parked_due,
            running: 0,
            armed: vec![false; n],
        })
    }
}

pub(super) fn slot_due(slot: &Slot) -> u64 {
    slot.record
        .targets
        .iter()
        .filter(|t| !t.status.is_final())
        .map(|t| slot.record.due_at_ms.max(t.next_attempt_at_ms.unwrap_or(0)))
        .min()
        .unwrap_or(slot.record.due_at_ms)
}

//! The consumer's parked messages (far due times, in the due-time index on disk) and its
//! gauges.

use wald_storage::now_ms;

use super::{ms, Consumer, DeliveryRecord, MessageStatus, PARK_LOAD_LIMIT, PARK_SCAN};

impl Consumer {
    /// Loads parked messages due within the next park interval onto the wheel.
    pub(super) fn load_parked(&mut self, now: u64) {
        let horizon = now.saturating_add(ms(PARK_SCAN) * 2);
        let due = match self
            .app
            .state
            .due_before(&self.ns, self.partition, horizon, PARK_LOAD_LIMIT)
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(namespace = %self.ns, error = %e, "reading the due-time index failed");
                return;
            }
        };
        for (due_ms, offset) in due {
            if self.loaded.contains(&offset) || self.slots.contains_key(&offset) {
                continue;
            }
            let rec = match self.log.read_from(offset).map(|mut r| r.next()) {
                Ok(Some(Ok(rec))) if rec.offset == offset => rec,
                other => {
                    // The log no longer has it (retention) or cannot read it: drop the entry.
                    tracing::warn!(namespace = %self.ns, offset, result = ?other.map(|o| o.map(|r| r.map(|r| r.offset))), "parked message not readable; dropping it from the due-time index");
                    self.unpark(due_ms, offset);
                    continue;
                }
            };
            let prior = self
                .app
                .state
                .delivery_state(&self.ns, self.partition, offset)
                .ok()
                .flatten()
                .and_then(|b| DeliveryRecord::decode(&b).ok());
            if prior.as_ref().is_some_and(|p| p.status.is_final()) {
                self.unpark(due_ms, offset);
                continue;
            }
            if let Some(mut slot) = self.build_slot(&rec, prior, Some(due_ms)) {
                slot.record.status = MessageStatus::Delivering;
                self.loaded.insert(offset);
                self.slots.insert(offset, slot);
                self.arm(offset);
            } else {
                self.unpark(due_ms, offset);
            }
        }
    }

    pub(super) fn unpark(&mut self, due_ms: u64, offset: u64) {
        self.batch.unpark(&self.ns, self.partition, due_ms, offset);
        self.parked = self.parked.saturating_sub(1);
    }


    pub(super) fn publish_gauges(&self) {
        let m = &self.app.delivery.metrics;
        let p = self.partition.to_string();
        let labels = [&*self.ns, p.as_str()];
        let end = self.log.stats().next_offset;
        m.lag_records
            .with_label_values(&labels)
            .set(i64::try_from(end.saturating_sub(self.committed)).unwrap_or(i64::MAX));
        let oldest = self
            .window
            .iter()
            .find(|(_, done)| !**done)
            .and_then(|(o, _)| self.slots.get(o))
            .map_or(0, |s| now_ms().saturating_sub(s.out.accepted_at_ms) / 1000);
        m.lag_seconds
            .with_label_values(&labels)
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
        let delayed = self
            .slots
            .values()
            .filter(|s| s.record.due_at_ms > now_ms())
            .count();
        let waiting = (delayed as u64).saturating_add(self.parked.saturating_sub(self.loaded.len() as u64));
        m.pending_delayed
            .with_label_values(&labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
}

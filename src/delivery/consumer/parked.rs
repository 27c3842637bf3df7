//! The consumer's parked messages (far due times, in the due-time index on disk) and its
//! gauges.

use std::collections::HashSet;
use std::sync::Arc;

use wald_storage::{now_ms, StoredRecord};

use super::{ms, Consumer, DeliveryRecord, MessageStatus, PARK_LOAD_LIMIT, PARK_SCAN};

/// A parked message read off the consumer's task: its record (`None`: deleted by retention)
/// and its delivery record so far. One whose read failed is not loaded (tried again at the
/// next scan).
pub(super) struct Loaded {
    due_ms: u64,
    offset: u64,
    rec: Option<StoredRecord>,
    prior: Option<DeliveryRecord>,
}

impl Consumer {
    /// Starts loading the parked messages due within the next two park intervals, off the
    /// consumer's task (reading records and their delivery state blocks): the wheel keeps
    /// firing meanwhile. The result arrives as a [`Loaded`] batch; one load at a time.
    pub(super) fn start_parked_scan(&mut self, now: u64) {
        if self.scan_in_flight {
            return;
        }
        self.scan_in_flight = true;
        let horizon = now.saturating_add(ms(PARK_SCAN) * 2);
        let (app, ns, partition, log) = (
            Arc::clone(&self.app),
            Arc::clone(&self.ns),
            self.partition,
            Arc::clone(&self.log),
        );
        let skip: HashSet<u64> = self.loaded.clone();
        let tx = self.parked_tx.clone();
        tokio::task::spawn_blocking(move || {
            let due = match app
                .state
                .due_before(&ns, partition, horizon, PARK_LOAD_LIMIT)
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(namespace = %ns, error = %e, "reading the due-time index failed");
                    Vec::new()
                }
            };
            let mut out = Vec::with_capacity(due.len());
            for (due_ms, offset) in due {
                if skip.contains(&offset) {
                    continue;
                }
                let rec = match log.read_from(offset).map(|mut r| r.next()) {
                    Ok(Some(Ok(rec))) if rec.offset == offset => Some(rec),
                    // Deleted by retention: the entry goes.
                    _ if offset < log.stats().first_offset => {
                        tracing::warn!(namespace = %ns, partition, offset, "parked message no longer in the log (retention); dropping it from the due-time index");
                        None
                    }
                    // A read that failed (a disk error) may work at the next scan: the entry
                    // stays, and so does the message's promise.
                    other => {
                        tracing::warn!(namespace = %ns, partition, offset, result = ?other.map(|o| o.map(|r| r.map(|r| r.offset))), "parked message not readable now; kept, read again at the next scan");
                        continue;
                    }
                };
                let prior = rec.as_ref().and_then(|_| {
                    app.state
                        .delivery_state(&ns, partition, offset)
                        .ok()
                        .flatten()
                        .and_then(|b| DeliveryRecord::decode(&b).ok())
                });
                out.push(Loaded {
                    due_ms,
                    offset,
                    rec,
                    prior,
                });
            }
            let _ = tx.send(out);
        });
    }

    /// Puts a loaded batch of parked messages on the wheel.
    pub(super) fn take_parked(&mut self, batch: Vec<Loaded>) {
        self.scan_in_flight = false;
        for Loaded {
            due_ms,
            offset,
            rec,
            prior,
        } in batch
        {
            if self.loaded.contains(&offset) || self.slots.contains_key(&offset) {
                continue;
            }
            // Gone from the log (retention), or resolved already: drop the entry.
            let Some(rec) = rec else {
                self.unpark(due_ms, offset);
                continue;
            };
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
        let waiting =
            (delayed as u64).saturating_add(self.parked.saturating_sub(self.loaded.len() as u64));
        m.pending_delayed
            .with_label_values(&labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
}

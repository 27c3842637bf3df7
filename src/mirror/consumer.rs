//! One mirror of one partition: reads the partition log from the mirror's committed offset,
//! publishes batches in order, and commits after the backend settled them.
//!
//! # Invariants
//!
//! - The committed offset (state store, then the hub's watch) moves only past records the
//!   backend confirmed or refused for good; it is stored before the watch announces it, so
//!   an `ack = "mirror"` write answered "true" is never re-read as unsettled except after a
//!   power failure (which only re-publishes).
//! - A failed publish keeps the batch: the same records are published again, first
//!   unsettled first, after a capped exponential backoff. Nothing is skipped but refusals.
//! - A record that is not a message (cannot be decoded) is a refusal too: it could never be
//!   published.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use wald_storage::{now_ms, Log, LogReader, StoredRecord};

use super::config::{backend_name, MirrorSpec};
use super::hub::Slot;
use super::{build, Mirror, MirrorError, MirrorRecord, Published, Refusal};
use crate::app::App;
use crate::message::StoredMessage;

/// Longest idle wait (a safety net for a missed wake-up; also how soon a removed namespace
/// is noticed).
const IDLE: Duration = Duration::from_millis(250);
/// Consecutive failures after which the backend's client is built anew.
const RECONNECT_AFTER: u32 = 5;
/// First retry wait after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry wait.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The wait before retry number `failures` (1-based): doubling from [`BACKOFF_START`],
/// capped at [`BACKOFF_CAP`].
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_START.saturating_mul(1 << shift).min(BACKOFF_CAP)
}

/// One mirror of one partition.
pub struct MirrorConsumer {
    app: Arc<App>,
    ns: Arc<str>,
    partition: u32,
    spec: MirrorSpec,
    log: Arc<Log>,
    slot: Arc<Slot>,
    reader: Option<LogReader>,
    next_read: u64,
    committed: u64,
    batch: Vec<MirrorRecord>,
    /// A record that cannot be published, read after the batch: refused once the batch is
    /// settled (keeps the order of commits).
    bad: Option<Refusal>,
    appends: watch::Receiver<u64>,
    mirror: Option<Arc<dyn Mirror>>,
    failures: u32,
    last_gauges: std::time::Instant,
}

impl std::fmt::Debug for MirrorConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConsumer")
            .field("namespace", &self.ns)
            .field("partition", &self.partition)
            .field("mirror", &self.spec.name)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl MirrorConsumer {
    /// A consumer starting at the mirror's committed offset.
    ///
    /// # Errors
    /// The state store cannot be read.
    pub fn new(
        app: Arc<App>,
        ns: &str,
        partition: u32,
        spec: MirrorSpec,
        log: Arc<Log>,
    ) -> Result<Self, MirrorError> {
        let committed = app
            .state
            .mirror_offset(ns, partition, &spec.name)
            .map_err(|e| MirrorError::State(e.to_string()))?;
        let slot = app.mirrors.slot(ns, partition, &spec.name);
        slot.committed.send_replace(committed);
        {
            let mut st = slot.status.lock().unwrap_or_else(PoisonError::into_inner);
            st.backend = backend_name(spec.backend);
            st.healthy = true;
        }
        let appends = app.mirrors.append_watch(ns, partition);
        Ok(Self {
            app,
            ns: Arc::from(ns),
            partition,
            spec,
            log,
            slot,
            reader: None,
            next_read: committed,
            committed,
            batch: Vec::new(),
            bad: None,
            appends,
            mirror: None,
            failures: 0,
            last_gauges: std::time::Instant::now(),
        })
    }

    /// Still wanted: the namespace exists and still has this very mirror.
    fn configured(&self) -> bool {
        self.app
            .namespace(&self.ns)
            .is_some_and(|ns| ns.mirrors.contains(&self.spec))
    }

    /// Runs until `shutdown` turns true, the namespace goes away or the mirror is removed
    /// or changed (the supervisor then starts the new one).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(namespace = %self.ns, partition = self.partition, mirror = %self.spec.name, committed = self.committed, "mirror started");
        loop {
            if *shutdown.borrow() || !self.configured() {
                break;
            }
            self.app
                .supervision
                .checkpoint(crate::supervise::MIRROR_CONSUMER);
            let step = self.step().await;
            let wait = match step {
                Ok(true) => {
                    if self.last_gauges.elapsed() >= IDLE {
                        self.publish_gauges();
                    }
                    continue;
                }
                Ok(false) => IDLE,
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.record_error(&e);
                    if self.failures.is_multiple_of(RECONNECT_AFTER) {
                        // A client stuck in a state it cannot leave (e.g. a producer's fatal
                        // error) is replaced; dropping one may block, so not on this thread.
                        if let Some(old) = self.mirror.take() {
                            tokio::task::spawn_blocking(move || drop(old));
                        }
                    }
                    backoff(self.failures)
                }
            };
            self.publish_gauges();
            // Waits at most IDLE at a time, so a removed namespace is noticed quickly.
            let until = tokio::time::Instant::now() + wait;
            loop {
                let now = tokio::time::Instant::now();
                if now >= until || *shutdown.borrow() {
                    break;
                }
                let slice = (until - now).min(IDLE);
                // Some(true): woken; Some(false): the append counter is gone (subscribe again).
                let woke = tokio::select! {
                    r = self.appends.changed(), if self.failures == 0 => Some(r.is_ok()),
                    () = tokio::time::sleep(slice) => None,
                    _ = shutdown.changed() => Some(true),
                };
                if woke == Some(false) {
                    self.appends = self.app.mirrors.append_watch(&self.ns, self.partition);
                }
                if woke.is_some() || !self.configured() {
                    break;
                }
            }
        }
        tracing::info!(namespace = %self.ns, partition = self.partition, mirror = %self.spec.name, committed = self.committed, "mirror stopped");
    }

    /// One turn: fill the batch, publish it, commit. `Ok(true)` when there may be more to do
    /// at once, `Ok(false)` when idle.
    async fn step(&mut self) -> Result<bool, MirrorError> {
        if self.mirror.is_none() {
            // Every (re)connection: the hosts it names are checked against `[egress]`.
            let policy = crate::egress::EgressPolicy::new(&self.app.config.egress);
            super::egress::check(&self.spec, &policy).await?;
            self.mirror = Some(build(&self.spec, &self.ns)?);
        }
        self.fill()?;
        if self.batch.is_empty() {
            if let Some(bad) = self.bad.take() {
                self.commit(bad.offset + 1, std::slice::from_ref(&bad))?;
                return Ok(true);
            }
            self.failures = 0;
            self.set_healthy();
            return Ok(false);
        }
        let Some(mirror) = self.mirror.clone() else {
            return Ok(false);
        };
        let timeout = self.spec.timeout();
        let published = match tokio::time::timeout(timeout, mirror.publish(&self.batch)).await {
            Ok(p) => p,
            Err(_) => Published::failed(MirrorError::Timeout {
                backend: backend_name(self.spec.backend),
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        let settled = published.settled.min(self.batch.len());
        if settled > 0 {
            let next = self.batch[settled - 1].offset + 1;
            let confirmed = settled - published.refused.len().min(settled);
            self.app
                .mirrors
                .metrics
                .published
                .with_label_values(&[&*self.ns, self.spec.name.as_str()])
                .inc_by(confirmed as u64);
            self.batch.drain(..settled);
            self.commit(next, &published.refused)?;
        }
        match published.error {
            Some(e) if !self.batch.is_empty() => Err(e),
            _ => {
                self.failures = 0;
                self.set_healthy();
                Ok(true)
            }
        }
    }

    /// Reads records into the batch, up to its size.
    fn fill(&mut self) -> Result<(), MirrorError> {
        let max = self.spec.batch_size();
        while self.batch.len() < max && self.bad.is_none() {
            if self.reader.is_none() {
                let st = self.log.stats();
                let from = self.next_read.clamp(st.first_offset, st.next_offset);
                if from != self.next_read {
                    tracing::warn!(namespace = %self.ns, partition = self.partition, mirror = %self.spec.name,
                        wanted = self.next_read, from, "the log no longer holds the mirror's next record (retention or a rewound log); continuing from what it holds");
                    self.next_read = from;
                    if self.batch.is_empty() {
                        self.commit(from, &[])?;
                    }
                }
                self.reader = Some(
                    self.log
                        .read_from(from)
                        .map_err(|e| MirrorError::Read(e.to_string()))?,
                );
            }
            let Some(reader) = self.reader.as_mut() else {
                return Ok(());
            };
            match reader.next() {
                None => return Ok(()),
                Some(Ok(rec)) => {
                    self.next_read = rec.offset + 1;
                    match self.record(&rec) {
                        Ok(r) => self.batch.push(r),
                        Err(bad) => self.bad = Some(bad),
                    }
                }
                Some(Err(e)) => {
                    self.reader = None;
                    return Err(MirrorError::Read(e.to_string()));
                }
            }
        }
        Ok(())
    }

    fn record(&self, rec: &StoredRecord) -> Result<MirrorRecord, Refusal> {
        match StoredMessage::from_record(rec) {
            Ok(message) => Ok(MirrorRecord {
                namespace: Arc::clone(&self.ns),
                partition: self.partition,
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                due_ms: rec.due_ms,
                key: rec.key.clone(),
                message,
            }),
            Err(e) => Err(Refusal {
                offset: rec.offset,
                message_id: String::new(),
                reason: format!("not a message: {e}"),
            }),
        }
    }

    /// Stores the committed offset `next`, announces it, and records `refused`.
    fn commit(&mut self, next: u64, refused: &[Refusal]) -> Result<(), MirrorError> {
        for r in refused {
            tracing::warn!(namespace = %self.ns, partition = self.partition, mirror = %self.spec.name,
                offset = r.offset, message_id = %r.message_id, reason = %r.reason, "mirror refused a record for good; skipped");
            self.app
                .mirrors
                .metrics
                .errors
                .with_label_values(&[&*self.ns, self.spec.name.as_str(), "refused"])
                .inc();
            let mut st = self
                .slot
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            st.refused += 1;
            st.last_refusal = Some(format!(
                "offset {} (message {}): {}",
                r.offset, r.message_id, r.reason
            ));
        }
        let now = wald_storage::now_ms();
        let records: Vec<(u64, Vec<u8>)> = refused
            .iter()
            .map(|r| {
                let v = serde_json::json!({ "reason": r.reason, "atMs": now });
                (r.offset, v.to_string().into_bytes())
            })
            .collect();
        self.app
            .state
            .commit_mirror_offset(&self.ns, self.partition, &self.spec.name, next, &records)
            .map_err(|e| MirrorError::State(e.to_string()))?;
        self.committed = next;
        self.slot.committed.send_replace(next);
        Ok(())
    }

    fn set_healthy(&self) {
        self.slot
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .healthy = true;
    }

    fn record_error(&mut self, e: &MirrorError) {
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::warn!(namespace = %self.ns, partition = self.partition, mirror = %self.spec.name,
                failures = self.failures, error = %e, "mirror failed; retrying with backoff");
        }
        if matches!(e, MirrorError::Read(_)) {
            self.reader = None;
        }
        self.app
            .mirrors
            .metrics
            .errors
            .with_label_values(&[&*self.ns, self.spec.name.as_str(), e.kind()])
            .inc();
        let mut st = self
            .slot
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        st.healthy = false;
        st.errors += 1;
        st.last_error = Some((e.to_string(), now_ms()));
    }

    fn publish_gauges(&mut self) {
        self.last_gauges = std::time::Instant::now();
        let end = self.log.stats().next_offset;
        let lag = end.saturating_sub(self.committed);
        let lag_secs = self
            .batch
            .first()
            .map_or(0, |r| now_ms().saturating_sub(r.timestamp_ms) / 1000);
        let p = self.partition.to_string();
        let labels = [&*self.ns, p.as_str(), self.spec.name.as_str()];
        let m = &self.app.mirrors.metrics;
        m.lag_records
            .with_label_values(&labels)
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        m.lag_seconds
            .with_label_values(&labels)
            .set(i64::try_from(lag_secs).unwrap_or(i64::MAX));
        let mut st = self
            .slot
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        st.lag_records = lag;
        st.lag_seconds = lag_secs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(10), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}

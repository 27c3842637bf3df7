//! A partition's consumer: reads the log from its committed offset, delivers each message to
//! its targets (attempts run concurrently, up to the window), retries on the timer wheel,
//! dead-letters what fails for good, and commits the offset over the contiguous prefix of
//! messages that reached an outcome.
//!
//! # Invariants
//!
//! - **Commit.** Every offset below the committed one is *resolved*: its delivery record is
//!   final (delivered, dead-lettered, failed, expired, no targets), or it is *parked* — its
//!   due time is far enough away that it waits in the due-time index on disk, which is
//!   written before the commit that passes it. A crash therefore re-reads, at worst, messages
//!   that were in flight: at-least-once, never a skip.
//! - **Order.** Messages with one (non-empty) partition key are attempted one at a time in
//!   offset order: a message waiting for a retry holds its key's successors, and nothing
//!   else. Parked messages keep their due time instead (a delay is a promise about time, not
//!   order).
//! - **Restart.** Attempts so far and the next attempt's time are stored with every retry
//!   scheduled, so a restart re-arms the retry at its time and keeps counting attempts.
//! - **Dead letters.** The DLQ entry is appended and fsync'd before the message's record
//!   says dead-lettered and before the commit passes it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use wald_storage::{now_ms, Log, LogReader};

use super::backoff::{decide, RetryDecision};
use super::dlq;
use super::plan::Plan;
use super::record::{AttemptRecord, DeliveryRecord, MessageStatus, TargetStatus};
use super::runner::{attempt, ms, Outgoing};
use super::target::{ErrorClass, Target, TargetError};
use super::wheel::TimerWheel;

mod admit;
mod parked;
use crate::app::App;
use crate::message::{StoredMessage, H_TX};
use crate::state::delivery::DeliveryBatch;

/// How often parked messages are looked for, and how far ahead they are loaded.
const PARK_SCAN: Duration = Duration::from_millis(500);
/// Parked messages loaded per scan at most.
const PARK_LOAD_LIMIT: usize = 10_000;
/// Longest idle sleep (a safety net for a missed wake-up).
const IDLE: Duration = Duration::from_millis(200);
/// How often the consumer's gauges (lag, pending delays) are published, in ms.
const GAUGE_INTERVAL_MS: u64 = 500;
/// Wait before reading again after a read error.
const READ_RETRY: Duration = Duration::from_secs(1);

/// How a read of the log into the window ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// At the log's (acknowledged) end.
    End,
    /// The window is full.
    Full,
    /// A read failed (retried after a pause).
    Error,
}

/// A finished attempt, sent back to the consumer's loop.
struct Done {
    offset: u64,
    target: usize,
    record: AttemptRecord,
    result: Result<(), TargetError>,
}

/// A message the consumer is working on.
struct Slot {
    msg: StoredMessage,
    out: Outgoing,
    key: Vec<u8>,
    plan: Plan,
    adapters: Vec<Result<Arc<dyn Target>, String>>,
    record: DeliveryRecord,
    /// Due time of a message loaded from the due-time index (its index key).
    parked_due: Option<u64>,
    /// Attempts running.
    running: usize,
    /// Targets with a timer or a running attempt.
    armed: Vec<bool>,
}

/// One partition's consumer.
pub struct Consumer {
    app: Arc<App>,
    ns: Arc<str>,
    partition: u32,
    log: Arc<Log>,
    reader: Option<LogReader>,
    next_read: u64,
    committed: u64,
    /// Offsets read and not yet committed: true once resolved.
    window: BTreeMap<u64, bool>,
    slots: HashMap<u64, Slot>,
    /// Per partition key: offsets waiting their turn (the head is the active one).
    keys: HashMap<Vec<u8>, VecDeque<u64>>,
    wheel: TimerWheel<(u64, usize)>,
    /// Parked messages currently loaded.
    loaded: HashSet<u64>,
    batch: DeliveryBatch,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    wake: Arc<Notify>,
    last_park_scan: u64,
    /// When the gauges were last published (ms since the epoch).
    last_gauges: u64,
    /// Loaded parked messages, from the blocking task that reads them.
    parked_tx: mpsc::UnboundedSender<Vec<parked::Loaded>>,
    parked_rx: mpsc::UnboundedReceiver<Vec<parked::Loaded>>,
    /// A parked-message load is running.
    scan_in_flight: bool,
    /// Messages in the due-time index (counted at start, then kept up to date).
    parked: u64,
    /// The state store refused the last step's batch: it is kept (retried first, with the
    /// steps after it) and nothing new is read until it is written.
    unwritten: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("namespace", &self.ns)
            .field("partition", &self.partition)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `ns`/`partition` starting at its committed offset.
    ///
    /// # Errors
    /// The state store cannot be read.
    pub fn new(
        app: Arc<App>,
        ns: &str,
        partition: u32,
        log: Arc<Log>,
        wake: Arc<Notify>,
    ) -> Result<Self, crate::state::StateError> {
        let committed = app.state.committed_offset(ns, partition)?;
        let parked = app.state.parked_count(ns, partition)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (parked_tx, parked_rx) = mpsc::unbounded_channel();
        let now = now_ms();
        Ok(Self {
            app,
            ns: Arc::from(ns),
            partition,
            log,
            reader: None,
            next_read: committed,
            committed,
            window: BTreeMap::new(),
            slots: HashMap::new(),
            keys: HashMap::new(),
            wheel: TimerWheel::new(now),
            loaded: HashSet::new(),
            batch: DeliveryBatch::default(),
            tx,
            rx,
            wake,
            last_park_scan: 0,
            last_gauges: 0,
            parked_tx,
            parked_rx,
            scan_in_flight: false,
            parked,
            unwritten: false,
        })
    }

    /// Runs until `shutdown` turns true (or the namespace goes away).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(namespace = %self.ns, partition = self.partition, committed = self.committed, "consumer started");
        loop {
            if *shutdown.borrow() || self.app.namespace(&self.ns).is_none() {
                break;
            }
            self.app
                .supervision
                .checkpoint(crate::supervise::DELIVERY_CONSUMER);
            // Until a refused batch is written, read nothing new (its commit, parks and
            // outcomes are only in memory; the window bounds what accumulates meanwhile).
            let read = if self.unwritten {
                Fill::Error
            } else {
                self.fill()
            };
            let now = now_ms();
            if now.saturating_sub(self.last_park_scan) >= ms(PARK_SCAN) {
                self.last_park_scan = now;
                self.start_parked_scan(now);
            }
            self.fire(now).await;
            self.flush();
            // The window was full and the flush made room: read on at once.
            let more = read == Fill::Full && self.window.len() < self.app.delivery.config.window;
            if now.saturating_sub(self.last_gauges) >= GAUGE_INTERVAL_MS {
                self.last_gauges = now;
                self.publish_gauges();
            }

            let mut sleep = match read {
                Fill::Error => READ_RETRY,
                _ if more => Duration::ZERO,
                _ => IDLE,
            };
            if let Some(due) = self.wheel.next_due() {
                sleep = sleep.min(Duration::from_millis(due.saturating_sub(now_ms())));
            }
            sleep = sleep.min(PARK_SCAN);
            tokio::select! {
                d = self.rx.recv() => {
                    if let Some(d) = d {
                        self.on_done(d).await;
                        while let Ok(d) = self.rx.try_recv() {
                            self.on_done(d).await;
                        }
                    }
                }
                Some(batch) = self.parked_rx.recv() => self.take_parked(batch),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.flush();
        tracing::info!(namespace = %self.ns, partition = self.partition, committed = self.committed, "consumer stopped");
    }

    /// Reads new records into the window: until the log's end, the window is full, or an error.
    fn fill(&mut self) -> Fill {
        let window = self.app.delivery.config.window;
        while self.window.len() < window {
            if self.reader.is_none() {
                match self.log.read_from(self.next_read) {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => {
                        tracing::error!(namespace = %self.ns, partition = self.partition, offset = self.next_read, error = %e, "consumer cannot read the log");
                        return Fill::Error;
                    }
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                return Fill::Error;
            };
            match reader.next() {
                None => return Fill::End,
                Some(Ok(rec)) => {
                    if rec.headers.iter().any(|(k, _)| k == H_TX) {
                        if let Err(e) = self.adopt_transaction(&rec) {
                            // Not stored: read this record again after a pause.
                            tracing::error!(namespace = %self.ns, partition = self.partition, offset = rec.offset, error = %e, "storing a transaction's record failed; retrying");
                            self.reader = None;
                            return Fill::Error;
                        }
                        self.next_read = rec.offset + 1;
                        continue;
                    }
                    self.next_read = rec.offset + 1;
                    self.admit(&rec);
                }
                Some(Err(e)) => {
                    tracing::error!(namespace = %self.ns, partition = self.partition, offset = self.next_read, error = %e, "consumer read failed; retrying");
                    self.reader = None;
                    return Fill::Error;
                }
            }
        }
        Fill::Full
    }

    /// Puts every unfinished target of a slot on the wheel at its time.
    fn arm(&mut self, offset: u64) {
        let Some(slot) = self.slots.get_mut(&offset) else {
            return;
        };
        let due = slot.record.due_at_ms;
        for (i, t) in slot.record.targets.iter().enumerate() {
            if t.status.is_final() || slot.armed[i] {
                continue;
            }
            let at = due.max(t.next_attempt_at_ms.unwrap_or(0));
            slot.armed[i] = true;
            self.wheel.insert(at, (offset, i));
        }
    }

    /// Starts the attempts whose time has come.
    async fn fire(&mut self, now: u64) {
        let mut fired = Vec::new();
        self.wheel.advance(now, &mut fired);
        for (_, (offset, i)) in fired {
            let Some(slot) = self.slots.get_mut(&offset) else {
                continue;
            };
            let expires = slot
                .record
                .due_at_ms
                .max(slot.out.accepted_at_ms)
                .saturating_add(slot.plan.ttl_ms);
            if now >= expires {
                slot.armed[i] = false;
                slot.record.targets[i].status = TargetStatus::Expired;
                slot.record.targets[i].next_attempt_at_ms = None;
                self.app.delivery.count_outcome(
                    &self.ns,
                    &slot.plan.targets[i].identifier,
                    "expired",
                );
                self.maybe_finish(offset).await;
                continue;
            }
            let adapter = match &slot.adapters[i] {
                Ok(a) => Arc::clone(a),
                Err(e) => {
                    let n = slot.record.targets[i].attempt_count + 1;
                    let err = TargetError::permanent(ErrorClass::Config, e.clone());
                    let d = Done {
                        offset,
                        target: i,
                        record: AttemptRecord {
                            attempt: n,
                            at_ms: now,
                            duration_ms: 0,
                            error: Some(err.message.clone()),
                            error_class: Some(err.class.as_str().to_owned()),
                        },
                        result: Err(err),
                    };
                    slot.running += 1;
                    let _ = self.tx.send(d);
                    continue;
                }
            };
            slot.running += 1;
            slot.record.status = MessageStatus::Delivering;
            let n = slot.record.targets[i].attempt_count + 1;
            let out = slot.out.clone();
            let tx = self.tx.clone();
            let app = Arc::clone(&self.app);
            let supervisor = Arc::clone(&self.app);
            let task = format!("{}/{}/{}", self.ns, self.partition, out.offset);
            tokio::spawn(async move {
                let offset = out.offset;
                // A panic in the attempt is a failed attempt, never a missing answer (which
                // would hold the partition for good).
                let inner = tokio::spawn(async move {
                    app.supervision
                        .checkpoint(crate::supervise::DELIVERY_ATTEMPT);
                    attempt(adapter, &out, n).await
                });
                let (record, result) = match inner.await {
                    Ok(r) => r,
                    Err(e) => panicked_attempt(&supervisor, &task, n, e),
                };
                let _ = tx.send(Done {
                    offset,
                    target: i,
                    record,
                    result,
                });
            });
        }
    }

    /// Records a finished attempt and decides what comes next.
    async fn on_done(&mut self, d: Done) {
        let now = now_ms();
        let hub = &self.app.delivery;
        let Some(slot) = self.slots.get_mut(&d.offset) else {
            return;
        };
        slot.running = slot.running.saturating_sub(1);
        slot.armed[d.target] = false;
        let identifier = slot.plan.targets[d.target].identifier.clone();
        hub.count_attempt(&self.ns, &identifier, d.result.as_ref().err());
        let t = &mut slot.record.targets[d.target];
        t.push_attempt(d.record);
        match d.result {
            Ok(()) => {
                t.status = TargetStatus::Delivered;
                t.next_attempt_at_ms = None;
                hub.count_outcome(&self.ns, &identifier, "delivered");
                let since = slot.record.due_at_ms.max(slot.out.accepted_at_ms);
                hub.metrics
                    .latency
                    .with_label_values(&[&*self.ns])
                    .observe(now.saturating_sub(since) as f64 / 1000.0);
            }
            Err(err) => match decide(&slot.plan.policy, t.attempt_count, &err) {
                RetryDecision::Retry { after } => {
                    let at = now.saturating_add(ms(after));
                    t.status = TargetStatus::Retrying;
                    t.next_attempt_at_ms = Some(at);
                    slot.armed[d.target] = true;
                    slot.record.updated_at_ms = now;
                    self.batch
                        .put_state(&self.ns, self.partition, d.offset, slot.record.encode());
                    self.wheel.insert(at, (d.offset, d.target));
                }
                RetryDecision::GiveUp { .. } => {
                    t.next_attempt_at_ms = None;
                    t.status = if slot.plan.dlq {
                        TargetStatus::DeadLettered
                    } else {
                        TargetStatus::Failed
                    };
                    let outcome = if slot.plan.dlq {
                        "dead_lettered"
                    } else {
                        "failed"
                    };
                    hub.count_outcome(&self.ns, &identifier, outcome);
                }
            },
        }
        self.maybe_finish(d.offset).await;
    }

    /// Resolves a slot once every target has an outcome.
    async fn maybe_finish(&mut self, offset: u64) {
        let Some(slot) = self.slots.get(&offset) else {
            return;
        };
        if slot.running > 0 {
            return;
        }
        let Some(outcome) = slot.record.outcome() else {
            return;
        };
        if outcome == MessageStatus::DeadLettered {
            // The DLQ entry is durable before anything says the message is resolved.
            let app = Arc::clone(&self.app);
            let reason = slot.record.failed_targets();
            if let Err(e) = dlq::dead_letter(
                &app,
                &slot.msg,
                self.partition,
                offset,
                &slot.record,
                &reason,
                0,
            )
            .await
            {
                tracing::error!(namespace = %self.ns, offset, error = %e, "dead-lettering failed; retrying in 1 s");
                if let Some(slot) = self.slots.get_mut(&offset) {
                    for (i, t) in slot.record.targets.iter_mut().enumerate() {
                        if t.status == TargetStatus::DeadLettered {
                            // Re-fire: the attempt runs again and ends here again.
                            t.status = TargetStatus::Retrying;
                            slot.armed[i] = true;
                            self.wheel.insert(now_ms() + 1000, (offset, i));
                        }
                    }
                }
                return;
            }
        }
        let Some(mut slot) = self.slots.remove(&offset) else {
            return;
        };
        slot.record.status = outcome;
        slot.record.updated_at_ms = now_ms();
        self.batch
            .put_state(&self.ns, self.partition, offset, slot.record.encode());
        if let Some(due) = slot.parked_due {
            self.batch.unpark(&self.ns, self.partition, due, offset);
            self.parked = self.parked.saturating_sub(1);
            self.loaded.remove(&offset);
            return;
        }
        if let Some(done) = self.window.get_mut(&offset) {
            *done = true;
        }
        if !slot.key.is_empty() {
            let next = self.keys.get_mut(&slot.key).and_then(|q| {
                if q.front() == Some(&offset) {
                    q.pop_front();
                }
                q.front().copied()
            });
            match next {
                Some(n) => self.arm(n),
                None => {
                    self.keys.remove(&slot.key);
                }
            }
        }
    }

    /// Advances the commit over the resolved prefix and writes the step's batch.
    fn flush(&mut self) {
        let before = self.committed;
        while let Some((&off, &done)) = self.window.first_key_value() {
            if !done {
                break;
            }
            self.window.remove(&off);
            self.committed = off + 1;
        }
        if self.committed != before {
            self.batch.commit(&self.ns, self.partition, self.committed);
        }
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, DeliveryBatch::default());
        match self.app.state.write_delivery_ref(&batch, false) {
            Ok(()) => self.unwritten = false,
            Err(e) => {
                // Kept, never dropped: it may park a delayed message (its only record once
                // the commit passes it) or hold outcomes; the next flush writes it first.
                tracing::error!(namespace = %self.ns, partition = self.partition, error = %e, "writing delivery state failed; kept and retried");
                self.batch = batch;
                self.unwritten = true;
            }
        }
    }
}

/// The failed attempt a panicked (or cancelled) attempt task stands for.
fn panicked_attempt(
    app: &App,
    task: &str,
    n: u32,
    e: tokio::task::JoinError,
) -> (AttemptRecord, Result<(), TargetError>) {
    let message = if e.is_panic() {
        let why = crate::supervise::panic_message(&*e.into_panic());
        app.supervision
            .panicked(crate::supervise::DELIVERY_ATTEMPT, task, &why);
        format!("the delivery attempt panicked: {why}")
    } else {
        "the delivery attempt was cancelled".to_owned()
    };
    tracing::error!(task, error = %message, "a delivery attempt did not finish; counted as a failed attempt");
    let err = TargetError::retryable(super::target::ErrorClass::Remote, message);
    let record = AttemptRecord {
        attempt: n,
        at_ms: now_ms(),
        duration_ms: 0,
        error: Some(err.message.clone()),
        error_class: Some(err.class.as_str().to_owned()),
    };
    (record, Err(err))
}

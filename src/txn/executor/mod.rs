//! A transaction's state machine: `initiated → in_progress → completed`, or, when a mutation
//! fails for good or the timeout passes, `compensation_required → compensating →
//! compensated` (or `failed` when a compensation cannot be applied).
//!
//! Execution: the mutations of one partition run one after another in the order given, the
//! partitions in parallel. Each mutation's inverse is captured (and stored, synced) before its
//! first attempt; each attempt is marked in doubt before it runs and recorded when it ends,
//! retried by the transaction's retry policy. Compensation: the applied mutations (and those
//! whose last attempt may have applied) in reverse order, one at a time, each by its explicit
//! compensation or its derived inverse, retried by the same policy; one that fails for good
//! goes to the dead-letter queue. Every change is stored before the next step, so a restart
//! resumes where the process stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use wald_storage::now_ms;

mod compensate;

use super::inverse::{derive, needs_snapshot, payload};
use super::record::{MutationState, MutationStatus, TxnRecord, TxnStatus};
use crate::app::App;
use crate::delivery::backoff::{decide, RetryDecision};
use crate::delivery::record::AttemptRecord;
use crate::delivery::runner::{attempt, ms, Outgoing};
use crate::delivery::target::{ErrorClass, Snapshot, Target, TargetError};
use crate::model::transaction::Operation;

/// Longest wait between looks at the clock (timeout, stop).
const TICK: Duration = Duration::from_secs(1);
/// Wait before retrying a state-store write that failed.
const STORE_RETRY_MS: u64 = 1000;

/// What a finished task reports.
enum Step {
    /// The snapshot before a mutation.
    Captured {
        at_ms: u64,
        duration_ms: u64,
        result: Result<Snapshot, TargetError>,
    },
    /// An attempt of a mutation.
    Attempted {
        record: AttemptRecord,
        result: Result<(), TargetError>,
        /// The attempt before it may have applied the mutation.
        doubt: bool,
    },
}

/// Runs one transaction to a final state (or until the service stops).
pub struct Executor {
    app: Arc<App>,
    rec: TxnRecord,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("transaction_id", &self.rec.transaction_id)
            .field("status", &self.rec.status)
            .finish_non_exhaustive()
    }
}

/// An INSERT re-run after an attempt that may have applied it, refused as a duplicate key:
/// the earlier attempt applied it.
fn already_applied(op: Operation, err: &TargetError, doubt: bool) -> bool {
    doubt && op == Operation::Insert && err.code.as_deref() == Some("23505")
}

/// Whether the last attempt may have applied its operation (it timed out).
fn last_timed_out(attempts: &[AttemptRecord]) -> bool {
    attempts
        .last()
        .is_some_and(|a| a.error_class.as_deref() == Some(ErrorClass::Timeout.as_str()))
}

impl Executor {
    /// An executor of `rec`; it stops when `stop` turns true.
    #[must_use]
    pub fn new(app: Arc<App>, rec: TxnRecord, stop: watch::Receiver<bool>) -> Self {
        Self { app, rec, stop }
    }

    /// Runs the transaction until it is final or the service stops.
    pub async fn run(mut self) {
        let id = self.rec.transaction_id.clone();
        loop {
            if *self.stop.borrow() {
                break;
            }
            if self.app.namespace(&self.rec.namespace).is_none() {
                self.namespace_gone();
                break;
            }
            let go_on = match self.rec.status {
                TxnStatus::Initiated => {
                    self.rec.started_at_ms = Some(now_ms());
                    self.set_status(TxnStatus::InProgress, None);
                    self.save(false);
                    true
                }
                TxnStatus::InProgress => self.execute().await,
                TxnStatus::CompensationRequired => {
                    self.set_status(TxnStatus::Compensating, None);
                    self.save(false);
                    true
                }
                TxnStatus::Compensating => self.compensate().await,
                _ => false,
            };
            if !go_on || self.rec.status.is_final() {
                break;
            }
        }
        self.app.txns.finished(&id);
    }

    fn set_status(&mut self, to: TxnStatus, reason: Option<String>) {
        let from = self.rec.status;
        self.app
            .txns
            .metrics
            .moved(&self.rec.namespace, Some(from), to, true);
        self.rec.status = to;
        if reason.is_some() {
            self.rec.reason = reason;
        }
        if to.is_final() {
            self.rec.completed_at_ms = Some(now_ms());
        }
        tracing::info!(transaction_id = %self.rec.transaction_id, namespace = %self.rec.namespace,
            from = from.as_str(), to = to.as_str(), reason = ?self.rec.reason, "transaction state");
    }

    /// Stores the record; false when the state store failed (logged).
    fn save(&mut self, sync: bool) -> bool {
        self.rec.updated_at_ms = now_ms();
        match self
            .app
            .state
            .put_txn(&self.rec.transaction_id, &self.rec.encode(), sync)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(transaction_id = %self.rec.transaction_id, error = %e, "storing the transaction record failed");
                false
            }
        }
    }

    fn namespace_gone(&mut self) {
        let applied = self.rec.count(MutationStatus::Completed) > 0;
        let reason = format!("namespace `{}` was deleted", self.rec.namespace);
        let to = if applied {
            TxnStatus::Failed
        } else {
            TxnStatus::Cancelled
        };
        // Not stored: the namespace's deletion deletes its transaction records.
        self.set_status(to, Some(reason));
    }

    /// Waits until `at_ms` (or a stop); false when stopped.
    async fn pause_until(&mut self, at_ms: u64) -> bool {
        let wait = at_ms.saturating_sub(now_ms());
        if wait == 0 {
            return !*self.stop.borrow();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }

    /// The outgoing message of an operation on a target.
    fn outgoing(&self, id: &str, body: Vec<u8>) -> Outgoing {
        Outgoing {
            message_id: Arc::from(id),
            namespace: Arc::from(self.rec.namespace.as_str()),
            partition: self.rec.partition,
            offset: self.rec.offset,
            payload: Arc::from(body),
            accepted_at_ms: self.rec.created_at_ms,
        }
    }

    /// The mutations that may start now: each partition's first mutation not completed, when
    /// it is not running and its time has come.
    fn ready(&self, now: u64, busy: &[bool]) -> Vec<usize> {
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for (i, m) in self.rec.mutations.iter().enumerate() {
            if m.status == MutationStatus::Completed || seen.contains(&m.spec.partition.as_str()) {
                continue;
            }
            seen.push(&m.spec.partition);
            let startable = matches!(
                m.status,
                MutationStatus::Pending | MutationStatus::Retrying | MutationStatus::InProgress
            );
            if startable && !busy[i] && m.next_attempt_at_ms.unwrap_or(0) <= now {
                out.push(i);
            }
        }
        out
    }

    /// Applies the mutations; true when the transaction moved on (completed, or compensation
    /// required), false when the service stopped.
    async fn execute(&mut self) -> bool {
        let n = self.rec.mutations.len();
        let mut tasks: JoinSet<Step> = JoinSet::new();
        let mut owner: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut busy = vec![false; n];
        let mut failing: Option<String> = self
            .rec
            .mutations
            .iter()
            .find(|m| m.status == MutationStatus::Failed)
            .map(|m| failure_reason(m, m.last_error.as_deref().unwrap_or("failed")));
        loop {
            let now = now_ms();
            if failing.is_none() && now >= self.rec.timeout_at_ms {
                failing = Some(format!(
                    "timed out: not completed within {} s",
                    self.rec
                        .timeout_at_ms
                        .saturating_sub(self.rec.created_at_ms)
                        / 1000
                ));
            }
            if failing.is_none() {
                for i in self.ready(now, &busy) {
                    if let Some(handle) = self.start(i, &mut tasks) {
                        owner.insert(handle, i);
                        busy[i] = true;
                    }
                }
            }
            if tasks.is_empty() {
                if let Some(reason) = failing {
                    self.abandon(&reason);
                    self.set_status(TxnStatus::CompensationRequired, Some(reason));
                    self.save(false);
                    return true;
                }
                if self.rec.count(MutationStatus::Completed) == n {
                    self.set_status(TxnStatus::Completed, None);
                    self.save(false);
                    return true;
                }
            }
            let next = self
                .rec
                .mutations
                .iter()
                .filter_map(|m| m.next_attempt_at_ms)
                .chain([self.rec.timeout_at_ms])
                .min()
                .unwrap_or(u64::MAX);
            let wait = Duration::from_millis(next.saturating_sub(now)).min(TICK);
            tokio::select! {
                Some(res) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, step) = match res {
                        Ok((id, step)) => (id, Some(step)),
                        Err(e) => (e.id(), None),
                    };
                    let Some(i) = owner.remove(&id) else { continue };
                    busy[i] = false;
                    let step = step.unwrap_or_else(|| Step::Attempted {
                        record: AttemptRecord {
                            attempt: self.rec.mutations[i].attempt_count + 1,
                            at_ms: now_ms(),
                            duration_ms: 0,
                            error: Some("the attempt's task panicked".into()),
                            error_class: Some(ErrorClass::Connection.as_str().into()),
                        },
                        result: Err(TargetError::retryable(ErrorClass::Connection, "the attempt's task panicked")),
                        doubt: true,
                    });
                    if let Some(r) = self.on_step(i, step) {
                        failing.get_or_insert(r);
                    }
                }
                () = tokio::time::sleep(wait) => {}
                _ = self.stop.changed() => {}
            }
            if *self.stop.borrow() {
                // Attempts running are dropped; each is marked in doubt, so a restart re-runs it.
                return false;
            }
        }
    }

    /// Starts mutation `i`'s next step: its snapshot (before the first attempt), or an attempt.
    fn start(&mut self, i: usize, tasks: &mut JoinSet<Step>) -> Option<tokio::task::Id> {
        let now = now_ms();
        let adapter = self
            .app
            .delivery
            .adapter(&self.rec.mutations[i].spec.target);
        let m = &mut self.rec.mutations[i];
        m.started_at_ms.get_or_insert(now);
        let body = payload(
            m.spec.operation,
            &m.spec.target,
            &m.spec.data,
            m.spec.key.as_deref(),
        );
        let adapter: Arc<dyn Target> = match adapter {
            Ok(a) => a,
            Err(e) => {
                let err = TargetError::permanent(ErrorClass::Config, e);
                let record = AttemptRecord {
                    attempt: m.attempt_count + 1,
                    at_ms: now,
                    duration_ms: 0,
                    error: Some(err.message.clone()),
                    error_class: Some(err.class.as_str().into()),
                };
                let step = Step::Attempted {
                    record,
                    result: Err(err),
                    doubt: false,
                };
                return Some(tasks.spawn(async move { step }).id());
            }
        };
        if m.spec.compensation.is_none() && m.inverse.is_none() {
            if needs_snapshot(m.spec.operation) {
                let handle = tasks.spawn(async move {
                    let started = std::time::Instant::now();
                    let result = adapter.snapshot(&body).await;
                    Step::Captured {
                        at_ms: now,
                        duration_ms: ms(started.elapsed()),
                        result,
                    }
                });
                return Some(handle.id());
            }
            m.inverse = Some(derive(&m.spec, None));
        }
        let doubt = m.in_doubt || last_timed_out(&m.attempts);
        m.in_doubt = true;
        m.status = MutationStatus::InProgress;
        let n = m.attempt_count + 1;
        let out = self.outgoing(&self.rec.mutations[i].mutation_id.clone(), body);
        if !self.save(false) {
            // Not marked in doubt on disk: do not run it yet.
            let m = &mut self.rec.mutations[i];
            m.next_attempt_at_ms = Some(now + STORE_RETRY_MS);
            return None;
        }
        let handle = tasks.spawn(async move {
            let (record, result) = attempt(adapter, &out, n).await;
            Step::Attempted {
                record,
                result,
                doubt,
            }
        });
        Some(handle.id())
    }

    /// Records a finished step; returns why the transaction fails when a mutation failed for
    /// good.
    fn on_step(&mut self, i: usize, step: Step) -> Option<String> {
        let now = now_ms();
        let policy = self.rec.policy.clone();
        let ns = self.rec.namespace.clone();
        let m = &mut self.rec.mutations[i];
        let err = match step {
            Step::Captured {
                result: Ok(snap), ..
            } => {
                m.inverse = Some(derive(&m.spec, Some(snap)));
                m.next_attempt_at_ms = None;
                if !self.save(true) {
                    // The inverse must be on disk before the mutation runs: capture again.
                    let m = &mut self.rec.mutations[i];
                    m.inverse = None;
                    m.next_attempt_at_ms = Some(now + STORE_RETRY_MS);
                }
                return None;
            }
            Step::Captured {
                at_ms,
                duration_ms,
                result: Err(e),
            } => {
                let e = TargetError {
                    message: format!("reading the value before the mutation: {}", e.message),
                    ..e
                };
                m.push_attempt(
                    attempt_record(m.attempt_count + 1, at_ms, duration_ms, &e),
                    false,
                );
                e
            }
            Step::Attempted {
                record,
                result,
                doubt,
            } => {
                m.in_doubt = false;
                m.push_attempt(record, false);
                let result = match result {
                    Err(e) if already_applied(m.spec.operation, &e, doubt) => Ok(()),
                    r => r,
                };
                match result {
                    Ok(()) => {
                        m.status = MutationStatus::Completed;
                        m.next_attempt_at_ms = None;
                        m.last_error = None;
                        m.completed_at_ms = Some(now);
                        self.app
                            .delivery
                            .count_attempt(&ns, &m.spec.target.identifier, None);
                        self.save(false);
                        return None;
                    }
                    Err(e) => e,
                }
            }
        };
        self.app
            .delivery
            .count_attempt(&ns, &m.spec.target.identifier, Some(&err));
        m.last_error = Some(err.to_string());
        let failed = match decide(&policy, m.attempt_count, &err) {
            RetryDecision::Retry { after } => {
                m.status = MutationStatus::Retrying;
                m.next_attempt_at_ms = Some(now.saturating_add(ms(after)));
                None
            }
            RetryDecision::GiveUp { .. } => {
                m.status = MutationStatus::Failed;
                m.next_attempt_at_ms = None;
                m.completed_at_ms = Some(now);
                Some(failure_reason(m, &err.to_string()))
            }
        };
        self.save(false);
        failed
    }

    /// The transaction fails: mutations not completed stop; those whose last attempt may have
    /// applied them are marked for compensation.
    fn abandon(&mut self, reason: &str) {
        let now = now_ms();
        for m in &mut self.rec.mutations {
            if matches!(
                m.status,
                MutationStatus::Retrying | MutationStatus::InProgress
            ) {
                m.maybe_applied = m.in_doubt || last_timed_out(&m.attempts);
                m.in_doubt = false;
                m.status = MutationStatus::Failed;
                m.next_attempt_at_ms = None;
                m.completed_at_ms = Some(now);
                m.last_error
                    .get_or_insert_with(|| format!("abandoned: {reason}"));
            }
        }
    }
}

fn failure_reason(m: &MutationState, error: &str) -> String {
    format!(
        "mutation {} ({}) on `{}` failed: {error}",
        m.order, m.mutation_id, m.spec.target.identifier
    )
}

fn attempt_record(n: u32, at_ms: u64, duration_ms: u64, e: &TargetError) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        at_ms,
        duration_ms,
        error: Some(e.message.clone()),
        error_class: Some(e.class.as_str().to_owned()),
    }
}

//! Multi-partition transactions (docs/TRANSACTIONS.md): a write whose `payload.transactions`
//! lists mutations is appended as **one** log record (atomic intake); its mutations are then
//! applied to their targets with the delivery machinery's adapters, retry policy and attempt
//! records — in parallel across partitions, in order within one — and when one fails for
//! good, the applied ones are compensated in reverse order (a saga).
//!
//! | module | role |
//! |---|---|
//! | [`record`] | the transaction's and each mutation's state, as stored |
//! | [`inverse`] | a mutation's payload per target type; inverses from captured values |
//! | [`executor`] | the state machine: execution, timeout, compensation |
//! | [`view`] | the status API's answer |
//!
//! # Invariants
//!
//! - **Intake.** The transaction is durable once its log record is; its first state record
//!   is created from that log record (by the write, else by the partition's consumer, which
//!   does not commit past the record before the state record is stored). A crash in between
//!   re-creates it from the log.
//! - **Capture before apply.** A mutation's inverse is captured and stored (synced) before
//!   its first attempt, so a restart never captures the mutation's own effect as "before".
//! - **At least once.** Each attempt is marked in doubt before it runs; a restart re-runs a
//!   mutation in doubt (targets see the mutation id as its idempotency key), and an INSERT
//!   re-run after an attempt in doubt that meets a unique violation (SQLSTATE 23505) counts
//!   as applied.

pub mod executor;
pub mod inverse;
pub mod record;
pub mod view;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wald_storage::now_ms;

use crate::app::App;
use crate::message::StoredMessage;
use crate::model::namespace::Namespace;
use crate::model::transaction::parse_transactions;
use crate::model::write::LifecycleConfig;
use record::{transaction_id_of, MutationState, TxnRecord, TxnStatus};

/// Transactions' metrics.
#[derive(Debug, Clone)]
pub struct TxnMetrics {
    /// Transactions of this process now in each non-final state, by namespace.
    pub active: IntGaugeVec,
    /// Transactions that entered each state, by namespace.
    pub entered: IntCounterVec,
}

impl TxnMetrics {
    fn new(registry: &crate::metrics::Metrics) -> Result<Self, prometheus::Error> {
        let m = Self {
            active: IntGaugeVec::new(
                Opts::new(
                    "transactions_active",
                    "Transactions now in each non-final state, by namespace and state",
                )
                .namespace("wald"),
                &["namespace", "state"],
            )?,
            entered: IntCounterVec::new(
                Opts::new(
                    "transactions_total",
                    "Transactions that entered each state, by namespace and state",
                )
                .namespace("wald"),
                &["namespace", "state"],
            )?,
        };
        registry.register(Box::new(m.active.clone()))?;
        registry.register(Box::new(m.entered.clone()))?;
        Ok(m)
    }

    /// Counts a transaction moving from `from` (None: new to this process) to `to`;
    /// `entered`: it entered `to` now (not merely loaded at a restart).
    pub fn moved(&self, ns: &str, from: Option<TxnStatus>, to: TxnStatus, entered: bool) {
        if let Some(f) = from.filter(|f| !f.is_final()) {
            self.active.with_label_values(&[ns, f.as_str()]).dec();
        }
        if !to.is_final() {
            self.active.with_label_values(&[ns, to.as_str()]).inc();
        }
        if entered {
            self.entered.with_label_values(&[ns, to.as_str()]).inc();
        }
    }
}

/// What transactions share: the executors running, the stop signal, metrics.
#[derive(Debug)]
pub struct TxnHub {
    running: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop_tx: watch::Sender<bool>,
    /// Metrics.
    pub metrics: TxnMetrics,
}

/// How long shutdown waits for executors to reach a stopping point.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl TxnHub {
    /// A hub registering its metrics in `registry`.
    ///
    /// # Errors
    /// A metrics registration conflict (a bug).
    pub fn new(registry: &crate::metrics::Metrics) -> Result<Self, prometheus::Error> {
        Ok(Self {
            running: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            stop_tx: watch::channel(false).0,
            metrics: TxnMetrics::new(registry)?,
        })
    }

    /// Makes sure the transaction carried by `msg` (at `partition`/`offset`) has its state
    /// record and, unless it is final, an executor: creates the record from the message when
    /// there is none. Returns once the record is stored.
    ///
    /// # Errors
    /// The state store failed: the record is not stored (the caller retries).
    pub fn adopt(
        &self,
        app: &Arc<App>,
        msg: &StoredMessage,
        partition: u32,
        offset: u64,
    ) -> Result<(), crate::state::StateError> {
        let id = msg
            .transaction_id
            .clone()
            .unwrap_or_else(|| transaction_id_of(&msg.message_id));
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.contains(&id) {
            return Ok(());
        }
        let rec = if let Some(bytes) = app.state.get_txn(&id)? {
            let r = match TxnRecord::decode(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(transaction_id = %id, error = %e, "transaction record unreadable; left as is");
                    return Ok(());
                }
            };
            if r.status.is_final() {
                return Ok(());
            }
            self.metrics.moved(&r.namespace, None, r.status, false);
            r
        } else {
            let ns = app.namespace(&msg.namespace).map(|n| n.spec.clone());
            let rec = new_record(&id, msg, ns.as_ref(), partition, offset);
            app.state.put_txn(&id, &rec.encode(), false)?;
            self.metrics.moved(&rec.namespace, None, rec.status, true);
            if rec.status.is_final() {
                return Ok(());
            }
            rec
        };
        self.spawn_locked(app, &mut running, rec);
        Ok(())
    }

    /// Starts the executor of `rec` (the running set locked by the caller).
    fn spawn_locked(&self, app: &Arc<App>, running: &mut HashSet<String>, rec: TxnRecord) {
        if !app.delivery.config.enabled || *self.stop_tx.borrow() {
            // Delivery off (or stopping): the record waits for a process that delivers.
            return;
        }
        running.insert(rec.transaction_id.clone());
        let exec = executor::Executor::new(Arc::clone(app), rec, self.stop_tx.subscribe());
        let handle = tokio::spawn(exec.run());
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|h| !h.is_finished());
        tasks.push(handle);
    }

    /// An executor finished (or stopped): the transaction may be adopted again.
    pub fn finished(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Starts an executor for every transaction that is not final (at startup).
    pub fn resume_all(&self, app: &Arc<App>) {
        let list = match app.state.list_txns() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot list transactions; none resumed");
                return;
            }
        };
        let mut resumed = 0usize;
        for (id, bytes) in list {
            let Ok(rec) = TxnRecord::decode(&bytes) else {
                tracing::error!(transaction_id = %id, "transaction record unreadable; not resumed");
                continue;
            };
            if rec.status.is_final() || !app.config.cluster.owns(&rec.namespace) {
                continue;
            }
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains(&id) {
                continue;
            }
            self.metrics.moved(&rec.namespace, None, rec.status, false);
            self.spawn_locked(app, &mut running, rec);
            resumed += 1;
        }
        if resumed > 0 {
            tracing::info!(transactions = resumed, "transactions resumed");
        }
    }

    /// Asks every executor to stop at its next stopping point and waits for them (at most a
    /// few seconds; their state is stored at every step, so a restart resumes them).
    pub async fn shutdown(&self) {
        let _ = self.stop_tx.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            tracing::warn!(
                "transactions did not stop within the grace period; they resume at restart"
            );
        }
    }
}

/// A transaction's first record, from the message that carries it (`ns`: its namespace, if
/// it still exists). A message that cannot be resolved gives a `failed` record saying why.
#[must_use]
pub fn new_record(
    id: &str,
    msg: &StoredMessage,
    ns: Option<&Namespace>,
    partition: u32,
    offset: u64,
) -> TxnRecord {
    let now = now_ms();
    let mut rec = TxnRecord {
        transaction_id: id.to_owned(),
        namespace: msg.namespace.clone(),
        message_id: msg.message_id.clone(),
        partition,
        offset,
        status: TxnStatus::Initiated,
        reason: None,
        policy: ns.map(|n| n.retry_policy.clone()).unwrap_or_default(),
        dlq: ns.is_none_or(|n| n.dlq_config.enabled),
        created_at_ms: msg.accepted_at_ms,
        started_at_ms: None,
        completed_at_ms: None,
        timeout_at_ms: msg.accepted_at_ms.saturating_add(300_000),
        updated_at_ms: now,
        mutations: Vec::new(),
    };
    let Some(ns) = ns else {
        rec.status = TxnStatus::Cancelled;
        rec.reason = Some(format!("namespace `{}` no longer exists", msg.namespace));
        rec.completed_at_ms = Some(now);
        return rec;
    };
    let lifecycle: LifecycleConfig = msg
        .lifecycle
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if let Some(p) = &lifecycle.retry_policy {
        rec.policy = p.resolve(&ns.retry_policy);
    }
    if let Some(d) = lifecycle.enable_dlq {
        rec.dlq = d;
    }
    let timeout_s = lifecycle
        .transaction_timeout
        .unwrap_or(ns.transaction_config.timeout_seconds);
    rec.timeout_at_ms = msg
        .accepted_at_ms
        .saturating_add(timeout_s.saturating_mul(1000));
    match parse_transactions(msg.payload.get(), ns, false) {
        Ok(Some(specs)) => {
            rec.mutations = specs
                .into_iter()
                .zip(1u32..)
                .map(|(s, n)| MutationState::new(id, n, s))
                .collect();
        }
        Ok(None) => {
            rec.status = TxnStatus::Failed;
            rec.reason = Some("the message carries no `transactions`".into());
            rec.completed_at_ms = Some(now);
        }
        Err(errs) => {
            rec.status = TxnStatus::Failed;
            rec.reason = Some(format!(
                "the transaction no longer resolves against its namespace: {}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            rec.completed_at_ms = Some(now);
        }
    }
    rec
}

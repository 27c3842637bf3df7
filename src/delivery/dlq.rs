//! The dead-letter queue: a log per namespace (`logs/{ns}/dlq`, fsync'd per entry) holding
//! each message that failed for good with every attempt, plus an index in the state store
//! (`dlq` column family: status per message id) for listing, replay and discard.
//!
//! A replay re-delivers the message (optionally with an edited payload) to the targets that
//! did not get it, with the namespace's `dlqConfig` retries; when it fails again, a new DLQ
//! entry with the new attempts is appended before the index moves to it: nothing in the DLQ
//! is lost by a replay. A replay that fails otherwise (the namespace is gone, the DLQ log
//! refuses the new entry...) puts the entry back to pending with the failure as its
//! `lastError`.
//!
//! An entry is `replaying` only while a replay of *this process* holds its claim (the
//! in-memory set [`super::tasks::Tasks`] keeps): a `replaying` mark left in the index by a
//! process that stopped mid-replay, or by a replay task that died, reads as `pending` again
//! ([`settle`]).

use std::collections::BTreeSet;
use std::sync::{Arc, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use wald_storage::{now_ms, Durability, Record};

use super::plan::plan;
use super::record::{DeliveryRecord, MessageStatus, TargetStatus};
use super::runner::{deliver_until_final, Outgoing};
use crate::app::App;
use crate::message::{StoredMessage, H_ID};
use crate::model::namespace::{BackoffStrategy, RetryPolicy};
use crate::state::delivery::DeliveryBatch;

/// What can go wrong with the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No such namespace.
    #[error("namespace {0} not found")]
    NoNamespace(String),
    /// The message is not in the namespace's dead-letter queue.
    #[error("message {0} is not in the dead-letter queue")]
    NotFound(String),
    /// The entry is being replayed or was resolved already.
    #[error("message {id} is {status:?} in the dead-letter queue, not pending")]
    NotPending {
        /// The message id.
        id: String,
        /// Its status.
        status: DlqStatus,
    },
    /// The DLQ log refused the entry (disk full, fsync failure).
    #[error("dead-letter log: {0}")]
    Log(#[from] wald_storage::Error),
    /// The DLQ log could not be opened.
    #[error("dead-letter log: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// The state store.
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
    /// An entry that is not what this module writes.
    #[error("dead-letter entry of {id} is corrupt: {reason}")]
    Corrupt {
        /// The message id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a dead-letter entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DlqStatus {
    /// Waiting for an operator.
    Pending,
    /// A replay of this process is running. (A process that stopped mid-replay leaves the
    /// mark stored; it then reads as `pending`.)
    Replaying,
    /// A replay delivered it.
    Replayed,
    /// An operator discarded it.
    Discarded,
}

/// A dead-letter entry as stored in the DLQ log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DlqEntry {
    /// The message, as written (its payload edited by a replay that changed it).
    #[schema(value_type = Object)]
    pub message: StoredMessage,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When it (last) arrived in the DLQ, ms since the epoch.
    pub dead_lettered_at_ms: u64,
    /// The last errors of the targets that failed.
    pub reason: String,
    /// Every target's attempts and outcome.
    pub delivery: DeliveryRecord,
    /// Replays that failed before this entry.
    pub replays: u32,
}

/// The index record of a dead-letter entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DlqIndex {
    /// Where the entry is.
    pub status: DlqStatus,
    /// The entry's offset in the DLQ log.
    pub dlq_offset: u64,
    /// When it (last) arrived, ms since the epoch.
    pub dead_lettered_at_ms: u64,
    /// When the status last changed, ms since the epoch.
    pub updated_at_ms: u64,
    /// Replays that failed.
    pub replays: u32,
    /// The reason it is here.
    pub reason: String,
    /// Why the last replay of this entry failed, when one did: its targets failed again, it
    /// could not run or store its outcome, or it was cut short (the service stopped). Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `lastError` of an entry whose replay was cut short.
const INTERRUPTED: &str =
    "the replay did not finish (the service stopped or the replay died): pending again";

/// The entries claimed by this process (see [`super::tasks::Tasks`]).
type Claims = BTreeSet<(String, String)>;

fn claims(app: &App) -> MutexGuard<'_, Claims> {
    app.delivery
        .tasks
        .dlq_claims
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn key(ns: &str, id: &str) -> (String, String) {
    (ns.to_owned(), id.to_owned())
}

/// An index record as this process sees it: `replaying` stays so only while a replay of this
/// process holds the entry's claim; otherwise the replay that stored the mark is gone (the
/// process stopped mid-replay, or the replay task died) and the entry is pending again.
///
/// Decided lazily, on every read, rather than by rewriting the marks at startup: the
/// stored mark alone cannot tell a live replay from a dead one, while the claim can, at
/// any time; a startup sweep would race with the API (served before the delivery
/// supervisor runs) and would not cover a replay task that dies later. It cannot start a
/// second replay of an entry in one process: a running replay holds its claim until its
/// outcome is stored, and the check and the change of status are made under the claims'
/// lock. (No lease time either: a replay waiting out a long `retryBackoffMs` never turns
/// stale while it runs.) The stored record keeps its `replaying` mark until the entry's
/// next change.
fn settle(claims: &Claims, ns: &str, id: &str, mut ix: DlqIndex) -> DlqIndex {
    if ix.status == DlqStatus::Replaying && !claims.contains(&key(ns, id)) {
        ix.status = DlqStatus::Pending;
        ix.last_error = Some(INTERRUPTED.to_owned());
    }
    ix
}

/// The claim of a replay of this process on its entry: released when dropped, also when the
/// replay task panics or is cancelled (the entry then reads as pending).
struct Claim {
    app: Arc<App>,
    key: (String, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        claims(&self.app).remove(&self.key);
    }
}

fn decode_index(id: &str, bytes: &[u8]) -> Result<DlqIndex, DlqError> {
    serde_json::from_slice(bytes).map_err(|e| DlqError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

/// The index record of `id` as this process sees it ([`settle`]); `claims` is the locked set.
fn index_in(claims: &Claims, app: &App, ns: &str, id: &str) -> Result<Option<DlqIndex>, DlqError> {
    match app.state.get_dlq(ns, id)? {
        None => Ok(None),
        Some(b) => Ok(Some(settle(claims, ns, id, decode_index(id, &b)?))),
    }
}

fn index(app: &App, ns: &str, id: &str) -> Result<Option<DlqIndex>, DlqError> {
    index_in(&claims(app), app, ns, id)
}

fn put_index(app: &App, ns: &str, id: &str, ix: &DlqIndex) -> Result<(), DlqError> {
    let bytes = serde_json::to_vec(ix).map_err(|e| DlqError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(app.state.put_dlq(ns, id, &bytes, true)?)
}

/// Appends a dead-letter entry (fsync'd) and indexes it as pending. Logs a warning and
/// counts the arrival (the alerting hook) when the namespace alerts on DLQ.
///
/// # Errors
/// The DLQ log or the state store failed: the message is not resolved.
pub async fn dead_letter(
    app: &Arc<App>,
    msg: &StoredMessage,
    partition: u32,
    offset: u64,
    delivery: &DeliveryRecord,
    reason: &str,
    replays: u32,
) -> Result<u64, DlqError> {
    dead_letter_with(app, msg, partition, offset, delivery, reason, replays, None).await
}

/// [`dead_letter`], with the index's `lastError` (a failed replay's).
#[allow(clippy::too_many_arguments)]
async fn dead_letter_with(
    app: &Arc<App>,
    msg: &StoredMessage,
    partition: u32,
    offset: u64,
    delivery: &DeliveryRecord,
    reason: &str,
    replays: u32,
    last_error: Option<String>,
) -> Result<u64, DlqError> {
    let ns = msg.namespace.as_str();
    let now = now_ms();
    let entry = DlqEntry {
        message: msg.clone(),
        partition,
        offset,
        dead_lettered_at_ms: now,
        reason: reason.to_owned(),
        delivery: delivery.clone(),
        replays,
    };
    let payload = serde_json::to_vec(&entry).map_err(|e| DlqError::Corrupt {
        id: msg.message_id.clone(),
        reason: e.to_string(),
    })?;
    let record = Record {
        key: msg.message_id.clone().into_bytes(),
        headers: vec![(H_ID.to_owned(), msg.message_id.clone().into_bytes())],
        payload,
        due_ms: 0,
    };
    let log = app.engine.dlq(ns)?;
    let appended = log.append(&[record], Durability::Sync)?.await?;
    let dlq_offset = appended.first_offset;
    put_index(
        app,
        ns,
        &msg.message_id,
        &DlqIndex {
            status: DlqStatus::Pending,
            dlq_offset,
            dead_lettered_at_ms: now,
            updated_at_ms: now,
            replays,
            reason: reason.to_owned(),
            last_error,
        },
    )?;
    app.delivery
        .metrics
        .dlq_arrivals
        .with_label_values(&[ns])
        .inc();
    app.delivery.metrics.dlq_size.with_label_values(&[ns]).inc();
    let alert = app
        .namespace(ns)
        .is_none_or(|n| n.spec.dlq_config.alert_on_dlq);
    if alert {
        tracing::warn!(namespace = ns, message_id = %msg.message_id, partition, offset, reason, "message sent to the dead-letter queue");
    }
    Ok(dlq_offset)
}

/// Reads the entry an index record points at.
///
/// # Errors
/// The DLQ log cannot be read, or the entry is not one.
pub fn read_entry(app: &App, ns: &str, id: &str, ix: &DlqIndex) -> Result<DlqEntry, DlqError> {
    let log = app.engine.dlq(ns)?;
    let corrupt = |reason: String| DlqError::Corrupt {
        id: id.to_owned(),
        reason,
    };
    let rec = log.read_from(ix.dlq_offset)?.next().ok_or_else(|| {
        corrupt(format!(
            "offset {} is past the DLQ log's end",
            ix.dlq_offset
        ))
    })??;
    if rec.offset != ix.dlq_offset {
        return Err(corrupt(format!(
            "offset {} is no longer in the DLQ log",
            ix.dlq_offset
        )));
    }
    serde_json::from_slice(&rec.payload).map_err(|e| corrupt(e.to_string()))
}

/// One entry, for the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DlqItem {
    /// The message id.
    pub message_id: String,
    /// The index record.
    #[serde(flatten)]
    pub index: DlqIndex,
    /// The entry (absent in listings unless asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<DlqEntry>,
}

impl DlqIndex {
    /// The index record as served: credentials scrubbed from the reason ([`crate::redact`]).
    #[must_use]
    pub fn redacted(mut self) -> Self {
        self.reason = crate::redact::text(&self.reason).into_owned();
        self.last_error = self
            .last_error
            .map(|e| crate::redact::text(&e).into_owned());
        self
    }
}

impl DlqItem {
    /// The item as served: the original message's target configurations redacted, and
    /// credentials scrubbed from the reasons ([`crate::redact`]).
    #[must_use]
    pub fn redacted(mut self) -> Self {
        self.index = self.index.redacted();
        if let Some(e) = &mut self.entry {
            e.message.target = e.message.target.take().map(crate::redact::targets_owned);
            e.reason = crate::redact::text(&e.reason).into_owned();
        }
        self
    }
}

/// Which entries a listing returns, in the listing's order (arrival time, then message id).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Only entries with this status (any when `None`).
    pub status: Option<DlqStatus>,
    /// Arrived at or after (ms since the epoch).
    pub from_ms: u64,
    /// Arrived before (ms since the epoch; `u64::MAX`: no bound).
    pub to_ms: u64,
    /// A cursor: among the entries that arrived at `from_ms`, only those whose message id
    /// sorts after this one (the last entry of the previous page).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// A namespace's entries selected by `l`, oldest first.
///
/// # Errors
/// The state store.
pub fn list(
    app: &App,
    ns: &str,
    l: &Listing,
    with_entries: bool,
) -> Result<Vec<DlqItem>, DlqError> {
    let mut items = Vec::new();
    let claimed = claims(app);
    for (id, bytes) in app.state.list_dlq(ns)? {
        let ix = settle(&claimed, ns, &id, decode_index(&id, &bytes)?);
        let at = ix.dead_lettered_at_ms;
        let before_cursor = at == l.from_ms && l.after.as_deref().is_some_and(|a| id.as_str() <= a);
        if l.status.is_some_and(|s| s != ix.status)
            || at < l.from_ms
            || at >= l.to_ms
            || before_cursor
        {
            continue;
        }
        items.push(DlqItem {
            message_id: id,
            index: ix,
            entry: None,
        });
    }
    drop(claimed);
    items.sort_by(|a, b| {
        (a.index.dead_lettered_at_ms, &a.message_id)
            .cmp(&(b.index.dead_lettered_at_ms, &b.message_id))
    });
    items.truncate(l.limit);
    if with_entries {
        for it in &mut items {
            it.entry = Some(read_entry(app, ns, &it.message_id, &it.index)?);
        }
    }
    Ok(items)
}

/// One entry with its content.
///
/// # Errors
/// [`DlqError::NotFound`], or the store/log.
pub fn get(app: &App, ns: &str, id: &str) -> Result<DlqItem, DlqError> {
    let ix = index(app, ns, id)?.ok_or_else(|| DlqError::NotFound(id.to_owned()))?;
    let entry = read_entry(app, ns, id, &ix)?;
    Ok(DlqItem {
        message_id: id.to_owned(),
        index: ix,
        entry: Some(entry),
    })
}

/// An entry leaves the queue (`status`: discarded or replayed): stored, and no longer counted.
fn leave(
    app: &App,
    ns: &str,
    id: &str,
    ix: &mut DlqIndex,
    status: DlqStatus,
) -> Result<(), DlqError> {
    ix.status = status;
    ix.updated_at_ms = now_ms();
    put_index(app, ns, id, ix)?;
    app.delivery.metrics.dlq_size.with_label_values(&[ns]).dec();
    Ok(())
}

/// Discards a pending entry (recorded, synced).
///
/// # Errors
/// [`DlqError::NotFound`], [`DlqError::NotPending`], or the store.
pub fn discard(app: &App, ns: &str, id: &str) -> Result<DlqIndex, DlqError> {
    // Checked and changed under the claims' lock: no replay of this process starts between.
    let claimed = claims(app);
    let mut ix =
        index_in(&claimed, app, ns, id)?.ok_or_else(|| DlqError::NotFound(id.to_owned()))?;
    if ix.status != DlqStatus::Pending {
        return Err(DlqError::NotPending {
            id: id.to_owned(),
            status: ix.status,
        });
    }
    leave(app, ns, id, &mut ix, DlqStatus::Discarded)?;
    drop(claimed);
    tracing::info!(
        namespace = ns,
        message_id = id,
        "dead-letter entry discarded"
    );
    Ok(ix)
}

/// Starts replaying a pending entry (optionally with a new payload): marks it replaying and
/// claims it for this process, and returns at once; the replay runs in the background and
/// holds the claim until its outcome is stored: `replayed`, or `pending` again (with a new
/// entry when its targets failed again, else with the failure as `lastError`).
///
/// # Errors
/// [`DlqError::NotFound`], [`DlqError::NotPending`], or the store/log.
pub fn start_replay(
    app: &Arc<App>,
    ns: &str,
    id: &str,
    payload: Option<Box<RawValue>>,
) -> Result<(DlqIndex, tokio::task::JoinHandle<bool>), DlqError> {
    // Checked, marked and claimed under the claims' lock: one replay per entry at a time.
    let mut claimed = claims(app);
    let mut ix =
        index_in(&claimed, app, ns, id)?.ok_or_else(|| DlqError::NotFound(id.to_owned()))?;
    if ix.status != DlqStatus::Pending {
        return Err(DlqError::NotPending {
            id: id.to_owned(),
            status: ix.status,
        });
    }
    let mut entry = read_entry(app, ns, id, &ix)?;
    if let Some(p) = payload {
        entry.message.payload = p;
    }
    ix.status = DlqStatus::Replaying;
    ix.updated_at_ms = now_ms();
    put_index(app, ns, id, &ix)?;
    claimed.insert(key(ns, id));
    drop(claimed);
    let claim = Claim {
        app: Arc::clone(app),
        key: key(ns, id),
    };
    let app2 = Arc::clone(app);
    let (ns2, id2) = (ns.to_owned(), id.to_owned());
    let handle = tokio::spawn(async move {
        // Released when this task ends (or is dropped), after the outcome is stored.
        let _claim = claim;
        match replay(&app2, &ns2, &id2, entry).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(namespace = %ns2, message_id = %id2, error = %e, "dead-letter replay failed");
                if let Err(e2) = back_to_pending(&app2, &ns2, &id2, &e.to_string()) {
                    tracing::error!(namespace = %ns2, message_id = %id2, error = %e2, "dead-letter entry left replaying; it reads as pending once the replay ends");
                }
                false
            }
        }
    });
    Ok((ix, handle))
}

/// A replay failed before storing its outcome: its entry (still `replaying`, as the replay
/// holds the claim) is pending again, with the failure as `lastError`. An entry the replay
/// already moved on (replayed, or a new pending entry) is left as it is.
fn back_to_pending(app: &App, ns: &str, id: &str, error: &str) -> Result<(), DlqError> {
    let claimed = claims(app);
    let Some(mut ix) = index_in(&claimed, app, ns, id)? else {
        return Ok(());
    };
    if ix.status != DlqStatus::Replaying {
        return Ok(());
    }
    ix.status = DlqStatus::Pending;
    ix.updated_at_ms = now_ms();
    ix.last_error = Some(format!("replay failed: {error}"));
    put_index(app, ns, id, &ix)
}

/// The replay itself: true when every target got the message.
async fn replay(app: &Arc<App>, ns: &str, id: &str, entry: DlqEntry) -> Result<bool, DlqError> {
    let nsrt = app
        .namespace(ns)
        .ok_or_else(|| DlqError::NoNamespace(ns.to_owned()))?;
    let plan = plan(&entry.message, &nsrt.spec).map_err(|reason| DlqError::Corrupt {
        id: id.to_owned(),
        reason,
    })?;
    let dlq = &nsrt.spec.dlq_config;
    let policy = RetryPolicy {
        max_attempts: dlq.max_retries,
        backoff_strategy: BackoffStrategy::Constant,
        initial_delay_ms: dlq.retry_backoff_ms,
        max_delay_ms: dlq.retry_backoff_ms,
        jitter_ms: 0,
        retryable_error_codes: None,
    };
    let mut record = entry.delivery.clone();
    if record.targets.len() != plan.targets.len() {
        record.targets = super::record::TargetDelivery::for_targets(&plan.targets);
    }
    for t in &mut record.targets {
        if t.status != TargetStatus::Delivered {
            t.status = TargetStatus::Pending;
        }
    }
    let out = Outgoing {
        message_id: Arc::from(id),
        namespace: Arc::from(ns),
        partition: entry.partition,
        offset: entry.offset,
        payload: Arc::from(entry.message.payload.get().as_bytes()),
        accepted_at_ms: entry.message.accepted_at_ms,
    };
    deliver_until_final(
        &app.delivery,
        &out,
        &plan.targets,
        &policy,
        &mut record.targets,
        TargetStatus::DeadLettered,
    )
    .await;
    let delivered = record
        .targets
        .iter()
        .all(|t| t.status == TargetStatus::Delivered);
    record.status = if delivered {
        MessageStatus::Delivered
    } else {
        MessageStatus::DeadLettered
    };
    record.updated_at_ms = now_ms();
    if delivered {
        let mut ix = index(app, ns, id)?.ok_or_else(|| DlqError::NotFound(id.to_owned()))?;
        leave(app, ns, id, &mut ix, DlqStatus::Replayed)?;
        tracing::info!(
            namespace = ns,
            message_id = id,
            "dead-letter replay delivered the message"
        );
    } else {
        // Back to the DLQ with the new attempts (a new entry; the index moves to it). Should
        // that fail, the entry stays where it was and is pending again (`back_to_pending`).
        let reason = format!(
            "replay {} failed: {}",
            entry.replays + 1,
            record.failed_targets()
        );
        dead_letter_with(
            app,
            &entry.message,
            entry.partition,
            entry.offset,
            &record,
            &reason,
            entry.replays + 1,
            Some(reason.clone()),
        )
        .await?;
        // Counted again as it arrived: the entry it replaces is no longer.
        app.delivery.metrics.dlq_size.with_label_values(&[ns]).dec();
    }
    // The message's own delivery record shows the replay's attempts and outcome.
    let mut b = DeliveryBatch::default();
    b.put_state(ns, entry.partition, entry.offset, record.encode());
    app.state.write_delivery(b, false)?;
    Ok(delivered)
}

/// Recounts the entries of every namespace still in the queue (pending, or being replayed
/// by this process: a replay leaves the count when it stores its outcome) into the
/// `dlq_size` gauge (at start). An entry a stopped process left `replaying` counts as
/// pending ([`settle`]).
pub fn refresh_size(app: &App) {
    for ns in app.all_namespaces() {
        let name = ns.spec.name.as_str();
        let everything = Listing {
            to_ms: u64::MAX,
            limit: usize::MAX,
            ..Listing::default()
        };
        if let Ok(items) = list(app, name, &everything, false) {
            let queued = items
                .iter()
                .filter(|it| matches!(it.index.status, DlqStatus::Pending | DlqStatus::Replaying))
                .count();
            app.delivery
                .metrics
                .dlq_size
                .with_label_values(&[name])
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
    }
}

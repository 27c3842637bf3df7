//! Appending prepared messages: deduplicate by idempotency key, one append per partition,
//! await the covering fsync, index, tell consumers and mirrors, answer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Origin, Prepared};
use crate::app::{App, KeyGuard, NamespaceRuntime, IDEMPOTENCY_WINDOW_MS};
use crate::http::error::ApiError;
use crate::message::{new_message_id, RecordIds, StoredMessage};
use crate::mirror::hub::Confirmation;
use crate::model::namespace::DurabilityMode;
use crate::model::time::rfc3339_ms;
use crate::model::write::{DurableStatus, WriteToLogResponse};
use crate::txn::record::transaction_id_of;

const ACCEPTED: &str = "Message accepted for processing";
const DUPLICATE: &str = "Duplicate: this idempotency key was already written; nothing was appended";

/// What becomes of one message of the request.
enum Fate {
    /// Appended: group `g`, position `i` in it.
    New { group: usize, pos: usize },
    /// Its key was written before this request: the first message's answer.
    Earlier(WriteToLogResponse),
    /// Its key is the one of an earlier message of this request.
    SameAs(usize),
}

/// The messages of one partition, appended together.
struct Group {
    ns: Arc<NamespaceRuntime>,
    partition: u32,
    messages: Vec<StoredMessage>,
    records: Vec<wald_storage::Record>,
    sizes: Vec<u64>,
    /// First offset, durability; set once the append completed.
    done: Option<(u64, DurableStatus)>,
}

/// Appends `prepared` (validated and authorized) and answers each in order.
///
/// # Errors
/// The storage refused or failed an append (the request is answered with it; partitions
/// appended before the failure are indexed all the same).
#[allow(clippy::too_many_lines)] // the write path, read top to bottom
pub async fn commit(
    app: &Arc<App>,
    origin: &Origin,
    prepared: Vec<Prepared>,
) -> Result<Vec<WriteToLogResponse>, ApiError> {
    let now = wald_storage::now_ms();
    // Concurrent writes with one key: the first appends, the rest wait and see it as done.
    // The locks are held until the appends are indexed — past this request's answer when
    // its fsync outlives the request timeout or its client goes away (see `Inflight`).
    let mut inflight = Inflight {
        app: Arc::clone(app),
        now,
        guards: Arc::new(lock_keys(app, &prepared).await),
        waiting: Vec::new(),
    };
    let mut fates = Vec::with_capacity(prepared.len());
    let mut groups: Vec<Group> = Vec::new();
    let mut keys_here: HashMap<(String, String), usize> = HashMap::new();
    let mut txns = Vec::new();
    for (i, mut p) in prepared.into_iter().enumerate() {
        if let Some(key) = &p.v.idempotency_key {
            let id = (p.v.namespace.clone(), key.clone());
            if let Some(&first) = keys_here.get(&id) {
                fates.push(Fate::SameAs(first));
                continue;
            }
            if let Some(first) = app
                .state
                .idempotent(&p.v.namespace, key, now)
                .map_err(ApiError::internal)?
            {
                app.metrics
                    .duplicates
                    .with_label_values(&[p.v.namespace.as_str()])
                    .inc();
                app.metrics.series.record_duplicate(&p.v.namespace, now);
                // As the first write answered: after the mirrors that must confirm it did
                // (waiting for them, as its write did).
                let base = if p.ns.spec.durability == DurabilityMode::Kafka {
                    DurableStatus::False
                } else {
                    durable_status(&p.ns)
                };
                let deadline = origin.started + app.config.server.request_timeout();
                let c = app
                    .mirrors
                    .confirm(
                        &app.state,
                        &p.ns,
                        first.partition,
                        first.offset..first.offset + 1,
                        base,
                        deadline,
                    )
                    .await;
                let message = match &c.refused_by {
                    Some(m) => refused_message(m),
                    None => DUPLICATE.into(),
                };
                fates.push(Fate::Earlier(WriteToLogResponse {
                    durable: c.durable,
                    transaction_id: p.txn.as_ref().map(|_| transaction_id_of(&first.message_id)),
                    message_id: first.message_id,
                    message,
                    timestamp: rfc3339_ms(now),
                    namespace: p.v.namespace.clone(),
                    partition: first.partition,
                    offset: first.offset,
                    duplicate: true,
                }));
                continue;
            }
            keys_here.insert(id, i);
        }
        let partition = p.ns.choose_partition(
            p.v.partition_key
                .as_deref()
                .or(p.v.idempotency_key.as_deref()),
        );
        let g = match groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.ns, &p.ns) && g.partition == partition)
        {
            Some(g) => g,
            None => {
                groups.push(Group {
                    ns: Arc::clone(&p.ns),
                    partition,
                    messages: Vec::new(),
                    records: Vec::new(),
                    sizes: Vec::new(),
                    done: None,
                });
                groups.len() - 1
            }
        };
        let message_id = new_message_id(now);
        let transaction_id = p.txn.as_ref().map(|_| transaction_id_of(&message_id));
        if transaction_id.is_some() {
            txns.push((g, groups[g].messages.len()));
        }
        let stored = StoredMessage {
            message_id,
            namespace: p.v.namespace.clone(),
            target: p.v.targets_json().map_err(ApiError::internal)?,
            lifecycle: p.v.lifecycle_json().map_err(ApiError::internal)?,
            payload: std::mem::take(&mut p.v.payload),
            metadata: p.v.metadata.take(),
            priority: p.v.priority,
            tags: p.v.tags.take(),
            transaction_id,
            idempotency_key: p.v.idempotency_key.clone(),
            request_id: Some(origin.request_id.clone()),
            accepted_at_ms: now,
        };
        let due_ms = if p.v.delay_ms > 0 {
            now + p.v.delay_ms
        } else {
            0
        };
        let pkey = p.v.partition_key.as_deref().unwrap_or("").as_bytes();
        let record = stored.to_record(pkey, due_ms).map_err(ApiError::internal)?;
        fates.push(Fate::New {
            group: g,
            pos: groups[g].messages.len(),
        });
        groups[g].records.push(record);
        groups[g].messages.push(stored);
        groups[g].sizes.push(p.size);
    }

    // One append per partition, all started before any is awaited (they share a commit).
    let durability_delay =
        std::time::Duration::from_millis(app.config.storage.background_sync_interval_ms);
    let mut marks = Vec::with_capacity(groups.len());
    let records: Vec<Vec<wald_storage::Record>> = groups
        .iter_mut()
        .map(|g| std::mem::take(&mut g.records))
        .collect();
    for (g, records) in groups.iter().zip(records) {
        let Some(log) = g.ns.logs.get(g.partition as usize).cloned() else {
            return Err(ApiError::internal(format!(
                "namespace {} has no partition {}",
                g.ns.spec.name, g.partition
            )));
        };
        match log.try_append(&records, g.ns.durability(durability_delay)) {
            Ok(t) => {
                t.schedule();
                marks.push(super::index::defer(
                    app,
                    &g.ns.spec.name,
                    g.partition,
                    ids_of(g),
                    now,
                    t.completion(),
                ));
                inflight.waiting.push(Some(Appended {
                    ticket: t,
                    namespace: g.ns.spec.name.clone(),
                    partition: g.partition,
                    ids: ids_of(g),
                }));
            }
            // The partitions appended so far are indexed when (if) they complete
            // (`Inflight`'s drop).
            Err(e) => return Err(write_failed(app, &g.ns, e)),
        }
    }
    let timeout = app.config.server.request_timeout();
    let deadline = tokio::time::Instant::from_std(origin.started + timeout);
    let mut failure = None;
    for gi in 0..groups.len() {
        let Some(Some(waiting)) = inflight.waiting.get_mut(gi) else {
            break;
        };
        match tokio::time::timeout_at(deadline, &mut waiting.ticket).await {
            Ok(Ok(a)) => {
                inflight.waiting[gi] = None;
                let durable = if a.synced {
                    DurableStatus::True
                } else {
                    DurableStatus::False
                };
                groups[gi].done = Some((a.first_offset, durable));
                // Unless the I/O thread's flush indexed it already.
                let mark = marks.get(gi).and_then(Option::as_ref);
                if !mark.is_some_and(|m| m.load(Ordering::Acquire)) {
                    index(app, &groups[gi], a.first_offset, now);
                    if let Some(m) = mark {
                        m.store(true, Ordering::Release);
                    }
                }
            }
            Ok(Err(e)) => {
                inflight.waiting[gi] = None;
                failure.get_or_insert_with(|| write_failed(app, &groups[gi].ns, e));
            }
            // The fsync did not complete in time: the messages may or may not become
            // durable. They stay in `inflight`, indexed when (if) they do, so they are
            // findable and their keys deduplicate (the keys stay locked until then).
            Err(_) => {}
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    for (g, pos) in txns {
        let group = &groups[g];
        if let Some((first, _)) = group.done {
            // Its state record now (else the partition's consumer creates it from the log).
            let msg = &group.messages[pos];
            if let Err(e) = app
                .txns
                .adopt(app, msg, group.partition, first + pos as u64)
            {
                tracing::error!(message_id = %msg.message_id, error = %e, "storing a new transaction's record failed; its consumer will");
            }
        }
    }
    let mut confirmed = Vec::with_capacity(groups.len());
    for g in &groups {
        let Some((first, durable)) = g.done else {
            confirmed.push(Confirmation {
                durable: DurableStatus::Unknown,
                refused_by: None,
            });
            continue;
        };
        app.delivery.appended(&g.ns.spec.name, g.partition);
        // Mirrors: wake them; with `ack = "mirror"`, also wait for their confirmation.
        app.mirrors.appended(&g.ns.spec.name, g.partition);
        let last = first + g.messages.len() as u64 - 1;
        confirmed.push(
            app.mirrors
                .confirm(
                    &app.state,
                    &g.ns,
                    g.partition,
                    first..last + 1,
                    durable,
                    origin.started + timeout,
                )
                .await,
        );
    }
    let latency = origin.started.elapsed();
    let answered_ms = wald_storage::now_ms();
    for g in &groups {
        if g.done.is_none() {
            continue;
        }
        let n = g.messages.len() as u64;
        g.ns.writes.fetch_add(n, Ordering::Relaxed);
        let hist = app
            .metrics
            .write_latency
            .with_label_values(&[g.ns.spec.name.as_str()]);
        for &size in &g.sizes {
            hist.observe(latency.as_secs_f64());
            app.metrics
                .series
                .record_write(&g.ns.spec.name, answered_ms, size, latency);
        }
    }
    let timestamp = rfc3339_ms(answered_ms);
    let mut out: Vec<WriteToLogResponse> = Vec::with_capacity(fates.len());
    for fate in fates {
        let r = match fate {
            Fate::Earlier(r) => r,
            Fate::SameAs(i) => {
                let first = &out[i];
                WriteToLogResponse {
                    durable: first.durable,
                    message_id: first.message_id.clone(),
                    transaction_id: first.transaction_id.clone(),
                    message: DUPLICATE.into(),
                    timestamp: timestamp.clone(),
                    namespace: first.namespace.clone(),
                    partition: first.partition,
                    offset: first.offset,
                    duplicate: true,
                }
            }
            Fate::New { group, pos } => {
                let g = &groups[group];
                let m = &g.messages[pos];
                let c = &confirmed[group];
                let offset = g.done.map_or(0, |(first, _)| first + pos as u64);
                WriteToLogResponse {
                    durable: c.durable,
                    message_id: m.message_id.clone(),
                    transaction_id: m.transaction_id.clone(),
                    message: answer_message(&g.ns, g.done.is_some(), c),
                    timestamp: timestamp.clone(),
                    namespace: m.namespace.clone(),
                    partition: g.partition,
                    offset,
                    duplicate: false,
                }
            }
        };
        out.push(r);
    }
    Ok(out)
}

fn answer_message(ns: &NamespaceRuntime, appended: bool, c: &Confirmation) -> String {
    let kafka = ns.spec.durability == DurabilityMode::Kafka;
    if !appended {
        "Accepted, but durability was not confirmed within the request timeout".into()
    } else if let Some(m) = &c.refused_by {
        refused_message(m)
    } else if c.durable == DurableStatus::Unknown && kafka {
        "Accepted in the local log, but Kafka did not confirm within the request timeout (it is retried until it does)".into()
    } else if c.durable == DurableStatus::Unknown {
        "Accepted and durable in the log, but a mirror with ack = \"mirror\" did not confirm within the request timeout".into()
    } else {
        ACCEPTED.into()
    }
}

/// The answer to a write a mirror that must confirm it refused for good.
fn refused_message(mirror: &str) -> String {
    format!(
        "Accepted in the local log, but mirror {mirror:?} refused it for good (too large, or not \
         a message: see the mirror's lastRefusal); it is not durable by this namespace's promise"
    )
}

/// Locks every idempotency key of the request, in one global order (no deadlock between
/// batches that share keys).
async fn lock_keys(app: &Arc<App>, prepared: &[Prepared]) -> Vec<KeyGuard> {
    let mut keys: Vec<(&str, &str)> = prepared
        .iter()
        .filter_map(|p| {
            p.v.idempotency_key
                .as_deref()
                .map(|k| (p.v.namespace.as_str(), k))
        })
        .collect();
    if keys.is_empty() {
        return Vec::new();
    }
    keys.sort_unstable();
    keys.dedup();
    let mut guards = Vec::with_capacity(keys.len());
    for (ns, key) in keys {
        guards.push(app.lock_key(ns, key).await);
    }
    guards
}

/// Counts a write the storage refused or failed, and answers it.
fn write_failed(app: &App, ns: &NamespaceRuntime, e: wald_storage::Error) -> ApiError {
    ns.errors.fetch_add(1, Ordering::Relaxed);
    app.metrics
        .series
        .record_error(&ns.spec.name, wald_storage::now_ms());
    let deleted = matches!(e, wald_storage::Error::Closed { .. })
        && !app.shutting_down.load(Ordering::Relaxed)
        && app.namespace(&ns.spec.name).is_none();
    if deleted {
        // Its logs were closed by a delete while this write was in flight: nothing of it
        // was acknowledged.
        return ApiError::new(
            crate::http::error::ErrorCode::NamespaceNotFound,
            format!(
                "Namespace '{}' was deleted while the write was in flight; nothing was written",
                ns.spec.name
            ),
        );
    }
    ApiError::from(e)
}

/// The ids of a group's messages, for the index.
fn ids_of(g: &Group) -> Vec<RecordIds> {
    g.messages
        .iter()
        .map(|m| RecordIds {
            message_id: m.message_id.clone(),
            idempotency_key: m.idempotency_key.clone(),
            transaction_id: m.transaction_id.clone(),
        })
        .collect()
}

/// Indexes an appended group, one state-store write for all its messages. The messages
/// are in the log whatever happens here: a failure is logged, not answered (the index is
/// derived and catches up from the log at the next start), so a durable write is never
/// reported as failed.
fn index(app: &App, g: &Group, first: u64, now: u64) {
    apply(app, &g.ns.spec.name, g.partition, first, ids_of(g), now);
}

fn apply(app: &App, ns: &str, partition: u32, first: u64, ids: Vec<RecordIds>, now: u64) {
    let entries: Vec<(u64, RecordIds, u64)> = ids
        .into_iter()
        .enumerate()
        .map(|(i, ids)| (first + i as u64, ids, now))
        .collect();
    if let Err(e) = app
        .state
        .apply(ns, partition, &entries, IDEMPOTENCY_WINDOW_MS)
    {
        tracing::error!(namespace = ns, partition, offset = first, error = %e, "indexing appended messages failed; they are re-indexed from the log at the next start");
    }
}

/// An append whose completion the request has not seen.
struct Appended {
    ticket: wald_storage::Ticket,
    namespace: String,
    partition: u32,
    ids: Vec<RecordIds>,
}

/// A request's appends and its idempotency keys' locks. Whatever way the request ends —
/// answered, timed out, or dropped because its client went away — the appends it did not
/// see complete are indexed when (if) they complete, and the keys stay locked until then:
/// a retry with the same key waits and finds the first write, never appends it twice.
struct Inflight {
    app: Arc<App>,
    now: u64,
    guards: Arc<Vec<KeyGuard>>,
    /// Per group, in order: `None` once the request saw it complete.
    waiting: Vec<Option<Appended>>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let left: Vec<Appended> = self.waiting.drain(..).flatten().collect();
        if left.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // Not reachable from a request (they run on a runtime); the index catches up
            // from the log at the next start.
            tracing::error!("a write's appends were left unindexed outside a runtime");
            return;
        };
        let (app, now, guards) = (Arc::clone(&self.app), self.now, Arc::clone(&self.guards));
        rt.spawn(async move {
            for a in left {
                if let Ok(done) = a.ticket.await {
                    apply(
                        &app,
                        &a.namespace,
                        a.partition,
                        done.first_offset,
                        a.ids,
                        now,
                    );
                }
            }
            drop(guards);
        });
    }
}

fn durable_status(ns: &NamespaceRuntime) -> DurableStatus {
    match ns.spec.durability {
        DurabilityMode::Sync => DurableStatus::True,
        _ => DurableStatus::False,
    }
}

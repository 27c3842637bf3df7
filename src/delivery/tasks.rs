//! Background tasks started through the admin API — a bulk dead-letter replay, a replay of a
//! log range — with their progress, served by `GET /api/v1/tasks/{id}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wald_storage::now_ms;

use super::dlq::{self, DlqStatus};
use super::plan::plan;
use super::record::{DeliveryRecord, TargetDelivery, TargetStatus};
use super::runner::{deliver_until_final, Outgoing};
use crate::app::App;
use crate::message::StoredMessage;

/// Most finished tasks remembered.
const KEEP_FINISHED: usize = 100;

/// One task's progress.
#[derive(Debug, Default)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// What it does (`dlq_replay`, `log_replay`).
    pub kind: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// When it started, ms since the epoch.
    pub started_at_ms: u64,
    /// Items to do (known up front or grown as found).
    pub total: AtomicU64,
    /// Items done.
    pub done: AtomicU64,
    /// Items that succeeded.
    pub succeeded: AtomicU64,
    /// Items that failed.
    pub failed: AtomicU64,
    /// Finished (successfully or not).
    pub finished: AtomicBool,
    /// Why it stopped early.
    pub error: Mutex<Option<String>>,
}

/// A task's progress as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// The task id.
    pub id: String,
    /// `dlq_replay` or `log_replay`.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// When it started, ms since the epoch.
    pub started_at_ms: u64,
    /// Items to do.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that failed.
    pub failed: u64,
    /// True once it ended.
    pub finished: bool,
    /// Why it stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Task {
    /// The API view.
    #[must_use]
    pub fn view(&self) -> TaskView {
        TaskView {
            id: self.id.clone(),
            kind: self.kind.to_owned(),
            namespace: self.namespace.clone(),
            started_at_ms: self.started_at_ms,
            total: self.total.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            error: self
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn fail(&self, e: impl std::fmt::Display) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }

    fn item(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The registry of tasks.
#[derive(Debug, Default)]
pub struct Tasks {
    map: Mutex<BTreeMap<String, Arc<Task>>>,
    /// The dead-letter entries (namespace, message id) this process is replaying or changing
    /// right now ([`super::dlq`]): an entry stored as `replaying` that is not here was left
    /// so by a process that is gone (or a replay that died) and counts as pending. Held by
    /// the app, so a restarted app starts with none.
    pub(crate) dlq_claims: Mutex<BTreeSet<(String, String)>>,
}

impl Tasks {
    fn create(&self, kind: &'static str, namespace: &str) -> Arc<Task> {
        let now = now_ms();
        let id = format!("task_{now}_{:08x}", rand::random::<u32>());
        let task = Arc::new(Task {
            id: id.clone(),
            kind,
            namespace: namespace.to_owned(),
            started_at_ms: now,
            ..Task::default()
        });
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let finished: Vec<String> = map
            .values()
            .filter(|t| t.finished.load(Ordering::Relaxed))
            .map(|t| t.id.clone())
            .collect();
        if finished.len() >= KEEP_FINISHED {
            for id in finished.iter().take(finished.len() + 1 - KEEP_FINISHED) {
                map.remove(id);
            }
        }
        map.insert(id, Arc::clone(&task));
        task
    }

    /// A task's progress.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<TaskView> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map(|t| t.view())
    }
}

/// Replays every pending dead-letter entry of `ns` that arrived at or after `since_ms`, at
/// most `[delivery] replay_rate_per_sec` started per second, in the background.
#[must_use]
pub fn replay_dlq(app: &Arc<App>, ns: &str, since_ms: u64) -> TaskView {
    let task = app.delivery.tasks.create("dlq_replay", ns);
    let view = task.view();
    let app = Arc::clone(app);
    let ns = ns.to_owned();
    tokio::spawn(async move {
        let all_pending = dlq::Listing {
            status: Some(DlqStatus::Pending),
            from_ms: since_ms,
            to_ms: u64::MAX,
            after: None,
            limit: usize::MAX,
        };
        let items = match dlq::list(&app, &ns, &all_pending, false) {
            Ok(i) => i,
            Err(e) => {
                task.fail(e);
                task.finished.store(true, Ordering::Relaxed);
                return;
            }
        };
        task.total.store(items.len() as u64, Ordering::Relaxed);
        let pace = Duration::from_secs(1) / app.delivery.config.replay_rate_per_sec.max(1);
        let mut running = Vec::new();
        for it in items {
            match dlq::start_replay(&app, &ns, &it.message_id, None) {
                Ok((_, h)) => running.push(h),
                // Discarded or replayed since the listing: nothing to do.
                Err(_) => task.item(false),
            }
            tokio::time::sleep(pace).await;
        }
        for h in running {
            task.item(h.await.unwrap_or(false));
        }
        task.finished.store(true, Ordering::Relaxed);
    });
    view
}

/// What a log replay covers.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogReplay {
    /// Only this partition. Default: every partition.
    #[serde(default)]
    pub partition: Option<u32>,
    /// First offset (inclusive). One of `fromOffset`/`fromTime` is required.
    #[serde(default)]
    pub from_offset: Option<u64>,
    /// First record time, ms since the epoch.
    #[serde(default)]
    pub from_time: Option<u64>,
    /// Last offset (inclusive). Default: the log's end when the replay starts.
    #[serde(default)]
    pub to_offset: Option<u64>,
    /// Only the target with this identifier. Default: every target of each message.
    #[serde(default)]
    pub target: Option<String>,
}

/// Re-delivers a range of a namespace's log to its targets (or one of them), in the
/// background, with the messages' retry policies; results are not written to the messages'
/// delivery records (a replay is a recovery action beside normal delivery).
#[must_use]
pub fn replay_log(app: &Arc<App>, ns: &str, req: LogReplay) -> TaskView {
    let task = app.delivery.tasks.create("log_replay", ns);
    let view = task.view();
    let app = Arc::clone(app);
    let ns = ns.to_owned();
    tokio::spawn(async move {
        if let Err(e) = run_log_replay(&app, &ns, &req, &task).await {
            task.fail(e);
        }
        task.finished.store(true, Ordering::Relaxed);
    });
    view
}

async fn run_log_replay(
    app: &Arc<App>,
    ns: &str,
    req: &LogReplay,
    task: &Task,
) -> Result<(), String> {
    let rt = app
        .namespace(ns)
        .ok_or_else(|| format!("namespace {ns} not found"))?;
    for (p, log) in rt.logs.iter().enumerate() {
        let p = u32::try_from(p).unwrap_or(u32::MAX);
        if req.partition.is_some_and(|want| want != p) {
            continue;
        }
        let end = req
            .to_offset
            .map_or(log.stats().next_offset, |t| t.saturating_add(1))
            .min(log.stats().next_offset);
        let mut reader = match (req.from_offset, req.from_time) {
            (Some(o), _) => log.read_from(o),
            (None, Some(t)) => log.read_from_time(t),
            (None, None) => log.read_from(0),
        }
        .map_err(|e| e.to_string())?;
        if let Some(first) = req.from_offset {
            task.total
                .fetch_add(end.saturating_sub(first), Ordering::Relaxed);
        }
        for rec in reader.by_ref() {
            let rec = rec.map_err(|e| e.to_string())?;
            if rec.offset >= end {
                break;
            }
            if req.from_offset.is_none() {
                task.total.fetch_add(1, Ordering::Relaxed);
            }
            let ok = match replay_record(app, &rt.spec, p, &rec, req.target.as_deref()).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(namespace = ns, partition = p, offset = rec.offset, error = %e, "record not replayable");
                    false
                }
            };
            task.item(ok);
        }
    }
    Ok(())
}

async fn replay_record(
    app: &Arc<App>,
    spec: &crate::model::namespace::Namespace,
    partition: u32,
    rec: &wald_storage::StoredRecord,
    only: Option<&str>,
) -> Result<bool, String> {
    let msg = StoredMessage::from_record(rec).map_err(|e| e.to_string())?;
    let plan = plan(&msg, spec)?;
    let targets: Vec<_> = plan
        .targets
        .into_iter()
        .filter(|t| only.is_none_or(|id| t.identifier == id))
        .collect();
    let mut states = TargetDelivery::for_targets(&targets);
    let out = Outgoing {
        message_id: Arc::from(msg.message_id.as_str()),
        namespace: Arc::from(msg.namespace.as_str()),
        partition,
        offset: rec.offset,
        payload: Arc::from(msg.payload.get().as_bytes()),
        accepted_at_ms: msg.accepted_at_ms,
    };
    deliver_until_final(
        &app.delivery,
        &out,
        &targets,
        &plan.policy,
        &mut states,
        TargetStatus::Failed,
    )
    .await;
    let record = DeliveryRecord {
        targets: states,
        ..DeliveryRecord::default()
    };
    Ok(record
        .targets
        .iter()
        .all(|t| t.status == TargetStatus::Delivered))
}

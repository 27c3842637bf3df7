//! Retention, run by the service: every `[storage] retention_interval_ms`, each owned
//! partition deletes its oldest sealed segments by its namespace's policy (`retention`, else
//! `[storage]`'s), and expired idempotency keys are purged.
//!
//! # What is never deleted
//!
//! A segment holding an offset at or above the partition's *floor*, the lowest of:
//! - the delivery consumer's committed offset (while `[delivery] enabled`): what it has not
//!   resolved yet;
//! - the lowest offset of a parked (delayed) message: its only copy is the log;
//! - each mirror's committed offset: what the backend has not confirmed yet.
//!
//! The floor is read from the state store (the committed offsets as written), so it can only
//! lag behind the consumers, never run ahead of them. The active segment is never deleted.
//! After a deletion, the message-id index, the delivery records and the mirror refusals of
//! the deleted offsets are forgotten too (the disk stays bounded).
//!
//! Deletes are paced: at most `retention_max_segments_per_pass` per partition per pass (on
//! a file system mounted with `discard`, deleting a large file slows every fsync for a while:
//! docs/BENCHMARKS.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wald_storage::{now_ms, Retention};

use crate::app::{App, NamespaceRuntime};
use crate::state::StateError;

/// Index entries forgotten per state-store call.
const FORGET_CHUNK: usize = 2_000;
/// Idempotency entries looked at per purge call, and calls per pass at most.
const PURGE_CHUNK: usize = 10_000;
const PURGE_CALLS: usize = 100;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Segments deleted, all partitions.
    pub segments_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Expired idempotency keys purged.
    pub keys_purged: u64,
    /// Partitions that could not be processed (logged).
    pub errors: usize,
}

/// Runs a pass every `[storage] retention_interval_ms` until `shutdown` turns true.
pub fn spawn(app: Arc<App>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = app.config.storage.retention_interval();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let a = Arc::clone(&app);
            match tokio::task::spawn_blocking(move || pass(&a, now_ms())).await {
                Ok(r) if r.segments_deleted > 0 || r.keys_purged > 0 => {
                    tracing::info!(
                        segments = r.segments_deleted,
                        bytes = r.bytes_freed,
                        keys = r.keys_purged,
                        "retention pass"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the retention pass panicked; next pass as scheduled")
                }
            }
        }
    })
}

/// One pass over every owned namespace (blocking: file deletes and state-store scans).
pub fn pass(app: &App, now: u64) -> PassReport {
    let mut report = PassReport {
        keys_purged: purge_keys(app, now),
        ..PassReport::default()
    };
    let global = app.config.storage.log_config().retention;
    let per_pass = app.config.storage.retention_max_segments_per_pass;
    for ns in app.all_namespaces() {
        if !app.config.cluster.owns(&ns.spec.name) {
            continue;
        }
        let policy = policy_of(&ns, global);
        if policy.max_age.is_none() && policy.max_bytes.is_none() {
            continue;
        }
        for (p, log) in ns.logs.iter().enumerate() {
            let p = u32::try_from(p).unwrap_or(u32::MAX);
            if let Err(e) = partition(app, &ns, p, log, policy, per_pass, &mut report) {
                report.errors += 1;
                tracing::error!(namespace = %ns.spec.name, partition = p, error = %e, "retention failed for a partition; retried next pass");
            }
        }
    }
    report
}

/// The namespace's policy: each of its limits, else `[storage]`'s.
fn policy_of(ns: &NamespaceRuntime, global: Retention) -> Retention {
    match &ns.spec.retention {
        None => global,
        Some(r) => Retention {
            max_age: r
                .max_age_seconds
                .map(Duration::from_secs)
                .or(global.max_age),
            max_bytes: r.max_bytes.or(global.max_bytes),
        },
    }
}

/// The first offset of the partition something still needs (`u64::MAX`: nothing).
///
/// # Errors
/// The state store cannot be read.
pub fn floor(app: &App, ns: &NamespaceRuntime, partition: u32) -> Result<u64, StateError> {
    let name = &ns.spec.name;
    let mut floor = u64::MAX;
    if app.delivery.config.enabled {
        floor = floor.min(app.state.committed_offset(name, partition)?);
        if let Some(o) = app.state.min_parked_offset(name, partition)? {
            floor = floor.min(o);
        }
    }
    for m in &ns.mirrors {
        floor = floor.min(app.state.mirror_offset(name, partition, &m.name)?);
    }
    Ok(floor)
}

#[derive(Debug, thiserror::Error)]
enum PartitionError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] wald_storage::Error),
}

fn partition(
    app: &App,
    ns: &NamespaceRuntime,
    p: u32,
    log: &wald_storage::Log,
    policy: Retention,
    per_pass: usize,
    report: &mut PassReport,
) -> Result<(), PartitionError> {
    let floor = floor(app, ns, p)?;
    let r = log.apply_retention_with(policy, floor, per_pass)?;
    if r.segments_deleted == 0 {
        return Ok(());
    }
    let name = ns.spec.name.as_str();
    report.segments_deleted += r.segments_deleted;
    report.bytes_freed += r.bytes_freed;
    app.metrics
        .retention_segments
        .with_label_values(&[name])
        .inc_by(r.segments_deleted as u64);
    app.metrics
        .retention_bytes
        .with_label_values(&[name])
        .inc_by(r.bytes_freed);
    tracing::info!(
        namespace = name,
        partition = p,
        segments = r.segments_deleted,
        bytes = r.bytes_freed,
        first_offset = r.first_offset,
        floor,
        "retention deleted segments"
    );
    while app
        .state
        .forget_below(name, p, r.first_offset, FORGET_CHUNK)?
        >= FORGET_CHUNK as u64
    {}
    app.state.forget_delivery_below(name, p, r.first_offset)?;
    Ok(())
}

/// Purges expired idempotency keys: one sweep, in chunks.
fn purge_keys(app: &App, now: u64) -> u64 {
    let mut purged = 0;
    for _ in 0..PURGE_CALLS {
        match app.state.purge_expired(now, PURGE_CHUNK) {
            Ok(r) => {
                purged += r.deleted;
                if r.sweep_done {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "purging expired idempotency keys failed; retried next pass");
                break;
            }
        }
    }
    app.metrics.idempotency_purged.inc_by(purged);
    purged
}

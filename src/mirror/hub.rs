//! What mirrors share with the rest of the service: per (namespace, partition, mirror) a
//! watch of the committed offset (the `ack = "mirror"` writes wait on it) and the status
//! shown by the API; per (namespace, partition) an append counter that wakes the consumers.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use super::config::{self, AckMode};
use super::metrics::MirrorMetrics;
use crate::app::NamespaceRuntime;
use crate::model::namespace::{BackendType, DurabilityMode};
use crate::model::write::DurableStatus;
use crate::state::StateStore;

/// (namespace, partition, mirror name).
type SlotKey = (String, u32, String);

/// The live state of one mirror of one partition.
#[derive(Debug)]
pub struct Slot {
    /// The committed offset: every record below it is settled.
    pub committed: watch::Sender<u64>,
    /// What the status shows.
    pub status: Mutex<SlotStatus>,
}

/// What the mirrors that must confirm a write said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// The durability to answer.
    pub durable: DurableStatus,
    /// The mirror that refused one of the records for good (then `durable` is `false`).
    pub refused_by: Option<String>,
}

/// The status of one mirror of one partition.
#[derive(Debug, Clone, Default)]
pub struct SlotStatus {
    /// The backend.
    pub backend: &'static str,
    /// Records between the committed offset and the log's end.
    pub lag_records: u64,
    /// Age of the oldest unsettled record, seconds.
    pub lag_seconds: u64,
    /// False while the backend fails (or the mirror cannot run).
    pub healthy: bool,
    /// The last error, and when (ms since the epoch).
    pub last_error: Option<(String, u64)>,
    /// Errors since start.
    pub errors: u64,
    /// Records refused for good since start, and the last refusal's reason.
    pub refused: u64,
    /// The last refusal.
    pub last_refusal: Option<String>,
}

/// What is shared.
#[derive(Debug)]
pub struct Hub {
    /// Metrics.
    pub metrics: MirrorMetrics,
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    appends: Mutex<HashMap<(String, u32), watch::Sender<u64>>>,
}

/// A mirror's status in `GET /api/v1/wal/namespace/{ns}/status` and readiness details.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// The mirror's name.
    pub name: String,
    /// Its backend.
    pub backend: String,
    /// `fsync` or `mirror` (writes wait for this mirror).
    pub ack: String,
    /// True when every partition's mirror is working.
    pub healthy: bool,
    /// Records not yet settled, all partitions.
    pub lag_records: u64,
    /// Age of the oldest unsettled record, seconds (largest over the partitions).
    pub lag_seconds: u64,
    /// Errors since start.
    pub errors: u64,
    /// Records refused for good (skipped) since start.
    pub refused: u64,
    /// The most recent error of any partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The most recent refusal's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
    /// Per partition: the committed offset.
    pub committed_offsets: Vec<u64>,
}

impl Hub {
    /// A hub registering its metrics in `registry`.
    ///
    /// # Errors
    /// A metrics registration conflict (a bug).
    pub fn new(registry: &crate::metrics::Metrics) -> Result<Self, prometheus::Error> {
        Ok(Self {
            metrics: MirrorMetrics::new(registry)?,
            slots: Mutex::new(HashMap::new()),
            appends: Mutex::new(HashMap::new()),
        })
    }

    /// The slot of a mirror of a partition (created on first use, committed offset 0 until
    /// its consumer starts).
    #[must_use]
    pub fn slot(&self, ns: &str, partition: u32, mirror: &str) -> Arc<Slot> {
        let mut map = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry((ns.to_owned(), partition, mirror.to_owned()))
                .or_insert_with(|| {
                    Arc::new(Slot {
                        committed: watch::Sender::new(0),
                        status: Mutex::new(SlotStatus::default()),
                    })
                }),
        )
    }

    /// Forgets a namespace's slots and append counters (the namespace was removed).
    pub fn forget(&self, ns: &str) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| k.0 != ns);
        self.appends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| k.0 != ns);
    }

    /// A receiver that changes whenever records are appended to the partition.
    #[must_use]
    pub fn append_watch(&self, ns: &str, partition: u32) -> watch::Receiver<u64> {
        let mut map = self.appends.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((ns.to_owned(), partition))
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// Tells the partition's mirror consumers that records were appended.
    pub fn appended(&self, ns: &str, partition: u32) {
        let map = self.appends.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(&(ns.to_owned(), partition)) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The durability to answer for the records `offsets` of a partition, already answered
    /// `durable` by the log: unchanged unless one of the namespace's mirrors has
    /// `ack = "mirror"` (or the namespace's durability is Kafka); then `unknown` unless every
    /// such mirror confirmed the records before `deadline`, and `false` — with the mirror
    /// named — when one of them refused a record for good (its committed offset passes a
    /// refused record too, so passing is not confirming).
    pub async fn confirm(
        &self,
        state: &StateStore,
        ns: &NamespaceRuntime,
        partition: u32,
        offsets: Range<u64>,
        durable: DurableStatus,
        deadline: Instant,
    ) -> Confirmation {
        let plain = |durable| Confirmation {
            durable,
            refused_by: None,
        };
        let specs = &ns.mirrors;
        if specs.is_empty() || offsets.is_empty() {
            return plain(durable);
        }
        // With Kafka as the primary durability, its mirrors confirm every write.
        let kafka_primary = ns.spec.durability == DurabilityMode::Kafka;
        let mut kafka_confirmed = false;
        for s in specs.iter().filter(|s| {
            s.ack == AckMode::Mirror || (kafka_primary && s.backend == BackendType::Kafka)
        }) {
            let mut rx = self
                .slot(&ns.spec.name, partition, &s.name)
                .committed
                .subscribe();
            let last = offsets.end - 1;
            let passed = matches!(
                tokio::time::timeout_at(
                    tokio::time::Instant::from_std(deadline),
                    rx.wait_for(|c| *c > last),
                )
                .await,
                Ok(Ok(_))
            );
            if !passed {
                return plain(DurableStatus::Unknown);
            }
            // The refusals are stored before the committed offset is announced.
            match state.refused_any(
                &ns.spec.name,
                partition,
                offsets.start,
                offsets.end,
                &s.name,
            ) {
                Ok(false) => {}
                Ok(true) => {
                    return Confirmation {
                        durable: DurableStatus::False,
                        refused_by: Some(s.name.clone()),
                    }
                }
                Err(e) => {
                    tracing::error!(namespace = %ns.spec.name, partition, mirror = %s.name, error = %e, "cannot tell whether a mirror refused a record; answering unknown");
                    return plain(DurableStatus::Unknown);
                }
            }
            kafka_confirmed |= s.backend == BackendType::Kafka;
        }
        if kafka_primary {
            return plain(if kafka_confirmed {
                DurableStatus::True
            } else {
                DurableStatus::Unknown
            });
        }
        plain(durable)
    }

    /// The status of a namespace's mirrors (`partitions` of them each).
    #[must_use]
    pub fn status(&self, ns: &NamespaceRuntime) -> Vec<MirrorStatus> {
        let specs = &ns.mirrors;
        let partitions = u32::try_from(ns.logs.len()).unwrap_or(u32::MAX);
        specs
            .iter()
            .map(|s| {
                let mut m = MirrorStatus {
                    name: s.name.clone(),
                    backend: config::backend_name(s.backend).to_owned(),
                    ack: match s.ack {
                        AckMode::Fsync => "fsync",
                        AckMode::Mirror => "mirror",
                    }
                    .to_owned(),
                    healthy: true,
                    lag_records: 0,
                    lag_seconds: 0,
                    errors: 0,
                    refused: 0,
                    last_error: None,
                    last_refusal: None,
                    committed_offsets: Vec::new(),
                };
                let mut last_error_at = 0;
                for (p, log) in (0..partitions).zip(&ns.logs) {
                    let slot = self.slot(&ns.spec.name, p, &s.name);
                    let committed = *slot.committed.borrow();
                    m.committed_offsets.push(committed);
                    let st = slot
                        .status
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    m.healthy &= st.healthy;
                    // Live: the gauges are refreshed only every few hundred ms.
                    m.lag_records += log.stats().next_offset.saturating_sub(committed);
                    m.lag_seconds = m.lag_seconds.max(st.lag_seconds);
                    m.errors += st.errors;
                    m.refused += st.refused;
                    if let Some((e, at)) = st.last_error {
                        if at >= last_error_at {
                            last_error_at = at;
                            // Served by readiness and namespace status: no credentials.
                            m.last_error = Some(crate::redact::text(&e).into_owned());
                        }
                    }
                    if st.last_refusal.is_some() {
                        m.last_refusal = st.last_refusal;
                    }
                }
                m
            })
            .collect()
    }
}

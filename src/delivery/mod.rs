//! Delivery: consumers read each namespace's partition logs and hand every message to its
//! targets, at least once, in order per partition key, with retries by policy, delays on a
//! timer wheel, a dead-letter queue and replay (DESIGN.md, "Delivery", "Timer wheel";
//! docs/DELIVERY.md).
//!
//! | module | role |
//! |---|---|
//! | [`backoff`] | the retry policy's wait before attempt *n* (pure functions) |
//! | [`wheel`] | the hierarchical timer wheel holding the near horizon of due times |
//! | [`target`] | the target adapters behind one trait (HTTP, Redis, PostgreSQL, memory, file) |
//! | [`plan`] | a message's targets, policy, DLQ choice and TTL |
//! | [`record`] | a message's delivery record (attempts, outcomes) |
//! | [`consumer`] | a partition's consumer: window, ordering, retries, commit |
//! | [`runner`] | one attempt; a message delivered until final (replays) |
//! | [`dlq`] | the dead-letter queue: entries, listing, replay, discard |
//! | [`tasks`] | background tasks (bulk replays) and their progress |
//! | [`supervisor`] | starts and stops consumers as namespaces come and go |

pub mod backoff;
pub mod consumer;
pub mod dlq;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod runner;
pub mod supervisor;
pub mod target;
pub mod tasks;
pub mod wheel;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::DeliveryConfig;
use crate::model::target::TargetConfig;
use crate::model::validate::FieldError;
use target::{MemoryCache, Target, TargetContext, TargetError};

/// What delivery shares across consumers, replays and the API.
#[derive(Debug)]
pub struct Hub {
    /// `[delivery]`.
    pub config: DeliveryConfig,
    /// Shared connections and the in-memory cache.
    pub ctx: TargetContext,
    /// Adapters by their target's JSON (targets with one config share one adapter).
    adapters: Mutex<HashMap<[u8; 32], Arc<dyn Target>>>,
    /// Metrics.
    pub metrics: metrics::DeliveryMetrics,
    /// Background tasks.
    pub tasks: tasks::Tasks,
    /// Wake-ups of partition consumers after appends.
    wakes: Mutex<HashMap<(String, u32), Arc<Notify>>>,
}

/// Most adapters cached. Keys are SHA-256 digests of the target's JSON (whose `config` is at
/// most [`crate::model::target::MAX_TARGET_CONFIG_BYTES`]); targets are the namespaces'
/// (ad-hoc ones only where a namespace accepts them), so the set is small; past the bound the
/// cache starts over.
const MAX_ADAPTERS: usize = 1_024;

/// The cache key of a target: the digest of its JSON.
fn adapter_key(cfg: &TargetConfig) -> Result<[u8; 32], serde_json::Error> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(cfg)?;
    Ok(sha2::Sha256::digest(&json).into())
}

impl Hub {
    /// A hub registering its metrics in `registry`.
    ///
    /// # Errors
    /// A metrics registration conflict (a bug).
    pub fn new(
        config: DeliveryConfig,
        egress: &crate::config::EgressConfig,
        registry: &crate::metrics::Metrics,
    ) -> Result<Self, prometheus::Error> {
        let timeout = Duration::from_millis(config.target_timeout_ms);
        let egress = crate::egress::EgressPolicy::new(egress);
        if let Some(root) = &config.file_root {
            if let Err(e) = std::fs::create_dir_all(root) {
                tracing::error!(root = %root.display(), error = %e, "cannot create delivery.file_root; file targets will fail");
            }
        }
        Ok(Self {
            ctx: TargetContext::new(timeout, Arc::new(MemoryCache::default()), egress)
                .with_file_root(config.file_root.clone()),
            config,
            adapters: Mutex::new(HashMap::new()),
            metrics: metrics::DeliveryMetrics::new(registry)?,
            tasks: tasks::Tasks::default(),
            wakes: Mutex::new(HashMap::new()),
        })
    }

    /// The adapter of a target (built once per distinct config).
    ///
    /// # Errors
    /// The target's config cannot work (the fields named).
    pub fn adapter(&self, cfg: &TargetConfig) -> Result<Arc<dyn Target>, String> {
        let key = adapter_key(cfg).map_err(|e| e.to_string())?;
        let mut map = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = map.get(&key) {
            return Ok(Arc::clone(a));
        }
        let a = target::build(cfg, &self.ctx).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        if map.len() >= MAX_ADAPTERS {
            map.clear();
        }
        map.insert(key, Arc::clone(&a));
        Ok(a)
    }

    /// Adapters cached now (at most 1,024).
    #[must_use]
    pub fn cached_adapters(&self) -> usize {
        self.adapters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Checks that every target can be delivered to by this build (its adapter builds);
    /// errors are named `{path}[i].{field}` (e.g. `targetConfigs[0].config.url`).
    ///
    /// # Errors
    /// Every target's failing fields.
    pub fn check_targets(
        &self,
        path: &str,
        targets: &[TargetConfig],
    ) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            if let Err(e) = self.check_target(&format!("{path}[{i}]"), t) {
                errs.extend(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Checks that one target can be delivered to by this build; errors are named
    /// `{path}.{field}` (e.g. `payload.transactions[1].target.config.url`).
    ///
    /// # Errors
    /// The target's failing fields.
    pub fn check_target(&self, path: &str, t: &TargetConfig) -> Result<(), Vec<FieldError>> {
        // A config already built (and cached) is known good: no build on the write path.
        let key = adapter_key(t).map_err(|e| vec![FieldError::new(path, e.to_string())])?;
        let cached = self
            .adapters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&key);
        if cached {
            return Ok(());
        }
        match target::build(t, &self.ctx) {
            Ok(a) => {
                let mut map = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= MAX_ADAPTERS {
                    map.clear();
                }
                map.insert(key, a);
                Ok(())
            }
            Err(e) => Err(e
                .into_iter()
                .map(|f| FieldError {
                    field: format!("{path}.{}", f.field),
                    message: f.message,
                })
                .collect()),
        }
    }

    /// The wake-up of a partition's consumer.
    #[must_use]
    pub fn wake_handle(&self, ns: &str, partition: u32) -> Arc<Notify> {
        let mut map = self.wakes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry((ns.to_owned(), partition)).or_default())
    }

    /// Tells a partition's consumer that records were appended.
    pub fn appended(&self, ns: &str, partition: u32) {
        let map = self.wakes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get(&(ns.to_owned(), partition)) {
            n.notify_one();
        }
    }

    /// Counts an attempt's result.
    pub fn count_attempt(&self, ns: &str, target: &str, err: Option<&TargetError>) {
        let result = match err {
            None => "ok",
            Some(e) if e.retryable => "retryable",
            Some(_) => "permanent",
        };
        self.metrics
            .attempts
            .with_label_values(&[ns, target, result])
            .inc();
    }

    /// Counts a target's final outcome.
    pub fn count_outcome(&self, ns: &str, target: &str, outcome: &str) {
        self.metrics
            .outcomes
            .with_label_values(&[ns, target, outcome])
            .inc();
    }
}

//! The running service: configuration, the engine's logs, the state store, the namespace
//! registry, access control and metrics — shared by every request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use wald_storage::{Durability, Log};

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::model::namespace::{DurabilityMode, Namespace, RoutingStrategy};
use crate::state::StateStore;

/// Default idempotency window (24 h).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// Starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state store.
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
    /// A partition log.
    #[error("storage: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// A namespace in the registry or the config is invalid.
    #[error("namespace {name}: {reason}")]
    Namespace {
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The configuration.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// Metrics registration.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The data directory.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The per-(namespace, idempotency key) locks of writes in flight.
pub type KeyLocks = std::collections::HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// A namespace as the write path needs it: its settings and its open logs.
#[derive(Debug)]
pub struct NamespaceRuntime {
    /// The settings.
    pub spec: Namespace,
    /// One log per partition.
    pub logs: Vec<Arc<Log>>,
    /// Its mirrors, read from `spec` once at install (the write path consults them on every
    /// write with `ack = "mirror"` or Kafka durability).
    pub mirrors: Vec<crate::mirror::config::MirrorSpec>,
    /// Round-robin cursor.
    pub rr: AtomicU64,
    /// Writes accepted (for status and metrics).
    pub writes: AtomicU64,
    /// Write errors answered.
    pub errors: AtomicU64,
}

impl NamespaceRuntime {
    /// The engine durability of this namespace.
    #[must_use]
    pub fn durability(&self, batch_delay: Duration) -> Durability {
        match self.spec.durability {
            DurabilityMode::Sync => Durability::Sync,
            // Kafka: its confirmation makes the write durable; the local copy is synced soon.
            DurabilityMode::Batch | DurabilityMode::Kafka => Durability::Batch {
                max_delay: batch_delay,
            },
            DurabilityMode::None => Durability::None,
        }
    }

    /// The partition for a write: by the shard strategy (hash of the partition key,
    /// round-robin, random).
    #[must_use]
    pub fn choose_partition(&self, partition_key: Option<&str>) -> u32 {
        let n = u32::try_from(self.logs.len()).unwrap_or(1).max(1);
        if n == 1 {
            return 0;
        }
        match (self.spec.shard_config.strategy, partition_key) {
            (RoutingStrategy::Hash, Some(k)) => (fnv1a(k.as_bytes()) % u64::from(n)) as u32,
            (RoutingStrategy::Random, _) => rand::random_range(0..n),
            // Hash without a key spreads like round-robin.
            (RoutingStrategy::RoundRobin | RoutingStrategy::Hash, _) => {
                (self.rr.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32
            }
        }
    }
}

fn invalid_namespace(name: &str, errs: &[crate::model::validate::FieldError]) -> StartError {
    let reason = errs
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    StartError::Namespace {
        name: name.to_owned(),
        reason,
    }
}

/// FNV-1a, 64 bit: stable across versions and platforms (a partition mapping must not change).
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Everything requests share.
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub config: Config,
    /// The API keys: configured and created at run time.
    pub keys: crate::keys::ApiKeys,
    /// The partition logs.
    pub engine: Engine,
    /// Indexes derived from the logs, and the namespace registry.
    pub state: StateStore,
    /// Namespaces by name.
    pub namespaces: RwLock<BTreeMap<String, Arc<NamespaceRuntime>>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Delivery: target adapters, metrics, tasks, consumer wake-ups.
    pub delivery: crate::delivery::Hub,
    /// Mirrors: committed-offset watches, status, metrics.
    pub mirrors: crate::mirror::Hub,
    /// Multi-partition transactions: executors, metrics.
    pub txns: crate::txn::TxnHub,
    /// Background tasks' panics (readiness, restart backoff).
    pub supervision: crate::supervise::Supervision,
    /// Rate limits.
    pub limiter: crate::http::ratelimit::RateLimiter,
    /// Failed authentications per client address (`[auth] failed_auth_per_minute`).
    pub auth_failures: crate::http::throttle::AuthThrottle,
    /// When the service started.
    pub started: Instant,
    /// Set once shutdown began: new writes are refused.
    pub shutting_down: AtomicBool,
    /// Writes in flight per (namespace, idempotency key): concurrent requests with one key are
    /// serialised, so only the first appends and the others answer as its duplicates.
    pub in_flight_keys: std::sync::Mutex<KeyLocks>,
    /// Serialises namespace creation, replacement and deletion: a create or a replace never
    /// interleaves with a delete of the same name (which closes and removes its logs).
    pub ns_admin: tokio::sync::Mutex<()>,
}

impl App {
    /// Opens the state store and every namespace's logs (from the registry, then the
    /// namespaces declared in the config), bringing the state store up to date with each log.
    ///
    /// # Errors
    /// A namespace or log that cannot be opened, or the state store.
    pub fn start(config: Config) -> Result<Arc<Self>, StartError> {
        Self::start_with(config, Arc::new(wald_storage::io::StdFs))
    }

    /// [`App::start`] with the logs on another file system (fault injection in tests).
    ///
    /// # Errors
    /// As [`App::start`].
    pub fn start_with(
        config: Config,
        fs: Arc<dyn wald_storage::io::Vfs>,
    ) -> Result<Arc<Self>, StartError> {
        let data = config.server.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|source| StartError::DataDir {
            path: data.clone(),
            source,
        })?;
        let state = StateStore::open(data.join("state"))?;
        let engine = Engine::with_fs(&data, config.storage.log_config(), fs);
        let keys = crate::keys::ApiKeys::load(&config.auth, &state)?;
        let metrics = Metrics::new()?;
        let delivery =
            crate::delivery::Hub::new(config.delivery.clone(), &config.egress, &metrics)?;
        let mirrors = crate::mirror::Hub::new(&metrics)?;
        let txns = crate::txn::TxnHub::new(&metrics)?;
        let supervision = crate::supervise::Supervision::new(&metrics)?;
        let app = Arc::new(Self {
            keys,
            engine,
            state,
            namespaces: RwLock::new(BTreeMap::new()),
            metrics,
            delivery,
            mirrors,
            txns,
            supervision,
            limiter: crate::http::ratelimit::RateLimiter::default(),
            auth_failures: crate::http::throttle::AuthThrottle::default(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            in_flight_keys: std::sync::Mutex::new(std::collections::HashMap::new()),
            ns_admin: tokio::sync::Mutex::new(()),
            config,
        });
        // The registry first (created through the admin API), then the config's declarations,
        // which win for the names they declare.
        let mut specs: BTreeMap<String, Namespace> = BTreeMap::new();
        for (name, bytes) in app.state.list_namespaces()? {
            let spec =
                Namespace::from_json(&bytes).map_err(|errs| invalid_namespace(&name, &errs))?;
            specs.insert(name, spec);
        }
        for mut spec in app.config.declared_namespaces::<Namespace>()? {
            spec.normalise();
            spec.validate()
                .map_err(|errs| invalid_namespace(&spec.name, &errs))?;
            specs.insert(spec.name.clone(), spec);
        }
        for spec in specs.into_values() {
            app.delivery
                .check_targets("targetConfigs", &spec.target_configs)
                .map_err(|errs| invalid_namespace(&spec.name, &errs))?;
            app.recover_from_kafka(&spec)?;
            app.install(spec)?;
        }
        Ok(app)
    }

    /// At startup, for a namespace whose durability is Kafka (and that this instance owns):
    /// appends to its logs what its topic holds past their ends (`mirror::kafka_recover`).
    ///
    /// # Errors
    /// A log that cannot be opened, or the recovery failed (Kafka unreachable, a gap): the
    /// namespace must not serve with acknowledged records missing.
    pub fn recover_from_kafka(&self, spec: &Namespace) -> Result<(), StartError> {
        if spec.durability != DurabilityMode::Kafka || !self.config.cluster.owns(&spec.name) {
            return Ok(());
        }
        #[cfg(feature = "mirror-kafka")]
        {
            let partitions = spec.shard_config.partition_count.max(1);
            self.engine.open_namespace(&spec.name, partitions)?;
            let logs = self.engine.logs(&spec.name).unwrap_or_default();
            let started = Instant::now();
            let egress = crate::egress::EgressPolicy::new(&self.config.egress);
            let n = crate::mirror::kafka_recover::recover(spec, &logs, &egress).map_err(|e| {
                StartError::Namespace {
                    name: spec.name.clone(),
                    reason: format!("recovering from Kafka (durability \"kafka\"): {e}"),
                }
            })?;
            tracing::info!(namespace = %spec.name, records = n, secs = started.elapsed().as_secs_f64(),
                "checked the local log against Kafka");
        }
        Ok(())
    }

    /// Opens a namespace's logs, catches the state store up with them, and makes the
    /// namespace visible to requests (replacing an earlier version of it).
    ///
    /// # Errors
    /// A log that cannot be opened, or the state store.
    pub fn install(&self, spec: Namespace) -> Result<Arc<NamespaceRuntime>, StartError> {
        let name = spec.name.clone();
        let partitions = spec.shard_config.partition_count.max(1);
        self.engine.open_namespace(&name, partitions)?;
        let logs = self.engine.logs(&name).unwrap_or_default();
        for log in &logs {
            // Once per log (a namespace re-installed keeps its logs and their observer).
            let _ = log.set_observer(Arc::new(crate::metrics::CommitMetrics::new(
                &self.metrics,
                &name,
            )));
        }
        for (p, log) in logs.iter().enumerate() {
            let p = u32::try_from(p).unwrap_or(u32::MAX);
            let started = Instant::now();
            let done = self.state.catch_up(&name, p, log, |_, _| {})?;
            if done.records > 0 || done.rewound.is_some() {
                tracing::info!(namespace = %name, partition = p, from = done.from, to = done.to, records = done.records,
                    rewound = ?done.rewound, secs = started.elapsed().as_secs_f64(), "state store caught up with the log");
            }
            // A log that lost its unsynced tail reuses the lost offsets: the consumer, delivery
            // records, parked entries and mirrors must not stay ahead of it.
            let rewound = self
                .state
                .rewind_delivery(&name, p, log.stats().next_offset)?;
            if rewound.any() {
                tracing::warn!(namespace = %name, partition = p, log_next = log.stats().next_offset, ?rewound,
                    "the log ends before the consumer's or a mirror's committed offset (records lost after a power failure?): rewound them to the log's end");
            }
        }
        let mirrors = crate::mirror::config::specs(&spec).unwrap_or_default();
        let rt = Arc::new(NamespaceRuntime {
            spec,
            logs,
            mirrors,
            rr: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::clone(&rt));
        Ok(rt)
    }

    /// Holds the (namespace, key) lock until the returned guard drops.
    pub async fn lock_key(self: &Arc<Self>, namespace: &str, key: &str) -> KeyGuard {
        let id = (namespace.to_owned(), key.to_owned());
        let m = {
            let mut map = self
                .in_flight_keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(id.clone()).or_default())
        };
        let guard = Arc::clone(&m).lock_owned().await;
        KeyGuard {
            app: Arc::clone(self),
            id,
            lock: m,
            guard: Some(guard),
        }
    }

    /// A namespace by (normalised) name.
    #[must_use]
    pub fn namespace(&self, name: &str) -> Option<Arc<NamespaceRuntime>> {
        self.namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every namespace.
    #[must_use]
    pub fn all_namespaces(&self) -> Vec<Arc<NamespaceRuntime>> {
        self.namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Removes a namespace from service (its logs close when the last request using them ends).
    pub fn uninstall(&self, name: &str) -> Option<Arc<NamespaceRuntime>> {
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
    }

    /// True when every log accepts writes and the state store is open.
    #[must_use]
    pub fn ready(&self) -> (bool, Vec<String>) {
        let mut problems = Vec::new();
        for (ns, p, log) in self.engine.all() {
            if let Some(cause) = log.poisoned() {
                problems.push(format!("namespace {ns} partition {p}: {cause}"));
            }
        }
        for (ns, dlq) in self.engine.open_dlqs() {
            if let Some(cause) = dlq.poisoned() {
                problems.push(format!("namespace {ns} dead-letter log: {cause}"));
            }
        }
        if let Err(e) = self.state.check() {
            problems.push(format!("state store: {e}"));
        }
        problems.extend(self.supervision.problems());
        if self.shutting_down.load(Ordering::Relaxed) {
            problems.push("shutting down".to_owned());
        }
        (problems.is_empty(), problems)
    }

    /// Copies the engine's counters into the metrics (called when `/metrics` is scraped).
    pub fn refresh_engine_metrics(&self) {
        let m = &self.metrics;
        for (ns, p, log) in self.engine.all() {
            let part = p.to_string();
            let labels = [ns.as_str(), &part];
            let c = log.counters();
            m.copy_engine_counters(
                &ns,
                &part,
                crate::metrics::EngineSeen {
                    records: c.records.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                    batches: c.batches.load(Ordering::Relaxed),
                    fsyncs: c.fsyncs.load(Ordering::Relaxed),
                    fsync_nanos: c.fsync_nanos.load(Ordering::Relaxed),
                    disk_full: c.disk_full.load(Ordering::Relaxed),
                },
            );
            let st = log.stats();
            m.segments
                .with_label_values(&labels)
                .set(i64::try_from(st.segments).unwrap_or(i64::MAX));
            m.poisoned
                .with_label_values(&labels)
                .set(i64::from(st.poisoned.is_some()));
        }
        let data = self.config.server.data_dir.display().to_string();
        if let Some(free) = wald_storage::io::Vfs::available_space(
            &wald_storage::io::StdFs,
            &self.config.server.data_dir,
        ) {
            m.disk_free
                .with_label_values(&[data.as_str()])
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
    }
}

/// The lock of one idempotency key; removes its map entry when no one else waits for it.
#[derive(Debug)]
pub struct KeyGuard {
    app: Arc<App>,
    id: (String, String),
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard = None;
        let mut map = self
            .app
            .in_flight_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map's Arc and ours: nobody else holds or waits for this key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.id);
        }
    }
}

//! The service's handle on the storage engine: one partition log per namespace partition,
//! in `{data_dir}/logs/{namespace}/{partition:05}`. The service never opens a data file
//! itself: every byte goes through `wald-storage`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use wald_storage::io::{StdFs, Vfs};
use wald_storage::{Log, LogConfig, RecoveryReport};

/// Opening or removing a namespace's logs failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine refused to open a partition log.
    #[error("namespace {namespace} partition {partition}: {source}")]
    Open {
        /// The namespace.
        namespace: String,
        /// The partition.
        partition: u32,
        /// The engine's error.
        #[source]
        source: wald_storage::Error,
    },
    /// Removing a namespace's directory failed.
    #[error("removing {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What opening a partition found.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The partition.
    pub partition: u32,
    /// The engine's recovery report.
    pub report: RecoveryReport,
}

/// The open partition logs of every namespace.
#[derive(Debug)]
pub struct Engine {
    root: PathBuf,
    config: LogConfig,
    fs: Arc<dyn Vfs>,
    logs: RwLock<HashMap<String, Vec<Arc<Log>>>>,
    /// Dead-letter queue logs, opened on first use.
    dlq: RwLock<HashMap<String, Arc<Log>>>,
}

impl Engine {
    /// An engine whose logs live under `{data_dir}/logs`.
    #[must_use]
    pub fn new(data_dir: &Path, config: LogConfig) -> Self {
        Self::with_fs(data_dir, config, Arc::new(StdFs))
    }

    /// The same on another file system (fault injection in tests).
    #[must_use]
    pub fn with_fs(data_dir: &Path, config: LogConfig, fs: Arc<dyn Vfs>) -> Self {
        Self {
            root: data_dir.join("logs"),
            config,
            fs,
            logs: RwLock::new(HashMap::new()),
            dlq: RwLock::new(HashMap::new()),
        }
    }

    /// The directory of a namespace's dead-letter queue log (beside the partitions:
    /// `logs/{namespace}/dlq`).
    #[must_use]
    pub fn dlq_dir(&self, namespace: &str) -> PathBuf {
        self.root.join(namespace).join("dlq")
    }

    /// A namespace's dead-letter queue log, opened (created) on first use.
    ///
    /// # Errors
    /// The engine refuses to open it.
    pub fn dlq(&self, namespace: &str) -> Result<Arc<Log>, EngineError> {
        if let Some(l) = self
            .dlq
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
        {
            return Ok(Arc::clone(l));
        }
        let mut map = self.dlq.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = map.get(namespace) {
            return Ok(Arc::clone(l));
        }
        // A dead-letter log is small and rarely written: it grows as entries arrive (no
        // zero-filled segments), and takes entries up to a segment (a message plus its
        // attempts can outgrow the message limit).
        let mut config = self.config.clone();
        config.preallocate = wald_storage::Preallocate::None;
        let bigger =
            usize::try_from(config.segment_bytes.saturating_sub(1024)).unwrap_or(usize::MAX);
        let mut candidate = config.clone();
        candidate.max_record_bytes = bigger.max(config.max_record_bytes);
        if candidate.validate().is_ok() {
            config = candidate;
        }
        let log = Log::open_with(Arc::clone(&self.fs), self.dlq_dir(namespace), config).map_err(
            |source| EngineError::Open {
                namespace: format!("{namespace} (dead-letter queue)"),
                partition: 0,
                source,
            },
        )?;
        let log = Arc::new(log);
        map.insert(namespace.to_owned(), Arc::clone(&log));
        Ok(log)
    }

    /// The directory of one partition.
    #[must_use]
    pub fn partition_dir(&self, namespace: &str, partition: u32) -> PathBuf {
        self.root.join(namespace).join(format!("{partition:05}"))
    }

    /// Opens (creating as needed) `partitions` logs of a namespace; already open logs are
    /// kept. Returns what recovery found per newly opened partition.
    ///
    /// # Errors
    /// The first partition the engine refuses to open.
    pub fn open_namespace(
        &self,
        namespace: &str,
        partitions: u32,
    ) -> Result<Vec<Opened>, EngineError> {
        let mut opened = Vec::new();
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        let entry = logs.entry(namespace.to_owned()).or_default();
        for p in u32::try_from(entry.len()).unwrap_or(u32::MAX)..partitions {
            let dir = self.partition_dir(namespace, p);
            let log = Log::open_with(Arc::clone(&self.fs), &dir, self.config.clone()).map_err(
                |source| EngineError::Open {
                    namespace: namespace.to_owned(),
                    partition: p,
                    source,
                },
            )?;
            let report = log.recovery_report().clone();
            if let Some(cut) = &report.tail_cut {
                tracing::warn!(
                    namespace,
                    partition = p,
                    position = cut.position,
                    offset = cut.offset,
                    bytes = cut.bytes_cut,
                    "recovery cut a torn tail"
                );
            }
            entry.push(Arc::new(log));
            opened.push(Opened {
                partition: p,
                report,
            });
        }
        Ok(opened)
    }

    /// The logs of a namespace, by partition.
    #[must_use]
    pub fn logs(&self, namespace: &str) -> Option<Vec<Arc<Log>>> {
        self.logs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned()
    }

    /// One partition's log.
    #[must_use]
    pub fn log(&self, namespace: &str, partition: u32) -> Option<Arc<Log>> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        logs.get(namespace)?.get(partition as usize).cloned()
    }

    /// The dead-letter logs opened so far, by namespace.
    #[must_use]
    pub fn open_dlqs(&self) -> Vec<(String, Arc<Log>)> {
        self.dlq
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(n, l)| (n.clone(), Arc::clone(l)))
            .collect()
    }

    /// Every open log, with its namespace and partition.
    #[must_use]
    pub fn all(&self) -> Vec<(String, u32, Arc<Log>)> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (ns, v) in logs.iter() {
            for (p, l) in v.iter().enumerate() {
                out.push((
                    ns.clone(),
                    u32::try_from(p).unwrap_or(u32::MAX),
                    Arc::clone(l),
                ));
            }
        }
        out
    }

    /// Closes a namespace's logs and deletes their directories.
    ///
    /// # Errors
    /// Removing the directory failed.
    pub fn remove_namespace(&self, namespace: &str) -> Result<(), EngineError> {
        let removed = self
            .logs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
        let dlq = self
            .dlq
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
        // Dropping the last handle closes each log (drains, syncs, unlocks).
        drop(removed);
        drop(dlq);
        let dir = self.root.join(namespace);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(EngineError::Remove { path: dir, source }),
        }
    }

    /// Closes every log: drains queues and syncs. Errors are logged.
    pub fn close_all(&self) {
        let mut all =
            std::mem::take(&mut *self.logs.write().unwrap_or_else(PoisonError::into_inner));
        for (ns, log) in
            std::mem::take(&mut *self.dlq.write().unwrap_or_else(PoisonError::into_inner))
        {
            all.entry(format!("{ns} (dead-letter queue)"))
                .or_default()
                .push(log);
        }
        for (ns, logs) in all {
            for (p, log) in logs.into_iter().enumerate() {
                match Arc::try_unwrap(log) {
                    Ok(log) => {
                        if let Err(e) = log.close() {
                            tracing::error!(namespace = %ns, partition = p, error = %e, "closing the log failed");
                        }
                    }
                    // Still referenced by an in-flight request: it closes when that finishes.
                    Err(_) => {
                        tracing::debug!(namespace = %ns, partition = p, "log still in use at shutdown");
                    }
                }
            }
        }
    }
}

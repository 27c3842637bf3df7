//! Mirrors: copies of a namespace's partition logs in other systems (Redis Streams, Kafka,
//! SQS), fed from the native log, which stays the source
//! of truth (DESIGN.md, "Mirrors and scale-out"; docs/MIRRORS.md).
//!
//! | module | role |
//! |---|---|
//! | [`config`] | a namespace's mirrors from `backend`/`backendConfig` and `mirrors`, validated |
//! | [`hub`] | what the service shares: committed-offset watches, status, `ack = "mirror"` waits |
//! | [`consumer`] | one mirror of one partition: read, publish in batches, commit |
//! | [`supervisor`] | starts and stops consumers as namespaces come and go |
//! | [`metrics`] | lag and errors per mirror |
//! | `redis` | the Redis Streams backend (cargo feature `mirror-redis`) |
//! | `kafka` | the Kafka backend (cargo feature `mirror-kafka`) |
//! | `sqs` | the SQS backend (cargo feature `mirror-sqs`) |
//!
//! # Invariants
//!
//! - **One consumer per (namespace, partition, mirror)**, reading the partition log from the
//!   mirror's own committed offset (stored in the state store, `crate::state::mirror`).
//! - **The committed offset advances only over records the backend settled**: confirmed, or
//!   refused for good (a record the backend can never take, e.g. larger than its limit —
//!   counted, logged and shown in the status with its reason, then skipped so it never
//!   stalls the mirror). A crash re-publishes at most the batch in flight: at-least-once, in
//!   order per partition (a retried batch is published again from its first unsettled record).
//! - **A backend that is down never blocks intake**: the consumer keeps its batch and retries
//!   with capped exponential backoff; the log keeps growing; the mirror catches up when the
//!   backend returns. Only writes to a namespace whose mirror has `ack = "mirror"` wait for
//!   it, and only up to the request timeout (then they answer `durable: "unknown"`).

pub mod config;
pub mod consumer;
pub mod egress;
pub mod hub;
#[cfg(feature = "mirror-kafka")]
pub mod kafka;
#[cfg(feature = "mirror-kafka")]
pub mod kafka_recover;
pub mod metrics;
#[cfg(feature = "mirror-redis")]
pub mod redis;
#[cfg(feature = "mirror-sqs")]
pub mod sqs;
pub mod supervisor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::StoredMessage;
pub use config::{check_built, AckMode, MirrorSpec};
pub use hub::Hub;

/// A record of a partition, as mirrors publish it.
#[derive(Debug, Clone)]
pub struct MirrorRecord {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// Its offset in the partition log.
    pub offset: u64,
    /// Append time (ms since the epoch).
    pub timestamp_ms: u64,
    /// Due time (ms since the epoch; 0: at once).
    pub due_ms: u64,
    /// The partition key (may be empty).
    pub key: Vec<u8>,
    /// The message.
    pub message: StoredMessage,
}

/// A record a backend refused for good (it is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its offset.
    pub offset: u64,
    /// Its message id.
    pub message_id: String,
    /// Why.
    pub reason: String,
}

/// What a publish settled.
#[derive(Debug, Default)]
pub struct Published {
    /// How many records, from the start of the batch, are settled: each confirmed by the
    /// backend or listed in `refused`.
    pub settled: usize,
    /// Records among the settled ones the backend refused for good.
    pub refused: Vec<Refusal>,
    /// Why the records after `settled` were not settled (they are retried). `Some` whenever
    /// `settled` is less than the batch's length.
    pub error: Option<MirrorError>,
}

impl Published {
    /// Every record of a batch of `n` confirmed.
    #[must_use]
    pub fn all(n: usize) -> Self {
        Self {
            settled: n,
            ..Self::default()
        }
    }

    /// Nothing settled, because of `error`.
    #[must_use]
    pub fn failed(error: MirrorError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// The future of one publish.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Published> + Send + 'a>>;

/// A mirror backend. Implementations hold their connections, reconnect after failures, and
/// never panic on the backend's answer.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Publishes a batch of records of one partition, in offset order: the backend must
    /// keep them in that order. Enforces no timeout of its own (the consumer does).
    fn publish<'a>(&'a self, batch: &'a [MirrorRecord]) -> PublishFuture<'a>;
}

/// Errors of mirrors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    /// The backend cannot be reached or failed as a whole: retried with backoff.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// What happened.
        message: String,
    },
    /// The backend did not confirm in time: retried with backoff.
    #[error("{backend} did not confirm within {ms} ms")]
    Timeout {
        /// The backend.
        backend: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// The mirror cannot run in this build or with these settings: retried slowly (a later
    /// namespace update may fix it).
    #[error("mirror `{name}` cannot run: {reason}")]
    Config {
        /// The mirror.
        name: String,
        /// Why.
        reason: String,
    },
    /// The state store failed (reading or storing the committed offset).
    #[error("state store: {0}")]
    State(String),
    /// The partition log cannot be read.
    #[error("reading the log: {0}")]
    Read(String),
}

impl MirrorError {
    /// The metric label of this kind of error.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::Config { .. } => "config",
            Self::State(_) => "state",
            Self::Read(_) => "read",
        }
    }
}

/// The backend of a mirror, connected lazily.
///
/// # Errors
/// [`MirrorError::Config`] when this build lacks the backend's feature or the settings are
/// unusable.
pub fn build(spec: &MirrorSpec, namespace: &str) -> Result<Arc<dyn Mirror>, MirrorError> {
    match &spec.settings {
        #[cfg(feature = "mirror-redis")]
        config::Settings::Redis(s) => Ok(Arc::new(redis::RedisStreams::new(s, namespace)?)),
        #[cfg(feature = "mirror-kafka")]
        config::Settings::Kafka(s) => Ok(Arc::new(kafka::KafkaMirror::new(s, namespace)?)),
        #[cfg(feature = "mirror-sqs")]
        config::Settings::Sqs(s) => Ok(Arc::new(sqs::SqsMirror::new(s, namespace)?)),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = namespace;
            let feature = config::feature_of(spec.backend).map_or("?", |f| f.0);
            Err(MirrorError::Config {
                name: spec.name.clone(),
                reason: format!(
                    "this build has no `{feature}` feature (`{}` mirrors are not available)",
                    config::backend_name(spec.backend)
                ),
            })
        }
    }
}

//! The namespace entity (the seeds' `NamespaceEntity`), as JSON: every field but `name` has a
//! default, and [`Namespace::validate`] names every bad field.
//!
//! A PUT replaces the whole entity; there is no partial update.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::target::{check_targets, TargetConfig};
use super::validate::{index, parse_json, Errors, FieldError};
use super::write::check_retry_bounds;

/// The largest `maxMessageSize`: 16 MiB.
pub const MAX_MESSAGE_SIZE_LIMIT: u64 = 16 * 1024 * 1024;
/// The longest `messageTtlSeconds`: 30 days.
pub const MAX_MESSAGE_TTL_SECS: u64 = 30 * 86_400;
/// The most partitions a namespace may have.
pub const MAX_PARTITIONS: u32 = 256;

/// Trims and lower-cases a namespace name (the seeds' transform).
#[must_use]
pub fn normalise_namespace_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Checks a normalised namespace name: 1 to 100 characters of `a-z 0-9 . _ -`, starting with
/// a letter or digit (so it is also a safe directory name).
pub fn check_namespace_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 100 {
        return Err(format!("must be 1 to 100 characters, got {n}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(format!(
            "may contain only a-z, 0-9, '.', '_' and '-', found {c:?}"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit".into());
    }
    Ok(())
}

/// Where a namespace is mirrored (the seeds' `BackendType`, plus `native`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendType {
    /// The native log only (the default).
    #[default]
    Native,
    /// Kafka.
    Kafka,
    /// Amazon SQS.
    Sqs,
    /// Redis Streams.
    RedisStreams,
    /// Apache Pulsar.
    Pulsar,
}

/// A mirror of the namespace's log, besides its `backend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorEntry {
    /// Unique within the namespace, 1 to 64 characters of `a-z 0-9 _ -`; keys the mirror's
    /// committed offsets and metrics. Default: the backend's name (`redis_streams`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The backend (`kafka`, `sqs` or `redis_streams`). Required.
    pub backend: BackendType,
    /// The backend's settings (as the namespace's `backendConfig`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = backend_config_schema)]
    pub backend_config: Option<Map<String, Value>>,
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// After the fsync that covers the message (`durable: "true"`). The default.
    #[default]
    Sync,
    /// After the write; synced within the configured batch interval (`durable: "false"`).
    Batch,
    /// After the write; synced whenever the OS does (`durable: "false"`).
    None,
    /// After the namespace's Kafka mirror confirmed the message (acks=all), with no local
    /// fsync on the path (`durable: "true"`; `"unknown"` if Kafka did not confirm within the
    /// request timeout). The local log is synced within the batch interval, and rebuilt from
    /// the topic at startup when it lost its unsynced tail (docs/OPERATIONS.md, "Kafka as
    /// primary"). Needs a Kafka mirror (`backend: "kafka"` or a `mirrors` entry).
    Kafka,
}

/// How the wait between delivery attempts grows (the seeds' `BackoffStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffStrategy {
    /// initial × 2^(attempt−1), capped at the maximum (the default).
    #[default]
    Exponential,
    /// initial × attempt, capped at the maximum.
    Linear,
    /// Always the initial delay.
    Constant,
    /// Decided by the target adapter (treated as exponential otherwise).
    Custom,
}

/// A namespace's retry policy (used when a message has none of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Maximum delivery retries, 0 to 10. Default: 3.
    #[schema(default = 3, minimum = 0, maximum = 10)]
    pub max_attempts: u32,
    /// Backoff strategy. Default: exponential.
    pub backoff_strategy: BackoffStrategy,
    /// First wait in milliseconds, 100 to 60000. Default: 1000.
    #[schema(default = 1000, minimum = 100, maximum = 60000)]
    pub initial_delay_ms: u64,
    /// Longest wait in milliseconds, 1000 to 300000, not below `initialDelayMs`.
    /// Default: 30000.
    #[schema(default = 30000, minimum = 1000, maximum = 300_000)]
    pub max_delay_ms: u64,
    /// Random jitter in milliseconds, 0 to 5000. Default: 500.
    #[schema(default = 500, minimum = 0, maximum = 5000)]
    pub jitter_ms: u64,
    /// Error classes that are retried (e.g. `timeout`, `5xx`, `429`). Default: none (the
    /// adapters' own classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable_error_codes: Option<Vec<String>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_strategy: BackoffStrategy::Exponential,
            initial_delay_ms: 1000,
            max_delay_ms: 30_000,
            jitter_ms: 500,
            retryable_error_codes: None,
        }
    }
}

/// The namespace's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DlqConfig {
    /// Whether failed messages go to the DLQ (a message's `enableDLQ` overrides it).
    /// Default: true.
    #[schema(default = true)]
    pub enabled: bool,
    /// Topic name of the DLQ on a mirror backend. Default: `{topicName}-dlq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Attempts of a DLQ replay before it is given up, 0 to 100. Default: 3.
    #[schema(default = 3)]
    pub max_retries: u32,
    /// Wait between DLQ replay attempts in milliseconds, 0 to 3600000. Default: 1000.
    #[schema(default = 1000)]
    pub retry_backoff_ms: u64,
    /// Log a warning and count a metric for every DLQ arrival. Default: true.
    #[serde(rename = "alertOnDLQ", alias = "alertOnDlq")]
    #[schema(default = true)]
    pub alert_on_dlq: bool,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic_name: None,
            max_retries: 3,
            retry_backoff_ms: 1000,
            alert_on_dlq: true,
        }
    }
}

/// How long a namespace's partition logs keep what every consumer is done with
/// (docs/OPERATIONS.md, "Retention"). Each limit unset falls back to `[storage]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete a partition's sealed segments whose newest record is older than this many
    /// seconds, 60 to 315360000 (10 years). `ttlSeconds` is accepted as its name too (the
    /// product documents' spelling).
    #[serde(alias = "ttlSeconds", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub max_age_seconds: Option<u64>,
    /// Delete a partition's oldest sealed segments while the partition is larger than this
    /// many bytes, at least 1048576 (1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1_048_576)]
    pub max_bytes: Option<u64>,
}

/// Multi-partition transactions of a namespace (docs/TRANSACTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// Seconds a transaction has to complete before what has not completed fails (and what
    /// has is compensated), 1 to 86400; a write's `lifecycle.transactionTimeout` overrides
    /// it. Default: 300.
    #[schema(default = 300, minimum = 1, maximum = 86_400)]
    pub timeout_seconds: u64,
    /// Refuse, at intake, a mutation that has neither an explicit `compensation` nor an
    /// inverse wald can derive. Default: false (such a transaction fails at failure time).
    #[schema(default = false)]
    pub require_compensation: bool,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 300,
            require_compensation: false,
        }
    }
}

/// How a message's partition is chosen (the seeds' `RoutingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// A hash of the partition key (the default); messages without one are spread.
    #[default]
    Hash,
    /// Partitions in turn.
    RoundRobin,
    /// A random partition.
    Random,
}

/// Partitioning of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ShardConfig {
    /// How a partition is chosen. Default: hash.
    pub strategy: RoutingStrategy,
    /// Number of partitions, 1 to 256. Default: 1.
    #[schema(default = 1, minimum = 1, maximum = 256)]
    pub partition_count: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            strategy: RoutingStrategy::Hash,
            partition_count: 1,
        }
    }
}

/// Per API key and namespace request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute (at least 1). Default: 6000.
    #[schema(default = 6000)]
    pub requests_per_minute: u32,
    /// Requests per hour (at least 1). Default: 360000.
    #[schema(default = 360_000)]
    pub requests_per_hour: u32,
    /// Requests allowed at once above the steady rate (at least 1). Default: 100.
    #[schema(default = 100)]
    pub burst_limit: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: 6000,
            requests_per_hour: 360_000,
            burst_limit: 100,
        }
    }
}

/// Who may write to a namespace, and how fast.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AccessControl {
    /// Ids of the API keys (as named in the service configuration, never the secrets) allowed
    /// to use this namespace, each 1 to 100 characters without spaces. Default: empty.
    pub allowed_api_keys: Vec<String>,
    /// Request limits per key. Default: none — the server's `[rate_limits]` when it enables
    /// them, else no limit. A `rateLimits` object gives each field its default when left
    /// out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
}

/// A namespace: its log, durability, partitioning, delivery settings and access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// The name: trimmed and lower-cased, then 1 to 100 characters of `a-z 0-9 . _ -`,
    /// starting with a letter or digit. Required.
    #[schema(example = "user-cache-replication", min_length = 1, max_length = 100)]
    pub name: String,
    /// Free text, at most 1000 characters. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Mirror backend. Default: native (none).
    #[serde(default)]
    pub backend: BackendType,
    /// Topic (or queue, or stream) name on the mirror backend, 1 to 200 characters of
    /// `A-Z a-z 0-9 . _ -`. Default: the namespace's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// When writes are acknowledged. Default: sync.
    #[serde(default)]
    pub durability: DurabilityMode,
    /// Retry policy for deliveries. Default: 3 attempts, exponential, 1000 to 30000 ms,
    /// 500 ms jitter.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Dead-letter queue. Default: enabled, 3 replay retries, 1000 ms backoff, alerting on.
    #[serde(default)]
    pub dlq_config: DlqConfig,
    /// Partitioning. Default: hash over 1 partition.
    #[serde(default)]
    pub shard_config: ShardConfig,
    /// Where messages without their own `target` are delivered (at most 100), and the only
    /// targets a message may name (by `identifier`). Default: none.
    #[serde(default)]
    pub target_configs: Vec<TargetConfig>,
    /// Whether a message may bring its own target object instead of naming one of
    /// `targetConfigs` — only `webhook` and `http_service` targets, always under the
    /// server's `[egress]` policy (docs/SECURITY.md). Default: false.
    #[serde(default)]
    pub ad_hoc_targets: bool,
    /// Multi-partition transactions. Default: 300 s timeout, compensation not required.
    #[serde(default)]
    pub transaction_config: TransactionConfig,
    /// Settings of the mirror backend (checked by the backend). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = backend_config_schema)]
    pub backend_config: Option<Map<String, Value>>,
    /// Further mirrors besides `backend` (at most 8), each with its own name, backend and
    /// `backendConfig` (docs/MIRRORS.md). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorEntry>,
    /// API keys allowed and rate limits. Default: none (no key is named here, and no rate
    /// limit applies unless the server's `[rate_limits]` enables one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControl>,
    /// Retention of the partition logs. Default: `[storage]`'s (by default, keep everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    /// Whether the namespace accepts writes. Default: true.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Largest payload in bytes, 1 to 16777216 (16 MiB). Default: 1048576 (1 MiB).
    #[serde(default = "default_max_message_size")]
    #[schema(default = 1_048_576, minimum = 1, maximum = 16_777_216)]
    pub max_message_size: u64,
    /// Time to live of a message in seconds, counted from its due time, 60 to 2592000
    /// (30 days). Default: 86400 (24 h).
    #[serde(default = "default_ttl")]
    #[schema(default = 86_400, minimum = 60, maximum = 2_592_000)]
    pub message_ttl_seconds: u64,
    /// When the namespace was created (RFC 3339; set by the server). Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-10-03T10:30:00.000Z")]
    pub created_at: Option<String>,
    /// When the namespace was last changed (RFC 3339; set by the server). Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-10-03T10:30:00.000Z")]
    pub updated_at: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_max_message_size() -> u64 {
    1_048_576
}

fn default_ttl() -> u64 {
    86_400
}

impl Namespace {
    /// A namespace with every default and the given name (not normalised).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            backend: BackendType::default(),
            topic_name: None,
            durability: DurabilityMode::default(),
            retry_policy: RetryPolicy::default(),
            dlq_config: DlqConfig::default(),
            shard_config: ShardConfig::default(),
            target_configs: Vec::new(),
            ad_hoc_targets: false,
            transaction_config: TransactionConfig::default(),
            backend_config: None,
            mirrors: Vec::new(),
            access_control: None,
            retention: None,
            enabled: true,
            max_message_size: default_max_message_size(),
            message_ttl_seconds: default_ttl(),
            created_at: None,
            updated_at: None,
        }
    }

    /// Parses, normalises and validates a namespace from a JSON body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut ns: Self = parse_json(bytes)?;
        ns.normalise();
        ns.validate()?;
        Ok(ns)
    }

    /// Trims and lower-cases the name, and fills `topicName` with it when absent.
    pub fn normalise(&mut self) {
        self.name = normalise_namespace_name(&self.name);
        if self.topic_name.is_none() {
            self.topic_name = Some(self.name.clone());
        }
    }

    /// The mirror topic name (`topicName`, else the name).
    #[must_use]
    pub fn topic_name(&self) -> &str {
        self.topic_name.as_deref().unwrap_or(&self.name)
    }

    /// The namespace's own rate limits (`accessControl.rateLimits`), if it sets them.
    #[must_use]
    pub fn rate_limits(&self) -> Option<RateLimits> {
        self.access_control
            .as_ref()
            .and_then(|a| a.rate_limits.clone())
    }

    /// `durability` (Kafka needs a Kafka mirror) and `transactionConfig`.
    fn check_durability(&self, errs: &mut Errors) {
        if self.durability == DurabilityMode::Kafka
            && self.backend != BackendType::Kafka
            && !self.mirrors.iter().any(|m| m.backend == BackendType::Kafka)
        {
            errs.push(
                "durability",
                "`kafka` needs a Kafka mirror to confirm writes: set `backend` to \"kafka\" (with backendConfig.bootstrapServers) or add a `mirrors` entry with backend \"kafka\"",
            );
        }
        errs.range(
            "transactionConfig.timeoutSeconds",
            self.transaction_config.timeout_seconds,
            1,
            86_400,
        );
    }

    /// Checks every field; reports every bad one, named by its JSON path.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Errors::new();
        if let Err(m) = check_namespace_name(&self.name) {
            errs.push("name", m);
        }
        if let Some(d) = &self.description {
            errs.chars("description", d, 0, 1000);
        }
        if let Some(t) = &self.topic_name {
            check_topic("topicName", t, &mut errs);
        }
        self.check_durability(&mut errs);
        let rp = &self.retry_policy;
        check_retry_bounds(
            "retryPolicy",
            Some(rp.max_attempts),
            Some(rp.initial_delay_ms),
            Some(rp.max_delay_ms),
            Some(rp.jitter_ms),
            &mut errs,
        );
        for (k, code) in rp.retryable_error_codes.iter().flatten().enumerate() {
            errs.chars(index("retryPolicy.retryableErrorCodes", k), code, 1, 100);
        }
        let dlq = &self.dlq_config;
        if let Some(t) = &dlq.topic_name {
            check_topic("dlqConfig.topicName", t, &mut errs);
        }
        errs.range("dlqConfig.maxRetries", dlq.max_retries, 0, 100);
        errs.range(
            "dlqConfig.retryBackoffMs",
            dlq.retry_backoff_ms,
            0,
            3_600_000,
        );
        errs.range(
            "shardConfig.partitionCount",
            self.shard_config.partition_count,
            1,
            MAX_PARTITIONS,
        );
        if self.target_configs.len() > 100 {
            errs.push(
                "targetConfigs",
                format!("at most 100 targets, got {}", self.target_configs.len()),
            );
        }
        check_targets("targetConfigs", &self.target_configs, &mut errs);
        if let Some(r) = &self.retention {
            if let Some(age) = r.max_age_seconds {
                errs.range("retention.maxAgeSeconds", age, 60, 315_360_000);
            }
            if let Some(bytes) = r.max_bytes {
                errs.range("retention.maxBytes", bytes, 1_048_576, u64::MAX);
            }
        }
        errs.extend(crate::mirror::config::specs(self).err().unwrap_or_default());
        if let Some(ac) = &self.access_control {
            for (k, key) in ac.allowed_api_keys.iter().enumerate() {
                let f = index("accessControl.allowedApiKeys", k);
                if key.chars().any(char::is_whitespace) {
                    errs.push(f, "must not contain spaces");
                } else {
                    errs.chars(f, key, 1, 100);
                }
            }
            if let Some(rl) = &ac.rate_limits {
                errs.range(
                    "accessControl.rateLimits.requestsPerMinute",
                    rl.requests_per_minute,
                    1,
                    u32::MAX,
                );
                errs.range(
                    "accessControl.rateLimits.requestsPerHour",
                    rl.requests_per_hour,
                    1,
                    u32::MAX,
                );
                errs.range(
                    "accessControl.rateLimits.burstLimit",
                    rl.burst_limit,
                    1,
                    u32::MAX,
                );
            }
        }
        errs.range(
            "maxMessageSize",
            self.max_message_size,
            1,
            MAX_MESSAGE_SIZE_LIMIT,
        );
        errs.range(
            "messageTtlSeconds",
            self.message_ttl_seconds,
            60,
            MAX_MESSAGE_TTL_SECS,
        );
        for (f, v) in [
            ("createdAt", &self.created_at),
            ("updatedAt", &self.updated_at),
        ] {
            if let Some(v) = v {
                if super::time::parse_rfc3339_ms(v).is_none() {
                    errs.push(f, format!("must be an RFC 3339 timestamp, got `{v}`"));
                }
            }
        }
        errs.into_result(())
    }
}

fn check_topic(field: &str, t: &str, errs: &mut Errors) {
    if t.is_empty() || t.len() > 200 {
        errs.push(
            field,
            format!("must be 1 to 200 characters, got {}", t.chars().count()),
        );
    } else if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        errs.push(
            field,
            format!("may contain only A-Z, a-z, 0-9, '.', '_' and '-', found {c:?}"),
        );
    }
}

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;

/// The schema of a mirror's `backendConfig`: the backend's typed settings, plus `ack`.
fn backend_config_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::Ref;
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("RedisSettings"))
        .item(Ref::from_schema_name("KafkaSettings"))
        .item(Ref::from_schema_name("SqsSettings"))
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "The backend's settings: `RedisSettings` for `redis_streams`, `KafkaSettings` for \
             `kafka`, `SqsSettings` for `sqs`; each may also hold `ack`: `\"fsync\"` (default: \
             the write answers after the fsync) or `\"mirror\"` (after the mirror's \
             confirmation too; docs/MIRRORS.md). Default: none.",
        ))
        .build()
        .into()
}

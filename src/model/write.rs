//! `POST /api/v1/wal/write`: the seeds' `WriteToLogDto` with its validation, and the answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::namespace::{
    check_namespace_name, normalise_namespace_name, BackoffStrategy, RetryPolicy,
};
use super::target::{check_tags, TargetConfig};
use super::validate::{check_depth, join, text_depth, value_depth, Errors, FieldError};

/// The seeds' maximum delay: 24 hours.
pub const DEFAULT_MAX_DELAY_SECS: u64 = 86_400;
/// The largest maximum delay the configuration may set: 30 days.
pub const MAX_CONFIGURABLE_DELAY_SECS: u64 = 30 * 86_400;
/// The most targets one message may name.
pub const MAX_TARGETS_PER_MESSAGE: usize = 20;

/// Limits on a write that come from the service configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// The longest `delay × delayUnit` accepted, in seconds. Default: 86400 (24 h); at most
    /// [`MAX_CONFIGURABLE_DELAY_SECS`].
    pub max_delay_secs: u64,
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            max_delay_secs: DEFAULT_MAX_DELAY_SECS,
        }
    }
}

impl WriteLimits {
    /// Limits with the given maximum delay, refused above 30 days.
    pub fn new(max_delay_secs: u64) -> Result<Self, String> {
        if max_delay_secs > MAX_CONFIGURABLE_DELAY_SECS {
            return Err(format!(
                "the maximum delay may be at most {MAX_CONFIGURABLE_DELAY_SECS} s (30 days), got {max_delay_secs}"
            ));
        }
        Ok(Self { max_delay_secs })
    }
}

/// The unit of `lifecycle.delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DelayUnit {
    /// Seconds (the default).
    #[default]
    Seconds,
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
    /// Days.
    Days,
}

impl DelayUnit {
    /// The unit's JSON name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
            Self::Days => "days",
        }
    }

    /// Seconds in one unit.
    #[must_use]
    pub fn seconds(self) -> u64 {
        match self {
            Self::Seconds => 1,
            Self::Minutes => 60,
            Self::Hours => 3600,
            Self::Days => 86_400,
        }
    }
}

/// A message's own retry policy (the seeds' `RetryPolicyDto`); unset fields fall back to the
/// namespace's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyDto {
    /// Maximum delivery retries, 0 to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 3, minimum = 0, maximum = 10)]
    pub max_attempts: Option<u32>,
    /// How the wait grows between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_strategy: Option<BackoffStrategy>,
    /// First wait in milliseconds, 100 to 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 1000, minimum = 100, maximum = 60000)]
    pub initial_delay_ms: Option<u64>,
    /// Longest wait in milliseconds, 1000 to 300000, not below `initialDelayMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 30000, minimum = 1000, maximum = 300_000)]
    pub max_delay_ms: Option<u64>,
    /// Random jitter added to each wait, 0 to 5000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 500, minimum = 0, maximum = 5000)]
    pub jitter_ms: Option<u64>,
}

impl RetryPolicyDto {
    /// Checks the bounds; errors named under `path`.
    pub fn check(&self, path: &str, errs: &mut Errors) {
        check_retry_bounds(
            path,
            self.max_attempts,
            self.initial_delay_ms,
            self.max_delay_ms,
            self.jitter_ms,
            errs,
        );
    }

    /// This policy over `base` (the namespace's): each field set here wins. When the result's
    /// `maxDelayMs` would be below its `initialDelayMs`, it is raised to it.
    #[must_use]
    pub fn resolve(&self, base: &RetryPolicy) -> RetryPolicy {
        let initial_delay_ms = self.initial_delay_ms.unwrap_or(base.initial_delay_ms);
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_strategy: self.backoff_strategy.unwrap_or(base.backoff_strategy),
            initial_delay_ms,
            max_delay_ms: self
                .max_delay_ms
                .unwrap_or(base.max_delay_ms)
                .max(initial_delay_ms),
            jitter_ms: self.jitter_ms.unwrap_or(base.jitter_ms),
            retryable_error_codes: base.retryable_error_codes.clone(),
        }
    }
}

/// The seeds' retry bounds, shared by messages and namespaces.
pub(crate) fn check_retry_bounds(
    path: &str,
    max_attempts: Option<u32>,
    initial_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
    jitter_ms: Option<u64>,
    errs: &mut Errors,
) {
    if let Some(v) = max_attempts {
        errs.range(join(path, "maxAttempts"), v, 0, 10);
    }
    let initial_ok = initial_delay_ms.is_none_or(|v| (100..=60_000).contains(&v));
    let max_ok = max_delay_ms.is_none_or(|v| (1000..=300_000).contains(&v));
    if let Some(v) = initial_delay_ms {
        errs.range(join(path, "initialDelayMs"), v, 100, 60_000);
    }
    if let Some(v) = max_delay_ms {
        errs.range(join(path, "maxDelayMs"), v, 1000, 300_000);
    }
    // Compared only when both are in range, so one mistake gives one error.
    if let (Some(i), Some(m), true, true) = (initial_delay_ms, max_delay_ms, initial_ok, max_ok) {
        if m < i {
            errs.push(
                join(path, "maxDelayMs"),
                format!("must not be below initialDelayMs ({i}), got {m}"),
            );
        }
    }
    if let Some(v) = jitter_ms {
        errs.range(join(path, "jitterMs"), v, 0, 5000);
    }
}

/// How a message is processed (the seeds' `LifecycleConfigDto`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Hold the message this long before its first delivery, in `delayUnit`s; at most the
    /// configured maximum delay (default 86400 s). Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 300, minimum = 0)]
    pub delay: Option<u64>,
    /// Unit of `delay`. Default: seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_unit: Option<DelayUnit>,
    /// Time to live in seconds, 60 to 604800, counted from the due time; an expired message is
    /// never delivered. Default: the namespace's `messageTtlSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 86400, minimum = 60, maximum = 604_800)]
    pub ttl: Option<u64>,
    /// Retry policy for this message. Default: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicyDto>,
    /// Send the message to the dead-letter queue when delivery fails for good.
    /// Default: the namespace's `dlqConfig.enabled`.
    #[serde(
        rename = "enableDLQ",
        alias = "enableDlq",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_dlq: Option<bool>,
    /// Store the message compressed. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// For a transaction (`payload.transactions`): seconds it has to complete, 1 to 86400.
    /// Default: the namespace's `transactionConfig.timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 60, minimum = 1, maximum = 86_400)]
    pub transaction_timeout: Option<u64>,
}

/// One target a message names: a target of its namespace by `identifier` (a string), or a
/// target object — accepted only where the namespace sets `adHocTargets` and only for the
/// `webhook` and `http_service` types ([`super::target_ref::resolve`]).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TargetRef {
    /// The identifier of one of the namespace's `targetConfigs` (every region of it).
    Named(String),
    /// An ad-hoc target object.
    Inline(Box<TargetConfig>),
}

/// One target, or a list of them (each an identifier or a target object).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TargetSpec {
    /// A single target.
    One(TargetRef),
    /// Several targets.
    Many(Vec<TargetRef>),
}

impl TargetRef {
    /// Levels of objects and arrays in the reference as JSON (an identifier is 0).
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Self::Named(_) => 0,
            // The target object, its `config` object and what that holds; `tags` is a
            // list of strings (one level under the object, as `config` is).
            Self::Inline(t) => 2 + t.config.values().map(value_depth).max().unwrap_or(0),
        }
    }
}

impl TargetSpec {
    /// Levels of objects and arrays in the spec as the client sent it (a list counts one).
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Self::One(r) => r.depth(),
            Self::Many(v) => 1 + v.iter().map(TargetRef::depth).max().unwrap_or(0),
        }
    }

    /// The targets as a list.
    #[must_use]
    pub fn into_vec(self) -> Vec<TargetRef> {
        match self {
            Self::One(t) => vec![t],
            Self::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for TargetRef {
    /// A string is an identifier, an object a target; errors keep their path.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::MapAccessDeserializer;
        use serde::de::{MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a target identifier (string) or a target object")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetRef, E> {
                Ok(TargetRef::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetRef, A::Error> {
                TargetConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(|t| TargetRef::Inline(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for TargetSpec {
    /// A string or an object is one target, an array a list; errors keep their path
    /// (`target[1].type`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a target identifier, a target object, or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec::One(TargetRef::Named(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetSpec, A::Error> {
                TargetConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(|t| TargetSpec::One(TargetRef::Inline(Box::new(t))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TargetSpec, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(TargetSpec::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// The body of `POST /api/v1/wal/write` (the seeds' `WriteToLogDto`). Unknown fields are
/// refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteToLogDto {
    /// The namespace; trimmed and lower-cased, then 1 to 100 characters of `a-z 0-9 . _ -`,
    /// starting with a letter or digit.
    #[schema(example = "user-cache-replication", min_length = 1, max_length = 100)]
    pub namespace: String,
    /// The message: a JSON object with at least one key, nested at most 64 levels deep
    /// (objects and arrays, itself counted). Stored and returned byte for byte.
    #[schema(value_type = Object, example = json!({"operation": "SET", "key": "user:123", "value": {"name": "John Doe"}}))]
    pub payload: Box<RawValue>,
    /// Where to deliver it: the identifier of one of the namespace's `targetConfigs`, or a
    /// list of them (at most 20); target objects only where the namespace sets
    /// `adHocTargets` (webhook and http_service only). Default: all the namespace's
    /// `targetConfigs`. Nested at most 64 levels deep (objects and arrays, itself counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Delay, TTL, retries and DLQ for this message. Default: the namespace's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleConfig>,
    /// Free-form string metadata, stored with the message. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Priority, 1 to 10 (higher is more urgent). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 5, minimum = 1, maximum = 10)]
    pub priority: Option<u8>,
    /// Tags, each 1 to 100 characters, at most 50. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 50)]
    pub tags: Option<Vec<String>>,
    /// Idempotency key, 1 to 200 characters (the `Idempotency-Key` header is the same).
    /// A key seen again within the window appends nothing. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub idempotency_key: Option<String>,
    /// Partition key, 1 to 255 bytes: messages with one key go to one partition (hash
    /// strategy) and are delivered in order. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
}

/// A write that passed validation, normalised.
#[derive(Debug, Clone)]
pub struct ValidWrite {
    /// The namespace, trimmed and lower-cased.
    pub namespace: String,
    /// The payload exactly as the client sent it.
    pub payload: Box<RawValue>,
    /// The targets the client named (`None`: the namespace's), not yet resolved against
    /// the namespace ([`super::target_ref::resolve`]).
    pub targets: Option<Vec<TargetRef>>,
    /// The lifecycle as the client sent it (for storage).
    pub lifecycle: Option<LifecycleConfig>,
    /// `delay × delayUnit` in milliseconds (0: deliver now).
    pub delay_ms: u64,
    /// `lifecycle.ttl` in seconds, if set.
    pub ttl_secs: Option<u64>,
    /// `lifecycle.retryPolicy`, if set.
    pub retry_policy: Option<RetryPolicyDto>,
    /// `lifecycle.enableDLQ`, if set.
    pub enable_dlq: Option<bool>,
    /// `lifecycle.compression` (default false).
    pub compression: bool,
    /// Client metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Priority 1..=10.
    pub priority: Option<u8>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The idempotency key from the body.
    pub idempotency_key: Option<String>,
    /// The partition key.
    pub partition_key: Option<String>,
}

impl ValidWrite {
    /// The targets as JSON, for [`crate::message::StoredMessage::target`].
    pub fn targets_json(&self) -> Result<Option<serde_json::Value>, serde_json::Error> {
        self.targets.as_ref().map(serde_json::to_value).transpose()
    }

    /// The lifecycle as JSON, for [`crate::message::StoredMessage::lifecycle`].
    pub fn lifecycle_json(&self) -> Result<Option<serde_json::Value>, serde_json::Error> {
        self.lifecycle
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
    }
}

/// Checks one target reference's own shape (what the namespace allows is checked when the
/// write is resolved against it).
fn check_ref(path: &str, t: &TargetRef, errs: &mut Errors) {
    match t {
        TargetRef::Named(id) => errs.chars(path, id, 1, 100),
        TargetRef::Inline(t) => t.check(path, errs),
    }
}

/// Checks a list of target references (`{path}[i]`); duplicate objects are found here,
/// duplicates through identifiers when the list is resolved against the namespace.
fn check_refs(path: &str, refs: &[TargetRef], errs: &mut Errors) {
    let mut seen = std::collections::HashSet::new();
    for (i, r) in refs.iter().enumerate() {
        let at = super::validate::index(path, i);
        check_ref(&at, r, errs);
        if let TargetRef::Inline(t) = r {
            if !seen.insert((t.identifier.as_str(), t.region.as_deref())) {
                errs.push(
                    join(&at, "identifier"),
                    format!("duplicate target `{}` in the same region", t.identifier),
                );
            }
        }
    }
}

/// Checks an idempotency key (body field or `Idempotency-Key` header): 1 to 200 characters.
pub fn check_idempotency_key(field: &str, key: &str, errs: &mut Errors) {
    errs.chars(field, key, 1, 200);
}

/// Checks that a payload is a JSON object with at least one key, nested at most
/// [`super::validate::MAX_JSON_DEPTH`] levels deep. The value was already validated as JSON
/// by the parser (which takes a payload at any depth: it is kept as raw text), so this looks
/// at its tokens only: no second parse.
pub fn check_payload(raw: &RawValue) -> Result<(), String> {
    let s = raw.get().trim_start();
    match s.strip_prefix('{') {
        None => Err("must be a JSON object".into()),
        Some(rest) if rest.trim_start().starts_with('}') => {
            Err("must have at least one key".into())
        }
        Some(_) => check_depth(text_depth(s)),
    }
}

impl WriteToLogDto {
    /// Checks every rule and reports every failing field at once; on success, the normalised
    /// write.
    pub fn validate(self, limits: &WriteLimits) -> Result<ValidWrite, Vec<FieldError>> {
        let mut errs = Errors::new();
        let namespace = normalise_namespace_name(&self.namespace);
        if let Err(m) = check_namespace_name(&namespace) {
            errs.push("namespace", m);
        }
        if let Err(m) = check_payload(&self.payload) {
            errs.push("payload", m);
        }
        let targets = self.target.map(|spec| {
            if let Err(m) = check_depth(spec.depth()) {
                errs.push("target", m);
            }
            match &spec {
                TargetSpec::One(t) => check_ref("target", t, &mut errs),
                TargetSpec::Many(v) if v.is_empty() => {
                    errs.push(
                        "target",
                        "must not be an empty list (omit it to use the namespace's targets)",
                    );
                }
                TargetSpec::Many(v) => {
                    if v.len() > MAX_TARGETS_PER_MESSAGE {
                        errs.push(
                            "target",
                            format!("at most {MAX_TARGETS_PER_MESSAGE} targets, got {}", v.len()),
                        );
                    }
                    check_refs("target", v, &mut errs);
                }
            }
            spec.into_vec()
        });
        let delay_ms = self
            .lifecycle
            .as_ref()
            .map_or(0, |l| check_lifecycle(l, *limits, &mut errs));
        if let Some(p) = self.priority {
            errs.range("priority", p, 1, 10);
        }
        if let Some(tags) = &self.tags {
            check_tags("tags", tags, &mut errs);
        }
        if let Some(k) = &self.idempotency_key {
            check_idempotency_key("idempotencyKey", k, &mut errs);
        }
        if let Some(k) = &self.partition_key {
            if k.is_empty() || k.len() > 255 {
                errs.push(
                    "partitionKey",
                    format!("must be 1 to 255 bytes, got {}", k.len()),
                );
            }
        }
        let l = self.lifecycle.as_ref();
        let valid = ValidWrite {
            namespace,
            payload: self.payload,
            targets,
            delay_ms,
            ttl_secs: l.and_then(|l| l.ttl),
            retry_policy: l.and_then(|l| l.retry_policy.clone()),
            enable_dlq: l.and_then(|l| l.enable_dlq),
            compression: l.and_then(|l| l.compression).unwrap_or(false),
            lifecycle: self.lifecycle,
            metadata: self.metadata,
            priority: self.priority,
            tags: self.tags,
            idempotency_key: self.idempotency_key,
            partition_key: self.partition_key,
        };
        errs.into_result(valid)
    }
}

/// Checks the lifecycle; returns the delay in milliseconds (0 when invalid).
fn check_lifecycle(l: &LifecycleConfig, limits: WriteLimits, errs: &mut Errors) -> u64 {
    let mut delay_ms = 0;
    if let Some(d) = l.delay {
        let unit = l.delay_unit.unwrap_or_default();
        match d.checked_mul(unit.seconds()) {
            Some(secs) if secs <= limits.max_delay_secs => delay_ms = secs.saturating_mul(1000),
            _ => errs.push(
                "lifecycle.delay",
                format!(
                    "{d} {} exceeds the maximum delay of {} seconds",
                    unit.as_str(),
                    limits.max_delay_secs
                ),
            ),
        }
    }
    if let Some(t) = l.ttl {
        errs.range("lifecycle.ttl", t, 60, 604_800);
    }
    if let Some(r) = &l.retry_policy {
        r.check("lifecycle.retryPolicy", errs);
    }
    if let Some(t) = l.transaction_timeout {
        errs.range("lifecycle.transactionTimeout", t, 1, 86_400);
    }
    delay_ms
}

/// Whether a write is durable when answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DurableStatus {
    /// Covered by an fsync (or the namespace's durable backend confirmed it).
    #[serde(rename = "true")]
    True,
    /// Accepted but not yet synced (durability `none` or `batch`).
    #[serde(rename = "false")]
    False,
    /// The outcome is not known (e.g. a mirror that must confirm did not answer in time).
    #[serde(rename = "unknown")]
    Unknown,
}

/// The 202 answer to a write (the seeds' `WriteToLogResponseDto` plus where it was stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteToLogResponse {
    /// `"true"` once the message is durable, `"false"` when accepted without an fsync,
    /// `"unknown"` when the outcome is not known.
    pub durable: DurableStatus,
    /// The message id (`wal_{ms}_{9 base-36 characters}`); for a duplicate, the first
    /// message's id.
    #[schema(example = "wal_1696291200000_abc123def")]
    pub message_id: String,
    /// The transaction id, for multi-partition transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "txn_1696291200000_xyz789")]
    pub transaction_id: Option<String>,
    /// A human-readable outcome.
    #[schema(example = "Message accepted for processing")]
    pub message: String,
    /// When the answer was made, RFC 3339 UTC with milliseconds.
    #[schema(example = "2025-10-03T10:30:00.000Z")]
    pub timestamp: String,
    /// The namespace (normalised).
    pub namespace: String,
    /// The partition the message was appended to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// True when the idempotency key was seen before: nothing was appended, and the first
    /// message's id, partition and offset are returned.
    pub duplicate: bool,
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;

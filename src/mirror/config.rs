//! A namespace's mirrors, read from its `backend` + `backendConfig` and its `mirrors` list,
//! with every bad field named.
//!
//! Every `backendConfig` may hold `ack`: `"fsync"` (the default: the write answers after the
//! native fsync; the mirror follows) or `"mirror"` (the write also waits for this mirror's
//! confirmation of the record, within the request timeout). The other keys belong to the
//! backend:
//!
//! | backend | keys |
//! |---|---|
//! | `redis_streams` | `url` (required, `redis://host:port[/db]`), `maxLen` (approximate `MAXLEN ~`, default 1000000, 0 = no trimming), `batchSize` (1–10000, default 100), `timeoutMs` (100–600000, default 5000), `maxRecordBytes` (default 536870912, Redis's `proto-max-bulk-len`) |
//! | `kafka` | `bootstrapServers` (required, `host:port,...`), `topic` (default the namespace's `topicName`), `batchSize` (default 100), `timeoutMs` (default 5000: librdkafka's `message.timeout.ms`), `maxRecordBytes` (default 1000000, at least 1000: librdkafka's `message.max.bytes`), `lingerMs` (0–1000, librdkafka's `linger.ms`; default 1 with `durability: "kafka"`, else 5) |
//! | `sqs` | `queueUrl`, or `queueName` (default the namespace's `topicName`; resolved with `GetQueueUrl`), `endpointUrl` (for SQS-compatible servers), `region` (default `us-east-1`), `accessKeyId` + `secretAccessKey` (default the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` environment), `batchSize` (1–10, default 10), `concurrency` (`SendMessageBatch` calls in flight, 1–64, default 8), `timeoutMs` (per call, default 5000), `maxRecordBytes` (default 262144, SQS's limit) |

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::namespace::{BackendType, Namespace};
use crate::model::validate::{from_map, from_value, index, Errors, FieldError};

/// The most mirrors a namespace may have.
pub const MAX_MIRRORS: usize = 8;

/// When a write to a mirrored namespace answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the native fsync only (the mirror follows asynchronously).
    #[default]
    Fsync,
    /// After the fsync and this mirror's confirmation ("unknown" when it did not confirm
    /// within the request timeout).
    Mirror,
}

/// Settings of a Redis Streams mirror.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Approximate stream length kept (`XADD ... MAXLEN ~ n`); 0: no trimming.
    #[serde(default = "default_max_len")]
    pub max_len: u64,
    /// Records per pipelined batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// How long a batch may take to be confirmed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Larger records (fields included) are refused for good, with the reason recorded.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
}

fn default_max_len() -> u64 {
    1_000_000
}
fn default_batch() -> usize {
    100
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_record_bytes() -> u64 {
    512 * 1024 * 1024
}

/// Settings of a Kafka mirror.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// The topic (filled with the namespace's `topicName` when absent).
    #[serde(default)]
    pub topic: Option<String>,
    /// Records per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// librdkafka's `message.timeout.ms`.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// librdkafka's `message.max.bytes`: larger records are refused for good.
    #[serde(default = "default_kafka_max_record_bytes")]
    pub max_record_bytes: u64,
    /// librdkafka's `linger.ms`: how long the producer waits to fill a batch (latency against
    /// throughput), 0 to 1000. Default: 1 for a namespace with `durability: "kafka"` (every
    /// write waits for it), else 5 (librdkafka's).
    #[serde(default)]
    pub linger_ms: Option<u64>,
}

fn default_kafka_max_record_bytes() -> u64 {
    1_000_000
}

/// Settings of an SQS mirror.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqsSettings {
    /// The queue's URL.
    #[serde(default)]
    pub queue_url: Option<String>,
    /// The queue's name, when no URL is given (filled with the namespace's `topicName`).
    #[serde(default)]
    pub queue_name: Option<String>,
    /// Endpoint override (an SQS-compatible server).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials (else from the environment).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static credentials (else from the environment).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Records per `SendMessageBatch` (SQS takes at most 10).
    #[serde(default = "default_sqs_batch")]
    pub batch_size: usize,
    /// `SendMessageBatch` calls in flight at once (a FIFO queue's group stays sequential).
    #[serde(default = "default_sqs_concurrency")]
    pub concurrency: usize,
    /// How long one `SendMessageBatch` call may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Larger records (body and attributes) are refused for good.
    #[serde(default = "default_sqs_max_record_bytes")]
    pub max_record_bytes: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_sqs_batch() -> usize {
    10
}
/// The default of an SQS mirror's `concurrency`.
pub const DEFAULT_SQS_CONCURRENCY: usize = 8;
/// The largest `concurrency` of an SQS mirror.
pub const MAX_SQS_CONCURRENCY: usize = 64;
fn default_sqs_concurrency() -> usize {
    DEFAULT_SQS_CONCURRENCY
}
fn default_sqs_max_record_bytes() -> u64 {
    256 * 1024
}

/// A backend's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Settings {
    /// Redis Streams.
    Redis(RedisSettings),
    /// Kafka.
    Kafka(KafkaSettings),
    /// SQS.
    Sqs(SqsSettings),
}

/// One mirror of a namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSpec {
    /// Unique within the namespace; keys the committed offsets and the metrics.
    pub name: String,
    /// The backend.
    pub backend: BackendType,
    /// The JSON path of its `backend` field (`backend` or `mirrors[i].backend`), for errors.
    pub field: String,
    /// When writes answer.
    pub ack: AckMode,
    /// The backend's settings.
    pub settings: Settings,
}

impl MirrorSpec {
    /// Records per publish (an SQS mirror's is `batchSize × concurrency`: that many
    /// `SendMessageBatch` calls in flight).
    #[must_use]
    pub fn batch_size(&self) -> usize {
        match &self.settings {
            Settings::Redis(r) => r.batch_size,
            Settings::Kafka(k) => k.batch_size,
            Settings::Sqs(s) => s.batch_size.clamp(1, 10) * s.concurrency.max(1),
        }
    }

    /// How long one batch may take.
    #[must_use]
    pub fn timeout(&self) -> std::time::Duration {
        let ms = match &self.settings {
            Settings::Redis(r) => r.timeout_ms,
            // librdkafka times the messages out itself; leave it room to answer first.
            Settings::Kafka(k) => k.timeout_ms + 2000,
            // Each call is bounded by `timeoutMs` in the mirror; a FIFO lane may make up to
            // `concurrency` calls one after another.
            Settings::Sqs(s) => s.timeout_ms.saturating_mul(s.concurrency.max(1) as u64) + 1000,
        };
        std::time::Duration::from_millis(ms)
    }
}

/// The backend's name as written in JSON (`redis_streams`).
#[must_use]
pub fn backend_name(b: BackendType) -> &'static str {
    match b {
        BackendType::Native => "native",
        BackendType::Kafka => "kafka",
        BackendType::Sqs => "sqs",
        BackendType::RedisStreams => "redis_streams",
        BackendType::Pulsar => "pulsar",
    }
}

/// The namespace's mirrors (none for `backend: native` without a `mirrors` list).
pub fn specs(ns: &Namespace) -> Result<Vec<MirrorSpec>, Vec<FieldError>> {
    let mut errs = Errors::new();
    let mut out = Vec::new();
    let empty = Map::new();
    if ns.backend != BackendType::Native {
        let cfg = ns.backend_config.as_ref().unwrap_or(&empty);
        if let Some(s) = spec(
            None,
            ns,
            ns.backend,
            cfg,
            ("backend", "backendConfig"),
            &mut errs,
        ) {
            out.push(s);
        }
    }
    if ns.mirrors.len() > MAX_MIRRORS {
        errs.push(
            "mirrors",
            format!("at most {MAX_MIRRORS} mirrors, got {}", ns.mirrors.len()),
        );
    }
    for (i, m) in ns.mirrors.iter().enumerate() {
        let base = index("mirrors", i);
        let cfg = m.backend_config.as_ref().unwrap_or(&empty);
        if m.backend == BackendType::Native {
            errs.push(
                format!("{base}.backend"),
                "`native` is the log itself, not a mirror: use kafka, sqs or redis_streams",
            );
            continue;
        }
        let (bf, cf) = (format!("{base}.backend"), format!("{base}.backendConfig"));
        if let Some(s) = spec(m.name.as_deref(), ns, m.backend, cfg, (&bf, &cf), &mut errs) {
            if out.iter().any(|o: &MirrorSpec| o.name == s.name) {
                errs.push(
                    format!("{base}.name"),
                    format!(
                        "a mirror named `{}` exists already in this namespace (names default to the backend's)",
                        s.name
                    ),
                );
            } else {
                out.push(s);
            }
        }
    }
    errs.into_result(out)
}

fn spec(
    name: Option<&str>,
    ns: &Namespace,
    backend: BackendType,
    cfg: &Map<String, Value>,
    (backend_field, cfg_field): (&str, &str),
    errs: &mut Errors,
) -> Option<MirrorSpec> {
    let name = name.unwrap_or(backend_name(backend)).to_owned();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        let f = backend_field.replace(".backend", ".name");
        errs.push(f, "must be 1 to 64 characters of a-z, 0-9, '_' and '-'");
        return None;
    }
    let mut cfg = cfg.clone();
    let ack = match cfg.remove("ack") {
        None => AckMode::Fsync,
        Some(v) => match from_value::<AckMode>(&v, &format!("{cfg_field}.ack")) {
            Ok(a) => a,
            Err(e) => {
                errs.extend([e]);
                return None;
            }
        },
    };
    let settings = match backend {
        BackendType::Native => return None,
        BackendType::Pulsar => {
            errs.push(
                backend_field,
                "`pulsar` has no mirror in wald: use kafka, sqs, redis_streams or native",
            );
            return None;
        }
        BackendType::Kafka => {
            let mut k: KafkaSettings = match from_map(&cfg, cfg_field) {
                Ok(k) => k,
                Err(e) => {
                    errs.extend([e]);
                    return None;
                }
            };
            check_kafka(&k, cfg_field, errs);
            k.topic.get_or_insert_with(|| ns.topic_name().to_owned());
            let primary = ns.durability == crate::model::namespace::DurabilityMode::Kafka;
            k.linger_ms.get_or_insert(if primary { 1 } else { 5 });
            Settings::Kafka(k)
        }
        BackendType::Sqs => {
            let mut s: SqsSettings = match from_map(&cfg, cfg_field) {
                Ok(s) => s,
                Err(e) => {
                    errs.extend([e]);
                    return None;
                }
            };
            check_sqs(&s, cfg_field, errs);
            if s.queue_url.is_none() {
                s.queue_name
                    .get_or_insert_with(|| ns.topic_name().to_owned());
            }
            Settings::Sqs(s)
        }
        BackendType::RedisStreams => {
            let r: RedisSettings = match from_map(&cfg, cfg_field) {
                Ok(r) => r,
                Err(e) => {
                    errs.extend([e]);
                    return None;
                }
            };
            check_redis(&r, cfg_field, errs);
            Settings::Redis(r)
        }
    };
    Some(MirrorSpec {
        name,
        backend,
        field: backend_field.to_owned(),
        ack,
        settings,
    })
}

fn check_redis(r: &RedisSettings, cfg_field: &str, errs: &mut Errors) {
    let valid_url = (r.url.starts_with("redis://") || r.url.starts_with("rediss://"))
        && ::redis::IntoConnectionInfo::into_connection_info(r.url.as_str()).is_ok();
    if !valid_url {
        errs.push(
            format!("{cfg_field}.url"),
            format!("must be a redis://host:port[/db] URL, got `{}`", r.url),
        );
    }
    if !(1..=10_000).contains(&r.batch_size) {
        errs.push(
            format!("{cfg_field}.batchSize"),
            format!("must be between 1 and 10000, got {}", r.batch_size),
        );
    }
    if !(100..=600_000).contains(&r.timeout_ms) {
        errs.push(
            format!("{cfg_field}.timeoutMs"),
            format!("must be between 100 and 600000, got {}", r.timeout_ms),
        );
    }
    if r.max_record_bytes == 0 {
        errs.push(format!("{cfg_field}.maxRecordBytes"), "must be at least 1");
    }
}

fn check_kafka(k: &KafkaSettings, cfg_field: &str, errs: &mut Errors) {
    if k.bootstrap_servers.trim().is_empty() {
        errs.push(
            format!("{cfg_field}.bootstrapServers"),
            "must name at least one host:port",
        );
    }
    if let Some(t) = &k.topic {
        let ok = !t.is_empty()
            && t.len() <= 249
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            errs.push(
                format!("{cfg_field}.topic"),
                "must be 1 to 249 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            );
        }
    }
    if !(1..=10_000).contains(&k.batch_size) {
        errs.push(
            format!("{cfg_field}.batchSize"),
            format!("must be between 1 and 10000, got {}", k.batch_size),
        );
    }
    if !(100..=600_000).contains(&k.timeout_ms) {
        errs.push(
            format!("{cfg_field}.timeoutMs"),
            format!("must be between 100 and 600000, got {}", k.timeout_ms),
        );
    }
    if let Some(ms @ 1001..) = k.linger_ms {
        errs.push(
            format!("{cfg_field}.lingerMs"),
            format!("must be between 0 and 1000, got {ms}"),
        );
    }
    if !(1000..=1_000_000_000).contains(&k.max_record_bytes) {
        errs.push(
            format!("{cfg_field}.maxRecordBytes"),
            format!(
                "must be between 1000 and 1000000000, got {}",
                k.max_record_bytes
            ),
        );
    }
}

fn check_sqs(s: &SqsSettings, cfg_field: &str, errs: &mut Errors) {
    for (key, v) in [("queueUrl", &s.queue_url), ("endpointUrl", &s.endpoint_url)] {
        if let Some(u) = v {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                errs.push(
                    format!("{cfg_field}.{key}"),
                    format!("must be an http(s) URL, got `{u}`"),
                );
            }
        }
    }
    if s.queue_url.is_some() && s.queue_name.is_some() {
        errs.push(
            format!("{cfg_field}.queueName"),
            "give queueUrl or queueName, not both",
        );
    }
    if s.access_key_id.is_some() != s.secret_access_key.is_some() {
        errs.push(
            format!("{cfg_field}.secretAccessKey"),
            "accessKeyId and secretAccessKey go together",
        );
    }
    if !(1..=10).contains(&s.batch_size) {
        errs.push(
            format!("{cfg_field}.batchSize"),
            format!(
                "must be between 1 and 10 (SQS's batch limit), got {}",
                s.batch_size
            ),
        );
    }
    if !(1..=MAX_SQS_CONCURRENCY).contains(&s.concurrency) {
        errs.push(
            format!("{cfg_field}.concurrency"),
            format!(
                "must be between 1 and {MAX_SQS_CONCURRENCY} (SendMessageBatch calls in flight), got {}",
                s.concurrency
            ),
        );
    }
    if !(100..=600_000).contains(&s.timeout_ms) {
        errs.push(
            format!("{cfg_field}.timeoutMs"),
            format!("must be between 100 and 600000, got {}", s.timeout_ms),
        );
    }
    if !(1..=1024 * 1024).contains(&s.max_record_bytes) {
        errs.push(
            format!("{cfg_field}.maxRecordBytes"),
            format!("must be between 1 and 1048576, got {}", s.max_record_bytes),
        );
    }
}

/// The cargo feature a backend needs, and whether this build has it.
#[must_use]
pub fn feature_of(backend: BackendType) -> Option<(&'static str, bool)> {
    match backend {
        BackendType::RedisStreams => Some(("mirror-redis", cfg!(feature = "mirror-redis"))),
        BackendType::Kafka => Some(("mirror-kafka", cfg!(feature = "mirror-kafka"))),
        BackendType::Sqs => Some(("mirror-sqs", cfg!(feature = "mirror-sqs"))),
        BackendType::Native | BackendType::Pulsar => None,
    }
}

/// Refuses mirrors this build cannot run (checked when a namespace is created or replaced;
/// a stored namespace that names one still starts, its mirror reporting the error).
pub fn check_built(ns: &Namespace) -> Result<(), Vec<FieldError>> {
    let specs = specs(ns)?;
    let mut errs = Errors::new();
    for s in &specs {
        if let Some((feature, false)) = feature_of(s.backend) {
            errs.push(
                s.field.clone(),
                format!(
                    "this build has no `{feature}` feature: `{}` mirrors are not available",
                    backend_name(s.backend)
                ),
            );
        }
    }
    errs.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(v: &Value) -> Result<Namespace, Vec<FieldError>> {
        Namespace::from_json(v.to_string().as_bytes())
    }

    fn fields(e: &[FieldError]) -> Vec<String> {
        e.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn redis_defaults_and_ack() {
        let n = ns(&json!({"name": "a", "backend": "redis_streams",
            "backendConfig": {"url": "redis://127.0.0.1:6379", "ack": "mirror"}}))
        .unwrap();
        let s = specs(&n).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "redis_streams");
        assert_eq!(s[0].ack, AckMode::Mirror);
        let Settings::Redis(r) = &s[0].settings else {
            panic!()
        };
        assert_eq!(
            (r.max_len, r.batch_size, r.timeout_ms),
            (1_000_000, 100, 5000)
        );
        assert!(specs(&ns(&json!({"name": "b"})).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                json!({"name": "x", "backend": "redis_streams"}),
                "backendConfig.url",
            ),
            (
                json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "http://h"}}),
                "backendConfig.url",
            ),
            (
                json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "redis://h", "maxLen": "big"}}),
                "backendConfig.maxLen",
            ),
            (
                json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "redis://h", "colour": 1}}),
                "backendConfig.colour",
            ),
            (
                json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "redis://h", "ack": "always"}}),
                "backendConfig.ack",
            ),
            (json!({"name": "x", "backend": "pulsar"}), "backend"),
            (
                json!({"name": "x", "mirrors": [{"backend": "native"}]}),
                "mirrors[0].backend",
            ),
            (
                json!({"name": "x", "mirrors": [{"backend": "redis_streams", "backendConfig": {"url": "redis://h", "batchSize": 0}}]}),
                "mirrors[0].backendConfig.batchSize",
            ),
            (
                json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "redis://h"},
                "mirrors": [{"backend": "redis_streams", "backendConfig": {"url": "redis://h"}}]}),
                "mirrors[0].name",
            ),
            (
                json!({"name": "x", "mirrors": [{"name": "Bad Name", "backend": "kafka"}]}),
                "mirrors[0].name",
            ),
            (
                json!({"name": "x", "backend": "kafka"}),
                "backendConfig.bootstrapServers",
            ),
            (
                json!({"name": "x", "backend": "sqs", "backendConfig": {"batchSize": 11}}),
                "backendConfig.batchSize",
            ),
            (
                json!({"name": "x", "backend": "sqs", "backendConfig": {"queueUrl": "q"}}),
                "backendConfig.queueUrl",
            ),
            (
                json!({"name": "x", "backend": "kafka", "backendConfig": {"bootstrapServers": "h:1", "maxRecordBytes": 10}}),
                "backendConfig.maxRecordBytes",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(fields(&ns(&v).unwrap_err()), [field], "{v}");
        }
    }

    #[test]
    fn sqs_concurrency_defaults_and_bounds() {
        let sqs = |extra: Value| {
            let mut cfg = json!({"queueUrl": "http://127.0.0.1:1/q"});
            for (k, v) in extra.as_object().into_iter().flatten() {
                cfg[k] = v.clone();
            }
            ns(&json!({"name": "x", "backend": "sqs", "backendConfig": cfg}))
        };
        let s = specs(&sqs(json!({})).unwrap()).unwrap();
        let Settings::Sqs(q) = &s[0].settings else {
            panic!()
        };
        assert_eq!((q.batch_size, q.concurrency), (10, DEFAULT_SQS_CONCURRENCY));
        // A publish hands over one batch per call in flight.
        assert_eq!(s[0].batch_size(), 10 * DEFAULT_SQS_CONCURRENCY);
        let s = specs(&sqs(json!({"batchSize": 4, "concurrency": 1})).unwrap()).unwrap();
        assert_eq!(s[0].batch_size(), 4);
        let s = specs(&sqs(json!({"concurrency": MAX_SQS_CONCURRENCY})).unwrap()).unwrap();
        assert_eq!(s[0].batch_size(), 10 * MAX_SQS_CONCURRENCY);
        for bad in [
            json!(0),
            json!(MAX_SQS_CONCURRENCY + 1),
            json!(-1),
            json!("8"),
        ] {
            let e = sqs(json!({ "concurrency": bad })).unwrap_err();
            assert_eq!(fields(&e), ["backendConfig.concurrency"], "{bad}");
        }
        let e = sqs(json!({"concurrency": 0})).unwrap_err();
        assert!(
            e[0].message.contains("between 1 and 64"),
            "{}",
            e[0].message
        );
        let e = ns(&json!({"name": "x", "mirrors": [{"backend": "sqs", "backendConfig": {"concurrency": 100}}]}))
            .unwrap_err();
        assert_eq!(fields(&e), ["mirrors[0].backendConfig.concurrency"]);
    }

    #[test]
    fn unbuilt_backends_are_refused_with_the_feature_named() {
        let n = ns(&json!({"name": "x", "backend": "kafka", "backendConfig": {"bootstrapServers": "b:9092"}})).unwrap();
        if cfg!(feature = "mirror-kafka") {
            assert!(check_built(&n).is_ok());
        } else {
            let e = check_built(&n).unwrap_err();
            assert_eq!(fields(&e), ["backend"]);
            assert!(e[0].message.contains("mirror-kafka"), "{}", e[0].message);
        }
        let n = ns(&json!({"name": "x", "mirrors": [{"name": "q", "backend": "sqs"}]})).unwrap();
        assert_eq!(check_built(&n).is_ok(), cfg!(feature = "mirror-sqs"));
        let n = ns(&json!({"name": "x", "backend": "redis_streams", "backendConfig": {"url": "redis://h"}})).unwrap();
        assert_eq!(check_built(&n).is_ok(), cfg!(feature = "mirror-redis"));
    }
}

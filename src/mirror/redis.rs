//! The Redis Streams mirror (cargo feature `mirror-redis`): every record becomes
//!
//! ```text
//! XADD wal:{namespace}:messages MAXLEN ~ {maxLen} * id {messageId} payload {payload JSON} metadata {metadata JSON}
//! ```
//!
//! the fields of the seeds' plan (004 §1.2.2/§2.2): `id` the message id, `payload` the
//! client's payload as JSON text, `metadata` a JSON object with `requestId`, `timestamp`
//! (acceptance, RFC 3339), `namespace`, `partition`, `offset`, `partitionKey` and the
//! message's own `metadata`, `tags`, `priority` and `idempotencyKey` when present. One
//! stream per namespace: the partitions' records interleave, each partition's in order.
//!
//! A batch is one pipeline on one multiplexed connection, opened lazily and reopened after
//! a failure. Any failure of the pipeline (connection, timeout, error reply) is retryable:
//! the whole batch is sent again (at-least-once; Redis may have appended a prefix). A record
//! larger than `maxRecordBytes` is refused for good before sending.

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use super::config::RedisSettings;
use super::{Mirror, MirrorError, MirrorRecord, PublishFuture, Published, Refusal};
use crate::model::time::rfc3339_ms;

const BACKEND: &str = "redis_streams";

/// A Redis Streams mirror of one namespace.
pub struct RedisStreams {
    client: ::redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    stream: String,
    settings: RedisSettings,
}

impl std::fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreams")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Unavailable {
        backend: BACKEND,
        message: e.to_string(),
    }
}

/// The stream of a namespace.
#[must_use]
pub fn stream_key(namespace: &str) -> String {
    format!("wal:{namespace}:messages")
}

/// The `(field, value)` pairs of a record.
#[must_use]
pub fn fields(r: &MirrorRecord) -> [(&'static str, String); 3] {
    let m = &r.message;
    let mut meta = serde_json::Map::new();
    if let Some(rid) = &m.request_id {
        meta.insert("requestId".into(), rid.clone().into());
    }
    meta.insert("timestamp".into(), rfc3339_ms(m.accepted_at_ms).into());
    meta.insert("namespace".into(), r.namespace.to_string().into());
    meta.insert("partition".into(), r.partition.into());
    meta.insert("offset".into(), r.offset.into());
    if !r.key.is_empty() {
        meta.insert(
            "partitionKey".into(),
            String::from_utf8_lossy(&r.key).into_owned().into(),
        );
    }
    if let Some(md) = &m.metadata {
        meta.insert(
            "metadata".into(),
            serde_json::to_value(md).unwrap_or_default(),
        );
    }
    if let Some(t) = &m.tags {
        meta.insert("tags".into(), serde_json::to_value(t).unwrap_or_default());
    }
    if let Some(p) = m.priority {
        meta.insert("priority".into(), p.into());
    }
    if let Some(k) = &m.idempotency_key {
        meta.insert("idempotencyKey".into(), k.clone().into());
    }
    [
        ("id", m.message_id.clone()),
        ("payload", m.payload.get().to_owned()),
        ("metadata", serde_json::Value::Object(meta).to_string()),
    ]
}

impl RedisStreams {
    /// A mirror of `namespace` to the server of `settings.url` (connected on first publish).
    ///
    /// # Errors
    /// An unusable URL.
    pub fn new(settings: &RedisSettings, namespace: &str) -> Result<Self, MirrorError> {
        let client =
            ::redis::Client::open(settings.url.as_str()).map_err(|e| MirrorError::Config {
                name: BACKEND.into(),
                reason: format!("url `{}`: {e}", crate::redact::url(&settings.url)),
            })?;
        Ok(Self {
            client,
            conn: Mutex::new(None),
            stream: stream_key(namespace),
            settings: settings.clone(),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, MirrorError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let t = std::time::Duration::from_millis(self.settings.timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn publish_batch(&self, batch: &[MirrorRecord]) -> Published {
        let mut pipe = ::redis::pipe();
        let mut refused = Vec::new();
        let mut sent = 0usize;
        for r in batch {
            let f = fields(r);
            let size: usize = f.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size as u64 > self.settings.max_record_bytes {
                refused.push(Refusal {
                    offset: r.offset,
                    message_id: r.message.message_id.clone(),
                    reason: format!(
                        "{size} bytes is more than this mirror's maxRecordBytes ({})",
                        self.settings.max_record_bytes
                    ),
                });
                continue;
            }
            let c = pipe.cmd("XADD").arg(&self.stream);
            if self.settings.max_len > 0 {
                c.arg("MAXLEN").arg("~").arg(self.settings.max_len);
            }
            c.arg("*");
            for (k, v) in &f {
                c.arg(*k).arg(v.as_str());
            }
            sent += 1;
        }
        if sent > 0 {
            let mut conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => return Published::failed(e),
            };
            if let Err(e) = pipe.query_async::<Vec<String>>(&mut conn).await {
                // Whatever broke, the next publish starts on a fresh connection.
                *self.conn.lock().await = None;
                return Published::failed(unavailable(e));
            }
        }
        Published {
            settled: batch.len(),
            refused,
            error: None,
        }
    }
}

impl Mirror for RedisStreams {
    fn publish<'a>(&'a self, batch: &'a [MirrorRecord]) -> PublishFuture<'a> {
        Box::pin(self.publish_batch(batch))
    }
}

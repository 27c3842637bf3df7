//! The Kafka mirror (cargo feature `mirror-kafka`; rdkafka with its bundled librdkafka).
//!
//! - **Topic**: `backendConfig.topic`, else the namespace's `topicName` (by default its name).
//!   The topic must exist (wald does not create topics).
//! - **Partition mapping**: wald partition `p` → Kafka partition `p % n` (`n` the topic's
//!   partition count, read once from the cluster's metadata). So one wald partition's records
//!   stay in one Kafka partition, in order; with `n` ≥ the namespace's `partitionCount` the
//!   mapping is one to one.
//! - **Record**: key = the partition key (none when empty), value = the client's payload as
//!   JSON text, headers `id` (message id), `namespace`, `partition`, `offset`, `requestId`,
//!   `due` (due time, ms; 0 = at once) and `wald` (the rest of the stored message as JSON:
//!   targets, lifecycle, metadata, ids, acceptance time — with the value, everything needed
//!   to rebuild the local record; see `kafka_recover`).
//! - **Producer**: `enable.idempotence=true`, `acks=all`, `linger.ms` = `lingerMs` (1 for a
//!   Kafka-primary namespace, else 5), `message.timeout.ms` = `timeoutMs`,
//!   `message.max.bytes` = `maxRecordBytes`. A batch is produced at once and confirmed in
//!   order; the idempotent producer keeps the order within a partition across its retries.
//!   A record over `message.max.bytes` is refused for good; every other error (timeouts, a
//!   broker down, a full queue) leaves the rest of the batch to be retried.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::Mutex;

use super::config::KafkaSettings;
use super::{Mirror, MirrorError, MirrorRecord, PublishFuture, Published, Refusal};

const BACKEND: &str = "kafka";

/// A Kafka mirror of one namespace.
pub struct KafkaMirror {
    producer: FutureProducer,
    topic: String,
    settings: KafkaSettings,
    /// The topic's partition count, once known.
    partitions: Mutex<Option<i32>>,
}

impl std::fmt::Debug for KafkaMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaMirror")
            .field("topic", &self.topic)
            .field("bootstrap_servers", &self.settings.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Unavailable {
        backend: BACKEND,
        message: e.to_string(),
    }
}

fn too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

impl KafkaMirror {
    /// A producer for `settings` (it connects in the background).
    ///
    /// # Errors
    /// librdkafka refuses the configuration.
    pub fn new(settings: &KafkaSettings, namespace: &str) -> Result<Self, MirrorError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", settings.timeout_ms.to_string())
            .set("message.max.bytes", settings.max_record_bytes.to_string())
            .set("linger.ms", settings.linger_ms.unwrap_or(5).to_string())
            .set(
                "batch.size",
                settings.max_record_bytes.min(1_000_000).to_string(),
            )
            .set("client.id", format!("wald-{namespace}"))
            .create()
            .map_err(|e| MirrorError::Config {
                name: BACKEND.into(),
                reason: format!("producer: {e}"),
            })?;
        Ok(Self {
            producer,
            topic: settings
                .topic
                .clone()
                .unwrap_or_else(|| namespace.to_owned()),
            settings: settings.clone(),
            partitions: Mutex::new(None),
        })
    }

    /// The topic's partition count (metadata fetched once, off the async threads).
    async fn partition_count(&self) -> Result<i32, MirrorError> {
        let mut known = self.partitions.lock().await;
        if let Some(n) = *known {
            return Ok(n);
        }
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let n = tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(unavailable)?;
            let t = md.topics().iter().find(|t| t.name() == topic);
            match t {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
                }
                _ => Err(unavailable(format!(
                    "topic `{topic}` has no partitions in the cluster's metadata (does it exist?)"
                ))),
            }
        })
        .await
        .map_err(unavailable)??;
        *known = Some(n);
        Ok(n)
    }

    async fn publish_batch(&self, batch: &[MirrorRecord]) -> Published {
        let n = match self.partition_count().await {
            Ok(n) => n,
            Err(e) => return Published::failed(e),
        };
        // Produce everything first (librdkafka batches and pipelines), then confirm in order.
        let mut pending = Vec::with_capacity(batch.len());
        let mut stop = None;
        for r in batch {
            let m = &r.message;
            let payload = m.payload.get();
            let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
            let (due, rest) = (r.due_ms.to_string(), rest_of(&r.message));
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "id",
                    value: Some(m.message_id.as_str()),
                })
                .insert(Header {
                    key: "namespace",
                    value: Some(&*r.namespace),
                })
                .insert(Header {
                    key: "partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "offset",
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: "due",
                    value: Some(due.as_str()),
                })
                .insert(Header {
                    key: "wald",
                    value: Some(rest.as_str()),
                });
            if let Some(rid) = &m.request_id {
                headers = headers.insert(Header {
                    key: "requestId",
                    value: Some(rid.as_str()),
                });
            }
            let kafka_partition =
                i32::try_from(u64::from(r.partition) % u64::try_from(n).unwrap_or(1)).unwrap_or(0);
            let mut rec = FutureRecord::<[u8], str>::to(&self.topic)
                .payload(payload)
                .partition(kafka_partition)
                .headers(headers);
            if !r.key.is_empty() {
                rec = rec.key(r.key.as_slice());
            }
            match self.producer.send_result(rec) {
                Ok(f) => pending.push(Ok(f)),
                Err((e, _)) if too_large(&e) => pending.push(Err(refusal(r, &e))),
                Err((e, _)) => {
                    stop = Some(unavailable(e));
                    break;
                }
            }
        }
        let mut out = Published::default();
        for (p, r) in pending.into_iter().zip(batch) {
            let result = match p {
                Err(refused) => {
                    out.refused.push(refused);
                    out.settled += 1;
                    continue;
                }
                Ok(f) => f.await,
            };
            match result {
                Ok(Ok(_)) => out.settled += 1,
                Ok(Err((e, _))) if too_large(&e) => {
                    out.refused.push(refusal(r, &e));
                    out.settled += 1;
                }
                Ok(Err((e, _))) => {
                    out.error = Some(unavailable(e));
                    break;
                }
                Err(_) => {
                    out.error = Some(unavailable("the producer dropped the delivery"));
                    break;
                }
            }
        }
        if out.error.is_none() && out.settled < batch.len() {
            out.error = Some(stop.unwrap_or_else(|| unavailable("batch not confirmed")));
        }
        out
    }
}

/// The stored message without its payload (which is the Kafka value), as JSON.
fn rest_of(m: &crate::message::StoredMessage) -> String {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("payload");
    }
    v.to_string()
}

fn refusal(r: &MirrorRecord, e: &KafkaError) -> Refusal {
    Refusal {
        offset: r.offset,
        message_id: r.message.message_id.clone(),
        reason: format!("larger than this mirror's maxRecordBytes (message.max.bytes): {e}"),
    }
}

impl Mirror for KafkaMirror {
    fn publish<'a>(&'a self, batch: &'a [MirrorRecord]) -> PublishFuture<'a> {
        Box::pin(self.publish_batch(batch))
    }
}

//! The SQS mirror (cargo feature `mirror-sqs`; aws-sdk-sqs, any SQS-compatible endpoint).
//!
//! - **Queue**: `backendConfig.queueUrl`, else `queueName` (default the namespace's
//!   `topicName`) resolved once with `GetQueueUrl`. The queue must exist.
//! - **Message**: body = the client's payload as JSON text; string attributes `id` (message
//!   id), `namespace`, `partition`, `offset`, `requestId`.
//! - **Batching**: the consumer hands over up to `batchSize × concurrency` records at a
//!   time; they go out as `SendMessageBatch` calls of up to `batchSize` (≤ 10) entries, up
//!   to `concurrency` calls in flight at once (each call bounded by `timeoutMs`). The
//!   publish reports settled only the records before the first one not confirmed (or
//!   refused), so the committed offset moves over a contiguous prefix and the rest is sent
//!   again: at-least-once.
//! - **Order**: a standard queue keeps none (SQS's best effort), so its calls run side by
//!   side freely. A **FIFO queue** (name ending in `.fifo`) gets `MessageGroupId` = the
//!   partition key (else `p{partition}`) and `MessageDeduplicationId` = the message id (a
//!   re-publish within SQS's 5-minute window is dropped by SQS); one group's records stay in
//!   one *lane* whose calls are made one after another, stopping at the first failure, so a
//!   group's messages enter the queue in offset order; different groups' lanes run side by
//!   side. With no partition keys a wald partition is one group: its calls are sequential.
//! - **Delays**: a standard queue gets `DelaySeconds` = the time left until the message's
//!   due time, up to SQS's 900 s (longer delays are cut to 900 s; the message arrives
//!   early — wald's own timer is what delivery uses). FIFO queues take no per-message delay.
//! - **Errors**: a record over `maxRecordBytes`, or an entry SQS refuses as the sender's
//!   fault, is refused for good; a failed or timed-out call, or an entry failed by the
//!   server, leaves it and every later record of the batch to be retried.
//! - **Credentials**: `accessKeyId`/`secretAccessKey`, else `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY` from the environment (no instance profiles or SSO: this build
//!   has no aws-config).

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use wald_storage::now_ms;

use super::config::SqsSettings;
use super::{Mirror, MirrorError, MirrorRecord, PublishFuture, Published, Refusal};

const BACKEND: &str = "sqs";
/// SQS's longest `DelaySeconds`.
const MAX_DELAY_SECS: u64 = 900;

/// An SQS mirror of one namespace.
pub struct SqsMirror {
    client: Client,
    settings: SqsSettings,
    fifo: bool,
    /// The queue URL, once known.
    url: Mutex<Option<String>>,
}

impl std::fmt::Debug for SqsMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsMirror")
            .field("queue_url", &self.settings.queue_url)
            .field("queue_name", &self.settings.queue_name)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> MirrorError {
    MirrorError::Unavailable {
        backend: BACKEND,
        message: e.to_string(),
    }
}

fn attr(v: &str) -> Result<MessageAttributeValue, MirrorError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(unavailable)
}

impl SqsMirror {
    /// A client for `settings` (it connects on first publish).
    ///
    /// # Errors
    /// No credentials in the settings or the environment.
    pub fn new(settings: &SqsSettings, namespace: &str) -> Result<Self, MirrorError> {
        let key = settings
            .access_key_id
            .clone()
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = settings
            .secret_access_key
            .clone()
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(MirrorError::Config {
                name: BACKEND.into(),
                reason: format!(
                    "namespace {namespace}: no credentials (backendConfig.accessKeyId/secretAccessKey or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                ),
            });
        };
        let mut conf = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(key, secret, None, None, "wald"))
            // The mirror retries with its own backoff.
            .retry_config(RetryConfig::disabled());
        if let Some(e) = &settings.endpoint_url {
            conf = conf.endpoint_url(e);
        }
        let fifo = settings
            .queue_url
            .as_deref()
            .or(settings.queue_name.as_deref())
            .is_some_and(|q| q.strip_suffix(".fifo").is_some()); // SQS: exactly this suffix
        Ok(Self {
            client: Client::from_conf(conf.build()),
            settings: settings.clone(),
            fifo,
            url: Mutex::new(settings.queue_url.clone()),
        })
    }

    async fn queue_url(&self) -> Result<String, MirrorError> {
        let mut url = self.url.lock().await;
        if let Some(u) = url.as_ref() {
            return Ok(u.clone());
        }
        let name = self.settings.queue_name.clone().unwrap_or_default();
        let call = self.client.get_queue_url().queue_name(&name).send();
        let ms = self.settings.timeout_ms;
        let out = tokio::time::timeout(Duration::from_millis(ms), call)
            .await
            .map_err(|_| MirrorError::Timeout {
                backend: BACKEND,
                ms,
            })?
            .map_err(|e| {
                unavailable(format!(
                    "GetQueueUrl {name}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ))
            })?;
        let u = out
            .queue_url()
            .ok_or_else(|| unavailable(format!("GetQueueUrl {name}: no URL")))?
            .to_owned();
        *url = Some(u.clone());
        Ok(u)
    }

    /// The entry of a record, or why it can never be sent.
    fn entry(
        &self,
        i: usize,
        r: &MirrorRecord,
    ) -> Result<Result<SendMessageBatchRequestEntry, String>, MirrorError> {
        let m = &r.message;
        let body = m.payload.get();
        let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
        let mut attrs: Vec<(&str, &str)> = vec![
            ("id", m.message_id.as_str()),
            ("namespace", &r.namespace),
            ("partition", &partition),
            ("offset", &offset),
        ];
        if let Some(rid) = &m.request_id {
            attrs.push(("requestId", rid));
        }
        let size = body.len()
            + attrs
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>();
        if size as u64 > self.settings.max_record_bytes {
            return Ok(Err(format!(
                "{size} bytes is more than this mirror's maxRecordBytes ({})",
                self.settings.max_record_bytes
            )));
        }
        let mut e = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(body);
        for (k, v) in attrs {
            e = e.message_attributes(k, attr(v)?);
        }
        if self.fifo {
            e = e
                .message_group_id(group_id(r))
                .message_deduplication_id(m.message_id.clone());
        } else if r.due_ms > 0 {
            let secs = r
                .due_ms
                .saturating_sub(now_ms())
                .div_ceil(1000)
                .min(MAX_DELAY_SECS);
            if secs > 0 {
                e = e.delay_seconds(i32::try_from(secs).unwrap_or(0));
            }
        }
        e.build().map(Ok).map_err(unavailable)
    }

    /// The lanes of a batch: lists of indices into it, each in offset order, each sent as
    /// `SendMessageBatch` calls one after another while the lanes run side by side. A
    /// standard queue keeps no order, so every chunk of `batchSize` is a lane of its own; a
    /// FIFO queue keeps a `MessageGroupId` in one lane (groups spread over at most
    /// `concurrency` lanes), so a group's messages reach SQS in offset order.
    fn lanes(&self, batch: &[MirrorRecord], sendable: &[usize]) -> Vec<Vec<usize>> {
        let size = self.settings.batch_size.clamp(1, 10);
        let width = self.settings.concurrency.max(1);
        if !self.fifo {
            // Chunk j goes to lane j % width (the consumer hands over at most `width` chunks,
            // so normally one chunk per lane).
            let mut lanes: Vec<Vec<usize>> = Vec::new();
            for (j, chunk) in sendable.chunks(size).enumerate() {
                if j < width {
                    lanes.push(chunk.to_vec());
                } else {
                    lanes[j % width].extend_from_slice(chunk);
                }
            }
            return lanes;
        }
        let mut lanes: Vec<Vec<usize>> = Vec::new();
        let mut lane_of: HashMap<String, usize> = HashMap::new();
        for &i in sendable {
            let group = group_id(&batch[i]);
            let lane = if let Some(&l) = lane_of.get(&group) {
                l
            } else {
                let l = if lanes.len() < width {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                } else {
                    // The least loaded lane so far.
                    (0..lanes.len())
                        .min_by_key(|&l| lanes[l].len())
                        .unwrap_or(0)
                };
                lane_of.insert(group, l);
                l
            };
            lanes[lane].push(i);
        }
        lanes
    }

    async fn publish_batch(&self, batch: &[MirrorRecord]) -> Published {
        let url = match self.queue_url().await {
            Ok(u) => u,
            Err(e) => return Published::failed(e),
        };
        // Per record: None = not settled, Some(Ok) = confirmed, Some(Err) = refused for good.
        let mut outcome: Vec<Option<Result<(), String>>> = vec![None; batch.len()];
        let mut entries: Vec<Option<SendMessageBatchRequestEntry>> =
            Vec::with_capacity(batch.len());
        let mut sendable = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            match self.entry(i, r) {
                Ok(Ok(e)) => {
                    entries.push(Some(e));
                    sendable.push(i);
                }
                Ok(Err(reason)) => {
                    entries.push(None);
                    outcome[i] = Some(Err(reason));
                }
                Err(e) => return Published::failed(e),
            }
        }
        let size = self.settings.batch_size.clamp(1, 10);
        let call_timeout = Duration::from_millis(self.settings.timeout_ms);
        let mut calls = JoinSet::new();
        for lane in self.lanes(batch, &sendable) {
            let chunks: Vec<Vec<SendMessageBatchRequestEntry>> = lane
                .chunks(size)
                .map(|c| c.iter().filter_map(|&i| entries[i].take()).collect())
                .collect();
            let (client, url) = (self.client.clone(), url.clone());
            // Aborted with the JoinSet when the consumer gives up on this publish.
            calls.spawn(send_lane(client, url, chunks, call_timeout));
        }
        let mut error = None;
        while let Some(joined) = calls.join_next().await {
            let lane = match joined {
                Ok(l) => l,
                Err(e) => {
                    error.get_or_insert_with(|| unavailable(format!("SendMessageBatch task: {e}")));
                    continue;
                }
            };
            for (i, o) in lane.settled {
                if let Some(slot) = outcome.get_mut(i) {
                    *slot = Some(o);
                }
            }
            if let Some(e) = lane.error {
                error.get_or_insert(e);
            }
        }
        let mut out = Published::default();
        for (r, o) in batch.iter().zip(outcome) {
            match o {
                Some(Ok(())) => out.settled += 1,
                Some(Err(reason)) => {
                    out.refused.push(Refusal {
                        offset: r.offset,
                        message_id: r.message.message_id.clone(),
                        reason,
                    });
                    out.settled += 1;
                }
                None => {
                    out.error = Some(error.unwrap_or_else(|| {
                        unavailable(format!(
                            "SQS did not accept the message at offset {}",
                            r.offset
                        ))
                    }));
                    return out;
                }
            }
        }
        out
    }
}

/// The `MessageGroupId` of a record in a FIFO queue.
fn group_id(r: &MirrorRecord) -> String {
    if r.key.is_empty() {
        format!("p{}", r.partition)
    } else {
        String::from_utf8_lossy(&r.key).into_owned()
    }
}

/// What one lane settled: (index in the batch, confirmed or refused) per entry SQS answered,
/// and why the lane stopped early.
struct LaneResult {
    settled: Vec<(usize, Result<(), String>)>,
    error: Option<MirrorError>,
}

/// Sends a lane's chunks one after another, stopping at the first chunk not wholly settled
/// (so a FIFO group's later messages never overtake an earlier one that failed).
async fn send_lane(
    client: Client,
    url: String,
    chunks: Vec<Vec<SendMessageBatchRequestEntry>>,
    call_timeout: Duration,
) -> LaneResult {
    let mut out = LaneResult {
        settled: Vec::new(),
        error: None,
    };
    for chunk in chunks {
        let ids: Vec<usize> = chunk.iter().filter_map(|e| e.id().parse().ok()).collect();
        let call = client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(chunk))
            .send();
        let res = match tokio::time::timeout(call_timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                out.error = Some(unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)));
                return out;
            }
            Err(_) => {
                out.error = Some(MirrorError::Timeout {
                    backend: BACKEND,
                    ms: u64::try_from(call_timeout.as_millis()).unwrap_or(u64::MAX),
                });
                return out;
            }
        };
        let mut answered = 0;
        for s in res.successful() {
            if let Ok(i) = s.id().parse::<usize>() {
                out.settled.push((i, Ok(())));
                answered += 1;
            }
        }
        for f in res.failed() {
            let Ok(i) = f.id().parse::<usize>() else {
                continue;
            };
            if f.sender_fault() {
                out.settled.push((
                    i,
                    Err(format!("{}: {}", f.code(), f.message().unwrap_or(""))),
                ));
                answered += 1;
            } else if out.error.is_none() {
                out.error = Some(unavailable(format!(
                    "SQS failed an entry: {}: {}",
                    f.code(),
                    f.message().unwrap_or("")
                )));
            }
        }
        if answered < ids.len() {
            out.error.get_or_insert_with(|| {
                unavailable("SQS did not settle every entry of a SendMessageBatch")
            });
            return out;
        }
    }
    out
}

impl Mirror for SqsMirror {
    fn publish<'a>(&'a self, batch: &'a [MirrorRecord]) -> PublishFuture<'a> {
        Box::pin(self.publish_batch(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::StoredMessage;
    use std::sync::Arc;

    fn mirror(queue: &str, batch_size: usize, concurrency: usize) -> SqsMirror {
        let settings = SqsSettings {
            queue_url: Some(format!("http://127.0.0.1:1/000000000000/{queue}")),
            queue_name: None,
            endpoint_url: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            batch_size,
            concurrency,
            timeout_ms: 1000,
            max_record_bytes: 256 * 1024,
        };
        SqsMirror::new(&settings, "ns").unwrap()
    }

    fn records(keys: &[&str]) -> Vec<MirrorRecord> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| MirrorRecord {
                namespace: Arc::from("ns"),
                partition: 3,
                offset: i as u64,
                timestamp_ms: 0,
                due_ms: 0,
                key: k.as_bytes().to_vec(),
                message: StoredMessage::new(
                    format!("m{i}"),
                    "ns",
                    serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                    0,
                ),
            })
            .collect()
    }

    #[test]
    fn a_standard_queue_sends_every_chunk_side_by_side() {
        let m = mirror("q", 10, 8);
        assert!(!m.fifo);
        let batch = records(&[""; 25]);
        let all: Vec<usize> = (0..25).collect();
        let lanes = m.lanes(&batch, &all);
        assert_eq!(lanes.len(), 3);
        assert_eq!(lanes[0], (0..10).collect::<Vec<_>>());
        assert_eq!(lanes[2], (20..25).collect::<Vec<_>>());
        // A refused record (left out of `sendable`) is in no lane.
        let some = [0, 1, 3];
        assert_eq!(m.lanes(&batch, &some), vec![vec![0, 1, 3]]);
        // More chunks than calls in flight: chunk j in lane j % concurrency.
        let batch = records(&[""; 45]);
        let all: Vec<usize> = (0..45).collect();
        let lanes = mirror("q", 10, 2).lanes(&batch, &all);
        let want0: Vec<usize> = (0..10).chain(20..30).chain(40..45).collect();
        let want1: Vec<usize> = (10..20).chain(30..40).collect();
        assert_eq!(lanes, vec![want0, want1]);
    }

    #[test]
    fn a_fifo_queue_keeps_each_group_in_one_lane_in_offset_order() {
        let m = mirror("q.fifo", 10, 2);
        assert!(m.fifo);
        let batch = records(&["a", "b", "a", "c", "b", "a"]);
        let all: Vec<usize> = (0..batch.len()).collect();
        // a → lane 0, b → lane 1, c → the least loaded (lane 1: one record against two).
        assert_eq!(m.lanes(&batch, &all), vec![vec![0, 2, 5], vec![1, 3, 4]]);
        // No partition key: the partition is one group, so one lane (sequential calls).
        let batch = records(&[""; 30]);
        let all: Vec<usize> = (0..30).collect();
        assert_eq!(m.lanes(&batch, &all), vec![all.clone()]);
        assert_eq!(group_id(&batch[0]), "p3");
        // Never more lanes than `concurrency`.
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let batch = records(&keys);
        let all: Vec<usize> = (0..20).collect();
        let lanes = mirror("q.fifo", 10, 4).lanes(&batch, &all);
        assert_eq!(lanes.len(), 4);
        assert!(lanes.iter().all(|l| l.len() == 5 && l.is_sorted()));
    }
}

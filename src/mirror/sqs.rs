//! The SQS mirror (cargo feature `mirror-sqs`; aws-sdk-sqs, any SQS-compatible endpoint).
//!
//! - **Queue**: `backendConfig.queueUrl`, else `queueName` (default the namespace's
//!   `topicName`) resolved once with `GetQueueUrl`. The queue must exist.
//! - **Message**: body = the client's payload as JSON text; string attributes `id` (message
//!   id), `namespace`, `partition`, `offset`, `requestId`. Records go out in
//!   `SendMessageBatch` calls of up to `batchSize` (≤ 10) entries, in offset order.
//! - **FIFO queues** (name ending in `.fifo`): `MessageGroupId` = the partition key (else
//!   `p{partition}`, so one wald partition stays in order), `MessageDeduplicationId` = the
//!   message id (a re-publish within SQS's 5-minute window is dropped by SQS).
//! - **Delays**: a standard queue gets `DelaySeconds` = the time left until the message's
//!   due time, up to SQS's 900 s (longer delays are cut to 900 s; the message arrives
//!   early — wald's own timer is what delivery uses). FIFO queues take no per-message delay.
//! - **Errors**: a record over `maxRecordBytes`, or an entry SQS refuses as the sender's
//!   fault, is refused for good; a failed call or an entry failed by the server leaves it and
//!   the rest of the batch to be retried.
//! - **Credentials**: `accessKeyId`/`secretAccessKey`, else `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY` from the environment (no instance profiles or SSO: this build
//!   has no aws-config).

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use tokio::sync::Mutex;
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
        let out = self
            .client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
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
            let group = if r.key.is_empty() {
                format!("p{}", r.partition)
            } else {
                String::from_utf8_lossy(&r.key).into_owned()
            };
            e = e
                .message_group_id(group)
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

    async fn publish_batch(&self, batch: &[MirrorRecord]) -> Published {
        let url = match self.queue_url().await {
            Ok(u) => u,
            Err(e) => return Published::failed(e),
        };
        let mut out = Published::default();
        for chunk in batch.chunks(self.settings.batch_size.clamp(1, 10)) {
            // Entries by index in the chunk; refusals settle without a call.
            let mut outcome: Vec<Option<Result<(), String>>> = vec![None; chunk.len()];
            let mut entries = Vec::new();
            for (i, r) in chunk.iter().enumerate() {
                match self.entry(i, r) {
                    Ok(Ok(e)) => entries.push(e),
                    Ok(Err(reason)) => outcome[i] = Some(Err(reason)),
                    Err(e) => {
                        out.error = Some(e);
                        return out;
                    }
                }
            }
            if !entries.is_empty() {
                let res = self
                    .client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await;
                let res = match res {
                    Ok(r) => r,
                    Err(e) => {
                        out.error = Some(unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)));
                        return out;
                    }
                };
                for s in res.successful() {
                    if let Some(o) = s
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| outcome.get_mut(i))
                    {
                        *o = Some(Ok(()));
                    }
                }
                for f in res.failed() {
                    let Some(o) = f
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| outcome.get_mut(i))
                    else {
                        continue;
                    };
                    if f.sender_fault() {
                        *o = Some(Err(format!("{}: {}", f.code(), f.message().unwrap_or(""))));
                    }
                }
            }
            for (r, o) in chunk.iter().zip(outcome) {
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
                        out.error = Some(unavailable(format!(
                            "SQS did not accept the message at offset {}",
                            r.offset
                        )));
                        return out;
                    }
                }
            }
        }
        out
    }
}

impl Mirror for SqsMirror {
    fn publish<'a>(&'a self, batch: &'a [MirrorRecord]) -> PublishFuture<'a> {
        Box::pin(self.publish_batch(batch))
    }
}

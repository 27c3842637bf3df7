//! Kafka as primary durability (`durability = "kafka"`): writes are acknowledged once Kafka
//! confirmed them, before the local log is synced, so an OS crash can take from the local
//! log records Kafka holds. At startup, before such a namespace serves, every record of its
//! topic that the local log lacks is appended back, in order, with its own offset.
//!
//! - Where to start reading: the Kafka offset for the time of the last local record minus
//!   [`SKEW`] (`offsets_for_times`; a record confirmed later than the local tail was produced
//!   after it), else the beginning of the partition.
//! - Which records: those whose headers say this namespace, this wald partition and an offset
//!   at or past the local log's next offset. Records past a gap (an offset missing in the
//!   topic) are not appended: the namespace does not start, and the error says which offset
//!   is missing.
//! - A record is rebuilt from the Kafka value (the payload), key (partition key) and the
//!   `due` and `wald` headers (the rest of the stored message); its append time is the
//!   recovery's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use wald_storage::{Durability, Log};

use super::config::{self, Settings};
use crate::message::StoredMessage;
use crate::model::namespace::{BackendType, Namespace};

/// How far before the last local record's time the topic is read from.
const SKEW: Duration = Duration::from_secs(60);

/// Why recovery could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The namespace's Kafka mirror settings are invalid.
    #[error("the Kafka mirror's settings: {0}")]
    Config(String),
    /// Kafka could not be read.
    #[error("reading topic `{topic}` from {servers}: {message}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        servers: String,
        /// What failed.
        message: String,
    },
    /// The topic lacks an offset the local log needs next.
    #[error("topic `{topic}` partition {kafka_partition}: wald partition {partition} needs offset {expected} next, found {found}")]
    Gap {
        /// The topic.
        topic: String,
        /// The Kafka partition.
        kafka_partition: i32,
        /// The wald partition.
        partition: u32,
        /// The offset the local log needs.
        expected: u64,
        /// The offset the topic has.
        found: u64,
    },
    /// A record could not be rebuilt or appended.
    #[error("wald partition {partition} offset {offset}: {message}")]
    Record {
        /// The wald partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// What failed.
        message: String,
    },
}

/// Appends to `logs` (the namespace's partition logs) what its Kafka topic holds past their
/// ends; returns the records appended. A namespace without a Kafka mirror recovers nothing.
///
/// # Errors
/// [`RecoverError`]: Kafka unreachable, a gap in the topic, a record that cannot be appended.
pub fn recover(
    ns: &Namespace,
    logs: &[Arc<Log>],
    egress: &crate::egress::EgressPolicy,
) -> Result<u64, RecoverError> {
    let specs = config::specs(ns).map_err(|e| {
        RecoverError::Config(
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let Some((spec, settings)) = specs.iter().find_map(|s| match &s.settings {
        Settings::Kafka(k) if s.backend == BackendType::Kafka => Some((s, k.clone())),
        _ => None,
    }) else {
        return Ok(0);
    };
    // The brokers are checked against `[egress]` like every mirror connection.
    super::egress::check_blocking(spec, egress).map_err(|e| RecoverError::Kafka {
        topic: settings
            .topic
            .clone()
            .unwrap_or_else(|| ns.topic_name().to_owned()),
        servers: settings.bootstrap_servers.clone(),
        message: e.to_string(),
    })?;
    let topic = settings
        .topic
        .clone()
        .unwrap_or_else(|| ns.topic_name().to_owned());
    let kafka_err = |message: String| RecoverError::Kafka {
        topic: topic.clone(),
        servers: settings.bootstrap_servers.clone(),
        message,
    };
    let timeout = Duration::from_millis(settings.timeout_ms.max(5000));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", format!("wald-recovery-{}", ns.name))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| kafka_err(format!("consumer: {e}")))?;
    let md = consumer
        .fetch_metadata(Some(&topic), timeout)
        .map_err(|e| kafka_err(e.to_string()))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if n == 0 {
        return Err(kafka_err(
            "the topic has no partitions (does it exist?)".into(),
        ));
    }
    let mut total = 0;
    for (p, log) in logs.iter().enumerate() {
        let p = u32::try_from(p).unwrap_or(u32::MAX);
        let kp = i32::try_from(p as usize % n).unwrap_or(0);
        let part = PartitionRecovery {
            consumer: &consumer,
            topic: &topic,
            ns: &ns.name,
            partition: p,
            kafka_partition: kp,
            timeout,
        };
        total += part.recover(log).map_err(|e| match e {
            Err(message) => kafka_err(message),
            Ok(e) => e,
        })?;
    }
    Ok(total)
}

/// One wald partition's recovery from its Kafka partition.
struct PartitionRecovery<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    ns: &'a str,
    partition: u32,
    kafka_partition: i32,
    timeout: Duration,
}

/// A header's value as text.
fn header<'m>(m: &'m impl Message, name: &str) -> Option<&'m str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl PartitionRecovery<'_> {
    /// The Kafka offset to start from: the time of the local tail minus [`SKEW`], else the
    /// beginning.
    fn start(&self, log: &Log) -> Offset {
        let stats = log.stats();
        if stats.next_offset == stats.first_offset {
            return Offset::Beginning;
        }
        let last = log
            .read_from(stats.next_offset - 1)
            .ok()
            .and_then(|mut r| r.next())
            .and_then(Result::ok);
        let Some(last) = last else {
            return Offset::Beginning;
        };
        let at =
            i64::try_from(last.timestamp_ms.saturating_sub(SKEW.as_millis() as u64)).unwrap_or(0);
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(self.topic, self.kafka_partition, Offset::Offset(at))
            .is_err()
        {
            return Offset::Beginning;
        }
        match self.consumer.offsets_for_times(tpl, self.timeout) {
            Ok(found) => found
                .find_partition(self.topic, self.kafka_partition)
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                .unwrap_or(Offset::Beginning),
            Err(_) => Offset::Beginning,
        }
    }

    /// Appends what the Kafka partition holds past the log's end. `Err(Err(_))`: Kafka failed.
    fn recover(&self, log: &Log) -> Result<u64, Result<RecoverError, String>> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(self.topic, self.kafka_partition, self.timeout)
            .map_err(|e| Err(e.to_string()))?;
        if high <= 0 {
            return Ok(0);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.kafka_partition, self.start(log))
            .map_err(|e| Err(e.to_string()))?;
        self.consumer.assign(&tpl).map_err(|e| Err(e.to_string()))?;
        let mut next = log.stats().next_offset;
        let mut appended = 0;
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(30));
        loop {
            if Instant::now() > deadline {
                return Err(Err(format!(
                    "partition {} not read to its end ({high}) in time",
                    self.kafka_partition
                )));
            }
            let m = match self.consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                    break
                }
                Some(Err(e)) => return Err(Err(e.to_string())),
                Some(Ok(m)) => m,
            };
            let at_end = m.offset() + 1 >= high;
            let ours = header(&m, "namespace") == Some(self.ns)
                && header(&m, "partition").and_then(|v| v.parse::<u32>().ok())
                    == Some(self.partition);
            let offset = header(&m, "offset").and_then(|v| v.parse::<u64>().ok());
            match offset {
                Some(o) if ours && o == next => {
                    self.append(log, &m, o).map_err(Ok)?;
                    next += 1;
                    appended += 1;
                }
                Some(o) if ours && o > next => {
                    return Err(Ok(RecoverError::Gap {
                        topic: self.topic.to_owned(),
                        kafka_partition: self.kafka_partition,
                        partition: self.partition,
                        expected: next,
                        found: o,
                    }));
                }
                // Already in the local log (or a duplicate from a retried publish).
                _ => {}
            }
            if at_end {
                break;
            }
        }
        if appended > 0 {
            tracing::warn!(namespace = self.ns, partition = self.partition, records = appended,
                "local log was behind Kafka (an OS crash took its unsynced tail); recovered from the topic");
        }
        Ok(appended)
    }

    /// Rebuilds one record and appends it (synced), checking it lands at `offset`.
    fn append(&self, log: &Log, m: &impl Message, offset: u64) -> Result<(), RecoverError> {
        let fail = |message: String| RecoverError::Record {
            partition: self.partition,
            offset,
            message,
        };
        let payload = m
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or_else(|| fail("the Kafka value is not UTF-8 JSON".into()))?;
        let rest = header(m, "wald")
            .ok_or_else(|| fail("no `wald` header (written by an older wald?)".into()))?;
        // The stored message is the `wald` object with the payload put back, byte for byte.
        let body = rest
            .trim()
            .strip_prefix('{')
            .ok_or_else(|| fail("the `wald` header is not a JSON object".into()))?;
        let sep = if body.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        let text = format!("{{\"payload\":{payload}{sep}{body}");
        let msg: StoredMessage = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let due = header(m, "due").and_then(|v| v.parse().ok()).unwrap_or(0);
        let record = msg
            .to_record(m.key().unwrap_or_default(), due)
            .map_err(|e| fail(e.to_string()))?;
        let a = log
            .append_one(record, Durability::Sync)
            .map_err(|e| fail(e.to_string()))?;
        if a.first_offset != offset {
            return Err(fail(format!(
                "appended at offset {} instead",
                a.first_offset
            )));
        }
        Ok(())
    }
}

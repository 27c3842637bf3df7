//! How a message is stored in a partition log record — the contract between the write
//! path, the state store (which is derived from the log) and the readers.
//!
//! A record's `key` is the message's partition key (may be empty). Its headers carry the
//! identifiers the state store indexes, so that rebuilding the index after a crash needs no
//! JSON parsing of payloads:
//!
//! | header | value |
//! |---|---|
//! | `id`   | the message id (`wal_{ms}_{9 base-36 chars}`) |
//! | `idem` | the idempotency key, when the client sent one |
//! | `tx`   | the transaction id, when there is one |
//!
//! The record's payload is the JSON document [`StoredMessage`]; its `payload` field holds the
//! client's `payload` byte for byte (a `RawValue`, never re-serialised).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use wald_storage::{Record, StoredRecord};

/// Header: the message id.
pub const H_ID: &str = "id";
/// Header: the idempotency key.
pub const H_IDEMPOTENCY: &str = "idem";
/// Header: the transaction id.
pub const H_TX: &str = "tx";

/// The message as written to the log (the record payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// The message id.
    pub message_id: String,
    /// The namespace (normalised: trimmed, lower case).
    pub namespace: String,
    /// The client's payload, exactly as sent.
    pub payload: Box<RawValue>,
    /// The targets the client named (absent: the namespace's targets at delivery time).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "own_depth"
    )]
    pub target: Option<serde_json::Value>,
    /// The lifecycle settings the client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<serde_json::Value>,
    /// Client metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Priority 1..=10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The transaction id, for multi-partition transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The request id of the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the service accepted it (ms since the epoch).
    pub accepted_at_ms: u64,
}

/// Decodes a stored JSON value (or `null`: none) with a depth limit of its own: read as raw
/// text first (which the parser takes at any depth, as it does a payload), then parsed alone,
/// with serde_json's limit (127 levels) counted from the value itself.
///
/// So the value decodes wherever it sits: the record stores a write's `target` as a list one
/// level deeper than the write sent it, and a dead-letter entry wraps the whole record, which
/// made a record of a write that the parser took near its limit undecodable. The write now
/// refuses values beyond [`crate::model::validate::MAX_JSON_DEPTH`], far below; records
/// stored before that decode with this (nothing that decoded before decodes differently).
fn own_depth<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    let raw: Option<Box<RawValue>> = Option::deserialize(d)?;
    raw.map(|r| serde_json::from_str(r.get()).map_err(serde::de::Error::custom))
        .transpose()
}

/// Why a record is not a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The record has no `id` header.
    #[error("record {offset} has no message id header")]
    NoId {
        /// The record's offset.
        offset: u64,
    },
    /// The payload is not a stored message.
    #[error("record {offset} is not a stored message: {source}")]
    BadPayload {
        /// The record's offset.
        offset: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoredMessage {
    /// A message with only its identity, payload and acceptance time (no targets, lifecycle,
    /// metadata, priority, tags, transaction, idempotency key or request id).
    #[must_use]
    pub fn new(
        message_id: impl Into<String>,
        namespace: impl Into<String>,
        payload: Box<RawValue>,
        accepted_at_ms: u64,
    ) -> Self {
        Self {
            message_id: message_id.into(),
            namespace: namespace.into(),
            payload,
            target: None,
            lifecycle: None,
            metadata: None,
            priority: None,
            tags: None,
            transaction_id: None,
            idempotency_key: None,
            request_id: None,
            accepted_at_ms,
        }
    }

    /// Encodes the message as a log record (`due_ms`: earliest delivery, 0 = now).
    ///
    /// # Errors
    /// A JSON encoding error (not expected for a valid message).
    pub fn to_record(
        &self,
        partition_key: &[u8],
        due_ms: u64,
    ) -> Result<Record, serde_json::Error> {
        let mut headers = vec![(H_ID.to_owned(), self.message_id.clone().into_bytes())];
        if let Some(k) = &self.idempotency_key {
            headers.push((H_IDEMPOTENCY.to_owned(), k.clone().into_bytes()));
        }
        if let Some(t) = &self.transaction_id {
            headers.push((H_TX.to_owned(), t.clone().into_bytes()));
        }
        Ok(Record {
            key: partition_key.to_vec(),
            headers,
            payload: serde_json::to_vec(self)?,
            due_ms,
        })
    }

    /// Decodes a record written by [`StoredMessage::to_record`].
    ///
    /// # Errors
    /// [`MessageError`] when the record is not a message.
    pub fn from_record(r: &StoredRecord) -> Result<Self, MessageError> {
        serde_json::from_slice(&r.payload).map_err(|source| MessageError::BadPayload {
            offset: r.offset,
            source,
        })
    }
}

/// The identifiers of a record, read from its headers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIds {
    /// The message id.
    pub message_id: String,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
    /// The transaction id.
    pub transaction_id: Option<String>,
}

impl RecordIds {
    /// Reads the ids from a record's headers.
    ///
    /// # Errors
    /// [`MessageError::NoId`] when the record has no message id.
    pub fn of(r: &StoredRecord) -> Result<Self, MessageError> {
        let get = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        Ok(Self {
            message_id: get(H_ID).ok_or(MessageError::NoId { offset: r.offset })?,
            idempotency_key: get(H_IDEMPOTENCY),
            transaction_id: get(H_TX),
        })
    }
}

/// A new message id: `wal_{ms since the epoch}_{9 random base-36 characters}` (the seeds' form).
#[must_use]
pub fn new_message_id(now_ms: u64) -> String {
    new_id("wal", now_ms)
}

/// A new transaction id: `txn_{ms}_{9 random base-36 characters}`.
#[must_use]
pub fn new_transaction_id(now_ms: u64) -> String {
    new_id("txn", now_ms)
}

fn new_id(prefix: &str, now_ms: u64) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..9)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}_{now_ms}_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_payload_bytes() {
        let raw = r#"{ "b":1,  "a" : [1, 2.50, "x"] }"#;
        let m = StoredMessage {
            message_id: new_message_id(1_700_000_000_000),
            namespace: "orders".into(),
            payload: RawValue::from_string(raw.to_owned()).unwrap(),
            target: None,
            lifecycle: None,
            metadata: None,
            priority: Some(5),
            tags: None,
            transaction_id: None,
            idempotency_key: Some("k-1".into()),
            request_id: Some("r-1".into()),
            accepted_at_ms: 1,
        };
        let rec = m.to_record(b"pk", 0).unwrap();
        let stored = StoredRecord {
            offset: 7,
            timestamp_ms: 1,
            due_ms: 0,
            key: rec.key.clone(),
            headers: rec.headers.clone(),
            payload: rec.payload.clone(),
        };
        let back = StoredMessage::from_record(&stored).unwrap();
        assert_eq!(back.payload.get(), raw, "payload bytes preserved");
        let ids = RecordIds::of(&stored).unwrap();
        assert_eq!(ids.message_id, m.message_id);
        assert_eq!(ids.idempotency_key.as_deref(), Some("k-1"));
        assert!(m.message_id.starts_with("wal_1700000000000_") && m.message_id.len() == 27);
    }

    /// A record as an earlier write path could store it: a target nested as deep as the
    /// write's parser took it (126 levels under the body), wrapped in the list the record
    /// keeps, so that the record itself nests 128 levels. It decodes, alone and inside a
    /// dead-letter entry, and encodes back to the same bytes.
    #[test]
    fn a_record_nested_to_the_parsers_limit_decodes() {
        let levels = 124;
        let nested = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let payload = format!(
            r#"{{"messageId":"wal_1_a","namespace":"n","payload":{{"a":1}},"target":[{{"config":{{"url":"http://h/","x":{nested}}},"identifier":"w","type":"webhook"}}],"acceptedAtMs":1}}"#
        );
        let stored = StoredRecord {
            offset: 3,
            timestamp_ms: 1,
            due_ms: 0,
            key: Vec::new(),
            headers: vec![(H_ID.to_owned(), b"wal_1_a".to_vec())],
            payload: payload.clone().into_bytes(),
        };
        let m = StoredMessage::from_record(&stored).expect("an accepted write decodes");
        let x = &m.target.as_ref().unwrap()[0]["config"]["x"];
        assert_eq!(
            x,
            &serde_json::from_str::<serde_json::Value>(&nested).unwrap()
        );
        assert_eq!(serde_json::to_string(&m).unwrap(), payload, "round trip");
        // One level more inside a wrapper (as a dead-letter entry holds it).
        #[derive(serde::Deserialize)]
        struct Wrapped {
            message: StoredMessage,
        }
        let w: Wrapped = serde_json::from_str(&format!(r#"{{"message":{payload}}}"#))
            .expect("decodes inside a wrapper");
        assert_eq!(w.message.target, m.target);
        // Absent and null targets stay absent.
        let none =
            r#"{"messageId":"i","namespace":"n","payload":{"a":1},"target":null,"acceptedAtMs":1}"#;
        let m: StoredMessage = serde_json::from_str(none).unwrap();
        assert!(m.target.is_none());
        // A value deeper than any parser limit is still refused (no unbounded recursion).
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        let bad = format!(
            r#"{{"messageId":"i","namespace":"n","payload":{{"a":1}},"target":{deep},"acceptedAtMs":1}}"#
        );
        assert!(serde_json::from_str::<StoredMessage>(&bad).is_err());
    }
}

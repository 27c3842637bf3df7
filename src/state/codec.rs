//! Keys and values of the state store: a small fixed binary encoding, written down here.
//!
//! All integers are big-endian, so that keys sort numerically and a key prefix selects a
//! namespace or a partition. A namespace name never contains NUL (checked on every call that
//! takes one), so `namespace \0` is an unambiguous prefix.
//!
//! The store as a whole carries a format version in the `meta` column family
//! ([`FORMAT_VERSION`] under [`META_FORMAT_VERSION`], a `u32`); every composite value also
//! starts with its own version byte ([`VALUE_V1`]) so a future format can change one value
//! kind without rewriting the others.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `messages` | message id (UTF-8) | [`Location`] v1: `u8 1 · u32 partition · u64 offset · u64 accepted_at_ms · namespace (UTF-8, rest)` |
//! | `idempotency` | `namespace \0 key` | [`IdemEntry`] v1: `u8 1 · u64 expires_at_ms · u32 partition · u64 offset · message id (UTF-8, rest)` |
//! | `namespaces` | name (UTF-8) | the namespace's JSON, opaque bytes |
//! | `watermarks` | `namespace \0 u32 partition` | `u64` next offset to apply (exactly 8 bytes) |
//! | `offsets` | `namespace \0 u32 partition · u64 offset` | [`OffsetEntry`] v1: `u8 1 · u8 flags (bit 0: has idempotency key) · u32 id_len · message id · idempotency key (rest)` |
//! | `meta` | `format_version` | `u32` |
//! | `meta` | `idem_window \0 namespace` | `u64` ms: the idempotency window last applied |
//! | `meta` | `api_key \0 id` | a run-time API key: id, namespaces, SHA-256 (JSON; [`super::keys`]) |
//!
//! `offsets` is the reverse index (position → ids): it lets the store forget the entries of
//! records the log no longer has (retention, or a log that lost unsynced records in a power
//! failure) and delete a namespace's message entries.

use super::{IdemEntry, Location, StateError};

/// The store's format version (in `meta`).
pub const FORMAT_VERSION: u32 = 1;
/// The `meta` key holding [`FORMAT_VERSION`].
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// The `meta` key prefix of a namespace's idempotency window (`idem_window \0 namespace`
/// → `u64` milliseconds): the window last applied, used by catch-up after a restart.
pub const META_WINDOW_PREFIX: &[u8] = b"idem_window\0";
/// The version byte of every composite value of format 1.
pub const VALUE_V1: u8 = 1;

/// Column family names.
pub const CF_MESSAGES: &str = "messages";
/// Column family: idempotency keys.
pub const CF_IDEMPOTENCY: &str = "idempotency";
/// Column family: the namespace registry.
pub const CF_NAMESPACES: &str = "namespaces";
/// Column family: applied-offset watermarks.
pub const CF_WATERMARKS: &str = "watermarks";
/// Column family: position → ids (reverse index).
pub const CF_OFFSETS: &str = "offsets";
/// Column family: store metadata.
pub const CF_META: &str = "meta";
/// Column family: per-message delivery state, by position (not derived: logged writes).
pub const CF_DELIVERY: &str = "delivery";
/// Column family: the due-time index of parked (far-delayed) messages.
pub const CF_DUE: &str = "due";
/// Column family: consumers' committed offsets.
pub const CF_CONSUMERS: &str = "consumers";
/// Column family: the dead-letter queue's index, by namespace and message id.
pub const CF_DLQ: &str = "dlq";
/// Column family: transaction records, by transaction id (not derived: logged writes).
pub const CF_TXN: &str = "txn";

/// Every column family of format 1 (`delivery` to `dlq` were added with delivery, `txn` with
/// transactions; a store without them gets them created empty at open).
pub const ALL_CFS: [&str; 11] = [
    CF_MESSAGES,
    CF_IDEMPOTENCY,
    CF_NAMESPACES,
    CF_WATERMARKS,
    CF_OFFSETS,
    CF_META,
    CF_DELIVERY,
    CF_DUE,
    CF_CONSUMERS,
    CF_DLQ,
    CF_TXN,
];

/// `namespace \0`: the prefix of a namespace's keys in `idempotency`, `watermarks`, `offsets`.
#[must_use]
pub fn ns_prefix(namespace: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k
}

/// The first key after every key starting with `prefix` (`prefix` ends in a byte < 0xFF
/// for every prefix built here: `\0` or a partition whose last byte is incremented).
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of 0xFF bytes gets here: there is no key after it; an empty upper
    // bound is never produced by this module's prefixes.
    Vec::new()
}

/// Watermark key, also the prefix of a partition's `offsets` keys.
#[must_use]
pub fn partition_key(namespace: &str, partition: u32) -> Vec<u8> {
    let mut k = ns_prefix(namespace);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// `offsets` key.
#[must_use]
pub fn offset_key(namespace: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = partition_key(namespace, partition);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The offset in an `offsets` key of the given partition prefix length.
#[must_use]
pub fn offset_of_key(key: &[u8], prefix_len: usize) -> Option<u64> {
    let tail = key.get(prefix_len..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// `meta` key of a namespace's idempotency window.
#[must_use]
pub fn window_key(namespace: &str) -> Vec<u8> {
    let mut k = META_WINDOW_PREFIX.to_vec();
    k.extend_from_slice(namespace.as_bytes());
    k
}

/// `idempotency` key.
#[must_use]
pub fn idem_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = ns_prefix(namespace);
    k.extend_from_slice(key.as_bytes());
    k
}

fn corrupt(cf: &'static str, key: &[u8], reason: &'static str) -> StateError {
    StateError::Corrupt {
        cf,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn check_version(cf: &'static str, key: &[u8], v: &[u8]) -> Result<(), StateError> {
    match v.first() {
        Some(&VALUE_V1) => Ok(()),
        Some(_) => Err(corrupt(cf, key, "unknown value version")),
        None => Err(corrupt(cf, key, "empty value")),
    }
}

/// Encodes a watermark.
#[must_use]
pub fn encode_watermark(next: u64) -> [u8; 8] {
    next.to_be_bytes()
}

/// Decodes a watermark.
pub fn decode_watermark(key: &[u8], v: &[u8]) -> Result<u64, StateError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| corrupt(CF_WATERMARKS, key, "watermark is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}

/// Encodes a `messages` value.
#[must_use]
pub fn encode_location(l: &Location) -> Vec<u8> {
    let mut v = Vec::with_capacity(21 + l.namespace.len());
    v.push(VALUE_V1);
    v.extend_from_slice(&l.partition.to_be_bytes());
    v.extend_from_slice(&l.offset.to_be_bytes());
    v.extend_from_slice(&l.accepted_at_ms.to_be_bytes());
    v.extend_from_slice(l.namespace.as_bytes());
    v
}

/// Decodes a `messages` value.
pub fn decode_location(key: &[u8], v: &[u8]) -> Result<Location, StateError> {
    check_version(CF_MESSAGES, key, v)?;
    let short = || corrupt(CF_MESSAGES, key, "location value too short");
    let partition = u32_at(v, 1).ok_or_else(short)?;
    let offset = u64_at(v, 5).ok_or_else(short)?;
    let accepted_at_ms = u64_at(v, 13).ok_or_else(short)?;
    let namespace = std::str::from_utf8(v.get(21..).ok_or_else(short)?)
        .map_err(|_| corrupt(CF_MESSAGES, key, "namespace is not UTF-8"))?
        .to_owned();
    Ok(Location {
        namespace,
        partition,
        offset,
        accepted_at_ms,
    })
}

/// Encodes an `idempotency` value.
#[must_use]
pub fn encode_idem(e: &IdemEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(21 + e.message_id.len());
    v.push(VALUE_V1);
    v.extend_from_slice(&e.expires_at_ms.to_be_bytes());
    v.extend_from_slice(&e.partition.to_be_bytes());
    v.extend_from_slice(&e.offset.to_be_bytes());
    v.extend_from_slice(e.message_id.as_bytes());
    v
}

/// Decodes an `idempotency` value.
pub fn decode_idem(key: &[u8], v: &[u8]) -> Result<IdemEntry, StateError> {
    check_version(CF_IDEMPOTENCY, key, v)?;
    let short = || corrupt(CF_IDEMPOTENCY, key, "idempotency value too short");
    let expires_at_ms = u64_at(v, 1).ok_or_else(short)?;
    let partition = u32_at(v, 9).ok_or_else(short)?;
    let offset = u64_at(v, 13).ok_or_else(short)?;
    let message_id = std::str::from_utf8(v.get(21..).ok_or_else(short)?)
        .map_err(|_| corrupt(CF_IDEMPOTENCY, key, "message id is not UTF-8"))?
        .to_owned();
    Ok(IdemEntry {
        message_id,
        partition,
        offset,
        expires_at_ms,
    })
}

/// The expiry of an `idempotency` value, read without decoding the rest.
pub fn idem_expires_at(key: &[u8], v: &[u8]) -> Result<u64, StateError> {
    check_version(CF_IDEMPOTENCY, key, v)?;
    u64_at(v, 1).ok_or_else(|| corrupt(CF_IDEMPOTENCY, key, "idempotency value too short"))
}

/// What the `offsets` reverse index holds for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    /// The message id.
    pub message_id: String,
    /// The idempotency key, when the record has one.
    pub idempotency_key: Option<String>,
}

/// Encodes an `offsets` value.
pub fn encode_offset_entry(
    message_id: &str,
    idempotency_key: Option<&str>,
) -> Result<Vec<u8>, StateError> {
    let id_len = u32::try_from(message_id.len()).map_err(|_| StateError::InvalidInput {
        what: "message id",
        reason: "longer than 4 GiB".into(),
    })?;
    let idem = idempotency_key.unwrap_or("");
    let mut v = Vec::with_capacity(6 + message_id.len() + idem.len());
    v.push(VALUE_V1);
    v.push(u8::from(idempotency_key.is_some()));
    v.extend_from_slice(&id_len.to_be_bytes());
    v.extend_from_slice(message_id.as_bytes());
    v.extend_from_slice(idem.as_bytes());
    Ok(v)
}

/// Decodes an `offsets` value.
pub fn decode_offset_entry(key: &[u8], v: &[u8]) -> Result<OffsetEntry, StateError> {
    check_version(CF_OFFSETS, key, v)?;
    let short = || corrupt(CF_OFFSETS, key, "offset entry too short");
    let flags = *v.get(1).ok_or_else(short)?;
    let id_len = usize::try_from(u32_at(v, 2).ok_or_else(short)?).map_err(|_| short())?;
    let id_end = 6usize.checked_add(id_len).ok_or_else(short)?;
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| corrupt(CF_OFFSETS, key, "id is not UTF-8"))
    };
    let message_id = utf8(v.get(6..id_end).ok_or_else(short)?)?;
    let rest = v.get(id_end..).ok_or_else(short)?;
    let idempotency_key = if flags & 1 == 1 {
        Some(utf8(rest)?)
    } else {
        None
    };
    Ok(OffsetEntry {
        message_id,
        idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trip_and_golden_bytes() {
        let l = Location {
            namespace: "orders".into(),
            partition: 3,
            offset: 0x0102,
            accepted_at_ms: 7,
        };
        let v = encode_location(&l);
        let mut golden = vec![
            1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        golden.extend_from_slice(b"orders");
        assert_eq!(v, golden);
        assert_eq!(decode_location(b"k", &v).unwrap(), l);
        assert!(matches!(
            decode_location(b"k", &v[..10]),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_location(b"k", &[9]),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_location(b"k", &[]),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn idem_round_trip() {
        let e = IdemEntry {
            message_id: "wal_1_x".into(),
            partition: 1,
            offset: 99,
            expires_at_ms: 123_456,
        };
        let v = encode_idem(&e);
        assert_eq!(decode_idem(b"k", &v).unwrap(), e);
        assert_eq!(idem_expires_at(b"k", &v).unwrap(), 123_456);
        assert!(decode_idem(b"k", &v[..20]).is_err());
    }

    #[test]
    fn offset_entry_round_trip() {
        for idem in [None, Some(""), Some("key-1")] {
            let v = encode_offset_entry("wal_1_abc", idem).unwrap();
            let e = decode_offset_entry(b"k", &v).unwrap();
            assert_eq!(e.message_id, "wal_1_abc");
            assert_eq!(e.idempotency_key.as_deref(), idem);
        }
        let v = encode_offset_entry("wal_1_abc", None).unwrap();
        assert!(decode_offset_entry(b"k", &v[..8]).is_err());
        let mut bad = v.clone();
        bad[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_offset_entry(b"k", &bad).is_err());
    }

    #[test]
    fn keys_sort_by_partition_then_offset() {
        let a = offset_key("ns", 1, 255);
        let b = offset_key("ns", 1, 256);
        let c = offset_key("ns", 2, 0);
        assert!(a < b && b < c);
        let p = partition_key("ns", 1);
        assert!(a.starts_with(&p) && a < prefix_end(&p) && c >= prefix_end(&p));
        assert_eq!(offset_of_key(&b, p.len()), Some(256));
        // A namespace's prefix never covers another namespace that extends its name.
        let ns = ns_prefix("ab");
        assert!(idem_key("abc", "k") >= prefix_end(&ns) || !idem_key("abc", "k").starts_with(&ns));
        assert!(!idem_key("abc", "k").starts_with(&ns));
        assert_eq!(prefix_end(&[1, 0xFF]), vec![2]);
        assert_eq!(decode_watermark(b"k", &encode_watermark(42)).unwrap(), 42);
        assert!(decode_watermark(b"k", &[1, 2]).is_err());
    }
}

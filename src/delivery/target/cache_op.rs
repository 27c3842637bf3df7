//! The seeds' cache operations, read from a message's payload; shared by the Redis and the
//! in-memory cache targets.
//!
//! ```json
//! {"operation": "SET", "key": "k", "value": <any JSON>, "ttlSeconds": 60}
//! {"operation": "DEL", "key": "k"}
//! {"operation": "EXPIRE", "key": "k", "ttlSeconds": 60}
//! {"operation": "HSET", "key": "k", "fields": {"f": <any JSON>}, "ttlSeconds": 60}
//! ```
//!
//! A value is stored as its JSON text, or as the string itself when it is a JSON string. A
//! payload without `operation` is a SET of the whole payload (its exact bytes) under its
//! `key`. The target's `keyPrefix` goes before every key; its `ttlSeconds` is the TTL of a SET
//! that names none.

use serde_json::{Map, Value};

use super::{ErrorClass, TargetError};

/// One cache operation, keys already prefixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheOp {
    /// Store `value` under `key`, expiring after `ttl` seconds if given.
    Set {
        key: String,
        value: String,
        ttl: Option<u64>,
    },
    /// Remove `key`.
    Del { key: String },
    /// Let `key` expire after `ttl` seconds.
    Expire { key: String, ttl: u64 },
    /// Set fields of the hash at `key` (then let it expire after `ttl` seconds if given).
    HSet {
        key: String,
        fields: Vec<(String, String)>,
        ttl: Option<u64>,
    },
}

fn bad(message: impl Into<String>) -> TargetError {
    TargetError::permanent(ErrorClass::BadPayload, message)
}

/// A JSON value as stored: a string as itself, anything else as its JSON text.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn key_of(obj: &Map<String, Value>, prefix: &str) -> Result<String, TargetError> {
    match obj.get("key") {
        Some(Value::String(k)) if !k.is_empty() => Ok(format!("{prefix}{k}")),
        Some(Value::Number(n)) => Ok(format!("{prefix}{n}")),
        Some(Value::String(_)) => Err(bad("`key` must not be empty")),
        Some(_) => Err(bad("`key` must be a string")),
        None => Err(bad("the payload has no `key`")),
    }
}

fn ttl_of(obj: &Map<String, Value>, min: u64) -> Result<Option<u64>, TargetError> {
    match obj.get("ttlSeconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(t) if t >= min && u32::try_from(t).is_ok() => Ok(Some(t)),
            _ => Err(bad(format!(
                "`ttlSeconds` must be an integer between {min} and {}",
                u32::MAX
            ))),
        },
    }
}

/// The key whose value a SET or DEL replaces (what a snapshot reads), or why there is none.
pub(crate) fn snapshot_key(op: &CacheOp) -> Result<&str, super::Snapshot> {
    match op {
        CacheOp::Set { key, .. } | CacheOp::Del { key } => Ok(key),
        CacheOp::Expire { .. } | CacheOp::HSet { .. } => Err(super::Snapshot::Unsupported(
            "only the value of a SET or DEL is captured".to_owned(),
        )),
    }
}

/// A captured cache entry: `{"value": <string>, "ttlSeconds": <n>}`.
pub(crate) fn captured(value: String, ttl_secs: Option<u64>) -> super::Snapshot {
    let mut m = Map::new();
    m.insert("value".to_owned(), Value::String(value));
    if let Some(t) = ttl_secs {
        m.insert("ttlSeconds".to_owned(), Value::from(t.max(1)));
    }
    super::Snapshot::Present(m)
}

/// Reads the operation of `payload`; `prefix` goes before the key, `default_ttl` is the TTL
/// of a SET without `ttlSeconds`.
pub(crate) fn parse(
    payload: &[u8],
    prefix: &str,
    default_ttl: Option<u64>,
) -> Result<CacheOp, TargetError> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("the payload is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(bad("the payload must be a JSON object"));
    };
    let op = match obj.get("operation") {
        None | Some(Value::Null) => {
            let key = key_of(&obj, prefix).map_err(|e| {
                bad(format!(
                    "{} (a payload without `operation` is stored whole under its `key`)",
                    e.message
                ))
            })?;
            let value = String::from_utf8_lossy(payload).into_owned();
            return Ok(CacheOp::Set {
                key,
                value,
                ttl: default_ttl,
            });
        }
        Some(Value::String(s)) => s.to_ascii_uppercase(),
        Some(_) => return Err(bad("`operation` must be a string")),
    };
    let key = key_of(&obj, prefix)?;
    match op.as_str() {
        "SET" => {
            let value = obj
                .get("value")
                .ok_or_else(|| bad("a SET needs a `value`"))?;
            Ok(CacheOp::Set {
                key,
                value: value_text(value),
                ttl: ttl_of(&obj, 1)?.or(default_ttl),
            })
        }
        "DEL" | "DELETE" => Ok(CacheOp::Del { key }),
        "EXPIRE" => {
            let ttl = ttl_of(&obj, 0)?.ok_or_else(|| bad("an EXPIRE needs `ttlSeconds`"))?;
            Ok(CacheOp::Expire { key, ttl })
        }
        "HSET" => {
            let fields = match obj.get("fields") {
                Some(Value::Object(f)) if !f.is_empty() => {
                    f.iter().map(|(k, v)| (k.clone(), value_text(v))).collect()
                }
                Some(Value::Object(_)) => return Err(bad("`fields` must not be empty")),
                Some(_) => return Err(bad("`fields` must be an object")),
                None => return Err(bad("an HSET needs `fields` (an object)")),
            };
            Ok(CacheOp::HSet {
                key,
                fields,
                ttl: ttl_of(&obj, 1)?,
            })
        }
        other => Err(bad(format!(
            "unknown operation `{other}` (SET, DEL, EXPIRE or HSET)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seeds_operations() {
        let p = |s: &str| parse(s.as_bytes(), "p:", Some(9));
        assert_eq!(
            p(r#"{"operation":"SET","key":"k","value":{"a":1}}"#).unwrap(),
            CacheOp::Set {
                key: "p:k".into(),
                value: r#"{"a":1}"#.into(),
                ttl: Some(9)
            }
        );
        assert_eq!(
            p(r#"{"operation":"set","key":"k","value":"v","ttlSeconds":5}"#).unwrap(),
            CacheOp::Set {
                key: "p:k".into(),
                value: "v".into(),
                ttl: Some(5)
            }
        );
        assert_eq!(
            p(r#"{"operation":"DEL","key":"k"}"#).unwrap(),
            CacheOp::Del { key: "p:k".into() }
        );
        assert_eq!(
            p(r#"{"operation":"EXPIRE","key":"k","ttlSeconds":3}"#).unwrap(),
            CacheOp::Expire {
                key: "p:k".into(),
                ttl: 3
            }
        );
        assert_eq!(
            p(r#"{"operation":"HSET","key":"h","fields":{"a":"x","b":2}}"#).unwrap(),
            CacheOp::HSet {
                key: "p:h".into(),
                fields: vec![("a".into(), "x".into()), ("b".into(), "2".into())],
                ttl: None
            }
        );
        let whole = r#"{"key":"k", "n":1}"#;
        assert_eq!(
            p(whole).unwrap(),
            CacheOp::Set {
                key: "p:k".into(),
                value: whole.into(),
                ttl: Some(9)
            }
        );
    }

    #[test]
    fn refuses_bad_payloads_permanently() {
        for (payload, needle) in [
            (r#"{"n":1}"#, "no `key`"),
            (r#"{"operation":"SET","key":"k"}"#, "`value`"),
            (r#"{"operation":"EXPIRE","key":"k"}"#, "ttlSeconds"),
            (r#"{"operation":"HSET","key":"k","fields":[]}"#, "fields"),
            (r#"{"operation":"FLUSHALL","key":"k"}"#, "unknown operation"),
            (
                r#"{"operation":"SET","key":"k","value":1,"ttlSeconds":0}"#,
                "ttlSeconds",
            ),
            ("[1]", "object"),
            ("nope", "not JSON"),
        ] {
            let e = parse(payload.as_bytes(), "", None).unwrap_err();
            assert!(!e.retryable, "{payload}");
            assert_eq!(e.class, ErrorClass::BadPayload);
            assert!(e.message.contains(needle), "{payload}: {}", e.message);
        }
    }
}

//! What a mutation sends to its target, and how it is undone: the payload of an operation
//! for each target type, and the inverse derived from what the target held before.
//!
//! | mutation | before | inverse |
//! |---|---|---|
//! | INSERT (database) | — | DELETE by the row's key |
//! | UPDATE (database) | the row | UPDATE back to the captured row (none: nothing to undo) |
//! | UPSERT (database) | the row | UPDATE back to it; none: DELETE by key |
//! | DELETE (database) | the row | INSERT the captured row (none: nothing to undo) |
//! | SET (cache) | the value | SET the captured value (and its TTL); none: DEL |
//! | DEL (cache) | the value | SET the captured value (and its TTL); none: nothing to undo |
//! | EXPIRE, HSET, HTTP, APPEND | — | none: give an explicit `compensation` |

use serde_json::{Map, Value};

use super::record::Inverse;
use crate::delivery::target::Snapshot;
use crate::model::target::{TargetConfig, TargetType};
use crate::model::transaction::{key_columns, MutationSpec, Operation};

/// The payload that applies `op` with `data` on a target of `target`'s type (the shape the
/// target adapters read: docs/DELIVERY.md).
#[must_use]
pub fn payload(
    op: Operation,
    target: &TargetConfig,
    data: &Map<String, Value>,
    key: Option<&[String]>,
) -> Vec<u8> {
    let v = match target.kind {
        TargetType::Database => {
            let mut m = Map::new();
            m.insert("operation".into(), Value::from(op.as_str()));
            m.insert("data".into(), Value::Object(data.clone()));
            if let Some(k) = key {
                m.insert(
                    "key".into(),
                    Value::Array(k.iter().cloned().map(Value::String).collect()),
                );
            }
            Value::Object(m)
        }
        TargetType::Cache => {
            let mut m = data.clone();
            m.insert("operation".into(), Value::from(op.as_str()));
            Value::Object(m)
        }
        _ => Value::Object(data.clone()),
    };
    // Serialising a JSON value cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Whether the inverse of `op` needs what the target holds before it (a snapshot).
#[must_use]
pub fn needs_snapshot(op: Operation) -> bool {
    matches!(
        op,
        Operation::Update | Operation::Upsert | Operation::Delete | Operation::Set | Operation::Del
    )
}

/// The inverse of a mutation, from the snapshot taken before its first attempt (`None` for
/// operations that need none).
#[must_use]
pub fn derive(spec: &MutationSpec, snapshot: Option<Snapshot>) -> Inverse {
    use Operation as Op;
    let restore_cache = |key: &Value, m: Map<String, Value>| {
        let mut d = m;
        d.insert("key".into(), key.clone());
        Inverse::Apply {
            operation: Op::Set,
            data: d,
        }
    };
    let key_only = |d: &Map<String, Value>| {
        let mut m = Map::new();
        if let Some(k) = d.get("key") {
            m.insert("key".into(), k.clone());
        }
        m
    };
    match (spec.operation, snapshot) {
        (_, Some(Snapshot::Unsupported(reason))) => Inverse::Unavailable { reason },
        (Op::Insert, _) => {
            let keys = key_columns(&spec.target, spec.key.as_deref());
            match keys
                .iter()
                .find(|k| spec.data.get(*k).is_none_or(Value::is_null))
            {
                Some(k) => Inverse::Unavailable {
                    reason: format!(
                        "the inserted row's key column `{k}` is not in the data, so it cannot be deleted by key"
                    ),
                },
                None => Inverse::Apply {
                    operation: Op::Delete,
                    data: spec.data.clone(),
                },
            }
        }
        (Op::Update | Op::Upsert, Some(Snapshot::Present(row))) => Inverse::Apply {
            operation: Op::Update,
            data: row,
        },
        (Op::Upsert, Some(Snapshot::Absent)) => Inverse::Apply {
            operation: Op::Delete,
            data: spec.data.clone(),
        },
        (Op::Delete, Some(Snapshot::Present(row))) => Inverse::Apply {
            operation: Op::Insert,
            data: row,
        },
        (Op::Update | Op::Delete | Op::Del, Some(Snapshot::Absent)) => Inverse::Noop,
        (Op::Set | Op::Del, Some(Snapshot::Present(v))) => {
            restore_cache(spec.data.get("key").unwrap_or(&Value::Null), v)
        }
        (Op::Set, Some(Snapshot::Absent)) => Inverse::Apply {
            operation: Op::Del,
            data: key_only(&spec.data),
        },
        (op, None) if needs_snapshot(op) => Inverse::Unavailable {
            reason: format!("the value before the {} was not captured", op.as_str()),
        },
        (op, _) => Inverse::Unavailable {
            reason: format!(
                "{} has no derived inverse; give the mutation an explicit `compensation`",
                op.as_str()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[allow(clippy::needless_pass_by_value)]
    fn spec(op: Operation, kind: &str, data: Value) -> MutationSpec {
        let target = if kind == "database" {
            json!({"type": "database", "identifier": "db", "config": {"type": "postgresql",
                   "host": "h", "port": 1, "database": "d", "table": "t"}})
        } else {
            json!({"type": "cache", "identifier": "c", "config": {"type": "in_memory"}})
        };
        MutationSpec {
            partition: "p".into(),
            operation: op,
            target: serde_json::from_value(target).unwrap(),
            data: data.as_object().unwrap().clone(),
            key: None,
            compensation: None,
        }
    }

    #[allow(clippy::needless_pass_by_value)]
    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn payloads_follow_the_target_type() {
        let s = spec(Operation::Update, "database", json!({"id": 1, "n": 2}));
        let p: Value = serde_json::from_slice(&payload(
            s.operation,
            &s.target,
            &s.data,
            Some(&["id".to_owned()]),
        ))
        .unwrap();
        assert_eq!(
            p,
            json!({"operation": "UPDATE", "data": {"id": 1, "n": 2}, "key": ["id"]})
        );
        let s = spec(Operation::Set, "cache", json!({"key": "k", "value": 1}));
        let p: Value =
            serde_json::from_slice(&payload(s.operation, &s.target, &s.data, None)).unwrap();
        assert_eq!(p, json!({"operation": "SET", "key": "k", "value": 1}));
    }

    #[test]
    fn inverses() {
        let ins = spec(Operation::Insert, "database", json!({"id": 1, "n": 2}));
        assert_eq!(
            derive(&ins, None),
            Inverse::Apply {
                operation: Operation::Delete,
                data: obj(json!({"id": 1, "n": 2}))
            }
        );
        let no_key = spec(Operation::Insert, "database", json!({"n": 2}));
        assert!(matches!(derive(&no_key, None), Inverse::Unavailable { .. }));

        let upd = spec(Operation::Update, "database", json!({"id": 1, "n": 3}));
        let row = obj(json!({"id": 1, "n": 2, "m": "x"}));
        assert_eq!(
            derive(&upd, Some(Snapshot::Present(row.clone()))),
            Inverse::Apply {
                operation: Operation::Update,
                data: row.clone()
            }
        );
        assert_eq!(derive(&upd, Some(Snapshot::Absent)), Inverse::Noop);
        let del = spec(Operation::Delete, "database", json!({"id": 1}));
        assert_eq!(
            derive(&del, Some(Snapshot::Present(row.clone()))),
            Inverse::Apply {
                operation: Operation::Insert,
                data: row
            }
        );
        let ups = spec(Operation::Upsert, "database", json!({"id": 1, "n": 3}));
        assert!(matches!(
            derive(&ups, Some(Snapshot::Absent)),
            Inverse::Apply {
                operation: Operation::Delete,
                ..
            }
        ));

        let set = spec(Operation::Set, "cache", json!({"key": "k", "value": 1}));
        assert_eq!(
            derive(
                &set,
                Some(Snapshot::Present(obj(
                    json!({"value": "old", "ttlSeconds": 9})
                )))
            ),
            Inverse::Apply {
                operation: Operation::Set,
                data: obj(json!({"key": "k", "value": "old", "ttlSeconds": 9}))
            }
        );
        assert_eq!(
            derive(&set, Some(Snapshot::Absent)),
            Inverse::Apply {
                operation: Operation::Del,
                data: obj(json!({"key": "k"}))
            }
        );
        let del = spec(Operation::Del, "cache", json!({"key": "k"}));
        assert_eq!(derive(&del, Some(Snapshot::Absent)), Inverse::Noop);
        assert!(matches!(
            derive(&set, Some(Snapshot::Unsupported("hash".into()))),
            Inverse::Unavailable { reason } if reason == "hash"
        ));
        let exp = spec(
            Operation::Expire,
            "cache",
            json!({"key": "k", "ttlSeconds": 1}),
        );
        assert!(matches!(derive(&exp, None), Inverse::Unavailable { .. }));
    }
}

//! Multi-partition transactions at intake: a write whose `payload.transactions` lists two or
//! more mutations (the seeds' persona 3), checked and resolved against the namespace.
//!
//! ```json
//! {"transactions": [
//!   {"partition": "orders", "operation": "INSERT", "target": "orders-db",
//!    "data": {"id": 7, "total": 42}},
//!   {"partition": "cache", "operation": "SET", "target": {"type": "cache", ...},
//!    "data": {"key": "order:7", "value": {"total": 42}},
//!    "compensation": {"operation": "DEL", "data": {"key": "order:7"}}}
//! ]}
//! ```
//!
//! Every failing field is named by its path (`payload.transactions[2].target`). What is
//! executed is [`MutationSpec`]: the target resolved (an identifier of the namespace's
//! `targetConfigs`, or a target object), the operation checked against the target's type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::namespace::Namespace;
use super::target::{TargetConfig, TargetType};
use super::validate::{from_value, index, join, Errors};

/// The most mutations one transaction may carry.
pub const MAX_MUTATIONS: usize = 100;

/// What a mutation does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Insert a row (database).
    Insert,
    /// Update the row with the data's key (database).
    Update,
    /// Insert, or update on a key conflict (database).
    Upsert,
    /// Delete the row with the data's key (database).
    Delete,
    /// Set a key (cache).
    Set,
    /// Delete a key (cache).
    Del,
    /// Set a key's expiry (cache).
    Expire,
    /// Set fields of a hash (cache).
    Hset,
    /// Send the data to an HTTP service or webhook.
    Http,
    /// Append the data to a file.
    Append,
}

impl Operation {
    /// The operation's name, upper case.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Upsert => "UPSERT",
            Self::Delete => "DELETE",
            Self::Set => "SET",
            Self::Del => "DEL",
            Self::Expire => "EXPIRE",
            Self::Hset => "HSET",
            Self::Http => "HTTP",
            Self::Append => "APPEND",
        }
    }

    /// Parses an operation's name (any case).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "INSERT" => Self::Insert,
            "UPDATE" => Self::Update,
            "UPSERT" => Self::Upsert,
            "DELETE" => Self::Delete,
            "SET" => Self::Set,
            "DEL" => Self::Del,
            "EXPIRE" => Self::Expire,
            "HSET" => Self::Hset,
            "HTTP" => Self::Http,
            "APPEND" => Self::Append,
            _ => return None,
        })
    }

    /// The operations a target type accepts.
    #[must_use]
    pub fn for_target(kind: TargetType) -> &'static [Self] {
        match kind {
            TargetType::Database => &[Self::Insert, Self::Update, Self::Upsert, Self::Delete],
            TargetType::Cache => &[Self::Set, Self::Del, Self::Expire, Self::Hset],
            TargetType::HttpService | TargetType::Webhook => &[Self::Http],
            TargetType::FileSystem => &[Self::Append],
            TargetType::GrpcService | TargetType::Queue => &[],
        }
    }

    /// Whether wald can derive this operation's inverse (by capturing what it changes).
    #[must_use]
    pub fn has_derived_inverse(self) -> bool {
        matches!(
            self,
            Self::Insert | Self::Update | Self::Upsert | Self::Delete | Self::Set | Self::Del
        )
    }
}

/// A compensation given by the client: applied instead of the derived inverse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompensationSpec {
    /// What the compensation does.
    pub operation: Operation,
    /// Where (default: the mutation's target).
    pub target: TargetConfig,
    /// The compensation's data.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Key columns (database targets), from `conditions.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<String>>,
}

/// One mutation of a transaction, checked and resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationSpec {
    /// The mutation's partition: mutations of one partition run one after another in the
    /// order given; partitions run in parallel.
    pub partition: String,
    /// What it does.
    pub operation: Operation,
    /// Where.
    pub target: TargetConfig,
    /// Its data.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Key columns (database targets), from `conditions.key`; default: the target's
    /// `keyColumns`, else `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<String>>,
    /// The client's compensation, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationSpec>,
}

/// The raw shape of a mutation (checked field by field, so that every error is named).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutation {
    partition: Option<Value>,
    operation: Option<Value>,
    target: Option<Value>,
    data: Option<Value>,
    conditions: Option<Value>,
    compensation: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompensation {
    operation: Option<Value>,
    target: Option<Value>,
    data: Option<Value>,
    conditions: Option<Value>,
}

/// Whether a payload carries a `transactions` field (a cheap look before a full parse).
#[must_use]
pub fn mentions_transactions(payload: &str) -> bool {
    payload.contains("\"transactions\"")
}

/// Reads `payload.transactions`: `Ok(None)` when the payload has no `transactions` field,
/// else the resolved mutations or every failing field. `require_compensation`: a mutation
/// with neither an explicit compensation nor a derivable inverse is refused.
///
/// # Errors
/// Every failing field, named `payload.transactions[i]...`.
pub fn parse_transactions(
    payload: &str,
    ns: &Namespace,
    require_compensation: bool,
) -> Result<Option<Vec<MutationSpec>>, Vec<super::validate::FieldError>> {
    if !mentions_transactions(payload) {
        return Ok(None);
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(payload) else {
        return Ok(None);
    };
    let Some(list) = obj.remove("transactions") else {
        return Ok(None);
    };
    let path = "payload.transactions";
    let mut errs = Errors::new();
    let Value::Array(list) = list else {
        errs.push(path, "must be a list of mutations");
        return Err(errs.into_vec());
    };
    if list.len() < 2 || list.len() > MAX_MUTATIONS {
        errs.push(
            path,
            format!(
                "a transaction has 2 to {MAX_MUTATIONS} mutations, got {}",
                list.len()
            ),
        );
        return Err(errs.into_vec());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let p = index(path, i);
        if let Some(spec) = mutation(m, &p, ns, require_compensation, &mut errs) {
            out.push(spec);
        }
    }
    errs.into_result(out).map(Some)
}

fn mutation(
    v: &Value,
    path: &str,
    ns: &Namespace,
    require_compensation: bool,
    errs: &mut Errors,
) -> Option<MutationSpec> {
    let raw: RawMutation = typed(v, path, errs)?;
    let partition = match &raw.partition {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.push(join(path, "partition"), "must be 1 to 255 bytes");
            None
        }
        Some(_) => {
            errs.push(join(path, "partition"), "must be a string");
            None
        }
        None => {
            errs.push(join(path, "partition"), "is required");
            None
        }
    };
    let target = resolve_target(raw.target.as_ref(), &join(path, "target"), ns, errs);
    let (operation, data, key) = body(
        [&raw.operation, &raw.data, &raw.conditions],
        target.as_ref(),
        path,
        errs,
    );
    let compensation = raw
        .compensation
        .as_ref()
        .and_then(|c| compensation(c, &join(path, "compensation"), target.as_ref(), ns, errs));
    if require_compensation
        && raw.compensation.is_none()
        && operation.is_some_and(|o| !o.has_derived_inverse())
    {
        errs.push(
            join(path, "compensation"),
            format!(
                "is required: the namespace requires compensable transactions and {} has no derived inverse",
                operation.map_or("?", Operation::as_str)
            ),
        );
    }
    Some(MutationSpec {
        partition: partition?,
        operation: operation?,
        target: target?,
        data: data?,
        key,
        compensation: if raw.compensation.is_some() {
            Some(compensation?)
        } else {
            None
        },
    })
}

fn compensation(
    v: &Value,
    path: &str,
    default_target: Option<&TargetConfig>,
    ns: &Namespace,
    errs: &mut Errors,
) -> Option<CompensationSpec> {
    let raw: RawCompensation = typed(v, path, errs)?;
    let target = match &raw.target {
        Some(t) => resolve_target(Some(t), &join(path, "target"), ns, errs),
        None => default_target.cloned(),
    };
    let (operation, data, key) = body(
        [&raw.operation, &raw.data, &raw.conditions],
        target.as_ref(),
        path,
        errs,
    );
    Some(CompensationSpec {
        operation: operation?,
        target: target?,
        data: data?,
        key,
    })
}

/// `T` from a JSON value (an unknown or mistyped field named by its path).
fn typed<T: serde::de::DeserializeOwned>(v: &Value, path: &str, errs: &mut Errors) -> Option<T> {
    match from_value(v, path) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.extend([e]);
            None
        }
    }
}

/// A mutation's or compensation's checked `operation`, `data` and key columns (each absent
/// when invalid).
type Body = (
    Option<Operation>,
    Option<Map<String, Value>>,
    Option<Vec<String>>,
);

/// `operation`, `data` and `conditions` of a mutation or compensation, checked together
/// against the target.
fn body(
    [op, data_v, cond]: [&Option<Value>; 3],
    target: Option<&TargetConfig>,
    path: &str,
    errs: &mut Errors,
) -> Body {
    let operation = operation(op.as_ref(), path, target, errs);
    let data = data(data_v.as_ref(), &join(path, "data"), errs);
    let key = conditions(cond.as_ref(), &join(path, "conditions"), errs);
    if let (Some(op), Some(t), Some(d)) = (operation, target, &data) {
        check_data(op, t, d, key.as_deref(), path, errs);
    }
    (operation, data, key)
}

/// A target: an identifier of the namespace's targets, or a target object.
fn resolve_target(
    v: Option<&Value>,
    path: &str,
    ns: &Namespace,
    errs: &mut Errors,
) -> Option<TargetConfig> {
    match v {
        None | Some(Value::Null) => {
            errs.push(
                path,
                "is required (a target identifier of the namespace, or a target object)",
            );
            None
        }
        Some(Value::String(id)) => {
            let found = ns
                .target_configs
                .iter()
                .find(|t| t.identifier == *id)
                .cloned();
            if found.is_none() {
                errs.push(
                    path,
                    format!("unknown target identifier `{id}`: the namespace's targetConfigs have no such target"),
                );
            }
            found
        }
        Some(obj @ Value::Object(_)) => match from_value::<TargetConfig>(obj, path) {
            Ok(t) => {
                let before = errs.as_slice().len();
                t.check(path, errs);
                if let Some(why) = super::target_ref::ad_hoc_refusal(ns, &t) {
                    errs.push(path, why);
                }
                (errs.as_slice().len() == before).then_some(t)
            }
            Err(e) => {
                errs.extend([e]);
                None
            }
        },
        Some(_) => {
            errs.push(
                path,
                "must be a target identifier (string) or a target object",
            );
            None
        }
    }
}

fn operation(
    v: Option<&Value>,
    path: &str,
    target: Option<&TargetConfig>,
    errs: &mut Errors,
) -> Option<Operation> {
    let field = join(path, "operation");
    let op = match v {
        Some(Value::String(s)) => {
            let Some(op) = Operation::parse(s) else {
                errs.push(
                    field,
                    format!("unknown operation `{s}` (INSERT, UPDATE, UPSERT, DELETE, SET, DEL, EXPIRE, HSET, HTTP or APPEND)"),
                );
                return None;
            };
            op
        }
        Some(_) => {
            errs.push(field, "must be a string");
            return None;
        }
        None => {
            errs.push(field, "is required");
            return None;
        }
    };
    if let Some(t) = target {
        let allowed = Operation::for_target(t.kind);
        if !allowed.contains(&op) {
            let names: Vec<&str> = allowed.iter().map(|o| o.as_str()).collect();
            errs.push(
                field,
                format!(
                    "{} does not apply to a `{}` target (allowed: {})",
                    op.as_str(),
                    t.kind.as_str(),
                    if names.is_empty() {
                        "none: this target type is not supported".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            return None;
        }
    }
    Some(op)
}

fn data(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<Map<String, Value>> {
    match v {
        Some(Value::Object(m)) if !m.is_empty() => Some(m.clone()),
        Some(Value::Object(_)) => {
            errs.push(path, "must have at least one field");
            None
        }
        Some(_) => {
            errs.push(path, "must be an object");
            None
        }
        None => {
            errs.push(path, "is required");
            None
        }
    }
}

/// `conditions`: only `key` (a column name or a list of them) is understood.
fn conditions(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let obj = match v {
        None | Some(Value::Null) => return None,
        Some(Value::Object(o)) => o,
        Some(_) => {
            errs.push(path, "must be an object");
            return None;
        }
    };
    for k in obj.keys().filter(|k| *k != "key") {
        errs.push(
            join(path, k),
            "unknown condition (only `key`, the key columns of a database mutation, is understood)",
        );
    }
    match obj.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(vec![s.clone()]),
        Some(Value::Array(a))
            if !a.is_empty() && a.iter().all(|c| c.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Some(
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
            )
        }
        Some(_) => {
            errs.push(
                join(path, "key"),
                "must be a column name or a non-empty list of column names",
            );
            None
        }
    }
}

/// The key columns of a database mutation: `conditions.key`, else the target's
/// `keyColumns`, else `id`.
#[must_use]
pub fn key_columns(target: &TargetConfig, key: Option<&[String]>) -> Vec<String> {
    if let Some(k) = key {
        return k.to_vec();
    }
    match target.config.get("keyColumns") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        _ => vec!["id".to_owned()],
    }
}

/// What an operation needs in its data.
fn check_data(
    op: Operation,
    target: &TargetConfig,
    data: &Map<String, Value>,
    key: Option<&[String]>,
    path: &str,
    errs: &mut Errors,
) {
    let field = join(path, "data");
    match op {
        Operation::Update | Operation::Upsert | Operation::Delete => {
            for k in key_columns(target, key) {
                if data.get(&k).is_none_or(Value::is_null) {
                    errs.push(
                        join(&field, &k),
                        format!("is required: `{k}` is a key column of this {}", op.as_str()),
                    );
                }
            }
        }
        Operation::Set | Operation::Del | Operation::Expire | Operation::Hset => {
            if !matches!(data.get("key"), Some(Value::String(s)) if !s.is_empty()) {
                errs.push(join(&field, "key"), "is required (a non-empty string)");
            }
            if op == Operation::Set && !data.contains_key("value") {
                errs.push(join(&field, "value"), "is required for SET");
            }
        }
        Operation::Insert | Operation::Http | Operation::Append => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns() -> Namespace {
        let mut ns = Namespace::new("shop");
        ns.target_configs = serde_json::from_value(json!([{
            "type": "database", "identifier": "orders-db",
            "config": {"type": "postgresql", "host": "127.0.0.1", "port": 5432,
                       "database": "shop", "table": "orders"}
        }, cache_object(), hook_object()]))
        .unwrap();
        ns
    }

    fn cache_object() -> Value {
        json!({"type": "cache", "identifier": "c",
               "config": {"type": "redis", "host": "127.0.0.1", "port": 6379}})
    }

    fn hook_object() -> Value {
        json!({"type": "webhook", "identifier": "h", "config": {"url": "http://127.0.0.1:9/x"}})
    }

    /// The namespace's cache, by identifier.
    fn cache() -> Value {
        json!("c")
    }

    #[test]
    fn target_objects_only_where_the_namespace_accepts_them_and_only_http() {
        let body = |t: Value| {
            json!({"transactions": [
                {"partition": "a", "operation": "INSERT", "target": "orders-db", "data": {"id": 1}},
                {"partition": "b", "operation": "HTTP", "target": t, "data": {"x": 1}}]})
            .to_string()
        };
        let mut open = ns();
        let e = parse_transactions(&body(hook_object()), &open, false).unwrap_err();
        assert_eq!(e[0].field, "payload.transactions[1].target", "{e:?}");
        assert!(e[0].message.contains("adHocTargets"), "{e:?}");
        open.ad_hoc_targets = true;
        assert!(parse_transactions(&body(hook_object()), &open, false).is_ok());
        let set = json!({"transactions": [
            {"partition": "a", "operation": "INSERT", "target": "orders-db", "data": {"id": 1}},
            {"partition": "b", "operation": "SET", "target": cache_object(), "data": {"key": "k", "value": 1}}]})
        .to_string();
        let e = parse_transactions(&set, &open, false).unwrap_err();
        assert!(
            e[0].message.contains("only webhook or http_service"),
            "{e:?}"
        );
    }

    #[allow(clippy::needless_pass_by_value)]
    fn parse(v: Value) -> Result<Option<Vec<MutationSpec>>, Vec<String>> {
        parse_transactions(&v.to_string(), &ns(), false).map_err(|e| {
            e.into_iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect()
        })
    }

    #[test]
    fn resolves_identifiers_and_objects() {
        let m = parse(json!({"transactions": [
            {"partition": "a", "operation": "insert", "target": "orders-db", "data": {"id": 1, "n": 2}},
            {"partition": "b", "operation": "SET", "target": cache(), "data": {"key": "k", "value": 1},
             "compensation": {"operation": "DEL", "data": {"key": "k"}}}
        ]}))
        .unwrap()
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].operation, Operation::Insert);
        assert_eq!(m[0].target.identifier, "orders-db");
        assert_eq!(m[1].target.identifier, "c");
        let c = m[1].compensation.as_ref().unwrap();
        assert_eq!(c.operation, Operation::Del);
        assert_eq!(
            c.target.identifier, "c",
            "defaults to the mutation's target"
        );
        assert_eq!(parse(json!({"a": 1})).unwrap(), None);
    }

    #[test]
    fn names_every_bad_field() {
        let e = parse(
            json!({"transactions": [{"partition": "a", "operation": "SET", "target": cache(),
                                               "data": {"key": "k", "value": 1}}]}),
        )
        .unwrap_err();
        assert!(e[0].starts_with("payload.transactions: "), "{e:?}");
        let e = parse(json!({"transactions": [
            {"partition": "a", "operation": "INSERT", "target": "nope", "data": {"id": 1}},
            {"partition": "b", "operation": "SET", "target": cache()},
            {"operation": "DELETE", "target": "orders-db", "data": {"n": 1}, "conditions": {"where": 1}},
            {"partition": "d", "operation": "SET", "target": "orders-db", "data": {"id": 1}, "extra": 1}
        ]}))
        .unwrap_err();
        let has =
            |needle: &str| assert!(e.iter().any(|m| m.starts_with(needle)), "{needle} in {e:?}");
        has("payload.transactions[0].target: unknown target identifier `nope`");
        has("payload.transactions[1].data: is required");
        has("payload.transactions[2].partition: is required");
        has("payload.transactions[2].data.id: is required");
        has("payload.transactions[2].conditions.where: unknown condition");
        has("payload.transactions[3]");
    }

    #[test]
    fn operations_must_fit_the_target() {
        let e = parse(json!({"transactions": [
            {"partition": "a", "operation": "SET", "target": "orders-db", "data": {"id": 1}},
            {"partition": "b", "operation": "MERGE", "target": cache(), "data": {"key": "k"}}
        ]}))
        .unwrap_err();
        assert!(
            e[0].contains("transactions[0].operation: SET does not apply to a `database` target"),
            "{e:?}"
        );
        assert!(
            e[1].contains("transactions[1].operation: unknown operation `MERGE`"),
            "{e:?}"
        );
    }

    #[test]
    fn compensable_namespaces_refuse_mutations_without_an_inverse() {
        let hook = json!("h");
        let body = json!({"transactions": [
            {"partition": "a", "operation": "HTTP", "target": hook, "data": {"x": 1}},
            {"partition": "b", "operation": "HTTP", "target": hook, "data": {"x": 1},
             "compensation": {"operation": "HTTP", "data": {"undo": 1}}}
        ]})
        .to_string();
        let e = parse_transactions(&body, &ns(), true).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "payload.transactions[0].compensation");
        assert!(parse_transactions(&body, &ns(), false).is_ok());
    }
}

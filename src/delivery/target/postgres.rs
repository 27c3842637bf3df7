//! The PostgreSQL `database` target: writes the payload's fields into the configured table.
//!
//! ```json
//! {"operation": "INSERT" | "UPSERT" | "UPDATE" | "DELETE", "data": {"col": <JSON>, ...}, "key": ["id"]}
//! ```
//!
//! `operation` defaults to INSERT; without `data` the row is the whole payload (less
//! `operation` and `key` when those are present). `key` (a column name or a list of them) is
//! the conflict target of UPSERT and the `WHERE` of UPDATE and DELETE; default: the config's
//! `keyColumns`, else `["id"]`. Column names must be plain identifiers
//! (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes) and are quoted, so they match the table's
//! columns exactly (case included). Values are never put into the SQL text: the row travels
//! as one JSON parameter and PostgreSQL types it by the table's own columns with
//! `json_populate_record(NULL::table, $1)`, so `42` fills an `integer`, `"2024-01-01"` a
//! `date`, and an object a `jsonb` column.
//!
//! Connection: config `host`, `port`, `database`, and the extra fields `user` (default
//! `postgres`) and `password` (optional); no TLS. One connection per (host, port, database,
//! user, SHA-256 of the password), shared by the targets using it, reopened after it breaks:
//! a target with another or no password never gets another's authenticated session, and a
//! changed password opens a new one. The host is resolved and every address checked by the
//! egress policy; the connection goes to an allowed address (a refused host is a permanent
//! `egress_denied` failure). Each statement runs under `timeoutMs` (else the service's
//! timeout).
//!
//! Errors by SQLSTATE: connection failures (class 08, or no answer), serialization failures
//! (40001), deadlocks (40P01), resource and operator-intervention classes (53, 57, 58) and
//! lock timeouts (55P03) are retryable; bad data (class 22) and unknown columns (42703) are
//! permanent `bad_payload`; a missing table, missing database or refused login permanent
//! `config`; constraint violations (class 23) and the rest permanent `remote`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{
    egress_error, extra_str, extra_timeout, guarded, DeliverFuture, Delivery, ErrorClass, Snapshot,
    SnapshotFuture, Target, TargetContext, TargetError,
};
use crate::egress::EgressPolicy;
use crate::model::target::{check_sql_table, DatabaseTargetConfig};
use crate::model::validate::FieldError;

/// What identifies a shared PostgreSQL connection: the server, the database, the user and
/// the SHA-256 of the password (none: no password).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerKey {
    host: String,
    port: u16,
    database: String,
    user: String,
    password_sha256: Option<[u8; 32]>,
}

/// One lazily opened, shared connection to a database as a user.
pub(crate) struct PgConn {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    egress: Arc<EgressPolicy>,
    label: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("server", &self.label)
            .finish_non_exhaustive()
    }
}

impl PgConn {
    pub(crate) fn new(key: &ServerKey, password: Option<&str>, egress: Arc<EgressPolicy>) -> Self {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&key.host)
            .port(key.port)
            .dbname(&key.database)
            .user(&key.user)
            .application_name("wald");
        if let Some(p) = password {
            config.password(p);
        }
        Self {
            config,
            host: key.host.clone(),
            port: key.port,
            egress,
            label: format!(
                "postgresql://{}@{}:{}/{}",
                key.user, key.host, key.port, key.database
            ),
            client: Mutex::new(None),
        }
    }

    /// The open connection, (re)opening it when there is none or it closed.
    async fn get(&self) -> Result<Arc<Client>, TargetError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let addrs = self
            .egress
            .resolve(&self.host, self.port)
            .await
            .map_err(|e| egress_error(&self.label, &e))?;
        // Each address was checked; connect to it (not to the name) and speak PostgreSQL
        // over that socket.
        let mut last = None;
        let mut opened = None;
        for addr in addrs {
            let stream = match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(TargetError::retryable(
                        ErrorClass::Connection,
                        format!("{} ({addr}): {e}", self.label),
                    ));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.config.connect_raw(stream, NoTls).await {
                Ok(pair) => {
                    opened = Some(pair);
                    break;
                }
                Err(e) => {
                    let mut err = classify(&e);
                    err.message = format!("{} ({addr}): {}", self.label, err.message);
                    last = Some(err);
                }
            }
        }
        let Some((client, connection)) = opened else {
            return Err(last.unwrap_or_else(|| {
                TargetError::retryable(
                    ErrorClass::Connection,
                    format!("{}: no address", self.label),
                )
            }));
        };
        let label = self.label.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = %label, error = %e, "postgresql connection closed");
            }
        });
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Forgets the connection (it broke or hangs); the next statement opens a new one.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }
}

/// The outcome of a PostgreSQL error.
fn classify(e: &tokio_postgres::Error) -> TargetError {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: connecting failed or the connection broke.
        let mut msg = e.to_string();
        if let Some(src) = std::error::Error::source(e) {
            msg = format!("{msg}: {src}");
        }
        // The server asks for a password the target does not have: no retry will help.
        if msg.contains("password missing") {
            return TargetError::permanent(ErrorClass::Config, msg);
        }
        return TargetError::retryable(ErrorClass::Connection, msg);
    };
    let code = db.code().code();
    let mut msg = format!("{} {code}: {}", db.severity(), db.message());
    if let Some(d) = db.detail() {
        msg = format!("{msg} ({d})");
    }
    let class = &code[..code.len().min(2)];
    let err = match (class, code) {
        ("08", _) => TargetError::retryable(ErrorClass::Connection, msg),
        (_, "40001" | "40P01" | "55P03") | ("53" | "57" | "58", _) => {
            TargetError::retryable(ErrorClass::Remote, msg)
        }
        ("22", _) | (_, "42703") => TargetError::permanent(ErrorClass::BadPayload, msg),
        ("28", _) | (_, "3D000" | "42P01" | "42704" | "42501") => {
            TargetError::permanent(ErrorClass::Config, msg)
        }
        _ => TargetError::permanent(ErrorClass::Remote, msg),
    };
    err.with_code(code)
}

/// What a payload asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Upsert,
    Update,
    Delete,
}

/// A checked statement: its SQL and the row as JSON text (its one parameter).
#[derive(Debug, PartialEq, Eq)]
struct Statement {
    sql: String,
    row: String,
}

fn bad(message: impl Into<String>) -> TargetError {
    TargetError::permanent(ErrorClass::BadPayload, message)
}

/// Whether `s` is a plain SQL identifier.
fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 63
}

fn quoted(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| format!("\"{c}\"")).collect()
}

fn key_list(v: &Value) -> Result<Vec<String>, TargetError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`key` must list column names (strings)"))?,
        _ => {
            return Err(bad(
                "`key` must be a column name or a non-empty list of them",
            ))
        }
    };
    Ok(list)
}

/// A payload read: what it asks for, the row's columns and the key columns (all checked).
struct Parsed {
    kind: Kind,
    data: Map<String, Value>,
    key: Vec<String>,
}

/// Reads the payload and builds the statement for `table` (already checked).
fn plan(payload: &[u8], table: &str, default_key: &[String]) -> Result<Statement, TargetError> {
    let p = parse(payload, default_key)?;
    let cols: Vec<&str> = p.data.keys().map(String::as_str).collect();
    let keys: Vec<&str> = p.key.iter().map(String::as_str).collect();
    let sql = sql(p.kind, table, &cols, &keys)?;
    Ok(Statement {
        sql,
        row: Value::Object(p.data).to_string(),
    })
}

/// Reads and checks the payload.
fn parse(payload: &[u8], default_key: &[String]) -> Result<Parsed, TargetError> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("the payload is not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("the payload must be a JSON object"));
    };
    let kind = match obj.get("operation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.to_ascii_uppercase().as_str() {
            "INSERT" => Kind::Insert,
            "UPSERT" => Kind::Upsert,
            "UPDATE" => Kind::Update,
            "DELETE" => Kind::Delete,
            other => {
                return Err(bad(format!(
                    "unknown operation `{other}` (INSERT, UPSERT, UPDATE or DELETE)"
                )))
            }
        }),
        Some(_) => return Err(bad("`operation` must be a string")),
    };
    let key = match obj.get("key") {
        Some(v) if kind.is_some() || obj.contains_key("data") => key_list(v)?,
        _ => default_key.to_vec(),
    };
    let data: Map<String, Value> = match obj.remove("data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err(bad("`data` must be an object of column values")),
        None => {
            if kind.is_some() {
                obj.remove("operation");
                obj.remove("key");
            }
            obj
        }
    };
    let kind = kind.unwrap_or(Kind::Insert);
    if data.is_empty() {
        return Err(bad("no column values (`data` is empty)"));
    }
    if let Some(c) = data.keys().chain(key.iter()).find(|c| !is_ident(c)) {
        return Err(bad(format!(
            "`{}` is not a valid column name ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes); nothing was executed",
            c.escape_debug()
        )));
    }
    if kind != Kind::Insert {
        if let Some(k) = key.iter().find(|k| data.get(*k).is_none_or(Value::is_null)) {
            return Err(bad(format!(
                "the key column `{k}` has no value in the data"
            )));
        }
    }
    Ok(Parsed { kind, data, key })
}

/// The query reading the row a payload's key names (as JSON text), for a snapshot.
fn select_sql(table: &str, keys: &[&str]) -> String {
    let matches = quoted(keys)
        .iter()
        .map(|k| format!("wald_t.{k} = wald_r.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT row_to_json(wald_t)::text FROM {table} AS wald_t, \
         json_populate_record(NULL::{table}, $1::text::json) AS wald_r WHERE {matches} LIMIT 2"
    )
}

/// The SQL of `kind` on `table` for the (checked) columns `cols` and key columns `keys`; the
/// row is its one parameter, `$1`.
fn sql(kind: Kind, table: &str, cols: &[&str], keys: &[&str]) -> Result<String, TargetError> {
    let rest: Vec<&str> = cols.iter().copied().filter(|c| !keys.contains(c)).collect();
    let src = format!("json_populate_record(NULL::{table}, $1::text::json)");
    let qc = quoted(cols).join(", ");
    let qk = quoted(keys);
    let matches = qk
        .iter()
        .map(|k| format!("wald_t.{k} = wald_r.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sets = |prefix: &str| {
        quoted(&rest)
            .iter()
            .map(|c| format!("{c} = {prefix}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(match kind {
        Kind::Insert => format!("INSERT INTO {table} ({qc}) SELECT {qc} FROM {src}"),
        Kind::Upsert => {
            let action = if rest.is_empty() {
                "NOTHING".to_owned()
            } else {
                format!("UPDATE SET {}", sets("EXCLUDED"))
            };
            format!(
                "INSERT INTO {table} ({qc}) SELECT {qc} FROM {src} ON CONFLICT ({}) DO {action}",
                qk.join(", ")
            )
        }
        Kind::Update => {
            if rest.is_empty() {
                return Err(bad("an UPDATE needs at least one column besides the key"));
            }
            format!(
                "UPDATE {table} AS wald_t SET {} FROM {src} AS wald_r WHERE {matches}",
                sets("wald_r")
            )
        }
        Kind::Delete => {
            format!("DELETE FROM {table} AS wald_t USING {src} AS wald_r WHERE {matches}")
        }
    })
}

/// A `database` target of type `postgresql`.
#[derive(Debug)]
pub struct PostgresTarget {
    conn: Arc<PgConn>,
    table: String,
    key: Vec<String>,
    timeout: Duration,
}

impl PostgresTarget {
    /// Builds the target on the context's shared connection (errors name `config.…`).
    pub fn new(
        cfg: &DatabaseTargetConfig,
        raw: &Map<String, Value>,
        ctx: &TargetContext,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let user = extra_str(raw, "user", &mut errs)
            .unwrap_or("postgres")
            .to_owned();
        let password = extra_str(raw, "password", &mut errs);
        let timeout = extra_timeout(raw, &mut errs)
            .or(cfg.timeout_ms.map(Duration::from_millis))
            .unwrap_or(ctx.default_timeout());
        if let Err(m) = check_sql_table(&cfg.table) {
            errs.push(FieldError::new("config.table", m));
        }
        let key = match raw.get("keyColumns") {
            None | Some(Value::Null) => vec!["id".to_owned()],
            Some(v) => match key_list(v) {
                Ok(k) if k.iter().all(|c| is_ident(c)) => k,
                _ => {
                    errs.push(FieldError::new(
                        "config.keyColumns",
                        "must be a column name or a non-empty list of them ([A-Za-z_][A-Za-z0-9_]*)",
                    ));
                    Vec::new()
                }
            },
        };
        if user.is_empty() {
            errs.push(FieldError::new("config.user", "must not be empty"));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let server = ServerKey {
            host: cfg.host.clone(),
            port: cfg.port,
            database: cfg.database.clone(),
            user,
            password_sha256: password.map(|p| Sha256::digest(p.as_bytes()).into()),
        };
        Ok(Self {
            conn: ctx.postgres_conn(&server, password),
            table: cfg.table.clone(),
            key,
            timeout,
        })
    }

    async fn run(&self, st: &Statement) -> Result<(), TargetError> {
        let client = self.conn.get().await?;
        client
            .execute(st.sql.as_str(), &[&st.row])
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

impl Target for PostgresTarget {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let st = plan(delivery.payload, &self.table, &self.key)?;
            guarded(self.timeout, "postgresql", self.run(&st), || {
                self.conn.reset()
            })
            .await
        })
    }

    fn snapshot<'a>(&'a self, payload: &'a [u8]) -> SnapshotFuture<'a> {
        Box::pin(async move {
            let p = parse(payload, &self.key)?;
            if let Some(k) = p
                .key
                .iter()
                .find(|k| p.data.get(*k).is_none_or(Value::is_null))
            {
                return Ok(Snapshot::Unsupported(format!(
                    "the key column `{k}` has no value in the data"
                )));
            }
            let keys: Vec<&str> = p.key.iter().map(String::as_str).collect();
            let sql = select_sql(&self.table, &keys);
            let row = Value::Object(p.data).to_string();
            let rows = guarded(
                self.timeout,
                "postgresql",
                async {
                    let client = self.conn.get().await?;
                    client
                        .query(sql.as_str(), &[&row])
                        .await
                        .map_err(|e| classify(&e))
                },
                || self.conn.reset(),
            )
            .await?;
            match rows.as_slice() {
                [] => Ok(Snapshot::Absent),
                [one] => {
                    let text: String = one.try_get(0).map_err(|e| classify(&e))?;
                    match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Object(m)) => Ok(Snapshot::Present(m)),
                        _ => Ok(Snapshot::Unsupported(
                            "the row could not be read as JSON".to_owned(),
                        )),
                    }
                }
                _ => Ok(Snapshot::Unsupported(format!(
                    "the key ({}) matches more than one row",
                    p.key.join(", ")
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Statement, TargetError> {
        plan(s.as_bytes(), "public.ev", &["id".to_owned()])
    }

    #[test]
    fn builds_parameterised_statements() {
        let src = "json_populate_record(NULL::public.ev, $1::text::json)";
        let st = p(r#"{"id":1,"name":"x'); DROP TABLE ev; --"}"#).unwrap();
        assert_eq!(
            st.sql,
            format!(r#"INSERT INTO public.ev ("id", "name") SELECT "id", "name" FROM {src}"#)
        );
        assert!(
            st.row.contains("DROP TABLE"),
            "values travel in the parameter"
        );
        let st = p(r#"{"operation":"upsert","data":{"id":1,"n":2},"key":"id"}"#).unwrap();
        assert!(st
            .sql
            .ends_with(r#"ON CONFLICT ("id") DO UPDATE SET "n" = EXCLUDED."n""#));
        let st = p(r#"{"operation":"UPDATE","data":{"id":1,"n":2}}"#).unwrap();
        assert_eq!(
            st.sql,
            format!(
                r#"UPDATE public.ev AS wald_t SET "n" = wald_r."n" FROM {src} AS wald_r WHERE wald_t."id" = wald_r."id""#
            )
        );
        let st = p(r#"{"operation":"DELETE","data":{"a":1,"b":2},"key":["a","b"]}"#).unwrap();
        assert!(st
            .sql
            .ends_with(r#"WHERE wald_t."a" = wald_r."a" AND wald_t."b" = wald_r."b""#));
        let st = p(r#"{"operation":"INSERT","id":3}"#).unwrap();
        assert_eq!(st.row, r#"{"id":3}"#);
    }

    #[test]
    fn refuses_bad_payloads() {
        for (payload, needle) in [
            (
                r#"{"data":{"x\"; DROP TABLE ev; --":1}}"#,
                "not a valid column name",
            ),
            (
                r#"{"operation":"UPDATE","data":{"id":1}}"#,
                "besides the key",
            ),
            (
                r#"{"operation":"DELETE","data":{"n":1}}"#,
                "key column `id`",
            ),
            (
                r#"{"operation":"MERGE","data":{"n":1}}"#,
                "unknown operation",
            ),
            (r#"{"data":{}}"#, "empty"),
            (r#"{"data":[1]}"#, "must be an object"),
            (
                r#"{"operation":"UPSERT","data":{"id":1},"key":[1]}"#,
                "column names",
            ),
        ] {
            let e = p(payload).unwrap_err();
            assert!(
                !e.retryable && e.class == ErrorClass::BadPayload,
                "{payload}"
            );
            assert!(e.message.contains(needle), "{payload}: {}", e.message);
        }
    }
}

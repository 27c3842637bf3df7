//! Delivery targets: the seeds' `TargetConfigDto` and the per-type `config` objects.
//!
//! `config` stays a JSON object in [`TargetConfig`] (adapters may read fields this module does
//! not know); [`TargetConfig::settings`] gives the checked, typed view of the fields the
//! seeds define. Unknown fields inside `config` are allowed; unknown fields of the target
//! itself are refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::validate::{from_map, join, Errors, FieldError};

/// The largest `config` object of one target, as JSON: targets are cached per distinct
/// config, so their size is bounded.
pub const MAX_TARGET_CONFIG_BYTES: usize = 16 * 1024;

/// The kind of system a target is (the seeds' `TargetType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    /// A database table (`config`: [`DatabaseTargetConfig`]).
    Database,
    /// A cache (`config`: [`CacheTargetConfig`]).
    Cache,
    /// An HTTP endpoint (`config`: [`HttpTargetConfig`]).
    HttpService,
    /// A gRPC service (`config` checked by its adapter).
    GrpcService,
    /// A message queue (`config` checked by its adapter).
    Queue,
    /// A file of JSON lines (`config`: [`FileTargetConfig`]).
    FileSystem,
    /// A webhook (`config`: [`HttpTargetConfig`]).
    Webhook,
}

impl TargetType {
    /// The type's name as in JSON (`database`, `cache`, `http_service`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Cache => "cache",
            Self::HttpService => "http_service",
            Self::GrpcService => "grpc_service",
            Self::Queue => "queue",
            Self::FileSystem => "file_system",
            Self::Webhook => "webhook",
        }
    }
}

/// Where a message is delivered (the seeds' `TargetConfigDto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetConfig {
    /// The kind of target; decides what `config` must hold.
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// The target's name, 1 to 100 characters; unique per region among a message's targets.
    #[schema(example = "user-cache-primary", min_length = 1, max_length = 100)]
    pub identifier: String,
    /// Type-specific settings: `HttpTargetConfig` for `http_service` and `webhook`,
    /// `CacheTargetConfig` for `cache`, `DatabaseTargetConfig` for `database`,
    /// `FileTargetConfig` for `file_system`; any object for `grpc_service` and `queue`.
    #[schema(schema_with = target_config_schema)]
    pub config: Map<String, Value>,
    /// The region this target is in, for cross-region fan-out (1 to 100 characters).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "us-east-1")]
    pub region: Option<String>,
    /// Load-balancing weight, 0 to 100. Default: 100.
    #[serde(default = "default_weight")]
    #[schema(default = 100, minimum = 0, maximum = 100)]
    pub weight: u8,
    /// Whether the target receives messages. Default: true.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Free-form tags, each 1 to 100 characters, at most 50. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

fn default_weight() -> u8 {
    100
}

fn default_true() -> bool {
    true
}

/// HTTP method of an HTTP or webhook target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST (the default).
    #[default]
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// The method's name, upper case.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

impl<'de> Deserialize<'de> for HttpMethod {
    /// Case-insensitive, like the seeds' upper-casing transform.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(Self::Get),
            "POST" => Ok(Self::Post),
            "PUT" => Ok(Self::Put),
            "PATCH" => Ok(Self::Patch),
            "DELETE" => Ok(Self::Delete),
            _ => Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"one of GET, POST, PUT, PATCH, DELETE",
            )),
        }
    }
}

/// `config` of an `http_service` or `webhook` target (the seeds' `HttpConfigDto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTargetConfig {
    /// The endpoint: `http://` or `https://` with a host. Required.
    #[schema(example = "https://api.example.com/webhooks/wal")]
    pub url: String,
    /// GET, POST, PUT, PATCH or DELETE (any case). Default: POST.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers (valid header names; values without control characters).
    /// Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request timeout in milliseconds, 1 to 300000. Default: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether failed requests are retried by the retry policy. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<bool>,
    /// Secret for the HMAC-SHA256 signature header (non-empty). Default: none (unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Kind of cache (the seeds' `CacheType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    /// Redis.
    Redis,
    /// Memcached.
    Memcached,
    /// AWS ElastiCache.
    Elasticache,
    /// A cache inside the service (local use and demos).
    InMemory,
}

/// `config` of a `cache` target (the seeds' `CacheConfigDto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheTargetConfig {
    /// The kind of cache. Required.
    #[serde(rename = "type")]
    pub kind: CacheType,
    /// Server host. Required unless the type is `in_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Server port, 1 to 65535. Required unless the type is `in_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database number, 0 to 15. Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<u8>,
    /// Prefix put before every key. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// TTL of the keys written, in seconds (at least 1). Default: none (no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// Kind of database (the seeds' `DatabaseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseType {
    /// PostgreSQL.
    Postgresql,
    /// MySQL.
    Mysql,
    /// MongoDB.
    Mongodb,
    /// Cassandra.
    Cassandra,
    /// DynamoDB.
    Dynamodb,
    /// Redis.
    Redis,
}

/// `config` of a `database` target (the seeds' `DatabaseConfigDto`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTargetConfig {
    /// The kind of database. Required.
    #[serde(rename = "type")]
    pub kind: DatabaseType,
    /// Server host. Required.
    pub host: String,
    /// Server port, 1 to 65535. Required.
    pub port: u16,
    /// Database name. Required.
    pub database: String,
    /// Table or collection. Required. For `postgresql` a plain identifier
    /// (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes), optionally `schema.table`.
    #[schema(example = "user_events")]
    pub table: String,
    /// Timeout in milliseconds, 1 to 300000. Default: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `config` of a `file_system` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileTargetConfig {
    /// The file messages are appended to, as JSON lines: a relative path under the server's
    /// `[delivery] file_root` (no `..`, no leading `/`; symbolic links are not followed).
    /// Required.
    pub path: String,
}

/// Checks a `file_system` target's path: relative, plain components only (no `..`, `.`,
/// root or prefix), at most 1024 bytes, no NUL. Where it lands is decided under
/// `[delivery] file_root` by the file target.
///
/// # Errors
/// Why the path is refused.
pub fn check_file_path(p: &str) -> Result<(), String> {
    use std::path::{Component, Path};
    if p.trim().is_empty() || p.contains('\0') || p.len() > 1024 {
        return Err("must be a non-empty path of at most 1024 bytes without NUL".into());
    }
    let plain = Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !plain || p.ends_with('/') {
        return Err(format!(
            "{p:?} must be a relative file path under the server's [delivery] file_root, \
             without `..`, `.` or a leading `/`"
        ));
    }
    Ok(())
}

/// The checked, typed `config` of a target.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSettings<'a> {
    /// `http_service` or `webhook`.
    Http(HttpTargetConfig),
    /// `cache`.
    Cache(CacheTargetConfig),
    /// `database`.
    Database(DatabaseTargetConfig),
    /// `file_system`.
    File(FileTargetConfig),
    /// `grpc_service` or `queue`: the object as given, for the adapter to check.
    Other(&'a Map<String, Value>),
}

impl TargetConfig {
    /// Checks the target; errors are named under `path` (e.g. `target[0]`).
    pub fn check(&self, path: &str, errs: &mut Errors) {
        errs.chars(join(path, "identifier"), &self.identifier, 1, 100);
        if let Some(r) = &self.region {
            errs.chars(join(path, "region"), r, 1, 100);
        }
        errs.range(join(path, "weight"), self.weight, 0, 100);
        if let Some(tags) = &self.tags {
            check_tags(&join(path, "tags"), tags, errs);
        }
        let size = serde_json::to_string(&self.config).map_or(usize::MAX, |t| t.len());
        if size > MAX_TARGET_CONFIG_BYTES {
            errs.push(
                join(path, "config"),
                format!("is {size} bytes as JSON; at most {MAX_TARGET_CONFIG_BYTES}"),
            );
            return;
        }
        let _ = self.parse_settings(&join(path, "config"), errs);
    }

    /// Checks the target alone (fields named from the target: `identifier`, `config.url`).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Errors::new();
        self.check("", &mut errs);
        errs.into_result(())
    }

    /// The typed `config`, checked (fields named `config.…`).
    pub fn settings(&self) -> Result<TargetSettings<'_>, Vec<FieldError>> {
        let mut errs = Errors::new();
        let s = self.parse_settings("config", &mut errs);
        match s {
            Some(s) if errs.is_empty() => Ok(s),
            _ => Err(errs.into_vec()),
        }
    }

    fn parse_settings(&self, path: &str, errs: &mut Errors) -> Option<TargetSettings<'_>> {
        let cfg = &self.config;
        match self.kind {
            TargetType::HttpService | TargetType::Webhook => {
                let c: HttpTargetConfig = typed(cfg, path, &["url"], errs)?;
                check_http(&c, path, errs);
                Some(TargetSettings::Http(c))
            }
            TargetType::Cache => {
                let c: CacheTargetConfig = typed(cfg, path, &["type"], errs)?;
                if c.kind != CacheType::InMemory {
                    for f in ["host", "port"] {
                        if cfg.get(f).is_none_or(Value::is_null) {
                            errs.push(join(path, f), "is required for this cache type");
                        }
                    }
                }
                if let Some(h) = &c.host {
                    check_host(&join(path, "host"), h, errs);
                }
                if let Some(p) = c.port {
                    errs.range(join(path, "port"), p, 1, u16::MAX);
                }
                if let Some(db) = c.database {
                    errs.range(join(path, "database"), db, 0, 15);
                }
                if let Some(t) = c.ttl_seconds {
                    errs.range(join(path, "ttlSeconds"), t, 1, u64::from(u32::MAX));
                }
                Some(TargetSettings::Cache(c))
            }
            TargetType::Database => {
                let req = ["type", "host", "port", "database", "table"];
                let c: DatabaseTargetConfig = typed(cfg, path, &req, errs)?;
                check_host(&join(path, "host"), &c.host, errs);
                errs.range(join(path, "port"), c.port, 1, u16::MAX);
                errs.chars(join(path, "database"), &c.database, 1, 255);
                let table = join(path, "table");
                if c.kind == DatabaseType::Postgresql {
                    if let Err(m) = check_sql_table(&c.table) {
                        errs.push(table, m);
                    }
                } else {
                    errs.chars(table, &c.table, 1, 255);
                }
                if let Some(t) = c.timeout_ms {
                    errs.range(join(path, "timeoutMs"), t, 1, 300_000);
                }
                Some(TargetSettings::Database(c))
            }
            TargetType::FileSystem => {
                let c: FileTargetConfig = typed(cfg, path, &["path"], errs)?;
                if let Err(m) = check_file_path(&c.path) {
                    errs.push(join(path, "path"), m);
                }
                Some(TargetSettings::File(c))
            }
            TargetType::GrpcService | TargetType::Queue => Some(TargetSettings::Other(cfg)),
        }
    }
}

/// Checks tags: at most 50, each 1 to 100 characters.
pub(crate) fn check_tags(path: &str, tags: &[String], errs: &mut Errors) {
    if tags.len() > 50 {
        errs.push(
            path,
            format!("at most 50 tags are allowed, got {}", tags.len()),
        );
    }
    for (i, t) in tags.iter().enumerate() {
        errs.chars(super::validate::index(path, i), t, 1, 100);
    }
}

/// Checks a list of targets under `path` (`target` or `targetConfigs`): each target, and no
/// two with the same identifier and region.
pub(crate) fn check_targets(path: &str, targets: &[TargetConfig], errs: &mut Errors) {
    let mut seen = std::collections::HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        let p = super::validate::index(path, i);
        t.check(&p, errs);
        if !seen.insert((t.identifier.as_str(), t.region.as_deref())) {
            errs.push(
                join(&p, "identifier"),
                format!("duplicate target `{}` in the same region", t.identifier),
            );
        }
    }
}

/// Required fields present (not null), then the typed struct (a type error names its path).
fn typed<T: serde::de::DeserializeOwned>(
    cfg: &Map<String, Value>,
    path: &str,
    required: &[&str],
    errs: &mut Errors,
) -> Option<T> {
    let mut missing = false;
    for f in required {
        if cfg.get(*f).is_none_or(Value::is_null) {
            errs.push(join(path, f), "is required");
            missing = true;
        }
    }
    if missing {
        return None;
    }
    match from_map(cfg, path) {
        Ok(c) => Some(c),
        Err(e) => {
            errs.extend([e]);
            None
        }
    }
}

fn check_http(c: &HttpTargetConfig, path: &str, errs: &mut Errors) {
    if let Err(m) = check_url(&c.url) {
        errs.push(join(path, "url"), m);
    }
    let hp = join(path, "headers");
    for (name, value) in &c.headers {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            errs.push(join(&hp, name), "is not a valid HTTP header name");
        } else if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            errs.push(
                join(&hp, name),
                "header value must not contain control characters",
            );
        }
    }
    if let Some(t) = c.timeout_ms {
        errs.range(join(path, "timeoutMs"), t, 1, 300_000);
    }
    if c.secret.as_deref() == Some("") {
        errs.push(
            join(path, "secret"),
            "must not be empty (omit it for unsigned requests)",
        );
    }
}

/// `http://` or `https://`, a non-empty host, an optional numeric port; no whitespace.
pub fn check_url(url: &str) -> Result<(), String> {
    if url
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("must not contain whitespace or control characters".into());
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err(format!("must be an http:// or https:// URL, got `{url}`"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) if !h.is_empty() => (h, p.strip_prefix(':')),
            _ => return Err("has an invalid IPv6 host".into()),
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("must have a host".into());
    }
    if let Some(p) = port {
        if !p.is_empty() && !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err(format!("has an invalid port `{p}`"));
        }
    }
    Ok(())
}

fn check_host(path: &str, host: &str, errs: &mut Errors) {
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        errs.push(path, "must be a host name or address without spaces");
    } else {
        errs.chars(path, host, 1, 255);
    }
}

/// A PostgreSQL table name that is safe to put into SQL unquoted: `ident` or `schema.ident`,
/// each `[A-Za-z_][A-Za-z0-9_]*` of at most 63 bytes.
pub fn check_sql_table(table: &str) -> Result<(), String> {
    let parts: Vec<&str> = table.split('.').collect();
    let ident_ok = |p: &str| {
        let mut b = p.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && p.len() <= 63
    };
    if parts.len() <= 2 && parts.iter().all(|p| ident_ok(p)) {
        Ok(())
    } else {
        Err(format!(
            "must be a table name like `events` or `schema.events` ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes each), got `{table}`"
        ))
    }
}

/// The schema of a target's `config`: one of the typed settings, by the target's `type`.
fn target_config_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::Ref;
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("HttpTargetConfig"))
        .item(Ref::from_schema_name("CacheTargetConfig"))
        .item(Ref::from_schema_name("DatabaseTargetConfig"))
        .item(Ref::from_schema_name("FileTargetConfig"))
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .description(Some(
            "Type-specific settings: `HttpTargetConfig` for `http_service` and `webhook`, \
             `CacheTargetConfig` for `cache`, `DatabaseTargetConfig` for `database`, \
             `FileTargetConfig` for `file_system`; any object for `grpc_service` and `queue`.",
        ))
        .build()
        .into()
}

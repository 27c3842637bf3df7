//! Target adapters behind one trait: each delivers one message to one system and classifies
//! its failures as retryable or permanent.

pub mod connect;
pub mod file;
pub mod http;
pub mod memory;
pub mod postgres;
pub mod redis;

mod cache_op;

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::egress::EgressPolicy;
use crate::model::target::{CacheType, DatabaseType, TargetConfig, TargetSettings, TargetType};
use crate::model::validate::FieldError;

pub use memory::MemoryCache;

/// One delivery attempt of one message to one target.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The message id (receivers use it as an idempotency key).
    pub message_id: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The partition the message is in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The client's payload, exactly as sent (a JSON object).
    pub payload: &'a [u8],
    /// When the message was accepted (ms since the epoch).
    pub accepted_at_ms: u64,
}

/// What kind of failure an attempt met (the names the retry policy's `retryableErrorCodes`
/// and the metrics use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The target did not answer in time.
    Timeout,
    /// Connecting failed or the connection broke.
    Connection,
    /// HTTP 408.
    RequestTimeout,
    /// HTTP 429.
    TooManyRequests,
    /// HTTP 5xx.
    Server,
    /// HTTP 4xx other than 408/429.
    Client,
    /// The payload cannot be applied to this target (missing key, wrong shape...).
    BadPayload,
    /// The target's configuration cannot work.
    Config,
    /// The target system answered with an error (Redis, PostgreSQL...).
    Remote,
    /// A local I/O error (file target).
    Io,
    /// The `[egress]` policy refuses every address of the target's host (permanent).
    EgressDenied,
}

impl ErrorClass {
    /// The class's name: `timeout`, `connection`, `408`, `429`, `5xx`, `4xx`, `bad_payload`,
    /// `config`, `remote`, `io`, `egress_denied`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::RequestTimeout => "408",
            Self::TooManyRequests => "429",
            Self::Server => "5xx",
            Self::Client => "4xx",
            Self::BadPayload => "bad_payload",
            Self::Config => "config",
            Self::Remote => "remote",
            Self::Io => "io",
            Self::EgressDenied => "egress_denied",
        }
    }
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", class.as_str())]
pub struct TargetError {
    /// What kind of failure.
    pub class: ErrorClass,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// A human-readable description (status line, server message).
    pub message: String,
    /// The wait the target asked for (HTTP `Retry-After`), if any.
    pub retry_after: Option<Duration>,
    /// The target system's own error code (a PostgreSQL SQLSTATE), if it gave one.
    pub code: Option<String>,
}

impl TargetError {
    /// A failure another attempt may cure.
    #[must_use]
    pub fn retryable(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            retryable: true,
            message: message.into(),
            retry_after: None,
            code: None,
        }
    }

    /// A failure no retry will cure.
    #[must_use]
    pub fn permanent(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            retryable: false,
            message: message.into(),
            retry_after: None,
            code: None,
        }
    }

    /// The same error with the target system's code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
}

/// The future of one attempt.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), TargetError>> + Send + 'a>>;

/// What a key or row holds now: read before a transaction's mutation, so that its inverse
/// can restore it (`crate::txn::inverse`).
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// This target cannot read back what the payload changes (the reason says why).
    Unsupported(String),
    /// Nothing is there (no such key or row).
    Absent,
    /// What is there: a row (column → JSON value), or a cache entry
    /// `{"value": <string>, "ttlSeconds": <n>}` (`ttlSeconds` absent: no expiry).
    Present(Map<String, Value>),
}

/// The future of a snapshot.
pub type SnapshotFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Snapshot, TargetError>> + Send + 'a>>;

/// A target adapter: delivers one message per call. Implementations are cheap to share
/// (`Arc<dyn Target>`), hold their connections, and never panic on a target's answer.
pub trait Target: Send + Sync + std::fmt::Debug {
    /// Delivers one message. The adapter enforces its own timeout.
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a>;

    /// Reads what delivering `payload` would change (the key of a cache operation, the row
    /// of a database operation's key), under the adapter's timeout. Default: unsupported.
    fn snapshot<'a>(&'a self, payload: &'a [u8]) -> SnapshotFuture<'a> {
        let _ = payload;
        Box::pin(async {
            Ok(Snapshot::Unsupported(
                "this target cannot read back its current state".to_owned(),
            ))
        })
    }
}

/// The shared HTTP client of all HTTP and webhook targets (hyper 1, HTTP/1.1, TLS for
/// `https://`, every connection through the egress policy: see [`connect`]).
pub type HttpClient = hyper_util::client::legacy::Client<
    connect::Connector,
    http_body_util::Full<hyper::body::Bytes>,
>;

/// Most shared connections of one kind (Redis, PostgreSQL) kept for sharing; past it, the
/// least recently shared one is forgotten (the targets holding it keep it).
const MAX_SHARED_CONNECTIONS: usize = 256;

/// Shared connections by what identifies them, bounded (least recently shared evicted).
struct SharedConns<K, V> {
    map: HashMap<K, (Arc<V>, u64)>,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V> SharedConns<K, V> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
        }
    }

    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> Arc<V> {
        self.tick += 1;
        if let Some((conn, used)) = self.map.get_mut(key) {
            *used = self.tick;
            return Arc::clone(conn);
        }
        if self.map.len() >= MAX_SHARED_CONNECTIONS {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        let conn = Arc::new(make());
        self.map.insert(key.clone(), (Arc::clone(&conn), self.tick));
        conn
    }
}

/// What targets share: one HTTP client (one connection pool), the default timeout, the
/// in-memory cache, the egress policy, and one Redis connection per (host, port, database,
/// credentials) and one PostgreSQL connection per (host, port, database, user, password
/// digest), whatever the number of targets using them (at most
/// 256 of each kind are kept for sharing).
pub struct TargetContext {
    http: Result<HttpClient, String>,
    default_timeout: Duration,
    memory: Arc<MemoryCache>,
    egress: Arc<EgressPolicy>,
    redis: Mutex<SharedConns<self::redis::ServerKey, self::redis::RedisConn>>,
    postgres: Mutex<SharedConns<self::postgres::ServerKey, self::postgres::PgConn>>,
    /// `[delivery] file_root`: where `file_system` targets write (none: refused).
    file_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TargetContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetContext")
            .field("default_timeout", &self.default_timeout)
            .field("egress", &self.egress)
            .field("memory_keys", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl TargetContext {
    /// A context whose targets time out after `default_timeout` unless their config says
    /// otherwise (`timeoutMs`), whose `in_memory` cache targets write into `memory`, and
    /// whose every outbound connection is checked by `egress`.
    /// Needs no runtime; connections are opened on first use (inside the runtime).
    #[must_use]
    pub fn new(default_timeout: Duration, memory: Arc<MemoryCache>, egress: EgressPolicy) -> Self {
        let egress = Arc::new(egress);
        let http = connect::connector(&egress, default_timeout).map(|connector| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build(connector)
        });
        if let Err(e) = &http {
            tracing::error!(error = %e, "HTTP targets cannot be built");
        }
        Self {
            http,
            default_timeout,
            memory,
            egress,
            redis: Mutex::new(SharedConns::new()),
            postgres: Mutex::new(SharedConns::new()),
            file_root: None,
        }
    }

    /// The same context with `file_system` targets writing under `root` (none: refused).
    #[must_use]
    pub fn with_file_root(mut self, root: Option<std::path::PathBuf>) -> Self {
        self.file_root = root;
        self
    }

    /// The shared HTTP client, or why there is none (TLS could not be set up).
    ///
    /// # Errors
    /// The reason HTTP targets cannot be built.
    pub fn http_client(&self) -> Result<&HttpClient, &str> {
        self.http.as_ref().map_err(String::as_str)
    }

    /// The egress policy every target's connections go through.
    #[must_use]
    pub fn egress(&self) -> &Arc<EgressPolicy> {
        &self.egress
    }

    /// The timeout of targets that set none.
    #[must_use]
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// The in-memory cache `in_memory` targets write into.
    #[must_use]
    pub fn memory(&self) -> &Arc<MemoryCache> {
        &self.memory
    }

    /// The shared connection to a Redis server and database with these credentials
    /// (created on first request).
    fn redis_conn(&self, key: self::redis::ServerKey) -> Arc<self::redis::RedisConn> {
        let mut map = self.redis.lock().unwrap_or_else(PoisonError::into_inner);
        let egress = Arc::clone(&self.egress);
        map.get_or_insert_with(&key, || self::redis::RedisConn::new(key.clone(), egress))
    }

    /// The shared connection to a PostgreSQL database as a user with this password (the key
    /// holds its digest; created on first request).
    fn postgres_conn(
        &self,
        key: &self::postgres::ServerKey,
        password: Option<&str>,
    ) -> Arc<self::postgres::PgConn> {
        let mut map = self.postgres.lock().unwrap_or_else(PoisonError::into_inner);
        let egress = Arc::clone(&self.egress);
        map.get_or_insert_with(key, || self::postgres::PgConn::new(key, password, egress))
    }
}

/// Builds the adapter of a target, checking its config (errors name the field from the
/// target: `config.url`, `config.type`, `type`). Connections are opened on first delivery,
/// so a server that is down does not fail the build (its deliveries fail, retryable).
pub fn build(cfg: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn Target>, Vec<FieldError>> {
    let settings = cfg.settings()?;
    match settings {
        TargetSettings::Http(c) => Ok(Arc::new(http::HttpTarget::new(&c, &cfg.config, ctx)?)),
        TargetSettings::Cache(c) => match c.kind {
            CacheType::Redis => Ok(Arc::new(self::redis::RedisTarget::new(
                &c,
                &cfg.config,
                ctx,
            )?)),
            CacheType::InMemory => Ok(Arc::new(memory::MemoryTarget::new(&c, ctx))),
            CacheType::Memcached | CacheType::Elasticache => Err(vec![FieldError::new(
                "config.type",
                "this cache type is not supported by this build (use `redis` or `in_memory`)",
            )]),
        },
        TargetSettings::Database(c) => match c.kind {
            DatabaseType::Postgresql => Ok(Arc::new(self::postgres::PostgresTarget::new(
                &c,
                &cfg.config,
                ctx,
            )?)),
            _ => Err(vec![FieldError::new(
                "config.type",
                "this database type is not supported by this build (use `postgresql`)",
            )]),
        },
        TargetSettings::File(c) => Ok(Arc::new(file::FileTarget::new(
            &c,
            ctx.file_root.as_deref(),
        )?)),
        TargetSettings::Other(_) => Err(vec![FieldError::new(
            "type",
            format!(
                "target type `{}` is not supported by this build",
                match cfg.kind {
                    TargetType::GrpcService => "grpc_service",
                    TargetType::Queue => "queue",
                    _ => "?",
                }
            ),
        )]),
    }
}

/// An optional string field of a raw `config` object (fields the typed configs do not know).
pub(crate) fn extra_str<'a>(
    config: &'a Map<String, Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match config.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            errs.push(FieldError::new(
                format!("config.{field}"),
                "must be a string",
            ));
            None
        }
    }
}

/// An optional timeout in milliseconds (1 to 300000) of a raw `config` object.
pub(crate) fn extra_timeout(
    config: &Map<String, Value>,
    errs: &mut Vec<FieldError>,
) -> Option<Duration> {
    let v = config.get("timeoutMs").filter(|v| !v.is_null())?;
    if let Some(ms @ 1..=300_000) = v.as_u64() {
        Some(Duration::from_millis(ms))
    } else {
        errs.push(FieldError::new(
            "config.timeoutMs",
            "must be an integer between 1 and 300000",
        ));
        None
    }
}

/// Runs `fut` with a deadline; past it, a retryable [`ErrorClass::Timeout`].
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, TargetError>>,
) -> Result<T, TargetError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(TargetError::retryable(
            ErrorClass::Timeout,
            format!("{what}: no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// [`with_timeout`] over a shared connection: a connection failure or a timeout means the
/// connection is broken or stuck, so `reset` forgets it and the next call opens a new one.
pub(crate) async fn guarded<T, R: Future<Output = ()>>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, TargetError>>,
    reset: impl FnOnce() -> R,
) -> Result<T, TargetError> {
    let result = with_timeout(timeout, what, fut).await;
    if let Err(e) = &result {
        if matches!(e.class, ErrorClass::Connection | ErrorClass::Timeout) {
            reset().await;
        }
    }
    result
}

/// The failure of a connection the egress policy refused (permanent, `egress_denied`) or
/// whose host did not resolve (retryable, `connection`); `what` names the server.
pub(crate) fn egress_error(what: &str, e: &crate::egress::EgressError) -> TargetError {
    match e.denied() {
        Some(d) => TargetError::permanent(ErrorClass::EgressDenied, format!("{what}: {d}")),
        None => TargetError::retryable(ErrorClass::Connection, format!("{what}: {e}")),
    }
}

/// The current time in whole seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod shared_conns_tests {
    use super::*;

    #[test]
    fn shared_connections_are_bounded_least_recently_shared_first() {
        let mut conns: SharedConns<u32, u32> = SharedConns::new();
        let first = conns.get_or_insert_with(&0, || 100);
        for k in 1..MAX_SHARED_CONNECTIONS as u32 {
            conns.get_or_insert_with(&k, || k + 100);
        }
        // Sharing 0 again makes 1 the least recently shared.
        assert!(Arc::ptr_eq(&first, &conns.get_or_insert_with(&0, || 0)));
        conns.get_or_insert_with(&9999, || 9999);
        assert_eq!(conns.map.len(), MAX_SHARED_CONNECTIONS);
        assert!(conns.map.contains_key(&0) && !conns.map.contains_key(&1));
        assert_eq!(*conns.get_or_insert_with(&1, || 7), 7, "evicted: a new one");
    }

    #[test]
    fn postgres_connections_are_keyed_by_the_password() {
        let ctx = TargetContext::new(
            Duration::from_secs(1),
            Arc::new(MemoryCache::default()),
            EgressPolicy::default(),
        );
        let cfg = |password: Option<&str>| {
            let mut c = serde_json::json!({"type": "database", "identifier": "d", "config": {
                "type": "postgresql", "host": "db.example", "port": 5432, "database": "app",
                "table": "t", "user": "app"}});
            if let Some(p) = password {
                c["config"]["password"] = p.into();
            }
            serde_json::from_value::<TargetConfig>(c).unwrap()
        };
        build(&cfg(Some("right")), &ctx).unwrap();
        build(&cfg(Some("right")), &ctx).unwrap();
        assert_eq!(
            ctx.postgres.lock().unwrap().map.len(),
            1,
            "same credentials share"
        );
        build(&cfg(Some("wrong")), &ctx).unwrap();
        build(&cfg(None), &ctx).unwrap();
        assert_eq!(
            ctx.postgres.lock().unwrap().map.len(),
            3,
            "one per password"
        );
    }
}

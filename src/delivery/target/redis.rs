//! The Redis `cache` target: the seeds' operations (SET with optional TTL, DEL, EXPIRE, HSET;
//! see `cache_op`) with the target's key prefix, database and default TTL.
//!
//! Targets on the same server and database share one multiplexed connection, opened on first
//! use and reopened after it breaks. Every command runs under the target's timeout (config
//! `timeoutMs`, else the service's). Connection failures and timeouts are retryable; error
//! replies are permanent, except `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`
//! and `READONLY` (a server starting, busy or failing over). Optional extra config fields:
//! `username`, `password` (AUTH).
//!
//! The host is resolved and every address checked by the egress policy; the connection goes
//! to an allowed address (never to the name resolved again). A refused host is a permanent
//! `egress_denied` failure. Connections are shared per (host, port, database, username,
//! password): a target with other or no credentials never gets another's session.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::cache_op::{self, CacheOp};
use super::{
    egress_error, extra_str, extra_timeout, guarded, DeliverFuture, Delivery, ErrorClass, Snapshot,
    SnapshotFuture, Target, TargetContext, TargetError,
};
use crate::egress::EgressPolicy;
use crate::model::target::CacheTargetConfig;
use crate::model::validate::FieldError;

/// What identifies a shared Redis connection: the server, the database and the credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerKey {
    host: String,
    port: u16,
    db: u8,
    username: Option<String>,
    password: Option<String>,
}

/// One lazily opened, shared connection to a Redis server and database.
pub(crate) struct RedisConn {
    key: ServerKey,
    egress: Arc<EgressPolicy>,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("host", &self.key.host)
            .field("port", &self.key.port)
            .field("db", &self.key.db)
            .finish_non_exhaustive()
    }
}

impl RedisConn {
    pub(crate) fn new(key: ServerKey, egress: Arc<EgressPolicy>) -> Self {
        Self {
            key,
            egress,
            conn: Mutex::new(None),
        }
    }

    /// The open connection, opening it when there is none.
    async fn get(&self, timeout: Duration) -> Result<MultiplexedConnection, TargetError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let k = &self.key;
        let mut redis_info = ::redis::RedisConnectionInfo::default().set_db(i64::from(k.db));
        if let Some(u) = &k.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &k.password {
            redis_info = redis_info.set_password(p);
        }
        let what = format!("redis {}:{}", k.host, k.port);
        let addrs = self
            .egress
            .resolve(&k.host, k.port)
            .await
            .map_err(|e| egress_error(&what, &e))?;
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout));
        let mut last = None;
        // Each address was checked; connect to it, not to the name.
        for addr in addrs {
            let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
                .into_connection_info()
                .map_err(|e| classify(&e))?
                .set_redis_settings(redis_info.clone());
            let client = ::redis::Client::open(info).map_err(|e| classify(&e))?;
            match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(conn) => {
                    *slot = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    let mut err = classify(&e);
                    err.message = format!("{what} ({addr}): {}", err.message);
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            TargetError::retryable(ErrorClass::Connection, format!("{what}: no address"))
        }))
    }

    /// Forgets the connection (it broke); the next command opens a new one.
    async fn reset(&self) {
        *self.conn.lock().await = None;
    }
}

/// The outcome of a Redis error.
fn classify(e: &RedisError) -> TargetError {
    let msg = e.to_string();
    if e.is_timeout() {
        return TargetError::retryable(ErrorClass::Timeout, msg);
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return TargetError::retryable(ErrorClass::Connection, msg);
    }
    match e.code() {
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY") => {
            TargetError::retryable(ErrorClass::Remote, msg)
        }
        Some(_) => TargetError::permanent(ErrorClass::Remote, msg),
        None => match e.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
                TargetError::permanent(ErrorClass::Config, msg)
            }
            _ => TargetError::permanent(ErrorClass::Remote, msg),
        },
    }
}

/// A `cache` target of type `redis`.
#[derive(Debug)]
pub struct RedisTarget {
    conn: Arc<RedisConn>,
    prefix: String,
    default_ttl: Option<u64>,
    timeout: Duration,
}

impl RedisTarget {
    /// Builds the target on the context's shared connection to its server and database
    /// (`host` and `port` were checked present by the config's own validation).
    pub fn new(
        cfg: &CacheTargetConfig,
        raw: &Map<String, Value>,
        ctx: &TargetContext,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let username = extra_str(raw, "username", &mut errs).map(str::to_owned);
        let password = extra_str(raw, "password", &mut errs).map(str::to_owned);
        let timeout = extra_timeout(raw, &mut errs).unwrap_or(ctx.default_timeout());
        if cfg.host.is_none() {
            errs.push(FieldError::new(
                "config.host",
                "is required for this cache type",
            ));
        }
        if cfg.port.is_none() {
            errs.push(FieldError::new(
                "config.port",
                "is required for this cache type",
            ));
        }
        let (Some(host), Some(port), true) = (cfg.host.clone(), cfg.port, errs.is_empty()) else {
            return Err(errs);
        };
        let key = ServerKey {
            host,
            port,
            db: cfg.database.unwrap_or(0),
            username,
            password,
        };
        Ok(Self {
            conn: ctx.redis_conn(key),
            prefix: cfg.key_prefix.clone().unwrap_or_default(),
            default_ttl: cfg.ttl_seconds,
            timeout,
        })
    }

    async fn run(&self, op: &CacheOp) -> Result<(), TargetError> {
        let mut conn = self.conn.get(self.timeout).await?;
        let result = match op {
            CacheOp::Set { key, value, ttl } => {
                let mut c = ::redis::cmd("SET");
                c.arg(key).arg(value);
                if let Some(t) = ttl {
                    c.arg("EX").arg(*t);
                }
                c.query_async::<::redis::Value>(&mut conn).await
            }
            CacheOp::Del { key } => {
                ::redis::cmd("DEL")
                    .arg(key)
                    .query_async::<::redis::Value>(&mut conn)
                    .await
            }
            CacheOp::Expire { key, ttl } => {
                ::redis::cmd("EXPIRE")
                    .arg(key)
                    .arg(*ttl)
                    .query_async::<::redis::Value>(&mut conn)
                    .await
            }
            CacheOp::HSet { key, fields, ttl } => {
                let mut pipe = ::redis::pipe();
                pipe.atomic();
                let hset = pipe.cmd("HSET").arg(key);
                for (f, v) in fields {
                    hset.arg(f).arg(v);
                }
                hset.ignore();
                if let Some(t) = ttl {
                    pipe.cmd("EXPIRE").arg(key).arg(*t).ignore();
                }
                pipe.query_async::<::redis::Value>(&mut conn).await
            }
        };
        result.map(|_| ()).map_err(|e| classify(&e))
    }
}

impl Target for RedisTarget {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let op = cache_op::parse(delivery.payload, &self.prefix, self.default_ttl)?;
            guarded(self.timeout, "redis", self.run(&op), || self.conn.reset()).await
        })
    }

    fn snapshot<'a>(&'a self, payload: &'a [u8]) -> SnapshotFuture<'a> {
        Box::pin(async move {
            let op = cache_op::parse(payload, &self.prefix, self.default_ttl)?;
            let key = match cache_op::snapshot_key(&op) {
                Ok(k) => k.to_owned(),
                Err(s) => return Ok(s),
            };
            guarded(self.timeout, "redis", self.read(&key), || self.conn.reset()).await
        })
    }
}

impl RedisTarget {
    /// The string at `key` and its remaining TTL.
    async fn read(&self, key: &str) -> Result<Snapshot, TargetError> {
        let mut conn = self.conn.get(self.timeout).await?;
        let kind: String = ::redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        match kind.as_str() {
            "none" => return Ok(Snapshot::Absent),
            "string" => {}
            other => {
                return Ok(Snapshot::Unsupported(format!(
                    "`{key}` holds a {other}, not a string"
                )))
            }
        }
        let (value, pttl): (Option<Vec<u8>>, i64) = ::redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        let Some(bytes) = value else {
            return Ok(Snapshot::Absent);
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(Snapshot::Unsupported(format!(
                "`{key}` holds bytes that are not UTF-8"
            )));
        };
        let ttl = u64::try_from(pttl).ok().map(|ms| ms.div_ceil(1000));
        Ok(cache_op::captured(text, ttl))
    }
}

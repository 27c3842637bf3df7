//! The in-memory cache (`cache` targets of type `in_memory`, for local use and demos): the
//! same operations as Redis (SET with TTL, DEL, EXPIRE, HSET) on a map inside the service.
//! Entries expire lazily: an expired entry is invisible and is removed when next touched or by
//! [`MemoryCache::purge_expired`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::cache_op::{self, CacheOp};
use super::{
    DeliverFuture, Delivery, Snapshot, SnapshotFuture, Target, TargetContext, TargetError,
};
use crate::model::target::CacheTargetConfig;

/// A value of the in-memory cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheValue {
    /// A string (SET).
    String(String),
    /// A hash of fields (HSET).
    Hash(BTreeMap<String, String>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: CacheValue,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// A concurrent map key → (value, expiry), shared by every `in_memory` target of a service.
#[derive(Debug, Default)]
pub struct MemoryCache {
    map: RwLock<HashMap<String, Entry>>,
}

impl MemoryCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value at `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<CacheValue> {
        let now = Instant::now();
        self.read()
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    /// The remaining time to live of `key`: `None` when absent, `Some(None)` when it never
    /// expires.
    #[must_use]
    pub fn ttl(&self, key: &str) -> Option<Option<Duration>> {
        let now = Instant::now();
        self.read()
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.expires.map(|x| x.saturating_duration_since(now)))
    }

    /// Stores a string, replacing whatever was at `key`.
    pub fn set(&self, key: &str, value: String, ttl: Option<Duration>) {
        let expires = ttl.map(|t| Instant::now() + t);
        self.write().insert(
            key.to_owned(),
            Entry {
                value: CacheValue::String(value),
                expires,
            },
        );
    }

    /// Removes `key`; whether a live entry was there.
    pub fn del(&self, key: &str) -> bool {
        let now = Instant::now();
        self.write().remove(key).is_some_and(|e| e.live(now))
    }

    /// Lets `key` expire after `ttl` (at once when zero); whether a live entry was there.
    pub fn expire(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.write();
        match map.get_mut(key) {
            Some(e) if e.live(now) => {
                if ttl.is_zero() {
                    map.remove(key);
                } else {
                    e.expires = Some(now + ttl);
                }
                true
            }
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// Sets fields of the hash at `key` (a new hash when absent, expired or not a hash), then
    /// its TTL when `ttl` is given.
    pub fn hset(&self, key: &str, fields: Vec<(String, String)>, ttl: Option<Duration>) {
        let now = Instant::now();
        let mut map = self.write();
        let entry = map.entry(key.to_owned()).or_insert_with(|| Entry {
            value: CacheValue::Hash(BTreeMap::new()),
            expires: None,
        });
        if !entry.live(now) || !matches!(entry.value, CacheValue::Hash(_)) {
            *entry = Entry {
                value: CacheValue::Hash(BTreeMap::new()),
                expires: None,
            };
        }
        if let CacheValue::Hash(h) = &mut entry.value {
            h.extend(fields);
        }
        if let Some(t) = ttl {
            entry.expires = Some(now + t);
        }
    }

    /// The number of entries held (expired ones not yet purged included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The live keys, sorted.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Drops every expired entry; how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut map = self.write();
        let before = map.len();
        map.retain(|_, e| e.live(now));
        before - map.len()
    }

    /// Applies one operation.
    pub(crate) fn apply(&self, op: CacheOp) {
        let secs = Duration::from_secs;
        match op {
            CacheOp::Set { key, value, ttl } => self.set(&key, value, ttl.map(secs)),
            CacheOp::Del { key } => {
                self.del(&key);
            }
            CacheOp::Expire { key, ttl } => {
                self.expire(&key, secs(ttl));
            }
            CacheOp::HSet { key, fields, ttl } => self.hset(&key, fields, ttl.map(secs)),
        }
    }
}

/// A `cache` target of type `in_memory`.
#[derive(Debug)]
pub struct MemoryTarget {
    cache: Arc<MemoryCache>,
    prefix: String,
    default_ttl: Option<u64>,
}

impl MemoryTarget {
    /// A target writing into the context's cache.
    #[must_use]
    pub fn new(cfg: &CacheTargetConfig, ctx: &TargetContext) -> Self {
        Self {
            cache: Arc::clone(ctx.memory()),
            prefix: cfg.key_prefix.clone().unwrap_or_default(),
            default_ttl: cfg.ttl_seconds,
        }
    }
}

impl Target for MemoryTarget {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let op = cache_op::parse(delivery.payload, &self.prefix, self.default_ttl)?;
            self.cache.apply(op);
            Ok::<(), TargetError>(())
        })
    }

    fn snapshot<'a>(&'a self, payload: &'a [u8]) -> SnapshotFuture<'a> {
        Box::pin(async move {
            let op = cache_op::parse(payload, &self.prefix, self.default_ttl)?;
            let key = match cache_op::snapshot_key(&op) {
                Ok(k) => k,
                Err(s) => return Ok(s),
            };
            Ok(match self.cache.get(key) {
                None => Snapshot::Absent,
                Some(CacheValue::String(v)) => {
                    let ttl = self
                        .cache
                        .ttl(key)
                        .flatten()
                        .map(|d| d.as_secs().saturating_add(1));
                    cache_op::captured(v, ttl)
                }
                Some(CacheValue::Hash(_)) => {
                    Snapshot::Unsupported(format!("`{key}` holds a hash, not a string"))
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_expire_del_hset() {
        let c = MemoryCache::new();
        c.set("a", "1".into(), None);
        assert_eq!(c.get("a"), Some(CacheValue::String("1".into())));
        assert_eq!(c.ttl("a"), Some(None));
        assert!(c.expire("a", Duration::from_secs(100)));
        assert!(c
            .ttl("a")
            .flatten()
            .is_some_and(|t| t > Duration::from_secs(98)));
        c.set("b", "2".into(), Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.purge_expired(), 1);
        c.hset("h", vec![("f".into(), "x".into())], None);
        c.hset("h", vec![("g".into(), "y".into())], None);
        let Some(CacheValue::Hash(h)) = c.get("h") else {
            panic!("not a hash")
        };
        assert_eq!(h.len(), 2);
        assert!(c.del("a"));
        assert!(!c.del("a"));
        assert_eq!(c.keys(), vec!["h".to_owned()]);
        assert!(c.expire("h", Duration::ZERO));
        assert!(c.is_empty());
    }
}

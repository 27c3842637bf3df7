//! The in-memory cache (`cache` targets of type `in_memory`, for local use and demos): the
//! same operations as Redis (SET with TTL, DEL, EXPIRE, HSET) on a map inside the service.
//! Entries expire lazily: an expired entry is invisible and is removed when next touched, by
//! [`MemoryCache::purge_expired`], or when the cache is full.
//!
//! The cache is bounded: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes (keys,
//! values and [`ENTRY_OVERHEAD_BYTES`] per entry). A write that would pass either bound first
//! drops the expired entries, then the least recently written ones. A single value larger
//! than the byte bound is refused (the delivery fails as a bad payload) and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::cache_op::{self, CacheOp};
use super::{
    DeliverFuture, Delivery, ErrorClass, Snapshot, SnapshotFuture, Target, TargetContext,
    TargetError,
};
use crate::model::target::CacheTargetConfig;

/// Most entries the in-memory cache holds (shared by every `in_memory` target).
pub const MAX_ENTRIES: usize = 100_000;
/// Most bytes the in-memory cache holds: 64 MiB, counting keys, values and
/// [`ENTRY_OVERHEAD_BYTES`] per entry.
pub const MAX_BYTES: u64 = 64 << 20;
/// What an entry is counted for besides its key and value.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// A value of the in-memory cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheValue {
    /// A string (SET).
    String(String),
    /// A hash of fields (HSET).
    Hash(BTreeMap<String, String>),
}

impl CacheValue {
    fn bytes(&self) -> u64 {
        let n = match self {
            Self::String(s) => s.len(),
            Self::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len()).sum(),
        };
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: CacheValue,
    expires: Option<Instant>,
    /// Write sequence (the key of `Inner::order`).
    seq: u64,
    /// Counted bytes.
    size: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// `now + ttl`, or never when that is past what an `Instant` can hold.
fn deadline(now: Instant, ttl: Duration) -> Option<Instant> {
    now.checked_add(ttl)
}

fn entry_size(key: &str, value: &CacheValue) -> u64 {
    u64::try_from(key.len())
        .unwrap_or(u64::MAX)
        .saturating_add(value.bytes())
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// The map and its bookkeeping.
#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys by write sequence, oldest first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    bytes: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.order.remove(&e.seq);
        self.bytes = self.bytes.saturating_sub(e.size);
        Some(e)
    }

    /// Stores `value` at `key` as the newest entry (replacing any).
    fn put(&mut self, key: &str, value: CacheValue, expires: Option<Instant>) {
        self.remove(key);
        let size = entry_size(key, &value);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.insert(seq, key.to_owned());
        self.bytes = self.bytes.saturating_add(size);
        self.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires,
                seq,
                size,
            },
        );
    }

    fn purge_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.remove(k);
        }
        expired.len()
    }

    /// Drops expired entries, then the oldest, until within the bounds.
    fn make_room(&mut self, max_entries: usize, max_bytes: u64, now: Instant) {
        let over = |i: &Inner| i.map.len() > max_entries || i.bytes > max_bytes;
        if !over(self) {
            return;
        }
        self.purge_expired(now);
        while over(self) {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(e.size);
            }
        }
    }
}

/// A bounded concurrent map key → (value, expiry), shared by every `in_memory` target of a
/// service.
#[derive(Debug)]
pub struct MemoryCache {
    inner: RwLock<Inner>,
    max_entries: usize,
    max_bytes: u64,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_limits(MAX_ENTRIES, MAX_BYTES)
    }
}

/// Why the in-memory cache refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` would take {size} bytes; the in-memory cache holds at most {max}")]
pub struct TooLarge {
    /// The key.
    pub key: String,
    /// The bytes the entry would take.
    pub size: u64,
    /// The cache's byte bound.
    pub max: u64,
}

impl MemoryCache {
    /// An empty cache with the default bounds ([`MAX_ENTRIES`], [`MAX_BYTES`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache holding at most `max_entries` entries (at least 1) and `max_bytes`
    /// bytes.
    #[must_use]
    pub fn with_limits(max_entries: usize, max_bytes: u64) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, key: &str, value: &CacheValue) -> Result<(), TooLarge> {
        let size = entry_size(key, value);
        if size > self.max_bytes {
            return Err(TooLarge {
                key: key.to_owned(),
                size,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// The live value at `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<CacheValue> {
        let now = Instant::now();
        self.read()
            .map
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
            .map
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.expires.map(|x| x.saturating_duration_since(now)))
    }

    /// Stores a string, replacing whatever was at `key` (making room when full).
    ///
    /// # Errors
    /// [`TooLarge`] when the entry alone passes the byte bound; nothing changes.
    pub fn set(&self, key: &str, value: String, ttl: Option<Duration>) -> Result<(), TooLarge> {
        let value = CacheValue::String(value);
        self.check(key, &value)?;
        let now = Instant::now();
        let expires = ttl.and_then(|t| deadline(now, t));
        let mut inner = self.write();
        inner.put(key, value, expires);
        inner.make_room(self.max_entries, self.max_bytes, now);
        Ok(())
    }

    /// Removes `key`; whether a live entry was there.
    pub fn del(&self, key: &str) -> bool {
        let now = Instant::now();
        self.write().remove(key).is_some_and(|e| e.live(now))
    }

    /// Lets `key` expire after `ttl` (at once when zero); whether a live entry was there.
    pub fn expire(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.write();
        match inner.map.get_mut(key) {
            Some(e) if e.live(now) => {
                if ttl.is_zero() {
                    inner.remove(key);
                } else {
                    e.expires = deadline(now, ttl);
                }
                true
            }
            Some(_) => {
                inner.remove(key);
                false
            }
            None => false,
        }
    }

    /// Sets fields of the hash at `key` (a new hash when absent, expired or not a hash), then
    /// its TTL when `ttl` is given.
    ///
    /// # Errors
    /// [`TooLarge`] when the hash would pass the byte bound; nothing changes.
    pub fn hset(
        &self,
        key: &str,
        fields: Vec<(String, String)>,
        ttl: Option<Duration>,
    ) -> Result<(), TooLarge> {
        let now = Instant::now();
        let mut inner = self.write();
        let (mut hash, mut expires) = match inner.map.get(key) {
            Some(Entry {
                value: CacheValue::Hash(h),
                expires,
                ..
            }) if expires.is_none_or(|e| e > now) => (h.clone(), *expires),
            _ => (BTreeMap::new(), None),
        };
        hash.extend(fields);
        if let Some(t) = ttl {
            expires = deadline(now, t);
        }
        let value = CacheValue::Hash(hash);
        self.check(key, &value)?;
        inner.put(key, value, expires);
        inner.make_room(self.max_entries, self.max_bytes, now);
        Ok(())
    }

    /// The number of entries held (expired ones not yet purged included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().map.is_empty()
    }

    /// The bytes counted for the entries held (keys, values, overhead).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.read().bytes
    }

    /// The live keys, sorted.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .read()
            .map
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Drops every expired entry; how many were dropped.
    pub fn purge_expired(&self) -> usize {
        self.write().purge_expired(Instant::now())
    }

    /// Applies one operation.
    pub(crate) fn apply(&self, op: CacheOp) -> Result<(), TooLarge> {
        let secs = Duration::from_secs;
        match op {
            CacheOp::Set { key, value, ttl } => self.set(&key, value, ttl.map(secs)),
            CacheOp::Del { key } => {
                self.del(&key);
                Ok(())
            }
            CacheOp::Expire { key, ttl } => {
                self.expire(&key, secs(ttl));
                Ok(())
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
            self.cache
                .apply(op)
                .map_err(|e| TargetError::permanent(ErrorClass::BadPayload, e.to_string()))
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
        c.set("a", "1".into(), None).unwrap();
        assert_eq!(c.get("a"), Some(CacheValue::String("1".into())));
        assert_eq!(c.ttl("a"), Some(None));
        assert!(c.expire("a", Duration::from_secs(100)));
        assert!(c
            .ttl("a")
            .flatten()
            .is_some_and(|t| t > Duration::from_secs(98)));
        c.set("b", "2".into(), Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.purge_expired(), 1);
        c.hset("h", vec![("f".into(), "x".into())], None).unwrap();
        c.hset("h", vec![("g".into(), "y".into())], None).unwrap();
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

    #[test]
    fn bounded_by_entries_and_bytes_evicting_expired_then_oldest() {
        let c = MemoryCache::with_limits(3, 10_000);
        c.set("a", "1".into(), None).unwrap();
        c.set("b", "2".into(), Some(Duration::from_millis(1)))
            .unwrap();
        c.set("c", "3".into(), None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Full: the expired `b` goes first.
        c.set("d", "4".into(), None).unwrap();
        assert_eq!(c.keys(), ["a", "c", "d"]);
        // Then the least recently written (`a`; `c` rewritten is newer).
        c.set("c", "3".into(), None).unwrap();
        c.set("e", "5".into(), None).unwrap();
        assert_eq!(c.keys(), ["c", "d", "e"]);
        assert_eq!(c.len(), 3);

        let c = MemoryCache::with_limits(1000, 3 * (ENTRY_OVERHEAD_BYTES + 101));
        for k in ["k1", "k2", "k3", "k4"] {
            c.set(k, "x".repeat(99), None).unwrap();
        }
        assert_eq!(c.keys(), ["k2", "k3", "k4"]);
        assert!(c.bytes() <= 3 * (ENTRY_OVERHEAD_BYTES + 101));
        // One value larger than the whole cache is refused and changes nothing.
        let e = c.set("big", "x".repeat(1000), None).unwrap_err();
        assert_eq!(e.key, "big");
        assert!(c
            .hset("k2", vec![("f".into(), "y".repeat(1000))], None)
            .is_err());
        assert_eq!(c.get("k2"), Some(CacheValue::String("x".repeat(99))));
        assert_eq!(c.keys(), ["k2", "k3", "k4"]);
        // Deleting and expiring keep the byte count right.
        assert!(c.del("k2"));
        assert!(c.expire("k3", Duration::ZERO));
        assert_eq!(c.bytes(), ENTRY_OVERHEAD_BYTES + 101);
        // A TTL past what an Instant holds means never, not a panic.
        c.set("forever", "v".into(), Some(Duration::MAX)).unwrap();
        assert_eq!(c.ttl("forever"), Some(None));
        assert!(c.expire("forever", Duration::MAX));
    }
}

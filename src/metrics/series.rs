//! A small in-memory time series per namespace: per-minute buckets of writes, bytes,
//! errors, idempotent duplicates and write latency, kept for the last 24 hours. The write
//! path records into it; `GET /api/v1/wal/namespace/{ns}/metrics?from=&to=` reads it.
//!
//! Only minutes that saw traffic hold a bucket, so an idle namespace costs nothing and a
//! busy one at most [`RETENTION_MINUTES`] buckets (about 80 KB). The figures restart at
//! zero when the process does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Width of a bucket, milliseconds.
pub const BUCKET_MS: u64 = 60_000;
/// How many minutes are kept: 24 hours.
pub const RETENTION_MINUTES: u64 = 24 * 60;

/// One minute of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Minutes since the Unix epoch (the bucket covers `minute * 60 s .. + 60 s`).
    pub minute: u64,
    /// Writes accepted (appended and answered 202).
    pub writes: u64,
    /// Request body bytes of the accepted writes.
    pub bytes: u64,
    /// Writes that failed on the server's side (storage refused or failed the append).
    pub errors: u64,
    /// Writes answered as duplicates of an earlier idempotency key (nothing appended).
    pub duplicates: u64,
    /// Sum of the accepted writes' latencies (accept → answer), microseconds.
    pub latency_sum_us: u64,
    /// How many latencies the sum holds.
    pub latency_count: u64,
}

impl Bucket {
    /// Adds another bucket's counts to this one (the minute is kept), saturating.
    pub fn add(&mut self, o: &Bucket) {
        self.writes = self.writes.saturating_add(o.writes);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.errors = self.errors.saturating_add(o.errors);
        self.duplicates = self.duplicates.saturating_add(o.duplicates);
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        self.latency_count = self.latency_count.saturating_add(o.latency_count);
    }

    /// Mean write latency in milliseconds, when there was a write.
    #[must_use]
    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.latency_count > 0)
            .then(|| self.latency_sum_us as f64 / self.latency_count as f64 / 1e3)
    }
}

/// The buckets of one namespace, oldest first, one per minute that saw traffic.
#[derive(Debug, Default)]
struct Series {
    buckets: VecDeque<Bucket>,
}

impl Series {
    /// The bucket of `minute`, created if missing; buckets older than the retention go.
    fn bucket(&mut self, minute: u64) -> &mut Bucket {
        let newest = self.buckets.back().map(|b| b.minute);
        let i = match newest {
            Some(m) if m == minute => self.buckets.len() - 1,
            Some(m) if m > minute => {
                // A writer that read the clock just before another one: rare, found by search.
                match self.buckets.binary_search_by_key(&minute, |b| b.minute) {
                    Ok(i) => i,
                    Err(i) => {
                        self.buckets.insert(
                            i,
                            Bucket {
                                minute,
                                ..Bucket::default()
                            },
                        );
                        i
                    }
                }
            }
            _ => {
                while self
                    .buckets
                    .front()
                    .is_some_and(|b| b.minute.saturating_add(RETENTION_MINUTES) <= minute)
                {
                    self.buckets.pop_front();
                }
                self.buckets.push_back(Bucket {
                    minute,
                    ..Bucket::default()
                });
                self.buckets.len() - 1
            }
        };
        &mut self.buckets[i]
    }
}

/// What a range holds: the totals and the non-empty buckets, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// The sum of `buckets` (its `minute` is the range's first minute).
    pub totals: Bucket,
    /// The minutes of the range that saw traffic.
    pub buckets: Vec<Bucket>,
}

/// The series of every namespace.
#[derive(Debug, Default)]
pub struct SeriesStore {
    by_namespace: RwLock<HashMap<String, Arc<Mutex<Series>>>>,
}

impl SeriesStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn series(&self, namespace: &str) -> Arc<Mutex<Series>> {
        if let Some(s) = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
        {
            return Arc::clone(s);
        }
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(namespace.to_owned()).or_default())
    }

    fn update(&self, namespace: &str, now_ms: u64, f: impl FnOnce(&mut Bucket)) {
        let series = self.series(namespace);
        let mut s = series.lock().unwrap_or_else(PoisonError::into_inner);
        f(s.bucket(now_ms / BUCKET_MS));
    }

    /// Records an accepted write of `bytes` answered after `latency`.
    pub fn record_write(&self, namespace: &str, now_ms: u64, bytes: u64, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.update(namespace, now_ms, |b| {
            b.writes = b.writes.saturating_add(1);
            b.bytes = b.bytes.saturating_add(bytes);
            b.latency_sum_us = b.latency_sum_us.saturating_add(us);
            b.latency_count = b.latency_count.saturating_add(1);
        });
    }

    /// Records a write answered as an idempotent duplicate.
    pub fn record_duplicate(&self, namespace: &str, now_ms: u64) {
        self.update(namespace, now_ms, |b| {
            b.duplicates = b.duplicates.saturating_add(1)
        });
    }

    /// Records a write that failed on the server's side.
    pub fn record_error(&self, namespace: &str, now_ms: u64) {
        self.update(namespace, now_ms, |b| b.errors = b.errors.saturating_add(1));
    }

    /// Forgets a namespace (deleted).
    pub fn remove(&self, namespace: &str) {
        self.by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
    }

    /// The buckets whose minute overlaps `from_ms ..= to_ms`, and their totals.
    #[must_use]
    pub fn query(&self, namespace: &str, from_ms: u64, to_ms: u64) -> Window {
        let (first, last) = (from_ms / BUCKET_MS, to_ms / BUCKET_MS);
        let mut w = Window {
            totals: Bucket {
                minute: first,
                ..Bucket::default()
            },
            buckets: Vec::new(),
        };
        let series = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .map(Arc::clone);
        let Some(series) = series else {
            return w;
        };
        let s = series.lock().unwrap_or_else(PoisonError::into_inner);
        let start = s.buckets.partition_point(|b| b.minute < first);
        for b in s
            .buckets
            .iter()
            .skip(start)
            .take_while(|b| b.minute <= last)
        {
            w.totals.add(b);
            w.buckets.push(*b);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = BUCKET_MS;

    #[test]
    fn buckets_per_minute_and_query_by_range() {
        let s = SeriesStore::new();
        let t0 = 1_000 * MIN;
        s.record_write("a", t0 + 5, 100, Duration::from_millis(2));
        s.record_write("a", t0 + 59_999, 50, Duration::from_millis(4));
        s.record_duplicate("a", t0 + MIN);
        s.record_error("a", t0 + 3 * MIN);
        s.record_write("b", t0, 1, Duration::from_millis(1));
        let all = s.query("a", t0, t0 + 10 * MIN);
        assert_eq!(all.buckets.len(), 3);
        assert_eq!(all.totals.writes, 2);
        assert_eq!(all.totals.bytes, 150);
        assert_eq!(all.totals.duplicates, 1);
        assert_eq!(all.totals.errors, 1);
        assert_eq!(all.totals.mean_latency_ms(), Some(3.0));
        let one = s.query("a", t0 + MIN, t0 + MIN + 1);
        assert_eq!(one.buckets.len(), 1);
        assert_eq!(one.totals.duplicates, 1);
        assert_eq!(one.totals.writes, 0);
        assert_eq!(one.totals.mean_latency_ms(), None);
        assert_eq!(
            s.query("none", 0, u64::MAX),
            Window {
                totals: Bucket::default(),
                buckets: Vec::new()
            }
        );
        // The extremes of a query do not overflow.
        assert_eq!(s.query("a", u64::MAX, u64::MAX).buckets.len(), 0);
        assert_eq!(s.query("a", 0, u64::MAX).totals.writes, 2);
        s.remove("a");
        assert!(s.query("a", t0, t0 + 10 * MIN).buckets.is_empty());
    }

    #[test]
    fn late_writers_land_in_their_minute_and_old_minutes_expire() {
        let s = SeriesStore::new();
        let t0 = 5_000 * MIN;
        s.record_write("a", t0 + 2 * MIN, 1, Duration::ZERO);
        s.record_write("a", t0, 1, Duration::ZERO); // read the clock earlier
        s.record_write("a", t0 + MIN, 1, Duration::ZERO);
        let w = s.query("a", t0, t0 + 2 * MIN);
        let minutes: Vec<u64> = w.buckets.iter().map(|b| b.minute).collect();
        assert_eq!(minutes, vec![t0 / MIN, t0 / MIN + 1, t0 / MIN + 2]);
        // A day later the first minutes are gone.
        s.record_write("a", t0 + (RETENTION_MINUTES + 1) * MIN, 1, Duration::ZERO);
        let w = s.query("a", 0, u64::MAX);
        assert_eq!(w.buckets.first().map(|b| b.minute), Some(t0 / MIN + 2));
        assert_eq!(w.totals.writes, 2);
    }
}

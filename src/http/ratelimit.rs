//! Per key + namespace rate limits: a token bucket for the per-minute rate with `burst`
//! capacity, and a fixed one-hour window for the hourly cap. A refused request learns when
//! to come back (`Retry-After`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The limits of one (key, namespace) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests per hour.
    pub per_hour: u32,
    /// Requests that may arrive at once (the bucket's capacity).
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    hour_start: Instant,
    hour_count: u32,
}

/// The limiter: one bucket per (key id, namespace).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

/// Longest the limiter keeps an idle bucket.
const IDLE: Duration = Duration::from_secs(3600);

impl RateLimiter {
    /// Takes one request from the (key, namespace) budget at `now`: `Ok` when allowed, else
    /// the seconds until one would be.
    ///
    /// # Errors
    /// The seconds to wait (at least 1).
    pub fn check(
        &self,
        key: &str,
        namespace: &str,
        limits: Limits,
        now: Instant,
    ) -> Result<(), u64> {
        self.check_n(key, namespace, limits, now, 1)
    }

    /// Takes `n` requests at once (all or none), as [`RateLimiter::check`].
    ///
    /// # Errors
    /// The seconds to wait (at least 1).
    pub fn check_n(
        &self,
        key: &str,
        namespace: &str,
        limits: Limits,
        now: Instant,
        n: u32,
    ) -> Result<(), u64> {
        if limits.per_minute == 0 || limits.burst == 0 || limits.per_hour == 0 {
            return Err(60);
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.refilled) < IDLE);
        }
        let b = buckets
            .entry((key.to_owned(), namespace.to_owned()))
            .or_insert(Bucket {
                tokens: f64::from(limits.burst),
                refilled: now,
                hour_start: now,
                hour_count: 0,
            });
        let rate = f64::from(limits.per_minute) / 60.0;
        let elapsed = now.duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(limits.burst));
        b.refilled = now;
        if now.duration_since(b.hour_start) >= Duration::from_secs(3600) {
            b.hour_start = now;
            b.hour_count = 0;
        }
        if b.hour_count.saturating_add(n) > limits.per_hour {
            let left = Duration::from_secs(3600).saturating_sub(now.duration_since(b.hour_start));
            return Err(left.as_secs().max(1));
        }
        let need = f64::from(n);
        if b.tokens < need {
            let wait = ((need - b.tokens) / rate).ceil();
            return Err((wait as u64).max(1));
        }
        b.tokens -= need;
        b.hour_count = b.hour_count.saturating_add(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::default();
        let lim = Limits {
            per_minute: 60,
            per_hour: 1000,
            burst: 3,
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("k", "ns", lim, t0).is_ok());
        }
        assert_eq!(rl.check("k", "ns", lim, t0), Err(1));
        // Other namespaces and keys have their own budget.
        assert!(rl.check("k", "other", lim, t0).is_ok());
        assert!(rl.check("k2", "ns", lim, t0).is_ok());
        // One token per second at 60/min.
        assert!(rl
            .check("k", "ns", lim, t0 + Duration::from_millis(1001))
            .is_ok());
        assert!(rl
            .check("k", "ns", lim, t0 + Duration::from_millis(1002))
            .is_err());
    }

    #[test]
    fn hourly_cap() {
        let rl = RateLimiter::default();
        let lim = Limits {
            per_minute: 6000,
            per_hour: 2,
            burst: 100,
        };
        let t0 = Instant::now();
        assert!(rl.check("k", "ns", lim, t0).is_ok());
        assert!(rl.check("k", "ns", lim, t0).is_ok());
        let wait = rl.check("k", "ns", lim, t0).expect_err("capped");
        assert!(wait > 3500 && wait <= 3600, "{wait}");
        assert!(rl
            .check("k", "ns", lim, t0 + Duration::from_secs(3600))
            .is_ok());
    }
}

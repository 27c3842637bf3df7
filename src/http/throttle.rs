//! Failed authentications per client address: after `limit` unknown keys within a minute,
//! the address is answered 429 until the minute is over — key guessing costs a minute per
//! `limit` tries. The table is bounded ([`MAX_ADDRESSES`]); when full, expired entries are
//! dropped first, then the table starts over (an attacker with that many addresses gains
//! one fresh window, never unbounded memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// The client address a request came from (set by the accept loop on every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Failed authentications per client address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    table: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Entries in `table` (kept under its lock): lets every authenticated request skip the
    /// lock while no address has failed.
    tracked: AtomicUsize,
}

impl AuthThrottle {
    /// Seconds `addr` must wait before it may try a key again, if it is blocked (`limit`
    /// failures within the current window).
    #[must_use]
    pub fn blocked(&self, addr: IpAddr, limit: u32, now: Instant) -> Option<u64> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let &(count, start) = table.get(&addr)?;
        let elapsed = now.saturating_duration_since(start);
        (count >= limit && elapsed < WINDOW).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts one failed authentication of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_ADDRESSES && !table.contains_key(&addr) {
            table.retain(|_, (_, start)| now.saturating_duration_since(*start) < WINDOW);
            if table.len() >= MAX_ADDRESSES {
                table.clear();
            }
        }
        let entry = table.entry(addr).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        self.tracked.store(table.len(), Ordering::Relaxed);
    }

    /// Addresses tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no address is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_for_the_rest_of_the_window() {
        let t = AuthThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.blocked(a, 3, now).is_none());
            t.failed(a, now);
        }
        assert!(t.blocked(a, 3, now + Duration::from_secs(10)).is_some());
        assert!(t.blocked("192.0.2.2".parse().unwrap(), 3, now).is_none());
        assert!(t.blocked(a, 3, now + WINDOW).is_none(), "a new window");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.len() <= MAX_ADDRESSES);
    }
}

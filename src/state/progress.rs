//! The applied-offset watermark of one partition, and the applied ranges above it.
//!
//! Appends complete out of order across writers (two group-commit tickets of one partition
//! can be applied in either order), so the watermark — the first offset not yet applied —
//! advances only over a *contiguous* prefix of applied offsets. Ranges applied beyond a gap
//! are remembered here, in memory, until the gap closes; after a restart they are simply
//! applied again by catch-up (applying is idempotent). The invariant the store keeps on
//! disk: every offset below the watermark has its index entries.

use std::collections::BTreeMap;

/// Watermark and out-of-order applied ranges of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The first offset not yet applied.
    pub watermark: u64,
    /// Applied ranges above the watermark: start → end (exclusive), disjoint, not adjacent,
    /// every start > `watermark`.
    pending: BTreeMap<u64, u64>,
}

impl Progress {
    /// A partition whose stored watermark is `watermark`.
    #[must_use]
    pub fn new(watermark: u64) -> Self {
        Self {
            watermark,
            pending: BTreeMap::new(),
        }
    }

    /// Ranges applied beyond a gap.
    #[must_use]
    pub fn pending_ranges(&self) -> usize {
        self.pending.len()
    }

    /// Records `start..end` as applied; the watermark advances over what became contiguous.
    pub fn add(&mut self, start: u64, end: u64) {
        if end <= self.watermark || start >= end {
            return;
        }
        let mut s = start.max(self.watermark);
        let mut e = end;
        // Ranges that overlap or touch s..e: start ≤ e and end ≥ s.
        let touching: Vec<(u64, u64)> = self
            .pending
            .range(..=e)
            .filter(|&(_, &pe)| pe >= s)
            .map(|(&ps, &pe)| (ps, pe))
            .collect();
        for (ps, pe) in touching {
            self.pending.remove(&ps);
            s = s.min(ps);
            e = e.max(pe);
        }
        if s <= self.watermark {
            self.watermark = e;
        } else {
            self.pending.insert(s, e);
        }
    }

    /// Moves the watermark to `to` (catch-up starting past records the log no longer has,
    /// or a rewind after the log lost records), dropping pending ranges below it, or at or
    /// above it when rewinding.
    pub fn reset(&mut self, to: u64) {
        if to >= self.watermark {
            self.pending.retain(|_, e| *e > to);
            let first = self.pending.first_key_value().map(|(&s, &e)| (s, e));
            self.watermark = to;
            if let Some((s, e)) = first {
                if s <= to {
                    self.pending.remove(&s);
                    self.watermark = e;
                }
            }
        } else {
            self.pending.clear();
            self.watermark = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_advances() {
        let mut p = Progress::new(0);
        p.add(0, 3);
        p.add(3, 4);
        assert_eq!(p.watermark, 4);
        assert_eq!(p.pending_ranges(), 0);
    }

    #[test]
    fn out_of_order_waits_for_the_gap() {
        let mut p = Progress::new(10);
        p.add(12, 13);
        p.add(15, 20);
        assert_eq!(p.watermark, 10);
        p.add(13, 15); // merges 12..13, 13..15 and 15..20
        assert_eq!(p.pending_ranges(), 1);
        assert_eq!(p.watermark, 10);
        p.add(10, 12);
        assert_eq!(p.watermark, 20);
        assert_eq!(p.pending_ranges(), 0);
    }

    #[test]
    fn replays_below_the_watermark_change_nothing() {
        let mut p = Progress::new(10);
        p.add(3, 7);
        p.add(5, 5);
        assert_eq!(p, Progress::new(10));
        p.add(8, 12);
        assert_eq!(p.watermark, 12);
    }

    #[test]
    fn reset_forward_and_back() {
        let mut p = Progress::new(0);
        p.add(5, 8);
        p.add(20, 30);
        p.reset(6); // log starts at 6: 6..8 already applied
        assert_eq!(p.watermark, 8);
        assert_eq!(p.pending_ranges(), 1);
        p.reset(4); // rewind: everything pending is forgotten
        assert_eq!(p, Progress::new(4));
    }
}

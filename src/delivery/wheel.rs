//! A hierarchical timing wheel (Varghese & Lauck) holding the near horizon of due times:
//! delayed messages and retries (DESIGN.md, "Timer wheel").
//!
//! # Design
//!
//! Time is in milliseconds, one tick per millisecond. The wheel has [`LEVELS`] levels of 64
//! slots (6 bits of the due time each): level 0 slots are 1 ms wide, level 1 slots 64 ms,
//! level 2 slots 4.1 s, level 3 slots 4.4 min, so the levels span 2^24 ms ≈ 4.66 h
//! ([`HORIZON_MS`]). An item due at `due` sits at the level of the highest 6-bit group in
//! which `due` differs from the wheel's current time `now` (the scheme of Kafka's and tokio's
//! wheels): level 0 holds the items due in `now`'s 64 ms block, level 1 those due in its
//! 4096 ms block but a later 64 ms block, and so on, each in the slot given by its own
//! 6 bits at that level. Items due in a later 2^24 ms block wait in an *overflow* list that is
//! redistributed when time enters the block of its earliest item. Items inserted with a due
//! time at or before `now` wait in an *expired* list that the next [`TimerWheel::advance`]
//! fires first.
//!
//! [`TimerWheel::advance`] jumps from one occupied bucket to the next rather than ticking:
//! each level keeps a `u64` occupancy bitmap, so finding the next occupied slot is a
//! `trailing_zeros`, and an idle stretch of any length costs a handful of word operations.
//! Reaching a level-0 slot fires its items (all share one due time); reaching a slot of a
//! higher level *cascades* it: each item moves to the level its due time now calls for (or
//! fires, if due at that very millisecond). Every item is thus touched at most once per level
//! plus once per overflow redistribution.
//!
//! Items live in a slab (`Vec` of slots plus a free list, `u32` indices); every bucket is an
//! intrusive doubly-linked list through the slab, so insertion and cancellation are O(1). A
//! [`TimerKey`] carries the slot's generation, bumped whenever a slot is freed, so a stale key
//! (its item fired or was cancelled) never cancels another item. A pending item costs
//! 24 bytes of bookkeeping plus `Option<T>` (see the `slot_is_small` test), so a million
//! timers cost tens of megabytes. The slab does not shrink.
//!
//! # Order
//!
//! [`TimerWheel::advance`] yields items in non-decreasing due order, and items with equal due
//! times in insertion order: every bucket list is kept in insertion order (a bucket at a
//! lower level only ever receives a cascade while it is empty, and later inserts append).

use std::fmt;

/// Bits of the due time per level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// The number of levels.
pub const LEVELS: usize = 4;
/// The span the levels cover, in ms (2^24 ms ≈ 4.66 h); items due further away than the
/// current 2^24 ms block wait in an overflow list.
pub const HORIZON_MS: u64 = 1 << (SLOT_BITS as usize * LEVELS);
/// The list of items inserted at or before the current time.
const EXPIRED: u16 = (LEVELS * SLOTS) as u16;
/// The list of items beyond the horizon.
const OVERFLOW: u16 = EXPIRED + 1;
/// Lists: one per slot per level, plus `EXPIRED` and `OVERFLOW`.
const LIST_COUNT: usize = LEVELS * SLOTS + 2;
/// The null link.
const NIL: u32 = u32::MAX;

/// A handle on one pending item, for [`TimerWheel::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// One slab slot: a pending item linked into one list, or a vacant slot linked into the free
/// list (through `next`).
struct Slot<T> {
    due: u64,
    prev: u32,
    next: u32,
    generation: u32,
    list: u16,
    item: Option<T>,
}

/// The two ends of one intrusive list.
#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// Where the next event of [`TimerWheel::advance`] comes from.
#[derive(Clone, Copy)]
enum Source {
    /// A slot list of levels 0..LEVELS.
    Slot(u16),
    /// The overflow list.
    Overflow,
}

/// A hierarchical timing wheel of items of type `T`, with a 1 ms tick (see the module
/// documentation).
pub struct TimerWheel<T> {
    /// Every item due at or before `now` has fired, except those in the `EXPIRED` list.
    now: u64,
    slots: Vec<Slot<T>>,
    free_head: u32,
    len: usize,
    lists: Vec<Ends>,
    /// Bit `s` of `occupied[l]` is set iff the list of slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    /// The least due time in the `EXPIRED` list (when non-empty).
    expired_min: u64,
    /// A lower bound of the due times in the `OVERFLOW` list (when non-empty): exact after
    /// each redistribution, and not raised by cancellations. It always lies in a later
    /// 2^24 ms block than `now`.
    overflow_min: u64,
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("now", &self.now)
            .field("len", &self.len)
            .field("next_due", &self.next_due())
            .finish_non_exhaustive()
    }
}

/// The level at which an item due at `due` sits when the time is `now` (`due > now`):
/// the index of the highest 6-bit group in which they differ; `LEVELS` or more means
/// overflow.
fn level_for(now: u64, due: u64) -> usize {
    let masked = (now ^ due) | (SLOTS as u64 - 1);
    let significant = masked.ilog2();
    (significant / SLOT_BITS) as usize
}

/// The slot of `time` at `level`.
fn slot_of(time: u64, level: usize) -> usize {
    ((time >> (level as u32 * SLOT_BITS)) & (SLOTS as u64 - 1)) as usize
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose current time is `now_ms`.
    #[must_use]
    pub fn new(now_ms: u64) -> Self {
        Self {
            now: now_ms,
            slots: Vec::new(),
            free_head: NIL,
            len: 0,
            lists: vec![EMPTY; LIST_COUNT],
            occupied: [0; LEVELS],
            expired_min: 0,
            overflow_min: 0,
        }
    }

    /// The wheel's current time: the last time passed to [`advance`](Self::advance) (or
    /// [`new`](Self::new)), never decreasing.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The number of pending items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` for `due_ms`. A due time at or before [`now`](Self::now) fires at the
    /// next [`advance`](Self::advance), whatever time that is given.
    ///
    /// # Panics
    ///
    /// If `u32::MAX − 1` items are already pending.
    pub fn insert(&mut self, due_ms: u64, item: T) -> TimerKey {
        let index = if self.free_head == NIL {
            let index = u32::try_from(self.slots.len()).unwrap_or(NIL);
            assert!(index != NIL, "timer wheel full: {} pending items", self.len);
            self.slots.push(Slot {
                due: due_ms,
                prev: NIL,
                next: NIL,
                generation: 0,
                list: 0,
                item: Some(item),
            });
            index
        } else {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            self.free_head = slot.next;
            slot.due = due_ms;
            slot.item = Some(item);
            index
        };
        self.len += 1;
        let list = self.list_for(due_ms);
        self.link(index, list);
        TimerKey {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    /// Removes the item of `key` before it fires and returns it; `None` when it already fired
    /// or was cancelled (a stale key never touches another item).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation || slot.item.is_none() {
            return None;
        }
        self.unlink(key.index);
        self.release(key.index).map(|(_, item)| item)
    }

    /// Moves the current time to `now_ms` (a time before [`now`](Self::now) counts as
    /// `now()`) and pushes every item due at or before it onto `out`, with its due time, in
    /// non-decreasing due order (equal due times in insertion order). The cost is
    /// proportional to the items fired or moved between levels plus a few word operations
    /// per occupied bucket reached, not to the time elapsed.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<(u64, T)>) {
        let target = now_ms.max(self.now);
        // Items inserted at or before `now`: all due before anything still in the wheel.
        let start = out.len();
        let mut head = self.take_list(EXPIRED);
        while head != NIL {
            let next = self.slots[head as usize].next;
            self.fire(head, out);
            head = next;
        }
        out[start..].sort_by_key(|(due, _)| *due);

        while let Some((deadline, source)) = self.next_event() {
            if deadline > target {
                break;
            }
            // Every item due before `deadline` has fired; the time moves to it.
            self.now = deadline;
            let list = match source {
                Source::Slot(list) => list,
                Source::Overflow => OVERFLOW,
            };
            let mut head = self.take_list(list);
            while head != NIL {
                let next = self.slots[head as usize].next;
                if self.slots[head as usize].due <= self.now {
                    self.fire(head, out);
                } else {
                    let to = self.list_for(self.slots[head as usize].due);
                    self.link(head, to);
                }
                head = next;
            }
        }
        self.now = target;
    }

    /// When the caller should next call [`advance`](Self::advance), or `None` when nothing is
    /// pending. Never later than the earliest pending due time:
    ///
    /// - exact when the earliest item sits at level 0 (due within the current 64 ms block)
    ///   or was inserted at or before `now` (then the result is at or before `now`: advance
    ///   at once);
    /// - otherwise a lower bound: the start of the earliest occupied bucket of a higher
    ///   level, or a lower bound of the overflow's due times. Advancing to it cascades that
    ///   bucket, after which `next_due` is more precise (a few such steps at most).
    #[must_use]
    pub fn next_due(&self) -> Option<u64> {
        if self.lists[EXPIRED as usize].head != NIL {
            return Some(self.expired_min);
        }
        match self.next_event()? {
            // The overflow's bound is sharper than the start of its block.
            (_, Source::Overflow) => Some(self.overflow_min),
            (deadline, Source::Slot(_)) => Some(deadline),
        }
    }

    /// The earliest occupied bucket of the levels and the overflow, with its start time.
    /// Lower levels always come first: a level-`l` item is due in `now`'s block of level
    /// `l + 1`, before any bucket of a higher level begins.
    fn next_event(&self) -> Option<(u64, Source)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits == 0 {
                continue;
            }
            // Every occupied slot lies at or after `now`'s slot at this level (the items are
            // due in `now`'s block of the next level and after `now`).
            let position = slot_of(self.now, level);
            let ahead = bits & (u64::MAX << position);
            debug_assert_eq!(ahead, bits, "timer wheel level {level} behind the time");
            let slot = if ahead == 0 { bits } else { ahead }.trailing_zeros() as usize;
            let shift = level as u32 * SLOT_BITS;
            let block = self.now & !((1u64 << (shift + SLOT_BITS)) - 1);
            let deadline = block + ((slot as u64) << shift);
            return Some((deadline, Source::Slot((level * SLOTS + slot) as u16)));
        }
        if self.lists[OVERFLOW as usize].head != NIL {
            // The overflow is redistributed when the time enters the 2^24 ms block of its
            // earliest item (a later block than `now`'s).
            let block = self.overflow_min & !(HORIZON_MS - 1);
            return Some((block.max(self.now), Source::Overflow));
        }
        None
    }

    /// The list an item due at `due` belongs in at the current time.
    fn list_for(&self, due: u64) -> u16 {
        if due <= self.now {
            return EXPIRED;
        }
        let level = level_for(self.now, due);
        if level >= LEVELS {
            OVERFLOW
        } else {
            (level * SLOTS + slot_of(due, level)) as u16
        }
    }

    /// Appends slab slot `index` to `list`.
    fn link(&mut self, index: u32, list: u16) {
        let ends = self.lists[list as usize];
        let due = self.slots[index as usize].due;
        let slot = &mut self.slots[index as usize];
        slot.list = list;
        slot.prev = ends.tail;
        slot.next = NIL;
        if ends.tail == NIL {
            self.lists[list as usize].head = index;
        } else {
            self.slots[ends.tail as usize].next = index;
        }
        self.lists[list as usize].tail = index;
        let was_empty = ends.head == NIL;
        match list {
            EXPIRED => {
                self.expired_min = if was_empty {
                    due
                } else {
                    self.expired_min.min(due)
                };
            }
            OVERFLOW => {
                self.overflow_min = if was_empty {
                    due
                } else {
                    self.overflow_min.min(due)
                };
            }
            _ => {
                let list = list as usize;
                self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
            }
        }
    }

    /// Removes slab slot `index` from its list.
    fn unlink(&mut self, index: u32) {
        let (list, prev, next) = {
            let slot = &self.slots[index as usize];
            (slot.list, slot.prev, slot.next)
        };
        if prev == NIL {
            self.lists[list as usize].head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list as usize].tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let list = list as usize;
        if list < LEVELS * SLOTS && self.lists[list].head == NIL {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }

    /// Empties `list` and returns the head of its former chain (still linked through
    /// `next`).
    fn take_list(&mut self, list: u16) -> u32 {
        let head = self.lists[list as usize].head;
        self.lists[list as usize] = EMPTY;
        let list = list as usize;
        if list < LEVELS * SLOTS {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
        head
    }

    /// Frees slab slot `index` (already unlinked) and pushes its item onto `out`.
    fn fire(&mut self, index: u32, out: &mut Vec<(u64, T)>) {
        if let Some(fired) = self.release(index) {
            out.push(fired);
        }
    }

    /// Frees slab slot `index` (already unlinked): bumps its generation, puts it on the free
    /// list and returns its due time and item.
    fn release(&mut self, index: u32) -> Option<(u64, T)> {
        let slot = &mut self.slots[index as usize];
        let item = slot.item.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.prev = NIL;
        slot.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        Some((slot.due, item))
    }
}

#[cfg(test)]
#[path = "wheel_tests.rs"]
mod tests;

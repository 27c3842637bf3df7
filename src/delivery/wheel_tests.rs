use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Checks the wheel's invariants: every pending item is in the list its due time calls for
/// (overflow items beyond `overflow_min`'s lower bound), lists are well linked, bitmaps match.
fn check<T>(w: &TimerWheel<T>) {
    let mut count = 0;
    for (list, ends) in w.lists.iter().enumerate() {
        let mut prev = NIL;
        let mut cur = ends.head;
        while cur != NIL {
            let slot = &w.slots[cur as usize];
            assert!(slot.item.is_some());
            assert_eq!(slot.list as usize, list);
            assert_eq!(slot.prev, prev);
            let expected = w.list_for(slot.due);
            assert_eq!(expected as usize, list, "due {} now {}", slot.due, w.now);
            if list == OVERFLOW as usize {
                assert!(w.overflow_min <= slot.due);
                assert!(level_for(w.now, w.overflow_min) >= LEVELS);
            }
            if list == EXPIRED as usize {
                assert!(w.expired_min <= slot.due);
            }
            count += 1;
            prev = cur;
            cur = slot.next;
        }
        assert_eq!(ends.tail, prev);
        if list < LEVELS * SLOTS {
            let bit = w.occupied[list / SLOTS] >> (list % SLOTS) & 1 == 1;
            assert_eq!(bit, ends.head != NIL);
        }
    }
    assert_eq!(count, w.len);
}

fn drain<T>(w: &mut TimerWheel<T>, now: u64) -> Vec<(u64, T)> {
    let mut out = Vec::new();
    w.advance(now, &mut out);
    out
}

#[test]
fn slot_is_small() {
    assert!(std::mem::size_of::<Slot<u64>>() <= 40);
    assert!(std::mem::size_of::<Slot<()>>() <= 32);
    assert!(std::mem::size_of::<Slot<[u64; 4]>>() <= 64);
}

#[test]
fn empty_wheel() {
    let mut w: TimerWheel<u32> = TimerWheel::new(1000);
    assert!(w.is_empty());
    assert_eq!(w.len(), 0);
    assert_eq!(w.next_due(), None);
    assert_eq!(w.now(), 1000);
    assert!(drain(&mut w, u64::MAX / 2).is_empty());
    assert_eq!(w.now(), u64::MAX / 2);
    assert_eq!(
        format!("{w:?}"),
        format!(
            "TimerWheel {{ now: {}, len: 0, next_due: None, .. }}",
            u64::MAX / 2
        )
    );
}

#[test]
fn fires_at_due_not_before() {
    let mut w = TimerWheel::new(0);
    w.insert(10, "a");
    assert_eq!(w.next_due(), Some(10));
    assert!(drain(&mut w, 9).is_empty());
    assert_eq!(w.len(), 1);
    assert_eq!(drain(&mut w, 10), vec![(10, "a")]);
    assert!(w.is_empty());
    assert_eq!(w.next_due(), None);
}

#[test]
fn due_in_the_past_or_now_fires_at_next_advance() {
    let mut w = TimerWheel::new(5000);
    w.insert(4000, "past");
    w.insert(5000, "now");
    w.insert(0, "epoch");
    w.insert(5001, "next");
    assert_eq!(w.next_due(), Some(0));
    // Even an advance that does not move the time fires them, earliest first.
    assert_eq!(
        drain(&mut w, 5000),
        vec![(0, "epoch"), (4000, "past"), (5000, "now")]
    );
    assert_eq!(w.next_due(), Some(5001));
    // A time before now counts as now.
    assert!(drain(&mut w, 10).is_empty());
    assert_eq!(w.now(), 5000);
    assert_eq!(drain(&mut w, 6000), vec![(5001, "next")]);
}

#[test]
fn past_items_come_before_later_ones_in_the_same_advance() {
    let mut w = TimerWheel::new(100);
    w.insert(150, 1);
    w.insert(90, 2);
    w.insert(100, 3);
    assert_eq!(drain(&mut w, 200), vec![(90, 2), (100, 3), (150, 1)]);
}

#[test]
fn cascades_through_every_level_in_order() {
    let mut w = TimerWheel::new(0);
    let dues = [
        1, 63, 64, 65, 127, 4095, 4096, 4097, 262_143, 262_144, 262_145, 16_777_215,
    ];
    for (i, &d) in dues.iter().enumerate().rev() {
        w.insert(d, i);
    }
    let mut fired = Vec::new();
    let mut now = 0;
    while let Some(next) = w.next_due() {
        assert!(next > now, "next_due {next} not after {now}");
        now = next;
        w.advance(now, &mut fired);
    }
    let got: Vec<u64> = fired.iter().map(|(d, _)| *d).collect();
    assert_eq!(got, dues);
    assert!(fired.iter().enumerate().all(|(i, (_, v))| *v == i));
}

#[test]
fn next_due_is_a_lower_bound_that_sharpens() {
    let mut w = TimerWheel::new(0);
    w.insert(5000, ());
    // 5000 lies in a later 4096 ms block than 0: level 2, whose slot starts at 4096.
    assert_eq!(w.next_due(), Some(4096));
    assert!(drain(&mut w, 4096).is_empty());
    // Now at level 1: its 64 ms slot starts at 4992.
    assert_eq!(w.next_due(), Some(4992));
    assert!(drain(&mut w, 4992).is_empty());
    assert_eq!(w.next_due(), Some(5000));
    assert_eq!(drain(&mut w, 5000).len(), 1);
}

#[test]
fn far_future_beyond_the_horizon() {
    let start = 1_700_000_000_000;
    let mut w = TimerWheel::new(start);
    let day = 86_400_000;
    w.insert(start + 3 * day, "3d");
    w.insert(start + day, "1d");
    w.insert(start + HORIZON_MS + 1, "h+1");
    w.insert(start + 1000, "1s");
    w.insert(u64::MAX, "end");
    assert_eq!(w.len(), 5);
    assert_eq!(drain(&mut w, start + 1000), vec![(start + 1000, "1s")]);
    assert!(w.next_due().unwrap() <= start + HORIZON_MS + 1);
    // One huge jump fires them all, in order.
    assert_eq!(
        drain(&mut w, start + 10 * day),
        vec![
            (start + HORIZON_MS + 1, "h+1"),
            (start + day, "1d"),
            (start + 3 * day, "3d")
        ]
    );
    assert!(w.next_due().is_some());
    assert_eq!(drain(&mut w, u64::MAX - 1), vec![]);
    assert_eq!(drain(&mut w, u64::MAX), vec![(u64::MAX, "end")]);
    assert!(w.is_empty());
}

#[test]
fn stepping_by_next_due_reaches_far_items_in_few_steps() {
    let mut w = TimerWheel::new(0);
    let due = 7 * HORIZON_MS + 12_345;
    w.insert(due, ());
    let mut steps = 0;
    let mut out = Vec::new();
    while let Some(next) = w.next_due() {
        assert!(next <= due);
        w.advance(next, &mut out);
        steps += 1;
        assert!(steps <= 2 + LEVELS, "too many steps");
    }
    assert_eq!(out, vec![(due, ())]);
}

#[test]
fn many_items_in_one_slot_fire_in_insertion_order() {
    let mut w = TimerWheel::new(0);
    let keys: Vec<_> = (0..10_000).map(|i| w.insert(300_000, i)).collect();
    for k in keys.iter().skip(1).step_by(2) {
        assert!(w.cancel(*k).is_some());
    }
    // More arrive after cascades brought the slot down to level 0.
    assert!(drain(&mut w, 299_990).is_empty());
    for i in 10_000..10_010 {
        w.insert(300_000, i);
    }
    let out = drain(&mut w, 300_000);
    let expected: Vec<_> = (0..10_000)
        .step_by(2)
        .chain(10_000..10_010)
        .map(|i| (300_000, i))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn cancel_returns_the_item_once() {
    let mut w = TimerWheel::new(0);
    let a = w.insert(100, "a");
    let b = w.insert(100_000_000, "b");
    let c = w.insert(0, "c");
    assert_eq!(w.cancel(b), Some("b"));
    assert_eq!(w.cancel(b), None);
    assert_eq!(w.cancel(c), Some("c"));
    assert_eq!(w.len(), 1);
    // 100 sits at level 1, in the slot starting at 64.
    assert_eq!(w.next_due(), Some(64));
    assert_eq!(drain(&mut w, 1_000_000_000), vec![(100, "a")]);
    // After firing: None.
    assert_eq!(w.cancel(a), None);
}

#[test]
fn stale_key_never_cancels_a_reused_slot() {
    let mut w = TimerWheel::new(0);
    let old = w.insert(10, 1);
    assert_eq!(drain(&mut w, 10), vec![(10, 1)]);
    let new = w.insert(20, 2);
    // The slab slot was reused, with a new generation.
    assert_eq!(old.index, new.index);
    assert_ne!(old, new);
    assert_eq!(w.cancel(old), None);
    assert_eq!(w.len(), 1);
    assert_eq!(w.cancel(new), Some(2));
    // A key from another wheel, out of range: None.
    let mut other = TimerWheel::new(0);
    for i in 0..5 {
        other.insert(i, i);
    }
    let foreign = other.insert(9, 9);
    assert_eq!(w.cancel(foreign), None);
}

#[test]
fn cancelled_earliest_overflow_item_leaves_a_lower_bound() {
    let mut w = TimerWheel::new(0);
    let first = w.insert(HORIZON_MS * 2, 1);
    w.insert(HORIZON_MS * 5, 2);
    assert_eq!(w.next_due(), Some(HORIZON_MS * 2));
    w.cancel(first);
    // Still a lower bound; advancing to it sharpens it.
    assert_eq!(w.next_due(), Some(HORIZON_MS * 2));
    assert!(drain(&mut w, HORIZON_MS * 2).is_empty());
    assert_eq!(w.next_due(), Some(HORIZON_MS * 5));
    assert_eq!(drain(&mut w, u64::MAX), vec![(HORIZON_MS * 5, 2)]);
}

#[test]
fn huge_jumps_and_idle_stretches() {
    let mut w = TimerWheel::new(0);
    let mut now = 0u64;
    let mut out = Vec::new();
    for i in 0..1000u64 {
        let due = now + (i * 7919) % (HORIZON_MS * 3);
        w.insert(due, i);
        now += HORIZON_MS / 3;
        w.advance(now, &mut out);
    }
    w.advance(u64::MAX, &mut out);
    assert_eq!(out.len(), 1000);
    assert!(out.windows(2).all(|p| p[0].0 <= p[1].0));
    assert!(w.is_empty());
}

#[test]
fn wheel_near_the_end_of_time() {
    let start = u64::MAX - 100;
    let mut w = TimerWheel::new(start);
    w.insert(u64::MAX, 'z');
    w.insert(start + 1, 'a');
    w.insert(start, 'n');
    assert_eq!(
        drain(&mut w, u64::MAX),
        vec![(start, 'n'), (start + 1, 'a'), (u64::MAX, 'z')]
    );
    w.insert(u64::MAX, 'y');
    assert_eq!(drain(&mut w, u64::MAX), vec![(u64::MAX, 'y')]);
}

#[test]
fn a_million_timers() {
    let mut w = TimerWheel::new(0);
    for i in 0..1_000_000u64 {
        w.insert((i * 2_654_435_761) % 3_600_000 + 1, i);
    }
    let mut out = Vec::with_capacity(1_000_000);
    let mut now = 0;
    while now < 3_600_000 {
        now += 997;
        w.advance(now, &mut out);
    }
    assert_eq!(out.len(), 1_000_000);
    assert!(out.windows(2).all(|p| p[0].0 <= p[1].0));
}

// ---- model-based property test ----

#[derive(Debug, Clone)]
enum Op {
    /// Insert at `now + offset` (offsets may be negative: due in the past).
    Insert(i64),
    /// Cancel the `n`-th key ever issued (modulo the count).
    Cancel(usize),
    /// Advance by a jump.
    Advance(u64),
    /// Advance to the wheel's own `next_due`.
    AdvanceToNextDue,
}

fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        -100i64..100,
        -5000i64..70_000,
        0i64..(1 << 26),
        0i64..(1 << 40),
        Just(0i64),
    ]
}

fn jump() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..70,
        0u64..5000,
        0u64..(1 << 20),
        0u64..(1 << 27),
        0u64..(1 << 41),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => offset().prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => jump().prop_map(Op::Advance),
        1 => Just(Op::AdvanceToNextDue),
    ]
}

fn run_model(start: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w: TimerWheel<u64> = TimerWheel::new(start);
    let mut model: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut keys: Vec<(TimerKey, u64, u64)> = Vec::new();
    let mut seq = 0u64;
    let mut now = start;
    let mut out = Vec::new();
    for op in ops {
        match *op {
            Op::Insert(off) => {
                let due = now.saturating_add_signed(off);
                let key = w.insert(due, seq);
                model.insert((due, seq), seq);
                keys.push((key, due, seq));
                seq += 1;
            }
            Op::Cancel(n) => {
                if !keys.is_empty() {
                    let (key, due, s) = keys[n % keys.len()];
                    prop_assert_eq!(w.cancel(key), model.remove(&(due, s)));
                }
            }
            Op::Advance(_) | Op::AdvanceToNextDue => {
                let to = match *op {
                    Op::Advance(j) => now.saturating_add(j),
                    _ => w.next_due().unwrap_or(now),
                };
                out.clear();
                w.advance(to, &mut out);
                now = now.max(to);
                let rest = match now.checked_add(1) {
                    Some(after) => model.split_off(&(after, 0)),
                    None => BTreeMap::new(),
                };
                let expected: Vec<(u64, u64)> =
                    model.iter().map(|(&(due, _), &v)| (due, v)).collect();
                model = rest;
                prop_assert_eq!(&out, &expected);
                prop_assert_eq!(w.now(), now);
            }
        }
        check(&w);
        prop_assert_eq!(w.len(), model.len());
        prop_assert_eq!(w.is_empty(), model.is_empty());
        let next = w.next_due();
        prop_assert_eq!(next.is_some(), !model.is_empty());
        if let (Some(next), Some((&(earliest, _), _))) = (next, model.iter().next()) {
            prop_assert!(
                next <= earliest,
                "next_due {} > earliest {}",
                next,
                earliest
            );
        }
    }
    // Everything left fires on a final jump to the end of time, in order.
    out.clear();
    w.advance(u64::MAX, &mut out);
    let expected: Vec<(u64, u64)> = model.iter().map(|(&(due, _), &v)| (due, v)).collect();
    prop_assert_eq!(out, expected);
    prop_assert!(w.is_empty());
    prop_assert_eq!(w.next_due(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn wheel_matches_model(
        start in prop_oneof![Just(0u64), 0u64..(1 << 45), Just(u64::MAX - (1 << 42))],
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run_model(start, &ops)?;
    }
}

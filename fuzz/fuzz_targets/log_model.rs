//! `log_model`: a model-based target (in the spirit of sled's `fuzz_model.rs`). An
//! `arbitrary` sequence of operations runs against a `Log` on a crash-simulating `SimFs`
//! and, in parallel, against a model: the list of acknowledged records.
//!
//! Rules checked:
//! - offsets are dense: an append of `n` records gets `model.len() .. model.len() + n`;
//! - `Read { from }` from `from % (len + 1)` yields exactly the model's records from there,
//!   byte-identical (key, headers, payload, due_ms), with non-decreasing timestamps;
//! - `Reboot` (clean `close()`, reopen) loses nothing;
//! - `Crash` (`SimFs::crash`: only synced bytes and synced directory entries survive) and
//!   `TornCrash { keep }` (`SimFs::crash_keeping`: a prefix of each file's unsynced bytes
//!   survives) may lose records acknowledged without an fsync, but only as a suffix: the
//!   reopened log is a prefix of the model, no holes, every record byte-identical, and at
//!   least as long as the durable floor (everything up to the last acknowledgement that an
//!   fsync covered: a `Sync` append, an append acked `synced`, `sync()`, `roll()`, a clean
//!   close). The model then truncates itself to what survived.
//! - a `Sync` append is acknowledged `synced`; records too large are refused with
//!   `RecordTooLarge` and change nothing; the log never poisons (SimFs never fails).
//!
//! The input also picks the configuration: `Preallocate`, `RecoveryMode` (under
//! `AbsoluteConsistency` a torn crash may refuse the open with `Corruption`; the harness
//! then reopens with `TolerateTailCorruption`, as an operator would; after a clean close or a
//! plain crash the strict open must succeed), `verify_on_open`, the index interval and the
//! batch size. Segments are 64 KiB so that rolls happen often.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wald_storage::io::SimFs;
use wald_storage::{
    Durability, Error, Log, LogConfig, Preallocate, Record, RecoveryMode, StoredRecord,
};

const DIR: &str = "/wald/p0";
const MAX_RECORD: usize = 16 << 10;
const MAX_OPS: usize = 96;

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Dur {
    Sync,
    None,
    /// `Durability::Batch` with a 50 ms deadline: like `None` for the model.
    Batch,
}

impl Dur {
    fn engine(self) -> Durability {
        match self {
            Self::Sync => Durability::Sync,
            Self::None => Durability::None,
            Self::Batch => Durability::Batch {
                max_delay: Duration::from_millis(50),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    Append {
        len: u16,
        durability: Dur,
    },
    /// One append call of 1..=8 records (one ticket, one batch write).
    AppendMany {
        len: u16,
        count: u8,
        durability: Dur,
    },
    Read {
        from: u16,
    },
    Roll,
    Sync,
    /// Close cleanly and reopen.
    Reboot,
    /// Power loss: only synced data and directory entries survive; reopen.
    Crash,
    /// Power loss with a torn write: a prefix (keep/255) of each file's unsynced bytes survives.
    TornCrash {
        keep: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Setup {
    prealloc_none: bool,
    strict: bool,
    skip_verify_on_open: bool,
    index_interval: u8,
    small_batches: bool,
}

#[derive(Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

// By hand rather than derived: a derived trailing `Vec<Op>` reads a "one more?" flag
// before each element, so random bytes give one or two ops. Here every byte left
// becomes ops, up to MAX_OPS.
impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let setup = Setup::arbitrary(u)?;
        let mut ops = Vec::new();
        while !u.is_empty() && ops.len() < MAX_OPS {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(Self { setup, ops })
    }
}

struct Model {
    recs: Vec<Record>,
    /// Records `..durable` were covered by an fsync (or a clean close) and must survive.
    durable: usize,
    /// Never reused, so a lost record is never confused with a later one.
    seq: u64,
}

impl Model {
    fn record(&mut self, len: u16) -> Record {
        let seq = self.seq;
        self.seq += 1;
        let fill = (seq as u8).wrapping_mul(31).wrapping_add(7);
        let mut payload = vec![fill; usize::from(len) % (17 << 10)];
        // Make every record unique even when empty-ish: stamp the sequence number in front.
        let stamp = seq.to_le_bytes();
        let n = payload.len().min(8);
        payload[..n].copy_from_slice(&stamp[..n]);
        Record {
            key: if seq % 2 == 0 {
                stamp.to_vec()
            } else {
                Vec::new()
            },
            headers: if seq % 3 == 0 {
                vec![("seq".to_owned(), stamp.to_vec())]
            } else {
                Vec::new()
            },
            payload,
            due_ms: seq,
        }
    }
}

/// `WALD_FUZZ_DEBUG` set: print each step and what the model saw (for reading a reproducer).
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WALD_FUZZ_DEBUG").is_some())
}

fn config(s: &Setup, mode: RecoveryMode) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: MAX_RECORD,
        index_interval_bytes: 64 + u32::from(s.index_interval) * 32,
        preallocate: if s.prealloc_none {
            Preallocate::None
        } else {
            Preallocate::ZeroFill
        },
        max_batch_bytes: if s.small_batches { 4 << 10 } else { 512 << 10 },
        recovery_mode: mode,
        verify_on_open: !s.skip_verify_on_open,
        ..LogConfig::default()
    }
}

fn same(got: &StoredRecord, want: &Record) -> bool {
    got.key == want.key
        && got.headers == want.headers
        && got.payload == want.payload
        && got.due_ms == want.due_ms
}

/// Reads from `from` to the end and compares with the model.
fn check_read(log: &Log, model: &[Record], from: u64, when: &str) {
    let reader = log.read_from(from).unwrap_or_else(|e| {
        panic!(
            "{when}: read_from({from}) failed with {} records: {e}",
            model.len()
        )
    });
    let mut expect = from;
    let mut last_ts = 0;
    for r in reader {
        let r = r.unwrap_or_else(|e| {
            panic!(
                "{when}: reading offset {expect} (of {}) failed: {e}",
                model.len()
            )
        });
        assert_eq!(r.offset, expect, "{when}: offsets not dense");
        let i = usize::try_from(r.offset).expect("offset fits usize");
        let want = model.get(i).unwrap_or_else(|| {
            panic!(
                "{when}: the log holds offset {i} but the model only {} records",
                model.len()
            )
        });
        assert!(
            same(&r, want),
            "{when}: record {i} differs from what was appended:\n  log:   key={:02x?} headers={:?} due={} payload[{}]={:02x?}\n  model: key={:02x?} headers={:?} due={} payload[{}]={:02x?}",
            r.key, r.headers, r.due_ms, r.payload.len(), &r.payload[..r.payload.len().min(16)],
            want.key, want.headers, want.due_ms, want.payload.len(), &want.payload[..want.payload.len().min(16)],
        );
        assert!(
            r.timestamp_ms >= last_ts,
            "{when}: timestamp went backwards at offset {i}"
        );
        last_ts = r.timestamp_ms;
        expect += 1;
    }
    assert_eq!(
        expect,
        model.len() as u64,
        "{when}: the reader stopped at {expect}, the model has {} records",
        model.len()
    );
}

fn open(fs: &SimFs, setup: &Setup, torn: bool, when: &str) -> Log {
    let mode = if setup.strict {
        RecoveryMode::AbsoluteConsistency
    } else {
        RecoveryMode::TolerateTailCorruption
    };
    match Log::open_with(Arc::new(fs.clone()), DIR, config(setup, mode)) {
        Ok(log) => log,
        // A torn write is exactly what AbsoluteConsistency refuses; the operator's answer is
        // to open with TolerateTailCorruption.
        Err(Error::Corruption { .. }) if setup.strict && torn => Log::open_with(
            Arc::new(fs.clone()),
            DIR,
            config(setup, RecoveryMode::TolerateTailCorruption),
        )
        .unwrap_or_else(|e| {
            panic!("{when}: TolerateTailCorruption open after a torn crash failed: {e}")
        }),
        Err(e) => panic!("{when}: open ({mode:?}) failed: {e}"),
    }
}

/// After a reopen: the log is a prefix of the model at least `durable` long; truncate the model.
fn after_reopen(log: &Log, model: &mut Model, when: &str) {
    let st = log.stats();
    assert!(
        st.poisoned.is_none(),
        "{when}: poisoned after reopen: {st:?}"
    );
    assert_eq!(st.first_offset, 0, "{when}: first offset moved: {st:?}");
    let n = usize::try_from(st.next_offset).expect("fits");
    assert!(
        n >= model.durable,
        "{when}: durable records lost: the log reopened with {n} records but {} were covered by an fsync (model has {})",
        model.durable,
        model.recs.len()
    );
    assert!(
        n <= model.recs.len(),
        "{when}: the log reopened with {n} records, more than the {} acknowledged",
        model.recs.len()
    );
    if debug() {
        eprintln!(
            "  reopened: {n} records survive of {} acknowledged ({} durable)",
            model.recs.len(),
            model.durable
        );
    }
    check_read(log, &model.recs[..n], 0, when);
    model.recs.truncate(n);
    model.durable = n;
}

fn append(log: &Log, model: &mut Model, lens: &[u16], dur: Dur, when: &str) {
    let recs: Vec<Record> = lens.iter().map(|&l| model.record(l)).collect();
    let too_large = recs
        .iter()
        .any(|r| r.encoded_len().is_none_or(|n| n > MAX_RECORD));
    let first = model.recs.len() as u64;
    let res = log.append(&recs, dur.engine()).and_then(|t| t.wait());
    if too_large {
        match res {
            Err(Error::RecordTooLarge { .. }) => return,
            other => panic!("{when}: an append with a record over max_record_bytes gave {other:?}"),
        }
    }
    let a = res.unwrap_or_else(|e| panic!("{when}: append of {} records failed: {e}", recs.len()));
    assert_eq!(
        a.first_offset, first,
        "{when}: offsets not dense: expected first {first}, got {a:?}"
    );
    assert_eq!(
        a.last_offset,
        first + recs.len() as u64 - 1,
        "{when}: wrong last offset: {a:?}"
    );
    if matches!(dur, Dur::Sync) {
        assert!(
            a.synced,
            "{when}: a Sync append was acknowledged without an fsync: {a:?}"
        );
    }
    model.recs.extend(recs);
    if a.synced {
        model.durable = model.recs.len();
    }
}

fuzz_target!(|input: Input| {
    let setup = &input.setup;
    if debug() {
        eprintln!("log_model: {setup:?}, {} ops", input.ops.len().min(MAX_OPS));
    }
    let t0 = std::time::Instant::now();
    let mut fs = SimFs::new();
    let mut log = Some(open(&fs, setup, false, "initial open"));
    let mut model = Model {
        recs: Vec::new(),
        durable: 0,
        seq: 0,
    };

    for (step, op) in input.ops.iter().take(MAX_OPS).enumerate() {
        let when = format!("step {step} {op:?}");
        if debug() {
            eprintln!("{:>8.3} ms  {when}", t0.elapsed().as_secs_f64() * 1e3);
        }
        let l = log.as_ref().expect("open");
        match *op {
            Op::Append { len, durability } => append(l, &mut model, &[len], durability, &when),
            Op::AppendMany {
                len,
                count,
                durability,
            } => {
                let n = usize::from(count % 8) + 1;
                let lens: Vec<u16> = (0..n)
                    .map(|i| len.rotate_left(i as u32 * 3) % 4096)
                    .collect();
                append(l, &mut model, &lens, durability, &when);
            }
            Op::Read { from } => {
                let from = u64::from(from) % (model.recs.len() as u64 + 1);
                check_read(l, &model.recs, from, &when);
            }
            Op::Roll => {
                l.roll()
                    .unwrap_or_else(|e| panic!("{when}: roll failed: {e}"));
                model.durable = model.recs.len();
            }
            Op::Sync => {
                l.sync()
                    .unwrap_or_else(|e| panic!("{when}: sync failed: {e}"));
                model.durable = model.recs.len();
            }
            Op::Reboot => {
                log.take()
                    .expect("open")
                    .close()
                    .unwrap_or_else(|e| panic!("{when}: close failed: {e}"));
                let l = open(&fs, setup, false, &when);
                assert_eq!(
                    l.stats().next_offset,
                    model.recs.len() as u64,
                    "{when}: a clean close lost records"
                );
                model.durable = model.recs.len();
                after_reopen(&l, &mut model, &when);
                log = Some(l);
            }
            Op::Crash | Op::TornCrash { .. } => {
                let crashed = match *op {
                    Op::TornCrash { keep } => {
                        fs.crash_keeping(|_, unsynced| unsynced * usize::from(keep) / 255)
                    }
                    _ => fs.crash(),
                };
                // The old log only ever touches the old file system: dropping it (a clean
                // close there) does not affect the crashed copy.
                drop(log.take());
                fs = crashed;
                let l = open(&fs, setup, matches!(op, Op::TornCrash { .. }), &when);
                after_reopen(&l, &mut model, &when);
                log = Some(l);
            }
        }
        let l = log.as_ref().expect("open");
        let st = l.stats();
        assert_eq!(
            st.next_offset,
            model.recs.len() as u64,
            "{when}: stats disagree with the model: {st:?}"
        );
        assert!(st.poisoned.is_none(), "{when}: the log poisoned: {st:?}");
    }
    // Finally: everything reads back, and a clean close then reopen keeps it all.
    let l = log.take().expect("open");
    check_read(&l, &model.recs, 0, "final read");
    l.close()
        .unwrap_or_else(|e| panic!("final close failed: {e}"));
    let l = open(&fs, setup, false, "final reopen");
    model.durable = model.recs.len();
    after_reopen(&l, &mut model, "final reopen");
    drop(l);
});

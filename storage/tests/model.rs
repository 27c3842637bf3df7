//! Property test: any sequence of appends, reads, rolls, retention, reopens and simulated
//! power losses gives the same answers as a simple in-memory model.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use wald_storage::io::{SimFs, Vfs};
use wald_storage::{Durability, Error, Log, LogConfig, Preallocate, Record};

#[derive(Debug, Clone)]
enum Op {
    Append { n: u8, size: u16, sync: bool },
    Read { from: u16 },
    ReadTime { pick: u16 },
    Roll,
    Sync,
    DeleteBefore { pick: u16 },
    Reopen,
    Crash,
    TornCrash { keep: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..6, 0u16..3000, any::<bool>()).prop_map(|(n, size, sync)| Op::Append { n, size, sync }),
        3 => any::<u16>().prop_map(|from| Op::Read { from }),
        1 => any::<u16>().prop_map(|pick| Op::ReadTime { pick }),
        1 => Just(Op::Roll),
        1 => Just(Op::Sync),
        1 => any::<u16>().prop_map(|pick| Op::DeleteBefore { pick }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => any::<u8>().prop_map(|keep| Op::TornCrash { keep }),
    ]
}

/// The model: the records from `first` on, and how many are known to be synced.
struct Model {
    first: u64,
    records: Vec<(Vec<u8>, u64)>, // (payload, timestamp) for offsets first..
    synced: u64,                  // offsets below this survive any crash
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

fn cfg(prealloc: Preallocate) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        index_interval_bytes: 512,
        preallocate: prealloc,
        ..LogConfig::default()
    }
}

fn open(fs: &SimFs, cfg: &LogConfig) -> Log {
    Log::open_with(
        Arc::new(fs.clone()) as Arc<dyn Vfs>,
        Path::new("/log"),
        cfg.clone(),
    )
    .expect("open")
}

fn payload(seq: u64, size: u16) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..size).map(|i| (u64::from(i) * 31 + seq) as u8));
    p
}

fn check_all(log: &Log, m: &Model) {
    let st = log.stats();
    assert_eq!(st.first_offset, m.first, "first offset");
    assert_eq!(st.next_offset, m.next(), "next offset");
    let got: Vec<_> = log
        .read_from(m.first)
        .expect("read")
        .map(|r| r.expect("record"))
        .collect();
    assert_eq!(got.len(), m.records.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, m.first + i as u64);
        assert_eq!(r.payload, m.records[i].0, "payload of {}", r.offset);
    }
}

/// After a crash the log holds a prefix of the model at least as long as the synced part.
fn reconcile_after_crash(log: &Log, m: &mut Model) {
    let st = log.stats();
    assert_eq!(st.first_offset, m.first);
    assert!(
        st.next_offset >= m.synced,
        "lost synced records: log ends at {} < {}",
        st.next_offset,
        m.synced
    );
    assert!(st.next_offset <= m.next(), "records appeared from nowhere");
    m.records.truncate((st.next_offset - m.first) as usize);
    m.synced = m.next();
    check_all(log, m);
}

fn run(ops: &[Op], prealloc: Preallocate) {
    let cfg = cfg(prealloc);
    let mut fs = SimFs::new();
    let mut log = open(&fs, &cfg);
    let mut m = Model {
        first: 0,
        records: Vec::new(),
        synced: 0,
    };
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Append { n, size, sync } => {
                let batch: Vec<Record> = (0..*n)
                    .map(|k| Record::from_payload(payload(seq + u64::from(k), *size)))
                    .collect();
                let d = if *sync {
                    Durability::Sync
                } else {
                    Durability::None
                };
                let a = log.append(&batch, d).expect("append").wait().expect("ack");
                assert_eq!(a.first_offset, m.next());
                assert_eq!(a.count(), u64::from(*n));
                for (k, r) in batch.into_iter().enumerate() {
                    let ts = log
                        .read_from(a.first_offset + k as u64)
                        .expect("read")
                        .next()
                        .expect("some")
                        .expect("ok")
                        .timestamp_ms;
                    m.records.push((r.payload, ts));
                }
                seq += u64::from(*n);
                if *sync {
                    // The contract, not the engine's own claim, decides what must survive.
                    assert!(a.synced, "a Sync append was acknowledged without an fsync");
                    m.synced = m.next();
                }
            }
            Op::Read { from } => {
                let span = m.records.len() as u64 + 1;
                let off = m.first + u64::from(*from) % span;
                let got: Vec<_> = log
                    .read_from(off)
                    .expect("read")
                    .map(|r| r.expect("record"))
                    .collect();
                let want = &m.records[(off - m.first) as usize..];
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g.payload, w.0);
                }
                if m.first > 0 {
                    assert!(matches!(
                        log.read_from(m.first - 1),
                        Err(Error::OffsetOutOfRange { .. })
                    ));
                }
            }
            Op::ReadTime { pick } => {
                if m.records.is_empty() {
                    continue;
                }
                let i = usize::from(*pick) % m.records.len();
                let ts = m.records[i].1;
                let first_at = m.records.iter().position(|r| r.1 >= ts).expect("exists");
                let r = log
                    .read_from_time(ts)
                    .expect("time read")
                    .next()
                    .expect("a record")
                    .expect("ok");
                assert_eq!(
                    r.offset,
                    m.first + first_at as u64,
                    "first record at or after {ts}"
                );
            }
            Op::Roll => log.roll().expect("roll"),
            Op::Sync => {
                log.sync().expect("sync");
                m.synced = m.next();
            }
            Op::DeleteBefore { pick } => {
                let target = m.first + u64::from(*pick) % (m.records.len() as u64 + 1);
                let rep = log.delete_before(target).expect("delete");
                assert!(rep.first_offset <= target && rep.first_offset >= m.first);
                let gone = (rep.first_offset - m.first) as usize;
                m.records.drain(..gone);
                m.first = rep.first_offset;
                check_all(&log, &m);
            }
            Op::Reopen => {
                log.close().expect("close");
                log = open(&fs, &cfg);
                m.synced = m.next();
                check_all(&log, &m);
            }
            Op::Crash | Op::TornCrash { .. } => {
                let crashed = match op {
                    Op::TornCrash { keep } => fs.crash_keeping(|_, n| n * usize::from(*keep) / 255),
                    _ => fs.crash(),
                };
                drop(log);
                fs = crashed;
                log = open(&fs, &cfg);
                reconcile_after_crash(&log, &mut m);
            }
        }
    }
    check_all(&log, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_zero_filled(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops, Preallocate::ZeroFill);
    }

    #[test]
    fn log_matches_model_growing(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops, Preallocate::None);
    }
}

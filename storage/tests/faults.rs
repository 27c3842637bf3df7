//! Fault injection (EIO, ENOSPC, short writes) and power-loss simulation.

use std::path::Path;
use std::sync::{Arc, Mutex};

use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, SimFs, StdFs, Vfs};
use wald_storage::{Durability, Error, IoOp, Log, LogConfig, Preallocate, Record};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:08}").into_bytes()
}

fn all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.read_from(log.stats().first_offset)
        .unwrap()
        .map(|r| r.map(|r| (r.offset, r.payload)).unwrap())
        .collect()
}

#[test]
fn eio_on_fsync_fails_the_batch_and_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultFs::new(Arc::new(StdFs));
    let cfg = LogConfig {
        preallocate: Preallocate::None,
        ..cfg()
    };
    let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg.clone()).unwrap();
    for i in 0..10 {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    fault.arm(FaultPlan {
        op: FaultOp::Sync,
        nth: 1,
        kind: FaultKind::Eio,
        sticky: false,
    });
    let err = log
        .append_one(Record::from_payload(payload(10)), Durability::Sync)
        .expect_err("fsync failed");
    match &err {
        Error::Poisoned { cause, .. } => {
            assert_eq!(cause.op, IoOp::Sync);
            assert_eq!(cause.raw_os_error, Some(5));
        }
        other => panic!("expected Poisoned, got {other}"),
    }
    assert!(
        err.to_string().contains("reopen"),
        "the error says what to do: {err}"
    );
    // Sticky: the fault is gone but the log still refuses, and never retries the fsync.
    fault.disarm();
    assert!(matches!(
        log.append_one(Record::from_payload(payload(11)), Durability::Sync),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        log.append_one(Record::from_payload(payload(11)), Durability::None),
        Err(Error::Poisoned { .. })
    ));
    assert!(log.poisoned().is_some());
    assert!(log.stats().poisoned.is_some());
    assert_eq!(fault.injected(), 1);
    // What was acknowledged is still readable, and nothing after it is visible.
    assert_eq!(all(&log).len(), 10);
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    let got = all(&log);
    assert!(got.len() >= 10);
    for (o, p) in got.iter().take(10) {
        assert_eq!(p, &payload(*o));
    }
}

#[test]
fn enospc_on_write_is_a_clear_error_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultFs::new(Arc::new(StdFs));
    let cfg = LogConfig {
        preallocate: Preallocate::None,
        ..cfg()
    };
    let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg.clone()).unwrap();
    for i in 0..20 {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    fault.arm(FaultPlan {
        op: FaultOp::Write,
        nth: 1,
        kind: FaultKind::Enospc,
        sticky: true,
    });
    let err = log
        .append_one(Record::from_payload(payload(20)), Durability::Sync)
        .expect_err("disk full");
    assert!(err.is_disk_full(), "{err}");
    assert!(err.is_storage_fault());
    assert_eq!(all(&log).len(), 20);
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(
        all(&log),
        (0..20).map(|i| (i, payload(i))).collect::<Vec<_>>()
    );
}

#[test]
fn a_short_write_acknowledges_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultFs::new(Arc::new(StdFs));
    let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg()).unwrap();
    for i in 0..20 {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    fault.arm(FaultPlan {
        op: FaultOp::Write,
        nth: 1,
        kind: FaultKind::ShortWrite,
        sticky: false,
    });
    let batch: Vec<Record> = (20..30).map(|i| Record::from_payload(payload(i))).collect();
    assert!(log
        .append(&batch, Durability::Sync)
        .unwrap()
        .wait()
        .is_err());
    drop(log);
    // Half a batch is on disk: recovery cuts it back to whole records; the prefix is intact.
    let log = Log::open(dir.path(), cfg()).unwrap();
    let got = all(&log);
    assert!(got.len() >= 20 && got.len() < 30, "{}", got.len());
    for (o, p) in &got {
        assert_eq!(p, &payload(*o));
    }
}

#[test]
fn concurrent_waiters_of_a_failed_fsync_all_fail() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultFs::new(Arc::new(StdFs));
    let cfg = LogConfig {
        preallocate: Preallocate::None,
        ..cfg()
    };
    let log = Arc::new(Log::open_with(Arc::new(fault.clone()), dir.path(), cfg.clone()).unwrap());
    let acked = Arc::new(Mutex::new(Vec::new()));
    fault.arm(FaultPlan {
        op: FaultOp::Sync,
        nth: 40,
        kind: FaultKind::Eio,
        sticky: false,
    });
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (log, acked) = (Arc::clone(&log), Arc::clone(&acked));
            std::thread::spawn(move || {
                let mut errors = 0;
                for i in 0..100u64 {
                    let p = format!("t{t}-{i}").into_bytes();
                    match log.append_one(Record::from_payload(p.clone()), Durability::Sync) {
                        Ok(a) => acked.lock().unwrap().push((a.first_offset, p)),
                        Err(Error::Poisoned { .. }) => errors += 1,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                errors
            })
        })
        .collect();
    let errors: u32 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(errors > 0);
    let acked = acked.lock().unwrap().clone();
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    let got: std::collections::HashMap<u64, Vec<u8>> = all(&log).into_iter().collect();
    for (o, p) in &acked {
        assert_eq!(got.get(o), Some(p), "acknowledged record {o} lost");
    }
}

fn open_sim(fs: &SimFs, dir: &Path, cfg: &LogConfig) -> Log {
    Log::open_with(Arc::new(fs.clone()) as Arc<dyn Vfs>, dir, cfg.clone()).unwrap()
}

#[test]
fn power_loss_keeps_every_synced_record_and_nothing_half_present() {
    let dir = Path::new("/data/p0");
    for prealloc in [Preallocate::ZeroFill, Preallocate::None] {
        let cfg = LogConfig {
            preallocate: prealloc,
            ..cfg()
        };
        let mut fs = SimFs::new();
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut durable = 0usize; // records known synced
        for round in 0..6u64 {
            let log = open_sim(&fs, dir, &cfg);
            let got = all(&log);
            assert!(got.len() >= durable, "round {round}: lost synced records");
            assert!(got.len() <= model.len());
            for (o, p) in &got {
                assert_eq!(p, &model[*o as usize], "round {round}: record {o} differs");
            }
            model.truncate(got.len());
            durable = model.len();
            for i in 0..400u64 {
                let p = format!("r{round}-{i}-")
                    .repeat(1 + (i % 13) as usize)
                    .into_bytes();
                let d = if i % 3 == 0 {
                    Durability::None
                } else {
                    Durability::Sync
                };
                let a = log.append_one(Record::from_payload(p.clone()), d).unwrap();
                assert_eq!(a.first_offset as usize, model.len());
                model.push(p);
                if a.synced {
                    durable = model.len();
                }
            }
            // Unsynced tail: these may vanish.
            for i in 0..5u64 {
                log.append_one(Record::from_payload(format!("tail-{i}")), Durability::None)
                    .unwrap();
                model.push(format!("tail-{i}").into_bytes());
            }
            fs = if round % 2 == 0 {
                fs.crash()
            } else {
                fs.crash_keeping(|_, n| n / 3)
            };
            drop(log);
        }
    }
}

#[test]
fn records_recovered_after_a_process_crash_are_durable_before_they_are_read() {
    let dir = Path::new("/data/p0");
    for prealloc in [Preallocate::ZeroFill, Preallocate::None] {
        let cfg = LogConfig {
            preallocate: prealloc,
            ..cfg()
        };
        let fs = SimFs::new();
        let log = open_sim(&fs, dir, &cfg);
        for i in 0..10 {
            log.append_one(Record::from_payload(payload(i)), Durability::Sync)
                .unwrap();
        }
        for i in 10..30 {
            log.append_one(Record::from_payload(payload(i)), Durability::None)
                .unwrap();
        }
        // The process dies with 20 records only in the page cache.
        let after_kill = fs.process_crash();
        drop(log);
        assert_eq!(
            all(&open_sim(&after_kill.process_crash().crash(), dir, &cfg)).len(),
            10,
            "precondition: without a new sync a power loss takes the unsynced tail"
        );
        // The service restarts: every record is readable at once…
        let reopened = open_sim(&after_kill, dir, &cfg);
        let seen = all(&reopened);
        assert_eq!(seen.len(), 30);
        // …so a power loss right after must not take any of what was read.
        let after_power_loss = after_kill.crash();
        drop(reopened);
        let back = open_sim(&after_power_loss, dir, &cfg);
        assert_eq!(
            all(&back),
            seen,
            "{prealloc:?}: records served after recovery were lost"
        );
    }
}

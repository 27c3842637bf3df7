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

/// Appends `n` records of `size` bytes from `threads` writers; returns every acknowledged
/// (offset, payload) and every error.
fn load(
    log: &Log,
    threads: u64,
    n: u64,
    size: usize,
    tag: u64,
) -> (Vec<(u64, Vec<u8>)>, Vec<Error>) {
    let acked = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (acked, errors) = (&acked, &errors);
            s.spawn(move || {
                for i in 0..n {
                    let mut p = format!("{tag}-{t}-{i}-").into_bytes();
                    p.resize(size, b'a' + (i % 26) as u8);
                    let batch: Vec<Record> = (0..=(i % 3))
                        .map(|k| {
                            let mut q = p.clone();
                            q.push(b'0' + k as u8);
                            Record::from_payload(q)
                        })
                        .collect();
                    match log.append(&batch, Durability::Sync).and_then(|t| t.wait()) {
                        Ok(a) => {
                            let mut v = acked.lock().unwrap();
                            for (k, r) in batch.into_iter().enumerate() {
                                v.push((a.first_offset + k as u64, r.payload.to_vec()));
                            }
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            });
        }
    });
    let mut acked = acked.into_inner().unwrap();
    acked.sort();
    (acked, errors.into_inner().unwrap())
}

/// A disk that fills up (modelled by `FaultFs`: writes that grow a file take space, what does
/// not fit fails with ENOSPC after writing what fits) refuses writes cleanly — never poisons,
/// never acknowledges a record it did not write, never leaves a gap or reuses an offset —
/// and takes writes again as soon as space returns, without a reopen. Preallocated segments
/// (a full disk refuses the next segment) and growing files (a full disk refuses the write
/// itself, half done) alike; several writers and batches.
#[test]
fn a_full_disk_refuses_writes_and_they_resume_when_space_returns() {
    for preallocate in [Preallocate::ZeroFill, Preallocate::None] {
        for free in [0u64, 3_000, 70_000, 150_000] {
            let dir = tempfile::tempdir().unwrap();
            let fault = FaultFs::new(Arc::new(StdFs));
            let cfg = LogConfig {
                preallocate,
                ..cfg()
            };
            let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg.clone()).unwrap();
            let (mut acked, errors) = load(&log, 2, 30, 700, 0);
            assert!(errors.is_empty(), "{errors:?}");
            fault.set_free_space(Some(free));
            let (full, errors) = load(&log, 4, 150, 900, 1);
            assert!(
                !errors.is_empty(),
                "{preallocate:?} {free}: the disk filled up"
            );
            for e in &errors {
                assert!(e.is_disk_full(), "{preallocate:?} {free}: {e}");
                assert!(!matches!(e, Error::Poisoned { .. }), "{e}");
            }
            assert!(log.poisoned().is_none(), "a full disk does not poison");
            assert!(
                log.counters()
                    .disk_full
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
            );
            acked.extend(full);
            // No space at all now: writes are refused, not poisoned. (What the load left —
            // a few KiB its last refused batch did not fit, or a spare prepared just before —
            // may still take a record or two: those are acknowledged like any other.)
            fault.set_free_space(Some(0));
            let mut tries = 0;
            let refusal = loop {
                let i = 90_000 + tries;
                let payload = format!("still-full-{i}").into_bytes();
                match log.append_one(Record::from_payload(payload.clone()), Durability::Sync) {
                    Ok(a) => acked.push((a.first_offset, payload)),
                    Err(e) => break e,
                }
                tries += 1;
                assert!(tries < 100, "{preallocate:?} {free}: never refused");
            };
            assert!(refusal.is_disk_full(), "{preallocate:?} {free}: {refusal}");
            assert!(log.poisoned().is_none());
            // Reopened while still full (a restart before space returned): it opens, every
            // acknowledged record is there, and writes are still refused, not poisoned.
            drop(log);
            let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg.clone()).unwrap();
            acked.sort();
            assert_eq!(
                all(&log),
                acked,
                "{preallocate:?} {free}: reopened while full"
            );
            // Space returns: writes go through again, no reopen.
            fault.set_free_space(None);
            let (after, errors) = load(&log, 2, 40, 800, 2);
            assert!(errors.is_empty(), "{errors:?}");
            acked.extend(after);
            acked.sort();
            let expected: Vec<u64> = (0..acked.len() as u64).collect();
            assert_eq!(
                acked.iter().map(|a| a.0).collect::<Vec<_>>(),
                expected,
                "{preallocate:?} {free}: offsets contiguous, none acknowledged twice"
            );
            assert_eq!(
                all(&log),
                acked,
                "{preallocate:?} {free}: read back as acknowledged"
            );
            drop(log);
            let log = Log::open(dir.path(), cfg).unwrap();
            assert_eq!(
                all(&log),
                acked,
                "{preallocate:?} {free}: and after a reopen"
            );
        }
    }
}

/// While the disk stays full, a refused roll is not redone from the start at every write: the
/// segment the first refused roll sealed stays sealed (no second sync, truncation or index
/// rewrite), the next write only tries to create the next segment again; when space returns
/// the roll completes from there.
#[test]
fn a_roll_refused_by_a_full_disk_seals_the_full_segment_once() {
    let sim = SimFs::new();
    let fault = FaultFs::new(Arc::new(sim.clone()));
    let cfg = LogConfig {
        first_segment_bytes: 64 << 10,
        ..cfg()
    };
    let dir = Path::new("/log");
    let log = Log::open_with(Arc::new(fault.clone()), dir, cfg.clone()).unwrap();
    // The first segment is preallocated: filling it takes no space, its roll does.
    fault.set_free_space(Some(0));
    let write = |i: u64| {
        log.append_one(
            Record::from_payload(vec![(i % 251) as u8; 1000]),
            Durability::Sync,
        )
    };
    let mut acked = 0u64;
    while write(acked).is_ok() {
        acked += 1;
        assert!(acked < 200, "the roll was never refused");
    }
    let before = sim.syncs();
    for i in 0..20 {
        let e = write(acked + i).unwrap_err();
        assert!(e.is_disk_full(), "{e}");
    }
    let syncs = sim.syncs() - before;
    assert!(
        syncs < 10,
        "20 refused writes synced {syncs} times: the full segment was sealed again each time"
    );
    fault.set_free_space(None);
    write(acked).unwrap();
    assert_eq!(all(&log).len() as u64, acked + 1);
    drop(log);
    let log = Log::open_with(Arc::new(sim.clone()), dir, cfg).unwrap();
    assert_eq!(all(&log).len() as u64, acked + 1, "and after a reopen");
}

/// A full disk at a roll refused by the background thread (the age roll) leaves the log
/// writable, and the first record of a partition larger than its small first segment grows
/// that segment in place.
#[test]
fn segments_start_small_and_grow_with_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        first_segment_bytes: 64 << 10,
        max_record_bytes: 200 << 10,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    let seg_len = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
    let first = "00000000000000000000.log";
    assert_eq!(
        seg_len(first),
        64 << 10,
        "an idle partition holds its small first segment"
    );
    let spares = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".spare")
            })
            .count()
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(spares(dir.path()), 0, "and no spare");
    // A first record larger than the first segment: the segment grows in place.
    log.append_one(Record::from_payload(vec![7u8; 150 << 10]), Durability::Sync)
        .unwrap();
    assert!(seg_len(first) >= 150 << 10);
    // Traffic: segments double up to segment_bytes.
    for i in 0..400u32 {
        log.append_one(
            Record::from_payload(vec![(i % 251) as u8; 8 << 10]),
            Durability::Sync,
        )
        .unwrap();
    }
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    sizes.sort();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(
        sizes.iter().any(|s| s.1 == 1 << 20),
        "full-size segments reached: {sizes:?}"
    );
    drop(log);
    // Reopened: the newest (preallocated, partly filled) segment keeps its own size.
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.stats().next_offset, 401);
    let n = log
        .append_one(Record::from_payload(vec![1u8; 8 << 10]), Durability::Sync)
        .unwrap();
    assert_eq!(n.first_offset, 401);
    assert_eq!(all(&log).len(), 402);
}

/// A write into a preallocated segment refused with ENOSPC (a copy-on-write or compressed
/// file system can) is taken back — zeros over what it may have written — and the log stays
/// writable: the next append gets the same offset, and nothing of the refused one is ever
/// read, before or after a reopen.
#[test]
fn a_refused_write_into_a_preallocated_segment_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultFs::new(Arc::new(StdFs));
    let log = Log::open_with(Arc::new(fault.clone()), dir.path(), cfg()).unwrap();
    for i in 0..5 {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    fault.arm(FaultPlan {
        op: FaultOp::Write,
        nth: 1,
        kind: FaultKind::Enospc,
        sticky: false,
    });
    let err = log
        .append_one(Record::from_payload(b"refused".to_vec()), Durability::Sync)
        .unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(log.poisoned().is_none());
    let a = log
        .append_one(Record::from_payload(payload(5)), Durability::Sync)
        .unwrap();
    assert_eq!(a.first_offset, 5, "the refused offset was given back");
    let want: Vec<(u64, Vec<u8>)> = (0..6).map(|i| (i, payload(i))).collect();
    assert_eq!(all(&log), want);
    drop(log);
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(all(&log), want);
}

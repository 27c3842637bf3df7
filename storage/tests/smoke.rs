use std::sync::Arc;
use wald_storage::{Durability, Log, LogConfig, Record};

#[test]
fn append_read_roll_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        ..LogConfig::default()
    };
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..1000u32 {
            let a = log
                .append_one(
                    Record::from_payload(format!("rec-{i}").repeat(10)),
                    Durability::Sync,
                )
                .unwrap();
            assert_eq!(a.first_offset, u64::from(i));
            assert!(a.synced);
        }
        let st = log.stats();
        assert_eq!(st.next_offset, 1000);
        assert!(st.segments > 1, "{st:?}");
        let got: Vec<_> = log.read_from(0).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 1000);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.payload, format!("rec-{i}").repeat(10).into_bytes());
        }
        let mid: Vec<_> = log
            .read_from(777)
            .unwrap()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(mid, (777..1000).collect::<Vec<_>>());
    }
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.stats().next_offset, 1000);
    let a = log
        .append_one(Record::from_payload("after"), Durability::Sync)
        .unwrap();
    assert_eq!(a.first_offset, 1000);
    let got: Vec<_> = log
        .read_from(995)
        .unwrap()
        .map(|r| r.unwrap().offset)
        .collect();
    assert_eq!(got, (995..=1000).collect::<Vec<_>>());
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut offs = Vec::new();
                for i in 0..100 {
                    let a = log
                        .append_one(Record::from_payload(format!("{t}-{i}")), Durability::Sync)
                        .unwrap();
                    offs.push(a.first_offset);
                }
                offs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..1600).collect::<Vec<_>>());
    let c = log.counters();
    let fsyncs = c.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("1600 records, {fsyncs} fsyncs");
    assert!(fsyncs < 1600);
}

/// A minimal executor: polls one future on this thread, parking between wake-ups.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn awaited_tickets_are_committed_by_the_background_thread() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let ticket = log
                            .append(
                                &[Record::from_payload(format!("{t}-{i}"))],
                                Durability::Sync,
                            )
                            .unwrap();
                        let a = block_on(ticket).unwrap();
                        assert!(a.synced);
                        a.first_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<_>>());
    // Mixed: some threads wait (and lead), others await.
    let t1 = log
        .append(&[Record::from_payload("a")], Durability::Sync)
        .unwrap();
    let t2 = log
        .append(&[Record::from_payload("b")], Durability::None)
        .unwrap();
    assert_eq!(block_on(t2).unwrap().first_offset, 401);
    assert_eq!(t1.wait().unwrap().first_offset, 400);
    let got: Vec<_> = log
        .read_from(398)
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(got[2..], [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn batch_and_none_records_are_synced_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        background_sync_interval: std::time::Duration::from_millis(50),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let before = log
        .counters()
        .fsyncs
        .load(std::sync::atomic::Ordering::Relaxed);
    let a = log
        .append_one(
            Record::from_payload("x"),
            Durability::Batch {
                max_delay: std::time::Duration::from_millis(20),
            },
        )
        .unwrap();
    assert!(!a.synced);
    let fsyncs = || {
        log.counters()
            .fsyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Functional, not timed: wait (up to a generous bound) for the background sync.
    let wait_for = |n: u64| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while fsyncs() < n && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        fsyncs()
    };
    assert_eq!(
        wait_for(before + 1),
        before + 1,
        "the background thread synced the Batch record"
    );
    let y = log
        .append_one(Record::from_payload("y"), Durability::None)
        .unwrap();
    assert!(!y.synced);
    assert_eq!(
        wait_for(before + 2),
        before + 2,
        "the background thread synced the None record"
    );
}

/// Retention gives a deleted segment's blocks back in steps (truncating it) only when no
/// reader holds it: a reader in the middle of a deleted segment keeps reading it (a
/// truncated mapping would kill the process with SIGBUS), and the segments are gone after.
#[test]
fn a_reader_inside_a_segment_retention_deletes_reads_it_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        // Larger than a shrink step (8 MiB) and than the reader's 256 KiB chunks.
        segment_bytes: 16 << 20,
        first_segment_bytes: 16 << 20,
        max_record_bytes: 64 << 10,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let payload = vec![b'x'; 60_000];
    for _ in 0..1_100 {
        log.append_one(Record::from_payload(payload.clone()), Durability::None)
            .unwrap();
    }
    log.sync().unwrap();
    assert!(log.stats().segments >= 4);
    let mut reader = log.read_from(0).unwrap();
    let first = reader.next().unwrap().unwrap();
    assert_eq!(first.offset, 0);
    // Delete everything up to the last segment while the reader is in the first one.
    let report = log.delete_before(1_090).unwrap();
    assert!(report.segments_deleted >= 3, "{report:?}");
    // The reader finishes the segment it is in (its bytes intact, not truncated under it),
    // then finds the next deleted one gone.
    let mut n = 1;
    let mut end = None;
    for rec in reader.by_ref() {
        match rec {
            Ok(rec) => {
                assert_eq!(rec.payload, payload);
                assert_eq!(rec.offset, n);
                n += 1;
            }
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    assert!(n >= 250, "read the rest of the first segment: {n}");
    assert!(
        matches!(end, Some(wald_storage::Error::OffsetOutOfRange { .. })),
        "{end:?}"
    );
    // Unreferenced segments were shrunk and unlinked: only the remaining ones are on disk.
    let logs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(logs, log.stats().segments);
}

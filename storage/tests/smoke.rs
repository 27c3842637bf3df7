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

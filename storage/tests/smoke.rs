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

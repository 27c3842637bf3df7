//! Tests of the state store against real RocksDB directories and real partition logs.

use serde_json::value::RawValue;
use wald_storage::{Durability, Log, LogConfig, Preallocate, Record};

use super::*;
use crate::message::{RecordIds, StoredMessage};

const DAY: u64 = 24 * 3600 * 1000;

fn ids(id: &str, idem: Option<&str>) -> RecordIds {
    RecordIds {
        message_id: id.to_owned(),
        idempotency_key: idem.map(str::to_owned),
        transaction_id: None,
    }
}

fn message(ns: &str, i: u64, idem: Option<String>) -> StoredMessage {
    StoredMessage {
        idempotency_key: idem,
        ..StoredMessage::new(
            format!("wal_{i}_{ns}"),
            ns,
            RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap(),
            1,
        )
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        max_record_bytes: 64 << 10,
        preallocate: Preallocate::None,
        ..LogConfig::default()
    }
}

/// Appends `n` messages (every third with an idempotency key) and returns their ids by offset.
fn fill_log(log: &Log, ns: &str, start: u64, n: u64) -> Vec<(u64, String, Option<String>)> {
    let mut out = Vec::new();
    let msgs: Vec<StoredMessage> = (start..start + n)
        .map(|i| message(ns, i, (i % 3 == 0).then(|| format!("key-{i}"))))
        .collect();
    for chunk in msgs.chunks(200) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|m| m.to_record(b"pk", 0).unwrap())
            .collect();
        let a = log
            .append(&records, Durability::None)
            .unwrap()
            .wait()
            .unwrap();
        for (m, off) in chunk.iter().zip(a.first_offset..=a.last_offset) {
            out.push((off, m.message_id.clone(), m.idempotency_key.clone()));
        }
    }
    out
}

fn applied_records(rows: &[(u64, String, Option<String>)], at: u64) -> Vec<(u64, RecordIds, u64)> {
    rows.iter()
        .map(|(o, id, k)| (*o, ids(id, k.as_deref()), at))
        .collect()
}

#[test]
fn apply_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    let recs = vec![
        (0, ids("wal_a", Some("k1")), 1_000),
        (1, ids("wal_b", None), 1_001),
        (2, ids("wal_c", Some("k2")), 1_002),
    ];
    assert_eq!(s.apply("orders", 3, &recs, 10_000).unwrap(), 3);
    assert_eq!(
        s.message_location("wal_b").unwrap(),
        Some(Location {
            namespace: "orders".into(),
            partition: 3,
            offset: 1,
            accepted_at_ms: 1_001
        })
    );
    assert_eq!(s.message_location("wal_zzz").unwrap(), None);
    let e = s.idempotent("orders", "k2", 5_000).unwrap().unwrap();
    assert_eq!(
        e,
        IdemEntry {
            message_id: "wal_c".into(),
            partition: 3,
            offset: 2,
            expires_at_ms: 11_002
        }
    );
    assert_eq!(
        s.idempotent("other", "k2", 5_000).unwrap(),
        None,
        "keys are per namespace"
    );
    assert_eq!(s.watermark("orders", 3).unwrap(), 3);
    assert_eq!(s.watermark("orders", 4).unwrap(), 0);
}

#[test]
fn idempotency_first_writer_wins_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    s.apply("ns", 0, &[(0, ids("wal_1", Some("k")), 1_000)], 500)
        .unwrap();
    // A second message with the key inside the window keeps the first.
    s.apply("ns", 1, &[(0, ids("wal_2", Some("k")), 1_200)], 500)
        .unwrap();
    assert_eq!(
        s.idempotent("ns", "k", 1_300).unwrap().unwrap().message_id,
        "wal_1"
    );
    // Expired: absent, at and after expires_at.
    assert_eq!(s.idempotent("ns", "k", 1_500).unwrap(), None);
    assert_eq!(s.idempotent("ns", "k", 9_999).unwrap(), None);
    // After the window, a new message takes the key.
    s.apply("ns", 1, &[(1, ids("wal_3", Some("k")), 2_000)], 500)
        .unwrap();
    let e = s.idempotent("ns", "k", 2_100).unwrap().unwrap();
    assert_eq!(
        (
            e.message_id.as_str(),
            e.partition,
            e.offset,
            e.expires_at_ms
        ),
        ("wal_3", 1, 1, 2_500)
    );
    // Two records with one key in one batch: the first wins too.
    s.apply(
        "ns",
        2,
        &[
            (0, ids("wal_4", Some("j")), 10),
            (1, ids("wal_5", Some("j")), 11),
        ],
        500,
    )
    .unwrap();
    assert_eq!(
        s.idempotent("ns", "j", 12).unwrap().unwrap().message_id,
        "wal_4"
    );
    // Replaying the winner leaves it in place.
    s.apply("ns", 2, &[(0, ids("wal_4", Some("j")), 10)], 500)
        .unwrap();
    assert_eq!(
        s.idempotent("ns", "j", 12).unwrap().unwrap().message_id,
        "wal_4"
    );
}

#[test]
fn watermark_advances_only_over_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            s.apply(
                "ns",
                0,
                &[(2, ids("c", None), 1), (3, ids("d", None), 1)],
                0
            )
            .unwrap(),
            0
        );
        assert_eq!(s.apply("ns", 0, &[(0, ids("a", None), 1)], 0).unwrap(), 1);
        assert_eq!(s.apply("ns", 0, &[(1, ids("b", None), 1)], 0).unwrap(), 4);
        // Non-contiguous offsets within one call.
        assert_eq!(
            s.apply(
                "ns",
                0,
                &[(4, ids("e", None), 1), (6, ids("g", None), 1)],
                0
            )
            .unwrap(),
            5
        );
    }
    let s = StateStore::open(dir.path()).unwrap();
    // The gap at 5 was never applied: only 0..5 is covered after a restart.
    assert_eq!(s.watermark("ns", 0).unwrap(), 5);
    for id in ["a", "b", "c", "d", "e", "g"] {
        assert!(s.message_location(id).unwrap().is_some(), "{id}");
    }
}

#[test]
fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    let err = s
        .apply(
            "ns",
            0,
            &[(5, ids("a", None), 1), (5, ids("b", None), 1)],
            0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Unordered {
                previous: 5,
                offset: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        s.message_location("a").unwrap().is_none(),
        "nothing written"
    );
    assert!(matches!(
        s.apply("", 0, &[], 0),
        Err(StateError::InvalidInput {
            what: "namespace",
            ..
        })
    ));
    assert!(matches!(
        s.put_namespace("a\0b", b"{}"),
        Err(StateError::InvalidInput { .. })
    ));
    let err = s
        .apply("ns", 0, &[(u64::MAX, ids("a", None), 1)], 0)
        .unwrap_err();
    assert!(
        matches!(err, StateError::InvalidInput { what: "offset", .. }),
        "{err}"
    );
}

#[test]
fn entries_below_the_watermark_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let small = StateOptions {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 64 << 10,
        total_write_buffer_bytes: 256 << 10,
    };
    let n = 5_000u64;
    {
        let s = StateStore::open_with(dir.path(), small).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(97) {
            let recs: Vec<_> = chunk
                .iter()
                .map(|&o| (o, ids(&format!("wal_{o}"), Some(&format!("k{o}"))), o))
                .collect();
            s.apply("ns", 7, &recs, DAY).unwrap();
        }
    }
    let s = StateStore::open(dir.path()).unwrap();
    let w = s.watermark("ns", 7).unwrap();
    assert_eq!(w, n, "a clean close flushes everything");
    for o in 0..w {
        let loc = s.message_location(&format!("wal_{o}")).unwrap().unwrap();
        assert_eq!((loc.partition, loc.offset), (7, o));
        assert_eq!(
            s.idempotent("ns", &format!("k{o}"), 0)
                .unwrap()
                .unwrap()
                .offset,
            o
        );
    }
}

/// The child half of [`crash_never_leaves_the_watermark_ahead_of_its_entries`]: applies
/// batches through many automatic flushes, then dies without closing anything.
#[test]
#[ignore = "run by crash_never_leaves_the_watermark_ahead_of_its_entries in a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("WALD_STATE_CRASH_DIR") else {
        return;
    };
    let stop_after: u64 = std::env::var("WALD_STATE_CRASH_AFTER")
        .unwrap()
        .parse()
        .unwrap();
    // A total memtable budget below one column family's buffer: RocksDB then flushes the
    // column family with the oldest memtable, one at a time — without `atomic_flush` this
    // flushes `watermarks` ahead of the `messages` entries it covers (this test fails then).
    let tiny = StateOptions {
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 256 << 10,
        total_write_buffer_bytes: 96 << 10,
    };
    let s = StateStore::open_with(&dir, tiny).unwrap();
    let mut o = s.watermark("ns", 0).unwrap();
    let end = o + stop_after;
    while o < end {
        // Long ids fill the `messages` memtable much faster than `watermarks`'.
        let recs: Vec<_> = (o..o + 50)
            .map(|x| (x, ids(&format!("wal_{x}_{}", "x".repeat(200)), None), x))
            .collect();
        s.apply("ns", 0, &recs, 0).unwrap();
        o += 50;
    }
    std::process::abort();
}

#[test]
fn crash_never_leaves_the_watermark_ahead_of_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut expected_min = 0;
    for round in 0..4u64 {
        let status = std::process::Command::new(&exe)
            .args([
                "state::tests::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WALD_STATE_CRASH_DIR", dir.path())
            .env(
                "WALD_STATE_CRASH_AFTER",
                (2_000 + round * 1_000).to_string(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let s = StateStore::open(dir.path()).unwrap();
        let w = s.watermark("ns", 0).unwrap();
        assert!(
            w >= expected_min,
            "round {round}: watermark went back from {expected_min} to {w}"
        );
        assert!(
            w > 0,
            "round {round}: the small memtables were flushed at least once"
        );
        for x in 0..w {
            let id = format!("wal_{x}_{}", "x".repeat(200));
            let loc = s.message_location(&id).unwrap();
            assert_eq!(
                loc.map(|l| l.offset),
                Some(x),
                "round {round}: offset {x} below watermark {w} lost"
            );
        }
        expected_min = w;
    }
}

#[test]
fn catch_up_restores_every_message_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    let rows = fill_log(&log, "orders", 0, 2_500);
    let half = rows.len() / 2;
    {
        let s = StateStore::open(dir.path().join("state")).unwrap();
        s.apply(
            "orders",
            0,
            &applied_records(&rows[..half], wald_storage::now_ms()),
            DAY,
        )
        .unwrap();
        assert_eq!(s.watermark("orders", 0).unwrap(), half as u64);
    }
    let s = StateStore::open(dir.path().join("state")).unwrap();
    let mut calls = Vec::new();
    assert_eq!(
        s.idempotency_window("orders").unwrap(),
        DAY,
        "remembered from apply"
    );
    let r = s
        .catch_up("orders", 0, &log, |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(
        (r.from, r.to, r.records, r.unindexed),
        (half as u64, 2_500, 1_250, 0)
    );
    assert_eq!((r.skipped_before_first, r.rewound.clone()), (0, None));
    assert_eq!(calls.first(), Some(&(0, 1_250)));
    assert_eq!(calls.last(), Some(&(1_250, 1_250)));
    assert!(
        calls.len() >= 3,
        "progress per batch of {CATCH_UP_BATCH}: {calls:?}"
    );
    assert_eq!(s.watermark("orders", 0).unwrap(), 2_500);
    let now = wald_storage::now_ms();
    for (off, id, key) in &rows {
        let loc = s.message_location(id).unwrap().unwrap();
        assert_eq!(
            (loc.namespace.as_str(), loc.partition, loc.offset),
            ("orders", 0, *off)
        );
        if let Some(k) = key {
            let e = s.idempotent("orders", k, now).unwrap().unwrap();
            assert_eq!((e.message_id.as_str(), e.offset), (id.as_str(), *off));
        }
    }

    // Idempotent: nothing more to replay, and nothing changes.
    let again = s.catch_up("orders", 0, &log, |_, _| {}).unwrap();
    assert_eq!((again.from, again.to, again.records), (2_500, 2_500, 0));
    // Catching up from scratch over already-indexed records gives the same answers.
    drop(s);
    let fresh_dir = dir.path().join("state2");
    let s2 = StateStore::open(&fresh_dir).unwrap();
    let r1 = s2
        .catch_up_with_window("orders", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!((r1.from, r1.to), (0, 2_500));
    let s3 = StateStore::open(dir.path().join("state")).unwrap();
    for (_, id, _) in &rows {
        assert_eq!(
            s2.message_location(id).unwrap().map(|l| l.offset),
            s3.message_location(id).unwrap().map(|l| l.offset)
        );
    }
    // Records appended later are picked up by the next catch-up.
    let more = fill_log(&log, "orders", 2_500, 10);
    let r2 = s3
        .catch_up_with_window("orders", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!((r2.from, r2.to, r2.records), (2_500, 2_510, 10));
    assert_eq!(
        s3.message_location(&more[9].1).unwrap().unwrap().offset,
        2_509
    );
}

#[test]
fn catch_up_reports_records_without_ids_and_moves_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    fill_log(&log, "ns", 0, 3);
    let raw = Record {
        key: vec![],
        headers: vec![],
        payload: b"not a message".to_vec(),
        due_ms: 0,
    };
    log.append_one(raw, Durability::None).unwrap();
    fill_log(&log, "ns", 4, 2);
    let s = StateStore::open(dir.path().join("state")).unwrap();
    let r = s
        .catch_up_with_window("ns", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!((r.from, r.to, r.records, r.unindexed), (0, 6, 6, 1));
    assert_eq!(r.unindexed_offsets, vec![3]);
    assert_eq!(s.watermark("ns", 0).unwrap(), 6);
    assert_eq!(s.message_location("wal_5_ns").unwrap().unwrap().offset, 5);
}

#[test]
fn catch_up_skips_what_retention_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    fill_log(&log, "ns", 0, 10);
    log.roll().unwrap();
    fill_log(&log, "ns", 10, 10);
    log.delete_before(10).unwrap();
    assert_eq!(log.stats().first_offset, 10);
    let s = StateStore::open(dir.path().join("state")).unwrap();
    let r = s
        .catch_up_with_window("ns", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!((r.from, r.to, r.skipped_before_first), (10, 20, 10));
    assert_eq!(s.watermark("ns", 0).unwrap(), 20);
    assert!(s.message_location("wal_3_ns").unwrap().is_none());
    assert_eq!(s.message_location("wal_12_ns").unwrap().unwrap().offset, 12);

    // An empty log whose first offset is past the watermark moves the watermark too.
    log.roll().unwrap();
    log.delete_before(20).unwrap();
    let s2 = StateStore::open(dir.path().join("state2")).unwrap();
    let r = s2
        .catch_up_with_window("ns", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!(
        (r.from, r.to, r.records, r.skipped_before_first),
        (20, 20, 0, 20)
    );
    assert_eq!(s2.watermark("ns", 0).unwrap(), 20);
}

#[test]
fn catch_up_forgets_entries_the_log_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    let rows = fill_log(&log, "ns", 0, 5);
    let s = StateStore::open(dir.path().join("state")).unwrap();
    // The store indexed 0..8, but the log (after a power failure) only has 0..5.
    let mut recs = applied_records(&rows, 100);
    recs.extend((5..8).map(|o| (o, ids(&format!("lost_{o}"), Some(&format!("lk{o}"))), 100)));
    s.apply("ns", 0, &recs, DAY).unwrap();
    assert_eq!(s.watermark("ns", 0).unwrap(), 8);
    let r = s
        .catch_up_with_window("ns", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!(
        r.rewound,
        Some(Rewind {
            watermark: 8,
            log_next: 5,
            entries_removed: 3
        })
    );
    assert_eq!((r.from, r.to, r.records), (5, 5, 0));
    assert_eq!(s.watermark("ns", 0).unwrap(), 5);
    for o in 5..8 {
        assert!(s.message_location(&format!("lost_{o}")).unwrap().is_none());
        assert!(s.idempotent("ns", &format!("lk{o}"), 0).unwrap().is_none());
    }
    for (o, id, _) in &rows {
        assert_eq!(s.message_location(id).unwrap().unwrap().offset, *o);
    }
    // New records at the reused offsets are indexed normally.
    let new = fill_log(&log, "ns", 100, 3);
    s.catch_up_with_window("ns", 0, &log, DAY, |_, _| {})
        .unwrap();
    assert_eq!(s.message_location(&new[0].1).unwrap().unwrap().offset, 5);
}

#[test]
fn catch_up_uses_the_remembered_idempotency_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    let rows = fill_log(&log, "ns", 0, 6);
    {
        let s = StateStore::open(dir.path().join("state")).unwrap();
        assert_eq!(
            s.idempotency_window("ns").unwrap(),
            DEFAULT_IDEMPOTENCY_WINDOW_MS
        );
        s.apply(
            "ns",
            0,
            &applied_records(&rows[..1], wald_storage::now_ms()),
            3_600_000,
        )
        .unwrap();
    }
    let s = StateStore::open(dir.path().join("state")).unwrap();
    assert_eq!(s.idempotency_window("ns").unwrap(), 3_600_000);
    s.catch_up("ns", 0, &log, |_, _| {}).unwrap();
    let (off, id, key) = &rows[3];
    let e = s
        .idempotent("ns", key.as_deref().unwrap(), 0)
        .unwrap()
        .unwrap();
    assert_eq!((e.offset, e.message_id.as_str()), (*off, id.as_str()));
    let now = wald_storage::now_ms();
    assert!(
        e.expires_at_ms > now && e.expires_at_ms <= now + 3_600_000,
        "{e:?}"
    );
    // Entries already expired when replayed are not written.
    let s2 = StateStore::open(dir.path().join("state2")).unwrap();
    s2.catch_up_with_window("ns", 0, &log, 1, |_, _| {})
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(s2.purge_expired(u64::MAX, 100).unwrap().examined, 0);
    assert!(s2.message_location(id).unwrap().is_some());
}

#[test]
fn catch_up_alongside_live_applies_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log"), log_config()).unwrap();
    let s = StateStore::open(dir.path().join("state")).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut rows = Vec::new();
            for i in 0..1_500u64 {
                let m = message("ns", i, Some(format!("key-{i}")));
                let a = log
                    .append_one(m.to_record(b"", 0).unwrap(), Durability::None)
                    .unwrap();
                let row = (
                    a.first_offset,
                    m.message_id.clone(),
                    m.idempotency_key.clone(),
                );
                s.apply(
                    "ns",
                    0,
                    &applied_records(std::slice::from_ref(&row), wald_storage::now_ms()),
                    DAY,
                )
                .unwrap();
                rows.push(row);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            rows
        });
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let r = s.catch_up("ns", 0, &log, |_, _| {}).unwrap();
            assert_eq!(
                r.rewound, None,
                "live applies are never mistaken for a lost tail"
            );
        }
        writer.join().unwrap()
    });
    s.catch_up("ns", 0, &log, |_, _| {}).unwrap();
    assert_eq!(s.watermark("ns", 0).unwrap(), 1_500);
    for (o, id, key) in &written {
        assert_eq!(s.message_location(id).unwrap().unwrap().offset, *o);
        assert_eq!(
            s.idempotent("ns", key.as_deref().unwrap(), 0)
                .unwrap()
                .unwrap()
                .offset,
            *o
        );
    }
}

#[test]
fn purge_expired_sweeps_in_bounded_steps() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    // 30 keys expiring at 1_100, 10 at 1_000_100.
    let recs: Vec<_> = (0..40u64)
        .map(|o| {
            (
                o,
                ids(&format!("wal_{o}"), Some(&format!("k{o:02}"))),
                if o % 4 == 3 { 1_000_000 } else { 1_000 },
            )
        })
        .collect();
    s.apply("ns", 0, &recs, 100).unwrap();
    let mut deleted = 0;
    let mut calls = 0;
    loop {
        let r = s.purge_expired(5_000, 7).unwrap();
        assert!(r.examined <= 7);
        deleted += r.deleted;
        calls += 1;
        if r.sweep_done {
            break;
        }
        assert!(calls < 20);
    }
    assert_eq!(deleted, 30);
    assert_eq!(calls, 6, "40 keys, 7 per call");
    for o in 0..40u64 {
        let live = s
            .idempotent("ns", &format!("k{o:02}"), 5_000)
            .unwrap()
            .is_some();
        assert_eq!(live, o % 4 == 3, "k{o}");
    }
    // The next sweep finds nothing expired; later everything is.
    let r = s.purge_expired(5_000, 100).unwrap();
    assert_eq!((r.examined, r.deleted, r.sweep_done), (10, 0, true));
    let r = s.purge_expired(2_000_000, 100).unwrap();
    assert_eq!((r.examined, r.deleted, r.sweep_done), (10, 10, true));
    // A key renewed by an apply is not purged with its old expiry.
    s.apply("ns", 1, &[(0, ids("wal_new", Some("k00")), 3_000_000)], 100)
        .unwrap();
    assert_eq!(s.purge_expired(2_000_000, 100).unwrap().deleted, 0);
    // Message locations are not touched.
    assert!(s.message_location("wal_0").unwrap().is_some());
}

#[test]
fn namespace_registry_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = StateStore::open(dir.path()).unwrap();
        s.put_namespace("payments", br#"{"name":"payments"}"#)
            .unwrap();
        s.put_namespace("orders", br#"{"name":"orders"}"#).unwrap();
        s.put_namespace("orders", br#"{"name":"orders","enabled":false}"#)
            .unwrap();
        s.put_namespace("tmp", b"{}").unwrap();
        assert!(s.delete_namespace("tmp").unwrap());
        assert!(!s.delete_namespace("tmp").unwrap());
    }
    let s = StateStore::open(dir.path()).unwrap();
    assert_eq!(
        s.get_namespace("orders").unwrap().unwrap(),
        br#"{"name":"orders","enabled":false}"#
    );
    assert_eq!(s.get_namespace("tmp").unwrap(), None);
    let names: Vec<String> = s
        .list_namespaces()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["orders", "payments"]);
}

#[test]
fn delete_namespace_data_removes_only_that_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    for ns in ["a", "ab", "b"] {
        for p in 0..2u32 {
            let recs: Vec<_> = (0..1_500u64)
                .map(|o| {
                    (
                        o,
                        ids(&format!("{ns}_{p}_{o}"), Some(&format!("k{p}_{o}"))),
                        10,
                    )
                })
                .collect();
            s.apply(ns, p, &recs, DAY).unwrap();
        }
    }
    s.put_namespace("a", b"{}").unwrap();
    assert_eq!(s.delete_namespace_data("a").unwrap(), 3_000);
    for p in 0..2u32 {
        assert_eq!(s.watermark("a", p).unwrap(), 0);
        assert_eq!(s.watermark("ab", p).unwrap(), 1_500);
        for o in [0u64, 999, 1_499] {
            assert!(s.message_location(&format!("a_{p}_{o}")).unwrap().is_none());
            assert!(s
                .idempotent("a", &format!("k{p}_{o}"), 0)
                .unwrap()
                .is_none());
            assert!(s
                .message_location(&format!("ab_{p}_{o}"))
                .unwrap()
                .is_some());
            assert!(s
                .idempotent("ab", &format!("k{p}_{o}"), 0)
                .unwrap()
                .is_some());
            assert!(s
                .idempotent("b", &format!("k{p}_{o}"), 0)
                .unwrap()
                .is_some());
        }
    }
    assert!(
        s.get_namespace("a").unwrap().is_some(),
        "the registry entry is separate"
    );
    // Survives reopen, and the namespace can be used again from scratch.
    drop(s);
    let s = StateStore::open(dir.path()).unwrap();
    assert_eq!(s.watermark("a", 1).unwrap(), 0);
    assert!(s.message_location("a_1_5").unwrap().is_none());
    assert_eq!(
        s.apply("a", 1, &[(0, ids("again", None), 1)], 0).unwrap(),
        1
    );
}

#[test]
fn forget_below_drops_old_locations() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path()).unwrap();
    let recs: Vec<_> = (0..100u64)
        .map(|o| (o, ids(&format!("m{o}"), None), 1))
        .collect();
    s.apply("ns", 0, &recs, 0).unwrap();
    s.apply("ns", 1, &[(0, ids("other", None), 1)], 0).unwrap();
    assert_eq!(s.forget_below("ns", 0, 60, 50).unwrap(), 50);
    assert_eq!(s.forget_below("ns", 0, 60, 50).unwrap(), 10);
    assert_eq!(s.forget_below("ns", 0, 60, 50).unwrap(), 0);
    assert!(s.message_location("m59").unwrap().is_none());
    assert!(s.message_location("m60").unwrap().is_some());
    assert!(s.message_location("other").unwrap().is_some());
    assert_eq!(s.watermark("ns", 0).unwrap(), 100);
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = StateStore::open(dir.path()).unwrap();
        let meta = s.cf(codec::CF_META).unwrap();
        s.db.put_cf(
            meta,
            codec::META_FORMAT_VERSION,
            (FORMAT_VERSION + 1).to_be_bytes(),
        )
        .unwrap();
    }
    let err = StateStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedFormat { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("format version 2"), "{err}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = StateStore::open(dir.path()).unwrap();
    let err = StateStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::Open { .. }), "{err}");
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<StateStore>();
}

#[test]
fn a_log_that_lost_its_tail_rewinds_consumer_delivery_parked_and_mirrors() {
    use super::delivery::DeliveryBatch;
    let dir = tempfile::tempdir().unwrap();
    let s = StateStore::open(dir.path().join("state")).unwrap();
    // Before the power loss: consumer committed 8, records 3 and 6 have delivery records,
    // 4 and 7 are parked, the mirror confirmed up to 9 and refused 6; another partition too.
    let mut b = DeliveryBatch::default();
    b.commit("ns", 0, 8);
    b.put_state("ns", 0, 3, b"r3".to_vec());
    b.put_state("ns", 0, 6, b"r6".to_vec());
    b.park("ns", 0, 1_000, 7);
    b.park("ns", 0, 2_000, 4);
    b.commit("ns", 1, 8);
    b.put_state("ns", 1, 6, b"other".to_vec());
    s.write_delivery(b, true).unwrap();
    s.commit_mirror_offset("ns", 0, "kafka", 9, &[(6, b"{}".to_vec())])
        .unwrap();
    s.commit_mirror_offset("ns", 0, "redis", 4, &[]).unwrap();

    // The log of partition 0 now ends at 5.
    let r = s.rewind_delivery("ns", 0, 5).unwrap();
    assert_eq!(r.consumer_was, Some(8));
    assert_eq!(r.mirrors_were, vec![("kafka".to_owned(), 9)]);
    assert_eq!(r.parked_forgotten, 1);
    assert_eq!(s.committed_offset("ns", 0).unwrap(), 5);
    assert_eq!(s.mirror_offset("ns", 0, "kafka").unwrap(), 5);
    assert_eq!(s.mirror_offset("ns", 0, "redis").unwrap(), 4);
    assert_eq!(
        s.delivery_state("ns", 0, 3).unwrap().as_deref(),
        Some(&b"r3"[..])
    );
    assert!(s.delivery_state("ns", 0, 6).unwrap().is_none());
    assert_eq!(
        s.due_before("ns", 0, u64::MAX, 10).unwrap(),
        vec![(2_000, 4)]
    );
    assert!(!s.refused_any("ns", 0, 0, 100, "kafka").unwrap());
    // Partition 1 is untouched.
    assert_eq!(s.committed_offset("ns", 1).unwrap(), 8);
    assert!(s.delivery_state("ns", 1, 6).unwrap().is_some());
    // Nothing ahead: nothing changes.
    let again = s.rewind_delivery("ns", 0, 5).unwrap();
    assert!(!again.any());
}

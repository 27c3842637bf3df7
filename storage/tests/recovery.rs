//! Recovery: torn tails at every byte, corruption in sealed and active segments, bad files.

use std::fs;
use std::path::{Path, PathBuf};

use wald_storage::format::header::SEGMENT_HEADER_LEN;
use wald_storage::format::record::RECORD_HEADER_LEN;
use wald_storage::format::segment_file_name;
use wald_storage::{Durability, Error, Log, LogConfig, Preallocate, Record, RecoveryMode};

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("payload-{i:06}-")
        .repeat(1 + (i % 7) as usize)
        .into_bytes()
}

/// Builds a closed log with `n` records; returns the segment files, oldest first.
fn build(dir: &Path, n: u64, cfg: &LogConfig) -> Vec<PathBuf> {
    let log = Log::open(dir, cfg.clone()).unwrap();
    for i in 0..n {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    log.close().unwrap();
    segments(dir)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Record start positions of a segment's bytes (scanning the valid records).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut starts = Vec::new();
    while pos + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(pos);
        pos += len;
    }
    starts
}

fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let first = log.stats().first_offset;
    log.read_from(first)
        .unwrap()
        .map(|r| r.map(|r| (r.offset, r.payload)).unwrap())
        .collect()
}

#[test]
fn truncating_the_last_segment_at_every_byte_recovers_a_valid_prefix() {
    for prealloc in [Preallocate::ZeroFill, Preallocate::None] {
        let cfg = LogConfig {
            preallocate: prealloc,
            ..cfg()
        };
        let template = tempfile::tempdir().unwrap();
        let segs = build(template.path(), 1500, &cfg);
        assert!(segs.len() >= 2, "want a sealed segment too");
        let last = segs.last().unwrap().clone();
        let bytes = fs::read(&last).unwrap();
        let starts = record_starts(&bytes);
        let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let total = base + starts.len() as u64;
        let end = {
            let s = *starts.last().unwrap();
            s + u32::from_le_bytes(bytes[s..s + 4].try_into().unwrap()) as usize
        };
        // Every byte position inside the final three records.
        let from = starts[starts.len() - 3];
        for cut in from..=end {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(template.path(), dir.path());
            let f = fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join(last.file_name().unwrap()))
                .unwrap();
            f.set_len(cut as u64).unwrap();
            drop(f);
            let log =
                Log::open(dir.path(), cfg.clone()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let complete = starts.iter().filter(|&&s| s < cut).filter(|&&s| {
                let len = u32::from_le_bytes(bytes[s..s + 4].try_into().unwrap()) as usize;
                s + len <= cut
            });
            let expect_next = base + complete.count() as u64;
            assert_eq!(log.stats().next_offset, expect_next, "cut at {cut}");
            let all = read_all(&log);
            assert_eq!(all.len() as u64, expect_next);
            for (off, p) in &all {
                assert_eq!(p, &payload(*off), "record {off} after cut at {cut}");
            }
            // The log takes new appends right after the prefix.
            let a = log
                .append_one(Record::from_payload("next"), Durability::Sync)
                .unwrap();
            assert_eq!(a.first_offset, expect_next);
            assert!(expect_next <= total);
        }
    }
}

#[test]
fn garbage_after_the_tail_is_cut_or_refused_by_mode() {
    let template = tempfile::tempdir().unwrap();
    let segs = build(template.path(), 50, &cfg());
    let last = segs.last().unwrap().clone();
    let bytes = fs::read(&last).unwrap();
    let starts = record_starts(&bytes);
    let s = *starts.last().unwrap();
    let end = s + u32::from_le_bytes(bytes[s..s + 4].try_into().unwrap()) as usize;
    let name = last.file_name().unwrap().to_owned();

    // Garbage where the next record would go: a torn write.
    let torn = |dir: &Path| {
        let mut b = fs::read(dir.join(&name)).unwrap();
        for (i, x) in b[end..end + 300].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(11) | 1;
        }
        fs::write(dir.join(&name), b).unwrap();
    };
    let strict = tempfile::tempdir().unwrap();
    copy_dir(template.path(), strict.path());
    torn(strict.path());
    let err = Log::open(
        strict.path(),
        LogConfig {
            recovery_mode: RecoveryMode::AbsoluteConsistency,
            ..cfg()
        },
    )
    .expect_err("AbsoluteConsistency refuses a torn tail");
    match &err {
        Error::Corruption {
            segment,
            position,
            offset,
            ..
        } => {
            assert_eq!(segment.file_name().unwrap(), name);
            assert_eq!(*position, end as u64);
            assert_eq!(*offset, 50);
        }
        other => panic!("expected Corruption, got {other}"),
    }

    let lenient = tempfile::tempdir().unwrap();
    copy_dir(template.path(), lenient.path());
    torn(lenient.path());
    let log = Log::open(lenient.path(), cfg()).unwrap();
    let cut = log
        .recovery_report()
        .tail_cut
        .clone()
        .expect("the cut is reported");
    assert_eq!(cut.position, end as u64);
    assert_eq!(cut.offset, 50);
    assert_eq!(cut.bytes_cut, 300);
    assert_eq!(read_all(&log).len(), 50);
    drop(log);
    // The cut was made durable: the bytes are zero now, and a strict open is clean.
    let b = fs::read(lenient.path().join(&name)).unwrap();
    assert!(b[end..end + 300].iter().all(|&x| x == 0));
    let strict_again = Log::open(
        lenient.path(),
        LogConfig {
            recovery_mode: RecoveryMode::AbsoluteConsistency,
            ..cfg()
        },
    )
    .unwrap();
    assert_eq!(strict_again.stats().next_offset, 50);
}

#[test]
fn a_flipped_crc_in_a_sealed_segment_is_refused_in_both_modes() {
    let template = tempfile::tempdir().unwrap();
    let segs = build(template.path(), 1500, &cfg());
    let first = segs[0].clone();
    let bytes = fs::read(&first).unwrap();
    let starts = record_starts(&bytes);
    let victim = starts.len() / 2;
    let pos = starts[victim] + RECORD_HEADER_LEN + 3; // a payload byte
    for mode in [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateTailCorruption,
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut b = bytes.clone();
        b[pos] ^= 0x01;
        fs::write(dir.path().join(first.file_name().unwrap()), b).unwrap();
        let err = Log::open(
            dir.path(),
            LogConfig {
                recovery_mode: mode,
                ..cfg()
            },
        )
        .expect_err("refused");
        match &err {
            Error::Corruption {
                segment,
                position,
                offset,
                reason,
            } => {
                assert_eq!(segment.file_name(), first.file_name());
                assert_eq!(*position, starts[victim] as u64);
                assert_eq!(*offset, victim as u64);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{mode:?}: expected Corruption, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&segment_file_name(0)) && msg.contains(&format!("offset {victim}")),
            "{msg}"
        );
    }
}

#[test]
fn damage_before_valid_records_in_the_last_segment_is_not_a_tail() {
    let template = tempfile::tempdir().unwrap();
    let segs = build(template.path(), 40, &cfg());
    assert_eq!(segs.len(), 1);
    let bytes = fs::read(&segs[0]).unwrap();
    let starts = record_starts(&bytes);
    for mode in [
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateTailCorruption,
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut b = bytes.clone();
        b[starts[10] + 20] ^= 0x80; // inside record 10's header
        fs::write(dir.path().join(segs[0].file_name().unwrap()), b).unwrap();
        match Log::open(
            dir.path(),
            LogConfig {
                recovery_mode: mode,
                ..cfg()
            },
        ) {
            Err(Error::Corruption {
                position,
                offset,
                reason,
                ..
            }) => {
                assert_eq!(position, starts[10] as u64);
                assert_eq!(offset, 10);
                assert!(reason.contains("not a torn tail"), "{reason}");
            }
            other => panic!("{mode:?}: expected Corruption, got {other:?}"),
        }
    }
}

#[test]
fn a_zeroed_length_in_a_sealed_segment_is_refused() {
    let template = tempfile::tempdir().unwrap();
    let segs = build(template.path(), 1500, &cfg());
    let bytes = fs::read(&segs[0]).unwrap();
    let starts = record_starts(&bytes);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template.path(), dir.path());
    let mut b = bytes;
    b[starts[5]..starts[5] + 4].fill(0);
    fs::write(dir.path().join(segs[0].file_name().unwrap()), b).unwrap();
    assert!(matches!(
        Log::open(dir.path(), cfg()),
        Err(Error::Corruption { offset: 5, .. })
    ));
}

#[test]
fn missing_or_wrong_indexes_are_rebuilt() {
    let template = tempfile::tempdir().unwrap();
    build(template.path(), 1500, &cfg());
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template.path(), dir.path());
    let idx: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    assert!(idx.len() >= 2);
    fs::remove_file(&idx[0]).unwrap();
    let b = fs::read(&idx[1]).unwrap();
    fs::write(&idx[1], &b[..b.len() - 5]).unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(
        log.recovery_report().indexes_rebuilt.len(),
        2,
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(read_all(&log).len(), 1500);
    for off in [0, 57, 150, 777, 1499] {
        assert_eq!(
            log.read_from(off).unwrap().next().unwrap().unwrap().offset,
            off
        );
    }
    drop(log);
    let again = Log::open(dir.path(), cfg()).unwrap();
    assert!(again.recovery_report().indexes_rebuilt.is_empty());
}

#[test]
fn bad_directories_and_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(Error::NotALog { path, .. }) => assert!(path.ends_with("notes.txt")),
        other => panic!("expected NotALog, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 5, &cfg());
    let mut b = fs::read(&segs[0]).unwrap();
    b[0] = b'X';
    fs::write(&segs[0], &b).unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(e @ Error::BadHeader { .. }) => {
            assert!(e.to_string().contains(&segment_file_name(0)), "{e}")
        }
        other => panic!("expected BadHeader, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 5, &cfg());
    let mut b = fs::read(&segs[0]).unwrap();
    b[8..10].copy_from_slice(&9u16.to_le_bytes());
    fs::write(&segs[0], &b).unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(e @ Error::BadHeader { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("version 9") && msg.contains(&segment_file_name(0)),
                "{msg}"
            );
        }
        other => panic!("expected BadHeader, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(Error::Locked { lock, .. }) => assert!(lock.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(log);
    assert!(Log::open(dir.path(), cfg()).is_ok());
}

#[test]
fn input_errors_name_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    match log.append_one(Record::from_payload(vec![0u8; 20_000]), Durability::Sync) {
        Err(e @ Error::RecordTooLarge { size, max }) => {
            assert_eq!(size, 20_000 + RECORD_HEADER_LEN);
            assert_eq!(max, 16 << 10);
            assert!(e.to_string().contains("20044") && e.to_string().contains("16384"));
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    for i in 0..3 {
        log.append_one(Record::from_payload(payload(i)), Durability::Sync)
            .unwrap();
    }
    assert!(matches!(
        log.read_from(4),
        Err(Error::OffsetOutOfRange {
            requested: 4,
            first: 0,
            next: 3
        })
    ));
    assert_eq!(log.read_from(3).unwrap().count(), 0);
    assert!(log.append(&[], Durability::Sync).is_err());
    assert!(matches!(
        Log::open(
            tempfile::tempdir().unwrap().path(),
            LogConfig {
                segment_bytes: 1,
                ..cfg()
            }
        ),
        Err(Error::InvalidConfig {
            key: "segment_bytes",
            ..
        })
    ));
}

#[test]
fn an_interrupted_seal_is_finished() {
    // Older builds created the next segment before truncating the sealed one: a sealed
    // segment followed by nothing but zeros is finished (truncated), not refused.
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 1500, &cfg());
    let len = fs::metadata(&segs[0]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(64 << 10)
        .unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(read_all(&log).len(), 1500);
    assert_eq!(
        fs::metadata(&segs[0]).unwrap().len(),
        len,
        "truncated back to its data"
    );
}

#[test]
fn a_valid_record_with_a_wrong_offset_at_the_tail_is_refused() {
    let template = tempfile::tempdir().unwrap();
    let segs = build(template.path(), 40, &cfg());
    let bytes = fs::read(&segs[0]).unwrap();
    let starts = record_starts(&bytes);
    let last = *starts.last().unwrap();
    let len = u32::from_le_bytes(bytes[last..last + 4].try_into().unwrap()) as usize;
    let mut b = bytes.clone();
    // Rewrite the last record as offset 45 (a gap) with a correct CRC.
    b[last + 8..last + 16].copy_from_slice(&45u64.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[last..last + 4]);
    h.update(&b[last + 8..last + len]);
    b[last + 4..last + 8].copy_from_slice(&h.finalize().to_le_bytes());
    fs::write(&segs[0], b).unwrap();
    match Log::open(template.path(), cfg()) {
        Err(Error::Corruption {
            offset: 39, reason, ..
        }) => assert!(reason.contains("offset 45"), "{reason}"),
        other => panic!("expected Corruption at offset 39, got {other:?}"),
    }
}

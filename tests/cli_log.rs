//! `wald log verify|dump|stats` against a log built with the library.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use wald_storage::{Durability, Log, LogConfig, Record};

const RECORDS: u64 = 500;

fn wald(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wald"))
        .args(["log", args[0]])
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("run the wald binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn record(i: u64) -> Record {
    Record {
        key: format!("user-{i}").into_bytes(),
        headers: vec![("id".to_owned(), format!("m-{i}").into_bytes())],
        payload: format!("{{\"n\":{i},\"text\":\"{}\"}}", "y".repeat(400)).into_bytes(),
        due_ms: 1_000 + i,
    }
}

/// A closed log of `RECORDS` records over several 64 KiB segments.
fn build(dir: &Path) {
    let cfg = LogConfig {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        ..Default::default()
    };
    let log = Log::open(dir, cfg).expect("open");
    let mut i = 0;
    while i < RECORDS {
        let batch: Vec<Record> = (i..(i + 20).min(RECORDS)).map(record).collect();
        log.append(&batch, Durability::None)
            .expect("append")
            .wait()
            .expect("durable");
        i += batch.len() as u64;
    }
    log.close().expect("close");
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

#[test]
fn verify_dump_stats_and_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build(dir);
    let before = snapshot(dir);

    // verify: clean, exit 0, a row per segment.
    let out = wald(&["verify"], dir);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("result: clean"), "{stdout}");
    assert!(stdout.contains("00000000000000000000.log"), "{stdout}");

    let out = wald(&["verify", "--json"], dir);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("verify --json is JSON");
    assert_eq!(v["records"], RECORDS);
    assert_eq!(v["errors"], 0);
    let segments = v["segments"].as_array().expect("segments").clone();
    assert!(segments.len() >= 3, "want several segments: {v}");

    // dump: one JSON object per record.
    let out = wald(&["dump"], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len() as u64, RECORDS);
    let first: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(first["offset"], 0);
    assert_eq!(first["dueMs"], 1000);
    assert!(first["timestampMs"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(first["key"], "user-0");
    assert_eq!(first["headers"]["id"], "m-0");
    assert_eq!(first["payload"]["n"], 0);
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).expect("a JSON line");
    assert_eq!(last["offset"], RECORDS - 1);

    let out = wald(&["dump", "--from", "123", "--limit", "7"], dir);
    assert_eq!(out.status.code(), Some(0));
    let offsets: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON")["offset"]
                .as_u64()
                .expect("offset")
        })
        .collect();
    assert_eq!(offsets, (123..130).collect::<Vec<_>>());

    // stats.
    let out = wald(&["stats", "--json"], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).expect("stats --json is JSON");
    assert_eq!(s["records"], RECORDS);
    assert_eq!(s["nextOffset"], RECORDS);
    assert_eq!(s["segments"].as_u64(), Some(segments.len() as u64));
    assert_eq!(s["indexFiles"].as_u64(), Some(segments.len() as u64));
    let out = wald(&["stats"], dir);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains(&format!("records:        {RECORDS}")),
        "{}",
        text(&out.stdout)
    );

    assert_eq!(snapshot(dir), before, "the tools changed the log directory");

    // Corrupt one byte in the middle of a sealed segment.
    let seg = segments[1]["file"].as_str().expect("file").to_owned();
    let path = dir.join(&seg);
    let mut bytes = fs::read(&path).expect("read segment");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    fs::write(&path, &bytes).expect("write segment");
    let before = snapshot(dir);

    let out = wald(&["verify"], dir);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let problem = stdout
        .lines()
        .find(|l| l.contains("error corruption"))
        .expect("a corruption line");
    assert!(problem.contains(&seg), "{problem}");
    assert!(
        problem.contains("at byte ") && problem.contains("offset "),
        "{problem}"
    );
    assert!(stdout.contains("DAMAGED"), "{stdout}");

    let out = wald(&["verify", "--json"], dir);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["problems"][0]["file"], seg.as_str());
    assert_eq!(v["problems"][0]["kind"], "corruption");

    let out = wald(&["dump"], dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&seg), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().count() > 0);

    assert_eq!(snapshot(dir), before, "the tools changed the log directory");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    let out = wald(&["verify"], &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());
    let out = wald(&["dump", "--from", "x"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
}

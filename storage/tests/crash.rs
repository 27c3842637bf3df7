//! Process-crash test (after sled's test_crash_recovery): the test binary re-executes itself
//! as a child that appends with `Sync` durability from several threads and prints every
//! acknowledged offset; the parent SIGKILLs it at a random moment, reopens the log, and
//! checks that every acknowledged record is present and byte-identical, with no gap
//! before the last acknowledged offset. Cycles: `WALD_CRASH_CYCLES` (default 50).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wald_storage::{Durability, Log, LogConfig, Record};

const CHILD_ENV: &str = "WALD_CRASH_CHILD_DIR";
const THREADS: u64 = 4;

fn cfg() -> LogConfig {
    // Small segments so that crashes also land during rolls.
    LogConfig {
        segment_bytes: 128 << 10,
        max_record_bytes: 32 << 10,
        ..LogConfig::default()
    }
}

/// The payload a child writes for (thread, seq): its length varies, and it is checkable.
fn payload(thread: u64, seq: u64) -> Vec<u8> {
    let len = 16 + ((thread * 7919 + seq * 104_729) % 3000) as usize;
    let mut p = format!("t{thread}:s{seq}:").into_bytes();
    p.extend((0..len).map(|i| (i as u64 ^ seq ^ (thread << 5)) as u8));
    p
}

/// Child mode: runs only when the parent set the environment variable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(Log::open(&dir, cfg()).expect("child open"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, out) = (Arc::clone(&log), Arc::clone(&out));
            std::thread::spawn(move || {
                for seq in 0.. {
                    let batch = 1 + (seq % 3);
                    let records: Vec<Record> = (0..batch)
                        .map(|k| Record::from_payload(payload(t, seq * 10 + k)))
                        .collect();
                    let a = log
                        .append(&records, Durability::Sync)
                        .expect("append")
                        .wait()
                        .expect("ack");
                    let mut o = out.lock().expect("stdout");
                    for k in 0..batch {
                        writeln!(o, "ACK {} {t} {}", a.first_offset + k, seq * 10 + k)
                            .expect("write");
                    }
                    o.flush().expect("flush");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// A small deterministic PRNG (xorshift) so runs are reproducible from the printed seed.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn run_cycle(dir: &Path, kill_after: Duration, acked: &mut BTreeMap<u64, (u64, u64)>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace();
            if it.next() != Some("ACK") {
                continue;
            }
            let nums: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            if let [off, t, s] = nums[..] {
                acks.push((off, t, s));
            }
        }
        acks
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    for (off, t, s) in reader.join().expect("reader") {
        assert!(
            acked.insert(off, (t, s)).is_none_or(|prev| prev == (t, s)),
            "offset {off} acknowledged twice"
        );
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles: u64 = std::env::var("WALD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let kill_after = Duration::from_millis(20 + next_rand(&mut seed) % 250);
        run_cycle(dir.path(), kill_after, &mut acked);
        let log = Log::open(dir.path(), cfg())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let next = log.stats().next_offset;
        if let Some((&last, _)) = acked.last_key_value() {
            assert!(
                next > last,
                "cycle {cycle}: acknowledged offset {last} but the log ends at {next}"
            );
        }
        // Every record up to the end: dense offsets; acknowledged ones byte-identical.
        let mut expect = 0u64;
        for r in log.read_from(0).expect("read") {
            let r = r.unwrap_or_else(|e| panic!("cycle {cycle}: read failed: {e}"));
            assert_eq!(r.offset, expect, "cycle {cycle}: gap in offsets");
            if let Some(&(t, s)) = acked.get(&r.offset) {
                assert_eq!(
                    r.payload,
                    payload(t, s),
                    "cycle {cycle}: record {} differs",
                    r.offset
                );
            }
            expect += 1;
        }
        assert_eq!(expect, next);
        if let Some(cut) = &log.recovery_report().tail_cut {
            eprintln!(
                "cycle {cycle}: cut {} bytes at {} (offset {})",
                cut.bytes_cut, cut.position, cut.offset
            );
        }
        // Records that survived without an ack are legal (the ack was lost with the process);
        // they are part of the log from now on.
        log.close().expect("close");
    }
    eprintln!(
        "{cycles} crash cycles, {} acknowledged records checked, {:.1}s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!acked.is_empty(), "the child never acknowledged anything");
}

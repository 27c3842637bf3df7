//! The long fault runs: cycle after cycle of mixed load against the service, each cycle ended
//! or disturbed by a fault, and after each cycle the promises checked.
//!
//! Two runs (one binary, the same load and checks):
//! - **the process run** (`a_long_fault_run_keeps_every_promise`): SIGKILL of a real
//!   `wald serve` process in the middle of the load; a disk that fills up (in process,
//!   `FaultFs::set_free_space`: writes that grow a file take space, what does not fit fails
//!   with ENOSPC after writing what fits) and frees again; EIO on an fsync (in process,
//!   `FaultFs`: the partition is poisoned, then the server is restarted);
//! - **the power-loss run** (`power::a_power_loss_run_keeps_every_promise`): the logs on the
//!   crash-simulating file system, the power cut in the middle of the load
//!   (`SimFs::cut_power`: what was not synced is gone, nothing completes after the cut), the
//!   server restarted on what is left; a `batch` namespace beside the `sync` ones.
//!
//! Load (three writers): single and batch writes, each message with its own idempotency key,
//! some delayed (1–2 s), some for a namespace whose webhook is down (retries, then the DLQ);
//! every write that failed is sent again, with the same key, until it is acknowledged; some
//! acknowledged keys are sent again on purpose. The webhook of the main namespace fails every
//! message's first attempt (a retry each).
//!
//! Checked after each cycle, on the restarted server: every message answered
//! `durable: "true"` in the cycle before (and a sample of the older ones) is readable by id,
//! payload identical, at the partition and offset it was answered with; a key sent again is
//! answered with its first message id. A `batch` message (`durable: "false"`) a power loss
//! took back is sent again with its key, which must not be answered with the lost id. At the
//! end: every key is in the logs exactly once and every acknowledged (namespace, partition,
//! offset) holds that message (offsets never reused); every message is delivered at least
//! once — the dead namespace's after a DLQ replay-all — and no delivery attempt came before
//! the message's delay.
//!
//! `WALD_FAULT_RUN_CYCLES` (default 6, as CI runs it), `WALD_POWER_RUN_CYCLES` (default 6)
//! and `WALD_FAULT_RUN_SEED`; the figures are printed at the end (docs/DURABILITY.md has the
//! 1,000-cycle runs).

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/receiver.rs"]
mod receiver;
#[path = "../common/servers.rs"]
mod servers;

mod book;
mod end;
mod power;
mod targets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use book::{check_acks, load, Book, Mix, Rng};
use common::{Server, ADMIN};
use receiver::Receiver;
use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, StdFs, Vfs};

const SEGMENT: u64 = 64 << 10;
const FIRST_SEGMENT: u64 = 64 << 10;

/// A number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    env_u64("WALD_FAULT_RUN_SEED", 0x5EED_0F_FA17)
}

enum Instance {
    Process(Child, SocketAddr),
    InProcess(Server),
}

impl Instance {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Process(_, a) => *a,
            Self::InProcess(s) => s.addr,
        }
    }
}

fn config_toml() -> String {
    format!(
        "[storage]\nsegment_bytes = {SEGMENT}\nfirst_segment_bytes = {FIRST_SEGMENT}\nmax_record_bytes = 32768\n\
         [delivery]\npark_after_ms = 1000\n"
    )
}

/// The server in this process, its logs on `fs`, its state store in `dir/data`.
fn in_process(dir: &Path, fs: Arc<dyn Vfs>) -> Server {
    let mut c = common::config(&dir.join("data"));
    c.storage.segment_bytes = SEGMENT;
    c.storage.first_segment_bytes = FIRST_SEGMENT;
    c.storage.max_record_bytes = 32768;
    c.delivery.park_after_ms = 1000;
    Server::start_with(c, fs)
}

fn process(dir: &Path) -> Instance {
    let (child, addr) = common::spawn_serve(dir, ADMIN, Some(&config_toml()));
    Instance::Process(child, addr)
}

/// Stops the writers (after the fault: they have seen it).
fn stop_writers(stop: &AtomicBool, writers: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
}

fn progress(cycle: u64, cycles: u64, book: &Mutex<Book>, kinds: &HashMap<&str, u64>, t: Instant) {
    if cycle % 50 == 49 {
        let b = book.lock().unwrap();
        eprintln!(
            "fault run: cycle {}/{cycles}, {} acknowledged, {} pending, {kinds:?}, {:.0} s",
            cycle + 1,
            b.acks.len(),
            b.pending.len(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// The last line of a run.
fn report(
    run: &str,
    cycles: u64,
    kinds: &HashMap<&str, u64>,
    started: Instant,
    book: &Mutex<Book>,
    s: &end::Summary,
    restart_ms: &mut [u64],
) {
    let b = book.lock().unwrap();
    restart_ms.sort_unstable();
    eprintln!(
        "{run}: {cycles} cycles ({kinds:?}) in {:.0} s, seed {}: {} messages acknowledged \
         ({:?}; dead→DLQ→replayed), {} batch acknowledgements taken back by a power loss and \
         sent again, {} read back by id, {} keys sent again and answered with their first id, \
         {} writes refused for a full disk, {} for other faults, {} delivery attempts ({} \
         successful deliveries, {} duplicates), 0 early, 0 lost, 0 appended twice, 0 offsets \
         reused; start p50 {} ms, max {} ms",
        started.elapsed().as_secs_f64(),
        seed(),
        s.acks,
        s.by_ns,
        b.lost_ids.len(),
        s.checked,
        b.duplicates_checked,
        b.refused_disk_full,
        b.refused_other,
        s.hits,
        s.delivered,
        s.duplicates,
        restart_ms[restart_ms.len() / 2],
        restart_ms.last().copied().unwrap_or(0),
    );
}

#[test]
fn a_long_fault_run_keeps_every_promise() {
    let cycles = env_u64("WALD_FAULT_RUN_CYCLES", 6);
    let seed = seed();
    let started = Instant::now();
    let rx = Receiver::start();
    rx.shared.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let book = Arc::new(Mutex::new(Book::default()));
    let mut rng = Rng(seed | 1);
    let mut kinds: HashMap<&str, u64> = HashMap::new();
    let mut checked = 0usize;
    let mut restart_ms: Vec<u64> = Vec::new();
    let mix = Mix {
        lossy: false,
        targets: true,
    };
    let mut targets = targets::Targets::start();
    for cycle in 0..cycles {
        let kind = match (cycle, rng.below(4)) {
            (0, _) | (_, 0 | 1) => "sigkill",
            (_, 2) => "disk-full",
            _ => "eio",
        };
        *kinds.entry(kind).or_default() += 1;
        let fault = FaultFs::new(Arc::new(StdFs));
        let t0 = Instant::now();
        let inst = if kind == "sigkill" {
            process(dir.path())
        } else {
            Instance::InProcess(in_process(dir.path(), Arc::new(fault.clone())))
        };
        restart_ms.push(u64::try_from(t0.elapsed().as_millis()).unwrap());
        let addr = inst.addr();
        if cycle == 0 {
            end::create_namespaces(addr, &rx, mix.lossy, Some(&targets));
        } else {
            checked += check_acks(addr, &book, &mut rng, 20);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(addr, &book, cycle, seed, mix, &stop);
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        if let Some(what) = targets.disrupt(&mut rng) {
            *kinds.entry(what).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        match kind {
            "disk-full" => {
                fault.set_free_space(Some(rng.below(3) * 40_000));
                std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
                fault.set_free_space(None);
                std::thread::sleep(Duration::from_millis(200));
            }
            "eio" => {
                fault.arm(FaultPlan {
                    op: FaultOp::Sync,
                    nth: 1 + rng.below(20),
                    kind: FaultKind::Eio,
                    sticky: rng.below(2) == 0,
                });
                std::thread::sleep(Duration::from_millis(300 + rng.below(400)));
                fault.disarm();
            }
            _ => {}
        }
        match inst {
            Instance::Process(mut child, _) => {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                stop_writers(&stop, writers);
            }
            Instance::InProcess(server) => {
                stop_writers(&stop, writers);
                server.stop();
            }
        }
        progress(cycle, cycles, &book, &kinds, started);
    }

    // The end: a clean server; everything still pending sent until acknowledged.
    let p = process(dir.path());
    let mut summary = end::finish(
        p.addr(),
        &book,
        &rx,
        &mut rng,
        &[
            ("main", 4),
            ("dead", 1),
            ("cache", 2),
            ("db", 2),
            ("shop", 2),
        ],
    );
    summary.checked += checked;
    let acks: Vec<book::Ack> = book.lock().unwrap().acks.values().cloned().collect();
    let in_targets = targets.check(p.addr(), &acks);
    if let Instance::Process(mut child, _) = p {
        let _ = child.kill();
        let _ = child.wait();
    }
    report(
        "fault run",
        cycles,
        &kinds,
        started,
        &book,
        &summary,
        &mut restart_ms,
    );
    eprintln!(
        "fault run: {in_targets} messages and transactions found applied in Redis and \
         PostgreSQL (Redis SIGKILLed {} times, PostgreSQL shut down {} times, under load)",
        targets.redis_kills, targets.pg_stops
    );
}

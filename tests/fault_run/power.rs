//! The power-loss run: the logs on the crash-simulating file system, the power cut in the
//! middle of the load — cleanly (every unsynced byte gone) or tearing the last writes (a
//! random prefix of each file's unsynced bytes kept) — and the server restarted on what is
//! left.
//!
//! The state store (RocksDB) stays on the real disk and keeps what it had at the cut and
//! after it (until the stopped server closed it): the worst case for a log that lost its
//! tail — consumer offsets, delivery records, parked delays, the message index and
//! idempotency keys can all be ahead of the log, and the service must set them back
//! (docs/DURABILITY.md, "When a log lost its tail"). The state store's own power loss is
//! RocksDB's matter (its synced writes are the ones this service relies on).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wald_storage::io::SimFs;

use crate::book::{check_acks, load, Book, Mix, Rng, LOSSY};
use crate::receiver::Receiver;
use crate::{end, env_u64, in_process, progress, report, seed, stop_writers};

#[test]
fn a_power_loss_run_keeps_every_promise() {
    let cycles = env_u64("WALD_POWER_RUN_CYCLES", 6);
    let seed = seed() ^ 0x0070_7765_72;
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
        lossy: true,
        targets: false,
    };
    let mut sim = SimFs::new();
    for cycle in 0..cycles {
        let torn = rng.below(2) == 0;
        let kind = if torn { "power-torn" } else { "power" };
        *kinds.entry(kind).or_default() += 1;
        let t0 = Instant::now();
        let server = in_process(dir.path(), Arc::new(sim.clone()));
        restart_ms.push(u64::try_from(t0.elapsed().as_millis()).unwrap());
        let addr = server.addr;
        if cycle == 0 {
            end::create_namespaces(addr, &rx, mix.lossy, None);
        } else {
            checked += check_acks(addr, &book, &mut rng, 20);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(addr, &book, cycle, seed, mix, &stop);
        std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
        let after = if torn {
            let mut tear = Rng(rng.next() | 1);
            sim.cut_power_keeping(|_, dirty| {
                usize::try_from(tear.below(dirty as u64 + 1)).unwrap_or(0)
            })
        } else {
            sim.cut_power()
        };
        // The process meets the dead disk, its clients their errors; then it is stopped.
        std::thread::sleep(Duration::from_millis(50));
        stop_writers(&stop, writers);
        server.stop();
        sim = after;
        progress(cycle, cycles, &book, &kinds, started);
    }

    let server = in_process(dir.path(), Arc::new(sim.clone()));
    let mut summary = end::finish(
        server.addr,
        &book,
        &rx,
        &mut rng,
        &[("main", 4), ("dead", 1), (LOSSY, 2)],
    );
    summary.checked += checked;
    server.stop();
    report(
        "power-loss run",
        cycles,
        &kinds,
        started,
        &book,
        &summary,
        &mut restart_ms,
    );
}

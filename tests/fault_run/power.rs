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

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wald_storage::io::SimFs;

use crate::book::{check_acks, load, Mix, Rng, LOSSY};
use crate::run::Run;
use crate::{end, in_process, stop_writers};

#[test]
fn a_power_loss_run_keeps_every_promise() {
    let mut run = Run::new("power-loss run", "WALD_POWER_RUN_CYCLES", 0x0070_7765_72);
    let mix = Mix {
        lossy: true,
        targets: false,
        kafka: false,
    };
    let dir = run.dir.path().to_path_buf();
    let mut sim = SimFs::new();
    for cycle in 0..run.cycles {
        let torn = run.rng.below(2) == 0;
        run.count(if torn { "power-torn" } else { "power" });
        let t0 = Instant::now();
        let server = in_process(&dir, Arc::new(sim.clone()));
        run.restart_ms
            .push(u64::try_from(t0.elapsed().as_millis()).unwrap());
        let addr = server.addr;
        if cycle == 0 {
            end::create_namespaces(addr, &run.rx, mix.lossy, Vec::new());
        } else {
            run.checked += check_acks(addr, &run.book, &mut run.rng, 20);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(
            addr,
            &run.book,
            cycle,
            run.seed ^ 0x0070_7765_72,
            mix,
            &stop,
        );
        std::thread::sleep(Duration::from_millis(200 + run.rng.below(800)));
        let after = if torn {
            let mut tear = Rng(run.rng.next() | 1);
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
        run.progress(cycle);
    }

    let server = in_process(&dir, Arc::new(sim.clone()));
    let summary = end::finish(
        server.addr,
        &run.book,
        &run.rx,
        &mut run.rng,
        &[("main", 4), ("dead", 1), (LOSSY, 2)],
    );
    server.stop();
    run.report(&summary);
}

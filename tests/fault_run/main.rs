//! The long fault runs: cycle after cycle of mixed load against the service, each cycle ended
//! or disturbed by a fault, and after each cycle the promises checked.
//!
//! Two runs (one binary, the same load and checks):
//! - **the process run** (`a_long_fault_run_keeps_every_promise`): SIGKILL of a real
//!   `wald serve` process in the middle of the load; a disk that fills up (in process,
//!   `FaultFs::set_free_space`: writes that grow a file take space, what does not fit fails
//!   with ENOSPC after writing what fits) and frees again; EIO on an fsync (in process,
//!   `FaultFs`: the partition is poisoned, then the server is restarted); and, in some cycles
//!   besides, a real Redis SIGKILLed, a real PostgreSQL shut down, or the Kafka broker taken
//!   down, each brought back (targets.rs, kafka.rs) — with namespaces delivering to them,
//!   transactions over both, and a Kafka mirror;
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
//! the message's delay; every message of the real targets' namespaces took effect in its
//! server (the Redis key, the PostgreSQL row, the transaction `completed` with both) and
//! every mirrored one is in the Kafka topic.
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
#[cfg(feature = "mirror-kafka")]
mod kafka;
mod power;
mod run;
mod targets;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use book::{check_acks, load, Mix};
use common::{Server, ADMIN};
use run::Run;
use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, StdFs, Vfs};

const SEGMENT: u64 = 64 << 10;
const FIRST_SEGMENT: u64 = 64 << 10;

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
         [delivery]\npark_after_ms = 1000\nreplay_rate_per_sec = 2000\n"
    )
}

/// The server in this process, its logs on `fs`, its state store in `dir/data`.
fn in_process(dir: &Path, fs: Arc<dyn Vfs>) -> Server {
    let mut c = common::config(&dir.join("data"));
    c.storage.segment_bytes = SEGMENT;
    c.storage.first_segment_bytes = FIRST_SEGMENT;
    c.storage.max_record_bytes = 32768;
    c.delivery.park_after_ms = 1000;
    c.delivery.replay_rate_per_sec = 2000;
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

#[test]
fn a_long_fault_run_keeps_every_promise() {
    let mut run = Run::new("fault run", "WALD_FAULT_RUN_CYCLES", 0);
    let mix = Mix {
        lossy: false,
        targets: true,
        kafka: cfg!(feature = "mirror-kafka"),
    };
    let mut targets = targets::Targets::start();
    #[cfg(feature = "mirror-kafka")]
    let mut broker = kafka::Broker::start();
    let dir = run.dir.path().to_path_buf();
    for cycle in 0..run.cycles {
        let kind = match (cycle, run.rng.below(4)) {
            (0, _) | (_, 0 | 1) => "sigkill",
            (_, 2) => "disk-full",
            _ => "eio",
        };
        run.count(kind);
        let fault = FaultFs::new(Arc::new(StdFs));
        let t0 = Instant::now();
        let inst = if kind == "sigkill" {
            process(&dir)
        } else {
            Instance::InProcess(in_process(&dir, Arc::new(fault.clone())))
        };
        run.restart_ms
            .push(u64::try_from(t0.elapsed().as_millis()).unwrap());
        let addr = inst.addr();
        if cycle == 0 {
            #[allow(unused_mut)]
            let mut more = targets.namespaces();
            #[cfg(feature = "mirror-kafka")]
            more.push(broker.namespace());
            end::create_namespaces(addr, &run.rx, mix.lossy, more);
        } else {
            run.checked += check_acks(addr, &run.book, &mut run.rng, 20);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(addr, &run.book, cycle, run.seed, mix, &stop);
        std::thread::sleep(Duration::from_millis(100 + run.rng.below(300)));
        if let Some(what) = targets.disrupt(&mut run.rng) {
            run.count(what);
        }
        #[cfg(feature = "mirror-kafka")]
        if let Some(what) = broker.disrupt(&mut run.rng) {
            run.count(what);
        }
        std::thread::sleep(Duration::from_millis(100 + run.rng.below(300)));
        let rng = &mut run.rng;
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
        run.progress(cycle);
    }

    // The end: a clean server; everything still pending sent until acknowledged.
    let p = process(&dir);
    let summary = end::finish(
        p.addr(),
        &run.book,
        &run.rx,
        &mut run.rng,
        &[
            ("main", 4),
            ("dead", 1),
            ("cache", 2),
            ("db", 2),
            ("shop", 2),
            ("stream", 2),
        ],
    );
    let acks: Vec<book::Ack> = run.book.lock().unwrap().acks.values().cloned().collect();
    let in_targets = targets.check(p.addr(), &acks);
    #[cfg(feature = "mirror-kafka")]
    let in_kafka = broker.check(&acks);
    #[cfg(not(feature = "mirror-kafka"))]
    let in_kafka = 0;
    if let Instance::Process(mut child, _) = p {
        let _ = child.kill();
        let _ = child.wait();
    }
    run.report(&summary);
    eprintln!(
        "fault run: {in_targets} messages and transactions found applied in Redis and \
         PostgreSQL (Redis SIGKILLed {} times, PostgreSQL shut down {} times, under load); \
         {in_kafka} mirrored messages found in Kafka (the broker down {} times)",
        targets.redis_kills,
        targets.pg_stops,
        run.kinds.get("kafka-down").copied().unwrap_or(0)
    );
}

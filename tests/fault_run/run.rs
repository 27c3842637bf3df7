//! What a run keeps from its start to its report: the receiver, the data directory, the book,
//! the generator, and what happened.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::book::{Book, Rng};
use crate::end::Summary;
use crate::receiver::Receiver;

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Run {
    pub name: &'static str,
    pub cycles: u64,
    /// `WALD_FAULT_RUN_SEED`, as given.
    pub seed: u64,
    pub started: Instant,
    /// The webhook receiver (the dead namespace's webhook down until the end).
    pub rx: Receiver,
    pub dir: tempfile::TempDir,
    pub book: Arc<Mutex<Book>>,
    pub rng: Rng,
    /// Faults and disruptions by kind.
    pub kinds: HashMap<&'static str, u64>,
    /// Acknowledgements read back by id.
    pub checked: usize,
    /// How long each (re)start took.
    pub restart_ms: Vec<u64>,
}

impl Run {
    /// A run of `cycles_var` cycles (default 6), its generator seeded from the run seed and
    /// `salt`.
    pub fn new(name: &'static str, cycles_var: &str, salt: u64) -> Self {
        let seed = env_u64("WALD_FAULT_RUN_SEED", 0x5EED_0F_FA17);
        let rx = Receiver::start();
        rx.shared.down.store(true, Ordering::SeqCst);
        Self {
            name,
            cycles: env_u64(cycles_var, 6),
            seed,
            started: Instant::now(),
            rx,
            dir: tempfile::tempdir().unwrap(),
            book: Arc::new(Mutex::new(Book::default())),
            rng: Rng((seed ^ salt) | 1),
            kinds: HashMap::new(),
            checked: 0,
            restart_ms: Vec::new(),
        }
    }

    pub fn count(&mut self, kind: &'static str) {
        *self.kinds.entry(kind).or_default() += 1;
    }

    /// A line every 50 cycles.
    pub fn progress(&self, cycle: u64) {
        if cycle % 50 == 49 {
            let b = self.book.lock().unwrap();
            eprintln!(
                "{}: cycle {}/{}, {} acknowledged, {} pending, {:?}, {:.0} s",
                self.name,
                cycle + 1,
                self.cycles,
                b.acks.len(),
                b.pending.len(),
                self.kinds,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// The last line of a run.
    pub fn report(&mut self, s: &Summary) {
        let b = self.book.lock().unwrap();
        self.restart_ms.sort_unstable();
        eprintln!(
            "{}: {} cycles ({:?}) in {:.0} s, seed {}: {} messages acknowledged ({:?}; \
             dead→DLQ→replayed), {} batch acknowledgements taken back by a power loss and \
             sent again, {} read back by id, {} keys sent again and answered with their first \
             id, {} writes refused for a full disk, {} for other faults, {} delivery attempts \
             ({} successful deliveries, {} duplicates), 0 early, 0 lost, 0 appended twice, 0 \
             offsets reused; start p50 {} ms, max {} ms",
            self.name,
            self.cycles,
            self.kinds,
            self.started.elapsed().as_secs_f64(),
            self.seed,
            s.acks,
            s.by_ns,
            b.lost_ids.len(),
            s.checked + self.checked,
            b.duplicates_checked,
            b.refused_disk_full,
            b.refused_other,
            s.hits,
            s.delivered,
            s.duplicates,
            self.restart_ms[self.restart_ms.len() / 2],
            self.restart_ms.last().copied().unwrap_or(0),
        );
    }
}

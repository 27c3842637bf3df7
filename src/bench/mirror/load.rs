//! The mirror's progress during a run: the writes' acknowledgements, each partition's
//! committed mirror offset followed as it moves, the lag in records, and the wait for the
//! mirror to catch up once the writers stopped.

use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::super::delivery::harness::{epoch_us, Server};
use super::{Backend, NS};

/// The fields of a write's answer the bench uses.
#[derive(Deserialize)]
struct Ack {
    partition: u32,
    offset: u64,
    durable: String,
}

/// An acknowledged write: partition, offset, when its 202 was read (µs since the epoch).
pub(super) type Acked = (u32, u64, i64);

/// Reads a 202's body: the acknowledged write, or why it does not count.
pub(super) fn ack(body: &[u8]) -> Result<Acked, String> {
    match serde_json::from_slice::<Ack>(body) {
        Ok(a) if a.durable == "true" => Ok((a.partition, a.offset, epoch_us())),
        other => Err(other.map_or_else(|e| e.to_string(), |a| a.durable)),
    }
}

/// Log end − committed offset, summed over the partitions.
pub(super) fn lag_records(server: &Server, backend: Backend, partitions: u32) -> u64 {
    let Some(ns) = server.app.namespace(NS) else {
        return 0;
    };
    (0..partitions)
        .zip(&ns.logs)
        .map(|(p, log)| {
            let committed = *server
                .app
                .mirrors
                .slot(NS, p, backend.mirror())
                .committed
                .borrow();
            log.stats().next_offset.saturating_sub(committed)
        })
        .sum()
}

/// Follows each partition's committed mirror offset: (µs since the epoch, committed), in
/// time order, per partition.
pub(super) fn sample_commits(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    backend: Backend,
    partitions: u32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Vec<(i64, u64)>>> {
    (0..partitions)
        .map(|p| {
            let mut rx = server
                .app
                .mirrors
                .slot(NS, p, backend.mirror())
                .committed
                .subscribe();
            let mut stop = stop.clone();
            rt.spawn(async move {
                let mut v = vec![(epoch_us(), *rx.borrow_and_update())];
                loop {
                    tokio::select! {
                        r = rx.changed() => {
                            if r.is_err() {
                                break;
                            }
                            v.push((epoch_us(), *rx.borrow_and_update()));
                        }
                        _ = stop.changed() => break,
                    }
                }
                v
            })
        })
        .collect()
}

/// Per acknowledged write, its confirmation time (None: not seen).
pub(super) fn confirmations(acked: &[Acked], commits: &[Vec<(i64, u64)>]) -> Vec<Option<i64>> {
    acked
        .iter()
        .map(|&(p, off, _)| {
            let c = commits.get(p as usize)?;
            // The committed offset only grows: the first sample past the record.
            let i = c.partition_point(|&(_, committed)| committed <= off);
            c.get(i).map(|&(t, _)| t)
        })
        .collect()
}

/// Records acknowledged but not yet confirmed at the moment of the last acknowledgement.
pub(super) fn lag_records_at(commits: &[Vec<(i64, u64)>], acked: &[Acked]) -> u64 {
    let Some(end) = acked.iter().map(|a| a.2).max() else {
        return 0;
    };
    let mut next = vec![0u64; commits.len()];
    for &(p, off, _) in acked {
        if let Some(n) = next.get_mut(p as usize) {
            *n = (*n).max(off + 1);
        }
    }
    commits
        .iter()
        .zip(next)
        .map(|(c, n)| {
            let i = c.partition_point(|&(t, _)| t <= end);
            let committed = i.checked_sub(1).and_then(|i| c.get(i)).map_or(0, |s| s.1);
            n.saturating_sub(committed)
        })
        .sum()
}

/// Once the writers stopped: waits until `lag` is 0, no longer moves for 30 s, or
/// `limit` has passed, with progress on stderr.
pub(super) fn catch_up(lag: impl Fn() -> u64, acked: usize, start: Instant, limit: Duration) {
    let write_end = Instant::now();
    let at_end = lag();
    eprintln!(
        "  writers done: {acked} acknowledged in {:.1} s; mirror lag {at_end} records; draining",
        start.elapsed().as_secs_f64()
    );
    let (mut last, mut last_change) = (at_end, Instant::now());
    let mut tick = Instant::now();
    loop {
        let l = lag();
        if l == 0 {
            break;
        }
        if l != last {
            (last, last_change) = (l, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(30) {
            eprintln!("  no progress for 30 s at lag {l}; giving up");
            break;
        }
        if write_end.elapsed() > limit {
            eprintln!("  still {l} records behind after {limit:?}; giving up");
            break;
        }
        if tick.elapsed() >= Duration::from_secs(2) {
            tick = Instant::now();
            eprintln!(
                "  {:>5.1} s  mirror lag {l} records",
                start.elapsed().as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

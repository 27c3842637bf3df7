//! The log's background thread: commits for async waiters, syncs `Batch`/`None` records by
//! their deadline, rolls segments by age, and prepares the next zero-filled segment so a
//! roll on the write path only renames it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::space::CommitError;
use super::{lock, now_ms, Shared};
use crate::error::{Error, IoOp, Result};
use crate::segment::prepare_spare;

/// How often the thread looks at segment age when nothing wakes it.
const IDLE_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct BgState {
    notified: bool,
    stop: bool,
    want_spare: bool,
}

/// Wakes the background thread.
#[derive(Debug, Default)]
pub(crate) struct BgSignal {
    state: Mutex<BgState>,
    cv: Condvar,
}

impl BgSignal {
    pub(crate) fn notify(&self) {
        lock(&self.state).notified = true;
        self.cv.notify_one();
    }

    pub(crate) fn want_spare(&self) {
        let mut s = lock(&self.state);
        s.want_spare = true;
        s.notified = true;
        self.cv.notify_one();
    }

    pub(crate) fn stop(&self) {
        lock(&self.state).stop = true;
        self.cv.notify_one();
    }

    /// Waits for a notification or `timeout`; returns (stop, want_spare).
    fn wait(&self, timeout: Duration) -> (bool, bool) {
        let mut s = lock(&self.state);
        if !s.notified && !s.stop {
            s = self
                .cv
                .wait_timeout(s, timeout)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        s.notified = false;
        let spare = std::mem::take(&mut s.want_spare);
        (s.stop, spare)
    }
}

pub(crate) fn spawn(shared: Arc<Shared>) -> Result<JoinHandle<()>> {
    {
        let mut w = lock(&shared.writer);
        shared.want_spare_if_due(&mut w, false);
    }
    let dir = shared.dir.clone();
    thread::Builder::new()
        .name("wald-log-bg".into())
        .spawn(move || run(&shared))
        .map_err(|e| Error::io(IoOp::Open, dir, e))
}

fn run(shared: &Shared) {
    loop {
        let timeout = next_timeout(shared);
        let (stop, spare) = shared.bg.wait(timeout);
        if stop {
            return;
        }
        if lock(&shared.queue).poisoned.is_some() {
            continue;
        }
        // Records queued by async waiters and nobody leading: lead.
        let lead = {
            let mut q = lock(&shared.queue);
            if !q.leader && q.has_work() {
                q.leader = true;
                true
            } else {
                false
            }
        };
        if lead {
            shared.lead(None);
        }
        let (overdue, too_old) = match shared.writer.try_lock() {
            Ok(w) => (
                w.sync_deadline.is_some_and(|d| d <= Instant::now()),
                !w.active.is_empty()
                    && w.roll_retry_at.is_none_or(|t| t <= Instant::now())
                    && now_ms().saturating_sub(w.active.created_ms)
                        >= u64::try_from(shared.config.segment_max_age.as_millis())
                            .unwrap_or(u64::MAX),
            ),
            Err(_) => (false, false),
        };
        if overdue || too_old {
            if let Err(e) = shared.maintenance(too_old, overdue) {
                tracing::error!(dir = %shared.dir.display(), error = %e, "background sync/roll failed");
            }
        }
        if spare {
            make_spare(shared);
        }
    }
}

fn next_timeout(shared: &Shared) -> Duration {
    match shared.writer.try_lock() {
        Ok(w) => w.sync_deadline.map_or(IDLE_TICK, |d| {
            d.saturating_duration_since(Instant::now()).min(IDLE_TICK)
        }),
        Err(_) => IDLE_TICK,
    }
}

fn make_spare(shared: &Shared) {
    let bytes = {
        let w = lock(&shared.writer);
        if w.spare.is_some() {
            return;
        }
        // Sized for a roll by size: twice the active segment, up to `segment_bytes`.
        shared.config.next_segment_bytes(Some(w.active.capacity), 0)
    };
    match prepare_spare(shared.fs.as_ref(), &shared.dir, bytes) {
        Ok(spare) => lock(&shared.writer).spare = Some(spare),
        Err(e) => {
            // Not fatal: the next roll creates its segment itself (and is refused cleanly if
            // the disk is really full); the failed spare removed what it wrote.
            tracing::warn!(dir = %shared.dir.display(), error = %e, "could not prepare the next segment");
        }
    }
}

impl Shared {
    /// Takes leadership (waiting for the current leader), commits anything queued, then
    /// rolls and/or syncs.
    pub(crate) fn maintenance(&self, roll: bool, sync: bool) -> Result<()> {
        {
            let mut q = lock(&self.queue);
            loop {
                if let Some(cause) = &q.poisoned {
                    return Err(self.poison_error(cause));
                }
                if !q.leader {
                    q.leader = true;
                    break;
                }
                // The leader signals `lead_free` when it steps down; the timeout is a safety
                // net, not the mechanism.
                q.maintenance_waiters += 1;
                q = self
                    .lead_free
                    .wait_timeout(q, Duration::from_millis(50))
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
                q.maintenance_waiters -= 1;
            }
        }
        // Drain what is queued (as a leader without a ticket of its own).
        self.lead_keep(None);
        let result = {
            let mut w = lock(&self.writer);
            let mut r = Ok(());
            if roll && !w.active.is_empty() {
                r = self.roll_locked(&mut w, 0);
            }
            if r.is_ok() && sync {
                r = self.sync_locked(&mut w).map_err(CommitError::Fatal);
            }
            r
        };
        // A roll a full disk refused leaves the log writable (the old segment sealed, full).
        let result = match result {
            Ok(()) => Ok(()),
            Err(CommitError::Refused { error, .. }) => Err(error),
            Err(CommitError::Fatal(e)) => {
                self.poison(&e);
                Err(e)
            }
        };
        self.release_lead();
        let q = lock(&self.queue);
        match (&result, &q.poisoned) {
            (Ok(()), Some(cause)) => Err(self.poison_error(cause)),
            _ => result,
        }
    }
}

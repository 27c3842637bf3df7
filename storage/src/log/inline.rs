//! Inline commit: the group commit done by the event-loop thread that serves the requests,
//! at the end of its loop iteration, instead of by the log's background committer.
//!
//! A thread opts in with [`enable_on_this_thread`] (the service's I/O threads do, each
//! running a single-threaded async runtime). On such a thread, awaiting a [`Ticket`]
//! (`super::Ticket`) does not wake the background committer: it only notes the log as
//! pending here. When the thread's runtime has run every ready task and is about to wait for
//! I/O, it calls [`flush`] (the runtime's "before park" hook): for each pending log, the
//! thread commits everything queued — its own requests' records and any other thread's —
//! with one write and one `fdatasync`, completes the tickets and wakes their tasks, which
//! then run on this same thread. This is the event loop of a single-threaded server: read
//! every ready request, append, one fsync, answer them all; no thread hand-off on the
//! write path.
//!
//! When another thread leads the log's commit, `flush` waits for it to finish (its batch
//! may be carrying this thread's records) and leads the rest itself. While an inline thread
//! waits, the leader does not hand the queue to the background committer.
//!
//! The background committer stays the safety net: it still wakes on its idle tick and
//! commits records that nobody leads.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use super::ticket::{Slot, WakeChain};
use super::{lock, Shared};

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// Per log with records this thread is waiting for: its latest slot (the queue is FIFO:
    /// when the latest is complete, so are the earlier ones).
    static PENDING: RefCell<Vec<(Arc<Shared>, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

/// Makes awaited tickets on this thread commit inline, at [`flush`]. The thread must call
/// [`flush`] whenever it is about to block waiting for events (and before it exits).
pub fn enable_on_this_thread() {
    ENABLED.with(|e| e.set(true));
}

/// Whether this thread commits inline.
#[must_use]
pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Notes a log with an awaited ticket on this thread. Returns false when this thread does
/// not commit inline (the caller then wakes the background committer).
pub(crate) fn defer(shared: &Arc<Shared>, slot: &Arc<Slot>) -> bool {
    if !enabled() {
        return false;
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if let Some(e) = p.iter_mut().find(|(s, _)| Arc::ptr_eq(s, shared)) {
            e.1 = Arc::clone(slot);
        } else {
            p.push((Arc::clone(shared), Arc::clone(slot)));
        }
    });
    true
}

/// Commits, on this thread, every log with a ticket awaited here (see the module
/// documentation). Blocks for the writes and fsyncs. Returns the number of logs committed.
pub fn flush() -> usize {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let n = pending.len();
    for (shared, slot) in pending {
        shared.settle_inline(&slot);
    }
    n
}

impl Shared {
    /// Returns once `slot` is complete, leading commits as needed (never lingering: the
    /// writers a linger would wait for run on this very thread).
    fn settle_inline(&self, slot: &Arc<Slot>) {
        loop {
            if slot.is_complete() {
                return;
            }
            {
                let mut q = lock(&self.queue);
                if q.leader {
                    // Someone else leads (maybe with our records): wait for it to step down.
                    q.inline_waiters += 1;
                    q = self
                        .lead_free
                        .wait_timeout(q, Duration::from_millis(50))
                        .map_or_else(|e| e.into_inner().0, |(g, _)| g);
                    q.inline_waiters -= 1;
                    continue;
                }
                if !q.has_work() {
                    // Not queued and nobody leads: completed since the check above.
                    drop(q);
                    std::thread::yield_now();
                    continue;
                }
                q.leader = true;
            }
            self.lead_until(slot);
        }
    }

    /// Leads batches until `slot` completes; passes leadership on before waking the last
    /// batch's waiters. The caller has set `queue.leader`.
    fn lead_until(&self, slot: &Arc<Slot>) {
        let mut last: Option<Arc<WakeChain>> = None;
        {
            let mut w = lock(&self.writer);
            loop {
                // No linger: the writers it would wait for run on this very thread.
                let Some(batch) = self.next_batch(false) else {
                    break;
                };
                if batch.metas.is_empty() {
                    break;
                }
                let result = self.commit(&mut w, &batch);
                let chain = self.finish(&w, &batch, result, None);
                if let Some(c) = last.replace(chain) {
                    c.wake_next(usize::MAX);
                }
                if slot.is_complete() {
                    break;
                }
            }
        }
        self.release_lead();
        if let Some(c) = last {
            c.wake_next(usize::MAX);
        }
    }
}

//! Tickets: the handle an append returns, completed by the group-commit leader.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use super::Shared;
use crate::error::Result;

/// What a completed append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record of the append.
    pub first_offset: u64,
    /// Offset of the last record of the append.
    pub last_offset: u64,
    /// True when an fsync covering the records completed before the acknowledgement.
    pub synced: bool,
}

impl Appended {
    /// Number of records.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.last_offset - self.first_offset + 1
    }
}

/// Who to wake when the slot completes.
#[derive(Debug)]
pub(crate) enum Wake {
    Nobody,
    Thread(Thread),
    Task(Waker),
}

#[derive(Debug)]
pub(crate) struct SlotState {
    pub(crate) result: Option<Result<Appended>>,
    pub(crate) wake: Wake,
    /// Set by a finishing leader: the waiter should take over leadership.
    pub(crate) lead: bool,
    /// The wake-up chain of the batch that completed this slot: a woken waiter wakes the
    /// next ones, so a batch's followers are woken as a tree, in parallel, not one by one
    /// by the leader.
    pub(crate) chain: Option<Arc<WakeChain>>,
    /// The result was taken by the ticket's owner.
    pub(crate) taken: bool,
}

/// The waiters of one completed batch, woken in a fan-out.
#[derive(Debug)]
pub(crate) struct WakeChain {
    wakes: Vec<Wake>,
    next: AtomicUsize,
}

/// How many threads each woken waiter wakes in turn.
pub(crate) const WAKE_FANOUT: usize = 2;

impl WakeChain {
    pub(crate) fn new(wakes: Vec<Wake>) -> Arc<Self> {
        Arc::new(Self {
            wakes,
            next: AtomicUsize::new(0),
        })
    }

    /// Wakes up to `threads` blocked threads (and every async task met on the way, whose
    /// wake is cheap and who will not continue the chain).
    pub(crate) fn wake_next(&self, threads: usize) {
        let mut woken = 0;
        while woken < threads {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            let Some(w) = self.wakes.get(i) else { return };
            match w {
                Wake::Thread(t) => {
                    t.unpark();
                    woken += 1;
                }
                Wake::Task(waker) => waker.wake_by_ref(),
                Wake::Nobody => {}
            }
        }
    }
}

/// The completion cell of one append, shared by its ticket and the queue.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState {
                result: None,
                wake: Wake::Nobody,
                lead: false,
                chain: None,
                taken: false,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the result is in (taken or not).
    pub(crate) fn is_complete(&self) -> bool {
        let s = self.lock();
        s.result.is_some() || s.taken
    }

    /// Stores the result and returns whom to wake (outside any lock).
    pub(crate) fn complete(&self, result: Result<Appended>) -> Wake {
        let mut s = self.lock();
        s.result = Some(result);
        std::mem::replace(&mut s.wake, Wake::Nobody)
    }

    /// Takes whom to wake, before the result is published (to build a chain).
    pub(crate) fn take_wake(&self) -> Wake {
        std::mem::replace(&mut self.lock().wake, Wake::Nobody)
    }

    /// Publishes the result together with the batch's wake chain.
    pub(crate) fn publish(&self, result: Result<Appended>, chain: &Arc<WakeChain>) {
        let mut s = self.lock();
        s.result = Some(result);
        s.chain = Some(Arc::clone(chain));
    }

    /// Asks a blocked waiter to take over leadership; returns whom to wake.
    pub(crate) fn hand_lead(&self) -> Option<Thread> {
        let mut s = self.lock();
        if s.result.is_some() {
            return None;
        }
        match &s.wake {
            Wake::Thread(t) => {
                let t = t.clone();
                s.lead = true;
                Some(t)
            }
            _ => None,
        }
    }
}

impl Wake {
    pub(crate) fn wake(self) {
        match self {
            Self::Nobody => {}
            Self::Thread(t) => t.unpark(),
            Self::Task(w) => w.wake(),
        }
    }
}

/// The pending result of an append. Wait for it with [`Ticket::wait`] (blocking: the
/// calling thread may itself perform the group commit, with no thread hand-off) or
/// `.await` it (the log's background committer performs the commit).
#[derive(Debug)]
#[must_use = "an append is not acknowledged until its ticket completes"]
pub struct Ticket {
    pub(crate) slot: Arc<Slot>,
    pub(crate) shared: Arc<Shared>,
}

impl Ticket {
    /// Blocks until the records are durable under their durability, committing as the
    /// group-commit leader when no other thread is.
    ///
    /// # Errors
    /// The failure of the batch (the log is then poisoned), or `Poisoned` / `Closed`.
    pub fn wait(self) -> Result<Appended> {
        self.shared.wait_blocking(&self.slot)
    }

    /// Starts the commit of this ticket's records without waiting for it: on an
    /// inline-commit thread it is noted for the thread's next flush, elsewhere the
    /// background committer is woken. (Awaiting a ticket does this; call it for tickets
    /// that are awaited one after another, so that they share one commit.)
    pub fn schedule(&self) {
        if !super::inline::defer(&self.shared, &self.slot) {
            self.shared.ensure_committer();
        }
    }

    /// A handle that sees this append's result without taking it.
    #[must_use]
    pub fn completion(&self) -> Completion {
        Completion(Arc::clone(&self.slot))
    }

    /// The result when already complete, without blocking.
    #[must_use]
    pub fn try_result(&self) -> Option<Result<Appended>> {
        let s = self.slot.lock();
        s.result.as_ref().map(|r| match r {
            Ok(a) => Ok(*a),
            Err(e) => Err(super::clone_error(e)),
        })
    }
}

/// Sees an append's result without taking it (for work that must happen after the commit
/// and before the ticket's owner acts on it, e.g. indexing a whole loop iteration's appends
/// at once).
#[derive(Debug, Clone)]
pub struct Completion(Arc<Slot>);

impl Completion {
    /// `Some(Ok(appended))` / `Some(Err(()))` once complete and until the ticket's owner takes
    /// the result; `None` before, and after it was taken.
    #[must_use]
    pub fn peek(&self) -> Option<std::result::Result<Appended, ()>> {
        let s = self.0.lock();
        s.result
            .as_ref()
            .map(|r| r.as_ref().map(|a| *a).map_err(|_| ()))
    }

    /// Whether the result is in (taken or not).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.0.is_complete()
    }
}

impl Future for Ticket {
    type Output = Result<Appended>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut s = self.slot.lock();
            if let Some(r) = s.result.take() {
                s.taken = true;
                return Poll::Ready(r);
            }
            s.wake = Wake::Task(cx.waker().clone());
        }
        // On an inline-commit thread the commit happens when its event loop goes idle;
        // elsewhere the background committer does it.
        if !super::inline::defer(&self.shared, &self.slot) {
            self.shared.ensure_committer();
        }
        Poll::Pending
    }
}

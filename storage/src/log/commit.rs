//! Group commit: a bounded queue of encoded records and a leader that writes a whole batch
//! with one write and covers it with one `fdatasync`.
//!
//! There is no dedicated committer on the blocking path: the first waiting thread that
//! finds no leader becomes the leader and commits everything queued — its own record
//! and every follower's — then completes the followers. A lone writer therefore does its
//! own write and fsync with no thread hand-off at all. When a leader is done and records
//! are still queued, it hands leadership to a waiter of those records (who had to be woken
//! anyway) or, when only async tickets wait, to the background committer.
//!
//! An I/O error on the write path is fatal and sticky: the batch's waiters and every
//! queued waiter fail with `Poisoned`, and every later append is refused. An fsync is
//! never retried (after a failed fsync the page cache may have dropped the dirty pages).
//! One exception, a full disk before any byte of a batch reached the log (the next segment
//! could not be created, or a write was refused and taken back): the batch and everything
//! queued behind it fail with the ENOSPC error, their offsets are given back, and the log
//! stays writable — it takes writes again as soon as space returns.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::space::{CommitError, Units};
use super::ticket::{Appended, Slot, Wake, WakeChain, WAKE_FANOUT};
use super::{lock, write, Shared, Writer};
use crate::config::Durability;
use crate::error::{Error, IoOp, PoisonCause, Result};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::Record;

/// One queued record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) offset: u64,
    /// Position of the record in the queue buffer (or batch buffer).
    pub(crate) pos: usize,
    pub(crate) len: usize,
    pub(crate) ts: u64,
}

/// One queued append (one ticket).
#[derive(Debug)]
pub(crate) struct PendingTicket {
    pub(crate) slot: Arc<Slot>,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) durability: Durability,
}

/// The bounded append queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) buf: Vec<u8>,
    pub(crate) metas: VecDeque<Meta>,
    pub(crate) tickets: VecDeque<PendingTicket>,
    pub(crate) next_offset: u64,
    pub(crate) last_ts: u64,
    pub(crate) leader: bool,
    pub(crate) poisoned: Option<Arc<PoisonCause>>,
    pub(crate) closed: bool,
    /// Bytes of `buf` before this position were already taken by a leader.
    pub(crate) head: usize,
    /// Appenders blocked on a full queue.
    pub(crate) space_waiters: usize,
    /// Maintenance calls waiting for the leader to step down (see `Shared::lead_free`).
    pub(crate) maintenance_waiters: usize,
    /// Inline committers waiting for the leader to step down (they lead what is left).
    pub(crate) inline_waiters: usize,
    /// Tickets completed by the previous batch: about how many writers will come back.
    pub(crate) prev_batch_tickets: usize,
    /// A leader is lingering until this many tickets are queued.
    pub(crate) linger_target: Option<usize>,
}

/// Records taken from the queue by a leader.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) metas: Vec<Meta>,
    pub(crate) tickets: Vec<PendingTicket>,
    /// Some completed ticket asked for `Sync`.
    pub(crate) sync: bool,
    /// The earliest sync deadline a `Batch` ticket asked for.
    pub(crate) deadline: Option<Duration>,
    /// Its first record is a ticket's first (not the rest of a ticket a previous batch
    /// began: `max_batch_bytes` can cut a large ticket's records over several batches).
    pub(crate) starts_ticket: bool,
}

impl Queue {
    pub(crate) fn new(next_offset: u64, last_ts: u64) -> Self {
        Self {
            buf: Vec::new(),
            metas: VecDeque::new(),
            tickets: VecDeque::new(),
            next_offset,
            last_ts,
            leader: false,
            poisoned: None,
            closed: false,
            head: 0,
            space_waiters: 0,
            maintenance_waiters: 0,
            inline_waiters: 0,
            prev_batch_tickets: 0,
            linger_target: None,
        }
    }

    pub(crate) fn check_open(&self, dir: &Path) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned {
                dir: dir.to_path_buf(),
                cause: Arc::clone(cause),
            });
        }
        if self.closed {
            return Err(Error::Closed {
                dir: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    pub(crate) fn has_work(&self) -> bool {
        !self.metas.is_empty()
    }

    /// Bytes queued and not yet taken.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when a lingering leader is waiting for exactly this arrival.
    pub(crate) fn arrival_completes_linger(&self) -> bool {
        self.linger_target.is_some_and(|t| self.tickets.len() >= t)
    }

    /// Encodes records at the next offsets (sizes were checked by the caller).
    pub(crate) fn push(
        &mut self,
        records: &[Record],
        durability: Durability,
        slot: Arc<Slot>,
        now: u64,
    ) {
        // Timestamps never go backwards in log order, whatever the wall clock does.
        let ts = now.max(self.last_ts);
        self.last_ts = ts;
        let first = self.next_offset;
        for r in records {
            let pos = self.buf.len();
            let len = r
                .encode_into(self.next_offset, ts, &mut self.buf)
                .unwrap_or(0);
            self.metas.push_back(Meta {
                offset: self.next_offset,
                pos,
                len,
                ts,
            });
            self.next_offset += 1;
        }
        self.tickets.push_back(PendingTicket {
            slot,
            first,
            last: self.next_offset - 1,
            durability,
        });
    }

    /// Takes up to `max_bytes` of records (at least one) and the tickets they complete.
    pub(crate) fn take(&mut self, max_bytes: usize) -> Batch {
        let mut n = 0;
        let mut bytes = 0usize;
        for m in &self.metas {
            if n > 0 && bytes + m.len > max_bytes {
                break;
            }
            bytes += m.len;
            n += 1;
        }
        if n == 0 {
            return Batch::default();
        }
        let mut metas: Vec<Meta> = self.metas.drain(..n).collect();
        let data = if self.metas.is_empty() {
            // Everything: hand over the buffer itself (positions stay as they are).
            self.head = 0;
            std::mem::take(&mut self.buf)
        } else {
            // A prefix (the batch hit `max_batch_bytes`): copy it out and move the head,
            // never copying what stays queued; compact only when the dead prefix is large.
            let data = self.buf[self.head..self.head + bytes].to_vec();
            for m in &mut metas {
                m.pos -= self.head;
            }
            self.head += bytes;
            if self.head > (1 << 20) && self.head * 2 > self.buf.len() {
                self.buf.drain(..self.head);
                for m in &mut self.metas {
                    m.pos -= self.head;
                }
                self.head = 0;
            }
            data
        };
        let last = metas.last().map_or(0, |m| m.offset);
        let starts_ticket = self
            .tickets
            .front()
            .is_some_and(|t| metas.first().is_some_and(|m| m.offset == t.first));
        let mut batch = Batch {
            bytes: data,
            metas,
            starts_ticket,
            ..Batch::default()
        };
        while self.tickets.front().is_some_and(|t| t.last <= last) {
            if let Some(t) = self.tickets.pop_front() {
                match t.durability {
                    Durability::Sync => batch.sync = true,
                    Durability::Batch { max_delay } => {
                        batch.deadline =
                            Some(batch.deadline.map_or(max_delay, |d| d.min(max_delay)));
                    }
                    Durability::None => {}
                }
                batch.tickets.push(t);
            }
        }
        batch
    }

    /// Picks who leads next: a blocked waiter of a queued ticket (it must be woken anyway)
    /// or, failing that, the background committer. Returns the thread to unpark.
    fn successor(&self) -> Option<thread::Thread> {
        self.tickets.iter().find_map(|t| t.slot.hand_lead())
    }
}

fn cause_of(e: &Error) -> PoisonCause {
    match e {
        Error::Io { op, path, source } => PoisonCause {
            op: *op,
            path: path.clone(),
            kind: source.kind(),
            message: source.to_string(),
            raw_os_error: source.raw_os_error(),
        },
        other => PoisonCause {
            op: IoOp::Write,
            path: std::path::PathBuf::new(),
            kind: std::io::ErrorKind::Other,
            message: other.to_string(),
            raw_os_error: None,
        },
    }
}

impl Shared {
    /// Blocks until `slot` completes, leading the group commit when nobody else is.
    pub(crate) fn wait_blocking(&self, slot: &Arc<Slot>) -> Result<super::Appended> {
        loop {
            {
                let mut s = slot.lock();
                if let Some(r) = s.result.take() {
                    s.taken = true;
                    let chain = s.chain.take();
                    drop(s);
                    // Pass the wake-up on: this batch's waiters are woken as a tree.
                    if let Some(c) = chain {
                        c.wake_next(WAKE_FANOUT);
                    }
                    return r;
                }
                s.lead = false;
                s.wake = Wake::Thread(thread::current());
            }
            let lead = {
                let mut q = lock(&self.queue);
                if !q.leader && q.has_work() {
                    q.leader = true;
                    true
                } else {
                    false
                }
            };
            if lead {
                self.lead(Some(slot));
                continue;
            }
            // Parked until completed or handed the lead. The timeout is a safety net only.
            loop {
                thread::park_timeout(Duration::from_millis(100));
                let s = slot.lock();
                if s.result.is_some() || s.lead {
                    break;
                }
                drop(s);
                let q = lock(&self.queue);
                if !q.leader && q.has_work() {
                    break;
                }
            }
        }
    }

    /// Makes sure someone commits for async waiters: wakes the background committer when
    /// records are queued and nobody leads.
    pub(crate) fn ensure_committer(&self) {
        let q = lock(&self.queue);
        if !q.leader && q.has_work() {
            drop(q);
            self.bg.notify();
        }
    }

    /// Leads: commits batches until `own` completes (or the queue is empty when `own` is
    /// `None`), then passes leadership on — before waking the last batch's waiters, so the
    /// next batch starts while they are being woken. The caller has set `queue.leader`.
    pub(crate) fn lead(&self, own: Option<&Arc<Slot>>) {
        let chain = self.lead_loop(own);
        self.release_lead();
        if let Some(c) = chain {
            c.wake_next(WAKE_FANOUT);
        }
    }

    /// The batch loop of [`Shared::lead`], keeping leadership afterwards.
    pub(crate) fn lead_keep(&self, own: Option<&Arc<Slot>>) {
        if let Some(c) = self.lead_loop(own) {
            c.wake_next(usize::MAX);
        }
    }

    /// Commits batches until `own` completes (or nothing is queued). Returns the wake chain
    /// of the last batch, not yet started.
    fn lead_loop(&self, own: Option<&Arc<Slot>>) -> Option<Arc<WakeChain>> {
        let mut w = lock(&self.writer);
        loop {
            let batch = self.next_batch(true)?;
            if batch.metas.is_empty() {
                return None;
            }
            let result = self.commit(&mut w, &batch);
            let chain = self.finish(&w, &batch, result, own);
            if own.is_some_and(|s| s.lock().result.is_some()) {
                // Done: the caller releases leadership first, then starts this chain.
                return Some(chain);
            }
            // Leading on: wake this batch's waiters now, so the next batch (and its
            // linger) sees them come back.
            chain.wake_next(usize::MAX);
        }
    }

    /// The next batch to commit (after a linger when `linger`), or `None` when the log is
    /// poisoned (every queued waiter is then failed and woken).
    pub(crate) fn next_batch(&self, linger: bool) -> Option<Batch> {
        let mut q = lock(&self.queue);
        if let Some(cause) = q.poisoned.clone() {
            let err = self.poison_error(&cause);
            let wakes = fail_all(&mut q, &err);
            drop(q);
            wakes.into_iter().for_each(Wake::wake);
            return None;
        }
        if linger {
            q = self.linger(q);
        }
        let b = q.take(self.config.max_batch_bytes);
        q.prev_batch_tickets = b.tickets.len();
        Some(b)
    }

    /// Waits, briefly, for the writers of the previous batch to come back before taking the
    /// next one, so that they ride this fsync instead of the next (without it, two half-size
    /// groups alternate). Bounded by the recent fsync latency (at most 2 ms); no wait for a
    /// lone writer.
    fn linger<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let expected = q.prev_batch_tickets;
        if expected < 2 || q.tickets.is_empty() {
            return q;
        }
        let target = (expected * 9).div_ceil(10);
        if q.tickets.len() >= target {
            return q;
        }
        let budget =
            Duration::from_nanos(self.fsync_ewma_ns.load(Ordering::Relaxed).min(2_000_000));
        let deadline = Instant::now() + budget;
        q.linger_target = Some(target);
        while q.tickets.len() < target && q.poisoned.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = self
                .arrivals
                .wait_timeout(q, deadline - now)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        q.linger_target = None;
        q
    }

    /// Poisons the log after a write-path failure: fails everything queued.
    pub(crate) fn poison(&self, e: &Error) {
        let wakes = {
            let mut q = lock(&self.queue);
            if q.poisoned.is_some() {
                return;
            }
            let cause = Arc::new(cause_of(e));
            tracing::error!(dir = %self.dir.display(), error = %e, "write path failed: the log is poisoned");
            let err = self.poison_error(&cause);
            q.poisoned = Some(cause);
            fail_all(&mut q, &err)
        };
        wakes.into_iter().for_each(Wake::wake);
    }

    /// Gives up leadership and wakes a successor when work remains.
    pub(crate) fn release_lead(&self) {
        let mut q = lock(&self.queue);
        q.leader = false;
        // An inline committer waiting to lead takes what is left; else a blocked waiter or
        // the background committer.
        let inline_waiters = q.inline_waiters > 0;
        let next = if q.has_work() && !inline_waiters {
            Some(q.successor())
        } else {
            None
        };
        let space_waiters = q.space_waiters > 0;
        let maintenance_waiters = q.maintenance_waiters > 0 || inline_waiters;
        drop(q);
        if space_waiters {
            self.space.notify_all();
        }
        if maintenance_waiters {
            self.lead_free.notify_all();
        }
        match next {
            Some(Some(t)) => t.unpark(),
            Some(None) => self.bg.notify(),
            None => {}
        }
    }

    /// Writes a batch (rolling segments as needed) and syncs it when asked.
    /// Returns whether an fsync covered it.
    ///
    /// A ticket's records go into one segment whenever they fit one: the segment is rolled
    /// at the ticket's start, so that a full disk refusing the next segment cuts the batch
    /// between tickets (those before are written and synced, those after refused whole).
    pub(crate) fn commit(&self, w: &mut Writer, batch: &Batch) -> Result<bool, CommitError> {
        let metas = &batch.metas;
        let mut units = Units::new(batch);
        let mut i = 0;
        while i < metas.len() {
            let unit = units.at(i);
            let need = if unit.bytes + SEGMENT_HEADER_LEN as u64 <= self.config.segment_bytes {
                unit.bytes
            } else {
                metas[i].len as u64
            };
            if w.active.remaining() < need {
                self.make_room(w, need)
                    .map_err(|e| self.refused_at(w, e, i, unit.clean))?;
            }
            // Whole units while they fit; a unit larger than a segment, record by record.
            let start = metas[i].pos;
            let room = w.active.remaining();
            let fits = |j: usize| (metas[j].pos + metas[j].len - start) as u64 <= room;
            let mut j = i;
            let mut next = unit;
            while next.end > j && fits(next.end - 1) {
                j = next.end;
                if j == metas.len() {
                    break;
                }
                next = units.at(j);
            }
            if j == i {
                while j < unit.end && fits(j) {
                    j += 1;
                }
            }
            let parts: Vec<(u64, usize, u64)> = metas[i..j]
                .iter()
                .map(|m| (m.offset, m.pos - start, m.ts))
                .collect();
            let end = metas[j - 1].pos + metas[j - 1].len;
            if let Err(e) = w.active.write(&batch.bytes[start..end], &parts) {
                let e = self.take_back(w, e, (end - start) as u64);
                return Err(self.refused_at(w, e, i, unit.clean));
            }
            w.unsynced = true;
            i = j;
        }
        self.want_spare_if_due(w, false);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let overdue = w.sync_deadline.is_some_and(|d| d <= now);
        if batch.sync || overdue {
            self.sync_locked(w).map_err(CommitError::Fatal)?;
            if let Some(o) = self.observer.get() {
                o.committed(metas.len(), batch.bytes.len(), Some(now.elapsed()));
            }
            return Ok(true);
        }
        if let Some(o) = self.observer.get() {
            o.committed(metas.len(), batch.bytes.len(), None);
        }
        let limit = batch
            .deadline
            .unwrap_or(self.config.background_sync_interval);
        let due = now + limit.min(self.config.background_sync_interval);
        w.sync_deadline = Some(w.sync_deadline.map_or(due, |d| d.min(due)));
        self.bg.notify();
        Ok(false)
    }

    /// `fdatasync` of the active segment (a no-op when nothing is unsynced).
    pub(crate) fn sync_locked(&self, w: &mut Writer) -> Result<()> {
        if !w.unsynced {
            return Ok(());
        }
        let t = Instant::now();
        w.active.sync()?;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters
            .fsync_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        let old = self.fsync_ewma_ns.load(Ordering::Relaxed);
        let ewma = if old == 0 {
            nanos
        } else {
            (old * 7 + nanos) / 8
        };
        self.fsync_ewma_ns.store(ewma, Ordering::Relaxed);
        w.unsynced = false;
        w.sync_deadline = None;
        Ok(())
    }

    /// Publishes a committed batch to readers and completes its tickets; on failure poisons
    /// the log and fails the batch and everything queued. Returns the batch's wake chain
    /// (`own`, the leader's slot, is completed but not in it: the leader is awake).
    pub(crate) fn finish(
        &self,
        w: &Writer,
        batch: &Batch,
        result: Result<bool, CommitError>,
        own: Option<&Arc<Slot>>,
    ) -> Arc<WakeChain> {
        // Records from this offset on were not written (all of them but on a refusal).
        let (written_to, outcome) = match result {
            Ok(synced) => (u64::MAX, Ok(synced)),
            Err(CommitError::Refused { error, at }) => {
                self.counters.disk_full.fetch_add(1, Ordering::Relaxed);
                let cut = batch.metas.get(at).map_or(u64::MAX, |m| m.offset);
                self.refuse(cut, batch.metas.len() - at, &error);
                (cut, Err(error))
            }
            Err(CommitError::Fatal(e)) => {
                self.poison(&e);
                let cause = lock(&self.queue)
                    .poisoned
                    .clone()
                    .unwrap_or_else(|| Arc::new(cause_of(&e)));
                (0, Err(self.poison_error(&cause)))
            }
        };
        let written = batch
            .metas
            .iter()
            .take_while(|m| m.offset < written_to)
            .count();
        if written > 0 {
            self.publish(w, &batch.metas[..written]);
        }
        let is_own = |t: &PendingTicket| own.is_some_and(|o| Arc::ptr_eq(o, &t.slot));
        let wakes: Vec<Wake> = batch
            .tickets
            .iter()
            .filter(|t| !is_own(t))
            .map(|t| t.slot.take_wake())
            .collect();
        let chain = WakeChain::new(wakes);
        for t in &batch.tickets {
            let r = match &outcome {
                Ok(synced) => Ok(Appended {
                    first_offset: t.first,
                    last_offset: t.last,
                    synced: *synced,
                }),
                // Written before a full disk refused the rest: written and synced.
                Err(_) if t.last < written_to => Ok(Appended {
                    first_offset: t.first,
                    last_offset: t.last,
                    synced: true,
                }),
                Err(e) => Err(super::clone_error(e)),
            };
            t.slot.publish(r, &chain);
        }
        chain
    }
}

impl Shared {
    /// Shows written records to readers and counts them.
    fn publish(&self, w: &Writer, metas: &[Meta]) {
        if let Some(last) = metas.last() {
            let mut v = write(&self.view);
            v.visible_next = last.offset + 1;
            v.visible_end = w.active.write_pos;
            if v.active_first_ts == 0 && !w.active.is_empty() {
                v.active_first_ts = w
                    .active
                    .shared
                    .index
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .first()
                    .map_or(0, |e| e.timestamp_ms);
            }
        }
        let bytes: usize = metas.iter().map(|m| m.len).sum();
        self.counters
            .records
            .fetch_add(metas.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Fails every queued ticket with `err` and empties the queue.
pub(crate) fn fail_all(q: &mut super::commit::Queue, err: &Error) -> Vec<Wake> {
    q.buf.clear();
    q.metas.clear();
    q.head = 0;
    q.tickets
        .drain(..)
        .map(|t| t.slot.complete(Err(super::clone_error(err))))
        .collect()
}

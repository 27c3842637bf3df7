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

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::ticket::{Appended, Slot, Wake};
use super::{lock, now_ms, write, Shared, Writer};
use crate::config::Durability;
use crate::error::{Error, IoOp, PoisonCause, Result};
use crate::format::record::Record;
use crate::segment::Active;

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
    fn take(&mut self, max_bytes: usize) -> Batch {
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
        let metas: Vec<Meta> = self.metas.drain(..n).collect();
        let data = if self.metas.is_empty() {
            std::mem::take(&mut self.buf)
        } else {
            let tail = self.buf.split_off(bytes);
            let head = std::mem::replace(&mut self.buf, tail);
            for m in &mut self.metas {
                m.pos -= bytes;
            }
            head
        };
        let last = metas.last().map_or(0, |m| m.offset);
        let mut batch = Batch {
            bytes: data,
            metas,
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
    /// `None`), then passes leadership on. The caller has set `queue.leader`.
    pub(crate) fn lead(&self, own: Option<&Arc<Slot>>) {
        self.lead_keep(own);
        self.release_lead();
    }

    /// The batch loop of [`Shared::lead`], keeping leadership afterwards.
    pub(crate) fn lead_keep(&self, own: Option<&Arc<Slot>>) {
        let mut w = lock(&self.writer);
        loop {
            let batch = {
                let mut q = lock(&self.queue);
                if let Some(cause) = q.poisoned.clone() {
                    let err = self.poison_error(&cause);
                    let wakes = fail_all(&mut q, &err);
                    drop(q);
                    wakes.into_iter().for_each(Wake::wake);
                    break;
                }
                q.take(self.config.max_batch_bytes)
            };
            if batch.metas.is_empty() {
                break;
            }
            let result = self.commit(&mut w, &batch);
            let wakes = self.finish(&w, batch, result);
            wakes.into_iter().for_each(Wake::wake);
            if own.is_some_and(|s| s.lock().result.is_some()) {
                break;
            }
        }
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
        let next = if q.has_work() {
            Some(q.successor())
        } else {
            None
        };
        drop(q);
        self.space.notify_all();
        match next {
            Some(Some(t)) => t.unpark(),
            Some(None) => self.bg.notify(),
            None => {}
        }
    }

    /// Writes a batch (rolling segments as needed) and syncs it when asked.
    /// Returns whether an fsync covered it.
    fn commit(&self, w: &mut Writer, batch: &Batch) -> Result<bool> {
        let metas = &batch.metas;
        let mut i = 0;
        while i < metas.len() {
            if w.active.remaining() < metas[i].len as u64 {
                self.roll_locked(w)?;
            }
            let start = metas[i].pos;
            let room = w.active.remaining();
            let mut j = i;
            let mut end = start;
            let mut parts = Vec::new();
            while j < metas.len() && (metas[j].pos + metas[j].len - start) as u64 <= room {
                parts.push((metas[j].offset, metas[j].pos - start, metas[j].ts));
                end = metas[j].pos + metas[j].len;
                j += 1;
            }
            w.active.write(&batch.bytes[start..end], &parts)?;
            w.unsynced = true;
            i = j;
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let overdue = w.sync_deadline.is_some_and(|d| d <= now);
        if batch.sync || overdue {
            self.sync_locked(w)?;
            return Ok(true);
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
        w.unsynced = false;
        w.sync_deadline = None;
        Ok(())
    }

    /// Seals the active segment and starts the next one (from the spare when ready).
    pub(crate) fn roll_locked(&self, w: &mut Writer) -> Result<()> {
        let next = w.active.next_offset;
        // Seal (sync, truncate, fsync) before the next segment exists: at no moment is there
        // a newer segment next to an unfinished older one.
        let sealed = Arc::new(w.active.seal(self.fs.as_ref())?);
        let spare = w.spare.take();
        w.active = Active::create(
            self.fs.as_ref(),
            &self.dir,
            &self.config,
            next,
            now_ms(),
            spare,
        )?;
        w.unsynced = false;
        w.sync_deadline = None;
        {
            let mut v = write(&self.view);
            v.sealed.push(sealed);
            v.active = Arc::clone(&w.active.shared);
            v.visible_end = w.active.write_pos;
            v.active_first_ts = 0;
        }
        self.counters.rolls.fetch_add(1, Ordering::Relaxed);
        self.bg.want_spare();
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled to a new segment");
        Ok(())
    }

    /// Publishes a committed batch to readers and completes its tickets; on failure poisons
    /// the log and fails the batch and everything queued. Returns whom to wake.
    fn finish(&self, w: &Writer, batch: Batch, result: Result<bool>) -> Vec<Wake> {
        let mut wakes = Vec::with_capacity(batch.tickets.len());
        match result {
            Ok(synced) => {
                if let Some(last) = batch.metas.last() {
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
                self.counters
                    .records
                    .fetch_add(batch.metas.len() as u64, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
                for t in batch.tickets {
                    let done = Appended {
                        first_offset: t.first,
                        last_offset: t.last,
                        synced,
                    };
                    wakes.push(t.slot.complete(Ok(done)));
                }
            }
            Err(e) => {
                self.poison(&e);
                let cause = lock(&self.queue)
                    .poisoned
                    .clone()
                    .unwrap_or_else(|| Arc::new(cause_of(&e)));
                let err = self.poison_error(&cause);
                for t in batch.tickets {
                    wakes.push(t.slot.complete(Err(super::clone_error(&err))));
                }
            }
        }
        wakes
    }
}

/// Fails every queued ticket with `err` and empties the queue.
fn fail_all(q: &mut super::commit::Queue, err: &Error) -> Vec<Wake> {
    q.buf.clear();
    q.metas.clear();
    q.tickets
        .drain(..)
        .map(|t| t.slot.complete(Err(super::clone_error(err))))
        .collect()
}

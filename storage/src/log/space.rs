//! Room for records: growing an empty segment, rolling to the next one (sized to the
//! traffic, from the spare when one is ready), and a full disk.
//!
//! A full disk is the one write-path failure the log survives, and only when it left nothing
//! behind: the next segment could not be created (its files are removed), or a write was
//! refused and taken back (zeros over it, or the file cut back to its data). The batch is
//! then cut between two tickets — those before are written and synced, those from the cut
//! on fail with the ENOSPC error, with everything queued behind them — and their offsets are
//! given back. The log stays writable and takes writes again as soon as space returns. Any
//! other failure (an fsync above all: it may have dropped acknowledged pages) poisons it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::{fail_all, Batch};
use super::ticket::Wake;
use super::{lock, now_ms, write, Shared, Writer};
use crate::config::Preallocate;
use crate::error::{Error, IoOp};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::segment::Active;

/// How long a segment roll refused for a full disk waits before the background thread tries
/// an age roll again (a write tries at once).
const ROLL_RETRY: Duration = Duration::from_secs(1);

/// Why a batch (or a roll) failed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// The disk is full: records `at..` of the batch were not written (those before were, and
    /// are synced). The log stays writable.
    Refused {
        /// The ENOSPC error.
        error: Error,
        /// Index in the batch of the first record not written.
        at: usize,
    },
    /// Anything else: the log is poisoned.
    Fatal(Error),
}

impl CommitError {
    /// A full disk refused a step that left nothing behind (never an fsync: a failed fsync
    /// may have dropped acknowledged pages, and is never survived).
    pub(crate) fn classify(e: Error) -> Self {
        let sync = matches!(
            e,
            Error::Io {
                op: IoOp::Sync | IoOp::SyncDir,
                ..
            }
        );
        if !sync && e.is_disk_full() {
            Self::Refused { error: e, at: 0 }
        } else {
            Self::Fatal(e)
        }
    }
}

/// The rest of one ticket's records in a batch, from some record on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    /// Index after its last record in the batch.
    pub(crate) end: usize,
    /// Its encoded bytes.
    pub(crate) bytes: u64,
    /// It starts at its ticket's first record: a cut here splits no ticket.
    pub(crate) clean: bool,
}

/// Walks a batch's records ticket by ticket.
pub(crate) struct Units<'a> {
    batch: &'a Batch,
    tk: usize,
}

impl<'a> Units<'a> {
    pub(crate) fn new(batch: &'a Batch) -> Self {
        Self { batch, tk: 0 }
    }

    /// The unit that record `i` starts (indexes only move forward).
    pub(crate) fn at(&mut self, i: usize) -> Unit {
        let metas = &self.batch.metas;
        let tickets = &self.batch.tickets;
        let base = metas[0].offset;
        let off = metas[i].offset;
        while self.tk < tickets.len() && tickets[self.tk].last < off {
            self.tk += 1;
        }
        let (end, clean) = match tickets.get(self.tk) {
            Some(t) if t.first <= off => (
                usize::try_from(t.last - base).map_or(metas.len(), |k| k + 1),
                t.first == off,
            ),
            // The first records of a ticket still queued (its last one is in a later
            // batch): it starts here when a ticket of this batch ends just before, or when
            // it is the batch's first and the batch starts a ticket.
            _ => (
                metas.len(),
                if self.tk == 0 {
                    i == 0 && self.batch.starts_ticket
                } else {
                    tickets.get(self.tk - 1).is_some_and(|t| t.last + 1 == off)
                },
            ),
        };
        let last = &metas[end - 1];
        Unit {
            end,
            bytes: (last.pos + last.len - metas[i].pos) as u64,
            clean,
        }
    }
}

impl Shared {
    /// Room for `need` bytes: an empty preallocated segment grows in place (a partition's
    /// first record may be larger than its small first segment), any other is rolled.
    pub(crate) fn make_room(&self, w: &mut Writer, need: u64) -> Result<(), CommitError> {
        if w.active.is_empty() && self.config.preallocate == Preallocate::ZeroFill {
            let capacity = SEGMENT_HEADER_LEN as u64 + need;
            return w.active.grow(capacity).map_err(CommitError::classify);
        }
        self.roll_locked(w, need)
    }

    /// After a failed write: a full disk is taken back (so a crash can never leave the
    /// refused records readable); anything else, or a failed take-back, poisons.
    pub(crate) fn take_back(&self, w: &mut Writer, e: Error, len: u64) -> CommitError {
        match CommitError::classify(e) {
            CommitError::Refused { error, at } => {
                match w.active.undo_write(len, self.config.preallocate) {
                    Ok(()) => {
                        // The take-back is made durable by the cut's fsync (`refused_at`), so a
                        // power loss cannot bring back refused bytes the kernel had already
                        // written out.
                        w.unsynced = true;
                        CommitError::Refused { error, at }
                    }
                    Err(undo) => {
                        tracing::error!(dir = %self.dir.display(), error = %undo, "could not take back a refused write");
                        CommitError::Fatal(error)
                    }
                }
            }
            fatal @ CommitError::Fatal(_) => fatal,
        }
    }

    /// A refusal at record `i`: kept only where it splits no ticket (`clean`), after what
    /// the batch wrote before it is synced; otherwise fatal.
    pub(crate) fn refused_at(
        &self,
        w: &mut Writer,
        e: CommitError,
        i: usize,
        clean: bool,
    ) -> CommitError {
        match e {
            CommitError::Refused { error, .. } if clean => match self.sync_locked(w) {
                Ok(()) => CommitError::Refused { error, at: i },
                Err(sync) => CommitError::Fatal(sync),
            },
            CommitError::Refused { error, .. } | CommitError::Fatal(error) => {
                CommitError::Fatal(error)
            }
        }
    }

    /// Asks the background thread for the next segment once the active one is half full,
    /// or right after a roll (`rolled`: the partition is busy, and the next roll should find
    /// its segment ready). A partition that never filled half of its first segment holds no
    /// spare: the disk reserve follows the traffic.
    pub(crate) fn want_spare_if_due(&self, w: &mut Writer, rolled: bool) {
        if self.config.preallocate == Preallocate::ZeroFill
            && w.spare.is_none()
            && !w.spare_requested
            && (rolled || w.active.write_pos.saturating_mul(2) >= w.active.capacity)
        {
            w.spare_requested = true;
            self.bg.want_spare();
        }
    }

    /// Seals the active segment and starts the next one (from the spare when ready), sized
    /// for `need` bytes at least. A full disk that refuses the next segment leaves the
    /// sealed one in place, full: the next write tries again.
    pub(crate) fn roll_locked(&self, w: &mut Writer, need: u64) -> Result<(), CommitError> {
        let next = w.active.next_offset;
        // Seal (sync, truncate, fsync) before the next segment exists: at no moment is there
        // a newer segment next to an unfinished older one.
        // A roll a full disk refused sealed the segment already.
        let sealed = match w.sealed_full.take() {
            Some(s) => s,
            None => Arc::new(
                w.active
                    .seal(self.fs.as_ref())
                    .map_err(CommitError::Fatal)?,
            ),
        };
        let capacity = self
            .config
            .next_segment_bytes(Some(sealed.len), SEGMENT_HEADER_LEN as u64 + need);
        let spare = w.spare.take();
        w.spare_requested = false;
        match Active::create(
            self.fs.as_ref(),
            &self.dir,
            &self.config,
            next,
            now_ms(),
            spare,
            capacity,
        ) {
            Ok(active) => w.active = active,
            Err(e) => {
                w.active.capacity = w.active.write_pos;
                w.sealed_full = Some(sealed);
                w.roll_retry_at = Some(Instant::now() + ROLL_RETRY);
                let e = CommitError::classify(e);
                if let CommitError::Refused { error, .. } = &e {
                    tracing::warn!(dir = %self.dir.display(), error = %error, "disk full: the next segment could not be created; writes are refused until space returns");
                }
                return Err(e);
            }
        }
        w.roll_retry_at = None;
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
        self.want_spare_if_due(w, true);
        tracing::debug!(dir = %self.dir.display(), base_offset = next, capacity = w.active.capacity, "rolled to a new segment");
        Ok(())
    }

    /// Fails the `refused` records a full disk refused from offset `cut` on, and everything
    /// queued behind them, and gives their offsets back: the log stays writable.
    pub(crate) fn refuse(&self, cut: u64, refused: usize, e: &Error) {
        let wakes: Vec<Wake> = {
            let mut q = lock(&self.queue);
            if cut != u64::MAX {
                q.next_offset = cut;
            }
            fail_all(&mut q, e)
        };
        tracing::warn!(dir = %self.dir.display(), error = %e, records = refused, "disk full: records refused (not written); the log stays writable");
        wakes.into_iter().for_each(Wake::wake);
    }
}

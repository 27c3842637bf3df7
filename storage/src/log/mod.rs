//! The partition log: the public API of the engine.

mod background;
mod commit;
pub mod inline;
mod reader;
mod retention;
mod space;
mod ticket;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use reader::LogReader;
pub use retention::RetentionReport;
pub use ticket::{Appended, Completion, Ticket};

use crate::config::{Durability, LogConfig};
use crate::error::{Error, IoOp, PoisonCause, Result};
use crate::format::record::{Record, RecordError};
use crate::format::LOCK_FILE;
use crate::io::{LockGuard, StdFs, Vfs};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{Active, ActiveShared, Sealed};
use commit::Queue;
use ticket::Slot;

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// A copy of an error for a second receiver (tickets of one failed batch).
pub(crate) fn clone_error(e: &Error) -> Error {
    let io = |source: &std::io::Error| match source.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(source.kind(), source.to_string()),
    };
    // Every variant explicitly: a caller must see the same kind of error as the first.
    match e {
        Error::Poisoned { dir, cause } => Error::Poisoned {
            dir: dir.clone(),
            cause: Arc::clone(cause),
        },
        Error::Closed { dir } => Error::Closed { dir: dir.clone() },
        Error::Io { op, path, source } => Error::Io {
            op: *op,
            path: path.clone(),
            source: io(source),
        },
        Error::Corruption {
            segment,
            position,
            offset,
            reason,
        } => Error::Corruption {
            segment: segment.clone(),
            position: *position,
            offset: *offset,
            reason: reason.clone(),
        },
        Error::BadHeader { path, reason } => Error::BadHeader {
            path: path.clone(),
            reason: reason.clone(),
        },
        Error::NotALog { path, reason } => Error::NotALog {
            path: path.clone(),
            reason: reason.clone(),
        },
        Error::Locked { dir, lock, source } => Error::Locked {
            dir: dir.clone(),
            lock: lock.clone(),
            source: io(source),
        },
        Error::RecordTooLarge { size, max } => Error::RecordTooLarge {
            size: *size,
            max: *max,
        },
        Error::OffsetOutOfRange {
            requested,
            first,
            next,
        } => Error::OffsetOutOfRange {
            requested: *requested,
            first: *first,
            next: *next,
        },
        Error::InvalidConfig { key, reason } => Error::InvalidConfig {
            key,
            reason: reason.clone(),
        },
        Error::QueueFull {
            pending_bytes,
            limit,
        } => Error::QueueFull {
            pending_bytes: *pending_bytes,
            limit: *limit,
        },
        Error::Record(r) => Error::Record(*r),
    }
}

/// What readers see: the segments and how far the acknowledged records reach.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) sealed: Vec<Arc<Sealed>>,
    pub(crate) active: Arc<ActiveShared>,
    /// Offset after the last acknowledged record.
    pub(crate) visible_next: u64,
    /// Byte position after the last acknowledged record in the active segment.
    pub(crate) visible_end: u64,
    /// Timestamp of the first record in the active segment (0 when empty).
    pub(crate) active_first_ts: u64,
}

impl View {
    pub(crate) fn first_offset(&self) -> u64 {
        self.sealed
            .first()
            .map_or(self.active.base_offset, |s| s.base_offset)
    }
}

/// State owned by the group-commit leader.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Active,
    /// A zero-filled spare segment, ready to be renamed in at the next roll.
    pub(crate) spare: Option<crate::segment::Spare>,
    /// The background thread was asked for the spare (once per active segment).
    pub(crate) spare_requested: bool,
    /// A roll a full disk refused: the background thread's age roll waits until then.
    pub(crate) roll_retry_at: Option<Instant>,
    /// The active segment as sealed by a roll a full disk refused: the next roll starts from
    /// it instead of sealing the segment again.
    pub(crate) sealed_full: Option<Arc<crate::segment::Sealed>>,
    /// Written records not yet covered by an fsync.
    pub(crate) unsynced: bool,
    /// When the unsynced records must be synced at the latest.
    pub(crate) sync_deadline: Option<Instant>,
}

/// Counters of the engine, for metrics.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Records appended (acknowledged).
    pub records: AtomicU64,
    /// Bytes of encoded records appended.
    pub bytes: AtomicU64,
    /// Group-commit batches written.
    pub batches: AtomicU64,
    /// `fdatasync` calls on the write path.
    pub fsyncs: AtomicU64,
    /// Total nanoseconds spent in write-path `fdatasync`.
    pub fsync_nanos: AtomicU64,
    /// Segments rolled.
    pub rolls: AtomicU64,
    /// Batches refused because the disk was full (nothing of them written; the log stayed
    /// writable).
    pub disk_full: AtomicU64,
}

/// Told about every group commit (metrics): called on the committing thread, outside no
/// lock callers wait for beyond the writer's; it must be cheap and must not block.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `records` records (`bytes` encoded bytes) was written; `fsync` is the
    /// duration of the fdatasync that covered it, if one ran for it.
    fn committed(&self, records: usize, bytes: usize, fsync: Option<std::time::Duration>);
}

/// Everything the log's handles, tickets and threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) fs: Arc<dyn Vfs>,
    pub(crate) config: LogConfig,
    pub(crate) queue: Mutex<Queue>,
    /// Signalled when queue space frees up.
    pub(crate) space: Condvar,
    /// Signalled when an append completes the group a lingering leader waits for.
    pub(crate) arrivals: Condvar,
    /// Signalled when the leader steps down while a maintenance call waits to lead.
    pub(crate) lead_free: Condvar,
    /// Moving average of write-path fsync latency, in ns (bounds the leader's linger).
    pub(crate) fsync_ewma_ns: AtomicU64,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) view: RwLock<View>,
    pub(crate) bg: background::BgSignal,
    pub(crate) counters: LogCounters,
    /// Told about every commit (set once, by [`Log::set_observer`]).
    pub(crate) observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
    pub(crate) retention_lock: Mutex<()>,
    pub(crate) _lock: Box<dyn LockGuard>,
}

/// Sizes and positions of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// The first offset still held.
    pub first_offset: u64,
    /// The offset the next acknowledged record will have (readers see `first..next`).
    pub next_offset: u64,
    /// Segments, the active one included.
    pub segments: usize,
    /// Bytes of segment data (headers and records; not the zero-filled space).
    pub bytes: u64,
    /// Why the log refuses writes, if it does.
    pub poisoned: Option<String>,
}

/// A partition log: a directory of segments, appended to through group commit.
///
/// Cheap to share: wrap it in an `Arc`. Closing (or dropping the last handle) drains the
/// queue, syncs, and stops the background thread.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    bg_thread: Mutex<Option<JoinHandle<()>>>,
    report: RecoveryReport,
}

impl Log {
    /// Opens (or creates) the log in `dir` on the real file system.
    ///
    /// # Errors
    /// Invalid configuration, a locked directory, a directory that is not a wald log,
    /// corruption beyond what `config.recovery_mode` tolerates, or an I/O error.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        Self::open_with(Arc::new(StdFs), dir, config)
    }

    /// Opens (or creates) the log in `dir` on the given file system.
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open_with(fs: Arc<dyn Vfs>, dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io(IoOp::Open, &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let guard = fs.lock(&lock_path).map_err(|source| Error::Locked {
            dir: dir.clone(),
            lock: lock_path,
            source,
        })?;
        let rec = recovery::recover(fs.as_ref(), &dir, &config, now_ms())?;
        let active = rec.active;
        let view = View {
            sealed: rec.sealed,
            active: Arc::clone(&active.shared),
            visible_next: active.next_offset,
            visible_end: active.write_pos,
            active_first_ts: active
                .shared
                .index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first()
                .map_or(0, |e| e.timestamp_ms),
        };
        let last_ts = active
            .last_timestamp
            .max(view.sealed.last().map_or(0, |s| s.last_timestamp));
        let queue = Queue::new(active.next_offset, last_ts);
        let shared = Arc::new(Shared {
            dir,
            fs,
            config,
            queue: Mutex::new(queue),
            space: Condvar::new(),
            arrivals: Condvar::new(),
            lead_free: Condvar::new(),
            fsync_ewma_ns: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                active,
                spare: None,
                spare_requested: false,
                roll_retry_at: None,
                sealed_full: None,
                unsynced: false,
                sync_deadline: None,
            }),
            view: RwLock::new(view),
            bg: background::BgSignal::default(),
            counters: LogCounters::default(),
            observer: std::sync::OnceLock::new(),
            retention_lock: Mutex::new(()),
            _lock: guard,
        });
        let handle = background::spawn(Arc::clone(&shared))?;
        Ok(Self {
            shared,
            bg_thread: Mutex::new(Some(handle)),
            report: rec.report,
        })
    }

    /// What opening found and repaired.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Queues records for appending and returns the ticket that completes when they are
    /// durable under `durability`. Blocks while the queue is full (`max_pending_bytes`).
    /// The records of one call get consecutive offsets and are written by one batch write.
    ///
    /// # Errors
    /// `RecordTooLarge`, an empty `records`, `Poisoned` or `Closed`.
    pub fn append(&self, records: &[Record], durability: Durability) -> Result<Ticket> {
        self.shared
            .enqueue(records, durability, true)
            .map(|slot| Ticket {
                slot,
                shared: Arc::clone(&self.shared),
            })
    }

    /// As [`Log::append`], but fails with `QueueFull` instead of blocking.
    ///
    /// # Errors
    /// As [`Log::append`], plus `QueueFull`.
    pub fn try_append(&self, records: &[Record], durability: Durability) -> Result<Ticket> {
        self.shared
            .enqueue(records, durability, false)
            .map(|slot| Ticket {
                slot,
                shared: Arc::clone(&self.shared),
            })
    }

    /// Appends one record and blocks until it is durable under `durability`.
    ///
    /// # Errors
    /// As [`Log::append`] and [`Ticket::wait`].
    #[allow(clippy::needless_pass_by_value)] // taking ownership reads naturally at call sites
    pub fn append_one(&self, record: Record, durability: Durability) -> Result<Appended> {
        self.append(std::slice::from_ref(&record), durability)?
            .wait()
    }

    /// A reader from `offset` (which may equal the next offset: the reader then waits for
    /// nothing and yields records as they are acknowledged, when polled again).
    ///
    /// # Errors
    /// `OffsetOutOfRange` when `offset` is before the first or after the next offset.
    pub fn read_from(&self, offset: u64) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), offset, None)
    }

    /// A reader from the first record whose append timestamp is ≥ `timestamp_ms`.
    ///
    /// # Errors
    /// An I/O error while locating the position.
    pub fn read_from_time(&self, timestamp_ms: u64) -> Result<LogReader> {
        let offset = reader::offset_near_time(&self.shared, timestamp_ms);
        LogReader::new(Arc::clone(&self.shared), offset, Some(timestamp_ms))
    }

    /// Sizes and positions.
    #[must_use]
    pub fn stats(&self) -> LogStats {
        let view = read(&self.shared.view);
        let bytes = view.sealed.iter().map(|s| s.len).sum::<u64>() + view.visible_end;
        let poisoned = lock(&self.shared.queue)
            .poisoned
            .as_ref()
            .map(ToString::to_string);
        LogStats {
            first_offset: view.first_offset(),
            next_offset: view.visible_next,
            segments: view.sealed.len() + 1,
            bytes,
            poisoned,
        }
    }

    /// Installs the observer told about every group commit (once; false when one is set).
    pub fn set_observer(&self, observer: Arc<dyn CommitObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// The engine's counters.
    #[must_use]
    pub fn counters(&self) -> &LogCounters {
        &self.shared.counters
    }

    /// Why the log refuses writes, or `None` when it is healthy.
    #[must_use]
    pub fn poisoned(&self) -> Option<Arc<PoisonCause>> {
        lock(&self.shared.queue).poisoned.clone()
    }

    /// Seals the active segment now (when it holds records) and starts a new one.
    ///
    /// # Errors
    /// An I/O error (which poisons the log), `Poisoned` or `Closed`.
    pub fn roll(&self) -> Result<()> {
        self.shared.maintenance(true, false)
    }

    /// Syncs any written but unsynced records now.
    ///
    /// # Errors
    /// An I/O error (which poisons the log), `Poisoned` or `Closed`.
    pub fn sync(&self) -> Result<()> {
        self.shared.maintenance(false, true)
    }

    /// Deletes sealed segments by the retention policy, never one holding an offset at or
    /// above `floor` (the first offset some consumer still needs; `u64::MAX` for none).
    ///
    /// # Errors
    /// An I/O error removing a file.
    pub fn apply_retention(&self, floor: u64) -> Result<RetentionReport> {
        retention::apply(
            &self.shared,
            self.shared.config.retention,
            floor,
            now_ms(),
            usize::MAX,
        )
    }

    /// [`Log::apply_retention`] with another policy than the log's configuration (a
    /// namespace's own), deleting at most `max_segments` segments (large deletes on a file
    /// system mounted with `discard` slow every fsync for a while: the caller paces them).
    ///
    /// # Errors
    /// An I/O error removing a file.
    pub fn apply_retention_with(
        &self,
        policy: crate::config::Retention,
        floor: u64,
        max_segments: usize,
    ) -> Result<RetentionReport> {
        retention::apply(&self.shared, policy, floor, now_ms(), max_segments)
    }

    /// Deletes every sealed segment whose records are all below `offset`.
    ///
    /// # Errors
    /// An I/O error removing a file.
    pub fn delete_before(&self, offset: u64) -> Result<RetentionReport> {
        retention::delete_before(&self.shared, offset)
    }

    /// Drains the queue, syncs, stops the background thread and releases the directory.
    ///
    /// # Errors
    /// The error of the final commit or sync.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Refuses appends from now on (they fail with [`Error::Closed`]): what was queued is
    /// written and synced first, every pending ticket completes. Reads keep working; the
    /// directory stays locked until the last handle drops. For a log other handles still
    /// share (a namespace being deleted while requests hold it).
    ///
    /// # Errors
    /// The error of the final commit or sync.
    pub fn close_for_writes(&self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        {
            let mut q = lock(&self.shared.queue);
            if q.closed {
                return Ok(());
            }
            q.closed = true;
        }
        let drained = self.shared.maintenance(false, true);
        self.shared.bg.stop();
        if let Some(h) = lock(&self.bg_thread).take() {
            let _ = h.join();
        }
        match drained {
            Err(Error::Poisoned { .. }) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(dir = %self.shared.dir.display(), error = %e, "closing the log failed");
        }
    }
}

impl Shared {
    /// Validates, encodes and queues records; returns the completion slot.
    fn enqueue(
        &self,
        records: &[Record],
        durability: Durability,
        block: bool,
    ) -> Result<Arc<Slot>> {
        if records.is_empty() {
            return Err(Error::Record(RecordError::Malformed(
                "an append needs at least one record",
            )));
        }
        let mut total = 0usize;
        for r in records {
            let max = self.config.max_record_bytes;
            match r.encoded_len() {
                Some(n) if n <= max => total += n,
                Some(n) => return Err(Error::RecordTooLarge { size: n, max }),
                None => {
                    return Err(Error::RecordTooLarge {
                        size: usize::MAX,
                        max,
                    })
                }
            }
        }
        let slot = Slot::new();
        let mut q = lock(&self.queue);
        loop {
            q.check_open(&self.dir)?;
            let pending = q.pending_bytes();
            if pending == 0 || pending + total <= self.config.max_pending_bytes {
                break;
            }
            if !block {
                return Err(Error::QueueFull {
                    pending_bytes: pending,
                    limit: self.config.max_pending_bytes,
                });
            }
            q.space_waiters += 1;
            q = self.space.wait(q).unwrap_or_else(PoisonError::into_inner);
            q.space_waiters -= 1;
        }
        if q.next_offset
            .checked_add(records.len() as u64)
            .is_none_or(|end| end == u64::MAX)
        {
            return Err(Error::Record(RecordError::Malformed(
                "the log's offset space is exhausted",
            )));
        }
        q.push(records, durability, Arc::clone(&slot), now_ms());
        let wake_leader = q.arrival_completes_linger();
        drop(q);
        if wake_leader {
            self.arrivals.notify_one();
        }
        Ok(slot)
    }

    pub(crate) fn poison_error(&self, cause: &Arc<PoisonCause>) -> Error {
        Error::Poisoned {
            dir: self.dir.clone(),
            cause: Arc::clone(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_error_keeps_every_variant() {
        let errors = vec![
            Error::Closed { dir: "d".into() },
            Error::Io {
                op: crate::error::IoOp::Sync,
                path: "p".into(),
                source: std::io::Error::from_raw_os_error(28),
            },
            Error::Corruption {
                segment: "s".into(),
                position: 1,
                offset: 2,
                reason: "bad crc".into(),
            },
            Error::NotALog {
                path: "p".into(),
                reason: "r".into(),
            },
            Error::RecordTooLarge { size: 5, max: 4 },
            Error::OffsetOutOfRange {
                requested: 9,
                first: 0,
                next: 3,
            },
            Error::QueueFull {
                pending_bytes: 10,
                limit: 5,
            },
        ];
        for e in &errors {
            let c = clone_error(e);
            assert_eq!(c.to_string(), e.to_string());
            assert_eq!(std::mem::discriminant(&c), std::mem::discriminant(e));
        }
        let disk_full = clone_error(&errors[1]);
        assert!(
            disk_full.is_disk_full(),
            "the OS error code survives the clone"
        );
    }
}

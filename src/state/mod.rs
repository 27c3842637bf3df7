//! The state store: indexes derived from the logs, in RocksDB.
//!
//! What it holds (see [`codec`] for every key and value byte):
//!
//! - **message id → location** (namespace, partition, offset, accepted time);
//! - **idempotency keys** per namespace → the first message written with the key, until the
//!   key's window expires;
//! - **applied-offset watermarks** per partition: the first offset whose index entries are
//!   not yet known to be stored;
//! - a **reverse index** position → ids, so entries of records the log no longer has can be
//!   forgotten;
//! - the **namespace registry** (the admin API's namespace documents, opaque bytes here).
//!
//! # Derived from the log
//!
//! Everything but the namespace registry is *derived from the partition logs*, which are
//! the source of truth (DESIGN.md, "The index"). So derived writes skip RocksDB's own WAL
//! and never sync: a crash may lose the most recent index updates, and [`StateStore::catch_up`]
//! replays the log from the watermark at startup to restore them. That is safe because
//!
//! 1. the entries of a record and the watermark step that covers it are written in **one
//!    `WriteBatch`**, and
//! 2. the store runs with **`atomic_flush`**: without a WAL, a batch spanning column families
//!    is only atomic on disk if those column families are flushed together — otherwise the
//!    small `watermarks` memtable could reach disk before the `messages` memtable holding the
//!    entries it covers. With atomic flush, what survives a crash is always a prefix of the
//!    batches, so the watermark on disk is never ahead of the entries on disk.
//! 3. the watermark only advances over a **contiguous** run of applied offsets
//!    ([`progress::Progress`]): appends of one partition may be applied out of order.
//!
//! The namespace registry is not derived: its writes go through the WAL with `sync = true`.
//!
//! A location read from the store should be checked against the record it points at (the
//! record's `id` header): after a power failure a log written with durability `none`/`batch`
//! can lose records the store had already indexed; [`StateStore::catch_up`] notices that (a
//! watermark past the log's end), forgets those entries and reports a [`Rewind`], but a
//! reader that runs before catch-up must not trust a location blindly.
//!
//! # Bounded
//!
//! On disk: idempotency entries carry their expiry and [`StateStore::purge_expired`] deletes
//! expired ones (the service calls it periodically); [`StateStore::forget_below`] drops the
//! message entries of records retention deleted; [`StateStore::delete_namespace_data`] drops
//! a namespace's. In memory: RocksDB's block cache (one LRU cache shared by every column
//! family, index and filter blocks included: [`StateOptions::block_cache_bytes`], 32 MiB by
//! default) and its memtables (at most [`StateOptions::write_buffer_bytes`] per column family,
//! 16 MiB, and [`StateOptions::total_write_buffer_bytes`] for all of them, 64 MiB), plus the
//! watermarks of the partitions in use.
//!
//! # Threads
//!
//! Synchronous: every call does a bounded amount of work (one batch, one lookup, or at most
//! `limit` entries), so the HTTP layer can call lookups directly and the rest from
//! `spawn_blocking`. [`StateStore`] is `Send + Sync`; share it in an `Arc`.

pub mod codec;
pub mod delivery;
pub mod keys;
pub mod mirror;
pub mod progress;
pub mod rewind;
#[cfg(test)]
mod tests;
pub mod txn;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBWithThreadMode, Direction, FlushOptions, IteratorMode, Options, ReadOptions, SingleThreaded,
    WriteBatch, WriteOptions,
};

use crate::message::RecordIds;
use codec::{
    CF_IDEMPOTENCY, CF_MESSAGES, CF_META, CF_NAMESPACES, CF_OFFSETS, CF_WATERMARKS, FORMAT_VERSION,
    META_FORMAT_VERSION,
};
use progress::Progress;

/// Records per write batch during catch-up.
pub const CATCH_UP_BATCH: usize = 1000;
/// At most this many offsets of unindexable records are listed in a [`CatchUp`].
pub const MAX_LISTED_UNINDEXED: usize = 100;
/// Entries per batch when deleting a namespace's or a rewound partition's entries.
const DELETE_BATCH: usize = 1000;

type Db = DBWithThreadMode<SingleThreaded>;
/// Idempotency window assumed by [`StateStore::catch_up`] for a namespace the store has
/// not seen applied yet (the seeds' default: 24 h).
pub const DEFAULT_IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// What the write lock guards.
#[derive(Debug, Default)]
struct Applied {
    /// Watermark and out-of-order applied ranges per namespace and partition.
    partitions: HashMap<String, HashMap<u32, Progress>>,
    /// The idempotency window last given to [`StateStore::apply`] per namespace (also
    /// stored in `meta`, for catch-up after a restart).
    windows: HashMap<String, u64>,
    /// Namespaces being deleted or deleted in this process: a late apply (a write that
    /// timed out, indexed when its append completed) writes nothing for them, so no entry or
    /// idempotency key of the deleted namespace outlives its deletion. Cleared when a
    /// namespace of that name is created again ([`StateStore::undelete`]).
    deleted: std::collections::HashSet<String>,
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB refused to open the directory (another process holds it, bad files, ...).
    #[error("cannot open the state store at {path}: {source}")]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A RocksDB operation failed.
    #[error("state store: {op} failed: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// The store lacks one of its column families (not expected after a successful open).
    #[error("the state store has no column family `{name}`")]
    MissingColumnFamily {
        /// The column family.
        name: &'static str,
    },
    /// The store was written by a newer wald.
    #[error(
        "the state store at {path} has format version {found}, this wald reads up to {supported}: \
         run a newer wald, or delete the directory to rebuild the indexes from the logs \
         (namespaces defined through the admin API would then have to be declared again)"
    )]
    UnsupportedFormat {
        /// The store's directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A stored value cannot be decoded.
    #[error("corrupt `{cf}` entry {key:?}: {reason} (indexes are derived from the logs: deleting the store's directory rebuilds them)")]
    Corrupt {
        /// The column family.
        cf: &'static str,
        /// The key (lossy UTF-8).
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A failure injected by [`StateStore::fail_delivery_writes`] (fault tests).
    #[error("state store: {op} failed: injected fault")]
    Injected {
        /// What was being done.
        op: &'static str,
    },
    /// An argument the store cannot take.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Records given to [`StateStore::apply`] are not in strictly increasing offset order.
    #[error("records to apply to {namespace}/{partition} are out of order: offset {offset} after {previous}")]
    Unordered {
        /// The namespace.
        namespace: String,
        /// The partition.
        partition: u32,
        /// The previous offset.
        previous: u64,
        /// The offending offset.
        offset: u64,
    },
    /// Reading the partition log failed during catch-up.
    #[error("catching up {namespace}/{partition} from its log: {source}")]
    Log {
        /// The namespace.
        namespace: String,
        /// The partition.
        partition: u32,
        /// The engine's error.
        #[source]
        source: wald_storage::Error,
    },
}

/// Where a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The namespace.
    pub namespace: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// When the service accepted it (ms since the epoch).
    pub accepted_at_ms: u64,
}

/// The message an idempotency key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemEntry {
    /// The first message written with the key.
    pub message_id: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// When the key may be used again (ms since the epoch).
    pub expires_at_ms: u64,
}

/// What [`StateStore::catch_up`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// The first offset replayed.
    pub from: u64,
    /// One past the last offset replayed (the watermark afterwards, unless records
    /// applied out of order beyond it moved it further).
    pub to: u64,
    /// Records replayed (`to - from`), the unindexed ones included.
    pub records: u64,
    /// Records without a message id header (not messages; the watermark moves past them).
    pub unindexed: u64,
    /// The offsets of the first [`MAX_LISTED_UNINDEXED`] of them.
    pub unindexed_offsets: Vec<u64>,
    /// Offsets between the watermark and the log's first offset: deleted by retention
    /// before they were indexed.
    pub skipped_before_first: u64,
    /// Set when the watermark was past the log's end (the log lost records the store had
    /// indexed: a power failure under durability `none`/`batch`).
    pub rewound: Option<Rewind>,
}

/// Entries forgotten because the log no longer has their records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    /// The watermark found.
    pub watermark: u64,
    /// The log's next offset: the new watermark.
    pub log_next: u64,
    /// Records whose entries were removed.
    pub entries_removed: u64,
}

/// What [`StateStore::purge_expired`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries looked at.
    pub examined: u64,
    /// Expired entries deleted.
    pub deleted: u64,
    /// True when this call reached the end of the keys (the next call starts a new sweep).
    pub sweep_done: bool,
}

/// Tuning of the store. Every size is in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOptions {
    /// The LRU block cache shared by every column family (data, index and filter blocks).
    /// Default: 32 MiB.
    pub block_cache_bytes: usize,
    /// Memtable size per column family before it is flushed. Default: 16 MiB.
    pub write_buffer_bytes: usize,
    /// All memtables together; reaching it flushes. Default: 64 MiB.
    pub total_write_buffer_bytes: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 32 << 20,
            write_buffer_bytes: 16 << 20,
            total_write_buffer_bytes: 64 << 20,
        }
    }
}

/// The state store. See the module documentation.
pub struct StateStore {
    db: Db,
    path: PathBuf,
    /// Watermark and out-of-order applied ranges per namespace and partition. Also the lock
    /// serialising every derived write whose content depends on a read (idempotency
    /// first-writer-wins, purges, rewinds).
    applied: Mutex<Applied>,
    /// Where the next [`StateStore::purge_expired`] resumes.
    purge_cursor: Mutex<Option<Vec<u8>>>,
    /// Derived writes: no WAL, no sync.
    derived: WriteOptions,
    /// Registry writes: WAL and sync.
    synced: WriteOptions,
    /// Delivery-state writes left to fail (fault injection; 0 in service).
    failing_delivery_writes: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn check_namespace(namespace: &str) -> Result<(), StateError> {
    if namespace.is_empty() {
        return Err(StateError::InvalidInput {
            what: "namespace",
            reason: "empty".into(),
        });
    }
    if namespace.contains('\0') {
        return Err(StateError::InvalidInput {
            what: "namespace",
            reason: "contains a NUL character".into(),
        });
    }
    Ok(())
}

fn db_err(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StateError {
    move |source| StateError::Db { op, source }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value is only replaced after its RocksDB write succeeded, so a panic
    // elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One record to index (borrowed from the caller or from catch-up's chunk).
struct Entry<'a> {
    offset: u64,
    ids: &'a RecordIds,
    accepted_at_ms: u64,
}

impl StateStore {
    /// Opens (or creates) the store in `path` with default [`StateOptions`].
    ///
    /// # Errors
    /// [`StateError::Open`] (another process has it open, unreadable files),
    /// [`StateError::UnsupportedFormat`] for a store written by a newer wald.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(path, StateOptions::default())
    }

    /// Opens (or creates) the store in `path`.
    ///
    /// # Errors
    /// As [`StateStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: StateOptions) -> Result<Self, StateError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StateError::Open {
            path: path.clone(),
            source,
        };

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_bloom_filter(10.0, false);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(options.write_buffer_bytes);
        cf_opts.set_max_write_buffer_number(2);
        // The crate is built without compression libraries.
        cf_opts.set_compression_type(DBCompressionType::None);

        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // See the module documentation: required for atomic batches without a WAL.
        db_opts.set_atomic_flush(true);
        db_opts.set_db_write_buffer_size(options.total_write_buffer_bytes);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_log_file_size(8 << 20);

        // Open every column family present (a newer format may have added some) plus ours.
        let mut names: Vec<String> = codec::ALL_CFS.iter().map(|&n| n.to_owned()).collect();
        names.push(rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_owned());
        if path.join("CURRENT").exists() {
            for n in Db::list_cf(&db_opts, &path).map_err(open_err)? {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let cfs = names
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
        let db = Db::open_cf_descriptors(&db_opts, &path, cfs).map_err(open_err)?;

        let mut derived = WriteOptions::default();
        derived.disable_wal(true);
        derived.set_sync(false);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);

        let store = Self {
            db,
            path,
            applied: Mutex::new(Applied::default()),
            purge_cursor: Mutex::new(None),
            failing_delivery_writes: std::sync::atomic::AtomicU32::new(0),
            derived,
            synced,
        };
        store.check_format()?;
        Ok(store)
    }

    fn check_format(&self) -> Result<(), StateError> {
        let meta = self.cf(CF_META)?;
        let stored = self
            .db
            .get_pinned_cf(meta, META_FORMAT_VERSION)
            .map_err(db_err("reading the format version"))?;
        let Some(v) = stored else {
            let mut b = WriteBatch::default();
            b.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
            return self
                .db
                .write_opt(b, &self.synced)
                .map_err(db_err("writing the format version"));
        };
        let b: [u8; 4] = v.as_ref().try_into().map_err(|_| StateError::Corrupt {
            cf: CF_META,
            key: "format_version".into(),
            reason: "not 4 bytes",
        })?;
        let found = u32::from_be_bytes(b);
        if found > FORMAT_VERSION {
            return Err(StateError::UnsupportedFormat {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StateError> {
        self.db
            .cf_handle(name)
            .ok_or(StateError::MissingColumnFamily { name })
    }

    /// Whether the store answers reads (readiness): reads its format version.
    ///
    /// # Errors
    /// A RocksDB error, or a store written by a newer wald.
    pub fn check(&self) -> Result<(), StateError> {
        self.check_format()
    }

    /// The store's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    // ----- derived writes -------------------------------------------------------------

    /// Indexes appended records of one partition and advances its watermark, in one atomic
    /// batch (no WAL, no sync: see the module documentation).
    ///
    /// `records` are `(offset, ids, accepted_at_ms)` in strictly increasing offset order;
    /// they need not be contiguous, and calls for one partition may come in any order: the
    /// watermark advances over the contiguous prefix of applied offsets only. Applying a
    /// record again is harmless. An idempotency key already held by another message whose
    /// window is still open at this record's `accepted_at_ms` keeps pointing at that first
    /// message; otherwise the key now points at this record, until
    /// `accepted_at_ms + idempotency_window_ms`.
    ///
    /// Every acknowledged record must be applied (or the watermark stalls at it until the
    /// next catch-up replays it). Returns the partition's watermark afterwards.
    ///
    /// # Errors
    /// [`StateError::Unordered`], an invalid namespace, or a RocksDB error (nothing written).
    pub fn apply(
        &self,
        namespace: &str,
        partition: u32,
        records: &[(u64, RecordIds, u64)],
        idempotency_window_ms: u64,
    ) -> Result<u64, StateError> {
        check_namespace(namespace)?;
        let mut entries = Vec::with_capacity(records.len());
        let mut covered: Vec<(u64, u64)> = Vec::new();
        for (offset, ids, accepted_at_ms) in records {
            let offset = *offset;
            if let Some(prev) = entries.last().map(|e: &Entry<'_>| e.offset) {
                if offset <= prev {
                    return Err(StateError::Unordered {
                        namespace: namespace.to_owned(),
                        partition,
                        previous: prev,
                        offset,
                    });
                }
            }
            let end = offset
                .checked_add(1)
                .ok_or_else(|| StateError::InvalidInput {
                    what: "offset",
                    reason: "u64::MAX is not a record offset".into(),
                })?;
            match covered.last_mut() {
                Some(last) if last.1 == offset => last.1 = end,
                _ => covered.push((offset, end)),
            }
            entries.push(Entry {
                offset,
                ids,
                accepted_at_ms: *accepted_at_ms,
            });
        }
        let mut applied = lock(&self.applied);
        if applied.deleted.contains(namespace) {
            return Ok(0);
        }
        self.remember_window(&mut applied, namespace, idempotency_window_ms)?;
        self.write_applied(
            &mut applied,
            namespace,
            partition,
            &entries,
            &covered,
            None,
            idempotency_window_ms,
            0,
        )
    }

    /// Stores the namespace's idempotency window when it differs from the one stored.
    fn remember_window(
        &self,
        applied: &mut Applied,
        namespace: &str,
        window_ms: u64,
    ) -> Result<(), StateError> {
        if applied.windows.get(namespace) == Some(&window_ms) {
            return Ok(());
        }
        if self.stored_window(namespace)? != Some(window_ms) {
            let mut batch = WriteBatch::default();
            batch.put_cf(
                self.cf(CF_META)?,
                codec::window_key(namespace),
                window_ms.to_be_bytes(),
            );
            self.db
                .write_opt(batch, &self.derived)
                .map_err(db_err("storing an idempotency window"))?;
        }
        applied.windows.insert(namespace.to_owned(), window_ms);
        Ok(())
    }

    fn stored_window(&self, namespace: &str) -> Result<Option<u64>, StateError> {
        let k = codec::window_key(namespace);
        match self
            .db
            .get_pinned_cf(self.cf(CF_META)?, &k)
            .map_err(db_err("reading an idempotency window"))?
        {
            Some(v) => codec::decode_watermark(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The idempotency window [`StateStore::catch_up`] uses for a namespace: the one last
    /// given to [`StateStore::apply`], else [`DEFAULT_IDEMPOTENCY_WINDOW_MS`].
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn idempotency_window(&self, namespace: &str) -> Result<u64, StateError> {
        check_namespace(namespace)?;
        if let Some(w) = lock(&self.applied).windows.get(namespace) {
            return Ok(*w);
        }
        Ok(self
            .stored_window(namespace)?
            .unwrap_or(DEFAULT_IDEMPOTENCY_WINDOW_MS))
    }

    /// The one writer of index entries and watermarks. The caller holds `applied`.
    #[allow(clippy::too_many_arguments)]
    fn write_applied(
        &self,
        applied: &mut Applied,
        namespace: &str,
        partition: u32,
        entries: &[Entry<'_>],
        covered: &[(u64, u64)],
        reset_to: Option<u64>,
        idempotency_window_ms: u64,
        skip_expired_at: u64,
    ) -> Result<u64, StateError> {
        let (messages, offsets, idem, watermarks) = (
            self.cf(CF_MESSAGES)?,
            self.cf(CF_OFFSETS)?,
            self.cf(CF_IDEMPOTENCY)?,
            self.cf(CF_WATERMARKS)?,
        );
        let before = self.load_progress(applied, namespace, partition)?;
        let mut after = before.clone();
        if let Some(to) = reset_to {
            after.reset(to);
        }
        for &(s, e) in covered {
            after.add(s, e);
        }

        let mut batch = WriteBatch::default();
        let mut keys_in_batch: HashMap<Vec<u8>, IdemEntry> = HashMap::new();
        for e in entries {
            let id = &e.ids.message_id;
            let loc = Location {
                namespace: namespace.to_owned(),
                partition,
                offset: e.offset,
                accepted_at_ms: e.accepted_at_ms,
            };
            batch.put_cf(messages, id.as_bytes(), codec::encode_location(&loc));
            batch.put_cf(
                offsets,
                codec::offset_key(namespace, partition, e.offset),
                codec::encode_offset_entry(id, e.ids.idempotency_key.as_deref())?,
            );
            let Some(key) = &e.ids.idempotency_key else {
                continue;
            };
            let expires_at_ms = e.accepted_at_ms.saturating_add(idempotency_window_ms);
            if expires_at_ms <= skip_expired_at {
                continue;
            }
            let k = codec::idem_key(namespace, key);
            let existing = match keys_in_batch.get(&k) {
                Some(x) => Some(x.clone()),
                None => self.read_idem(idem, &k)?,
            };
            if existing.is_some_and(|x| x.message_id != *id && x.expires_at_ms > e.accepted_at_ms) {
                continue; // first writer wins while its window is open
            }
            let entry = IdemEntry {
                message_id: id.clone(),
                partition,
                offset: e.offset,
                expires_at_ms,
            };
            batch.put_cf(idem, &k, codec::encode_idem(&entry));
            keys_in_batch.insert(k, entry);
        }
        if after.watermark != before.watermark {
            batch.put_cf(
                watermarks,
                codec::partition_key(namespace, partition),
                codec::encode_watermark(after.watermark),
            );
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.derived)
                .map_err(db_err("applying records"))?;
        }
        if after.pending_ranges() > 0 && after.pending_ranges() % 1024 == 0 {
            tracing::warn!(
                namespace,
                partition,
                watermark = after.watermark,
                ranges = after.pending_ranges(),
                "records applied beyond a gap keep piling up: a record below them was never applied"
            );
        }
        let watermark = after.watermark;
        save_progress(applied, namespace, partition, after);
        Ok(watermark)
    }

    /// An idempotency entry as stored (expired or not); a corrupt one reads as absent, to be
    /// overwritten (the store is derived).
    fn read_idem(&self, cf: &ColumnFamily, k: &[u8]) -> Result<Option<IdemEntry>, StateError> {
        let Some(v) = self
            .db
            .get_pinned_cf(cf, k)
            .map_err(db_err("reading an idempotency key"))?
        else {
            return Ok(None);
        };
        match codec::decode_idem(k, &v) {
            Ok(e) => Ok(Some(e)),
            Err(err) => {
                tracing::warn!(error = %err, "overwriting a corrupt idempotency entry");
                Ok(None)
            }
        }
    }

    fn load_progress(
        &self,
        applied: &Applied,
        namespace: &str,
        partition: u32,
    ) -> Result<Progress, StateError> {
        if let Some(p) = applied
            .partitions
            .get(namespace)
            .and_then(|m| m.get(&partition))
        {
            return Ok(p.clone());
        }
        Ok(Progress::new(self.stored_watermark(namespace, partition)?))
    }

    fn stored_watermark(&self, namespace: &str, partition: u32) -> Result<u64, StateError> {
        let k = codec::partition_key(namespace, partition);
        match self
            .db
            .get_pinned_cf(self.cf(CF_WATERMARKS)?, &k)
            .map_err(db_err("reading a watermark"))?
        {
            Some(v) => codec::decode_watermark(&k, &v),
            None => Ok(0),
        }
    }

    /// The partition's watermark: every record below it is indexed.
    ///
    /// # Errors
    /// An invalid namespace, a RocksDB error or a corrupt watermark.
    pub fn watermark(&self, namespace: &str, partition: u32) -> Result<u64, StateError> {
        check_namespace(namespace)?;
        let applied = lock(&self.applied);
        Ok(self
            .load_progress(&applied, namespace, partition)?
            .watermark)
    }

    /// Brings a partition's indexes up to date with its log: replays the log from
    /// `max(watermark, first offset)` to its current end, in batches of
    /// [`CATCH_UP_BATCH`] records, each batch one atomic write. Call it for every partition
    /// at startup, before serving. Record ids come from the headers ([`RecordIds::of`]), the
    /// accepted time from the record's append timestamp; idempotency entries already
    /// expired now are not written. A record without a message id is counted in the result
    /// and skipped. `progress(done, total)` is called after each batch (and once with 0).
    ///
    /// If the watermark is past the log's end — the log lost records that had been indexed —
    /// the entries of the lost offsets are removed first and the result says so.
    ///
    /// Idempotent: running it again replays nothing (or only records appended since).
    ///
    /// Idempotency entries get the window last given to [`StateStore::apply`] for this
    /// namespace ([`StateStore::idempotency_window`]; [`DEFAULT_IDEMPOTENCY_WINDOW_MS`] for a
    /// namespace never applied); [`StateStore::catch_up_with_window`] takes it explicitly.
    ///
    /// # Errors
    /// [`StateError::Log`] when the log cannot be read (a corrupt record: the log's own
    /// verification names it), an invalid namespace, or a RocksDB error. Batches written
    /// before the error stay written, with the watermark after them.
    pub fn catch_up(
        &self,
        namespace: &str,
        partition: u32,
        log: &wald_storage::Log,
        progress: impl FnMut(u64, u64),
    ) -> Result<CatchUp, StateError> {
        let window = self.idempotency_window(namespace)?;
        self.catch_up_with_window(namespace, partition, log, window, progress)
    }

    /// As [`StateStore::catch_up`], with the namespace's idempotency window given.
    ///
    /// # Errors
    /// As [`StateStore::catch_up`].
    pub fn catch_up_with_window(
        &self,
        namespace: &str,
        partition: u32,
        log: &wald_storage::Log,
        idempotency_window_ms: u64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<CatchUp, StateError> {
        check_namespace(namespace)?;
        let log_err = |source| StateError::Log {
            namespace: namespace.to_owned(),
            partition,
            source,
        };
        let mut report = CatchUp::default();
        if let Some(rewind) = self.rewind_if_ahead(namespace, partition, log)? {
            tracing::warn!(
                namespace,
                partition,
                watermark = rewind.watermark,
                log_next = rewind.log_next,
                entries_removed = rewind.entries_removed,
                "the log ends before the state store's watermark (records lost after a power failure?): forgot their index entries"
            );
            report.rewound = Some(rewind);
        }
        // The watermark is read before the log's end: records are applied only after they
        // are acknowledged, so even with appends going on, `watermark <= next` here.
        let watermark = self.watermark(namespace, partition)?;
        let stats = log.stats();
        let (first, next) = (stats.first_offset, stats.next_offset);
        let from = watermark.max(first);
        report.from = from;
        report.to = from;
        report.skipped_before_first = from - watermark;
        let total = next.saturating_sub(from);
        progress(0, total);
        let mut reset = (from > watermark).then_some(from);
        if total == 0 {
            if let Some(to) = reset {
                let mut applied = lock(&self.applied);
                self.write_applied(&mut applied, namespace, partition, &[], &[], Some(to), 0, 0)?;
            }
            return Ok(report);
        }

        let now = wald_storage::now_ms();
        let mut chunk: Vec<(u64, RecordIds, u64)> = Vec::with_capacity(CATCH_UP_BATCH);
        let mut chunk_start = from;
        let mut pos = from;
        let flush = |chunk: &mut Vec<(u64, RecordIds, u64)>,
                     start: u64,
                     end: u64,
                     reset: Option<u64>|
         -> Result<(), StateError> {
            let entries: Vec<Entry<'_>> = chunk
                .iter()
                .map(|(offset, ids, at)| Entry {
                    offset: *offset,
                    ids,
                    accepted_at_ms: *at,
                })
                .collect();
            let mut applied = lock(&self.applied);
            self.write_applied(
                &mut applied,
                namespace,
                partition,
                &entries,
                &[(start, end)],
                reset,
                idempotency_window_ms,
                now,
            )?;
            chunk.clear();
            Ok(())
        };
        for item in log.read_from(from).map_err(log_err)? {
            let rec = item.map_err(log_err)?;
            if rec.offset >= next {
                break;
            }
            match RecordIds::of(&rec) {
                Ok(ids) => chunk.push((rec.offset, ids, rec.timestamp_ms)),
                Err(e) => {
                    tracing::warn!(namespace, partition, offset = rec.offset, error = %e, "record not indexed");
                    report.unindexed += 1;
                    if report.unindexed_offsets.len() < MAX_LISTED_UNINDEXED {
                        report.unindexed_offsets.push(rec.offset);
                    }
                }
            }
            pos = rec.offset + 1;
            if pos - chunk_start >= CATCH_UP_BATCH as u64 {
                flush(&mut chunk, chunk_start, pos, reset.take())?;
                report.records += pos - chunk_start;
                report.to = pos;
                chunk_start = pos;
                progress(pos - from, total);
            }
        }
        if pos > chunk_start || reset.is_some() {
            flush(&mut chunk, chunk_start, pos, reset.take())?;
            report.records += pos - chunk_start;
            report.to = pos;
            progress(pos - from, total);
        }
        Ok(report)
    }

    /// When the watermark is past the log's end, forgets the entries of offsets at or after
    /// the end and sets the watermark to it. Under the write lock, with the log's end read
    /// under it too: applies (which follow acknowledgements) cannot make a live watermark
    /// look ahead of the log.
    fn rewind_if_ahead(
        &self,
        namespace: &str,
        partition: u32,
        log: &wald_storage::Log,
    ) -> Result<Option<Rewind>, StateError> {
        let mut applied = lock(&self.applied);
        let watermark = self
            .load_progress(&applied, namespace, partition)?
            .watermark;
        let to = log.stats().next_offset;
        if watermark <= to {
            return Ok(None);
        }
        let prefix = codec::partition_key(namespace, partition);
        let mut entries_removed = 0;
        loop {
            let n = self.delete_offset_entries(
                &codec::offset_key(namespace, partition, to),
                codec::prefix_end(&prefix),
                namespace,
                partition,
            )?;
            entries_removed += n;
            if n < DELETE_BATCH as u64 {
                break;
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_WATERMARKS)?,
            &prefix,
            codec::encode_watermark(to),
        );
        self.db
            .write_opt(batch, &self.derived)
            .map_err(db_err("rewinding a watermark"))?;
        save_progress(&mut applied, namespace, partition, Progress::new(to));
        Ok(Some(Rewind {
            watermark,
            log_next: to,
            entries_removed,
        }))
    }

    /// Deletes up to [`DELETE_BATCH`] `offsets` entries in `lower..upper` with the message
    /// and idempotency entries that still point at them, in one batch. Returns how many.
    fn delete_offset_entries(
        &self,
        lower: &[u8],
        upper: Vec<u8>,
        namespace: &str,
        partition: u32,
    ) -> Result<u64, StateError> {
        self.delete_offset_entries_limited(lower, upper, namespace, Some(partition), DELETE_BATCH)
    }

    /// As [`Self::delete_offset_entries`] with a limit; `partition: None` reads the
    /// partition from each key (whole-namespace deletion).
    fn delete_offset_entries_limited(
        &self,
        lower: &[u8],
        upper: Vec<u8>,
        namespace: &str,
        partition: Option<u32>,
        limit: usize,
    ) -> Result<u64, StateError> {
        let (messages, offsets, idem) = (
            self.cf(CF_MESSAGES)?,
            self.cf(CF_OFFSETS)?,
            self.cf(CF_IDEMPOTENCY)?,
        );
        let ns_len = namespace.len() + 1;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(upper);
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for item in self
            .db
            .iterator_cf_opt(offsets, ro, IteratorMode::From(lower, Direction::Forward))
            .take(limit)
        {
            let (k, v) = item.map_err(db_err("scanning offsets"))?;
            batch.delete_cf(offsets, &k);
            n += 1;
            let part = match partition {
                Some(p) => p,
                None => match k
                    .get(ns_len..ns_len + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                {
                    Some(b) => u32::from_be_bytes(b),
                    None => continue,
                },
            };
            let Some(offset) = codec::offset_of_key(&k, ns_len + 4) else {
                continue;
            };
            let Ok(entry) = codec::decode_offset_entry(&k, &v) else {
                continue;
            };
            let points_here =
                |loc_ns: &str, p: u32, o: u64| loc_ns == namespace && p == part && o == offset;
            if let Some(loc) = self.read_location(messages, entry.message_id.as_bytes())? {
                if points_here(&loc.namespace, loc.partition, loc.offset) {
                    batch.delete_cf(messages, entry.message_id.as_bytes());
                }
            }
            if let Some(key) = entry.idempotency_key {
                let ik = codec::idem_key(namespace, &key);
                if let Some(e) = self.read_idem(idem, &ik)? {
                    if points_here(namespace, e.partition, e.offset) {
                        batch.delete_cf(idem, &ik);
                    }
                }
            }
        }
        if n > 0 {
            self.db
                .write_opt(batch, &self.derived)
                .map_err(db_err("deleting entries"))?;
        }
        Ok(n)
    }

    fn read_location(&self, cf: &ColumnFamily, id: &[u8]) -> Result<Option<Location>, StateError> {
        match self
            .db
            .get_pinned_cf(cf, id)
            .map_err(db_err("reading a message location"))?
        {
            Some(v) => codec::decode_location(id, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Forgets the message entries of up to `limit` records of a partition below `offset`
    /// (the log's first offset after retention deleted segments). Idempotency entries are
    /// left to expire. Returns how many records' entries were removed; call again while it
    /// returns `limit`.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn forget_below(
        &self,
        namespace: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<u64, StateError> {
        check_namespace(namespace)?;
        let (messages, offsets) = (self.cf(CF_MESSAGES)?, self.cf(CF_OFFSETS)?);
        let prefix = codec::partition_key(namespace, partition);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(codec::offset_key(namespace, partition, offset));
        // Scanned and looked up without the write lock (entries below the log's first
        // offset are never applied again); only the batch is written under it, so the write
        // path's index updates never wait for a chunk's lookups (they did: writes stalled up
        // to 0.7 s while retention forgot a 64 MiB segment's entries).
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self
            .db
            .iterator_cf_opt(offsets, ro, IteratorMode::From(&prefix, Direction::Forward))
            .take(limit)
        {
            let (k, v) = item.map_err(db_err("scanning offsets"))?;
            batch.delete_cf(offsets, &k);
            n += 1;
            let (Ok(entry), Some(o)) = (
                codec::decode_offset_entry(&k, &v),
                codec::offset_of_key(&k, prefix.len()),
            ) else {
                continue;
            };
            if let Some(loc) = self.read_location(messages, entry.message_id.as_bytes())? {
                if loc.namespace == namespace && loc.partition == partition && loc.offset == o {
                    batch.delete_cf(messages, entry.message_id.as_bytes());
                }
            }
        }
        if n > 0 {
            let _guard = lock(&self.applied);
            self.db
                .write_opt(batch, &self.derived)
                .map_err(db_err("forgetting old entries"))?;
        }
        Ok(n)
    }

    /// Deletes up to `limit` expired idempotency entries, sweeping the keys across calls
    /// (each call resumes where the previous one stopped and looks at no more than `limit`
    /// entries). The service calls it periodically; expired entries are already invisible
    /// to [`StateStore::idempotent`], this keeps the disk bounded.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn purge_expired(&self, now_ms: u64, limit: usize) -> Result<PurgeReport, StateError> {
        let idem = self.cf(CF_IDEMPOTENCY)?;
        let mut cursor = lock(&self.purge_cursor);
        let start = cursor.clone().unwrap_or_default();
        let mut report = PurgeReport::default();
        let mut candidates = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let mut iter = self
            .db
            .iterator_cf(idem, IteratorMode::From(&start, Direction::Forward));
        for item in iter.by_ref().take(limit) {
            let (k, v) = item.map_err(db_err("scanning idempotency keys"))?;
            report.examined += 1;
            // A corrupt entry is deleted too: it would never be read as valid.
            if codec::idem_expires_at(&k, &v).map_or(true, |at| at <= now_ms) {
                candidates.push(k.to_vec());
            }
            last = Some(k.into_vec());
        }
        let more = match iter.next() {
            Some(res) => res
                .map(|_| true)
                .map_err(db_err("scanning idempotency keys"))?,
            None => false,
        };
        drop(iter);
        report.sweep_done = !more;
        if !candidates.is_empty() {
            // Re-check under the write lock: an apply may have renewed a key since the scan.
            let _guard = lock(&self.applied);
            let mut batch = WriteBatch::default();
            for k in &candidates {
                let still_expired = match self
                    .db
                    .get_pinned_cf(idem, k)
                    .map_err(db_err("reading an idempotency key"))?
                {
                    Some(v) => codec::idem_expires_at(k, &v).map_or(true, |at| at <= now_ms),
                    None => false,
                };
                if still_expired {
                    batch.delete_cf(idem, k);
                    report.deleted += 1;
                }
            }
            if !batch.is_empty() {
                self.db
                    .write_opt(batch, &self.derived)
                    .map_err(db_err("purging idempotency keys"))?;
            }
        }
        *cursor = match (more, last) {
            (true, Some(mut k)) => {
                k.push(0); // the smallest key after `k`
                Some(k)
            }
            _ => None,
        };
        Ok(report)
    }

    /// Deletes everything the store derived for a namespace: its message entries, idempotency
    /// keys, reverse index and watermarks (the registry entry is [`StateStore::delete_namespace`]).
    /// Call it once the namespace takes no more writes. The final step is one synced batch, so
    /// a deletion that returned is not undone by a crash; an interrupted one can be repeated.
    /// Returns the number of records whose entries were removed.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn delete_namespace_data(&self, namespace: &str) -> Result<u64, StateError> {
        check_namespace(namespace)?;
        // From now on no apply writes for it (see `Applied::deleted`).
        lock(&self.applied).deleted.insert(namespace.to_owned());
        let prefix = codec::ns_prefix(namespace);
        let end = codec::prefix_end(&prefix);
        let mut removed = 0;
        // Bulk of the work outside the write lock, in bounded batches.
        loop {
            let n = self.delete_offset_entries_limited(
                &prefix,
                end.clone(),
                namespace,
                None,
                DELETE_BATCH,
            )?;
            removed += n;
            if n < DELETE_BATCH as u64 {
                break;
            }
        }
        let mut applied = lock(&self.applied);
        // Whatever was applied meanwhile.
        loop {
            let n = self.delete_offset_entries_limited(
                &prefix,
                end.clone(),
                namespace,
                None,
                DELETE_BATCH,
            )?;
            removed += n;
            if n < DELETE_BATCH as u64 {
                break;
            }
        }
        let mut batch = WriteBatch::default();
        for cf in [CF_OFFSETS, CF_IDEMPOTENCY, CF_WATERMARKS] {
            batch.delete_range_cf(self.cf(cf)?, &prefix, &end);
        }
        batch.delete_cf(self.cf(CF_META)?, codec::window_key(namespace));
        self.db
            .write_opt(batch, &self.synced)
            .map_err(db_err("deleting a namespace's data"))?;
        applied.partitions.remove(namespace);
        applied.windows.remove(namespace);
        Ok(removed)
    }

    /// Lets applies of `namespace` write again: it is being created anew, after
    /// [`StateStore::delete_namespace_data`].
    pub fn undelete(&self, namespace: &str) {
        lock(&self.applied).deleted.remove(namespace);
    }

    // ----- reads --------------------------------------------------------------------

    /// Where a message is. Check the record at the location carries this id before trusting
    /// it (see the module documentation).
    ///
    /// # Errors
    /// A RocksDB error or a corrupt entry.
    pub fn message_location(&self, message_id: &str) -> Result<Option<Location>, StateError> {
        self.read_location(self.cf(CF_MESSAGES)?, message_id.as_bytes())
    }

    /// The message an idempotency key stands for, unless its window closed at or before
    /// `now_ms`.
    ///
    /// # Errors
    /// An invalid namespace, a RocksDB error or a corrupt entry.
    pub fn idempotent(
        &self,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<IdemEntry>, StateError> {
        check_namespace(namespace)?;
        let k = codec::idem_key(namespace, key);
        match self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY)?, &k)
            .map_err(db_err("reading an idempotency key"))?
        {
            Some(v) => {
                let e = codec::decode_idem(&k, &v)?;
                Ok((e.expires_at_ms > now_ms).then_some(e))
            }
            None => Ok(None),
        }
    }

    // ----- namespace registry (not derived: synced writes) ---------------------------

    /// Stores a namespace's document (synced before returning).
    ///
    /// # Errors
    /// An invalid name or a RocksDB error.
    pub fn put_namespace(&self, name: &str, document: &[u8]) -> Result<(), StateError> {
        check_namespace(name)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_NAMESPACES)?, name.as_bytes(), document);
        self.db
            .write_opt(batch, &self.synced)
            .map_err(db_err("storing a namespace"))
    }

    /// A namespace's document.
    ///
    /// # Errors
    /// An invalid name or a RocksDB error.
    pub fn get_namespace(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_namespace(name)?;
        self.db
            .get_cf(self.cf(CF_NAMESPACES)?, name.as_bytes())
            .map_err(db_err("reading a namespace"))
    }

    /// Every namespace's name and document, sorted by name.
    ///
    /// # Errors
    /// A RocksDB error, or a stored name that is not UTF-8.
    pub fn list_namespaces(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let cf = self.cf(CF_NAMESPACES)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(db_err("listing namespaces"))?;
            let name = String::from_utf8(k.into_vec()).map_err(|e| StateError::Corrupt {
                cf: CF_NAMESPACES,
                key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                reason: "name is not UTF-8",
            })?;
            out.push((name, v.into_vec()));
        }
        Ok(out)
    }

    /// Deletes a namespace's document (synced); true when there was one.
    ///
    /// # Errors
    /// An invalid name or a RocksDB error.
    pub fn delete_namespace(&self, name: &str) -> Result<bool, StateError> {
        check_namespace(name)?;
        let cf = self.cf(CF_NAMESPACES)?;
        let existed = self
            .db
            .get_pinned_cf(cf, name.as_bytes())
            .map_err(db_err("reading a namespace"))?
            .is_some();
        if existed {
            let mut batch = WriteBatch::default();
            batch.delete_cf(cf, name.as_bytes());
            self.db
                .write_opt(batch, &self.synced)
                .map_err(db_err("deleting a namespace"))?;
        }
        Ok(existed)
    }

    // ----- lifecycle ----------------------------------------------------------------

    /// Writes every memtable to disk (all column families at once). Called on drop; call it
    /// at a graceful shutdown to spare the next start a catch-up.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn flush(&self) -> Result<(), StateError> {
        let cfs = codec::ALL_CFS
            .iter()
            .map(|&n| self.cf(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &fo).map_err(db_err("flushing"))
    }
}

fn save_progress(applied: &mut Applied, namespace: &str, partition: u32, p: Progress) {
    if let Some(m) = applied.partitions.get_mut(namespace) {
        m.insert(partition, p);
    } else {
        applied
            .partitions
            .insert(namespace.to_owned(), HashMap::from([(partition, p)]));
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "flushing the state store at close failed; the next start catches up from the logs");
        }
    }
}

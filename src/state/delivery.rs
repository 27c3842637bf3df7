//! Delivery's column families: what the consumers decided, which the logs cannot tell.
//!
//! Unlike the indexes (derived from the logs, written without RocksDB's WAL), these are
//! **not derived**: a delivery outcome exists nowhere else. So they are written through the
//! WAL — a process crash loses none of them; a power failure may lose the last unsynced
//! ones, which at-least-once delivery tolerates (the consumer re-reads from an older committed
//! offset and delivers those messages again). The dead-letter index is written synced.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `delivery`  | `ns \0 partition(4 BE) offset(8 BE)` | the message's delivery record (JSON, owned by `crate::delivery`) |
//! | `due`       | `ns \0 partition(4 BE) due_ms(8 BE) offset(8 BE)` | empty: a parked message |
//! | `consumers` | `ns \0 partition(4 BE)` | committed offset (8 BE) |
//! | `dlq`       | `ns \0 message id` | the DLQ entry's index record (JSON, owned by `crate::delivery`) |

use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::codec::{
    ns_prefix, offset_key, partition_key, prefix_end, CF_CONSUMERS, CF_DELIVERY, CF_DLQ, CF_DUE,
};
use super::{check_namespace, db_err, StateError, StateStore};

/// Writes of one consumer step, applied atomically.
#[derive(Default)]
pub struct DeliveryBatch {
    ops: Vec<Op>,
}

enum Op {
    State(Vec<u8>, Vec<u8>),
    DropState(Vec<u8>),
    Due(Vec<u8>),
    DropDue(Vec<u8>),
    Committed(Vec<u8>, u64),
}

impl std::fmt::Debug for DeliveryBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryBatch")
            .field("ops", &self.ops.len())
            .finish()
    }
}

fn due_key(namespace: &str, partition: u32, due_ms: u64, offset: u64) -> Vec<u8> {
    let mut k = partition_key(namespace, partition);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn dlq_key(namespace: &str, message_id: &str) -> Vec<u8> {
    let mut k = ns_prefix(namespace);
    k.extend_from_slice(message_id.as_bytes());
    k
}

impl DeliveryBatch {
    /// Stores a message's delivery record.
    pub fn put_state(&mut self, ns: &str, partition: u32, offset: u64, record: Vec<u8>) {
        self.ops
            .push(Op::State(offset_key(ns, partition, offset), record));
    }

    /// Forgets a message's delivery record.
    pub fn drop_state(&mut self, ns: &str, partition: u32, offset: u64) {
        self.ops
            .push(Op::DropState(offset_key(ns, partition, offset)));
    }

    /// Parks a message until `due_ms`.
    pub fn park(&mut self, ns: &str, partition: u32, due_ms: u64, offset: u64) {
        self.ops
            .push(Op::Due(due_key(ns, partition, due_ms, offset)));
    }

    /// Removes a parked message's due-index entry.
    pub fn unpark(&mut self, ns: &str, partition: u32, due_ms: u64, offset: u64) {
        self.ops
            .push(Op::DropDue(due_key(ns, partition, due_ms, offset)));
    }

    /// Moves the consumer's committed offset.
    pub fn commit(&mut self, ns: &str, partition: u32, next: u64) {
        self.ops
            .push(Op::Committed(partition_key(ns, partition), next));
    }

    /// Nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl StateStore {
    pub(super) fn logged(sync: bool) -> WriteOptions {
        let mut o = WriteOptions::default();
        o.set_sync(sync);
        o
    }

    /// Applies a consumer step through the WAL (`sync`: also fsync it).
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn write_delivery(&self, batch: DeliveryBatch, sync: bool) -> Result<(), StateError> {
        self.write_delivery_ref(&batch, sync)
    }

    /// [`StateStore::write_delivery`] keeping the batch (to retry it after a failure).
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn write_delivery_ref(&self, batch: &DeliveryBatch, sync: bool) -> Result<(), StateError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let failing = &self.failing_delivery_writes;
        if failing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StateError::Injected {
                op: "writing delivery state",
            });
        }
        let (state, due, consumers) = (
            self.cf(CF_DELIVERY)?,
            self.cf(CF_DUE)?,
            self.cf(CF_CONSUMERS)?,
        );
        let mut b = WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::State(k, v) => b.put_cf(state, k, v),
                Op::DropState(k) => b.delete_cf(state, k),
                Op::Due(k) => b.put_cf(due, k, []),
                Op::DropDue(k) => b.delete_cf(due, k),
                Op::Committed(k, next) => b.put_cf(consumers, k, next.to_be_bytes()),
            }
        }
        self.db
            .write_opt(b, &Self::logged(sync))
            .map_err(db_err("writing delivery state"))
    }

    /// Makes the next `n` [`StateStore::write_delivery`] calls fail, as a state store
    /// whose disk briefly refuses writes would (fault tests; nothing in service calls it).
    #[doc(hidden)]
    pub fn fail_delivery_writes(&self, n: u32) {
        self.failing_delivery_writes.store(n, Ordering::Release);
    }

    /// A message's delivery record.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn delivery_state(
        &self,
        ns: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Option<Vec<u8>>, StateError> {
        check_namespace(ns)?;
        self.db
            .get_cf(self.cf(CF_DELIVERY)?, offset_key(ns, partition, offset))
            .map_err(db_err("reading delivery state"))
    }

    /// The consumer's committed offset (0 when it never committed).
    ///
    /// # Errors
    /// An invalid namespace, a RocksDB error or a corrupt value.
    pub fn committed_offset(&self, ns: &str, partition: u32) -> Result<u64, StateError> {
        check_namespace(ns)?;
        let k = partition_key(ns, partition);
        match self
            .db
            .get_pinned_cf(self.cf(CF_CONSUMERS)?, &k)
            .map_err(db_err("reading a committed offset"))?
        {
            None => Ok(0),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StateError::Corrupt {
                    cf: CF_CONSUMERS,
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "committed offset is not 8 bytes",
                })?;
                Ok(u64::from_be_bytes(b))
            }
        }
    }

    /// Parked messages of a partition due before `until_ms`, earliest first: `(due, offset)`.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn due_before(
        &self,
        ns: &str,
        partition: u32,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, StateError> {
        check_namespace(ns)?;
        let prefix = partition_key(ns, partition);
        let cf = self.cf(CF_DUE)?;
        let mut out = Vec::new();
        let it = self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward));
        for item in it {
            let (k, _) = item.map_err(db_err("scanning the due index"))?;
            let Some(tail) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (Some(due), Some(offset)) = (be64(tail, 0), be64(tail, 8)) else {
                continue;
            };
            if due >= until_ms || out.len() >= limit {
                break;
            }
            out.push((due, offset));
        }
        Ok(out)
    }

    /// How many messages of a partition are parked.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn parked_count(&self, ns: &str, partition: u32) -> Result<u64, StateError> {
        check_namespace(ns)?;
        let prefix = partition_key(ns, partition);
        let end = prefix_end(&prefix);
        let cf = self.cf(CF_DUE)?;
        let mut n = 0u64;
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(db_err("counting the due index"))?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The lowest offset of a partition's parked messages (`None` when none is parked):
    /// retention keeps it, since a parked message's only copy is the log.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn min_parked_offset(&self, ns: &str, partition: u32) -> Result<Option<u64>, StateError> {
        check_namespace(ns)?;
        let prefix = partition_key(ns, partition);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let mut min: Option<u64> = None;
        for item in self.db.iterator_cf_opt(
            self.cf(CF_DUE)?,
            ro,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = item.map_err(db_err("scanning the due index"))?;
            // Key: prefix, due_ms (8 BE), offset (8 BE).
            let Some(o) = k
                .get(prefix.len() + 8..prefix.len() + 16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            min = Some(min.map_or(o, |m| m.min(o)));
        }
        Ok(min)
    }

    /// Forgets a partition's delivery records and mirror refusals below `offset` (their
    /// records were deleted from the log by retention). Range deletes: cheap at any size.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn forget_delivery_below(
        &self,
        ns: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), StateError> {
        check_namespace(ns)?;
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            self.cf(CF_DELIVERY)?,
            offset_key(ns, partition, 0),
            offset_key(ns, partition, offset),
        );
        let (from, to) = super::mirror::refusal_range(ns, partition, offset);
        b.delete_range_cf(self.cf(CF_CONSUMERS)?, from, to);
        self.db
            .write_opt(b, &Self::logged(false))
            .map_err(db_err("forgetting delivery records"))
    }

    /// Stores a dead-letter index record (synced when `sync`).
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn put_dlq(
        &self,
        ns: &str,
        message_id: &str,
        record: &[u8],
        sync: bool,
    ) -> Result<(), StateError> {
        check_namespace(ns)?;
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_DLQ)?, dlq_key(ns, message_id), record);
        self.db
            .write_opt(b, &Self::logged(sync))
            .map_err(db_err("writing the dead-letter index"))
    }

    /// A dead-letter index record.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn get_dlq(&self, ns: &str, message_id: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_namespace(ns)?;
        self.db
            .get_cf(self.cf(CF_DLQ)?, dlq_key(ns, message_id))
            .map_err(db_err("reading the dead-letter index"))
    }

    /// Every dead-letter index record of a namespace: `(message id, record)`.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn list_dlq(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        check_namespace(ns)?;
        let prefix = ns_prefix(ns);
        let cf = self.cf(CF_DLQ)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("listing the dead-letter index"))?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((String::from_utf8_lossy(id).into_owned(), v.into_vec()));
        }
        Ok(out)
    }

    /// Deletes every delivery entry of a namespace (its removal).
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn delete_delivery_data(&self, ns: &str) -> Result<(), StateError> {
        check_namespace(ns)?;
        let prefix = ns_prefix(ns);
        let end = prefix_end(&prefix);
        let mut b = WriteBatch::default();
        for cf in [CF_DELIVERY, CF_DUE, CF_CONSUMERS, CF_DLQ] {
            b.delete_range_cf(self.cf(cf)?, &prefix, &end);
        }
        self.db
            .write_opt(b, &Self::logged(true))
            .map_err(db_err("deleting a namespace's delivery state"))
    }
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

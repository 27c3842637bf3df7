//! After a partition log lost its tail: rewinding what is *not* derived from it.
//!
//! Under `batch`, `none` and `kafka` a power loss (or an OS crash) may take a log's
//! unsynced tail, and the offsets of the lost records are then reused by new writes. The
//! message index rewinds itself in [`StateStore::catch_up`]; the consumer's committed
//! offset, the per-offset delivery records, the parked (delayed) entries, the mirrors'
//! committed offsets and their refusals are written through RocksDB's WAL and would
//! otherwise describe records that no longer exist: the consumer would skip the new
//! records at the reused offsets (its commit is past them) or apply an old delivery record
//! to a different message. [`StateStore::rewind_delivery`] sets every such offset back to
//! the log's end and forgets the entries at or past it. It runs when a namespace opens,
//! before its consumers and mirrors start.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::codec::{offset_key, partition_key, prefix_end, CF_CONSUMERS, CF_DELIVERY, CF_DUE};
use super::{check_namespace, db_err, StateError, StateStore};

/// What [`StateStore::rewind_delivery`] changed (all zero/`None`: nothing was ahead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryRewind {
    /// The consumer's committed offset before the rewind, when it was past the log's end.
    pub consumer_was: Option<u64>,
    /// Mirrors whose committed offset was past the log's end: `(name, offset)`.
    pub mirrors_were: Vec<(String, u64)>,
    /// Parked (delayed) entries of lost offsets, forgotten.
    pub parked_forgotten: u64,
}

impl DeliveryRewind {
    /// Whether anything was rewound.
    #[must_use]
    pub fn any(&self) -> bool {
        self.consumer_was.is_some() || !self.mirrors_were.is_empty() || self.parked_forgotten > 0
    }
}

fn read_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

impl StateStore {
    /// Rewinds a partition's consumer, delivery records, parked entries, mirror offsets and
    /// refusals to `log_next` (the log's end after recovery). Synced: the rewind must not be
    /// undone by a later crash while new records reuse the offsets.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn rewind_delivery(
        &self,
        ns: &str,
        partition: u32,
        log_next: u64,
    ) -> Result<DeliveryRewind, StateError> {
        check_namespace(ns)?;
        let mut out = DeliveryRewind::default();
        let consumers = self.cf(CF_CONSUMERS)?;
        let mut b = WriteBatch::default();
        let pkey = partition_key(ns, partition);

        let committed = self.committed_offset(ns, partition)?;
        if committed > log_next {
            out.consumer_was = Some(committed);
            b.put_cf(consumers, &pkey, log_next.to_be_bytes());
        }

        let mut mirror_prefix = pkey.clone();
        mirror_prefix.extend_from_slice(b"mirror:");
        let end = prefix_end(&mirror_prefix);
        for item in self.db.iterator_cf(
            consumers,
            IteratorMode::From(&mirror_prefix, Direction::Forward),
        ) {
            let (k, v) = item.map_err(db_err("scanning mirror offsets"))?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            match read_u64(&v) {
                Some(at) if at > log_next => {
                    let name = String::from_utf8_lossy(&k[mirror_prefix.len()..]).into_owned();
                    out.mirrors_were.push((name, at));
                    b.put_cf(consumers, &k, log_next.to_be_bytes());
                }
                _ => {}
            }
        }

        let mut refused = pkey.clone();
        refused.extend_from_slice(b"refused:");
        let mut refused_from = refused.clone();
        refused_from.extend_from_slice(&log_next.to_be_bytes());
        let refused_to = prefix_end(&refused);
        let mut stale = false;
        if self.any_in(consumers, &refused_from, &refused_to)? {
            b.delete_range_cf(consumers, refused_from, refused_to);
            stale = true;
        }
        let delivery = self.cf(CF_DELIVERY)?;
        let (records_from, records_to) = (offset_key(ns, partition, log_next), prefix_end(&pkey));
        if self.any_in(delivery, &records_from, &records_to)? {
            b.delete_range_cf(delivery, records_from, records_to);
            stale = true;
        }

        // Due keys: partition prefix, due (8 BE), offset (8 BE) — ordered by due, so only
        // scanned when one can be stale: a message is parked after the consumer passed it,
        // so a parked lost offset means the consumer's commit was past the log's end.
        let due = self.cf(CF_DUE)?;
        let due_end = prefix_end(&pkey);
        let scan_due = out.consumer_was.is_some();
        for item in self
            .db
            .iterator_cf(due, IteratorMode::From(&pkey, Direction::Forward))
            .take_while(|_| scan_due)
        {
            let (k, _) = item.map_err(db_err("scanning the due index"))?;
            if k.as_ref() >= due_end.as_slice() {
                break;
            }
            let offset = k.get(pkey.len() + 8..pkey.len() + 16).and_then(read_u64);
            if offset.is_some_and(|o| o >= log_next) {
                b.delete_cf(due, &k);
                out.parked_forgotten += 1;
            }
        }
        // Nothing ahead of the log (every start and reinstall but after a lost tail): no write.
        if out.any() || stale {
            self.db
                .write_opt(b, &Self::logged(true))
                .map_err(db_err("rewinding delivery state"))?;
        }
        Ok(out)
    }

    /// Whether column family `cf` holds a key in `[from, to)` (one seek).
    fn any_in(
        &self,
        cf: &rocksdb::ColumnFamily,
        from: &[u8],
        to: &[u8],
    ) -> Result<bool, StateError> {
        let mut it = self
            .db
            .iterator_cf(cf, IteratorMode::From(from, Direction::Forward));
        match it.next() {
            Some(item) => {
                let (k, _) = item.map_err(db_err("seeking delivery state"))?;
                Ok(k.as_ref() < to)
            }
            None => Ok(false),
        }
    }
}

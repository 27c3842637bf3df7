//! Mirrors' committed offsets (see `crate::mirror`).
//!
//! A mirror's committed offset is the first offset of its partition the backend has not yet
//! confirmed (or permanently refused). Like delivery's offsets it is **not derived** from the
//! log, so it is written through RocksDB's WAL: a process crash loses none of it; a power
//! failure may lose the last unsynced steps, which at-least-once tolerates (the mirror
//! publishes those records again).
//!
//! | column family | key | value |
//! |---|---|---|
//! | `consumers` | `ns \0 partition(4 BE) "mirror:" name` | committed offset (8 BE) |
//! | `consumers` | `ns \0 partition(4 BE) "refused:" offset(8 BE) name` | a record the mirror refused for good: `{"reason", "atMs"}` (JSON) |
//!
//! The key extends delivery's consumer key (`ns \0 partition(4 BE)`, exactly 4 bytes after
//! the `\0`), so the two never collide, and [`StateStore::delete_delivery_data`] (a range
//! delete over the namespace's prefix) removes these entries with the namespace.

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::codec::{partition_key, CF_CONSUMERS};
use super::{check_namespace, db_err, StateError, StateStore};

/// The `consumers` key of a mirror's committed offset.
fn mirror_key(ns: &str, partition: u32, mirror: &str) -> Vec<u8> {
    let mut k = partition_key(ns, partition);
    k.extend_from_slice(b"mirror:");
    k.extend_from_slice(mirror.as_bytes());
    k
}

/// The prefix of the refusals of the record at `offset`.
fn refusal_prefix(ns: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = partition_key(ns, partition);
    k.extend_from_slice(b"refused:");
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The keys of a partition's refusals of records below `offset`: `[from, to)`.
pub(super) fn refusal_range(ns: &str, partition: u32, offset: u64) -> (Vec<u8>, Vec<u8>) {
    (
        refusal_prefix(ns, partition, 0),
        refusal_prefix(ns, partition, offset),
    )
}

impl StateStore {
    /// A mirror's committed offset (0 when it never committed).
    ///
    /// # Errors
    /// An invalid namespace, a RocksDB error or a corrupt value.
    pub fn mirror_offset(&self, ns: &str, partition: u32, mirror: &str) -> Result<u64, StateError> {
        check_namespace(ns)?;
        let k = mirror_key(ns, partition, mirror);
        match self
            .db
            .get_pinned_cf(self.cf(CF_CONSUMERS)?, &k)
            .map_err(db_err("reading a mirror's committed offset"))?
        {
            None => Ok(0),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StateError::Corrupt {
                    cf: CF_CONSUMERS,
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "mirror offset is not 8 bytes",
                })?;
                Ok(u64::from_be_bytes(b))
            }
        }
    }

    /// Stores a mirror's committed offset through the WAL (not synced: a process crash keeps
    /// it, a power failure may roll it back, which re-publishes).
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn commit_mirror_offset(
        &self,
        ns: &str,
        partition: u32,
        mirror: &str,
        next: u64,
        refused: &[(u64, Vec<u8>)],
    ) -> Result<(), StateError> {
        check_namespace(ns)?;
        let cf = self.cf(CF_CONSUMERS)?;
        let mut b = WriteBatch::default();
        b.put_cf(cf, mirror_key(ns, partition, mirror), next.to_be_bytes());
        for (offset, record) in refused {
            let mut k = refusal_prefix(ns, partition, *offset);
            k.extend_from_slice(mirror.as_bytes());
            b.put_cf(cf, k, record);
        }
        let mut o = WriteOptions::default();
        o.set_sync(false);
        self.db
            .write_opt(b, &o)
            .map_err(db_err("writing a mirror's committed offset"))
    }

    /// Whether `mirror` refused for good any record of `first..end` of the partition (one
    /// range scan: the refusals are keyed by offset, then mirror name).
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn refused_any(
        &self,
        ns: &str,
        partition: u32,
        first: u64,
        end: u64,
        mirror: &str,
    ) -> Result<bool, StateError> {
        check_namespace(ns)?;
        if first >= end {
            return Ok(false);
        }
        let start = refusal_prefix(ns, partition, first);
        let stop = refusal_prefix(ns, partition, end);
        let head = partition_key(ns, partition).len() + b"refused:".len();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(stop);
        for item in self.db.iterator_cf_opt(
            self.cf(CF_CONSUMERS)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, _) = item.map_err(db_err("reading mirror refusals"))?;
            if k.get(head + 8..) == Some(mirror.as_bytes()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The refusals of the record at `offset`: `(mirror name, record)`.
    ///
    /// # Errors
    /// An invalid namespace or a RocksDB error.
    pub fn mirror_refusals(
        &self,
        ns: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        check_namespace(ns)?;
        let prefix = refusal_prefix(ns, partition, offset);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_CONSUMERS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item.map_err(db_err("reading mirror refusals"))?;
            let Some(name) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((String::from_utf8_lossy(name).into_owned(), v.into_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_offsets_are_apart_from_delivery_and_deleted_with_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path().join("state")).unwrap();
        assert_eq!(s.mirror_offset("a", 0, "redis_streams").unwrap(), 0);
        s.commit_mirror_offset("a", 0, "redis_streams", 42, &[(40, b"{}".to_vec())])
            .unwrap();
        s.commit_mirror_offset("a", 1, "redis_streams", 7, &[])
            .unwrap();
        s.commit_mirror_offset("a", 0, "other", 3, &[(40, b"{}".to_vec())])
            .unwrap();
        let r = s.mirror_refusals("a", 0, 40).unwrap();
        assert_eq!(
            r.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["other", "redis_streams"]
        );
        assert!(s.mirror_refusals("a", 0, 41).unwrap().is_empty());
        assert!(s.refused_any("a", 0, 40, 41, "redis_streams").unwrap());
        assert!(s.refused_any("a", 0, 0, 100, "other").unwrap());
        assert!(!s.refused_any("a", 0, 41, 100, "redis_streams").unwrap());
        assert!(!s.refused_any("a", 0, 0, 40, "redis_streams").unwrap());
        assert!(!s.refused_any("a", 1, 0, 100, "redis_streams").unwrap());
        assert!(
            !s.refused_any("a", 0, 0, 100, "redis").unwrap(),
            "a name prefix is not the name"
        );
        assert_eq!(s.mirror_offset("a", 0, "redis_streams").unwrap(), 42);
        assert_eq!(s.mirror_offset("a", 1, "redis_streams").unwrap(), 7);
        assert_eq!(s.mirror_offset("a", 0, "other").unwrap(), 3);
        assert_eq!(
            s.committed_offset("a", 0).unwrap(),
            0,
            "delivery's offset untouched"
        );
        s.delete_delivery_data("a").unwrap();
        assert_eq!(s.mirror_offset("a", 0, "redis_streams").unwrap(), 0);
        assert_eq!(s.mirror_offset("a", 1, "redis_streams").unwrap(), 0);
        assert!(s.mirror_refusals("a", 0, 40).unwrap().is_empty());
    }
}

//! The transactions column family: each multi-partition transaction's record (its state and
//! each mutation's), owned by `crate::txn`.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `txn` | the transaction id | the transaction record (JSON, owned by `crate::txn`) |
//!
//! Like delivery state, these records are not derived from the logs (only their first version
//! is: a transaction's log record re-creates it), so they are written through RocksDB's WAL;
//! a write that must survive a power failure (a mutation's captured inverse, before the
//! mutation runs) is synced.

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::codec::CF_TXN;
use super::{db_err, StateError, StateStore};

impl StateStore {
    /// Stores a transaction record (`sync`: and fsyncs RocksDB's WAL).
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn put_txn(&self, id: &str, record: &[u8], sync: bool) -> Result<(), StateError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_TXN)?, id.as_bytes(), record);
        let mut o = WriteOptions::default();
        o.set_sync(sync);
        self.db
            .write_opt(b, &o)
            .map_err(db_err("writing a transaction record"))
    }

    /// A transaction record.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn get_txn(&self, id: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get_cf(self.cf(CF_TXN)?, id.as_bytes())
            .map_err(db_err("reading a transaction record"))
    }

    /// Deletes the transaction records of namespace `ns` (its removal). The records are keyed
    /// by transaction id, so this reads them all.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn delete_txns_of(&self, ns: &str) -> Result<usize, StateError> {
        #[derive(serde::Deserialize)]
        struct Owner {
            namespace: String,
        }
        let cf = self.cf(CF_TXN)?;
        let mut b = WriteBatch::default();
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(db_err("listing transaction records"))?;
            if serde_json::from_slice::<Owner>(&v).is_ok_and(|o| o.namespace == ns) {
                b.delete_cf(cf, k);
                n += 1;
            }
        }
        let mut o = WriteOptions::default();
        o.set_sync(true);
        self.db
            .write_opt(b, &o)
            .map_err(db_err("deleting a namespace's transaction records"))?;
        Ok(n)
    }

    /// Every transaction record: `(id, record)`, in id order.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn list_txns(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let cf = self.cf(CF_TXN)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(db_err("listing transaction records"))?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.into_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stored_listed_and_deleted_with_their_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path().join("state")).unwrap();
        s.put_txn("txn_1_a", br#"{"namespace":"a","x":1}"#, false)
            .unwrap();
        s.put_txn("txn_2_b", br#"{"namespace":"b"}"#, true).unwrap();
        s.put_txn("txn_3_a", br#"{"namespace":"a"}"#, false)
            .unwrap();
        assert_eq!(s.list_txns().unwrap().len(), 3);
        assert!(s.get_txn("txn_1_a").unwrap().is_some());
        assert_eq!(s.delete_txns_of("a").unwrap(), 2);
        let left: Vec<String> = s.list_txns().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, ["txn_2_b"]);
        assert!(s.get_txn("txn_1_a").unwrap().is_none());
    }
}

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

//! API keys created at run time (`/api/v1/keys`): the key's id, its namespaces and the
//! SHA-256 of its secret — never the secret. Not derived from any log: written through
//! RocksDB's WAL and synced, like the namespace registry.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `meta` | `api_key \0 id` | the key's record (JSON, opaque here) |

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::codec::{prefix_end, CF_META};
use super::{db_err, StateError, StateStore};

const PREFIX: &[u8] = b"api_key\0";

fn key_of(id: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

impl StateStore {
    /// Stores a run-time API key's record (synced before returning).
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn put_api_key(&self, id: &str, record: &[u8]) -> Result<(), StateError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META)?, key_of(id), record);
        self.db
            .write_opt(b, &self.synced)
            .map_err(db_err("storing an API key"))
    }

    /// Deletes a run-time API key's record (synced before returning).
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn delete_api_key(&self, id: &str) -> Result<(), StateError> {
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(CF_META)?, key_of(id));
        self.db
            .write_opt(b, &self.synced)
            .map_err(db_err("deleting an API key"))
    }

    /// Every run-time API key's record, by id.
    ///
    /// # Errors
    /// A RocksDB error.
    pub fn list_api_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let cf = self.cf(CF_META)?;
        let end = prefix_end(PREFIX);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(PREFIX, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("listing API keys"))?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            let id = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            out.push((id, v.into_vec()));
        }
        Ok(out)
    }
}

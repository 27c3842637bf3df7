//! Who a presented key is: the keys of the configuration (read-only) and the keys created at
//! run time through `/api/v1/keys` (the admin key), whose SHA-256 digests the state store
//! keeps. A created key works at once; a revoked one is refused on its next request. Only
//! digests are held, in memory and on disk; the secret is shown once, to its creator.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{key_id_ok, sha256, KeyIdentity, Keyring, NamespaceAccess, Sha};
use crate::model::namespace::{check_namespace_name, normalise_namespace_name};
use crate::state::StateStore;

/// The most run-time keys one server holds.
pub const MAX_RUNTIME_KEYS: usize = 10_000;

/// Why a key could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request names a bad field.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The id is taken (by the configuration, the admin key or a run-time key).
    #[error("an API key with id {0:?} exists already")]
    Exists(String),
    /// No run-time key has this id.
    #[error("no API key with id {0:?}")]
    NotFound(String),
    /// The key is defined in the configuration file, which the API cannot change.
    #[error(
        "API key {0:?} is defined in the configuration file: remove it there (read-only here)"
    )]
    ReadOnly(String),
    /// [`MAX_RUNTIME_KEYS`] keys exist.
    #[error("{MAX_RUNTIME_KEYS} API keys exist already: revoke unused ones first")]
    Full,
    /// The state store failed.
    #[error("storing the key: {0}")]
    Store(#[from] crate::state::StateError),
}

/// A run-time key as stored (its digest, never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    id: String,
    namespaces: Vec<String>,
    sha256: String,
    created_at_ms: u64,
}

/// A key as listed: never its secret or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// Its namespaces (`["*"]`: all).
    pub namespaces: Vec<String>,
    /// `config` (read-only) or `runtime`.
    pub source: &'static str,
    /// When a run-time key was created (ms since the epoch).
    pub created_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Runtime {
    by_digest: HashMap<Sha, KeyIdentity>,
    by_id: HashMap<String, (Sha, Stored)>,
}

/// The configured keys and the run-time ones.
#[derive(Debug)]
pub struct ApiKeys {
    config: Keyring,
    config_namespaces: HashMap<String, Vec<String>>,
    runtime: RwLock<Runtime>,
    /// Serialises creations and revocations (check, store, publish), so the lock requests
    /// read is never held across the state store's synced write.
    changes: std::sync::Mutex<()>,
}

fn identity(id: &str, namespaces: &[String]) -> KeyIdentity {
    KeyIdentity {
        id: id.to_owned(),
        admin: false,
        namespaces: NamespaceAccess::from_list(namespaces),
    }
}

/// A new secret: `wald_` and 64 hex digits (256 random bits).
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("wald_{}", hex::encode(bytes))
}

impl ApiKeys {
    /// The configured keys and the run-time keys the state store holds.
    ///
    /// # Errors
    /// The state store cannot be read.
    pub fn load(
        config: &crate::config::AuthConfig,
        state: &StateStore,
    ) -> Result<Self, crate::state::StateError> {
        let mut rt = Runtime::default();
        for (id, bytes) in state.list_api_keys()? {
            let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
                tracing::error!(key = %id, "a stored API key cannot be read; it is ignored");
                continue;
            };
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&stored.sha256, &mut digest).is_err() {
                tracing::error!(key = %id, "a stored API key has a malformed digest; it is ignored");
                continue;
            }
            rt.by_digest
                .insert(digest, identity(&stored.id, &stored.namespaces));
            rt.by_id.insert(stored.id.clone(), (digest, stored));
        }
        Ok(Self {
            config: config.keyring(),
            config_namespaces: config
                .api_keys
                .iter()
                .map(|k| (k.id.clone(), k.namespaces.clone()))
                .collect(),
            runtime: RwLock::new(rt),
            changes: std::sync::Mutex::new(()),
        })
    }

    /// True when requests to the write/read API need a valid key.
    #[must_use]
    pub fn requires_api_key(&self) -> bool {
        self.config.requires_api_key()
    }

    /// Whose key `presented` is.
    #[must_use]
    pub fn verify(&self, presented: &str) -> Option<KeyIdentity> {
        let digest = sha256(presented);
        if let Some(who) = self.config.verify_digest(&digest) {
            return Some(who.clone());
        }
        self.runtime
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_digest
            .get(&digest)
            .cloned()
    }

    /// Creates a key for `namespaces` (`["*"]`: all); returns the secret (shown once).
    ///
    /// # Errors
    /// A bad id or namespace, an id in use, too many keys, or the state store.
    pub fn create(
        &self,
        state: &StateStore,
        id: &str,
        namespaces: &[String],
        now_ms: u64,
    ) -> Result<(String, KeyInfo), KeyError> {
        let invalid = |field: &str, reason: String| KeyError::Invalid {
            field: field.to_owned(),
            reason,
        };
        if !key_id_ok(id) {
            return Err(invalid(
                "id",
                format!("{id:?} must be 1 to 100 letters, digits, '.', '_' or '-'"),
            ));
        }
        if namespaces.is_empty() {
            return Err(invalid(
                "namespaces",
                "list the namespaces the key may use, or [\"*\"] for all".to_owned(),
            ));
        }
        let mut names = Vec::with_capacity(namespaces.len());
        for (i, ns) in namespaces.iter().enumerate() {
            if ns.trim() == "*" {
                names.push("*".to_owned());
                continue;
            }
            let n = normalise_namespace_name(ns);
            check_namespace_name(&n)
                .map_err(|reason| invalid(&format!("namespaces[{i}]"), reason))?;
            names.push(n);
        }
        if self.config.entries().any(|who| who.id == id) {
            return Err(KeyError::Exists(id.to_owned()));
        }
        let _one_change = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let rt = self.runtime.read().unwrap_or_else(PoisonError::into_inner);
            if rt.by_id.contains_key(id) {
                return Err(KeyError::Exists(id.to_owned()));
            }
            if rt.by_id.len() >= MAX_RUNTIME_KEYS {
                return Err(KeyError::Full);
            }
        }
        let secret = new_secret();
        let digest = sha256(&secret);
        let stored = Stored {
            id: id.to_owned(),
            namespaces: names.clone(),
            sha256: hex::encode(digest),
            created_at_ms: now_ms,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| invalid("id", e.to_string()))?;
        // Stored (synced) before it is usable or shown: a key that works survives a restart.
        state.put_api_key(id, &bytes)?;
        let mut rt = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
        rt.by_digest.insert(digest, identity(id, &names));
        rt.by_id.insert(id.to_owned(), (digest, stored));
        Ok((
            secret,
            KeyInfo {
                id: id.to_owned(),
                namespaces: names,
                source: "runtime",
                created_at_ms: Some(now_ms),
            },
        ))
    }

    /// Revokes a run-time key: its next request is refused.
    ///
    /// # Errors
    /// A configured key (read-only), an unknown id, or the state store.
    pub fn revoke(&self, state: &StateStore, id: &str) -> Result<(), KeyError> {
        if self.config.entries().any(|who| who.id == id) {
            return Err(KeyError::ReadOnly(id.to_owned()));
        }
        let _one_change = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut rt = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
            let Some((digest, _)) = rt.by_id.get(id).cloned() else {
                return Err(KeyError::NotFound(id.to_owned()));
            };
            // Refused in memory first: no request is served with it once this returns.
            rt.by_digest.remove(&digest);
        }
        // Listed until the store forgot it, so that a failed revocation can be retried (a
        // restart before that would bring the key back).
        state.delete_api_key(id)?;
        self.runtime
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .remove(id);
        Ok(())
    }

    /// Every key but the admin key, configured ones first, then run-time ones by id.
    #[must_use]
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut out: Vec<KeyInfo> = self
            .config
            .entries()
            .filter(|who| !who.admin)
            .map(|who| KeyInfo {
                id: who.id.clone(),
                namespaces: self
                    .config_namespaces
                    .get(&who.id)
                    .cloned()
                    .unwrap_or_default(),
                source: "config",
                created_at_ms: None,
            })
            .collect();
        let rt = self.runtime.read().unwrap_or_else(PoisonError::into_inner);
        let mut runtime: Vec<KeyInfo> = rt
            .by_id
            .values()
            .map(|(_, s)| KeyInfo {
                id: s.id.clone(),
                namespaces: s.namespaces.clone(),
                source: "runtime",
                created_at_ms: Some(s.created_at_ms),
            })
            .collect();
        runtime.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(runtime);
        out
    }
}

//! `[auth]`: the admin key and the API keys, plain or as SHA-256 digests, and their
//! verification in constant time.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{invalid, ConfigError};
use crate::model::namespace::{check_namespace_name, normalise_namespace_name};

/// The identity of the admin key (in logs and in [`KeyIdentity::id`]); no API key may use it.
pub const ADMIN_KEY_ID: &str = "admin";

/// `[auth]`. `Debug` never shows a key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The admin key in plain text: namespace and DLQ administration, and every namespace.
    /// Default: unset (the admin API answers 401). Env: `WALD_ADMIN_KEY`; CLI: `--admin-key`.
    pub admin_key: Option<String>,
    /// The admin key as the hex of its SHA-256 digest (64 hex digits), instead of
    /// `admin_key`. Default: unset.
    pub admin_key_sha256: Option<String>,
    /// A file holding the admin key (its first line; trailing white space ignored), so the
    /// key is not on the command line (`ps`) or in the config file. Instead of `admin_key`.
    /// Default: unset. Env: `WALD_AUTH__ADMIN_KEY_FILE`; CLI: `--admin-key-file`.
    pub admin_key_file: Option<PathBuf>,
    /// Serve the write and read API to callers without a key. Default: false — every request
    /// needs a valid key (an API key or the admin key). When true, the server logs a warning
    /// at start (an error-level one when it listens on a non-loopback address); a namespace
    /// whose `accessControl.allowedApiKeys` is not empty still refuses anonymous callers.
    pub open: bool,
    /// Kept so that older config files load; keys are required unless `open = true`.
    /// `true` together with `open = true` is refused. Default: false.
    pub require_api_key: bool,
    /// Failed authentications (unknown key) a client address may make per minute before its
    /// requests are answered 429 for the rest of that minute. Default: 10. Range: 1 ..= 10000.
    pub failed_auth_per_minute: u32,
    /// `[[auth.api_keys]]`: the API keys. Default: none.
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_key: None,
            admin_key_sha256: None,
            admin_key_file: None,
            open: false,
            require_api_key: false,
            failed_auth_per_minute: 10,
            api_keys: Vec::new(),
        }
    }
}

/// The shortest plain admin key accepted (characters): a key that guards every namespace
/// must not be guessable. Generate one with `openssl rand -hex 32`.
pub const MIN_ADMIN_KEY_CHARS: usize = 32;

/// One `[[auth.api_keys]]` entry. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name: in namespaces' `accessControl.allowedApiKeys`, in logs and metrics
    /// (never the key itself). Required; letters, digits, `.`, `_`, `-`; at most 100.
    pub id: String,
    /// The key in plain text. Give exactly one of `key` and `key_sha256`.
    pub key: Option<String>,
    /// The hex of the key's SHA-256 digest (64 hex digits).
    pub key_sha256: Option<String>,
    /// Namespaces the key may use, or `["*"]` for all. Required (at least one).
    pub namespaces: Vec<String>,
}

/// Who a presented key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The key's id ([`ADMIN_KEY_ID`] for the admin key).
    pub id: String,
    /// True for the admin key.
    pub admin: bool,
    /// The namespaces the key may use.
    pub namespaces: NamespaceAccess,
}

/// The namespaces a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceAccess {
    /// Every namespace (`"*"`, or the admin key).
    All,
    /// These namespaces (normalized: trimmed, lower-case).
    Only(BTreeSet<String>),
}

impl NamespaceAccess {
    /// True when the key may use `namespace` (an already normalized name).
    #[must_use]
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(namespace),
        }
    }

    /// The access a list of namespaces (or `["*"]`) gives.
    #[must_use]
    pub fn from_list(list: &[String]) -> Self {
        if list.iter().any(|n| n.trim() == "*") {
            Self::All
        } else {
            Self::Only(list.iter().map(|n| normalise_namespace_name(n)).collect())
        }
    }
}

/// Whether `id` is a valid API key id: 1 to 100 letters, digits, `.`, `_` or `-`.
#[must_use]
pub fn key_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A SHA-256 digest of a key.
pub type Sha = [u8; 32];

/// The SHA-256 digest of a key.
#[must_use]
pub fn sha256(s: &str) -> Sha {
    Sha256::digest(s.as_bytes()).into()
}

fn decode_sha(hex_digest: &str) -> Option<Sha> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
    Some(out)
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &Sha, b: &Sha) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl AuthConfig {
    /// True when requests to the write/read API need a valid key: unless `open = true`.
    #[must_use]
    pub fn requires_api_key(&self) -> bool {
        !self.open
    }

    /// Reads `admin_key_file` (if set) into the admin key.
    ///
    /// # Errors
    /// The file cannot be read, or holds no key (named `auth.admin_key_file`).
    pub fn read_admin_key_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.admin_key_file.clone() else {
            return Ok(());
        };
        if self.admin_key.is_some() || self.admin_key_sha256.is_some() {
            return Err(invalid(
                "auth.admin_key_file",
                "give one of auth.admin_key, auth.admin_key_sha256 and auth.admin_key_file",
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                "auth.admin_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = text.lines().next().unwrap_or("").trim_end().to_owned();
        if key.is_empty() {
            return Err(invalid(
                "auth.admin_key_file",
                format!("{} holds no key on its first line", path.display()),
            ));
        }
        self.admin_key = Some(key);
        Ok(())
    }

    /// True when an admin key is configured.
    #[must_use]
    pub fn has_admin_key(&self) -> bool {
        self.admin_key.is_some() || self.admin_key_sha256.is_some()
    }

    /// Whose key `presented` is, comparing SHA-256 digests in constant time. Hashes the
    /// configured plain keys on every call: on the request path build a [`Keyring`] once.
    #[must_use]
    pub fn verify(&self, presented: &str) -> Option<KeyIdentity> {
        self.keyring().verify(presented).cloned()
    }

    /// The digests of every configured key, for verification on the request path.
    /// Entries whose digest is malformed (refused by
    /// [`Config::validate`](super::Config::validate)) never match.
    #[must_use]
    pub fn keyring(&self) -> Keyring {
        let digest = |plain: &Option<String>, hashed: &Option<String>| match (plain, hashed) {
            (Some(key), _) => Some(sha256(key)),
            (None, Some(h)) => decode_sha(h),
            (None, None) => None,
        };
        let admin = digest(&self.admin_key, &self.admin_key_sha256).map(|d| {
            let who = KeyIdentity {
                id: ADMIN_KEY_ID.to_owned(),
                admin: true,
                namespaces: NamespaceAccess::All,
            };
            (d, who)
        });
        let keys = self.api_keys.iter().filter_map(|k| {
            let who = KeyIdentity {
                id: k.id.clone(),
                admin: false,
                namespaces: NamespaceAccess::from_list(&k.namespaces),
            };
            digest(&k.key, &k.key_sha256).map(|d| (d, who))
        });
        Keyring {
            entries: admin.into_iter().chain(keys).collect(),
            requires_api_key: self.requires_api_key(),
        }
    }

    /// Replaces the admin key, in whichever form it was given (environment and CLI).
    pub(crate) fn replace_admin_key(&mut self, key: String) {
        self.admin_key = Some(key);
        self.admin_key_sha256 = None;
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_secret(
            "auth.admin_key",
            "auth.admin_key_sha256",
            self.admin_key.as_ref(),
            self.admin_key_sha256.as_ref(),
            false,
        )?;
        if let Some(k) = &self.admin_key {
            let n = k.chars().count();
            if n < MIN_ADMIN_KEY_CHARS {
                return Err(invalid(
                    "auth.admin_key",
                    format!(
                        "has {n} characters; the admin key needs at least {MIN_ADMIN_KEY_CHARS} \
                         (e.g. `openssl rand -hex 32`), or give its digest as auth.admin_key_sha256"
                    ),
                ));
            }
        }
        if self.open && self.require_api_key {
            return Err(invalid(
                "auth.require_api_key",
                "is true while auth.open is true; keys are required unless open = true: drop one",
            ));
        }
        if !(1..=10_000).contains(&self.failed_auth_per_minute) {
            return Err(invalid(
                "auth.failed_auth_per_minute",
                format!("must be 1 to 10000, got {}", self.failed_auth_per_minute),
            ));
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let at = format!("auth.api_keys[{i}]");
            if !key_id_ok(&k.id) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!(
                        "{:?} must be 1 to 100 letters, digits, '.', '_' or '-'",
                        k.id
                    ),
                ));
            }
            if k.id == ADMIN_KEY_ID {
                return Err(invalid(
                    format!("{at}.id"),
                    "\"admin\" is the admin key's id",
                ));
            }
            if let Some(first) = ids.insert(&k.id, i) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("{:?} is already used by auth.api_keys[{first}]", k.id),
                ));
            }
            check_secret(
                &format!("{at}.key"),
                &format!("{at}.key_sha256"),
                k.key.as_ref(),
                k.key_sha256.as_ref(),
                true,
            )?;
            if k.namespaces.is_empty() {
                return Err(invalid(
                    format!("{at}.namespaces"),
                    "list the namespaces the key may use, or [\"*\"] for all",
                ));
            }
            for (j, ns) in k.namespaces.iter().enumerate() {
                if ns.trim() != "*" {
                    check_namespace_name(&normalise_namespace_name(ns))
                        .map_err(|reason| invalid(format!("{at}.namespaces[{j}]"), reason))?;
                }
            }
        }
        // Two entries with one secret would make the identity ambiguous.
        let ring = self.keyring();
        for (i, (digest, who)) in ring.entries.iter().enumerate() {
            if let Some((_, first)) = ring.entries[..i].iter().find(|(d, _)| ct_eq(d, digest)) {
                let key = if who.admin {
                    "auth.admin_key".to_owned()
                } else {
                    format!("auth.api_keys[{}]", self.index_of(&who.id))
                };
                return Err(invalid(
                    key,
                    format!("is the same secret as the key {:?}", first.id),
                ));
            }
        }
        Ok(())
    }

    fn index_of(&self, id: &str) -> usize {
        self.api_keys
            .iter()
            .position(|k| k.id == id)
            .unwrap_or_default()
    }
}

/// Checks one plain/hashed pair: at most one (exactly one when `required`), the plain one
/// not empty, the hashed one 64 hex digits.
fn check_secret(
    plain_key: &str,
    hashed_key: &str,
    plain: Option<&String>,
    hashed: Option<&String>,
    required: bool,
) -> Result<(), ConfigError> {
    match (plain, hashed) {
        (Some(_), Some(_)) => Err(invalid(
            hashed_key,
            format!("give either {plain_key} or {hashed_key}, not both"),
        )),
        (None, None) if required => Err(invalid(plain_key, format!("required (or {hashed_key})"))),
        (Some(p), None) if p.is_empty() => Err(invalid(plain_key, "must not be empty")),
        (None, Some(h)) if decode_sha(h).is_none() => Err(invalid(
            hashed_key,
            "must be the hex of a SHA-256 digest: 64 hex digits (e.g. `printf %s KEY | sha256sum`)",
        )),
        _ => Ok(()),
    }
}

/// The digests of the configured keys, built once by [`AuthConfig::keyring`].
/// `Debug` shows the ids only.
#[derive(Clone)]
pub struct Keyring {
    entries: Vec<(Sha, KeyIdentity)>,
    requires_api_key: bool,
}

impl Keyring {
    /// The ids of the configured keys (the admin key's included).
    pub fn entries(&self) -> impl Iterator<Item = &KeyIdentity> {
        self.entries.iter().map(|(_, who)| who)
    }

    /// Whether `digest` is the digest of a configured key.
    #[must_use]
    pub fn has_digest(&self, digest: &Sha) -> bool {
        self.entries.iter().any(|(d, _)| ct_eq(d, digest))
    }

    /// Whose key `presented` is. Hashes it once and compares with every entry in constant
    /// time, without stopping at the first match.
    #[must_use]
    pub fn verify(&self, presented: &str) -> Option<&KeyIdentity> {
        self.verify_digest(&sha256(presented))
    }

    /// [`Keyring::verify`] for a key already hashed (callers that look it up elsewhere too
    /// hash it once).
    #[must_use]
    pub fn verify_digest(&self, digest: &Sha) -> Option<&KeyIdentity> {
        let mut found = None;
        for (d, who) in &self.entries {
            if ct_eq(d, digest) && found.is_none() {
                found = Some(who);
            }
        }
        found
    }

    /// True when requests to the write/read API need a valid key.
    #[must_use]
    pub fn requires_api_key(&self) -> bool {
        self.requires_api_key
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "ids",
                &self.entries.iter().map(|(_, w)| &w.id).collect::<Vec<_>>(),
            )
            .field("requires_api_key", &self.requires_api_key)
            .finish()
    }
}

fn redacted(s: Option<&String>) -> Option<&'static str> {
    s.map(|_| "<redacted>")
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("admin_key", &redacted(self.admin_key.as_ref()))
            .field(
                "admin_key_sha256",
                &redacted(self.admin_key_sha256.as_ref()),
            )
            .field("admin_key_file", &self.admin_key_file)
            .field("open", &self.open)
            .field("require_api_key", &self.require_api_key)
            .field("failed_auth_per_minute", &self.failed_auth_per_minute)
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("key", &redacted(self.key.as_ref()))
            .field("key_sha256", &redacted(self.key_sha256.as_ref()))
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

//! Environment overrides: `WALD_LISTEN`, `WALD_DATA_DIR`, `WALD_ADMIN_KEY` (contract names),
//! and `WALD_<SECTION>__<KEY>` (`__` between the parts of the dotted key, any case) for every
//! scalar key, e.g. `WALD_SERVER__REQUEST_TIMEOUT_MS=5000`,
//! `WALD_SERVER__CORS__ALLOWED_ORIGINS=https://a.example,https://b.example`.
//!
//! Lists are comma-separated; an empty value unsets an optional key. Other `WALD_` variables
//! without `__` (e.g. a log filter) are not configuration and are ignored; a `__` variable
//! that names no key is refused, as an unknown key in the file is.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::Deserialize;

use super::{Config, ConfigError};

/// The contract's variables and the key each sets. They are applied after the
/// `WALD_<SECTION>__<KEY>` form, so they win over it.
pub(super) const CONTRACT_VARS: [(&str, &str); 3] = [
    ("WALD_LISTEN", "server.listen"),
    ("WALD_DATA_DIR", "server.data_dir"),
    ("WALD_ADMIN_KEY", "auth.admin_key"),
];

/// The process environment's `WALD_` variables.
pub(super) fn process_vars() -> Result<Vec<(String, String)>, ConfigError> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with("WALD_").then_some((name, value))
        })
        .map(|(name, value)| match value.into_string() {
            Ok(value) => Ok((name, value)),
            Err(_) => Err(ConfigError::Env {
                var: name,
                message: "is not valid UTF-8".into(),
            }),
        })
        .collect()
}

fn parse<T>(key: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("{key}: cannot use {value:?}: {e}"))
}

fn optional<T>(key: &str, value: &str) -> Result<Option<T>, String>
where
    T: FromStr,
    T::Err: Display,
{
    if value.trim().is_empty() {
        Ok(None)
    } else {
        parse(key, value).map(Some)
    }
}

fn variant<T: for<'de> Deserialize<'de>>(key: &str, value: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<ValueError>::new(value.trim()))
        .map_err(|e| format!("{key}: cannot use {value:?}: {e}"))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn secret(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

impl Config {
    /// Applies `WALD_` overrides from `vars` (name, value) — the process environment in
    /// [`Config::load`], any list in tests. The error names the variable and the key.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut general: Vec<(String, String, String)> = Vec::new();
        let mut contract: Vec<(String, &str, String)> = Vec::new();
        for (var, value) in vars {
            let (var, value) = (var.as_ref(), value.as_ref());
            if let Some((_, key)) = CONTRACT_VARS.iter().find(|(name, _)| *name == var) {
                contract.push((var.to_owned(), key, value.to_owned()));
            } else if let Some(rest) = var.strip_prefix("WALD_").filter(|r| r.contains("__")) {
                let key = rest
                    .split("__")
                    .collect::<Vec<_>>()
                    .join(".")
                    .to_lowercase();
                general.push((var.to_owned(), key, value.to_owned()));
            }
        }
        general.sort();
        contract.sort();
        for (var, key, value) in general {
            self.set_key(&key, &value)
                .map_err(|message| ConfigError::Env { var, message })?;
        }
        for (var, key, value) in contract {
            if key == "auth.admin_key" {
                if value.is_empty() {
                    return Err(ConfigError::Env {
                        var,
                        message: "auth.admin_key: must not be empty".into(),
                    });
                }
                self.auth.replace_admin_key(value);
            } else {
                self.set_key(key, &value)
                    .map_err(|message| ConfigError::Env { var, message })?;
            }
        }
        Ok(())
    }

    /// Sets one scalar or list key from its text form. Keys of `[[auth.api_keys]]` and
    /// `[[namespaces]]` are not settable this way.
    pub(super) fn set_key(&mut self, key: &str, v: &str) -> Result<(), String> {
        let (server, auth, storage, rates) = (
            &mut self.server,
            &mut self.auth,
            &mut self.storage,
            &mut self.rate_limits,
        );
        match key {
            "server.listen" => server.listen = parse(key, v)?,
            "server.data_dir" => server.data_dir = v.into(),
            "server.request_timeout_ms" => server.request_timeout_ms = parse(key, v)?,
            "server.max_body_bytes" => server.max_body_bytes = parse(key, v)?,
            "server.shutdown_grace_ms" => server.shutdown_grace_ms = parse(key, v)?,
            "server.max_delay_secs" => server.max_delay_secs = parse(key, v)?,
            "server.health_details_public" => server.health_details_public = parse(key, v)?,
            "server.metrics_public" => server.metrics_public = parse(key, v)?,
            "server.access_log" => server.access_log = parse(key, v)?,
            "server.header_read_timeout_ms" => server.header_read_timeout_ms = parse(key, v)?,
            "server.idle_timeout_ms" => server.idle_timeout_ms = parse(key, v)?,
            "server.max_connections" => server.max_connections = parse(key, v)?,
            "server.max_read_bytes" => server.max_read_bytes = parse(key, v)?,
            "server.max_concurrent_reads" => server.max_concurrent_reads = parse(key, v)?,
            "server.io_threads" => server.io_threads = parse(key, v)?,
            "server.cors.allowed_origins" => server.cors.allowed_origins = list(v),
            "server.allowed_hosts" => server.allowed_hosts = list(v),
            "server.cors.allowed_methods" => server.cors.allowed_methods = list(v),
            "server.cors.allowed_headers" => server.cors.allowed_headers = list(v),
            "server.cors.max_age_secs" => server.cors.max_age_secs = parse(key, v)?,
            "auth.admin_key" => auth.admin_key = secret(v),
            "auth.admin_key_sha256" => auth.admin_key_sha256 = secret(v),
            "auth.require_api_key" => auth.require_api_key = parse(key, v)?,
            "auth.open" => auth.open = parse(key, v)?,
            "auth.admin_key_file" => auth.admin_key_file = (!v.is_empty()).then(|| v.into()),
            "auth.failed_auth_per_minute" => auth.failed_auth_per_minute = parse(key, v)?,
            "storage.segment_bytes" => storage.segment_bytes = parse(key, v)?,
            "storage.first_segment_bytes" => storage.first_segment_bytes = parse(key, v)?,
            "storage.segment_max_age_secs" => storage.segment_max_age_secs = parse(key, v)?,
            "storage.max_record_bytes" => storage.max_record_bytes = parse(key, v)?,
            "storage.index_interval_bytes" => storage.index_interval_bytes = parse(key, v)?,
            "storage.preallocate" => storage.preallocate = variant(key, v)?,
            "storage.max_batch_bytes" => storage.max_batch_bytes = parse(key, v)?,
            "storage.max_pending_bytes" => storage.max_pending_bytes = parse(key, v)?,
            "storage.background_sync_interval_ms" => {
                storage.background_sync_interval_ms = parse(key, v)?;
            }
            "storage.recovery_mode" => storage.recovery_mode = variant(key, v)?,
            "storage.verify_on_open" => storage.verify_on_open = parse(key, v)?,
            "storage.retention_max_age_secs" => storage.retention_max_age_secs = optional(key, v)?,
            "storage.retention_max_bytes" => storage.retention_max_bytes = optional(key, v)?,
            "storage.retention_interval_ms" => storage.retention_interval_ms = parse(key, v)?,
            "storage.retention_max_segments_per_pass" => {
                storage.retention_max_segments_per_pass = parse(key, v)?;
            }
            "rate_limits.enabled" => rates.enabled = parse(key, v)?,
            "rate_limits.requests_per_minute" => rates.requests_per_minute = parse(key, v)?,
            "rate_limits.requests_per_hour" => rates.requests_per_hour = parse(key, v)?,
            "rate_limits.burst" => rates.burst = parse(key, v)?,
            "cluster.instance_id" => v.clone_into(&mut self.cluster.instance_id),
            "delivery.enabled" => self.delivery.enabled = parse(key, v)?,
            "delivery.window" => self.delivery.window = parse(key, v)?,
            "delivery.park_after_ms" => self.delivery.park_after_ms = parse(key, v)?,
            "delivery.target_timeout_ms" => self.delivery.target_timeout_ms = parse(key, v)?,
            "delivery.replay_rate_per_sec" => self.delivery.replay_rate_per_sec = parse(key, v)?,
            "egress.allow" => self.egress.allow = list(v),
            "egress.ca_file" => self.egress.ca_file = secret(v).map(Into::into),
            "delivery.file_root" => self.delivery.file_root = (!v.is_empty()).then(|| v.into()),
            _ => {
                return Err(format!(
                "`{key}` is not a key that can be set from the environment (see wald.example.toml)"
            ))
            }
        }
        Ok(())
    }
}

//! The service configuration: one TOML file, environment overrides, validation.
//!
//! Precedence, lowest first: built-in defaults; the file (`wald serve --config FILE`); the
//! environment (`WALD_LISTEN`, `WALD_DATA_DIR`, `WALD_ADMIN_KEY` — names that are part of the
//! contract — and `WALD_<SECTION>__<KEY>` for every scalar key, e.g.
//! `WALD_SERVER__REQUEST_TIMEOUT_MS=5000`); the command line (`--listen`, `--data-dir`,
//! `--admin-key`). [`Config::validate`] then checks everything, and its error names the key
//! as a dotted path (`server.request_timeout_ms: must be between 100 and 3600000`).
//!
//! Every key is documented with its default and range in `wald.example.toml` at the
//! repository root; a unit test parses that file so it cannot drift from this code.

mod auth;
mod cluster;
mod delivery;
mod egress;
mod env;
mod storage;
#[cfg(test)]
mod tests;

pub use auth::{
    key_id_ok, sha256, ApiKeyConfig, AuthConfig, KeyIdentity, Keyring, NamespaceAccess, Sha,
    ADMIN_KEY_ID,
};
pub use cluster::{ClusterConfig, Member, Owner};
pub use delivery::DeliveryConfig;
pub use egress::EgressConfig;
pub use storage::{PreallocateSetting, RecoveryModeSetting, StorageConfig};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::namespace::Namespace;

/// Why a configuration could not be loaded. Each variant names what is wrong: the file, the
/// environment variable or the dotted key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the configuration's shape (unknown key,
    /// wrong type).
    #[error(
        "{}{}: {}{message}",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default(),
        key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The dotted key at fault (`server.request_timeout_ms`), when known.
        key: Option<String>,
        /// The 1-based line in the file, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, e.g. `WALD_SERVER__REQUEST_TIMEOUT_MS`.
        var: String,
        /// What is wrong (names the key; never echoes a secret).
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `storage.segment_bytes` or `auth.api_keys[1].namespaces`.
        key: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration. Each section is a TOML table; every key is optional.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listening, limits, CORS.
    pub server: ServerConfig,
    /// `[auth]`: the admin key and the API keys.
    pub auth: AuthConfig,
    /// `[storage]`: the engine's knobs for every partition log.
    pub storage: StorageConfig,
    /// `[rate_limits]`: per key+namespace limits for namespaces that set none.
    pub rate_limits: RateLimitsConfig,
    /// `[delivery]`: consumers, target defaults, dead-letter replay pace.
    pub delivery: DeliveryConfig,
    /// `[cluster]`: instances sharing one set of namespaces, each owning a shard.
    pub cluster: ClusterConfig,
    /// `[egress]`: the addresses delivery targets may connect to, and extra TLS roots.
    pub egress: EgressConfig,
    /// `[[namespaces]]`: namespaces declared in the file, with the JSON (camelCase) field names
    /// and defaults of the namespace API, as written (not normalised; see
    /// [`Config::declared_namespaces`]). Default: none.
    pub namespaces: Vec<Namespace>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// IP address and port the HTTP server listens on (port 0: any free port).
    /// Default: `127.0.0.1:3000`. Env: `WALD_LISTEN`; CLI: `--listen`.
    pub listen: SocketAddr,
    /// Directory of the logs and the state store (created if missing).
    /// Default: `./data`. Env: `WALD_DATA_DIR`; CLI: `--data-dir`.
    pub data_dir: PathBuf,
    /// Longest a request may take before it is answered with an error.
    /// Default: 30000. Range: 100 ..= 3600000.
    pub request_timeout_ms: u64,
    /// Hard cap on a request body in bytes, checked before the body is read; the
    /// namespace's `maxMessageSize` is enforced separately (413).
    /// Default: 17 MiB (17825792). Range: 1024 ..= 1 GiB.
    pub max_body_bytes: u64,
    /// On SIGTERM/ctrl-c, how long in-flight requests may take to finish before the server
    /// closes anyway. Default: 10000. Range: 0 ..= 3600000.
    pub shutdown_grace_ms: u64,
    /// Longest lifecycle delay a message may ask for, in seconds.
    /// Default: 86400 (the seeds' limit). Range: 0 ..= 2592000 (30 days).
    pub max_delay_secs: u64,
    /// Whether anonymous callers of `/api/v1/health` and `/api/v1/health/readiness` get the
    /// details (version, uptime, namespace and partition counts, problems, mirrors and
    /// their errors); otherwise only the admin key gets them and everyone else the status
    /// alone. Default: false.
    pub health_details_public: bool,
    /// Whether `/metrics` answers without the admin key (for a scraper on a trusted
    /// network); otherwise it needs the admin key and answers 401 without one.
    /// Default: false.
    pub metrics_public: bool,
    /// One log line per request at info, target `wald::access`: method, route, status,
    /// latency, request id and key id (never the key). Written by a background thread
    /// through a bounded queue (lines are dropped, never waited for, when it is full).
    /// Default: true.
    pub access_log: bool,
    /// Longest a client may take to send a request's header section, counted from the
    /// moment the connection opens or goes idle after an answer (hyper's header-read
    /// timeout); the connection is then closed. Default: 10000. Range: 100 ..= 3600000.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress and no byte moving in either direction for
    /// this long is closed (idle keep-alive, or a client that stopped reading its answer).
    /// Default: 60000. Range: 100 ..= 3600000.
    pub idle_timeout_ms: u64,
    /// Most client connections open at once; past it a new connection is answered at once
    /// with 503 `TOO_MANY_CONNECTIONS` and closed. Keep it below the process's open-file
    /// limit. Default: 10000. Range: 1 ..= 1000000.
    pub max_connections: u64,
    /// Byte budget of one read-API answer (`GET .../messages`): records stop being added
    /// once the answer would pass it (at least one is always returned; `nextOffset`
    /// continues). Default: 8 MiB (8388608). Range: 65536 ..= 1 GiB.
    pub max_read_bytes: u64,
    /// Read-API requests (`GET .../messages`) served at once; another one waits up to 1 s
    /// for a slot, then is answered 503 `OVERLOADED` with `Retry-After`. With
    /// `max_read_bytes` this bounds the memory reads hold. Default: 16. Range: 1 ..= 4096.
    pub max_concurrent_reads: u64,
    /// Event-loop threads serving connections (each commits its requests' writes inline:
    /// docs/ARCHITECTURE.md, "The write path"). 0: half the CPUs, at least one. Default: 0.
    /// Range: 0 ..= 256.
    pub io_threads: u64,
    /// `[server.cors]`: cross-origin requests. Default: off.
    pub cors: CorsConfig,
    /// Host names a request's `Host` header may carry (without the port; `"*"`: any), so a
    /// browser tricked by DNS rebinding cannot reach the API under an attacker's name. IP
    /// literals and `localhost` are always accepted. Default: none (only those).
    /// Env: `WALD_SERVER__ALLOWED_HOSTS` (comma-separated).
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: PathBuf::from("./data"),
            request_timeout_ms: 30_000,
            max_body_bytes: 17 << 20,
            shutdown_grace_ms: 10_000,
            max_delay_secs: 86_400,
            health_details_public: false,
            metrics_public: false,
            access_log: true,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_read_bytes: 8 << 20,
            max_concurrent_reads: 16,
            io_threads: 0,
            cors: CorsConfig::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// `request_timeout_ms` as a duration.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// `max_delay_secs` as a duration.
    #[must_use]
    pub fn max_delay(&self) -> Duration {
        Duration::from_secs(self.max_delay_secs)
    }

    /// `header_read_timeout_ms` as a duration.
    #[must_use]
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `idle_timeout_ms` as a duration.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// Most a lifecycle delay may be configured to: 30 days.
pub const MAX_DELAY_LIMIT_SECS: u64 = 30 * 86_400;

/// `[server.cors]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser (`https://app.example.com`), or `["*"]`
    /// for any. Default: empty — CORS off (no CORS headers are sent).
    pub allowed_origins: Vec<String>,
    /// Methods allowed in cross-origin requests.
    /// Default: `["GET", "POST", "PUT", "DELETE", "OPTIONS"]`.
    pub allowed_methods: Vec<String>,
    /// Request headers allowed in cross-origin requests, or `["*"]`.
    /// Default: `["Content-Type", "Authorization", "X-API-Key", "X-Request-ID",
    /// "Idempotency-Key"]`.
    pub allowed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    /// Default: 600. Range: 0 ..= 86400.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: strings(&["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
            allowed_headers: strings(&[
                "Content-Type",
                "Authorization",
                "X-API-Key",
                "X-Request-ID",
                "Idempotency-Key",
            ]),
            max_age_secs: 600,
        }
    }
}

impl CorsConfig {
    /// True when CORS headers are sent at all (some origin is allowed).
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }
}

/// `[rate_limits]`: the limits per API key and namespace for namespaces whose
/// `accessControl.rateLimits` is not set — only when `enabled = true`; otherwise such
/// namespaces have no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Apply these limits to namespaces that set none. Default: false (no limit unless a
    /// namespace sets `accessControl.rateLimits`).
    pub enabled: bool,
    /// Requests per minute. Default: 6000. Range: ≥ 1.
    pub requests_per_minute: u32,
    /// Requests per hour. Default: 360000. Range: ≥ `requests_per_minute`.
    pub requests_per_hour: u32,
    /// Requests that may arrive at once above the steady rate. Default: 100. Range: ≥ 1.
    pub burst: u32,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_minute: 6000,
            requests_per_hour: 360_000,
            burst: 100,
        }
    }
}

impl Config {
    /// Reads the file when given (else starts from the defaults), then applies the process
    /// environment's overrides. Does **not** validate: apply the command line with
    /// [`Config::apply_cli`], then call [`Config::validate`] — or use [`Config::resolve`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(env::process_vars()?)?;
        Ok(config)
    }

    /// The whole start-up sequence: [`Config::load`], [`Config::apply_cli`],
    /// [`Config::validate`].
    pub fn resolve(
        path: Option<&Path>,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        admin_key: Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Self::load(path)?;
        config.apply_cli(listen, data_dir, admin_key);
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses one file (no environment, no validation).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
            let key = err.path().to_string();
            let line = err
                .inner()
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.to_owned(),
                key: (key != ".").then_some(key),
                line,
                message: err.inner().message().trim_end().to_owned(),
            }
        })
    }

    /// Applies the command line's overrides (each `None` leaves the value as is). An admin
    /// key given here replaces the file's, in either form.
    pub fn apply_cli(
        &mut self,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        admin_key: Option<String>,
    ) {
        if let Some(listen) = listen {
            self.server.listen = listen;
        }
        if let Some(dir) = data_dir {
            self.server.data_dir = dir;
        }
        if let Some(key) = admin_key {
            self.auth.replace_admin_key(key);
        }
    }

    /// Checks every section; the error names the first bad key as a dotted path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        self.storage.validate()?;
        self.rate_limits.validate()?;
        self.delivery.validate()?;
        self.delivery.validate_file_root(&self.server.data_dir)?;
        self.cluster.validate()?;
        self.egress.validate()?;
        self.declared_namespaces::<Namespace>().map(drop)
    }

    /// The declared namespaces, normalised (name trimmed and lower-cased, `topicName`
    /// filled) and validated: every field by [`Namespace::validate`], names unique, and every
    /// `accessControl.allowedApiKeys` entry the id of an `[[auth.api_keys]]` entry. The error
    /// names the key (`namespaces[0].shardConfig.partitionCount`).
    ///
    /// Call it as `declared_namespaces::<Namespace>()`: the type parameter only keeps the
    /// call sites written against the earlier generic form compiling (`T` = [`Namespace`]).
    pub fn declared_namespaces<T: From<Namespace>>(&self) -> Result<Vec<T>, ConfigError> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(self.namespaces.len());
        for (i, declared) in self.namespaces.iter().enumerate() {
            let at = format!("namespaces[{i}]");
            let mut ns = declared.clone();
            ns.normalise();
            if let Err(errors) = ns.validate() {
                let mut all = errors
                    .iter()
                    .map(|e| (format!("{at}.{}", e.field), &e.message));
                if let Some((key, reason)) = all.next() {
                    let more: Vec<String> = all.map(|(k, m)| format!("{k}: {m}")).collect();
                    let reason = if more.is_empty() {
                        reason.clone()
                    } else {
                        format!("{reason}; also {}", more.join("; "))
                    };
                    return Err(invalid(key, reason));
                }
            }
            if let Some(first) = seen.insert(ns.name.clone(), i) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!(
                        "namespace {:?} is already declared by namespaces[{first}]",
                        ns.name
                    ),
                ));
            }
            let allowed = ns.access_control.iter().flat_map(|a| &a.allowed_api_keys);
            for (j, id) in allowed.enumerate() {
                if !self.auth.api_keys.iter().any(|k| &k.id == id) {
                    return Err(invalid(
                        format!("{at}.accessControl.allowedApiKeys[{j}]"),
                        format!("no [[auth.api_keys]] entry has the id {id:?}"),
                    ));
                }
            }
            out.push(T::from(ns));
        }
        Ok(out)
    }
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            let ok = h == "*"
                || (!h.is_empty()
                    && h.len() <= 253
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
            if !ok {
                return Err(invalid(
                    format!("server.allowed_hosts[{i}]"),
                    format!("{h:?} must be a host name without port or scheme, or \"*\""),
                ));
            }
        }
        check_range(
            "server.request_timeout_ms",
            self.request_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range("server.max_body_bytes", self.max_body_bytes, 1024, 1 << 30)?;
        check_range(
            "server.shutdown_grace_ms",
            self.shutdown_grace_ms,
            0,
            3_600_000,
        )?;
        check_range(
            "server.max_delay_secs",
            self.max_delay_secs,
            0,
            MAX_DELAY_LIMIT_SECS,
        )?;
        check_range(
            "server.header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range(
            "server.idle_timeout_ms",
            self.idle_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range("server.max_connections", self.max_connections, 1, 1_000_000)?;
        check_range(
            "server.max_read_bytes",
            self.max_read_bytes,
            65_536,
            1 << 30,
        )?;
        check_range(
            "server.max_concurrent_reads",
            self.max_concurrent_reads,
            1,
            4096,
        )?;
        check_range("server.io_threads", self.io_threads, 0, 256)?;
        self.cors.validate()
    }
}

impl CorsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let wildcard = self.allowed_origins.iter().any(|o| o == "*");
        if wildcard && self.allowed_origins.len() > 1 {
            return Err(invalid(
                "server.cors.allowed_origins",
                "\"*\" allows every origin and cannot be combined with others",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let ok = origin == "*"
                || rest.is_some_and(|r| {
                    !r.is_empty() && !r.contains('/') && !r.contains(char::is_whitespace)
                });
            if !ok {
                return Err(invalid(
                    format!("server.cors.allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is not \"*\" nor an origin like \"https://app.example.com\" \
                         (scheme and host, optional port, no path)"
                    ),
                ));
            }
        }
        for (i, m) in self.allowed_methods.iter().enumerate() {
            if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(invalid(
                    format!("server.cors.allowed_methods[{i}]"),
                    format!("{m:?} is not an upper-case HTTP method"),
                ));
            }
        }
        for (i, h) in self.allowed_headers.iter().enumerate() {
            if !is_token(h) {
                return Err(invalid(
                    format!("server.cors.allowed_headers[{i}]"),
                    format!("{h:?} is not a header name nor \"*\""),
                ));
            }
        }
        check_range("server.cors.max_age_secs", self.max_age_secs, 0, 86_400)
    }
}

impl RateLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let max = u64::from(u32::MAX);

        check_range(
            "rate_limits.requests_per_minute",
            self.requests_per_minute.into(),
            1,
            max,
        )?;
        if self.requests_per_hour < self.requests_per_minute {
            return Err(invalid(
                "rate_limits.requests_per_hour",
                format!(
                    "{} is below requests_per_minute ({})",
                    self.requests_per_hour, self.requests_per_minute
                ),
            ));
        }
        check_range("rate_limits.burst", self.burst.into(), 1, max)?;
        let d = Self::default();
        if !self.enabled
            && (self.requests_per_minute, self.requests_per_hour, self.burst)
                != (d.requests_per_minute, d.requests_per_hour, d.burst)
        {
            return Err(invalid(
                "rate_limits.enabled",
                "limits are set but not enabled: add `enabled = true` for them to apply to \
                 namespaces that set no accessControl.rateLimits",
            ));
        }
        Ok(())
    }
}

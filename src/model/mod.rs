//! The seeds' request, response and entity types, with their validation.
//!
//! Pure types: no HTTP, no I/O. The HTTP layer parses a body with [`parse_json`] (a type
//! error or an unknown field names its JSON path), then calls `validate`, which reports every
//! failing field at once as [`FieldError`]s (`lifecycle.retryPolicy.maxAttempts`,
//! `target[1].config.url`).
//!
//! - [`write`]: `POST /api/v1/wal/write` — [`WriteToLogDto`] → [`ValidWrite`], and the answer
//!   [`WriteToLogResponse`].
//! - [`target`]: delivery targets ([`TargetConfig`]) and their typed `config`s.
//! - [`namespace`]: the namespace entity ([`Namespace`]) with its defaults.
//! - [`time`]: RFC 3339 timestamps with milliseconds.
//! - [`validate`]: [`FieldError`], the [`Errors`] collector, [`parse_json`].

pub mod namespace;
pub mod target;
pub mod target_ref;
pub mod time;
pub mod transaction;
pub mod validate;
pub mod write;

pub use namespace::{
    check_namespace_name, normalise_namespace_name, AccessControl, BackendType, BackoffStrategy,
    DlqConfig, DurabilityMode, Namespace, RateLimits, RetryPolicy, RoutingStrategy, ShardConfig,
};
pub use target::{
    CacheTargetConfig, CacheType, DatabaseTargetConfig, DatabaseType, FileTargetConfig, HttpMethod,
    HttpTargetConfig, TargetConfig, TargetSettings, TargetType,
};
pub use time::{parse_rfc3339_ms, rfc3339_ms};
pub use validate::{parse_json, Errors, FieldError};
pub use write::{
    DelayUnit, DurableStatus, LifecycleConfig, RetryPolicyDto, TargetRef, TargetSpec, ValidWrite,
    WriteLimits, WriteToLogDto, WriteToLogResponse,
};

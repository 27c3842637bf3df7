//! Access control: API keys (`X-API-Key` or `Authorization: Bearer`), per-namespace access,
//! the admin key, and the per key+namespace rate limits.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::{ApiError, ErrorCode};
use super::ratelimit::Limits;
use super::throttle::ClientAddr;
use crate::app::{App, NamespaceRuntime};
use crate::config::KeyIdentity;

/// Who is calling: the identity of a valid key, or anonymous (when keys are not required).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<KeyIdentity>);

/// The key presented in `X-API-Key` or `Authorization: Bearer`, if any.
fn presented(parts: &Parts) -> Result<Option<&str>, ApiError> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "X-API-Key is not a valid key"));
    }
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let s = v
            .to_str()
            .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "Authorization is not valid"))?;
        let token = s
            .strip_prefix("Bearer ")
            .or_else(|| s.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "Authorization must be 'Bearer <key>'",
                )
            })?;
        return Ok(Some(token.trim()));
    }
    Ok(None)
}

/// Whose key `key` is; an unknown key counts against the client's address, and an address
/// over `[auth] failed_auth_per_minute` is answered 429 before its key is looked at.
fn verify_key(parts: &Parts, app: &App, key: &str) -> Result<crate::config::KeyIdentity, ApiError> {
    let addr = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let limit = app.config.auth.failed_auth_per_minute;
    let now = Instant::now();
    if let Some(wait) = addr.and_then(|a| app.auth_failures.blocked(a, limit, now)) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("too many failed authentications from this address; retry in {wait} s"),
        )
        .retry_after(wait));
    }
    app.keys.verify(key).ok_or_else(|| {
        if let Some(a) = addr {
            app.auth_failures.failed(a, now);
        }
        ApiError::new(ErrorCode::Unauthorized, "unknown API key")
    })
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        match presented(parts)? {
            Some(key) => verify_key(parts, app, key).map(|who| {
                super::access::record_key(&who.id);
                Self(Some(who))
            }),
            None if app.keys.requires_api_key() => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "an API key is required (X-API-Key or Authorization: Bearer)",
            )),
            None => Ok(Self(None)),
        }
    }
}

/// The admin key's holder.
#[derive(Debug, Clone)]
pub struct Admin(pub KeyIdentity);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let Some(key) = presented(parts)? else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the admin key is required for this route",
            ));
        };
        match verify_key(parts, app, key)? {
            who if who.admin => {
                super::access::record_key(&who.id);
                Ok(Self(who))
            }
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route needs the admin key",
            )),
        }
    }
}

/// Checks that the caller may use the namespace, then takes one request from its rate
/// limit: 403 without access, 429 (with `Retry-After`) over the limit.
///
/// # Errors
/// The answer to give instead.
pub fn authorize_namespace(
    app: &App,
    caller: &Caller,
    ns: &NamespaceRuntime,
    name: &str,
) -> Result<(), ApiError> {
    check_access(caller, ns, name)?;
    take_budget(app, caller, ns, name, 1)
}

/// Whether the caller may use the namespace at all (its key's namespaces and the
/// namespace's `allowedApiKeys`), without taking rate-limit budget.
///
/// # Errors
/// 401 / 403.
pub fn check_access(caller: &Caller, ns: &NamespaceRuntime, name: &str) -> Result<(), ApiError> {
    let listed = ns
        .spec
        .access_control
        .as_ref()
        .map(|a| &a.allowed_api_keys)
        .filter(|l| !l.is_empty());
    if caller.0.is_none() && listed.is_some() {
        // `open = true` serves anonymous callers, but never where the namespace names keys.
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("namespace '{name}' accepts only the API keys its accessControl allows"),
        ));
    }
    if let Some(who) = &caller.0 {
        if !who.admin {
            let by_namespace = listed.is_none_or(|l| l.contains(&who.id));
            if !who.namespaces.allows(name) || !by_namespace {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("API key '{}' has no access to namespace '{name}'", who.id),
                ));
            }
        }
    }
    Ok(())
}

/// Takes `n` requests' worth of the (key, namespace) rate-limit budget, all or none (a
/// batch write counts each message).
///
/// # Errors
/// 429 with `Retry-After`; 400 when `n` exceeds the burst limit (it could never pass).
pub fn take_budget(
    app: &App,
    caller: &Caller,
    ns: &NamespaceRuntime,
    name: &str,
    n: u32,
) -> Result<(), ApiError> {
    // The namespace's own limits, else the server's `[rate_limits]` when enabled, else none.
    let limits = match ns
        .spec
        .access_control
        .as_ref()
        .and_then(|a| a.rate_limits.as_ref())
    {
        Some(rl) => Limits {
            per_minute: rl.requests_per_minute,
            per_hour: rl.requests_per_hour,
            burst: rl.burst_limit,
        },
        None if app.config.rate_limits.enabled => {
            let d = &app.config.rate_limits;
            Limits {
                per_minute: d.requests_per_minute,
                per_hour: d.requests_per_hour,
                burst: d.burst,
            }
        }
        None => return Ok(()),
    };
    let key = caller.0.as_ref().map_or("anonymous", |w| w.id.as_str());
    if n > limits.burst {
        return Err(ApiError::validation(vec![crate::model::validate::FieldError::new(
            "messages",
            format!(
                "{n} messages to namespace '{name}' exceed its burstLimit of {}: send at most that many per request",
                limits.burst
            ),
        )]));
    }
    if let Err(wait) = app.limiter.check_n(key, name, limits, Instant::now(), n) {
        app.metrics.rate_limited.with_label_values(&[name]).inc();
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("rate limit of namespace '{name}' exceeded; retry in {wait} s"),
        )
        .with_details(serde_json::json!({
            "requestsPerMinute": limits.per_minute,
            "requestsPerHour": limits.per_hour,
            "burstLimit": limits.burst,
        }))
        .retry_after(wait));
    }
    Ok(())
}

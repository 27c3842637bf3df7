//! Access control: API keys (`X-API-Key` or `Authorization: Bearer`), per-namespace access,
//! the admin key, and the per key+namespace rate limits.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::{ApiError, ErrorCode};
use super::ratelimit::Limits;
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

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        match presented(parts)? {
            Some(key) => match app.keys.verify(key) {
                Some(who) => Ok(Self(Some(who.clone()))),
                None => Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key")),
            },
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
        match app.keys.verify(key) {
            Some(who) if who.admin => Ok(Self(who.clone())),
            Some(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route needs the admin key",
            )),
            None => Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key")),
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
    if let Some(who) = &caller.0 {
        if !who.admin {
            let listed = ns
                .spec
                .access_control
                .as_ref()
                .map(|a| &a.allowed_api_keys)
                .filter(|l| !l.is_empty());
            let by_namespace = listed.is_none_or(|l| l.contains(&who.id));
            if !who.namespaces.allows(name) || !by_namespace {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("API key '{}' has no access to namespace '{name}'", who.id),
                ));
            }
        }
    }
    // The namespace's own limits, else the server's `[rate_limits]` defaults.
    let limits = match &ns.spec.access_control {
        Some(ac) => Limits {
            per_minute: ac.rate_limits.requests_per_minute,
            per_hour: ac.rate_limits.requests_per_hour,
            burst: ac.rate_limits.burst_limit,
        },
        None => {
            let d = &app.config.rate_limits;
            Limits {
                per_minute: d.requests_per_minute,
                per_hour: d.requests_per_hour,
                burst: d.burst,
            }
        }
    };
    let key = caller.0.as_ref().map_or("anonymous", |w| w.id.as_str());
    if let Err(wait) = app.limiter.check(key, name, limits, Instant::now()) {
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

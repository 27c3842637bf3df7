//! `Host` and `Origin` checks, before anything else looks at a request.
//!
//! DNS rebinding lets a web page reach a server bound to loopback under the attacker's own
//! host name; the browser then sends that name in `Host`. Only IP literals, `localhost` and
//! the names of `[server] allowed_hosts` are served. A browser's cross-site request carries
//! `Origin`: it is served only when it names this very host or one of `[server.cors]
//! allowed_origins`.

use axum::extract::Request;
use axum::http::header;

use super::error::{ApiError, ErrorCode};
use crate::app::App;

/// The host part of a `Host` value or of an origin's authority (no port, no brackets).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            authority
        }
    })
}

/// True when `host` (from `Host`) may be served.
#[must_use]
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let h = host_of(host.trim()).trim_end_matches('.');
    h.parse::<std::net::IpAddr>().is_ok()
        || h.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(h))
}

/// True when `origin` may call: its authority is `host`, or it is an allowed CORS origin.
#[must_use]
pub fn origin_allowed(origin: &str, host: Option<&str>, cors: &[String]) -> bool {
    if cors
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Whether the request's `Host` and `Origin` may be served.
///
/// # Errors
/// 403 `HOST_NOT_ALLOWED` / `ORIGIN_NOT_ALLOWED`.
pub fn allowed(app: &App, req: &Request) -> Result<(), ApiError> {
    allowed_headers(app, req.headers())
}

/// [`allowed`], from the headers.
///
/// # Errors
/// As [`allowed`].
pub fn allowed_headers(app: &App, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let server = &app.config.server;
    if let Some(h) = &host {
        if !host_allowed(h, &server.allowed_hosts) {
            return Err(ApiError::new(
                ErrorCode::HostNotAllowed,
                "this Host is not served; list it in [server] allowed_hosts",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, host.as_deref(), &server.cors.allowed_origins));
        if !ok {
            return Err(ApiError::new(
                ErrorCode::OriginNotAllowed,
                "cross-origin requests from this Origin are not allowed; list it in \
                 [server.cors] allowed_origins",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "127.0.0.1:3000",
            "localhost",
            "localhost:1",
            "[::1]:80",
            "10.0.0.5",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        let list = vec!["wald.internal".to_owned()];
        assert!(host_allowed("WALD.internal:8080", &list));
        assert!(host_allowed("anything", &["*".to_owned()]));
    }

    #[test]
    fn origins() {
        assert!(origin_allowed(
            "http://127.0.0.1:3000",
            Some("127.0.0.1:3000"),
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:3000"),
            &[]
        ));
        assert!(!origin_allowed("null", Some("127.0.0.1:3000"), &[]));
        let cors = vec!["https://app.example".to_owned()];
        assert!(origin_allowed("https://app.example", Some("x"), &cors));
    }
}

//! The `http_service` and `webhook` targets: one HTTP/1.1 request per attempt.
//!
//! The body is the payload as sent, `Content-Type: application/json`; the configured
//! `headers` come first, then the service's own:
//!
//! | header | value |
//! |---|---|
//! | `X-Wald-Message-Id`, `Idempotency-Key` | the message id (the receiver's dedup key) |
//! | `X-Wald-Namespace` | the namespace |
//! | `X-Wald-Attempt` | the attempt number, 1 for the first |
//! | `X-Wald-Timestamp` | when the request was made, seconds since the epoch |
//! | `X-Wald-Signature` | with a `secret`: `sha256=` + hex HMAC-SHA256(secret, `"{timestamp}.{body}"`) |
//!
//! Answers: 2xx delivered; 408, 429 and 5xx retryable (with `Retry-After` in seconds or as an
//! HTTP date honoured as the wait); 3xx permanent (redirects are not followed); other 4xx
//! permanent; no answer within the timeout, or a connection failure, retryable.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use sha2::Sha256;

use super::{
    unix_now, with_timeout, DeliverFuture, Delivery, ErrorClass, HttpClient, Target, TargetContext,
    TargetError,
};
use crate::model::target::HttpTargetConfig;
use crate::model::validate::FieldError;

/// Bytes of an answer's body kept for the error message.
const BODY_EXCERPT: usize = 200;
/// Bytes of an answer's body read at most (the rest is dropped with the connection).
const BODY_READ_LIMIT: usize = 64 * 1024;

/// An `http_service` or `webhook` target.
pub struct HttpTarget {
    client: HttpClient,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    timeout: Duration,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("uri", &self.uri)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// `sha256=` + hex HMAC-SHA256(`secret`, `"{timestamp}.{body}"`): the `X-Wald-Signature`.
#[must_use]
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this arm is never taken.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait a `Retry-After` value asks for: delay-seconds or an HTTP date (a past date is
/// no wait).
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl HttpTarget {
    /// Checks the config (URL, headers) and builds the target (errors name `config.…`).
    pub fn new(cfg: &HttpTargetConfig, ctx: &TargetContext) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let url = cfg.url.trim();
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            errs.push(FieldError::new(
                "config.url",
                "https targets need a TLS-enabled build; this build delivers over plain http:// only",
            ));
        }
        let uri = match url.parse::<Uri>() {
            Ok(u) if u.authority().is_some_and(|a| a.as_str().contains('@')) => {
                errs.push(FieldError::new(
                    "config.url",
                    "credentials in the URL are not supported; send them in `headers` (Authorization)",
                ));
                None
            }
            Ok(u) if u.host().is_some() => Some(u),
            Ok(_) => {
                errs.push(FieldError::new("config.url", "must have a host"));
                None
            }
            Err(e) => {
                errs.push(FieldError::new(
                    "config.url",
                    format!("is not a valid URL: {e}"),
                ));
                None
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let field = format!("config.headers.{name}");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                }
                (Err(_), _) => errs.push(FieldError::new(field, "is not a valid HTTP header name")),
                (_, Err(_)) => {
                    errs.push(FieldError::new(field, "is not a valid HTTP header value"));
                }
            }
        }
        let (Some(uri), true) = (uri, errs.is_empty()) else {
            return Err(errs);
        };
        let method = Method::from_bytes(cfg.method.as_str().as_bytes()).unwrap_or(Method::POST);
        Ok(Self {
            client: ctx.http_client().clone(),
            uri,
            method,
            headers,
            timeout: cfg
                .timeout_ms
                .map_or(ctx.default_timeout(), Duration::from_millis),
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
        })
    }

    fn request(&self, d: &Delivery<'_>) -> Result<Request<Full<Bytes>>, TargetError> {
        let timestamp = unix_now();
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .body(Full::new(Bytes::copy_from_slice(d.payload)))
            .map_err(|e| TargetError::permanent(ErrorClass::Config, e.to_string()))?;
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
        let value = |s: &str| {
            HeaderValue::from_str(s).map_err(|_| {
                TargetError::permanent(
                    ErrorClass::BadPayload,
                    format!("`{s}` cannot be sent in an HTTP header"),
                )
            })
        };
        let id = value(d.message_id)?;
        h.insert("x-wald-message-id", id.clone());
        h.insert("idempotency-key", id);
        h.insert("x-wald-namespace", value(d.namespace)?);
        h.insert("x-wald-attempt", HeaderValue::from(d.attempt));
        h.insert("x-wald-timestamp", HeaderValue::from(timestamp));
        if let Some(secret) = &self.secret {
            h.insert(
                "x-wald-signature",
                value(&signature(secret, timestamp, d.payload))?,
            );
        }
        Ok(req)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(), TargetError> {
        let resp = self.client.request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            TargetError::retryable(ErrorClass::Connection, msg)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read (a bounded part of) the body: it frees the connection for reuse and gives
        // the error message an excerpt.
        let body = Limited::new(resp.into_body(), BODY_READ_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        classify(status, retry_after, &body)
    }
}

/// The outcome of an answer with `status`.
fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), TargetError> {
    if status.is_success() {
        return Ok(());
    }
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    let mut message = format!("HTTP {status}");
    if !excerpt.trim().is_empty() {
        message = format!("{message}: {}", excerpt.trim());
    }
    let code = status.as_u16();
    let mut err = match code {
        408 => TargetError::retryable(ErrorClass::RequestTimeout, message),
        429 => TargetError::retryable(ErrorClass::TooManyRequests, message),
        500..=599 => TargetError::retryable(ErrorClass::Server, message),
        300..=399 => TargetError::permanent(
            ErrorClass::Client,
            format!("{message} (redirects are not followed)"),
        ),
        _ => TargetError::permanent(ErrorClass::Client, message),
    };
    if err.retryable {
        err.retry_after = retry_after;
    }
    Err(err)
}

impl Target for HttpTarget {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let req = self.request(&delivery)?;
            with_timeout(self.timeout, "HTTP request", self.send(req)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let s = signature(b"k", 1, b"{}");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), 7 + 64);
        assert_ne!(s, signature(b"k", 2, b"{}"));
        assert_ne!(s, signature(b"j", 1, b"{}"));
        assert_eq!(s, signature(b"k", 1, b"{}"));
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn classification() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert!(classify(s(204), None, b"").is_ok());
        let e = classify(s(503), Some(Duration::from_secs(2)), b"down").unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::Server);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert!(e.message.contains("down"));
        let e = classify(s(429), Some(Duration::from_secs(7)), b"").unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::TooManyRequests);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let e = classify(s(408), None, b"").unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::RequestTimeout);
        let e = classify(s(404), Some(Duration::from_secs(1)), b"").unwrap_err();
        assert!(!e.retryable && e.class == ErrorClass::Client && e.retry_after.is_none());
        let e = classify(s(301), None, b"").unwrap_err();
        assert!(!e.retryable && e.message.contains("redirects are not followed"));
    }
}

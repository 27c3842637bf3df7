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
//! | `webhook-id`, `webhook-timestamp`, `webhook-signature` | with a `secret` or `secrets`: [Standard Webhooks](https://www.standardwebhooks.com/) (below) |
//!
//! Standard Webhooks: `webhook-id` is the message id, `webhook-timestamp` the same seconds as
//! `X-Wald-Timestamp`, and `webhook-signature` one `v1,` + base64 HMAC-SHA256(key,
//! `"{id}.{timestamp}.{body}"`) per key, space-separated: the key of `secret` first, then
//! each of `secrets` (so a receiver can rotate keys). A key written `whsec_<base64>` is the
//! decoded bytes; any other is its UTF-8 bytes.
//!
//! Answers: 2xx delivered; 408, 429 and 5xx retryable (with `Retry-After` in seconds or as an
//! HTTP date honoured as the wait); 3xx permanent (redirects are not followed); other 4xx
//! permanent; no answer within the timeout, or a connection failure, retryable; an address
//! the egress policy refuses, or a TLS certificate that does not verify, permanent. A failed
//! attempt's error holds the status line only, never the answer's body (writers can read
//! attempts' errors; the target's answer is not theirs to see).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use sha2::Sha256;

use serde_json::{Map, Value};

use super::connect::{find_denial, find_tls_error};
use super::{
    unix_now, with_timeout, DeliverFuture, Delivery, ErrorClass, HttpClient, Target, TargetContext,
    TargetError,
};
use crate::model::target::HttpTargetConfig;
use crate::model::validate::FieldError;

/// Bytes of an answer's body read at most, to free the connection for reuse (the rest is
/// dropped with the connection). The body is never kept.
const BODY_READ_LIMIT: usize = 64 * 1024;
/// Most keys in `secrets`.
const MAX_SECRETS: usize = 16;

/// An `http_service` or `webhook` target.
pub struct HttpTarget {
    client: HttpClient,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    timeout: Duration,
    secret: Option<Vec<u8>>,
    /// Standard Webhooks keys (decoded), in the order their signatures are sent.
    webhook_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("uri", &self.uri)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("signed", &self.secret.is_some())
            .field("webhook_keys", &self.webhook_keys.len())
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

/// The Standard Webhooks key of a secret: `whsec_<base64>` decoded, else the UTF-8 bytes.
///
/// # Errors
/// A `whsec_` secret whose rest is not base64 (standard alphabet, padded).
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("a `whsec_` secret must be base64 after the prefix: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// `v1,` + base64 HMAC-SHA256(`key`, `"{id}.{timestamp}.{body}"`): one Standard Webhooks
/// signature.
#[must_use]
pub fn webhook_signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this arm is never taken.
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{b64}")
}

/// The Standard Webhooks keys of a target: `secret`'s, then each of `secrets` (errors name
/// `config.secrets[i]`).
fn webhook_keys(
    secret: Option<&str>,
    raw: &Map<String, Value>,
    errs: &mut Vec<FieldError>,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        // Kept as before for `X-Wald-Signature`; a `whsec_` form that does not decode is
        // used as its bytes rather than refused.
        keys.push(webhook_key(s).unwrap_or_else(|_| s.as_bytes().to_vec()));
    }
    match raw.get("secrets") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.len() <= MAX_SECRETS => {
            for (i, v) in list.iter().enumerate() {
                let field = format!("config.secrets[{i}]");
                match v.as_str() {
                    Some("") | None => {
                        errs.push(FieldError::new(field, "must be a non-empty string"))
                    }
                    Some(s) => match webhook_key(s) {
                        Ok(k) if k.is_empty() => {
                            errs.push(FieldError::new(field, "must not be empty"))
                        }
                        Ok(k) => keys.push(k),
                        Err(m) => errs.push(FieldError::new(field, m)),
                    },
                }
            }
        }
        Some(_) => errs.push(FieldError::new(
            "config.secrets",
            format!("must be a list of at most {MAX_SECRETS} secrets (strings)"),
        )),
    }
    keys.dedup();
    keys
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
    /// Checks the config (URL, headers, `secrets` from the raw `config` object) and builds
    /// the target (errors name `config.…`).
    pub fn new(
        cfg: &HttpTargetConfig,
        raw: &Map<String, Value>,
        ctx: &TargetContext,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let url = cfg.url.trim();
        let client = match ctx.http_client() {
            Ok(c) => Some(c.clone()),
            Err(e) => {
                errs.push(FieldError::new(
                    "config.url",
                    format!("HTTP targets are unavailable: {e}"),
                ));
                None
            }
        };
        let webhook_keys = webhook_keys(cfg.secret.as_deref(), raw, &mut errs);
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
        let (Some(uri), Some(client), true) = (uri, client, errs.is_empty()) else {
            return Err(errs);
        };
        let method = Method::from_bytes(cfg.method.as_str().as_bytes()).unwrap_or(Method::POST);
        Ok(Self {
            client,
            uri,
            method,
            headers,
            timeout: cfg
                .timeout_ms
                .map_or(ctx.default_timeout(), Duration::from_millis),
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            webhook_keys,
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
        if !self.webhook_keys.is_empty() {
            let sigs: Vec<String> = self
                .webhook_keys
                .iter()
                .map(|k| webhook_signature(k, d.message_id, timestamp, d.payload))
                .collect();
            h.insert("webhook-id", value(d.message_id)?);
            h.insert("webhook-timestamp", HeaderValue::from(timestamp));
            h.insert("webhook-signature", value(&sigs.join(" "))?);
        }
        Ok(req)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(), TargetError> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| connect_error(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read (a bounded part of) the body and drop it: it frees the connection for reuse.
        // It never goes into the error: writers read attempts' errors.
        let _ = Limited::new(resp.into_body(), BODY_READ_LIMIT)
            .collect()
            .await;
        classify(status, retry_after)
    }
}

/// The outcome of a request that got no answer: an egress refusal (permanent), a TLS
/// certificate that does not verify (permanent), else a connection failure (retryable).
fn connect_error(e: &hyper_util::client::legacy::Error) -> TargetError {
    if let Some(d) = find_denial(e) {
        return TargetError::permanent(ErrorClass::EgressDenied, d.to_string());
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    if let Some(tls @ rustls::Error::InvalidCertificate(_)) = find_tls_error(e) {
        return TargetError::permanent(ErrorClass::Config, format!("TLS: {tls} ({msg})"));
    }
    TargetError::retryable(ErrorClass::Connection, msg)
}

/// The outcome of an answer with `status` (the message is the status line: never body bytes).
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Result<(), TargetError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("HTTP {status}");
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
        assert!(classify(s(204), None).is_ok());
        let e = classify(s(503), Some(Duration::from_secs(2))).unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::Server);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(e.message, "HTTP 503 Service Unavailable");
        let e = classify(s(429), Some(Duration::from_secs(7))).unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::TooManyRequests);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let e = classify(s(408), None).unwrap_err();
        assert!(e.retryable && e.class == ErrorClass::RequestTimeout);
        let e = classify(s(404), Some(Duration::from_secs(1))).unwrap_err();
        assert!(!e.retryable && e.class == ErrorClass::Client && e.retry_after.is_none());
        let e = classify(s(301), None).unwrap_err();
        assert!(!e.retryable && e.message.contains("redirects are not followed"));
    }

    #[test]
    fn standard_webhooks_signature() {
        // The Standard Webhooks reference test vector (standard-webhooks/libraries).
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            webhook_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(webhook_key("plain").unwrap(), b"plain");
        assert!(webhook_key("whsec_not base64!").is_err());
    }

    #[test]
    fn webhook_keys_from_secret_and_secrets() {
        let raw = |v: serde_json::Value| v.as_object().unwrap().clone();
        let mut errs = Vec::new();
        let keys = webhook_keys(
            Some("old"),
            &raw(serde_json::json!({"secrets": ["whsec_AQID", "new"]})),
            &mut errs,
        );
        assert!(errs.is_empty());
        assert_eq!(keys, vec![b"old".to_vec(), vec![1, 2, 3], b"new".to_vec()]);
        let keys = webhook_keys(
            None,
            &raw(serde_json::json!({"secrets": ["", 3, "whsec_!!"]})),
            &mut errs,
        );
        assert!(keys.is_empty());
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.secrets[0]",
                "config.secrets[1]",
                "config.secrets[2]"
            ]
        );
        let mut errs = Vec::new();
        webhook_keys(None, &raw(serde_json::json!({"secrets": "k"})), &mut errs);
        assert_eq!(errs[0].field, "config.secrets");
    }
}

//! `X-Request-ID`: echoed when the client sent a usable one, generated otherwise, on every
//! answer; carried in the request's extensions and in the tracing span.

use axum::extract::Request;
use axum::http::HeaderValue;

/// The header.
pub const HEADER: &str = "x-request-id";

/// The request id of the current request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest client request id accepted (longer ones are replaced).
const MAX_LEN: usize = 128;

fn usable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b));
    ok.then(|| s.to_owned())
}

/// A new request id: 16 random bytes, hex.
#[must_use]
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The request's id: the client's usable `X-Request-ID`, else a new one.
#[must_use]
pub fn of(req: &Request) -> String {
    of_headers(req.headers())
}

/// [`of`], from the headers.
#[must_use]
pub fn of_headers(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(usable)
        .unwrap_or_else(generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_refuses_odd_ones() {
        assert_eq!(
            usable(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(usable(&HeaderValue::from_static("")), None);
        assert_eq!(usable(&HeaderValue::from_static("has space")), None);
        let long = "a".repeat(200);
        assert_eq!(usable(&HeaderValue::from_str(&long).unwrap()), None);
        assert_eq!(generate().len(), 32);
    }
}

//! `X-Request-ID`: echoed when the client sent a usable one, generated otherwise, on every
//! answer; carried in the request's extensions and in the tracing span.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

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

/// Middleware: attaches the request id and echoes it in the answer.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(usable)
        .unwrap_or_else(generate);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
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

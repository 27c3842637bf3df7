//! The request header limit, answered with the error envelope.
//!
//! hyper refuses a header section larger than its read buffer with a bare 431 (no body) and
//! closes the connection. The server raises that buffer to [`HYPER_MAX_BUF_BYTES`] (see
//! [`crate::server`]) so that sections up to that size reach the router, and this layer
//! enforces the service's own limit, [`MAX_HEADER_BYTES`], with a 431 in the envelope that
//! names the limit. Only a section larger than hyper's buffer (or with more than 100
//! headers) still gets hyper's bare 431.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};

use super::error::{ApiError, ErrorCode};

/// Most bytes a request's header section may take: the request line plus every
/// `name: value\r\n`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's read buffer per connection (its default is about 400 KiB): larger header
/// sections get hyper's bare 431.
pub const HYPER_MAX_BUF_BYTES: usize = 1024 * 1024;

/// The size of a request's header section as it was sent (HTTP/1.1 framing).
#[must_use]
pub fn header_section_bytes(req: &Request) -> usize {
    section_bytes(req.method(), req.uri(), req.headers())
}

fn section_bytes(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    // "METHOD SP target SP HTTP/1.1 CRLF"
    let line = method.as_str().len() + uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// 431 when the header section is over [`MAX_HEADER_BYTES`].
///
/// # Errors
/// The 431.
pub fn check(req: &Request) -> Result<(), ApiError> {
    check_headers(req.method(), req.uri(), req.headers())
}

/// [`check`], from the request line and headers.
///
/// # Errors
/// As [`check`].
pub fn check_headers(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    let size = section_bytes(method, uri, headers);
    if size > MAX_HEADER_BYTES {
        let largest = headers
            .iter()
            .max_by_key(|(n, v)| n.as_str().len() + v.len())
            .map(|(n, _)| n.as_str().to_owned());
        return Err(ApiError::new(
            ErrorCode::HeaderTooLarge,
            format!("request headers take {size} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .with_details(serde_json::json!({
            "actualSize": size,
            "maxSize": MAX_HEADER_BYTES,
            "largestHeader": largest,
        })));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_request_line_and_every_header() {
        let req = Request::builder()
            .method("GET")
            .uri("/a?b=1")
            .header("x-k", "vv")
            .body(axum::body::Body::empty())
            .unwrap();
        // "GET /a?b=1 HTTP/1.1\r\n" = 21, "x-k: vv\r\n" = 9
        assert_eq!(header_section_bytes(&req), 21 + 9);
    }
}

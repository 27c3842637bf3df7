//! Several instances, one namespace set (`[cluster]`, docs/OPERATIONS.md): a request for a
//! namespace another instance owns is answered `307 Temporary Redirect` to the same path on
//! the owner (clients that follow redirects resend the method and body there).
//!
//! The namespace is read from the path (`…/namespace/{ns}/…`, `…/namespaces/{ns}…`) by the
//! middleware, and from the body by the routes that carry it there (the write, namespace
//! creation), which call [`check_owner`].

use axum::extract::Request;

use super::error::{ApiError, ErrorCode};
use crate::app::App;
use crate::config::Owner;
use crate::model::namespace::normalise_namespace_name;

/// `Ok` when this instance owns `ns`, else the redirect to the owner (`path_and_query` is
/// appended to the owner's URL).
///
/// # Errors
/// The 307 answer.
pub fn check_owner(app: &App, ns: &str, path_and_query: &str) -> Result<(), ApiError> {
    match app.config.cluster.owner(ns) {
        Owner::Local => Ok(()),
        Owner::Remote(m) => {
            let mut e = ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "namespace '{ns}' is served by instance '{}' ({}); this is '{}'",
                    m.id, m.url, app.config.cluster.instance_id
                ),
            )
            .with_details(serde_json::json!({
                "namespace": ns, "owner": m.id, "url": m.url,
                "instance": app.config.cluster.instance_id,
            }));
            e.location = Some(format!("{}{path_and_query}", m.url));
            Err(e)
        }
    }
}

/// The namespace a path names, if any.
fn namespace_in_path(path: &str) -> Option<String> {
    let mut it = path.split('/');
    while let Some(seg) = it.next() {
        if seg == "namespace" || seg == "namespaces" {
            return it
                .next()
                .filter(|s| !s.is_empty())
                .map(normalise_namespace_name);
        }
    }
    None
}

/// 307 to the owner when the namespace in the path is another instance's.
///
/// # Errors
/// The redirect.
pub fn owned_here(app: &App, req: &Request) -> Result<(), ApiError> {
    if app.config.cluster.enabled() {
        if let Some(ns) = namespace_in_path(req.uri().path()) {
            let pq = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
            check_owner(app, &ns, &pq)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::namespace_in_path;

    #[test]
    fn finds_the_namespace_segment() {
        assert_eq!(
            namespace_in_path("/api/v1/wal/namespace/Orders/status").as_deref(),
            Some("orders")
        );
        assert_eq!(
            namespace_in_path("/api/v1/namespaces/x/dlq/abc").as_deref(),
            Some("x")
        );
        assert_eq!(namespace_in_path("/api/v1/namespaces"), None);
        assert_eq!(namespace_in_path("/api/v1/wal/write"), None);
    }
}

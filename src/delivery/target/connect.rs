//! How HTTP and webhook targets connect: through the egress policy, with TLS for `https://`.
//!
//! The stack is `HttpsConnector<CheckedConnector>`: hyper-rustls (TLS for `https://`, plain
//! TCP for `http://`) over [`CheckedConnector`], which refuses IP-literal hosts the policy
//! refuses and otherwise hands the URI to hyper-util's `HttpConnector` with
//! [`PolicyResolver`], a resolver that returns only the addresses the policy allows. The TCP
//! connection therefore goes to an address that was checked, never to a name resolved again.
//! TLS trusts the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them when set)
//! plus `[egress] ca_file`; it verifies the certificate against the URL's host name.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use crate::egress::{EgressDenied, EgressError, EgressPolicy};

/// A boxed error of the connector stack.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A DNS resolver that keeps only the addresses the egress policy allows (an error naming
/// the refusal when none is).
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<EgressPolicy>,
}

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            // Port 0: the connector sets the URI's port on each address.
            match policy.resolve(name.as_str(), 0).await {
                Ok(addrs) => Ok(addrs.into_iter()),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}

/// hyper-util's `HttpConnector` (which skips the resolver for IP-literal hosts) with those
/// hosts checked first.
#[derive(Debug, Clone)]
pub struct CheckedConnector {
    inner: HttpConnector<PolicyResolver>,
    policy: Arc<EgressPolicy>,
}

impl CheckedConnector {
    /// A connector for `policy`, giving up on a TCP connect after `connect_timeout`.
    #[must_use]
    pub fn new(policy: Arc<EgressPolicy>, connect_timeout: Duration) -> Self {
        let mut inner = HttpConnector::new_with_resolver(PolicyResolver {
            policy: Arc::clone(&policy),
        });
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(connect_timeout));
        // `https://` URIs reach this connector under the TLS layer.
        inner.enforce_http(false);
        Self { inner, policy }
    }
}

/// The policy's verdict on a URI whose host is an IP literal (names are checked when they
/// are resolved).
fn check_literal(policy: &EgressPolicy, uri: &Uri) -> Result<(), EgressDenied> {
    let Some(host) = uri.host() else {
        return Ok(());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => policy.check(ip),
        Err(_) => Ok(()),
    }
}

impl Service<Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Err(denied) = check_literal(&self.policy, &uri) {
            let err = Box::new(EgressError::Denied(denied)) as BoxError;
            return Box::pin(std::future::ready(Err(err)));
        }
        let fut = self.inner.call(uri);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// The connector of the shared HTTP client.
pub type Connector = hyper_rustls::HttpsConnector<CheckedConnector>;

/// The TLS client configuration: the system's roots plus the policy's CA file, ring's
/// cryptography, TLS 1.2 and 1.3.
///
/// # Errors
/// The cryptography provider cannot give the protocol versions (not expected).
pub fn tls_config(policy: &EgressPolicy) -> Result<rustls::ClientConfig, String> {
    let mut extra = Vec::new();
    if let Some(path) = policy.ca_file() {
        // Checked when the configuration was validated; a file that went bad since only
        // costs its own certificates.
        match crate::egress::read_ca_file(path) {
            Ok(certs) => extra = certs,
            Err(e) => tracing::error!(error = %e, "egress.ca_file: not loaded"),
        }
    }
    let (config, refused) = crate::egress::client_tls_config(extra)?;
    for e in refused {
        if let Some(path) = policy.ca_file() {
            tracing::error!(file = %path.display(), error = %e, "egress.ca_file: a certificate is not usable");
        }
    }
    Ok(config)
}

/// The connector stack for `policy` (see the module's documentation).
///
/// # Errors
/// TLS cannot be set up (see [`tls_config`]).
pub fn connector(
    policy: &Arc<EgressPolicy>,
    connect_timeout: Duration,
) -> Result<Connector, String> {
    let tls = tls_config(policy)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(CheckedConnector::new(Arc::clone(policy), connect_timeout)))
}

/// The errors of a chain: each error's `source`, except that an `io::Error` is looked into
/// (its `source` skips the error it wraps, and the TLS layer wraps errors in `io::Error`s).
pub fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}

/// The egress refusal somewhere in an error's chain, if there is one.
#[must_use]
pub fn find_denial<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    error_chain(err).find_map(|e| {
        e.downcast_ref::<EgressError>()
            .and_then(EgressError::denied)
            .or_else(|| e.downcast_ref::<EgressDenied>())
    })
}

/// The TLS error somewhere in an error's chain, if there is one.
#[must_use]
pub fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    error_chain(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_found_through_io_wrappers() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert!(matches!(
            find_tls_error(&outer),
            Some(rustls::Error::InvalidCertificate(_))
        ));
        assert!(find_denial(&outer).is_none());
        let denied = EgressPolicy::default()
            .check("10.0.0.1".parse().unwrap())
            .unwrap_err();
        let wrapped = std::io::Error::other(EgressError::Denied(denied.clone()));
        assert_eq!(find_denial(&wrapped), Some(&denied));
    }

    #[tokio::test]
    async fn literal_hosts_are_checked_before_connecting() {
        let policy = Arc::new(EgressPolicy::default());
        let mut c = CheckedConnector::new(Arc::clone(&policy), Duration::from_secs(1));
        for uri in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://[::ffff:169.254.169.254]/",
            "https://10.1.2.3/",
        ] {
            let err = c.call(uri.parse().unwrap()).await.unwrap_err();
            assert!(find_denial(err.as_ref()).is_some(), "{uri}: {err}");
        }
        let err = c
            .call("http://localhost:9/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(find_denial(err.as_ref()).is_some(), "localhost: {err}");
    }
}

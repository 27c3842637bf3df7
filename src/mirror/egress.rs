//! The `[egress]` policy for mirrors: before a mirror's client is built, every host its
//! settings name (Redis URL, Kafka bootstrap servers, SQS endpoint or queue URL) is resolved
//! and each address checked. A refused address stops the mirror with the reason (shown in
//! its status, retried slowly, so an operator's `allow` takes effect on restart).
//!
//! Unlike delivery targets, the mirror clients (librdkafka, the AWS SDK, redis) resolve the
//! hosts again themselves when they connect: the check is made on every (re)connection of
//! the mirror, not on every socket. docs/SECURITY.md says so.

use crate::egress::EgressPolicy;

use super::config::{MirrorSpec, Settings};
use super::MirrorError;

/// `host` and `port` of a URL (`scheme://[user[:pass]@]host[:port][/...]`), with the
/// scheme's default port when none is written.
fn url_host(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port(hostport, default_port)
}

/// `host[:port]` or `[v6][:port]`.
fn host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None if !s.is_empty() => Some((s.to_owned(), default_port)),
        None => None,
    }
}

/// The hosts a mirror connects to (an SQS mirror without an endpoint or queue URL talks to
/// AWS's public endpoint: nothing to check).
fn endpoints(spec: &MirrorSpec) -> Vec<(String, u16)> {
    match &spec.settings {
        Settings::Redis(r) => url_host(&r.url, 6379).into_iter().collect(),
        Settings::Kafka(k) => k
            .bootstrap_servers
            .split(',')
            .filter_map(|s| host_port(s, 9092))
            .collect(),
        Settings::Sqs(s) => s
            .endpoint_url
            .as_deref()
            .or(s.queue_url.as_deref())
            .and_then(|u| {
                let port = if u.starts_with("http://") { 80 } else { 443 };
                url_host(u, port)
            })
            .into_iter()
            .collect(),
    }
}

/// Checks every address of every host `spec` names.
///
/// # Errors
/// [`MirrorError::Config`] naming the refused address; [`MirrorError::Unavailable`] when a
/// host cannot be resolved (retried).
pub async fn check(spec: &MirrorSpec, policy: &EgressPolicy) -> Result<(), MirrorError> {
    for (host, port) in endpoints(spec) {
        let found = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| unresolved(spec, &host, &e))?;
        judge(spec, policy, &host, found)?;
    }
    Ok(())
}

/// [`check`] for callers outside the runtime (the Kafka-primary recovery at start-up).
///
/// # Errors
/// As [`check`].
pub fn check_blocking(spec: &MirrorSpec, policy: &EgressPolicy) -> Result<(), MirrorError> {
    use std::net::ToSocketAddrs as _;
    for (host, port) in endpoints(spec) {
        let found = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| unresolved(spec, &host, &e))?;
        judge(spec, policy, &host, found)?;
    }
    Ok(())
}

fn unresolved(spec: &MirrorSpec, host: &str, e: &std::io::Error) -> MirrorError {
    MirrorError::Unavailable {
        backend: super::config::backend_name(spec.backend),
        message: format!("cannot resolve {host}: {e}"),
    }
}

/// Every address must pass: the client will pick one of them itself.
fn judge(
    spec: &MirrorSpec,
    policy: &EgressPolicy,
    host: &str,
    found: impl Iterator<Item = std::net::SocketAddr>,
) -> Result<(), MirrorError> {
    for addr in found {
        policy.check(addr.ip()).map_err(|d| MirrorError::Config {
            name: spec.name.clone(),
            reason: format!("{host}: {d}"),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls_and_server_lists() {
        assert_eq!(
            url_host("redis://:pw@10.0.0.5:6380/2", 6379),
            Some(("10.0.0.5".into(), 6380))
        );
        assert_eq!(url_host("http://[::1]/queue", 80), Some(("::1".into(), 80)));
        assert_eq!(
            url_host("https://sqs.example/123/q", 443),
            Some(("sqs.example".into(), 443))
        );
        assert_eq!(host_port("k1:9093", 9092), Some(("k1".into(), 9093)));
        assert_eq!(host_port("k2", 9092), Some(("k2".into(), 9092)));
        assert_eq!(host_port("", 9092), None);
    }
}

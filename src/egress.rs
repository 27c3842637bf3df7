//! The egress policy: which addresses delivery targets may connect to.
//!
//! Every outbound connection a target makes (HTTP/webhook, Redis, PostgreSQL) goes to an
//! address this policy checked: the host is resolved once, the addresses are checked, and the
//! connection is made to a checked address — never to a name resolved again later, so a DNS
//! answer that changes between the check and the connect (rebinding) cannot reach a refused
//! address.
//!
//! Refused by default (each allowed again by a `[egress] allow` range that contains it):
//! loopback, unspecified and "this network", private (RFC 1918, IPv6 unique-local), shared
//! (CGNAT), link-local (incl. the cloud metadata address 169.254.169.254), multicast,
//! broadcast and reserved, documentation and benchmarking ranges, and the IETF special
//! ranges. IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, IPv4-translated, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are
//! judged by the IPv4 address they carry; Teredo and local-use NAT64 are refused.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::EgressConfig;

/// An address range: a network address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: [u8; 4], prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            prefix,
        }
    }

    const fn v6(s: [u16; 8], prefix: u8) -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )),
            prefix,
        }
    }

    /// Whether `ip` is in the range (an IPv4 range never contains an IPv6 address, nor the
    /// reverse; the policy maps embedded IPv4 addresses itself).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX` (the prefix at most 32 for IPv4, 128 for IPv6) or a bare address (a
    /// range of one). Host bits set below the prefix are refused (`10.0.0.1/8` is ambiguous).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an address range like \"10.0.0.0/8\" or \"::1/128\"")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Self { addr, prefix };
        let network = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        if network != addr {
            return Err(format!(
                "{s:?} has bits set past its /{prefix} prefix (did you mean \"{network}/{prefix}\"?)"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv4 ranges refused by default, with what they are.
const DENIED_V4: &[(Cidr, &str)] = &[
    (Cidr::v4([0, 0, 0, 0], 8), "unspecified (\"this network\")"),
    (Cidr::v4([10, 0, 0, 0], 8), "private (RFC 1918)"),
    (
        Cidr::v4([100, 64, 0, 0], 10),
        "shared address space (CGNAT)",
    ),
    (Cidr::v4([127, 0, 0, 0], 8), "loopback"),
    (
        Cidr::v4([169, 254, 0, 0], 16),
        "link-local (incl. cloud metadata)",
    ),
    (Cidr::v4([172, 16, 0, 0], 12), "private (RFC 1918)"),
    (Cidr::v4([192, 0, 0, 0], 24), "IETF protocol assignments"),
    (Cidr::v4([192, 0, 2, 0], 24), "documentation"),
    (Cidr::v4([192, 88, 99, 0], 24), "6to4 relay anycast"),
    (Cidr::v4([192, 168, 0, 0], 16), "private (RFC 1918)"),
    (Cidr::v4([198, 18, 0, 0], 15), "benchmarking"),
    (Cidr::v4([198, 51, 100, 0], 24), "documentation"),
    (Cidr::v4([203, 0, 113, 0], 24), "documentation"),
    (Cidr::v4([224, 0, 0, 0], 4), "multicast"),
    (Cidr::v4([255, 255, 255, 255], 32), "broadcast"),
    (Cidr::v4([240, 0, 0, 0], 4), "reserved"),
];

/// The IPv6 ranges refused by default (besides those embedding a refused IPv4 address).
const DENIED_V6: &[(Cidr, &str)] = &[
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64",
    ),
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo tunnel"),
    (Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    (Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (private)",
    ),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The IPv4 address an IPv6 address carries, in the forms that route to it: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-translated (`::ffff:0:0:0/96`), IPv4-compatible (`::/96`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`).
#[must_use]
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Why an address is refused by default, if it is.
fn denied_class(ip: IpAddr) -> Option<&'static str> {
    let in_table = |table: &[(Cidr, &'static str)], ip: IpAddr| {
        table
            .iter()
            .find(|(range, _)| range.contains(ip))
            .map(|(_, what)| *what)
    };
    match ip {
        IpAddr::V4(_) => in_table(DENIED_V4, ip),
        IpAddr::V6(v6) => in_table(DENIED_V6, ip)
            .or_else(|| embedded_v4(v6).and_then(|v4| in_table(DENIED_V4, IpAddr::V4(v4)))),
    }
}

/// An address the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress denied: address {ip} is {class}; allow it with [egress] allow = [\"{suggest}\"]")]
pub struct EgressDenied {
    /// The address.
    pub ip: IpAddr,
    /// What kind of address it is (`loopback`, `private (RFC 1918)`...).
    pub class: &'static str,
    /// The smallest `allow` entry that would let it through.
    pub suggest: String,
}

/// Why a target's host could not be turned into checked addresses.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Every address of the host is refused (the first refusal).
    #[error("{0}")]
    Denied(#[from] EgressDenied),
    /// The host could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The host resolved to no address at all.
    #[error("{host} has no address")]
    NoAddress {
        /// The host.
        host: String,
    },
}

impl EgressError {
    /// The refusal, when this is one (a permanent failure; the others may be transient).
    #[must_use]
    pub fn denied(&self) -> Option<&EgressDenied> {
        match self {
            Self::Denied(d) => Some(d),
            _ => None,
        }
    }
}

/// The policy: refused ranges by default, allowed again by the configured ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
    ca_file: Option<PathBuf>,
}

impl EgressPolicy {
    /// The policy of `[egress]`. Entries that do not parse are ignored (fail closed: fewer
    /// addresses allowed); [`EgressConfig::validate`] refuses them at start-up.
    #[must_use]
    pub fn new(config: &EgressConfig) -> Self {
        Self {
            allow: config
                .allow
                .iter()
                .filter_map(|s| s.parse::<Cidr>().ok())
                .collect(),
            ca_file: config.ca_file.clone(),
        }
    }

    /// The default policy with `allow` added (tests, tools).
    #[must_use]
    pub fn allowing(allow: impl IntoIterator<Item = Cidr>) -> Self {
        Self {
            allow: allow.into_iter().collect(),
            ca_file: None,
        }
    }

    /// The extra CA file of `https://` targets, if any.
    #[must_use]
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Whether a target may connect to `ip`: refused ranges are refused unless an `allow`
    /// range contains the address (or, for an IPv6 address embedding an IPv4 one, that IPv4
    /// address).
    ///
    /// # Errors
    /// [`EgressDenied`] naming the address, what it is, and the `allow` entry that would let
    /// it through.
    pub fn check(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let Some(class) = denied_class(ip) else {
            return Ok(());
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|r| r.contains(ip) || embedded.is_some_and(|e| r.contains(e)))
        {
            return Ok(());
        }
        let suggest = match embedded.filter(|e| denied_class(*e).is_some()) {
            Some(e) => format!("{e}/32"),
            None if ip.is_ipv4() => format!("{ip}/32"),
            None => format!("{ip}/128"),
        };
        Err(EgressDenied { ip, class, suggest })
    }

    /// Resolves `host` (a name or an address; IPv6 may be bracketed) and keeps the addresses
    /// the policy allows, with `port`, in the resolver's order.
    ///
    /// # Errors
    /// [`EgressError::Denied`] when every address is refused; the others when the name does
    /// not resolve.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|source| EgressError::Resolve {
                    host: bare.to_owned(),
                    source,
                })?
                .collect(),
        };
        self.filter(bare, found)
    }

    /// The addresses of `found` the policy allows.
    ///
    /// # Errors
    /// [`EgressError::Denied`] (the first refusal) when none is; [`EgressError::NoAddress`]
    /// when `found` is empty.
    pub fn filter(
        &self,
        host: &str,
        found: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let mut first_refusal = None;
        let mut allowed = Vec::new();
        for addr in found {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(d) => {
                    first_refusal.get_or_insert(d);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(d)) => Err(EgressError::Denied(d)),
            (true, None) => Err(EgressError::NoAddress {
                host: host.to_owned(),
            }),
        }
    }
}

/// Reads a PEM file of CA certificates.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate (the message says which).
pub fn read_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn deny(p: &EgressPolicy, s: &str) -> EgressDenied {
        match p.check(ip(s)) {
            Ok(()) => panic!("{s} must be refused"),
            Err(d) => d,
        }
    }

    #[test]
    fn refuses_every_special_class_by_default() {
        let p = EgressPolicy::default();
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("2001:db8::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.170", "IETF"),
            ("2001::1", "Teredo"),
            ("64:ff9b:1::1", "NAT64"),
            ("fec0::1", "site-local"),
            // IPv6 forms of refused IPv4 addresses are judged by the IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::ffff:0:127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:0101::", "private"),
        ] {
            let d = deny(&p, addr);
            assert!(d.class.contains(class), "{addr}: {} ({class})", d.class);
            let msg = d.to_string();
            assert!(
                msg.contains(addr) || msg.contains(&ip(addr).to_string()),
                "{msg}"
            );
            assert!(msg.contains("[egress] allow"), "{msg}");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let p = EgressPolicy::default();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_message_names_the_address_and_the_fix() {
        let d = deny(&EgressPolicy::default(), "127.0.0.1");
        assert_eq!(
            d.to_string(),
            "egress denied: address 127.0.0.1 is loopback; allow it with [egress] allow = [\"127.0.0.1/32\"]"
        );
        let d = deny(&EgressPolicy::default(), "::ffff:169.254.169.254");
        assert_eq!(d.suggest, "169.254.169.254/32");
        let d = deny(&EgressPolicy::default(), "fe80::1");
        assert_eq!(d.suggest, "fe80::1/128");
    }

    #[test]
    fn the_allow_list_overrides_the_default() {
        let cfg = EgressConfig {
            allow: vec!["127.0.0.1/32".into(), "10.0.0.0/8".into(), "::1/128".into()],
            ca_file: None,
        };
        let p = EgressPolicy::new(&cfg);
        for addr in [
            "127.0.0.1",
            "10.9.8.7",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
        for addr in [
            "127.0.0.2",
            "169.254.169.254",
            "192.168.0.1",
            "::ffff:127.0.0.2",
            "fe80::1",
        ] {
            deny(&p, addr);
        }
        // The suggested entry really lets the address through.
        for addr in [
            "169.254.169.254",
            "::ffff:192.168.1.1",
            "fd00::5",
            "64:ff9b::7f00:1",
        ] {
            let d = deny(&EgressPolicy::default(), addr);
            let p = EgressPolicy::allowing([d.suggest.parse().unwrap()]);
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr} with {}", d.suggest);
        }
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::ffff:10.0.0.1")), "families are not mixed");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("1.2.3.4")));
        let c: Cidr = "::/0".parse().unwrap();
        assert!(c.contains(ip("fe80::1")));
        let c: Cidr = " 192.168.1.7 ".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.1.7/32");
        assert!(c.contains(ip("192.168.1.7")) && !c.contains(ip("192.168.1.8")));
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "example.com/8",
            "10/8",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert!("10.0.0.1/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    #[test]
    fn filter_keeps_allowed_addresses_and_reports_refusals() {
        let p = EgressPolicy::default();
        let a = |s: &str| SocketAddr::new(ip(s), 80);
        let kept = p
            .filter("h", [a("127.0.0.1"), a("8.8.8.8"), a("10.0.0.1")])
            .unwrap();
        assert_eq!(kept, vec![a("8.8.8.8")]);
        let e = p.filter("h", [a("127.0.0.1"), a("::1")]).unwrap_err();
        assert_eq!(e.denied().map(|d| d.ip), Some(ip("127.0.0.1")));
        assert!(matches!(
            p.filter("h", []),
            Err(EgressError::NoAddress { .. })
        ));
    }

    #[tokio::test]
    async fn resolving_checks_names_and_literals() {
        let p = EgressPolicy::default();
        let e = p.resolve("localhost", 80).await.unwrap_err();
        assert!(e.denied().is_some(), "{e}");
        let e = p.resolve("[::1]", 80).await.unwrap_err();
        assert!(e.denied().is_some(), "{e}");
        let e = p.resolve("169.254.169.254", 80).await.unwrap_err();
        assert!(e.to_string().contains("link-local"), "{e}");
        let ok = EgressPolicy::allowing(["127.0.0.0/8".parse().unwrap()]);
        let addrs = ok.resolve("127.0.0.1", 8080).await.unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("127.0.0.1"), 8080)]);
    }
}

/// A TLS client configuration trusting the system's roots plus `extra`: ring's
/// cryptography, TLS 1.2 and 1.3. Shared by delivery targets and the operator CLI. A
/// certificate of `extra` that is not usable is left out and its error returned beside the
/// configuration (the caller decides whether that is fatal).
///
/// # Errors
/// The provider cannot give the protocol versions (not expected).
pub fn client_tls_config(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<(rustls::ClientConfig, Vec<String>), String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "loading the system's CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system CA certificates");
    let refused: Vec<String> = extra
        .into_iter()
        .filter_map(|cert| roots.add(cert).err().map(|e| e.to_string()))
        .collect();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, refused))
}

//! `[egress]`: where delivery targets may connect (see [`crate::egress`]) and the extra CA
//! certificates their TLS connections trust.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::egress::Cidr;

/// `[egress]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Address ranges (CIDR, e.g. `"10.0.0.0/8"`, `"127.0.0.1/32"`, `"::1/128"`; a bare
    /// address means that one address) that targets may connect to although they are denied
    /// by default (loopback, private, link-local, CGNAT, multicast, reserved...).
    /// Default: none — every such address is refused. Env: `WALD_EGRESS__ALLOW` (comma-separated).
    pub allow: Vec<String>,
    /// A PEM file of CA certificates trusted for `https://` targets, in addition to the
    /// system's roots (which `SSL_CERT_FILE` / `SSL_CERT_DIR` replace when set).
    /// Default: none. Env: `WALD_EGRESS__CA_FILE`.
    pub ca_file: Option<PathBuf>,
}

impl EgressConfig {
    /// Checks every key; the error names it (`egress.allow[2]`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, entry) in self.allow.iter().enumerate() {
            if let Err(reason) = entry.parse::<Cidr>() {
                return Err(invalid(format!("egress.allow[{i}]"), reason));
            }
        }
        if let Some(path) = &self.ca_file {
            if let Err(reason) = crate::egress::read_ca_file(path) {
                return Err(invalid("egress.ca_file", reason));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn key_of(text: &str) -> String {
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_entries_name_their_key() {
        assert_eq!(
            key_of("[egress]\nallow = [\"10.0.0.0/8\", \"10.0.0.1/8\"]"),
            "egress.allow[1]"
        );
        assert_eq!(key_of("[egress]\nallow = [\"nope\"]"), "egress.allow[0]");
        assert_eq!(
            key_of("[egress]\nca_file = \"/nonexistent/ca.pem\""),
            "egress.ca_file"
        );
        let ok = Config::parse(
            "[egress]\nallow = [\"127.0.0.1/32\", \"::1\", \"fd00::/8\"]",
            Path::new("t.toml"),
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.egress.allow.len(), 3);
    }

    #[test]
    fn the_environment_sets_the_allow_list() {
        let mut c = Config::default();
        c.apply_env([("WALD_EGRESS__ALLOW", "127.0.0.0/8, ::1/128")])
            .unwrap();
        assert_eq!(c.egress.allow, ["127.0.0.0/8", "::1/128"]);
        c.validate().unwrap();
        c.apply_env([("WALD_EGRESS__CA_FILE", "")]).unwrap();
        assert_eq!(c.egress.ca_file, None);
    }
}

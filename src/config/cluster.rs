//! `[cluster]`: several `wald` instances serving one set of namespaces, each owning a shard
//! of them (the seeds' scaling model, §7.1; docs/OPERATIONS.md, "Several instances").
//!
//! Every instance gets the same `members` list and `assign` table and its own `instance_id`.
//! A namespace's owner is its `assign` entry, else the member with the highest
//! rendezvous hash of (namespace, member id) — so adding a member moves only the namespaces
//! it wins. An instance serves, delivers and mirrors only the namespaces it owns, and answers
//! requests for the others with `307 Temporary Redirect` to the owner's URL.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// One instance of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The instance's id: 1 to 64 characters of `a-z 0-9 _ -`.
    pub id: String,
    /// Its base URL as clients reach it (`http://10.0.0.2:3000`), no trailing slash.
    pub url: String,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's id: one of `members`. Default: empty — no cluster, this instance owns
    /// every namespace. Env: `WALD_CLUSTER__INSTANCE_ID`.
    pub instance_id: String,
    /// Every instance, the same list on each. Default: none.
    pub members: Vec<Member>,
    /// Namespaces pinned to an instance (name → member id), over the hash. Default: none.
    pub assign: BTreeMap<String, String>,
}

/// Who serves a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// This instance.
    Local,
    /// Another member.
    Remote(&'a Member),
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl ClusterConfig {
    /// Whether a cluster is configured.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.instance_id.is_empty()
    }

    /// The member that owns namespace `ns` (normalised name).
    #[must_use]
    pub fn owner(&self, ns: &str) -> Owner<'_> {
        if !self.enabled() {
            return Owner::Local;
        }
        let chosen = match self.assign.get(ns) {
            Some(id) => self.members.iter().find(|m| &m.id == id),
            None => self
                .members
                .iter()
                .max_by_key(|m| fnv1a(&[ns.as_bytes(), m.id.as_bytes()])),
        };
        match chosen {
            Some(m) if m.id != self.instance_id => Owner::Remote(m),
            _ => Owner::Local,
        }
    }

    /// Whether this instance owns namespace `ns`.
    #[must_use]
    pub fn owns(&self, ns: &str) -> bool {
        self.owner(ns) == Owner::Local
    }

    /// Checks every key; the error names it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            if !self.members.is_empty() || !self.assign.is_empty() {
                return Err(invalid(
                    "cluster.instance_id",
                    "is required when cluster.members or cluster.assign is set",
                ));
            }
            return Ok(());
        }
        let id_ok = |s: &str| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if !id_ok(&self.instance_id) {
            return Err(invalid(
                "cluster.instance_id",
                "must be 1 to 64 characters of a-z 0-9 _ -",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if !id_ok(&m.id) {
                return Err(invalid(
                    format!("cluster.members[{i}].id"),
                    "must be 1 to 64 characters of a-z 0-9 _ -",
                ));
            }
            if !seen.insert(m.id.as_str()) {
                return Err(invalid(
                    format!("cluster.members[{i}].id"),
                    format!("`{}` is listed twice", m.id),
                ));
            }
            let scheme_ok = m.url.starts_with("http://") || m.url.starts_with("https://");
            if !scheme_ok || m.url.ends_with('/') || m.url.parse::<axum::http::Uri>().is_err() {
                return Err(invalid(
                    format!("cluster.members[{i}].url"),
                    "must be an http(s) base URL without a trailing slash (http://10.0.0.2:3000)",
                ));
            }
        }
        if !seen.contains(self.instance_id.as_str()) {
            return Err(invalid(
                "cluster.instance_id",
                format!("`{}` is not one of cluster.members", self.instance_id),
            ));
        }
        for (ns, id) in &self.assign {
            if !seen.contains(id.as_str()) {
                return Err(invalid(
                    format!("cluster.assign.{ns}"),
                    format!("`{id}` is not one of cluster.members"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(me: &str) -> ClusterConfig {
        ClusterConfig {
            instance_id: me.into(),
            members: vec![
                Member {
                    id: "a".into(),
                    url: "http://127.0.0.1:3000".into(),
                },
                Member {
                    id: "b".into(),
                    url: "http://127.0.0.1:3001".into(),
                },
            ],
            assign: BTreeMap::from([("orders".to_owned(), "b".to_owned())]),
        }
    }

    #[test]
    fn every_namespace_has_exactly_one_owner() {
        let (a, b) = (cluster("a"), cluster("b"));
        let mut on_a = 0;
        for i in 0..200 {
            let ns = format!("ns-{i}");
            assert!(a.owns(&ns) != b.owns(&ns), "{ns}");
            on_a += usize::from(a.owns(&ns));
        }
        assert!((60..=140).contains(&on_a), "spread: {on_a} of 200 on a");
        assert!(b.owns("orders") && !a.owns("orders"), "assign wins");
        assert!(matches!(a.owner("orders"), Owner::Remote(m) if m.id == "b"));
        assert!(ClusterConfig::default().owns("anything"));
    }

    #[test]
    fn validation_names_the_key() {
        let key = |c: &ClusterConfig| match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let mut c = cluster("c");
        assert_eq!(key(&c), "cluster.instance_id");
        c = cluster("a");
        c.members[1].url = "http://x/".into();
        assert_eq!(key(&c), "cluster.members[1].url");
        c = cluster("a");
        c.assign.insert("x".into(), "z".into());
        assert_eq!(key(&c), "cluster.assign.x");
        assert!(cluster("a").validate().is_ok());
    }
}

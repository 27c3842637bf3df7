//! `[delivery]`: consumers, target defaults and the dead-letter queue's replay pace.

use serde::Deserialize;

use super::{check_range, ConfigError};

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run consumers (deliver messages to their targets). Default: true.
    pub enabled: bool,
    /// Messages a partition's consumer holds in flight at once (its window). A failing
    /// message holds its own slot and its key's successors, never more. Default: 512.
    /// Range: 1 ..= 65536.
    pub window: usize,
    /// Messages due later than this many milliseconds after they are read are parked in the
    /// due-time index (on disk) instead of memory, and loaded back shortly before they are
    /// due. Default: 5000. Range: 1000 ..= 3600000.
    pub park_after_ms: u64,
    /// Timeout of a target that sets none (`timeoutMs`), in milliseconds. Default: 10000.
    /// Range: 1 ..= 300000.
    pub target_timeout_ms: u64,
    /// Most messages per second a bulk dead-letter replay re-delivers. Default: 100.
    /// Range: 1 ..= 100000.
    pub replay_rate_per_sec: u32,
    /// The directory `file_system` targets write under (their `path` is relative to it;
    /// created at start if missing). It may not be inside the data directory, nor contain
    /// it. Default: unset — `file_system` targets are refused.
    /// Env: `WALD_DELIVERY__FILE_ROOT`.
    pub file_root: Option<std::path::PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 512,
            park_after_ms: 5000,
            target_timeout_ms: 10_000,
            replay_rate_per_sec: 100,
            file_root: None,
        }
    }
}

impl DeliveryConfig {
    /// Checks every key; the error names it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("delivery.window", self.window as u64, 1, 65_536)?;
        check_range(
            "delivery.park_after_ms",
            self.park_after_ms,
            1000,
            3_600_000,
        )?;
        check_range(
            "delivery.target_timeout_ms",
            self.target_timeout_ms,
            1,
            300_000,
        )?;
        check_range(
            "delivery.replay_rate_per_sec",
            u64::from(self.replay_rate_per_sec),
            1,
            100_000,
        )
    }

    /// Checks `file_root` against the data directory: neither inside the other (compared
    /// as absolute paths, resolved through symbolic links where they exist).
    ///
    /// # Errors
    /// [`ConfigError`] naming `delivery.file_root`.
    pub fn validate_file_root(&self, data_dir: &std::path::Path) -> Result<(), ConfigError> {
        let Some(root) = &self.file_root else {
            return Ok(());
        };
        if root.as_os_str().is_empty() {
            return Err(super::invalid("delivery.file_root", "must not be empty"));
        }
        let resolve = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        let (r, d) = (resolve(root), resolve(data_dir));
        if r.starts_with(&d) || d.starts_with(&r) {
            return Err(super::invalid(
                "delivery.file_root",
                format!(
                    "{} and the data directory {} must not contain one another",
                    r.display(),
                    d.display()
                ),
            ));
        }
        Ok(())
    }
}

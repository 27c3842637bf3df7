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
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 512,
            park_after_ms: 5000,
            target_timeout_ms: 10_000,
            replay_rate_per_sec: 100,
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
}

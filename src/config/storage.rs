//! `[storage]`: the engine's knobs, mapped onto [`wald_storage::LogConfig`].

use std::time::Duration;

use serde::Deserialize;
use wald_storage::LogConfig;

use super::{invalid, ConfigError};

/// `[storage]`: maps onto [`wald_storage::LogConfig`] (see [`StorageConfig::log_config`]);
/// the defaults are `LogConfig::default()`'s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Size at which the active segment is sealed and a new one started, in bytes.
    /// Default: 64 MiB (67108864). Range: 65536 ..= 4294967295.
    pub segment_bytes: u64,
    /// Size of a partition's first preallocated segment, in bytes (capped at
    /// `segment_bytes`); each later one is twice the data of the one before it, up to
    /// `segment_bytes`: an idle partition holds this much. Default: 1 MiB (1048576).
    /// Range: ≥ 65536.
    pub first_segment_bytes: u64,
    /// Age at which a non-empty active segment is sealed, in seconds. Default: 86400.
    /// Range: ≥ 1.
    pub segment_max_age_secs: u64,
    /// Largest encoded record (message plus about 100 bytes of framing), in bytes.
    /// Default: 4 MiB (4194304). Must fit a segment: ≤ `segment_bytes` − 64.
    pub max_record_bytes: usize,
    /// Bytes of records between two sparse-index entries. Default: 4096. Range: ≥ 1.
    pub index_interval_bytes: u32,
    /// How new segments get their space. Default: `zero_fill`.
    pub preallocate: PreallocateSetting,
    /// Most bytes written by one group commit (one write, one fsync). Default: 512 KiB
    /// (524288). Range: ≥ 1.
    pub max_batch_bytes: usize,
    /// Bound of a partition's append queue in bytes (writers wait beyond it).
    /// Default: 64 MiB (67108864). Range: ≥ `max_record_bytes`.
    pub max_pending_bytes: usize,
    /// Longest a written but unsynced record (namespace durability `batch`/`none`) waits for
    /// the background fsync, in milliseconds. Default: 1000. Range: ≥ 1.
    pub background_sync_interval_ms: u64,
    /// What opening a log tolerates. Default: `tolerate_tail_corruption`.
    pub recovery_mode: RecoveryModeSetting,
    /// Check every record's CRC in sealed segments at start. Default: true.
    pub verify_on_open: bool,
    /// Delete sealed segments whose newest record is older than this, in seconds.
    /// Default: unset (keep). Range: ≥ 1.
    pub retention_max_age_secs: Option<u64>,
    /// Delete the oldest sealed segments while a partition log is larger than this, in bytes.
    /// Default: unset (keep). Range: ≥ 1.
    pub retention_max_bytes: Option<u64>,
    /// How often the service applies retention (every owned partition; also purges expired
    /// idempotency keys), in milliseconds. Default: 30000. Range: 100 ..= 86400000.
    pub retention_interval_ms: u64,
    /// Most segments one partition deletes per retention pass (deletes are paced: on a file
    /// system mounted with `discard`, a large delete slows every fsync for a while).
    /// Default: 4. Range: ≥ 1.
    pub retention_max_segments_per_pass: usize,
}

/// `storage.preallocate`; see [`wald_storage::Preallocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreallocateSetting {
    /// Zero-fill and sync new segments before use (data-only fdatasync). Default.
    #[default]
    ZeroFill,
    /// Grow the file as records arrive.
    None,
}

/// `storage.recovery_mode`; see [`wald_storage::RecoveryMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryModeSetting {
    /// Cut a torn tail of the last segment; refuse damage elsewhere. Default.
    #[default]
    TolerateTailCorruption,
    /// Refuse any damage, even a torn tail.
    AbsoluteConsistency,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let d = LogConfig::default();
        Self {
            segment_bytes: d.segment_bytes,
            first_segment_bytes: d.first_segment_bytes,
            segment_max_age_secs: d.segment_max_age.as_secs(),
            max_record_bytes: d.max_record_bytes,
            index_interval_bytes: d.index_interval_bytes,
            preallocate: match d.preallocate {
                wald_storage::Preallocate::ZeroFill => PreallocateSetting::ZeroFill,
                wald_storage::Preallocate::None => PreallocateSetting::None,
            },
            max_batch_bytes: d.max_batch_bytes,
            max_pending_bytes: d.max_pending_bytes,
            background_sync_interval_ms: u64::try_from(d.background_sync_interval.as_millis())
                .unwrap_or(u64::MAX),
            recovery_mode: match d.recovery_mode {
                wald_storage::RecoveryMode::TolerateTailCorruption => {
                    RecoveryModeSetting::TolerateTailCorruption
                }
                wald_storage::RecoveryMode::AbsoluteConsistency => {
                    RecoveryModeSetting::AbsoluteConsistency
                }
            },
            verify_on_open: d.verify_on_open,
            retention_max_age_secs: d.retention.max_age.map(|a| a.as_secs()),
            retention_max_bytes: d.retention.max_bytes,
            retention_interval_ms: 30_000,
            retention_max_segments_per_pass: 4,
        }
    }
}

impl StorageConfig {
    /// The engine configuration of every partition log.
    #[must_use]
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            first_segment_bytes: self.first_segment_bytes,
            segment_max_age: Duration::from_secs(self.segment_max_age_secs),
            max_record_bytes: self.max_record_bytes,
            index_interval_bytes: self.index_interval_bytes,
            preallocate: match self.preallocate {
                PreallocateSetting::ZeroFill => wald_storage::Preallocate::ZeroFill,
                PreallocateSetting::None => wald_storage::Preallocate::None,
            },
            max_batch_bytes: self.max_batch_bytes,
            max_pending_bytes: self.max_pending_bytes,
            background_sync_interval: Duration::from_millis(self.background_sync_interval_ms),
            recovery_mode: match self.recovery_mode {
                RecoveryModeSetting::TolerateTailCorruption => {
                    wald_storage::RecoveryMode::TolerateTailCorruption
                }
                RecoveryModeSetting::AbsoluteConsistency => {
                    wald_storage::RecoveryMode::AbsoluteConsistency
                }
            },
            verify_on_open: self.verify_on_open,
            retention: wald_storage::Retention {
                max_age: self.retention_max_age_secs.map(Duration::from_secs),
                max_bytes: self.retention_max_bytes,
            },
        }
    }

    /// The retention pass's interval.
    #[must_use]
    pub fn retention_interval(&self) -> Duration {
        Duration::from_millis(self.retention_interval_ms)
    }

    /// Checks through [`LogConfig::validate`], naming the key of this section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=86_400_000).contains(&self.retention_interval_ms) {
            return Err(invalid(
                "storage.retention_interval_ms",
                format!(
                    "must be between 100 and 86400000, got {}",
                    self.retention_interval_ms
                ),
            ));
        }
        if self.retention_max_segments_per_pass == 0 {
            return Err(invalid(
                "storage.retention_max_segments_per_pass",
                "must be at least 1",
            ));
        }
        match self.log_config().validate() {
            Ok(()) => Ok(()),
            Err(wald_storage::Error::InvalidConfig { key, reason }) => {
                let key = match key {
                    "segment_max_age" => "segment_max_age_secs",
                    "background_sync_interval" => "background_sync_interval_ms",
                    "retention.max_age" => "retention_max_age_secs",
                    "retention.max_bytes" => "retention_max_bytes",
                    other => other,
                };
                Err(invalid(format!("storage.{key}"), reason))
            }
            Err(other) => Err(invalid("storage", other.to_string())),
        }
    }
}

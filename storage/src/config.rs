//! Typed, documented and validated configuration of a partition log.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::header::SEGMENT_HEADER_LEN;
use crate::format::record::{MAX_RECORD_LEN_LIMIT, RECORD_HEADER_LEN};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after the `fdatasync` that covers the record. Batches close as soon
    /// as the queue drains: concurrent writers share one fsync (group commit).
    /// Survives process crash and power loss. Default.
    #[default]
    Sync,
    /// Acknowledged after the record is written to the OS (survives a process crash);
    /// an `fdatasync` covers it at most `max_delay` later (bounded loss on power failure),
    /// like an interval flush.
    Batch {
        /// The longest a written record may stay unsynced.
        max_delay: Duration,
    },
    /// Acknowledged after the record is written to the OS (survives a process crash, not
    /// power loss); synced by the background flush (`LogConfig::background_sync_interval`),
    /// at segment roll and at close.
    None,
}

impl Durability {
    /// True when the acknowledgement waits for the covering fsync.
    #[must_use]
    pub fn waits_for_sync(&self) -> bool {
        matches!(self, Self::Sync)
    }
}

/// What opening a log tolerates when it finds damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Any invalid byte, even a torn tail left by a crash mid-write, refuses the open
    /// and names the segment and position. For forensic opens and strict operators.
    AbsoluteConsistency,
    /// A torn or corrupt tail of the last segment (what a crash mid-write leaves) is cut at
    /// the last valid record; the cut is fsync'd and logged. Damage anywhere else — a
    /// sealed segment, or valid records after the bad one — refuses the open. Default.
    #[default]
    TolerateTailCorruption,
}

/// How new segments get their space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocate {
    /// Write zeros over the whole segment and sync it before use, so that each
    /// `fdatasync` on the write path writes data only, never file-size metadata. Default.
    #[default]
    ZeroFill,
    /// Grow the file as records arrive (each `fdatasync` then also commits the new size).
    None,
}

/// Size and age limits after which sealed segments are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete sealed segments whose newest record is older than this. Default: `None` (keep).
    pub max_age: Option<Duration>,
    /// Delete the oldest sealed segments while the log is larger than this. Default: `None`.
    pub max_bytes: Option<u64>,
}

/// Configuration of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Largest segment: size at which the active segment is sealed and a new one started,
    /// in bytes. Default: 64 MiB. Range: 64 KiB ..= 4 GiB − 1.
    pub segment_bytes: u64,
    /// Size of a partition's first preallocated segment, in bytes (capped at
    /// `segment_bytes`). Each later segment is twice the data of the one before it, between
    /// this and `segment_bytes`, so an idle partition holds this much and a busy one reaches
    /// full-size segments after a few rolls. Only with [`Preallocate::ZeroFill`] (files grow
    /// with their data otherwise). Default: 1 MiB. Range: ≥ 64 KiB.
    pub first_segment_bytes: u64,
    /// Age at which a non-empty active segment is sealed. Default: 24 h.
    pub segment_max_age: Duration,
    /// Largest encoded record accepted (header + key + headers + payload), in bytes.
    /// Default: 4 MiB. Must leave room in a segment: ≤ `segment_bytes` − 64.
    pub max_record_bytes: usize,
    /// Bytes of records between two sparse-index entries. Default: 4096.
    pub index_interval_bytes: u32,
    /// How segments get their space. Default: [`Preallocate::ZeroFill`].
    pub preallocate: Preallocate,
    /// Most bytes of records written by one group commit (one write, one fsync); a single
    /// larger record still goes alone. Default: 512 KiB.
    pub max_batch_bytes: usize,
    /// Bound of the append queue in bytes; `append` blocks and `try_append` fails beyond it.
    /// Default: 64 MiB.
    pub max_pending_bytes: usize,
    /// Longest a written but unsynced record (durability `Batch` or `None`) waits for the
    /// background fsync. Default: 1 s.
    pub background_sync_interval: Duration,
    /// What opening tolerates. Default: [`RecoveryMode::TolerateTailCorruption`].
    pub recovery_mode: RecoveryMode,
    /// Check every record's CRC in sealed segments when opening (else only the last segment
    /// is scanned and sealed segments are checked as they are read). Default: true.
    pub verify_on_open: bool,
    /// Deletion of old sealed segments. Default: keep everything.
    pub retention: Retention,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            first_segment_bytes: 1 << 20,
            segment_max_age: Duration::from_secs(24 * 3600),
            max_record_bytes: 4 << 20,
            index_interval_bytes: 4096,
            preallocate: Preallocate::ZeroFill,
            max_batch_bytes: 512 << 10,
            max_pending_bytes: 64 << 20,
            background_sync_interval: Duration::from_secs(1),
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            verify_on_open: true,
            retention: Retention::default(),
        }
    }
}

/// Smallest accepted segment size.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;

impl LogConfig {
    /// The preallocated size of the next segment, given the data bytes of the segment before
    /// it (`None` for a partition's first) and the bytes the record that must fit needs.
    #[must_use]
    pub fn next_segment_bytes(&self, prev_data_bytes: Option<u64>, need: u64) -> u64 {
        if self.preallocate == Preallocate::None {
            return self.segment_bytes.max(need);
        }
        let first = self.first_segment_bytes.min(self.segment_bytes);
        let planned = prev_data_bytes.map_or(first, |d| {
            d.saturating_mul(2).clamp(first, self.segment_bytes)
        });
        planned.max(need)
    }

    /// Checks every field; the error names the first bad key.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, reason: String| Err(Error::InvalidConfig { key, reason });
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > u64::from(u32::MAX) {
            return bad(
                "segment_bytes",
                format!(
                    "{} is outside {MIN_SEGMENT_BYTES}..={}",
                    self.segment_bytes,
                    u32::MAX
                ),
            );
        }
        if self.first_segment_bytes < MIN_SEGMENT_BYTES {
            return bad(
                "first_segment_bytes",
                format!(
                    "{} is below the smallest segment ({MIN_SEGMENT_BYTES})",
                    self.first_segment_bytes
                ),
            );
        }
        if self.segment_max_age.is_zero() {
            return bad("segment_max_age", "must be greater than zero".into());
        }
        let room = self.segment_bytes.saturating_sub(SEGMENT_HEADER_LEN as u64);
        if self.max_record_bytes < RECORD_HEADER_LEN
            || self.max_record_bytes > MAX_RECORD_LEN_LIMIT
            || self.max_record_bytes as u64 > room
        {
            return bad(
                "max_record_bytes",
                format!(
                    "{} must be within {RECORD_HEADER_LEN}..={} and fit a segment ({room} bytes of room)",
                    self.max_record_bytes, MAX_RECORD_LEN_LIMIT
                ),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be greater than zero".into());
        }
        if self.max_batch_bytes == 0 {
            return bad("max_batch_bytes", "must be greater than zero".into());
        }
        if self.max_pending_bytes < self.max_record_bytes {
            return bad(
                "max_pending_bytes",
                format!(
                    "{} must be at least max_record_bytes ({})",
                    self.max_pending_bytes, self.max_record_bytes
                ),
            );
        }
        if self.background_sync_interval.is_zero() {
            return bad(
                "background_sync_interval",
                "must be greater than zero".into(),
            );
        }
        if self.retention.max_age.is_some_and(|d| d.is_zero()) {
            return bad(
                "retention.max_age",
                "must be greater than zero when set".into(),
            );
        }
        if self.retention.max_bytes == Some(0) {
            return bad(
                "retention.max_bytes",
                "must be greater than zero when set".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(LogConfig::default().validate().is_ok());
    }

    #[test]
    fn segments_start_small_and_double_up_to_the_largest() {
        let cfg = LogConfig::default();
        assert_eq!(cfg.next_segment_bytes(None, 0), 1 << 20);
        assert_eq!(cfg.next_segment_bytes(Some(1 << 20), 0), 2 << 20);
        assert_eq!(cfg.next_segment_bytes(Some(40 << 20), 0), 64 << 20);
        // Rolled by age with little data: back to the smallest.
        assert_eq!(cfg.next_segment_bytes(Some(3000), 0), 1 << 20);
        // A record larger than the plan gets a segment it fits in.
        assert_eq!(cfg.next_segment_bytes(None, 3 << 20), 3 << 20);
        let small = LogConfig {
            segment_bytes: 64 << 10,
            ..LogConfig::default()
        };
        assert_eq!(small.next_segment_bytes(None, 0), 64 << 10);
        let grow = LogConfig {
            preallocate: Preallocate::None,
            ..LogConfig::default()
        };
        assert_eq!(grow.next_segment_bytes(None, 0), 64 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(&str, LogConfig)> = vec![
            (
                "segment_bytes",
                LogConfig {
                    segment_bytes: 10,
                    ..LogConfig::default()
                },
            ),
            (
                "max_record_bytes",
                LogConfig {
                    max_record_bytes: 128 << 20,
                    ..LogConfig::default()
                },
            ),
            (
                "index_interval_bytes",
                LogConfig {
                    index_interval_bytes: 0,
                    ..LogConfig::default()
                },
            ),
            (
                "max_batch_bytes",
                LogConfig {
                    max_batch_bytes: 0,
                    ..LogConfig::default()
                },
            ),
            (
                "max_pending_bytes",
                LogConfig {
                    max_pending_bytes: 1,
                    ..LogConfig::default()
                },
            ),
            (
                "first_segment_bytes",
                LogConfig {
                    first_segment_bytes: 4096,
                    ..LogConfig::default()
                },
            ),
            (
                "segment_max_age",
                LogConfig {
                    segment_max_age: Duration::ZERO,
                    ..LogConfig::default()
                },
            ),
            (
                "retention.max_bytes",
                LogConfig {
                    retention: Retention {
                        max_bytes: Some(0),
                        max_age: None,
                    },
                    ..LogConfig::default()
                },
            ),
        ];
        for (key, cfg) in cases {
            match cfg.validate() {
                Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}

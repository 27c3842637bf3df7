//! A message's delivery record: what every target's attempts did, as stored in the state
//! store (`delivery` column family) and served by `GET /api/v1/wal/messages/{id}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most attempts kept per target (the retry policy allows at most 11; DLQ replays add more).
pub const MAX_ATTEMPTS_KEPT: usize = 32;

/// Where a message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Read by its consumer, not yet attempted.
    #[default]
    Pending,
    /// Delayed: waiting in the due-time index for its time.
    Scheduled,
    /// Attempts under way or waiting to be retried.
    Delivering,
    /// Every target confirmed it.
    Delivered,
    /// At least one target failed for good and the message went to the dead-letter queue.
    DeadLettered,
    /// At least one target failed for good; the dead-letter queue was off.
    Failed,
    /// Its TTL ran out before it could be delivered.
    Expired,
    /// Neither the message nor its namespace names a target: nothing to deliver.
    NoTargets,
    /// A transaction: handed to its executor; its mutations' states are served by
    /// `GET /api/v1/wal/transaction/{id}/status`.
    Transaction,
}

impl MessageStatus {
    /// True for an outcome no further attempt changes.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::DeadLettered
                | Self::Failed
                | Self::Expired
                | Self::NoTargets
                | Self::Transaction
        )
    }
}

/// Where one target is with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    /// Not attempted yet.
    #[default]
    Pending,
    /// Failed, another attempt is scheduled (`nextAttemptAt`).
    Retrying,
    /// Confirmed.
    Delivered,
    /// Failed for good, recorded in the dead-letter queue.
    DeadLettered,
    /// Failed for good, dead-letter queue off.
    Failed,
    /// TTL ran out.
    Expired,
}

impl TargetStatus {
    /// True for an outcome no further attempt changes.
    #[must_use]
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Retrying)
    }
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// Why it failed; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's class (`timeout`, `connection`, `5xx`, `4xx`, `429`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

/// One target's part of a message's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetDelivery {
    /// The target's identifier.
    pub identifier: String,
    /// The target's region, for cross-region fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Where this target is.
    pub status: TargetStatus,
    /// Every attempt so far (the most recent [`MAX_ATTEMPTS_KEPT`]).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Attempts made in all (also those no longer kept).
    #[serde(default)]
    pub attempt_count: u32,
    /// When the next attempt is due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
}

impl TargetDelivery {
    /// A target not attempted yet.
    #[must_use]
    pub fn new(identifier: &str, region: Option<&str>) -> Self {
        Self {
            identifier: identifier.to_owned(),
            region: region.map(str::to_owned),
            status: TargetStatus::Pending,
            attempts: Vec::new(),
            attempt_count: 0,
            next_attempt_at_ms: None,
        }
    }

    /// One not-attempted entry per target, in order.
    #[must_use]
    pub fn for_targets(targets: &[crate::model::target::TargetConfig]) -> Vec<Self> {
        targets
            .iter()
            .map(|t| Self::new(&t.identifier, t.region.as_deref()))
            .collect()
    }

    /// Records an attempt (keeping the most recent [`MAX_ATTEMPTS_KEPT`]).
    pub fn push_attempt(&mut self, a: AttemptRecord) {
        push_bounded(&mut self.attempts, &mut self.attempt_count, a);
    }
}

/// Appends `a` to `list` (keeping the most recent [`MAX_ATTEMPTS_KEPT`]) and raises `count`
/// (attempts made in all) to its number.
pub fn push_bounded(list: &mut Vec<AttemptRecord>, count: &mut u32, a: AttemptRecord) {
    *count = (*count).max(a.attempt);
    list.push(a);
    if list.len() > MAX_ATTEMPTS_KEPT {
        let extra = list.len() - MAX_ATTEMPTS_KEPT;
        list.drain(..extra);
    }
}

/// A message's delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Where the message is.
    pub status: MessageStatus,
    /// When it is (or was) first due (ms since the epoch; 0: at once).
    #[serde(default)]
    pub due_at_ms: u64,
    /// Every target's part, in the order the targets are listed.
    #[serde(default)]
    pub targets: Vec<TargetDelivery>,
    /// When the record last changed (ms since the epoch).
    pub updated_at_ms: u64,
}

impl DeliveryRecord {
    /// The last error of every failed or dead-lettered target, `identifier: error`, joined
    /// by `; ` (a dead-letter entry's reason).
    #[must_use]
    pub fn failed_targets(&self) -> String {
        self.targets
            .iter()
            .filter(|t| matches!(t.status, TargetStatus::DeadLettered | TargetStatus::Failed))
            .filter_map(|t| {
                t.attempts
                    .last()
                    .and_then(|a| a.error.as_ref())
                    .map(|e| format!("{}: {e}", t.identifier))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The message's status from its targets' (once every target is final).
    #[must_use]
    pub fn outcome(&self) -> Option<MessageStatus> {
        if self.targets.is_empty() {
            return Some(MessageStatus::NoTargets);
        }
        if !self.targets.iter().all(|t| t.status.is_final()) {
            return None;
        }
        let any = |s: TargetStatus| self.targets.iter().any(|t| t.status == s);
        Some(if any(TargetStatus::DeadLettered) {
            MessageStatus::DeadLettered
        } else if any(TargetStatus::Failed) {
            MessageStatus::Failed
        } else if any(TargetStatus::Expired) {
            MessageStatus::Expired
        } else {
            MessageStatus::Delivered
        })
    }

    /// Encodes the record (JSON).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stored record.
    ///
    /// # Errors
    /// The bytes are not a delivery record.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_targets() {
        let mut r = DeliveryRecord::default();
        assert_eq!(r.outcome(), Some(MessageStatus::NoTargets));
        r.targets.push(TargetDelivery::new("a", None));
        r.targets.push(TargetDelivery::new("b", Some("eu")));
        assert_eq!(r.outcome(), None);
        r.targets[0].status = TargetStatus::Delivered;
        r.targets[1].status = TargetStatus::Retrying;
        assert_eq!(r.outcome(), None);
        r.targets[1].status = TargetStatus::DeadLettered;
        assert_eq!(r.outcome(), Some(MessageStatus::DeadLettered));
        r.targets[1].status = TargetStatus::Delivered;
        assert_eq!(r.outcome(), Some(MessageStatus::Delivered));
        let back = DeliveryRecord::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut t = TargetDelivery::new("a", None);
        for n in 1..=40 {
            t.push_attempt(AttemptRecord {
                attempt: n,
                at_ms: u64::from(n),
                duration_ms: 1,
                error: None,
                error_class: None,
            });
        }
        assert_eq!(t.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(t.attempt_count, 40);
        assert_eq!(t.attempts[0].attempt, 40 - MAX_ATTEMPTS_KEPT as u32 + 1);
    }
}

//! One delivery attempt, and a message delivered until each target reaches an outcome (the
//! sequential form used by replays; the consumer runs attempts concurrently itself).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wald_storage::now_ms;

use super::backoff::{decide, RetryDecision};
use super::record::{AttemptRecord, TargetDelivery, TargetStatus};
use super::target::{Delivery, ErrorClass, Target, TargetError};
use super::Hub;
use crate::model::namespace::RetryPolicy;
use crate::model::target::TargetConfig;

/// Longest any attempt may take, whatever the adapter does (targets' timeouts are at most
/// 300 s).
const ATTEMPT_GUARD: Duration = Duration::from_secs(310);

/// A message as an attempt needs it (owned: attempts run in their own tasks).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message id.
    pub message_id: Arc<str>,
    /// The namespace.
    pub namespace: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The client's payload.
    pub payload: Arc<[u8]>,
    /// When it was accepted (ms since the epoch).
    pub accepted_at_ms: u64,
}

/// Runs attempt number `attempt` of `msg` on `adapter`; returns its record and result.
pub async fn attempt(
    adapter: Arc<dyn Target>,
    msg: &Outgoing,
    attempt: u32,
) -> (AttemptRecord, Result<(), TargetError>) {
    let at_ms = now_ms();
    let started = Instant::now();
    let d = Delivery {
        message_id: &msg.message_id,
        namespace: &msg.namespace,
        partition: msg.partition,
        offset: msg.offset,
        attempt,
        payload: &msg.payload,
        accepted_at_ms: msg.accepted_at_ms,
    };
    let result = match tokio::time::timeout(ATTEMPT_GUARD, adapter.deliver(d)).await {
        Ok(r) => r,
        Err(_) => Err(TargetError::retryable(
            ErrorClass::Timeout,
            format!("no answer in {} s", ATTEMPT_GUARD.as_secs()),
        )),
    };
    let record = AttemptRecord {
        attempt,
        at_ms,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error: result.as_ref().err().map(|e| e.message.clone()),
        error_class: result.as_ref().err().map(|e| e.class.as_str().to_owned()),
    };
    (record, result)
}

/// Delivers `msg` to each target whose entry in `states` is not final, retrying by `policy`
/// (sleeping between attempts), until every one has an outcome: delivered, or `give_up`
/// (dead-lettered or failed, as the caller says). Attempt numbers continue from the states'.
pub async fn deliver_until_final(
    hub: &Hub,
    msg: &Outgoing,
    targets: &[TargetConfig],
    policy: &RetryPolicy,
    states: &mut [TargetDelivery],
    give_up: TargetStatus,
) {
    for (cfg, st) in targets.iter().zip(states.iter_mut()) {
        if st.status == TargetStatus::Delivered {
            continue;
        }
        let adapter = match hub.adapter(cfg) {
            Ok(a) => a,
            Err(e) => {
                st.push_attempt(AttemptRecord {
                    attempt: st.attempt_count + 1,
                    at_ms: now_ms(),
                    duration_ms: 0,
                    error: Some(e),
                    error_class: Some(ErrorClass::Config.as_str().to_owned()),
                });
                st.status = give_up;
                continue;
            }
        };
        let mut tries = 0u32;
        loop {
            tries += 1;
            let n = st.attempt_count + 1;
            let (rec, result) = attempt(Arc::clone(&adapter), msg, n).await;
            hub.count_attempt(&msg.namespace, &cfg.identifier, result.as_ref().err());
            st.push_attempt(rec);
            let Err(err) = result else {
                st.status = TargetStatus::Delivered;
                st.next_attempt_at_ms = None;
                break;
            };
            match decide(policy, tries, &err) {
                RetryDecision::Retry { after } => {
                    st.status = TargetStatus::Retrying;
                    st.next_attempt_at_ms = Some(now_ms().saturating_add(ms(after)));
                    tokio::time::sleep(after).await;
                }
                RetryDecision::GiveUp { .. } => {
                    st.status = give_up;
                    st.next_attempt_at_ms = None;
                    break;
                }
            }
        }
    }
}

/// A duration in whole milliseconds (saturating).
#[must_use]
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

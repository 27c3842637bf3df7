//! What delivering one message means: its targets, retry policy, dead-letter choice and TTL,
//! from the message's own settings over its namespace's.

use crate::message::StoredMessage;
use crate::model::namespace::{Namespace, RetryPolicy};
use crate::model::target::TargetConfig;
use crate::model::write::{LifecycleConfig, TargetSpec};

/// How one message is delivered.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The enabled targets, in the order given.
    pub targets: Vec<TargetConfig>,
    /// The retry policy (the message's over the namespace's).
    pub policy: RetryPolicy,
    /// Whether a message that fails for good goes to the dead-letter queue.
    pub dlq: bool,
    /// Time to live from the due time, in ms.
    pub ttl_ms: u64,
}

/// The plan of `msg` in namespace `ns`.
///
/// # Errors
/// The stored `target` or `lifecycle` is not what the write path stores (a record written by
/// something else): the message cannot be delivered.
pub fn plan(msg: &StoredMessage, ns: &Namespace) -> Result<Plan, String> {
    // Resolved against the namespace as it is now: a stored reference follows the
    // operator's current declaration, and a stored target object is delivered only where the
    // namespace still accepts it (docs/SECURITY.md).
    let targets = match &msg.target {
        Some(v) => {
            let refs = TargetSpec::deserialize_value(v)
                .map_err(|e| format!("stored target is invalid: {e}"))?
                .into_vec();
            crate::model::target_ref::resolve(ns, &refs, "target").map_err(|errs| {
                errs.iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })?
        }
        None => ns.target_configs.clone(),
    };
    let lifecycle: LifecycleConfig = match &msg.lifecycle {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("stored lifecycle is invalid: {e}"))?,
        None => LifecycleConfig::default(),
    };
    let policy = lifecycle
        .retry_policy
        .as_ref()
        .map_or_else(|| ns.retry_policy.clone(), |p| p.resolve(&ns.retry_policy));
    Ok(Plan {
        targets: targets.into_iter().filter(|t| t.enabled).collect(),
        policy,
        dlq: lifecycle.enable_dlq.unwrap_or(ns.dlq_config.enabled),
        ttl_ms: lifecycle
            .ttl
            .unwrap_or(ns.message_ttl_seconds)
            .saturating_mul(1000),
    })
}

impl TargetSpec {
    /// A target spec from stored JSON.
    ///
    /// # Errors
    /// The JSON is not a target or a list of targets.
    pub fn deserialize_value(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde::Deserialize::deserialize(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(
        target: Option<serde_json::Value>,
        lifecycle: Option<serde_json::Value>,
    ) -> StoredMessage {
        let payload = serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap();
        StoredMessage {
            target,
            lifecycle,
            ..StoredMessage::new("wal_1_a", "ns", payload, 1)
        }
    }

    #[test]
    fn message_settings_win_over_the_namespace() {
        let mut ns = Namespace::new("ns");
        ns.target_configs = vec![serde_json::from_value(
            json!({"type":"webhook","identifier":"ns-hook","config":{"url":"http://127.0.0.1:1/"}}),
        )
        .unwrap()];
        let p = plan(&msg(None, None), &ns).unwrap();
        assert_eq!(p.targets.len(), 1);
        assert_eq!(p.targets[0].identifier, "ns-hook");
        assert!(p.dlq);
        assert_eq!(p.ttl_ms, 86_400_000);
        assert_eq!(p.policy, ns.retry_policy);

        let m = msg(
            Some(
                json!([{"type":"webhook","identifier":"a","config":{"url":"http://127.0.0.1:1/"}},
                        {"type":"webhook","identifier":"b","enabled":false,"config":{"url":"http://127.0.0.1:1/"}}]),
            ),
            Some(json!({"ttl": 120, "enableDLQ": false, "retryPolicy": {"maxAttempts": 5}})),
        );
        assert!(
            plan(&m, &ns).unwrap_err().contains("adHocTargets"),
            "a stored target object is refused unless the namespace accepts them"
        );
        ns.ad_hoc_targets = true;
        let p = plan(&m, &ns).unwrap();
        assert_eq!(p.targets.len(), 1, "disabled targets are dropped");
        assert_eq!(p.targets[0].identifier, "a");
        assert!(!p.dlq);
        assert_eq!(p.ttl_ms, 120_000);
        assert_eq!(p.policy.max_attempts, 5);
        assert_eq!(p.policy.initial_delay_ms, ns.retry_policy.initial_delay_ms);
    }

    #[test]
    fn a_stored_reference_follows_the_namespace_and_a_stored_file_target_is_refused() {
        let mut ns = Namespace::new("ns");
        ns.target_configs = vec![serde_json::from_value(
            json!({"type":"webhook","identifier":"h","config":{"url":"http://127.0.0.1:1/new"}}),
        )
        .unwrap()];
        let p = plan(&msg(Some(json!("h")), None), &ns).unwrap();
        assert_eq!(p.targets[0].config["url"], "http://127.0.0.1:1/new");
        ns.ad_hoc_targets = true;
        let file = json!({"type":"file_system","identifier":"f","config":{"path":"/tmp/x"}});
        assert!(plan(&msg(Some(file), None), &ns).is_err());
        assert!(plan(&msg(Some(json!("gone")), None), &ns).is_err());
    }

    #[test]
    fn a_stored_target_that_is_not_one_is_refused() {
        let ns = Namespace::new("ns");
        assert!(plan(&msg(Some(json!(42)), None), &ns).is_err());
        assert!(plan(&msg(None, Some(json!({"delay": "x"}))), &ns).is_err());
    }
}

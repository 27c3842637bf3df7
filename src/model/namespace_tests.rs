use serde_json::{json, Value};

use super::*;
use crate::model::target::{check_sql_table, check_url};

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

fn ns(v: &Value) -> Result<Namespace, Vec<FieldError>> {
    Namespace::from_json(v.to_string().as_bytes())
}

#[test]
fn defaults_are_filled_in() {
    let n = ns(&json!({"name": "  Orders.EU "})).unwrap();
    assert_eq!(n.name, "orders.eu");
    assert_eq!(n.topic_name.as_deref(), Some("orders.eu"));
    assert_eq!(n.backend, BackendType::Native);
    assert_eq!(n.durability, DurabilityMode::Sync);
    assert_eq!(n.retry_policy, RetryPolicy::default());
    assert_eq!(
        (
            n.retry_policy.max_attempts,
            n.retry_policy.initial_delay_ms,
            n.retry_policy.max_delay_ms,
            n.retry_policy.jitter_ms
        ),
        (3, 1000, 30_000, 500)
    );
    assert_eq!(
        n.retry_policy.backoff_strategy,
        BackoffStrategy::Exponential
    );
    assert_eq!(
        n.dlq_config,
        DlqConfig {
            enabled: true,
            topic_name: None,
            max_retries: 3,
            retry_backoff_ms: 1000,
            alert_on_dlq: true
        }
    );
    assert_eq!(
        n.shard_config,
        ShardConfig {
            strategy: RoutingStrategy::Hash,
            partition_count: 1
        }
    );
    assert!(
        n.target_configs.is_empty() && n.backend_config.is_none() && n.access_control.is_none()
    );
    assert!(n.enabled);
    assert_eq!(
        (n.max_message_size, n.message_ttl_seconds),
        (1_048_576, 86_400)
    );
    assert_eq!(n.rate_limits(), None, "no limit unless one is set");
    assert_eq!(
        RateLimits::default(),
        RateLimits {
            requests_per_minute: 6000,
            requests_per_hour: 360_000,
            burst_limit: 100
        }
    );
    let mut expected = Namespace::new("orders.eu");
    expected.normalise();
    assert_eq!(n, expected);

    let v = serde_json::to_value(&n).unwrap();
    assert_eq!(v["retryPolicy"]["backoffStrategy"], "exponential");
    assert_eq!(v["dlqConfig"]["alertOnDLQ"], true);
    assert_eq!(v["shardConfig"]["partitionCount"], 1);
    assert_eq!(v["durability"], "sync");
    assert_eq!(ns(&v).unwrap(), n, "round trip");
}

#[test]
fn partial_nested_objects_keep_their_other_defaults() {
    let n = ns(&json!({
        "name": "a",
        "backend": "redis_streams",
        "durability": "none",
        "retryPolicy": {"maxAttempts": 5, "retryableErrorCodes": ["timeout", "5xx"]},
        "dlqConfig": {"alertOnDLQ": false},
        "shardConfig": {"strategy": "round_robin", "partitionCount": 256},
        "accessControl": {"allowedApiKeys": ["svc-orders"], "rateLimits": {"burstLimit": 10}},
        "backendConfig": {"url": "redis://127.0.0.1:6379"},
        "targetConfigs": [{"type": "http_service", "identifier": "h", "config": {"url": "http://127.0.0.1:9/x"}}],
        "createdAt": "2025-10-03T10:30:00.000Z"
    }))
    .unwrap();
    assert_eq!(n.backend, BackendType::RedisStreams);
    assert_eq!(n.durability, DurabilityMode::None);
    assert_eq!(
        (n.retry_policy.max_attempts, n.retry_policy.max_delay_ms),
        (5, 30_000)
    );
    assert!(!n.dlq_config.alert_on_dlq && n.dlq_config.enabled);
    assert_eq!(n.shard_config.strategy, RoutingStrategy::RoundRobin);
    assert_eq!(
        n.rate_limits().unwrap(),
        RateLimits {
            burst_limit: 10,
            ..RateLimits::default()
        }
    );
    assert_eq!(n.topic_name(), "a");
}

#[test]
fn validation_names_every_bad_field() {
    let errs = ns(&json!({
        "name": "bad name",
        "description": "d".repeat(1001),
        "topicName": "a b",
        "retryPolicy": {"maxAttempts": 11, "initialDelayMs": 50, "maxDelayMs": 400_000, "jitterMs": 6000,
                        "retryableErrorCodes": [""]},
        "dlqConfig": {"topicName": "", "maxRetries": 101, "retryBackoffMs": 3_600_001},
        "shardConfig": {"partitionCount": 0},
        "targetConfigs": [
            {"type": "webhook", "identifier": "w", "config": {"url": "ftp://x"}},
            {"type": "database", "identifier": "d", "config": {"type": "postgresql", "host": "h", "port": 5432, "database": "x"}},
            {"type": "webhook", "identifier": "w", "config": {"url": "http://x"}}
        ],
        "accessControl": {"allowedApiKeys": ["", "a b"],
                          "rateLimits": {"requestsPerMinute": 0, "requestsPerHour": 0, "burstLimit": 0}},
        "maxMessageSize": 16 * 1024 * 1024 + 1,
        "messageTtlSeconds": 59,
        "createdAt": "yesterday",
        "updatedAt": "2025-10-03T10:30:00Z"
    }))
    .unwrap_err();
    let mut got = fields(&errs);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "accessControl.allowedApiKeys[0]",
            "accessControl.allowedApiKeys[1]",
            "accessControl.rateLimits.burstLimit",
            "accessControl.rateLimits.requestsPerHour",
            "accessControl.rateLimits.requestsPerMinute",
            "createdAt",
            "description",
            "dlqConfig.maxRetries",
            "dlqConfig.retryBackoffMs",
            "dlqConfig.topicName",
            "maxMessageSize",
            "messageTtlSeconds",
            "name",
            "retryPolicy.initialDelayMs",
            "retryPolicy.jitterMs",
            "retryPolicy.maxAttempts",
            "retryPolicy.maxDelayMs",
            "retryPolicy.retryableErrorCodes[0]",
            "shardConfig.partitionCount",
            "targetConfigs[0].config.url",
            "targetConfigs[1].config.table",
            "targetConfigs[2].identifier",
            "topicName",
        ],
        "{errs:#?}"
    );
    let errs = ns(
        &json!({"name": "x", "maxMessageSize": 0, "messageTtlSeconds": 2_592_001,
        "shardConfig": {"partitionCount": 257}}),
    )
    .unwrap_err();
    assert_eq!(
        fields(&errs),
        [
            "shardConfig.partitionCount",
            "maxMessageSize",
            "messageTtlSeconds"
        ]
    );
    let errs = ns(&json!({"name": "x", "retryPolicy": {"initialDelayMs": 40_000}})).unwrap_err();
    assert_eq!(
        fields(&errs),
        ["retryPolicy.maxDelayMs"],
        "max below initial"
    );
}

#[test]
fn parse_errors_name_the_field() {
    let cases = [
        (json!({}), "name"),
        (json!({"name": "x", "partitionCount": 2}), "partitionCount"),
        (
            json!({"name": "x", "shardConfig": {"partitionCont": 2}}),
            "shardConfig.partitionCont",
        ),
        (
            json!({"name": "x", "shardConfig": {"strategy": "custom"}}),
            "shardConfig.strategy",
        ),
        (json!({"name": "x", "backend": "rabbitmq"}), "backend"),
        (json!({"name": "x", "durability": "always"}), "durability"),
        (json!({"name": "x", "backendConfig": []}), "backendConfig"),
        (json!({"name": "x", "maxMessageSize": -1}), "maxMessageSize"),
        (
            json!({"name": "x", "targetConfigs": [{"type": "smtp", "identifier": "m", "config": {}}]}),
            "targetConfigs[0].type",
        ),
        (
            json!({"name": "x", "accessControl": {"rateLimits": {"perSecond": 1}}}),
            "accessControl.rateLimits.perSecond",
        ),
    ];
    for (v, field) in cases {
        assert_eq!(fields(&ns(&v).unwrap_err()), [field], "{v}");
    }
}

#[test]
fn namespace_names() {
    for ok in [
        "a",
        "0",
        "orders",
        "user-cache.replication_1",
        &"x".repeat(100),
    ] {
        assert_eq!(check_namespace_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        "-x",
        "_x",
        "a/b",
        "A",
        "a b",
        "é",
        &"x".repeat(101),
    ] {
        assert!(check_namespace_name(bad).is_err(), "{bad}");
    }
    assert_eq!(normalise_namespace_name("  MyNS \t"), "myns");
}

#[test]
fn urls_and_tables() {
    for ok in [
        "http://a",
        "https://a.b/c?d#e",
        "http://u:p@h:1/",
        "https://[::1]/",
        "http://h:65535",
        "http://h:",
    ] {
        assert_eq!(check_url(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "a",
        "ws://h",
        "http:/h",
        "http://",
        "http://u@/",
        "http://h:0",
        "http://h:x",
        "http://[]/",
        "http://h\n",
    ] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
    for ok in ["t", "_t", "s.t", "T_1", &"a".repeat(63)] {
        assert_eq!(check_sql_table(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        ".",
        "s.",
        ".t",
        "a.b.c",
        "t-1",
        "\"t\"",
        "t;",
        "1t",
        &"a".repeat(64),
    ] {
        assert!(check_sql_table(bad).is_err(), "{bad}");
    }
}

#[test]
fn target_validates_alone() {
    let t: TargetConfig = serde_json::from_value(json!({
        "type": "cache", "identifier": "c", "config": {"type": "memcached", "host": "h", "port": 11211}
    }))
    .unwrap();
    assert_eq!(t.validate(), Ok(()));
    let t: TargetConfig = serde_json::from_value(json!({
        "type": "http_service", "identifier": "", "config": {}
    }))
    .unwrap();
    assert_eq!(
        fields(&t.validate().unwrap_err()),
        ["identifier", "config.url"]
    );
    assert_eq!(fields(&t.settings().unwrap_err()), ["config.url"]);
}

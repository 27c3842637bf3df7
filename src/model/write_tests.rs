use serde_json::{json, Value};

use super::*;
use crate::model::target::{HttpMethod, TargetSettings, TargetType};
use crate::model::validate::parse_json;

fn base() -> Value {
    json!({
        "namespace": "  User-Cache.Replication_1 ",
        "payload": {"operation": "SET", "key": "user:123", "value": {"name": "John Doe"}},
        "target": [
            {"type": "webhook", "identifier": "hook", "region": "us-east-1",
             "config": {"url": "https://api.example.com/hook?x=1", "method": "put",
                        "headers": {"Authorization": "Bearer t"}, "timeoutMs": 10000,
                        "retries": true, "secret": "s3cret"}},
            {"type": "cache", "identifier": "cache",
             "config": {"type": "redis", "host": "127.0.0.1", "port": 6379, "database": 2,
                        "keyPrefix": "wal:", "ttlSeconds": 3600}},
            {"type": "database", "identifier": "db", "weight": 50, "enabled": false, "tags": ["pg"],
             "config": {"type": "postgresql", "host": "localhost", "port": 5432,
                        "database": "wal", "table": "public.user_events", "timeoutMs": 5000}},
            {"type": "file_system", "identifier": "file", "config": {"path": "out/out.jsonl"}},
            {"type": "queue", "identifier": "q", "config": {"anything": [1, 2]}}
        ],
        "lifecycle": {"delay": 5, "delayUnit": "minutes", "ttl": 3600, "enableDLQ": true,
                      "compression": false,
                      "retryPolicy": {"maxAttempts": 5, "backoffStrategy": "linear",
                                      "initialDelayMs": 200, "maxDelayMs": 2000, "jitterMs": 0}},
        "metadata": {"trace-id": "abc"},
        "priority": 10,
        "tags": ["a", "b"],
        "idempotencyKey": "order-42",
        "partitionKey": "user:123"
    })
}

fn run(v: &Value) -> Result<ValidWrite, Vec<FieldError>> {
    let dto: WriteToLogDto = parse_json(v.to_string().as_bytes())?;
    dto.validate(&WriteLimits::default())
}

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn full_valid_write() {
    let w = run(&base()).unwrap();
    assert_eq!(w.namespace, "user-cache.replication_1");
    assert_eq!(w.delay_ms, 300_000);
    assert_eq!(w.ttl_secs, Some(3600));
    assert_eq!(w.enable_dlq, Some(true));
    assert!(!w.compression);
    assert_eq!(w.priority, Some(10));
    assert_eq!(w.idempotency_key.as_deref(), Some("order-42"));
    assert_eq!(w.partition_key.as_deref(), Some("user:123"));
    let targets: Vec<&crate::model::target::TargetConfig> = w
        .targets
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| match r {
            TargetRef::Inline(t) => &**t,
            TargetRef::Named(n) => panic!("an object, not the name {n}"),
        })
        .collect();
    assert_eq!(targets.len(), 5);
    assert_eq!(targets[0].kind, TargetType::Webhook);
    assert_eq!(
        (targets[0].weight, targets[0].enabled),
        (100, true),
        "defaults"
    );
    assert_eq!((targets[2].weight, targets[2].enabled), (50, false));
    match targets[0].settings().unwrap() {
        TargetSettings::Http(h) => {
            assert_eq!(h.method, HttpMethod::Put);
            assert_eq!(h.secret.as_deref(), Some("s3cret"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        targets[4].settings().unwrap(),
        TargetSettings::Other(_)
    ));
    let rp = w
        .retry_policy
        .as_ref()
        .unwrap()
        .resolve(&crate::model::RetryPolicy::default());
    assert_eq!(
        (rp.max_attempts, rp.initial_delay_ms, rp.max_delay_ms),
        (5, 200, 2000)
    );
    let t = w.targets_json().unwrap().unwrap();
    assert_eq!(t[1]["config"]["keyPrefix"], "wal:");
    assert_eq!(w.lifecycle_json().unwrap().unwrap()["enableDLQ"], true);
}

#[test]
fn minimal_write_and_single_target() {
    let w = run(&json!({"namespace": "orders", "payload": {"a": 1}})).unwrap();
    assert!(w.targets.is_none() && w.lifecycle.is_none() && w.retry_policy.is_none());
    assert_eq!(w.delay_ms, 0);
    let v = json!({"namespace": "orders", "payload": {"a": 1},
        "target": {"type": "cache", "identifier": "c", "config": {"type": "in_memory"}}});
    assert_eq!(run(&v).unwrap().targets.unwrap().len(), 1);
    // By identifier: one name, or a list mixing names and objects.
    let named =
        run(&json!({"namespace": "orders", "payload": {"a": 1}, "target": "hook"})).unwrap();
    assert_eq!(named.targets, Some(vec![TargetRef::Named("hook".into())]));
    assert_eq!(named.targets_json().unwrap(), Some(json!(["hook"])));
    let mixed = json!({"namespace": "orders", "payload": {"a": 1}, "target": ["a", {"type": "webhook",
        "identifier": "w", "config": {"url": "http://h.example/"}}]});
    assert_eq!(run(&mixed).unwrap().targets.unwrap().len(), 2);
    let empty = json!({"namespace": "orders", "payload": {"a": 1}, "target": ["a", ""]});
    assert_eq!(fields(&run(&empty).unwrap_err()), ["target[1]"]);
    let mut v = v;
    v["target"]["config"] = json!({"type": "redis"});
    assert_eq!(
        fields(&run(&v).unwrap_err()),
        ["target.config.host", "target.config.port"]
    );
}

/// Each case breaks exactly one rule of an otherwise valid write.
#[test]
fn every_rule_violated_once() {
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &str)> = vec![
        (|v| v["namespace"] = json!("   "), "namespace"),
        (|v| v["namespace"] = json!("a".repeat(101)), "namespace"),
        (|v| v["namespace"] = json!("bad name"), "namespace"),
        (|v| v["namespace"] = json!("ns/../x"), "namespace"),
        (|v| v["namespace"] = json!(".hidden"), "namespace"),
        (|v| v["payload"] = json!({}), "payload"),
        (|v| v["payload"] = json!([1]), "payload"),
        (|v| v["payload"] = json!("text"), "payload"),
        (|v| v["payload"] = json!(null), "payload"),
        (|v| v["target"] = json!([]), "target"),
        (
            |v| {
                let many: Vec<Value> = (0..21)
                    .map(|i| json!({"type": "queue", "identifier": format!("q{i}"), "config": {}}))
                    .collect();
                v["target"] = Value::Array(many);
            },
            "target",
        ),
        (
            |v| v["target"][4]["identifier"] = json!("cache"),
            "target[4].identifier",
        ),
        (
            |v| v["target"][0]["identifier"] = json!(""),
            "target[0].identifier",
        ),
        (
            |v| v["target"][0]["identifier"] = json!("x".repeat(101)),
            "target[0].identifier",
        ),
        (|v| v["target"][0]["region"] = json!(""), "target[0].region"),
        (
            |v| v["target"][0]["weight"] = json!(101),
            "target[0].weight",
        ),
        (
            |v| v["target"][0]["tags"] = json!(vec!["t"; 51]),
            "target[0].tags",
        ),
        (
            |v| v["target"][0]["tags"] = json!([""]),
            "target[0].tags[0]",
        ),
        (
            |v| v["target"][0]["config"] = json!({"method": "POST"}),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!("ftp://x"),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!("https://"),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!("http://:80/x"),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!("http://h:99999/"),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!("http://h /"),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["url"] = json!(42),
            "target[0].config.url",
        ),
        (
            |v| v["target"][0]["config"]["method"] = json!("FETCH"),
            "target[0].config.method",
        ),
        (
            |v| v["target"][0]["config"]["timeoutMs"] = json!(0),
            "target[0].config.timeoutMs",
        ),
        (
            |v| v["target"][0]["config"]["timeoutMs"] = json!(300_001),
            "target[0].config.timeoutMs",
        ),
        (
            |v| v["target"][0]["config"]["headers"] = json!({"Bad Name": "x"}),
            "target[0].config.headers.Bad Name",
        ),
        (
            |v| v["target"][0]["config"]["headers"] = json!({"X-A": "a\r\nb"}),
            "target[0].config.headers.X-A",
        ),
        (
            |v| v["target"][0]["config"]["headers"] = json!({"X-A": 1}),
            "target[0].config.headers.X-A",
        ),
        (
            |v| v["target"][0]["config"]["secret"] = json!(""),
            "target[0].config.secret",
        ),
        (
            |v| v["target"][1]["config"]["type"] = json!(null),
            "target[1].config.type",
        ),
        (
            |v| v["target"][1]["config"]["type"] = json!("riak"),
            "target[1].config.type",
        ),
        (
            |v| v["target"][1]["config"]["host"] = json!(null),
            "target[1].config.host",
        ),
        (
            |v| v["target"][1]["config"]["host"] = json!("a b"),
            "target[1].config.host",
        ),
        (
            |v| v["target"][1]["config"]["port"] = json!(0),
            "target[1].config.port",
        ),
        (
            |v| v["target"][1]["config"]["database"] = json!(16),
            "target[1].config.database",
        ),
        (
            |v| v["target"][1]["config"]["ttlSeconds"] = json!(0),
            "target[1].config.ttlSeconds",
        ),
        (
            |v| v["target"][2]["config"]["type"] = json!("oracle"),
            "target[2].config.type",
        ),
        (
            |v| v["target"][2]["config"]["host"] = json!(""),
            "target[2].config.host",
        ),
        (
            |v| v["target"][2]["config"]["port"] = json!(0),
            "target[2].config.port",
        ),
        (
            |v| v["target"][2]["config"]["port"] = json!(70000),
            "target[2].config.port",
        ),
        (
            |v| v["target"][2]["config"]["database"] = json!(""),
            "target[2].config.database",
        ),
        (
            |v| v["target"][2]["config"]["table"] = json!(null),
            "target[2].config.table",
        ),
        (
            |v| v["target"][2]["config"]["table"] = json!("users; DROP TABLE x"),
            "target[2].config.table",
        ),
        (
            |v| v["target"][2]["config"]["table"] = json!("a.b.c"),
            "target[2].config.table",
        ),
        (
            |v| v["target"][2]["config"]["table"] = json!("1abc"),
            "target[2].config.table",
        ),
        (
            |v| v["target"][2]["config"]["timeoutMs"] = json!(0),
            "target[2].config.timeoutMs",
        ),
        (
            |v| v["target"][3]["config"]["path"] = json!(""),
            "target[3].config.path",
        ),
        (
            |v| v["target"][3]["config"] = json!({}),
            "target[3].config.path",
        ),
        (|v| v["lifecycle"]["delay"] = json!(1441), "lifecycle.delay"),
        (
            |v| v["lifecycle"]["delayUnit"] = json!("days"),
            "lifecycle.delay",
        ),
        (
            |v| v["lifecycle"]["delay"] = json!(u64::MAX),
            "lifecycle.delay",
        ),
        (|v| v["lifecycle"]["ttl"] = json!(59), "lifecycle.ttl"),
        (|v| v["lifecycle"]["ttl"] = json!(604_801), "lifecycle.ttl"),
        (
            |v| v["lifecycle"]["retryPolicy"]["maxAttempts"] = json!(11),
            "lifecycle.retryPolicy.maxAttempts",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["initialDelayMs"] = json!(99),
            "lifecycle.retryPolicy.initialDelayMs",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["initialDelayMs"] = json!(60_001),
            "lifecycle.retryPolicy.initialDelayMs",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["maxDelayMs"] = json!(300_001),
            "lifecycle.retryPolicy.maxDelayMs",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["maxDelayMs"] = json!(999),
            "lifecycle.retryPolicy.maxDelayMs",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["initialDelayMs"] = json!(5000),
            "lifecycle.retryPolicy.maxDelayMs",
        ),
        (
            |v| v["lifecycle"]["retryPolicy"]["jitterMs"] = json!(5001),
            "lifecycle.retryPolicy.jitterMs",
        ),
        (|v| v["priority"] = json!(0), "priority"),
        (|v| v["priority"] = json!(11), "priority"),
        (|v| v["tags"] = json!(vec!["t"; 51]), "tags"),
        (|v| v["tags"] = json!([""]), "tags[0]"),
        (|v| v["tags"] = json!(["ok", "x".repeat(101)]), "tags[1]"),
        (|v| v["idempotencyKey"] = json!(""), "idempotencyKey"),
        (
            |v| v["idempotencyKey"] = json!("k".repeat(201)),
            "idempotencyKey",
        ),
        (|v| v["partitionKey"] = json!(""), "partitionKey"),
        (
            |v| v["partitionKey"] = json!("é".repeat(128)),
            "partitionKey",
        ),
    ];
    for (edit, field) in cases {
        let mut v = base();
        edit(&mut v);
        let errs = run(&v).expect_err(field);
        assert_eq!(fields(&errs), [field], "{v}\n{errs:?}");
        assert!(!errs[0].message.is_empty());
    }
}

#[test]
fn limits_that_still_pass() {
    let mut v = base();
    v["lifecycle"] = json!({"delay": 1440, "delayUnit": "minutes", "ttl": 60});
    assert_eq!(run(&v).unwrap().delay_ms, 86_400_000);
    v["lifecycle"] = json!({"delay": 0, "ttl": 604_800,
        "retryPolicy": {"maxAttempts": 0, "initialDelayMs": 1000, "maxDelayMs": 1000, "jitterMs": 5000}});
    assert_eq!(run(&v).unwrap().delay_ms, 0);
    v["priority"] = json!(1);
    v["tags"] = json!(vec!["x".repeat(100); 50]);
    v["idempotencyKey"] = json!("é".repeat(200));
    v["partitionKey"] = json!("k".repeat(255));
    v["target"][0]["config"]["url"] = json!("HTTP://[::1]:8080");
    v["target"][0]["weight"] = json!(0);
    v["target"][2]["config"]["table"] = json!("_T1");
    assert!(run(&v).is_ok());
}

#[test]
fn configurable_max_delay() {
    let thirty_days = WriteLimits::new(30 * 86_400).unwrap();
    assert!(WriteLimits::new(30 * 86_400 + 1).is_err());
    let mut v = base();
    v["lifecycle"] = json!({"delay": 30, "delayUnit": "days"});
    let dto: WriteToLogDto = parse_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(
        fields(&dto.clone().validate(&WriteLimits::default()).unwrap_err()),
        ["lifecycle.delay"]
    );
    assert_eq!(
        dto.validate(&thirty_days).unwrap().delay_ms,
        30 * 86_400_000
    );
}

#[test]
fn multiple_violations_reported_together() {
    let mut v = base();
    v["namespace"] = json!("Bad Name!");
    v["payload"] = json!({});
    v["priority"] = json!(11);
    v["lifecycle"]["ttl"] = json!(10);
    v["lifecycle"]["retryPolicy"]["maxAttempts"] = json!(99);
    v["target"][0]["config"]["url"] = json!("not a url");
    v["target"][2]["config"]["table"] = json!("x;y");
    v["tags"] = json!(["", "ok", ""]);
    let errs = run(&v).unwrap_err();
    let mut got = fields(&errs);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "lifecycle.retryPolicy.maxAttempts",
            "lifecycle.ttl",
            "namespace",
            "payload",
            "priority",
            "tags[0]",
            "tags[2]",
            "target[0].config.url",
            "target[2].config.table",
        ]
    );
}

#[test]
fn payload_bytes_preserved_exactly() {
    let payload = r#"{ "z" :1,"a":[1.50, 1e400, 12345678901234567890123],
        "s":"\u00e9\n", "dup":1, "dup":2 }"#;
    let body = format!(r#"{{"namespace":"orders","payload": {payload}  ,"priority":1}}"#);
    let dto: WriteToLogDto = parse_json(body.as_bytes()).unwrap();
    let w = dto.validate(&WriteLimits::default()).unwrap();
    assert_eq!(w.payload.get(), payload);
}

#[test]
fn parse_errors_name_their_path() {
    let cases = [
        (
            r#"{"namespace":"o","payload":{"a":1},"priority":"high"}"#,
            "priority",
            "invalid type: string \"high\", expected u8",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"priority":300}"#,
            "priority",
            "invalid value: integer `300`, expected u8",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"bogus":1}"#,
            "bogus",
            "unknown field `bogus`",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"lifecycle":{"dealy":1}}"#,
            "lifecycle.dealy",
            "unknown field `dealy`",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"lifecycle":{"retryPolicy":{"max":1}}}"#,
            "lifecycle.retryPolicy.max",
            "unknown field",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"lifecycle":{"delayUnit":"weeks"}}"#,
            "lifecycle.delayUnit",
            "unknown variant `weeks`",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"lifecycle":{"retryPolicy":{"backoffStrategy":"random"}}}"#,
            "lifecycle.retryPolicy.backoffStrategy",
            "unknown variant",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"lifecycle":{"delay":-1}}"#,
            "lifecycle.delay",
            "invalid value",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"target":{"type":"cache","identifier":"c","config":{},"x":1}}"#,
            "target.x",
            "unknown field",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"target":[{"type":"queue","identifier":"q","config":{}},{"type":"ftp"}]}"#,
            "target[1].type",
            "unknown variant `ftp`",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"target":{"type":"queue","identifier":"q","config":[]}}"#,
            "target.config",
            "invalid type",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"target":{"type":"queue","config":{}}}"#,
            "target.identifier",
            "missing field `identifier`",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"target":42}"#,
            "target",
            "invalid type: integer `42`, expected a target identifier, a target object, or a list",
        ),
        (
            r#"{"namespace":"o","payload":{"a":1},"metadata":{"k":1}}"#,
            "metadata.k",
            "invalid type",
        ),
        (
            r#"{"payload":{"a":1}}"#,
            "namespace",
            "missing field `namespace`",
        ),
        (r#"{"namespace":"o"}"#, "payload", "missing field `payload`"),
        (
            r#""text""#,
            "",
            "invalid type: string \"text\", expected struct WriteToLogDto",
        ),
    ];
    for (body, field, msg) in cases {
        let errs = parse_json::<WriteToLogDto>(body.as_bytes()).unwrap_err();
        assert_eq!(errs.len(), 1, "{body}");
        assert_eq!(errs[0].field, field, "{body}: {errs:?}");
        assert!(errs[0].message.starts_with(msg), "{body}: {errs:?}");
        assert!(!errs[0].message.contains(" at line "), "{body}: {errs:?}");
    }
    for body in [
        r#"{"namespace":"o","payload":{"a":1}"#,
        r#"{"namespace":"o",}"#,
        "",
        r#"{"namespace":"o","payload":{"a":1}} x"#,
    ] {
        let errs = parse_json::<WriteToLogDto>(body.as_bytes()).unwrap_err();
        assert_eq!(fields(&errs), [""], "{body}");
        assert!(
            errs[0].message.starts_with("malformed JSON")
                && errs[0].message.contains("line 1 column"),
            "{errs:?}"
        );
    }
}

#[test]
fn response_serialises_like_the_seeds() {
    let mut r = WriteToLogResponse {
        durable: DurableStatus::True,
        message_id: "wal_1696291200000_abc123def".into(),
        transaction_id: None,
        message: "Message accepted for processing".into(),
        timestamp: crate::model::rfc3339_ms(1_759_487_400_000),
        namespace: "orders".into(),
        partition: 3,
        offset: 42,
        duplicate: false,
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        json!({"durable": "true", "messageId": "wal_1696291200000_abc123def",
               "message": "Message accepted for processing", "timestamp": "2025-10-03T10:30:00.000Z",
               "namespace": "orders", "partition": 3, "offset": 42, "duplicate": false})
    );
    r.durable = DurableStatus::Unknown;
    r.transaction_id = Some("txn_1".into());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        (v["durable"].as_str(), v["transactionId"].as_str()),
        (Some("unknown"), Some("txn_1"))
    );
    assert_eq!(serde_json::to_value(DurableStatus::False).unwrap(), "false");
}

/// `levels` nested arrays around a number: `[[1]]` for 2.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn json_depth_counts_objects_and_arrays_outside_strings() {
    use crate::model::validate::{text_depth, value_depth};
    for (text, depth) in [
        ("1", 0),
        (r#""[[{""#, 0),
        ("{}", 1),
        (r#"{"a":"[[[{"}"#, 1),
        (r#"{"a":"\"[[", "b":[1]}"#, 2),
        (r#"{"a":"x\\", "b":[{"c":[]}]}"#, 4),
        (r#"{"a":[1,{"b":[]}],"c":{}}"#, 4),
        (&nested(70), 70),
    ] {
        assert_eq!(text_depth(text), depth, "{text}");
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value_depth(&v), depth, "{text}");
    }
}

#[test]
fn payload_and_target_nest_at_most_the_depth_limit_and_what_passes_decodes() {
    use crate::message::StoredMessage;
    use crate::model::validate::MAX_JSON_DEPTH;
    let write = |payload: &str, target: Option<&str>| {
        let mut body = format!(r#"{{"namespace":"orders","payload":{payload}"#);
        if let Some(t) = target {
            body.push_str(&format!(r#","target":{t}"#));
        }
        body.push('}');
        let dto: WriteToLogDto = parse_json(body.as_bytes())?;
        dto.validate(&WriteLimits::default())
    };
    // The payload object counts: `{"x": <n levels>}` is n + 1 deep.
    let at_limit = format!(r#"{{"x":{}}}"#, nested(MAX_JSON_DEPTH - 1));
    let ok_payload = write(&at_limit, None).expect("a payload at the limit");
    let over = format!(r#"{{"x":{}}}"#, nested(MAX_JSON_DEPTH));
    let e = write(&over, None).unwrap_err();
    assert_eq!(fields(&e), ["payload"]);
    assert!(
        e[0].message.contains(&format!("at most {MAX_JSON_DEPTH}")),
        "{e:?}"
    );
    // Far deeper than the limit (the raw payload is not parsed for depth by serde): refused.
    let e = write(&format!(r#"{{"x":{}}}"#, nested(5000)), None).unwrap_err();
    assert_eq!(fields(&e), ["payload"]);

    // A target object and its config count: `{"config": {"x": <n>}}` is n + 2 deep; a list
    // one more.
    let target = |n: usize| {
        format!(
            r#"{{"type":"webhook","identifier":"w","config":{{"url":"http://h.example/","x":{}}}}}"#,
            nested(n)
        )
    };
    let one =
        write(r#"{"a":1}"#, Some(&target(MAX_JSON_DEPTH - 2))).expect("a target at the limit");
    let e = write(r#"{"a":1}"#, Some(&target(MAX_JSON_DEPTH - 1))).unwrap_err();
    assert_eq!(fields(&e), ["target"]);
    assert!(
        e[0].message.contains(&format!("at most {MAX_JSON_DEPTH}")),
        "{e:?}"
    );
    let list = format!("[{}]", target(MAX_JSON_DEPTH - 3));
    let many = write(r#"{"a":1}"#, Some(&list)).expect("a list at the limit");
    let list = format!(r#"["named",{}]"#, target(MAX_JSON_DEPTH - 2));
    assert_eq!(
        fields(&write(r#"{"a":1}"#, Some(&list)).unwrap_err()),
        ["target"]
    );

    // What passes is stored and decodes again, alone and inside a dead-letter entry.
    for w in [ok_payload, one, many] {
        let mut m = StoredMessage::new("wal_1_a", "orders", w.payload.clone(), 1);
        m.target = w.targets_json().unwrap();
        let bytes = serde_json::to_vec(&m).unwrap();
        let back: StoredMessage = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back.target, m.target);
        assert_eq!(back.payload.get(), w.payload.get());
        let entry = format!(r#"{{"message":{}}}"#, String::from_utf8(bytes).unwrap());
        let v: Value = serde_json::from_str(&entry).expect("a wrapper parses as a whole");
        assert_eq!(v["message"]["messageId"], "wal_1_a");
    }
}

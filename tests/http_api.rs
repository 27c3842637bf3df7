//! The HTTP API against the real server on 127.0.0.1:0: every route's success and error
//! statuses, the envelope and the request id, idempotency (also across a restart),
//! partition strategies, namespace administration, access control, rate and size limits.

mod common;

use common::{config, tempdir, Server, ADMIN};
use serde_json::json;

fn ns(name: &str) -> serde_json::Value {
    json!({ "name": name })
}

#[test]
fn write_then_read_back_by_id_and_by_offset() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "orders", "shardConfig": { "strategy": "hash", "partitionCount": 2 } }),
    );
    let raw = r#"{"operation":"SET","key":"user:1", "value":{"name":"Jo","n":1.50}}"#;
    let body = format!(
        r#"{{"namespace":"  Orders ","payload":{raw},"priority":5,"tags":["a"],"partitionKey":"user:1"}}"#
    );
    let r = s.req(
        "POST",
        "/api/v1/wal/write",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "rid-123"),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.header("x-request-id"),
        Some("rid-123"),
        "request id echoed"
    );
    let j = r.json();
    assert_eq!(j["durable"], "true");
    assert_eq!(j["namespace"], "orders");
    assert_eq!(j["duplicate"], false);
    let id = j["messageId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wal_"));
    let (p, off) = (
        j["partition"].as_u64().unwrap(),
        j["offset"].as_u64().unwrap(),
    );

    let m = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m.header("x-request-id").is_some());
    let text = m.text();
    assert!(
        text.contains(&format!(r#""payload":{raw}"#)),
        "payload byte-identical: {text}"
    );
    let mj = m.json();
    assert_eq!(mj["partition"].as_u64(), Some(p));
    assert_eq!(mj["offset"].as_u64(), Some(off));
    // No targets anywhere: the consumer resolves it as such (or has not read it yet).
    assert!(
        mj["status"] == "pending" || mj["status"] == "no_targets",
        "{mj:#}"
    );

    let page = s.req(
        "GET",
        &format!("/api/v1/wal/namespace/orders/messages?partition={p}&fromOffset={off}&limit=10"),
        &[],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let pj = page.json();
    assert_eq!(pj["messages"][0]["messageId"], id.as_str());
    assert_eq!(pj["nextOffset"].as_u64(), Some(off + 1));

    let st = s
        .req("GET", "/api/v1/wal/namespace/orders/status", &[], None)
        .json();
    assert_eq!(st["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(st["writesAccepted"], 1);
    let total: u64 = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nextOffset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1);
}

#[test]
fn errors_use_the_envelope_with_the_right_status() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("orders"));
    // Validation: every failing field named.
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({ "namespace": "orders", "payload": {}, "priority": 11, "lifecycle": { "ttl": 5 } }),
    );
    let j = r.assert_error(400, "VALIDATION_ERROR");
    let fields: Vec<String> = j["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    for f in ["payload", "priority", "lifecycle.ttl"] {
        assert!(fields.iter().any(|x| x == f), "{f} named in {fields:?}");
    }
    // Wrong type.
    let j = s
        .post_json(
            "/api/v1/wal/write",
            &[],
            &json!({ "namespace": "orders", "payload": {"a":1}, "priority": "high" }),
        )
        .assert_error(400, "VALIDATION_ERROR");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("priority"),
        "{j}"
    );
    // Malformed JSON.
    s.req(
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some("{not json"),
    )
    .assert_error(400, "MALFORMED_JSON");
    // Wrong content type.
    s.req(
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "text/plain")],
        Some("{}"),
    )
    .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    // Unknown namespace, message, route, method.
    s.write("nope", json!({"a":1}))
        .assert_error(404, "NAMESPACE_NOT_FOUND");
    s.req("GET", "/api/v1/wal/messages/wal_1_abc", &[], None)
        .assert_error(404, "MESSAGE_NOT_FOUND");
    s.req("GET", "/api/v1/nothing/here", &[], None)
        .assert_error(404, "NOT_FOUND");
    s.req("DELETE", "/api/v1/wal/write", &[], None)
        .assert_error(405, "METHOD_NOT_ALLOWED");
    s.req("GET", "/api/v1/wal/namespace/nope/status", &[], None)
        .assert_error(404, "NAMESPACE_NOT_FOUND");
    // Read API bad input.
    s.req(
        "GET",
        "/api/v1/wal/namespace/orders/messages?limit=0",
        &[],
        None,
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.req(
        "GET",
        "/api/v1/wal/namespace/orders/messages?partition=7",
        &[],
        None,
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.req(
        "GET",
        "/api/v1/wal/namespace/orders/messages?fromOffset=99",
        &[],
        None,
    )
    .assert_error(416, "OFFSET_OUT_OF_RANGE");
    s.req(
        "GET",
        "/api/v1/wal/namespace/orders/messages?bogus=1",
        &[],
        None,
    )
    .assert_error(400, "VALIDATION_ERROR");
    // Disabled namespace.
    s.create_namespace(json!({ "name": "off", "enabled": false }));
    s.write("off", json!({"a":1}))
        .assert_error(403, "NAMESPACE_DISABLED");
    // Nothing above was appended.
    let st = s
        .req("GET", "/api/v1/wal/namespace/orders/status", &[], None)
        .json();
    assert_eq!(st["partitions"][0]["nextOffset"], 0);
}

#[test]
fn message_size_limit_is_413() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "small", "maxMessageSize": 200 }));
    assert_eq!(s.write("small", json!({"a": 1})).status, 202);
    let j = s
        .write("small", json!({"a": "x".repeat(300)}))
        .assert_error(413, "MESSAGE_SIZE_LIMIT_EXCEEDED");
    assert_eq!(j["error"]["details"]["maxSize"], 200);
}

#[test]
fn idempotency_keys_survive_a_restart() {
    let (_d, dir) = tempdir();
    let first_id;
    {
        let s = Server::start(config(&dir));
        s.create_namespace(ns("pay"));
        let body = json!({ "namespace": "pay", "payload": {"amount": 10} });
        let a = s
            .post_json("/api/v1/wal/write", &[("idempotency-key", "k-1")], &body)
            .json();
        let b = s
            .post_json("/api/v1/wal/write", &[("idempotency-key", "k-1")], &body)
            .json();
        assert_eq!(a["duplicate"], false);
        assert_eq!(b["duplicate"], true);
        assert_eq!(a["messageId"], b["messageId"]);
        assert_eq!(a["offset"], b["offset"]);
        // The body field works too, and a different key appends.
        let c = s
            .post_json(
                "/api/v1/wal/write",
                &[],
                &json!({ "namespace": "pay", "payload": {"amount": 10}, "idempotencyKey": "k-2" }),
            )
            .json();
        assert_eq!(c["duplicate"], false);
        assert_ne!(c["messageId"], a["messageId"]);
        // Header and field disagreeing is refused.
        s.post_json(
            "/api/v1/wal/write",
            &[("idempotency-key", "k-3")],
            &json!({ "namespace": "pay", "payload": {"a":1}, "idempotencyKey": "k-4" }),
        )
        .assert_error(400, "VALIDATION_ERROR");
        first_id = a["messageId"].as_str().unwrap().to_owned();
        s.stop();
    }
    let s = Server::start(config(&dir));
    let again = s
        .post_json(
            "/api/v1/wal/write",
            &[("idempotency-key", "k-1")],
            &json!({ "namespace": "pay", "payload": {"amount": 10} }),
        )
        .json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["messageId"], first_id.as_str());
    assert_eq!(
        s.req(
            "GET",
            &format!("/api/v1/wal/messages/{first_id}"),
            &[],
            None
        )
        .status,
        200
    );
    let st = s
        .req("GET", "/api/v1/wal/namespace/pay/status", &[], None)
        .json();
    assert_eq!(st["partitions"][0]["nextOffset"], 2, "two appends in all");
}

#[test]
fn partition_strategies() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "h", "shardConfig": { "strategy": "hash", "partitionCount": 4 } }),
    );
    s.create_namespace(
        json!({ "name": "rr", "shardConfig": { "strategy": "round_robin", "partitionCount": 4 } }),
    );
    s.create_namespace(
        json!({ "name": "rnd", "shardConfig": { "strategy": "random", "partitionCount": 4 } }),
    );
    let part = |ns: &str, key: Option<&str>| {
        let mut b = json!({ "namespace": ns, "payload": {"x": 1} });
        if let Some(k) = key {
            b["partitionKey"] = json!(k);
        }
        let r = s.post_json("/api/v1/wal/write", &[], &b);
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["partition"].as_u64().unwrap()
    };
    // Hash: the same key always lands on the same partition; keys spread.
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..40 {
        let key = format!("user-{k}");
        let p = part("h", Some(&key));
        assert_eq!(part("h", Some(&key)), p, "stable for {key}");
        seen.insert(p);
    }
    assert!(seen.len() >= 3, "hash spreads keys: {seen:?}");
    // Round-robin: consecutive writes cycle through the partitions.
    let rr: Vec<u64> = (0..8).map(|_| part("rr", None)).collect();
    let mut sorted = rr[..4].to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3], "{rr:?}");
    // Random: lands in range and uses more than one partition.
    let rnd: std::collections::BTreeSet<u64> = (0..40).map(|_| part("rnd", None)).collect();
    assert!(rnd.len() > 1 && rnd.iter().all(|&p| p < 4), "{rnd:?}");
}

#[test]
fn namespace_administration_needs_the_admin_key() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.auth.api_keys = vec![wald::config::ApiKeyConfig {
        id: "app".into(),
        key: Some("app-key".into()),
        key_sha256: None,
        namespaces: vec!["*".into()],
    }];
    let s = Server::start(c);
    let spec = json!({ "name": "n1" });
    s.req(
        "POST",
        "/api/v1/namespaces",
        &[("content-type", "application/json")],
        Some(&spec.to_string()),
    )
    .assert_error(401, "UNAUTHORIZED");
    s.req(
        "POST",
        "/api/v1/namespaces",
        &[
            ("content-type", "application/json"),
            ("x-api-key", "app-key"),
        ],
        Some(&spec.to_string()),
    )
    .assert_error(403, "FORBIDDEN");
    s.req(
        "POST",
        "/api/v1/namespaces",
        &[("content-type", "application/json"), ("x-api-key", "wrong")],
        Some(&spec.to_string()),
    )
    .assert_error(401, "UNAUTHORIZED");
    let created = s.create_namespace(spec).json();
    assert_eq!(
        created["durability"], "sync",
        "defaults filled in: {created}"
    );
    assert_eq!(created["maxMessageSize"], 1_048_576);
    assert!(created["createdAt"].as_str().is_some());
    s.admin("POST", "/api/v1/namespaces", Some(&json!({ "name": "n1" })))
        .assert_error(409, "CONFLICT");
    let bad = s.admin(
        "POST",
        "/api/v1/namespaces",
        Some(&json!({ "name": "Bad Name!", "shardConfig": { "partitionCount": 0 }, "nope": 1 })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    let list = s.admin("GET", "/api/v1/namespaces", None);
    assert_eq!(list.status, 200);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    let got = s.admin("GET", "/api/v1/namespaces/n1", None);
    assert_eq!(got.json()["name"], "n1");
    let put = s.admin("PUT", "/api/v1/namespaces/n1", Some(&json!({ "name": "n1", "shardConfig": { "partitionCount": 3 }, "maxMessageSize": 4096 })));
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["shardConfig"]["partitionCount"], 3);
    s.admin(
        "PUT",
        "/api/v1/namespaces/n1",
        Some(&json!({ "name": "n1", "shardConfig": { "partitionCount": 1 } })),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "PUT",
        "/api/v1/namespaces/n1",
        Some(&json!({ "name": "other" })),
    )
    .assert_error(400, "VALIDATION_ERROR");
    let st = s
        .req(
            "GET",
            "/api/v1/wal/namespace/n1/status",
            &[("x-api-key", "app-key")],
            None,
        )
        .json();
    assert_eq!(st["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(s.admin("DELETE", "/api/v1/namespaces/n1", None).status, 204);
    s.admin("GET", "/api/v1/namespaces/n1", None)
        .assert_error(404, "NAMESPACE_NOT_FOUND");
    assert!(
        !dir.join("logs").join("n1").exists(),
        "its logs are deleted"
    );
    // Persisted: a namespace created through the API survives a restart.
    s.create_namespace(json!({ "name": "kept" }));
    s.stop();
    let s = Server::start(config(&dir));
    assert_eq!(s.admin("GET", "/api/v1/namespaces/kept", None).status, 200);
    assert_eq!(s.write("kept", json!({"a": 1})).status, 202);
    let _ = ADMIN;
}

#[test]
fn api_keys_scope_namespaces() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.auth.open = false;
    c.auth.api_keys = vec![
        wald::config::ApiKeyConfig {
            id: "a".into(),
            key: Some("key-a".into()),
            key_sha256: None,
            namespaces: vec!["alpha".into()],
        },
        wald::config::ApiKeyConfig {
            id: "b".into(),
            key: Some("key-b".into()),
            key_sha256: None,
            namespaces: vec!["*".into()],
        },
    ];
    let s = Server::start(c);
    s.create_namespace(ns("alpha"));
    s.create_namespace(json!({ "name": "beta", "accessControl": { "allowedApiKeys": ["a"] } }));
    let w = |ns: &str, key: Option<&str>, bearer: bool| {
        let mut h: Vec<(&str, String)> = Vec::new();
        if let Some(k) = key {
            if bearer {
                h.push(("authorization", format!("Bearer {k}")));
            } else {
                h.push(("x-api-key", k.to_owned()));
            }
        }
        let hs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        s.post_json(
            "/api/v1/wal/write",
            &hs,
            &json!({ "namespace": ns, "payload": {"a": 1} }),
        )
    };
    w("alpha", None, false).assert_error(401, "UNAUTHORIZED");
    w("alpha", Some("bogus"), false).assert_error(401, "UNAUTHORIZED");
    assert_eq!(w("alpha", Some("key-a"), false).status, 202);
    assert_eq!(
        w("alpha", Some("key-a"), true).status,
        202,
        "Authorization: Bearer works too"
    );
    // Key b may use every namespace by config, but beta lists only key a.
    w("beta", Some("key-b"), false).assert_error(403, "FORBIDDEN");
    // Key a is not configured for beta.
    w("beta", Some("key-a"), false).assert_error(403, "FORBIDDEN");
    assert_eq!(w("alpha", Some("key-b"), false).status, 202);
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "slow", "accessControl": { "allowedApiKeys": [], "rateLimits": { "requestsPerMinute": 1, "requestsPerHour": 1000, "burstLimit": 3 } } }));
    for _ in 0..3 {
        assert_eq!(s.write("slow", json!({"a": 1})).status, 202);
    }
    let r = s.write("slow", json!({"a": 1}));
    r.assert_error(429, "RATE_LIMITED");
    assert!(r
        .header("retry-after")
        .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    let m = s.admin("GET", "/metrics", None).text();
    assert!(
        m.contains("wald_rate_limited_total{namespace=\"slow\"} 1"),
        "{m}"
    );
}

#[test]
fn health_metrics_and_docs() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("m"));
    assert_eq!(s.write("m", json!({"a": 1})).status, 202);
    let h = s.req("GET", "/api/v1/health", &[], None);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(
        s.req("GET", "/api/v1/health/liveness", &[], None).status,
        200
    );
    assert_eq!(
        s.req("GET", "/api/v1/health/readiness", &[], None).status,
        200
    );
    s.req("GET", "/metrics", &[], None)
        .assert_error(401, "UNAUTHORIZED");
    let m = s.admin("GET", "/metrics", None);
    assert_eq!(m.status, 200);
    let text = m.text();
    for name in [
        "wald_http_requests_total",
        "wald_write_latency_seconds_bucket",
        "wald_log_records_appended_total",
        "wald_log_fsyncs_total",
        "wald_log_segments",
        "wald_disk_free_bytes",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
    assert!(
        text.contains(r#"wald_log_records_appended_total{namespace="m",partition="0"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wald_commit_batch_records_count{namespace="m"} 1"#),
        "one batch-size observation: {text}"
    );
    assert!(
        text.contains(r#"wald_commit_batch_records_sum{namespace="m"} 1"#),
        "of one record: {text}"
    );
    assert!(
        text.contains(r#"wald_fsync_latency_seconds_count{namespace="m"} 1"#),
        "one fsync observed: {text}"
    );
    // Conventions: counters end in `_total` and nothing else does; units in names; the
    // build and the process are described.
    assert!(
        text.contains(&format!(
            "wald_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("\n{name} ")), "{name} in /metrics");
    }
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}: counters, and only counters, end in _total"
        );
    }
    let ui = s.req("GET", "/api/docs/", &[], None);
    assert_eq!(ui.status, 200, "Swagger UI served");
    assert!(ui.text().contains("swagger"), "UI page");
}

/// Every route the router serves (besides Swagger UI and the document itself), with its
/// method: the OpenAPI document must list exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/wal/write", "post"),
    ("/api/v1/wal/messages/{message_id}", "get"),
    ("/api/v1/wal/namespace/{namespace}/status", "get"),
    ("/api/v1/wal/namespace/{namespace}/metrics", "get"),
    ("/api/v1/wal/namespace/{namespace}/messages", "get"),
    ("/api/v1/wal/transaction/{transaction_id}/status", "get"),
    ("/api/v1/namespaces", "post"),
    ("/api/v1/namespaces", "get"),
    ("/api/v1/namespaces/{namespace}", "get"),
    ("/api/v1/namespaces/{namespace}", "put"),
    ("/api/v1/namespaces/{namespace}", "delete"),
    ("/api/v1/namespaces/{namespace}/dlq", "get"),
    ("/api/v1/namespaces/{namespace}/dlq/replay", "post"),
    ("/api/v1/namespaces/{namespace}/dlq/{messageId}", "get"),
    ("/api/v1/namespaces/{namespace}/dlq/{messageId}", "delete"),
    (
        "/api/v1/namespaces/{namespace}/dlq/{messageId}/replay",
        "post",
    ),
    ("/api/v1/namespaces/{namespace}/replay", "post"),
    ("/api/v1/tasks/{taskId}", "get"),
    ("/api/v1/health", "get"),
    ("/api/v1/health/liveness", "get"),
    ("/api/v1/health/readiness", "get"),
    ("/metrics", "get"),
    ("/api/v1/wal/write/batch", "post"),
    ("/api/v1/keys", "get"),
    ("/api/v1/keys", "post"),
    ("/api/v1/keys/{id}", "delete"),
];

#[test]
fn openapi_document_validates_and_lists_every_route() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let spec = s.req("GET", "/api/docs/openapi.json", &[], None);
    assert_eq!(spec.status, 200);
    let j = spec.json();
    assert!(j["openapi"].as_str().is_some_and(|v| v.starts_with('3')));

    // The document lists exactly the routes above...
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in j["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
            if item[method].is_object() {
                documented.insert((path.clone(), method.to_owned()));
            }
        }
    }
    let listed: std::collections::BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
        .collect();
    assert_eq!(
        documented, listed,
        "the OpenAPI paths and the test's route list differ"
    );
    // ...and the router serves every one of them (no fallback 404 / 405).
    for (path, method) in ROUTES {
        let concrete = path
            .replace("{message_id}", "m-none")
            .replace("{messageId}", "m-none")
            .replace("{taskId}", "t-none")
            .replace("{namespace}", "ns-none")
            .replace("{id}", "key-none");
        let r = s.req(
            &method.to_uppercase(),
            &concrete,
            &[("x-api-key", ADMIN), ("content-type", "application/json")],
            (*method == "post" || *method == "put").then_some("{}"),
        );
        // The router's fallbacks answer 405, or 404 "no such route".
        let fallback = serde_json::from_slice::<serde_json::Value>(&r.body)
            .is_ok_and(|b| b["error"]["message"] == "no such route");
        assert!(
            r.status != 405 && !fallback,
            "{method} {path} is served: {} {}",
            r.status,
            r.text()
        );
    }

    // The document is valid OpenAPI (openapi-spec-validator, installed by scripts/test.sh).
    let validator = std::env::var_os("WALD_OPENAPI_VALIDATOR").unwrap_or_else(|| {
        panic!(
            "WALD_OPENAPI_VALIDATOR is not set: run ./scripts/test.sh (it installs \
             openapi-spec-validator into $CARGO_TARGET_DIR/pyenv and sets the variable), or set \
             WALD_OPENAPI_VALIDATOR to an openapi-spec-validator executable"
        )
    });
    let file = dir.join("openapi.json");
    std::fs::write(&file, &spec.body).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.to_string_lossy()));
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every answer names the request id; rate-limited and redirected ones their headers.
    for (path, item) in j["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let h = &resp["headers"];
                assert!(
                    h["X-Request-ID"].is_object(),
                    "{method} {path} {status}: X-Request-ID"
                );
                if status == "429" {
                    assert!(
                        h["Retry-After"].is_object(),
                        "{method} {path} 429: Retry-After"
                    );
                }
                if status == "307" {
                    assert!(h["Location"].is_object(), "{method} {path} 307: Location");
                }
            }
            let statuses = op["responses"].as_object().unwrap();
            for s in ["431", "503", "504"] {
                assert!(statuses.contains_key(s), "{method} {path} lists {s}");
            }
            if op["requestBody"].is_object() {
                for s in ["400", "413", "415"] {
                    assert!(statuses.contains_key(s), "{method} {path} lists {s}");
                }
            }
        }
    }

    // docs/openapi.json is the served document (WALD_UPDATE_OPENAPI=1 rewrites it).
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let served = serde_json::to_string_pretty(&j).unwrap() + "\n";
    if std::env::var_os("WALD_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed, &served).unwrap();
    }
    let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == served,
        "docs/openapi.json differs from the served document: run \
         WALD_UPDATE_OPENAPI=1 cargo test --release --all-features --test http_api openapi"
    );
}

/// Drives the served document with a property-based fuzzer (schemathesis, installed by
/// scripts/test.sh): every answer's status must be documented for its operation, its body
/// must match the documented schema and content type, its documented headers present, and
/// no answer may be a 5xx. A fixed seed, so a failure reproduces.
#[test]
fn a_fuzzer_driven_by_the_document_finds_nothing() {
    let Some(st) = std::env::var_os("WALD_SCHEMATHESIS") else {
        panic!(
            "WALD_SCHEMATHESIS is not set: run ./scripts/test.sh (it installs schemathesis into \
             $CARGO_TARGET_DIR/pyenv and sets the variable)"
        );
    };
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.auth.open = false;
    let s = Server::start(c);
    s.create_namespace(json!({"name": "orders"}));
    assert_eq!(s.write("orders", json!({"a": 1})).status, 401, "closed");
    let url = format!("http://{}/api/docs/openapi.json", s.addr);
    let out = std::process::Command::new(&st)
        .current_dir(&dir)
        .args([
            "run",
            &url,
            "--no-color",
            "--seed",
            "1",
            "--max-examples",
            "25",
        ])
        .args(["--header", &format!("x-api-key: {ADMIN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", st.to_string_lossy()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tested: usize = text
        .split("Tested: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(tested, ROUTES.len(), "every operation was tested:\n{text}");
    s.stop();
}

#[test]
fn namespace_metrics_count_writes_duplicates_and_latency() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("nm"));
    for i in 0..3 {
        assert_eq!(s.write("nm", json!({ "i": i })).status, 202);
    }
    for _ in 0..2 {
        let r = s.post_json(
            "/api/v1/wal/write",
            &[("idempotency-key", "k1")],
            &json!({ "namespace": "nm", "payload": { "k": 1 } }),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let get = |q: &str| {
        s.req(
            "GET",
            &format!("/api/v1/wal/namespace/nm/metrics{q}"),
            &[],
            None,
        )
    };
    let r = get("");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let m = &j["metrics"];
    assert_eq!(j["namespace"], "nm");
    assert_eq!(m["writes"], 4, "{j}");
    assert_eq!(m["duplicates"], 1, "{j}");
    assert_eq!(m["errors"], 0, "{j}");
    assert_eq!(m["totalRequests"], 5, "{j}");
    assert_eq!(m["successRate"], 1.0, "{j}");
    assert_eq!(m["errorRate"], 0.0, "{j}");
    assert!(m["averageLatency"].as_f64().is_some_and(|l| l > 0.0), "{j}");
    assert!(m["bytes"].as_u64().is_some_and(|b| b > 4 * 20), "{j}");
    assert!(m["throughput"].as_f64().is_some_and(|t| t > 0.0), "{j}");
    assert_eq!(j["bucketSeconds"], 60);
    let series = j["series"].as_array().unwrap();
    assert!(!series.is_empty() && series.len() <= 2, "{j}");
    let summed: u64 = series.iter().map(|b| b["writes"].as_u64().unwrap()).sum();
    assert_eq!(summed, 4);
    let (from, to) = (
        j["timeRange"]["from"].as_str().unwrap(),
        j["timeRange"]["to"].as_str().unwrap(),
    );
    assert!(from.ends_with('Z') && to.ends_with('Z') && from < to, "{j}");

    // ISO 8601 and milliseconds; a range before the writes holds nothing.
    let all = get("?from=2020-01-01T00:00:00Z").json();
    assert_eq!(all["metrics"]["writes"], 4, "{all}");
    let old = get("?from=0&to=60000").json();
    assert_eq!(old["metrics"]["writes"], 0, "{old}");
    assert_eq!(old["metrics"]["totalRequests"], 0, "{old}");
    assert!(old["metrics"]["successRate"].is_null(), "{old}");
    assert_eq!(old["series"], json!([]));
    assert_eq!(old["timeRange"]["to"], "1970-01-01T00:01:00.000Z");

    // Bad input names the field.
    let e = get("?from=yesterday").assert_error(400, "VALIDATION_ERROR");
    assert_eq!(e["error"]["details"]["fields"][0]["field"], "from", "{e}");
    let e = get("?to=2025-13-01T00:00:00Z").assert_error(400, "VALIDATION_ERROR");
    assert_eq!(e["error"]["details"]["fields"][0]["field"], "to", "{e}");
    let e = get("?from=2000&to=1000").assert_error(400, "VALIDATION_ERROR");
    assert_eq!(e["error"]["details"]["fields"][0]["field"], "from", "{e}");
    get("?since=5").assert_error(400, "VALIDATION_ERROR");
    s.req("GET", "/api/v1/wal/namespace/none/metrics", &[], None)
        .assert_error(404, "NAMESPACE_NOT_FOUND");
}

#[test]
fn concurrent_writes_with_one_idempotency_key_append_once() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("race"));
    let addr = s.addr;
    let answers: Vec<serde_json::Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(move || {
                    common::request(
                        addr,
                        "POST",
                        "/api/v1/wal/write",
                        &[
                            ("content-type", "application/json"),
                            ("idempotency-key", "same"),
                        ],
                        Some(br#"{"namespace":"race","payload":{"a":1}}"#),
                    )
                    .json()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let firsts = answers.iter().filter(|a| a["duplicate"] == false).count();
    assert_eq!(firsts, 1, "exactly one append: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["messageId"] == answers[0]["messageId"]),
        "{answers:?}"
    );
    let st = s
        .req("GET", "/api/v1/wal/namespace/race/status", &[], None)
        .json();
    assert_eq!(st["partitions"][0]["nextOffset"], 1);
}

fn batch(s: &Server, headers: &[(&str, &str)], messages: serde_json::Value) -> common::Resp {
    s.post_json(
        "/api/v1/wal/write/batch",
        headers,
        &json!({ "messages": messages }),
    )
}

fn next_offset(s: &Server, ns: &str) -> u64 {
    // As the admin: its rate-limit budget is its own.
    let st = s
        .admin("GET", &format!("/api/v1/wal/namespace/{ns}/status"), None)
        .json();
    st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nextOffset"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_batch_writes_every_message_in_order_and_each_is_readable_at_once() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "orders", "shardConfig": { "strategy": "hash", "partitionCount": 2 } }),
    );
    s.create_namespace(ns("audit"));
    let mut messages = Vec::new();
    for i in 0..6 {
        messages.push(json!({ "namespace": "orders", "payload": { "i": i }, "partitionKey": format!("k{}", i % 2) }));
    }
    messages.push(json!({ "namespace": " Audit ", "payload": { "who": "jo" }, "tags": ["x"] }));
    let r = batch(&s, &[], json!(messages));
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.header("x-request-id").is_some());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 7);
    // Per partition, the messages sit at consecutive offsets in request order.
    let mut last: std::collections::HashMap<(String, u64), u64> = Default::default();
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["durable"], "true", "{res}");
        assert_eq!(res["duplicate"], false);
        let ns = res["namespace"].as_str().unwrap().to_owned();
        assert_eq!(ns, if i < 6 { "orders" } else { "audit" });
        let key = (ns, res["partition"].as_u64().unwrap());
        let off = res["offset"].as_u64().unwrap();
        if let Some(prev) = last.insert(key, off) {
            assert_eq!(off, prev + 1, "{results:?}");
        }
        // Readable by id as soon as answered.
        let id = res["messageId"].as_str().unwrap();
        let m = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
        assert_eq!(m.status, 200, "{}", m.text());
        let want = if i < 6 {
            json!({ "i": i })
        } else {
            json!({ "who": "jo" })
        };
        assert_eq!(m.json()["payload"], want);
    }
    // Messages with one partition key share a partition.
    assert_eq!(results[0]["partition"], results[2]["partition"]);
    assert_eq!(next_offset(&s, "orders"), 6);
    assert_eq!(next_offset(&s, "audit"), 1);
}

#[test]
fn an_invalid_message_refuses_the_whole_batch_naming_it() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("orders"));
    let j = batch(
        &s,
        &[],
        json!([
            { "namespace": "orders", "payload": { "ok": 1 } },
            { "namespace": "orders", "payload": {}, "priority": 11 },
            { "namespace": "orders", "payload": { "ok": 3 }, "lifecycle": { "ttl": "x" } },
            { "payload": { "ok": 4 } }
        ]),
    )
    .assert_error(400, "VALIDATION_ERROR");
    let fields: Vec<&str> = j["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    for f in [
        "messages[1].payload",
        "messages[1].priority",
        "messages[2].lifecycle.ttl",
        "messages[3].namespace",
    ] {
        assert!(fields.contains(&f), "{f} named in {fields:?}");
    }
    assert!(
        !fields.iter().any(|f| f.starts_with("messages[0]")),
        "{fields:?}"
    );
    // An unknown namespace in one message: its error, with its index; nothing appended.
    let j = batch(
        &s,
        &[],
        json!([{ "namespace": "orders", "payload": { "a": 1 } }, { "namespace": "nope", "payload": { "a": 1 } }]),
    )
    .assert_error(404, "NAMESPACE_NOT_FOUND");
    assert_eq!(j["error"]["details"]["index"], 1, "{j}");
    // Sizes: one message over its namespace's maxMessageSize.
    s.create_namespace(json!({ "name": "small", "maxMessageSize": 1024 }));
    let big = "x".repeat(2000);
    let j = batch(
        &s,
        &[],
        json!([{ "namespace": "small", "payload": { "a": 1 } }, { "namespace": "small", "payload": { "a": big } }]),
    )
    .assert_error(413, "MESSAGE_SIZE_LIMIT_EXCEEDED");
    assert_eq!(j["error"]["details"]["index"], 1, "{j}");
    // The shape of the list itself.
    batch(&s, &[], json!([])).assert_error(400, "VALIDATION_ERROR");
    let many: Vec<_> = (0..1001)
        .map(|_| json!({ "namespace": "orders", "payload": { "a": 1 } }))
        .collect();
    let j = batch(&s, &[], json!(many)).assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        j["error"]["details"]["fields"][0]["field"], "messages",
        "{j}"
    );
    s.post_json("/api/v1/wal/write/batch", &[], &json!({ "message": [] }))
        .assert_error(400, "VALIDATION_ERROR");
    s.req(
        "POST",
        "/api/v1/wal/write/batch",
        &[("content-type", "application/json")],
        Some("{\"messages\": [1,"),
    )
    .assert_error(400, "MALFORMED_JSON");
    s.req(
        "POST",
        "/api/v1/wal/write/batch",
        &[("content-type", "text/plain")],
        Some("{}"),
    )
    .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    // The idempotency key of a batch message goes in its body.
    batch(
        &s,
        &[("idempotency-key", "k")],
        json!([{ "namespace": "orders", "payload": { "a": 1 } }]),
    )
    .assert_error(400, "VALIDATION_ERROR");
    // Nothing of any refused batch was appended.
    assert_eq!(next_offset(&s, "orders"), 0);
    assert_eq!(next_offset(&s, "small"), 0);
}

#[test]
fn batch_idempotency_holds_within_and_across_requests() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(ns("orders"));
    let first = s.post_json(
        "/api/v1/wal/write",
        &[("idempotency-key", "a")],
        &json!({ "namespace": "orders", "payload": { "n": 0 } }),
    );
    assert_eq!(first.status, 202);
    let first_id = first.json()["messageId"].clone();
    let r = batch(
        &s,
        &[],
        json!([
            { "namespace": "orders", "payload": { "n": 1 }, "idempotencyKey": "a" },
            { "namespace": "orders", "payload": { "n": 2 }, "idempotencyKey": "b" },
            { "namespace": "orders", "payload": { "n": 3 }, "idempotencyKey": "b" },
            { "namespace": "orders", "payload": { "n": 4 } }
        ]),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let res = r.json()["results"].clone();
    assert_eq!(res[0]["duplicate"], true);
    assert_eq!(res[0]["messageId"], first_id);
    assert_eq!(res[1]["duplicate"], false);
    assert_eq!(res[2]["duplicate"], true);
    assert_eq!(res[2]["messageId"], res[1]["messageId"]);
    assert_eq!(res[2]["offset"], res[1]["offset"]);
    assert_eq!(res[3]["duplicate"], false);
    // Two messages appended (b and the key-less one), after the single write.
    assert_eq!(next_offset(&s, "orders"), 3);
    // Again: every keyed message is a duplicate now; the key-less one is appended again.
    let r = batch(
        &s,
        &[],
        json!([{ "namespace": "orders", "payload": { "n": 2 }, "idempotencyKey": "b" }]),
    );
    assert_eq!(r.json()["results"][0]["messageId"], res[1]["messageId"]);
    assert_eq!(next_offset(&s, "orders"), 3);
}

#[test]
fn batch_rate_limits_count_each_message() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "orders", "accessControl": { "rateLimits": {
        "requestsPerMinute": 60, "requestsPerHour": 1000, "burstLimit": 5 } } }));
    let four: Vec<_> = (0..4)
        .map(|i| json!({ "namespace": "orders", "payload": { "i": i } }))
        .collect();
    assert_eq!(batch(&s, &[], json!(four)).status, 202);
    // One token left: a batch of two takes none and is refused.
    let r = batch(&s, &[], json!(four[..2]));
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.write("orders", json!({ "one": 1 })).status, 202);
    // More messages than the burst can never pass.
    let six: Vec<_> = (0..6)
        .map(|i| json!({ "namespace": "orders", "payload": { "i": i } }))
        .collect();
    batch(&s, &[], json!(six)).assert_error(400, "VALIDATION_ERROR");
    assert_eq!(next_offset(&s, "orders"), 5);
}

/// `levels` nested arrays around a number: `[[1]]` for 2.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

/// The deepest `n` in `1..=max` whose write `body(n)` is accepted (accepted up to some depth,
/// refused beyond), with the answer of that write.
fn deepest_accepted(
    s: &Server,
    max: usize,
    body: impl Fn(usize) -> String,
) -> (usize, serde_json::Value) {
    let (mut lo, mut hi) = (0, max + 1);
    let mut best = None;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let r = s.req(
            "POST",
            "/api/v1/wal/write",
            &[("content-type", "application/json")],
            Some(&body(mid)),
        );
        if r.status == 202 {
            lo = mid;
            best = Some(r.json());
        } else {
            assert_eq!(r.status, 400, "{}", r.text());
            hi = mid;
        }
    }
    (lo, best.expect("a shallow write is accepted"))
}

/// Reads message `id` by id and on its partition's page, both 200; returns both views.
fn read_both(s: &Server, ns: &str, written: &serde_json::Value) -> [serde_json::Value; 2] {
    let id = written["messageId"].as_str().unwrap();
    let m = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
    assert_eq!(m.status, 200, "read by id: {}", m.text());
    let (p, off) = (
        written["partition"].as_u64().unwrap(),
        written["offset"].as_u64().unwrap(),
    );
    let page = s.req(
        "GET",
        &format!("/api/v1/wal/namespace/{ns}/messages?partition={p}&fromOffset={off}&limit=1"),
        &[],
        None,
    );
    assert_eq!(page.status, 200, "read on the page: {}", page.text());
    let pj = page.json();
    assert_eq!(pj["messages"][0]["messageId"], id, "{pj}");
    [m.json(), pj["messages"][0].clone()]
}

#[test]
fn a_message_nested_as_deep_as_the_write_accepts_reads_back() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "deep", "adHocTargets": true }));

    // A target object nested as deep as the write takes it.
    let target = |n: usize| {
        format!(
            r#"{{"namespace":"deep","payload":{{"k":1}},"target":{{"type":"webhook","identifier":"w","config":{{"url":"http://127.0.0.1:9/x","x":{}}}}}}}"#,
            nested(n)
        )
    };
    let (n, written) = deepest_accepted(&s, 200, target);
    let want: serde_json::Value = serde_json::from_str(&nested(n)).unwrap();
    for v in read_both(&s, "deep", &written) {
        let t = if v["target"].is_array() {
            &v["target"][0]
        } else {
            &v["target"]
        };
        assert_eq!(t["config"]["x"], want, "target read back at depth {n}: {v}");
    }
    // One level more is refused naming the field and the limit.
    let r = s.req(
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(&target(n + 1)),
    );
    let j = r.assert_error(400, "VALIDATION_ERROR");
    let f = &j["error"]["details"]["fields"][0];
    assert_eq!(f["field"], "target", "{j}");
    assert!(
        f["message"].as_str().unwrap().contains("at most"),
        "the limit is named: {j}"
    );

    // A payload nested as deep as the write takes it: byte for byte.
    let payload = |n: usize| format!(r#"{{"namespace":"deep","payload":{{"x":{}}}}}"#, nested(n));
    let (n, written) = deepest_accepted(&s, 400, payload);
    assert!(n < 400, "a payload has a depth limit");
    let raw = format!(r#""payload":{{"x":{}}}"#, nested(n));
    let id = written["messageId"].as_str().unwrap();
    let m = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
    assert!(
        m.text().contains(&raw),
        "payload byte-identical: {}",
        m.text()
    );
    read_both(&s, "deep", &written);
    let j = s
        .req(
            "POST",
            "/api/v1/wal/write",
            &[("content-type", "application/json")],
            Some(&payload(n + 1)),
        )
        .assert_error(400, "VALIDATION_ERROR");
    let f = &j["error"]["details"]["fields"][0];
    assert_eq!(f["field"], "payload", "{j}");
    assert!(f["message"].as_str().unwrap().contains("at most"), "{j}");
    s.stop();
}

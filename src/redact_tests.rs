//! Unit tests of [`super`]: each secret kind, URLs and free text, and the way back.

use super::*;
use serde_json::json;

fn redacted_target(t: Value) -> Value {
    targets_owned(t)
}

#[test]
fn webhook_secret_and_secrets_list() {
    let t = redacted_target(json!({"type": "webhook", "identifier": "w",
        "config": {"url": "https://h.example/hook", "secret": "s3cr3t-hmac",
                   "secrets": ["whsec_one", "whsec_two"]}}));
    assert_eq!(t["config"]["secret"], SET);
    assert_eq!(t["config"]["secrets"], json!([SET, SET]));
    assert_eq!(t["config"]["url"], "https://h.example/hook");
    assert_eq!(t["identifier"], "w");
    // Absent stays absent; null stays null.
    let t = redacted_target(json!({"type": "webhook", "identifier": "w",
        "config": {"url": "https://h.example/", "secret": null}}));
    assert_eq!(t["config"]["secret"], Value::Null);
    assert!(t["config"].get("secrets").is_none());
}

#[test]
fn secret_headers_by_name_others_kept() {
    let t = redacted_target(json!({"type": "http_service", "identifier": "h",
        "config": {"url": "https://h.example/", "headers": {
            "Authorization": "Bearer abc", "X-API-Key": "k1", "cookie": "sid=1",
            "X-Hub-Signature": "sha1=x", "Proxy-Authorization": "Basic y",
            "X-Auth-Token": "t", "Content-Type": "application/json", "X-Tenant": "acme"}}}));
    let h = &t["config"]["headers"];
    for name in [
        "Authorization",
        "X-API-Key",
        "cookie",
        "X-Hub-Signature",
        "Proxy-Authorization",
        "X-Auth-Token",
    ] {
        assert_eq!(h[name], SET, "{name}");
    }
    assert_eq!(h["Content-Type"], "application/json");
    assert_eq!(h["X-Tenant"], "acme");
}

#[test]
fn database_and_cache_passwords() {
    let t = redacted_target(json!([
        {"type": "database", "identifier": "pg", "config": {"type": "postgresql",
         "host": "db", "port": 5432, "database": "app", "table": "t",
         "user": "wald", "password": "pg-pass"}},
        {"type": "cache", "identifier": "c", "config": {"type": "redis", "host": "r",
         "port": 6379, "username": "u", "password": "redis-pass", "keyPrefix": "p:"}},
        "already-an-identifier"
    ]));
    assert_eq!(t[0]["config"]["password"], SET);
    assert_eq!(t[0]["config"]["user"], "wald");
    assert_eq!(t[1]["config"]["password"], SET);
    assert_eq!(t[1]["config"]["keyPrefix"], "p:");
    assert_eq!(t[2], "already-an-identifier");
}

#[test]
fn urls_with_userinfo_and_query_tokens() {
    assert_eq!(
        url("https://user:pw@h.example:8443/p?a=1&token=abc&b=2#f"),
        "https://<set>@h.example:8443/p?a=1&token=<set>&b=2#f"
    );
    assert_eq!(
        url("redis://:pw@127.0.0.1:6379/0"),
        "redis://<set>@127.0.0.1:6379/0"
    );
    assert_eq!(
        url("postgres://wald:pw@db/app?sslmode=disable"),
        "postgres://<set>@db/app?sslmode=disable"
    );
    assert_eq!(
        url("https://h/x?api_key=1&sig=2&X-Amz-Signature=3&key=4"),
        "https://h/x?api_key=<set>&sig=<set>&X-Amz-Signature=<set>&key=<set>"
    );
    // Nothing to hide: borrowed, unchanged.
    assert!(matches!(
        url("https://h.example/a?b=c"),
        Cow::Borrowed("https://h.example/a?b=c")
    ));
    // Idempotent.
    let once = url("https://u:p@h/?token=t").into_owned();
    assert_eq!(url(&once), once);
    // In a target's config, at any depth.
    let t = redacted_target(json!({"type": "webhook", "identifier": "w",
        "config": {"url": "https://u:p@h.example/hook?token=abc"}}));
    assert_eq!(
        t["config"]["url"],
        "https://<set>@h.example/hook?token=<set>"
    );
}

#[test]
fn free_text_and_connection_strings() {
    assert_eq!(
        text("mirror: url `redis://:hunter2@r:6379`: connection refused"),
        "mirror: url `redis://<set>@r:6379`: connection refused"
    );
    assert_eq!(
        text("host=db user=wald password=pg-pass dbname=app"),
        "host=db user=wald password=<set> dbname=app"
    );
    // Validation messages that merely name a field are left alone.
    assert_eq!(
        text("config.password: must not be empty"),
        "config.password: must not be empty"
    );
}

#[test]
fn backend_configs() {
    let mut ns = json!({"name": "n",
        "backend": "sqs",
        "backendConfig": {"queueUrl": "https://sqs.example/1/q", "region": "eu-west-1",
            "accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "aws-secret", "batchSize": 10},
        "mirrors": [
            {"backend": "redis_streams", "backendConfig": {"url": "redis://:redis-pw@r:6379"}},
            {"name": "k", "backend": "kafka", "backendConfig": {"bootstrapServers": "b:9092",
                "sasl": {"mechanism": "PLAIN", "username": "u", "password": "kafka-pw"},
                "connectionString": "Endpoint=sb://x/;SharedAccessKey=azure-key"}}
        ],
        "accessControl": {"allowedApiKeys": ["ingest"]}});
    namespace(&mut ns);
    let b = &ns["backendConfig"];
    assert_eq!(b["accessKeyId"], SET);
    assert_eq!(b["secretAccessKey"], SET);
    assert_eq!(b["queueUrl"], "https://sqs.example/1/q");
    assert_eq!(b["batchSize"], 10);
    assert_eq!(
        ns["mirrors"][0]["backendConfig"]["url"],
        "redis://<set>@r:6379"
    );
    let k = &ns["mirrors"][1]["backendConfig"];
    assert_eq!(k["sasl"]["password"], SET);
    assert_eq!(k["sasl"]["mechanism"], "PLAIN");
    assert_eq!(
        k["connectionString"],
        "Endpoint=sb://x/;SharedAccessKey=<set>"
    );
    // Key ids are not keys.
    assert_eq!(ns["accessControl"]["allowedApiKeys"][0], "ingest");
}

fn stored_ns() -> Value {
    json!({"name": "n",
        "targetConfigs": [
            {"type": "webhook", "identifier": "w", "config": {"url": "https://u:p@h/x",
                "secret": "s1", "headers": {"Authorization": "Bearer a", "X-T": "1"}}},
            {"type": "webhook", "identifier": "w", "region": "eu", "config": {"url": "https://h/",
                "secret": "s-eu"}}],
        "backend": "redis_streams", "backendConfig": {"url": "redis://:pw@r:6379"},
        "mirrors": [{"name": "k", "backend": "sqs", "backendConfig": {"secretAccessKey": "aws"}}]})
}

#[test]
fn restore_keeps_stored_secrets_for_placeholders() {
    let stored = stored_ns();
    let mut sent = stored.clone();
    namespace(&mut sent);
    // Reordered targets still match by identifier and region; an edit is kept.
    let list = sent["targetConfigs"].as_array_mut().unwrap();
    list.swap(0, 1);
    list[1]["config"]["headers"]["X-T"] = json!("2");
    let errs = restore_namespace(&mut sent, Some(&stored));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(sent["targetConfigs"][0]["config"]["secret"], "s-eu");
    let w = &sent["targetConfigs"][1]["config"];
    assert_eq!(w["secret"], "s1");
    assert_eq!(w["url"], "https://u:p@h/x");
    assert_eq!(w["headers"]["Authorization"], "Bearer a");
    assert_eq!(w["headers"]["X-T"], "2");
    assert_eq!(sent["backendConfig"]["url"], "redis://:pw@r:6379");
    assert_eq!(
        sent["mirrors"][0]["backendConfig"]["secretAccessKey"],
        "aws"
    );
    // A new value replaces the stored one.
    let mut sent = stored.clone();
    sent["targetConfigs"][0]["config"]["secret"] = json!("new");
    assert!(restore_namespace(&mut sent, Some(&stored)).is_empty());
    assert_eq!(sent["targetConfigs"][0]["config"]["secret"], "new");
}

#[test]
fn placeholders_without_a_stored_value_are_refused() {
    let stored = stored_ns();
    let mut sent = json!({"name": "n", "targetConfigs": [
        {"type": "webhook", "identifier": "new", "config": {"url": "https://h/", "secret": "<set>"}},
        {"type": "webhook", "identifier": "w", "config": {"url": "https://<set>@other/x",
            "secret": "<set>"}}]});
    let errs = restore_namespace(&mut sent, Some(&stored));
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "targetConfigs[0].config.secret",
            "targetConfigs[1].config.url"
        ]
    );
    assert_eq!(sent["targetConfigs"][1]["config"]["secret"], "s1");
    // Creating: nothing is stored.
    let mut sent = stored_ns();
    namespace(&mut sent);
    let errs = restore_namespace(&mut sent, None);
    assert_eq!(errs.len(), 6, "{errs:?}");
    assert!(errs[0].message.contains("<set>"));
}

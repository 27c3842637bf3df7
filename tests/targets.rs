//! Target adapters against real receivers: an axum HTTP server, a real Redis and a real
//! PostgreSQL (started here on private ports; installed by ./scripts/test.sh), the in-memory
//! cache and the file target.

#[path = "common/servers.rs"]
mod servers;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wald::delivery::target::memory::CacheValue;
use wald::delivery::target::{
    build, Delivery, ErrorClass, MemoryCache, Target, TargetContext, TargetError,
};
use wald::model::target::TargetConfig;

fn ctx() -> TargetContext {
    TargetContext::new(
        Duration::from_secs(5),
        Arc::new(MemoryCache::new()),
        wald::egress::EgressPolicy::allowing(["127.0.0.0/8".parse().unwrap()]),
    )
}

fn target(ctx: &TargetContext, v: Value) -> Arc<dyn Target> {
    let cfg: TargetConfig = serde_json::from_value(v).expect("target JSON");
    build(&cfg, ctx).expect("target builds")
}

fn delivery(payload: &[u8]) -> Delivery<'_> {
    Delivery {
        message_id: "msg-1",
        namespace: "orders",
        partition: 3,
        offset: 42,
        attempt: 2,
        payload,
        accepted_at_ms: 1_700_000_000_000,
    }
}

async fn send(t: &Arc<dyn Target>, payload: &str) -> Result<(), TargetError> {
    t.deliver(delivery(payload.as_bytes())).await
}

// ---------------------------------------------------------------- HTTP

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>);

async fn receiver(
    State(rx): State<Received>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    rx.0.lock().unwrap().push((path.clone(), headers, body));
    match path.as_str() {
        "/ok" => StatusCode::NO_CONTENT.into_response(),
        "/unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "down for a bit").into_response(),
        "/busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")]).into_response(),
        "/moved" => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_receiver() -> (String, Received) {
    let rx = Received::default();
    let app = axum::Router::new()
        .fallback(any(receiver))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

fn http_target(ctx: &TargetContext, url: &str, extra: Value) -> Arc<dyn Target> {
    let mut config = json!({"url": url});
    if let (Some(c), Value::Object(e)) = (config.as_object_mut(), extra) {
        c.extend(e);
    }
    target(
        ctx,
        json!({"type": "webhook", "identifier": "hook", "config": config}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_signature_and_classification() {
    let (base, rx) = start_receiver().await;
    let ctx = ctx();
    let payload = r#"{"orderId": 7, "total": 12.5}"#;

    let signed = http_target(
        &ctx,
        &format!("{base}/ok"),
        json!({"secret": "s3cret", "method": "put", "headers": {"X-Tenant": "acme"}}),
    );
    send(&signed, payload).await.expect("2xx is delivered");
    {
        let got = rx.0.lock().unwrap();
        let (_, h, body) = got.last().unwrap();
        assert_eq!(body.as_ref(), payload.as_bytes());
        let hv = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(hv("content-type"), "application/json");
        assert_eq!(hv("x-wald-message-id"), "msg-1");
        assert_eq!(hv("idempotency-key"), "msg-1");
        assert_eq!(hv("x-wald-namespace"), "orders");
        assert_eq!(hv("x-wald-attempt"), "2");
        assert_eq!(hv("x-tenant"), "acme");
        let ts: u64 = hv("x-wald-timestamp").parse().expect("unix seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.abs_diff(now) < 60);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(hv("x-wald-signature"), expected);
    }

    let unsigned = http_target(&ctx, &format!("{base}/ok"), json!({}));
    send(&unsigned, payload).await.unwrap();
    assert!(rx
        .0
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .1
        .get("x-wald-signature")
        .is_none());

    let e = send(
        &http_target(&ctx, &format!("{base}/unavailable"), json!({})),
        payload,
    )
    .await
    .unwrap_err();
    assert!(e.retryable && e.class == ErrorClass::Server, "{e:?}");
    // The status only: the receiver's body never reaches the attempt's error.
    assert!(
        e.message.contains("503") && !e.message.contains("down for a bit"),
        "{e}"
    );

    let e = send(
        &http_target(&ctx, &format!("{base}/busy"), json!({})),
        payload,
    )
    .await
    .unwrap_err();
    assert!(
        e.retryable && e.class == ErrorClass::TooManyRequests,
        "{e:?}"
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));

    let e = send(
        &http_target(&ctx, &format!("{base}/missing"), json!({})),
        payload,
    )
    .await
    .unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::Client, "{e:?}");

    let e = send(
        &http_target(&ctx, &format!("{base}/moved"), json!({})),
        payload,
    )
    .await
    .unwrap_err();
    assert!(
        !e.retryable && e.message.contains("redirects are not followed"),
        "{e:?}"
    );

    let hang = http_target(&ctx, &format!("{base}/hang"), json!({"timeoutMs": 300}));
    let t0 = Instant::now();
    let e = send(&hang, payload).await.unwrap_err();
    let took = t0.elapsed();
    assert!(e.retryable && e.class == ErrorClass::Timeout, "{e:?}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let closed = servers::free_port();
    let e = send(
        &http_target(&ctx, &format!("http://127.0.0.1:{closed}/x"), json!({})),
        payload,
    )
    .await
    .unwrap_err();
    assert!(e.retryable && e.class == ErrorClass::Connection, "{e:?}");
}

#[test]
fn unsupported_and_invalid_targets_are_refused_naming_the_field() {
    let ctx = ctx();
    let err = |v: Value| {
        let cfg: TargetConfig = serde_json::from_value(v).unwrap();
        build(&cfg, &ctx).unwrap_err()
    };
    let https: TargetConfig = serde_json::from_value(json!({"type": "webhook", "identifier": "h",
        "config": {"url": "https://example.com/hook"}}))
    .unwrap();
    assert!(build(&https, &ctx).is_ok(), "https targets build (TLS)");
    let e = err(json!({"type": "http_service", "identifier": "h", "config": {"url": "ftp://x"}}));
    assert_eq!(e[0].field, "config.url");
    let e = err(json!({"type": "grpc_service", "identifier": "g", "config": {}}));
    assert_eq!(e[0].field, "type");
    assert!(e[0].message.contains("not supported by this build"));
    let e = err(json!({"type": "queue", "identifier": "q", "config": {}}));
    assert_eq!(e[0].field, "type");
    let e = err(json!({"type": "cache", "identifier": "c",
        "config": {"type": "memcached", "host": "h", "port": 1}}));
    assert_eq!(e[0].field, "config.type");
    let e = err(
        json!({"type": "database", "identifier": "d", "config": {"type": "mysql",
        "host": "h", "port": 1, "database": "d", "table": "t"}}),
    );
    assert_eq!(e[0].field, "config.type");
    let e = err(
        json!({"type": "database", "identifier": "d", "config": {"type": "postgresql",
        "host": "h", "port": 1, "database": "d", "table": "t; drop"}}),
    );
    assert_eq!(e[0].field, "config.table");
    let e = err(
        json!({"type": "cache", "identifier": "c", "config": {"type": "redis",
        "host": "h", "port": 1, "password": 5}}),
    );
    assert_eq!(e[0].field, "config.password");
}

// ---------------------------------------------------------------- Redis

async fn redis_client(port: u16, db: u8) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/{db}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn rcmd<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_operations_land_with_prefix_and_database() {
    let mut server = servers::RedisServer::start();
    let port = server.port;
    let ctx = ctx();
    let t = target(
        &ctx,
        json!({"type": "cache", "identifier": "rc", "config": {"type": "redis",
            "host": "127.0.0.1", "port": port, "database": 3, "keyPrefix": "app:"}}),
    );
    let mut db3 = redis_client(port, 3).await;
    let mut db0 = redis_client(port, 0).await;

    send(
        &t,
        r#"{"operation":"SET","key":"user:1","value":{"name":"Ada"}}"#,
    )
    .await
    .unwrap();
    let v: Option<String> = rcmd(&mut db3, &["GET", "app:user:1"]).await;
    assert_eq!(v.as_deref(), Some(r#"{"name":"Ada"}"#));
    let v: Option<String> = rcmd(&mut db0, &["GET", "app:user:1"]).await;
    assert_eq!(v, None, "database 3 is selected, not 0");
    let ttl: i64 = rcmd(&mut db3, &["TTL", "app:user:1"]).await;
    assert_eq!(ttl, -1, "no TTL configured");

    send(
        &t,
        r#"{"operation":"SET","key":"s","value":"plain","ttlSeconds":100}"#,
    )
    .await
    .unwrap();
    let v: Option<String> = rcmd(&mut db3, &["GET", "app:s"]).await;
    assert_eq!(v.as_deref(), Some("plain"));
    let ttl: i64 = rcmd(&mut db3, &["TTL", "app:s"]).await;
    assert!((95..=100).contains(&ttl), "{ttl}");

    send(
        &t,
        r#"{"operation":"EXPIRE","key":"user:1","ttlSeconds":50}"#,
    )
    .await
    .unwrap();
    let ttl: i64 = rcmd(&mut db3, &["TTL", "app:user:1"]).await;
    assert!((45..=50).contains(&ttl), "{ttl}");

    send(
        &t,
        r#"{"operation":"HSET","key":"h","fields":{"a":"x","b":2}}"#,
    )
    .await
    .unwrap();
    let h: std::collections::BTreeMap<String, String> = rcmd(&mut db3, &["HGETALL", "app:h"]).await;
    assert_eq!(h.get("a").map(String::as_str), Some("x"));
    assert_eq!(h.get("b").map(String::as_str), Some("2"));

    send(&t, r#"{"operation":"DEL","key":"user:1"}"#)
        .await
        .unwrap();
    let n: i64 = rcmd(&mut db3, &["EXISTS", "app:user:1"]).await;
    assert_eq!(n, 0);

    // No operation: the whole payload under its key, with the configured default TTL.
    let with_ttl = target(
        &ctx,
        json!({"type": "cache", "identifier": "rc2", "config": {"type": "redis",
            "host": "127.0.0.1", "port": port, "database": 3, "ttlSeconds": 30}}),
    );
    let whole = r#"{"key":"w","n":1}"#;
    send(&with_ttl, whole).await.unwrap();
    let v: Option<String> = rcmd(&mut db3, &["GET", "w"]).await;
    assert_eq!(v.as_deref(), Some(whole));
    let ttl: i64 = rcmd(&mut db3, &["TTL", "w"]).await;
    assert!((25..=30).contains(&ttl), "{ttl}");

    let e = send(&t, r#"{"n":1}"#).await.unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload, "{e:?}");
    assert!(e.message.contains("key"), "{e}");

    // A Redis error reply is permanent: HSET on a string key.
    let e = send(&t, r#"{"operation":"HSET","key":"s","fields":{"a":1}}"#)
        .await
        .unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::Remote, "{e:?}");

    // Redis down: retryable, for a server never seen and for one that went away.
    let closed = servers::free_port();
    let nowhere = target(
        &ctx,
        json!({"type": "cache", "identifier": "rc3", "config": {"type": "redis",
            "host": "127.0.0.1", "port": closed}}),
    );
    let e = send(&nowhere, r#"{"operation":"DEL","key":"k"}"#)
        .await
        .unwrap_err();
    assert!(e.retryable && e.class == ErrorClass::Connection, "{e:?}");
    server.stop();
    let e = send(&t, r#"{"operation":"DEL","key":"k"}"#)
        .await
        .unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(
        matches!(e.class, ErrorClass::Connection | ErrorClass::Timeout),
        "{e:?}"
    );
}

// ---------------------------------------------------------------- PostgreSQL

async fn pg_client(port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await;
        match r {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("postgres did not accept connections: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_land_and_errors_are_classified() {
    let mut server = servers::PgServer::start();
    let port = server.port;
    let db = pg_client(port).await;
    db.batch_execute(
        "CREATE TABLE events (id integer PRIMARY KEY, name text NOT NULL, n integer, meta jsonb,
           created date)",
    )
    .await
    .unwrap();
    let ctx = ctx();
    let pg = |table: &str| {
        json!({"type": "database", "identifier": "pg", "config": {"type": "postgresql",
            "host": "127.0.0.1", "port": port, "database": "postgres", "table": table,
            "user": "postgres", "timeoutMs": 5000}})
    };
    let t = target(&ctx, pg("public.events"));
    let row = |id: i32| {
        let db = &db;
        async move {
            db.query_opt(
                "SELECT name, n, meta::text, created::text FROM events WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, Option<i32>>(1),
                    r.get::<_, Option<String>>(2),
                    r.get::<_, Option<String>>(3),
                )
            })
        }
    };

    // INSERT of the whole payload (no operation, no data).
    send(
        &t,
        r#"{"id":1,"name":"a","n":1,"meta":{"x":[1,2]},"created":"2024-05-06"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        row(1).await,
        Some((
            "a".into(),
            Some(1),
            Some(r#"{"x": [1, 2]}"#.into()),
            Some("2024-05-06".into())
        ))
    );
    // Values with quotes travel as data, never as SQL.
    send(
        &t,
        r#"{"operation":"INSERT","data":{"id":2,"name":"x'); DROP TABLE events; --"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(row(2).await.unwrap().0, "x'); DROP TABLE events; --");

    // UPSERT: conflict on id updates the given columns.
    send(
        &t,
        r#"{"operation":"UPSERT","data":{"id":1,"name":"b"},"key":["id"]}"#,
    )
    .await
    .unwrap();
    assert_eq!(row(1).await.unwrap().0, "b");
    assert_eq!(row(1).await.unwrap().1, Some(1), "columns not given stay");
    send(&t, r#"{"operation":"UPSERT","data":{"id":3,"name":"c"}}"#)
        .await
        .unwrap();
    assert_eq!(row(3).await.unwrap().0, "c");

    // UPDATE by key.
    send(&t, r#"{"operation":"UPDATE","data":{"id":1,"n":5}}"#)
        .await
        .unwrap();
    assert_eq!(row(1).await.unwrap().1, Some(5));

    // DELETE by key.
    send(&t, r#"{"operation":"DELETE","data":{"id":3}}"#)
        .await
        .unwrap();
    assert_eq!(row(3).await, None);

    // A duplicate key: permanent.
    let e = send(&t, r#"{"id":1,"name":"dup"}"#).await.unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::Remote, "{e:?}");
    assert!(e.message.contains("23505"), "{e}");
    // Bad data and an unknown column: permanent bad_payload.
    let e = send(&t, r#"{"id":"not a number","name":"x"}"#)
        .await
        .unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload, "{e:?}");
    let e = send(&t, r#"{"id":9,"name":"x","nope":1}"#)
        .await
        .unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload, "{e:?}");

    // An injection-looking column name: refused before anything runs.
    let before: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let e = send(
        &t,
        r#"{"data":{"id":10,"name\") VALUES (1,'x'); DROP TABLE events; --":"x"}}"#,
    )
    .await
    .unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload, "{e:?}");
    assert!(e.message.contains("nothing was executed"), "{e}");
    let after: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);

    // A missing table: permanent.
    let missing = target(&ctx, pg("no_such_table"));
    let e = send(&missing, r#"{"id":1,"name":"a"}"#).await.unwrap_err();
    assert!(!e.retryable, "{e:?}");

    // The two targets on one server share one connection; PostgreSQL down: retryable.
    let closed = servers::free_port();
    let nowhere = target(
        &ctx,
        json!({"type": "database", "identifier": "pg2", "config": {"type": "postgresql",
            "host": "127.0.0.1", "port": closed, "database": "postgres", "table": "events"}}),
    );
    let e = send(&nowhere, r#"{"id":1,"name":"a"}"#).await.unwrap_err();
    assert!(e.retryable && e.class == ErrorClass::Connection, "{e:?}");
    drop(db);
    server.stop();
    let e = send(&t, r#"{"id":11,"name":"a"}"#).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
}

// ---------------------------------------------------------------- memory and file

#[tokio::test]
async fn memory_target_applies_cache_operations() {
    let ctx = ctx();
    let t = target(
        &ctx,
        json!({"type": "cache", "identifier": "mem", "config": {"type": "in_memory",
            "keyPrefix": "p:", "ttlSeconds": 60}}),
    );
    send(&t, r#"{"operation":"SET","key":"a","value":{"v":1}}"#)
        .await
        .unwrap();
    let mem = ctx.memory();
    assert_eq!(
        mem.get("p:a"),
        Some(CacheValue::String(r#"{"v":1}"#.into()))
    );
    let ttl = mem.ttl("p:a").flatten().expect("default TTL");
    assert!(ttl > Duration::from_secs(55) && ttl <= Duration::from_secs(60));
    send(&t, r#"{"operation":"HSET","key":"h","fields":{"f":"x"}}"#)
        .await
        .unwrap();
    assert!(matches!(mem.get("p:h"), Some(CacheValue::Hash(h)) if h["f"] == "x"));
    send(&t, r#"{"operation":"EXPIRE","key":"h","ttlSeconds":0}"#)
        .await
        .unwrap();
    assert_eq!(mem.get("p:h"), None);
    send(&t, r#"{"operation":"DEL","key":"a"}"#).await.unwrap();
    assert_eq!(mem.get("p:a"), None);
    let e = send(&t, r#"{"operation":"SET"}"#).await.unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload);
}

#[tokio::test]
async fn file_target_appends_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/out.jsonl");
    let ctx = ctx().with_file_root(Some(dir.path().to_path_buf()));
    let t = target(
        &ctx,
        json!({"type": "file_system", "identifier": "f",
            "config": {"path": "nested/deeper/out.jsonl"}}),
    );
    send(&t, r#"{"a":1}"#).await.unwrap();
    send(&t, "{\n  \"b\": \"two\\nlines\"\n}").await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        json!({"messageId":"msg-1","namespace":"orders","partition":3,"offset":42,
            "attempt":2,"payload":{"a":1}})
    );
    assert_eq!(lines[1]["payload"], json!({"b": "two\nlines"}));
    let e = send(&t, "not json").await.unwrap_err();
    assert!(!e.retryable && e.class == ErrorClass::BadPayload);

    // A path that cannot be created: retryable I/O error.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = target(
        &ctx,
        json!({"type": "file_system", "identifier": "f2",
            "config": {"path": "file/sub/out.jsonl"}}),
    );
    let e = send(&bad, r#"{"a":1}"#).await.unwrap_err();
    assert!(e.retryable && e.class == ErrorClass::Io, "{e:?}");
}

//! The trust boundary, attacked: who may call (closed by default, keys, throttling, Host and
//! Origin), and what a writer may make the server touch (only its namespace's targets; files
//! only under the operator's root). Each test is a finding of issue 11 that succeeded before.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{tempdir, Server, ADMIN};
use serde_json::{json, Value};
use wald::config::{ApiKeyConfig, Config};

const KEY: &str = "writer-key-0123456789abcdef0123456789";

/// The documented way to run it: defaults (closed), an admin key, one API key for `orders`.
fn closed(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.admin_key = Some(ADMIN.to_owned());
    c.auth.api_keys.push(ApiKeyConfig {
        id: "writer".into(),
        key: Some(KEY.into()),
        key_sha256: None,
        namespaces: vec!["orders".into()],
    });
    c
}

fn write_as(s: &Server, key: Option<&str>, body: &Value) -> common::Resp {
    let h: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    s.post_json("/api/v1/wal/write", &h, body)
}

/// One raw request with the headers given verbatim (a `Host` of our choosing).
fn raw(addr: std::net::SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_api_is_closed_by_default() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "orders"}));
    let body = json!({"namespace": "orders", "payload": {"a": 1}});
    write_as(&s, None, &body).assert_error(401, "UNAUTHORIZED");
    s.req("GET", "/api/v1/wal/namespace/orders/messages", &[], None)
        .assert_error(401, "UNAUTHORIZED");
    s.req("GET", "/api/v1/wal/namespace/orders/status", &[], None)
        .assert_error(401, "UNAUTHORIZED");
    assert_eq!(write_as(&s, Some(KEY), &body).status, 202);
    // A key is bound to its namespaces.
    s.create_namespace(json!({"name": "other"}));
    let r = write_as(
        &s,
        Some(KEY),
        &json!({"namespace": "other", "payload": {"a": 1}}),
    );
    r.assert_error(403, "FORBIDDEN");
    s.stop();
}

#[test]
fn allowed_api_keys_bind_anonymous_callers_of_an_open_server() {
    let (_d, dir) = tempdir();
    let mut c = closed(&dir);
    c.auth.open = true;
    let s = Server::start(c);
    s.create_namespace(json!({"name": "orders", "accessControl": {"allowedApiKeys": ["writer"]}}));
    s.create_namespace(json!({"name": "public"}));
    let r = write_as(
        &s,
        None,
        &json!({"namespace": "orders", "payload": {"a": 1}}),
    );
    r.assert_error(401, "UNAUTHORIZED");
    let r = write_as(
        &s,
        Some(KEY),
        &json!({"namespace": "orders", "payload": {"a": 1}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let r = write_as(
        &s,
        None,
        &json!({"namespace": "public", "payload": {"a": 1}}),
    );
    assert_eq!(r.status, 202, "open = true serves the others: {}", r.text());
    s.stop();
}

#[test]
fn failed_keys_are_throttled_per_address() {
    let (_d, dir) = tempdir();
    let mut c = closed(&dir);
    c.auth.failed_auth_per_minute = 5;
    let s = Server::start(c);
    s.create_namespace(json!({"name": "orders"}));
    let body = json!({"namespace": "orders", "payload": {"a": 1}});
    for i in 0..5 {
        let guess = format!("guess-{i}");
        write_as(&s, Some(&guess), &body).assert_error(401, "UNAUTHORIZED");
    }
    // Over the limit: refused before the key is even looked at, the right one included.
    let r = write_as(&s, Some(KEY), &body);
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let r = s.req("GET", "/api/v1/namespaces", &[("x-api-key", "nope")], None);
    r.assert_error(429, "RATE_LIMITED");
    s.stop();
}

#[test]
fn a_rebound_host_name_and_a_foreign_origin_are_refused() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    let health = |host: &str, extra: &str| {
        raw(
            s.addr,
            &format!(
                "GET /api/v1/health/liveness HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n"
            ),
        )
    };
    let evil = health("attacker.example:3000", "");
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("HOST_NOT_ALLOWED"), "{evil}");
    let ok = health(&s.addr.to_string(), "");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let ok = health("localhost", "");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let foreign = health(&s.addr.to_string(), "origin: http://attacker.example\r\n");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    assert!(foreign.contains("ORIGIN_NOT_ALLOWED"), "{foreign}");
    let same = health(
        &s.addr.to_string(),
        &format!("origin: http://{}\r\n", s.addr),
    );
    assert!(same.starts_with("HTTP/1.1 200"), "{same}");
    s.stop();

    // Named hosts are served once listed.
    let (_d2, dir2) = tempdir();
    let mut c = closed(&dir2);
    c.server.allowed_hosts = vec!["wald.internal".into()];
    let s = Server::start(c);
    let r = raw(
        s.addr,
        "GET /api/v1/health/liveness HTTP/1.1\r\nhost: wald.internal:3000\r\nconnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    s.stop();
}

#[test]
fn unknown_namespaces_never_become_metric_labels() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "orders"}));
    for i in 0..30 {
        let path = format!("/api/v1/wal/namespace/flood-{i}/status");
        let r = s.req("GET", &path, &[("x-api-key", KEY)], None);
        assert!(r.status >= 400, "{}", r.text());
        let r = s.req("GET", &path, &[], None);
        assert_eq!(r.status, 401);
    }
    let m = s.admin("GET", "/metrics", None);
    assert_eq!(m.status, 200, "{}", m.text());
    let text = m.text();
    assert!(!text.contains("flood-"), "label flood: {text}");
    s.stop();
}

#[test]
fn a_writer_cannot_name_a_target_of_its_own() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "orders", "targetConfigs": [
        {"type": "webhook", "identifier": "billing", "config": {"url": "http://billing.example/h"}}]}));
    // Another namespace's database, with its password, declared by the operator.
    s.create_namespace(json!({"name": "vault", "targetConfigs": [
        {"type": "database", "identifier": "pg", "config": {"type": "postgresql",
         "host": "127.0.0.1", "port": 5432, "database": "vault", "user": "vault",
         "password": "vault-password", "table": "t"}}]}));
    let attacks = [
        // A file anywhere the service user can write.
        json!({"type": "file_system", "identifier": "f",
               "config": {"path": format!("{}/new/dir/evil.sh", dir.display())}}),
        // The server's own admin API, cloud metadata.
        json!({"type": "webhook", "identifier": "self",
               "config": {"url": format!("http://{}/api/v1/namespaces", s.addr)}}),
        json!({"type": "http_service", "identifier": "meta",
               "config": {"url": "http://169.254.169.254/latest/meta-data/"}}),
        // Someone else's database session.
        json!({"type": "database", "identifier": "pg", "config": {"type": "postgresql",
               "host": "127.0.0.1", "port": 5432, "database": "vault", "user": "vault", "table": "t"}}),
    ];
    for target in attacks {
        let r = write_as(
            &s,
            Some(KEY),
            &json!({"namespace": "orders", "payload": {"a": 1}, "target": target}),
        );
        let body = r.assert_error(400, "VALIDATION_ERROR").to_string();
        // Refused as a whole (an absolute path already by its shape), never built.
        assert!(
            body.contains("adHocTargets") || body.contains("target.config.path"),
            "{body}"
        );
    }
    // By identifier: only the writer's own namespace's targets.
    let r = write_as(
        &s,
        Some(KEY),
        &json!({"namespace": "orders", "payload": {"a": 1}, "target": "pg"}),
    );
    let body = r.assert_error(400, "VALIDATION_ERROR");
    assert!(
        body.to_string().contains("declares no target `pg`"),
        "{body}"
    );
    let r = write_as(
        &s,
        Some(KEY),
        &json!({"namespace": "orders", "payload": {"a": 1}, "target": "billing"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    // Nothing was appended by the refused writes: the one accepted is offset 0.
    assert_eq!(r.json()["offset"], 0, "{}", r.text());
    assert!(!dir.join("new").exists(), "no directory was created");

    // Where the operator opts in, a message may bring HTTP targets — never others.
    s.create_namespace(json!({"name": "hooks", "adHocTargets": true}));
    let file = json!({"type": "file_system", "identifier": "f", "config": {"path": "x.jsonl"}});
    let r = s.post_json(
        "/api/v1/wal/write",
        &[("x-api-key", ADMIN)],
        &json!({"namespace": "hooks", "payload": {"a": 1}, "target": file}),
    );
    let body = r.assert_error(400, "VALIDATION_ERROR");
    assert!(body.to_string().contains("file_system"), "{body}");
    s.stop();
}

#[test]
fn file_targets_stay_under_the_operators_root() {
    let (_d, dir) = tempdir();
    let data = dir.join("data");
    let root = dir.join("files");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // Without a root, no file target at all.
    let s = Server::start(closed(&data));
    let file = |path: &str| {
        json!({"name": "f", "targetConfigs": [
            {"type": "file_system", "identifier": "out", "config": {"path": path}}]})
    };
    let r = s.admin("POST", "/api/v1/namespaces", Some(&file("out.jsonl")));
    let body = r.assert_error(400, "VALIDATION_ERROR");
    assert!(body.to_string().contains("file_root"), "{body}");
    s.stop();

    // The root may not hold the data directory (a target could overwrite the log).
    let mut c = closed(&data);
    c.delivery.file_root = Some(dir.clone());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("delivery.file_root"), "{e}");

    let mut c = closed(&data);
    c.delivery.file_root = Some(root.clone());
    let s = Server::start(c);
    for bad in ["/etc/wald-evil", "../outside/evil", "a/../../outside/evil"] {
        let r = s.admin("POST", "/api/v1/namespaces", Some(&file(bad)));
        let body = r.assert_error(400, "VALIDATION_ERROR");
        assert!(
            body.to_string().contains("targetConfigs[0].config.path"),
            "{bad}: {body}"
        );
    }
    // A symbolic link inside the root pointing out of it is not followed.
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    s.create_namespace(json!({"name": "f",
        "retryPolicy": {"maxAttempts": 1, "initialDelayMs": 100, "jitterMs": 0},
        "targetConfigs": [
            {"type": "file_system", "identifier": "out", "config": {"path": "ok/out.jsonl"}},
            {"type": "file_system", "identifier": "esc", "config": {"path": "link/evil.sh"}}]}));
    let r = write_as(
        &s,
        Some(ADMIN),
        &json!({"namespace": "f", "payload": {"a": 1}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["messageId"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = s
            .admin("GET", &format!("/api/v1/wal/messages/{id}"), None)
            .json();
        let done = m["targets"].as_array().is_some_and(|t| {
            t.len() == 2
                && t.iter()
                    .all(|t| t["status"] != "pending" && t["status"] != "retrying")
        });
        if done || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = |idf: &str| {
        m["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["identifier"] == idf))
            .map(|t| t["status"].clone())
    };
    assert_eq!(status("out"), Some(json!("delivered")), "{m:#}");
    assert_ne!(status("esc"), Some(json!("delivered")), "{m:#}");
    assert!(root.join("ok/out.jsonl").is_file());
    assert!(
        !outside.join("evil.sh").exists(),
        "escaped the root via a link"
    );
    s.stop();
}

#[test]
fn distinct_ad_hoc_targets_cannot_grow_the_adapter_cache() {
    let (_d, dir) = tempdir();
    let mut c = closed(&dir);
    c.delivery.enabled = false;
    let s = Server::start(c);
    s.create_namespace(json!({"name": "orders", "adHocTargets": true}));
    s.create_namespace(json!({"name": "closed"}));
    // Refused targets (no opt-in) build nothing.
    for i in 0..50 {
        let t = json!({"type": "webhook", "identifier": "w",
            "config": {"url": format!("http://h{i}.example/")}});
        let r = write_as(
            &s,
            Some(ADMIN),
            &json!({"namespace": "closed", "payload": {"a": 1}, "target": t}),
        );
        assert_eq!(r.status, 400);
    }
    assert_eq!(s.app.delivery.cached_adapters(), 0);
    // Accepted ones are bounded, and a config over 16 KiB is refused.
    for i in 0..1_100 {
        let t = json!({"type": "webhook", "identifier": "w",
            "config": {"url": format!("http://h{i}.example/")}});
        let r = write_as(
            &s,
            Some(ADMIN),
            &json!({"namespace": "orders", "payload": {"a": 1}, "target": t}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(s.app.delivery.cached_adapters() <= 1_024);
    let big = json!({"type": "webhook", "identifier": "w",
        "config": {"url": "http://h.example/", "headers": {"x-pad": "p".repeat(20_000)}}});
    let r = write_as(
        &s,
        Some(ADMIN),
        &json!({"namespace": "orders", "payload": {"a": 1}, "target": big}),
    );
    let body = r.assert_error(400, "VALIDATION_ERROR");
    assert!(body.to_string().contains("target.config"), "{body}");
    s.stop();
}

#[test]
fn a_mirror_to_a_refused_address_does_not_connect() {
    // A listener standing in for an internal Redis: the mirror must never connect to it.
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    internal.set_nonblocking(true).unwrap();
    let port = internal.local_addr().unwrap().port();
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "m", "mirrors": [{"backend": "redis_streams",
        "backendConfig": {"url": format!("redis://127.0.0.1:{port}")}}]}));
    let r = write_as(
        &s,
        Some(ADMIN),
        &json!({"namespace": "m", "payload": {"a": 1}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let error = loop {
        let ready = s.admin("GET", "/api/v1/health/readiness", None).json();
        let e = ready["mirrors"][0]["lastError"].as_str().map(str::to_owned);
        if let Some(e) = e.filter(|e| !e.is_empty()) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mirror error: {ready}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(error.contains("egress denied"), "{error}");
    assert!(
        internal.accept().is_err(),
        "the mirror connected to a refused address"
    );
    s.stop();
}

#[test]
fn a_batch_is_authorized_per_message_namespace() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({ "name": "orders" }));
    s.create_namespace(json!({ "name": "payroll" }));
    let body = json!({ "messages": [
        { "namespace": "orders", "payload": { "a": 1 } },
        { "namespace": "payroll", "payload": { "a": 2 } }
    ] });
    // Without a key: 401; with the orders-only key: 403 naming the payroll message.
    s.post_json("/api/v1/wal/write/batch", &[], &body)
        .assert_error(401, "UNAUTHORIZED");
    let j = s
        .post_json("/api/v1/wal/write/batch", &[("x-api-key", KEY)], &body)
        .assert_error(403, "FORBIDDEN");
    assert_eq!(j["error"]["details"]["index"], 1, "{j}");
    // Nothing was appended to either.
    for ns in ["orders", "payroll"] {
        let st = s
            .admin("GET", &format!("/api/v1/wal/namespace/{ns}/status"), None)
            .json();
        assert_eq!(st["partitions"][0]["nextOffset"], 0, "{ns}: {st}");
    }
    let ok = json!({ "messages": [{ "namespace": "orders", "payload": { "a": 1 } }] });
    let r = s.post_json("/api/v1/wal/write/batch", &[("x-api-key", KEY)], &ok);
    assert_eq!(r.status, 202, "{}", r.text());
}

fn walk_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn keys_created_at_run_time_work_at_once_are_revoked_at_once_and_survive_restart() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "orders"}));
    s.create_namespace(json!({"name": "other"}));
    let body = json!({"namespace": "orders", "payload": {"a": 1}});

    // Only the admin key manages keys.
    let create = json!({"id": "billing", "namespaces": ["orders"]});
    s.post_json("/api/v1/keys", &[("x-api-key", KEY)], &create)
        .assert_error(403, "FORBIDDEN");
    s.post_json("/api/v1/keys", &[], &create)
        .assert_error(401, "UNAUTHORIZED");
    let r = s.admin("POST", "/api/v1/keys", Some(&create));
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    let secret = made["key"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 64, "{secret}");
    assert_eq!(made["namespaces"], json!(["orders"]));
    assert_eq!(made["source"], "runtime");

    // Usable at once, bound to its namespaces.
    assert_eq!(write_as(&s, Some(&secret), &body).status, 202);
    write_as(
        &s,
        Some(&secret),
        &json!({"namespace": "other", "payload": {"a": 1}}),
    )
    .assert_error(403, "FORBIDDEN");

    // Listed without its secret; the config file's key listed as read-only.
    let list = s.admin("GET", "/api/v1/keys", None);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains(&secret), "{}", list.text());
    assert!(!list.text().contains(KEY), "{}", list.text());
    let keys = list.json()["keys"].as_array().unwrap().clone();
    let by_id = |id: &str| keys.iter().find(|k| k["id"] == id).cloned().unwrap();
    assert_eq!(by_id("writer")["source"], "config");
    assert_eq!(by_id("billing")["source"], "runtime");

    // Bad input, taken ids, read-only keys.
    s.admin(
        "POST",
        "/api/v1/keys",
        Some(&json!({"id": "no spaces", "namespaces": ["orders"]})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/keys",
        Some(&json!({"id": "x", "namespaces": []})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin(
        "POST",
        "/api/v1/keys",
        Some(&json!({"id": "x", "namespaces": ["o"], "key": "mine"})),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.admin("POST", "/api/v1/keys", Some(&create))
        .assert_error(409, "CONFLICT");
    s.admin(
        "POST",
        "/api/v1/keys",
        Some(&json!({"id": "writer", "namespaces": ["orders"]})),
    )
    .assert_error(409, "CONFLICT");
    s.admin("DELETE", "/api/v1/keys/writer", None)
        .assert_error(409, "CONFLICT");

    // The secret is nowhere on disk (only its SHA-256 is kept).
    s.app.state.flush().unwrap();
    let mut files = Vec::new();
    walk_files(&dir, &mut files);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is stored in {}",
            f.display()
        );
    }

    // Survives a restart.
    s.stop();
    let s = Server::start(closed(&dir));
    assert_eq!(write_as(&s, Some(&secret), &body).status, 202);

    // Revoked: refused on its next request, and after a restart too.
    let r = s.admin("DELETE", "/api/v1/keys/billing", None);
    assert_eq!(r.status, 200, "{}", r.text());
    write_as(&s, Some(&secret), &body).assert_error(401, "UNAUTHORIZED");
    s.admin("DELETE", "/api/v1/keys/billing", None)
        .assert_error(404, "API_KEY_NOT_FOUND");
    s.stop();
    let s = Server::start(closed(&dir));
    write_as(&s, Some(&secret), &body).assert_error(401, "UNAUTHORIZED");
    assert_eq!(write_as(&s, Some(KEY), &body).status, 202);
    s.stop();
}

#[test]
fn without_limits_set_a_burst_is_not_rate_limited() {
    let (_d, dir) = tempdir();
    let s = Server::start(closed(&dir));
    s.create_namespace(json!({"name": "orders"}));
    let body = json!({"namespace": "orders", "payload": {"a": 1}});
    // More than the old default burst (100) at once: no limit unless one is set.
    for _ in 0..150 {
        assert_eq!(write_as(&s, Some(KEY), &body).status, 202);
    }
    s.stop();
}

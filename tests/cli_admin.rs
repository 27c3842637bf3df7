//! The operator's CLI against a real `wald serve`: namespaces, keys, writes, reads, tail,
//! the DLQ, status, completions and config — with the exit codes scripts rely on.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const ADMIN: &str = "cli-admin-key-0123456789abcdef0123456789";

/// A `wald serve` child, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, config: Option<&Path>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wald"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("WALD_ADMIN_KEY", ADMIN)
        .env("RUST_LOG", "warn")
        .env_remove("WALD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd.spawn().expect("spawn wald serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("wald serve exited").expect("line");
        if let Some(r) = line.strip_prefix("wald listening on http://") {
            break r.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server {
        child,
        url: format!("http://{addr}"),
    }
}

/// Runs `wald ARGS` against `url` with the admin key (unless `key` replaces it).
fn wald(url: &str, key: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wald"));
    cmd.args(args)
        .env("WALD_URL", url)
        .env("WALD_ADMIN_KEY", key.unwrap_or(ADMIN))
        .env_remove("WALD_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wald");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wald")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("{e}: {}", ok(o)))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn namespaces_writes_reads_and_tail_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), None);
    let u = s.url.as_str();

    // Namespaces.
    let created = json(&wald(
        u,
        None,
        &["ns", "create", "orders", "--partitions", "2", "-o", "json"],
        None,
    ));
    assert_eq!(created["name"], "orders");
    assert_eq!(created["shardConfig"]["partitionCount"], 2);
    let table = ok(&wald(u, None, &["ns", "list"], None));
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("orders"), "{table}");
    assert_eq!(
        json(&wald(u, None, &["ns", "get", "orders", "-o", "json"], None))["name"],
        "orders"
    );
    assert_eq!(
        code(&wald(u, None, &["ns", "create", "orders"], None)),
        6,
        "exists: conflict"
    );
    assert_eq!(
        code(&wald(u, None, &["ns", "get", "nope"], None)),
        5,
        "not found"
    );
    assert_eq!(
        code(&wald(u, None, &["ns", "create", "Bad Name!"], None)),
        7,
        "refused input"
    );

    // One write (payload as an argument) and one from stdin; read back by id.
    let w = json(&wald(
        u,
        None,
        &[
            "write",
            "orders",
            r#"{"n":1}"#,
            "--partition-key",
            "a",
            "-o",
            "json",
        ],
        None,
    ));
    assert_eq!(w["durable"], "true");
    let id = w["messageId"].as_str().unwrap().to_owned();
    let got = json(&wald(u, None, &["msg", "get", &id, "-o", "json"], None));
    assert_eq!(got["payload"], serde_json::json!({"n": 1}));
    let w2 = json(&wald(
        u,
        None,
        &["write", "orders", "--partition-key", "a", "-o", "json"],
        Some(r#"{"n":2}"#),
    ));
    assert_eq!(w2["partition"], w["partition"]);
    assert_eq!(code(&wald(u, None, &["msg", "get", "wal_0_nope"], None)), 5);
    assert_eq!(
        code(&wald(u, None, &["write", "orders", "not json"], None)),
        7
    );

    // A batch from JSON lines, in order on one partition key.
    let lines: String = (3..=12).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let file = dir.path().join("batch.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let b = json(&wald(
        u,
        None,
        &[
            "write",
            "orders",
            "--batch",
            file.to_str().unwrap(),
            "--partition-key",
            "a",
            "-o",
            "json",
        ],
        None,
    ));
    assert_eq!(b["results"].as_array().unwrap().len(), 10);

    // Tail the partition from offset 0: every message of key "a", in order.
    let p = w["partition"].to_string();
    let tail = ok(&wald(
        u,
        None,
        &[
            "tail",
            "orders",
            "--partition",
            &p,
            "--from-offset",
            "0",
            "-o",
            "json",
        ],
        None,
    ));
    let ns: Vec<i64> = tail
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, (1..=12).collect::<Vec<_>>());

    // The DLQ of a namespace without failures; status.
    let dlq = json(&wald(
        u,
        None,
        &["dlq", "list", "orders", "-o", "json"],
        None,
    ));
    assert_eq!(dlq["entries"].as_array().unwrap().len(), 0);
    assert_eq!(
        code(&wald(
            u,
            None,
            &["dlq", "get", "orders", "wal_0_nope"],
            None
        )),
        5
    );
    let st = json(&wald(u, None, &["status", "-o", "json"], None));
    assert_eq!(st["ready"], true);

    // Delete asks for --yes.
    assert_eq!(code(&wald(u, None, &["ns", "delete", "orders"], None)), 7);
    ok(&wald(u, None, &["ns", "delete", "orders", "--yes"], None));
    assert_eq!(code(&wald(u, None, &["ns", "get", "orders"], None)), 5);
}

#[test]
fn keys_created_from_the_terminal_work_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), None);
    let u = s.url.as_str();
    ok(&wald(u, None, &["ns", "create", "orders"], None));
    let made = wald(
        u,
        None,
        &["keys", "create", "billing", "--namespace", "orders"],
        None,
    );
    let secret = ok(&made).trim().to_owned();
    assert!(secret.starts_with("wald_"), "{secret}");
    assert!(String::from_utf8_lossy(&made.stderr).contains("not shown again"));
    let list = ok(&wald(u, None, &["keys", "list"], None));
    assert!(
        list.contains("billing") && !list.contains(&secret),
        "{list}"
    );

    // The key writes to its namespace, with --key (or WALD_API_KEY).
    let w = wald(
        u,
        None,
        &["write", "orders", r#"{"a":1}"#, "--key", &secret],
        None,
    );
    ok(&w);
    ok(&wald(u, None, &["ns", "create", "other"], None));
    assert_eq!(
        code(&wald(
            u,
            None,
            &["write", "other", r#"{"a":1}"#, "--key", &secret],
            None
        )),
        4
    );
    assert_eq!(
        code(&wald(u, None, &["ns", "list", "--key", &secret], None)),
        4,
        "not admin"
    );

    ok(&wald(u, None, &["keys", "revoke", "billing"], None));
    assert_eq!(
        code(&wald(
            u,
            None,
            &["write", "orders", r#"{"a":1}"#, "--key", &secret],
            None
        )),
        4
    );
    assert_eq!(
        code(&wald(u, None, &["keys", "revoke", "billing"], None)),
        5
    );
    // A wrong admin key.
    assert_eq!(
        code(&wald(
            u,
            Some("wrong-key-0123456789abcdef0123456789"),
            &["ns", "list"],
            None
        )),
        4
    );
}

#[test]
fn unreachable_servers_usage_completions_and_config() {
    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(code(&wald(&url, None, &["status"], None)), 3);
    assert_eq!(
        code(&wald(&url, None, &["ns", "list", "--timeout", "2"], None)),
        3
    );
    assert_eq!(code(&wald("ftp://x", None, &["ns", "list"], None)), 1);
    assert_eq!(
        code(&wald(&url, None, &["ns", "frobnicate"], None)),
        2,
        "usage"
    );

    let bash = ok(&wald(&url, None, &["completions", "bash"], None));
    assert!(bash.contains("_wald") && bash.contains("tail"), "{bash}");
    ok(&wald(&url, None, &["completions", "zsh"], None));
    ok(&wald(&url, None, &["completions", "fish"], None));

    // config check / print: valid, invalid naming the key, secrets never printed.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        r#"
[auth]
admin_key = "admin-secret-value-0123456789abcdef012345"
[[auth.api_keys]]
id = "writer"
key = "api-secret-value-0123456789abcdef"
namespaces = ["orders"]
[[namespaces]]
name = "orders"
[[namespaces.targetConfigs]]
type = "webhook"
identifier = "hook"
config = { url = "https://hooks.example/x", secret = "webhook-secret-value", headers = { Authorization = "Bearer header-secret-value" } }
"#,
    )
    .unwrap();
    let checked = wald(
        &url,
        None,
        &["config", "check", good.to_str().unwrap()],
        None,
    );
    assert_eq!(ok(&checked).trim(), "ok");
    let printed = ok(&wald(
        &url,
        None,
        &["config", "print", good.to_str().unwrap()],
        None,
    ));
    assert!(
        printed.contains("hooks.example") && printed.contains("writer"),
        "{printed}"
    );
    for secret in [
        "admin-secret-value",
        "api-secret-value",
        "webhook-secret-value",
        "header-secret-value",
        ADMIN,
    ] {
        assert!(
            !printed.contains(secret),
            "config print shows {secret}:\n{printed}"
        );
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nsegment_bytes = 1\n").unwrap();
    let refused = wald(
        &url,
        None,
        &["config", "check", bad.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&refused), 7);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("storage.segment_bytes"));
}

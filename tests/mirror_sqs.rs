//! The SQS mirror against moto's server mode (an SQS-compatible server, PyPI `moto[server]`,
//! started here on 127.0.0.1; `./scripts/test.sh` installs it and sets `WALD_MOTO_SERVER`):
//!
//! - messages written over HTTP arrive in a FIFO queue in order, with their ids;
//! - with several `SendMessageBatch` calls in flight (`concurrency`), each FIFO group
//!   (partition key) still arrives in order;
//! - the server paused (SIGSTOP) mid-load and resumed: intake goes on, every acknowledged
//!   message arrives, and the lag returns to 0 (moto keeps queues in memory, so it is paused
//!   rather than restarted);
//! - `ack = "mirror"`: "unknown" while the server is paused, "true" when it answers;
//! - a record larger than `maxRecordBytes` is refused for good and skipped;
//! - SIGKILL of `wald serve` mid-mirroring loses nothing (FIFO queue, order kept).
#![cfg(feature = "mirror-sqs")]

mod common;
#[path = "common/servers.rs"]
mod servers;

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use common::{request, Server};
use serde_json::{json, Value};

/// A running `moto_server`.
struct Moto {
    port: u16,
    child: Child,
}

impl Moto {
    fn start() -> Self {
        let bin = std::env::var_os("WALD_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let t = std::env::var_os("CARGO_TARGET_DIR")
                    .map(std::path::PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .map(|h| std::path::Path::new(&h).join(".cache/wald-target"))
                    })?;
                Some(t.join("pyenv/bin/moto_server"))
            })
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "moto_server not found: run ./scripts/test.sh (it installs moto[server] into \
                     $CARGO_TARGET_DIR/pyenv and sets WALD_MOTO_SERVER), or set WALD_MOTO_SERVER"
                )
            });
        let port = servers::free_port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "moto_server exited");
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(moto: &Moto) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.url())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

fn create_queue(moto: &Moto, name: &str) -> String {
    let c = client(moto);
    rt().block_on(async {
        let mut req = c.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        req.send().await.unwrap().queue_url().unwrap().to_owned()
    })
}

/// Receives (and deletes) until `done` holds: (id attribute, body), in order of receipt.
fn receive(
    moto: &Moto,
    url: &str,
    secs: u64,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let c = client(moto);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    rt().block_on(async {
        while !done(&got) {
            assert!(
                Instant::now() < deadline,
                "queue: condition not met in {secs} s; got {}",
                got.len()
            );
            let out = c
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                let id = m
                    .message_attributes()
                    .and_then(|a| a.get("id"))
                    .and_then(|v| v.string_value())
                    .unwrap_or_default()
                    .to_owned();
                got.push((id, m.body().unwrap_or_default().to_owned()));
                // A FIFO queue holds a group's next messages until this one is deleted.
                if let Some(h) = m.receipt_handle() {
                    c.delete_message()
                        .queue_url(url)
                        .receipt_handle(h)
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    });
    got
}

fn covers(acked: &[String]) -> impl Fn(&[(String, String)]) -> bool + '_ {
    move |got| {
        let have: HashSet<&str> = got.iter().map(|g| g.0.as_str()).collect();
        acked.iter().all(|a| have.contains(a.as_str()))
    }
}

fn sqs_ns(name: &str, moto: &Moto, extra: &Value) -> Value {
    let mut cfg = json!({"endpointUrl": moto.url(), "accessKeyId": "test", "secretAccessKey": "test", "timeoutMs": 1000});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    json!({"name": name, "backend": "sqs", "backendConfig": cfg, "accessControl": common::no_rate_limits()})
}

/// moto with a queue (its URL), and a server on a fresh data directory.
struct Setup {
    s: Server,
    url: String,
    _dir: tempfile::TempDir,
    moto: Moto,
}

impl Setup {
    /// The queue `queue`, the server's configuration changed by `tune`.
    fn start(queue: &str, tune: impl FnOnce(&mut wald::config::Config)) -> Self {
        let moto = Moto::start();
        let url = create_queue(&moto, queue);
        let (_dir, dir) = common::tempdir();
        let mut cfg = common::config(&dir);
        tune(&mut cfg);
        let s = Server::start(cfg);
        Self { s, url, _dir, moto }
    }
}

/// POSTs `body` to `/api/v1/wal/write`.
fn post_write(addr: std::net::SocketAddr, body: &Value) -> common::Resp {
    request(
        addr,
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// The `messageId` of a write answered `durable: "true"`.
fn durable_id(r: &common::Resp) -> String {
    assert_eq!(r.json()["durable"], "true", "{}", r.text());
    r.json()["messageId"].as_str().unwrap().to_owned()
}

#[test]
fn messages_arrive_in_a_fifo_queue_in_order_with_their_ids() {
    let Setup { moto, url, _dir, s } = Setup::start("orders.fifo", |_| {});
    s.create_namespace(sqs_ns(
        "orders",
        &moto,
        &json!({"queueName": "orders.fifo"}),
    ));
    let acked: Vec<String> = (0..45)
        .map(|n| durable_id(&common::write_n(s.addr, "orders", n, None)))
        .collect();
    let st = common::wait_caught_up(s.addr, "orders", 30);
    assert_eq!(st["mirrors"][0]["backend"], "sqs");
    let got = receive(&moto, &url, 30, covers(&acked));
    let ids: Vec<String> = got.iter().map(|g| g.0.clone()).collect();
    assert_eq!(ids, acked);
    for (n, (_, body)) in got.iter().enumerate() {
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({"n": n})
        );
    }
    s.stop();
}

#[test]
fn fifo_groups_keep_their_order_with_concurrent_calls() {
    let Setup { moto, url, _dir, s } = Setup::start("groups.fifo", |_| {});
    // The messages are written before the mirror exists, so it starts on a backlog and
    // publishes full batches (3 calls of 3 records in flight, over 5 groups): each publish
    // spans several lanes, and lanes of several chunks.
    let mut spec = sqs_ns(
        "groups",
        &moto,
        &json!({"queueUrl": url, "batchSize": 3, "concurrency": 3}),
    );
    spec["shardConfig"] = json!({"partitionCount": 1});
    let mut plain = spec.clone();
    let obj = plain.as_object_mut().unwrap();
    obj.remove("backend");
    obj.remove("backendConfig");
    s.create_namespace(plain);
    let acked: Vec<String> = (0..60u64)
        .map(|n| {
            let key = format!("k{}", n % 5);
            let body = json!({"namespace": "groups", "partitionKey": key, "payload": {"n": n}});
            durable_id(&post_write(s.addr, &body))
        })
        .collect();
    let r = s.admin("PUT", "/api/v1/namespaces/groups", Some(&spec));
    assert_eq!(r.status, 200, "{}", r.text());
    common::wait_caught_up(s.addr, "groups", 30);
    let got = receive(&moto, &url, 30, covers(&acked));
    assert_eq!(got.len(), acked.len(), "no duplicates expected");
    // Per group (n % 5), the payloads arrive in write order.
    let mut last: [Option<u64>; 5] = [None; 5];
    for (_, body) in &got {
        let n = serde_json::from_str::<Value>(body).unwrap()["n"]
            .as_u64()
            .unwrap();
        let g = (n % 5) as usize;
        assert!(
            last[g].is_none_or(|l| l < n),
            "group k{g}: {n} after {:?}",
            last[g]
        );
        last[g] = Some(n);
    }
    s.stop();
}

#[test]
fn server_paused_mid_load_then_every_acknowledged_message_arrives() {
    let Setup { moto, url, _dir, s } = Setup::start("load", |_| {});
    s.create_namespace(sqs_ns("load", &moto, &json!({"queueUrl": url})));
    let mut acked = Vec::new();
    let mut n = 0;
    let mut burst = |acked: &mut Vec<String>, count: u64| {
        for _ in 0..count {
            let t = Instant::now();
            let id = durable_id(&common::write_n(s.addr, "load", n, None));
            n += 1;
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "intake waited {:?}",
                t.elapsed()
            );
            acked.push(id);
        }
    };
    burst(&mut acked, 30);
    moto.signal("STOP");
    burst(&mut acked, 30);
    std::thread::sleep(Duration::from_millis(2500));
    let st = request(
        s.addr,
        "GET",
        "/api/v1/wal/namespace/load/status",
        &[],
        None,
    )
    .json();
    assert_eq!(st["mirrors"][0]["healthy"], false, "{st:#}");
    assert!(
        st["mirrors"][0]["lagRecords"].as_u64().unwrap() > 0,
        "{st:#}"
    );
    moto.signal("CONT");
    burst(&mut acked, 30);
    common::wait_caught_up(s.addr, "load", 60);
    receive(&moto, &url, 30, covers(&acked));
    s.stop();
}

#[test]
fn ack_mirror_answers_unknown_while_the_server_is_paused() {
    let Setup { moto, url, _dir, s } =
        Setup::start("acked", |cfg| cfg.server.request_timeout_ms = 1500);
    s.create_namespace(sqs_ns(
        "acked",
        &moto,
        &json!({"queueUrl": url, "ack": "mirror", "timeoutMs": 500}),
    ));
    assert_eq!(
        common::write_n(s.addr, "acked", 1, None).json()["durable"],
        "true"
    );
    moto.signal("STOP");
    let r = common::write_n(s.addr, "acked", 2, None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["durable"], "unknown", "{}", r.text());
    moto.signal("CONT");
    common::wait_caught_up(s.addr, "acked", 60);
    assert_eq!(
        common::write_n(s.addr, "acked", 3, None).json()["durable"],
        "true"
    );
    s.stop();
}

#[test]
fn a_record_too_large_for_sqs_is_refused_and_skipped() {
    let Setup { moto, url, _dir, s } = Setup::start("big", |_| {});
    s.create_namespace(sqs_ns(
        "big",
        &moto,
        &json!({"queueUrl": url, "maxRecordBytes": 1024}),
    ));
    let small1 = common::write_n(s.addr, "big", 1, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post_write(
        s.addr,
        &json!({"namespace": "big", "payload": {"blob": "x".repeat(3000)}}),
    );
    let big = r.json()["messageId"].as_str().unwrap().to_owned();
    let small2 = common::write_n(s.addr, "big", 2, None).json()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let st = common::wait_caught_up(s.addr, "big", 30);
    assert_eq!(st["mirrors"][0]["refused"], 1, "{st:#}");
    assert!(
        st["mirrors"][0]["lastRefusal"]
            .as_str()
            .unwrap()
            .contains(&big),
        "{st:#}"
    );
    let want = [small1, small2];
    let got = receive(&moto, &url, 30, covers(&want));
    assert!(
        got.iter().all(|g| g.0 != big),
        "the refused record was not sent"
    );
    s.stop();
}

#[test]
fn sigkill_mid_mirroring_loses_nothing() {
    let moto = Moto::start();
    let url = create_queue(&moto, "crash.fifo");
    let dir = tempfile::tempdir().unwrap();
    let spawn = || common::spawn_serve(dir.path(), common::ADMIN, None);
    let (c, mut addr) = spawn();
    let mut child = common::Killed(c);
    let spec = sqs_ns("crash", &moto, &json!({"queueUrl": url}));
    let r = common::admin_post(addr, "/api/v1/namespaces", &spec);
    assert_eq!(r.status, 201, "{}", r.text());
    let mut acked = Vec::new();
    let mut n = 0;
    for _ in 0..3 {
        // moto is slow (a few hundred messages per second): a bounded load per cycle.
        for _ in 0..80 {
            acked.push(durable_id(&common::write_n(addr, "crash", n, None)));
            n += 1;
        }
        // SIGKILL, then a new process on the same data.
        drop(child);
        let (c, a) = spawn();
        (child, addr) = (common::Killed(c), a);
    }
    common::wait_caught_up(addr, "crash", 60);
    let got = receive(&moto, &url, 60, covers(&acked));
    // FIFO: in order; a re-published message is dropped by SQS's deduplication (its id).
    let mut seen = HashSet::new();
    let first: Vec<String> = got
        .into_iter()
        .filter(|g| seen.insert(g.0.clone()))
        .map(|g| g.0)
        .collect();
    assert_eq!(first, acked);
    drop(child);
}

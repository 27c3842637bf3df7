//! Delivery end to end, in process: a real HTTP receiver (axum on 127.0.0.1:0) and the real
//! server; retries with the policy's spacing, the dead-letter queue (permanent failures,
//! exhausted retries, replay, replay with an edited payload, replay that fails again,
//! discard), ordering per partition key across retries, delays (in memory and parked in the
//! due-time index, across a restart), TTL expiry, and bad target configs.

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use common::{config, tempdir, Server};
use receiver::Receiver;
use serde_json::{json, Value};

fn now_ms() -> u64 {
    wald_storage::now_ms()
}

fn webhook(id: &str, url: &str) -> Value {
    json!({ "type": "webhook", "identifier": id, "config": { "url": url, "timeoutMs": 2000 } })
}

fn policy(max_retries: u32, initial: u64, strategy: &str) -> Value {
    json!({ "maxAttempts": max_retries, "backoffStrategy": strategy, "initialDelayMs": initial,
            "maxDelayMs": 10_000, "jitterMs": 0 })
}

/// Writes a message with its own targets/lifecycle; returns its id.
fn write(s: &Server, ns: &str, payload: Value, extra: Value) -> String {
    let mut body = json!({ "namespace": ns, "payload": payload });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let r = s.post_json("/api/v1/wal/write", &[], &body);
    assert_eq!(r.status, 202, "write: {}", r.text());
    let j = r.json();
    assert_eq!(j["durable"], "true");
    j["messageId"].as_str().unwrap().to_owned()
}

fn message(s: &Server, id: &str) -> Value {
    let r = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_status(s: &Server, id: &str, status: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = message(s, id);
        if m["status"] == status {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} never reached {status}: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn dlq_entry(s: &Server, ns: &str, id: &str) -> Value {
    let r = s.admin("GET", &format!("/api/v1/namespaces/{ns}/dlq/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_dlq(s: &Server, ns: &str, id: &str, f: impl Fn(&Value) -> bool, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.admin("GET", &format!("/api/v1/namespaces/{ns}/dlq/{id}"), None);
        if r.status == 200 && f(&r.json()) {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "DLQ entry {id} never {what}: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_failing_target_is_retried_with_the_policy_backoff_then_delivered() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({
        "name": "retry",
        "retryPolicy": policy(3, 200, "exponential"),
        "targetConfigs": [webhook("hook", &rx.url("fail-first/2"))],
    }));
    // Odd spacing: the receiver must get the client's bytes, not a re-serialisation.
    let r = s.req(
        "POST",
        "/api/v1/wal/write",
        &[("content-type", "application/json")],
        Some(r#"{"namespace":"retry","payload":{ "n" :  1 }}"#),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["messageId"].as_str().unwrap().to_owned();
    let hits = rx.wait_for(15, "the third attempt", |h| {
        h.iter().any(|x| x.message_id == id && x.status == 200)
    });
    let mine: Vec<_> = hits.iter().filter(|h| h.message_id == id).collect();
    assert_eq!(mine.len(), 3, "{mine:#?}");
    assert_eq!(
        mine.iter().map(|h| h.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        mine[2].body, r#"{ "n" :  1 }"#,
        "the payload is delivered byte for byte"
    );
    // Exponential from 200 ms, no jitter: waits of 200 then 400 ms.
    let gap1 = mine[1].at_ms - mine[0].at_ms;
    let gap2 = mine[2].at_ms - mine[1].at_ms;
    assert!(
        (190..900).contains(&gap1),
        "first wait {gap1} ms, expected ~200"
    );
    assert!(
        (390..1100).contains(&gap2),
        "second wait {gap2} ms, expected ~400"
    );
    assert!(gap2 > gap1, "backoff grows: {gap1} then {gap2}");

    let m = wait_status(&s, &id, "delivered", 10);
    let t = &m["targets"][0];
    assert_eq!(t["identifier"], "hook");
    assert_eq!(t["status"], "delivered");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(t["attempts"][0]["errorClass"], "5xx");
    assert!(t["attempts"][2].get("error").is_none());
    assert_eq!(m["attempts"].as_array().unwrap().len(), 3);
    s.stop();
}

#[test]
fn failures_go_to_the_dlq_and_replay_and_discard_work() {
    let rx = Receiver::start();
    rx.shared
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "dlq", "retryPolicy": policy(2, 100, "constant"), "adHocTargets": true,
        "dlqConfig": { "maxRetries": 1, "retryBackoffMs": 50 } }),
    );

    // A permanent failure: one attempt, then the DLQ.
    let perm = write(
        &s,
        "dlq",
        json!({"k": "perm"}),
        json!({"target": webhook("p", &rx.url("perm"))}),
    );
    // A target that stays down: 1 + 2 retries, then the DLQ.
    let down = write(
        &s,
        "dlq",
        json!({"k": "down"}),
        json!({"target": webhook("d", &rx.url("down"))}),
    );
    // A payload the receiver refuses until it is corrected.
    let bad = write(
        &s,
        "dlq",
        json!({"fixed": false}),
        json!({"target": webhook("n", &rx.url("needs-fixed"))}),
    );
    // DLQ off for this one: it fails for good without an entry.
    let off = write(
        &s,
        "dlq",
        json!({"k": "off"}),
        json!({"target": webhook("p", &rx.url("perm")), "lifecycle": {"enableDLQ": false}}),
    );

    for id in [&perm, &down, &bad] {
        wait_status(&s, id, "dead_lettered", 15);
    }
    wait_status(&s, &off, "failed", 15);
    assert_eq!(
        rx.hits_of(&perm).len(),
        1,
        "a permanent error is not retried"
    );
    assert_eq!(rx.hits_of(&down).len(), 3, "max 2 retries: 3 attempts");

    let list = s.admin("GET", "/api/v1/namespaces/dlq/dlq", None);
    assert_eq!(list.status, 200, "{}", list.text());
    let ids: Vec<String> = list.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    for id in [&perm, &down, &bad] {
        assert!(ids.contains(id), "{id} listed in {ids:?}");
    }
    assert!(!ids.contains(&off), "enableDLQ false keeps it out");

    let e = dlq_entry(&s, "dlq", &down);
    assert_eq!(e["status"], "pending");
    let attempts = e["entry"]["delivery"]["targets"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 3, "every attempt's error is kept: {e:#}");
    assert!(attempts
        .iter()
        .all(|a| a["errorClass"] == "5xx" && a["error"].is_string()));
    assert_eq!(e["entry"]["message"]["payload"], json!({"k": "down"}));

    // Replay of a message that is not in the DLQ.
    let r = s.admin(
        "POST",
        "/api/v1/namespaces/dlq/dlq/wal_0_nothere/replay",
        None,
    );
    r.assert_error(404, "MESSAGE_NOT_FOUND");

    // The target is fixed: replay delivers.
    rx.shared
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/dlq/dlq/{down}/replay"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "replaying");
    wait_dlq(&s, "dlq", &down, |e| e["status"] == "replayed", "replayed");
    assert!(rx.hits_of(&down).iter().any(|h| h.status == 200));
    assert_eq!(message(&s, &down)["status"], "delivered");
    // A second replay of a resolved entry is refused.
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/dlq/dlq/{down}/replay"),
        None,
    );
    r.assert_error(409, "CONFLICT");

    // Replay with an edited payload.
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/dlq/dlq/{bad}/replay"),
        Some(&json!({"payload": {"fixed": true}})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_dlq(&s, "dlq", &bad, |e| e["status"] == "replayed", "replayed");
    let last = rx.hits_of(&bad).pop().unwrap();
    assert_eq!(
        (last.status, last.body.as_str()),
        (200, r#"{"fixed":true}"#)
    );

    // A replay that fails again goes back to the DLQ with the new attempts: nothing lost.
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/dlq/dlq/{perm}/replay"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let e = wait_dlq(
        &s,
        "dlq",
        &perm,
        |e| e["status"] == "pending" && e["replays"] == 1,
        "back to pending",
    );
    let attempts = e["entry"]["delivery"]["targets"][0]["attempts"]
        .as_array()
        .unwrap();
    assert_eq!(
        attempts.len(),
        2,
        "the first attempt and the replay's: {e:#}"
    );
    assert_eq!(e["entry"]["message"]["payload"], json!({"k": "perm"}));

    // Discard: recorded, no longer pending.
    let r = s.admin(
        "DELETE",
        &format!("/api/v1/namespaces/dlq/dlq/{perm}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "discarded");
    let list = s.admin("GET", "/api/v1/namespaces/dlq/dlq", None).json();
    assert!(
        list["entries"].as_array().unwrap().is_empty(),
        "nothing pending: {list:#}"
    );
    let all = s
        .admin("GET", "/api/v1/namespaces/dlq/dlq?status=all", None)
        .json();
    assert_eq!(all["entries"].as_array().unwrap().len(), 3);
    let r = s.admin(
        "DELETE",
        &format!("/api/v1/namespaces/dlq/dlq/{perm}"),
        None,
    );
    r.assert_error(409, "CONFLICT");

    // Bad input on the DLQ API.
    s.admin("GET", "/api/v1/namespaces/dlq/dlq?status=nope", None)
        .assert_error(400, "VALIDATION_ERROR");
    s.admin("GET", "/api/v1/namespaces/dlq/dlq?limit=0", None)
        .assert_error(400, "VALIDATION_ERROR");
    s.admin("GET", "/api/v1/namespaces/nope/dlq", None)
        .assert_error(404, "NAMESPACE_NOT_FOUND");
    s.req("GET", "/api/v1/namespaces/dlq/dlq", &[], None)
        .assert_error(401, "UNAUTHORIZED");

    let metrics = s.admin("GET", "/metrics", None).text();
    assert!(
        metrics.contains("wald_dlq_arrivals_total{namespace=\"dlq\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("wald_deliveries_total"), "{metrics}");
    s.stop();
}

/// The DLQ listing pages by (arrival time, message id): entries that arrived in the same
/// millisecond on both sides of a page boundary are each listed once. (The cursor was the
/// time alone: a page that ended inside a millisecond skipped the rest of it — found by the
/// long fault run, 12 of 59,222 entries never listed.)
#[test]
fn the_dlq_listing_pages_through_entries_of_the_same_millisecond() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(json!({ "name": "pages" }));
    let mut want = Vec::new();
    for (i, at) in [5_000u64, 5_000, 5_000, 5_001, 5_001, 6_000, 6_000]
        .iter()
        .enumerate()
    {
        let id = format!("wal_{at}_entry{i}");
        let ix = json!({"status": "pending", "dlqOffset": i, "deadLetteredAtMs": at,
            "updatedAtMs": at, "replays": 0, "reason": "test"});
        s.app
            .state
            .put_dlq("pages", &id, &serde_json::to_vec(&ix).unwrap(), true)
            .unwrap();
        want.push(id);
    }
    for limit in 1..=4 {
        let mut got: Vec<String> = Vec::new();
        let mut query = String::new();
        for _ in 0..20 {
            let r = s.admin(
                "GET",
                &format!("/api/v1/namespaces/pages/dlq?limit={limit}{query}"),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let page = r.json();
            for e in page["entries"].as_array().unwrap() {
                got.push(e["messageId"].as_str().unwrap().to_owned());
            }
            match (page["nextFrom"].as_u64(), page["nextAfter"].as_str()) {
                (Some(from), Some(after)) => query = format!("&from={from}&after={after}"),
                (None, None) => break,
                other => panic!("nextFrom and nextAfter come together: {other:?}"),
            }
        }
        assert_eq!(got, want, "limit {limit}: every entry once, in order");
    }
    let r = s.admin("GET", "/api/v1/namespaces/pages/dlq?after=", None);
    r.assert_error(400, "VALIDATION_ERROR");
}

#[test]
fn a_bulk_dlq_replay_is_a_task_with_progress() {
    let rx = Receiver::start();
    rx.shared
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "bulk", "retryPolicy": policy(0, 100, "constant"),
        "targetConfigs": [webhook("d", &rx.url("down"))] }),
    );
    let ids: Vec<String> = (0..5)
        .map(|i| write(&s, "bulk", json!({"i": i}), json!({})))
        .collect();
    for id in &ids {
        wait_status(&s, id, "dead_lettered", 15);
    }
    rx.shared
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.admin(
        "POST",
        "/api/v1/namespaces/bulk/dlq/replay",
        Some(&json!({"since": 0})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let task = r.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let t = loop {
        let t = s
            .admin("GET", &format!("/api/v1/tasks/{task}"), None)
            .json();
        if t["finished"] == true {
            break t;
        }
        assert!(Instant::now() < deadline, "task never finished: {t:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (
            t["total"].as_u64(),
            t["succeeded"].as_u64(),
            t["failed"].as_u64()
        ),
        (Some(5), Some(5), Some(0)),
        "{t:#}"
    );
    for id in &ids {
        assert!(
            rx.hits_of(id).iter().any(|h| h.status == 200),
            "{id} delivered by the replay"
        );
    }
    s.admin("GET", "/api/v1/tasks/task_0_nope", None)
        .assert_error(404, "NOT_FOUND");
    s.stop();
}

#[test]
fn one_partition_key_is_delivered_in_offset_order_across_retries() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "order", "retryPolicy": policy(5, 100, "constant"),
        "targetConfigs": [webhook("h", &rx.url("flaky3"))] }),
    );
    let n = 30u64;
    for seq in 0..n {
        write(
            &s,
            "order",
            json!({"seq": seq}),
            json!({"partitionKey": "user-1"}),
        );
    }
    let hits = rx.wait_for(30, "every message delivered", |h| {
        h.iter().filter(|x| x.status == 200).count() as u64 >= n
    });
    let seq_of = |h: &receiver::Hit| {
        serde_json::from_str::<Value>(&h.body).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let delivered: Vec<u64> = hits
        .iter()
        .filter(|h| h.status == 200)
        .map(seq_of)
        .collect();
    assert_eq!(
        delivered,
        (0..n).collect::<Vec<_>>(),
        "delivered in offset order"
    );
    // One at a time per key: no message is attempted before its predecessor was delivered.
    let attempted: Vec<u64> = hits.iter().map(seq_of).collect();
    assert!(
        attempted.windows(2).all(|w| w[0] <= w[1]),
        "attempts in order: {attempted:?}"
    );
    assert!(
        hits.iter().any(|h| h.status == 503),
        "some attempts failed and were retried"
    );
    s.stop();
}

/// Writes `n` messages of about 1 KiB in batches of 100; returns their ids in order.
fn fill(s: &Server, ns: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let msgs: Vec<Value> = (0..100.min(n - chunk * 100))
            .map(|i| json!({"namespace": ns, "payload": {"i": chunk * 100 + i, "pad": "p".repeat(1000)}}))
            .collect();
        let r = s.post_json("/api/v1/wal/write/batch", &[], &json!({ "messages": msgs }));
        assert_eq!(r.status, 202, "{}", r.text());
        for m in r.json()["results"].as_array().expect("results") {
            ids.push(m["messageId"].as_str().unwrap().to_owned());
        }
    }
    ids
}

fn log_stats(s: &Server, ns: &str) -> wald_storage::LogStats {
    s.app.namespace(ns).expect("namespace").logs[0].stats()
}

#[test]
fn retention_deletes_only_what_every_consumer_is_done_with() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.storage.segment_bytes = 64 << 10;
    cfg.storage.max_record_bytes = 32 << 10;
    cfg.storage.retention_interval_ms = 200;
    let s = Server::start(cfg);
    let retention = json!({"maxBytes": 1_048_576});
    // Consumed at once (no target): the oldest segments go, down to about 1 MiB.
    s.create_namespace(json!({ "name": "kept", "retention": retention,
        "accessControl": common::no_rate_limits() }));
    // Its first message fails and waits a minute for its retry: the consumer's committed
    // offset stays at 0, so nothing may go.
    s.create_namespace(json!({ "name": "stuck", "retention": retention,
        "accessControl": common::no_rate_limits(),
        "targetConfigs": [webhook("h", &rx.url("fail-first/1000000"))],
        "retryPolicy": { "maxAttempts": 10, "backoffStrategy": "constant",
            "initialDelayMs": 60_000, "maxDelayMs": 60_000, "jitterMs": 0 } }));
    // Its first message is parked for an hour: nothing may go either.
    s.create_namespace(json!({ "name": "delayed", "retention": retention,
        "targetConfigs": [webhook("h", &rx.url("ok"))],
        "accessControl": common::no_rate_limits() }));
    let parked = write(
        &s,
        "delayed",
        json!({"d": "later"}),
        json!({"lifecycle": {"delay": 3600, "delayUnit": "seconds"}}),
    );
    let kept = fill(&s, "kept", 2000);
    let stuck = fill(&s, "stuck", 2000);
    fill(&s, "delayed", 2000);

    let deadline = Instant::now() + Duration::from_secs(30);
    while log_stats(&s, "kept").bytes > (1 << 20) + (64 << 10) {
        assert!(
            Instant::now() < deadline,
            "retention never shrank the log: {:?}",
            log_stats(&s, "kept")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = log_stats(&s, "kept");
    assert!(st.first_offset > 0 && st.next_offset == 2000, "{st:?}");
    // The deleted messages are forgotten by id; the kept ones are readable.
    let r = s.req(
        "GET",
        &format!("/api/v1/wal/messages/{}", kept[0]),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let last = message(&s, &kept[1999]);
    assert_eq!(last["payload"]["i"], 1999);
    let metrics = s.admin("GET", "/metrics", None).text();
    assert!(
        metrics.contains("wald_retention_deleted_segments_total{namespace=\"kept\"}"),
        "{metrics}"
    );

    // A few more passes: the stuck and the delayed namespaces keep everything.
    std::thread::sleep(Duration::from_millis(1000));
    for ns in ["stuck", "delayed"] {
        let st = log_stats(&s, ns);
        assert_eq!(st.first_offset, 0, "{ns}: {st:?}");
    }
    assert_eq!(message(&s, &stuck[0])["payload"]["i"], 0);
    assert_eq!(message(&s, &parked)["status"], "scheduled");
    s.stop();
}

#[test]
fn a_panic_in_an_attempt_or_a_consumer_is_reported_and_never_stalls_the_partition() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    s.create_namespace(
        json!({ "name": "p", "targetConfigs": [webhook("h", &rx.url("ok"))],
        "retryPolicy": policy(3, 100, "constant") }),
    );
    // An attempt panics: it counts as a failed attempt, and the retry delivers.
    s.app
        .supervision
        .inject_panics(wald::supervise::DELIVERY_ATTEMPT, 1);
    let first = write(&s, "p", json!({"n": 1}), json!({}));
    let m = wait_status(&s, &first, "delivered", 15);
    let attempts = m["targets"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{m:#}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("panicked"),
        "{m:#}"
    );
    // Readiness is red, naming it.
    let ready = s.admin("GET", "/api/v1/health/readiness", None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.text().contains("delivery_attempt"),
        "{}",
        ready.text()
    );
    // The partition's consumer panics: restarted after its backoff, it delivers the next.
    s.app
        .supervision
        .inject_panics(wald::supervise::DELIVERY_CONSUMER, 1);
    let second = write(&s, "p", json!({"n": 2}), json!({}));
    wait_status(&s, &second, "delivered", 15);
    let ready = s.admin("GET", "/api/v1/health/readiness", None).text();
    assert!(ready.contains("delivery_consumer p/0"), "{ready}");
    let metrics = s.admin("GET", "/metrics", None).text();
    for task in ["delivery_attempt", "delivery_consumer"] {
        assert!(
            metrics.contains(&format!("wald_task_panics_total{{task=\"{task}\"}} 1")),
            "{task}: {metrics}"
        );
    }
    assert_eq!(rx.hits_of(&first).len(), 1);
    s.stop();
}

#[test]
fn a_parked_message_survives_a_failed_delivery_state_write() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.delivery.park_after_ms = 1000;
    let s = Server::start(cfg);
    s.create_namespace(json!({ "name": "later", "targetConfigs": [webhook("h", &rx.url("ok"))] }));
    // The consumer step that parks the message (its due-time entry, and the commit that
    // passes it) is refused by the state store once.
    s.app.state.fail_delivery_writes(1);
    let t0 = now_ms();
    let parked = write(
        &s,
        "later",
        json!({"d": "parked"}),
        json!({"lifecycle": {"delay": 3, "delayUnit": "seconds"}}),
    );
    let now = write(&s, "later", json!({"d": "now"}), json!({}));
    rx.wait_for(10, "the undelayed message", |h| {
        h.iter().any(|x| x.message_id == now)
    });
    delivered_after(
        &rx,
        &s,
        &parked,
        t0 + 3000,
        "the parked message, after its delay",
    );
    s.stop();
}

/// Waits for `id` to reach the receiver, not before `not_before`, and be `delivered`.
fn delivered_after(rx: &Receiver, s: &Server, id: &str, not_before: u64, what: &str) {
    let h = rx.wait_for(15, what, |h| h.iter().any(|x| x.message_id == id));
    let at = h.iter().find(|x| x.message_id == id).unwrap().at_ms;
    assert!(
        at >= not_before,
        "{what}: delivered {} ms early",
        not_before - at
    );
    wait_status(s, id, "delivered", 5);
}

/// A parked message whose record cannot be read for a while (the disk fails reads) stays
/// parked and is delivered once reads work again. It used to be dropped from the due-time
/// index at the first failed read and never delivered — found by the power-loss fault run.
#[test]
fn a_parked_message_survives_failed_reads_of_its_record() {
    use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, SimFs};
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.delivery.park_after_ms = 1000;
    // Over SimFs every read goes through `read_at` (nothing is mapped), so every read fails.
    let fault = FaultFs::new(std::sync::Arc::new(SimFs::new()));
    let s = Server::start_with(cfg, std::sync::Arc::new(fault.clone()));
    s.create_namespace(json!({ "name": "later", "targetConfigs": [webhook("h", &rx.url("ok"))] }));
    let t0 = now_ms();
    let parked = write(
        &s,
        "later",
        json!({"d": "parked"}),
        json!({"lifecycle": {"delay": 3, "delayUnit": "seconds"}}),
    );
    wait_status(&s, &parked, "scheduled", 5);
    // Every scan of the due-time index until past the due time fails to read the record.
    fault.arm(FaultPlan {
        op: FaultOp::Read,
        nth: 1,
        kind: FaultKind::Eio,
        sticky: true,
    });
    std::thread::sleep(Duration::from_millis(4000));
    assert!(fault.injected() > 0, "reads were attempted and failed");
    assert!(rx.hits_of(&parked).is_empty());
    fault.disarm();
    delivered_after(
        &rx,
        &s,
        &parked,
        t0 + 3000,
        "the parked message, once reads work again",
    );
    s.stop();
}

#[test]
fn delayed_messages_wait_for_their_time_also_across_a_restart() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.delivery.park_after_ms = 1000;
    let s = Server::start(cfg.clone());
    s.create_namespace(json!({ "name": "later", "targetConfigs": [webhook("h", &rx.url("ok"))] }));
    let t0 = now_ms();
    let soon = write(
        &s,
        "later",
        json!({"d": "soon"}),
        json!({"lifecycle": {"delay": 1, "delayUnit": "seconds"}}),
    );
    // Parked (due beyond park_after_ms): waits in the due-time index, survives the restart.
    let parked = write(
        &s,
        "later",
        json!({"d": "parked"}),
        json!({"lifecycle": {"delay": 4, "delayUnit": "seconds"}}),
    );
    let now = write(&s, "later", json!({"d": "now"}), json!({}));
    rx.wait_for(5, "the undelayed message", |h| {
        h.iter().any(|x| x.message_id == now)
    });
    assert!(rx.hits_of(&soon).is_empty() && rx.hits_of(&parked).is_empty());
    assert_eq!(message(&s, &parked)["status"], "scheduled");
    let h = rx.wait_for(5, "the 1 s delay", |h| {
        h.iter().any(|x| x.message_id == soon)
    });
    let at = h.iter().find(|x| x.message_id == soon).unwrap().at_ms;
    assert!(
        at >= t0 + 1000,
        "delivered {} ms after the write, before its delay",
        at - t0
    );
    s.stop();

    let s = Server::start(cfg);
    let h = rx.wait_for(10, "the parked message after the restart", |h| {
        h.iter().any(|x| x.message_id == parked)
    });
    let at = h.iter().find(|x| x.message_id == parked).unwrap().at_ms;
    assert!(
        at >= t0 + 4000,
        "parked message delivered {} ms after the write",
        at - t0
    );
    wait_status(&s, &parked, "delivered", 5);
    assert_eq!(rx.hits_of(&parked).len(), 1);
    assert_eq!(
        rx.hits_of(&soon).len(),
        1,
        "not delivered again after the restart"
    );
    s.stop();
}

#[test]
fn an_expired_message_is_recorded_expired_and_never_delivered() {
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.delivery.enabled = true;
    let s = Server::start(cfg);
    s.create_namespace(json!({ "name": "ttl", "messageTtlSeconds": 60, "targetConfigs": [webhook("h", &rx.url("ok"))] }));
    // A message that waited longer than its TTL (e.g. the service was down for two hours):
    // appended with an acceptance time two hours ago.
    let msg = wald::message::StoredMessage::new(
        "wal_1_expired00",
        "ttl",
        serde_json::value::RawValue::from_string("{\"old\":true}".into()).unwrap(),
        now_ms() - 2 * 3600 * 1000,
    );
    let log = s.app.engine.log("ttl", 0).unwrap();
    let a = log
        .append_one(
            msg.to_record(b"", 0).unwrap(),
            wald_storage::Durability::Sync,
        )
        .unwrap();
    s.app.delivery.appended("ttl", 0);
    let fresh = write(&s, "ttl", json!({"fresh": true}), json!({}));
    rx.wait_for(5, "the fresh message", |h| {
        h.iter().any(|x| x.message_id == fresh)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let rec = loop {
        let rec = s
            .app
            .state
            .delivery_state("ttl", 0, a.first_offset)
            .unwrap();
        if let Some(r) = rec {
            let r = wald::delivery::record::DeliveryRecord::decode(&r).unwrap();
            if r.status.is_final() {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "the old message never resolved");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(rec.status, wald::delivery::record::MessageStatus::Expired);
    assert!(
        rx.hits_of("wal_1_expired00").is_empty(),
        "an expired message is never delivered"
    );
    s.stop();
}

#[test]
fn a_target_config_that_cannot_work_is_refused_naming_the_field() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    let cases = [
        (
            json!({"type": "webhook", "identifier": "x", "config": {"url": "ftp://x"}}),
            "targetConfigs[0].config.url",
        ),
        (
            json!({"type": "teleport", "identifier": "x", "config": {}}),
            "targetConfigs[0].type",
        ),
        (
            json!({"type": "database", "identifier": "x", "config": {"type": "postgresql", "host": "h", "port": 5432, "database": "d"}}),
            "targetConfigs[0].config.table",
        ),
        // Valid in the model, but this build has no adapter for it.
        (
            json!({"type": "queue", "identifier": "x", "config": {}}),
            "targetConfigs[0].type",
        ),
    ];
    for (target, field) in cases {
        let r = s.admin(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"name": "bad", "targetConfigs": [target]})),
        );
        let body = r.assert_error(400, "VALIDATION_ERROR");
        assert!(
            body.to_string().contains(field),
            "{field} named in {body:#}"
        );
    }
    // A message may bring only webhook/http_service targets, and only where the namespace
    // accepts them.
    s.create_namespace(json!({"name": "ok", "adHocTargets": true}));
    let r = s.post_json(
        "/api/v1/wal/write",
        &[],
        &json!({"namespace": "ok", "payload": {"a": 1},
        "target": {"type": "grpc_service", "identifier": "g", "config": {}}}),
    );
    let body = r.assert_error(400, "VALIDATION_ERROR");
    assert!(body.to_string().contains("target[0]"), "{body:#}");
    assert!(body.to_string().contains("grpc_service"), "{body:#}");
    s.stop();
}

/// The `wald_dlq_size` gauge of `ns` (pending entries), as `/metrics` shows it.
fn dlq_size(s: &Server, ns: &str) -> Option<i64> {
    let m = s.admin("GET", "/metrics", None).text();
    let key = format!("wald_dlq_size{{namespace=\"{ns}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_dlq_replay_that_fails_puts_the_entry_back_to_pending() {
    use std::sync::Arc;
    use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, StdFs};
    let rx = Receiver::start();
    let (_d, dir) = tempdir();
    let fault = FaultFs::new(Arc::new(StdFs));
    let mut cfg = config(&dir);
    // No spare segments: the background zero-fill would take the injected faults.
    cfg.storage.preallocate = wald::config::PreallocateSetting::None;
    let s = Server::start_with(cfg, Arc::new(fault.clone()));
    s.create_namespace(
        json!({ "name": "refail", "retryPolicy": policy(0, 100, "constant"), "adHocTargets": true,
        "dlqConfig": { "maxRetries": 0, "retryBackoffMs": 0 } }),
    );
    let id = write(
        &s,
        "refail",
        json!({"k": "perm"}),
        json!({"target": webhook("p", &rx.url("perm"))}),
    );
    wait_status(&s, &id, "dead_lettered", 15);
    wait_dlq(&s, "refail", &id, |e| e["status"] == "pending", "pending");

    // The replay fails at the target again, and the DLQ log then refuses the new entry.
    fault.arm(FaultPlan {
        op: FaultOp::Write,
        nth: 1,
        kind: FaultKind::Enospc,
        sticky: true,
    });
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/refail/dlq/{id}/replay"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let e = wait_dlq(
        &s,
        "refail",
        &id,
        |e| e["status"] == "pending",
        "back to pending after the failed replay",
    );
    fault.disarm();
    assert_eq!(rx.hits_of(&id).len(), 2, "the replay made its attempt");
    assert!(
        e["lastError"].as_str().is_some_and(|m| !m.is_empty()),
        "the failure is recorded: {e:#}"
    );
    assert_eq!(e["replays"], 0, "the entry it was stays in place: {e:#}");
    assert_eq!(
        e["entry"]["message"]["payload"],
        json!({"k": "perm"}),
        "{e:#}"
    );
    assert_eq!(dlq_size(&s, "refail"), Some(1), "still counted as pending");
    let list = s.admin("GET", "/api/v1/namespaces/refail/dlq", None).json();
    assert_eq!(list["entries"][0]["messageId"], json!(id), "{list:#}");
    // Pending again: discard works.
    let r = s.admin(
        "DELETE",
        &format!("/api/v1/namespaces/refail/dlq/{id}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "discarded");
    assert_eq!(dlq_size(&s, "refail"), Some(0));
    s.stop();
}

#[test]
fn a_dlq_entry_left_replaying_by_a_stopped_process_is_pending_again() {
    let rx = Receiver::start();
    rx.shared
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_d, dir) = tempdir();
    let cfg = config(&dir);
    let s = Server::start(cfg.clone());
    // A replay waits 10 minutes between its attempts: it is still running at the stop.
    s.create_namespace(
        json!({ "name": "stuck", "retryPolicy": policy(0, 100, "constant"), "adHocTargets": true,
        "dlqConfig": { "maxRetries": 3, "retryBackoffMs": 600_000 } }),
    );
    let ids: Vec<String> = (0..2)
        .map(|i| {
            write(
                &s,
                "stuck",
                json!({"i": i}),
                json!({"target": webhook("d", &rx.url("down"))}),
            )
        })
        .collect();
    for id in &ids {
        wait_status(&s, id, "dead_lettered", 15);
        let r = s.admin(
            "POST",
            &format!("/api/v1/namespaces/stuck/dlq/{id}/replay"),
            None,
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    rx.wait_for(10, "each replay's first attempt", |h| {
        ids.iter()
            .all(|id| h.iter().filter(|x| &x.message_id == id).count() == 2)
    });
    // While this process replays them, they are replaying: no second replay, no discard.
    for id in &ids {
        assert_eq!(dlq_entry(&s, "stuck", id)["status"], "replaying");
        s.admin(
            "POST",
            &format!("/api/v1/namespaces/stuck/dlq/{id}/replay"),
            None,
        )
        .assert_error(409, "CONFLICT");
        s.admin(
            "DELETE",
            &format!("/api/v1/namespaces/stuck/dlq/{id}"),
            None,
        )
        .assert_error(409, "CONFLICT");
    }
    s.stop();

    // The process that replayed them is gone: they are pending again.
    let s = Server::start(cfg);
    for id in &ids {
        let e = dlq_entry(&s, "stuck", id);
        assert_eq!(e["status"], "pending", "{e:#}");
        assert!(e["lastError"].is_string(), "{e:#}");
    }
    let pending = s.admin("GET", "/api/v1/namespaces/stuck/dlq", None).json();
    assert_eq!(
        pending["entries"].as_array().map(Vec::len),
        Some(2),
        "{pending:#}"
    );
    let replaying = s
        .admin("GET", "/api/v1/namespaces/stuck/dlq?status=replaying", None)
        .json();
    assert_eq!(
        replaying["entries"].as_array().map(Vec::len),
        Some(0),
        "{replaying:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while dlq_size(&s, "stuck") != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the gauge counts them: {:?}",
            dlq_size(&s, "stuck")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Discard works on one, a replay on the other.
    let r = s.admin(
        "DELETE",
        &format!("/api/v1/namespaces/stuck/dlq/{}", ids[0]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "discarded");
    rx.shared
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.admin(
        "POST",
        &format!("/api/v1/namespaces/stuck/dlq/{}/replay", ids[1]),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_dlq(
        &s,
        "stuck",
        &ids[1],
        |e| e["status"] == "replayed",
        "replayed",
    );
    assert_eq!(message(&s, &ids[1])["status"], "delivered");
    assert_eq!(dlq_size(&s, "stuck"), Some(0));
    s.stop();
}

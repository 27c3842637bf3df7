//! The write use case driven without a socket.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::{write_batch, write_one, Origin};
use crate::app::App;
use crate::config::Config;
use crate::http::auth::Caller;
use crate::http::error::ErrorCode;
use crate::model::namespace::Namespace;
use crate::model::write::DurableStatus;

fn app(dir: &std::path::Path) -> Arc<App> {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.auth.open = true;
    let app = App::start(c).expect("start");
    let ns: Namespace = serde_json::from_value(json!({
        "name": "orders",
        "shardConfig": { "strategy": "hash", "partitionCount": 2 }
    }))
    .expect("namespace");
    app.install(ns).expect("install");
    app
}

fn origin() -> Origin {
    Origin {
        caller: Caller(None),
        request_id: "test".into(),
        started: Instant::now(),
    }
}

#[tokio::test]
async fn a_batch_and_a_single_write_go_through_one_use_case() {
    let d = tempfile::tempdir().expect("tempdir");
    let app = app(d.path());
    let body = json!({ "messages": [
        { "namespace": "orders", "payload": { "n": 1 }, "partitionKey": "a", "idempotencyKey": "k" },
        { "namespace": "orders", "payload": { "n": 2 }, "partitionKey": "a" },
        { "namespace": "orders", "payload": { "n": 3 }, "partitionKey": "b" }
    ] })
    .to_string();
    let out = write_batch(&app, &origin(), body.as_bytes())
        .await
        .expect("written");
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|r| r.durable == DurableStatus::True && !r.duplicate));
    assert_eq!(out[0].partition, out[1].partition);
    assert_eq!(out[1].offset, out[0].offset + 1);
    // Indexed before the answer: the id resolves, and the key deduplicates a single write.
    let loc = app
        .state
        .message_location(&out[2].message_id)
        .expect("state")
        .expect("indexed");
    assert_eq!(
        (loc.partition, loc.offset),
        (out[2].partition, out[2].offset)
    );
    let one = json!({ "namespace": "orders", "payload": { "n": 9 } }).to_string();
    let dup = write_one(&app, &origin(), one.as_bytes(), Some(Ok("k".into())))
        .await
        .expect("answered");
    assert!(dup.duplicate);
    assert_eq!(dup.message_id, out[0].message_id);
    // A bad message: nothing appended.
    let bad = json!({ "messages": [
        { "namespace": "orders", "payload": { "n": 1 } },
        { "namespace": "orders", "payload": [] }
    ] })
    .to_string();
    let e = write_batch(&app, &origin(), bad.as_bytes())
        .await
        .expect_err("refused");
    assert_eq!(e.code, ErrorCode::ValidationError);
    assert!(e.message.contains("messages[1].payload"), "{}", e.message);
    let appended: u64 = app
        .namespace("orders")
        .expect("ns")
        .logs
        .iter()
        .map(|l| l.stats().next_offset)
        .sum();
    assert_eq!(appended, 3);
}

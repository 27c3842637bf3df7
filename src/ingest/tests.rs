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

/// An app whose logs' fsyncs can be held (a disk that stops answering).
fn stalling_app(
    dir: &std::path::Path,
    request_timeout_ms: u64,
) -> (Arc<App>, wald_storage::io::FaultFs) {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.request_timeout_ms = request_timeout_ms;
    c.auth.open = true;
    let fs = wald_storage::io::FaultFs::new(Arc::new(wald_storage::io::StdFs));
    let app = App::start_with(c, Arc::new(fs.clone())).expect("start");
    let ns: Namespace = serde_json::from_value(json!({ "name": "orders" })).expect("namespace");
    app.install(ns).expect("install");
    fs.arm(wald_storage::io::FaultPlan {
        op: wald_storage::io::FaultOp::Sync,
        nth: 1,
        kind: wald_storage::io::FaultKind::Stall,
        sticky: true,
    });
    (app, fs)
}

fn appended(app: &App) -> u64 {
    app.namespace("orders")
        .expect("ns")
        .logs
        .iter()
        .map(|l| l.stats().next_offset)
        .sum()
}

/// The retry of a write (same idempotency key) while the first is still waiting for its
/// fsync waits for it and answers as its duplicate: it is never appended twice.
async fn retry_is_a_duplicate(
    app: &Arc<App>,
    fs: &wald_storage::io::FaultFs,
    first_id: Option<String>,
) {
    let body = json!({ "namespace": "orders", "payload": { "n": 1 } }).to_string();
    let retry = {
        let app = Arc::clone(app);
        tokio::spawn(async move {
            write_one(&app, &origin(), body.as_bytes(), Some(Ok("k".into()))).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !retry.is_finished(),
        "the retry waits for the first write's fsync"
    );
    fs.disarm();
    let r = retry.await.expect("task").expect("answered");
    assert!(r.duplicate, "{r:?}");
    assert_eq!(r.durable, DurableStatus::True, "{r:?}");
    if let Some(id) = first_id {
        assert_eq!(r.message_id, id);
    }
    assert_eq!(appended(app), 1, "appended once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_before_its_fsync_still_deduplicates_its_retry() {
    let d = tempfile::tempdir().expect("tempdir");
    let (app, fs) = stalling_app(d.path(), 200);
    let body = json!({ "namespace": "orders", "payload": { "n": 1 } }).to_string();
    let first = write_one(&app, &origin(), body.as_bytes(), Some(Ok("k".into())))
        .await
        .expect("answered");
    assert_eq!(
        first.durable,
        DurableStatus::Unknown,
        "timed out: {first:?}"
    );
    retry_is_a_duplicate(&app, &fs, Some(first.message_id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_went_away_still_deduplicates_its_retry() {
    let d = tempfile::tempdir().expect("tempdir");
    let (app, fs) = stalling_app(d.path(), 30_000);
    let body = json!({ "namespace": "orders", "payload": { "n": 1 } }).to_string();
    // The client disconnects: its request's future is dropped mid-wait.
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        write_one(&app, &origin(), body.as_bytes(), Some(Ok("k".into()))),
    )
    .await;
    assert!(gone.is_err(), "still waiting for the fsync when dropped");
    retry_is_a_duplicate(&app, &fs, None).await;
}

/// A namespace deleted while one of its writes waits for a stalled fsync: the delete waits
/// (then closes the logs for writes, which waits for that fsync) before deleting anything,
/// a create of the same name waits for the delete, and the stalled write's idempotency key
/// does not survive into the new namespace. Before: the delete went ahead after 10 s, the
/// stalled write was acknowledged into unlinked files and its late index entry made the new
/// namespace answer a write with the same key as a duplicate of a message that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_a_stalled_write_neither_acknowledges_into_deleted_files_nor_keeps_its_key()
{
    use axum::extract::{Path, State};
    let d = tempfile::tempdir().expect("tempdir");
    let (app, fs) = stalling_app(d.path(), 60_000);
    let body = json!({ "namespace": "orders", "payload": { "n": 1 } }).to_string();
    let first = {
        let (app, body) = (Arc::clone(&app), body.clone());
        tokio::spawn(async move {
            write_one(&app, &origin(), body.as_bytes(), Some(Ok("k".into()))).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the write waits for its fsync");
    let admin = || {
        crate::http::auth::Admin(crate::config::KeyIdentity {
            id: "admin".into(),
            admin: true,
            namespaces: crate::config::NamespaceAccess::All,
        })
    };
    let delete = {
        let app = Arc::clone(&app);
        let admin = admin();
        tokio::spawn(async move {
            crate::http::namespaces::remove(State(app), admin, Path("orders".into())).await
        })
    };
    // Past the delete's 10 s wait for the write: it now closes the logs, behind the fsync.
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    assert!(
        !delete.is_finished(),
        "the delete waits for the stalled write's fsync"
    );
    let create = {
        let app = Arc::clone(&app);
        let admin = admin();
        tokio::spawn(async move {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            crate::http::namespaces::create(
                State(app),
                admin,
                h,
                axum::body::Bytes::from_static(br#"{"name":"orders"}"#),
            )
            .await
            .map(|(status, _)| status)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !create.is_finished(),
        "a create of the name waits for its delete"
    );
    fs.disarm();
    let first = first
        .await
        .expect("task")
        .expect("answered before the logs closed");
    assert_eq!(first.durable, DurableStatus::True, "{first:?}");
    let deleted = delete.await.expect("task").expect("deleted");
    assert_eq!(deleted, axum::http::StatusCode::NO_CONTENT);
    assert_eq!(
        create.await.expect("task").expect("created"),
        axum::http::StatusCode::CREATED
    );
    // The new namespace knows nothing of the old one's key.
    let again = write_one(&app, &origin(), body.as_bytes(), Some(Ok("k".into())))
        .await
        .expect("written");
    assert!(
        !again.duplicate,
        "a deleted namespace's key was kept: {again:?}"
    );
    assert_ne!(again.message_id, first.message_id);
    assert_eq!(appended(&app), 1, "one record in the new namespace");
}

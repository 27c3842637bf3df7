//! Disk faults through the service: a failed fsync or a full disk answers 503 with the
//! envelope, readiness turns red, nothing acknowledged is lost, earlier messages stay readable.

mod common;

use std::sync::Arc;

use common::{config, tempdir, Server};
use serde_json::json;
use wald_storage::io::{FaultFs, FaultKind, FaultOp, FaultPlan, StdFs};

#[test]
fn fsync_failure_and_full_disk_answer_503() {
    let (_d, dir) = tempdir();
    let fault = FaultFs::new(Arc::new(StdFs));
    let mut c = config(&dir);
    // No spare segments: the background zero-fill would take the injected faults.
    c.storage.preallocate = wald::config::PreallocateSetting::None;
    let s = Server::start_with(c, Arc::new(fault.clone()));
    s.create_namespace(json!({ "name": "disk" }));
    s.create_namespace(json!({ "name": "full" }));
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = s.write("disk", json!({ "i": i }));
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["messageId"].as_str().unwrap().to_owned());
    }
    fault.arm(FaultPlan {
        op: FaultOp::Sync,
        nth: 1,
        kind: FaultKind::Eio,
        sticky: false,
    });
    let j = s
        .write("disk", json!({ "i": 5 }))
        .assert_error(503, "STORAGE_UNAVAILABLE");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("poisoned"),
        "{j}"
    );
    fault.disarm();
    s.write("disk", json!({ "i": 6 }))
        .assert_error(503, "STORAGE_UNAVAILABLE");
    let ready = s.admin("GET", "/api/v1/health/readiness", None);
    let rj = ready.assert_error(503, "STORAGE_UNAVAILABLE");
    assert!(
        rj["error"]["details"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("disk"),
        "{rj}"
    );
    assert_eq!(
        s.req("GET", "/api/v1/health", &[], None).json()["status"],
        "degraded"
    );
    // Acknowledged messages stay readable.
    for id in &ids {
        assert_eq!(
            s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None)
                .status,
            200
        );
    }
    // A full disk on another namespace.
    fault.arm(FaultPlan {
        op: FaultOp::Write,
        nth: 1,
        kind: FaultKind::Enospc,
        sticky: true,
    });
    s.write("full", json!({ "i": 0 }))
        .assert_error(503, "DISK_FULL");
    fault.disarm();
    // The namespace metrics count the failed writes next to the accepted ones.
    let m = s
        .req("GET", "/api/v1/wal/namespace/disk/metrics", &[], None)
        .json();
    assert_eq!(m["metrics"]["writes"], 5, "{m}");
    assert_eq!(
        m["metrics"]["errors"], 2,
        "the failed fsync and the poisoned log's refusal: {m}"
    );
    s.stop();
    // After a restart (the disk "fixed"), everything acknowledged is there and writes work.
    let s = Server::start(config(&dir));
    for id in &ids {
        assert_eq!(
            s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None)
                .status,
            200
        );
    }
    assert_eq!(s.write("disk", json!({ "i": 7 })).status, 202);
    assert_eq!(s.write("full", json!({ "i": 1 })).status, 202);
    assert_eq!(
        s.req("GET", "/api/v1/health/readiness", &[], None).status,
        200
    );
}

/// A disk that fills up (modelled by `FaultFs`: a write that grows a file takes space; what
/// does not fit fails with ENOSPC after writing what fits) answers 503 `DISK_FULL` with a
/// `Retry-After`, loses nothing acknowledged, and takes writes again as soon as space returns
/// — no restart. A refused write retried with its idempotency key is appended once.
#[test]
fn a_full_disk_answers_503_and_writes_resume_when_space_returns() {
    let (_d, dir) = tempdir();
    let fault = FaultFs::new(Arc::new(StdFs));
    let mut c = config(&dir);
    c.storage.segment_bytes = 64 << 10;
    c.storage.first_segment_bytes = 64 << 10;
    c.storage.max_record_bytes = 16 << 10;
    let s = Server::start_with(c, Arc::new(fault.clone()));
    s.create_namespace(json!({ "name": "fill", "shardConfig": { "partitionCount": 1 } }));
    let body = "x".repeat(1500);
    let mut acked: Vec<(String, u64)> = Vec::new();
    let write = |i: u64, key: &str| {
        s.post_json(
            "/api/v1/wal/write",
            &[],
            &json!({ "namespace": "fill", "payload": { "i": i, "body": body }, "idempotencyKey": key }),
        )
    };
    for i in 0..20 {
        let r = write(i, &format!("k{i}"));
        assert_eq!(r.status, 202, "{}", r.text());
        acked.push((r.json()["messageId"].as_str().unwrap().to_owned(), i));
    }
    fault.set_free_space(Some(10_000));
    let mut refused = None;
    for i in 20..2_000 {
        let r = write(i, &format!("k{i}"));
        if r.status == 202 {
            acked.push((r.json()["messageId"].as_str().unwrap().to_owned(), i));
            continue;
        }
        let j = r.assert_error(503, "DISK_FULL");
        assert!(r.header("retry-after").is_some(), "{j}");
        refused = Some(i);
        break;
    }
    let refused = refused.expect("the disk filled up");
    // Still full: refused again, and the namespace is not poisoned.
    write(refused, &format!("k{refused}")).assert_error(503, "DISK_FULL");
    // Space returns: the same write (same key) goes through, once.
    fault.set_free_space(None);
    let r = write(refused, &format!("k{refused}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["messageId"].as_str().unwrap().to_owned();
    let again = write(refused, &format!("k{refused}"));
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["messageId"], id.as_str(), "deduplicated");
    acked.push((id, refused));
    for i in refused + 1..refused + 20 {
        let r = write(i, &format!("k{i}"));
        assert_eq!(r.status, 202, "{}", r.text());
        acked.push((r.json()["messageId"].as_str().unwrap().to_owned(), i));
    }
    assert_eq!(
        s.req("GET", "/api/v1/health/readiness", &[], None).status,
        200
    );
    let metrics = s.admin("GET", "/metrics", None).text();
    let refusals = metrics
        .lines()
        .find(|l| l.starts_with("wald_log_disk_full_refusals_total{namespace=\"fill\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(refusals.is_some_and(|n| n >= 2), "counted: {refusals:?}");
    let check = |s: &Server| {
        for (id, i) in &acked {
            let r = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
            assert_eq!(r.status, 200, "{id}: {}", r.text());
            assert_eq!(r.json()["payload"]["i"], *i, "{id}");
        }
        // The partition holds exactly the acknowledged messages, in order, once each.
        let page = s
            .req(
                "GET",
                "/api/v1/wal/namespace/fill/messages?partition=0&fromOffset=0&limit=1000",
                &[],
                None,
            )
            .json();
        let got: Vec<u64> = page["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|m| m["payload"]["i"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = acked.iter().map(|a| a.1).collect();
        assert_eq!(got, want);
    };
    check(&s);
    s.stop();
    let s = Server::start(config(&dir));
    check(&s);
}

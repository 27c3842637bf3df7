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

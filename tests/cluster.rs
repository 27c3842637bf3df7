//! Several instances, one namespace set (`[cluster]`): each instance serves the namespaces it
//! owns and answers requests for the others with `307 Temporary Redirect` to the owner, which
//! serves them when the client follows.

mod common;
#[path = "common/servers.rs"]
mod servers;

use common::{config, request, tempdir, Server};
use serde_json::json;
use wald::config::{ClusterConfig, Member};

fn instance(dir: &std::path::Path, me: &str, ports: [u16; 2]) -> Server {
    let mut c = config(dir);
    c.server.listen = format!("127.0.0.1:{}", if me == "a" { ports[0] } else { ports[1] })
        .parse()
        .unwrap();
    c.cluster = ClusterConfig {
        instance_id: me.into(),
        members: vec![
            Member {
                id: "a".into(),
                url: format!("http://127.0.0.1:{}", ports[0]),
            },
            Member {
                id: "b".into(),
                url: format!("http://127.0.0.1:{}", ports[1]),
            },
        ],
        assign: [("alpha", "a"), ("beta", "b")]
            .into_iter()
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .collect(),
    };
    Server::start(c)
}

/// Resends a request to where a 307 points; returns the owner's answer.
fn follow(r: &common::Resp, method: &str, body: Option<&str>, admin: bool) -> common::Resp {
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "NOT_OWNER", "{}", r.text());
    let loc = r.header("location").expect("Location").to_owned();
    let rest = loc.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut h = vec![("content-type", "application/json")];
    if admin {
        h.push(("x-api-key", common::ADMIN));
    }
    request(
        host.parse().unwrap(),
        method,
        path,
        &h,
        body.map(str::as_bytes),
    )
}

#[test]
fn each_instance_serves_its_shard_and_redirects_the_rest() {
    let ports = [servers::free_port(), servers::free_port()];
    let ((_da, da), (_db, db)) = (tempdir(), tempdir());
    let a = instance(&da, "a", ports);
    let b = instance(&db, "b", ports);

    a.create_namespace(json!({"name": "alpha"}));
    let beta = json!({"name": "beta"}).to_string();
    let r = a.admin("POST", "/api/v1/namespaces", Some(&json!({"name": "beta"})));
    assert!(
        r.header("location")
            .is_some_and(|l| l == format!("http://127.0.0.1:{}/api/v1/namespaces", ports[1])),
        "{:?}",
        r.header("location")
    );
    assert_eq!(follow(&r, "POST", Some(&beta), true).status, 201);

    // Writes: to the owner directly, or redirected there.
    let w = json!({"namespace": "beta", "payload": {"n": 1}}).to_string();
    let r = a.post_json("/api/v1/wal/write", &[], &serde_json::from_str(&w).unwrap());
    let r = follow(&r, "POST", Some(&w), false);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["durable"], "true");
    assert_eq!(a.write("alpha", json!({"n": 2})).status, 202);

    // Path-scoped routes redirect with the whole path and query.
    let r = a.req(
        "GET",
        "/api/v1/wal/namespace/beta/messages?partition=0&limit=5",
        &[],
        None,
    );
    assert_eq!(
        r.header("location").unwrap(),
        format!(
            "http://127.0.0.1:{}/api/v1/wal/namespace/beta/messages?partition=0&limit=5",
            ports[1]
        )
    );
    let r = follow(&r, "GET", None, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["messages"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text()
    );
    assert_eq!(
        b.req("GET", "/api/v1/wal/namespace/alpha/status", &[], None)
            .status,
        307
    );

    // Each lists only its own namespaces.
    let names = |s: &Server| -> Vec<String> {
        s.admin("GET", "/api/v1/namespaces", None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&a), ["alpha"]);
    assert_eq!(names(&b), ["beta"]);
    a.stop();
    b.stop();
}

//! Security issue 11, "bounded everything": a client cannot exhaust the server, and no panic
//! is reachable from a request. Each test attacks the real server (in process, on
//! 127.0.0.1:0): slow headers, idle keep-alive, too many connections, overflowing and
//! extreme numbers in every numeric parameter, and a read asking for more than the byte
//! budget.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{config, tempdir, Server, ADMIN};
use serde_json::json;

const AUTH: (&str, &str) = ("x-api-key", ADMIN);

/// The extremes fed to every numeric parameter, as they appear in a query string.
const EXTREMES: [&str; 10] = [
    "0",
    "-1",
    "18446744073709551615", // u64::MAX
    "18446744073709551616", // u64::MAX + 1
    "-9223372036854775808", // i64::MIN
    "9223372036854775808",  // 2^63
    "1e309",
    "abc",
    "",
    "1.5",
];

/// The same extremes as JSON values in a body (`1e309` is not valid JSON: sent raw anyway).
const JSON_EXTREMES: [&str; 10] = [
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "9223372036854775808",
    "1e309",
    "\"abc\"",
    "\"\"",
    "1.5",
];

/// One request on a fresh connection; the status and body, or why the answer was not a
/// well-formed HTTP response (a dropped connection, a panic in the server).
fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nx-api-key: {ADMIN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// True when the server closed `s` (a read returns 0 or an error other than a timeout).
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an answer (e.g. hyper's 408) before the close
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

fn liveness_ok(addr: SocketAddr) {
    let r = common::request(addr, "GET", "/api/v1/health/liveness", &[AUTH], None);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn demo_namespace(s: &Server) {
    let mut spec =
        json!({ "name": "demo", "shardConfig": { "strategy": "hash", "partitionCount": 1 } });
    spec["accessControl"] = common::no_rate_limits();
    s.create_namespace(spec);
}

#[test]
fn slowloris_connections_do_not_starve_clients_and_are_cut_off() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.header_read_timeout_ms = 500;
    let s = Server::start(c);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut t = TcpStream::connect(s.addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            // Half a request line, then nothing.
            t.write_all(b"GET /api/v1/hea").expect("write");
            t
        })
        .collect();
    // A normal client is answered at once while they hang.
    let t0 = Instant::now();
    let r = common::request(s.addr, "GET", "/api/v1/health/liveness", &[AUTH], None);
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // Past the header-read timeout, the server has closed every one of them.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(opened.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut still_open = 0;
    for t in &mut slow {
        let left = deadline.saturating_duration_since(Instant::now());
        if !closed_by_server(t, left.max(Duration::from_millis(1))) {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-open connections the server kept");
    liveness_ok(s.addr);
}

/// Reads one answer with a `content-length` body from a keep-alive connection.
fn read_answer(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read answer");
        assert!(n > 0, "closed before the answer");
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if raw.len() >= end + 4 + len {
            let status = head[9..12].parse().expect("status");
            return (status, raw[end + 4..end + 4 + len].to_vec());
        }
    }
}

fn keep_alive_request(s: &mut TcpStream) {
    let host = s.peer_addr().expect("peer address");
    let req = format!(
        "GET /api/v1/health/liveness HTTP/1.1\r\nhost: {host}\r\nx-api-key: {ADMIN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    assert_eq!(read_answer(s).0, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let (_d, dir) = tempdir();
    // The idle timeout alone (the header-read timeout far away).
    let mut c = config(&dir);
    c.server.header_read_timeout_ms = 60_000;
    c.server.idle_timeout_ms = 500;
    let s = Server::start(c);
    let mut conn = TcpStream::connect(s.addr).expect("connect");
    keep_alive_request(&mut conn);
    keep_alive_request(&mut conn); // still open right after an answer
    let idle_from = Instant::now();
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));
    let lasted = idle_from.elapsed();
    assert!(
        lasted >= Duration::from_millis(400) && lasted < Duration::from_millis(2500),
        "closed after {lasted:?}"
    );
    // A connection that never sent anything is idle too.
    let mut silent = TcpStream::connect(s.addr).expect("connect");
    assert!(closed_by_server(&mut silent, Duration::from_secs(5)));
    liveness_ok(s.addr);
    s.stop();

    // hyper's header-read timeout also runs between keep-alive requests.
    let (_d2, dir2) = tempdir();
    let mut c = config(&dir2);
    c.server.header_read_timeout_ms = 500;
    let s = Server::start(c);
    let mut conn = TcpStream::connect(s.addr).expect("connect");
    keep_alive_request(&mut conn);
    let idle_from = Instant::now();
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));
    assert!(idle_from.elapsed() < Duration::from_millis(2500));
}

#[test]
fn connections_past_the_cap_get_a_503_envelope() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.max_connections = 50;
    c.server.header_read_timeout_ms = 60_000;
    let s = Server::start(c);
    let mut held: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(s.addr).expect("connect"))
        .collect();
    // Accepted in order: once the last one is served, all 50 hold their slot.
    keep_alive_request(&mut held[49]);
    let t0 = Instant::now();
    let (status, body) =
        try_request(s.addr, "GET", "/api/v1/health/liveness", None).expect("an answer");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(j["success"], false, "{j}");
    assert_eq!(j["error"]["code"], "TOO_MANY_CONNECTIONS", "{j}");
    assert!(j["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    // The raw answer says Connection: close.
    let mut raw = TcpStream::connect(s.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut text = String::new();
    let _ = raw.read_to_string(&mut text);
    let head = text.to_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{text}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{text}");
    // The held connections still work, and a freed slot is taken again.
    keep_alive_request(&mut held[1]);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) =
            try_request(s.addr, "GET", "/api/v1/health/liveness", None).expect("an answer");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn overflowing_metrics_range_is_a_400_naming_the_field() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    demo_namespace(&s);
    let (status, body) = try_request(
        s.addr,
        "GET",
        "/api/v1/wal/namespace/demo/metrics?to=18446744073709551615",
        None,
    )
    .expect("a well-formed answer, not a dropped connection");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(j["error"]["code"], "VALIDATION_ERROR", "{j}");
    assert_eq!(j["error"]["details"]["fields"][0]["field"], "to", "{j}");
    // The largest accepted time works.
    let r = common::request(
        s.addr,
        "GET",
        "/api/v1/wal/namespace/demo/metrics?from=0&to=253402300799999",
        &[AUTH],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn check(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, seen: &mut usize) {
    match try_request(addr, method, path, body) {
        Ok((status, b)) => assert!(
            status < 500,
            "{method} {path} {body:?}: {status} {}",
            String::from_utf8_lossy(&b)
        ),
        Err(e) => panic!("{method} {path} {body:?}: {e}"),
    }
    *seen += 1;
}

#[test]
fn extreme_numbers_in_every_numeric_parameter_never_break_the_server() {
    let (_d, dir) = tempdir();
    let s = Server::start(config(&dir));
    demo_namespace(&s);
    for i in 0..3 {
        let r = s.post_json(
            "/api/v1/wal/write",
            &[AUTH],
            &json!({ "namespace": "demo", "payload": { "n": i } }),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let mut seen = 0;
    let queries = [
        ("/api/v1/wal/namespace/demo/messages", "partition"),
        ("/api/v1/wal/namespace/demo/messages", "fromOffset"),
        ("/api/v1/wal/namespace/demo/messages", "fromTime"),
        ("/api/v1/wal/namespace/demo/messages", "limit"),
        ("/api/v1/wal/namespace/demo/metrics", "from"),
        ("/api/v1/wal/namespace/demo/metrics", "to"),
        ("/api/v1/namespaces/demo/dlq", "from"),
        ("/api/v1/namespaces/demo/dlq", "to"),
        ("/api/v1/namespaces/demo/dlq", "limit"),
    ];
    for (path, param) in queries {
        for v in EXTREMES {
            check(
                s.addr,
                "GET",
                &format!("{path}?{param}={v}"),
                None,
                &mut seen,
            );
            // With its partner at the other extreme.
            let other = if param == "from" { "to" } else { "from" };
            if path.ends_with("metrics") || path.ends_with("dlq") {
                let q = format!("{path}?{param}={v}&{other}=18446744073709551615");
                check(s.addr, "GET", &q, None, &mut seen);
            }
        }
    }
    // Path parameters.
    for v in EXTREMES {
        for path in [
            format!("/api/v1/wal/messages/{v}"),
            format!("/api/v1/wal/transaction/{v}/status"),
            format!("/api/v1/tasks/{v}"),
            format!("/api/v1/namespaces/demo/dlq/{v}"),
            format!("/api/v1/wal/namespace/{v}/messages"),
        ] {
            check(s.addr, "GET", &path, None, &mut seen);
        }
    }
    // Numbers in bodies.
    let bodies: [(&str, &str); 14] = [
        ("/api/v1/namespaces/demo/dlq/replay", r#"{"since": V}"#),
        ("/api/v1/namespaces/demo/replay", r#"{"fromOffset": V}"#),
        ("/api/v1/namespaces/demo/replay", r#"{"fromTime": V}"#),
        (
            "/api/v1/namespaces/demo/replay",
            r#"{"fromOffset": 0, "toOffset": V}"#,
        ),
        (
            "/api/v1/namespaces/demo/replay",
            r#"{"fromOffset": 0, "partition": V}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "priority": V}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "lifecycle": {"delay": V, "delayUnit": "days"}}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "lifecycle": {"delay": V, "delayUnit": "seconds"}}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "lifecycle": {"ttl": V}}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "lifecycle": {"transactionTimeout": V}}"#,
        ),
        (
            "/api/v1/wal/write",
            r#"{"namespace": "demo", "payload": {}, "lifecycle": {"retryPolicy": {"maxAttempts": V, "initialDelayMs": V, "maxDelayMs": V, "jitterMs": V}}}"#,
        ),
        (
            "/api/v1/namespaces",
            r#"{"name": "n-NAME", "shardConfig": {"partitionCount": V}}"#,
        ),
        (
            "/api/v1/namespaces",
            r#"{"name": "n-NAME", "maxMessageSize": V}"#,
        ),
        (
            "/api/v1/namespaces",
            r#"{"name": "n-NAME", "messageTtlSeconds": V}"#,
        ),
    ];
    for (k, (path, template)) in bodies.iter().enumerate() {
        for (i, v) in JSON_EXTREMES.iter().enumerate() {
            let body = template
                .replace('V', v)
                .replace("NAME", &format!("{k}-{i}"));
            check(s.addr, "POST", path, Some(&body), &mut seen);
        }
    }
    assert!(seen > 300, "{seen}");
    // Still serving, and the log is readable.
    liveness_ok(s.addr);
    let r = common::request(
        s.addr,
        "GET",
        "/api/v1/wal/namespace/demo/messages?fromOffset=0",
        &[AUTH],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn read_pages_stop_at_the_byte_budget() {
    let (_d, dir) = tempdir();
    let mut c = config(&dir);
    c.server.max_read_bytes = 65_536;
    let s = Server::start(c);
    demo_namespace(&s);
    let big = "x".repeat(20_000);
    for i in 0..10 {
        let r = s.post_json(
            "/api/v1/wal/write",
            &[AUTH],
            &json!({ "namespace": "demo", "payload": { "i": i, "data": big } }),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // A message larger than the whole budget still comes back, alone.
    let huge = "y".repeat(100_000);
    let r = s.post_json(
        "/api/v1/wal/write",
        &[AUTH],
        &json!({ "namespace": "demo", "payload": { "i": 10, "data": huge } }),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let mut from = 0u64;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = s.req(
            "GET",
            &format!("/api/v1/wal/namespace/demo/messages?fromOffset={from}&limit=1000"),
            &[AUTH],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        let msgs = j["messages"].as_array().expect("messages").clone();
        pages += 1;
        if msgs.is_empty() {
            break;
        }
        assert!(
            r.body.len() < 65_536 + 110_000,
            "page of {} bytes",
            r.body.len()
        );
        if msgs.len() > 1 {
            assert!(r.body.len() < 2 * 65_536, "page of {} bytes", r.body.len());
        }
        for m in &msgs {
            seen.push(m["offset"].as_u64().expect("offset"));
        }
        let next = j["nextOffset"].as_u64().expect("nextOffset");
        assert_eq!(next, seen.last().copied().unwrap_or(0) + 1);
        if j["truncated"] == true {
            assert!(msgs.len() < 11);
        } else {
            assert!(j.get("truncated").is_none(), "{}", j["truncated"]);
        }
        from = next;
        assert!(pages < 20, "no progress");
    }
    assert_eq!(seen, (0..11).collect::<Vec<u64>>());
    // 20 kB records in a 64 KiB budget: a few per page, so several pages.
    assert!(pages >= 4, "{pages} pages");
    // The huge one alone.
    let r = s.req(
        "GET",
        "/api/v1/wal/namespace/demo/messages?fromOffset=10",
        &[AUTH],
        None,
    );
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(1));
}

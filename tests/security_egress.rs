//! Security issue 11, the network side: a writer must not make the server connect anywhere.
//! Attacks against the real server (in process) with the default `[egress]` policy: loopback
//! literals, names resolving to loopback, IPv4-mapped IPv6, the cloud metadata address — none
//! reaches a listening receiver; with an allow-list the same target is delivered. A failing
//! receiver's body never appears in the attempts. PostgreSQL sessions are not shared across
//! passwords. Standard Webhooks signatures verify; https targets verify the certificate
//! against a CA given in `[egress] ca_file`.

mod common;
#[path = "common/servers.rs"]
mod servers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Sha256;
use wald::config::{Config, EgressConfig};

use common::{tempdir, Server};

/// The body `/leak` answers with: it must never reach an attempt's error.
const LEAKED: &str = "INTERNAL-ONLY: db password is hunter2";

/// One request a receiver got: path, headers (lower-case names), body.
type Hit = (String, Vec<(String, String)>, String);

/// An HTTP (or, with a TLS acceptor, HTTPS) receiver on 127.0.0.1 counting every TCP
/// connection it accepts. `/ok` → 200; `/leak` → 500 with [`LEAKED`]; `/redirect` → 302 to
/// `/ok`.
struct Receiver {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hits: Arc<Mutex<Vec<Hit>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let (c2, h2) = (Arc::clone(&connections), Arc::clone(&hits));
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c2.fetch_add(1, Ordering::SeqCst);
                let (hits, tls) = (Arc::clone(&h2), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&hits), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            hits,
            _rt: rt,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn handle(
    hits: Arc<Mutex<Vec<Hit>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    hits.lock().unwrap().push((
        path.clone(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let resp = match path.as_str() {
        "/leak" => Response::builder()
            .status(500)
            .body(Full::new(Bytes::from_static(LEAKED.as_bytes()))),
        "/redirect" => Response::builder()
            .status(302)
            .header("location", "/ok")
            .body(Full::new(Bytes::new())),
        _ => Response::builder()
            .status(200)
            .body(Full::new(Bytes::new())),
    };
    Ok(resp.unwrap())
}

/// The test configuration with `[egress]` as given (the harness's default allows loopback;
/// these tests start from the service's default: deny).
fn config_with(dir: &Path, egress: EgressConfig) -> Config {
    let mut c = common::config(dir);
    c.egress = egress;
    c
}

fn allow(ranges: &[&str]) -> EgressConfig {
    EgressConfig {
        allow: ranges.iter().map(|s| (*s).to_owned()).collect(),
        ca_file: None,
    }
}

fn webhook(id: &str, url: &str, extra: Value) -> Value {
    let mut config = json!({ "url": url, "timeoutMs": 3000 });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            config[k] = v;
        }
    }
    json!({ "type": "webhook", "identifier": id, "config": config })
}

/// A namespace with `targets` and a retry policy of up to 3 retries, 100 ms apart.
fn namespace(s: &Server, name: &str, targets: Vec<Value>) {
    s.create_namespace(json!({
        "name": name,
        "retryPolicy": {"maxAttempts": 3, "backoffStrategy": "constant", "initialDelayMs": 100, "jitterMs": 0},
        "targetConfigs": targets,
    }));
}

/// Writes a message to every target of `ns` (no `target` field); returns its id.
fn write(s: &Server, ns: &str, payload: Value) -> String {
    let r = s.write(ns, payload);
    assert_eq!(r.status, 202, "write: {}", r.text());
    r.json()["messageId"].as_str().unwrap().to_owned()
}

fn wait_final(s: &Server, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = s.req("GET", &format!("/api/v1/wal/messages/{id}"), &[], None);
        assert_eq!(r.status, 200, "{}", r.text());
        let m = r.json();
        if m["status"] == "delivered" || m["status"] == "dead_lettered" {
            return m;
        }
        assert!(Instant::now() < deadline, "{id} never finished: {m:#}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn target<'a>(m: &'a Value, id: &str) -> &'a Value {
    m["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["identifier"] == id)
        .unwrap_or_else(|| panic!("no target {id} in {m:#}"))
}

#[test]
fn default_egress_refuses_loopback_metadata_and_names_that_resolve_to_them() {
    let rx = Receiver::start(None);
    let port = rx.port();
    let (_d, dir) = tempdir();
    let s = Server::start(config_with(&dir, EgressConfig::default()));
    let cases = [
        (
            "literal",
            format!("http://127.0.0.1:{port}/ok"),
            "127.0.0.1",
        ),
        (
            "other-loopback",
            format!("http://127.1.2.3:{port}/ok"),
            "127.1.2.3",
        ),
        ("name", format!("http://localhost:{port}/ok"), "loopback"),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/ok"),
            "::ffff:127.0.0.1",
        ),
        (
            "nat64",
            format!("http://[64:ff9b::7f00:1]:{port}/ok"),
            "64:ff9b::7f00:1",
        ),
        ("v6-loopback", format!("http://[::1]:{port}/ok"), "::1"),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254",
        ),
        (
            "unspecified",
            format!("http://0.0.0.0:{port}/ok"),
            "0.0.0.0",
        ),
        ("private", "http://10.0.0.1:6379/".to_owned(), "10.0.0.1"),
    ];
    let targets = cases
        .iter()
        .map(|(id, url, _)| webhook(id, url, json!({})))
        .collect();
    namespace(&s, "attack", targets);
    let t0 = Instant::now();
    let id = write(&s, "attack", json!({"n": 1}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(m["status"], "dead_lettered", "{m:#}");
    for (tid, url, needle) in &cases {
        let t = target(&m, tid);
        let attempts = t["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "{url}: refused for good, not retried: {t:#}"
        );
        assert_eq!(attempts[0]["errorClass"], "egress_denied", "{url}: {t:#}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(error.contains("egress denied"), "{url}: {error}");
        assert!(error.contains(needle), "{url}: {error}");
        assert!(
            error.contains("[egress] allow"),
            "{url}: the fix is named: {error}"
        );
    }
    // Nothing waited for a connect timeout: the metadata address was never dialled.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(
        rx.connections(),
        0,
        "the listening receiver was never reached"
    );
    s.stop();
}

#[test]
fn an_allowed_range_is_delivered_with_standard_webhooks_signatures() {
    let rx = Receiver::start(None);
    let (_d, dir) = tempdir();
    let s = Server::start(config_with(&dir, allow(&["127.0.0.1/32"])));
    let key = [7u8; 24];
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    namespace(
        &s,
        "allowed",
        vec![webhook(
            "hook",
            &format!("http://127.0.0.1:{}/ok", rx.port()),
            json!({"secret": "legacy-secret", "secrets": [whsec, "raw-new-key"]}),
        )],
    );
    let id = write(&s, "allowed", json!({"order": 42}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(m["status"], "delivered", "{m:#}");
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let (path, headers, body) = &hits[0];
    assert_eq!(path, "/ok");
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {n} header in {headers:?}"))
    };
    assert_eq!(h("webhook-id"), id);
    let ts = h("webhook-timestamp");
    assert_eq!(ts, h("x-wald-timestamp"));
    let sigs: Vec<String> = h("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let expect = |k: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(k).unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    assert_eq!(
        sigs,
        vec![
            expect(b"legacy-secret"),
            expect(&key),
            expect(b"raw-new-key")
        ],
        "one v1 signature per key: secret, then secrets (whsec_ decoded)"
    );
    // The existing signature is unchanged.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"legacy-secret").unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    assert_eq!(
        h("x-wald-signature"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    s.stop();
}

#[test]
fn a_failing_receivers_body_never_reaches_the_attempts_and_redirects_are_not_followed() {
    let rx = Receiver::start(None);
    let (_d, dir) = tempdir();
    let s = Server::start(config_with(&dir, allow(&["127.0.0.0/8"])));
    let base = format!("http://127.0.0.1:{}", rx.port());
    namespace(
        &s,
        "leaky",
        vec![
            webhook("leak", &format!("{base}/leak"), json!({})),
            webhook("redirect", &format!("{base}/redirect"), json!({})),
        ],
    );
    let id = write(&s, "leaky", json!({"n": 1}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(m["status"], "dead_lettered", "{m:#}");
    let leak = target(&m, "leak");
    let attempts = leak["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "5xx is retried: {leak:#}");
    for a in attempts {
        assert_eq!(a["error"], "HTTP 500 Internal Server Error", "{a:#}");
        assert_eq!(a["errorClass"], "5xx");
    }
    let redirect = target(&m, "redirect");
    assert_eq!(
        redirect["attempts"].as_array().unwrap().len(),
        1,
        "{redirect:#}"
    );
    assert_eq!(redirect["attempts"][0]["errorClass"], "4xx");
    // Nothing of the body anywhere a writer or an operator reads.
    let dlq = s.admin("GET", &format!("/api/v1/namespaces/leaky/dlq/{id}"), None);
    for text in [m.to_string(), dlq.text()] {
        assert!(
            !text.contains("hunter2") && !text.contains("INTERNAL-ONLY"),
            "{text}"
        );
    }
    let paths: Vec<String> = rx.hits().into_iter().map(|h| h.0).collect();
    assert!(
        !paths.contains(&"/ok".to_owned()),
        "the redirect was not followed: {paths:?}"
    );
    s.stop();
}

/// PostgreSQL with password authentication for `app` (the harness's server trusts
/// everyone): pg_hba.conf rewritten and reloaded through the superuser's connection.
async fn password_protected(pg: &servers::PgServer) -> tokio_postgres::Client {
    let admin = servers::pg_client(pg.port).await;
    let hba: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    std::fs::write(
        &hba,
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE app LOGIN PASSWORD 'right-password';
             CREATE TABLE events (id integer PRIMARY KEY, who text);
             GRANT INSERT, SELECT ON events TO app;
             SELECT pg_reload_conf();",
        )
        .await
        .unwrap();
    admin
}

#[test]
fn postgresql_sessions_are_not_shared_across_passwords() {
    let pg = servers::PgServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(password_protected(&pg));
    let (_d, dir) = tempdir();
    let s = Server::start(config_with(&dir, allow(&["127.0.0.1/32"])));
    let db = |id: &str, password: Option<&str>| {
        let mut config = json!({ "type": "postgresql", "host": "127.0.0.1", "port": pg.port,
            "database": "postgres", "table": "events", "user": "app" });
        if let Some(p) = password {
            config["password"] = json!(p);
        }
        json!({ "type": "database", "identifier": id, "config": config })
    };
    namespace(&s, "good", vec![db("pg", Some("right-password"))]);
    namespace(&s, "wrong", vec![db("pg", Some("wrong-password"))]);
    namespace(&s, "none", vec![db("pg", None)]);

    // The right password opens (and caches) an authenticated session...
    let ok = write(&s, "good", json!({"id": 1, "who": "good"}));
    let m = wait_final(&s, &ok, 20);
    assert_eq!(m["status"], "delivered", "{m:#} {}", pg.log());
    // ...which targets naming the same server, database and user with another password, or
    // none, must not get.
    for (ns, n) in [("wrong", 2), ("none", 3)] {
        let id = write(&s, ns, json!({"id": n, "who": ns}));
        let m = wait_final(&s, &id, 20);
        assert_eq!(m["status"], "dead_lettered", "{ns}: {m:#}");
        let a = &target(&m, "pg")["attempts"][0];
        assert_eq!(a["errorClass"], "config", "{ns}: {a:#}");
    }
    let rows = rt
        .block_on(admin.query("SELECT id FROM events ORDER BY id", &[]))
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1], "only the right password wrote");
    s.stop();
}

#[test]
fn database_and_cache_targets_are_refused_on_loopback_by_default() {
    let (_d, dir) = tempdir();
    let s = Server::start(config_with(&dir, EgressConfig::default()));
    namespace(
        &s,
        "db",
        vec![
            json!({ "type": "database", "identifier": "pg", "config": { "type": "postgresql",
                "host": "localhost", "port": 5432, "database": "postgres", "table": "t" } }),
        ],
    );
    namespace(
        &s,
        "cache",
        vec![
            json!({ "type": "cache", "identifier": "redis", "config": { "type": "redis",
                "host": "127.0.0.1", "port": 6379 } }),
            json!({ "type": "cache", "identifier": "metadata", "config": { "type": "redis",
                "host": "169.254.169.254", "port": 80 } }),
        ],
    );
    let db = write(&s, "db", json!({"id": 1}));
    let cache = write(
        &s,
        "cache",
        json!({"operation": "SET", "key": "k", "value": "v"}),
    );
    for (id, t) in [(&db, "pg"), (&cache, "redis"), (&cache, "metadata")] {
        let m = wait_final(&s, id, 20);
        let t = target(&m, t);
        let attempts = t["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{t:#}");
        assert_eq!(attempts[0]["errorClass"], "egress_denied", "{t:#}");
        assert!(
            attempts[0]["error"]
                .as_str()
                .unwrap()
                .contains("egress denied"),
            "{t:#}"
        );
    }
    s.stop();
}

/// A CA and a certificate for `localhost` / 127.0.0.1 signed by it (openssl), in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-subj",
            "/CN=wald test CA",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
}

fn tls_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn https_targets_verify_the_certificate_against_the_configured_ca() {
    let (_c, certs) = tempdir();
    make_certs(&certs);
    let rx = Receiver::start(Some(tls_acceptor(&certs)));
    let url = format!("https://localhost:{}/ok", rx.port());

    // With the CA: delivered over TLS (and still through the egress check: loopback allowed).
    let (_d, dir) = tempdir();
    let mut egress = allow(&["127.0.0.0/8", "::1/128"]);
    egress.ca_file = Some(certs.join("ca.pem"));
    let s = Server::start(config_with(&dir, egress));
    namespace(&s, "tls", vec![webhook("hook", &url, json!({}))]);
    let id = write(&s, "tls", json!({"secure": true}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(m["status"], "delivered", "{m:#}");
    assert_eq!(rx.hits().len(), 1);
    assert_eq!(rx.hits()[0].2, r#"{"secure":true}"#);
    s.stop();

    // Without it: the certificate does not verify — a permanent failure, nothing delivered.
    let (_d2, dir2) = tempdir();
    let s = Server::start(config_with(&dir2, allow(&["127.0.0.0/8", "::1/128"])));
    namespace(&s, "tls", vec![webhook("hook", &url, json!({}))]);
    let id = write(&s, "tls", json!({"secure": false}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(m["status"], "dead_lettered", "{m:#}");
    let a = &target(&m, "hook")["attempts"];
    assert_eq!(a.as_array().unwrap().len(), 1, "{a:#}");
    assert_eq!(a[0]["errorClass"], "config", "{a:#}");
    assert!(
        a[0]["error"].as_str().unwrap().contains("certificate"),
        "{a:#}"
    );
    assert_eq!(rx.hits().len(), 1, "the untrusted attempt sent nothing");
    s.stop();

    // And TLS does not bypass the egress policy.
    let (_d3, dir3) = tempdir();
    let mut egress = EgressConfig::default();
    egress.ca_file = Some(certs.join("ca.pem"));
    let s = Server::start(config_with(&dir3, egress));
    namespace(&s, "tls", vec![webhook("hook", &url, json!({}))]);
    let id = write(&s, "tls", json!({"secure": 3}));
    let m = wait_final(&s, &id, 20);
    assert_eq!(
        target(&m, "hook")["attempts"][0]["errorClass"],
        "egress_denied",
        "{m:#}"
    );
    s.stop();
}

//! The first run as README.md prints it: `./scripts/serve.sh` on a clean tree (no data, no
//! admin key configured) generates an admin key once, keeps only its digest, and serves; the
//! README's quickstart block runs as printed against a fresh server.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::request;
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A started process with its stdout lines arriving on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines: rx }
    }

    /// Lines until one satisfies `f` (that one included), within 60 s.
    fn until(&self, mut f: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = f(&l);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no matching line; got {seen:#?}"),
            }
        }
    }

    /// Every line printed within `d` (after the ones already read).
    fn drain_for(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            out.push(l);
        }
        out
    }

    fn terminate(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn listening(lines: &[String]) -> SocketAddr {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("wald listening on http://"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the listening line")
}

/// The serve script, run from `cwd` as a new user would (data in `cwd/data`), with the
/// binary this test run built (`WALD_BIN`: no nested cargo build).
fn serve_script(script: &Path, cwd: &Path) -> Proc {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env("WALD_BIN", env!("CARGO_BIN_EXE_wald"))
        .env("RUST_LOG", "warn")
        .env_remove("WALD_ADMIN_KEY")
        .env_remove("WALD_CONFIG");
    Proc::spawn(cmd)
}

fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> common::Resp {
    let h: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    request(addr, "GET", path, &h, None)
}

#[test]
fn serve_script_builds_like_the_test_command() {
    // One build directory and the same profile and features: whichever of README's two
    // commands runs second finds the other's build.
    let serve = std::fs::read_to_string(repo().join("scripts/serve.sh")).unwrap();
    let test = std::fs::read_to_string(repo().join("scripts/test.sh")).unwrap();
    for s in [&serve, &test] {
        assert!(s.contains(r#"CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-target}""#));
        assert!(s.contains("libclang-dev"));
    }
    assert!(serve.contains("cargo build --release --all-features --locked"));
    assert!(
        test.contains("cargo build --release --workspace --all-targets --all-features --locked")
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let first = readme
        .lines()
        .find(|l| l.starts_with("./scripts/"))
        .unwrap();
    assert!(first.starts_with("./scripts/serve.sh "), "{first}");
}

#[test]
fn first_start_generates_an_admin_key_once_and_keeps_only_its_digest() {
    // A clean tree: the script alone, no data directory, no configuration.
    let tree = tempfile::tempdir().unwrap();
    let scripts = tree.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let script = scripts.join("serve.sh");
    std::fs::copy(repo().join("scripts/serve.sh"), &script).unwrap();

    let p = serve_script(&script, tree.path());
    let mut lines = p.until(|l| l.starts_with("wald listening on"));
    let addr = listening(&lines);
    lines.extend(p.until(|l| l.contains("/api/v1/wal/write")));
    let key = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("export WALD_ADMIN_KEY="))
        .expect("the generated key is printed")
        .to_owned();
    assert!(key.len() >= 32, "{key}");
    let next: Vec<&String> = lines.iter().filter(|l| l.contains("curl ")).collect();
    assert_eq!(next.len(), 3, "three next commands: {lines:#?}");
    assert!(next.iter().all(|l| l.contains(&format!("http://{addr}"))));

    // Only the digest is stored, readable by the owner only; the key is in no file.
    let file = tree.path().join("data/admin.key.sha256");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert_eq!(stored.trim(), hex::encode(Sha256::digest(key.as_bytes())));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    for entry in walk(&tree.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key is stored in {}",
            entry.display()
        );
    }

    // The key administers; no key or another key does not.
    assert_eq!(
        get(addr, "/api/v1/health/readiness", Some(&key)).status,
        200
    );
    assert_eq!(get(addr, "/api/v1/namespaces", Some(&key)).status, 200);
    assert_eq!(get(addr, "/api/v1/namespaces", None).status, 401);
    let wrong = format!("wald_admin_{}", "0".repeat(64));
    assert_eq!(get(addr, "/api/v1/namespaces", Some(&wrong)).status, 401);
    p.terminate();

    // The second start prints no key and the first one still works.
    let p = serve_script(&script, tree.path());
    let lines = p.until(|l| l.starts_with("wald listening on"));
    let addr = listening(&lines);
    let later = p.drain_for(Duration::from_millis(500));
    assert!(
        !lines
            .iter()
            .chain(&later)
            .any(|l| l.contains("WALD_ADMIN_KEY=")),
        "a key is printed once only: {later:#?}"
    );
    assert_eq!(get(addr, "/api/v1/namespaces", Some(&key)).status, 200);
    p.terminate();

    // A configured admin key wins over the stored digest.
    let mut cmd = Command::new("bash");
    let chosen = "c".repeat(40);
    cmd.arg(&script)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(tree.path())
        .env("WALD_BIN", env!("CARGO_BIN_EXE_wald"))
        .env("WALD_ADMIN_KEY", &chosen);
    let p = Proc::spawn(cmd);
    let addr = listening(&p.until(|l| l.starts_with("wald listening on")));
    assert_eq!(get(addr, "/api/v1/namespaces", Some(&chosen)).status, 200);
    assert_eq!(get(addr, "/api/v1/namespaces", Some(&key)).status, 401);
    p.terminate();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The README's quickstart block (between its markers).
fn quickstart() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("<!-- quickstart").expect("quickstart marker");
    let end = readme
        .find("<!-- /quickstart -->")
        .expect("quickstart end marker");
    let block = &readme[start..end];
    let code = block.split("```sh\n").nth(1).expect("a sh block");
    code.split("```").next().unwrap().to_owned()
}

#[test]
fn readme_quickstart_runs_as_printed() {
    let block = quickstart();
    assert!(block.contains("http://127.0.0.1:3000"));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wald"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env_remove("WALD_ADMIN_KEY");
    let p = Proc::spawn(cmd);
    let mut lines = p.until(|l| l.starts_with("wald listening on"));
    let addr = listening(&lines);
    lines.extend(p.until(|l| l.contains("export WALD_ADMIN_KEY=")));
    let key = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("export WALD_ADMIN_KEY="))
        .unwrap()
        .to_owned();
    // As printed, but on the port this test's server got.
    let script = block.replace("127.0.0.1:3000", &addr.to_string());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("WALD_ADMIN_KEY", &key)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains(r#""name":"orders""#), "{stdout}");
    assert!(lines[1].contains(r#""durable":"true""#), "{stdout}");
    assert!(
        lines[2].contains(&format!("\"messageId\":"))
            && lines[2].contains("1234")
            && lines[2].contains("99.5"),
        "the message read back by id: {stdout}"
    );
    assert!(stdout.contains("wald_http_requests_total{"), "{stdout}");
    assert!(stdout.contains("wald_log_fsyncs_total{"), "{stdout}");
    assert!(stdout.contains("Swagger UI: HTTP 200"), "{stdout}");
    p.terminate();
}

#[test]
fn json_logs_carry_one_access_line_per_request_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k".repeat(40);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wald"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("WALD_ADMIN_KEY", &key)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    let addr = loop {
        let l = lines.next().expect("a listening line").unwrap();
        if let Some(r) = l.strip_prefix("wald listening on http://") {
            break r
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap();
        }
    };
    let ns = request(
        addr,
        "POST",
        "/api/v1/namespaces",
        &[("x-api-key", &key), ("content-type", "application/json")],
        Some(br#"{"name":"orders"}"#),
    );
    assert_eq!(ns.status, 201);
    let w = request(
        addr,
        "POST",
        "/api/v1/wal/write",
        &[
            ("x-api-key", &key),
            ("content-type", "application/json"),
            ("x-request-id", "trace-me-1"),
        ],
        Some(br#"{"namespace":"orders","payload":{"a":1}}"#),
    );
    assert_eq!(w.status, 202);
    assert_eq!(get(addr, "/api/v1/namespaces/nope", Some(&key)).status, 404);
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(&key), "the key is never logged");
    let access: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["target"] == "wald::access")
        .collect();
    assert_eq!(access.len(), 3, "one line per request: {stderr}");
    let write = access
        .iter()
        .find(|v| v["fields"]["route"] == "/api/v1/wal/write")
        .unwrap_or_else(|| panic!("{access:#?}"));
    assert_eq!(write["level"], "INFO");
    assert_eq!(write["fields"]["status"], 202);
    assert_eq!(write["fields"]["method"], "POST");
    assert!(write["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(write["span"]["request_id"], "trace-me-1");
    assert_eq!(write["span"]["key"], "admin");
    let missing = access
        .iter()
        .find(|v| v["fields"]["status"] == 404)
        .unwrap_or_else(|| panic!("{access:#?}"));
    assert_eq!(missing["fields"]["route"], "/api/v1/namespaces/{namespace}");
}

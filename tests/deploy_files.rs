//! The deployment files in `deploy/` cannot be run here (no container engine, no cluster,
//! no systemd as PID 1), so they are checked statically: every file parses; every `wald`
//! flag, `WALD_*` variable, port and path they use exists in the binary; the probe paths
//! answer on a real server; every metric name the alert rules and the dashboard query is
//! one a real server exports.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

fn yaml_docs(file: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(file))
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("deploy/{file}: {e}")))
        .collect()
}

fn wald(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wald"))
        .args(args)
        .env_remove("WALD_CONFIG")
        .env_remove("WALD_ADMIN_KEY")
        .output()
        .expect("run wald")
}

/// Every `--flag` in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for w in text.split(|c: char| c.is_whitespace() || "\"',[]".contains(c)) {
        if let Some(f) = w.strip_prefix("--") {
            let f: String = f
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !f.is_empty() && w.len() > 2 {
                out.insert(format!("--{f}"));
            }
        }
    }
    out
}

/// Every `WALD_*` variable named in `text`.
fn env_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("WALD_") {
        let start = i + p;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_uppercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        out.insert(text[start..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn every_file_parses() {
    assert_eq!(yaml_docs("compose.yaml").len(), 1);
    let k8s = yaml_docs("k8s/wald.yaml");
    let kinds: Vec<&str> = k8s.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "StatefulSet"]);
    let rules = yaml_docs("prometheus/wald-alerts.yaml");
    assert!(rules[0]["groups"][0]["rules"]
        .as_sequence()
        .is_some_and(|r| r.len() >= 8));
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/wald-dashboard.json")).unwrap();
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    // The TOML configurations load and validate with the server's own loader.
    let dir = tempfile::tempdir().unwrap();
    let from_configmap = dir.path().join("configmap.toml");
    std::fs::write(
        &from_configmap,
        k8s[0]["data"]["wald.toml"].as_str().unwrap(),
    )
    .unwrap();
    for f in [deploy("wald.compose.toml"), from_configmap] {
        let o = wald(&["config", "check", f.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The systemd unit: sections and the hardening the issue asks for.
    let unit = read("wald.service");
    for line in [
        "[Unit]",
        "[Service]",
        "[Install]",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=wald",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "wald.service lacks {line}"
        );
    }
    for l in unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            l.starts_with('[') || l.contains('='),
            "wald.service: not a section or a key: {l}"
        );
    }
}

#[test]
fn every_flag_and_variable_is_the_binarys() {
    let help = String::from_utf8(wald(&["serve", "--help"]).stdout).unwrap();
    let top = String::from_utf8(wald(&["--help"]).stdout).unwrap();
    let k8s = yaml_docs("k8s/wald.yaml");
    let compose = yaml_docs("compose.yaml");
    let args = |v: &serde_yaml::Value| -> String {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let k8s_args = args(&k8s[2]["spec"]["template"]["spec"]["containers"][0]["args"]);
    let compose_args = args(&compose[0]["services"]["wald"]["command"]);
    let docker = read("Dockerfile");
    let cmd_line = docker
        .lines()
        .find(|l| l.starts_with("CMD "))
        .unwrap()
        .to_owned();
    let exec = read("wald.service")
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap()
        .to_owned();
    for (what, text) in [
        ("k8s args", &k8s_args),
        ("compose command", &compose_args),
        ("Dockerfile CMD", &cmd_line),
        ("systemd ExecStart", &exec),
    ] {
        assert!(text.contains("serve"), "{what}: {text}");
        let fs = flags(text);
        assert!(!fs.is_empty(), "{what}");
        for f in fs {
            assert!(
                help.contains(&f),
                "{what} uses {f}, which `wald serve` does not take"
            );
        }
        // The data directory is the one the file mounts or declares.
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || "\"',[]".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        assert!(
            words
                .windows(2)
                .any(|w| w == ["--data-dir", "/var/lib/wald"]),
            "{what}: {text}"
        );
    }
    // Every WALD_ variable: a configuration key the loader accepts, or one the binary reads.
    let mut all = String::new();
    for f in [
        "Dockerfile",
        "compose.yaml",
        "k8s/wald.yaml",
        "wald.service",
    ] {
        all.push_str(&read(f));
    }
    let vars = env_vars(&all);
    assert!(vars.contains("WALD_LOG_FORMAT"), "{vars:?}");
    for v in vars {
        if v.contains("__") {
            let mut c = wald::config::Config::default();
            c.apply_env([(v.as_str(), "1")])
                .unwrap_or_else(|e| panic!("{v} is not a configuration key: {e}"));
        } else {
            let known = [
                "WALD_ADMIN_KEY",
                "WALD_CONFIG",
                "WALD_LISTEN",
                "WALD_DATA_DIR",
            ];
            assert!(
                known.contains(&v.as_str()) || top.contains(&v),
                "{v} is read by nothing in wald"
            );
        }
    }
    // Ports: the image exposes, compose publishes and the pod declares the port it listens on.
    assert!(docker.contains("EXPOSE 3000") && cmd_line.contains("0.0.0.0:3000"));
    assert!(compose_args.contains("0.0.0.0:3000"));
    let ports = &compose[0]["services"]["wald"]["ports"][0];
    assert!(ports.as_str().unwrap().ends_with(":3000"));
    let container = &k8s[2]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(3000));
    assert!(k8s_args.contains("0.0.0.0:3000"));
    // Paths: the config and the admin key file are where the volumes put them.
    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(mounts.contains(&("data", "/var/lib/wald")));
    assert!(mounts.contains(&("config", "/etc/wald")) && k8s_args.contains("/etc/wald/wald.toml"));
    assert!(k8s[0]["data"]["wald.toml"].is_string());
    assert!(
        mounts.contains(&("admin-key", "/run/secrets/wald"))
            && k8s_args.contains("/run/secrets/wald/admin.key")
    );
}

/// A real server; killed on drop.
struct Server(std::process::Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KEY: &str = "deploy-admin-key-0123456789abcdef0123456789";

fn serve(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("WALD_ADMIN_KEY", KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().expect("started").unwrap();
        if let Some(r) = l.strip_prefix("wald listening on http://") {
            break r.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server(child, addr)
}

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw)
}

#[test]
fn probes_answer_and_every_metric_queried_exists() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    // The probe paths of the StatefulSet answer 200 on a started server.
    let k8s = yaml_docs("k8s/wald.yaml");
    let container = &k8s[2]["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(http(s.1, "GET", path, None).0, 200, "{probe} {path}");
    }
    assert!(container["lifecycle"]["preStop"].is_mapping());
    // Some traffic, so that labelled series exist.
    assert_eq!(
        http(
            s.1,
            "POST",
            "/api/v1/namespaces",
            Some(r#"{"name":"orders"}"#)
        )
        .0,
        201
    );
    assert_eq!(
        http(
            s.1,
            "POST",
            "/api/v1/wal/write",
            Some(r#"{"namespace":"orders","payload":{"a":1}}"#)
        )
        .0,
        202
    );
    let (status, metrics) = http(s.1, "GET", "/metrics", None);
    assert_eq!(status, 200);

    let mut queries = String::new();
    for r in yaml_docs("prometheus/wald-alerts.yaml")[0]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
    {
        queries.push_str(r["expr"].as_str().unwrap());
        queries.push('\n');
    }
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/wald-dashboard.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        queries.push_str(p["targets"][0]["expr"].as_str().unwrap());
        queries.push('\n');
    }
    let mut names = BTreeSet::new();
    for w in queries.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if w.starts_with("wald_") || w.starts_with("process_") {
            names.insert(w.to_owned());
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
        .unwrap()
        + &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("src/delivery/metrics.rs"),
        )
        .unwrap()
        + &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mirror/metrics.rs"),
        )
        .unwrap_or_default()
        + &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/supervise.rs"))
            .unwrap();
    let mut by_scrape = 0;
    let mut by_source = Vec::new();
    for n in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        if metrics.contains(&format!("# TYPE {family} ")) {
            by_scrape += 1;
            continue;
        }
        // Families that appear only after their first event (a mirror, a dead letter, a
        // panic): registered under that name in the source.
        let short = family.strip_prefix("wald_").unwrap_or(family);
        assert!(
            family.starts_with("wald_") && src.contains(&format!("\"{short}\"")),
            "{n} is neither exported by a running server nor registered in the source"
        );
        by_source.push(n.clone());
    }
    assert!(
        by_scrape >= 10,
        "{by_scrape} names found in /metrics; by source: {by_source:?}"
    );
    eprintln!("metric names: {by_scrape} seen in /metrics, by source only: {by_source:?}");
}

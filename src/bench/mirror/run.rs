//! One backend's run: its server started, the service with a namespace mirrored to it, the
//! writers, the mirror followed until it caught up, the figures.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::super::delivery::harness::{client_rt, config, create_namespace, Millis, Server};
use super::super::stats::{cpu_secs, pid_cpu_secs};
use super::super::writers::Writers;
use super::backends::{self, backend_count};
use super::load::{
    ack, catch_up, confirmations, lag_records, lag_records_at, sample_commits, Acked,
};
use super::sqs::Drainers;
use super::tables::paced;
use super::{Backend, BackendReport, MirrorOptions, NS};
use crate::cli::CliError;

/// The mirror's `backendConfig` without the endpoints and credentials.
fn shown(cfg: &Value) -> Value {
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
}

/// What the confirmations say of the acknowledged writes.
struct Confirmed {
    /// Per confirmed write: its 202 → its confirmation, µs.
    lags: Vec<i64>,
    /// Writes confirmed.
    mirrored: u64,
    /// From the first to the last confirmation, seconds.
    mirror_secs: f64,
    /// From the last 202 to the last confirmation, seconds.
    drain_secs: f64,
    /// Records acknowledged but not confirmed at the last 202.
    lag_records_at_end: u64,
}

impl Confirmed {
    fn of(acked: &[Acked], commits: &[Vec<(i64, u64)>]) -> Self {
        let lag_records_at_end = lag_records_at(commits, acked);
        let confirmed = confirmations(acked, commits);
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
        Self {
            lags,
            mirrored: times.len() as u64,
            mirror_secs: (last - first) as f64 / 1e6,
            drain_secs: ((last - write_end_us).max(0)) as f64 / 1e6,
            lag_records_at_end,
        }
    }
}

/// What the writers did, and the lag seen meanwhile.
struct Written {
    /// From the first write to the last answer, seconds.
    write_secs: f64,
    /// Write latencies, µs.
    write_lat: Vec<i64>,
    acked: Vec<Acked>,
    /// The largest lag in records, sampled every 50 ms until the mirror caught up.
    lag_max: u64,
}

/// Runs the writers, then waits for the mirror to catch up, following the lag meanwhile.
fn write(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    w: &Arc<Writers>,
    backend: Backend,
    opts: &MirrorOptions,
) -> Written {
    let start = w.start;
    let lag = || lag_records(server, backend, opts.partitions);
    let lag_max = AtomicU64::new(0);
    let watching = AtomicBool::new(true);
    let (write_secs, write_lat, acked) = thread::scope(|s| {
        // Lag in records, every 50 ms, until the mirror has caught up.
        s.spawn(|| {
            while watching.load(Ordering::Relaxed) {
                lag_max.fetch_max(lag(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        let (write_lat, acked) = w.run(rt, opts.concurrency, ack, || {
            eprintln!(
                "  {:>5.1} s  acknowledged {:>8}  mirror lag {:>8} records",
                start.elapsed().as_secs_f64(),
                w.sent.load(Ordering::Relaxed),
                lag()
            );
        });
        let write_secs = start.elapsed().as_secs_f64();
        catch_up(lag, acked.len(), start, opts.drain_limit);
        watching.store(false, Ordering::Relaxed);
        (write_secs, write_lat, acked)
    });
    Written {
        write_secs,
        write_lat,
        acked,
        lag_max: lag_max.into_inner(),
    }
}

/// The mirror's errors (retried) and refusals, all partitions.
fn mirror_errors(server: &Server) -> (u64, u64) {
    let status = server
        .app
        .namespace(NS)
        .map(|ns| server.app.mirrors.status(&ns))
        .unwrap_or_default();
    status
        .iter()
        .fold((0, 0), |(e, r), m| (e + m.errors, r + m.refused))
}

/// Measures `backend`, its files and the service's in `dir`.
pub(super) fn run_backend(
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
    let running = backends::start(backend, opts, dir)?;
    let mut cfg = running.config.clone();
    let drainers = Drainers::start(&rt, backend, opts, &mut cfg)?;
    let server = Server::start(&config(&dir.join("wald"))?)?;
    if let (Backend::Kafka, Some(ms), Some(m)) =
        (backend, opts.kafka_linger_ms, cfg.as_object_mut())
    {
        m.insert("lingerMs".into(), json!(ms));
    }
    let mut mirror = json!({ "backend": backend.mirror(), "backendConfig": cfg });
    if opts.durability != "sync" {
        if backend != Backend::Kafka {
            return Err(format!(
                "--durability {} needs the kafka backend, not {}",
                opts.durability,
                backend.name()
            )
            .into());
        }
        mirror["durability"] = json!(opts.durability);
    }
    create_namespace(&rt, &server, NS, opts.partitions, mirror)?;
    thread::sleep(Duration::from_secs(1)); // the supervisor starts the consumers
    let shown_cfg = shown(&cfg);
    eprintln!(
        "{}: {messages} messages, {} writers{}, {} partitions, {} B payloads, durability {}; {}; backendConfig {shown_cfg}",
        backend.name(),
        opts.concurrency,
        paced(rate),
        opts.partitions,
        opts.payload_bytes,
        opts.durability,
        running.server,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let samplers = sample_commits(&rt, &server, backend, opts.partitions, &stop_rx);
    let backend_cpu0 = running.pid.and_then(|p| pid_cpu_secs(p).ok());
    let cpu0 = cpu_secs(&[])?;
    let w = Writers::new(
        server.run.addr,
        NS,
        messages,
        opts.duration,
        rate,
        opts.payload_bytes,
    );
    let start = w.start;
    let written = write(&rt, &server, &w, backend, opts);
    let cpu = cpu_secs(&[])? - cpu0;
    let backend_cpu = running
        .pid
        .and_then(|p| pid_cpu_secs(p).ok())
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
    let (mirror_errors, refused) = mirror_errors(&server);
    let Written {
        write_secs,
        write_lat,
        acked,
        lag_max,
    } = written;
    let c = Confirmed::of(&acked, &commits);
    // Give the drainers a moment to take what is left, then count.
    let in_backend = backend_count(backend, &running.config, opts.partitions)
        .or_else(|| drainers.received(c.mirrored));
    drainers.stop(&rt);
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
        mirrored: c.mirrored,
        mirror_secs: c.mirror_secs,
        mirrored_per_s: c.mirrored as f64 / c.mirror_secs.max(1e-9),
        lag: Millis::of(c.lags),
        lag_records_max: lag_max.max(c.lag_records_at_end),
        lag_records_at_end: c.lag_records_at_end,
        drain_secs: c.drain_secs,
        in_backend,
        mirror_errors,
        refused,
        cpu_us_per_message: cpu * 1e6 / sent.max(1) as f64,
        backend_cpu_pct: backend_cpu.map(|c| c * 100.0 / run_secs.max(1e-9)),
    })
}

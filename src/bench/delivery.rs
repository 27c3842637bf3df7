//! `wald bench delivery`: delivery end to end, in one process, against the real code — the
//! service (`App::start` + `server::run` on 127.0.0.1:0, fresh data directories) and a
//! built-in receiver (axum on 127.0.0.1:0, answering 200 at once and recording, per request,
//! its arrival time, its `X-Wald-Message-Id` and the time stamp `t` the payload carries).
//!
//! 1. **Throughput.** A namespace (durability `sync`, P partitions) with one `webhook` target
//!    to the receiver; C writers POST `/api/v1/wal/write` on keep-alive connections, each
//!    payload `{"t":<send time, µs>,"pad":"x…"}`. Reported: messages delivered per second
//!    (distinct ids / time from the first to the last delivery), send→delivery latency, write
//!    latency, and the consumer lag when the writers stop.
//! 2. **Delays.** N delayed messages, due over a window starting `lead` seconds after the
//!    write, appended straight to the partition logs in batches of 1000 (`Durability::None`,
//!    indexed like the HTTP path does, consumers woken) — the HTTP path is part 1's; then:
//!    RSS once the consumers have parked them all, the restart time with them pending (stop,
//!    `App::start` on the same directory, until `/api/v1/health/readiness` answers 200), and
//!    the lateness (arrival − due) of the first `sample` messages to come due.
//!
//! Progress on stderr; tables and one JSON line on stdout. No figure is asserted.

pub(crate) mod harness;
mod tables;

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hyper::Method;
use wald_storage::{now_ms, Durability};

use super::common::{begin, Output};
use super::remove_settled;
use super::writers::Writers;
use crate::app::{App, IDEMPOTENCY_WINDOW_MS};
use crate::cli::CliError;
use crate::message::{RecordIds, StoredMessage};
use harness::{
    client_rt, config, create_namespace, dir_mb, epoch_us, once, start_receiver, webhook, Inbox,
    Server,
};
pub use harness::{Millis, Rss};
use tables::targets;
pub use tables::{render, DelayReport, DeliveryReport, ThroughputReport};

/// Records per direct append of the delay phase.
pub(crate) const BATCH: u64 = 1000;

/// Options of `wald bench delivery`.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Where to create the (fresh, removed afterwards) working directory.
    pub dir: Option<PathBuf>,
    /// Smaller defaults.
    pub quick: bool,
    /// Run part 1.
    pub throughput: bool,
    /// Run part 2.
    pub delays: bool,
    /// Messages written in part 1.
    pub messages: u64,
    /// Part 1's writers stop after this long even if not all messages are sent.
    pub duration: Duration,
    /// Writers (connections, one request in flight each).
    pub concurrency: usize,
    /// Partitions of each namespace.
    pub partitions: u32,
    /// Bytes of each part-1 payload JSON.
    pub payload_bytes: usize,
    /// Delayed messages in part 2.
    pub delay_count: u64,
    /// Width of the window their due times are spread over.
    pub delay_spread: Duration,
    /// From the write to the window's start.
    pub delay_lead: Duration,
    /// Messages (the first due) whose lateness is measured.
    pub sample: u64,
    /// Write the JSON report here too.
    pub json: Option<PathBuf>,
    /// Write each sampled delay's due time and lateness here (CSV).
    pub samples: Option<PathBuf>,
}

impl DeliveryOptions {
    /// The defaults of a full or a `--quick` run.
    #[must_use]
    pub fn new(quick: bool) -> Self {
        let (messages, delays, spread, lead, sample) = if quick {
            (20_000, 100_000, 60, 30, 5_000)
        } else {
            (100_000, 1_000_000, 600, 90, 20_000)
        };
        Self {
            dir: None,
            quick,
            throughput: true,
            delays: true,
            messages,
            duration: Duration::from_secs(120),
            concurrency: 64,
            partitions: 4,
            payload_bytes: 256,
            delay_count: delays,
            delay_spread: Duration::from_secs(spread),
            delay_lead: Duration::from_secs(lead),
            sample,
            json: None,
            samples: None,
        }
    }
}

fn throughput(opts: &DeliveryOptions, dir: &Path) -> Result<ThroughputReport, CliError> {
    let inbox = Arc::new(Inbox::default());
    let receiver = start_receiver(&inbox)?;
    let server = Server::start(&config(dir)?)?;
    let rt = client_rt()?;
    let hook = format!("http://{}/hook", receiver.addr);
    create_namespace(&rt, &server, "tp", opts.partitions, webhook(&hook))?;
    thread::sleep(Duration::from_secs(1)); // the supervisor starts the consumers (every 500 ms)
    eprintln!(
        "throughput: {} messages, {} writers, {} partitions, {} B payloads -> {hook}",
        opts.messages, opts.concurrency, opts.partitions, opts.payload_bytes
    );
    let cpu0 = super::stats::cpu_secs(&[])?;
    let w = Writers::new(
        server.run.addr,
        "tp",
        opts.messages,
        opts.duration,
        None,
        opts.payload_bytes,
    );
    let start = w.start;
    let (write_lat, _) = w.run(
        &rt,
        opts.concurrency,
        |_| Ok(()),
        || {
            eprintln!(
                "  {:>5.1} s  sent {:>8}  delivered {:>8}",
                start.elapsed().as_secs_f64(),
                w.sent.load(Ordering::Relaxed),
                inbox.count.load(Ordering::Relaxed)
            );
        },
    );
    let write_secs = start.elapsed().as_secs_f64();
    let end_us = epoch_us();
    let sent = w.sent.load(Ordering::Relaxed);
    let backlog = sent.saturating_sub(inbox.count.load(Ordering::Relaxed));
    let (lag, _) = server.gauges("tp", opts.partitions);
    eprintln!("  writers done: {sent} sent in {write_secs:.1} s; backlog {backlog}, consumer lag {lag} records; draining");
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let n = inbox.count.load(Ordering::Relaxed);
        if n >= sent && inbox.firsts(|_| true).0.len() as u64 >= sent {
            break;
        }
        if n != last {
            (last, last_change) = (n, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(15) {
            eprintln!("  no delivery for 15 s: {n} of {sent}; giving up");
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let cpu = super::stats::cpu_secs(&[])? - cpu0;
    server.stop()?;
    drop(receiver);
    let (firsts, duplicates) = inbox.firsts(|_| true);
    let first = firsts.iter().map(|f| f.1).min().unwrap_or(0);
    let lastd = firsts.iter().map(|f| f.1).max().unwrap_or(0);
    let delivery_secs = (lastd - first) as f64 / 1e6;
    let delivered = firsts.len() as u64;
    Ok(ThroughputReport {
        messages: opts.messages,
        concurrency: opts.concurrency,
        partitions: opts.partitions,
        payload_bytes: opts.payload_bytes,
        sent,
        write_errors: w.errors.load(Ordering::Relaxed),
        write_secs,
        writes_per_s: sent as f64 / write_secs.max(1e-9),
        write_latency: Millis::of(write_lat),
        delivered,
        duplicates,
        delivery_secs,
        delivered_per_s: delivered as f64 / delivery_secs.max(1e-9),
        latency: Millis::of(firsts.iter().map(|(t, a)| a - t).collect()),
        lag_records_at_end: lag,
        backlog_at_end: backlog,
        drain_secs: (lastd - end_us).max(0) as f64 / 1e6,
        cpu_us_per_message: cpu * 1e6 / delivered.max(1) as f64,
    })
}

/// Appends the delayed messages straight to the logs, indexed as the HTTP path does.
fn write_delays(app: &App, opts: &DeliveryOptions, base_ms: u64) -> Result<(), CliError> {
    let logs = app
        .engine
        .logs("delays")
        .ok_or("namespace delays has no logs")?;
    let spread_ms = u64::try_from(opts.delay_spread.as_millis()).unwrap_or(u64::MAX);
    let n = opts.delay_count;
    let now = now_ms();
    let mut i = 0;
    let mut chunk = 0usize;
    while i < n {
        let p = chunk % logs.len();
        let end = (i + BATCH).min(n);
        let mut records = Vec::with_capacity(BATCH as usize);
        let mut ids = Vec::with_capacity(BATCH as usize);
        for k in i..end {
            let due = base_ms + (u128::from(k) * u128::from(spread_ms) / u128::from(n)) as u64;
            let id = format!("wal_{now}_{k:09}");
            let msg = StoredMessage::new(
                id.clone(),
                "delays",
                serde_json::value::RawValue::from_string(format!(r#"{{"t":{}}}"#, due * 1000))?,
                now,
            );
            records.push(msg.to_record(b"", due)?);
            ids.push(RecordIds {
                message_id: id,
                idempotency_key: None,
                transaction_id: None,
            });
        }
        let a = logs[p].append(&records, Durability::None)?.wait()?;
        let applied: Vec<_> = ids
            .into_iter()
            .enumerate()
            .map(|(j, ids)| (a.first_offset + j as u64, ids, now))
            .collect();
        let p = u32::try_from(p).unwrap_or(0);
        app.state
            .apply("delays", p, &applied, IDEMPOTENCY_WINDOW_MS)?;
        app.delivery.appended("delays", p);
        (i, chunk) = (end, chunk + 1);
        if chunk.is_multiple_of(100) {
            eprintln!("  appended {i}");
        }
    }
    Ok(())
}

/// Polls until the consumers report `n` delays pending and no lag (or `limit` passes).
fn wait_pending(s: &Server, n: u64, limit: Duration, what: &str) -> Result<f64, CliError> {
    let start = Instant::now();
    let mut tick = Instant::now();
    loop {
        let (lag, pending) = s.gauges(
            "delays",
            s.app
                .namespace("delays")
                .map_or(1, |ns| ns.logs.len() as u32),
        );
        if lag == 0 && u64::try_from(pending).unwrap_or(0) >= n {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{what}: only {pending} of {n} pending after {limit:?} (lag {lag})"
            )
            .into());
        }
        if tick.elapsed() >= Duration::from_secs(2) {
            tick = Instant::now();
            eprintln!(
                "  {what}: {pending} pending, lag {lag} records ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Polls the readiness endpoint until it answers 200: seconds since `t`.
fn wait_ready(rt: &tokio::runtime::Runtime, addr: SocketAddr, t: Instant) -> f64 {
    rt.block_on(async {
        loop {
            let path = "/api/v1/health/readiness";
            if let Ok((200, _)) = once(addr, Method::GET, path, String::new()).await {
                return t.elapsed().as_secs_f64();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// Waits until the sampled delays have all arrived, or 30 s after the last one's due time.
fn wait_sample(
    inbox: &Inbox,
    in_sample: impl Fn(i64) -> bool + Copy,
    sample: u64,
    base_ms: u64,
    last_due_ms: u64,
) {
    let mut tick = Instant::now();
    loop {
        // The receiver waits while the lock is held: count cheaply, dedup only at the end.
        let mut got = inbox.count(in_sample);
        if got >= sample {
            got = inbox.firsts(in_sample).0.len() as u64;
        }
        if got >= sample || now_ms().saturating_sub(last_due_ms) > 30_000 {
            return;
        }
        if tick.elapsed() >= Duration::from_secs(2) {
            tick = Instant::now();
            let to_first = (base_ms as f64 - now_ms() as f64) / 1e3;
            eprintln!("  sample: {got} of {sample} delivered (first due in {to_first:.1} s)");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `due_ms,lateness_us` per sampled delay, in due order.
fn write_samples(path: &Path, firsts: &[(i64, i64)]) -> Result<(), CliError> {
    let mut sorted = firsts.to_vec();
    sorted.sort_unstable();
    let csv: String = std::iter::once("due_ms,lateness_us\n".to_owned())
        .chain(
            sorted
                .iter()
                .map(|(t, a)| format!("{},{}\n", t / 1000, a - t)),
        )
        .collect();
    std::fs::write(path, csv).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

fn delays(opts: &DeliveryOptions, dir: &Path) -> Result<DelayReport, CliError> {
    let inbox = Arc::new(Inbox::default());
    let receiver = start_receiver(&inbox)?;
    let cfg = config(dir)?;
    let server = Server::start(&cfg)?;
    let rt = client_rt()?;
    create_namespace(
        &rt,
        &server,
        "delays",
        opts.partitions,
        webhook(&format!("http://{}/hook", receiver.addr)),
    )?;
    thread::sleep(Duration::from_secs(1)); // the supervisor starts the consumers
    let rss_baseline = Rss::now();
    let n = opts.delay_count;
    let lead_ms = u64::try_from(opts.delay_lead.as_millis()).unwrap_or(u64::MAX);
    eprintln!(
        "delays: {n} messages due from {lead_ms} ms on, over {:?}; RSS {:.1} MB",
        opts.delay_spread, rss_baseline.total_mb
    );
    let start = Instant::now();
    let base_ms = now_ms() + lead_ms;
    write_delays(&server.app, opts, base_ms)?;
    let write_secs = start.elapsed().as_secs_f64();
    eprintln!("  appended {n} in {write_secs:.1} s; waiting until parked");
    wait_pending(&server, n, opts.delay_lead, "parking")?;
    let park_secs = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(500));
    let rss_parked = Rss::now();
    let parked = (0..opts.partitions).try_fold(0, |a, p| {
        server.app.state.parked_count("delays", p).map(|c| a + c)
    })?;
    let (state_mb, logs_mb) = (
        dir_mb(&dir.join("state")),
        dir_mb(dir) - dir_mb(&dir.join("state")),
    );
    eprintln!(
        "  parked {parked} in {park_secs:.1} s; RSS {:.1} MB; restarting",
        rss_parked.total_mb
    );

    let t = Instant::now();
    server.stop()?;
    let stop_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let server = Server::start(&cfg)?;
    let start_secs = t.elapsed().as_secs_f64();
    let ready_secs = wait_ready(&rt, server.run.addr, t);
    wait_pending(&server, n, Duration::from_secs(600), "resuming")?;
    let resumed_secs = t.elapsed().as_secs_f64();
    let rss_restarted = Rss::now();
    let margin_secs = (base_ms as f64 - now_ms() as f64) / 1e3;
    eprintln!("  ready in {ready_secs:.3} s (App::start {start_secs:.3} s), resumed in {resumed_secs:.2} s; first due in {margin_secs:.1} s");

    let sample = opts.sample.min(n);
    let spread_ms = u64::try_from(opts.delay_spread.as_millis()).unwrap_or(u64::MAX);
    let last_due_ms = base_ms
        + (u128::from(sample.saturating_sub(1)) * u128::from(spread_ms) / u128::from(n.max(1)))
            as u64;
    let in_sample = move |t_us: i64| t_us <= i64::try_from(last_due_ms * 1000).unwrap_or(i64::MAX);
    wait_sample(&inbox, in_sample, sample, base_ms, last_due_ms);
    let (firsts, _) = inbox.firsts(in_sample);
    server.stop()?;
    drop(receiver);
    if let Some(path) = &opts.samples {
        write_samples(path, &firsts)?;
    }
    let lateness: Vec<i64> = firsts.iter().map(|(t, a)| a - t).collect();
    Ok(DelayReport {
        delays: n,
        partitions: opts.partitions,
        spread_secs: opts.delay_spread.as_secs_f64(),
        lead_secs: opts.delay_lead.as_secs_f64(),
        write_secs,
        park_secs,
        parked,
        rss_baseline,
        rss_parked,
        rss_held_mb: rss_parked.total_mb - rss_baseline.total_mb,
        state_mb,
        logs_mb,
        stop_secs,
        start_secs,
        ready_secs,
        resumed_secs,
        rss_restarted,
        margin_secs,
        sample: lateness.len() as u64,
        early: lateness.iter().filter(|&&l| l < 0).count() as u64,
        within_20ms: lateness
            .iter()
            .filter(|&&l| (0..=20_000).contains(&l))
            .count() as u64,
        lateness: Millis::of(lateness),
    })
}

/// Runs `wald bench delivery`: progress on stderr, the tables and a JSON line on stdout, the
/// JSON to `opts.json` too when given.
pub fn run_delivery(opts: &DeliveryOptions) -> Result<DeliveryReport, CliError> {
    if opts.concurrency == 0
        || opts.partitions == 0
        || opts.partitions > 256
        || opts.delay_count == 0 && opts.delays
    {
        return Err("--concurrency, --partitions (1..=256) and --delays must be above 0".into());
    }
    let output = Output::create(opts.json.as_deref())?;
    let (work, machine) = begin("delivery", opts.dir.as_deref())?;
    let throughput = if opts.throughput {
        let r = throughput(opts, &work.0.join("throughput"))?;
        remove_settled(&work.0.join("throughput"))?;
        Some(r)
    } else {
        None
    };
    let delays = if opts.delays {
        Some(delays(opts, &work.0.join("delays"))?)
    } else {
        None
    };
    let mut report = DeliveryReport {
        machine,
        quick: opts.quick,
        throughput,
        delays,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    output.finish(&render(&report), &report)?;
    Ok(report)
}

//! What `wald bench mirror` reports: the figures, the targets against them, the tables.

use serde::Serialize;
use serde_json::Value;

use super::super::delivery::harness::Millis;
use super::super::report::{target_lines, Target};
use super::super::Machine;
use super::Backend;

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
    /// The targets against the figures.
    pub targets: Vec<Target>,
}

/// The targets of the figures.
pub(super) fn targets(r: &MirrorReport) -> Vec<Target> {
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

/// ` paced to R/s`, or nothing (unpaced).
pub(super) fn paced(rate: Option<f64>) -> String {
    rate.map_or(String::new(), |r| format!(" paced to {r:.0}/s"))
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
            paced(b.rate),
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
    target_lines(&mut s, "\ntargets:", &r.targets, |t| {
        let verdict = if t.met { "met" } else { "NOT met" };
        format!("  [{verdict}] {} — {}", t.target, t.measured)
    });
    s
}

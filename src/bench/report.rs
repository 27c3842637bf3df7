//! The tables printed after a run, and the project's targets checked against the figures
//! (reported, never asserted).

use std::fmt::Write as _;

use serde::Serialize;

use super::engine::EngineRow;
use super::stats::{size_label, us_label};
use super::{FsyncReport, SetReport};

/// One target of the project, met or not.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Which set the figure comes from.
    pub set: String,
    /// What is required.
    pub target: String,
    /// The measured figure.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// Appends `heading`, then one line per target as `line` words it.
pub(crate) fn target_lines(
    o: &mut String,
    heading: &str,
    targets: &[Target],
    line: impl Fn(&Target) -> String,
) {
    let _ = writeln!(o, "{heading}");
    for t in targets {
        let _ = writeln!(o, "{}", line(t));
    }
}

fn row(set: &SetReport, size: usize, c: usize) -> Option<&EngineRow> {
    set.engine
        .iter()
        .find(|r| r.record_bytes == size && r.writers == c && r.mode == "threads")
}

fn async_row(set: &SetReport, size: usize, c: usize) -> Option<&EngineRow> {
    set.engine
        .iter()
        .find(|r| r.record_bytes == size && r.writers == c && r.mode == "async")
}

/// Collects the targets of one set.
struct Sink<'a> {
    set: &'a SetReport,
    out: &'a mut Vec<Target>,
}

impl Sink<'_> {
    fn push(&mut self, target: String, measured: String, met: bool) {
        self.out.push(Target {
            set: self.set.label.clone(),
            target,
            measured,
            met,
        });
    }
}

/// Latency, batching, throughput and CPU of the writers.
#[allow(clippy::too_many_lines)]
fn write_targets(k: &mut Sink<'_>) {
    let s = k.set;
    if let Some(r) = row(s, 1 << 10, 1) {
        k.push(
            "1 writer, 1 KiB Sync: ack p50 ≤ 1.2 × L(4 KiB)".into(),
            format!(
                "{} / {} = {:.2}×",
                us_label(r.latency.p50_us),
                us_label(r.l_single_us),
                r.p50_over_l_single
            ),
            r.p50_over_l_single <= 1.2,
        );
        if let (Some(d), true) = (s.disk.sizes.first(), s.spinners > 0) {
            let ratio = r.latency.p99_us / d.zeroed.p99_us;
            k.push(
                "1 writer, contended: ack p99 ≤ 2 × disk fdatasync p99 (4 KiB, same contention)"
                    .into(),
                format!(
                    "{} / {} = {ratio:.2}×",
                    us_label(r.latency.p99_us),
                    us_label(d.zeroed.p99_us)
                ),
                ratio <= 2.0,
            );
        }
    }
    for c in [16, 64, 256] {
        if let Some(r) = row(s, 1 << 10, c) {
            let need = 0.75 * c as f64;
            k.push(
                format!("1 KiB, C = {c}: records per fsync ≥ {need:.0}"),
                format!("{:.1}", r.records_per_fsync),
                r.records_per_fsync >= need,
            );
        }
    }
    for c in [16, 64] {
        if let Some(r) = row(s, 1 << 10, c) {
            k.push(
                format!("1 KiB, C = {c}: throughput ≥ 50% of device bound"),
                format!(
                    "{:.0} / {:.0} appends/s = {:.0}%",
                    r.appends_per_s,
                    r.device_bound,
                    r.frac_of_bound * 100.0
                ),
                r.frac_of_bound >= 0.5,
            );
        }
    }
    if let Some(r) = row(s, 1 << 10, 64) {
        k.push(
            "1 KiB, C = 64: CPU ≤ 5 µs per durable append".into(),
            format!("{:.1} µs", r.cpu_us_per_append),
            r.cpu_us_per_append <= 5.0,
        );
    }
    for c in [16, 64, 256] {
        if let Some(r) = async_row(s, 1 << 10, c) {
            let need = 0.75 * c as f64;
            k.push(
                format!("async, 1 KiB, C = {c}: records per fsync ≥ {need:.0}"),
                format!("{:.1}", r.records_per_fsync),
                r.records_per_fsync >= need,
            );
            k.push(
                format!("async, 1 KiB, C = {c}: throughput ≥ 50% of device bound"),
                format!(
                    "{:.0} / {:.0} appends/s = {:.0}%",
                    r.appends_per_s,
                    r.device_bound,
                    r.frac_of_bound * 100.0
                ),
                r.frac_of_bound >= 0.5,
            );
            k.push(
                format!("async, 1 KiB, C = {c}: CPU ≤ 5 µs per durable append"),
                format!("{:.1} µs", r.cpu_us_per_append),
                r.cpu_us_per_append <= 5.0,
            );
        }
    }
    if let Some(r) = row(s, 16 << 10, 256) {
        k.push(
            "16 KiB, C = 256: ≥ 50% of B".into(),
            format!(
                "{:.0} of {:.0} MB/s = {:.0}%",
                r.mb_s,
                s.disk.bandwidth_mb_s,
                r.frac_of_bandwidth * 100.0
            ),
            r.frac_of_bandwidth >= 0.5,
        );
    }
    for r in &s.engine {
        k.push(
            format!(
                "{} × {} ({}): p99 ≤ 3 × disk p99 at the batch size",
                size_label(r.record_bytes),
                r.writers,
                r.mode
            ),
            format!(
                "{} / {} ({}) = {:.2}×",
                us_label(r.latency.p99_us),
                us_label(r.disk_p99_at_batch_us),
                size_label(r.bytes_per_fsync.round() as usize),
                r.p99_over_disk_p99
            ),
            r.p99_over_disk_p99 <= 3.0,
        );
    }
}

/// Reads and recovery.
fn read_targets(k: &mut Sink<'_>) {
    let r = &k.set.read;
    if let Some(&gb) = r.passes_gb_s.first() {
        k.push(
            "sequential read of sealed segments ≥ 1 GB/s".into(),
            format!("{gb:.2} GB/s (first pass)"),
            gb >= 1.0,
        );
    }
    k.push(
        "recovery with a torn tail < 3 s (1 GiB log)".into(),
        format!(
            "{:.3} s for {:.0} MiB",
            r.recovery_secs,
            r.recovery_log_bytes as f64 / f64::from(1u32 << 20)
        ),
        r.recovery_secs < 3.0,
    );
}

/// Checks every target the figures of `sets` allow.
#[must_use]
pub fn targets(sets: &[SetReport]) -> Vec<Target> {
    let mut out = Vec::new();
    for set in sets {
        let mut k = Sink { set, out: &mut out };
        write_targets(&mut k);
        read_targets(&mut k);
    }
    out
}

fn disk_table(o: &mut String, s: &SetReport) {
    let d = &s.disk;
    let _ = writeln!(
        o,
        "disk: one write_all_at + fdatasync per write, latency in µs (buffered: no fsync)"
    );
    let _ = writeln!(
        o,
        "{:>8} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>9}",
        "size", "app p50", "p99", "p999", "zero p50", "p99", "p999", "buf MB/s"
    );
    for r in &d.sizes {
        let _ = writeln!(
            o,
            "{:>8} | {:>7.0} {:>7.0} {:>7.0} | {:>8.0} {:>7.0} {:>7.0} | {:>9.0}",
            size_label(r.size),
            r.append.p50_us,
            r.append.p99_us,
            r.append.p999_us,
            r.zeroed.p50_us,
            r.zeroed.p99_us,
            r.zeroed.p999_us,
            r.buffered_mb_s
        );
    }
    let _ = writeln!(
        o,
        "durable bandwidth B (sequential 1 MiB + fdatasync, zero-filled): {:.0} MB/s over {} MiB",
        d.bandwidth_mb_s,
        d.bandwidth_bytes >> 20
    );
}

fn engine_table(o: &mut String, s: &SetReport) {
    let _ = writeln!(
        o,
        "engine: C writers × append_one(.., Sync), default LogConfig, a fresh log per phase (latency in µs)"
    );
    let _ = writeln!(o, "{:>7} {:>7} {:>4} | {:>9} {:>6} | {:>7} {:>7} {:>7} | {:>7} {:>8} {:>7} {:>5} {:>6} | {:>6} | {:>9} {:>6} | {:>8} {:>6}",
        "mode", "record", "C", "appends/s", "MB/s", "p50", "p99", "p999", "rec/fs", "batch", "fsync", "busy", "L now", "CPU µs", "bound/s", "%bound", "p99/dsk", "p50/L");
    for r in &s.engine {
        let _ = writeln!(o, "{:>7} {:>7} {:>4} | {:>9.0} {:>6.1} | {:>7.0} {:>7.0} {:>7.0} | {:>7.1} {:>8} {:>7.0} {:>4.0}% {:>6.0} | {:>6.1} | {:>9.0} {:>5.0}% | {:>7.2}× {:>5.2}×",
            r.mode, size_label(r.record_bytes), r.writers, r.appends_per_s, r.mb_s,
            r.latency.p50_us, r.latency.p99_us, r.latency.p999_us,
            r.records_per_fsync, size_label(r.bytes_per_fsync.round() as usize), r.fsync_mean_us, r.fsync_busy * 100.0, r.disk_now.p50_us,
            r.cpu_us_per_append, r.device_bound, r.frac_of_bound * 100.0, r.p99_over_disk_p99, r.p50_over_l_single);
    }
    let _ = writeln!(o, "  bound = min(C / L(C·R), B / R), L = zero-filled p50, R = encoded record (payload + 44 B);");
    let _ = writeln!(
        o,
        "  batch = bytes per fsync; fsync = the engine's mean fdatasync µs, busy = share of the phase in fdatasync;\n  \
         L now = p50 of 100 raw 4 KiB write + fdatasync right before the phase;\n  \
         CPU = on-CPU µs per append (all threads but busy-loops); p99/dsk = p99 / disk zero-filled p99 at the\n  \
         batch; p50/L = p50 / L(max(R, 4 KiB))"
    );
}

fn partitions_table(o: &mut String, s: &SetReport) {
    if s.partitions.is_empty() {
        return;
    }
    let _ = writeln!(o, "partitions: C writer threads (1 KiB, Sync) spread over P logs, each with its own group commit");
    let _ = writeln!(
        o,
        "{:>4} {:>4} | {:>9} {:>9} {:>7} | {:>7} {:>7}",
        "P", "C", "appends/s", "fsyncs/s", "rec/fs", "p50", "p99"
    );
    for r in &s.partitions {
        let _ = writeln!(
            o,
            "{:>4} {:>4} | {:>9.0} {:>9.0} {:>7.1} | {:>7.0} {:>7.0}",
            r.partitions,
            r.writers,
            r.appends_per_s,
            r.fsyncs_per_s,
            r.records_per_fsync,
            r.latency.p50_us,
            r.latency.p99_us
        );
    }
    let _ = writeln!(
        o,
        "  fsyncs/s growing with P means the logs' fsyncs overlap (they are not serialised)."
    );
}

fn read_lines(o: &mut String, s: &SetReport) {
    let r = &s.read;
    let passes: Vec<String> = r.passes_gb_s.iter().map(|g| format!("{g:.2}")).collect();
    let _ = writeln!(o, "read: Log::read_from(0) over {} sealed segments, {:.0} MiB of {} records: {} GB/s (passes)",
        r.segments, r.bytes as f64 / f64::from(1u32 << 20), size_label(r.record_bytes), passes.join(" / "));
    let _ = writeln!(o, "recovery: Log::open after a torn tail: {:.3} s for {:.0} MiB ({} records CRC-checked, {} bytes cut; warm page cache)",
        r.recovery_secs, r.recovery_log_bytes as f64 / f64::from(1u32 << 20), r.recovery_records_scanned, r.recovery_bytes_cut);
}

fn side_by_side(o: &mut String, q: &SetReport, c: &SetReport) {
    let _ = writeln!(o, "\n== quiet vs contended (2 busy-loop threads) ==");
    let _ = writeln!(
        o,
        "{:>8} | {:>21} | {:>21}",
        "disk", "quiet p50 / p99", "contended p50 / p99"
    );
    for (a, b) in q.disk.sizes.iter().zip(&c.disk.sizes) {
        let _ = writeln!(
            o,
            "{:>8} | {:>21} | {:>21}",
            size_label(a.size),
            format!(
                "{} / {}",
                us_label(a.zeroed.p50_us),
                us_label(a.zeroed.p99_us)
            ),
            format!(
                "{} / {}",
                us_label(b.zeroed.p50_us),
                us_label(b.zeroed.p99_us)
            )
        );
    }
    let _ = writeln!(
        o,
        "{:>8} | {:>21} | {:>21}",
        "B",
        format!("{:.0} MB/s", q.disk.bandwidth_mb_s),
        format!("{:.0} MB/s", c.disk.bandwidth_mb_s)
    );
    let _ = writeln!(
        o,
        "{:>12} | {:>38} | {:>38}",
        "engine", "quiet appends/s, p50 / p99, rec/fs", "contended appends/s, p50 / p99, rec/fs"
    );
    for (a, b) in q.engine.iter().zip(&c.engine) {
        let f = |r: &EngineRow| {
            format!(
                "{:.0}, {} / {}, {:.1}",
                r.appends_per_s,
                us_label(r.latency.p50_us),
                us_label(r.latency.p99_us),
                r.records_per_fsync
            )
        };
        let _ = writeln!(
            o,
            "{:>12} | {:>38} | {:>38}",
            format!("{} × {}", size_label(a.record_bytes), a.writers),
            f(a),
            f(b)
        );
    }
    let _ = writeln!(
        o,
        "{:>12} | {:>38} | {:>38}",
        "read GB/s",
        format!("{:.2}", q.read.passes_gb_s.first().unwrap_or(&0.0)),
        format!("{:.2}", c.read.passes_gb_s.first().unwrap_or(&0.0))
    );
    let _ = writeln!(
        o,
        "{:>12} | {:>38} | {:>38}",
        "recovery",
        format!("{:.3} s", q.read.recovery_secs),
        format!("{:.3} s", c.read.recovery_secs)
    );
    for s in [q, c] {
        if let (Some(r), Some(d)) = (row(s, 1 << 10, 1), s.disk.sizes.first()) {
            let _ = writeln!(o, "headline [{}]: 1 writer 1 KiB Sync p99 {} vs disk fdatasync p99 (4 KiB, zero-filled) {} = {:.2}×; p50 {} vs {} = {:.2}×",
                s.label, us_label(r.latency.p99_us), us_label(d.zeroed.p99_us), r.latency.p99_us / d.zeroed.p99_us,
                us_label(r.latency.p50_us), us_label(d.zeroed.p50_us), r.latency.p50_us / d.zeroed.p50_us);
        }
    }
}

/// The human-readable tables of a report.
#[must_use]
pub fn render(rep: &FsyncReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "wald bench fsync{} — {} CPUs, kernel {}, load at start {}; files in {}",
        if rep.quick { " --quick" } else { "" },
        rep.machine.nproc,
        rep.machine.kernel,
        rep.machine.loadavg,
        rep.dir
    );
    for s in &rep.sets {
        let _ = writeln!(o, "\n== {} ({} busy-loop threads) ==", s.label, s.spinners);
        disk_table(&mut o, s);
        let _ = writeln!(o);
        engine_table(&mut o, s);
        partitions_table(&mut o, s);
        let _ = writeln!(o);
        read_lines(&mut o, s);
    }
    if let [q, c] = &rep.sets[..] {
        side_by_side(&mut o, q, c);
    }
    target_lines(
        &mut o,
        "\n== targets (reported, not asserted) ==",
        &rep.targets,
        |t| {
            let verdict = if t.met { "met" } else { "NOT MET" };
            format!("{verdict:<8} [{:<9}] {} — {}", t.set, t.target, t.measured)
        },
    );
    o
}

//! Small measurement helpers: latency summaries, process CPU time, interpolation, formatting.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::cli::CliError;

/// A duration in nanoseconds, saturating at `u32::MAX` (4.29 s).
#[must_use]
pub fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile (with fewer than 1000 samples: close to the maximum).
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Summary {
    /// Summarises latencies given in nanoseconds (sorts them).
    #[must_use]
    pub fn of(mut v: Vec<u32>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let sum: u64 = v.iter().map(|&x| u64::from(x)).sum();
        let n = v.len();
        Self {
            count: n as u64,
            mean_us: sum as f64 / n as f64 / 1e3,
            p50_us: pct(&v, 0.50),
            p99_us: pct(&v, 0.99),
            p999_us: pct(&v, 0.999),
            max_us: f64::from(v[n - 1]) / 1e3,
        }
    }
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn pct(sorted: &[u32], q: f64) -> f64 {
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    let i = rank.clamp(1, n) - 1;
    f64::from(sorted[i]) / 1e3
}

/// User + system CPU time in clock ticks (100 Hz) of the whole process (exited threads
/// included) or, with `task`, of one thread of it.
fn ticks(path: &Path) -> Result<u64, CliError> {
    let s = std::fs::read_to_string(path)?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11).ok_or("no utime in /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime in /proc stat")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second of `/proc/*/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// CPU seconds used so far by this process, minus the threads listed in `exclude` (the
/// busy-loop threads of a contended run).
pub fn cpu_secs(exclude: &[u64]) -> Result<f64, CliError> {
    let mut t = ticks(Path::new("/proc/self/stat"))?;
    for tid in exclude {
        t = t.saturating_sub(ticks(
            &Path::new("/proc/self/task")
                .join(tid.to_string())
                .join("stat"),
        )?);
    }
    Ok(t as f64 / CLK_TCK)
}

/// CPU seconds (user + system, exited threads included) used so far by another process,
/// from `/proc/PID/stat` (10 ms resolution).
pub fn pid_cpu_secs(pid: u32) -> Result<f64, CliError> {
    Ok(ticks(&Path::new("/proc").join(pid.to_string()).join("stat"))? as f64 / CLK_TCK)
}

/// Nanoseconds on a CPU (user + system, from `/proc/self/task/*/schedstat`) of every live
/// thread of this process except those in `exclude`. Precise to the nanosecond, unlike the
/// 10 ms ticks of `/proc/self/stat`, but blind to threads that have exited.
pub fn threads_cpu_nanos(exclude: &[u64]) -> Result<u64, CliError> {
    let mut sum = 0u64;
    for e in std::fs::read_dir("/proc/self/task")? {
        let e = e?;
        let Some(tid) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if exclude.contains(&tid) {
            continue;
        }
        match std::fs::read_to_string(e.path().join("schedstat")) {
            Ok(s) => {
                sum += s
                    .split_whitespace()
                    .next()
                    .ok_or("empty schedstat")?
                    .parse::<u64>()?;
            }
            // The thread exited between the listing and the read.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(sum)
}

/// The kernel thread id of the calling thread.
pub fn current_tid() -> Result<u64, CliError> {
    let s = std::fs::read_to_string("/proc/thread-self/stat")?;
    Ok(s.split_whitespace()
        .next()
        .ok_or("empty /proc/thread-self/stat")?
        .parse()?)
}

/// Piecewise-linear interpolation over `(x, y)` points sorted by `x`: below the first point
/// its `y`; beyond the last, the last segment's slope (never below the last `y`).
#[must_use]
pub fn interp(points: &[(f64, f64)], x: f64) -> f64 {
    let Some(&(x0, y0)) = points.first() else {
        return f64::NAN;
    };
    if x <= x0 || points.len() == 1 {
        return y0;
    }
    for w in points.windows(2) {
        let ((xa, ya), (xb, yb)) = (w[0], w[1]);
        if x <= xb {
            return ya + (yb - ya) * (x - xa) / (xb - xa);
        }
    }
    let n = points.len();
    let ((xa, ya), (xb, yb)) = (points[n - 2], points[n - 1]);
    (yb + (yb - ya) * (x - xb) / (xb - xa)).max(yb)
}

/// `4 KiB`, `1 MiB`, `100 B`.
#[must_use]
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Microseconds as `182 µs`, `1.25 ms`, `3.10 s`.
#[must_use]
pub fn us_label(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Summary::of((1..=1000).map(|i| i * 1000).collect());
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1e-9);
        assert!((s.p99_us - 990.0).abs() < 1e-9);
        assert!((s.p999_us - 999.0).abs() < 1e-9);
        assert!((s.max_us - 1000.0).abs() < 1e-9);
        assert_eq!(Summary::of(Vec::new()), Summary::default());
    }

    #[test]
    fn interpolation_clamps_below_and_extrapolates_above() {
        let p = [(4096.0, 100.0), (16384.0, 200.0)];
        assert!((interp(&p, 100.0) - 100.0).abs() < 1e-9);
        assert!((interp(&p, 10240.0) - 150.0).abs() < 1e-9);
        assert!((interp(&p, 28672.0) - 300.0).abs() < 1e-9);
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(100), "100 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(us_label(182.4), "182 µs");
        assert_eq!(us_label(1250.0), "1.25 ms");
    }

    #[test]
    fn cpu_time_is_readable() {
        assert!(cpu_secs(&[]).unwrap() >= 0.0);
        assert!(pid_cpu_secs(std::process::id()).unwrap() >= 0.0);
        assert!(current_tid().unwrap() > 0);
    }
}

//! The HTTP writers of `wald bench delivery` and `wald bench mirror`: C tasks, each POSTing
//! `/api/v1/wal/write` on its own keep-alive connection with one write in flight, payload
//! `{"t":<send time, µs>,"pad":"x…"}`, optionally paced to a total rate, until a count of
//! writes or a deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use super::delivery::harness::{call, connect, epoch_us, Sender};

/// The writers' shared state: what to write and what they did.
pub(crate) struct Writers {
    addr: SocketAddr,
    namespace: &'static str,
    next: AtomicU64,
    /// Writes answered 202 and accepted.
    pub(crate) sent: AtomicU64,
    /// Other answers and broken connections.
    pub(crate) errors: AtomicU64,
    limit: u64,
    /// When the writers were set up (pacing counts from here).
    pub(crate) start: Instant,
    deadline: Instant,
    /// Seconds between two writes (paced runs).
    interval: Option<f64>,
    pad: String,
}

impl Writers {
    /// `limit` writes of `payload_bytes` to `namespace` at `addr`, for at most `duration`
    /// from now, paced to `rate` writes/s in all when given.
    pub(crate) fn new(
        addr: SocketAddr,
        namespace: &'static str,
        limit: u64,
        duration: Duration,
        rate: Option<f64>,
        payload_bytes: usize,
    ) -> Arc<Self> {
        let start = Instant::now();
        Arc::new(Self {
            addr,
            namespace,
            next: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            limit,
            start,
            deadline: start + duration,
            interval: rate.filter(|r| *r > 0.0).map(|r| 1.0 / r),
            pad: "x".repeat(payload_bytes.saturating_sub(31)),
        })
    }

    /// Runs `concurrency` writers on `rt` until they are done, calling `progress` every
    /// second meanwhile. `accept` reads a 202's body: what to keep of the write, or why it
    /// does not count. Returns the write latencies (µs, request sent → 202 read) and what
    /// `accept` kept, of all writers.
    pub(crate) fn run<A, F>(
        self: &Arc<Self>,
        rt: &tokio::runtime::Runtime,
        concurrency: usize,
        accept: F,
        progress: impl Fn(),
    ) -> (Vec<i64>, Vec<A>)
    where
        A: Send + 'static,
        F: Fn(&[u8]) -> Result<A, String> + Copy + Send + 'static,
    {
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| rt.spawn(writer(Arc::clone(self), accept)))
            .collect();
        let (mut lat, mut kept) = (Vec::new(), Vec::new());
        rt.block_on(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
                tokio::select! {
                    _ = tick.tick() => progress(),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            for t in tasks {
                let (l, k) = t.await.unwrap_or_default();
                lat.extend(l);
                kept.extend(k);
            }
        });
        (lat, kept)
    }
}

async fn writer<A, F>(w: Arc<Writers>, accept: F) -> (Vec<i64>, Vec<A>)
where
    F: Fn(&[u8]) -> Result<A, String>,
{
    let mut lat = Vec::new();
    let mut kept = Vec::new();
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
            r#"{{"namespace":"{}","payload":{{"t":{},"pad":"{}"}}}}"#,
            w.namespace,
            epoch_us(),
            w.pad
        );
        match call(s, w.addr, Method::POST, "/api/v1/wal/write", body).await {
            Ok((202, b)) => match accept(&b) {
                Ok(k) => {
                    kept.push(k);
                    lat.push(i64::try_from(t0.elapsed().as_micros()).unwrap_or(i64::MAX));
                    w.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    if w.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("write answered {why}: {}", String::from_utf8_lossy(&b));
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
    (lat, kept)
}

//! The I/O threads: the event loops that serve HTTP connections.
//!
//! Each thread runs a single-threaded async runtime; the accept loop hands every new
//! connection to one of them (round robin), and the connection lives there until it closes:
//! its socket is registered with that thread's reactor, and its requests, their appends and
//! their answers all run on that one thread. Each thread commits inline
//! ([`wald_storage::log::inline`]): when its loop has run every ready request and is about
//! to wait for I/O, it writes what those requests appended and covers it with one
//! `fdatasync`, then answers them — Redis's event loop, one fsync per loop iteration, with
//! no hand-off to another thread on the way.
//!
//! What else runs on the main runtime (delivery, mirrors, timers) stays there.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The pool of I/O threads.
#[derive(Debug)]
pub struct IoThreads {
    threads: Vec<IoThread>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct IoThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl IoThreads {
    /// Starts `n` threads (at least one).
    ///
    /// # Errors
    /// A thread or its runtime cannot be created.
    pub fn start(n: usize) -> io::Result<Self> {
        let n = n.max(1);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<Handle>>();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("wald-io-{i}"))
                .spawn(move || {
                    wald_storage::log::inline::enable_on_this_thread();
                    let rt = Builder::new_current_thread()
                        .enable_all()
                        // The end of each loop iteration: commit what its requests appended.
                        .on_thread_park(|| {
                            wald_storage::log::inline::flush();
                            // Index what the commit completed, before those requests answer.
                            crate::ingest::flush_index();
                        })
                        .build();
                    let rt = match rt {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Tickets awaited by tasks being dropped: commit their records anyway.
                    wald_storage::log::inline::flush();
                    rt.shutdown_timeout(std::time::Duration::from_secs(1));
                    wald_storage::log::inline::flush();
                })?;
            let handle = ready_rx
                .recv()
                .map_err(|_| io::Error::other("an I/O thread exited while starting"))??;
            threads.push(IoThread {
                handle,
                stop: Some(stop_tx),
                join: Some(join),
            });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The number of threads.
    #[must_use]
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Runs `serve` with a connection on the next thread: the socket is moved to that
    /// thread's reactor there.
    ///
    /// # Errors
    /// The socket cannot be detached from the accepting reactor.
    pub fn spawn<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let std: StdTcpStream = stream.into_std()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let t = &self.threads[i];
        t.handle.spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => serve(s).await,
                Err(e) => tracing::debug!(error = %e, "registering a connection failed"),
            }
        });
        Ok(())
    }

    /// Returns once every thread has run two more loop iterations (each polling its
    /// sockets), or after `limit`: what clients sent before this call has then been read.
    pub async fn settle(&self, limit: std::time::Duration) {
        let handles: Vec<_> = self
            .threads
            .iter()
            .map(|t| {
                t.handle.spawn(async {
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        let all = async {
            for h in handles {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }

    /// Stops every thread (its remaining tasks are dropped) and waits for it to exit.
    pub fn stop(mut self) {
        for t in &mut self.threads {
            if let Some(s) = t.stop.take() {
                let _ = s.send(());
            }
        }
        for t in &mut self.threads {
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use wald_storage::{Durability, Log, LogConfig, Record};

    use super::IoThreads;

    fn log(dir: &std::path::Path) -> Arc<Log> {
        Arc::new(Log::open(dir.join("p"), LogConfig::default()).expect("open"))
    }

    /// Runs `f` on I/O thread `i % n` and returns its output.
    async fn on<T: Send + 'static>(
        io: &IoThreads,
        i: usize,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let t = &io.threads[i % io.threads.len()];
        t.handle.spawn(f).await.expect("task")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_requests_of_one_loop_iteration_share_one_fsync_on_their_thread() {
        let d = tempfile::tempdir().expect("tempdir");
        let log = log(d.path());
        let io = IoThreads::start(1).expect("threads");
        let l = Arc::clone(&log);
        let offsets = on(&io, 0, async move {
            // 20 "requests" ready in the same iteration: each appends and awaits its ticket.
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let l = Arc::clone(&l);
                    tokio::spawn(async move {
                        let t = l
                            .try_append(&[Record::from_payload(vec![i])], Durability::Sync)
                            .expect("append");
                        t.await.expect("durable")
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("task"));
            }
            out
        })
        .await;
        assert!(offsets.iter().all(|a| a.synced));
        let mut o: Vec<u64> = offsets.iter().map(|a| a.first_offset).collect();
        o.sort_unstable();
        assert_eq!(o, (0..20).collect::<Vec<_>>());
        let fsyncs = log.counters().fsyncs.load(Ordering::Relaxed);
        // One flush covered them all (the background committer was never asked to).
        assert_eq!(fsyncs, 1, "fsyncs for 20 appends of one iteration");
        tokio::task::spawn_blocking(move || io.stop())
            .await
            .expect("stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_sharing_a_log_each_get_every_ticket_completed() {
        let d = tempfile::tempdir().expect("tempdir");
        let log = log(d.path());
        let io = IoThreads::start(3).expect("threads");
        let mut joins = Vec::new();
        for i in 0..6 {
            let l = Arc::clone(&log);
            let t = &io.threads[i % 3];
            joins.push(t.handle.spawn(async move {
                let mut got = Vec::new();
                for round in 0..50u8 {
                    let t = l
                        .try_append(&[Record::from_payload(vec![round])], Durability::Sync)
                        .expect("append");
                    got.push(t.await.expect("durable"));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for j in joins {
            all.extend(
                tokio::time::timeout(Duration::from_secs(60), j)
                    .await
                    .expect("no ticket left waiting")
                    .expect("task"),
            );
        }
        assert!(all.iter().all(|a| a.synced));
        let mut o: Vec<u64> = all.iter().map(|a| a.first_offset).collect();
        o.sort_unstable();
        assert_eq!(o, (0..300).collect::<Vec<_>>(), "every offset once");
        tokio::task::spawn_blocking(move || io.stop())
            .await
            .expect("stop");
    }

    /// Off the I/O threads (no inline commit: the fallback), an awaited ticket is committed
    /// by the log's background committer.
    #[tokio::test(flavor = "current_thread")]
    async fn elsewhere_the_background_committer_commits() {
        assert!(!wald_storage::log::inline::enabled());
        let d = tempfile::tempdir().expect("tempdir");
        let log = log(d.path());
        let t = log
            .try_append(&[Record::from_payload(vec![1])], Durability::Sync)
            .expect("append");
        let a = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("committed")
            .expect("durable");
        assert!(a.synced);
    }
}

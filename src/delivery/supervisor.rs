//! Starts a consumer for every partition of every namespace, and again for namespaces and
//! partitions that appear later; stops them all at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::consumer::Consumer;
use crate::app::App;

/// How often the set of namespaces is looked at.
const RECONCILE: Duration = Duration::from_millis(500);

/// Runs consumers until `shutdown` turns true, then waits for them to stop. Does nothing
/// when `[delivery] enabled = false`.
pub fn spawn(app: Arc<App>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !app.delivery.config.enabled {
            tracing::info!("delivery is disabled ([delivery] enabled = false)");
            return;
        }
        super::dlq::refresh_size(&app);
        let mut running: HashMap<(String, u32), JoinHandle<()>> = HashMap::new();
        let mut stop = shutdown.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            reap(&app, &mut running, crate::supervise::DELIVERY_CONSUMER).await;
            // In a cluster, only the namespaces this instance owns.
            let owned = app
                .all_namespaces()
                .into_iter()
                .filter(|n| app.config.cluster.owns(&n.spec.name));
            for ns in owned {
                for (p, log) in ns.logs.iter().enumerate() {
                    let p = u32::try_from(p).unwrap_or(u32::MAX);
                    let key = (ns.spec.name.clone(), p);
                    if running.contains_key(&key) || !app.supervision.may_start(&task_id(&key)) {
                        continue;
                    }
                    let wake = app.delivery.wake_handle(&key.0, p);
                    match Consumer::new(Arc::clone(&app), &key.0, p, Arc::clone(log), wake) {
                        Ok(c) => {
                            running.insert(key, tokio::spawn(c.run(shutdown.clone())));
                        }
                        Err(e) => {
                            tracing::error!(namespace = %key.0, partition = p, error = %e, "cannot start the consumer; retrying");
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RECONCILE) => {}
                _ = stop.changed() => {}
            }
        }
        for (_, h) in running {
            let _ = h.await;
        }
        tracing::info!("consumers stopped");
    })
}

/// A consumer task's id in the supervision records: `namespace/partition`.
fn task_id(key: &(String, u32)) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Removes the finished tasks; a panicked one is recorded (its restart waits a backoff).
pub(crate) async fn reap<K: Clone + Eq + std::hash::Hash + TaskId>(
    app: &App,
    running: &mut HashMap<K, JoinHandle<()>>,
    kind: &'static str,
) {
    let done: Vec<K> = running
        .iter()
        .filter(|(_, h)| h.is_finished())
        .map(|(k, _)| k.clone())
        .collect();
    for k in done {
        let Some(h) = running.remove(&k) else {
            continue;
        };
        if let Err(e) = h.await {
            if e.is_panic() {
                let msg = crate::supervise::panic_message(&*e.into_panic());
                app.supervision.panicked(kind, &k.task_id(), &msg);
            }
        }
    }
}

/// How a supervised task is named in readiness and logs.
pub(crate) trait TaskId {
    fn task_id(&self) -> String;
}

impl TaskId for (String, u32) {
    fn task_id(&self) -> String {
        task_id(self)
    }
}

impl TaskId for (String, u32, String) {
    fn task_id(&self) -> String {
        format!("{}/{}/{}", self.0, self.1, self.2)
    }
}

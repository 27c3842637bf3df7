//! Starts a mirror consumer for every (namespace, partition, mirror), again for those that
//! appear or change later; stops them all at shutdown. A consumer stops by itself when its
//! namespace goes away or its mirror is removed or changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::consumer::MirrorConsumer;
use crate::app::App;

/// How often the set of namespaces is looked at.
const RECONCILE: Duration = Duration::from_millis(500);

/// (namespace, partition, mirror name).
type Key = (String, u32, String);

/// Runs mirror consumers until `shutdown` turns true, then waits for them to stop.
pub fn spawn(app: Arc<App>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<Key, JoinHandle<()>> = HashMap::new();
        let mut known: HashSet<String> = HashSet::new();
        let mut stop = shutdown.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            crate::delivery::supervisor::reap(
                &app,
                &mut running,
                crate::supervise::MIRROR_CONSUMER,
            )
            .await;
            let mut present = HashSet::new();
            // In a cluster, only the namespaces this instance owns.
            let owned = app
                .all_namespaces()
                .into_iter()
                .filter(|n| app.config.cluster.owns(&n.spec.name));
            for ns in owned {
                let name = ns.spec.name.clone();
                present.insert(name.clone());
                for spec in &ns.mirrors {
                    for (p, log) in ns.logs.iter().enumerate() {
                        let p = u32::try_from(p).unwrap_or(u32::MAX);
                        let key = (name.clone(), p, spec.name.clone());
                        // A changed mirror: its old consumer stops by itself; start the new
                        // one once it has.
                        if running.contains_key(&key)
                            || !app
                                .supervision
                                .may_start(&crate::delivery::supervisor::TaskId::task_id(&key))
                        {
                            continue;
                        }
                        match MirrorConsumer::new(
                            Arc::clone(&app),
                            &name,
                            p,
                            spec.clone(),
                            Arc::clone(log),
                        ) {
                            Ok(c) => {
                                let h = tokio::spawn(c.run(shutdown.clone()));
                                running.insert(key, h);
                            }
                            Err(e) => {
                                tracing::error!(namespace = %name, partition = p, mirror = %spec.name, error = %e, "cannot start the mirror; retrying");
                            }
                        }
                    }
                }
            }
            for gone in known.difference(&present) {
                app.mirrors.forget(gone);
            }
            known = present;
            tokio::select! {
                () = tokio::time::sleep(RECONCILE) => {}
                _ = stop.changed() => {}
            }
        }
        for h in running.into_values() {
            let _ = h.await;
        }
        tracing::info!("mirrors stopped");
    })
}

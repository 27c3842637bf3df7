//! Indexing what the write path appended: on an I/O thread, one state-store write per
//! partition per event-loop iteration instead of one per request.
//!
//! A request registers each partition's append here before awaiting it ([`defer`]). The
//! I/O thread's park hook, right after its inline commit completed those appends and before
//! their tasks run again, indexes every completed one ([`flush`]), grouped by namespace and
//! partition, and marks them done. A request whose append was completed elsewhere (another
//! thread's commit) finds its mark unset and indexes on its own; indexing twice is harmless.
//! Either way the index is written before the request's 202 goes out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wald_storage::Completion;

use crate::app::{App, IDEMPOTENCY_WINDOW_MS};
use crate::message::RecordIds;

/// One partition's append of one request, waiting to be indexed.
struct Pending {
    app: Arc<App>,
    namespace: String,
    partition: u32,
    ids: Vec<RecordIds>,
    accepted_at_ms: u64,
    completion: Completion,
    done: Arc<AtomicBool>,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Notes an append for this thread's next [`flush`]. Returns the mark the flush sets once
/// it indexed it, or `None` off the I/O threads (the request indexes on its own).
pub(crate) fn defer(
    app: &Arc<App>,
    namespace: &str,
    partition: u32,
    ids: Vec<RecordIds>,
    accepted_at_ms: u64,
    completion: Completion,
) -> Option<Arc<AtomicBool>> {
    if !wald_storage::log::inline::enabled() {
        return None;
    }
    let done = Arc::new(AtomicBool::new(false));
    PENDING.with(|p| {
        p.borrow_mut().push(Pending {
            app: Arc::clone(app),
            namespace: namespace.to_owned(),
            partition,
            ids,
            accepted_at_ms,
            completion,
            done: Arc::clone(&done),
        });
    });
    Some(done)
}

/// Indexes every completed append noted on this thread: one state-store write per
/// (namespace, partition). Called by the I/O threads after their inline commit.
pub fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if pending.is_empty() {
        return;
    }
    let mut keep = Vec::new();
    type Group = (Arc<App>, Vec<(u64, RecordIds, u64)>, Vec<Arc<AtomicBool>>);
    let mut groups: HashMap<(usize, String, u32), Group> = HashMap::new();
    for p in pending {
        if p.done.load(Ordering::Acquire) {
            continue;
        }
        match p.completion.peek() {
            Some(Ok(a)) => {
                let key = (Arc::as_ptr(&p.app) as usize, p.namespace, p.partition);
                let g = groups
                    .entry(key)
                    .or_insert_with(|| (Arc::clone(&p.app), Vec::new(), Vec::new()));
                for (i, ids) in p.ids.into_iter().enumerate() {
                    g.1.push((a.first_offset + i as u64, ids, p.accepted_at_ms));
                }
                g.2.push(p.done);
            }
            // Failed: nothing to index. Taken: its request indexes on its own.
            Some(Err(())) => {}
            None if p.completion.is_complete() => {}
            None => keep.push(p),
        }
    }
    for ((_, namespace, partition), (app, mut entries, marks)) in groups {
        entries.sort_unstable_by_key(|e| e.0);
        match app
            .state
            .apply(&namespace, partition, &entries, IDEMPOTENCY_WINDOW_MS)
        {
            Ok(_) => marks.iter().for_each(|m| m.store(true, Ordering::Release)),
            // Its requests index on their own (and log it if it fails again).
            Err(e) => {
                tracing::warn!(namespace, partition, error = %e, "indexing a loop iteration's appends failed; each request indexes its own");
            }
        }
    }
    if !keep.is_empty() {
        PENDING.with(|p| p.borrow_mut().extend(keep));
    }
}

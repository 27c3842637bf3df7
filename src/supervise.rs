//! Background tasks' panics: each is logged, counted (`wald_task_panics_total{task}`), shown
//! by readiness for [`RED_FOR`] with its reason, and its task restarted after a backoff that
//! doubles with each panic (1 s to 60 s). Supervisors (delivery and mirror consumers) ask
//! [`Supervision::may_start`] before starting a task again; a delivery attempt that panics
//! counts as a failed attempt (retried by the policy, dead-lettered in the end), so its
//! partition never waits for an answer that cannot come.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

/// How long a panic keeps readiness red.
pub const RED_FOR: Duration = Duration::from_secs(60);
/// Tasks remembered at most (the oldest panic is forgotten first).
const MAX_TRACKED: usize = 1024;
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Task kinds (the metric's label values: a fixed set).
pub const DELIVERY_CONSUMER: &str = "delivery_consumer";
/// A mirror's consumer of one partition.
pub const MIRROR_CONSUMER: &str = "mirror_consumer";
/// One delivery attempt.
pub const DELIVERY_ATTEMPT: &str = "delivery_attempt";

#[derive(Debug)]
struct Panicked {
    kind: &'static str,
    count: u32,
    last: String,
    at: Instant,
    not_before: Instant,
}

/// What the supervisors share.
#[derive(Debug)]
pub struct Supervision {
    panics: IntCounterVec,
    tasks: Mutex<BTreeMap<String, Panicked>>,
    /// Panics to inject, per kind (fault tests; 0 in service).
    inject: [AtomicU32; 3],
}

/// The text of a panic's payload.
#[must_use]
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

fn slot(kind: &str) -> Option<usize> {
    [DELIVERY_CONSUMER, MIRROR_CONSUMER, DELIVERY_ATTEMPT]
        .iter()
        .position(|k| *k == kind)
}

impl Supervision {
    /// Registers its metric in `registry`.
    ///
    /// # Errors
    /// A registration conflict (a bug).
    pub fn new(registry: &crate::metrics::Metrics) -> Result<Self, prometheus::Error> {
        let panics = IntCounterVec::new(
            prometheus::Opts::new(
                "task_panics_total",
                "Background tasks that panicked (restarted with backoff)",
            )
            .namespace("wald"),
            &["task"],
        )?;
        registry.register(Box::new(panics.clone()))?;
        Ok(Self {
            panics,
            tasks: Mutex::new(BTreeMap::new()),
            inject: Default::default(),
        })
    }

    /// Records that task `id` (of `kind`) panicked with `message`.
    pub fn panicked(&self, kind: &'static str, id: &str, message: &str) {
        self.panics.with_label_values(&[kind]).inc();
        let now = Instant::now();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let count = tasks.get(id).map_or(0, |p| p.count).saturating_add(1);
        let backoff = Duration::from_secs(1 << (count - 1).min(6)).min(MAX_BACKOFF);
        tracing::error!(
            task = kind,
            id,
            panics = count,
            restart_in_ms = backoff.as_millis() as u64,
            panic = message,
            "a background task panicked"
        );
        tasks.insert(
            id.to_owned(),
            Panicked {
                kind,
                count,
                last: message.to_owned(),
                at: now,
                not_before: now + backoff,
            },
        );
        while tasks.len() > MAX_TRACKED {
            let oldest = tasks
                .iter()
                .min_by_key(|(_, p)| p.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => tasks.remove(&k),
                None => break,
            };
        }
    }

    /// Whether task `id` may be (re)started now.
    #[must_use]
    pub fn may_start(&self, id: &str) -> bool {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .is_none_or(|p| Instant::now() >= p.not_before)
    }

    /// Readiness problems: the tasks that panicked in the last [`RED_FOR`].
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let now = Instant::now();
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, p)| now.duration_since(p.at) < RED_FOR)
            .map(|(id, p)| {
                format!(
                    "{} {id} panicked ({} times; restarted with backoff): {}",
                    p.kind,
                    p.count,
                    crate::redact::text(&p.last)
                )
            })
            .collect()
    }

    /// Makes the next `n` tasks of `kind` panic at their next [`Supervision::checkpoint`]
    /// (fault tests; nothing in service calls it).
    #[doc(hidden)]
    pub fn inject_panics(&self, kind: &'static str, n: u32) {
        if let Some(i) = slot(kind) {
            self.inject[i].store(n, Ordering::Release);
        }
    }

    /// Panics when a panic of `kind` was injected (see [`Supervision::inject_panics`]).
    ///
    /// # Panics
    /// Only when injected.
    pub fn checkpoint(&self, kind: &'static str) {
        let Some(i) = slot(kind) else { return };
        if self.inject[i].load(Ordering::Relaxed) > 0
            && self.inject[i]
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!("injected panic in a {kind} task");
        }
    }
}

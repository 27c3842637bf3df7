//! The SQS side of a run: the queue, and the tasks draining it meanwhile, as a consumer of
//! the queue would.

#[cfg(feature = "mirror-sqs")]
use std::collections::HashSet;
#[cfg(feature = "mirror-sqs")]
use std::sync::{Arc, Mutex, PoisonError};
#[cfg(feature = "mirror-sqs")]
use std::thread;
#[cfg(feature = "mirror-sqs")]
use std::time::{Duration, Instant};

#[cfg(feature = "mirror-sqs")]
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
#[cfg(feature = "mirror-sqs")]
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[cfg(feature = "mirror-sqs")]
use super::NS;
use super::{Backend, MirrorOptions};
use crate::cli::CliError;

/// The tasks receiving and deleting from the queue during a run (none but for SQS).
pub(super) struct Drainers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The distinct `id` attributes received.
    #[cfg(feature = "mirror-sqs")]
    seen: Arc<Mutex<HashSet<String>>>,
}

impl Drainers {
    /// For SQS: the mirror's `concurrency` and the queue it creates into `cfg`, and
    /// `opts.sqs_drain` drainers of that queue started.
    pub(super) fn start(
        rt: &tokio::runtime::Runtime,
        backend: Backend,
        opts: &MirrorOptions,
        cfg: &mut Value,
    ) -> Result<Self, CliError> {
        let (stop, stopped) = watch::channel(false);
        #[allow(unused_mut)]
        let mut d = Self {
            stop,
            tasks: Vec::new(),
            #[cfg(feature = "mirror-sqs")]
            seen: Arc::default(),
        };
        if backend.is_sqs() {
            cfg["concurrency"] = json!(opts.sqs_concurrency);
            #[cfg(feature = "mirror-sqs")]
            {
                let endpoint = cfg["endpointUrl"].as_str().unwrap_or_default().to_owned();
                let c = client(&endpoint);
                let url = rt.block_on(create_queue(&c, NS))?;
                cfg["queueUrl"] = json!(url);
                for _ in 0..opts.sqs_drain {
                    d.tasks.push(rt.spawn(drain(
                        c.clone(),
                        url.clone(),
                        Arc::clone(&d.seen),
                        stopped.clone(),
                    )));
                }
            }
        }
        let _ = (rt, &stopped); // used only with `mirror-sqs`
        Ok(d)
    }

    /// The distinct messages received, once `mirrored` were or 30 s passed (None: no
    /// drainers).
    pub(super) fn received(&self, mirrored: u64) -> Option<u64> {
        #[cfg(feature = "mirror-sqs")]
        if !self.tasks.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let count = || self.seen.lock().map_or(0, |s| s.len() as u64);
            while count() < mirrored && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            return Some(count());
        }
        let _ = mirrored; // used only with `mirror-sqs`
        None
    }

    /// Stops the drainers and waits for them.
    pub(super) fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(true);
        rt.block_on(async {
            for d in self.tasks {
                let _ = d.await;
            }
        });
    }
}

#[cfg(feature = "mirror-sqs")]
fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

#[cfg(feature = "mirror-sqs")]
async fn create_queue(c: &aws_sdk_sqs::Client, name: &str) -> Result<String, CliError> {
    let out = c
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateQueue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?;
    Ok(out.queue_url().ok_or("CreateQueue: no URL")?.to_owned())
}

/// Receives and deletes until `stop` turns true; the distinct `id` attributes seen.
#[cfg(feature = "mirror-sqs")]
async fn drain(
    c: aws_sdk_sqs::Client,
    url: String,
    seen: Arc<Mutex<HashSet<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let recv = c
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .wait_time_seconds(1)
            .message_attribute_names("id")
            .send();
        let out = tokio::select! {
            r = recv => r,
            _ = stop.changed() => return,
        };
        let Ok(out) = out else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut del = Vec::new();
        {
            let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, m) in out.messages().iter().enumerate() {
                if let Some(id) = m
                    .message_attributes()
                    .and_then(|a| a.get("id"))
                    .and_then(|v| v.string_value())
                {
                    s.insert(id.to_owned());
                }
                if let Some(h) = m.receipt_handle() {
                    if let Ok(e) = DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .build()
                    {
                        del.push(e);
                    }
                }
            }
        }
        if !del.is_empty() {
            let _ = c
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(del))
                .send()
                .await;
        }
    }
}

//! The Kafka broker of the process run: librdkafka's mock cluster (a Kafka-protocol broker on
//! 127.0.0.1 in the test process, reached by `wald serve` over TCP), taken down in the middle
//! of some cycles and brought back; the namespace mirrored to it (`stream`); and the end's
//! check that every acknowledged message of it is in the topic.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::book::{Ack, Rng};

/// The mirrored namespace and its topic.
pub const NS: &str = "stream";
const PARTITIONS: i32 = 2;

pub struct Broker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl Broker {
    pub fn start() -> Self {
        let cluster = MockCluster::new(1).expect("mock Kafka cluster");
        cluster
            .create_topic(NS, PARTITIONS, 1)
            .expect("create topic");
        let bootstrap = cluster.bootstrap_servers();
        Self { cluster, bootstrap }
    }

    /// The namespace's document: mirrored to the topic, no delivery target.
    pub fn namespace(&self) -> Value {
        json!({"name": NS, "shardConfig": {"partitionCount": PARTITIONS},
            "backend": "kafka",
            "backendConfig": {"bootstrapServers": self.bootstrap, "batchSize": 16, "timeoutMs": 1000}})
    }

    /// Now and then, in the middle of a cycle's load: the broker down for 0.2–1 s.
    pub fn disrupt(&mut self, rng: &mut Rng) -> Option<&'static str> {
        if rng.below(4) != 0 {
            return None;
        }
        self.cluster.broker_down(1).expect("broker down");
        std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
        self.cluster.broker_up(1).expect("broker up");
        Some("kafka-down")
    }

    /// Every acknowledged message of [`NS`] is in the topic (by the `id` header; at least
    /// once). Waits up to 300 s. Returns how many were checked.
    pub fn check(&self, acks: &[Ack]) -> usize {
        let want: HashSet<&str> = acks
            .iter()
            .filter(|a| a.msg.ns == NS)
            .map(|a| a.id.as_str())
            .collect();
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "wald-fault-run")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(NS, p, Offset::Beginning)
                .expect("partition");
        }
        c.assign(&tpl).expect("assign");
        let mut have: HashSet<String> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let missing = want.iter().filter(|id| !have.contains(**id)).count();
            if missing == 0 {
                return want.len();
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} acknowledged messages of `{NS}` never reached the topic",
                want.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == "id")
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                if let Some(id) = id {
                    have.insert(id);
                }
            }
        }
    }
}

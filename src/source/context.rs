//! The consumer's librdkafka context: turns rebalances, client errors and periodic
//! statistics into telemetry events and readiness.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::telemetry::events::{ConsumerLag, KafkaClientError, Rebalanced};
use crate::telemetry::Health;

pub struct SourceContext {
    pub pipeline: String,
    pub topic: String,
    pub health: Arc<Health>,
    /// Bumped on every revocation, so the run loop can drop the state of
    /// partitions it no longer owns.
    pub revocations: Arc<std::sync::atomic::AtomicU64>,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, s) in &t.partitions {
                if *p >= 0 && s.consumer_lag >= 0 {
                    ConsumerLag { pipeline: &self.pipeline, topic: &self.topic, partition: *p, lag: s.consumer_lag }.emit();
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.brokers_down.store(true, Ordering::Relaxed);
        }
        KafkaClientError { pipeline: &self.pipeline, code: error.to_string(), reason }.emit();
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (kind, n) = match rebalance {
            Rebalance::Assign(tpl) => ("assign", tpl.count()),
            Rebalance::Revoke(_) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                ("revoke", 0)
            }
            Rebalance::Error(_) => ("error", self.health.assigned.load(Ordering::Relaxed)),
        };
        self.health.assigned.store(n, Ordering::Relaxed);
        Rebalanced { pipeline: &self.pipeline, kind, partitions: n }.emit();
    }
}

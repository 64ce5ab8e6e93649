//! The consumer's librdkafka context: turns rebalances, client errors and periodic
//! statistics into telemetry events and readiness — and, while the run loop asks for
//! it (`hold_revoked`), holds a revocation open: the revoked partitions stay assigned
//! until the loop has published, acknowledged and checkpointed them and calls
//! [`release_revoked`], so their next owner, which can only be assigned them after
//! that, restores exactly where this process stopped (a graceful hand-off inside the
//! exactly-once guarantee, with the eager and the cooperative protocol alike).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::TopicPartitionList;

use crate::telemetry::events::{ConsumerLag, KafkaClientError, Rebalanced};
use crate::telemetry::Health;

pub struct SourceContext {
    pub pipeline: String,
    pub topic: String,
    pub health: Arc<Health>,
    /// Bumped on every revocation, so the run loop can drop the state of
    /// partitions it no longer owns.
    pub revocations: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a revocation is held open until the run loop releases it.
    pub hold_revoked: Arc<AtomicBool>,
    /// Partitions revoked and held (not yet released).
    pub held: Arc<Mutex<Vec<i32>>>,
}

impl SourceContext {
    /// A context that reports to `health` (revocations are not held until asked).
    pub fn new(pipeline: &str, topic: &str, health: Arc<crate::telemetry::Health>) -> Self {
        SourceContext {
            pipeline: pipeline.to_string(),
            topic: topic.to_string(),
            health,
            revocations: Default::default(),
            hold_revoked: Default::default(),
            held: Default::default(),
        }
    }
}

/// Ends a held revocation: the partitions are released to the group.
pub fn release_revoked<C: Consumer<X>, X: ConsumerContext>(consumer: &C, topic: &str, partitions: &[i32]) -> crate::error::Result<()> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                tpl.add_partition(topic, *p);
            }
            consumer.incremental_unassign(&tpl)?;
        }
        _ => consumer.unassign()?,
    }
    Ok(())
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
    /// rdkafka's own handling (assign / unassign, incremental under the cooperative
    /// protocol), except that a revocation is held while `hold_revoked` is set.
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(c.rebalance_protocol(), RebalanceProtocol::Cooperative);
        // What a revocation would hold. (A revocation of nothing — the eager protocol
        // revokes a whole assignment, which can be empty — has nothing to hand over
        // and is not held: the run loop releases what it holds, so it would never be
        // released, and the member would never rejoin the group.)
        let hold: Vec<i32> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if self.hold_revoked.load(Ordering::SeqCst) => {
                tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
            }
            _ => Vec::new(),
        };
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let r = if cooperative { c.incremental_assign(tpl) } else { c.assign(tpl) };
                self.post_rebalance(c, &Rebalance::Assign(tpl));
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if !hold.is_empty() => {
                tracing::info!(partitions = ?hold, "revocation held until the partitions are checkpointed");
                if let Ok(mut h) = self.held.lock() {
                    h.extend(hold);
                }
                self.revocations.fetch_add(1, Ordering::SeqCst);
                Rebalanced { pipeline: &self.pipeline, kind: "revoke", partitions: tpl.count() }.emit();
                return;
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = if cooperative { c.incremental_unassign(tpl) } else { c.unassign() };
                self.post_rebalance(c, &Rebalance::Revoke(tpl));
                r
            }
            other => {
                let r = c.unassign();
                self.post_rebalance(c, &Rebalance::Error(KafkaError::Rebalance(other.into())));
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance failed");
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let kind = match rebalance {
            Rebalance::Assign(_) => "assign",
            Rebalance::Revoke(_) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                "revoke"
            }
            Rebalance::Error(_) => "error",
        };
        // What is assigned now (an incremental assignment names only what it adds).
        let n = assigned_count(c, &self.topic);
        self.health.assigned.store(n, Ordering::Relaxed);
        Rebalanced { pipeline: &self.pipeline, kind, partitions: n }.emit();
    }
}

/// Partitions of `topic` assigned to `c`.
pub fn assigned_partitions<C: Consumer<X>, X: ConsumerContext>(c: &C, topic: &str) -> std::collections::BTreeSet<i32> {
    let set = match c.assignment() {
        Ok(tpl) => tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect(),
        Err(_) => Default::default(),
    };
    // (The TopicPartitionList is dropped here, before anything else can drop the
    // consumer: a live list at consumer shutdown hangs librdkafka.)
    set
}

/// How many partitions of `topic` are assigned to `c`.
pub fn assigned_count<C: Consumer<X>, X: ConsumerContext>(c: &C, topic: &str) -> usize {
    assigned_partitions(c, topic).len()
}

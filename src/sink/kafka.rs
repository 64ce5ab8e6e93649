//! Kafka producer for predictions and dead letters.
//!
//! Each input partition maps to the same output partition; the producer is
//! idempotent; every message carries its source coordinates as headers. A full
//! producer queue is backpressure (wait and retry), not an error. `publish` returns
//! only when every message of the batch is acknowledged, so the caller can then
//! store the input offsets. The run loop uses `send` and `await_acks` separately to
//! overlap one batch's acknowledgements with the next batch's work.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::{DeadLetter, Outputs};
use crate::error::{Error, Result};

/// Header names carried by every output message.
pub const H_SOURCE_TOPIC: &str = "tickflare.source.topic";
pub const H_SOURCE_PARTITION: &str = "tickflare.source.partition";
pub const H_SOURCE_OFFSET: &str = "tickflare.source.offset";
/// Dead-letter headers.
pub const H_REASON: &str = "reason";
pub const H_ERROR: &str = "error";

pub fn producer(brokers: &str) -> Result<FutureProducer> {
    producer_with(brokers, None)
}

/// An idempotent producer; transactional when `transactional_id` is given.
pub fn producer_with(brokers: &str, transactional_id: Option<&str>) -> Result<FutureProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("client.id", "tickflare");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    Ok(c.create()?)
}

/// rdkafka's transactional producer behind [`super::txn::Transactions`].
pub struct KafkaTransactions<'a>(pub &'a FutureProducer);

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl super::txn::Transactions for KafkaTransactions<'_> {
    async fn begin(&mut self) -> Result<()> {
        use rdkafka::producer::Producer;
        Ok(self.0.begin_transaction()?)
    }
    async fn commit(&mut self) -> Result<()> {
        use rdkafka::producer::Producer;
        Ok(self.0.commit_transaction(TXN_TIMEOUT)?)
    }
    async fn abort(&mut self) -> Result<()> {
        use rdkafka::producer::Producer;
        Ok(self.0.abort_transaction(TXN_TIMEOUT)?)
    }
}

/// Publishes a batch's outputs.
pub struct KafkaSink {
    pub producer: FutureProducer,
    pub source_topic: String,
    pub topic: String,
    pub dead_letter_topic: String,
}

impl KafkaSink {
    /// Sends every prediction and dead letter of `out` and waits for all acks.
    pub async fn publish(&self, out: &Outputs) -> Result<()> {
        let acks = self.send_all(out).await?;
        Self::await_acks(acks).await.map(|_| ())
    }

    /// Waits until the broker acknowledged every message; returns where each landed
    /// (partition, offset), in order. The first failure is the error.
    pub async fn await_acks(acks: Vec<rdkafka::producer::DeliveryFuture>) -> Result<Vec<(i32, i64)>> {
        let mut at = Vec::with_capacity(acks.len());
        for a in acks {
            match a.await {
                Ok(Ok(d)) => at.push((d.partition, d.offset)),
                Ok(Err((e, _))) => return Err(Error::Kafka(e)),
                Err(_) => return Err(Error::Internal("producer dropped a delivery report".into())),
            }
        }
        Ok(at)
    }

    /// Enqueues every prediction and dead letter of `out` (in order) and returns
    /// their delivery futures.
    pub async fn send_all(&self, out: &Outputs) -> Result<Vec<rdkafka::producer::DeliveryFuture>> {
        let mut acks = Vec::with_capacity(out.predictions.len() + out.dead_letters.len());
        for r in &out.predictions {
            let headers = source_headers(&self.source_topic, r.partition, r.offset);
            let rec = FutureRecord::to(&self.topic)
                .partition(r.partition)
                .key(out.key(r))
                .payload(out.payload(r))
                .timestamp(r.timestamp_ms)
                .headers(headers);
            acks.push(self.enqueue(rec).await?);
        }
        for d in &out.dead_letters {
            acks.push(self.enqueue(dead_letter_record(&self.dead_letter_topic, &self.source_topic, d, d.partition)).await?);
        }
        Ok(acks)
    }

    async fn enqueue<'a, K, P>(&self, mut rec: FutureRecord<'a, K, P>) -> Result<rdkafka::producer::DeliveryFuture>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        }
    }
}

impl super::Publish for KafkaSink {
    async fn send(&self, out: &Outputs) -> Result<super::Acks> {
        Ok(super::Acks::Kafka(self.send_all(out).await?))
    }
}

/// The dead-letter message for `d` on output `partition`: the record's original key,
/// payload and timestamp, its source coordinates, `reason` and `error` as headers.
pub fn dead_letter_record<'a>(topic: &'a str, source_topic: &str, d: &'a DeadLetter, partition: i32) -> FutureRecord<'a, [u8], [u8]> {
    let headers = source_headers(source_topic, d.partition, d.offset)
        .insert(Header { key: H_REASON, value: Some(d.reason) })
        .insert(Header { key: H_ERROR, value: Some(&d.detail) });
    let mut rec = FutureRecord::<[u8], [u8]>::to(topic).partition(partition).headers(headers);
    if let Some(k) = &d.key {
        rec = rec.key(k.as_slice());
    }
    if let Some(p) = &d.payload {
        rec = rec.payload(p.as_slice());
    }
    if let Some(t) = d.timestamp_ms {
        rec = rec.timestamp(t);
    }
    rec
}

fn source_headers(topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(5)
        .insert(Header { key: H_SOURCE_TOPIC, value: Some(topic) })
        .insert(Header { key: H_SOURCE_PARTITION, value: Some(&partition.to_string()) })
        .insert(Header { key: H_SOURCE_OFFSET, value: Some(&offset.to_string()) })
}

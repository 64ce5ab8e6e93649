//! The solar pipeline's outputs: a frame's track records and every dead letter,
//! each carrying its source coordinates (topic, partition, offset and, for a frame's
//! several tracks, their index) as headers. A frame's records are sent together and
//! their acknowledgements awaited before the next frame, so the output topics are
//! always a prefix of the deterministic sequence the tracker computes. After a
//! restart the tail of each output topic is read once: outputs it already holds
//! are recomputed but not sent again — exactly-once tracks without transactions.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::checkpoint::OutputMarks;
use super::config::SolarConfig;
use super::tracker::TrackOut;
use crate::pipeline::kafka_props::KafkaProps;
use crate::sink::dedupe::scan_marks;
use crate::sink::kafka::{dead_letter_future_record, indexed_source_headers};
use crate::sink::DeadLetter;
use crate::telemetry::events::Suppressed;

const TRACKS: usize = 0;
const DEAD_LETTERS: usize = 1;

pub struct SolarSink {
    prod: FutureProducer,
    pipeline: String,
    /// The tracks and dead-letter topics (each written to its partition 0).
    topics: [String; 2],
    frames_topic: String,
    /// The output topics' ends past every acknowledged or found output, and what
    /// they hold ahead of the state.
    pub outputs: OutputMarks,
    pub suppressed: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// The producer's `message.max.bytes`: dead letters are cut to fit it.
    max_message_bytes: usize,
}

impl SolarSink {
    pub fn new(prod: FutureProducer, cfg: &SolarConfig, max_message_bytes: usize) -> Self {
        SolarSink {
            prod,
            pipeline: cfg.name.clone(),
            topics: [cfg.sink.topic.clone(), cfg.sink.dead_letter_topic.clone()],
            frames_topic: cfg.source.frames_topic.clone(),
            outputs: OutputMarks::default(),
            suppressed: 0,
            dead_letters_by_reason: BTreeMap::new(),
            max_message_bytes,
        }
    }

    /// Reads both output topics from where the restored state's knowledge ends
    /// (`from`; the topics' starts for a fresh state) and remembers what they hold.
    pub async fn resume(&mut self, brokers: &str, props: &KafkaProps, from: OutputMarks) -> crate::error::Result<()> {
        let mut out = from;
        for (i, topic) in self.topics.iter().enumerate() {
            let (b, p, t, start) = (brokers.to_string(), props.clone(), topic.clone(), out.ends[i]);
            let tail = tokio::task::spawn_blocking(move || scan_marks(&b, &p, &t, 0, start, Duration::from_millis(300)))
                .await
                .context("tail read task")?
                .with_context(|| format!("reading the tail of {topic:?}"))?;
            tracing::info!(topic = %topic, from = start, scanned = tail.scanned, end = tail.end, "output tail read");
            out.ends[i] = out.ends[i].max(tail.end);
            out.marks[i].merge(&tail.marks);
        }
        self.outputs = out;
        Ok(())
    }

    /// Publishes the track records computed on the frame at `partition`/`offset`
    /// (those not already in the topic) and waits for their acknowledgements;
    /// returns how many were sent.
    pub async fn tracks(&mut self, partition: i32, offset: i64, outs: &[TrackOut]) -> crate::error::Result<u64> {
        let topic = self.topics[TRACKS].clone();
        let mut sends = Vec::with_capacity(outs.len());
        let mut skipped = 0;
        for (i, out) in outs.iter().enumerate() {
            if self.outputs.marks[TRACKS].covers(&self.frames_topic, partition, offset, i as i64) {
                skipped += 1;
                continue;
            }
            let payload = serde_json::to_vec(out)?;
            let r = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(0)
                .key(out.event_id.as_bytes())
                .payload(&payload)
                .timestamp(out.frame_time_ms)
                .headers(indexed_source_headers(&self.frames_topic, partition, offset, i as i64));
            sends.push(self.prod.send_result(r).map_err(|(e, _)| e).context("queueing a track record")?);
        }
        self.note_suppressed(partition, skipped);
        let n = sends.len() as u64;
        for s in sends {
            let at = s.await.context("the producer went away")?.map_err(|(e, _)| e).with_context(|| format!("publishing to {topic:?}"))?;
            self.outputs.ends[TRACKS] = self.outputs.ends[TRACKS].max(at.offset + 1);
        }
        Ok(n)
    }

    /// Publishes a dead letter (unless the topic already holds it) and counts it.
    pub async fn dead_letter(&mut self, source_topic: &str, d: &DeadLetter) -> crate::error::Result<()> {
        *self.dead_letters_by_reason.entry(d.reason.to_string()).or_default() += 1;
        crate::telemetry::events::count_dead_letter(&self.pipeline, d);
        if self.outputs.marks[DEAD_LETTERS].covers(source_topic, d.partition, d.offset, 0) {
            self.note_suppressed(d.partition, 1);
            return Ok(());
        }
        tracing::warn!(topic = source_topic, partition = d.partition, offset = d.offset, reason = d.reason, detail = %d.detail, "dead-lettered");
        let topic = &self.topics[DEAD_LETTERS];
        let at = self.prod.send(dead_letter_future_record(topic, source_topic, d, 0, self.max_message_bytes), Duration::from_secs(30)).await.map_err(|(e, _)| e).with_context(|| format!("publishing to {topic:?}"))?;
        self.outputs.ends[DEAD_LETTERS] = self.outputs.ends[DEAD_LETTERS].max(at.offset + 1);
        Ok(())
    }

    fn note_suppressed(&mut self, partition: i32, count: usize) {
        if count > 0 {
            self.suppressed += count as u64;
            Suppressed { pipeline: &self.pipeline, partition, count }.emit();
        }
    }
}

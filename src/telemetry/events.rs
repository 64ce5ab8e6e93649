//! One type per runtime event. `emit()` logs it with `tracing` and updates its
//! Prometheus metrics, so the two always agree. Handles are resolved once per
//! pipeline / partition; the hot path only increments.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Gauge, Histogram, Unit};

use crate::sink::DeadLetter;

/// Registers help texts (shown by `/metrics`).
pub fn describe() {
    describe_counter!("tickflare_records_in_total", "Records read from the input topic, per partition");
    describe_counter!("tickflare_predictions_total", "Predictions published, per partition");
    describe_counter!("tickflare_dead_letters_total", "Records sent to the dead-letter topic, by reason");
    describe_counter!("tickflare_warmup_total", "Records without a complete feature row (window warm-up), not predicted");
    describe_counter!("tickflare_filtered_total", "Records the feature SQL did not return (a WHERE clause), not predicted");
    describe_counter!("tickflare_labelled_total", "Predictions that received their true value");
    describe_counter!("tickflare_model_updates_total", "Optimizer steps taken by the models");
    describe_gauge!("tickflare_pending_predictions", "Predictions waiting for their label, per partition");
    describe_gauge!("tickflare_consumer_lag", "Messages behind the partition's high watermark (librdkafka statistics)");
    describe_histogram!("tickflare_batch_rows", Unit::Count, "Records per micro-batch and partition");
    describe_histogram!("tickflare_stage_seconds", Unit::Seconds, "Time per micro-batch in each stage: decode, features, predict, update, produce");
    describe_histogram!("tickflare_end_to_end_latency_seconds", Unit::Seconds, "Kafka record timestamp to its outputs handed to the producer (acknowledgements are awaited while the next batch runs)");
    describe_gauge!("tickflare_live_models", "Models held in memory (one per partition, or per key with scope = per_key)");
    describe_counter!("tickflare_model_evictions_total", "Per-key models evicted by the live-model cap");
    describe_counter!("tickflare_drift_events_total", "Drift detections on the residuals");
    describe_counter!("tickflare_model_fallbacks_total", "Model forecasts replaced by the baseline by the divergence guard");
    describe_gauge!("tickflare_aggregation_weight", "Online aggregation: each expert's weight, averaged over the partition's keys");
    describe_gauge!("tickflare_rolling_mae", "MAE over the last 1000 labelled predictions, per partition, for the model and the persistence baseline");
    describe_gauge!("tickflare_assigned_partitions", "Input partitions assigned to this process");
    describe_counter!("tickflare_kafka_errors_total", "Errors reported by librdkafka (client level)");
    describe_histogram!("tickflare_checkpoint_seconds", Unit::Seconds, "Time to write one partition's checkpoint");
    describe_gauge!("tickflare_checkpoint_bytes", Unit::Bytes, "Size of the partition's latest checkpoint");
    describe_gauge!("tickflare_checkpoint_offset", "Next input offset recorded by the partition's latest checkpoint");
    describe_gauge!("tickflare_checkpoint_age_seconds", Unit::Seconds, "Seconds since the partition's latest checkpoint (updated every batch)");
    describe_counter!("tickflare_checkpoints_total", "Checkpoints written, per partition");
    describe_counter!("tickflare_restores_total", "Partitions restored from a checkpoint (or started fresh: from = \"none\")");
    describe_counter!("tickflare_fenced_partitions_total", "Partitions dropped because a newer owner claimed a later writer epoch (this process had been paused or cut off)");
    describe_counter!("tickflare_suppressed_outputs_total", "Recomputed outputs not published because the output topic already held them (after a restart or hand-off)");
}

/// One partition's checkpoint was written.
pub struct CheckpointWritten<'a> {
    pub pipeline: &'a str,
    pub partition: i32,
    pub next_offset: i64,
    pub bytes: u64,
    pub seconds: f64,
}

impl CheckpointWritten<'_> {
    pub fn emit(&self) {
        tracing::debug!(partition = self.partition, next_offset = self.next_offset, bytes = self.bytes, seconds = self.seconds, "checkpoint written");
        let l = [("pipeline", self.pipeline.to_string()), ("partition", self.partition.to_string())];
        histogram!("tickflare_checkpoint_seconds", &l).record(self.seconds);
        gauge!("tickflare_checkpoint_bytes", &l).set(self.bytes as f64);
        gauge!("tickflare_checkpoint_offset", &l).set(self.next_offset as f64);
        gauge!("tickflare_checkpoint_age_seconds", &l).set(0.0);
        counter!("tickflare_checkpoints_total", &l).increment(1);
    }
}

/// Seconds since a partition's latest checkpoint.
pub struct CheckpointAge<'a> {
    pub pipeline: &'a str,
    pub partition: i32,
    pub seconds: f64,
}

impl CheckpointAge<'_> {
    pub fn emit(&self) {
        gauge!("tickflare_checkpoint_age_seconds", "pipeline" => self.pipeline.to_string(), "partition" => self.partition.to_string())
            .set(self.seconds);
    }
}

/// A partition was restored (from a checkpoint, or fresh when there was none).
pub struct Restored<'a> {
    pub pipeline: &'a str,
    pub partition: i32,
    /// `"checkpoint"` or `"none"`.
    pub from: &'static str,
    pub next_offset: i64,
    /// Highest source offsets already in the prediction and dead-letter topics.
    pub published: (Option<i64>, Option<i64>),
}

impl Restored<'_> {
    pub fn emit(&self) {
        tracing::info!(
            partition = self.partition,
            from = self.from,
            next_offset = self.next_offset,
            published_predictions_up_to = ?self.published.0,
            published_dead_letters_up_to = ?self.published.1,
            "partition restored"
        );
        counter!("tickflare_restores_total", "pipeline" => self.pipeline.to_string(), "from" => self.from).increment(1);
    }
}

/// Partitions dropped by zombie fencing.
pub struct Fenced<'a> {
    pub pipeline: &'a str,
    pub partitions: usize,
}

impl Fenced<'_> {
    pub fn emit(&self) {
        counter!("tickflare_fenced_partitions_total", "pipeline" => self.pipeline.to_string()).increment(self.partitions as u64);
    }
}

/// Recomputed outputs that were already in the output topics and were not sent again.
pub struct Suppressed<'a> {
    pub pipeline: &'a str,
    pub partition: i32,
    pub count: usize,
}

impl Suppressed<'_> {
    pub fn emit(&self) {
        tracing::info!(partition = self.partition, count = self.count, "outputs already published: not sent again");
        counter!("tickflare_suppressed_outputs_total", "pipeline" => self.pipeline.to_string(), "partition" => self.partition.to_string())
            .increment(self.count as u64);
    }
}

/// Metric handles of one pipeline.
pub struct PipelineMetrics {
    pub pipeline: String,
    pub topic: String,
    stage: [Histogram; 5],
    e2e: Histogram,
    live_models: Gauge,
    partitions: BTreeMap<i32, PartitionMetrics>,
    model_kind: String,
}

struct PartitionMetrics {
    records_in: Counter,
    predictions: Counter,
    warmup: Counter,
    filtered: Counter,
    labelled: Counter,
    updates: Counter,
    drift: Counter,
    evictions: Counter,
    pending: Gauge,
    batch_rows: Histogram,
    mae_model: Gauge,
    mae_persistence: Gauge,
}

/// Stage durations of one micro-batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimings {
    pub decode: Duration,
    pub features: Duration,
    pub predict: Duration,
    pub update: Duration,
    pub produce: Duration,
}

impl StageTimings {
    pub fn add(&mut self, o: &StageTimings) {
        self.decode += o.decode;
        self.features += o.features;
        self.predict += o.predict;
        self.update += o.update;
        self.produce += o.produce;
    }

    /// Seconds per stage, by name.
    pub fn seconds(&self) -> std::collections::BTreeMap<String, f64> {
        STAGES
            .iter()
            .zip([self.decode, self.features, self.predict, self.update, self.produce])
            .map(|(k, d)| (k.to_string(), d.as_secs_f64()))
            .collect()
    }
}

pub const STAGES: [&str; 5] = ["decode", "features", "predict", "update", "produce"];

impl PipelineMetrics {
    pub fn new(pipeline: &str, topic: &str, model_kind: &str) -> Self {
        let p = pipeline.to_string();
        let stage = STAGES.map(|s| histogram!("tickflare_stage_seconds", "pipeline" => p.clone(), "stage" => s));
        PipelineMetrics {
            e2e: histogram!("tickflare_end_to_end_latency_seconds", "pipeline" => p.clone()),
            live_models: gauge!("tickflare_live_models", "pipeline" => p.clone(), "model" => model_kind.to_string()),
            pipeline: p,
            topic: topic.to_string(),
            stage,
            partitions: BTreeMap::new(),
            model_kind: model_kind.to_string(),
        }
    }

    fn partition(&mut self, partition: i32) -> &PartitionMetrics {
        let (pl, t, m) = (self.pipeline.clone(), self.topic.clone(), self.model_kind.clone());
        self.partitions.entry(partition).or_insert_with(|| {
            let part = partition.to_string();
            let l = |name: &'static str| counter!(name, "pipeline" => pl.clone(), "topic" => t.clone(), "partition" => part.clone());
            PartitionMetrics {
                records_in: l("tickflare_records_in_total"),
                predictions: l("tickflare_predictions_total"),
                warmup: l("tickflare_warmup_total"),
                filtered: l("tickflare_filtered_total"),
                labelled: l("tickflare_labelled_total"),
                updates: counter!("tickflare_model_updates_total", "pipeline" => pl.clone(), "partition" => part.clone(), "model" => m.clone()),
                drift: counter!("tickflare_drift_events_total", "pipeline" => pl.clone(), "partition" => part.clone(), "model" => m.clone()),
                evictions: counter!("tickflare_model_evictions_total", "pipeline" => pl.clone(), "partition" => part.clone()),
                pending: gauge!("tickflare_pending_predictions", "pipeline" => pl.clone(), "partition" => part.clone()),
                batch_rows: histogram!("tickflare_batch_rows", "pipeline" => pl.clone(), "partition" => part.clone()),
                mae_model: gauge!("tickflare_rolling_mae", "pipeline" => pl.clone(), "partition" => part.clone(), "forecaster" => "model"),
                mae_persistence: gauge!("tickflare_rolling_mae", "pipeline" => pl.clone(), "partition" => part.clone(), "forecaster" => "persistence"),
            }
        })
    }
}

/// A partition's micro-batch went through the model stage.
pub struct BatchProcessed {
    pub partition: i32,
    pub records: u64,
    pub predictions: u64,
    pub warmup: u64,
    pub filtered: u64,
    pub labelled: u64,
    pub pending: u64,
    pub drift_events: u64,
    pub evictions: u64,
    pub fallbacks: u64,
    pub rolling_mae_model: Option<f64>,
    pub rolling_mae_persistence: Option<f64>,
    /// Mean aggregation weight per expert (empty without aggregation).
    pub weights: BTreeMap<String, f64>,
}

impl BatchProcessed {
    pub fn emit(&self, m: &mut PipelineMetrics) {
        if self.fallbacks > 0 {
            counter!("tickflare_model_fallbacks_total", "pipeline" => m.pipeline.clone(), "partition" => self.partition.to_string())
                .increment(self.fallbacks);
        }
        for (expert, w) in &self.weights {
            gauge!("tickflare_aggregation_weight", "pipeline" => m.pipeline.clone(), "partition" => self.partition.to_string(), "expert" => expert.clone())
                .set(*w);
        }
        tracing::debug!(
            partition = self.partition,
            records = self.records,
            predictions = self.predictions,
            labelled = self.labelled,
            "batch processed"
        );
        let p = m.partition(self.partition);
        p.records_in.increment(self.records);
        p.predictions.increment(self.predictions);
        p.warmup.increment(self.warmup);
        p.filtered.increment(self.filtered);
        p.labelled.increment(self.labelled);
        p.updates.increment(self.labelled);
        p.pending.set(self.pending as f64);
        p.drift.increment(self.drift_events);
        p.evictions.increment(self.evictions);
        p.batch_rows.record(self.records as f64);
        if let Some(v) = self.rolling_mae_model {
            p.mae_model.set(v);
        }

        if let Some(v) = self.rolling_mae_persistence {
            p.mae_persistence.set(v);
        }
    }
}

/// A micro-batch (all partitions) was processed and published.
pub struct BatchPublished<'a> {
    pub timings: StageTimings,
    /// Kafka timestamps (ms) of the batch's records.
    pub record_timestamps_ms: &'a [i64],
    pub published_at_ms: i64,
    pub live_models: usize,
}

impl BatchPublished<'_> {
    pub fn emit(&self, m: &mut PipelineMetrics) {
        let t = &self.timings;
        for (h, d) in m.stage.iter().zip([t.decode, t.features, t.predict, t.update, t.produce]) {
            h.record(d.as_secs_f64());
        }
        for ts in self.record_timestamps_ms {
            m.e2e.record(((self.published_at_ms - ts).max(0)) as f64 / 1000.0);
        }
        m.live_models.set(self.live_models as f64);
    }
}

/// A record went to the dead-letter topic.
pub struct DeadLettered<'a>(pub &'a DeadLetter);

impl DeadLettered<'_> {
    pub fn emit(&self, m: &PipelineMetrics) {
        let d = self.0;
        tracing::debug!(partition = d.partition, offset = d.offset, reason = d.reason, detail = %d.detail, "dead letter");
        count_dead_letter(&m.pipeline, d);
    }
}

/// Counts a dead letter by reason (`tickflare_dead_letters_total`).
pub fn count_dead_letter(pipeline: &str, d: &DeadLetter) {
    counter!("tickflare_dead_letters_total", "pipeline" => pipeline.to_string(), "reason" => d.reason).increment(1);
}

/// librdkafka's periodic statistics: consumer lag per partition.
pub struct ConsumerLag<'a> {
    pub pipeline: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl ConsumerLag<'_> {
    pub fn emit(&self) {
        gauge!("tickflare_consumer_lag", "pipeline" => self.pipeline.to_string(), "topic" => self.topic.to_string(), "partition" => self.partition.to_string())
            .set(self.lag as f64);
    }
}

/// The consumer group changed this process's assignment.
pub struct Rebalanced<'a> {
    pub pipeline: &'a str,
    pub kind: &'static str,
    pub partitions: usize,
}

impl Rebalanced<'_> {
    pub fn emit(&self) {
        tracing::info!(kind = self.kind, partitions = self.partitions, "rebalance");
        gauge!("tickflare_assigned_partitions", "pipeline" => self.pipeline.to_string()).set(self.partitions as f64);
    }
}

/// librdkafka reported a client-level error.
pub struct KafkaClientError<'a> {
    pub pipeline: &'a str,
    pub code: String,
    pub reason: &'a str,
}

impl KafkaClientError<'_> {
    pub fn emit(&self) {
        tracing::warn!(code = %self.code, reason = self.reason, "kafka client error");
        counter!("tickflare_kafka_errors_total", "pipeline" => self.pipeline.to_string()).increment(1);
    }
}

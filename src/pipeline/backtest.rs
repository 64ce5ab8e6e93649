//! Backtests: one pass over a time range of the input topic (or a file published
//! into the embedded broker) through the live decode → features → model → sink code,
//! once per model configuration ("lane"), each lane writing to its own shadow topics.
//!
//! The range is by record timestamp: `[from, to)`. Where the broker can look offsets
//! up by time (Kafka) the read starts and ends there; everywhere (the embedded broker
//! cannot) records outside the range are skipped by their timestamp, so a broker
//! without the index gives the same result, only slower.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::build::Built;
use super::summary::Summary;
use super::Batch;
use crate::broker::EmbeddedBroker;
use crate::sink::kafka::{producer, KafkaSink};
use crate::source::batch::PartitionInput;
use crate::source::context::SourceContext;
use crate::source::kafka::{consumer_with, partition_count};
use crate::source::mapping::file_messages;
use crate::source::sample::{seed_timed, Placement};
use crate::state::score::LabelLog;
use crate::state::PartitionState;
use crate::telemetry::events::PipelineMetrics;

/// What to replay and where.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    /// Publish this file into an embedded broker and replay it (default without
    /// real brokers: the pipeline's sample).
    pub input: Option<PathBuf>,
    /// Real brokers holding the input topic (ignored with `input`).
    pub brokers: Option<String>,
    /// Range of record timestamps (ms): `from` inclusive, `to` exclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub max_batch_rows: Option<usize>,
    /// Shadow topics are `<sink.topic>.<suffix>[.<lane>]` (and the same for the DLQ).
    pub shadow_suffix: String,
}

/// One model configuration of a backtest.
pub struct Variant {
    pub name: String,
    pub built: Built,
}

/// What one lane produced.
pub struct LaneResult {
    pub name: String,
    pub model_kind: String,
    pub shadow_topic: String,
    pub shadow_dead_letter_topic: String,
    pub summary: Summary,
    /// Every labelled prediction, per input partition.
    pub labels: BTreeMap<i32, LabelLog>,
}

/// The whole backtest.
pub struct BacktestResult {
    pub lanes: Vec<LaneResult>,
    pub brokers: String,
    pub input_topic: String,
    /// Per partition, the offsets read: `[first, end)`.
    pub offsets: BTreeMap<i32, (i64, i64)>,
    /// Records in the range (fed to every lane), before it and after it.
    pub in_range: u64,
    pub before_range: u64,
    pub after_range: u64,
    pub elapsed_s: f64,
}

struct Lane {
    name: String,
    built: Built,
    sink: KafkaSink,
    batch: Batch,
    metrics: PipelineMetrics,
}

/// The shadow topics of a lane: predictions and dead letters.
pub fn shadow_topics(built: &Built, suffix: &str, lane: Option<&str>) -> (String, String) {
    let tail = match lane {
        Some(l) => format!("{suffix}.{l}"),
        None => suffix.to_string(),
    };
    let s = &built.config.sink;
    (format!("{}.{tail}", s.topic), format!("{}.{tail}", s.dead_letter_topic))
}

/// Runs the backtest. `variants[0]` is the pipeline's own `[model]`.
pub async fn backtest(variants: Vec<Variant>, opts: &BacktestOptions) -> anyhow::Result<BacktestResult> {
    let first = variants.first().context("no model configuration to backtest")?;
    let cfg = first.built.config.clone();
    let schema = first.built.schema.clone();
    let brokers = opts.brokers.clone().unwrap_or_else(|| cfg.source.brokers.clone());
    let input = match (&opts.input, brokers.as_str()) {
        (Some(f), _) => Some(f.clone()),
        (None, "embedded") => Some(cfg.resolve(cfg.source.sample.as_ref().context("the embedded broker needs --input or source.sample")?)),
        (None, _) => None,
    };
    let mut embedded = None;
    let topics: Vec<(String, String)> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| shadow_topics(&v.built, &opts.shadow_suffix, (i > 0).then_some(v.name.as_str())))
        .collect();
    let brokers = match &input {
        Some(file) => {
            let b = EmbeddedBroker::start()?;
            let n = cfg.source.partitions;
            b.create_topic(&cfg.source.topic, n)?;
            for (t, d) in &topics {
                b.create_topic(t, n)?;
                b.create_topic(d, n)?;
            }
            let msgs = file_messages(file, &cfg.source.file, &schema, &cfg.source.time)
                .with_context(|| format!("reading {}", file.display()))?;
            let prod = crate::source::sample::seed_producer(b.bootstrap_servers())?;
            let seeded = seed_timed(&prod, &cfg.source.topic, n, &schema, &cfg.source.key, msgs, Placement::ByKey).await?;
            b.check_retained(&cfg.source.topic)?;
            tracing::info!(records = seeded, file = %file.display(), "published the input into the embedded broker");
            let bs = b.bootstrap_servers().to_string();
            embedded = Some(b);
            bs
        }
        None => {
            ensure_shadow_topics(&brokers, &cfg.source.topic, &topics).await?;
            brokers
        }
    };
    let ctx = SourceContext {
        pipeline: cfg.name.clone(),
        topic: cfg.source.topic.clone(),
        health: crate::telemetry::Health::new(),
        revocations: Default::default(),
    };
    let consumer = consumer_with(&brokers, &format!("tickflare-backtest-{}", cfg.name), ctx)?;
    let t = Duration::from_secs(10);
    let parts = partition_count(&consumer, &cfg.source.topic, t).with_context(|| format!("reading the partitions of {:?}", cfg.source.topic))?;
    if parts == 0 {
        bail!("input topic {:?} does not exist on {brokers}", cfg.source.topic);
    }
    let mut offsets = BTreeMap::new();
    for p in 0..parts {
        let (low, high) = consumer.fetch_watermarks(&cfg.source.topic, p, t)?;
        let start = match opts.from_ms {
            Some(ts) => offset_for_time(&consumer, &cfg.source.topic, p, ts, low, high)?.unwrap_or(low),
            None => low,
        };
        let end = match opts.to_ms {
            Some(ts) => offset_for_time(&consumer, &cfg.source.topic, p, ts, low, high)?.unwrap_or(high),
            None => high,
        };
        offsets.insert(p, (start, end.max(start)));
    }
    let mut lanes = Vec::with_capacity(variants.len());
    for (v, (topic, dlq)) in variants.into_iter().zip(&topics) {
        let mut batch = Batch::default();
        for &p in offsets.keys() {
            batch.states.insert(p, PartitionState { labels: Some(LabelLog::default()), ..PartitionState::new(p) });
        }
        let metrics = PipelineMetrics::new(&v.built.config.name, &v.built.config.source.topic, &v.built.config.model.kind);
        let sink = KafkaSink {
            producer: producer(&brokers)?,
            source_topic: v.built.config.source.topic.clone(),
            topic: topic.clone(),
            dead_letter_topic: dlq.clone(),
        };
        lanes.push(Lane { name: v.name, built: v.built, sink, batch, metrics });
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &(start, end)) in &offsets {
        if end > start {
            tpl.add_partition_offset(&cfg.source.topic, p, Offset::Offset(start))?;
        }
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let max_rows = opts.max_batch_rows.unwrap_or(cfg.source.max_batch_rows).max(1);
    let started = Instant::now();
    let mut done: BTreeMap<i32, bool> = offsets.iter().map(|(&p, &(s, e))| (p, e <= s)).collect();
    let (mut in_range, mut before, mut after) = (0u64, 0u64, 0u64);
    let idle = Duration::from_secs(30);
    let mut quiet_since: Option<Instant> = None;
    while !done.values().all(|d| *d) {
        let mut rows = 0;
        while rows < max_rows && !done.values().all(|d| *d) {
            let m = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
                Err(_) => {
                    // Nothing for a second: a partition whose last offsets are not
                    // records (transaction markers) is done once its position passes
                    // the end.
                    mark_passed(&consumer, &cfg.source.topic, &offsets, &mut done);
                    if quiet_since.get_or_insert_with(Instant::now).elapsed() > idle {
                        bail!("no record arrived for {}s before the end of the range; {}", idle.as_secs(), pending(&consumer, &cfg.source.topic, &offsets, &done));
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
                Ok(Ok(m)) => {
                    quiet_since = None;
                    m
                }
            };
            let (p, o) = (m.partition(), m.offset());
            let Some(&(_, end)) = offsets.get(&p) else { continue };
            if o >= end || done.get(&p).copied().unwrap_or(true) {
                done.insert(p, true);
                continue;
            }
            if o + 1 >= end {
                done.insert(p, true);
            }
            let ts = m.timestamp().to_millis();
            if let (Some(t), Some(from)) = (ts, opts.from_ms) {
                if t < from {
                    before += 1;
                    continue;
                }
            }
            if let (Some(t), Some(to)) = (ts, opts.to_ms) {
                if t >= to {
                    after += 1;
                    continue;
                }
            }
            in_range += 1;
            rows += 1;
            for lane in &mut lanes {
                lane.batch
                    .inputs
                    .entry(p)
                    .or_insert_with(|| PartitionInput::new(p, lane.built.schema.clone()))
                    .push(m.key(), m.payload(), o, ts);
            }
        }
        for lane in &mut lanes {
            lane.batch.process(&lane.built, &lane.sink, &mut lane.metrics, None).await.with_context(|| format!("lane {:?}", lane.name))?;
        }
    }
    let mut results = Vec::with_capacity(lanes.len());
    for (mut lane, (topic, dlq)) in lanes.into_iter().zip(topics) {
        lane.batch.process(&lane.built, &lane.sink, &mut lane.metrics, None).await?;
        lane.batch.drain().await?;
        let elapsed = started.elapsed().as_secs_f64();
        let mut summary = Summary::from_states(&lane.built.config.name, lane.batch.states.values(), elapsed, Some(lane.built.processor.experts()));
        summary.stage_seconds = lane.batch.totals.seconds();
        let labels = lane.batch.states.iter_mut().map(|(p, s)| (*p, s.labels.take().unwrap_or_default())).collect();
        results.push(LaneResult {
            name: lane.name,
            model_kind: lane.built.config.model.kind.clone(),
            shadow_topic: topic,
            shadow_dead_letter_topic: dlq,
            summary,
            labels,
        });
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    drop(consumer);
    drop(embedded);
    Ok(BacktestResult {
        lanes: results,
        brokers,
        input_topic: cfg.source.topic.clone(),
        offsets,
        in_range,
        before_range: before,
        after_range: after,
        elapsed_s,
    })
}

/// The first offset of `p` whose timestamp is at or after `ts`, by the broker's time
/// index. `None` when the broker answers "no offset" — which Kafka says when no such
/// record exists and the embedded broker always says — so the caller reads the whole
/// partition and filters by timestamp (correct either way, only slower).
fn offset_for_time<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    c: &C,
    topic: &str,
    p: i32,
    ts: i64,
    low: i64,
    high: i64,
) -> anyhow::Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
    let found = c.offsets_for_times(tpl, Duration::from_secs(10));
    let at = match &found {
        Ok(r) => r.find_partition(topic, p).map(|e| e.offset()),
        Err(_) => None,
    };
    drop(found);
    Ok(match at {
        Some(Offset::Offset(o)) if o >= low => Some(o.min(high)),
        _ => None,
    })
}

/// Marks done every partition whose consumer position reached its end offset.
fn mark_passed<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    c: &C,
    topic: &str,
    offsets: &BTreeMap<i32, (i64, i64)>,
    done: &mut BTreeMap<i32, bool>,
) {
    let Ok(pos) = c.position() else { return };
    for (p, (_, end)) in offsets {
        if let Some(Offset::Offset(o)) = pos.find_partition(topic, *p).map(|e| e.offset()) {
            if o >= *end {
                done.insert(*p, true);
            }
        }
    }
    // (The list goes before the consumer can: a live list at consumer shutdown hangs.)
    drop(pos);
}

/// Offsets not yet reached, for the error message.
fn pending<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    c: &C,
    topic: &str,
    offsets: &BTreeMap<i32, (i64, i64)>,
    done: &BTreeMap<i32, bool>,
) -> String {
    let pos = c.position().ok();
    let mut out = Vec::new();
    for (p, (_, end)) in offsets.iter().filter(|(p, _)| !done.get(p).copied().unwrap_or(true)) {
        let at = pos.as_ref().and_then(|t| t.find_partition(topic, *p)).map(|e| format!("{:?}", e.offset()));
        out.push(format!("partition {p} at {} of {end}", at.unwrap_or_else(|| "?".into())));
    }
    drop(pos);
    out.join(", ")
}

/// On real brokers the shadow topics must exist and be empty (a backtest never
/// appends to an earlier one, so its topics are its own output alone).
async fn ensure_shadow_topics(brokers: &str, input: &str, topics: &[(String, String)]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::BaseConsumer;
    let meta: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let t = Duration::from_secs(10);
    let n = partition_count(&meta, input, t)?;
    if n == 0 {
        bail!("input topic {input:?} does not exist on {brokers}");
    }
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    for name in topics.iter().flat_map(|(a, b)| [a, b]) {
        let have = partition_count(&meta, name, t)?;
        if have == 0 {
            let nt = NewTopic::new(name, n, TopicReplication::Fixed(1));
            let r = admin.create_topics([&nt], &AdminOptions::new().operation_timeout(Some(t))).await?;
            for x in r {
                if let Err((topic, code)) = x {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        bail!("creating shadow topic {topic:?}: {code}");
                    }
                }
            }
            continue;
        }
        for p in 0..have {
            let (low, high) = meta.fetch_watermarks(name, p, t)?;
            if high > low {
                bail!("shadow topic {name:?} already holds records; delete it or pass another --shadow-suffix");
            }
        }
    }
    Ok(())
}

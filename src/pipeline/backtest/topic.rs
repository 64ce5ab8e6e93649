//! Backtests from a topic: the range's offsets looked up by time where the broker can
//! (Kafka), records outside it skipped by timestamp everywhere (the embedded broker
//! cannot look up), outputs published to shadow topics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Context;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{feed, shadow_topics, BacktestOptions, BacktestResult, Counts, Input, Lane, LaneSink, Variant};
use crate::pipeline::kafka_props::{KafkaProps, Role};
use crate::sink::kafka::{sink_producer, KafkaSink};
use crate::source::context::SourceContext;
use crate::source::gather::{gather, Closed, Take, Window};
use crate::source::kafka::{consumer_with, partition_count};

pub(super) async fn backtest(variants: Vec<Variant>, brokers: &str, opts: &BacktestOptions) -> crate::error::Result<BacktestResult> {
    let cfg = variants[0].built.config.clone();
    let topics: Vec<(String, String)> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| shadow_topics(&v.built, &opts.shadow_suffix, (i > 0).then_some(v.name.as_str())))
        .collect();
    ensure_shadow_topics(brokers, &cfg.kafka, &cfg.source.topic, &topics).await?;
    let ctx = SourceContext::new(&cfg.name, &cfg.source.topic, crate::telemetry::Health::new());
    let consumer = consumer_with(brokers, &format!("tickflare-backtest-{}", cfg.name), ctx, &cfg.kafka)?;
    let t = Duration::from_secs(10);
    let parts = partition_count(&*consumer, &cfg.source.topic, t).with_context(|| format!("reading the partitions of {:?}", cfg.source.topic))?;
    if parts == 0 {
        crate::fail!(Config, "input topic {:?} does not exist on {brokers}", cfg.source.topic);
    }
    let start_ms = opts.warmup_from_ms.or(opts.from_ms);
    let mut offsets = BTreeMap::new();
    for p in 0..parts {
        let (low, high) = consumer.fetch_watermarks(&cfg.source.topic, p, t)?;
        let start = match start_ms {
            Some(ts) => offset_for_time(&*consumer, &cfg.source.topic, p, ts, low, high)?.unwrap_or(low),
            None => low,
        };
        let end = match opts.to_ms {
            Some(ts) => offset_for_time(&*consumer, &cfg.source.topic, p, ts, low, high)?.unwrap_or(high),
            None => high,
        };
        offsets.insert(p, (start, end.max(start)));
    }
    let warmup = opts.warmup_from_ms.is_some();
    let mut lanes = Vec::with_capacity(variants.len());
    for (v, (topic, dlq)) in variants.into_iter().zip(&topics) {
        let sink = KafkaSink {
            producer: sink_producer(brokers, None, &cfg.kafka)?,
            source_topic: v.built.config.source.topic.clone(),
            topic: topic.clone(),
            dead_letter_topic: dlq.clone(),
            max_message_bytes: crate::sink::kafka::max_message_bytes(&cfg.kafka),
        };
        lanes.push(Lane::new(v, LaneSink::Kafka(sink), (topic.clone(), dlq.clone()), offsets.keys().copied(), warmup));
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
    let mut counts = Counts::default();
    let idle = Duration::from_secs(30);
    let mut quiet_since: Option<Instant> = None;
    // Batches of up to `max_rows`, each closed after a second at most.
    let window = Window { max_rows, wait: Duration::from_secs(1), idle: None };
    while !done.values().all(|d| *d) {
        let mut heard = false;
        let g = gather(&consumer, window, None, |m| {
            heard = true;
            let (p, o) = (m.partition(), m.offset());
            let Some(&(_, end)) = offsets.get(&p) else { return Ok(Take::Skip) };
            let took = if o >= end || done.get(&p).copied().unwrap_or(true) {
                done.insert(p, true);
                false
            } else {
                if o + 1 >= end {
                    done.insert(p, true);
                }
                feed(&mut lanes, &mut counts, opts, Input { partition: p, offset: o, time_ms: m.timestamp().to_millis(), key: m.key(), payload: m.payload() })
            };
            Ok(match (took, done.values().all(|d| *d)) {
                (true, true) => Take::Last,
                (true, false) => Take::Row,
                (false, true) => Take::Close,
                (false, false) => Take::Skip,
            })
        })
        .await?;
        if heard {
            quiet_since = None;
        } else if g.closed == Closed::Timeout {
            // Nothing for a second: a partition whose last offsets are not records
            // (transaction markers) is done once its position passes the end.
            mark_passed(&*consumer, &cfg.source.topic, &offsets, &mut done);
            if quiet_since.get_or_insert_with(Instant::now).elapsed() > idle {
                crate::fail!(Broker, "no record arrived for {}s before the end of the range; {}", idle.as_secs(), pending(&*consumer, &cfg.source.topic, &offsets, &done));
            }
        }
        for lane in &mut lanes {
            lane.process().await?;
        }
    }
    let mut results = Vec::with_capacity(lanes.len());
    for lane in lanes {
        results.push(lane.finish(started).await?);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    drop(consumer);
    Ok(BacktestResult {
        lanes: results,
        brokers: brokers.to_string(),
        input_topic: cfg.source.topic.clone(),
        offsets,
        in_range: counts.in_range,
        before_range: counts.before,
        after_range: counts.after,
        warmup: counts.warmup,
        warmup_from_ms: opts.warmup_from_ms,
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
) -> crate::error::Result<Option<i64>> {
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
    let pos = crate::source::kafka::positions(c, topic);
    for (p, (_, end)) in offsets {
        if pos.get(p).is_some_and(|o| o >= end) {
            done.insert(*p, true);
        }
    }
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
async fn ensure_shadow_topics(brokers: &str, props: &KafkaProps, input: &str, topics: &[(String, String)]) -> crate::error::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::BaseConsumer;
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    let meta: BaseConsumer = props.create(&mut c, Role::Consumer)?;
    let t = Duration::from_secs(10);
    let n = partition_count(&meta, input, t)?;
    if n == 0 {
        crate::fail!(Config, "input topic {input:?} does not exist on {brokers}");
    }
    let admin: AdminClient<DefaultClientContext> = props.create(&mut c, Role::Producer)?;
    for name in topics.iter().flat_map(|(a, b)| [a, b]) {
        let have = partition_count(&meta, name, t)?;
        if have == 0 {
            let nt = NewTopic::new(name, n, TopicReplication::Fixed(1));
            let r = admin.create_topics([&nt], &AdminOptions::new().operation_timeout(Some(t))).await?;
            for x in r {
                if let Err((topic, code)) = x {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        crate::fail!(Broker, "creating shadow topic {topic:?}: {code}");
                    }
                }
            }
            continue;
        }
        for p in 0..have {
            let (low, high) = meta.fetch_watermarks(name, p, t)?;
            if high > low {
                crate::fail!(Config, "shadow topic {name:?} already holds records; delete it or pass another --shadow-suffix");
            }
        }
    }
    Ok(())
}

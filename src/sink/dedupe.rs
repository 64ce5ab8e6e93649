//! Tail read of an output partition: the highest source offset (of one source
//! partition) already published, so recomputed outputs at or below it are not sent
//! again. This is what makes output exactly-once without broker transactions.
//!
//! It relies on: each input partition writing to one fixed output partition, an
//! idempotent producer (no reordering or gaps within a partition), and outputs
//! being deterministic given a checkpoint — so "source offset ≤ the highest one
//! published" means "already published, byte for byte".

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::kafka::{H_SOURCE_INDEX, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC};
use crate::error::{Error, Result};
use crate::pipeline::kafka_props::{KafkaProps, Role};
use crate::source::kafka::positions;

/// What a tail read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Highest source offset of the wanted source partition, if any.
    pub last_source_offset: Option<i64>,
    /// Messages read.
    pub scanned: u64,
}

/// The furthest output of one source partition found in an output partition: its
/// source offset and, where one source record has several outputs, the output's
/// index among them (`tickflare.source.index`; 0 when absent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default)]
    pub index: i64,
}

/// Per source partition, the furthest output already published (a handful of
/// entries: one per source partition writing to the output).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marks(pub Vec<Mark>);

impl Marks {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&Mark> {
        self.0.iter().find(|m| m.partition == partition && m.topic == topic)
    }

    /// Moves the mark of `topic`/`partition` forward to (`offset`, `index`).
    pub fn note(&mut self, topic: &[u8], partition: i32, offset: i64, index: i64) {
        match self.0.iter_mut().find(|m| m.partition == partition && m.topic.as_bytes() == topic) {
            Some(m) => {
                if (offset, index) > (m.offset, m.index) {
                    (m.offset, m.index) = (offset, index);
                }
            }
            None => self.0.push(Mark { topic: String::from_utf8_lossy(topic).into_owned(), partition, offset, index }),
        }
    }

    /// Both sets of marks, each source partition at the further of the two.
    pub fn merge(&mut self, other: &Marks) {
        for m in &other.0 {
            self.note(m.topic.as_bytes(), m.partition, m.offset, m.index);
        }
    }

    /// Whether output `index` of source record `topic`/`partition`/`offset` is
    /// already published (given outputs are published in source order).
    pub fn covers(&self, topic: &str, partition: i32, offset: i64, index: i64) -> bool {
        self.get(topic, partition).is_some_and(|m| (offset, index) <= (m.offset, m.index))
    }
}

/// Everything a tail read of one output partition found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailMarks {
    pub marks: Marks,
    pub scanned: u64,
    /// The partition's end as read (past the last message seen, at least `from`).
    pub end: i64,
}

/// Reads `topic`/`partition` from `from` (or its start) to its end and returns the
/// highest `tickflare.source.offset` among messages from `source_topic`'s partition of
/// the same number (a source partition's outputs go to that output partition).
/// Blocking: call from `spawn_blocking`. See [`scan_marks`].
pub fn scan(brokers: &str, props: &KafkaProps, topic: &str, partition: i32, from: i64, source_topic: &str, settle: Duration) -> Result<Tail> {
    let t = scan_marks(brokers, props, topic, partition, from, settle)?;
    Ok(Tail { last_source_offset: t.marks.get(source_topic, partition).map(|m| m.offset), scanned: t.scanned })
}

/// Reads `topic`/`partition` from `from` (or its start) to its end and returns, per
/// source partition, the furthest output found. After reaching the high watermark
/// it keeps reading until nothing arrives for `settle` (brokers whose reported
/// watermark lags, such as Tansu). The watermark is reached by a message just below
/// it or by the read position passing it: a partition written in transactions ends
/// in a commit or abort marker, which is never handed over as a message. With the
/// `[kafka]` properties `props` (a secured cluster's TLS and SASL settings).
/// Blocking: call from `spawn_blocking`.
pub fn scan_marks(brokers: &str, props: &KafkaProps, topic: &str, partition: i32, from: i64, settle: Duration) -> Result<TailMarks> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", "tickflare-tail-scan")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("client.id", "tickflare-tail-scan");
    let c: BaseConsumer = props.create(&mut c, Role::Consumer)?;
    let timeout = Duration::from_secs(10);
    let (low, high) = c.fetch_watermarks(topic, partition, timeout)?;
    let start = from.max(low);
    let mut tail = TailMarks { end: start.max(from), ..Default::default() };
    if start >= high && settle.is_zero() {
        return Ok(tail);
    }
    {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
        c.assign(&tpl)?;
        // (tpl is dropped here, before the consumer.)
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reached: Option<Instant> = if start >= high { Some(Instant::now()) } else { None };
    loop {
        if let Some(t) = reached {
            if t.elapsed() >= settle {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Internal(format!("tail read of {topic}/{partition} did not reach offset {high} in 120 s")));
        }
        match c.poll(Duration::from_millis(50)) {
            // A partition written in transactions ends in a commit or abort marker,
            // which librdkafka never hands over: it only moves the position past it.
            None if reached.is_none() && positions(&c, topic).get(&partition).is_some_and(|&o| o >= high) => reached = Some(Instant::now()),
            None => {}
            Some(Err(e)) => return Err(Error::Kafka(e)),
            Some(Ok(m)) => {
                tail.scanned += 1;
                tail.end = tail.end.max(m.offset() + 1);
                if let Some(h) = m.headers() {
                    let (mut t, mut p, mut o, mut i) = (None, None, None, None);
                    for hd in h.iter() {
                        match hd.key {
                            H_SOURCE_TOPIC => t = hd.value,
                            H_SOURCE_PARTITION => p = hd.value,
                            H_SOURCE_OFFSET => o = hd.value,
                            H_SOURCE_INDEX => i = hd.value,
                            _ => {}
                        }
                    }
                    let num = |v: Option<&[u8]>| v.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<i64>().ok());
                    if let (Some(t), Some(p), Some(o)) = (t, num(p), num(o)) {
                        tail.marks.note(t, p as i32, o, num(i).unwrap_or(0));
                    }
                }
                // Past the reported end, keep reading while messages keep coming:
                // `settle` counts from the last one.
                if m.offset() + 1 >= high || reached.is_some() {
                    reached = Some(Instant::now());
                }
            }
        }
    }
    Ok(tail)
}

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

use super::kafka::{H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC};
use crate::error::{Error, Result};

/// What a tail read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Highest source offset of the wanted source partition, if any.
    pub last_source_offset: Option<i64>,
    /// Messages read.
    pub scanned: u64,
}

/// Reads `topic`/`partition` from `from` (or its start) to its end and returns the
/// highest `tickflare.source.offset` among messages from `source_topic` /
/// `source_partition`. After reaching the high watermark it keeps reading until
/// nothing arrives for `settle` (brokers whose reported watermark lags, such as Tansu). Blocking: call
/// from `spawn_blocking`.
pub fn scan(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    source_topic: &str,
    source_partition: i32,
    settle: Duration,
) -> Result<Tail> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tickflare-tail-scan")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("client.id", "tickflare-tail-scan")
        .create()?;
    let timeout = Duration::from_secs(10);
    let (low, high) = c.fetch_watermarks(topic, partition, timeout)?;
    let start = from.max(low);
    let mut tail = Tail { last_source_offset: None, scanned: 0 };
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
    let want_partition = source_partition.to_string();
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
            None => {}
            Some(Err(e)) => return Err(Error::Kafka(e)),
            Some(Ok(m)) => {
                tail.scanned += 1;
                if let Some(h) = m.headers() {
                    let (mut t, mut p, mut o) = (None, None, None);
                    for hd in h.iter() {
                        match hd.key {
                            H_SOURCE_TOPIC => t = hd.value,
                            H_SOURCE_PARTITION => p = hd.value,
                            H_SOURCE_OFFSET => o = hd.value,
                            _ => {}
                        }
                    }
                    if t == Some(source_topic.as_bytes()) && p == Some(want_partition.as_bytes()) {
                        if let Some(off) = o.and_then(|o| std::str::from_utf8(o).ok()).and_then(|o| o.parse::<i64>().ok()) {
                            tail.last_source_offset = Some(tail.last_source_offset.map_or(off, |x| x.max(off)));
                        }
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
